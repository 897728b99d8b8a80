/* sliding.c — causal sliding window: query i sees keys i - W < j <= i
 * (Mistral / Longformer-style local attention as a base mask; the
 * FlexAttention "sliding_window" mask_mod). Spec: "sliding:W", W >= 1
 * tokens; W >= N is plain causal. */

#include "attnbench.h"
#include "masks/spec.h"

static int sliding_parse(ab_mask *m, const char *arg)
{
    long long w;
    if (ab_spec_int(arg, 1, 1LL << 30, &w)) {
        ab_set_error(m, "sliding needs a window W >= 1 tokens (sliding:W), got '%s'", arg ? arg : "");
        return AB_EINVAL;
    }
    m->arg[0] = (double)w;
    return AB_OK;
}

static int sliding_allows(const ab_mask *m, int i, int j)
{
    return j <= i && (long long)i - j < (long long)m->arg[0];
}

static void sliding_span(const ab_mask *m, int i, int *lo, int *hi)
{
    const long long a = (long long)i + 1 - (long long)m->arg[0];
    *lo = a > 0 ? (int)a : 0;
    *hi = i + 1;
}

/* Rows [q0, q1) x keys [k0, k1) (clipped, non-empty) in O(1): row i sees
 * (i - W, i]. Every row sees the block iff the last row's window starts by
 * k0 and the first row reaches k1 - 1; some row sees a key iff some i in
 * [q0, q1) has k0 <= i and i - W + 1 < k1. */
static int sliding_block(const ab_mask *m, int q0, int q1, int k0, int k1)
{
    const long long W = (long long)m->arg[0];
    const long long a = q0 > k0 ? q0 : k0,
                    b = (long long)q1 - 1 < k1 + W - 2 ? (long long)q1 - 1 : k1 + W - 2;
    if (a > b) return AB_BLOCK_EMPTY;
    return (long long)q1 - W <= k0 && k1 <= q0 + 1 ? AB_BLOCK_FULL : AB_BLOCK_PARTIAL;
}
const ab_mask_def ab_mask_sliding = {
    .abi = AB_ABI_VERSION,
    .name = "sliding",
    .syntax = "sliding:W",
    .summary = "causal sliding window: i - W < j <= i",
    .causal = 1,
    .interval = 1,
    .parse = sliding_parse,
    .allows = sliding_allows,
    .span = sliding_span,
    .block = sliding_block,
};
AB_REGISTER_MASK(ab_mask_sliding)
