/* gpu_bench.c — `make bench-gpu`: throughput of the CUDA kernels
 * (kernels/cuda) on random Q, K, V: dense flash (FlashAttention-2 style,
 * Dao 2023, arXiv 2307.08691), blocksparse at 5/10/20/50% block density,
 * gather at 10% token density, the cuBLAS baseline, and PyTorch SDPA rows
 * read from bench/sdpa_gpu.py's TSV (--sdpa). Each kernel: 2 warm-up runs,
 * then --reps runs timed with CUDA events; the median is reported.
 * TFLOP/s counts the FLOPs actually required (4·H·N²·d, halved when
 * causal, times the achieved density for sparse kernels).
 *
 * Output: DIR/gpu_bench.tsv (one row per kernel and shape) and
 * DIR/gpu_bench_wide.tsv (TFLOP/s per kernel as columns, for
 * bench/gpu_bench.gp). `gpu_bench --probe` prints the device and exits 0,
 * or prints why there is none and exits 3.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness/engine/gpu.h"
#include "runtime/layout.h"
#include "harness/engine/timing.h"
#include "kernels/kernels.h"

#define MAXL 16
#define MAXK 16 /* kernels per shape */

typedef struct opts {
    int n[MAXL], nn, d[MAXL], nd, heads, causal, reps, block, gather_max_n;
    ab_cuda_dtype dt;
    const char *sdpa, *out;
} opts;

typedef struct row {
    char kernel[24];
    double density, ms, tflops;
} row;

static int parse_list(const char *s, int *v, int cap)
{
    int n = 0;
    for (char *end; *s && n < cap; s = *end ? end + 1 : end) {
        v[n++] = (int)strtol(s, &end, 10);
        if (end == s) return -1;
    }
    return n;
}

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unif(uint64_t *s) { return (mix(s) >> 11) * 0x1.0p-53; }

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median over reps of kernel fn (after 2 warm-ups), ms; -1 on error. */
static double time_kernel(ab_cuda *g, int (*fn)(ab_cuda *), int reps)
{
    double t[256];
    if (reps > 256) reps = 256;
    for (int i = 0; i < 2 + reps; i++) {
        double ms;
        if (ab_cuda_timer_start(g) || fn(g) || ab_cuda_timer_stop(g, &ms)) {
            fprintf(stderr, "gpu_bench: %s\n", ab_cuda_error(g));
            return -1;
        }
        if (i >= 2) t[i - 2] = ms;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_dbl);
    return reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
}

/* Blocks: per (head, query block) the diagonal plus a random share of the
 * causally valid blocks, so the density is about `density`. */
static int block_layout(ab_layout *l, const ab_shape *s, int b, double density, uint64_t seed)
{
    ab_layout_init(l, s, b, b);
    for (int h = 0; h < s->heads; h++)
        for (int qb = 0; qb < l->n_qblocks; qb++) {
            const int nc = s->causal ? qb + 1 : l->n_kblocks;
            for (int kb = 0; kb < nc; kb++)
                if (kb == qb || unif(&seed) < density)
                    if (ab_layout_add_block(l, h, qb, kb)) return AB_ENOMEM;
        }
    return ab_layout_finalize(l);
}

/* Tokens: per (head, query block) a random share of the valid keys. */
static int token_layout(ab_layout *l, const ab_shape *s, int b, double density, uint64_t seed)
{
    ab_layout_init(l, s, b, b);
    for (int h = 0; h < s->heads; h++)
        for (int qb = 0; qb < l->n_qblocks; qb++) {
            const int kend = s->causal ? (qb + 1) * b < s->seq_len ? (qb + 1) * b : s->seq_len : s->seq_len;
            for (int j = 0; j < kend; j++)
                if (unif(&seed) < density)
                    if (ab_layout_add_token(l, h, qb, j)) return AB_ENOMEM;
        }
    return ab_layout_finalize(l);
}

/* ms of PyTorch SDPA for this shape from the peer's TSV, or NaN. */
static double sdpa_ms(const char *path, int n, int d, int heads, int causal, const char *dtype)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return NAN;
    char line[512], kind[32], dt[16];
    int fn, fd, fh, fc;
    double ms, best = NAN;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%31s %d %d %d %d %15s %lf", kind, &fn, &fd, &fh, &fc, dt, &ms) == 7 && fn == n &&
            fd == d && fh == heads && fc == causal && !strcmp(dt, dtype))
            best = ms;
    fclose(f);
    return best;
}

static int bench_shape(const opts *o, int n, int d, FILE *tsv, FILE *wide)
{
    const char *dtn = o->dt == AB_CUDA_BF16 ? "bf16" : "fp16";
    ab_shape s = { o->heads, n, d, o->causal, 1.0f / sqrtf((float)d), NULL, 0, 1, AB_PREFILL };
    const size_t t = (size_t)o->heads * n * d;
    float *q = malloc(t * sizeof *q), *k = malloc(t * sizeof *k), *v = malloc(t * sizeof *v);
    if (!q || !k || !v) {
        free(q);
        free(k);
        free(v);
        return AB_ENOMEM;
    }
    uint64_t seed = 42;
    for (size_t i = 0; i < t; i++) {
        q[i] = (float)(unif(&seed) * 2 - 1);
        k[i] = (float)(unif(&seed) * 2 - 1);
        v[i] = (float)(unif(&seed) * 2 - 1);
    }
    char err[256] = "";
    ab_cuda *g = NULL;
    int rc = ab_cuda_open(&g, &s, o->dt, err, sizeof err);
    if (rc == AB_OK) rc = ab_cuda_upload_qkv(g, q, k, v);
    free(q);
    free(k);
    free(v);
    if (rc) {
        fprintf(stderr, "gpu_bench: N=%d d=%d: %s\n", n, d, g ? ab_cuda_error(g) : err);
        ab_cuda_close(g);
        return rc;
    }
    const double dense_flops = 4.0 * o->heads * (double)n * n * d * (o->causal ? 0.5 : 1.0);
    row r[MAXK];
    int nr = 0;
    double flash_ms = time_kernel(g, ab_cuda_flash, o->reps);
    r[nr++] = (row){ "flash", 1.0, flash_ms, 0 };
    static const double dens[] = { 0.05, 0.10, 0.20, 0.50 };
    for (int i = 0; i < 4; i++) {
        ab_layout l;
        if (block_layout(&l, &s, o->block, dens[i], 7 + i) || ab_cuda_upload_layout(g, &l)) {
            ab_layout_free(&l);
            rc = AB_ENOMEM;
            break;
        }
        row x = { "", ab_layout_density(&l), time_kernel(g, ab_cuda_blocksparse, o->reps), 0 };
        snprintf(x.kernel, sizeof x.kernel, "blocksparse_%d", (int)(dens[i] * 100 + 0.5));
        r[nr++] = x;
        ab_layout_free(&l);
    }
    if (n <= o->gather_max_n) {
        ab_layout l;
        if (token_layout(&l, &s, o->block, 0.10, 3) == AB_OK && ab_cuda_upload_layout(g, &l) == AB_OK)
            r[nr++] = (row){ "gather_10", ab_layout_density(&l), time_kernel(g, ab_cuda_gather, o->reps), 0 };
        ab_layout_free(&l);
    }
    r[nr++] = (row){ "cublas", 1.0, time_kernel(g, ab_cuda_dense_cublas, o->reps), 0 };
    const double sd = sdpa_ms(o->sdpa, n, d, o->heads, o->causal, dtn);
    if (!isnan(sd)) r[nr++] = (row){ "torch_sdpa", 1.0, sd, 0 };
    ab_cuda_close(g);

    if (wide) fprintf(wide, "%d", n);
    for (int i = 0; i < nr; i++) {
        r[i].tflops = r[i].ms > 0 ? dense_flops * r[i].density / (r[i].ms * 1e-3) / 1e12 : NAN;
        fprintf(tsv, "%s\t%d\t%d\t%d\t%d\t%s\t%.4f\t%.4f\t%.2f\t%.3f\t%.3f\n", r[i].kernel, n, d, o->heads,
                o->causal, dtn, r[i].density, r[i].ms, r[i].tflops, flash_ms / r[i].ms,
                isnan(sd) ? NAN : sd / r[i].ms);
        printf("%-15s N=%-6d d=%-3d density=%.3f %9.3f ms %7.2f TFLOP/s  vs flash %6.2fx%s", r[i].kernel, n,
               d, r[i].density, r[i].ms, r[i].tflops, flash_ms / r[i].ms, isnan(sd) ? "\n" : "");
        if (!isnan(sd)) printf("  vs SDPA %5.2fx\n", sd / r[i].ms);
    }
    /* wide: flash bs5 bs10 bs20 bs50 gather10 cublas sdpa */
    static const char *const cols[] = { "flash",          "blocksparse_5", "blocksparse_10", "blocksparse_20",
                                        "blocksparse_50", "gather_10",     "cublas",         "torch_sdpa" };
    for (int c = 0; wide && c < 8; c++) {
        double v2 = NAN;
        for (int i = 0; i < nr; i++)
            if (!strcmp(r[i].kernel, cols[c])) v2 = r[i].tflops;
        fprintf(wide, "\t%.3f", v2);
    }
    if (wide) fprintf(wide, "\n");
    return rc;
}

int main(int argc, char **argv)
{
    opts o = { .nn = 0,
               .nd = 0,
               .heads = 16,
               .causal = 1,
               .reps = 10,
               .block = 128,
               .gather_max_n = 32768,
               .dt = AB_CUDA_FP16,
               .sdpa = NULL,
               .out = "results/gpu_bench" };
    int probe_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--probe"))
            probe_only = 1;
        else if (!strcmp(a, "--quick")) {
            o.nn = parse_list("4096,16384", o.n, MAXL);
            o.reps = 5;
        } else if (v && !strcmp(a, "--n")) {
            o.nn = parse_list(v, o.n, MAXL);
            i++;
        } else if (v && !strcmp(a, "--d")) {
            o.nd = parse_list(v, o.d, MAXL);
            i++;
        } else if (v && !strcmp(a, "--heads")) {
            o.heads = atoi(v);
            i++;
        } else if (v && !strcmp(a, "--causal")) {
            o.causal = atoi(v) != 0;
            i++;
        } else if (v && !strcmp(a, "--reps")) {
            o.reps = atoi(v);
            i++;
        } else if (v && !strcmp(a, "--block")) {
            o.block = atoi(v);
            i++;
        } else if (v && !strcmp(a, "--dtype")) {
            if (strcmp(v, "bf16") && strcmp(v, "fp16")) {
                fprintf(stderr, "gpu_bench: --dtype %s: expected fp16 or bf16\n", v);
                return 2;
            }
            o.dt = !strcmp(v, "bf16") ? AB_CUDA_BF16 : AB_CUDA_FP16;
            i++;
        } else if (v && !strcmp(a, "--sdpa")) {
            o.sdpa = v;
            i++;
        } else if (v && !strcmp(a, "--out")) {
            o.out = v;
            i++;
        } else if (v && !strcmp(a, "--min-time"))
            i++; /* accepted for the SDPA peer's option set */
        else {
            fprintf(
                stderr,
                "usage: gpu_bench [--probe] [--quick] [--n 4096,...] [--d 64,128] [--heads H] [--causal "
                "0|1]\n"
                "                 [--reps R] [--block B] [--dtype fp16|bf16] [--sdpa FILE] [--out DIR]\n");
            return 2;
        }
    }
    char why[256] = "";
    if (ab_gpu_count(why, sizeof why) == 0) {
        printf("no usable GPU: %s\n", why);
        return 3;
    }
    if (probe_only) {
        ab_env e;
        memset(&e, 0, sizeof e);
        ab_gpu_env(&e);
        printf("gpu: %s (%s), CUDA %s, cuBLAS %s\n", ab_env_get(&e, "gpu_name"), ab_env_get(&e, "gpu_info"),
               ab_env_get(&e, "cuda_version"),
               ab_env_get(&e, "cublas_version") ? ab_env_get(&e, "cublas_version") : "?");
        ab_env_free(&e);
        return 0;
    }
    if (!o.nn) o.nn = parse_list("4096,16384,65536", o.n, MAXL);
    if (!o.nd) o.nd = parse_list("128", o.d, MAXL);
    if (o.nn < 0 || o.nd < 0 || o.heads < 1 || o.reps < 1 || o.block < 1) {
        fprintf(stderr, "gpu_bench: bad option value\n");
        return 2;
    }
    if (mkdir(o.out, 0777) && errno != EEXIST) {
        fprintf(stderr, "gpu_bench: cannot create %s: %s\n", o.out, strerror(errno));
        return 1;
    }
    char path[1200], wpath[1200];
    snprintf(path, sizeof path, "%s/gpu_bench.tsv", o.out);
    snprintf(wpath, sizeof wpath, "%s/gpu_bench_wide.tsv", o.out);
    FILE *tsv = fopen(path, "w"), *wide = fopen(wpath, "w");
    if (!tsv || !wide) {
        fprintf(stderr, "gpu_bench: cannot write %s\n", path);
        if (tsv) fclose(tsv);
        if (wide) fclose(wide);
        return 1;
    }
    fprintf(tsv,
            "kernel\tn\td\theads\tcausal\tdtype\tdensity\tms\ttflops\tspeedup_vs_flash\tratio_vs_sdpa\n");
    fprintf(wide, "n\tflash\tbs5\tbs10\tbs20\tbs50\tgather10\tcublas\tsdpa\n");
    int failed = 0;
    for (int di = 0; di < o.nd; di++)
        for (int ni = 0; ni < o.nn; ni++)
            if (bench_shape(&o, o.n[ni], o.d[di], tsv, di == 0 ? wide : NULL)) /* wide: first d only */
                failed = 1;
    fclose(tsv);
    fclose(wide);
    printf("gpu_bench: wrote %s and %s\n", path, wpath);
    return failed;
}
