/* causal.c — the causal base mask: query i sees keys j <= i (decoder
 * language models; the default). Spec: "causal". */
#include "attnbench.h"

static int causal_allows(const ab_mask *m, int i, int j)
{
    (void)m;
    return j <= i;
}

static void causal_span(const ab_mask *m, int i, int *lo, int *hi)
{
    (void)m;
    *lo = 0;
    *hi = i + 1;
}

/* Rows [q0, q1) x keys [k0, k1) (clipped, non-empty): row i sees [0, i].
 * Some row sees k0 iff k0 <= q1 - 1; every row sees k1 - 1 iff k1 - 1 <= q0.
 * Exact, and O(1) where the span-derived classifier asks every row. */
static int causal_block(const ab_mask *m, int q0, int q1, int k0, int k1)
{
    (void)m;
    if (k0 >= q1) return AB_BLOCK_EMPTY;
    return k1 <= q0 + 1 ? AB_BLOCK_FULL : AB_BLOCK_PARTIAL;
}

const ab_mask_def ab_mask_causal = {
    .abi = AB_ABI_VERSION,
    .name = "causal",
    .syntax = "causal",
    .summary = "query i sees keys j <= i (decoder LMs; the default)",
    .causal = 1,
    .interval = 1,
    .allows = causal_allows,
    .span = causal_span,
    .block = causal_block,
};
AB_REGISTER_MASK(ab_mask_causal)
