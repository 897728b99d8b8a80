/* flash_decoding.c — `flash_decoding`: exact decode attention with
 * Flash-Decoding's split-K schedule (Dao, Haziza, Massa, Sizov,
 * "Flash-Decoding for long-context inference", PyTorch blog / Stanford CRFM
 * 2023; implemented in the FlashAttention repository, Dao-AILab/
 * flash-attention, as the split-KV path of flash_fwd_splitkv).
 *
 * One decode step has one query per (layer, head): too few rows to keep
 * every core busy when each row is one unit of work (FlashAttention-2's
 * grid). Flash-Decoding cuts each row's keys into `splits` equal chunks,
 * runs the chunks in parallel, and reduces each row's partial (max, sum,
 * accumulator) triples by the log-sum-exp rule. This method is that
 * execution strategy as a method: it keeps every key (DENSE layout, density
 * 1, no density knob) and runs the shared decode kernel with
 * AB_DECODE_SPLITK (kernels/cpu/decode.c), so its latency can be compared
 * with `lean_attention` (stream-K) and `dense` (the kernel's default, LEAN).
 *
 * Param `splits`: chunks per row; 0 (default) = as many as make every
 * thread busy, ceil(threads / units) (the kernel's rule, as Flash-Decoding
 * picks the split count from the SM count and the batch x heads grid).
 *
 * Deviations: a CPU schedule (threads instead of SMs, chunk bounds on the
 * kernel's 64-key tiles); with grouped KV heads the query heads of a KV head
 * share one pass over its keys (the kernel's GQA unit), as FlashAttention's
 * split-KV kernel does for packed GQA. Decode only.
 */
#include "attnbench.h"

typedef struct fdec_state {
    int splits; /* chunks per row, 0 = auto */
} fdec_state;

enum { P_SPLITS = 0, P_COUNT };

static int fdec_init(void *state, const ab_params *p, const ab_shape *s)
{
    fdec_state *st = state;
    if (p->n < P_COUNT || !(p->v[P_SPLITS] >= 0 && p->v[P_SPLITS] <= 4096)) {
        ab_set_error(state, "flash_decoding: splits must be in [0, 4096]");
        return AB_EINVAL;
    }
    st->splits = (int)p->v[P_SPLITS];
    return AB_OK;
}

/* every key of the cache: nothing to select */
static int fdec_dselect(void *state, const ab_decode *dp, ab_layout *l)
{
    const int rc = ab_layout_dense(l);
    return rc == AB_OK ? ab_layout_set_cost(l, 0, 0) : rc;
}

static int fdec_drun(void *state, const ab_decode *dp, const ab_layout *l, float *out)
{
    const fdec_state *st = state;
    return ab_kernel_decode(dp, l, out, AB_DECODE_SPLITK, st->splits);
}

const ab_method ab_flash_decoding = {
    .abi = AB_ABI_VERSION,
    .family = "dense",
    .name = "flash_decoding",
    .summary = "exact decode, Flash-Decoding split-K: each row's keys in `splits` chunks, LSE-merged",
    .reference = "Flash-Decoding (Dao, Haziza, Massa, Sizov 2023, crfm.stanford.edu/2023/10/12/flashdecoding.html)",
    .devices = AB_CPU,
    .phases = AB_DECODE,
    .params = {
        [P_SPLITS] = { .name = "splits", .def = 0, .min = 0, .max = 4096, .is_int = 1,
                       .help = "key chunks per row (0: ceil(threads / rows), every thread busy)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = -1 },
    .state_size = sizeof(fdec_state),
    .init = fdec_init,
    .dselect = fdec_dselect,
    .drun = fdec_drun,
};
AB_REGISTER(ab_flash_decoding)
