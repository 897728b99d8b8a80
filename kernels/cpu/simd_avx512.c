/* simd_avx512.c — the AVX-512F build of the online-softmax chunk step
 * (FlashAttention-2, Dao 2023): simd_body.h instantiated with 16-float
 * vectors and an inline vector exp (ab_exp16 below). Compiled for AVX-512
 * through `#pragma GCC target` whatever the build flags; called only when
 * ab_cpu_isa_supported(AB_ISA_AVX512). Register tiles: 4 x 4 zmm
 * accumulators in both GEMM passes (32 zmm registers available).
 *
 * ab_exp16: exp(x) = 2^n e^r with n = round(x log2 e), r = x - n ln 2 in two
 * steps (Cody & Waite), e^r by the degree-7 polynomial 1 + r + r^2 p(r) with
 * the coefficients of Moshier's Cephes expf, then 2^n by vscalefps (exact,
 * gradual underflow). Inputs below -104 give 0 (-inf: masked logits), NaN
 * stays NaN. Measured against exp() in double over every float in [-90, 0]
 * (the softmax range): at most 1.24 ULP. It replaced SLEEF's
 * Sleef_expf16_u10avx512f (1 ULP) because the call and its range handling
 * cost 11-14 % of dense flash (make bench, N = 4K, d = 64 and 128, one
 * thread); the outputs move by ~6e-8 relative. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))

#pragma GCC push_options
#pragma GCC target("avx512f,fma")

static inline __attribute__((always_inline)) __m512 ab_exp16(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x); /* NaN in x stays NaN */
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x); /* ln 2, high part */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);     /* low part */
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
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

_Static_assert(SB_R == 4, "simd_body.h handles row remainders up to 3");
#include "kernels/cpu/simd_body.h"

#pragma GCC pop_options

#else /* not x86 with GCC/Clang: never dispatched (ab_cpu_isa_supported says 0) */

void ab_chunk_avx512(ab_tile *t, const float *k, const float *v, int nk, int masked)
{
    ab_chunk_portable(t, k, v, nk, masked);
}

#endif
