/* simd_avx512.c — the AVX-512F build of the online-softmax chunk step
 * (FlashAttention-2, Dao 2023): simd_body.h instantiated with 16-float
 * vectors and SLEEF's 1-ULP vector exp (Sleef_expf16_u10avx512f; Shibata &
 * Petrogalli, "SLEEF: A Portable Vectorized Library of C Standard
 * Mathematical Functions", IEEE TPDS 2020). Compiled for AVX-512 through
 * `#pragma GCC target` whatever the build flags; called only when
 * ab_cpu_isa_supported(AB_ISA_AVX512). Register tiles: 4 x 4 zmm
 * accumulators in both GEMM passes (32 zmm registers available). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))

#pragma GCC push_options
#pragma GCC target("avx512f,fma")

/* sleef.h declares this only when the file is compiled with -mavx512f */
__m512 Sleef_expf16_u10avx512f(__m512);

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
#define VEXP(a)           Sleef_expf16_u10avx512f(a)
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
