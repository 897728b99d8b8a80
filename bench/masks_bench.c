/* masks_bench.c — cost of the base masks in the CPU kernels (issue: masks
 * as a sweep axis). For each base mask, dense flash attention runs under
 * that mask and its time is set against causal flash in the same run; the
 * ideal ratio is the mask's allowed pairs over causal's (time proportional
 * to the work the mask leaves), and efficiency = ideal / measured. Optionally
 * the block-sparse kernel on a random 10% layout under each mask, to show
 * that block skipping composes with sparsity. Medians over repeats with
 * p10/p90; one load-average reading before and after.
 *
 *   masks_bench [--n 16384] [--d 64] [--heads 8] [--threads 2]
 *               [--masks causal,full,sliding:4096,...] [--sparse 0.1]
 *               [--min-time S] [--min-reps R] [--max-reps R] [--out FILE.tsv]
 *
 * Masks come from their specs through the registry (runtime/maskspec.c), so
 * a new mask plugin is measured with no change here. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/kernels.h"
#include "runtime/registry.h"
#include "runtime/layout.h"
#include "kernels/kernels.h"

#define MB_MAX 32

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_dbl(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct mb_cfg {
    int n, d, heads, threads, min_reps, max_reps;
    double min_time, sparse;
    int nmask;
    char masks[MB_MAX][AB_MASK_SPEC];
    const char *out;
} mb_cfg;

typedef struct mb_time {
    int reps;
    double med, p10, p90;
} mb_time;

/* Warm-up, then repeats until min_reps and min_time (at most max_reps). */
static int time_kernel(const mb_cfg *c, const ab_problem *pb, const ab_layout *l, float *out, mb_time *t)
{
    double t0 = now_s();
    if ((l ? ab_kernel_layout(pb, l, out) : ab_kernel_flash(pb, out)) != AB_OK) return -1;
    const double first = now_s() - t0;
    int reps = first > 0 ? (int)ceil(c->min_time / first) : c->max_reps;
    reps = reps < c->min_reps ? c->min_reps : reps > c->max_reps ? c->max_reps : reps;
    double ts[256];
    reps = reps > 256 ? 256 : reps;
    for (int i = 0; i < reps; i++) {
        t0 = now_s();
        if ((l ? ab_kernel_layout(pb, l, out) : ab_kernel_flash(pb, out)) != AB_OK) return -1;
        ts[i] = now_s() - t0;
    }
    qsort(ts, (size_t)reps, sizeof(double), cmp_dbl);
    t->reps = reps;
    t->med = reps % 2 ? ts[reps / 2] : 0.5 * (ts[reps / 2 - 1] + ts[reps / 2]);
    t->p10 = ts[(int)floor(0.1 * (reps - 1))];
    t->p90 = ts[(int)ceil(0.9 * (reps - 1))];
    return 0;
}

/* A random block layout keeping about `dens` of each query block's key
 * blocks that the mask touches (the block the rows' span ends in always). */
static int sparse_layout(ab_layout *l, const ab_shape *s, const ab_mask *m, double dens, uint64_t seed)
{
    ab_layout_init(l, s, 64, 64);
    const int nqb = l->n_qblocks, nkb = l->n_kblocks, N = s->seq_len;
    int32_t *cand = malloc((size_t)nkb * sizeof(int32_t)); /* [n_kblocks] */
    if (!cand) return AB_ENOMEM;
    uint64_t rng = seed;
    int rc = AB_OK;
    for (int qb = 0; qb < nqb && rc == AB_OK; qb++) {
        const int q0 = qb * 64, q1 = q0 + 64 < N ? q0 + 64 : N;
        int nc = 0;
        for (int kb = 0; kb < nkb; kb++)
            if (ab_mask_block(m, q0, q1, kb * 64, kb * 64 + 64) != AB_BLOCK_EMPTY) cand[nc++] = kb;
        int keep = (int)lround(dens * nc);
        keep = keep < 1 ? 1 : keep;
        for (int h = 0; h < s->heads && rc == AB_OK && nc > 0; h++) {
            for (int i = 0; i < keep; i++) { /* partial Fisher-Yates */
                const int j = i + (int)(rng_next(&rng) % (uint64_t)(nc - i));
                const int32_t t = cand[i];
                cand[i] = cand[j];
                cand[j] = t;
            }
            rc = ab_layout_add_blocks(l, h, qb, cand, keep);
        }
    }
    free(cand);
    return rc == AB_OK ? ab_layout_finalize(l) : rc;
}

static int parse_masks(mb_cfg *c, const char *s)
{
    c->nmask = 0;
    while (*s && c->nmask < MB_MAX) {
        const char *e = strchr(s, ',');
        const size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0 || len >= AB_MASK_SPEC) return -1;
        memcpy(c->masks[c->nmask], s, len);
        c->masks[c->nmask++][len] = 0;
        s = e ? e + 1 : s + len;
    }
    return c->nmask > 0 ? 0 : -1;
}

static void usage(void)
{
    fprintf(stderr, "usage: masks_bench [--n N] [--d D] [--heads H] [--threads T] "
                    "[--masks SPEC,...] [--sparse DENSITY|0] [--min-time S] [--min-reps R] "
                    "[--max-reps R] [--out FILE.tsv]\n");
}

int main(int argc, char **argv)
{
    mb_cfg c = { .n = 16384,
                 .d = 64,
                 .heads = 8,
                 .threads = 2,
                 .min_reps = 3,
                 .max_reps = 9,
                 .min_time = 1.0,
                 .sparse = 0.1,
                 .out = "results/bench/masks.tsv" };
    parse_masks(&c, "causal,full,sliding:4096,prefix:0.25,document:8:equal,document:8,"
                    "document:8:longtail,chunked:2048");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        i++;
        int bad = 0;
        if (!strcmp(a, "--n"))
            bad = (c.n = atoi(v)) <= 0;
        else if (!strcmp(a, "--d"))
            bad = (c.d = atoi(v)) <= 0;
        else if (!strcmp(a, "--heads"))
            bad = (c.heads = atoi(v)) <= 0;
        else if (!strcmp(a, "--threads"))
            bad = (c.threads = atoi(v)) <= 0;
        else if (!strcmp(a, "--masks"))
            bad = parse_masks(&c, v) != 0;
        else if (!strcmp(a, "--sparse"))
            bad = !((c.sparse = atof(v)) >= 0.0 && c.sparse <= 1.0);
        else if (!strcmp(a, "--min-time"))
            bad = !((c.min_time = atof(v)) >= 0.0);
        else if (!strcmp(a, "--min-reps"))
            bad = (c.min_reps = atoi(v)) <= 0;
        else if (!strcmp(a, "--max-reps"))
            bad = (c.max_reps = atoi(v)) <= 0;
        else if (!strcmp(a, "--out"))
            c.out = v;
        else
            bad = 1;
        if (bad) {
            fprintf(stderr, "masks_bench: bad option %s %s\n", a, v);
            usage();
            return 2;
        }
    }
    char err[256];
    for (int m = 0; m < c.nmask; m++) { /* all specs valid before any work */
        ab_mask mk;
        if (ab_mask_make(&mk, c.masks[m], c.n, 1, err, sizeof err) != AB_OK) {
            fprintf(stderr, "masks_bench: --masks '%s': %s\n", c.masks[m], err);
            return 2;
        }
        ab_mask_free(&mk);
    }
    FILE *tsv = fopen(c.out, "w");
    if (!tsv) {
        perror(c.out);
        return 1;
    }
    omp_set_num_threads(c.threads);
    const size_t e = (size_t)c.heads * c.n * c.d;
    const size_t bytes = (e * sizeof(float) + 63) & ~(size_t)63; /* 64-byte aligned as in the harness */
    float *q = aligned_alloc(64, bytes), *k = aligned_alloc(64, bytes);
    float *v = aligned_alloc(64, bytes), *out = aligned_alloc(64, bytes);
    if (!q || !k || !v || !out) {
        fprintf(stderr, "masks_bench: out of memory\n");
        return 1;
    }
    uint64_t s = 12345;
    for (size_t i = 0; i < e; i++) {
        q[i] = (float)((double)(rng_next(&s) >> 40) * 0x1.0p-23 - 1.0);
        k[i] = (float)((double)(rng_next(&s) >> 40) * 0x1.0p-23 - 1.0);
        v[i] = (float)((double)(rng_next(&s) >> 40) * 0x1.0p-23 - 1.0);
    }
    double load[3] = { 0 };
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fscanf(lf, "%lf", &load[0]) != 1) load[0] = NAN;
        fclose(lf);
    }
    printf("masks_bench: N=%d d=%d heads=%d threads=%d min_time=%.2fs loadavg=%.2f\n", c.n, c.d, c.heads,
           c.threads, c.min_time, load[0]);
    fprintf(tsv, "# N=%d d=%d heads=%d threads=%d loadavg_start=%.2f\n", c.n, c.d, c.heads, c.threads,
            load[0]);
    const char *hdr = "kernel\tmask\tmask_density\twork_over_causal\treps\tmedian_s\tp10_s\tp90_s"
                      "\ttime_over_causal\tideal\tefficiency\n";
    fputs(hdr, tsv);
    printf("%s", hdr);
    double base[2] = { NAN, NAN };      /* causal time: flash, blocksparse */
    double base_work[2] = { NAN, NAN }; /* causal pairs computed per head */
    int failed = 0;
    /* causal first: every other mask is set against it */
    for (int pass = 0; pass < 2; pass++)
        for (int m = 0; m < c.nmask; m++) {
            const int is_causal = !strcmp(c.masks[m], "causal");
            if ((pass == 0) != is_causal) continue;
            ab_mask mk;
            if (ab_mask_make(&mk, c.masks[m], c.n, 1, err, sizeof err) != AB_OK) return 1;
            const double pairs = (double)ab_mask_pairs(&mk);
            ab_problem pb = { .s = { c.heads, c.n, c.d, mk.def->causal, (float)(1.0 / sqrt((double)c.d)),
                                     &mk },
                              .q = q,
                              .k = k,
                              .v = v,
                              .seed = 1,
                              .threads = c.threads };
            for (int kind = 0; kind < (c.sparse > 0 ? 2 : 1); kind++) {
                ab_layout l;
                if (kind && sparse_layout(&l, &pb.s, &mk, c.sparse, 7) != AB_OK) {
                    fprintf(stderr, "masks_bench: layout under %s failed\n", c.masks[m]);
                    ab_layout_free(&l);
                    failed = 1;
                    continue;
                }
                mb_time t;
                if (time_kernel(&c, &pb, kind ? &l : NULL, out, &t)) {
                    fprintf(stderr, "masks_bench: kernel under %s failed\n", c.masks[m]);
                    failed = 1;
                } else {
                    /* sparse: the work is the kept pairs, not the mask's */
                    const double work = kind ? (double)ab_layout_kept_pairs(&l) / c.heads : pairs;
                    if (is_causal) {
                        base[kind] = t.med;
                        base_work[kind] = work;
                    }
                    const double ratio = t.med / base[kind];
                    const double ideal = work / base_work[kind];
                    char line[512];
                    snprintf(line, sizeof line,
                             "%s\t%s\t%.4f\t%.4f\t%d\t%.6g\t%.6g\t%.6g\t%.4f\t%.4f\t%.3f\n",
                             kind ? "blocksparse" : "flash", c.masks[m], pairs / ((double)c.n * c.n), ideal,
                             t.reps, t.med, t.p10, t.p90, ratio, ideal, ideal / ratio);
                    fputs(line, tsv);
                    fputs(line, stdout);
                    fflush(stdout);
                }
                if (kind) ab_layout_free(&l);
            }
            ab_mask_free(&mk);
        }
    lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fscanf(lf, "%lf", &load[1]) != 1) load[1] = NAN;
        fclose(lf);
    }
    fprintf(tsv, "# loadavg_end=%.2f\n", load[1]);
    printf("loadavg at end %.2f; wrote %s\n", load[1], c.out);
    fclose(tsv);
    free(q);
    free(k);
    free(v);
    free(out);
    return failed;
}
