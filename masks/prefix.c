/* prefix.c — prefix-LM mask: the first P tokens (the prefix) attend to each
 * other both ways, the rest is causal: j <= i or j < P (Raffel et al., T5,
 * JMLR 2020; Dong et al., UniLM, NeurIPS 2019). Spec: "prefix:F" with a
 * fraction F in [0, 1] of N (written with a '.', e.g. prefix:0.25), or
 * "prefix:P" with an integer token count P <= N. */
#include <math.h>
#include <string.h>

#include "attnbench.h"
#include "masks/spec.h"

/* arg[0]: fraction (arg[1] = 0) or token count (arg[1] = 1) */
static int prefix_parse(ab_mask *m, const char *arg)
{
    if (arg && strpbrk(arg, ".eE")) {
        double f;
        if (ab_spec_double(arg, &f) || !(f >= 0.0 && f <= 1.0)) {
            ab_set_error(m, "prefix fraction must be in [0, 1] (prefix:0.25), got '%s'", arg);
            return AB_EINVAL;
        }
        m->arg[0] = f;
        m->arg[1] = 0;
        return AB_OK;
    }
    long long p;
    if (ab_spec_int(arg, 0, 1LL << 30, &p)) {
        ab_set_error(m,
                     "prefix needs a fraction of N (prefix:0.25) or a token count >= 0 (prefix:1024), "
                     "got '%s'",
                     arg ? arg : "");
        return AB_EINVAL;
    }
    m->arg[0] = (double)p;
    m->arg[1] = 1;
    return AB_OK;
}

static int prefix_bind(ab_mask *m)
{
    long long p = m->arg[1] != 0 ? (long long)m->arg[0] : llround(m->arg[0] * m->seq_len);
    if (p > m->seq_len) {
        ab_set_error(m, "prefix of %lld tokens is longer than N = %d", p, m->seq_len);
        return AB_EINVAL;
    }
    m->arg[2] = (double)p; /* the bound prefix length */
    return AB_OK;
}

static int prefix_allows(const ab_mask *m, int i, int j) { return j <= i || j < (int)m->arg[2]; }

static void prefix_span(const ab_mask *m, int i, int *lo, int *hi)
{
    const int p = (int)m->arg[2];
    *lo = 0;
    *hi = i + 1 > p ? i + 1 : p;
}

/* Rows [q0, q1) x keys [k0, k1) (clipped, non-empty) in O(1): row i sees
 * [0, max(i + 1, P)), which grows with i: full iff the first row reaches
 * k1, some key seen iff the last row reaches past k0. */
static int prefix_block(const ab_mask *m, int q0, int q1, int k0, int k1)
{
    const int p = (int)m->arg[2];
    if ((q1 > p ? q1 : p) <= k0) return AB_BLOCK_EMPTY;
    return (q0 + 1 > p ? q0 + 1 : p) >= k1 ? AB_BLOCK_FULL : AB_BLOCK_PARTIAL;
}
const ab_mask_def ab_mask_prefix = {
    .abi = AB_ABI_VERSION,
    .name = "prefix",
    .syntax = "prefix:F|P",
    .summary = "prefix-LM: bidirectional over the first P = F N tokens, causal after",
    .causal = 0,
    .interval = 1,
    .parse = prefix_parse,
    .bind = prefix_bind,
    .allows = prefix_allows,
    .span = prefix_span,
    .block = prefix_block,
};
AB_REGISTER_MASK(ab_mask_prefix)
