/* lse.h — softmax parts on the attention tile (ab_attn_tile): merging
 * parts by their log-sum-exps (a row's attention over keys A ∪ B, disjoint,
 * from its attention over A and over B, each normalised, with lse = log
 * sum exp of the part's logits, -inf when the part is empty, as
 * ab_attn_tile_end() writes them), and folding in keys by per-row ranges.
 * Header-only (static inline), not a method: it registers nothing. */
#ifndef AB_METHODS_LSE_H
#define AB_METHODS_LSE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "attnbench.h"

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

/* Keys k, v (rows of d floats) where tile row r < nr sees keys [lo[r],
 * hi[r]): only the hull of the rows' ranges goes to the tile. lo and hi
 * are shifted to it in place. */
static inline void lse_keys_ranges(ab_attn_tile *at, const float *k, const float *v, int d, int nr, int *lo,
                                   int *hi)
{
    int a = INT32_MAX, b = 0;
    for (int r = 0; r < nr; r++)
        if (lo[r] < hi[r]) {
            a = lo[r] < a ? lo[r] : a;
            b = hi[r] > b ? hi[r] : b;
        }
    if (a >= b) return;
    for (int r = 0; r < nr; r++) {
        lo[r] -= a;
        hi[r] -= a;
    }
    ab_attn_tile_keys(at, k + (size_t)a * d, v + (size_t)a * d, b - a, lo, hi);
}

/* Keys [0, n) of k, v (rows of d floats) where tile row r < nr sees all
 * but its own stretch: [0, ca[r]) and [cb[r], n) (summary tokens around
 * the raw keys a row sees directly). cb is shifted in place. */
static inline void lse_keys_outside(ab_attn_tile *at, const float *k, const float *v, int n, int d, int nr,
                                    const int *ca, int *cb)
{
    int cam = 0, cbm = n;
    for (int r = 0; r < nr; r++) {
        cam = ca[r] > cam ? ca[r] : cam;
        cbm = cb[r] < cbm ? cb[r] : cbm;
    }
    if (cam > 0) ab_attn_tile_keys(at, k, v, cam, NULL, ca);
    if (cbm < n) {
        for (int r = 0; r < nr; r++) cb[r] -= cbm;
        ab_attn_tile_keys(at, k + (size_t)cbm * d, v + (size_t)cbm * d, n - cbm, cb, NULL);
    }
}

#endif
