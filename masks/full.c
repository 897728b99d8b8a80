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

/* Every non-empty block is full. */
static int full_block(const ab_mask *m, int q0, int q1, int k0, int k1)
{
    (void)m;
    (void)q0;
    (void)q1;
    (void)k0;
    (void)k1;
    return AB_BLOCK_FULL;
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
    .block = full_block,
};
AB_REGISTER_MASK(ab_mask_full)
