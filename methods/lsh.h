/* lsh.h — angular LSH codes ("random rotations": Andoni et al. 2015,
 * arXiv 1509.02897, as used by the Reformer, Kitaev et al. 2020, arXiv
 * 2001.04451), shared by reformer and scatterbrain. Header-only (static
 * inline), not a method: it registers nothing.
 *
 * code(x) = argmax over the first nb entries of [x rot^T, -x rot^T], rot
 * (b2, d) row-major with b2 = ceil(nb / 2), the first maximum winning (so
 * ties go to the lower code). The projections of 64 rows at a time are one
 * bs_gemm_nt with rot's b2 rows as A and the 64 rows of x as B's panel (b2
 * is small: as the panel side it would be mostly padding); each projection
 * is one FMA chain in element order, so a row's code depends neither on n
 * nor on where the chunk starts: a method that hashes all rows in select()
 * and one row in weights() gets the same code. The argmax runs over the
 * candidates in code order in branch-free passes over the chunk's rows.
 */
#ifndef AB_METHODS_LSH_H
#define AB_METHODS_LSH_H

#include <math.h>
#include <stdint.h>

#include "methods/block_score.h"

#define LSH_ROWS 64 /* rows per projection GEMM */

/* Scratch floats lsh_codes needs in P (bt: favor_bt_floats(d), i.e.
 * max(d, BS_KC) * BS_PANEL floats). */
static inline size_t lsh_scratch_floats(int b2) { return (size_t)LSH_ROWS * (b2 > 0 ? b2 : 1); }

/* Codes of the rows of x (n, d) into out (n). nb == 1: all 0. */
static inline void lsh_codes(const float *x, int n, int d, const float *rot, int b2, int nb, float *P,
                             float *bt, int32_t *out)
{
    if (nb <= 1) {
        for (int i = 0; i < n; i++) out[i] = 0;
        return;
    }
    float bv[LSH_ROWS];
    for (int i0 = 0; i0 < n; i0 += LSH_ROWS) {
        const int nr = n - i0 < LSH_ROWS ? n - i0 : LSH_ROWS;
        int32_t *best = out + i0;
        /* P (b2, nr): P[c][a] = rot[c] . x[i0 + a] */
        bs_gemm_nt(rot, d, b2, x + (size_t)i0 * d, d, nr, d, 1.0f, P, nr, bt);
        for (int a = 0; a < nr; a++) {
            bv[a] = P[a]; /* candidate 0 */
            best[a] = 0;
        }
        for (int t = 1; t < nb; t++) {
            const float sg = t < b2 ? 1.0f : -1.0f;
            const float *p = P + (size_t)(t < b2 ? t : t - b2) * nr;
            for (int a = 0; a < nr; a++) {
                const float v = sg * p[a];
                const int gt = v > bv[a];
                bv[a] = gt ? v : bv[a];
                best[a] = gt ? t : best[a];
            }
        }
    }
}

#endif
