/* lse.h — merging softmax parts by their log-sum-exps: a row's attention
 * over keys A ∪ B (disjoint) from its attention over A and over B, each
 * normalised, with lse = log sum exp of the part's logits (-inf when the
 * part is empty), as ab_attn_tile_end() writes them. Header-only (static
 * inline), not a method: it registers nothing. */
#ifndef AB_METHODS_LSE_H
#define AB_METHODS_LSE_H

#include <math.h>
#include <string.h>

/* o, *lse (part A) become the merge with o2, lse2 (part B), part B's logits
 * shifted by bias (a part whose keys each stand for e^bias keys). */
static inline void lse_merge(float *o, float *lse, const float *o2, float lse2, float bias, int d)
{
    const float a = *lse, b = lse2 + bias;
    if (b == -INFINITY) return;
    if (a == -INFINITY) {
        memcpy(o, o2, (size_t)d * sizeof *o);
        *lse = b;
        return;
    }
    const float m = a > b ? a : b, wa = expf(a - m), wb = expf(b - m), inv = 1.0f / (wa + wb);
    for (int e = 0; e < d; e++) o[e] = (wa * o[e] + wb * o2[e]) * inv;
    *lse = m + logf(wa + wb);
}

#endif
