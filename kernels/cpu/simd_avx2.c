/* simd_avx2.c — the AVX2 + FMA build of the online-softmax chunk step
 * (FlashAttention-2, Dao 2023): simd_body.h instantiated with 8-float
 * vectors and SLEEF's 1-ULP vector exp (Sleef_expf8_u10avx2; Shibata &
 * Petrogalli, "SLEEF: A Portable Vectorized Library of C Standard
 * Mathematical Functions", IEEE TPDS 2020). Compiled for AVX2 + FMA through
 * `#pragma GCC target` whatever the build flags; called only when
 * ab_cpu_isa_supported(AB_ISA_AVX2). Register tiles: 4 x 2 ymm
 * accumulators in both GEMM passes (16 ymm registers). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))

#pragma GCC push_options
#pragma GCC target("avx2,fma")

/* sleef.h declares this only when the file is compiled with -mavx2 */
__m256 Sleef_expf8_u10avx2(__m256);

#define VT        __m256
#define W         8
#define SFX       avx2
#define SB_R      4
#define SB_NV     2
#define PV_NX     2
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
#define VEXP(a)       Sleef_expf8_u10avx2(a)
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

_Static_assert(SB_R == 4, "simd_body.h handles row remainders up to 3");
#include "kernels/cpu/simd_body.h"

#pragma GCC pop_options

#else /* not x86 with GCC/Clang: never dispatched (ab_cpu_isa_supported says 0) */

void ab_chunk_avx2(ab_tile *t, const float *k, const float *v, int nk, int masked)
{
    ab_chunk_portable(t, k, v, nk, masked);
}

#endif
