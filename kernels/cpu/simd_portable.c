/* simd_portable.c — the portable C build of the online-softmax chunk step
 * (FlashAttention-2, Dao 2023; layout in tile.h) and the run-time ISA
 * dispatch (simd.h). Plain loops over the same transposed tile layout as the
 * AVX2 / AVX-512 builds, with libm expf: the fallback on CPUs without AVX2
 * and the baseline the tests compare the SIMD paths with. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"

int ab_cpu_isa_supported(int isa)
{
    switch (isa) {
    case AB_ISA_PORTABLE: return 1;
#if defined(__x86_64__) || defined(__i386__)
    case AB_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case AB_ISA_AVX512: return __builtin_cpu_supports("avx512f");
#endif
    default: return 0;
    }
}

int ab_cpu_bf16_supported(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
/* AMX: CPUID.(7,0):EDX bits 22 (AMX-BF16) and 24 (AMX-TILE), then Linux's
 * permission for the tile data state (ARCH_REQ_XCOMP_PERM = 0x1023,
 * XFEATURE_XTILEDATA = 18), asked once per process. */
static int amx_probe(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 22)) || !(d & (1u << 24))) return 0;
    return ab_cpu_bf16_supported() && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}
#else
static int amx_probe(void) { return 0; }
#endif

int ab_cpu_amx_supported(void)
{
    static int state = -1; /* -1: not asked yet */
    int s;
#pragma omp atomic read
    s = state;
    if (s < 0) {
        s = amx_probe();
#pragma omp atomic write
        state = s;
    }
    return s;
}

const char *ab_cpu_isa_name(int isa)
{
    switch (isa) {
    case AB_ISA_PORTABLE: return "portable";
    case AB_ISA_AVX2: return "avx2";
    case AB_ISA_AVX512: return "avx512";
    }
    return "?";
}

int ab_cpu_isa_pick(void)
{
    int cap = AB_ISA_COUNT - 1;
    const char *env = getenv("AB_CPU_ISA");
    if (env && *env) {
        for (int i = 0; i < AB_ISA_COUNT; i++)
            if (!strcmp(env, ab_cpu_isa_name(i))) cap = i;
    }
    for (int isa = cap; isa > AB_ISA_PORTABLE; isa--)
        if (ab_cpu_isa_supported(isa)) return isa;
    return AB_ISA_PORTABLE;
}

double ab_exp_shift_sum_portable(float *x, int n, float shift)
{
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - shift);
        sum += x[i];
    }
    return sum;
}

void ab_exp_shift_portable(float *x, int n, float shift)
{
    for (int i = 0; i < n; i++) x[i] = expf(x[i] - shift);
}

/* The ISA of the exp helpers below, picked once: the pick never changes
 * within a process, so a racing first call is benign. */
static int exp_isa(void)
{
    static volatile int isa = -1;
    if (isa < 0) isa = ab_cpu_isa_pick();
    return isa;
}

void ab_cpu_exp_shift(float *x, int n, float shift)
{
    switch (exp_isa()) {
    case AB_ISA_AVX512: ab_exp_shift_avx512(x, n, shift); break;
    case AB_ISA_AVX2: ab_exp_shift_avx2(x, n, shift); break;
    default: ab_exp_shift_portable(x, n, shift); break;
    }
}

double ab_cpu_exp_shift_sum(float *x, int n, float shift)
{
    switch (exp_isa()) {
    case AB_ISA_AVX512: return ab_exp_shift_sum_avx512(x, n, shift);
    case AB_ISA_AVX2: return ab_exp_shift_sum_avx2(x, n, shift);
    default: return ab_exp_shift_sum_portable(x, n, shift);
    }
}

double ab_cpu_exp_max_sum(float *x, int n, float mx)
{
    switch (exp_isa()) {
    case AB_ISA_AVX512: return ab_exp_max_sum_avx512(x, n, mx);
    case AB_ISA_AVX2: return ab_exp_max_sum_avx2(x, n, mx);
    default: return ab_exp_shift_sum_portable(x, n, mx);
    }
}

void ab_chunk_portable(ab_tile *t, const float *k /* (nk, d) */, const float *v /* (nk, d) */, int nk,
                       int masked)
{
    const int d = t->d, dp = t->dp, nq = t->nq;
    float *restrict st = t->st; /* (nk, ld) */
    /* S^T = K (scale Q)^T */
    for (int c = 0; c < nk; c++) {
        float *restrict sc = st + (size_t)c * t->ld;
        const float *restrict kc = k + (size_t)c * d;
        for (int r = 0; r < nq; r++) sc[r] = 0.0f;
        for (int x = 0; x < d; x++) {
            const float kx = kc[x];
            const float *restrict qx = t->qt + (size_t)x * t->ld;
            for (int r = 0; r < nq; r++) sc[r] += kx * qx[r];
        }
    }
    /* the base mask: masked columns become -inf (exp gives exactly 0) */
    if (masked)
        for (int c = 0; c < nk; c++)
            for (int r = 0; r < nq; r++)
                if (masked == 1 ? c < t->lo[r] || c >= t->lim[r] : !t->em[(size_t)c * t->ld + r])
                    st[(size_t)c * t->ld + r] = -INFINITY;
    /* online softmax per query row */
    for (int r = 0; r < nq; r++) {
        float mx = t->m[r];
        for (int c = 0; c < nk; c++) {
            const float s = st[(size_t)c * t->ld + r];
            mx = s > mx ? s : mx;
        }
        const float muse = mx == -INFINITY ? 0.0f : mx;
        const float alpha = expf(t->m[r] - muse);
        float sum = 0.0f;
        for (int c = 0; c < nk; c++) {
            float *s = st + (size_t)c * t->ld + r;
            *s = expf(*s - muse);
            sum += *s;
        }
        t->l[r] = t->l[r] * alpha + sum;
        t->m[r] = mx;
        t->alpha[r] = alpha;
    }
    /* acc = alpha acc + P V */
    for (int r = 0; r < nq; r++) {
        float *restrict acc = t->acc + (size_t)r * dp;
        const float alpha = t->alpha[r];
        for (int x = 0; x < d; x++) acc[x] *= alpha;
        for (int c = 0; c < nk; c++) {
            const float p = st[(size_t)c * t->ld + r];
            const float *restrict vc = v + (size_t)c * d;
            for (int x = 0; x < d; x++) acc[x] += p * vc[x];
        }
    }
}
