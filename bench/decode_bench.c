/* decode_bench.c — the decode kernel (ab_kernel_decode, kernels/cpu/decode.c)
 * against this machine's memory bandwidth.
 *
 * Decode reads every key and value of the cache once per step and does 4d
 * FLOPs per key: it is bound by memory bandwidth, so the yardstick is the
 * bandwidth itself, measured first with a STREAM-style triad (McCalpin,
 * "Memory Bandwidth and Machine Balance in Current High Performance
 * Computers", IEEE TCCA Newsletter 1995; https://www.cs.virginia.edu/stream/):
 * a[i] = b[i] + s c[i] over three arrays of doubles much larger than the
 * last-level cache (default 3 x 256 MiB), first touched by the threads that
 * use them, best (minimum) time of several repetitions, bytes counted as
 * STREAM counts them (24 per element: two reads, one write, no
 * write-allocate). Then dense decode steps, d = 128, for N in {16K, 64K,
 * 128K, 512K} keys, (heads, kv_heads) in {(1,1), (8,1), (8,8)}, strategies
 * HEADS, SPLITK and LEAN, at 1 and 2 threads: median time per step over
 * >= 20 steps, achieved GB/s = bytes of K and V read (2 N d 4 per KV head)
 * / median, its fraction of the triad bandwidth at the same thread count,
 * and the 2-thread / 1-thread speed-up. Each step reads a cache that is not
 * in the LLC: when one cache is smaller than --rotate MiB, several copies
 * are allocated and the steps cycle through them (a model with many layers
 * does the same). Problems whose caches exceed --max-mib are skipped (and
 * said so): the default 768 skips kv_heads = 8 at 128K and 512K keys (1 and
 * 4 GiB per step) to keep the whole run near a minute; --max-mib 4096 runs
 * them. --quick: N = 16K and 64K only, 3 x 128 MiB triad arrays.
 *
 *   decode_bench [--quick] [--n 16384,...] [--threads 1,2] [--triad-mib 256]
 *                [--steps 20] [--max-mib 768] [--rotate 384] [--out DIR]
 *
 * Writes DIR/triad.tsv and DIR/decode.tsv (each begins with `#` lines: ISA,
 * CPUs, load average) and prints the table. Timing as in kernels_bench.c:
 * CLOCK_MONOTONIC, median and nearest-rank p10/p90. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

#define BMAX 16

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank quantile of sorted v[n]. */
static double quantile(const double *v, int n, double q)
{
    int i = (int)ceil(q * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static int parse_list_int(const char *s, int *v, int max)
{
    int n = 0;
    char *end;
    while (*s && n < max) {
        long x = strtol(s, &end, 10);
        if (end == s || x <= 0) return -1;
        v[n++] = (int)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static void loadavg(char *buf, size_t len)
{
    snprintf(buf, len, "?");
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (!fgets(buf, (int)len, f)) snprintf(buf, len, "?");
        buf[strcspn(buf, " \n")] = 0;
        fclose(f);
    }
}

/* ---- triad ------------------------------------------------------------------ */

/* Best GB/s of `reps` triads over arrays of n doubles with T threads. */
static double triad(size_t n, int T, int reps, double *med_out)
{
    double *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return -1;
    }
    const long nn = (long)n;
#pragma omp parallel for schedule(static) num_threads(T)
    for (long i = 0; i < nn; i++) {
        a[i] = 0;
        b[i] = 1.0 + (double)(i & 7);
        c[i] = 2.0;
    }
    double best = 1e30, ts[64];
    if (reps > 64) reps = 64;
    for (int r = 0; r < reps; r++) {
        const double s = 3.0 + r, t0 = now_s();
#pragma omp parallel for schedule(static) num_threads(T)
        for (long i = 0; i < nn; i++) a[i] = b[i] + s * c[i];
        ts[r] = now_s() - t0;
        best = ts[r] < best ? ts[r] : best;
    }
    volatile double sink = a[n / 2]; /* keep the stores */
    (void)sink;
    qsort(ts, (size_t)reps, sizeof *ts, cmp_dbl);
    if (med_out) *med_out = 24.0 * (double)n / quantile(ts, reps, 0.5) * 1e-9;
    free(a);
    free(b);
    free(c);
    return 24.0 * (double)n / best * 1e-9;
}

/* ---- decode ------------------------------------------------------------------ */

typedef struct dres {
    int n, heads, kv, threads, strategy, steps, copies;
    double med, p10, p90, bytes;
} dres;

static const char *strat_name(int s)
{
    return s == AB_DECODE_HEADS    ? "heads"
           : s == AB_DECODE_SPLITK ? "splitk"
           : s == AB_DECODE_LEAN   ? "lean"
                                   : "auto";
}

/* Median seconds per step of `steps` (>= 20) steps, cycling through the
 * copies; one untimed warm-up step first. */
static int time_decode(const float *k, const float *v, const float *q, float *out, int n, int heads, int kv,
                       int d, int copies, int T, int strategy, int steps, dres *r)
{
    const size_t per = (size_t)kv * n * d;
    double *ts = malloc(sizeof *ts * (size_t)steps);
    if (!ts) return -1;
    omp_set_num_threads(T);
    ab_decode dp = { 0 };
    dp.layers = 1;
    dp.heads = heads;
    dp.kv_heads = kv;
    dp.head_dim = d;
    dp.scale = 1.0f / sqrtf((float)d);
    dp.len = n;
    dp.cap = n;
    dp.q = q;
    dp.seed = 1;
    dp.threads = T;
    for (int s = -1; s < steps; s++) {
        const int c = (s + 1) % copies;
        dp.k = k + c * per;
        dp.v = v + c * per;
        dp.step = s < 0 ? 0 : s;
        const double t0 = now_s();
        if (ab_kernel_decode(&dp, NULL, out, strategy, 0) != AB_OK) {
            free(ts);
            return -1;
        }
        if (s >= 0) ts[s] = now_s() - t0;
    }
    qsort(ts, (size_t)steps, sizeof *ts, cmp_dbl);
    r->med = quantile(ts, steps, 0.5);
    r->p10 = quantile(ts, steps, 0.1);
    r->p90 = quantile(ts, steps, 0.9);
    r->steps = steps;
    free(ts);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: decode_bench [--quick] [--n 16384,65536,...] [--threads 1,2] [--triad-mib 256]\n"
                    "                    [--steps 20] [--max-mib 768] [--rotate 384] [--out DIR]\n");
}

int main(int argc, char **argv)
{
    int ns[BMAX] = { 16384, 65536, 131072, 524288 }, nn = 4, thr[BMAX] = { 1, 2 }, nthr = 2;
    int triad_mib = 256, steps = 20, max_mib = 768, rotate_mib = 384, quick = 0;
    const char *outdir = "results/bench";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick")) {
            quick = 1;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        int ok = 1;
        if (!strcmp(a, "--n"))
            ok = (nn = parse_list_int(v, ns, BMAX)) > 0;
        else if (!strcmp(a, "--threads"))
            ok = (nthr = parse_list_int(v, thr, BMAX)) > 0;
        else if (!strcmp(a, "--triad-mib"))
            ok = (triad_mib = atoi(v)) > 0;
        else if (!strcmp(a, "--steps"))
            ok = (steps = atoi(v)) >= 20;
        else if (!strcmp(a, "--max-mib"))
            ok = (max_mib = atoi(v)) > 0;
        else if (!strcmp(a, "--rotate"))
            ok = (rotate_mib = atoi(v)) >= 0;
        else if (!strcmp(a, "--out"))
            outdir = v;
        else
            ok = 0;
        if (!ok) {
            usage();
            return 2;
        }
        i++;
    }
    if (quick) { /* CI size: two lengths, smaller triad arrays */
        nn = 2;
        ns[0] = 16384;
        ns[1] = 65536;
        if (triad_mib > 128) triad_mib = 128;
    }
    if (mkdir(outdir, 0777) && errno != EEXIST) {
        fprintf(stderr, "decode_bench: cannot create %s: %s\n", outdir, strerror(errno));
        return 1;
    }
    char load0[64], path[4096];
    loadavg(load0, sizeof load0);
    const char *isa = ab_cpu_isa_name(ab_cpu_isa_pick());
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const double t_start = now_s();

    /* triad per thread count */
    double bw[BMAX] = { 0 }, bw_med[BMAX] = { 0 };
    snprintf(path, sizeof path, "%s/triad.tsv", outdir);
    FILE *ft = fopen(path, "w");
    if (!ft) {
        fprintf(stderr, "decode_bench: cannot write %s\n", path);
        return 1;
    }
    fprintf(ft, "# isa=%s cpus=%ld loadavg_start=%s; STREAM triad a = b + s c, 24 bytes per element\n", isa,
            cpus, load0);
    fprintf(ft, "threads\tarray_mib\treps\tbest_gbs\tmedian_gbs\n");
    printf("decode_bench: isa %s, %ld cpus, load %s\n", isa, cpus, load0);
    const size_t tn = (size_t)triad_mib * 1024 * 1024 / sizeof(double);
    const int treps = quick ? 5 : 10;
    for (int i = 0; i < nthr; i++) {
        bw[i] = triad(tn, thr[i], treps, &bw_med[i]);
        if (bw[i] < 0) {
            fprintf(stderr, "decode_bench: out of memory for the triad arrays\n");
            fclose(ft);
            return 1;
        }
        fprintf(ft, "%d\t%d\t%d\t%.3f\t%.3f\n", thr[i], triad_mib, treps, bw[i], bw_med[i]);
        printf("triad  %d thread%s  3 x %d MiB  best %.2f GB/s  median %.2f GB/s\n", thr[i],
               thr[i] > 1 ? "s" : "", triad_mib, bw[i], bw_med[i]);
    }
    fclose(ft);

    snprintf(path, sizeof path, "%s/decode.tsv", outdir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "decode_bench: cannot write %s\n", path);
        return 1;
    }
    fprintf(f, "# isa=%s cpus=%ld loadavg_start=%s d=128 dense layout; triad_gbs", isa, cpus, load0);
    for (int i = 0; i < nthr; i++) fprintf(f, " %dt=%.3f", thr[i], bw[i]);
    fprintf(f, "\n# gbs = 2 N d 4 kv_heads bytes / median step; frac_triad = gbs / triad best at the same "
               "threads; speedup = median at the first thread count / median at this one\n");
    fprintf(f,
            "n\td\theads\tkv_heads\tstrategy\tthreads\tsteps\tcopies\tmedian_ms\tp10_ms\tp90_ms\tgbs\tfrac_"
            "triad\tspeedup\n");
    printf("%8s %3s %5s %3s %-7s %3s %9s %8s %6s %7s\n", "N", "d", "heads", "kv", "strat", "thr", "median_ms",
           "GB/s", "triad", "speedup");
    const int d = 128;
    const int hk[3][2] = { { 1, 1 }, { 8, 1 }, { 8, 8 } };
    const int strats[3] = { AB_DECODE_HEADS, AB_DECODE_SPLITK, AB_DECODE_LEAN };
    float *q = malloc(sizeof(float) * 8 * d), *out = malloc(sizeof(float) * 8 * d);
    if (!q || !out) return 1;
    uint64_t s = 12345;
    for (int i = 0; i < 8 * d; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        q[i] = (float)((s >> 40) & 0xFFFF) / 65536.0f - 0.5f;
    }
    for (int ni = 0; ni < nn; ni++)
        for (int kvi = 0; kvi < 2; kvi++) {
            const int kv = kvi ? 8 : 1, n = ns[ni];
            const double bytes = 2.0 * n * d * 4.0 * kv, mib = bytes / (1024.0 * 1024.0);
            if (mib > max_mib) {
                printf("%8d %3d   -   %3d  skipped: K+V %.0f MiB > --max-mib %d\n", n, d, kv, mib, max_mib);
                fprintf(f, "# skipped n=%d kv_heads=%d: K+V %.0f MiB > --max-mib %d\n", n, kv, mib, max_mib);
                continue;
            }
            int copies = mib >= rotate_mib ? 1 : (int)ceil(rotate_mib / mib);
            const size_t per = (size_t)kv * n * d, tot = per * (size_t)copies;
            float *k = malloc(tot * sizeof(float)), *v = malloc(tot * sizeof(float));
            if (!k || !v) {
                printf("%8d %3d   -   %3d  skipped: out of memory\n", n, d, kv);
                free(k);
                free(v);
                continue;
            }
            const long ltot = (long)tot;
#pragma omp parallel for schedule(static) num_threads(thr[nthr - 1])
            for (long i = 0; i < ltot; i++) { /* cheap hash values in [-0.5, 0.5) */
                uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ULL;
                x ^= x >> 29;
                k[i] = (float)(x & 0xFFFF) / 65536.0f - 0.5f;
                v[i] = (float)((x >> 16) & 0xFFFF) / 65536.0f - 0.5f;
            }
            for (int h = 0; h < 3; h++) {
                if (hk[h][1] != kv) continue;
                const int heads = hk[h][0];
                for (int si = 0; si < 3; si++) {
                    dres r1 = { 0 };
                    for (int ti = 0; ti < nthr; ti++) {
                        dres r = { n, heads, kv, thr[ti], strats[si], 0, copies, 0, 0, 0, bytes };
                        if (time_decode(k, v, q, out, n, heads, kv, d, copies, thr[ti], strats[si], steps,
                                        &r)) {
                            printf("%8d: decode failed\n", n);
                            continue;
                        }
                        if (ti == 0) r1 = r;
                        const double gbs = bytes / r.med * 1e-9, frac = bw[ti] > 0 ? gbs / bw[ti] : 0;
                        const double sp = ti > 0 && r1.med > 0 ? r1.med / r.med : 1.0;
                        fprintf(f, "%d\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%.4f\t%.4f\t%.4f\t%.3f\t%.3f\t%.3f\n", n,
                                d, heads, kv, strat_name(strats[si]), thr[ti], r.steps, copies, r.med * 1e3,
                                r.p10 * 1e3, r.p90 * 1e3, gbs, frac, sp);
                        printf("%8d %3d %5d %3d %-7s %3d %9.3f %8.2f %6.2f %7.2f\n", n, d, heads, kv,
                               strat_name(strats[si]), thr[ti], r.med * 1e3, gbs, frac, sp);
                        fflush(stdout);
                    }
                }
            }
            free(k);
            free(v);
        }
    char load1[64];
    loadavg(load1, sizeof load1);
    fprintf(f, "# loadavg_end=%s wall_s=%.1f\n", load1, now_s() - t_start);
    fclose(f);
    free(q);
    free(out);
    printf("decode_bench: wrote %s/triad.tsv and %s/decode.tsv (%.1f s, load %s -> %s)\n", outdir, outdir,
           now_s() - t_start, load0, load1);
    return 0;
}
