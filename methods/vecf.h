/* vecf.h — GNU C float vectors of one register for the hand-tiled selector
 * kernels (methods/hip.c, methods/spark.c): VW lanes (16 where the build
 * targets AVX-512, 8 under AVX2 + FMA, else 4), the vector type vf, and
 * v_load / v_store (unaligned, via memcpy), v_splat and v_fma. With -std=c11
 * GCC does not contract a*b + c, so the x86 builds call the FMA intrinsic
 * (and broadcast with set1: one vbroadcastss); elsewhere a multiply and an
 * add. Header-only (static inline), not a method: it registers nothing. */
#ifndef AB_METHODS_VECF_H
#define AB_METHODS_VECF_H

#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define VW 16
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VW 8
#else
#define VW 4 /* SSE / NEON width: wider generic vectors would change the ABI */
#endif
typedef float vf __attribute__((vector_size(VW * sizeof(float))));

static inline vf v_load(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void v_store(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* VW bfloat16 values (the top 16 bits of a float) as floats: widen, shift */
typedef uint16_t vbf16 __attribute__((vector_size(VW * sizeof(uint16_t))));
typedef uint32_t vu32 __attribute__((vector_size(VW * sizeof(uint32_t))));
static inline vf v_load_bf16(const uint16_t *p)
{
#if defined(__AVX512F__)
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)p)), 16));
#elif defined(__AVX2__) && defined(__FMA__)
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p)), 16));
#else
    vbf16 h;
    memcpy(&h, p, sizeof h);
    const vu32 u = __builtin_convertvector(h, vu32) << 16;
    vf f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}
static inline vf v_splat(float x)
{
#if defined(__AVX512F__)
    return _mm512_set1_ps(x);
#elif defined(__AVX2__) && defined(__FMA__)
    return _mm256_set1_ps(x);
#else
    vf v = { 0 };
    return v + x;
#endif
}
static inline vf v_fma(vf a, vf b, vf c) /* a * b + c */
{
#if defined(__AVX512F__)
    return _mm512_fmadd_ps(a, b, c);
#elif defined(__AVX2__) && defined(__FMA__)
    return _mm256_fmadd_ps(a, b, c);
#else
    return a * b + c;
#endif
}

/* Eight floats and eight doubles, whatever the ISA: float data summed in
 * double lanes (__builtin_convertvector widens v8f to v8d). */
typedef float v8f __attribute__((vector_size(8 * sizeof(float))));
typedef double v8d __attribute__((vector_size(8 * sizeof(double))));

/* The eight lanes of *a added in pairs: ((0 + 1) + (2 + 3)) + ((4 + 5) +
 * (6 + 7)). By pointer: a 64-byte vector passed by value has a psABI note
 * below AVX-512. */
static inline double v8d_sum(const v8d *a)
{
    return (((*a)[0] + (*a)[1]) + ((*a)[2] + (*a)[3])) + (((*a)[4] + (*a)[5]) + ((*a)[6] + (*a)[7]));
}

#endif
