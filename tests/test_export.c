/* test_export.c — export, show, plot and the results page on a small
 * fixture results file (the paper-style figures of the README, "Figures").
 *
 * The fixture is written through the real store API: methods dense, window
 * (three densities), topk, lowrank (no recall) and broken (crashes only),
 * two tasks, two lengths, two seeds; some window points time out with absurd
 * latencies, so any failed row leaking into a figure file shows. Accuracies
 * are k/16 with their true Wilson intervals, so pooling can be checked. A
 * variant adds GPU points (the CPU vs GPU figure); another file carries
 * schema_version 0, written with the HDF5 API. Every point runs under the
 * causal base mask; the two-mask variant adds dense and window under a second
 * mask (document:4) with other latencies (dense x0.3, window x0.5) and
 * mask_density 1/4 of causal's, so a figure that mixed masks, or a speedup
 * over the other mask's dense, would show in the numbers. These points carry
 * no paired ratio (rel_dense 0), so speedups take the fallback path.
 * A second fixture (fx_timing) follows the timing protocol: paired ratios
 * with intervals, an old-style row without one, untimed (scored-only) points
 * with absurd latencies, a calib_failed cell: untimed points must never reach
 * a timing file, paired speedups carry their interval, and the break-even
 * map says what each cell is.
 */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness/cli/cli.h"
#include "harness/engine/metrics.h"
#include "harness/store/point.h"
#include "harness/store/store.h"

#define FAILED_MS  1.0e6 /* latency of every failed fixture point */
#define DOC_DENSE  0.3   /* latency of dense under the second mask / under causal */
#define DOC_WINDOW 0.5   /* the same for window */
#define DOC_PAIRS  0.25  /* allowed pairs of the second mask / causal's */

typedef struct fixture {
    char dir[64];  /* mkdtemp directory */
    char h5[128];  /* results file */
    char out[128]; /* export/plot directory */
} fixture;

static int fx_topk_block; /* 0: topk on 64 x 64 like the rest */
static const char *fx_bw; /* fx_timing: the file's stream_triad_gbs (NULL: none) */

static void fx_point(ab_point *p, int *serial, const char *method, const char *task, int n, int seed,
                     double target, const char *status)
{
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%016x", (unsigned)++*serial * 2654435761u);
    snprintf(p->method, sizeof p->method, "%s", method);
    snprintf(p->params, sizeof p->params, "target=%g", target);
    snprintf(p->device, sizeof p->device, "cpu");
    snprintf(p->dtype, sizeof p->dtype, "fp32");
    snprintf(p->task, sizeof p->task, "%s", task);
    snprintf(p->kernel, sizeof p->kernel, "block");
    snprintf(p->layout, sizeof p->layout, "block");
    /* blocks: 64 x 64, or fx_topk_block for topk (the legend test) */
    p->block_q = strcmp(method, "topk") == 0 && fx_topk_block ? fx_topk_block : 64;
    p->block_k = p->block_q;
    p->seq_len = n;
    p->heads = 4;
    p->head_dim = 64;
    p->causal = 1;
    snprintf(p->mask, sizeof p->mask, "causal");
    p->mask_density = (n + 1.0) / (2.0 * n);
    p->threads = 4;
    p->seed = seed;
    p->depth = 0.5;
    p->target_density = target;
    p->knob_value = strcmp(method, "dense") == 0 ? NAN : target * 1.7;
    p->achieved_density = target * (1.0 + 0.01 * seed) / 1.02;
    p->select_flops = strcmp(method, "dense") == 0 ? 0.0 : 1e6 * n * target;
    p->select_bytes = strcmp(method, "dense") == 0 ? NAN : 4.0 * n * 64;
    double dense_ms = 0.25 * (n / 1024.0) * (n / 1024.0) * (1.0 + 0.1 * seed) / 3.0;
    p->total_ms = dense_ms * (strcmp(method, "dense") == 0 ? 1.0 : (0.05 + target));
    p->select_ms = p->total_ms / 7.0;
    p->run_ms = p->total_ms - p->select_ms;
    p->min_ms = p->total_ms * 0.9;
    p->p10_ms = p->total_ms * 0.95;
    p->p90_ms = p->total_ms * 1.1;
    p->cv = 0.0123456789;
    p->n_samples = 3;
    p->sample_run_ms[0] = p->run_ms;
    p->dense_gflops = 12.5 + seed;
    double rec = strcmp(method, "lowrank") == 0 ? NAN : (target >= 1 ? 1.0 : 0.6 + 0.3 * target / 0.2);
    p->recall_mass = rec;
    p->recall_topk = isnan(rec) ? NAN : rec * 0.97;
    p->rel_l2_err = 1e-7 / (target + 1e-3);
    p->max_abs_err = 3e-6;
    int k = target >= 0.1 ? 16 : 12; /* of 16 answers */
    p->accuracy = k / 16.0;
    ab_wilson(k, 16, &p->acc_ci_lo, &p->acc_ci_hi);
    p->acc_trials = 16;
    p->rows_scored = 16;
    snprintf(p->status, sizeof p->status, "%s", status);
    if (strcmp(status, "ok") != 0) {
        p->total_ms = p->p10_ms = p->p90_ms = FAILED_MS;
        p->recall_mass = p->accuracy = 0.123;
        snprintf(p->message, sizeof p->message, "child %s\tafter 5 s", status);
    }
}

/* Move a fixture point to the second base mask (its latencies scaled). */
static void fx_mask2(ab_point *p, const char *mask2)
{
    double k = strcmp(p->method, "dense") == 0 ? DOC_DENSE : DOC_WINDOW;
    snprintf(p->mask, sizeof p->mask, "%s", mask2);
    p->mask_density *= DOC_PAIRS;
    if (strcmp(p->status, "ok") == 0) {
        p->total_ms *= k;
        p->select_ms *= k;
        p->run_ms *= k;
        p->p10_ms *= k;
        p->p90_ms *= k;
        p->min_ms *= k;
    }
}

static void fx_write(const char *path, int with_ok, int with_gpu, const char *mask2)
{
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_env_set(&env, "host", "testhost");
    ab_env_set(&env, "cpu_model", "Test CPU @ 3 GHz");
    ab_env_set(&env, "threads", "4");
    ab_env_set(&env, "git_sha", "0123456789abcdef");
    ab_env_set(&env, "created_utc", "2025-01-02T03:04:05Z");
    ab_store *st = NULL;
    char err[256] = "";
    cr_assert_eq(ab_store_open(path, &env, 0, &st, err, sizeof err), 0, "%s", err);
    static const char *const tasks[] = { "needle", "passkey" };
    static const int lens[] = { 1024, 4096 };
    static const double wt[] = { 0.05, 0.1, 0.2 };
    int serial = 0;
    ab_point *p = malloc(sizeof *p);
    cr_assert(p);
    for (int t = 0; t < 2; t++)
        for (int l = 0; l < 2; l++)
            for (int seed = 1; seed <= 2; seed++) {
                if (with_ok) {
                    fx_point(p, &serial, "dense", tasks[t], lens[l], seed, 1.0, "ok");
                    cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
                    for (int k = 0; k < 3; k++) {
                        fx_point(p, &serial, "window", tasks[t], lens[l], seed, wt[k], "ok");
                        cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
                    }
                    fx_point(p, &serial, "topk", tasks[t], lens[l], seed, 0.1, "ok");
                    cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
                    fx_point(p, &serial, "lowrank", tasks[t], lens[l], seed, 0.2, "ok");
                    cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
                }
                if (with_ok && with_gpu) { /* the same workloads, 20x faster */
                    static const char *const gm[] = { "dense", "window" };
                    for (int k = 0; k < 2; k++) {
                        fx_point(p, &serial, gm[k], tasks[t], lens[l], seed, k ? 0.1 : 1.0, "ok");
                        snprintf(p->device, sizeof p->device, "gpu");
                        p->total_ms /= 20;
                        p->p10_ms /= 20;
                        p->p90_ms /= 20;
                        cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
                    }
                }
                fx_point(p, &serial, "window", tasks[t], lens[l], seed + 10, 0.1, "timeout");
                cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
                fx_point(p, &serial, "broken", tasks[t], lens[l], seed, 0.1, "crashed");
                cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
                if (mask2 && with_ok) { /* dense and window (3 densities) under mask2 */
                    for (int k = 0; k < 4; k++) {
                        fx_point(p, &serial, k ? "window" : "dense", tasks[t], lens[l], seed,
                                 k ? wt[k - 1] : 1.0, "ok");
                        fx_mask2(p, mask2);
                        cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
                    }
                }
                if (mask2) {
                    fx_point(p, &serial, "window", tasks[t], lens[l], seed + 20, 0.1, "oom");
                    fx_mask2(p, mask2);
                    cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
                }
            }
    free(p);
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
}

static void fx_make3(fixture *fx, int with_ok, int with_gpu, const char *mask2)
{
    snprintf(fx->dir, sizeof fx->dir, "/tmp/ab_export_XXXXXX");
    cr_assert(mkdtemp(fx->dir));
    snprintf(fx->h5, sizeof fx->h5, "%s/run.h5", fx->dir);
    snprintf(fx->out, sizeof fx->out, "%s/fig/sub", fx->dir);
    fx_write(fx->h5, with_ok, with_gpu, mask2);
}

static void fx_make(fixture *fx, int with_ok) { fx_make3(fx, with_ok, 0, NULL); }

static void fx_clean(const fixture *fx)
{
    if (getenv("AB_TEST_KEEP")) { /* to look at the figures */
        fprintf(stderr, "kept %s\n", fx->dir);
        return;
    }
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    cr_assert_eq(system(cmd), 0);
}

static int run_cmd(int (*cmd)(int, char **), int argc, const char *const *args)
{
    char *argv[16];
    for (int i = 0; i < argc; i++) argv[i] = (char *)args[i];
    argv[argc] = NULL;
    return cmd(argc, argv);
}

/* Run with stdout and stderr sent to files; returns the exit code. */
static int run_captured(int (*cmd)(int, char **), int argc, const char *const *args, const char *out_path,
                        const char *err_path)
{
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(so >= 0 && se >= 0 && fo >= 0 && fe >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    int rc = run_cmd(cmd, argc, args);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    close(fo);
    close(fe);
    return rc;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    cr_assert(buf);
    size_t got = fread(buf, 1, (size_t)len, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void export_to(const fixture *fx, const char *dir)
{
    const char *args[] = { "export", fx->h5, "-d", dir };
    cr_assert_eq(run_cmd(ab_cmd_export, 4, args), 0);
}

/* Split a line at tabs in place; returns the field count. */
static int split_tabs(char *line, char **f, int max)
{
    int n = 0;
    char *s = line;
    while (n < max) {
        f[n++] = s;
        char *t = strchr(s, '\t');
        if (!t) break;
        *t = '\0';
        s = t + 1;
    }
    return n;
}

static void expect_num(const char *field, double want, const char *col)
{
    char *end;
    double got = strtod(field, &end);
    cr_assert(*end == '\0', "column %s: '%s' is not a number", col, field);
    if (isnan(want))
        cr_assert(isnan(got) && strcmp(field, "nan") == 0, "%s: %s", col, field);
    else
        cr_assert(got == want, "column %s: %s != %.17g", col, field, want);
}

Test(export, points_tsv_equals_file)
{
    fixture fx;
    fx_make(&fx, 1);
    export_to(&fx, fx.out);
    ab_point *pts = NULL;
    size_t n = 0;
    char err[256];
    cr_assert_eq(ab_results_read(fx.h5, &pts, &n, NULL, err, sizeof err), 0, "%s", err);

    char path[200];
    snprintf(path, sizeof path, "%s/points.tsv", fx.out);
    char *text = slurp(path);
    cr_assert(text);
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    cr_assert(line && strncmp(line, "key\tmethod\t", 11) == 0);
    size_t rows = 0;
    while ((line = strtok_r(NULL, "\n", &save))) {
        char *f[80];
        int nf = split_tabs(line, f, 80);
        cr_assert_eq(nf, 75, "row %zu has %d fields", rows, nf);
        const ab_point *p = NULL;
        for (size_t i = 0; i < n && !p; i++)
            if (strcmp(pts[i].key, f[0]) == 0) p = &pts[i];
        cr_assert(p, "key %s not in the file", f[0]);
        cr_assert_str_eq(f[1], p->method);
        cr_assert_str_eq(f[5], p->task);
        expect_num(f[8], p->seq_len, "seq_len");
        expect_num(f[11], p->causal, "causal");
        cr_assert_str_eq(f[12], p->mask, "mask");
        expect_num(f[13], p->mask_density, "mask_density");
        expect_num(f[15], (double)p->seed, "seed");
        const double want[] = { p->depth,     p->target_density, p->knob_value, p->achieved_density,
                                p->select_ms, p->run_ms,         p->total_ms,   p->min_ms,
                                p->p10_ms,    p->p90_ms,         p->cv };
        for (int k = 0; k < 11; k++) expect_num(f[16 + k], want[k], "timing");
        expect_num(f[27], p->n_samples, "n_samples");
        const double want2[] = { p->dense_gflops, p->recall_mass, p->recall_topk, p->rel_l2_err,
                                 p->max_abs_err,  p->accuracy,    p->acc_ci_lo,   p->acc_ci_hi };
        for (int k = 0; k < 8; k++) expect_num(f[28 + k], want2[k], "metric");
        expect_num(f[36], p->acc_trials, "acc_trials");
        expect_num(f[37], p->rows_scored, "rows_scored");
        cr_assert_str_eq(f[38], p->status);
        char msg[64];
        snprintf(msg, sizeof msg, "child %s after 5 s", p->status);
        cr_assert_str_eq(f[39], strcmp(p->status, "ok") ? msg : "", "tab in message kept out");
        /* the timing protocol's columns; speedup = 1 / rel_dense, nan when
         * rel_dense is not a positive number (0 in this fixture) */
        expect_num(f[40], p->rounds, "rounds");
        expect_num(f[41], p->calls, "calls");
        const double want3[] = { p->total_lo_ms,
                                 p->total_hi_ms,
                                 p->dense_pair_ms,
                                 p->rel_dense,
                                 p->rel_lo,
                                 p->rel_hi,
                                 NAN,
                                 NAN,
                                 NAN,
                                 p->foreign_pct,
                                 p->steal_pct,
                                 p->load1 };
        for (int k = 0; k < 12; k++) expect_num(f[42 + k], want3[k], "timing protocol");
        cr_assert_str_eq(f[54], p->timing);
        expect_num(f[55], p->point_s, "point_s");
        expect_num(f[56], p->fma_gflops, "fma_gflops");
        expect_num(f[57], p->shared_pct, "shared_pct");
        expect_num(f[58], p->block_q, "block_q");
        expect_num(f[59], p->block_k, "block_k");
        expect_num(f[60], p->select_flops, "select_flops");
        expect_num(f[61], p->select_bytes, "select_bytes");
        rows++;
    }
    cr_assert_eq(rows, n);
    free(text);
    free(pts);
    fx_clean(&fx);
}

/* Every data row of a figure file: its method (column mcol) and numbers. */
static void check_figure(const char *dir, const char *name, int mcol, int *rows_out)
{
    char path[200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = slurp(path);
    cr_assert(text, "%s missing", name);
    cr_assert(strstr(text, "# columns:"), "%s: no column comment", name);
    int rows = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            if (strncmp(line, "# method ", 9) == 0)
                cr_assert(strcmp(line + 9, "broken") != 0, "%s: block for a failed-only method", name);
            continue;
        }
        char *f[16];
        int nf = split_tabs(line, f, 16);
        cr_assert(nf > mcol, "%s: short row", name);
        cr_assert(strcmp(f[mcol], "broken") != 0);
        for (int k = 0; k < nf; k++) {
            double v = strtod(f[k], NULL);
            cr_assert(v != FAILED_MS && strcmp(f[k], "0.123") != 0, "%s: a failed point leaked in: %s", name,
                      f[k]);
        }
        rows++;
    }
    free(text);
    *rows_out = rows;
}

Test(export, figure_files_hold_ok_rows_only)
{
    fixture fx;
    fx_make(&fx, 1);
    export_to(&fx, fx.out);
    int r;
    check_figure(fx.out, "latency_vs_n.tsv", 7, &r);
    cr_assert_eq(r, 4 * 2, "4 methods x 2 lengths, got %d", r); /* dense window topk lowrank */
    check_figure(fx.out, "recall_vs_density.tsv", 5, &r);
    cr_assert_eq(r, 2 + 3 * 2 + 2, "lowrank has no recall, got %d", r);
    check_figure(fx.out, "accuracy_vs_density.tsv", 7, &r);
    cr_assert_eq(r, 2 * (2 + 6 + 2 + 2), "got %d", r);
    check_figure(fx.out, "speedup_vs_density.tsv", 5, &r);
    cr_assert_eq(r, 3 * 2 + 2 + 2, "got %d", r);

    char path[200];
    snprintf(path, sizeof path, "%s/methods.txt", fx.out);
    char *m = slurp(path);
    /* name, family ("-": the fixture's points name none, as a file written
     * before ABI 6), colour (family position; 8 unknown), marker (place in it) */
    cr_assert_str_eq(m,
                     "dense\t-\t8\t1\nbroken\t-\t8\t2\nlowrank\t-\t8\t3\ntopk\t-\t8\t4\nwindow\t-\t8\t5\n");
    free(m);
    snprintf(path, sizeof path, "%s/meta.txt", fx.out);
    m = slurp(path);
    cr_assert(strstr(m, "host\ttesthost\n") && strstr(m, "threads\t4\n"));
    cr_assert(strstr(m, "git_sha\t0123456789abcdef\n"));
    cr_assert(strstr(m, "n_points\t64\n") && strstr(m, "n_failed\t16\n"));
    cr_assert(strstr(m, "n_failed_crashed\t8\n") && strstr(m, "n_failed_timeout\t8\n"));
    free(m);

    /* latency: window is taken at 0.1, dense at 1.0; total = median over
     * tasks and seeds (seed 1 and 2 give dense 0.25*(1.1, 1.2)/3) */
    snprintf(path, sizeof path, "%s/latency_vs_n.tsv", fx.out);
    char *t = slurp(path);
    char *w = strstr(t, "# method window\n");
    cr_assert(w);
    double n, ms, lo, hi, ach, np, tgt;
    cr_assert_eq(sscanf(w + 16, "%lf %lf %lf %lf %lf %lf %lf", &n, &ms, &lo, &hi, &ach, &np, &tgt), 7);
    cr_assert_eq(n, 1024);
    cr_assert_eq(tgt, 0.1);
    cr_assert_eq(np, 4);
    cr_assert_float_eq(ms, 0.25 * 1.15 / 3.0 * 0.15, 1e-12);
    char *d = strstr(t, "# method dense\n");
    cr_assert(d && d < w, "dense block first");
    cr_assert_eq(sscanf(d + 15, "%lf %lf %lf %lf %lf %lf %lf", &n, &ms, &lo, &hi, &ach, &np, &tgt), 7);
    cr_assert_eq(tgt, 1.0);
    free(t);

    /* speedup of topk = dense / topk = 1 / 0.15 on every workload */
    snprintf(path, sizeof path, "%s/speedup_vs_density.tsv", fx.out);
    t = slurp(path);
    cr_assert(!strstr(t, "# method dense"));
    char *k = strstr(t, "# method topk\n");
    cr_assert(k);
    double dens, sp;
    cr_assert_eq(sscanf(k + 14, "%lf %lf", &dens, &sp), 2);
    cr_assert_float_eq(sp, 1.0 / 0.15, 1e-9);
    free(t);
    fx_clean(&fx);
}

Test(export, deterministic)
{
    fixture fx;
    fx_make(&fx, 1);
    char a[160], b[160];
    snprintf(a, sizeof a, "%s/a", fx.dir);
    snprintf(b, sizeof b, "%s/b", fx.dir);
    export_to(&fx, a);
    export_to(&fx, b);
    static const char *const files[] = { "points.tsv",
                                         "latency_vs_n.tsv",
                                         "recall_vs_density.tsv",
                                         "accuracy_vs_density.tsv",
                                         "speedup_vs_density.tsv",
                                         "accuracy_vs_latency.tsv",
                                         "needle_heatmap.tsv",
                                         "overhead_share.tsv",
                                         "cpu_vs_gpu.tsv",
                                         "summary.tsv",
                                         "breakeven.tsv",
                                         "selectors.tsv",
                                         "methods.txt",
                                         "meta.txt",
                                         "masks.txt",
                                         "dense_vs_mask.tsv" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char pa[200], pb[200];
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
        char *x = slurp(pa), *y = slurp(pb);
        cr_assert(x && y);
        cr_assert_str_eq(x, y, "%s differs between two exports", files[i]);
        free(x);
        free(y);
    }
    fx_clean(&fx);
}

static const char *const FIGS[] = {
    "latency_vs_n",        "speedup_vs_density", "recall_vs_density", "accuracy_vs_density",
    "accuracy_vs_latency", "needle_heatmap",     "overhead_share",    "cpu_vs_gpu",
    "dense_vs_mask",       "breakeven",          "selectors"
};
#define N_FIGS (sizeof FIGS / sizeof FIGS[0])

/* Is figure i drawn for the fixture (mask: 0 the primary copy, 1 the second
 * mask's NAME--document_4 copy)? */
static int fig_wanted(size_t i, int with_ok, int with_gpu, const char *mask2, int mask)
{
    if (!with_ok) return 0;
    if (strcmp(FIGS[i], "cpu_vs_gpu") == 0) return with_gpu && !mask;
    if (strcmp(FIGS[i], "dense_vs_mask") == 0) return mask2 && !mask; /* one across masks */
    return !mask || mask2;
}

/* plot the fixture; every figure drawn (cpu_vs_gpu only with GPU points,
 * dense_vs_mask and the NAME--SLUG copies only with a second mask), nothing
 * on stderr (gnuplot warnings included), index.html written */
static void check_plot(int with_ok, int with_gpu, const char *mask2)
{
    fixture fx;
    fx_make3(&fx, with_ok, with_gpu, mask2);
    char out[200], err[200];
    snprintf(out, sizeof out, "%s/plot.out", fx.dir);
    snprintf(err, sizeof err, "%s/plot.err", fx.dir);
    /* two masks: SVG only (half the gnuplot runs; its text can be read) */
    const char *fmts = mask2 ? "svg" : "png,svg";
    const char *args[] = { "plot", fx.h5, "-d", fx.out, "--format", fmts, "--no-gallery" };
    int rc = run_captured(ab_cmd_plot, 7, args, out, err);
    char *e = slurp(err), *o = slurp(out);
    cr_assert_eq(rc, 0, "plot exit %d; stderr: %s", rc, e);
    cr_assert_str_eq(e, "", "gnuplot or plot wrote on stderr:\n%s", e);
    for (size_t i = 0; i < N_FIGS; i++)
        for (int mk = 0; mk < 2; mk++) {
            int want = fig_wanted(i, with_ok, with_gpu, mask2, mk);
            char name[120];
            snprintf(name, sizeof name, "%s%s", FIGS[i], mk ? "--document_4" : "");
            for (int k = 0; k < 2; k++) {
                char path[300];
                snprintf(path, sizeof path, "%s/%s.%s", fx.out, name, k ? "svg" : "png");
                if (want && (k == 1 || !mask2)) {
                    cr_assert_gt(file_size(path), 1000, "%s missing or tiny", path);
                    cr_assert(strstr(o, path), "%s not listed in: %s", path, o);
                } else {
                    cr_assert_eq(file_size(path), -1, "%s drawn without data", path);
                }
            }
            if (!want && (!mk || mask2) && strcmp(FIGS[i], "dense_vs_mask") != 0) {
                char note[160];
                snprintf(note, sizeof note, "note: skipped %s: ", name);
                cr_assert(strstr(o, note), "no note for %s: %s", name, o);
            }
        }
    char path[240];
    snprintf(path, sizeof path, "%s/index.html", fx.out);
    char *html = slurp(path);
    cr_assert(html, "no index.html");
    cr_assert(!strstr(html, "<script") && !strstr(html, "http://") && !strstr(html, "https://"),
              "index.html must be static");
    cr_assert(strstr(html, "testhost") && strstr(html, "0123456789abcdef"));
    cr_assert(strstr(html, "<code>timeout</code>"), "left-out count missing");
    cr_assert(strstr(html, "Mask gallery") && strstr(html, "--no-gallery"));
    for (size_t i = 0; i < N_FIGS; i++)
        for (int mk = 0; mk < 2; mk++) {
            char img[160];
            snprintf(img, sizeof img, "src=\"%s%s.%s\"", FIGS[i], mk ? "--document_4" : "",
                     mask2 ? "svg" : "png");
            int want = fig_wanted(i, with_ok, with_gpu, mask2, mk);
            cr_assert_eq(strstr(html, img) != NULL, want, "%s in index.html: %d", img, want);
        }
    if (with_ok && !mask2) {
        snprintf(path, sizeof path, "%s/latency_vs_n.png", fx.out);
        char *b = slurp(path);
        cr_assert(memcmp(b, "\x89PNG", 4) == 0);
        free(b);
        /* the SVG carries both footnote lines */
        snprintf(path, sizeof path, "%s/speedup_vs_density.svg", fx.out);
        b = slurp(path);
        cr_assert(strstr(b, "commit: 0123456789abcdef"), "footnote line 1");
        cr_assert(strstr(b, "mask: causal   left out: 16 of"), "footnote line 2");
        cr_assert(strstr(b, "crashed 8, timeout 8"), "footnote statuses");
        cr_assert(!strstr(b, "base mask:"), "no mask in the title of a causal-only file");
        free(b);
        cr_assert(strstr(html, "<table class=sum>") && strstr(html, ">window</td>"));
        cr_assert(!strstr(html, "id=\"dense_vs_mask\""), "no dense-vs-mask section with one mask");
    } else if (with_ok) {
        /* each mask's figure names its mask in the title and the footnote, and
         * counts the points left out under it only (8 crashed + 8 timeout
         * under causal, 8 oom under document:4) */
        snprintf(path, sizeof path, "%s/speedup_vs_density.svg", fx.out);
        char *b = slurp(path);
        cr_assert(strstr(b, "[base mask: causal]"), "title names the mask");
        free(b);
        snprintf(path, sizeof path, "%s/latency_vs_n.svg", fx.out);
        b = slurp(path);
        cr_assert(strstr(b, ">base mask: causal<"), "title names the mask");
        cr_assert(strstr(b, "mask: causal   left out: 16 of 64 points under this mask not ok "
                            "(crashed 8, timeout 8)"),
                  "footnote of the primary mask");
        free(b);
        snprintf(path, sizeof path, "%s/latency_vs_n--document_4.svg", fx.out);
        b = slurp(path);
        cr_assert(strstr(b, ">base mask: document:4<"), "title names the mask");
        cr_assert(strstr(b, "mask: document:4   left out: 8 of 40 points under this mask not ok "
                            "(oom 8)"),
                  "footnote of the second mask");
        free(b);
        snprintf(path, sizeof path, "%s/dense_vs_mask.svg", fx.out);
        b = slurp(path);
        cr_assert(strstr(b, "masks: causal, document:4   left out: 24 of 104 points not ok"),
                  "footnote across masks");
        free(b);
        cr_assert(strstr(html, "id=\"masks\"") && strstr(html, "<code>document:4</code>"), "base mask table");
        cr_assert(strstr(html, "<th>base mask</th>"), "mask column in the method table");
        cr_assert(strstr(html, "id=\"latency_vs_n--document_4\""), "per-mask figure anchor");
    } else {
        cr_assert(strstr(html, "Not drawn: "), "skipped figures say so");
    }
    free(html);
    free(e);
    free(o);
    fx_clean(&fx);
}

Test(plot, every_figure_without_warnings) { check_plot(1, 0, NULL); }

Test(plot, cpu_and_gpu) { check_plot(1, 1, NULL); }

Test(plot, failed_only_file_still_plots) { check_plot(0, 0, NULL); }

Test(plot, two_masks_drawn_apart) { check_plot(1, 0, "document:4"); }

/* Pooled accuracy: window at 0.05 on one (task, N) has 2 seeds x 12/16, so
 * 24/32 with the Wilson interval of (24, 32); the answer counts are
 * recovered from the stored intervals. */
Test(export, accuracy_pooled_from_counts)
{
    fixture fx;
    fx_make(&fx, 1);
    export_to(&fx, fx.out);
    char path[200];
    snprintf(path, sizeof path, "%s/accuracy_vs_density.tsv", fx.out);
    char *t = slurp(path);
    char *w = strstr(t, "# method window\n");
    cr_assert(w);
    double dens, acc, lo, hi;
    cr_assert_eq(sscanf(w + 16, "%lf %lf %lf %lf", &dens, &acc, &lo, &hi), 4);
    double wl, wh;
    ab_wilson(24, 32, &wl, &wh);
    cr_assert_float_eq(acc, 0.75, 1e-15);
    cr_assert_float_eq(lo, wl, 1e-12);
    cr_assert_float_eq(hi, wh, 1e-12);
    free(t);
    /* accuracy_vs_latency: the window front; heatmap: one cell per (N, depth) */
    snprintf(path, sizeof path, "%s/accuracy_vs_latency.tsv", fx.out);
    t = slurp(path);
    w = strstr(t, "# method window\n");
    cr_assert(w);
    double ms, a2, l2, h2, d2, front;
    cr_assert_eq(sscanf(w + 16, "%lf %lf %lf %lf %lf %lf", &ms, &a2, &l2, &h2, &d2, &front), 6);
    cr_assert_eq(front, 1, "the fastest setting is on the front");
    free(t);
    snprintf(path, sizeof path, "%s/needle_heatmap.tsv", fx.out);
    t = slurp(path);
    cr_assert(strstr(t, "# method dense\n0\t0\t1\t1024\t0.5\t"), "%s", t);
    cr_assert(strstr(t, "\n1\t0\t1\t4096\t0.5\t"), "%s", t);
    free(t);
    snprintf(path, sizeof path, "%s/summary.tsv", fx.out);
    t = slurp(path);
    cr_assert(strstr(t, "\nbroken\tcpu\tblock\tblock\t8\t0\tcrashed:8\t0\tnan\tnan\tnan"), "%s", t);
    cr_assert(strstr(t, "\nwindow\tcpu\tblock\tblock\t32\t24\ttimeout:8\t4096\t0.1\t"), "%s", t);
    free(t);
    fx_clean(&fx);
}

/* The numbers of points.tsv against /points read with the HDF5 API itself
 * (not the attnbench reader). */
Test(export, points_tsv_equals_hdf5)
{
    fixture fx;
    fx_make(&fx, 1);
    export_to(&fx, fx.out);
    typedef struct {
        char key[24];
        int seq_len;
        double total_ms, accuracy, recall_mass;
    } row;
    hid_t f = H5Fopen(fx.h5, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t ds = H5Dopen2(f, "points", H5P_DEFAULT);
    cr_assert(ds >= 0);
    hid_t sp = H5Dget_space(ds);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(sp, &n, NULL);
    cr_assert_eq(n, 64);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, sizeof((row *)0)->key);
    hid_t mt = H5Tcreate(H5T_COMPOUND, sizeof(row));
    H5Tinsert(mt, "key", offsetof(row, key), st);
    H5Tinsert(mt, "seq_len", offsetof(row, seq_len), H5T_NATIVE_INT);
    H5Tinsert(mt, "total_ms", offsetof(row, total_ms), H5T_NATIVE_DOUBLE);
    H5Tinsert(mt, "accuracy", offsetof(row, accuracy), H5T_NATIVE_DOUBLE);
    H5Tinsert(mt, "recall_mass", offsetof(row, recall_mass), H5T_NATIVE_DOUBLE);
    row *r = calloc(n, sizeof *r);
    cr_assert(H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, r) >= 0);
    H5Tclose(mt);
    H5Tclose(st);
    H5Sclose(sp);
    H5Dclose(ds);
    H5Fclose(f);

    char path[200];
    snprintf(path, sizeof path, "%s/points.tsv", fx.out);
    char *text = slurp(path), *save = NULL;
    strtok_r(text, "\n", &save); /* header */
    size_t rows = 0;
    for (char *line; (line = strtok_r(NULL, "\n", &save)); rows++) {
        char *fl[80];
        cr_assert_eq(split_tabs(line, fl, 80), 75);
        const row *x = NULL;
        for (size_t i = 0; i < n && !x; i++)
            if (strcmp(r[i].key, fl[0]) == 0) x = &r[i];
        cr_assert(x, "key %s not in /points", fl[0]);
        expect_num(fl[8], x->seq_len, "seq_len");
        expect_num(fl[22], x->total_ms, "total_ms");
        expect_num(fl[29], x->recall_mass, "recall_mass");
        expect_num(fl[33], x->accuracy, "accuracy");
    }
    cr_assert_eq(rows, n);
    free(text);
    free(r);
    fx_clean(&fx);
}

/* A results file from an older schema: every reader says so in one line. */
Test(export_cli, older_schema_is_named)
{
    fixture fx;
    snprintf(fx.dir, sizeof fx.dir, "/tmp/ab_export_XXXXXX");
    cr_assert(mkdtemp(fx.dir));
    snprintf(fx.h5, sizeof fx.h5, "%s/old.h5", fx.dir);
    snprintf(fx.out, sizeof fx.out, "%s/fig", fx.dir);
    hid_t f = H5Fcreate(fx.h5, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "schema_version", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT);
    int zero = 0;
    cr_assert(H5Awrite(a, H5T_NATIVE_INT, &zero) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Fclose(f);
    char out[200], err[200];
    snprintf(out, sizeof out, "%s/o", fx.dir);
    snprintf(err, sizeof err, "%s/e", fx.dir);
    const char *cases[][7] = { { "export", fx.h5, "-d", fx.out },
                               { "show", fx.h5 },
                               { "plot", fx.h5, "-d", fx.out, "--no-gallery" } };
    for (size_t i = 0; i < 3; i++) {
        int argc = 0;
        while (argc < 7 && cases[i][argc]) argc++;
        int (*cmd)(int, char **) = i == 0 ? ab_cmd_export : i == 1 ? ab_cmd_show : ab_cmd_plot;
        cr_assert_eq(run_captured(cmd, argc, cases[i], out, err), 2, "%s", cases[i][0]);
        char *e = slurp(err);
        cr_assert(strstr(e, "schema version 0") && strstr(e, "reads 1"), "%s: %s", cases[i][0], e);
        cr_assert(strchr(e, '\n') == e + strlen(e) - 1, "one line: %s", e);
        free(e);
    }
    cr_assert_eq(file_size(fx.out), -1, "nothing written");
    fx_clean(&fx);
}

Test(show, markdown)
{
    fixture fx;
    fx_make(&fx, 1);
    char out[200], err[200];
    snprintf(out, sizeof out, "%s/show.out", fx.dir);
    snprintf(err, sizeof err, "%s/show.err", fx.dir);
    const char *args[] = { "show", fx.h5, "--format", "md", "--filter", "seq_len=4096", "--sort", "-ms" };
    cr_assert_eq(run_captured(ab_cmd_show, 8, args, out, err), 0);
    char *o = slurp(out);
    cr_assert(strstr(o, "- host: testhost\n"), "%s", o);
    char *h = strstr(o, "\n| method ");
    cr_assert(h, "%s", o);
    /* header, separator, then one row per (method, target): dense, window x3,
     * topk, lowrank, broken; every table line starts and ends with a pipe */
    int lines = 0;
    for (char *s = h + 1; *s; lines++) {
        char *nl = strchr(s, '\n');
        cr_assert(nl);
        cr_assert(s[0] == '|' && nl[-1] == '|', "line %d: %.*s", lines, (int)(nl - s), s);
        if (lines == 1) cr_assert(strncmp(s, "|:-", 3) == 0, "separator: %.*s", (int)(nl - s), s);
        s = nl + 1;
    }
    cr_assert_eq(lines, 2 + 7, "%s", o);
    /* sorted by latency, slowest first; the failed-only row (no ms) last */
    char *dense = strstr(h, "| dense "), *broken = strstr(h, "| broken ");
    cr_assert(dense && broken && dense < broken);
    char *row1 = strchr(strchr(h + 1, '\n') + 1, '\n') + 1;
    cr_assert(strncmp(row1, "| dense ", 8) == 0, "dense is the slowest: %s", row1);
    free(o);
    fx_clean(&fx);
}

Test(show, tsv_rows)
{
    fixture fx;
    fx_make(&fx, 1);
    char out[200], err[200];
    snprintf(out, sizeof out, "%s/show.out", fx.dir);
    snprintf(err, sizeof err, "%s/show.err", fx.dir);
    const char *args[] = { "show", fx.h5,      "--format",
                           "tsv",  "--filter", "method=window,method=broken,seq_len=1024" };
    cr_assert_eq(run_captured(ab_cmd_show, 6, args, out, err), 0);
    char *o = slurp(out);
    cr_assert(strstr(o, "# host\ttesthost\n"), "%s", o);
    cr_assert(strstr(o, "# commit\t0123456789abcdef\n"));
    cr_assert(strstr(o,
                     "\nmethod\tmask\tseq_len\ttarget\tms\tspeedup\tdensity\trecall\taccuracy\tok\tfailed\t"
                     "timing\tspeedup_lo\tspeedup_hi\tpaired\tms_lo\tms_hi\ttimed\n"));
    /* window at 0.1 on 1024: 4 ok, 4 timeouts; speedup 1/0.15 */
    char want[256];
    snprintf(want, sizeof want, "\nwindow\tcausal\t1024\t0.1\t%.6g\t%.6g\t", 0.25 * 1.15 / 3.0 * 0.15,
             1.0 / 0.15);
    cr_assert(strstr(o, want), "no '%s' in:\n%s", want + 1, o);
    /* fallback speedup (the fixture has no paired ratio): no interval, paired 0 */
    cr_assert(strstr(o, "\t1\t4\ttimeout:4\t-\tnan\tnan\t0\t0\t0\t4\n"), "%s", o);
    cr_assert(strstr(o, "\nbroken\tcausal\t1024\t0.1\tnan\tnan\tnan\tnan\tnan\t0\tcrashed:4\t-\t"
                        "nan\tnan\t0\tnan\tnan\t0\n"),
              "%s", o);
    cr_assert(!strstr(o, "\ndense\t"), "filtered out");
    cr_assert(!strstr(o, "\t4096\t"), "filtered out");
    /* rows: window x3 densities, broken x1 */
    int rows = 0;
    for (char *s = strstr(o, "\nmethod\t") + 1; (s = strchr(s, '\n')) && s[1]; s++) rows++;
    cr_assert_eq(rows, 4, "%s", o);
    free(o);

    const char *sorted[] = { "show", fx.h5, "--format", "tsv", "--sort", "-speedup" };
    cr_assert_eq(run_captured(ab_cmd_show, 6, sorted, out, err), 0);
    o = slurp(out);
    char *first = strstr(o, "\nmethod\t");
    first = strchr(first + 1, '\n') + 1;
    cr_assert(strncmp(first, "window\tcausal\t1024\t0.05\t", 24) == 0, "fastest first: %s", first);
    free(o);
    const char *text[] = { "show", fx.h5 };
    cr_assert_eq(run_captured(ab_cmd_show, 2, text, out, err), 0);
    fx_clean(&fx);
}

Test(export_cli, bad_input_exits_2)
{
    fixture fx;
    fx_make(&fx, 1);
    char garbage[160], out[160], err[160], dir[160];
    snprintf(garbage, sizeof garbage, "%s/garbage.h5", fx.dir);
    snprintf(out, sizeof out, "%s/o", fx.dir);
    snprintf(err, sizeof err, "%s/e", fx.dir);
    snprintf(dir, sizeof dir, "%s/x", fx.dir);
    FILE *f = fopen(garbage, "w");
    fputs("this is not an HDF5 file\n", f);
    fclose(f);
    const char *missing = "/nonexistent/run.h5";
    const char *cases[][6] = {
        { "export", missing, "-d", dir },
        { "export", garbage, "-d", dir },
        { "export", fx.h5 },
        { "export", fx.h5, "-d" },
        { "export", fx.h5, "-d", dir, "--bogus" },
        { "show", missing },
        { "show", garbage },
        { "show", fx.h5, "--format", "xml" },
        { "show", fx.h5, "--filter", "nokey=1" },
        { "show", fx.h5, "--sort", "nocol" },
        { "plot", missing, "-d", dir },
        { "plot", garbage, "-d", dir },
        { "plot", fx.h5, "-d", dir, "--format", "gif" },
        { "plot", fx.h5, "-d", dir, "--gnuplot", "/nonexistent/gnuplot" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int argc = 0;
        while (argc < 6 && cases[i][argc]) argc++;
        int (*cmd)(int, char **) = cases[i][0][0] == 'e'   ? ab_cmd_export
                                   : cases[i][0][0] == 's' ? ab_cmd_show
                                                           : ab_cmd_plot;
        int rc = run_captured(cmd, argc, cases[i], out, err);
        cr_assert_eq(rc, 2, "case %zu (%s %s) gave %d", i, cases[i][0], cases[i][argc - 1], rc);
        char *e = slurp(err);
        size_t nl = 0;
        for (char *s = e; *s; s++) nl += *s == '\n';
        cr_assert_eq(nl, 1, "case %zu: want one line on stderr, got: %s", i, e);
        cr_assert(strncmp(e, "attnbench: ", 11) == 0);
        free(e);
    }
    cr_assert_eq(file_size(dir), -1, "nothing written on bad input");
    const char *help[][2] = { { "export", "--help" }, { "show", "--help" }, { "plot", "-h" } };
    cr_assert_eq(run_captured(ab_cmd_export, 2, help[0], out, err), 0);
    cr_assert_eq(run_captured(ab_cmd_show, 2, help[1], out, err), 0);
    cr_assert_eq(run_captured(ab_cmd_plot, 2, help[2], out, err), 0);
    char *o = slurp(out);
    cr_assert(strstr(o, "usage: attnbench plot"));
    free(o);
    fx_clean(&fx);
}

/* ---- base masks in `mask` and the gallery ------------------------------ */

/* The cell matrix (FILE.dat) `attnbench mask` wrote: c x c numbers. */
static void read_cells(const char *dat, double *v, int c)
{
    FILE *f = fopen(dat, "r");
    cr_assert(f, "no %s", dat);
    for (int k = 0; k < c * c; k++) cr_assert_eq(fscanf(f, "%lf", &v[k]), 1, "%s: cell %d", dat, k);
    double extra;
    cr_assert_eq(fscanf(f, "%lf", &extra), EOF, "%s: more than %d cells", dat, c * c);
    fclose(f);
}

/* Cells are shaded by the base mask (row spans), not by j <= i: under three
 * documents of 64, 64 and 128 tokens (N = 256, 4 x 4 cells of 64), dense
 * keeps every allowed pair, and the cells across document boundaries are
 * forbidden (-1) although they are causal. */
Test(mask, cells_follow_the_base_mask)
{
    fixture fx;
    snprintf(fx.dir, sizeof fx.dir, "/tmp/ab_export_XXXXXX");
    cr_assert(mkdtemp(fx.dir));
    char png[160], dat[160], gp[160], out[160], err[160];
    snprintf(png, sizeof png, "%s/doc.png", fx.dir);
    snprintf(dat, sizeof dat, "%s/doc.dat", fx.dir);
    snprintf(gp, sizeof gp, "%s/doc.gp", fx.dir);
    snprintf(out, sizeof out, "%s/o", fx.dir);
    snprintf(err, sizeof err, "%s/e", fx.dir);
    const char *args[] = { "mask", "dense", "--mask", "document:64+64+128", "-n", "256", "--heads",
                           "1",    "-o",    png };
    cr_assert_eq(run_captured(ab_cmd_mask, 10, args, out, err), 0, "%s", slurp(err));
    cr_assert_gt(file_size(png), 1000);
    static const double want[16] = { 1, -1, -1, -1, -1, 1, -1, -1, -1, -1, 1, -1, -1, -1, 1, 1 };
    double v[16];
    read_cells(dat, v, 4);
    for (int k = 0; k < 16; k++)
        cr_assert_eq(v[k], want[k], "cell (%d, %d): %g, want %g", k / 4, k % 4, v[k], want[k]);
    char *g = slurp(gp);
    cr_assert(strstr(g, "base mask document:64+64+128: allows "), "title names the mask: %s", g);
    free(g);
    /* the default, causal: every cell on or below the diagonal is allowed */
    const char *causal[] = { "mask", "dense", "-n", "256", "--heads", "1", "-o", png };
    cr_assert_eq(run_captured(ab_cmd_mask, 8, causal, out, err), 0);
    read_cells(dat, v, 4);
    for (int k = 0; k < 16; k++)
        cr_assert_eq(v[k], k % 4 <= k / 4 ? 1.0 : -1.0, "causal cell (%d, %d): %g", k / 4, k % 4, v[k]);
    /* bad specs: exit 2, one line naming the spec */
    const char *bad[][10] = { { "mask", "dense", "--mask", "sliding:-1", "-o", png },
                              { "mask", "dense", "--mask", "document:100+100", "-n", "256", "-o", png },
                              { "mask", "dense", "--mask", "nosuchmask", "-o", png } };
    for (size_t i = 0; i < 3; i++) {
        int argc = 0;
        while (argc < 10 && bad[i][argc]) argc++;
        cr_assert_eq(run_captured(ab_cmd_mask, argc, bad[i], out, err), 2, "case %zu", i);
        char *e = slurp(err);
        cr_assert(strstr(e, bad[i][3]) && strchr(e, '\n') == e + strlen(e) - 1, "case %zu: %s", i, e);
        free(e);
    }
    fx_clean(&fx);
}

/* A small results file: dense at N = 256 under each of the given masks. */
static void fx_small(fixture *fx, const char *const *masks, int nm)
{
    snprintf(fx->dir, sizeof fx->dir, "/tmp/ab_export_XXXXXX");
    cr_assert(mkdtemp(fx->dir));
    snprintf(fx->h5, sizeof fx->h5, "%s/small.h5", fx->dir);
    snprintf(fx->out, sizeof fx->out, "%s/fig", fx->dir);
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_env_set(&env, "host", "testhost");
    ab_store *st = NULL;
    char err[256] = "";
    cr_assert_eq(ab_store_open(fx->h5, &env, 0, &st, err, sizeof err), 0, "%s", err);
    ab_point *p = malloc(sizeof *p);
    cr_assert(p);
    int serial = 0;
    for (int m = 0; m < nm; m++)
        for (int seed = 1; seed <= 2; seed++) {
            fx_point(p, &serial, "dense", "needle", 256, seed, 1.0, "ok");
            snprintf(p->mask, sizeof p->mask, "%s", masks[m]);
            p->mask_density = 0.1 * (m + 1);
            cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
        }
    free(p);
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
}

/* plot's gallery: every method under the primary mask (here document:4,
 * which sorts before sliding:64), and each base mask of the file alone. */
Test(plot, gallery_per_base_mask)
{
    if (!getenv("AB_BIN")) cr_skip_test("AB_BIN not set (the gallery runs attnbench mask)");
    static const char *const masks[] = { "sliding:64", "document:4" };
    fixture fx;
    fx_small(&fx, masks, 2);
    char out[200], err[200], path[300];
    snprintf(out, sizeof out, "%s/plot.out", fx.dir);
    snprintf(err, sizeof err, "%s/plot.err", fx.dir);
    const char *args[] = { "plot", fx.h5, "-d", fx.out, "--format", "svg" };
    int rc = run_captured(ab_cmd_plot, 6, args, out, err);
    char *e = slurp(err);
    cr_assert_eq(rc, 0, "plot exit %d: %s", rc, e);
    cr_assert_str_eq(e, "", "stderr: %s", e);
    free(e);
    snprintf(path, sizeof path, "%s/mask_gallery/mask_gallery.gp", fx.out);
    char *g = slurp(path);
    cr_assert(g && strstr(g, "base mask document:4"), "gallery under the primary mask: %s", g);
    free(g);
    snprintf(path, sizeof path, "%s/mask_gallery/mask_gallery.png", fx.out);
    cr_assert_gt(file_size(path), 1000);
    static const char *const slugs[] = { "document_4", "sliding_64" };
    snprintf(path, sizeof path, "%s/index.html", fx.out);
    char *html = slurp(path);
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/mask_gallery/base_%s.png", fx.out, slugs[k]);
        cr_assert_gt(file_size(path), 1000, "%s", path);
        char img[120];
        snprintf(img, sizeof img, "src=\"mask_gallery/base_%s.png\"", slugs[k]);
        cr_assert(strstr(html, img), "%s not in index.html", img);
    }
    snprintf(path, sizeof path, "%s/mask_gallery/base_sliding_64.gp", fx.out);
    g = slurp(path);
    cr_assert(strstr(g, "base mask sliding:64") && strstr(g, "N=256"), "%s", g);
    free(g);
    /* no causal points: nothing to compare dense with, and the page says so */
    snprintf(path, sizeof path, "%s/dense_vs_mask.svg", fx.out);
    cr_assert_eq(file_size(path), -1);
    cr_assert(strstr(html, "no point under the causal mask"), "dense_vs_mask note");
    /* the primary mask is document:4: its figure is NAME.svg, sliding's the copy */
    cr_assert(strstr(html, "src=\"latency_vs_n.svg\"") &&
              strstr(html, "src=\"latency_vs_n--sliding_64.svg\""));
    free(html);
    fx_clean(&fx);
}

/* The mask column round-trips: file -> points.tsv, show's filter and column. */
Test(export, mask_column_round_trips)
{
    fixture fx;
    fx_make3(&fx, 1, 0, "document:4");
    export_to(&fx, fx.out);
    ab_point *pts = NULL;
    size_t n = 0;
    char err[256];
    cr_assert_eq(ab_results_read(fx.h5, &pts, &n, NULL, err, sizeof err), 0, "%s", err);
    size_t ndoc = 0;
    for (size_t i = 0; i < n; i++) ndoc += strcmp(pts[i].mask, "document:4") == 0;
    cr_assert_eq(ndoc, 40, "the file holds the masks written");
    free(pts);
    char path[200];
    snprintf(path, sizeof path, "%s/points.tsv", fx.out);
    char *t = slurp(path);
    cr_assert(strstr(t, "\thead_dim\tcausal\tmask\tmask_density\tthreads\t"), "header");
    size_t rows = 0;
    for (char *s = t; (s = strstr(s, "\t1\tdocument:4\t0.125")); s++) rows++; /* N = 1024, 4096 */
    cr_assert_eq(rows, 40, "document rows: %zu", rows);
    free(t);

    snprintf(path, sizeof path, "%s/show.out", fx.dir);
    char epath[200];
    snprintf(epath, sizeof epath, "%s/show.err", fx.dir);
    const char *args[] = { "show", fx.h5, "--format", "tsv", "--filter", "mask=document:4" };
    cr_assert_eq(run_captured(ab_cmd_show, 6, args, path, epath), 0);
    char *o = slurp(path);
    /* dense x 2 lengths + window x 3 densities x 2 lengths; the oom points
     * join window at 0.1; speedup over dense under the same mask */
    size_t nr = 0;
    for (char *s = strstr(o, "\nmethod\t") + 1; (s = strchr(s, '\n')) && s[1]; s++) nr++;
    cr_assert_eq(nr, 8, "%s", o);
    cr_assert(!strstr(o, "\tcausal\t"), "filtered: %s", o);
    char want[200];
    snprintf(want, sizeof want, "\nwindow\tdocument:4\t1024\t0.1\t%.6g\t%.6g\t",
             0.25 * 1.15 / 3.0 * 0.15 * DOC_WINDOW, DOC_DENSE / (DOC_WINDOW * 0.15));
    cr_assert(strstr(o, want), "no '%s' in:\n%s", want + 1, o);
    cr_assert(strstr(o, "\toom:4\t"), "%s", o);
    free(o);
    /* grouped by mask: every method's causal rows, then its document rows */
    const char *all[] = { "show", fx.h5, "--format", "tsv", "--filter", "method=window,seq_len=1024" };
    cr_assert_eq(run_captured(ab_cmd_show, 6, all, path, epath), 0);
    o = slurp(path);
    char *c = strstr(o, "\nwindow\tcausal\t1024\t0.2\t"),
         *d = strstr(o, "\nwindow\tdocument:4\t1024\t0.05\t");
    cr_assert(c && d && c < d, "%s", o);
    free(o);
    const char *badkey[] = { "show", fx.h5, "--sort", "mask" };
    cr_assert_eq(run_captured(ab_cmd_show, 4, badkey, path, epath), 0, "--sort mask");
    fx_clean(&fx);
}

/* Two masks: no figure file mixes them; each mask's numbers are its own. */
Test(export, two_masks_never_mixed)
{
    fixture fx;
    fx_make3(&fx, 1, 0, "document:4");
    export_to(&fx, fx.out);
    char path[300];
    snprintf(path, sizeof path, "%s/masks.txt", fx.out);
    char *t = slurp(path);
    cr_assert(strstr(t, "\n1\tcausal\tcausal\t64\t48\tcrashed:8,timeout:8\t1\t4096\t"), "%s", t);
    cr_assert(strstr(t, "\n2\tdocument:4\tdocument_4\t40\t32\toom:8\t1\t4096\t"), "%s", t);
    free(t);
    snprintf(path, sizeof path, "%s/meta.txt", fx.out);
    t = slurp(path);
    cr_assert(strstr(t, "\nmasks\tcausal,document:4\n") && strstr(t, "\nprimary_mask\tcausal\n"), "%s", t);
    free(t);
    /* every figure file has a copy per mask, headed by its mask */
    static const char *const figs[] = { "latency_vs_n",       "recall_vs_density",   "accuracy_vs_density",
                                        "speedup_vs_density", "accuracy_vs_latency", "needle_heatmap",
                                        "overhead_share",     "cpu_vs_gpu" };
    for (size_t i = 0; i < 8; i++)
        for (int mk = 0; mk < 2; mk++) {
            snprintf(path, sizeof path, "%s/%s%s.tsv", fx.out, figs[i], mk ? "--document_4" : "");
            t = slurp(path);
            cr_assert(t, "%s missing", path);
            const char *head = mk ? "# mask: document:4 " : "# mask: causal ";
            cr_assert(strncmp(t, head, strlen(head)) == 0, "%s: %.60s", path, t);
            free(t);
            int r;
            char name[120];
            snprintf(name, sizeof name, "%s%s.tsv", figs[i], mk ? "--document_4" : "");
            check_figure(fx.out, name,
                         i == 0 || i == 7   ? 7
                         : i == 1 || i == 3 ? 5
                         : i == 2           ? 7
                         : i == 4           ? 9
                         : i == 5           ? 7
                                            : 6,
                         &r);
        }
    /* latency: window at 0.1, N = 1024 under each mask (its own numbers) */
    double base = 0.25 * 1.15 / 3.0 * 0.15;
    for (int mk = 0; mk < 2; mk++) {
        snprintf(path, sizeof path, "%s/latency_vs_n%s.tsv", fx.out, mk ? "--document_4" : "");
        t = slurp(path);
        char *w = strstr(t, "# method window\n");
        cr_assert(w);
        double n, ms, lo, hi, ach, np, tgt;
        cr_assert_eq(sscanf(w + 16, "%lf %lf %lf %lf %lf %lf %lf", &n, &ms, &lo, &hi, &ach, &np, &tgt), 7);
        cr_assert_eq(np, 4, "4 ok points (2 tasks x 2 seeds), not 8");
        cr_assert_float_eq(ms, base * (mk ? DOC_WINDOW : 1.0), 1e-12, "mask %d: %g", mk, ms);
        cr_assert_eq(strstr(t, "# method topk\n") != NULL, !mk, "topk ran under causal only");
        free(t);
    }
    /* speedup under document:4 is over dense under document:4 */
    snprintf(path, sizeof path, "%s/speedup_vs_density--document_4.tsv", fx.out);
    t = slurp(path);
    char *w = strstr(t, "# method window\n");
    cr_assert(w);
    double dens, sp;
    cr_assert_eq(sscanf(w + 16, "%lf %lf", &dens, &sp), 2);
    cr_assert_float_eq(sp, DOC_DENSE / (DOC_WINDOW * 0.1), 1e-9, "speedup %g", sp);
    free(t);
    /* the break-even map per mask: under document:4 only window (1 row x 3
     * densities x 2 lengths), its speedup over document:4's dense; under
     * causal 4 rows (broken, lowrank, topk, window), broken's cells crashed */
    for (int mk = 0; mk < 2; mk++) {
        snprintf(path, sizeof path, "%s/breakeven%s.tsv", fx.out, mk ? "--document_4" : "");
        t = slurp(path);
        cr_assert(t, "%s missing", path);
        const char *head = mk ? "# mask: document:4 " : "# mask: causal ";
        cr_assert(strncmp(t, head, strlen(head)) == 0, "%s: %.60s", path, t);
        int rows = 0, found = 0;
        char *save = NULL;
        for (char *line = strtok_r(t, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            if (line[0] == '#') continue;
            rows++;
            char *f[20];
            cr_assert_eq(split_tabs(line, f, 20), 16, "%s", line);
            if (!strcmp(f[11], "broken"))
                cr_assert_str_eq(f[13], strcmp(f[8], "0.1") ? "not_run" : "crashed");
            if (strcmp(f[11], "window") || strcmp(f[7], "1024") || strcmp(f[8], "0.1")) continue;
            found = 1;
            double cell = strtod(f[2], NULL);
            cr_assert_float_eq(cell, mk ? DOC_DENSE / (DOC_WINDOW * 0.15) : 1.0 / 0.15, 1e-9, "mask %d: %g",
                               mk, cell);
            cr_assert_str_eq(f[6], "0", "no paired ratio in this fixture");
        }
        cr_assert(found, "%s: no window cell at (1024, 0.1)", path);
        cr_assert_eq(rows, mk ? 6 : 24, "%s: %d cells", path, rows);
        free(t);
    }
    /* dense vs mask: causal 1, document 0.3 against the ideal 0.25, per N */
    snprintf(path, sizeof path, "%s/dense_vs_mask.tsv", fx.out);
    t = slurp(path);
    cr_assert(strstr(t, "\n1\t1\t1\t"), "%s", t);
    char *d = strstr(t, "\n2\t0.3\t0.25\t");
    cr_assert(d && strstr(d + 1, "\n2\t0.3\t0.25\t"), "one row per N: %s", t);
    cr_assert(strstr(t, "\t1024\t4\tdocument:4\t"), "%s", t);
    free(t);
    /* summary: one row per method, device and mask */
    snprintf(path, sizeof path, "%s/summary.tsv", fx.out);
    t = slurp(path);
    cr_assert(strstr(t, "\nwindow\tcpu\tblock\tblock\t32\t24\ttimeout:8\t4096\t0.1\t"), "%s", t);
    cr_assert(strstr(t, "\nwindow\tcpu\tblock\tblock\t32\t24\toom:8\t4096\t0.1\t"), "%s", t);
    cr_assert(strstr(t, "\t5\tcausal\t") && strstr(t, "\t5\tdocument:4\t"), "%s", t);
    free(t);
    fx_clean(&fx);
}

/* ---- the timing protocol: untimed points, paired speedups, break-even ---- */

#define UNTIMED_MS 777777.0 /* total_ms of the fixture's untimed points: must never show */

/* One point of the timing fixture: dense latency D(N) = 10 (N = 1024) or 40
 * (N = 2048), the method's time rel * D; with pair, the paired ratio rel
 * and its interval [lo, hi] as the sweep stores them (files before the timing
 * protocol: rel_dense NaN, rounds 0). */
static void tf_point(ab_point *p, int *serial, const char *method, int n, int seed, double target, double rel,
                     double lo, double hi, int pair)
{
    fx_point(p, serial, method, "needle", n, seed, target, "ok");
    double dms = n == 1024 ? 10.0 : 40.0;
    p->total_ms = rel * dms;
    p->select_ms = 0.25 * p->total_ms;
    p->run_ms = p->total_ms - p->select_ms;
    p->p10_ms = 0.9 * p->total_ms;
    p->p90_ms = 1.2 * p->total_ms;
    p->total_lo_ms = 0.95 * p->total_ms;
    p->total_hi_ms = 1.1 * p->total_ms;
    p->foreign_pct = p->steal_pct = p->load1 = NAN;
    if (pair) {
        p->rounds = 3;
        p->calls = 1;
        p->rel_dense = rel;
        p->rel_lo = lo;
        p->rel_hi = hi;
        p->dense_pair_ms = dms;
    } else {
        p->rounds = 0;
        p->rel_dense = p->rel_lo = p->rel_hi = p->dense_pair_ms = NAN;
        p->total_lo_ms = p->total_hi_ms = NAN;
    }
}

/* A scored-only point (the sweep's [timing] timed_tasks / timed_depths):
 * status ok, accuracy 0 of 16, flagged untimed; its total_ms is UNTIMED_MS
 * (finite, so only the flag keeps it out) or NaN as the sweep writes it. */
static void tf_untimed(ab_point *p, int *serial, const char *method, int n, int seed, double target,
                       double depth, int nan_ms)
{
    fx_point(p, serial, method, "needle", n, seed, target, "ok");
    p->depth = depth;
    p->accuracy = 0;
    ab_wilson(0, 16, &p->acc_ci_lo, &p->acc_ci_hi);
    p->total_ms = p->select_ms = p->run_ms = p->min_ms = p->p10_ms = p->p90_ms = nan_ms ? NAN : UNTIMED_MS;
    p->total_lo_ms = p->total_hi_ms = p->rel_dense = p->rel_lo = p->rel_hi = nan_ms ? NAN : UNTIMED_MS;
    p->n_samples = 0;
    p->rounds = 0;
    snprintf(p->timing, sizeof p->timing, "untimed");
}

/* The timing fixture, N = 1024 and 2048, seeds 1 and 2, one task and mask:
 *   dense      the baseline (rel 1), plus at N = 1024, seed 1 an untimed
 *              dense point on the same workload as the timed one
 *   fast 0.1   paired 0.25 [0.2, 0.3]: speedup 4 [3.33, 5] (seed 1 flagged
 *              interference), plus two untimed points at depth 0.9 per N
 *   fast 0.3   paired 0.9 [0.8, 1.1]: 1.11 [0.91, 1.25], holds 1
 *   old  0.1   no paired ratio (an old file's row), 0.5 D: fallback speedup 2
 *   old  0.3   untimed only (scored)
 *   slow 0.1   N = 1024 only, paired 2 [1.5, 2.5]: 0.5 [0.4, 0.67]
 *   slow 0.3   N = 1024 only, calib_failed */
static void fx_timing(fixture *fx)
{
    snprintf(fx->dir, sizeof fx->dir, "/tmp/ab_export_XXXXXX");
    cr_assert(mkdtemp(fx->dir));
    snprintf(fx->h5, sizeof fx->h5, "%s/timing.h5", fx->dir);
    snprintf(fx->out, sizeof fx->out, "%s/fig", fx->dir);
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_env_set(&env, "host", "testhost");
    ab_env_set(&env, "git_sha", "0123456789abcdef");
    if (fx_bw) ab_env_set(&env, "stream_triad_gbs", fx_bw);
    ab_store *st = NULL;
    char err[256] = "";
    cr_assert_eq(ab_store_open(fx->h5, &env, 0, &st, err, sizeof err), 0, "%s", err);
    ab_point *p = malloc(sizeof *p);
    cr_assert(p);
    int serial = 0;
#define PUT() cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err)
    static const int lens[] = { 1024, 2048 };
    for (int l = 0; l < 2; l++)
        for (int seed = 1; seed <= 2; seed++) {
            int n = lens[l];
            tf_point(p, &serial, "dense", n, seed, 1.0, 1, 1, 1, 1);
            PUT();
            tf_point(p, &serial, "fast", n, seed, 0.1, 0.25, 0.2, 0.3, 1);
            if (seed == 1) snprintf(p->timing, sizeof p->timing, "interference");
            PUT();
            tf_point(p, &serial, "fast", n, seed, 0.3, 0.9, 0.8, 1.1, 1);
            PUT();
            tf_untimed(p, &serial, "fast", n, seed, 0.1, 0.9, seed == 2);
            PUT();
            tf_point(p, &serial, "old", n, seed, 0.1, 0.5, NAN, NAN, 0);
            PUT();
            tf_untimed(p, &serial, "old", n, seed, 0.3, 0.5, 1);
            PUT();
            if (n == 1024) {
                tf_point(p, &serial, "slow", n, seed, 0.1, 2.0, 1.5, 2.5, 1);
                PUT();
                fx_point(p, &serial, "slow", "needle", n, seed, 0.3, "calib_failed");
                PUT();
                if (seed == 1) { /* an untimed dense point on a timed one's workload */
                    tf_untimed(p, &serial, "dense", n, seed, 1.0, 0.5, 0);
                    PUT();
                }
            }
        }
#undef PUT
    free(p);
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
}

/* The data rows of DIR/NAME, one string per line (comments skipped). */
static char *data_of(const fixture *fx, const char *name)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s", fx->out, name);
    char *t = slurp(path);
    cr_assert(t, "%s missing", path);
    return t;
}

/* The fields of the row of block `method` (a "# method NAME" block) whose
 * column col (0-based) is val; 0 when none. */
static int block_row(const char *text, const char *method, int col, const char *val, char *line, size_t len,
                     char **f, int max)
{
    char head[64];
    snprintf(head, sizeof head, "# method %s\n", method);
    const char *b = strstr(text, head);
    if (!b) return 0;
    for (const char *s = b + strlen(head); *s && *s != '#';) {
        const char *e = strchr(s, '\n');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l > 0 && l < len) {
            memcpy(line, s, l);
            line[l] = '\0';
            int nf = split_tabs(line, f, max);
            if (nf > col && strcmp(f[col], val) == 0) return nf;
        }
        if (!e) break;
        s = e + 1;
    }
    return 0;
}

static void expect_near(const char *field, double want, const char *what)
{
    char *end;
    double got = strtod(field, &end);
    cr_assert(*end == '\0', "%s: '%s' is not a number", what, field);
    if (isnan(want))
        cr_assert(isnan(got), "%s: %s, want nan", what, field);
    else
        cr_assert(fabs(got - want) <= 1e-9 * fabs(want), "%s: %s, want %.17g", what, field, want);
}

/* No timing figure or table holds an untimed point's numbers, in any of its
 * forms: the latency itself, its interval, a speedup from it, a share. */
Test(export, untimed_points_never_timed)
{
    fixture fx;
    fx_timing(&fx);
    export_to(&fx, fx.out);
    static const char *const timing_files[] = {
        "latency_vs_n.tsv", "speedup_vs_density.tsv",  "overhead_share.tsv",
        "breakeven.tsv",    "accuracy_vs_latency.tsv", "summary.tsv",
        "selectors.tsv"
    };
    /* 777777: its latency; 77777.7: a speedup over the untimed dense point;
     * 1.2857: 1 / 777777, a speedup from its (bogus) paired ratio */
    for (size_t i = 0; i < sizeof timing_files / sizeof timing_files[0]; i++) {
        char *t = data_of(&fx, timing_files[i]);
        cr_assert(!strstr(t, "777777") && !strstr(t, "1.2857") && !strstr(t, "77777.7"),
                  "%s holds an untimed point's number:\n%s", timing_files[i], t);
        free(t);
    }
    /* latency: fast at 0.1, N = 1024: the 2 timed points (2.5 ms), not the 4 ok */
    char *t = data_of(&fx, "latency_vs_n.tsv"), line[512], *f[32];
    cr_assert(strstr(t, "# note: untimed (scored only): 9 ok points, left out   flagged (of 18 timed): "
                        "interference 2\n"),
              "%s", t);
    cr_assert_eq(block_row(t, "fast", 0, "1024", line, sizeof line, f, 32), 14, "%s", t);
    expect_near(f[1], 2.5, "fast latency");
    expect_near(f[5], 2, "fast n_points");
    expect_near(f[6], 0.1, "fast setting");
    expect_near(f[12], 0.95 * 2.5, "fast total_lo_ms");
    expect_near(f[13], 1.1 * 2.5, "fast total_hi_ms");
    /* old: its timed setting 0.1 (0.3 is scored only); no interval in an old row */
    cr_assert_eq(block_row(t, "old", 0, "2048", line, sizeof line, f, 32), 14, "%s", t);
    expect_near(f[1], 20, "old latency");
    expect_near(f[6], 0.1, "old setting");
    expect_near(f[12], NAN, "old total_lo_ms");
    /* dense: the untimed dense point does not count */
    cr_assert_eq(block_row(t, "dense", 0, "1024", line, sizeof line, f, 32), 14, "%s", t);
    expect_near(f[1], 10, "dense latency");
    expect_near(f[5], 2, "dense n_points");
    free(t);
    /* accuracy keeps the untimed points: fast 0.1 at 1024 pools 16+16+0+0 of 64 */
    t = data_of(&fx, "accuracy_vs_density.tsv");
    char *b = strstr(t, "# method fast\n");
    double dens, acc;
    cr_assert(b && sscanf(b + 14, "%lf %lf", &dens, &acc) == 2);
    cr_assert_float_eq(acc, 0.5, 1e-12, "pooled over timed and untimed: %g", acc);
    b = strstr(t, "# method old\n");
    cr_assert(b && strstr(b, "\t0.3\t") == NULL, "old 0.3 is scored (accuracy) only: %s", b);
    free(t);
    /* accuracy vs latency: fast 0.1 at N = 2048: latency of the 2 timed
     * points, accuracy of all 4; old's scored-only setting has no latency */
    t = data_of(&fx, "accuracy_vs_latency.tsv");
    cr_assert_eq(block_row(t, "fast", 0, "10", line, sizeof line, f, 32), 14, "%s", t);
    expect_near(f[1], 0.5, "accuracy over timed and untimed");
    expect_near(f[7], 2048, "largest N");
    expect_near(f[8], 4, "n_points");
    expect_near(f[11], 2, "n_timed");
    free(t);
    /* points.tsv keeps every point and its flags */
    t = data_of(&fx, "points.tsv");
    cr_assert(strstr(t, "\tload1\ttiming\tpoint_s\tfma_gflops\tshared_pct\tblock_q\tblock_k\tselect_"
                        "flops\tselect_bytes\tfamily\tphase\tkv_heads\tbatch\tsteps\tlayers\tlayer_corr\t"
                        "prepare_ms\tkv_bytes\tcache_bytes\tlayer_recall\ttparams\thead_recall\n"),
              "header ends with the timing flags, cost, clock, shared-core drops, blocks, selection work, "
              "the phase axis, the task parameters and per-head recall");
    cr_assert(strstr(t, "\tuntimed\t") && strstr(t, "\tinterference\t"), "%s", t);
    free(t);
    t = data_of(&fx, "meta.txt");
    cr_assert(strstr(t, "\nn_timed\t18\nn_untimed\t9\nn_paired\t14\n"), "%s", t);
    cr_assert(strstr(t, "\nn_flag_interference\t2\n"), "%s", t);
    free(t);
    /* show: the latency of the timed points, the timing flags of the ok ones */
    char out[200], err[200];
    snprintf(out, sizeof out, "%s/show.out", fx.dir);
    snprintf(err, sizeof err, "%s/show.err", fx.dir);
    const char *args[] = { "show", fx.h5, "--format", "tsv", "--filter", "method=fast,seq_len=1024" };
    cr_assert_eq(run_captured(ab_cmd_show, 6, args, out, err), 0);
    char *o = slurp(out);
    cr_assert(!strstr(o, "777777"), "%s", o);
    char want[300];
    snprintf(want, sizeof want, "\nfast\tcausal\t1024\t0.1\t2.5\t4\t");
    cr_assert(strstr(o, want), "no '%s' in:\n%s", want + 1, o);
    cr_assert(strstr(o, "\t4\t-\tuntimed:2,interference:1\t3.33333\t5\t1\t2.375\t2.75\t2\n"), "%s", o);
    free(o);
    fx_clean(&fx);
}

/* The speedup over dense: the paired ratio and its interval where a point has
 * it; dense latency / latency (no interval, paired 0) where it has not. */
Test(export, paired_speedup_and_fallback)
{
    fixture fx;
    fx_timing(&fx);
    export_to(&fx, fx.out);
    char *t = data_of(&fx, "speedup_vs_density.tsv"), line[512], *f[32];
    cr_assert(strstr(t, "#          8 speedup_lo  9 speedup_hi  10 paired (1/0)\n"), "%s", t);
    cr_assert(!strstr(t, "# method dense"), "%s", t);
    /* fast 0.1, N = 2048: 1 / 0.25 with [1 / 0.3, 1 / 0.2] */
    cr_assert_eq(block_row(t, "fast", 3, "2048", line, sizeof line, f, 32), 10, "%s", t);
    expect_near(f[1], 4, "paired speedup");
    expect_near(f[7], 1 / 0.3, "speedup_lo");
    expect_near(f[8], 5, "speedup_hi");
    expect_near(f[9], 1, "paired");
    expect_near(f[4], 2, "points with a speedup (the untimed ones left out)");
    /* old 0.1: 10 / 5 from the timed dense point alone (the untimed one on the
     * same workload would move the median of the dense times to 388894) */
    cr_assert_eq(block_row(t, "old", 3, "1024", line, sizeof line, f, 32), 10, "%s", t);
    expect_near(f[1], 2, "fallback speedup");
    expect_near(f[7], NAN, "no interval");
    expect_near(f[8], NAN, "no interval");
    expect_near(f[9], 0, "paired");
    cr_assert_eq(block_row(t, "slow", 3, "1024", line, sizeof line, f, 32), 10, "%s", t);
    expect_near(f[1], 0.5, "slow");
    expect_near(f[7], 0.4, "slow lo");
    expect_near(f[8], 1 / 1.5, "slow hi");
    free(t);
    /* summary: fast at 0.1, N = 2048 (the timed setting), paired */
    t = data_of(&fx, "summary.tsv");
    cr_assert(strstr(t, "#          25 n_timed\n"), "%s", t);
    const char *r = strstr(t, "\nfast\tcpu\t");
    cr_assert(r, "%s", t);
    snprintf(line, sizeof line, "%.*s", (int)strcspn(r + 1, "\n"), r + 1);
    cr_assert_eq(split_tabs(line, f, 32), 25, "%s", r);
    expect_near(f[7], 2048, "seq_len");
    expect_near(f[8], 0.1, "target");
    expect_near(f[11], 10, "total_ms (timed only)");
    expect_near(f[12], 4, "speedup");
    expect_near(f[15], 0.5, "accuracy pooled over timed and untimed");
    expect_near(f[16], 0.25, "select share");
    expect_near(f[19], 1 / 0.3, "speedup_lo");
    expect_near(f[20], 5, "speedup_hi");
    expect_near(f[21], 1, "paired");
    expect_near(f[22], 0.95 * 10, "total_lo_ms");
    expect_near(f[24], 2, "n_timed");
    r = strstr(t, "\nold\tcpu\t");
    cr_assert(r, "%s", t);
    snprintf(line, sizeof line, "%.*s", (int)strcspn(r + 1, "\n"), r + 1);
    cr_assert_eq(split_tabs(line, f, 32), 25, "%s", r);
    expect_near(f[8], 0.1, "old: the timed setting");
    expect_near(f[12], 2, "old: fallback speedup");
    expect_near(f[19], NAN, "old: no interval");
    expect_near(f[21], 0, "old: not paired");
    free(t);
    /* show: the same, the interval in the speedup cell of the text table */
    char out[200], err[200];
    snprintf(out, sizeof out, "%s/show.out", fx.dir);
    snprintf(err, sizeof err, "%s/show.err", fx.dir);
    const char *args[] = { "show", fx.h5, "--filter", "seq_len=1024" };
    cr_assert_eq(run_captured(ab_cmd_show, 4, args, out, err), 0);
    char *o = slurp(out);
    cr_assert(strstr(o, " 4.00x [3.33, 5.00] "), "%s", o);
    cr_assert(strstr(o, " 0.50x [0.40, 0.67] "), "%s", o);
    cr_assert(strstr(o, " 2.00x ") && !strstr(o, " 2.00x ["), "fallback without interval: %s", o);
    free(o);
    fx_clean(&fx);
}

/* selectors.tsv: the stated FLOPs and bytes against dense, and the roofline
 * of the two where the file has a STREAM bandwidth. fast at 0.1, N = 2048:
 * select 2.5 of dense 40 ms (0.0625); FLOPs 2.048e8 of dense 4 d H pairs
 * = 2148532224 (0.0953); bytes 4 N 64 = 524288, at 0.0524288 GB/s 10 ms
 * (0.25 of dense: the higher bound, so the roofline). */
Test(export, selectors_roofline)
{
    fixture fx;
    char line[512], *f[32];
    for (int with_bw = 0; with_bw < 2; with_bw++) {
        fx_bw = with_bw ? "0.0524288" : NULL;
        fx_timing(&fx);
        fx_bw = NULL;
        export_to(&fx, fx.out);
        char *t = data_of(&fx, "selectors.tsv");
        cr_assert(strstr(t, "#          17 roofline_rel  18 roofline_eff  19 select_bytes\n"), "%s", t);
        cr_assert(with_bw ? strstr(t, "# bandwidth: STREAM triad 0.05 GB/s")
                          : strstr(t, "# note: no stream_triad_gbs in the file"),
                  "%s", t);
        cr_assert_eq(block_row(t, "fast", 0, "2048", line, sizeof line, f, 32), 19, "%s", t);
        expect_near(f[1], 0.0625, "select_rel");
        expect_near(f[4], 2.048e8 / 2148532224.0, "bound_rel");
        expect_near(f[5], 2.048e8 / 2148532224.0 / 0.0625, "efficiency");
        expect_near(f[15], with_bw ? 0.25 : NAN, "bytes_rel");
        expect_near(f[16], with_bw ? 0.25 : NAN, "roofline_rel: the bytes");
        expect_near(f[17], with_bw ? 4.0 : NAN, "roofline_eff");
        expect_near(f[18], 524288, "select_bytes");
        free(t);
        t = data_of(&fx, "meta.txt"); /* the figure the note names */
        cr_assert(strstr(t, with_bw ? "\nstream_triad_gbs\t0.0524288\n" : "\nstream_triad_gbs\t\n"), "%s", t);
        free(t);
        fx_clean(&fx);
    }
}

/* breakeven.tsv: one line per (method but dense) x (N, target density), the
 * speedup, its interval and significance; an empty cell says why. */
Test(export, breakeven_map)
{
    fixture fx;
    fx_timing(&fx);
    export_to(&fx, fx.out);
    char *t = data_of(&fx, "breakeven.tsv");
    /* rows fast, old, slow (methods.txt order, dense left out); columns
     * (1024, 0.1) (1024, 0.3) (2048, 0.1) (2048, 0.3) */
    static const char *const want[] = {
        "0\t0\t4\t3.3333333333333335\t5\t1\t1\t1024\t0.1\t",
        "1\t0\t1.1111111111111112\t0.9090909090909091\t1.25\t0\t1\t1024\t0.3\t",
        "2\t0\t4\t3.3333333333333335\t5\t1\t1\t2048\t0.1\t",
        "3\t0\t1.1111111111111112\t0.9090909090909091\t1.25\t0\t1\t2048\t0.3\t",
        "0\t1\t2\tnan\tnan\t0\t0\t1024\t0.1\t",
        "1\t1\tnan\tnan\tnan\tnan\t0\t1024\t0.3\tnan\t0\told\t3\tuntimed\t-\tnan\n",
        "2\t1\t2\tnan\tnan\t0\t0\t2048\t0.1\t",
        "3\t1\tnan\tnan\tnan\tnan\t0\t2048\t0.3\tnan\t0\told\t3\tuntimed\t-\tnan\n",
        "0\t2\t0.5\t0.4\t0.6666666666666666\t-1\t1\t1024\t0.1\t",
        "1\t2\tnan\tnan\tnan\tnan\t0\t1024\t0.3\tnan\t0\tslow\t4\tcalib_failed\t-\tnan\n",
        "2\t2\tnan\tnan\tnan\tnan\t0\t2048\t0.1\tnan\t0\tslow\t4\tnot_run\t-\tnan\n",
        "3\t2\tnan\tnan\tnan\tnan\t0\t2048\t0.3\tnan\t0\tslow\t4\tnot_run\t-\tnan\n",
    };
    const char *s = t;
    int rows = 0;
    for (const char *l = t; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l))
        rows += *l != '#' && *l != '\n';
    cr_assert_eq(rows, 12, "%s", t);
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const char *hit = strstr(s, want[k]);
        cr_assert(hit && (hit == t || hit[-1] == '\n'), "no line '%s' (in order) in:\n%s", want[k], s);
        s = hit + 1;
    }
    /* the fast cell's flags, the point counts */
    cr_assert(strstr(t, "\t2\tfast\t2\t-\tinterference\t2.5\n"), "%s", t);
    cr_assert(strstr(t, "\t2\told\t3\t-\t-\t5\n"), "%s", t);
    free(t);
    fx_clean(&fx);
}

/* The timing fixture drawn: the break-even map (grey cells labelled with
 * why), the bars' note, the untimed count in the footnotes; no warning. */
Test(plot, timing_figures)
{
    fixture fx;
    fx_timing(&fx);
    char out[200], err[200], path[300];
    snprintf(out, sizeof out, "%s/plot.out", fx.dir);
    snprintf(err, sizeof err, "%s/plot.err", fx.dir);
    const char *args[] = { "plot", fx.h5, "-d", fx.out, "--format", "svg", "--no-gallery" };
    int rc = run_captured(ab_cmd_plot, 7, args, out, err);
    char *e = slurp(err);
    cr_assert_eq(rc, 0, "plot exit %d: %s", rc, e);
    cr_assert_str_eq(e, "", "stderr: %s", e);
    free(e);
    snprintf(path, sizeof path, "%s/breakeven.svg", fx.out);
    char *b = slurp(path);
    cr_assert(b, "no %s", path);
    cr_assert(strstr(b, ">calib.<") && strstr(b, ">untimed<"), "grey cells say why");
    cr_assert(strstr(b, ">4.00<") && strstr(b, ">0.50<") && strstr(b, ">2.00<"), "values in the cells");
    cr_assert(strstr(b, ">N = 1k<") && strstr(b, ">N = 2k<"), "the N groups");
    cr_assert(strstr(b, ">fast<") && strstr(b, ">slow<") && !strstr(b, ">dense<"), "rows");
    cr_assert(strstr(b, "faster (95% interval &gt; 1)") || strstr(b, "faster (95% interval > 1)"), "key");
    cr_assert(strstr(b, "untimed (scored only): 9 ok points, left out"), "footnote line 3");
    free(b);
    snprintf(path, sizeof path, "%s/latency_vs_n.svg", fx.out);
    b = slurp(path);
    cr_assert(b && strstr(b, "bars: 95% interval (bootstrap over rounds)"), "latency bars note");
    free(b);
    snprintf(path, sizeof path, "%s/speedup_vs_density.svg", fx.out);
    b = slurp(path);
    cr_assert(b && strstr(b, "bars: 95% interval (bootstrap over rounds)"), "speedup bars note");
    free(b);
    snprintf(path, sizeof path, "%s/index.html", fx.out);
    char *html = slurp(path);
    cr_assert(strstr(html, "id=\"breakeven\"") && strstr(html, "src=\"breakeven.svg\""), "breakeven listed");
    cr_assert(strstr(html, "4.00&times; <span class=ci>[3.33, 5.00]</span>"), "paired speedup in the table");
    cr_assert(strstr(html, "2.00&times;<sup>&dagger;</sup>"), "fallback speedup marked");
    free(html);
    fx_clean(&fx);
}

/* Methods on different blocks: every blocked series' legend names its
 * block; on one block (every other test) the names stay plain. */
Test(export, legend_names_blocks_when_they_differ)
{
    fixture fx;
    fx_topk_block = 128;
    fx_make(&fx, 1);
    fx_topk_block = 0;
    export_to(&fx, fx.out);
    char *t = data_of(&fx, "speedup_vs_density.tsv");
    cr_assert(strstr(t, "# method topk(b128)\n"), "%s", t);
    cr_assert(strstr(t, "# method window(b64)\n"), "%s", t);
    cr_assert(!strstr(t, "# method window\n"));
    free(t);
    fx_clean(&fx);
    fx_make(&fx, 1);
    export_to(&fx, fx.out);
    t = data_of(&fx, "speedup_vs_density.tsv");
    cr_assert(strstr(t, "# method topk\n") && strstr(t, "# method window\n"), "%s", t);
    free(t);
    fx_clean(&fx);
}
