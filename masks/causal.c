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

const ab_mask_def ab_mask_causal = {
    .abi = AB_ABI_VERSION,
    .name = "causal",
    .syntax = "causal",
    .summary = "query i sees keys j <= i (decoder LMs; the default)",
    .causal = 1,
    .interval = 1,
    .allows = causal_allows,
    .span = causal_span,
};
AB_REGISTER_MASK(ab_mask_causal)
