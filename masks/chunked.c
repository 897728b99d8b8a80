/* chunked.c — block-causal mask of chunked prefill: the sequence is cut into
 * chunks of C tokens and query i sees every key of its own chunk and of
 * all earlier chunks, j < (floor(i / C) + 1) C (Agrawal et al., "Taming
 * Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve", OSDI
 * 2024; block-causal masks of the FlexAttention examples). Spec:
 * "chunked:C", C >= 1; chunked:1 is causal. */

#include "attnbench.h"
#include "masks/spec.h"

static int chunked_parse(ab_mask *m, const char *arg)
{
    long long c;
    if (ab_spec_int(arg, 1, 1LL << 30, &c)) {
        ab_set_error(m, "chunked needs a chunk size C >= 1 tokens (chunked:C), got '%s'", arg ? arg : "");
        return AB_EINVAL;
    }
    m->arg[0] = (double)c;
    return AB_OK;
}

static int chunk_end(const ab_mask *m, int i)
{
    const long long c = (long long)m->arg[0];
    const long long e = ((long long)i / c + 1) * c;
    return e < m->seq_len ? (int)e : m->seq_len;
}

static int chunked_allows(const ab_mask *m, int i, int j) { return j < chunk_end(m, i); }

static void chunked_span(const ab_mask *m, int i, int *lo, int *hi)
{
    *lo = 0;
    *hi = chunk_end(m, i);
}

/* Rows [q0, q1) x keys [k0, k1) (clipped, non-empty) in O(1): row i sees
 * [0, chunk_end(i)), which grows with i: full iff the first row reaches
 * k1, some key seen iff the last row reaches past k0. */
static int chunked_block(const ab_mask *m, int q0, int q1, int k0, int k1)
{
    if (chunk_end(m, q1 - 1) <= k0) return AB_BLOCK_EMPTY;
    return chunk_end(m, q0) >= k1 ? AB_BLOCK_FULL : AB_BLOCK_PARTIAL;
}
const ab_mask_def ab_mask_chunked = {
    .abi = AB_ABI_VERSION,
    .name = "chunked",
    .syntax = "chunked:C",
    .summary = "block-causal (chunked prefill): j < (floor(i/C)+1) C",
    .causal = 0,
    .interval = 1,
    .parse = chunked_parse,
    .allows = chunked_allows,
    .span = chunked_span,
    .block = chunked_block,
};
AB_REGISTER_MASK(ab_mask_chunked)
