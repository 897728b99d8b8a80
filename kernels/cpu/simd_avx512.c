/* simd_avx512.c — the AVX-512F build of the online-softmax chunk step
 * (FlashAttention-2, Dao 2023): simd_body.h instantiated with 16-float
 * vectors and an inline vector exp (ab_exp16 below). Compiled for AVX-512
 * through `#pragma GCC target` whatever the build flags; called only when
 * ab_cpu_isa_supported(AB_ISA_AVX512). Register tiles: 4 x 4 zmm
 * accumulators in both GEMM passes (32 zmm registers available).
 *
 * ab_exp16: exp(x) = 2^n e^r with n = round(x log2 e), r = x - n ln 2 in two
 * steps (Cody & Waite), e^r by the degree-7 polynomial 1 + r + r^2 p(r) with
 * the coefficients of Moshier's Cephes expf, then 2^n by vscalefps. Results
 * below FLT_MIN (inputs below -87.33, -inf: masked logits) are 0: no
 * subnormal probabilities, whose products take microcode assists; NaN
 * stays NaN. Measured against exp() in double over every float in [-90, 0]
 * (the softmax range): at most 1.24 ULP. It replaced SLEEF's
 * Sleef_expf16_u10avx512f (1 ULP) because the call and its range handling
 * cost 11-14 % of dense flash (make bench, N = 4K, d = 64 and 128, one
 * thread); the outputs move by ~6e-8 relative. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))

#pragma GCC push_options
#pragma GCC target("avx512f,fma")

static inline __attribute__((always_inline)) __m512 ab_exp16(__m512 x)
{
    /* results below FLT_MIN (x < -87.33) are flushed to 0: a subnormal p
     * makes every later multiply that lands in the subnormal range take a
     * microcode assist (measured: reformer's bucketed softmax ran 1.6x
     * slower than with AVX2's SLEEF exp); NaN (unordered) is kept */
    const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(AB_EXP_FLUSH), _CMP_NLT_UQ);
    /* no clamp of x from below: a lane below -87.33 (or -inf, whose r is
     * NaN) is zeroed by `keep` whatever the steps make of it */
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(AB_EXP_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AB_EXP_LN2_HI), x); /* ln 2, high part */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AB_EXP_LN2_LO), r);        /* low part */
    __m512 p = _mm512_set1_ps(AB_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AB_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AB_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AB_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AB_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AB_EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
}

#define VT                __m512
#define W                 16
#define SFX               avx512
#define SB_R              4
#define SB_NV             4
#define PV_NX             4
#define VZERO()           _mm512_setzero_ps()
#define VSET1(x)          _mm512_set1_ps(x)
#define VLOAD(p)          _mm512_load_ps(p)
#define VLOADU(p)         _mm512_loadu_ps(p)
#define VLOADU_TAIL(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1u), (p))
#define VSTORE(p, v)      _mm512_store_ps((p), (v))
#define VSTOREU(p, v)     _mm512_storeu_ps((p), (v))
#define VFMA(a, b, c)     _mm512_fmadd_ps((a), (b), (c))
#define VMUL(a, b)        _mm512_mul_ps((a), (b))
#define VADD(a, b)        _mm512_add_ps((a), (b))
#define VSUB(a, b)        _mm512_sub_ps((a), (b))
#define VMAX(a, b)        _mm512_max_ps((a), (b))
#define VEXP(a)           ab_exp16(a)
#define VMASK_LIM(s, limp, c, ninf)                                                                      \
    _mm512_mask_blend_ps(                                                                                \
        _mm512_cmpgt_epi32_mask(_mm512_loadu_si512((const void *)(limp)), _mm512_set1_epi32(c)), (ninf), \
        (s))
#define VMASK_LO(s, lop, c, ninf) \
    _mm512_mask_blend_ps(         \
        _mm512_cmpgt_epi32_mask(_mm512_loadu_si512((const void *)(lop)), _mm512_set1_epi32(c)), (s), (ninf))
#define VZERO_IF_NEGINF(v, ninf) \
    _mm512_mask_blend_ps(_mm512_cmp_ps_mask((v), (ninf), _CMP_EQ_OQ), (v), _mm512_setzero_ps())
/* lanes whose element-map byte (ep[0 .. 16)) is 0 become -inf */
#define VMASK_EM(s, ep, ninf)                                                                \
    _mm512_mask_blend_ps(                                                                    \
        _mm512_test_epi32_mask(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ep))), \
                               _mm512_set1_epi32(0xff)),                                     \
        (ninf), (s))

_Static_assert(SB_R == 4, "simd_body.h handles row remainders up to 3");
#include "kernels/cpu/simd_body.h"

#pragma GCC pop_options

/* ---- bf16 pairs (AVX-512 BF16) ------------------------------------------
 * vdpbf16ps multiplies bf16 pairs and adds both products to one fp32 lane:
 * dst[i] += a[2i] b[2i] + a[2i+1] b[2i+1]. The pairs run along the
 * reduction: in QK^T the head_dim pairs (2p, 2p+1) (qt holds, for pair p and
 * query row r, (q[r][2p], q[r][2p+1]) at ((p ld + r) 2), so a query vector
 * is 16 rows x one pair and a key row's pair is one broadcast 32-bit word
 * of the stored bf16); in P V the key pairs (2c, 2c+1): P is rounded to bf16
 * and packed in place over st (row c of the result: lane r holds
 * (P[2c][r], P[2c+1][r])), V's rows interleaved into vp (pair c, column x
 * at ((c dp + x) 2)). An odd last key pairs with zeros; vp's columns past
 * head_dim are zero. The softmax between the passes is the fp32 one. */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,fma")

/* lane 2i <- element i of the low half, lane 2i+1 <- element i of the high */
static const uint16_t ab_bf16_interleave[32] = {
    0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
};

/* 32 bf16 with lane 2i = lo[i], lane 2i + 1 = hi[i] (il: the table above):
 * 16 key pairs of P (fp32, rounded) or 16 columns of two V rows (bf16). */
static inline __attribute__((always_inline)) __m512i ab_pairs_ps(__m512 lo, __m512 hi, __m512i il)
{
    return _mm512_permutexvar_epi16(il, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}
static inline __attribute__((always_inline)) __m512i ab_pairs_bf16(__m256i lo, __m256i hi, __m512i il)
{
    return _mm512_permutexvar_epi16(il, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
}

static inline __attribute__((always_inline)) __m512bh ab_pair_bcast(const uint16_t *p)
{
    int32_t w;
    memcpy(&w, p, sizeof w);
    return (__m512bh)_mm512_set1_epi32(w);
}

/* st[i][0 : NV*16] = scale sum_p k[i] pair p . qt pair p, i < R */
static inline __attribute__((always_inline)) void bf16_qk_tile(const int R, const int NV, const uint16_t *k,
                                                               int d, const uint16_t *qt, float *st, int ld,
                                                               float scale)
{
    __m512 acc[4][4];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_ps();
    for (int p = 0; p < d / 2; p++) {
        __m512bh qv[4];
        for (int j = 0; j < NV; j++) qv[j] = (__m512bh)_mm512_load_si512(qt + ((size_t)p * ld + j * 16) * 2);
        for (int i = 0; i < R; i++) {
            const __m512bh kb = ab_pair_bcast(k + (size_t)i * d + 2 * p);
            for (int j = 0; j < NV; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], qv[j], kb);
        }
    }
    const __m512 sc = _mm512_set1_ps(scale);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < NV; j++)
            _mm512_store_ps(st + (size_t)i * ld + j * 16, _mm512_mul_ps(acc[i][j], sc));
}

static inline __attribute__((always_inline)) void bf16_qk_rows(const int R, const uint16_t *k, int d,
                                                               const uint16_t *qt, float *st, int nv, int ld,
                                                               float scale)
{
    for (int j0 = 0; j0 < nv; j0 += 4) {
        const uint16_t *q = qt + (size_t)j0 * 32;
        float *s = st + j0 * 16;
        switch (nv - j0 < 4 ? nv - j0 : 4) {
        case 1: bf16_qk_tile(R, 1, k, d, q, s, ld, scale); break;
        case 2: bf16_qk_tile(R, 2, k, d, q, s, ld, scale); break;
        case 3: bf16_qk_tile(R, 3, k, d, q, s, ld, scale); break;
        case 4: bf16_qk_tile(R, 4, k, d, q, s, ld, scale); break;
        }
    }
}

/* acc[i][0 : NX*16] = alpha[i] acc[i] + sum_c P pair c (row i) . vp pair c */
static inline __attribute__((always_inline)) void bf16_pv_tile(const int R, const int NX, const uint16_t *pt,
                                                               const uint16_t *vp, int dp, int ncp,
                                                               float *acc, const float *alpha, int ld)
{
    __m512 a[4][4];
    for (int i = 0; i < R; i++) {
        const __m512 al = _mm512_set1_ps(alpha[i]);
        for (int j = 0; j < NX; j++)
            a[i][j] = _mm512_mul_ps(_mm512_load_ps(acc + (size_t)i * dp + j * 16), al);
    }
    for (int c = 0; c < ncp; c++) {
        __m512bh vv[4];
        for (int j = 0; j < NX; j++) vv[j] = (__m512bh)_mm512_load_si512(vp + ((size_t)c * dp + j * 16) * 2);
        for (int i = 0; i < R; i++) {
            const __m512bh pb = ab_pair_bcast(pt + ((size_t)c * ld + i) * 2);
            for (int j = 0; j < NX; j++) a[i][j] = _mm512_dpbf16_ps(a[i][j], pb, vv[j]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < NX; j++) _mm512_store_ps(acc + (size_t)i * dp + j * 16, a[i][j]);
}

static inline __attribute__((always_inline)) void bf16_pv_rows(const int R, const uint16_t *pt,
                                                               const uint16_t *vp, int dp, int ncp,
                                                               float *acc, const float *alpha, int ld)
{
    const int nxv = dp / 16;
    for (int x0 = 0; x0 < nxv; x0 += 4) {
        const uint16_t *vx = vp + (size_t)x0 * 32;
        float *ax = acc + x0 * 16;
        switch (nxv - x0 < 4 ? nxv - x0 : 4) {
        case 1: bf16_pv_tile(R, 1, pt, vx, dp, ncp, ax, alpha, ld); break;
        case 2: bf16_pv_tile(R, 2, pt, vx, dp, ncp, ax, alpha, ld); break;
        case 3: bf16_pv_tile(R, 3, pt, vx, dp, ncp, ax, alpha, ld); break;
        case 4: bf16_pv_tile(R, 4, pt, vx, dp, ncp, ax, alpha, ld); break;
        }
    }
}

void ab_chunk_bf16_avx512(ab_tile *t, const uint16_t *k, const uint16_t *v, int nk, int masked, float scale)
{
    const int d = t->d, dp = t->dp, nq = t->nq, ld = t->ld;
    const int nv = (nq + 15) / 16, ncp = (nk + 1) / 2;
    const uint16_t *qt = (const uint16_t *)t->qt;
    float *st = t->st;
    const __m512i il = _mm512_loadu_si512(ab_bf16_interleave);

    /* 1. S^T = scale K Q^T over head_dim pairs */
    int c = 0;
    for (; c + 4 <= nk; c += 4) bf16_qk_rows(4, k + (size_t)c * d, d, qt, st + (size_t)c * ld, nv, ld, scale);
    switch (nk - c) {
    case 1: bf16_qk_rows(1, k + (size_t)c * d, d, qt, st + (size_t)c * ld, nv, ld, scale); break;
    case 2: bf16_qk_rows(2, k + (size_t)c * d, d, qt, st + (size_t)c * ld, nv, ld, scale); break;
    case 3: bf16_qk_rows(3, k + (size_t)c * d, d, qt, st + (size_t)c * ld, nv, ld, scale); break;
    }

    /* 2. the fp32 online softmax */
    softmax_pass_avx512(t, nk, masked, NULL);

    /* P to bf16 key pairs, in place: row cp is written after rows 2cp and
     * 2cp + 1 are read, and every row below 2cp was read by an earlier pair */
    for (int cp = 0; cp < ncp; cp++) {
        const float *a = st + (size_t)(2 * cp) * ld;
        const int has_b = 2 * cp + 1 < nk;
        uint16_t *o = (uint16_t *)(st + (size_t)cp * ld);
        for (int j = 0; j < nv; j++) {
            const __m512 va = _mm512_load_ps(a + j * 16);
            const __m512 vb = has_b ? _mm512_load_ps(a + ld + j * 16) : _mm512_setzero_ps();
            _mm512_store_si512(o + (size_t)j * 32, ab_pairs_ps(va, vb, il));
        }
    }
    /* V rows to key pairs, columns padded with zeros to dp */
    uint16_t *vp = (uint16_t *)t->vp;
    for (int cp = 0; cp < ncp; cp++) {
        const uint16_t *a = v + (size_t)(2 * cp) * d;
        const int has_b = 2 * cp + 1 < nk;
        for (int x0 = 0; x0 < dp; x0 += 16) {
            const int n = d - x0 >= 16 ? 16 : d - x0;
            const __mmask16 m = (__mmask16)((1u << n) - 1u);
            const __m256i va = _mm256_maskz_loadu_epi16(m, a + x0);
            const __m256i vb = has_b ? _mm256_maskz_loadu_epi16(m, a + d + x0) : _mm256_setzero_si256();
            _mm512_store_si512(vp + ((size_t)cp * dp + x0) * 2, ab_pairs_bf16(va, vb, il));
        }
    }

    /* 3. acc = alpha acc + P V over key pairs */
    const uint16_t *pt = (const uint16_t *)st;
    int r = 0;
    for (; r + 4 <= nq; r += 4)
        bf16_pv_rows(4, pt + 2 * r, vp, dp, ncp, t->acc + (size_t)r * dp, t->alpha + r, ld);
    switch (nq - r) {
    case 1: bf16_pv_rows(1, pt + 2 * r, vp, dp, ncp, t->acc + (size_t)r * dp, t->alpha + r, ld); break;
    case 2: bf16_pv_rows(2, pt + 2 * r, vp, dp, ncp, t->acc + (size_t)r * dp, t->alpha + r, ld); break;
    case 3: bf16_pv_rows(3, pt + 2 * r, vp, dp, ncp, t->acc + (size_t)r * dp, t->alpha + r, ld); break;
    }
}

#pragma GCC pop_options

/* ---- AMX (Advanced Matrix Extensions) -------------------------------------
 * The same chunk as ab_chunk_bf16_avx512 with both products on the AMX tile
 * unit (TDPBF16PS: C[m][n] += A[m][2k] B[k][2n] + A[m][2k+1] B[k][2n+1],
 * 16 x 16 fp32 from 16 x 32 bf16 times 16 x (16 pairs)). Every operand is
 * already in a tile shape, so nothing but P and V^T is repacked:
 *   S^T (16 keys x 16 queries) = A: 16 key rows x 32 of head_dim, read in
 *     place (row stride d), times B: qt's pairs (16 pairs x 16 queries);
 *   acc^T (16 of head_dim x 16 queries) += A: V^T (16 of head_dim x 32
 *     keys, the caller transposes V once per call) times B: P's key pairs
 *     (16 pairs x 16 queries, packed in place over st as above).
 * So acc is held transposed here: acc[x ld + r] (head_dim x ld), rescaled
 * here; the caller writes it out transposed (flash.c end_transposed). Needs
 * head_dim % 32 == 0, k readable for 16-row groups and vt for 32-key
 * steps past nk (the caller pads). Tiles, each 16 rows x 64 bytes
 * (ab_amx_begin): 2 x 2 blocks of C in tiles 0-3 from A in 4, 5 and B in
 * 6, 7 (each loaded tile used twice); odd edges 1 x 1 in tiles 0, 4, 6. */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,fma,amx-tile,amx-bf16")

typedef struct ab_amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} ab_amx_cfg;

/* Static: the intrinsic's asm names only the config's first byte as an
 * input, so a configuration built on the stack loses its other stores to
 * dead-store elimination (seen with gcc 12: ldtilecfg of zero rows, #GP). */
static const ab_amx_cfg ab_amx_config __attribute__((aligned(64))) = {
    .palette = 1,
    .colsb = { 64, 64, 64, 64, 64, 64, 64, 64 },
    .rows = { 16, 16, 16, 16, 16, 16, 16, 16 },
};

void ab_amx_begin(void) { _tile_loadconfig(&ab_amx_config); }

void ab_amx_end(void) { _tile_release(); }

/* One 2 x 2 block of C tiles (rows ldc floats apart; accumulate 0: from
 * zero, 1: onto what is there) += sum over `steps` of A (two 16-row tiles:
 * a and a + 16 lda, rows lda elements apart; step s at + s astep) times B
 * (two 16-column tiles: b and b + 32, rows ldb elements apart; step s at
 * + s bstep). */
static inline __attribute__((always_inline)) void amx_2x2(const uint16_t *a, int lda, int astep,
                                                          const uint16_t *b, int ldb, int bstep, int steps,
                                                          float *c, int ldc, int accumulate)
{
    float *c1 = c + 16, *c2 = c + (size_t)16 * ldc, *c3 = c2 + 16;
    if (accumulate) {
        _tile_loadd(0, c, ldc * 4);
        _tile_loadd(1, c1, ldc * 4);
        _tile_loadd(2, c2, ldc * 4);
        _tile_loadd(3, c3, ldc * 4);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int s = 0; s < steps; s++) {
        const uint16_t *as = a + (size_t)s * astep, *bs = b + (size_t)s * bstep;
        _tile_loadd(4, as, lda * 2);
        _tile_loadd(5, as + (size_t)16 * lda, lda * 2);
        _tile_loadd(6, bs, ldb * 2);
        _tile_loadd(7, bs + 32, ldb * 2);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, ldc * 4);
    _tile_stored(1, c1, ldc * 4);
    _tile_stored(2, c2, ldc * 4);
    _tile_stored(3, c3, ldc * 4);
}

/* The same for one C tile (an odd edge). */
static inline __attribute__((always_inline)) void amx_1x1(const uint16_t *a, int lda, int astep,
                                                          const uint16_t *b, int ldb, int bstep, int steps,
                                                          float *c, int ldc, int accumulate)
{
    if (accumulate)
        _tile_loadd(0, c, ldc * 4);
    else
        _tile_zero(0);
    for (int s = 0; s < steps; s++) {
        _tile_loadd(4, a + (size_t)s * astep, lda * 2);
        _tile_loadd(6, b + (size_t)s * bstep, ldb * 2);
        _tile_dpbf16ps(0, 4, 6);
    }
    _tile_stored(0, c, ldc * 4);
}

/* C (M x Ng 16-column groups of 16 x 16 tiles; Mg groups of 16 rows) over
 * the 2 x 2 blocks, odd edges 1 x 1: row group i of A at a + i 16 lda,
 * column group j of B at b + j 32 and of C at c + i 16 ldc + j 16. */
static void amx_gemm(const uint16_t *a, int lda, int astep, const uint16_t *b, int ldb, int bstep, int steps,
                     float *c, int ldc, int mg, int ng, int accumulate)
{
    for (int i = 0; i < mg; i += 2)
        for (int j = 0; j < ng; j += 2) {
            if (i + 1 < mg && j + 1 < ng) {
                amx_2x2(a + (size_t)i * 16 * lda, lda, astep, b + (size_t)j * 32, ldb, bstep, steps,
                        c + (size_t)i * 16 * ldc + j * 16, ldc, accumulate);
                continue;
            }
            for (int ii = i; ii < mg && ii < i + 2; ii++)
                for (int jj = j; jj < ng && jj < j + 2; jj++)
                    amx_1x1(a + (size_t)ii * 16 * lda, lda, astep, b + (size_t)jj * 32, ldb, bstep, steps,
                            c + (size_t)ii * 16 * ldc + jj * 16, ldc, accumulate);
        }
}

void ab_chunk_bf16_amx(ab_tile *t, const uint16_t *k, const uint16_t *vt, int ldv, int nk, int masked,
                       float scale)
{
    const int d = t->d, ld = t->ld, nq = t->nq;
    const int nv = (nq + 15) / 16, nkg = (nk + 15) / 16, ncp = (nk + 1) / 2, nkc = (nk + 31) / 32;
    const uint16_t *qt = (const uint16_t *)t->qt;
    float *st = t->st, *acc = t->acc;
    const __m512i il = _mm512_loadu_si512(ab_bf16_interleave);

    /* 1. S^T = K Q^T (unscaled): A = 16 key rows x 32 of head_dim in place,
     * B = qt's pairs, 16 of them (32 of head_dim) per step */
    amx_gemm(k, d, 32, qt, ld * 2, 16 * ld * 2, d / 32, st, ld, nkg, nv, 0);

    /* 2. the online softmax fused with the packing of P into key pairs in
     * place (rows as above; the pairs up to the 32-key step zero): the max
     * runs over the unscaled logits, m is kept in scaled units and
     * p = exp(scale s - m) is one FMA and the exp (scale > 0) */
    if (masked == 2) {
        apply_em_avx512(t, nk);
        masked = 0;
    }
    const __m512 sc = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < nv; j++) {
        float *sj = st + j * 16;
        const __m512 mold = _mm512_load_ps(t->m + j * 16);
        const __m512 mx = masked_max_avx512(t, sj, j, nk, masked, ninf); /* raw logits */
        const __m512 mnew = _mm512_max_ps(mold, _mm512_mul_ps(mx, sc));
        const __m512 muse = VZERO_IF_NEGINF(mnew, ninf), nm = _mm512_sub_ps(_mm512_setzero_ps(), muse);
        const __m512 alpha = ab_exp16(_mm512_sub_ps(mold, muse));
        __m512 sum = _mm512_setzero_ps();
        for (int cp = 0; cp < ncp; cp++) {
            const float *a = sj + (size_t)(2 * cp) * ld;
            const __m512 va = ab_exp16(_mm512_fmadd_ps(_mm512_load_ps(a), sc, nm));
            const __m512 vb = 2 * cp + 1 < nk ? ab_exp16(_mm512_fmadd_ps(_mm512_load_ps(a + ld), sc, nm))
                                              : _mm512_setzero_ps();
            sum = _mm512_add_ps(sum, _mm512_add_ps(va, vb));
            _mm512_store_si512((uint16_t *)(st + (size_t)cp * ld) + (size_t)j * 32, ab_pairs_ps(va, vb, il));
        }
        _mm512_store_ps(t->l + j * 16, _mm512_fmadd_ps(_mm512_load_ps(t->l + j * 16), alpha, sum));
        _mm512_store_ps(t->m + j * 16, mnew);
        _mm512_store_ps(t->alpha + j * 16, alpha);
    }
    memset(st + (size_t)ncp * ld, 0, (size_t)(nkc * 16 - ncp) * ld * sizeof(float));

    /* 3. acc^T = alpha acc^T + V^T P^T */
    for (int x = 0; x < d; x++)
        for (int j = 0; j < nv; j++) {
            float *p = acc + (size_t)x * ld + j * 16;
            _mm512_store_ps(p, _mm512_mul_ps(_mm512_load_ps(p), _mm512_load_ps(t->alpha + j * 16)));
        }
    /* acc^T += V^T P^T: A = 16 rows of V^T x 32 keys, B = P's key pairs, 16
     * pairs (32 keys) per step */
    amx_gemm(vt, ldv, 32, (const uint16_t *)st, ld * 2, 16 * ld * 2, nkc, acc, ld, d / 16, nv, 1);
}

#pragma GCC pop_options

#else /* not x86 with GCC/Clang: never dispatched (ab_cpu_isa_supported says 0) */

void ab_chunk_avx512(ab_tile *t, const float *k, const float *v, int nk, int masked)
{
    ab_chunk_portable(t, k, v, nk, masked);
}

void ab_chunk_bf16_avx512(ab_tile *t, const uint16_t *k, const uint16_t *v, int nk, int masked, float scale)
{
    (void)t, (void)k, (void)v, (void)nk, (void)masked, (void)scale;
}

void ab_amx_begin(void) {}
void ab_amx_end(void) {}
void ab_chunk_bf16_amx(ab_tile *t, const uint16_t *k, const uint16_t *vt, int ldv, int nk, int masked,
                       float scale)
{
    (void)t, (void)k, (void)vt, (void)ldv, (void)nk, (void)masked, (void)scale;
}

#endif
