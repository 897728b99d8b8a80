/* vecf.h — GNU C float vectors of one register for the hand-tiled selector
 * kernels (methods/hip.c, methods/spark.c): VW lanes (16 where the build
 * targets AVX-512, 8 under AVX2 + FMA, else 4), the vector type vf, and
 * v_load / v_store (unaligned, via memcpy), v_splat and v_fma. With -std=c11
 * GCC does not contract a*b + c, so the x86 builds call the FMA intrinsic
 * (and broadcast with set1: one vbroadcastss); elsewhere a multiply and an
 * add. Also doubles in one register (vdr, below) for the loops that sum
 * floats in double. Header-only (static inline), not a method: it
 * registers nothing. */
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

/* Eight floats, whatever the ISA (one register under AVX2). */
typedef float v8f __attribute__((vector_size(8 * sizeof(float))));

/* Doubles in one register: VDR lanes (8 under AVX-512, 4 under AVX2 +
 * FMA, else 2), the type vdr, vdr_of_f (VDR floats loaded and widened),
 * vdr_widen (a vector vdrf of VDR floats widened) and vdr_load. Loops
 * over 8, 16 or 32 lanes of doubles take arrays of them. A GNU vector
 * wider than the ISA's registers (eight doubles below AVX-512) is split
 * by GCC 12 through the stack: every add, broadcast and widening a store
 * and reloads; on a Zen 3 the 8-double loops of pbs, routing, dhsa,
 * scatterbrain and the linear attentions ran that way (2026-12-07). */
#define VDR (VW / 2)
typedef double vdr __attribute__((vector_size(VDR * sizeof(double))));
typedef float vdrf __attribute__((vector_size(VDR * sizeof(float))));
static inline __attribute__((always_inline)) vdr vdr_widen(vdrf f)
{
#if defined(__AVX512F__)
    return _mm512_cvtps_pd((__m256)f);
#elif defined(__AVX2__) && defined(__FMA__)
    return _mm256_cvtps_pd((__m128)f); /* one vcvtps2pd: GCC made two halves of the generic form */
#else
    return __builtin_convertvector(f, vdr);
#endif
}
static inline __attribute__((always_inline)) vdr vdr_of_f(const float *p)
{
    vdrf f;
    memcpy(&f, p, sizeof f);
    return vdr_widen(f);
}
static inline __attribute__((always_inline)) vdr vdr_load(const double *p)
{
    vdr v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Lanes 0-15 of a (16 / VDR vectors): lane u + 8 added to lane u (two
 * 8-lane accumulators, the second added to the first), then the eight in
 * pairs: ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)). */
static inline double vdr_sum16(const vdr *a)
{
    double t[16];
    memcpy(t, a, sizeof t);
    for (int u = 0; u < 8; u++) t[u] += t[u + 8];
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

#endif
