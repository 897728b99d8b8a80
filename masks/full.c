/* full.c — the full (bidirectional) base mask: every query sees every key
 * (encoders, cross-attention over a whole context). Spec: "full". */
#include "attnbench.h"

static int full_allows(const ab_mask *m, int i, int j)
{
    (void)m;
    (void)i;
    (void)j;
    return 1;
}

static void full_span(const ab_mask *m, int i, int *lo, int *hi)
{
    (void)i;
    *lo = 0;
    *hi = m->seq_len;
}

const ab_mask_def ab_mask_full = {
    .abi = AB_ABI_VERSION,
    .name = "full",
    .syntax = "full",
    .summary = "every query sees every key (bidirectional, encoders)",
    .causal = 0,
    .interval = 1,
    .allows = full_allows,
    .span = full_span,
};
AB_REGISTER_MASK(ab_mask_full)
