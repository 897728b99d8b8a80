/* kernels_bench.c — speed of the shared CPU attention kernels (kernels/cpu)
 * against this machine's GEMM roofline: OpenBLAS SGEMM on the same matrix
 * shapes as attention (S = Q K^T, O = S V per head), dense flash attention
 * (FlashAttention-2 style tiling, Dao 2023) causal and not, and the
 * block-sparse and gather kernels at fixed densities, for 1 and 2 threads,
 * and flash on bf16 inputs (ab_cpu_flash_bf16 on its default path: AMX
 * where the CPU has it, else widened to fp32; and the AVX-512 BF16 pair
 * products where the CPU has them, kind flash_bf16n).
 * Optionally times a PyTorch SDPA peer in rounds with flash (--sdpa-serve:
 * bench/sdpa_peer.py --serve as a child process, one timed call per
 * request) or joins one measured before by bench/sdpa_peer.py (--sdpa), and
 * runs one long dense causal sequence in a child process to report its peak
 * RSS (memory O(N d)). Before the kernels it measures the machine's fp32
 * FMA peak for each thread count (independent FMA chains on the widest
 * vector ISA), the physical limit every kernel is also reported against.
 * Every figure is a median over repeats with p10/p90.
 *
 *   kernels_bench [--quick] [--n 1024,2048,...] [--d 64,128] [--threads 1,2]
 *                 [--heads 8] [--density 0.05,...] [--sparse-max-n N] [--sparse-d LIST]
 *                 [--min-time S] [--min-reps R] [--max-reps R] [--big N]
 *                 [--sdpa FILE | --sdpa-serve CMD] [--out DIR]
 *                 [--only flash|sparse|big|peak|chunk]
 *
 * Writes DIR/kernels.tsv (one row per measurement), DIR/sparse.tsv (each
 * sparse kernel's time over flash's, paired by round: sparse_rounds),
 * DIR/peer.tsv and DIR/sdpa.tsv (with --sdpa-serve: peer_rounds),
 * DIR/summary.tsv (one row
 * per shape and thread count: roofline ratio, sparse/flash time ratios,
 * 2-thread speed-up, SDPA ratio, fractions of the FMA peak), DIR/peak.tsv
 * (the FMA peak per thread count), DIR/chunk.tsv (the chunk step alone in
 * cache, per head_dim: the kernels' ceiling) and DIR/big.tsv; prints the summary. Each
 * file starts with `#` comment lines: ISA, OpenBLAS build and core
 * (detected, best, running, source: harness/engine/blascore.h), load average. */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define PEAK_X86 1
#endif

#include "harness/engine/blascore.h"
#include "runtime/layout.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"
#include "runtime/kernels.h"
#include "kernels/kernels.h"

#define BMAX 16

typedef struct bench_cfg {
    int n[BMAX], nn, d[BMAX], nd, thr[BMAX], nthr, sd[BMAX], nsd; /* nsd 0: all d */
    double dens[BMAX];
    int ndens;
    int heads, sparse_max_n, min_reps, max_reps, big_n, big_heads, big_d;
    double min_time;
    const char *out, *sdpa, *sdpa_serve, *only;
} bench_cfg;

/* One measurement. */
typedef struct bench_row {
    char kind[16];
    int n, d, heads, causal, threads;
    double density; /* target (sparse kernels), 1 otherwise */
    double actual;  /* measured layout density */
    int reps;
    double med, p10, p90; /* seconds */
    double flops;         /* useful FLOPs of one run */
    int paired;           /* timed in rounds with flash (sparse_rounds, peer_rounds) */
    double ratio;         /* then the median over the rounds of time / the round's flash time */
} bench_row;

typedef struct bench_rows {
    bench_row *r;
    size_t n, cap;
} bench_rows;

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

/* Median of sorted v[n]. */
static double median_sorted(const double *v, int n)
{
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
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

static int parse_list_dbl(const char *s, double *v, int max)
{
    int n = 0;
    char *end;
    while (*s && n < max) {
        double x = strtod(s, &end);
        if (end == s || !(x > 0.0 && x <= 1.0)) return -1;
        v[n++] = x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

/* The 1-minute load average ("?" if unknown): other work on the machine
 * inflates wall times, so it is recorded with the results. */
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

static void set_threads(int t)
{
    omp_set_num_threads(t);
    openblas_set_num_threads(t);
}

/* ---- inputs --------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float rng_unif(uint64_t *s) /* in [-1, 1) */
{
    return (float)((double)(rng_next(s) >> 40) * 0x1.0p-23 - 1.0);
}

typedef struct bench_qkv {
    float *q, *k, *v, *out; /* (heads, seq_len, head_dim) each */
    ab_problem pb;
} bench_qkv;

static int qkv_make(bench_qkv *x, int heads, int n, int d, int causal, uint64_t seed)
{
    size_t e = (size_t)heads * n * d;
    memset(x, 0, sizeof *x);
    /* 64-byte aligned, as the harness's arena hands them to the kernels
     * (malloc's 16-byte alignment makes every vector row load split a
     * cache line) */
    const size_t bytes = (e * sizeof(float) + 63) & ~(size_t)63;
    x->q = aligned_alloc(64, bytes);
    x->k = aligned_alloc(64, bytes);
    x->v = aligned_alloc(64, bytes);
    x->out = aligned_alloc(64, bytes);
    if (!x->q || !x->k || !x->v || !x->out) return -1;
#pragma omp parallel for schedule(static)
    for (int h = 0; h < heads; h++) {
        uint64_t s = seed * 1000003u + (uint64_t)h;
        for (size_t i = (size_t)h * n * d; i < (size_t)(h + 1) * n * d; i++) {
            x->q[i] = rng_unif(&s);
            x->k[i] = rng_unif(&s);
            x->v[i] = rng_unif(&s);
            x->out[i] = 0.0f;
        }
    }
    x->pb.s = (ab_shape){ heads, n, d, causal, (float)(1.0 / sqrt((double)d)), NULL, 0, 1, AB_PREFILL };
    x->pb.q = x->q;
    x->pb.k = x->k;
    x->pb.v = x->v;
    x->pb.seed = seed;
    return 0;
}

static void qkv_free(bench_qkv *x)
{
    free(x->q);
    free(x->k);
    free(x->v);
    free(x->out);
}

/* ---- timing --------------------------------------------------------------- */

typedef int (*bench_fn)(void *ctx);

/* Warm-up run, then repeats until min_reps and min_time (at most max_reps). */
static int time_it(const bench_cfg *c, bench_fn fn, void *ctx, bench_row *row)
{
    double t0 = now_s();
    if (fn(ctx)) return -1;
    double first = now_s() - t0;
    int reps = first > 0 ? (int)ceil(c->min_time / first) : c->max_reps;
    reps = reps < c->min_reps ? c->min_reps : reps > c->max_reps ? c->max_reps : reps;
    double *ts = malloc((size_t)reps * sizeof(double));
    if (!ts) return -1;
    for (int i = 0; i < reps; i++) {
        t0 = now_s();
        if (fn(ctx)) {
            free(ts);
            return -1;
        }
        ts[i] = now_s() - t0;
    }
    qsort(ts, (size_t)reps, sizeof(double), cmp_dbl);
    row->reps = reps;
    row->med = median_sorted(ts, reps);
    row->p10 = quantile(ts, reps, 0.10);
    row->p90 = quantile(ts, reps, 0.90);
    free(ts);
    return 0;
}

typedef struct sgemm_ctx {
    const float *q, *k, *v; /* (seq_len, head_dim) of one head */
    float *s;               /* (seq_len, seq_len) */
    float *o;               /* (seq_len, head_dim) */
    int n, d;
} sgemm_ctx;

static int run_sgemm(void *p)
{
    sgemm_ctx *x = p;
    /* S = Q K^T (n x n, inner d); O = S V (n x d, inner n) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, x->n, x->n, x->d, 1.0f, x->q, x->d, x->k, x->d, 0.0f,
                x->s, x->n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, x->n, x->d, x->n, 1.0f, x->s, x->n, x->v, x->d,
                0.0f, x->o, x->d);
    return 0;
}

typedef struct kern_ctx {
    const ab_problem *pb;
    const ab_layout *l; /* NULL: flash */
    float *out;
} kern_ctx;

static int run_kernel(void *p)
{
    kern_ctx *x = p;
    return x->l ? ab_kernel_layout(x->pb, x->l, x->out) : ab_kernel_flash(x->pb, x->out);
}

typedef struct bf16_ctx {
    const ab_shape *s;
    const uint16_t *q, *k, *v; /* the problem's Q, K, V rounded to bf16 */
    float *out;
    int native; /* 0: ab_cpu_flash_bf16 (its default path), 1: the AVX-512 BF16 products */
} bf16_ctx;

static int run_bf16(void *p)
{
    bf16_ctx *x = p;
    return x->native ? ab_kernel_flash_bf16_isa(x->s, x->q, x->k, x->v, x->out, AB_ISA_AVX512, AB_BF16_AVX512)
                     : ab_cpu_flash_bf16(x->s, x->q, x->k, x->v, x->out);
}

/* Q, K, V of x rounded to bf16 (one allocation, three tensors); NULL if out of memory. */
static uint16_t *bf16_copy(const bench_qkv *x)
{
    const size_t e = (size_t)x->pb.s.heads * x->pb.s.seq_len * x->pb.s.head_dim;
    uint16_t *b = aligned_alloc(64, (3 * e * sizeof(uint16_t) + 63) & ~(size_t)63);
    if (!b) return NULL;
    for (size_t i = 0; i < e; i++) {
        b[i] = ab_bf16_from_float(x->q[i]);
        b[e + i] = ab_bf16_from_float(x->k[i]);
        b[2 * e + i] = ab_bf16_from_float(x->v[i]);
    }
    return b;
}

/* ---- the machine's fp32 FMA peak ----------------------------------------- */

/* Independent FMA chains per thread: each chain must wait the FMA latency
 * (4-5 cycles on current x86) and a core issues up to 2 FMAs a cycle, so at
 * least 10 chains keep every FMA port busy; 12 fit in the 16 ymm registers
 * with the two constants. */
#define PEAK_CHAINS     12
#define PEAK_PORTABLE_W 8   /* floats per chain in the portable loop */
#define PEAK_TARGET_S   0.2 /* seconds per timed repeat */
#define PEAK_MAX_REPS   16

/* x = x*a + b on every chain, `iters` times; returns the sum of the chains
 * so that the caller can consume them (and the loop cannot be removed). */
typedef float (*peak_fn)(long iters, float a, float b);

#define PEAK_CHAIN_STEP(F)    \
    do {                      \
        x0 = F(x0, va, vb);   \
        x1 = F(x1, va, vb);   \
        x2 = F(x2, va, vb);   \
        x3 = F(x3, va, vb);   \
        x4 = F(x4, va, vb);   \
        x5 = F(x5, va, vb);   \
        x6 = F(x6, va, vb);   \
        x7 = F(x7, va, vb);   \
        x8 = F(x8, va, vb);   \
        x9 = F(x9, va, vb);   \
        x10 = F(x10, va, vb); \
        x11 = F(x11, va, vb); \
    } while (0)

#ifdef PEAK_X86
__attribute__((target("avx512f"))) static float peak_avx512(long iters, float a, float b)
{
    const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
    __m512 x0 = _mm512_set1_ps(1.00f), x1 = _mm512_set1_ps(1.01f), x2 = _mm512_set1_ps(1.02f),
           x3 = _mm512_set1_ps(1.03f), x4 = _mm512_set1_ps(1.04f), x5 = _mm512_set1_ps(1.05f),
           x6 = _mm512_set1_ps(1.06f), x7 = _mm512_set1_ps(1.07f), x8 = _mm512_set1_ps(1.08f),
           x9 = _mm512_set1_ps(1.09f), x10 = _mm512_set1_ps(1.10f), x11 = _mm512_set1_ps(1.11f);
    for (long i = 0; i < iters; i++) PEAK_CHAIN_STEP(_mm512_fmadd_ps);
    x0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)),
                       _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7)));
    x0 = _mm512_add_ps(x0, _mm512_add_ps(_mm512_add_ps(x8, x9), _mm512_add_ps(x10, x11)));
    return _mm512_reduce_add_ps(x0);
}

__attribute__((target("avx2,fma"))) static float peak_avx2(long iters, float a, float b)
{
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
    __m256 x0 = _mm256_set1_ps(1.00f), x1 = _mm256_set1_ps(1.01f), x2 = _mm256_set1_ps(1.02f),
           x3 = _mm256_set1_ps(1.03f), x4 = _mm256_set1_ps(1.04f), x5 = _mm256_set1_ps(1.05f),
           x6 = _mm256_set1_ps(1.06f), x7 = _mm256_set1_ps(1.07f), x8 = _mm256_set1_ps(1.08f),
           x9 = _mm256_set1_ps(1.09f), x10 = _mm256_set1_ps(1.10f), x11 = _mm256_set1_ps(1.11f);
    for (long i = 0; i < iters; i++) PEAK_CHAIN_STEP(_mm256_fmadd_ps);
    x0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
                       _mm256_add_ps(_mm256_add_ps(x4, x5), _mm256_add_ps(x6, x7)));
    x0 = _mm256_add_ps(x0, _mm256_add_ps(_mm256_add_ps(x8, x9), _mm256_add_ps(x10, x11)));
    float lane[8];
    _mm256_storeu_ps(lane, x0);
    return lane[0] + lane[1] + lane[2] + lane[3] + lane[4] + lane[5] + lane[6] + lane[7];
}
#endif

/* Plain C: the compiler vectorises the lanes with what the build flags
 * allow; a multiply and an add count as the two flops of an FMA. */
static float peak_portable(long iters, float a, float b)
{
    float x[PEAK_CHAINS][PEAK_PORTABLE_W];
    for (int j = 0; j < PEAK_CHAINS; j++)
        for (int l = 0; l < PEAK_PORTABLE_W; l++) x[j][l] = 1.0f + 0.01f * (float)j;
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < PEAK_CHAINS; j++)
            for (int l = 0; l < PEAK_PORTABLE_W; l++) x[j][l] = x[j][l] * a + b;
    float sum = 0.0f;
    for (int j = 0; j < PEAK_CHAINS; j++)
        for (int l = 0; l < PEAK_PORTABLE_W; l++) sum += x[j][l];
    return sum;
}

/* The widest ISA the CPU runs, whatever AB_CPU_ISA says (the physical
 * limit, not the kernels' choice); *lanes = floats per chain. */
static peak_fn peak_pick(const char **isa, int *lanes)
{
#ifdef PEAK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        *isa = "avx512";
        *lanes = 16;
        return peak_avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        *isa = "avx2";
        *lanes = 8;
        return peak_avx2;
    }
#endif
    *isa = "portable";
    *lanes = PEAK_PORTABLE_W;
    return peak_portable;
}

/* Read through volatiles: the compiler knows neither the constants of the
 * chains (x -> x*a + b stays near b / (1 - a) = 1: no overflow, no
 * denormals) nor what becomes of their sum. */
static volatile float peak_a = 0.9999f, peak_b = 1e-4f;
static volatile float peak_sink;

/* Seconds for every one of T threads to run `iters` steps of fn. */
static double peak_time(peak_fn fn, int T, long iters)
{
    const float a = peak_a, b = peak_b;
    float sum = 0.0f;
    const double t0 = now_s();
#pragma omp parallel num_threads(T) reduction(+ : sum)
    sum += fn(iters, a, b);
    const double dt = now_s() - t0;
    peak_sink = sum;
    return dt;
}

typedef struct peak_res {
    char isa[16];
    int threads, reps, ok;
    double gflops, p10, p90; /* median and nearest-rank p10/p90 of the repeats' GFLOP/s */
} peak_res;

/* GFLOP/s of T threads: iterations grown until one run takes >= 20 ms (this
 * also warms up the threads and the clocks), scaled to PEAK_TARGET_S, then
 * `reps` timed repeats. */
static void peak_measure(int T, int reps, peak_res *r)
{
    const char *isa;
    int lanes;
    const peak_fn fn = peak_pick(&isa, &lanes);
    memset(r, 0, sizeof *r);
    snprintf(r->isa, sizeof r->isa, "%s", isa);
    r->threads = T;
    reps = reps < 1 ? 1 : reps > PEAK_MAX_REPS ? PEAK_MAX_REPS : reps;
    long iters = 1L << 12;
    double dt = peak_time(fn, T, iters);
    while (dt < 0.02 && iters < (1L << 40)) {
        iters *= 4;
        dt = peak_time(fn, T, iters);
    }
    if (!(dt > 0)) return;
    iters = (long)((double)iters * (PEAK_TARGET_S / dt));
    iters = iters < 1 ? 1 : iters;
    const double flops = 2.0 * lanes * PEAK_CHAINS * (double)iters * T;
    double g[PEAK_MAX_REPS];
    for (int i = 0; i < reps; i++) g[i] = flops * 1e-9 / peak_time(fn, T, iters);
    qsort(g, (size_t)reps, sizeof(double), cmp_dbl);
    r->reps = reps;
    r->gflops = reps % 2 ? g[reps / 2] : 0.5 * (g[reps / 2 - 1] + g[reps / 2]);
    r->p10 = quantile(g, reps, 0.10);
    r->p90 = quantile(g, reps, 0.90);
    r->ok = 1;
}

/* The peak for every thread count of c, measured in a child process: this
 * process must run no OpenMP region before the long run forks (libgomp is
 * not fork-safe). Returns 0 when every count was measured. */
static int peak_all(const bench_cfg *c, int reps, peak_res *res)
{
    const size_t bytes = (size_t)c->nthr * sizeof(peak_res);
    memset(res, 0, bytes);
    int pfd[2];
    if (pipe(pfd)) return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        close(pfd[0]);
        peak_res out[BMAX];
        for (int it = 0; it < c->nthr; it++) peak_measure(c->thr[it], reps, &out[it]);
        const char *p = (const char *)out;
        size_t done = 0;
        while (done < bytes) {
            ssize_t w = write(pfd[1], p + done, bytes - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) _exit(1);
            done += (size_t)w;
        }
        _exit(0);
    }
    close(pfd[1]);
    char *p = (char *)res;
    size_t got = 0;
    while (got < bytes) {
        ssize_t r = read(pfd[0], p + got, bytes - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(pfd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (got < bytes) {
        memset(res, 0, bytes);
        return -1;
    }
    for (int it = 0; it < c->nthr; it++)
        if (!res[it].ok) return -1;
    return 0;
}

/* The measured peak (GFLOP/s) for T threads, NAN when not measured. */
static double peak_for(const peak_res *res, int n, int T)
{
    for (int i = 0; i < n; i++)
        if (res[i].ok && res[i].threads == T) return res[i].gflops;
    return NAN;
}

/* ---- the chunk step in cache ---------------------------------------------
 * The ceiling of every CPU kernel: the fp32 chunk step (QK^T, online
 * softmax, PV; simd_*.c) of one 64-row query tile over 1024 keys in
 * unmasked 64-key chunks, one thread, the 256 KiB of K and V (d = 64)
 * resident in L2 and the tile in L1/L2. No kernel of kernels/cpu runs its
 * chunks faster than this; flash / chunk is what streaming K and V from
 * memory, masking and the tile set-up cost. Best of `reps` timings of
 * enough passes for min_time / reps seconds each. */
enum { CHUNK_Q = 64, CHUNK_K = 64, CHUNK_KEYS = 1024 };

static double chunk_gflops(int d, int isa, double min_time, int reps)
{
    float *q = aligned_alloc(64, (size_t)CHUNK_Q * d * sizeof(float));
    float *k = aligned_alloc(64, (size_t)CHUNK_KEYS * d * sizeof(float));
    float *v = aligned_alloc(64, (size_t)CHUNK_KEYS * d * sizeof(float));
    ab_tile t;
    double best = NAN;
    if (q && k && v && ab_tile_alloc(&t, d, CHUNK_Q, CHUNK_K, isa) == AB_OK) {
        uint64_t sd = 0x6368756e6bull + (uint64_t)d;
        for (size_t i = 0; i < (size_t)CHUNK_Q * d; i++) q[i] = rng_unif(&sd);
        for (size_t i = 0; i < (size_t)CHUNK_KEYS * d; i++) {
            k[i] = rng_unif(&sd);
            v[i] = rng_unif(&sd);
        }
        const double flops = 4.0 * CHUNK_Q * CHUNK_KEYS * d; /* one pass */
        long passes = 1;
        for (int r = -1; r < reps; r++) { /* r = -1: warm-up, sizes the passes */
            const double t0 = now_s();
            for (long p = 0; p < passes; p++) {
                ab_tile_reset(&t, CHUNK_Q);
                ab_tile_load_q(&t, q, (size_t)d, 1.0f / sqrtf((float)d));
                for (int j = 0; j < CHUNK_KEYS; j += CHUNK_K)
                    t.chunk(&t, k + (size_t)j * d, v + (size_t)j * d, CHUNK_K, 0);
            }
            const double e = now_s() - t0;
            if (r < 0) {
                const double want = min_time / (reps > 0 ? reps : 1);
                passes = e > 0 ? (long)ceil(want / e) : 1000;
                passes = passes < 1 ? 1 : passes;
            } else {
                const double g = flops * passes / e * 1e-9;
                best = isnan(best) || g > best ? g : best;
            }
        }
        ab_tile_free(&t);
    }
    free(q);
    free(k);
    free(v);
    return best;
}

/* ---- sparse layouts ------------------------------------------------------ */

/* Partial Fisher-Yates: the first m entries of perm[0..n) become a uniform
 * random subset. */
static void pick(int32_t *perm, int n, int m, uint64_t *s)
{
    for (int i = 0; i < m; i++) {
        int j = i + (int)(rng_next(s) % (uint64_t)(n - i));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* A random BLOCK (token = 0) or TOKEN (token = 1) layout of about `dens`
 * of the causally valid pairs: per (head, query block) a uniform subset of
 * the valid key blocks / keys, the diagonal block always kept (block). */
static int make_layout(ab_layout *l, const ab_shape *s, double dens, int token, uint64_t seed)
{
    const int B = 64;
    ab_layout_init(l, s, B, B);
    const int nqb = l->n_qblocks, nkb = l->n_kblocks, N = s->seq_len;
    int32_t *perm = malloc((size_t)(N > nkb ? N : nkb) * sizeof(int32_t));
    if (!perm) return -1;
    uint64_t rng = seed;
    int rc = 0;
    for (int h = 0; h < s->heads && !rc; h++)
        for (int qb = 0; qb < nqb && !rc; qb++) {
            if (!token) {
                const int valid = s->causal ? qb + 1 : nkb;
                int m = (int)lround(dens * valid);
                m = m < 1 ? 1 : m;
                for (int i = 0; i < valid; i++) perm[i] = i;
                if (s->causal) { /* the diagonal block first */
                    perm[0] = qb;
                    perm[qb] = 0;
                    pick(perm + 1, valid - 1, m - 1, &rng);
                } else {
                    pick(perm, valid, m, &rng);
                }
                for (int i = 0; i < m && !rc; i++) rc = ab_layout_add_block(l, h, qb, perm[i]);
            } else {
                const int last = (qb + 1) * B < N ? (qb + 1) * B : N;
                const int valid = s->causal ? last : N;
                int m = (int)lround(dens * valid);
                m = m < 1 ? 1 : m;
                for (int i = 0; i < valid; i++) perm[i] = i;
                pick(perm, valid, m, &rng);
                for (int i = 0; i < m && !rc; i++) rc = ab_layout_add_token(l, h, qb, perm[i]);
            }
        }
    free(perm);
    if (!rc) rc = ab_layout_finalize(l);
    return rc;
}

/* ---- rows, output --------------------------------------------------------- */

static bench_row *rows_add(bench_rows *rs)
{
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? 2 * rs->cap : 64;
        bench_row *r = realloc(rs->r, cap * sizeof *r);
        if (!r) return NULL;
        rs->r = r;
        rs->cap = cap;
    }
    memset(&rs->r[rs->n], 0, sizeof rs->r[0]);
    return &rs->r[rs->n++];
}

static const bench_row *rows_find(const bench_rows *rs, const char *kind, int n, int d, int causal,
                                  int threads, double dens)
{
    for (size_t i = 0; i < rs->n; i++) {
        const bench_row *r = &rs->r[i];
        if (!strcmp(r->kind, kind) && r->n == n && r->d == d && r->threads == threads &&
            (causal < 0 || r->causal == causal) && fabs(r->density - dens) < 1e-9)
            return r;
    }
    return NULL;
}

static void row_print(FILE *f, const bench_row *r)
{
    const double g = r->flops * 1e-9;
    fprintf(f, "%s\t%d\t%d\t%d\t%d\t%d\t%.4f\t%.4f\t%d\t%.6g\t%.6g\t%.6g\t%.2f\t%.2f\t%.2f\n", r->kind, r->n,
            r->d, r->heads, r->causal, r->threads, r->density, r->actual, r->reps, r->med, r->p10, r->p90,
            g / r->med, g / r->p90, g / r->p10);
}

/* Fill the identity of a timed row, append it, print it to tsv and stdout. */
static int record(bench_rows *rs, FILE *tsv, bench_row t, const char *kind, int n, int d, int heads,
                  int causal, int threads, double dens, double act, double flops)
{
    snprintf(t.kind, sizeof t.kind, "%s", kind);
    t.n = n;
    t.d = d;
    t.heads = heads;
    t.causal = causal;
    t.threads = threads;
    t.density = dens;
    t.actual = act;
    t.flops = flops;
    bench_row *r = rows_add(rs);
    if (!r) return -1;
    *r = t;
    row_print(tsv, r);
    row_print(stdout, r);
    fflush(stdout);
    return 0;
}

static const char *ROW_HEADER = "kind\tN\td\theads\tcausal\tthreads\tdensity\tactual_density\treps"
                                "\tmedian_s\tp10_s\tp90_s\tgflops\tgflops_p10\tgflops_p90\n";

/* Load rows of bench/sdpa_peer.py's TSV (same columns) into rs. */
static int load_sdpa(const char *path, bench_rows *rs)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        bench_row r;
        memset(&r, 0, sizeof r);
        double g;
        if (sscanf(line, "%15s %d %d %d %d %d %lf %lf %d %lf %lf %lf %lf", r.kind, &r.n, &r.d, &r.heads,
                   &r.causal, &r.threads, &r.density, &r.actual, &r.reps, &r.med, &r.p10, &r.p90, &g) != 13 ||
            (strcmp(r.kind, "sdpa") && strcmp(r.kind, "sdpa_bf16")))
            continue;
        r.flops = g * 1e9 * r.med;
        bench_row *dst = rows_add(rs);
        if (!dst) break;
        *dst = r;
        n++;
    }
    fclose(f);
    return n;
}

/* ---- the long-sequence memory run ---------------------------------------- */

/* In a child: one dense causal flash run at N = c->big_n; prints a TSV row
 * with the time and the child's peak RSS. */
static int big_run(const bench_cfg *c, FILE *tsv)
{
    const int H = c->big_heads, N = c->big_n, d = c->big_d;
    const int T = c->thr[c->nthr - 1];
    int pfd[2];
    if (pipe(pfd)) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(pfd[0]);
        set_threads(T);
        bench_qkv x;
        double sec = -1.0;
        if (qkv_make(&x, H, N, d, 1, 99) == 0) {
            double t0 = now_s();
            if (ab_kernel_flash(&x.pb, x.out) == AB_OK) sec = now_s() - t0;
        }
        qkv_free(&x);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        char buf[128];
        int len = snprintf(buf, sizeof buf, "%.6f %ld\n", sec, ru.ru_maxrss);
        ssize_t w = write(pfd[1], buf, (size_t)len);
        _exit(w == len ? 0 : 1);
    }
    close(pfd[1]);
    char buf[128] = { 0 };
    ssize_t got = read(pfd[0], buf, sizeof buf - 1);
    close(pfd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    double sec = -1.0;
    long rss_kb = 0;
    if (got <= 0 || sscanf(buf, "%lf %ld", &sec, &rss_kb) != 2 || sec < 0) {
        fprintf(stderr, "big run N=%d failed\n", N);
        return -1;
    }
    const double tensor_mib = 4.0 * H * (double)N * d * 4.0 / 1048576.0;
    const double flops = 2.0 * H * (double)N * N * d; /* causal: half of 4 N^2 d */
    fprintf(tsv, "N\td\theads\tcausal\tthreads\tseconds\tgflops\tpeak_rss_mib\tqkvo_mib"
                 "\tdense_scores_mib\n");
    fprintf(tsv, "%d\t%d\t%d\t1\t%d\t%.3f\t%.2f\t%.1f\t%.1f\t%.1f\n", N, d, H, T, sec, flops * 1e-9 / sec,
            rss_kb / 1024.0, tensor_mib, (double)N * N * 4.0 / 1048576.0);
    printf("\nlong sequence: flash causal N=%d d=%d heads=%d threads=%d: %.2f s, %.1f GFLOP/s, "
           "peak RSS %.1f MiB (Q,K,V,out = %.1f MiB; one head's N x N scores would be %.0f MiB)\n",
           N, d, H, T, sec, flops * 1e-9 / sec, rss_kb / 1024.0, tensor_mib, (double)N * N * 4.0 / 1048576.0);
    return 0;
}

/* ---- header comments ---------------------------------------------------- */

static const char *or_dash(const char *s) { return s && *s ? s : "-"; }

/* The `#` lines every TSV file of this run starts with: ISA, OpenBLAS build
 * and core (harness/engine/blascore.h; "-" when empty: detected is empty when the
 * environment chose the core), load average at the start, the FMA peak. */
static void tsv_comment(FILE *f, const char *isa, const char *load0, const peak_res *pk, int npk)
{
    const ab_blas_core *bc = ab_blas_core_info();
    const char *ct = getenv("OPENBLAS_CORETYPE");
    fprintf(f,
            "# isa=%s openblas=%s core_detected=%s core_best=%s core_running=%s core_source=%s "
            "OPENBLAS_CORETYPE=%s cpus=%ld loadavg_start=%s\n",
            isa, openblas_get_config(), or_dash(bc->detected), or_dash(bc->best), or_dash(bc->running),
            or_dash(bc->source), ct ? ct : "(unset)", sysconf(_SC_NPROCESSORS_ONLN), load0);
    int any = 0;
    for (int i = 0; i < npk; i++)
        if (pk[i].ok) {
            if (!any++) fprintf(f, "# fma_peak isa=%s chains=%d", pk[i].isa, PEAK_CHAINS);
            fprintf(f, " gflops_%dt=%.2f", pk[i].threads, pk[i].gflops);
        }
    if (any) fputc('\n', f);
    fprintf(f, "# bf16_path d=64:%s d=128:%s (ab_cpu_bf16_path; AB_BF16=%s)\n",
            ab_cpu_bf16_path_name(ab_cpu_bf16_path(64)), ab_cpu_bf16_path_name(ab_cpu_bf16_path(128)),
            getenv("AB_BF16") ? getenv("AB_BF16") : "(unset)");
}

/* ---- rounds: runs timed side by side ----------------------------------------- */

/* Run i of a round: its seconds in *sec; 0 on success. */
typedef int (*round_fn)(void *ctx, int i, double *sec);

/* Runs 0 .. nrun - 1 timed in rounds, in order in even rounds and in
 * reverse order in odd ones, so that each run has the others' times taken
 * seconds before or after it: the host's speed can move by 10-30 % within
 * minutes, and a ratio of two medians timed minutes apart moved with it
 * (docs/kernels.md, "Sparse kernels timed in rounds with flash"). A first
 * round warms up and sets the number of rounds R as time_it sets its
 * repeats, on the shortest run. Returns the times, ts[i R + r] (free()),
 * and R; NULL on a failed run (after a message naming `what`) or out of
 * memory. A progress line per round goes to stderr where a round lasts two
 * seconds or more. */
static double *time_rounds(const bench_cfg *c, int nrun, round_fn fn, void *ctx, const char *what, int *Rp)
{
    double shortest = INFINITY, round_s = 0, e;
    for (int i = 0; i < nrun; i++) { /* the warm-up round */
        if (fn(ctx, i, &e)) goto fail;
        shortest = e < shortest ? e : shortest;
        round_s += e;
    }
    int R = shortest > 0 ? (int)ceil(c->min_time / shortest) : c->max_reps;
    R = R < c->min_reps ? c->min_reps : R > c->max_reps ? c->max_reps : R;
    double *ts = malloc((size_t)nrun * R * sizeof(double));
    if (!ts) {
        fprintf(stderr, "kernels_bench: out of memory\n");
        return NULL;
    }
    for (int r = 0; r < R; r++) {
        if (round_s >= 2.0) fprintf(stderr, "kernels_bench: %s: round %d of %d\n", what, r + 1, R);
        for (int j = 0; j < nrun; j++) {
            const int i = (r & 1) ? nrun - 1 - j : j;
            if (fn(ctx, i, &ts[(size_t)i * R + r])) {
                free(ts);
                goto fail;
            }
        }
    }
    *Rp = R;
    return ts;
fail:
    fprintf(stderr, "kernels_bench: %s failed\n", what);
    return NULL;
}

/* A row's own times (median, nearest-rank p10 / p90 of ti[0 .. R)); its
 * paired ratio, the median of ti[r] / ref[r], where ref is given, and that
 * ratio's p10 / p90 in lo, hi. tmp: R doubles. */
static bench_row round_row(const double *ti, const double *ref, int R, double *tmp, double *lo, double *hi)
{
    bench_row t = { 0 };
    memcpy(tmp, ti, (size_t)R * sizeof(double));
    qsort(tmp, (size_t)R, sizeof(double), cmp_dbl);
    t.reps = R;
    t.med = median_sorted(tmp, R);
    t.p10 = quantile(tmp, R, 0.10);
    t.p90 = quantile(tmp, R, 0.90);
    if (ref) {
        for (int r = 0; r < R; r++) tmp[r] = ti[r] / ref[r];
        qsort(tmp, (size_t)R, sizeof(double), cmp_dbl);
        t.paired = 1;
        t.ratio = median_sorted(tmp, R);
        *lo = quantile(tmp, R, 0.10);
        *hi = quantile(tmp, R, 0.90);
    }
    return t;
}

/* ---- sparse kernels, in rounds with flash ---------------------------------- */

static const char *SPARSE_HEADER =
    "kind\tN\td\theads\tcausal\tthreads\tdensity\tactual_density\trounds\tmedian_s\tflash_median_s"
    "\ttime_over_flash\ttime_over_flash_p10\ttime_over_flash_p90\tof_ideal\tof_ideal_p10\tof_ideal_p90\n";

typedef struct sparse_ctx {
    const ab_problem *pb;
    const ab_layout *ls; /* run 0: flash, run i: ls[i - 1] */
    float *out;
} sparse_ctx;

static int sparse_run(void *p, int i, double *sec)
{
    const sparse_ctx *x = p;
    kern_ctx k = { x->pb, i ? &x->ls[i - 1] : NULL, x->out };
    const double t0 = now_s();
    const int rc = run_kernel(&k);
    *sec = now_s() - t0;
    return rc;
}

/* The nl layouts of one kind (every density) of one shape and thread
 * count, timed in rounds with flash (time_rounds). Each sparse time is
 * divided by its round's flash time, and the ratio's median and p10 / p90
 * over the rounds go to sparse.tsv and the row (summary.tsv's
 * *_time_over_flash); each layout's kernels.tsv row has its own times. */
static int sparse_rounds(const bench_cfg *c, const ab_problem *pb, float *out, const ab_layout *ls,
                         const double *dens, const double *act, int nl, int T, double dense_flops,
                         bench_rows *rs, FILE *tsv, FILE *stsv)
{
    const int nrun = nl + 1;
    const char *kname = ab_kernel_name(&ls[0]);
    char what[128];
    snprintf(what, sizeof what, "%s N=%d d=%d causal=%d threads=%d (flash, %d densities)", kname,
             pb->s.seq_len, pb->s.head_dim, pb->s.causal, T, nl);
    sparse_ctx x = { pb, ls, out };
    int R = 0;
    double *ts = time_rounds(c, nrun, sparse_run, &x, what, &R);
    double *tmp = ts ? malloc((size_t)R * sizeof(double)) : NULL;
    if (!tmp) {
        free(ts);
        return -1;
    }
    double lo = 0, hi = 0;
    const double fmed = round_row(ts, NULL, R, tmp, &lo, &hi).med;
    for (int i = 1; i < nrun; i++) {
        bench_row t = round_row(ts + (size_t)i * R, ts, R, tmp, &lo, &hi);
        const double a = act[i - 1];
        if (record(rs, tsv, t, kname, pb->s.seq_len, pb->s.head_dim, pb->s.heads, pb->s.causal, T,
                   dens[i - 1], a, dense_flops * a)) {
            free(ts);
            free(tmp);
            return -1;
        }
        fprintf(stsv,
                "%s\t%d\t%d\t%d\t%d\t%d\t%.4f\t%.4f\t%d\t%.6g\t%.6g\t%.4f\t%.4f\t%.4f\t%.4f\t%.4f\t%.4f\n",
                kname, pb->s.seq_len, pb->s.head_dim, pb->s.heads, pb->s.causal, T, dens[i - 1], a, R, t.med,
                fmed, t.ratio, lo, hi, a / t.ratio, a / hi, a / lo);
    }
    fflush(stsv);
    free(ts);
    free(tmp);
    return 0;
}

/* ---- the PyTorch peer, served ---------------------------------------------- */

/* bench/sdpa_peer.py --serve as a child process: one request line
 * "KIND N D HEADS CAUSAL THREADS" on its stdin, one line of seconds back. */
typedef struct sdpa_srv {
    FILE *to, *from;
    pid_t pid;
    int ok;
    char info[256]; /* the rest of its "ready" line: torch version, CPU capability */
} sdpa_srv;

static void sdpa_srv_stop(sdpa_srv *sv)
{
    if (sv->to) fclose(sv->to); /* end of input: the server exits */
    if (sv->from) fclose(sv->from);
    if (sv->pid > 0)
        while (waitpid(sv->pid, NULL, 0) < 0 && errno == EINTR) {}
    sv->to = sv->from = NULL;
    sv->pid = -1;
    sv->ok = 0;
}

/* Starts `cmd` under /bin/sh and waits for its "ready" line (torch
 * imported), before this process runs anything timed. 0 when ready. */
static int sdpa_srv_start(sdpa_srv *sv, const char *cmd)
{
    memset(sv, 0, sizeof *sv);
    sv->pid = -1;
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC)) return -1;
    if (pipe2(out, O_CLOEXEC)) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    signal(SIGPIPE, SIG_IGN); /* a server that died is an error on write, not the end of this process */
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (pid < 0) {
        close(in[1]);
        close(out[0]);
        return -1;
    }
    sv->pid = pid;
    sv->to = fdopen(in[1], "w");
    sv->from = fdopen(out[0], "r");
    char line[256];
    if (!sv->to || !sv->from || !fgets(line, sizeof line, sv->from) || strncmp(line, "ready", 5)) {
        fprintf(stderr, "kernels_bench: the SDPA peer (%s) did not start (SDPA left out)%s%s", cmd,
                sv->from && !feof(sv->from) ? ": " : "\n", sv->from && !feof(sv->from) ? line : "");
        sdpa_srv_stop(sv);
        return -1;
    }
    line[strcspn(line, "\n")] = 0;
    snprintf(sv->info, sizeof sv->info, "%s", line[5] == ' ' ? line + 6 : line + 5);
    sv->ok = 1;
    return 0;
}

/* One SDPA call timed by the server: its seconds in *sec. */
static int sdpa_srv_time(sdpa_srv *sv, const char *kind, const ab_shape *s, int T, double *sec)
{
    char line[256];
    if (!sv->ok ||
        fprintf(sv->to, "%s %d %d %d %d %d\n", kind, s->seq_len, s->head_dim, s->heads, s->causal, T) < 0 ||
        fflush(sv->to) || !fgets(line, sizeof line, sv->from) || sscanf(line, "%lf", sec) != 1 ||
        !(*sec > 0)) {
        if (sv->ok) fprintf(stderr, "kernels_bench: the SDPA peer failed (%s): no SDPA from here on\n", kind);
        sdpa_srv_stop(sv);
        return -1;
    }
    return 0;
}

static const char *PEER_HEADER = "N\td\theads\tcausal\tthreads\tdtype\trounds\tflash_median_s\tsdpa_median_s"
                                 "\tflash_over_sdpa\tflash_over_sdpa_p10\tflash_over_sdpa_p90\n";

typedef struct peer_ctx {
    const ab_problem *pb;
    float *out;
    bf16_ctx *b16; /* NULL: fp32 only */
    sdpa_srv *sv;
    int T;
    int failed_run; /* which run failed: 1 or 3 (SDPA) is the peer's */
} peer_ctx;

/* Run 0: flash, 1: SDPA, 2: flash on bf16 inputs, 3: SDPA in bf16. */
static int peer_run(void *p, int i, double *sec)
{
    peer_ctx *x = p;
    int rc;
    if (i == 1 || i == 3) {
        rc = sdpa_srv_time(x->sv, i == 1 ? "sdpa" : "sdpa_bf16", &x->pb->s, x->T, sec);
    } else {
        kern_ctx k = { x->pb, NULL, x->out };
        const double t0 = now_s();
        rc = i == 0 ? run_kernel(&k) : run_bf16(x->b16);
        *sec = now_s() - t0;
    }
    if (rc) x->failed_run = i;
    return rc;
}

/* Flash (and flash on bf16 inputs, b16 non-NULL) timed in rounds with
 * torch SDPA (and SDPA in bf16), served by sv: rows flash, sdpa,
 * flash_bf16, sdpa_bf16 with their own times; the sdpa rows carry the
 * paired ratio, SDPA's time over flash's in the same round (= flash's
 * speed over SDPA's: summary.tsv's flash_over_sdpa), also in peer.tsv.
 * Returns 0, 1 when the peer failed (sv stopped; nothing recorded: the
 * caller times flash alone), -1 when a kernel failed. */
static int peer_rounds(const bench_cfg *c, sdpa_srv *sv, const ab_problem *pb, float *out, bf16_ctx *b16,
                       int T, double dense_flops, bench_rows *rs, FILE *tsv, FILE *ptsv)
{
    const ab_shape *s = &pb->s;
    char what[128];
    snprintf(what, sizeof what, "flash and SDPA N=%d d=%d causal=%d threads=%d", s->seq_len, s->head_dim,
             s->causal, T);
    peer_ctx x = { pb, out, b16, sv, T, -1 };
    int R = 0;
    double *ts = time_rounds(c, b16 ? 4 : 2, peer_run, &x, what, &R);
    if (!ts) return x.failed_run == 1 || x.failed_run == 3 ? 1 : -1;
    double *tmp = malloc((size_t)R * sizeof(double));
    if (!tmp) {
        free(ts);
        return -1;
    }
    static const char *kinds[] = { "flash", "sdpa", "flash_bf16", "sdpa_bf16" };
    double fmed = 0; /* the flash row's median, for its SDPA row's line */
    for (int i = 0; i < (b16 ? 4 : 2); i++) {
        double lo = 0, hi = 0;
        const int peer = i & 1;
        bench_row t = round_row(ts + (size_t)i * R, peer ? ts + (size_t)(i - 1) * R : NULL, R, tmp, &lo, &hi);
        if (record(rs, tsv, t, kinds[i], s->seq_len, s->head_dim, s->heads, s->causal, T, 1, 1,
                   dense_flops)) {
            free(ts);
            free(tmp);
            return -1;
        }
        if (!peer) {
            fmed = t.med;
        } else {
            fprintf(ptsv, "%d\t%d\t%d\t%d\t%d\t%s\t%d\t%.6g\t%.6g\t%.4f\t%.4f\t%.4f\n", s->seq_len,
                    s->head_dim, s->heads, s->causal, T, i == 1 ? "fp32" : "bf16", R, fmed, t.med, t.ratio,
                    lo, hi);
            fflush(ptsv);
        }
    }
    free(ts);
    free(tmp);
    return 0;
}

/* ---- main ----------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: kernels_bench [--quick] [--n LIST] [--d LIST] [--threads LIST] "
                    "[--heads H] [--density LIST] [--sparse-max-n N] [--sparse-d LIST] [--min-time S] "
                    "[--min-reps R] [--max-reps R] [--big N] [--sdpa FILE | --sdpa-serve CMD] [--out DIR] "
                    "[--only flash|sparse|big|peak|chunk]\n");
}

int main(int argc, char **argv)
{
    /* OpenBLAS's core, before any thread exists: may re-execute this
     * program with a better OPENBLAS_CORETYPE (harness/engine/blascore.h) */
    ab_blas_core_setup(argc, argv);
    ab_blas_core_announce();
    int peak_reps = 7;
    bench_cfg c = { .nn = 0,
                    .heads = 8,
                    .sparse_max_n = 16384,
                    .min_reps = 3,
                    .max_reps = 11,
                    .big_n = 131072,
                    .big_heads = 1,
                    .big_d = 128,
                    .min_time = 1.0,
                    .out = "results/bench",
                    .sdpa = NULL,
                    .only = NULL };
    static const int def_n[] = { 1024, 2048, 4096, 8192, 16384, 32768 };
    static const double def_dens[] = { 0.05, 0.10, 0.20, 0.50, 1.00 };
    c.nn = 6;
    memcpy(c.n, def_n, sizeof def_n);
    c.nd = 2;
    c.d[0] = 64;
    c.d[1] = 128;
    c.nthr = 2;
    c.thr[0] = 1;
    c.thr[1] = 2;
    c.ndens = 5;
    memcpy(c.dens, def_dens, sizeof def_dens);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--quick")) {
            c.nn = 3;
            c.n[0] = 1024;
            c.n[1] = 2048;
            c.n[2] = 4096;
            c.min_time = 0.3;
            c.max_reps = 7;
            c.big_n = 32768;
            c.sparse_max_n = 4096;
            peak_reps = 5;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--n"))
            bad = (c.nn = parse_list_int(v, c.n, BMAX)) <= 0;
        else if (!strcmp(a, "--d"))
            bad = (c.nd = parse_list_int(v, c.d, BMAX)) <= 0;
        else if (!strcmp(a, "--threads"))
            bad = (c.nthr = parse_list_int(v, c.thr, BMAX)) <= 0;
        else if (!strcmp(a, "--density"))
            bad = (c.ndens = parse_list_dbl(v, c.dens, BMAX)) <= 0;
        else if (!strcmp(a, "--heads"))
            bad = (c.heads = atoi(v)) <= 0;
        else if (!strcmp(a, "--sparse-d"))
            bad = (c.nsd = parse_list_int(v, c.sd, BMAX)) <= 0;
        else if (!strcmp(a, "--sparse-max-n"))
            c.sparse_max_n = atoi(v);
        else if (!strcmp(a, "--min-time"))
            bad = !((c.min_time = atof(v)) >= 0);
        else if (!strcmp(a, "--min-reps"))
            bad = (c.min_reps = atoi(v)) <= 0;
        else if (!strcmp(a, "--max-reps"))
            bad = (c.max_reps = atoi(v)) <= 0;
        else if (!strcmp(a, "--big"))
            c.big_n = atoi(v);
        else if (!strcmp(a, "--sdpa"))
            c.sdpa = v;
        else if (!strcmp(a, "--sdpa-serve"))
            c.sdpa_serve = v;
        else if (!strcmp(a, "--out"))
            c.out = v;
        else if (!strcmp(a, "--only"))
            c.only = v;
        else
            bad = 1;
        if (bad) {
            usage();
            return 2;
        }
    }
    if (c.max_reps < c.min_reps) c.max_reps = c.min_reps;
    if (c.sdpa && c.sdpa_serve) {
        fprintf(stderr, "kernels_bench: --sdpa FILE and --sdpa-serve CMD: give one\n");
        usage();
        return 2;
    }
    if (c.only && strcmp(c.only, "flash") && strcmp(c.only, "sparse") && strcmp(c.only, "big") &&
        strcmp(c.only, "peak") && strcmp(c.only, "chunk")) {
        fprintf(stderr, "kernels_bench: --only %s: expected flash, sparse, big, peak or chunk\n", c.only);
        usage();
        return 2;
    }
    const int do_flash = !c.only || !strcmp(c.only, "flash") || !strcmp(c.only, "sparse");
    const int do_sparse = !c.only || !strcmp(c.only, "sparse");
    const int do_big = (!c.only || !strcmp(c.only, "big")) && c.big_n > 0;
    const int do_chunk = do_flash || (c.only && !strcmp(c.only, "chunk"));
    const int do_peak = do_flash || do_chunk || (c.only && !strcmp(c.only, "peak"));

    if (mkdir(c.out, 0755) && errno != EEXIST) {
        perror(c.out);
        return 1;
    }
    char path[4096];
    /* --only big leaves an earlier kernels.tsv / summary.tsv alone */
    snprintf(path, sizeof path, do_flash ? "%s/kernels.tsv" : "/dev/null", c.out);
    FILE *tsv = fopen(path, "w");
    if (!tsv) {
        perror(path);
        return 1;
    }
    /* the PyTorch peer, before anything is timed: its torch import takes
     * seconds of CPU; it then waits for requests */
    sdpa_srv srv = { 0 };
    srv.pid = -1;
    if (c.sdpa_serve && do_flash && sdpa_srv_start(&srv, c.sdpa_serve) == 0)
        printf("kernels_bench: SDPA peer ready (%s): timed in rounds with flash\n", srv.info);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    const ab_blas_core *bc = ab_blas_core_info();
    const char *isa = ab_cpu_isa_name(ab_cpu_isa_pick());
    char load0[64], load1[64];
    loadavg(load0, sizeof load0);
    printf("kernels_bench: isa=%s openblas='%s' core_detected=%s core_best=%s core_running=%s "
           "core_source=%s OPENBLAS_CORETYPE=%s heads=%d min_time=%.2fs reps=%d..%d cpus=%ld "
           "loadavg=%s\n",
           isa, openblas_get_config(), or_dash(bc->detected), or_dash(bc->best), or_dash(bc->running),
           or_dash(bc->source), ct ? ct : "(unset)", c.heads, c.min_time, c.min_reps, c.max_reps,
           sysconf(_SC_NPROCESSORS_ONLN), load0);

    int failed = 0;
    /* the machine's fp32 FMA peak per thread count, before any kernel */
    peak_res peak[BMAX];
    int npeak = 0;
    if (do_peak) {
        fflush(stdout);
        if (peak_all(&c, peak_reps, peak)) {
            fprintf(stderr, "kernels_bench: FMA peak measurement failed\n");
            failed = 1;
        }
        npeak = c.nthr;
        snprintf(path, sizeof path, "%s/peak.tsv", c.out);
        FILE *pt = fopen(path, "w");
        if (!pt) {
            perror(path);
            return 1;
        }
        tsv_comment(pt, isa, load0, NULL, 0);
        fprintf(pt,
                "# fp32 FMA peak: %d independent FMA chains per thread, %.1f s per repeat; "
                "gflops = 2 flops x lanes x FMAs / s, median and nearest-rank p10/p90 over the "
                "repeats\n",
                PEAK_CHAINS, PEAK_TARGET_S);
        fprintf(pt, "isa\tthreads\tgflops\treps\tp10\tp90\n");
        for (int i = 0; i < npeak; i++) {
            if (!peak[i].ok) continue;
            fprintf(pt, "%s\t%d\t%.2f\t%d\t%.2f\t%.2f\n", peak[i].isa, peak[i].threads, peak[i].gflops,
                    peak[i].reps, peak[i].p10, peak[i].p90);
            printf("kernels_bench: fp32 FMA peak isa=%s threads=%d: %.2f GFLOP/s (p10 %.2f, p90 "
                   "%.2f, %d reps of %.1f s, %d chains)\n",
                   peak[i].isa, peak[i].threads, peak[i].gflops, peak[i].p10, peak[i].p90, peak[i].reps,
                   PEAK_TARGET_S, PEAK_CHAINS);
        }
        fclose(pt);
        fflush(stdout);
    }
    if (do_chunk) { /* the chunk step in cache, one thread, each head_dim */
        snprintf(path, sizeof path, "%s/chunk.tsv", c.out);
        FILE *ct_f = fopen(path, "w");
        if (!ct_f) {
            perror(path);
            return 1;
        }
        tsv_comment(ct_f, isa, load0, peak, npeak);
        fprintf(ct_f,
                "# the fp32 chunk step alone: a %d-row tile over %d keys in %d-key chunks, unmasked, "
                "in cache, one thread; best of %d timings\n",
                CHUNK_Q, CHUNK_KEYS, CHUNK_K, c.min_reps);
        fprintf(ct_f, "isa\td\tgflops\tfrac_peak\n");
        const double pk1 = peak_for(peak, npeak, 1);
        omp_set_num_threads(1);
        for (int id = 0; id < c.nd; id++) {
            const double g = chunk_gflops(c.d[id], ab_cpu_isa_pick(), c.min_time, c.min_reps);
            fprintf(ct_f, "%s\t%d\t%.2f\t%.4f\n", isa, c.d[id], g, g / pk1);
            printf("kernels_bench: chunk step isa=%s d=%d in cache, 1 thread: %.1f GFLOP/s", isa, c.d[id], g);
            if (isnan(pk1))
                printf(" (no 1-thread peak: --threads without 1)\n");
            else
                printf(" (%.2f of the 1-thread FMA peak)\n", g / pk1);
        }
        fclose(ct_f);
        fflush(stdout);
    }
    tsv_comment(tsv, isa, load0, peak, npeak);
    fputs(ROW_HEADER, tsv);
    FILE *stsv = NULL; /* the sparse kernels against flash, paired by round */
    if (do_sparse) {
        snprintf(path, sizeof path, "%s/sparse.tsv", c.out);
        if (!(stsv = fopen(path, "w"))) {
            perror(path);
            return 1;
        }
        tsv_comment(stsv, isa, load0, peak, npeak);
        fprintf(stsv, "# rounds of flash then every density (backwards in odd rounds); time_over_flash: "
                      "median and nearest-rank p10/p90 over the rounds of a run's time over the same "
                      "round's flash time; of_ideal = actual_density / time_over_flash (1: the ideal "
                      "speed-up 1 / density)\n");
        fputs(SPARSE_HEADER, stsv);
    } else if (do_flash) { /* kernels.tsv and summary.tsv are rewritten without sparse rows */
        snprintf(path, sizeof path, "%s/sparse.tsv", c.out);
        remove(path);
    }
    FILE *ptsv = NULL; /* flash against the served SDPA, paired by round */
    snprintf(path, sizeof path, "%s/peer.tsv", c.out);
    if (srv.ok) {
        if (!(ptsv = fopen(path, "w"))) {
            perror(path);
            return 1;
        }
        tsv_comment(ptsv, isa, load0, peak, npeak);
        fprintf(
            ptsv,
            "# sdpa peer: %s; rounds of flash, SDPA, flash on bf16 inputs, SDPA in bf16 (backwards in odd "
            "rounds); flash_over_sdpa: median and nearest-rank p10/p90 over the rounds of SDPA's time over "
            "flash's in the same round\n",
            srv.info);
        fputs(PEER_HEADER, ptsv);
    } else if (do_flash) {
        remove(path);
    }

    bench_rows rs = { 0 };
    /* The long run first: it forks, and libgomp is not fork-safe once this
     * process has run an OpenMP region (the child would hang). */
    if (do_big) {
        fflush(stdout);
        char bpath[4096];
        snprintf(bpath, sizeof bpath, "%s/big.tsv", c.out);
        FILE *bt = fopen(bpath, "w");
        if (bt) tsv_comment(bt, isa, load0, peak, npeak);
        if (!bt || big_run(&c, bt)) failed = 1;
        if (bt) fclose(bt);
    }
    for (int in = 0; in < c.nn && do_flash; in++)
        for (int id = 0; id < c.nd; id++) {
            const int N = c.n[in], d = c.d[id], H = c.heads;
            bench_qkv x;
            if (qkv_make(&x, H, N, d, 0, (uint64_t)N * 131 + d)) {
                fprintf(stderr, "out of memory at N=%d d=%d\n", N, d);
                qkv_free(&x);
                failed = 1;
                continue;
            }
            /* the roofline: SGEMM on one head's shapes (rate per head) */
            float *sbuf = malloc((size_t)N * N * sizeof(float));
            for (int it = 0; it < c.nthr && sbuf; it++) {
                set_threads(c.thr[it]);
                sgemm_ctx g = { x.q, x.k, x.v, sbuf, x.out, N, d };
                bench_row t = { 0 };
                if (time_it(&c, run_sgemm, &g, &t) ||
                    record(&rs, tsv, t, "sgemm", N, d, 1, 0, c.thr[it], 1, 1, 4.0 * N * (double)N * d))
                    return 1;
            }
            free(sbuf);
            for (int causal = 0; causal < 2; causal++) {
                x.pb.s.causal = causal;
                const double dense_flops = 4.0 * H * (double)N * N * d * (causal ? 0.5 : 1.0);
                uint16_t *b16 = bf16_copy(&x);
                const size_t e16 = (size_t)H * N * d;
                for (int it = 0; it < c.nthr; it++) {
                    set_threads(c.thr[it]);
                    bf16_ctx kb = {
                        &x.pb.s, b16, b16 ? b16 + e16 : NULL, b16 ? b16 + 2 * e16 : NULL, x.out, 0
                    };
                    /* with the served peer: flash, SDPA and their bf16 forms in rounds */
                    const int pr = srv.ok ? peer_rounds(&c, &srv, &x.pb, x.out, b16 ? &kb : NULL, c.thr[it],
                                                        dense_flops, &rs, tsv, ptsv)
                                          : 1;
                    if (pr < 0) return 1;
                    kern_ctx k = { &x.pb, NULL, x.out };
                    bench_row t = { 0 };
                    if (pr && (time_it(&c, run_kernel, &k, &t) ||
                               record(&rs, tsv, t, "flash", N, d, H, causal, c.thr[it], 1, 1, dense_flops))) {
                        fprintf(stderr, "flash failed N=%d d=%d\n", N, d);
                        return 1;
                    }
                    if (!b16) continue;
                    if (pr &&
                        (time_it(&c, run_bf16, &kb, &t) ||
                         record(&rs, tsv, t, "flash_bf16", N, d, H, causal, c.thr[it], 1, 1, dense_flops))) {
                        fprintf(stderr, "flash_bf16 failed N=%d d=%d\n", N, d);
                        return 1;
                    }
                    /* and the native AVX-512 BF16 products, where the CPU has them */
                    if (!ab_cpu_bf16_path_ok(AB_BF16_AVX512, d, x.pb.s.scale)) continue;
                    kb.native = 1;
                    if (time_it(&c, run_bf16, &kb, &t) ||
                        record(&rs, tsv, t, "flash_bf16n", N, d, H, causal, c.thr[it], 1, 1, dense_flops)) {
                        fprintf(stderr, "flash_bf16 (native) failed N=%d d=%d\n", N, d);
                        return 1;
                    }
                }
                free(b16);
                int sparse_d = c.nsd == 0;
                for (int i = 0; i < c.nsd; i++) sparse_d |= c.sd[i] == d;
                if (!do_sparse || N > c.sparse_max_n || !sparse_d) continue;
                for (int kind = 0; kind < 2; kind++) {
                    ab_layout ls[BMAX];
                    double act[BMAX], dens_of[BMAX];
                    int nl = 0;
                    for (int ie = 0; ie < c.ndens; ie++) {
                        if (make_layout(&ls[nl], &x.pb.s, c.dens[ie], kind, 7 + ie)) {
                            fprintf(stderr, "kernels_bench: %s layout failed at N=%d density %g\n",
                                    kind ? "token" : "block", N, c.dens[ie]);
                            ab_layout_free(&ls[nl]);
                            failed = 1;
                            continue;
                        }
                        act[nl] = ab_layout_density(&ls[nl]);
                        dens_of[nl++] = c.dens[ie];
                    }
                    for (int it = 0; it < c.nthr && nl; it++) {
                        set_threads(c.thr[it]);
                        if (sparse_rounds(&c, &x.pb, x.out, ls, dens_of, act, nl, c.thr[it], dense_flops, &rs,
                                          tsv, stsv))
                            return 1;
                    }
                    for (int i = 0; i < nl; i++) ab_layout_free(&ls[i]);
                }
            }
            qkv_free(&x);
            fflush(tsv);
        }
    loadavg(load1, sizeof load1);
    fprintf(tsv, "# loadavg_end=%s\n", load1);
    fclose(tsv);
    if (stsv) {
        fprintf(stsv, "# loadavg_end=%s\n", load1);
        fclose(stsv);
    }
    const int served = ptsv != NULL; /* the SDPA rows came from the served peer */
    if (ptsv) {
        fprintf(ptsv, "# loadavg_end=%s\n", load1);
        fclose(ptsv);
    }
    sdpa_srv_stop(&srv);
    printf("loadavg at start %s, at end %s (2 cpus)\n", load0, load1);

    /* the PyTorch peer: served (its rows are in rs), or measured before this
     * run by bench/sdpa_peer.py (--sdpa FILE) */
    if (!served && c.sdpa && load_sdpa(c.sdpa, &rs) <= 0)
        printf("sdpa: no rows in %s (PyTorch peer not measured)\n", c.sdpa);
    if (served) { /* its rows also as sdpa_peer.py writes them (roofline.gp, --sdpa FILE) */
        snprintf(path, sizeof path, "%s/sdpa.tsv", c.out);
        FILE *sf = fopen(path, "w");
        if (!sf) {
            perror(path);
            failed = 1;
        } else {
            fprintf(sf, "# served by %s, timed in rounds with flash (peer.tsv)\n", c.sdpa_serve);
            fputs(ROW_HEADER, sf);
            for (size_t i = 0; i < rs.n; i++)
                if (!strncmp(rs.r[i].kind, "sdpa", 4)) row_print(sf, &rs.r[i]);
            fclose(sf);
        }
    }

    /* summary: one row per (N, d, causal, threads) */
    snprintf(path, sizeof path, "%s/summary.tsv", c.out);
    FILE *sum = do_flash ? fopen(path, "w") : NULL;
    if (do_flash && !sum) {
        perror(path);
        return 1;
    }
    if (sum) {
        char hdr[4096];
        int o = snprintf(hdr, sizeof hdr,
                         "N\td\tcausal\tthreads\tsgemm_gflops\tflash_gflops\tflash_over_sgemm"
                         "\tflash_speedup_vs_1t\tsdpa_gflops\tflash_over_sdpa");
        for (int kind = 0; kind < 2; kind++)
            for (int ie = 0; ie < c.ndens; ie++)
                o += snprintf(hdr + o, sizeof hdr - (size_t)o, "\t%s_%g_time_over_flash",
                              kind ? "gather" : "blocksparse", 100 * c.dens[ie]);
        /* appended: achieved GFLOP/s (useful FLOPs) over the FMA peak of the
         * same thread count */
        o += snprintf(hdr + o, sizeof hdr - (size_t)o, "\tpeak_gflops\tsgemm_frac_peak\tflash_frac_peak");
        for (int kind = 0; kind < 2; kind++)
            for (int ie = 0; ie < c.ndens; ie++)
                o += snprintf(hdr + o, sizeof hdr - (size_t)o, "\t%s_%g_frac_peak",
                              kind ? "gather" : "blocksparse", 100 * c.dens[ie]);
        /* appended: bf16 inputs (ab_cpu_flash_bf16), against SDPA on bf16
         * tensors and our fp32 flash; the native AVX-512 BF16 products */
        o +=
            snprintf(hdr + o, sizeof hdr - (size_t)o,
                     "\tflash_bf16_gflops\tsdpa_bf16_gflops\tflash_bf16_over_sdpa_bf16\tflash_bf16_over_flash"
                     "\tflash_bf16_native_gflops");
        tsv_comment(sum, isa, load0, peak, npeak);
        fprintf(sum, "%s\n", hdr);
        printf("\n%s\n", hdr);
        for (int in = 0; in < c.nn; in++)
            for (int id = 0; id < c.nd; id++)
                for (int causal = 0; causal < 2; causal++)
                    for (int it = 0; it < c.nthr; it++) {
                        const int N = c.n[in], d = c.d[id], T = c.thr[it];
                        const bench_row *g = rows_find(&rs, "sgemm", N, d, -1, T, 1);
                        const bench_row *f = rows_find(&rs, "flash", N, d, causal, T, 1);
                        const bench_row *f1 = rows_find(&rs, "flash", N, d, causal, c.thr[0], 1);
                        const bench_row *sd = rows_find(&rs, "sdpa", N, d, causal, T, 1);
                        if (!f) continue;
                        const double gf = f->flops * 1e-9 / f->med;
                        const double gg = g ? g->flops * 1e-9 / g->med : NAN;
                        const double gs = sd ? sd->flops * 1e-9 / sd->med : NAN;
                        char line[4096];
                        int p = snprintf(line, sizeof line,
                                         "%d\t%d\t%d\t%d\t%.2f\t%.2f\t%.3f\t%.3f"
                                         "\t%.2f\t%.3f",
                                         N, d, causal, T, gg, gf, gf / gg, f1 ? f1->med / f->med : NAN, gs,
                                         sd && sd->paired ? sd->ratio : gf / gs);
                        for (int kind = 0; kind < 2; kind++)
                            for (int ie = 0; ie < c.ndens; ie++) {
                                const bench_row *s = rows_find(&rs, kind ? "gather" : "blocksparse", N, d,
                                                               causal, T, c.dens[ie]);
                                p += snprintf(line + p, sizeof line - (size_t)p, "\t%.4f",
                                              !s          ? NAN
                                              : s->paired ? s->ratio
                                                          : s->med / f->med);
                            }
                        const double pk = peak_for(peak, npeak, T);
                        p += snprintf(line + p, sizeof line - (size_t)p, "\t%.2f\t%.4f\t%.4f", pk, gg / pk,
                                      gf / pk);
                        for (int kind = 0; kind < 2; kind++)
                            for (int ie = 0; ie < c.ndens; ie++) {
                                const bench_row *s = rows_find(&rs, kind ? "gather" : "blocksparse", N, d,
                                                               causal, T, c.dens[ie]);
                                p += snprintf(line + p, sizeof line - (size_t)p, "\t%.4f",
                                              s ? s->flops * 1e-9 / s->med / pk : NAN);
                            }
                        const bench_row *b = rows_find(&rs, "flash_bf16", N, d, causal, T, 1);
                        const bench_row *sb = rows_find(&rs, "sdpa_bf16", N, d, causal, T, 1);
                        const bench_row *bn = rows_find(&rs, "flash_bf16n", N, d, causal, T, 1);
                        const double gb = b ? b->flops * 1e-9 / b->med : NAN;
                        const double gsb = sb ? sb->flops * 1e-9 / sb->med : NAN;
                        p += snprintf(line + p, sizeof line - (size_t)p, "\t%.2f\t%.2f\t%.3f\t%.3f\t%.2f", gb,
                                      gsb, sb && sb->paired ? sb->ratio : gb / gsb, gb / gf,
                                      bn ? bn->flops * 1e-9 / bn->med : NAN);
                        fprintf(sum, "%s\n", line);
                        printf("%s\n", line);
                    }
        fclose(sum);
    }

    free(rs.r);
    return failed;
}
