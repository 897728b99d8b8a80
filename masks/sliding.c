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
};
AB_REGISTER_MASK(ab_mask_sliding)
