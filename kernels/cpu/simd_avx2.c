/* simd_avx2.c — the AVX2 + FMA build of the online-softmax chunk step
 * (FlashAttention-2, Dao 2023): simd_body.h instantiated with 8-float
 * vectors and an inline vector exp (ab_exp8 below). Compiled for AVX2 + FMA
 * through `#pragma GCC target` whatever the build flags; called only when
 * ab_cpu_isa_supported(AB_ISA_AVX2). Register tiles: 6 x 2 ymm
 * accumulators in both GEMM passes (6 key rows x 16 queries, then 6 query
 * rows x 16 head_dim entries), so twelve of the 16 ymm registers: with 4 x 2
 * the eight FMA chains left Zen 3's two 4-cycle FMA pipes short of work
 * (the chunk step ran 16-25 % slower, 4 x 3 8-13 %; same bits: each
 * accumulator is the same chain whatever the tile).
 *
 * ab_exp8 is simd_avx512.c's ab_exp16 in eight lanes, step for step (the
 * same rounding of x log2 e, the same Cody-Waite reduction, polynomial and
 * flush below -87.33), with 2^n, which AVX2 has no vscalefps for, as two
 * exact power-of-two multiplies (2^h 2^(n - h), h = floor(n / 2): n = 128,
 * reached below exp's overflow, has no float 2^n). So both ISAs give the
 * same bits for every input, where AVX2 had taken SLEEF's
 * Sleef_expf8_u10avx2 (Shibata & Petrogalli, IEEE TPDS 2020), whose call
 * spilled the softmax pass's registers: on Zen 3 it was 16 % of dense
 * flash's samples (2026-12-07). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))

#pragma GCC push_options
#pragma GCC target("avx2,fma")

/* e^r of the reduced argument and n = round(x log2 e): the steps ab_exp8
 * and ab_exp8_nonpos share. keep: the lanes below -87.33 (results below
 * FLT_MIN, -inf) are cleared, whatever the steps make of them; NaN
 * (unordered) is kept. */
static inline __attribute__((always_inline)) __m256 ab_exp8_poly(__m256 x, __m256 *n_out, __m256 *keep)
{
    *keep = _mm256_cmp_ps(x, _mm256_set1_ps(AB_EXP_FLUSH), _CMP_NLT_UQ);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(AB_EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AB_EXP_LN2_HI), x); /* ln 2, high part */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AB_EXP_LN2_LO), r);        /* low part */
    __m256 p = _mm256_set1_ps(AB_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AB_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AB_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AB_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AB_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AB_EXP_P5));
    *n_out = n;
    return _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
}

static inline __attribute__((always_inline)) __m256 ab_exp8(__m256 x)
{
    __m256 n, keep;
    const __m256 p = ab_exp8_poly(x, &n, &keep);
    /* 2^n as 2^h 2^(n - h): n clamped to [-252, 252] (NaN, inf and huge x
     * convert to INT_MIN; their p is NaN or their result inf either way),
     * each factor a normal float, each product exact but the last, which
     * rounds (or overflows) once, as vscalefps does */
    __m256i ni = _mm256_cvtps_epi32(n);
    ni = _mm256_max_epi32(_mm256_min_epi32(ni, _mm256_set1_epi32(252)), _mm256_set1_epi32(-252));
    const __m256i h = _mm256_srai_epi32(ni, 1), bias = _mm256_set1_epi32(127);
    const __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    const __m256 e2 =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
    return _mm256_and_ps(_mm256_mul_ps(_mm256_mul_ps(p, e1), e2), keep);
}

/* ab_exp8 for x <= 0 (or -inf, or NaN), the same bits there: the softmax
 * pass's arguments, s - max and m_old - m_new, are never positive. A kept
 * lane (x >= -87.33) has n in [-126, 0], so 2^n is one normal float and p
 * 2^n one rounding, as ab_exp8's last product; a cleared lane's n, and a
 * NaN's (INT_MIN), make some factor that the mask or the NaN p overrides.
 * Seven vector operations fewer than ab_exp8 (the clamp and the second
 * factor): in cache, the AVX2 chunk step took 0.94-0.97x the time at d = 64
 * and 0.98-0.99x at d = 128 (2026-12-07, a Zen 3, one process alternating
 * the two steps against a control of two identical steps). */
static inline __attribute__((always_inline)) __m256 ab_exp8_nonpos(__m256 x)
{
    __m256 n, keep;
    const __m256 p = ab_exp8_poly(x, &n, &keep);
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256 e = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(127)), 23));
    return _mm256_and_ps(_mm256_mul_ps(p, e), keep);
}

#define VT    __m256
#define W     8
#define SFX   avx2
#define SB_R  6
#define SB_NV 2
#define PV_NX 2
/* a gathered chunk's value rows copied before pass 3 (simd_body.h
 * F(pv_copy)): the gather kernel at N = 16K, density 0.1, d = 64 on a Zen 3
 * (32 KiB L1), alternating builds, x 0.88-0.92; the AVX-512 step still reads
 * them in place (docs/kernels.md, "Gathered value rows copied under AVX2") */
#define PV_COPY   1
#define VZERO()   _mm256_setzero_ps()
#define VSET1(x)  _mm256_set1_ps(x)
#define VLOAD(p)  _mm256_load_ps(p)
#define VLOADU(p) _mm256_loadu_ps(p)
#define VLOADU_TAIL(p, n)   \
    _mm256_maskload_ps((p), \
                       _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)))
#define VSTORE(p, v)  _mm256_store_ps((p), (v))
#define VSTOREU(p, v) _mm256_storeu_ps((p), (v))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VMUL(a, b)    _mm256_mul_ps((a), (b))
#define VADD(a, b)    _mm256_add_ps((a), (b))
#define VSUB(a, b)    _mm256_sub_ps((a), (b))
#define VMAX(a, b)    _mm256_max_ps((a), (b))
#define VEXP(a)       ab_exp8(a)
#define VEXP_NP(a)    ab_exp8_nonpos(a)
#define VMASK_LIM(s, limp, c, ninf)                          \
    _mm256_blendv_ps((ninf), (s),                            \
                     _mm256_castsi256_ps(_mm256_cmpgt_epi32( \
                         _mm256_loadu_si256((const __m256i *)(const void *)(limp)), _mm256_set1_epi32(c))))
#define VMASK_LO(s, lop, c, ninf)                            \
    _mm256_blendv_ps((s), (ninf),                            \
                     _mm256_castsi256_ps(_mm256_cmpgt_epi32( \
                         _mm256_loadu_si256((const __m256i *)(const void *)(lop)), _mm256_set1_epi32(c))))
#define VZERO_IF_NEGINF(v, ninf) \
    _mm256_blendv_ps((v), _mm256_setzero_ps(), _mm256_cmp_ps((v), (ninf), _CMP_EQ_OQ))
/* lanes whose element-map byte (ep[0 .. 8)) is 0 become -inf */
#define VMASK_EM(s, ep, ninf)                                                                        \
    _mm256_blendv_ps((ninf), (s),                                                                    \
                     _mm256_castsi256_ps(_mm256_cmpgt_epi32(                                         \
                         _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(ep))), \
                         _mm256_setzero_si256())))

_Static_assert(SB_R <= 6, "simd_body.h handles row remainders up to 5");
#include "kernels/cpu/simd_body.h"

/* The softmax pass's exp (ab_exp8_nonpos) on x[0, n), n a multiple of 8,
 * every x[i] <= 0, -inf or NaN: for tests/test_blascore.c. */
void ab_exp_nonpos_avx2(float *x, int n)
{
    for (int i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, ab_exp8_nonpos(_mm256_loadu_ps(x + i)));
}

#pragma GCC pop_options

#else /* not x86 with GCC/Clang: never dispatched (ab_cpu_isa_supported says 0) */

void ab_chunk_avx2(ab_tile *t, const float *k, const float *v, int nk, int masked)
{
    ab_chunk_portable(t, k, v, nk, masked);
}

void ab_exp_nonpos_avx2(float *x, int n) { ab_exp_shift_portable(x, n, 0.0f); }

#endif
