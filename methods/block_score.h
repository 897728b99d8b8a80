/* block_score.h — scoring and ranking of blocks, shared by the dynamic selectors
 * (xattention, minference_block, flexprefill, seer_proxy, quest_prefill,
 * anchor and anchor_small through anchor_core.h, pbs, cca; the token
 * selectors spark, oracle_topk_token, minference_vs, dhsa): a vectorisable A·Bᵀ on row-major panels, scaled
 * logit panels, block mean pooling, a deterministic (score desc, index asc)
 * sort and a softmax. The dithered fractional budget (mc_dither) and the
 * other method-wide helpers are in methods/keep.h, included here.
 * Header-only (static inline), not a method: it registers nothing.
 */
#ifndef AB_METHODS_BLOCK_SCORE_H
#define AB_METHODS_BLOCK_SCORE_H

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attnbench.h"

#include "methods/keep.h"

#define BS_PANEL 64  /* B rows transposed at a time in bs_gemm_nt */
#define BS_KC    128 /* depth (columns of A and B) per transposed chunk (kept in L1) */
#if defined(__AVX512F__)
#define BS_MR 4 /* rows of A per register tile (bs_kern) */
#else
#define BS_MR 6
#endif

#include "methods/vecf.h"
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
/* The 16 x 16 transpose of sixteen named __m512 rows, in place (see
 * bs_transpose16p); ix is BS_T16_IX. Sixteen named registers and every
 * swap written out: with an array and loops GCC kept the rows on the
 * stack. */
static const int32_t BS_T16_IX[4][2][16] = {
    { { 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23 },
      { 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31 } },
    { { 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27 },
      { 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31 } },
    { { 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29 },
      { 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31 } },
    { { 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30 },
      { 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31 } },
};
#define BS_T16_SWAP(a, b, lo, hi)               \
    do {                                        \
        const __m512 x_ = a, y_ = b;            \
        a = _mm512_permutex2var_ps(x_, lo, y_); \
        b = _mm512_permutex2var_ps(x_, hi, y_); \
    } while (0)
#define BS_T16_STAGE(s, a0, b0, a1, b1, a2, b2, a3, b3, a4, b4, a5, b5, a6, b6, a7, b7)                     \
    do {                                                                                                    \
        const __m512i lo_ = _mm512_loadu_si512(BS_T16_IX[s][0]), hi_ = _mm512_loadu_si512(BS_T16_IX[s][1]); \
        BS_T16_SWAP(a0, b0, lo_, hi_);                                                                      \
        BS_T16_SWAP(a1, b1, lo_, hi_);                                                                      \
        BS_T16_SWAP(a2, b2, lo_, hi_);                                                                      \
        BS_T16_SWAP(a3, b3, lo_, hi_);                                                                      \
        BS_T16_SWAP(a4, b4, lo_, hi_);                                                                      \
        BS_T16_SWAP(a5, b5, lo_, hi_);                                                                      \
        BS_T16_SWAP(a6, b6, lo_, hi_);                                                                      \
        BS_T16_SWAP(a7, b7, lo_, hi_);                                                                      \
    } while (0)
#define BS_T16(r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15)           \
    do {                                                                                       \
        BS_T16_STAGE(0, r0, r8, r1, r9, r2, r10, r3, r11, r4, r12, r5, r13, r6, r14, r7, r15); \
        BS_T16_STAGE(1, r0, r4, r1, r5, r2, r6, r3, r7, r8, r12, r9, r13, r10, r14, r11, r15); \
        BS_T16_STAGE(2, r0, r2, r1, r3, r4, r6, r5, r7, r8, r10, r9, r11, r12, r14, r13, r15); \
        BS_T16_STAGE(3, r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15); \
    } while (0)
/* STEP(i, ri) for the sixteen rows r0 .. r15 in order (after BS_T16:
 * column i of the transposed block). */
#define BS_T16_EACH(STEP) \
    do {                  \
        STEP(0, r0);      \
        STEP(1, r1);      \
        STEP(2, r2);      \
        STEP(3, r3);      \
        STEP(4, r4);      \
        STEP(5, r5);      \
        STEP(6, r6);      \
        STEP(7, r7);      \
        STEP(8, r8);      \
        STEP(9, r9);      \
        STEP(10, r10);    \
        STEP(11, r11);    \
        STEP(12, r12);    \
        STEP(13, r13);    \
        STEP(14, r14);    \
        STEP(15, r15);    \
    } while (0)
#define BS_T16_LOAD(row)                                                                                   \
    __m512 r0 = _mm512_loadu_ps(row[0]), r1 = _mm512_loadu_ps(row[1]), r2 = _mm512_loadu_ps(row[2]),       \
           r3 = _mm512_loadu_ps(row[3]), r4 = _mm512_loadu_ps(row[4]), r5 = _mm512_loadu_ps(row[5]),       \
           r6 = _mm512_loadu_ps(row[6]), r7 = _mm512_loadu_ps(row[7]), r8 = _mm512_loadu_ps(row[8]),       \
           r9 = _mm512_loadu_ps(row[9]), r10 = _mm512_loadu_ps(row[10]), r11 = _mm512_loadu_ps(row[11]),   \
           r12 = _mm512_loadu_ps(row[12]), r13 = _mm512_loadu_ps(row[13]), r14 = _mm512_loadu_ps(row[14]), \
           r15 = _mm512_loadu_ps(row[15])

/* dst[c * ld + i] = row[i][c] for i, c < 16: four block-swap stages (b =
 * 8, 4, 2, 1: an element whose row and column differ in bit b moves
 * across it), one two-source permute per row each; 64 permutes for 256
 * elements, where the scalar copy takes a load and a store each and its
 * strided stores or loads miss L1. */
static inline void bs_transpose16p(const float *const row[16], float *dst, size_t ld)
{
    BS_T16_LOAD(row);
    BS_T16(r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15);
    _mm512_storeu_ps(dst + 0 * ld, r0);
    _mm512_storeu_ps(dst + 1 * ld, r1);
    _mm512_storeu_ps(dst + 2 * ld, r2);
    _mm512_storeu_ps(dst + 3 * ld, r3);
    _mm512_storeu_ps(dst + 4 * ld, r4);
    _mm512_storeu_ps(dst + 5 * ld, r5);
    _mm512_storeu_ps(dst + 6 * ld, r6);
    _mm512_storeu_ps(dst + 7 * ld, r7);
    _mm512_storeu_ps(dst + 8 * ld, r8);
    _mm512_storeu_ps(dst + 9 * ld, r9);
    _mm512_storeu_ps(dst + 10 * ld, r10);
    _mm512_storeu_ps(dst + 11 * ld, r11);
    _mm512_storeu_ps(dst + 12 * ld, r12);
    _mm512_storeu_ps(dst + 13 * ld, r13);
    _mm512_storeu_ps(dst + 14 * ld, r14);
    _mm512_storeu_ps(dst + 15 * ld, r15);
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
/* dst[c * ld + i] = row[i][c0 + c] for i, c < 8: the 8 x 8 transpose in
 * registers (unpack pairs of rows, shuffle pairs of those, swap 128-bit
 * halves), 24 shuffles for 64 elements. */
static inline void bs_transpose8p(const float *const row[8], int c0, float *dst, size_t ld)
{
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(row[i] + c0);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int c = 0; c < 4; c++) {
        _mm256_storeu_ps(dst + (size_t)c * ld, _mm256_permute2f128_ps(u[c], u[c + 4], 0x20));
        _mm256_storeu_ps(dst + (size_t)(c + 4) * ld, _mm256_permute2f128_ps(u[c], u[c + 4], 0x31));
    }
}
#endif

/* dst[c * ldd + j] = row[j][c] for j < nj, c < nc, row[j] = src + j * lds,
 * or K + idx[j] * lds when idx is given (gathered rows): 16 x 16 blocks in
 * registers where the build has AVX-512, 8 x 8 blocks under AVX2 (until
 * 2026-12-07 the AVX2 build copied every element with a load and a store,
 * about a tenth of pbs's and flexprefill's select() on a Zen 3: the panel
 * transposes of their last-queries products), the edges one element at a
 * time. */
static inline void bs_transpose(const float *src, size_t lds, const int32_t *idx, int nj, int nc, float *dst,
                                size_t ldd)
{
    int jb = 0, cb = 0; /* rows and columns the register blocks cover */
#if defined(__AVX512F__)
    jb = nj / 16 * 16;
    cb = nc / 16 * 16;
    for (int j = 0; j < jb; j += 16) {
        const float *row[16];
        for (int i = 0; i < 16; i++) row[i] = src + (size_t)(idx ? idx[j + i] : j + i) * lds;
        for (int c = 0; c < cb; c += 16) {
            bs_transpose16p(row, dst + (size_t)c * ldd + j, ldd);
            for (int i = 0; i < 16; i++) row[i] += 16;
        }
    }
#elif defined(__AVX2__)
    jb = nj / 8 * 8;
    cb = nc / 8 * 8;
    for (int j = 0; j < jb; j += 8) {
        const float *row[8];
        for (int i = 0; i < 8; i++) row[i] = src + (size_t)(idx ? idx[j + i] : j + i) * lds;
        for (int c = 0; c < cb; c += 8) bs_transpose8p(row, c, dst + (size_t)c * ldd + j, ldd);
    }
#endif
    for (int c = 0; c < nc; c++) { /* contiguous stores; the nj rows read stay in L1 */
        float *restrict o = dst + (size_t)c * ldd;
        for (int j = c < cb ? jb : 0; j < nj; j++) o[j] = src[(size_t)(idx ? idx[j] : j) * lds + c];
    }
}

/* Zeroes columns [nj, BS_PANEL) of the nc rows of a panel, so the vector
 * kernel may read its whole width. */
static inline void bs_panel_pad(float *pan, int nj, int nc)
{
    if (nj < BS_PANEL)
        for (int c = 0; c < nc; c++)
            for (int j = nj; j < BS_PANEL; j++) pan[(size_t)c * BS_PANEL + j] = 0.0f;
}

/* Row chains, sixteen rows at a time: for the n <= 16 rows x_u = a + u lda
 * (u < n), sq[u] = sum_c x_u[c]^2 and, where dot is given, dot[u] = sum_c
 * x_{u-1}[c] x_u[c] (x_{-1} = a - lda, which must exist). Each is a double
 * chain over c in order, the bits of a scalar loop per row. Under AVX-512
 * (16 rows, d a multiple of 16) the rows sit in the lanes of two double
 * vectors, transposed in registers; otherwise four rows' chains side by
 * side, each element read with its own load (through a scratch transpose
 * this was twice as slow under AVX2). A loop per row waits on its add
 * every step. */
#if defined(__AVX512F__)
/* Column r (of the 16 rows, transposed in registers) into the chains
 * (inside bs_row_chains16: its accumulators, pr and prev_). */
#define BS_RC_STEP(i, r)                                                                                     \
    do {                                                                                                     \
        const __m512d y0_ = _mm512_cvtps_pd(_mm512_castps512_ps256(r)),                                      \
                      y1_ =                                                                                  \
                          _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(r), 1))); \
        s0 += y0_ * y0_;                                                                                     \
        s1 += y1_ * y1_;                                                                                     \
        if (dot) {                                                                                           \
            const __m512 w_ = _mm512_permutex2var_ps(r, _mm512_mask_set1_epi32(prev_, 1, 16 + (i)), pr);     \
            p0 += _mm512_cvtps_pd(_mm512_castps512_ps256(w_)) * y0_;                                         \
            p1 += _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w_), 1))) * y1_;  \
        }                                                                                                    \
    } while (0)
#endif

static inline __attribute__((always_inline)) void bs_row_chains16(const float *a, size_t lda, int n, int d,
                                                                  double *sq, double *dot)
{
#if defined(__AVX512F__)
    if (n == 16 && d % 16 == 0) { /* the columns transposed in registers */
        const float *row[16];
        for (int u = 0; u < 16; u++) row[u] = a + (size_t)u * lda;
        __m512d s0 = _mm512_setzero_pd(), s1 = s0, p0 = s0, p1 = s0;
        /* the column of each row's predecessor: lane u >= 1 from lane u - 1
         * of the transposed column; lane 0 (set per column in BS_RC_STEP)
         * from lane i of the row before */
        const __m512i prev_ = _mm512_set_epi32(14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0);
        for (int c0 = 0; c0 < d; c0 += 16) {
            const __m512 pr = dot ? _mm512_loadu_ps(a - lda + c0) : _mm512_setzero_ps();
            BS_T16_LOAD(row);
            BS_T16(r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15);
            BS_T16_EACH(BS_RC_STEP);
            for (int u = 0; u < 16; u++) row[u] += 16;
        }
        _mm512_storeu_pd(sq, s0);
        _mm512_storeu_pd(sq + 8, s1);
        if (dot) {
            _mm512_storeu_pd(dot, p0);
            _mm512_storeu_pd(dot + 8, p1);
        }
        return;
    }
#endif
    for (int u0 = 0; u0 < n; u0 += 4) {
        const int nu = n - u0 < 4 ? n - u0 : 4;
        const float *b = a + (size_t)u0 * lda;
        double s4[4] = { 0, 0, 0, 0 }, p4[4] = { 0, 0, 0, 0 };
        for (int c = 0; c < d; c++)
            for (int u = 0; u < 4; u++) {
                const size_t o = (size_t)(u < nu ? u : 0) * lda + c; /* past n: row u0 again, unused */
                s4[u] += (double)b[o] * b[o];
                if (dot) p4[u] += (double)b[o - lda] * b[o];
            }
        for (int u = 0; u < nu; u++) {
            sq[u0 + u] = s4[u];
            if (dot) dot[u0 + u] = p4[u];
        }
    }
}

/* Float row chains, sixteen rows at a time: sq[u] = the float loop "s +=
 * x_u[c] * x_u[c]" over c in order from 0 (each product rounded, then
 * added: no FMA) for the n <= 16 rows x_u = a + u lda. Under AVX-512 (16
 * rows, d a multiple of 16) the rows sit in the lanes of one vector,
 * transposed in registers; otherwise four rows' chains side by side. */
#if defined(__AVX512F__)
#define BS_SQ_STEP(i, r) s = _mm512_add_ps(s, _mm512_mul_ps(r, r))
#endif
static inline void bs_row_sq16f(const float *a, size_t lda, int n, int d, float *sq)
{
#if defined(__AVX512F__)
    if (n == 16 && d % 16 == 0) {
        const float *row[16];
        for (int u = 0; u < 16; u++) row[u] = a + (size_t)u * lda;
        __m512 s = _mm512_setzero_ps();
        for (int c0 = 0; c0 < d; c0 += 16) {
            BS_T16_LOAD(row);
            BS_T16(r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15);
            BS_T16_EACH(BS_SQ_STEP);
            for (int u = 0; u < 16; u++) row[u] += 16;
        }
        _mm512_storeu_ps(sq, s);
        return;
    }
#endif
    for (int u0 = 0; u0 < n; u0 += 4) {
        const int nu = n - u0 < 4 ? n - u0 : 4;
        const float *x0 = a + (size_t)u0 * lda, *x1 = nu > 1 ? x0 + lda : x0, *x2 = nu > 2 ? x1 + lda : x0,
                    *x3 = nu > 3 ? x2 + lda : x0; /* past n: row u0 again, unused */
        float s4[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
        for (int c = 0; c < d; c++) {
            s4[0] += x0[c] * x0[c];
            s4[1] += x1[c] * x1[c];
            s4[2] += x2[c] * x2[c];
            s4[3] += x3[c] * x3[c];
        }
        for (int u = 0; u < nu; u++) sq[u0 + u] = s4[u];
    }
}

/* Transposes columns [c0, c1) of rows [j0, j0 + nj) of B (row stride ldb)
 * into the panel bt[(c - c0) * BS_PANEL + j]; columns j >= nj of the panel are zeroed so the
 * vector kernel may read the whole panel width. */
static inline void bs_panel_t(const float *B, int ldb, int j0, int nj, int c0, int c1, float *bt)
{
    bs_transpose(B + (size_t)j0 * ldb + c0, (size_t)ldb, NULL, nj, c1 - c0, bt, BS_PANEL);
    bs_panel_pad(bt, nj, c1 - c0);
}

/* The panels of bs_pack_nt and bs_pack_gather: rows src + j * lds, or
 * src + idx[j] * lds when idx is given, j < n, in panels of BS_PANEL rows
 * as D x 64 floats, rows past n zero. */
static inline void bs_pack_rows(const float *src, size_t lds, const int32_t *idx, int n, int D, float *bp)
{
    for (int j0 = 0, p = 0; j0 < n; j0 += BS_PANEL, p++) {
        const int nj = n - j0 < BS_PANEL ? n - j0 : BS_PANEL;
        float *dst = bp + (size_t)p * D * BS_PANEL;
        bs_transpose(idx ? src : src + (size_t)j0 * lds, lds, idx ? idx + j0 : NULL, nj, D, dst, BS_PANEL);
        bs_panel_pad(dst, nj, D);
    }
}

#if defined(__AVX512F__)
/* bs_kern_avx512's four-row loop: acc[r][v] over c in [c0, c1) for the
 * first NV vectors of the panel (the columns past them are not stored:
 * a short last panel computes only what it keeps). unit:
 * pre is 1; NV and unit are constants at each call, so the broadcasts load
 * A directly (an embedded broadcast in the FMA) instead of a scalar
 * multiply and a register broadcast per row on the FMA pipes (a * 1 is a:
 * the same bits), and the unused vectors cost nothing. */
#define BS_KROW4(r, ar)                                                  \
    do {                                                                 \
        const __m512 x = _mm512_set1_ps(unit ? (ar)[c] : (ar)[c] * pre); \
        acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);                   \
        if (NV > 1) acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);       \
        if (NV > 2) acc[r][2] = _mm512_fmadd_ps(x, b2, acc[r][2]);       \
        if (NV > 3) acc[r][3] = _mm512_fmadd_ps(x, b3, acc[r][3]);       \
    } while (0)
static inline __attribute__((always_inline)) void bs_kern4_avx512(const int NV, const float *a0, int lda,
                                                                  const float *bt, int c0, int c1, float pre,
                                                                  __m512 acc[4][4], const int unit)
{
    const float *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
    for (int c = c0; c < c1; c++) {
        const float *br = bt + (size_t)(c - c0) * BS_PANEL;
        __m512 b0 = _mm512_loadu_ps(br), b1 = b0, b2 = b0, b3 = b0;
        /* the panel row in registers: without this GCC folds each load
         * into the four FMAs that read it (16 loads where 4 do), and
         * the loop ran load-bound (bs_gemm_nt_packed 64 x 64 x 64:
         * 85 -> 105 GFLOP/s on a 117 GFLOP/s Zen 4 core) */
        __asm__("" : "+v"(b0));
        if (NV > 1) {
            b1 = _mm512_loadu_ps(br + 16);
            __asm__("" : "+v"(b1));
        }
        if (NV > 2) {
            b2 = _mm512_loadu_ps(br + 32);
            __asm__("" : "+v"(b2));
        }
        if (NV > 3) {
            b3 = _mm512_loadu_ps(br + 48);
            __asm__("" : "+v"(b3));
        }
        BS_KROW4(0, a0);
        BS_KROW4(1, a1);
        BS_KROW4(2, a2);
        BS_KROW4(3, a3);
    }
}
#undef BS_KROW4

/* rows [i0, i0 + R) of A (R <= 4) against one transposed panel: C[i][j0 + j]
 * = post * sum_c (pre * A[i][c]) * bt[c][j] for j < nj; 4 x 64 accumulators
 * in registers, one FMA chain per element in c order (the result does not
 * depend on the thread count or on the tiling of rows). */
static inline void bs_kern_avx512(const float *A, int lda, int i0, int R, const float *bt, int c0, int c1,
                                  float pre, float post, int first, int last, float *C, int ldc, int j0,
                                  int nj)
{
    __m512 acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
    if (!first) /* resume the partial sums of the previous depth chunk */
        for (int r = 0; r < R; r++) {
            const float *crow = C + (size_t)(i0 + r) * ldc + j0;
            for (int v = 0; v < 4; v++) {
                const int rem = nj - 16 * v;
                if (rem <= 0) break;
                const __mmask16 mk = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
                acc[r][v] = _mm512_maskz_loadu_ps(mk, crow + 16 * v);
            }
        }
    const float *a0 = A + (size_t)i0 * lda;
    const int nv = nj > 48 ? 4 : nj > 32 ? 3 : nj > 16 ? 2 : 1; /* vectors holding columns < nj */
    if (R == 4 && pre == 1.0f) {
        switch (nv) {
        case 4: bs_kern4_avx512(4, a0, lda, bt, c0, c1, 1.0f, acc, 1); break;
        case 3: bs_kern4_avx512(3, a0, lda, bt, c0, c1, 1.0f, acc, 1); break;
        case 2: bs_kern4_avx512(2, a0, lda, bt, c0, c1, 1.0f, acc, 1); break;
        default: bs_kern4_avx512(1, a0, lda, bt, c0, c1, 1.0f, acc, 1); break;
        }
    } else if (R == 4) {
        bs_kern4_avx512(4, a0, lda, bt, c0, c1, pre, acc, 0);
    } else {
        for (int r = 0; r < R; r++) {
            const float *a = a0 + (size_t)r * lda;
            for (int c = c0; c < c1; c++) {
                const float *br = bt + (size_t)(c - c0) * BS_PANEL;
                const __m512 x = _mm512_set1_ps(a[c] * pre);
                for (int v = 0; v < nv; v++)
                    acc[r][v] = _mm512_fmadd_ps(x, _mm512_loadu_ps(br + 16 * v), acc[r][v]);
            }
        }
    }
    const __m512 ps = _mm512_set1_ps(last ? post : 1.0f);
    for (int r = 0; r < R; r++) {
        float *crow = C + (size_t)(i0 + r) * ldc + j0;
        for (int v = 0; v < 4; v++) {
            const int rem = nj - 16 * v;
            if (rem <= 0) break;
            const __mmask16 mk = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
            _mm512_mask_storeu_ps(crow + 16 * v, mk, last ? _mm512_mul_ps(ps, acc[r][v]) : acc[r][v]);
        }
    }
}
#define bs_kern bs_kern_avx512
#else
#define BS_NV 2
/* The tile's depth loop: acc[r][v] += a[r][c] * bt[c][g + v VW] over c in
 * [0, kc), c in order (kc a constant where the caller has one). */
static inline __attribute__((always_inline)) void bs_kern_vf_depth(const int R, const int kc,
                                                                   const float *const *a, const float *bt,
                                                                   int g, vf acc[BS_MR][BS_NV])
{
    for (int c = 0; c < kc; c++) {
        const float *br = bt + (size_t)c * BS_PANEL + g;
        vf b[BS_NV];
#pragma GCC unroll 4
        for (int v = 0; v < BS_NV; v++) {
            b[v] = v_load(br + v * VW);
            __asm__("" : "+x"(b[v])); /* one load, kept: not folded into each row's FMA */
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const vf x = v_splat(a[r][c]);
#pragma GCC unroll 4
            for (int v = 0; v < BS_NV; v++) acc[r][v] = v_fma(x, b[v], acc[r][v]);
        }
    }
}

/* bs_kern_vf_r's common tile: fresh sums (first), every column of the
 * panel and the depth KC a constant: no partial sums to resume, no ragged
 * columns, a fixed trip count (bs_gemm_chunks 0.94-0.96x the time at
 * 64 x 16K x 64 on a Zen 3, 2026-12-08); the same chains. */
static inline __attribute__((always_inline)) void bs_kern_vf_whole(const int R, const int KC,
                                                                   const float *const *a, const float *bt,
                                                                   vf ps, int last, float *C, int ldc, int i0,
                                                                   int j0)
{
    for (int g = 0; g < BS_PANEL; g += BS_NV * VW) {
        vf acc[BS_MR][BS_NV];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int v = 0; v < BS_NV; v++) acc[r][v] = v_splat(0.0f);
        bs_kern_vf_depth(R, KC, a, bt, g, acc);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int v = 0; v < BS_NV; v++)
                v_store(C + (size_t)(i0 + r) * ldc + j0 + g + v * VW, last ? ps * acc[r][v] : acc[r][v]);
    }
}

/* The same tile without AVX-512, on the VW-lane vectors of methods/vecf.h
 * (8 under AVX2 + FMA, else 4): rows [i0, i0 + R) (R <= BS_MR) against one
 * transposed panel, BS_NV vectors of columns at a time (6 x 2 accumulators
 * + 2 panel vectors + 1 broadcast fit AVX2's 16 registers). Each element is
 * the same chain as bs_kern_avx512's, fl(pre * A[i][c]) fused into it in c
 * order (v_fma; without FMA a multiply and an add), so the AVX2 and AVX-512
 * builds score alike. R is a constant at every call (bs_kern_vf's switch),
 * so the loops over it unroll and acc stays in registers. */
static inline __attribute__((always_inline)) void bs_kern_vf_r(const int R, const float *A, int lda, int i0,
                                                               const float *bt, int c0, int c1, float pre,
                                                               float post, int first, int last, float *C,
                                                               int ldc, int j0, int nj)
{
    /* a[r][c]: fl(pre * A[i0 + r][c0 + c]), broadcast from memory in the
     * loop; pre != 1 scales the tile's rows once into as (a depth chunk
     * is at most BS_KC), where the loop had multiplied every element
     * again for each group of columns: a vmulss and a register broadcast
     * per FMA pair, on the FMA pipes (2026-12-07: flexprefill's scores,
     * pre 1, paid the multiply too) */
    float as[BS_MR][BS_KC];
    const float *a[BS_MR];
    const int kc = c1 - c0;
    for (int r = 0; r < R; r++) {
        a[r] = A + (size_t)(i0 + r) * lda + c0;
        if (pre != 1.0f) {
            for (int c = 0; c < kc; c++) as[r][c] = a[r][c] * pre;
            a[r] = as[r];
        }
    }
    const vf ps = v_splat(last ? post : 1.0f);
    if (first && nj == BS_PANEL && (kc == 64 || kc == 128)) {
        if (kc == 64)
            bs_kern_vf_whole(R, 64, a, bt, ps, last, C, ldc, i0, j0);
        else
            bs_kern_vf_whole(R, 128, a, bt, ps, last, C, ldc, i0, j0);
        return;
    }
    for (int g = 0; g < nj; g += BS_NV * VW) {
        vf acc[BS_MR][BS_NV];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int v = 0; v < BS_NV; v++) {
                const int rem = nj - g - v * VW;
                const float *crow = C + (size_t)(i0 + r) * ldc + j0 + g + v * VW;
                acc[r][v] = v_splat(0.0f);
                if (first || rem <= 0) /* a fresh sum, or columns past nj (never stored) */
                    continue;
                if (rem >= VW) {
                    acc[r][v] = v_load(crow);
                } else { /* resume the partial sums of the previous depth chunk (through a
                          * copy: memcpy into acc itself took its address, and GCC kept
                          * every accumulator on the stack around the loop) */
                    vf t = v_splat(0.0f);
                    memcpy(&t, crow, (size_t)rem * sizeof(float));
                    acc[r][v] = t;
                }
            }
        bs_kern_vf_depth(R, kc, a, bt, g, acc);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int v = 0; v < BS_NV; v++) {
                const int rem = nj - g - v * VW;
                float *crow = C + (size_t)(i0 + r) * ldc + j0 + g + v * VW;
                const vf y = last ? ps * acc[r][v] : acc[r][v];
                if (rem >= VW)
                    v_store(crow, y);
                else if (rem > 0)
                    memcpy(crow, &y, (size_t)rem * sizeof(float));
            }
    }
}

static inline void bs_kern_vf(const float *A, int lda, int i0, int R, const float *bt, int c0, int c1,
                              float pre, float post, int first, int last, float *C, int ldc, int j0, int nj)
{
    switch (R) {
    case 6: bs_kern_vf_r(6, A, lda, i0, bt, c0, c1, pre, post, first, last, C, ldc, j0, nj); break;
    case 5: bs_kern_vf_r(5, A, lda, i0, bt, c0, c1, pre, post, first, last, C, ldc, j0, nj); break;
    case 4: bs_kern_vf_r(4, A, lda, i0, bt, c0, c1, pre, post, first, last, C, ldc, j0, nj); break;
    case 3: bs_kern_vf_r(3, A, lda, i0, bt, c0, c1, pre, post, first, last, C, ldc, j0, nj); break;
    case 2: bs_kern_vf_r(2, A, lda, i0, bt, c0, c1, pre, post, first, last, C, ldc, j0, nj); break;
    default: bs_kern_vf_r(1, A, lda, i0, bt, c0, c1, pre, post, first, last, C, ldc, j0, nj); break;
    }
}
#define bs_kern bs_kern_vf
#endif

/* max(x[0, n)) as the loop "m = x[j] > m ? x[j] : m" from m = x[0] gives it
 * (NaN entries after the first are skipped); -INFINITY for n <= 0. Vector
 * lanes with AVX-512 or AVX2 (the scalar loop is a serial dependency chain). */
static inline float bs_max(const float *x, int n)
{
    if (n <= 0) return -INFINITY;
    float m = x[0];
    int j = 1;
#if defined(__AVX512F__)
    if (n >= 17) {
        __m512 v = _mm512_set1_ps(m);
        for (; j + 16 <= n; j += 16) v = _mm512_max_ps(_mm512_loadu_ps(x + j), v); /* NaN in x: keeps v */
        if (j < n) { /* the tail under a mask (a scalar chain of up to 15 compares) */
            const __mmask16 k = (__mmask16)((1u << (n - j)) - 1u);
            v = _mm512_mask_max_ps(v, k, _mm512_maskz_loadu_ps(k, x + j), v);
            j = n;
        }
        m = _mm512_reduce_max_ps(v);
    }
#elif defined(__AVX2__)
    if (n >= 9) {
        __m256 v = _mm256_set1_ps(m);
        for (; j + 8 <= n; j += 8) v = _mm256_max_ps(_mm256_loadu_ps(x + j), v); /* NaN in x: keeps v */
        float lanes[8];
        _mm256_storeu_ps(lanes, v);
        m = lanes[0];
        for (int t = 1; t < 8; t++) m = lanes[t] > m ? lanes[t] : m;
    }
#endif
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* B (n, D) row stride ldb packed for bs_gemm_nt_packed: panel p (rows
 * 64p .. 64p+63) as D x 64 floats, bp[(p * D + c) * 64 + j] = B[64p + j][c],
 * rows past n zero. bp holds ceil(n / 64) * 64 * D floats. */
static inline void bs_pack_nt(const float *B, int ldb, int n, int D, float *bp)
{
    bs_pack_rows(B, (size_t)ldb, NULL, n, D, bp);
}

/* The rows idx[0, n) of K (row length d) packed as bs_pack_nt packs a
 * contiguous B: panel p (rows 64p .. 64p+63) as d x 64 floats, rows past n
 * zero. bp holds ceil(n / 64) * 64 * d floats. */
static inline void bs_pack_gather(const float *K, int d, const int32_t *idx, int n, float *bp)
{
    bs_pack_rows(K, (size_t)d, idx, n, d, bp);
}

/* dst (n, d) = scale * the rows idx[0, n) of X (row length d), or the rows
 * i0 .. i0+n-1 when idx is NULL: the pre-scaled query tile of a custom
 * run(). bs_gemm_nt_packed with alpha 1 on it gives bs_gemm_core's
 * (scale * q) . k chains with pre = scale, bit for bit. */
static inline void bs_scale_rows(const float *X, int d, const int32_t *idx, int i0, int n, float scale,
                                 float *dst)
{
    for (int a = 0; a < n; a++) {
        const float *src = X + (size_t)(idx ? idx[a] : i0 + a) * d;
        float *o = dst + (size_t)a * d;
        for (int e = 0; e < d; e++) o[e] = scale * src[e];
    }
}

/* The 64-byte lines of B the panel after (j0, c1) reads, fetched into L1
 * a few at a time between the current panel's products (bs_pf_next):
 * rows [j0, j0 + BS_PANEL) from column c1 when the depth goes on, else
 * the next BS_PANEL rows from column 0. A head's K streamed from memory
 * (4 MB at N = 16K) then arrives while the products run; the panel
 * transposes had waited on it. Issued all at once, the prefetches stalled
 * on the core's miss buffers instead (a third of the transposes' samples
 * in a profile of minference_vs). Until 2026-12-06 they went towards L2
 * (prefetcht1): in the harness, where dense calls and run() evict K before
 * each select(), the transposes still waited on L2 (a fifth of
 * minference_vs's select() in a profile of a run without calibration
 * calls: the scored and the timed ones); into L1
 * (prefetcht0) its select/dense fell 8-11 % at 16K, flexprefill's 5-6 %,
 * and the others that stream K through here moved within noise. */
typedef struct bs_pf {
    const char *row0; /* first line of the first row */
    size_t ld;        /* row stride in bytes */
    int lines, n, x;  /* lines per row, lines in all, next line */
    int r, c;         /* the next line's row and line within it (x = r lines + c) */
} bs_pf;

static inline bs_pf bs_pf_panel(const float *B, int ldb, int n, int j0, int c1, int D)
{
    int r0 = j0, e0 = c1, e1 = D - c1 < BS_KC ? D : c1 + BS_KC;
    if (c1 >= D) {
        r0 = j0 + BS_PANEL;
        e0 = 0;
        e1 = D < BS_KC ? D : BS_KC;
    }
    const int r1 = n - r0 < BS_PANEL ? n : r0 + BS_PANEL;
    bs_pf pf = { NULL, (size_t)ldb * sizeof(float), 0, 0, 0, 0, 0 };
    if (r1 > r0 && e1 > e0) {
        const uintptr_t a = (uintptr_t)(B + (size_t)r0 * ldb + e0),
                        z = (uintptr_t)(B + (size_t)r0 * ldb + e1);
        pf.row0 = (const char *)(a & ~(uintptr_t)63);
        pf.lines = (int)((z - (a & ~(uintptr_t)63) + 63) / 64); /* the same count on every row up to one
                                                                     line: ld need not be a multiple of 64 */
        pf.lines += pf.ld % 64 != 0;
        pf.n = pf.lines * (r1 - r0);
    }
    return pf;
}

/* Issues the next cnt prefetches of pf (row and line counted along: a
 * division per prefetch had cost the kernel loop an idiv each). */
static inline void bs_pf_next(bs_pf *pf, int cnt)
{
    for (int e = pf->x + cnt < pf->n ? pf->x + cnt : pf->n; pf->x < e; pf->x++) {
        __builtin_prefetch(pf->row0 + (size_t)pf->r * pf->ld + (size_t)pf->c * 64, 0, 3);
        if (++pf->c == pf->lines) {
            pf->c = 0;
            pf->r++;
        }
    }
}

/* Columns [j0, j0 + BS_PANEL) (up to n) of C[i][j] = post * sum_c (pre *
 * A[i][c]) * B[j][c], D > 0; the next panel's B lines prefetched meanwhile. */
static inline void bs_gemm_panel(const float *A, int lda, int m, const float *B, int ldb, int n, int j0,
                                 int D, float pre, float post, float *C, int ldc, float *bt)
{
    const int nj = n - j0 < BS_PANEL ? n - j0 : BS_PANEL;
    /* depth chunks of BS_KC so the transposed panel stays in L1; the
     * partial sums wait in C (exact: each element is still one chain) */
    for (int c0 = 0; c0 < D; c0 += BS_KC) {
        const int c1 = D - c0 < BS_KC ? D : c0 + BS_KC;
        bs_panel_t(B, ldb, j0, nj, c0, c1, bt);
        bs_pf pf = bs_pf_panel(B, ldb, n, j0, c1, D);
        const int nk = (m + BS_MR - 1) / BS_MR, per = nk > 0 ? (pf.n + nk - 1) / nk : 0;
        for (int i = 0; i < m; i += BS_MR) {
            bs_pf_next(&pf, per);
            bs_kern(A, lda, i, m - i < BS_MR ? m - i : BS_MR, bt, c0, c1, pre, post, c0 == 0, c1 == D, C, ldc,
                    j0, nj);
        }
    }
}

/* The shared panel loop: C[i][j] = post * sum_c (pre * A[i][c]) * B[j][c]. */
static inline void bs_gemm_core(const float *A, int lda, int m, const float *B, int ldb, int n, int D,
                                float pre, float post, float *C, int ldc, float *bt)
{
    if (D <= 0) { /* empty sums */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) C[(size_t)i * ldc + j] = 0.0f;
        return;
    }
    for (int j0 = 0; j0 < n; j0 += BS_PANEL)
        bs_gemm_panel(A, lda, m, B, ldb, n, j0, D, pre, post, C, ldc, bt);
}

/* Rows of ncols floats that fit in 16 MiB (at least one): a logit panel
 * held that many rows at a time comes from the heap the timing child keeps
 * (glibc maps blocks of 32 MiB and more afresh, faulted in on every call). */
static inline int bs_heap_rows(int ncols)
{
    const size_t r = ((size_t)16 << 20) / ((size_t)(ncols > 0 ? ncols : 1) * sizeof(float));
    return r > 1 ? (int)(r < (size_t)INT32_MAX ? r : (size_t)INT32_MAX) : 1;
}

/* The L2 of one core in bytes as the C library reports it (0: unknown),
 * read once: sysconf asks CPUID, which a hypervisor traps. */
static inline long bs_l2_bytes(void)
{
    static long cached = -1; /* written once; racing readers store the same value */
    long v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
#if defined(_SC_LEVEL2_CACHE_SIZE)
        v = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        v = v > 0 ? v : 0;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

/* Rows of a logit panel (of m rows, ncols keys) to compute and consume at a
 * time: at most BS_GROUP_ROWS and what bs_heap_rows allows. Each group
 * streams the keys again for its product, and the passes after it (max,
 * exp, the row sums) read the group's panel back; 64 rows balanced the two
 * on a Zen 4 core (2026-12-05, pbs and flexprefill, d = 64): 128 rows at
 * N = 16K (an 8 MB panel per head) ran 10 % slower, 32 rows at 16K-64K
 * 2-10 % slower, 16 rows 20 %. Where a panel of 64 rows does not fit the
 * L2 of one core and one of BS_GROUP_ROWS_L2 rows does, the smaller group:
 * the passes then read the panel back from L2. On a Xeon with 2 MB of L2
 * (2026-12-06, N = 16K, 4 heads: 32 rows = 2 MB) flexprefill's select ran
 * 8 % faster and pbs's 5 % (three pairs each); 128 rows, 13-39 % slower;
 * the Zen 4's 1 MB L2 held no 32-row panel at 16K-64K, where 32 rows were
 * measured slower (at 8K it would take 32: not measured). Row groups change
 * no sum: each row's softmax is its own, and the row sums add the rows in
 * order either way. */
#define BS_GROUP_ROWS    64
#define BS_GROUP_ROWS_L2 32
static inline int bs_group_rows(int ncols, int m)
{
    const long l2 = bs_l2_bytes();
    const double row = (double)(ncols > 0 ? ncols : 1) * sizeof(float);
    int r = BS_GROUP_ROWS;
    if (l2 > 0 && BS_GROUP_ROWS * row > (double)l2 && BS_GROUP_ROWS_L2 * row <= (double)l2)
        r = BS_GROUP_ROWS_L2;
    r = bs_heap_rows(ncols) < r ? bs_heap_rows(ncols) : r;
    return m < r ? m : r;
}

/* Runs head(ctx, h, par, flops, bytes) for every head h < H; each call
 * adds its work (ab_layout_set_cost's units) to *flops and *bytes. With
 * fewer heads than threads, one head at a time with par = 1 (the head
 * splits its own loops over the threads); else the heads over the threads
 * with par = 0. Returns AB_OK or an error some head returned.
 *
 * BS_NO_NESTING. The par heads run from outside any parallel region, not
 * from inside an inactive one (`#pragma omp parallel if (0)`): libgomp
 * gives a parallel region nested in another, even an inactive one, fresh
 * threads, created for it and bound as the thread that starts them, and
 * the harness binds each of its threads to one CPU (ab_bind_threads), so
 * those teams ran on one CPU: at 64K with one head, pbs's and
 * flexprefill's select() took 1.5-1.9x as long bound as unbound (until
 * 2026-12-05). Top-level regions reuse the bound pool. */
typedef int (*bs_head_fn)(void *ctx, int h, int par, double *flops, double *bytes);

/* The context most selectors hand bs_run_heads: their state, the problem
 * and the layout being built (a head function casts st back). */
typedef struct bs_heads_ctx {
    const void *st;
    const ab_problem *pb;
    ab_layout *l;
} bs_heads_ctx;

static inline int bs_run_heads(int H, bs_head_fn head, void *ctx, double *flops, double *bytes)
{
    int rc = AB_OK;
    double fl = 0.0, by = 0.0;
    if (H < omp_get_max_threads()) {
        for (int h = 0; h < H && rc == AB_OK; h++) rc = head(ctx, h, 1, &fl, &by);
    } else {
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : fl, by)
        for (int h = 0; h < H; h++) {
            const int r = head(ctx, h, 0, &fl, &by);
            if (r != AB_OK) {
#pragma omp atomic write
                rc = r;
            }
        }
    }
    *flops += fl;
    *bytes += by;
    return rc;
}

/* bs_gemm_core (the same chains) over the columns j < n in chunks of kc (a
 * multiple of BS_PANEL; kc >= n: one chunk), the chunks split over the
 * threads when par (a head's own product when there are fewer heads than
 * threads). bt: bs_gemm_core's scratch (D * BS_PANEL floats) for the first
 * chunk; the others allocate their own. Returns 0, or -1 when out of
 * memory (C then incomplete). */
static inline int bs_gemm_chunks(const float *A, int lda, int m, const float *B, int ldb, int n, int D,
                                 float pre, float post, float *C, int ldc, float *bt, int kc, int par)
{
    const int nkc = n > 0 ? (n + kc - 1) / kc : 0;
    int bad = 0;
    float *as = NULL; /* pre != 1: A scaled once (fl(pre a), as the kernel would per panel) */
    if (pre != 1.0f && n > BS_PANEL && m > 0 && D > 0) {
        if (!(as = malloc((size_t)m * D * sizeof *as))) return -1;
        for (int i = 0; i < m; i++)
            for (int c = 0; c < D; c++) as[(size_t)i * D + c] = A[(size_t)i * lda + c] * pre;
        A = as;
        lda = D;
        pre = 1.0f;
    }
#pragma omp parallel for schedule(dynamic, 1) reduction(| : bad) if (par)
    for (int t = 0; t < nkc; t++) {
        const int j0 = t * kc, nj = n - j0 < kc ? n - j0 : kc;
        float *b = t == 0 ? bt : malloc((size_t)(D > 0 ? D : 1) * BS_PANEL * sizeof *b);
        if (!b) {
            bad = 1;
            continue;
        }
        bs_gemm_core(A, lda, m, B + (size_t)j0 * ldb, ldb, nj, D, pre, post, C + j0, ldc, b);
        if (t > 0) free(b);
    }
    free(as);
    return bad ? -1 : 0;
}

/* Weighted sums over the rows of a panel, in registers:
 *   out[x] += S[i][x - c + dsh i] * w[i]   for x in [x0, x1), rows i < m in order
 * (S rows lds apart; dsh = 0: column sums, c = 0; dsh = 1: diagonal sums,
 * row i shifted one further right). Each term is rounded as the plain loop
 * `out[x] += S[i][...] * w[i]` rounds it (no contraction under -std=c11):
 *   wd != NULL: the product in double, (double)s * wd[i];
 *   wf != NULL: the product in float, then widened, (double)(s * wf[i]);
 *   both NULL:  (double)s.
 * skipz: rows whose weight is 0 add nothing (their entries may be
 * anything). Every (x, i) in range must be a term the caller means to
 * add. The plain loop loads, adds and stores out for every row; here once
 * per 8 rows (more rows per pass, one block of out in registers over all
 * of them, made S a stream per row: slower). */
static inline void bs_rowsum(const float *S, size_t lds, int m, const float *wf, const double *wd, int skipz,
                             int c, int dsh, int x0, int x1, double *out)
{
    enum { RS_ROWS = 8 }; /* rows per pass: out is loaded and stored once per pass, S read as 8 streams */
    const size_t step = lds + (size_t)dsh;
    for (int g = 0; g < m; g += RS_ROWS) {
        const int ge = m - g < RS_ROWS ? m : g + RS_ROWS;
        const float *Sg = S + (size_t)g * step;
        int x = x0;
#if defined(__AVX512F__)
        for (; x + 32 <= x1; x += 32) {
            __m512d a0 = _mm512_loadu_pd(out + x), a1 = _mm512_loadu_pd(out + x + 8);
            __m512d a2 = _mm512_loadu_pd(out + x + 16), a3 = _mm512_loadu_pd(out + x + 24);
            const float *r = Sg + (x - c);
            for (int i = g; i < ge; i++, r += step) {
                if (wd) {
                    if (skipz && wd[i] == 0.0) continue;
                    const __m512d w = _mm512_set1_pd(wd[i]);
                    a0 = _mm512_add_pd(a0, _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(r)), w));
                    a1 = _mm512_add_pd(a1, _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(r + 8)), w));
                    a2 = _mm512_add_pd(a2, _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(r + 16)), w));
                    a3 = _mm512_add_pd(a3, _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(r + 24)), w));
                } else {
                    __m512 p0 = _mm512_loadu_ps(r), p1 = _mm512_loadu_ps(r + 16);
                    if (wf) {
                        if (skipz && wf[i] == 0.0f) continue;
                        const __m512 w = _mm512_set1_ps(wf[i]);
                        p0 = _mm512_mul_ps(p0, w);
                        p1 = _mm512_mul_ps(p1, w);
                    }
                    const __m256 h0 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p0), 1));
                    const __m256 h1 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p1), 1));
                    a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm512_castps512_ps256(p0)));
                    a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(h0));
                    a2 = _mm512_add_pd(a2, _mm512_cvtps_pd(_mm512_castps512_ps256(p1)));
                    a3 = _mm512_add_pd(a3, _mm512_cvtps_pd(h1));
                }
            }
            _mm512_storeu_pd(out + x, a0);
            _mm512_storeu_pd(out + x + 8, a1);
            _mm512_storeu_pd(out + x + 16, a2);
            _mm512_storeu_pd(out + x + 24, a3);
        }
#elif defined(__AVX2__)
        /* the same in four-double vectors: 32 columns in eight registers
         * (until 2026-12-08 AVX2 took the row-by-row loop below for every
         * column, out loaded and stored once per row) */
        for (; x + 32 <= x1; x += 32) {
            __m256d a[8];
            for (int u = 0; u < 8; u++) a[u] = _mm256_loadu_pd(out + x + 4 * u);
            const float *r = Sg + (x - c);
            for (int i = g; i < ge; i++, r += step) {
                if (wd) {
                    if (skipz && wd[i] == 0.0) continue;
                    const __m256d w = _mm256_set1_pd(wd[i]);
                    for (int u = 0; u < 8; u++)
                        a[u] =
                            _mm256_add_pd(a[u], _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(r + 4 * u)), w));
                } else {
                    __m256 p[4];
                    for (int u = 0; u < 4; u++) p[u] = _mm256_loadu_ps(r + 8 * u);
                    if (wf) {
                        if (skipz && wf[i] == 0.0f) continue;
                        const __m256 w = _mm256_set1_ps(wf[i]);
                        for (int u = 0; u < 4; u++) p[u] = _mm256_mul_ps(p[u], w);
                    }
                    for (int u = 0; u < 4; u++) {
                        a[2 * u] = _mm256_add_pd(a[2 * u], _mm256_cvtps_pd(_mm256_castps256_ps128(p[u])));
                        a[2 * u + 1] =
                            _mm256_add_pd(a[2 * u + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(p[u], 1)));
                    }
                }
            }
            for (int u = 0; u < 8; u++) _mm256_storeu_pd(out + x + 4 * u, a[u]);
        }
#endif
        /* the rest (every column without AVX2) row by row, as the
         * plain loop: the same adds per column in the same order, and a
         * loop over columns the compiler vectorises */
        const int xs = x;
        for (int i = g; i < ge; i++) {
            const float *r = Sg + (size_t)(i - g) * step - c;
            if (wd) {
                if (skipz && wd[i] == 0.0) continue;
                for (int t = xs; t < x1; t++) out[t] += (double)r[t] * wd[i];
            } else if (wf) {
                if (skipz && wf[i] == 0.0f) continue;
                for (int t = xs; t < x1; t++) out[t] += (double)(r[t] * wf[i]);
            } else {
                for (int t = xs; t < x1; t++) out[t] += (double)r[t];
            }
        }
    }
}

/* C[i][j] (+)= sum_c A[i][c] * B[c][j] for i < m, j < n: A (m, K) row
 * stride lda, B (K, n) row stride ldb, C (m, n) row stride ldc; acc != 0 adds
 * to C, else overwrites it. bt: scratch of BS_KC * BS_PANEL floats (B is
 * copied one (depth chunk, 64-column) panel at a time, unless its rows are
 * already a panel's: n = ldb = BS_PANEL, as the values at d = 64, read in
 * place). The P.V product of a custom run(); each element one chain in c
 * order, as bs_gemm_nt.
 * klim (NULL: K for all): the rows of register tile t (rows [t BS_MR,
 * (t + 1) BS_MR)) sum over c < klim[t] <= K only, for an A whose later
 * columns are zero in those rows (a causal tile's ragged edge): the same
 * chains without their trailing fma(0, b, s) = s steps. */
static inline void bs_gemm_nn_rag(const float *A, int lda, int m, const float *B, int ldb, int K,
                                  const int *klim, int n, float *C, int ldc, int acc, float *bt)
{
    if (K <= 0) {
        if (!acc)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) C[(size_t)i * ldc + j] = 0.0f;
        return;
    }
    for (int j0 = 0; j0 < n; j0 += BS_PANEL) {
        const int nj = n - j0 < BS_PANEL ? n - j0 : BS_PANEL;
        for (int c0 = 0; c0 < K; c0 += BS_KC) {
            const int c1 = K - c0 < BS_KC ? K : c0 + BS_KC;
            const float *pan = B + (size_t)c0 * ldb; /* rows of BS_PANEL floats: the panel itself */
            if (ldb != BS_PANEL || nj != BS_PANEL) {
                for (int c = c0; c < c1; c++) {
                    const float *b = B + (size_t)c * ldb + j0;
                    float *d = bt + (size_t)(c - c0) * BS_PANEL;
                    for (int j = 0; j < nj; j++) d[j] = b[j];
                    for (int j = nj; j < BS_PANEL; j++) d[j] = 0.0f;
                }
                pan = bt;
            }
            for (int i = 0; i < m; i += BS_MR) {
                int ce = c1;
                if (klim) {
                    const int kl = klim[i / BS_MR];
                    ce = kl < c1 ? kl : c1;
                    if (ce <= c0 && !(c0 == 0 && !acc)) continue; /* C holds the whole sum */
                    ce = ce > c0 ? ce : c0;                       /* none at all: zeros */
                }
                bs_kern(A, lda, i, m - i < BS_MR ? m - i : BS_MR, pan, c0, ce, 1.0f, 1.0f, c0 == 0 && !acc, 1,
                        C, ldc, j0, nj);
            }
        }
    }
}

static inline void bs_gemm_nn(const float *A, int lda, int m, const float *B, int ldb, int K, int n, float *C,
                              int ldc, int acc, float *bt)
{
    bs_gemm_nn_rag(A, lda, m, B, ldb, K, NULL, n, C, ldc, acc, bt);
}

/* bs_gemm_nt on a B packed once by bs_pack_nt (for a B reused by many
 * calls): C[i][j] = alpha * sum_c A[i][c] * B[j][c], i < m, j < n (n at most
 * the packed rows). Same arithmetic as bs_gemm_nt. ncol (NULL: n for all):
 * the rows of register tile t (rows [t BS_MR, (t + 1) BS_MR)) get columns
 * j < ncol[t] <= n only (the others are not written). */
static inline void bs_gemm_nt_packed_rag(const float *A, int lda, int m, const float *bp, int n,
                                         const int *ncol, int D, float alpha, float *C, int ldc)
{
    if (D <= 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0, e = ncol ? ncol[i / BS_MR] : n; j < e; j++) C[(size_t)i * ldc + j] = 0.0f;
        return;
    }
    for (int j0 = 0, p = 0; j0 < n; j0 += BS_PANEL, p++) {
        const float *pan = bp + (size_t)p * D * BS_PANEL;
        for (int c0 = 0; c0 < D; c0 += BS_KC) {
            const int c1 = D - c0 < BS_KC ? D : c0 + BS_KC;
            for (int i = 0; i < m; i += BS_MR) {
                const int e = ncol ? ncol[i / BS_MR] : n;
                if (e <= j0) continue;
                const int nj = e - j0 < BS_PANEL ? e - j0 : BS_PANEL;
                bs_kern(A, lda, i, m - i < BS_MR ? m - i : BS_MR, pan + (size_t)c0 * BS_PANEL, c0, c1, 1.0f,
                        alpha, c0 == 0, c1 == D, C, ldc, j0, nj);
            }
        }
    }
}

static inline void bs_gemm_nt_packed(const float *A, int lda, int m, const float *bp, int n, int D,
                                     float alpha, float *C, int ldc)
{
    bs_gemm_nt_packed_rag(A, lda, m, bp, n, NULL, D, alpha, C, ldc);
}

/* The score tile of a causal chunk of L <= BS_PANEL rows: T[i][j] = sum_x
 * A[i][x] kt[x][j] (the chains of bs_gemm_nn on kt), kt (D, BS_PANEL) the
 * chunk's keys transposed, i.e. one packed panel (columns past L zeroed
 * here). Register tile t of rows computes the keys up to its last row
 * only, lim[t] of them; the caller zeroes T past the diagonal and may
 * then sum over lim[t] keys only (bs_gemm_nn_rag): the tile is zero past
 * them. lim: (L + BS_MR - 1) / BS_MR ints. */
static inline void bs_tril_scores(const float *A, int lda, int L, float *kt, int D, float *T, int ldt,
                                  int *lim)
{
    for (int t = 0; t * BS_MR < L; t++) lim[t] = (t + 1) * BS_MR < L ? (t + 1) * BS_MR : L;
    if (L < BS_PANEL) bs_panel_pad(kt, L, D);
    bs_gemm_nt_packed_rag(A, lda, L, kt, L, lim, D, 1.0f, T, ldt);
}

/* Rows broadcast against a few transposed columns: P[a][j] = sum_c
 * x[a][c] bt[c][j] for rows a < nr (x rows ldx apart) and j < cw (a
 * multiple of VW; bt (d, cw), P rows cw apart), each element the FMA chain
 * over c in order from zero that bs_gemm_nt computes for the product with
 * bt's columns as A's rows (fma(a, b, c) = fma(b, a, c): the same bits).
 * For products with few columns (routing's centroids, lsh.h's rotations):
 * bs_gemm_nt would transpose every BS_PANEL rows of x for them. A tile of
 * LR rows by NV vectors stays in registers (fixed array sizes: arrays
 * sized by LR and NV stayed on the stack); rows past nr repeat row 0 and
 * are not stored. */
static inline __attribute__((always_inline)) void bs_bc_tile(const int NV, const int LR, const int LDC,
                                                             const float *x, size_t ldx, int nr, int d,
                                                             const float *bt, int cw, int v0, float *P,
                                                             int a0)
{
    vf acc[8][6];
    for (int r = 0; r < LR; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = v_splat(0.0f);
    if (LDC && a0 + LR <= nr) {
        /* a whole tile, rows LDC floats apart (a constant): each row's
         * element at a fixed offset from one pointer, none held in a
         * register of its own (eight row pointers spilled) */
        const float *x0 = x + (size_t)a0 * LDC;
        for (int c = 0; c < d; c++) {
            vf b[6];
            for (int v = 0; v < NV; v++) b[v] = v_load(bt + (size_t)c * cw + v0 + VW * v);
            for (int r = 0; r < LR; r++) {
                const vf xv = v_splat(x0[(size_t)r * LDC + c]);
                for (int v = 0; v < NV; v++) acc[r][v] = v_fma(xv, b[v], acc[r][v]);
            }
        }
    } else {
        const float *xr[8];
        for (int r = 0; r < LR; r++) xr[r] = x + (size_t)(a0 + r < nr ? a0 + r : 0) * ldx;
        for (int c = 0; c < d; c++) {
            vf b[6];
            for (int v = 0; v < NV; v++) b[v] = v_load(bt + (size_t)c * cw + v0 + VW * v);
            for (int r = 0; r < LR; r++) {
                const vf xv = v_splat(xr[r][c]);
                for (int v = 0; v < NV; v++) acc[r][v] = v_fma(xv, b[v], acc[r][v]);
            }
        }
    }
    for (int r = 0; r < LR && a0 + r < nr; r++)
        for (int v = 0; v < NV; v++) v_store(P + (size_t)(a0 + r) * cw + v0 + VW * v, acc[r][v]);
}

/* LR rows from a0 against every vector of bt, NV at a time, the rest after */
static inline __attribute__((always_inline)) void bs_bc_rows(const int NV, const int LR, const int LDC,
                                                             const float *x, size_t ldx, int nr, int d,
                                                             const float *bt, int cw, float *P, int a0)
{
    int v0 = 0;
    for (; v0 + VW * NV <= cw; v0 += VW * NV) bs_bc_tile(NV, LR, LDC, x, ldx, nr, d, bt, cw, v0, P, a0);
    switch ((cw - v0) / VW) { /* fewer than NV vectors left */
    case 5: bs_bc_tile(5, LR, LDC, x, ldx, nr, d, bt, cw, v0, P, a0); break;
    case 4: bs_bc_tile(4, LR, LDC, x, ldx, nr, d, bt, cw, v0, P, a0); break;
    case 3: bs_bc_tile(3, LR, LDC, x, ldx, nr, d, bt, cw, v0, P, a0); break;
    case 2: bs_bc_tile(2, LR, LDC, x, ldx, nr, d, bt, cw, v0, P, a0); break;
    case 1: bs_bc_tile(1, LR, LDC, x, ldx, nr, d, bt, cw, v0, P, a0); break;
    default: break;
    }
}

/* bt (d, cw) = A (m, d) transposed, the columns from m on zero: the
 * operand of bs_bcast_rows for the product with A's rows */
static inline void bs_cols_t(const float *A, int m, int d, int cw, float *bt)
{
    for (int c = 0; c < d; c++)
        for (int j = 0; j < cw; j++) bt[(size_t)c * cw + j] = j < m ? A[(size_t)j * d + c] : 0.0f;
}

static inline __attribute__((always_inline)) void bs_bcast_rows_ld(const int LDC, const float *x, size_t ldx,
                                                                   int nr, int d, const float *bt, int cw,
                                                                   float *P)
{
    const int nv = cw / VW;
#if VW == 16
    /* 32 registers: up to 24 accumulators (3 vectors by 8 rows, 4 by 6,
     * 5 or 6 by 4, more 6 at a time) */
    for (int a0 = 0; a0 < nr;) {
        if (nv <= 3) {
            if (nv == 1)
                bs_bc_rows(1, 8, LDC, x, ldx, nr, d, bt, cw, P, a0);
            else if (nv == 2)
                bs_bc_rows(2, 8, LDC, x, ldx, nr, d, bt, cw, P, a0);
            else
                bs_bc_rows(3, 8, LDC, x, ldx, nr, d, bt, cw, P, a0);
            a0 += 8;
        } else if (nv == 4) {
            bs_bc_rows(4, 6, LDC, x, ldx, nr, d, bt, cw, P, a0);
            a0 += 6;
        } else {
            if (nv == 5)
                bs_bc_rows(5, 4, LDC, x, ldx, nr, d, bt, cw, P, a0);
            else
                bs_bc_rows(6, 4, LDC, x, ldx, nr, d, bt, cw, P, a0);
            a0 += 4;
        }
    }
#else
    /* 16 registers: up to 12 accumulators (1 vector by 8 rows, 2 by 4,
     * more 3 at a time by 3) */
    for (int a0 = 0; a0 < nr;) {
        if (nv == 1) {
            bs_bc_rows(1, 8, LDC, x, ldx, nr, d, bt, cw, P, a0);
            a0 += 8;
        } else if (nv == 2) {
            bs_bc_rows(2, 4, LDC, x, ldx, nr, d, bt, cw, P, a0);
            a0 += 4;
        } else {
            bs_bc_rows(3, 3, LDC, x, ldx, nr, d, bt, cw, P, a0);
            a0 += 3;
        }
    }
#endif
}

/* bs_bcast_rows with the row stride a constant where it is 64 (d = 64
 * rows read in place: routing's points, lsh.h's rows); the same chains */
static inline __attribute__((always_inline)) void bs_bcast_rows(const float *x, size_t ldx, int nr, int d,
                                                                const float *bt, int cw, float *P)
{
    if (ldx == 64)
        bs_bcast_rows_ld(64, x, ldx, nr, d, bt, cw, P);
    else
        bs_bcast_rows_ld(0, x, ldx, nr, d, bt, cw, P);
}

/* C[i][j] = alpha * sum_c A[i][c] * B[j][c] for i < m, j < n.
 * A: (m, D) with row stride lda; B: (n, D) with row stride ldb;
 * C: (m, n) with row stride ldc; bt: scratch of D * BS_PANEL floats.
 * B is transposed one panel at a time; a register tile of C (4 x 64 with
 * AVX-512, 6 x 16 on the 8 lanes of AVX2) accumulates with FMA. Each
 * element is one chain in c order: results are independent of threading
 * and tiling, and the same under AVX2 and AVX-512. */
static inline void bs_gemm_nt(const float *A, int lda, int m, const float *B, int ldb, int n, int D,
                              float alpha, float *C, int ldc, float *bt)
{
    bs_gemm_core(A, lda, m, B, ldb, n, D, 1.0f, alpha, C, ldc, bt);
}

/* Scaled logits s[i][j] = sum_c (q[i][c] * scale) * k[j][c] for i < nr,
 * j < kc. q: (nr, d), k: (kc, d), s: (nr, kc), kt: scratch of d * BS_PANEL
 * floats. Unlike bs_gemm_nt the scale multiplies each query element before
 * the sum (the rounding the exact-score selectors were written with). */
static inline void bs_logits(const float *q, int nr, const float *k, int kc, int d, float scale, float *s,
                             float *kt)
{
    bs_gemm_core(q, d, nr, k, d, kc, d, scale, 1.0f, s, kc, kt);
}

/* Mean of rows [r0, r0 + nr) of x (rows of length d) into out (d). */
static inline void bs_mean_rows(const float *x, int d, int r0, int nr, float *out)
{
    /* the column sums in registers, 64 columns at a time, each column
     * summed in row order from 0 as a loop over out[] would (the same
     * bits; out[] itself, which may alias nothing but the compiler cannot
     * know, was loaded and stored for every row). Vectors of one register
     * (vecf.h): 64-byte GNU vectors went through the stack under AVX2, a
     * store and a reload per row and vector (most of flexprefill's pooling,
     * 2026-12-07). */
    int c0 = 0;
    for (; c0 + 64 <= d; c0 += 64) {
        vf a[64 / VW];
        for (int u = 0; u < 64 / VW; u++) a[u] = v_splat(0.0f);
        for (int i = 0; i < nr; i++) {
            const float *p = x + (size_t)(r0 + i) * d + c0;
            for (int u = 0; u < 64 / VW; u++) a[u] += v_load(p + VW * u);
        }
        for (int u = 0; u < 64 / VW; u++) v_store(out + c0 + VW * u, a[u]);
    }
    for (; c0 < d; c0++) {
        float a = 0.0f;
        for (int i = 0; i < nr; i++) a += x[(size_t)(r0 + i) * d + c0];
        out[c0] = a;
    }
    const float inv = 1.0f / (float)(nr > 0 ? nr : 1);
    for (int c = 0; c < d; c++) out[c] *= inv;
}

/* Mean-pool x (n, d) over blocks of `blk` rows into out (ceil(n/blk), d);
 * the last block averages only the rows it has. */
static inline void bs_pool_mean(const float *x, int n, int d, int blk, float *out)
{
    const int nb = (n + blk - 1) / blk;
    for (int b = 0; b < nb; b++) {
        const int r0 = b * blk, nr = n - r0 < blk ? n - r0 : blk;
        bs_mean_rows(x, d, r0, nr, out + (size_t)b * d);
    }
}

/* Key block holding the last row of query block qb (the "diagonal" block). */
static inline int bs_diag_block(int qb, int bq, int bk, int n)
{
    const int last = ((qb + 1) * bq < n ? (qb + 1) * bq : n) - 1;
    return last / bk;
}

/* Union of the base-mask spans of query rows [r0, r1): the keys any of them
 * may see lie in [*lo, *hi) (*lo >= *hi: none). For the shipped masks the
 * union is one interval, so the key blocks it touches are exactly the
 * blocks the mask leaves non-empty for these rows (under causal: up to the
 * diagonal; under a document mask: those of the rows' own documents). */
static inline void bs_rows_span(const ab_mask *m, int r0, int r1, int *lo, int *hi)
{
    int a = m->seq_len, b = 0;
    r1 = r1 < m->seq_len ? r1 : m->seq_len;
    for (int i = r0 > 0 ? r0 : 0; i < r1; i++) {
        int x, y;
        ab_mask_span(m, i, &x, &y);
        if (x < y) {
            a = x < a ? x : a;
            b = y > b ? y : b;
        }
    }
    *lo = a;
    *hi = b;
}

/* A scored candidate. */
typedef struct bs_cand {
    double score;
    int32_t idx;
} bs_cand;

/* Higher score first, then lower index; NaN ranks last. A total order, so
 * qsort is deterministic. */
static inline int bs_cand_cmp(const void *pa, const void *pb)
{
    const bs_cand *a = pa, *b = pb;
    const int an = isnan(a->score), bn = isnan(b->score);
    if (an != bn) return an - bn;
    if (!an) {
        if (a->score > b->score) return -1;
        if (a->score < b->score) return 1;
    }
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* bs_cand_cmp's order as one unsigned key per entry (then the index): a
 * larger score gives a smaller key, -0 ranks as +0, NaN after every number. */
typedef struct bs_skey {
    uint64_t key;
    int32_t idx;
} bs_skey;

static inline uint64_t bs_key_of(double x)
{
    if (isnan(x)) return UINT64_MAX;
    x += 0.0; /* -0 -> +0 */
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    u = (u >> 63) ? ~u : u | 0x8000000000000000ull; /* ascending in x */
    return ~u;                                      /* descending */
}

static inline double bs_score_of(uint64_t k)
{
    if (k == UINT64_MAX) return NAN;
    uint64_t u = ~k;
    u = (u >> 63) ? u & 0x7fffffffffffffffull : ~u;
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline int bs_skey_before(const bs_skey *a, const bs_skey *b)
{
    return a->key < b->key || (a->key == b->key && a->idx < b->idx);
}

/* Smaller ordered key first (bs_key_of: the higher score). */
#define BS_KEY_LESS(a, b) ((a) < (b))
MC_DEFINE_SELECT_TOP(bs_key_select_top, uint64_t, BS_KEY_LESS)

/* Vector compaction (stream compaction, "compress") of ordered keys, the
 * AVX-512 compress instructions or, on AVX2, a permutation per four lanes
 * from BS_C4 (the set lanes of a 4-bit mask, packed: byte t is the t-th
 * set lane). The scalar loops are the specification; the vector forms
 * give the same output. They had been AVX-512 only, and the scalar loop's
 * one-element chain (a store and a conditional increment) was about half
 * of sea_proxy's select() on a Zen 3 (2026-12-07). */
static const uint32_t BS_C4[16] = {
    0x00000000, 0x00000000, 0x00000001, 0x00000100, 0x00000002, 0x00000200, 0x00000201, 0x00020100,
    0x00000003, 0x00000300, 0x00000301, 0x00030100, 0x00000302, 0x00030200, 0x00030201, 0x03020100,
};

/* The keys of key[0, m) with key - base <= span (unsigned, wrapping:
 * base 0 and span T keep the keys <= T; base a radix bucket's first key
 * and span the bytes below keep its keys) into w, in their order; returns
 * their count. w holds m keys and may be key (in place: each vector is
 * stored at or before where it was read, after it was read). */
static inline int bs_keep_range(const uint64_t *key, int m, uint64_t base, uint64_t span, uint64_t *w)
{
    int o = 0, i = 0;
#if defined(__AVX512F__)
    const __m512i bv = _mm512_set1_epi64((long long)base), sv = _mm512_set1_epi64((long long)span);
    for (; i + 8 <= m; i += 8) {
        const __m512i k = _mm512_loadu_si512(key + i);
        const __mmask8 mk = _mm512_cmple_epu64_mask(_mm512_sub_epi64(k, bv), sv);
        _mm512_storeu_si512(w + o, _mm512_maskz_compress_epi64(mk, k));
        o += __builtin_popcount(mk);
    }
#elif defined(__AVX2__)
    const __m256i bv = _mm256_set1_epi64x((long long)base), sg = _mm256_set1_epi64x(INT64_MIN),
                  sv = _mm256_set1_epi64x((long long)(span ^ 0x8000000000000000ull)),
                  one = _mm256_set1_epi64x(1);
    for (; i + 4 <= m; i += 4) {
        const __m256i k = _mm256_loadu_si256((const void *)(key + i));
        const __m256i off = _mm256_xor_si256(_mm256_sub_epi64(k, bv), sg); /* signed order of the unsigned */
        const int mk = ~_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(off, sv))) & 15;
        /* lane t of the result: key lane (byte t of BS_C4), as the 32-bit pair 2 l, 2 l + 1 */
        const __m256i l = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128((int)BS_C4[mk]));
        const __m256i l2 = _mm256_slli_epi64(l, 1);
        const __m256i ix = _mm256_or_si256(l2, _mm256_slli_epi64(_mm256_add_epi64(l2, one), 32));
        _mm256_storeu_si256((void *)(w + o), _mm256_permutevar8x32_epi32(k, ix));
        o += __builtin_popcount((unsigned)mk);
    }
#endif
    for (; i < m; i++) { /* branch-free: the order is data */
        const uint64_t k = key[i];
        w[o] = k;
        o += k - base <= span;
    }
    return o;
}

/* Appends j + u for the set bits u of the 8-bit mask m to out[n..] in
 * ascending u; returns the new n. Writes out[n .. n + 7] at most. */
static inline int bs_emit_bits8(int32_t *out, int n, unsigned m, int32_t j)
{
#if defined(__AVX2__)
    const __m128i p = _mm_add_epi32(_mm_set1_epi32(j), _mm_setr_epi32(0, 1, 2, 3));
    const unsigned lo = m & 15, hi = (m >> 4) & 15;
    _mm_storeu_si128((void *)(out + n),
                     _mm_castps_si128(_mm_permutevar_ps(
                         _mm_castsi128_ps(p), _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)BS_C4[lo])))));
    n += __builtin_popcount(lo);
    _mm_storeu_si128((void *)(out + n), _mm_castps_si128(_mm_permutevar_ps(
                                            _mm_castsi128_ps(_mm_add_epi32(p, _mm_set1_epi32(4))),
                                            _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)BS_C4[hi])))));
    return n + __builtin_popcount(hi);
#else
    for (int u = 0; u < 8; u++) {
        out[n] = j + u;
        n += (m >> u) & 1;
    }
    return n;
#endif
}

/* The positions p0 + t of the keys key[t] <= T, t < m, into out in
 * ascending order (out: room for m + 16, the vector forms store whole
 * vectors); returns their count. */
static inline int bs_pos_le(const uint64_t *key, int m, uint64_t T, int32_t p0, int32_t *out)
{
    int o = 0, t = 0;
#if defined(__AVX512F__)
    const __m512i kv = _mm512_set1_epi64((long long)T), step = _mm512_set1_epi32(16);
    __m512i pos = _mm512_add_epi32(_mm512_set1_epi32(p0),
                                   _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    for (; t + 16 <= m; t += 16) {
        const __mmask8 m0 = _mm512_cmple_epu64_mask(_mm512_loadu_si512(key + t), kv);
        const __mmask8 m1 = _mm512_cmple_epu64_mask(_mm512_loadu_si512(key + t + 8), kv);
        const __mmask16 mk = (__mmask16)(m0 | (unsigned)m1 << 8);
        _mm512_storeu_si512(out + o, _mm512_maskz_compress_epi32(mk, pos));
        o += __builtin_popcount(mk);
        pos = _mm512_add_epi32(pos, step);
    }
#elif defined(__AVX2__)
    const __m256i sg = _mm256_set1_epi64x(INT64_MIN),
                  kv = _mm256_set1_epi64x((long long)(T ^ 0x8000000000000000ull));
    for (; t + 8 <= m; t += 8) { /* eight keys' "<= T" as a mask, emitted by bs_emit_bits8 */
        const __m256i k0 = _mm256_xor_si256(_mm256_loadu_si256((const void *)(key + t)), sg);
        const __m256i k1 = _mm256_xor_si256(_mm256_loadu_si256((const void *)(key + t + 4)), sg);
        const unsigned gt = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(k0, kv))) |
                            (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(k1, kv)))
                                << 4;
        o = bs_emit_bits8(out, o, ~gt & 255u, p0 + t);
    }
#endif
    for (; t < m; t++) {
        out[o] = p0 + t;
        o += key[t] <= T;
    }
    return o;
}

/* The n-th smallest of key[0, m) (1 <= n <= m), w: m scratch. A radix
 * select, 8 bits a pass from the top: a histogram of the byte among the
 * keys that share the bytes above it, the bucket that holds the n-th,
 * those keys kept (a branch-free copy) for the next byte. At most 32 keys
 * left: the quickselect (keep.h) finishes. The same key as a full
 * quickselect, which ran a data-dependent branch per comparison
 * (quest_prefill's top pages of about 500: a fifth of its block loop).
 * The passes start at the highest byte in which the smallest and the
 * largest key differ (the bytes above it every key shares), and count
 * into four histograms in turn, summed after: the scores of one selection
 * mostly share their top bytes, and one bin taking every increment made
 * each wait for the last through memory (quest_prefill, 2026-12-06). */
static inline uint64_t bs_key_nth_radix(const uint64_t *key, int m, int n, uint64_t *w)
{
    const uint64_t *src = key;
    int sh = 56;
    if (m > 32) {
        uint64_t lo = key[0], hi = key[0];
        for (int i = 1; i < m; i++) {
            lo = key[i] < lo ? key[i] : lo;
            hi = key[i] > hi ? key[i] : hi;
        }
        if (lo == hi) return lo; /* one value: the n-th smallest is it */
        sh = (63 - __builtin_clzll(lo ^ hi)) / 8 * 8;
    }
    for (; sh >= 0 && m > 32; sh -= 8) {
        int h[4][256];
        memset(h, 0, sizeof h);
        int i = 0;
        for (; i + 4 <= m; i += 4)
            for (int u = 0; u < 4; u++) h[u][(src[i + u] >> sh) & 0xff]++;
        for (; i < m; i++) h[0][(src[i] >> sh) & 0xff]++;
        for (int b = 0; b < 256; b++) h[0][b] += h[1][b] + h[2][b] + h[3][b];
        int b = 0;
        while (n > h[0][b]) n -= h[0][b++];
        if (h[0][b] == m) continue; /* every key left has this byte */
        /* the keys whose byte sh is b: every key left shares the bytes
         * above it, so they are one range [first, first + 2^sh) */
        const uint64_t first = (sh < 56 ? src[0] & (~0ull << (sh + 8)) : 0) | (uint64_t)b << sh;
        m = bs_keep_range(src, m, first, (1ull << sh) - 1, w);
        src = w;
    }
    if (src != w)
        for (int i = 0; i < m; i++) w[i] = src[i];
    bs_key_select_top(w, m, n);
    uint64_t kth = 0; /* the largest of the n smallest (unsigned: from 0) */
    for (int i = 0; i < n; i++) kth = w[i] > kth ? w[i] : kth;
    return kth;
}

/* The n-th smallest of key[0, m) (1 <= n <= m), w: m scratch, as
 * bs_key_nth_radix; for a few of many (n <= m / 4, m >= BS_NTH_MIN) a
 * sampled bound first: T = a little past the n / BS_NTH_STEP-th smallest
 * of every BS_NTH_STEP-th key; when at least n keys (and at most half)
 * are <= T, the n smallest are among them, so the n-th smallest of those
 * is the answer, and the histogram passes run over them only (otherwise,
 * or for a sample that missed, over all m). The same key either way. The
 * passes over all m keys had been most of sea_proxy's selection (the top
 * 844 of about 8K summed estimates per 4-row block) and of routing's
 * top-w choices (2026-12-06). */
#define BS_NTH_MIN  1024
#define BS_NTH_STEP 8
static inline uint64_t bs_key_nth(const uint64_t *key, int m, int n, uint64_t *w)
{
    if (m >= BS_NTH_MIN && n <= m / 4) {
        const int ms = m / BS_NTH_STEP, ns = n / BS_NTH_STEP + n / (4 * BS_NTH_STEP) + 8;
        if (ns < ms) {
            for (int t = 0; t < ms; t++) w[t] = key[(size_t)t * BS_NTH_STEP];
            const uint64_t T = bs_key_nth_radix(w, ms, ns, w + ms);
            int c = 0;
            for (int i = 0; i < m; i++) c += key[i] <= T;
            if (c >= n && c <= m / 2) {
                bs_keep_range(key, m, 0, T, w);
                return bs_key_nth_radix(w, c, n, w);
            }
        }
    }
    return bs_key_nth_radix(key, m, n, w);
}

/* The n first of c[0, m) in bs_cand_cmp order, kept in c[0, n) in their
 * original order; c must be in ascending idx order (a scan of candidates),
 * so ties at the n-th score go to the lower indices. The scores as ordered
 * keys (key[m], scratch), the n-th smallest of them by bs_key_nth (key +
 * m: m more scratch); then one stable pass. Returns n (or m if smaller).
 * The same set as a partial sort by bs_cand_cmp. */
static inline int bs_top_ascending(bs_cand *c, int m, int n, uint64_t *key)
{
    if (n >= m) return m;
    if (n <= 0) return 0;
    for (int i = 0; i < m; i++) key[i] = bs_key_of(c[i].score);
    const uint64_t kth = bs_key_nth(key, m, n, key + m);
    int less = 0;
    for (int i = 0; i < m; i++) less += key[i] < kth;
    int ties = n - less, o = 0;
    for (int i = 0; i < m; i++)
        if (key[i] < kth || (key[i] == kth && ties-- > 0)) c[o++] = c[i];
    return n;
}

/* The n first of c[0, m) in bs_cand_cmp order, in c[0, n) (in their order
 * in c; c[n, m) is left undefined): bs_top_ascending for candidates in any
 * idx order. Ties at the n-th score go to the lowest idx among them, found
 * by a second bs_key_nth over their idx (the ties are usually all taken,
 * or there are none). key: 3 m scratch. The same set as bs_select_top's,
 * whose quickselect ran a data-dependent branch per comparison
 * (minference_vs's tops of 16K columns and offsets). Returns n (or m if
 * smaller). */
static inline int bs_top_set(bs_cand *c, int m, int n, uint64_t *key)
{
    if (n >= m) return m;
    if (n <= 0) return 0;
    for (int i = 0; i < m; i++) key[i] = bs_key_of(c[i].score);
    const uint64_t kth = bs_key_nth(key, m, n, key + m);
    int less = 0, eq = 0;
    for (int i = 0; i < m; i++) {
        less += key[i] < kth;
        eq += key[i] == kth;
    }
    const int ties = n - less; /* 1 <= ties <= eq */
    int64_t lim = INT64_MAX;   /* the ties kept: idx <= lim */
    if (ties < eq) {
        uint64_t *ti = key + m; /* the tied idx, offset to unsigned order */
        int t = 0;
        for (int i = 0; i < m; i++)
            if (key[i] == kth) ti[t++] = (uint64_t)((int64_t)c[i].idx - INT32_MIN);
        lim = (int64_t)bs_key_nth(ti, t, ties, ti + t) + INT32_MIN;
    }
    int o = 0;
    for (int i = 0; i < m; i++)
        if (key[i] < kth || (key[i] == kth && c[i].idx <= lim)) c[o++] = c[i];
    return n;
}

/* Sort c into bs_cand_cmp order (higher score, then lower index; NaN last):
 * the scores as ordered keys, insertion sort on runs of 16, then bottom-up
 * merges; comparisons inline (qsort's comparator calls were half of the
 * sort's time in pbs's select()). Same order as qsort with bs_cand_cmp. */
static inline void bs_sort_desc(bs_cand *c, int n)
{
    if (n < 2) return;
    bs_skey *a = malloc(2 * (size_t)n * sizeof *a);
    if (!a) { /* no scratch: the comparator sort */
        qsort(c, (size_t)n, sizeof *c, bs_cand_cmp);
        return;
    }
    bs_skey *b = a + n;
    int asc = 1; /* indices strictly ascending (a scan of candidates) */
    for (int i = 0; i < n; i++) {
        a[i].key = bs_key_of(c[i].score);
        a[i].idx = c[i].idx;
        asc &= i == 0 || c[i].idx > c[i - 1].idx;
    }
    if (asc && n >= 256) { /* below about 200 keys the merge sort is as fast */
        /* LSD radix sort on the keys, 8 bits a pass, skipping the bytes
         * every key shares: stable, so equal keys keep their ascending
         * indices, which is the comparator's order (the merge sort below
         * took 6 % of pbs's select(): its 256-key segment sorts) */
        uint64_t any = 0, all = ~0ull;
        int(*cnt)[256] = calloc(8, sizeof *cnt); /* every byte's histogram, in one pass */
        if (!cnt) {
            free(a);
            qsort(c, (size_t)n, sizeof *c, bs_cand_cmp);
            return;
        }
        for (int i = 0; i < n; i++) {
            const uint64_t k = a[i].key;
            any |= k;
            all &= k;
            for (int d = 0; d < 8; d++) cnt[d][(k >> (8 * d)) & 0xff]++;
        }
        for (int d = 0; d < 8; d++) {
            const int sh = 8 * d;
            if ((((any ^ all) >> sh) & 0xff) == 0) continue;
            int *pos = cnt[d];
            for (int v = 0, t = 0; v < 256; v++) {
                const int m = pos[v];
                pos[v] = t;
                t += m;
            }
            for (int i = 0; i < n; i++) b[pos[(a[i].key >> sh) & 0xff]++] = a[i];
            bs_skey *t = a;
            a = b;
            b = t;
        }
        free(cnt);
        for (int i = 0; i < n; i++) {
            c[i].score = bs_score_of(a[i].key);
            c[i].idx = a[i].idx;
        }
        free(a < b ? a : b);
        return;
    }
    enum { RUN = 16 };
    for (int r0 = 0; r0 < n; r0 += RUN) {
        const int r1 = r0 + RUN < n ? r0 + RUN : n;
        for (int i = r0 + 1; i < r1; i++) {
            const bs_skey x = a[i];
            int j = i;
            for (; j > r0 && bs_skey_before(&x, &a[j - 1]); j--) a[j] = a[j - 1];
            a[j] = x;
        }
    }
    for (int w = RUN; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            const int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int i = lo, j = mid, o = lo;
            while (i < mid && j < hi) b[o++] = bs_skey_before(&a[j], &a[i]) ? a[j++] : a[i++];
            while (i < mid) b[o++] = a[i++];
            while (j < hi) b[o++] = a[j++];
        }
        bs_skey *t = a;
        a = b;
        b = t;
    }
    for (int i = 0; i < n; i++) {
        c[i].score = bs_score_of(a[i].key);
        c[i].idx = a[i].idx;
    }
    free(a < b ? a : b); /* the allocation's start */
}

/* bs_sort_desc, the two halves sorted side by side when par (one head
 * split over the threads) and then merged: the same order (a total
 * order), the same canonical scores. */
static inline void bs_sort_desc_par(bs_cand *c, int n, int par)
{
    const int h = n / 2;
    bs_cand *t = par && n >= 8192 ? malloc((size_t)n * sizeof *t) : NULL;
    if (!t) {
        bs_sort_desc(c, n);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(2)
    for (int u = 0; u < 2; u++) bs_sort_desc(c + (u ? h : 0), u ? n - h : h);
    int i = 0, j = h, o = 0;
    while (i < h && j < n) {
        const bs_skey a = { bs_key_of(c[i].score), c[i].idx }, b = { bs_key_of(c[j].score), c[j].idx };
        t[o++] = bs_skey_before(&b, &a) ? c[j++] : c[i++];
    }
    while (i < h) t[o++] = c[i++];
    while (j < n) t[o++] = c[j++];
    memcpy(c, t, (size_t)n * sizeof *c);
    free(t);
}

/* Order c[lo], c[mid], c[last] so that c[last] is their median by
 * bs_cand_cmp (the quickselect pivot of bs_select_top and flexprefill). */
static inline void bs_median3(bs_cand *c, int lo, int mid, int last)
{
#define BS_SWAP_(x, y)           \
    do {                         \
        const bs_cand t_ = c[x]; \
        c[x] = c[y];             \
        c[y] = t_;               \
    } while (0)
    if (bs_cand_cmp(&c[mid], &c[lo]) < 0) BS_SWAP_(mid, lo);
    if (bs_cand_cmp(&c[last], &c[lo]) < 0) BS_SWAP_(last, lo);
    if (bs_cand_cmp(&c[mid], &c[last]) < 0) BS_SWAP_(mid, last);
#undef BS_SWAP_
}

/* Partial selection: reorders c[0, n) so that c[0, k) hold its k first
 * entries in bs_cand_cmp order (higher score, then lower index; NaN last),
 * in no particular order among themselves. Expected O(n) (quickselect with a
 * median-of-three pivot); the chosen set is exactly the one a full sort
 * would put first, since the order is total. */
static inline void bs_select_top(bs_cand *c, int n, int k)
{
    int lo = 0, hi = n; /* the k-th boundary lies in [lo, hi) */
    if (k <= 0 || k >= n) return;
    while (hi - lo > 16) {
        const int mid = lo + (hi - lo) / 2;
        /* median of three to c[lo] as the pivot */
        bs_median3(c, lo, mid, hi - 1);
        /* now c[lo] <= c[hi-1] <= c[mid] in rank: use c[hi-1] as pivot */
        const bs_cand pv = c[hi - 1];
        int st = lo;
        for (int i = lo; i < hi - 1; i++)
            if (bs_cand_cmp(&c[i], &pv) < 0) {
                const bs_cand t = c[i];
                c[i] = c[st];
                c[st] = t;
                st++;
            }
        c[hi - 1] = c[st];
        c[st] = pv; /* c[lo, st) rank before pv, c(st, hi) after */
        if (st == k || st + 1 == k) return;
        if (st > k)
            hi = st;
        else
            lo = st + 1;
    }
    /* small range: insertion sort settles it */
    for (int i = lo + 1; i < hi; i++) {
        const bs_cand t = c[i];
        int j = i;
        while (j > lo && bs_cand_cmp(&t, &c[j - 1]) < 0) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = t;
    }
}

/* The k first entries of c[0, n) in bs_cand_cmp order, sorted, in c[0, k)
 * (k clamped to n): bs_select_top, then a sort of those k only. */
static inline void bs_sort_top(bs_cand *c, int n, int k)
{
    k = k < n ? k : n;
    bs_select_top(c, n, k);
    bs_sort_desc(c, k);
}

/* The block choice of minference_block (and of seer_proxy's proxy gate):
 * per head and query block, the logits scale * pq(qb) . pk(kb) of the
 * candidate key blocks (those the base mask lets some row of the query
 * block see, bs_rows_span: under causal up to the diagonal block) are
 * ranked (ties to the lower index) and the best mc_dither(topk, qb) of them, at most
 * ceil(topk), are added to l as key blocks, one bulk call per query block.
 * The softmax the papers apply per row is monotone, so ranking the logits
 * is the same. pq: (heads, n_qblocks, d) pooled queries; pk: (heads,
 * n_kblocks, d) pooled keys. Adds its work (ab_layout_set_cost's units)
 * to *flops and *bytes. Returns AB_OK, AB_ENOMEM or the builder's error. */
/* Blocks a pooled selector keeps whatever their score (bs_topk_pooled's
 * force): key block 0 (when the row's mask lets it see any of it) and the
 * diagonal block. */
#define BS_FORCE_SINK 1u
#define BS_FORCE_DIAG 2u

static inline int bs_topk_pooled(const ab_problem *pb, ab_layout *l, const float *pq, const float *pk,
                                 double topk, unsigned force, double *flops, double *bytes)
{
    const int H = l->heads, d = pb->s.head_dim;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    const int rows = H * nqb;
    const int keep = (int)ceil(topk) < nkb ? (int)ceil(topk) : nkb;
    const ab_mask mask = ab_shape_mask(&pb->s);
    float *sc = malloc((size_t)rows * nkb * sizeof *sc);      /* (heads*n_qblocks, n_kblocks) */
    int32_t *cb = malloc((size_t)(2 * nqb + 1) * sizeof *cb); /* (n_qblocks, 2) candidate blocks [b0, b1) */
    int rc = sc && cb ? AB_OK : AB_ENOMEM;
    for (int qb = 0; rc == AB_OK && qb < nqb; qb++) {
        int lo, hi;
        bs_rows_span(&mask, qb * bq, (qb + 1) * bq, &lo, &hi);
        cb[2 * qb] = lo < hi ? lo / bk : 0;
        cb[2 * qb + 1] = lo < hi ? (hi + bk - 1) / bk : 0;
    }
    double cands = 0.0, sorted = 0.0; /* candidate blocks over all rows; sort work */
    for (int qb = 0; rc == AB_OK && qb < nqb; qb++) {
        const double nc = cb[2 * qb + 1] - cb[2 * qb];
        const double kk = ceil(topk) + 2 < nc ? ceil(topk) + 2 : nc; /* the few sorted */
        cands += H * nc;
        sorted += H * (2.0 * nc + (kk > 1 ? kk * log2(kk) : 0.0)); /* select, then sort kk */
    }
    if (rc == AB_OK) {
#pragma omp parallel
        {
            float *bt = malloc((size_t)d * BS_PANEL * sizeof *bt);
            bs_cand *cand = malloc((size_t)nkb * sizeof *cand);
            int32_t *idx = malloc((size_t)(keep + 2) * sizeof *idx); /* (keep + forced) one row's blocks */
            int ok = bt && cand && idx;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(static)
            for (int h = 0; h < H; h++)
                if (ok)
                    bs_gemm_nt(pq + (size_t)h * nqb * d, d, nqb, pk + (size_t)h * nkb * d, d, nkb, d,
                               pb->s.scale, sc + (size_t)h * nqb * nkb, nkb, bt);
#pragma omp for schedule(static)
            for (int r = 0; r < rows; r++) {
                if (!ok) continue;
                const int qb = r % nqb, b0 = cb[2 * qb];
                const int nc = cb[2 * qb + 1] - b0;
                for (int b = 0; b < nc; b++) {
                    cand[b].score = sc[(size_t)r * nkb + b0 + b];
                    cand[b].idx = b0 + b;
                }
                int kr = mc_dither(topk, qb);
                kr = kr < keep ? kr : keep;
                /* only the best kr + 2 (the forced ones may be among them)
                 * are ever read: select them, sort those */
                bs_sort_top(cand, nc, kr + 2);
                /* forced blocks first (they count towards the budget, and
                 * are kept even beyond it), then the best of the rest */
                const int diag = bs_diag_block(qb, bq, bk, l->seq_len);
                int n = 0;
                if ((force & BS_FORCE_SINK) && nc > 0 && b0 == 0) idx[n++] = 0;
                if ((force & BS_FORCE_DIAG) && diag >= b0 && diag < b0 + nc && !(n == 1 && diag == 0))
                    idx[n++] = diag;
                const int nf = n;
                for (int t = 0; t < nc && n < kr; t++) {
                    const int b = cand[t].idx;
                    if (!(nf > 0 && b == idx[0]) && !(nf > 1 && b == idx[1])) idx[n++] = b;
                }
                const int ra = ab_layout_add_blocks(l, r / nqb, qb, idx, n);
                if (ra != AB_OK) {
                    ok = 0;
#pragma omp atomic write
                    rc = ra;
                }
            }
            free(bt);
            free(cand);
            free(idx);
        }
    }
    free(sc);
    free(cb);
    /* the logits of the candidate blocks (a d-long dot product each, 2d) and
     * the ranking (a selection of ~2 C compares per row, then a sort of the
     * best topk + 2); bytes: each logit written and read back */
    if (rc == AB_OK) {
        *flops += cands * 2.0 * d + sorted;
        *bytes += 2.0 * cands * sizeof(float);
    }
    return rc;
}

/* Pools one head's rows x (n, d) in blocks of blk rows into out (n_blocks, d). */
typedef void (*bs_pool_fn)(const float *x, int n, int d, int blk, float *out);

/* The select() of the pooled block selectors (MInference block, the
 * SeerAttention proxy): mean-pooled queries, keys pooled by pool_k, then
 * bs_topk_pooled; states the cost (kops: operations pool_k spends per key
 * element). name prefixes the out-of-memory message. */
static inline int bs_select_pooled(void *state, const char *name, const ab_problem *pb, ab_layout *l,
                                   bs_pool_fn pool_k, double kops, double topk, unsigned force)
{
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    float *pq = malloc((size_t)H * nqb * d * sizeof *pq); /* (heads, n_qblocks, d) */
    float *pk = malloc((size_t)H * nkb * d * sizeof *pk); /* (heads, n_kblocks, d) */
    int rc = (pq && pk) ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) {
#pragma omp parallel for schedule(static)
        for (int h = 0; h < H; h++) {
            bs_pool_mean(pb->q + (size_t)h * N * d, N, d, bq, pq + (size_t)h * nqb * d);
            pool_k(pb->k + (size_t)h * N * d, N, d, bk, pk + (size_t)h * nkb * d);
        }
        /* pooling: one add per query element, kops operations per key
         * element (and one scale per pooled element); Q and K read once */
        double flops = (double)H * N * d * (1.0 + kops) + (double)H * (nqb + nkb) * d;
        double bytes = 2.0 * H * (double)N * d * sizeof(float) + (double)H * (nqb + nkb) * d * sizeof(float);
        rc = bs_topk_pooled(pb, l, pq, pk, topk, force, &flops, &bytes);
        if (rc == AB_OK) rc = ab_layout_set_cost(l, flops, bytes);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "%s: out of memory", name);
    free(pq);
    free(pk);
    return rc;
}

/* In-place softmax of x[0..n) in double accumulation; returns nothing.
 * n == 0 is a no-op. */
static inline void bs_softmax(double *x, int n)
{
    if (n <= 0) return;
    double m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = exp(x[i] - m);
        s += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= s;
}

#endif
