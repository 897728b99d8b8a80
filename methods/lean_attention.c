/* lean_attention.c — `lean_attention`: exact decode attention with Lean
 * Attention's stream-K schedule (Sanovar, Bharadwaj, St. Amant, Rühle,
 * Rajmohan, "Lean Attention: Hardware-Aware Scalable Attention Mechanism for
 * the Decode-Phase of Transformers", arXiv 2405.10480).
 *
 * Lean Attention treats the online-softmax merge as an associative
 * reduction: every row's key tiles are laid end to end, the whole list is
 * cut into one equal contiguous range per compute unit (stream-K), a range
 * may end inside one row and begin the next, and the partials of a row
 * split over several units are merged afterwards by the log-sum-exp rule
 * (the paper's "host" block). So the load is even whatever the number of
 * rows and their lengths. This method is that strategy as a method: it
 * keeps every key (DENSE layout, density 1, no params, no density knob) and
 * runs the shared decode kernel with AB_DECODE_LEAN (kernels/cpu/decode.c).
 * `dense` decodes the same way (AB_DECODE_AUTO = LEAN); this entry names
 * the strategy so it sits beside `flash_decoding` in the figures.
 *
 * Deviations: CPU threads instead of SMs, 64-key tiles; the merge runs
 * after all ranges (in key order, so the result does not depend on timing)
 * instead of in a host CTA that waits on its peers; with grouped KV heads
 * the query heads of one KV head share a pass over its keys. Decode only.
 */
#include "attnbench.h"

/* every key of the cache: nothing to select */
static int lean_dselect(void *state, const ab_decode *dp, ab_layout *l)
{
    const int rc = ab_layout_dense(l);
    return rc == AB_OK ? ab_layout_set_cost(l, 0, 0) : rc;
}

static int lean_drun(void *state, const ab_decode *dp, const ab_layout *l, float *out)
{
    return ab_kernel_decode(dp, l, out, AB_DECODE_LEAN, 0);
}

const ab_method ab_lean_attention = {
    .abi = AB_ABI_VERSION,
    .family = "dense",
    .name = "lean_attention",
    .summary = "exact decode, Lean Attention stream-K: all (row, key tile) work cut evenly over threads",
    .reference = "Lean Attention (Sanovar et al. 2024, arXiv 2405.10480)",
    .devices = AB_CPU,
    .phases = AB_DECODE,
    .params = { { .name = NULL } },
    .density_knob = { .param = -1 },
    .state_size = 0,
    .dselect = lean_dselect,
    .drun = lean_drun,
};
AB_REGISTER(ab_lean_attention)
