/* lsh.h — angular LSH codes ("random rotations": Andoni et al. 2015,
 * arXiv 1509.02897, as used by the Reformer, Kitaev et al. 2020, arXiv
 * 2001.04451), shared by reformer and scatterbrain. Header-only (static
 * inline), not a method: it registers nothing.
 *
 * code(x) = argmax over the first nb entries of [x rot^T, -x rot^T], rot
 * (b2, d) row-major with b2 = ceil(nb / 2), the first maximum winning (so
 * ties go to the lower code). The projections of 64 rows at a time are one
 * bs_gemm_nt with rot's b2 rows as A (every round's, stacked, when the
 * rounds are hashed together: lsh_codes_rounds) and the 64 rows of x as B's
 * panel (b2 is small: as the panel side it would be mostly padding); each projection
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

/* Scratch floats lsh_codes_rounds needs in P for `rows` projection rows at once
 * (rows = rounds x b2 to hash every round in one pass). */
static inline size_t lsh_scratch_floats(int rows) { return (size_t)LSH_ROWS * (rows > 0 ? rows : 1); }

/* Codes of the rows of x (n, d) in R rounds into out (R, n): round r
 * projects on rot + r b2 d (rot: R b2 rows of d, contiguous). The rounds
 * whose projections fit in P (pmax floats, at least lsh_scratch_floats(b2))
 * share one GEMM per chunk of rows, so x is read (and its chunk
 * transposed) once per group of rounds, not once per round; each
 * projection is the same FMA chain either way. nb == 1: all 0. seen (may
 * be NULL) is called once per chunk of rows, in order, with the chunk's
 * float range [i0, i1) of x, right after the chunk was read (a checksum
 * of x then costs no second pass over memory). */
static inline void lsh_codes_rounds(const float *x, int n, int d, const float *rot, int R, int b2, int nb,
                                    float *P, size_t pmax, float *bt, int32_t *out,
                                    void (*seen)(void *ctx, size_t i0, size_t i1), void *ctx)
{
    if (nb <= 1) {
        for (size_t i = 0; i < (size_t)R * n; i++) out[i] = 0;
        if (seen && n > 0) seen(ctx, 0, (size_t)n * d);
        return;
    }
    int g = (int)(pmax / lsh_scratch_floats(b2)); /* rounds per GEMM */
    g = g < 1 ? 1 : g > R ? R : g;
    float bv[LSH_ROWS];
    for (int r0 = 0; r0 < R; r0 += g) {
        const int gr = R - r0 < g ? R - r0 : g;
        for (int i0 = 0; i0 < n; i0 += LSH_ROWS) {
            const int nr = n - i0 < LSH_ROWS ? n - i0 : LSH_ROWS;
            /* P (gr b2, nr): P[c][a] = rot[r0 b2 + c] . x[i0 + a] */
            bs_gemm_nt(rot + (size_t)r0 * b2 * d, d, gr * b2, x + (size_t)i0 * d, d, nr, d, 1.0f, P, nr, bt);
            if (seen && r0 == 0) /* the chunk's floats, just read (in cache) */
                seen(ctx, (size_t)i0 * d, (size_t)(i0 + nr) * d);
            for (int r = 0; r < gr; r++) {
                const float *Pr = P + (size_t)r * b2 * nr;
                int32_t *best = out + (size_t)(r0 + r) * n + i0;
                for (int a = 0; a < nr; a++) {
                    bv[a] = Pr[a]; /* candidate 0 */
                    best[a] = 0;
                }
                for (int t = 1; t < nb; t++) {
                    const float sg = t < b2 ? 1.0f : -1.0f;
                    const float *p = Pr + (size_t)(t < b2 ? t : t - b2) * nr;
                    for (int a = 0; a < nr; a++) {
                        const float v = sg * p[a];
                        const int gt = v > bv[a];
                        bv[a] = gt ? v : bv[a];
                        best[a] = gt ? t : best[a];
                    }
                }
            }
        }
    }
}

#endif
