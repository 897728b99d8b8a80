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
 * Under AVX-512, 64 rows and more are hashed in a broadcast form instead
 * (lsh_codes_bcast: the same chains with the operands swapped, no
 * transposes, then each row's first maximum in vectors); the codes are the
 * same, which tests/test_block_score.c checks against the scan.
 */
#ifndef AB_METHODS_LSH_H
#define AB_METHODS_LSH_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "methods/block_score.h"

#define LSH_ROWS 64 /* rows per projection GEMM */

/* Scratch floats lsh_codes_rounds needs in P for `rows` projection rows at once
 * (rows = rounds x b2 to hash every round in one pass). */
static inline size_t lsh_scratch_floats(int rows) { return (size_t)LSH_ROWS * (rows > 0 ? rows : 1); }

#if defined(__AVX2__) && !defined(__AVX512F__)
/* The GEMM form's codes for rows [0, nr / 8 * 8) of one round: P (b2,
 * nr), the rows in the columns, so eight rows sit in a vector's lanes as
 * they are; per group the scan of lsh_scan_row down the candidates (an
 * ordered greater-than: false on a NaN, as the scalar >), the maximum and
 * the code in registers. The loop below, which GCC vectorised with a
 * branch and a reload of each row's maximum per candidate, had been a
 * quarter of reformer's select() on a Zen 3 (2026-12-07). Returns the
 * rows done. */
static inline int lsh_argmax_cols8(const float *P, int nr, int b2, int nb, int32_t *out)
{
    const int nn = nb - b2, a8 = nr / 8 * 8;
    const __m256 neg1 = _mm256_set1_ps(-1.0f);
    for (int a = 0; a < a8; a += 8) {
        __m256 best = _mm256_loadu_ps(P + a), code = _mm256_setzero_ps(); /* code: int lanes */
        for (int t = 1; t < b2; t++) {
            const __m256 v = _mm256_loadu_ps(P + (size_t)t * nr + a);
            const __m256 gt = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
            best = _mm256_blendv_ps(best, v, gt);
            code = _mm256_blendv_ps(code, _mm256_castsi256_ps(_mm256_set1_epi32(t)), gt);
        }
        for (int t = 0; t < nn; t++) {
            const __m256 v = _mm256_mul_ps(neg1, _mm256_loadu_ps(P + (size_t)t * nr + a));
            const __m256 gt = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
            best = _mm256_blendv_ps(best, v, gt);
            code = _mm256_blendv_ps(code, _mm256_castsi256_ps(_mm256_set1_epi32(b2 + t)), gt);
        }
        _mm256_storeu_si256((void *)(out + a), _mm256_castps_si256(code));
    }
    return a8;
}
#endif

/* Codes of the rows of x (n, d) in R rounds into out (R, n): round r
 * projects on rot + r b2 d (rot: R b2 rows of d, contiguous). The rounds
 * whose projections fit in P (pmax floats, at least lsh_scratch_floats(b2))
 * share one GEMM per chunk of rows, so x is read (and its chunk
 * transposed) once per group of rounds, not once per round; each
 * projection is the same FMA chain either way. nb == 1: all 0. seen (may
 * be NULL) is called once per chunk of rows, in order, with the chunk's
 * float range [i0, i1) of x, right after the chunk was read (a checksum
 * of x then costs no second pass over memory). */
#if defined(__AVX512F__)
/* The code of one row from its b2 projections p: the first maximum of
 * [p, -p[0, nb - b2)] by the sequential scan with >. */
static inline int32_t lsh_scan_row(const float *p, int b2, int nb)
{
    float bv = p[0];
    int32_t best = 0;
    for (int t = 1; t < nb; t++) {
        const float v = t < b2 ? p[t] : -1.0f * p[t - b2];
        if (v > bv) {
            bv = v;
            best = t;
        }
    }
    return best;
}

/* The same code in vectors: the larger of max p and -min p (max p on a
 * tie: its candidates come first), at its first position. A NaN anywhere:
 * the scan. */
static inline int32_t lsh_argmax_row(const float *p, int b2, int nb)
{
    const int nn = nb - b2; /* negated candidates */
    __m512 mx = _mm512_set1_ps(-INFINITY), mn = _mm512_set1_ps(INFINITY);
    __mmask16 nan = 0;
    for (int t0 = 0; t0 < b2; t0 += 16) {
        const __mmask16 m = b2 - t0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (b2 - t0)) - 1u);
        const __mmask16 mneg = nn - t0 >= 16 ? (__mmask16)0xFFFF
                               : nn - t0 > 0 ? (__mmask16)((1u << (nn - t0)) - 1u)
                                             : 0;
        const __m512 v = _mm512_maskz_loadu_ps(m, p + t0);
        nan |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
        mx = _mm512_mask_max_ps(mx, m, mx, v);
        mn = _mm512_mask_min_ps(mn, mneg, mn, v);
    }
    if (!nan) {
        const float hi = _mm512_reduce_max_ps(mx), lo = _mm512_reduce_min_ps(mn);
        const int neg = nn > 0 && -lo > hi;
        const float want = neg ? lo : hi;
        const int lim = neg ? nn : b2;
        for (int t0 = 0; t0 < lim; t0 += 16) { /* the first position holding it */
            const __mmask16 m = lim - t0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (lim - t0)) - 1u);
            const __mmask16 eq = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, p + t0),
                                                         _mm512_set1_ps(want), _CMP_EQ_OQ);
            if (eq) return (neg ? b2 : 0) + t0 + __builtin_ctz(eq);
        }
    }
    return lsh_scan_row(p, b2, nb);
}

/* The codes of 16 rows at once, the rows in the lanes: their projections
 * P (16 rows of cw floats, cw a multiple of 16) transposed into pt (cw x
 * 16) in registers, then per round the scan of lsh_scan_row down the
 * candidates in order, t = 0 .. b2 - 1 and then the negated ones, a lane
 * taking t where its candidate is greater (an ordered compare: false on a
 * NaN, as the scalar >). So each lane's code is the scan's, bit for bit,
 * NaN included; the per-row form reduced each row's maximum and minimum
 * across its vector and searched for it again, a quarter of reformer's
 * hashing (2026-12-06). out: the first row's code of round 0; round r's
 * codes are n further on. */
static inline void lsh_argmax16(const float *P, int cw, int R, int b2, int nb, float *pt, int32_t *out,
                                size_t n)
{
    bs_transpose(P, (size_t)cw, NULL, 16, cw, pt, 16); /* 16 x 16 blocks in registers */
    const int nn = nb - b2;
    const __m512 neg1 = _mm512_set1_ps(-1.0f);
    for (int r = 0; r < R; r++) {
        const float *b = pt + (size_t)r * b2 * 16;
        __m512 best = _mm512_loadu_ps(b);
        __m512i code = _mm512_setzero_si512();
        for (int t = 1; t < b2; t++) {
            const __m512 v = _mm512_loadu_ps(b + (size_t)t * 16);
            const __mmask16 gt = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
            best = _mm512_mask_mov_ps(best, gt, v);
            code = _mm512_mask_mov_epi32(code, gt, _mm512_set1_epi32(t));
        }
        for (int t = 0; t < nn; t++) {
            const __m512 v = _mm512_mul_ps(neg1, _mm512_loadu_ps(b + (size_t)t * 16));
            const __mmask16 gt = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
            best = _mm512_mask_mov_ps(best, gt, v);
            code = _mm512_mask_mov_epi32(code, gt, _mm512_set1_epi32(b2 + t));
        }
        _mm512_storeu_si512(out + (size_t)r * n, code);
    }
}

/* The AVX-512 path of lsh_codes_rounds for many rows: each row of x
 * broadcast against the rotations transposed once (rt: (d, cw), cw the
 * ncol = R b2 projections rounded up to whole vectors, zero past them) by
 * bs_bcast_rows, a chunk's projections a row of P (nr, cw) each; then each
 * row's argmax over its own projections. The same FMA chains as
 * bs_gemm_nt's, so the same codes; the GEMM form transposed every 64 rows
 * of x for a product with only R b2 rows (a tenth of reformer's and
 * scatterbrain's hashing). */
static inline int lsh_codes_bcast(const float *x, int n, int d, const float *rot, int R, int b2, int nb,
                                  int32_t *out, void (*seen)(void *ctx, size_t i0, size_t i1), void *ctx)
{
    const int ncol = R * b2, cw = (ncol + 15) / 16 * 16;
    float *rt = malloc((size_t)d * cw * sizeof *rt), *P = malloc((size_t)LSH_ROWS * cw * sizeof *P);
    float *pt = malloc((size_t)16 * cw * sizeof *pt); /* 16 rows' projections transposed */
    if (!rt || !P || !pt) {
        free(rt);
        free(P);
        free(pt);
        return -1;
    }
    bs_cols_t(rot, ncol, d, cw, rt);
    for (int i0 = 0; i0 < n; i0 += LSH_ROWS) {
        const int nr = n - i0 < LSH_ROWS ? n - i0 : LSH_ROWS;
        bs_bcast_rows(x + (size_t)i0 * d, (size_t)d, nr, d, rt, cw, P);
        if (seen) seen(ctx, (size_t)i0 * d, (size_t)(i0 + nr) * d);
        int a = 0;
        for (; a + 16 <= nr; a += 16) lsh_argmax16(P + (size_t)a * cw, cw, R, b2, nb, pt, out + i0 + a, n);
        for (int r = 0; r < R; r++)
            for (int e = a; e < nr; e++)
                out[(size_t)r * n + i0 + e] = lsh_argmax_row(P + (size_t)e * cw + (size_t)r * b2, b2, nb);
    }
    free(rt);
    free(P);
    free(pt);
    return 0;
}
#endif

static inline void lsh_codes_rounds(const float *x, int n, int d, const float *rot, int R, int b2, int nb,
                                    float *P, size_t pmax, float *bt, int32_t *out,
                                    void (*seen)(void *ctx, size_t i0, size_t i1), void *ctx)
{
    if (nb <= 1) {
        for (size_t i = 0; i < (size_t)R * n; i++) out[i] = 0;
        if (seen && n > 0) seen(ctx, 0, (size_t)n * d);
        return;
    }
#if defined(__AVX512F__)
    /* many rows: the broadcast form (the same codes); it allocates its
     * transposed rotations and a chunk of projections, so a few rows (a
     * weights() call) stay with the GEMM form */
    if (n >= LSH_ROWS && lsh_codes_bcast(x, n, d, rot, R, b2, nb, out, seen, ctx) == 0) return;
#endif
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
                int a0 = 0; /* rows the vector scan took */
#if defined(__AVX2__) && !defined(__AVX512F__)
                a0 = lsh_argmax_cols8(Pr, nr, b2, nb, best);
#endif
                for (int a = a0; a < nr; a++) {
                    bv[a] = Pr[a]; /* candidate 0 */
                    best[a] = 0;
                }
                for (int t = 1; t < nb; t++) {
                    const float sg = t < b2 ? 1.0f : -1.0f;
                    const float *p = Pr + (size_t)(t < b2 ? t : t - b2) * nr;
                    for (int a = a0; a < nr; a++) {
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
