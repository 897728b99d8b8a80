/* timing.c — CLOCK_MONOTONIC wall time and summary statistics of samples. */
#include "harness/engine/timing.h"
#include "attnbench.h" /* ab_splitmix64 */

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

double ab_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(const double *sorted, int n, double q)
{
    double pos = q * (n - 1);
    int i = (int)floor(pos);
    if (i >= n - 1) return sorted[n - 1];
    double f = pos - i;
    return sorted[i] * (1 - f) + sorted[i + 1] * f;
}

void ab_stats_compute(const double *x, int n, ab_stats *s)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    if (n <= 0) {
        s->median = s->min = s->max = s->p10 = s->p90 = s->mean = s->cv = NAN;
        return;
    }
    double *t = malloc(sizeof(double) * (size_t)n);
    if (!t) {
        s->median = NAN;
        return;
    }
    memcpy(t, x, sizeof(double) * (size_t)n);
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++) sum += t[i];
    s->mean = sum / n;
    for (int i = 0; i < n; i++) sq += (t[i] - s->mean) * (t[i] - s->mean);
    s->cv = n > 1 && s->mean > 0 ? sqrt(sq / (n - 1)) / s->mean : 0;
    s->min = t[0];
    s->max = t[n - 1];
    s->median = quantile(t, n, 0.5);
    s->p10 = quantile(t, n, 0.1);
    s->p90 = quantile(t, n, 0.9);
    free(t);
}

double ab_median(const double *x, int n)
{
    ab_stats s;
    ab_stats_compute(x, n, &s);
    return s.median;
}

/* A draw in [0, n) for the bootstrap, from the splitmix64 stream s. */
static int below(uint64_t *s, int n) { return (int)((ab_splitmix64(s) >> 11) % (uint64_t)n); }

#define AB_CI_GROUPS 64
void ab_median_ci(const double *x, const int *group, int n, double level, int reps, uint64_t seed, double *lo,
                  double *hi)
{
    *lo = *hi = NAN;
    if (n <= 0 || reps <= 0) return;
    /* members of each group, in order */
    int start[AB_CI_GROUPS + 1] = { 0 }, count[AB_CI_GROUPS] = { 0 }, ng = 0;
    for (int i = 0; i < n; i++) {
        int g = group ? group[i] : 0;
        if (g < 0 || g >= AB_CI_GROUPS) g = 0;
        count[g]++;
    }
    int gmax = 0, nonempty = 0;
    for (int g = 0; g < AB_CI_GROUPS; g++) {
        gmax = count[g] > gmax ? count[g] : gmax;
        nonempty += count[g] > 0;
    }
    /* a resample draws `nonempty` groups, possibly the largest each time */
    int *idx = malloc(sizeof(int) * (size_t)n);
    double *buf = malloc(sizeof(double) * (size_t)gmax * (size_t)nonempty);
    double *med = malloc(sizeof(double) * (size_t)reps);
    if (!idx || !buf || !med) {
        free(idx);
        free(buf);
        free(med);
        return;
    }
    int gid[AB_CI_GROUPS];
    for (int g = 0; g < AB_CI_GROUPS; g++) {
        start[g + 1] = start[g] + count[g];
        if (count[g]) gid[ng++] = g;
    }
    int fill[AB_CI_GROUPS] = { 0 };
    for (int i = 0; i < n; i++) {
        int g = group ? group[i] : 0;
        if (g < 0 || g >= AB_CI_GROUPS) g = 0;
        idx[start[g] + fill[g]++] = i;
    }
    uint64_t st = seed ^ 0x6a09e667f3bcc908ull;
    for (int r = 0; r < reps; r++) {
        int m = 0;
        for (int k = 0; k < ng; k++) {
            const int g = ng > 1 ? gid[below(&st, ng)] : gid[0];
            for (int j = 0; j < count[g]; j++) buf[m++] = x[idx[start[g] + below(&st, count[g])]];
        }
        med[r] = ab_median(buf, m);
    }
    /* percentile interval by the same interpolated quantiles */
    double *t = malloc(sizeof(double) * (size_t)reps);
    if (t) {
        memcpy(t, med, sizeof(double) * (size_t)reps);
        qsort(t, (size_t)reps, sizeof *t, cmp_d);
        *lo = quantile(t, reps, (1 - level) / 2);
        *hi = quantile(t, reps, 1 - (1 - level) / 2);
        free(t);
    }
    free(idx);
    free(buf);
    free(med);
}

void ab_cpuload_read(ab_cpuload *c)
{
    memset(c, 0, sizeof *c);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        c->self_s = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
                    (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    unsigned long long v[10] = { 0 };
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (got < 8) return;
    const double tick = 1.0 / (double)sysconf(_SC_CLK_TCK);
    /* user nice system idle iowait irq softirq steal [guest guest_nice, already in user] */
    c->busy_s = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) * tick;
    c->steal_s = (double)v[7] * tick;
    c->total_s = (double)(v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]) * tick;
    c->ok = 1;
}

void ab_cpuload_diff(const ab_cpuload *a, const ab_cpuload *b, double *foreign_s, double *steal_s,
                     double *total_s)
{
    *foreign_s = *steal_s = *total_s = 0;
    if (!a->ok || !b->ok) return;
    double f = (b->busy_s - a->busy_s) - (b->self_s - a->self_s);
    *foreign_s = f > 0 ? f : 0;
    *steal_s = b->steal_s - a->steal_s > 0 ? b->steal_s - a->steal_s : 0;
    *total_s = b->total_s - a->total_s > 0 ? b->total_s - a->total_s : 0;
}

double ab_loadavg1(void)
{
    double l = NAN;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = NAN;
        fclose(f);
    }
    return l;
}

/* 10 independent chains of 8-float vectors: enough to keep two FMA ports
 * busy through a 4-5 cycle latency on current x86. */
#define FMA_CHAINS 10
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static float fma_avx2(long iters, float a, float b)
{
    __m256 x[FMA_CHAINS];
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
    for (int j = 0; j < FMA_CHAINS; j++) x[j] = _mm256_set1_ps(1.0f + 0.01f * (float)j);
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < FMA_CHAINS; j++) x[j] = _mm256_fmadd_ps(x[j], va, vb);
    float out[8], s = 0;
    __m256 t = x[0];
    for (int j = 1; j < FMA_CHAINS; j++) t = _mm256_add_ps(t, x[j]);
    _mm256_storeu_ps(out, t);
    for (int k = 0; k < 8; k++) s += out[k];
    return s;
}
#define FMA_HAVE_X86 1
#endif

static float fma_portable(long iters, float a, float b)
{
    float x[FMA_CHAINS][8];
    for (int j = 0; j < FMA_CHAINS; j++)
        for (int l = 0; l < 8; l++) x[j][l] = 1.0f + 0.01f * (float)j;
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < FMA_CHAINS; j++)
            for (int l = 0; l < 8; l++) x[j][l] = x[j][l] * a + b;
    float s = 0;
    for (int j = 0; j < FMA_CHAINS; j++)
        for (int l = 0; l < 8; l++) s += x[j][l];
    return s;
}

static volatile float fma_a = 0.9999f, fma_b = 1e-4f, fma_sink;

double ab_fma_probe(double ms)
{
    float (*fn)(long, float, float) = fma_portable;
#ifdef FMA_HAVE_X86
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) fn = fma_avx2;
#endif
    const float a = fma_a, b = fma_b;
    long iters = 256;
    double t0, dt;
    for (;;) { /* grow until one run lasts a fifth of the budget */
        t0 = ab_now_ms();
        fma_sink = fn(iters, a, b);
        dt = ab_now_ms() - t0;
        if (dt >= ms / 5 || iters > (1L << 36)) break;
        iters *= 4;
    }
    double best = 0;
    for (int r = 0; r < 3; r++) { /* the fastest of 3: the probe measures the clock, not interruptions */
        t0 = ab_now_ms();
        fma_sink = fn(iters, a, b);
        dt = ab_now_ms() - t0;
        double g = dt > 0 ? 2.0 * 8 * FMA_CHAINS * (double)iters / (dt * 1e6) : 0;
        if (g > best) best = g;
    }
    return best;
}

double ab_fma_probe_team(int threads, double ms)
{
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    double g[256];
    for (int t = 0; t < threads; t++) g[t] = NAN;
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num();
        if (t < threads) g[t] = ab_fma_probe(ms);
    }
    double lo = INFINITY;
    for (int t = 0; t < threads; t++)
        if (g[t] < lo) lo = g[t];
    return isinf(lo) ? NAN : lo;
}
