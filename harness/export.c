/* export.c — `attnbench export RESULTS.h5 -d DIR`: the results file as TSV.
 *
 * Writes into DIR (created with its parents):
 *   points.tsv               every row, every scalar column (failed rows too)
 *   latency_vs_n.tsv         \
 *   recall_vs_density.tsv     |  status "ok" rows only, one gnuplot block
 *   accuracy_vs_density.tsv   |  (`index`) per method, blocks separated by
 *   speedup_vs_density.tsv   /   two blank lines, columns in a header comment
 *   methods.txt              method names, "dense" first then by name: the
 *                            position is the colour index of every figure
 *   meta.txt                 key<TAB>value: file, machine, commit, counts
 * Output depends only on the input file, so exporting twice gives the same
 * bytes. Aggregates are medians over the points of a group (seeds, tasks,
 * depths...), so one outlier seed does not move a curve.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "harness/cli.h"
#include "harness/point.h"
#include "harness/store.h"

#define LATENCY_TARGET 0.1 /* latency_vs_n: the density each curve is taken at */

/* One "series" is one curve: a method, or method@device when the file holds
 * several devices. */
typedef struct series {
    char name[48];
    char method[32];
    char device[8];
    int method_idx;        /* 1-based position in methods.txt */
} series;

/* An ok point with what the figures group it by. */
typedef struct xrow {
    const ab_point *p;
    int series;
    int native;            /* target_density is NaN: the knob_value is the setting */
    double setting;        /* target_density, or knob_value when native */
} xrow;

typedef struct xctx {
    const char *path;      /* the results file, as given */
    const ab_point *pts;
    size_t n;
    const ab_env *env;
    char (*methods)[32];   /* methods.txt order */
    size_t n_methods;
    series *ser;
    size_t n_ser;
    xrow *ok;              /* status ok rows */
    size_t n_ok;
} xctx;

/* ---- small helpers ------------------------------------------------------ */

/* Shortest "%.Ng" that reads back to the same double; "nan", "inf", "-inf". */
static void put_num(FILE *f, double v)
{
    if (isnan(v)) { fputs("nan", f); return; }
    if (isinf(v)) { fputs(v > 0 ? "inf" : "-inf", f); return; }
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, f);
}

/* A string field: tabs and line breaks become spaces (TSV safety); with
 * nospace, blanks become '_' too (gnuplot reads columns split at blanks). */
static void put_str(FILE *f, const char *s, size_t cap, int nospace)
{
    size_t i = 0;
    for (; i < cap && s[i]; i++) {
        char c = s[i];
        if (c == '\t' || c == '\n' || c == '\r') c = nospace ? '_' : ' ';
        else if (nospace && c == ' ') c = '_';
        fputc(c, f);
    }
    if (nospace && i == 0) fputc('-', f);
}
#define PUT_STR(f, field, ns) put_str((f), (field), sizeof(field), (ns))

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of the non-NaN values; NaN when there are none. Sorts v. */
static double median_of(double *v, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(v[i])) v[m++] = v[i];
    if (m == 0) return NAN;
    qsort(v, m, sizeof *v, dbl_cmp);
    return (m % 2) ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
}

/* Equality that treats NaN as equal to NaN (depth, settings). */
static int same_num(double a, double b)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b;
}

static int cmp_num(double a, double b)
{
    if (isnan(a) || isnan(b)) return isnan(a) - isnan(b); /* NaN last */
    return (a > b) - (a < b);
}

/* "dense" first, then by name. */
static int method_order(const char *a, const char *b)
{
    int da = strcmp(a, "dense") == 0, db = strcmp(b, "dense") == 0;
    if (da != db) return db - da;
    return strcmp(a, b);
}

static int method_cmp(const void *a, const void *b)
{
    return method_order((const char *)a, (const char *)b);
}

static int mkdir_p(const char *dir, char *err, size_t errlen)
{
    char buf[4096];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof buf) {
        snprintf(err, errlen, "bad output directory '%s'", dir);
        return -1;
    }
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create directory '%.300s': %s", buf,
                     strerror(errno));
            return -1;
        }
        buf[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "'%s' is not a directory", dir);
        return -1;
    }
    return 0;
}

static FILE *open_out(const char *dir, const char *name, char *err, size_t errlen)
{
    char path[4352];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) snprintf(err, errlen, "cannot write '%.300s': %s", path, strerror(errno));
    return f;
}

static int close_out(FILE *f, const char *name, int rc, char *err, size_t errlen)
{
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    if (bad && rc == 0) {
        snprintf(err, errlen, "error writing '%s'", name);
        return -1;
    }
    return rc;
}

/* ---- methods, series, ok rows ------------------------------------------- */

static int build_ctx(xctx *c)
{
    /* distinct methods and devices */
    c->methods = malloc((c->n + 1) * sizeof *c->methods);
    c->ser = malloc((c->n + 1) * sizeof *c->ser);
    c->ok = malloc((c->n + 1) * sizeof *c->ok);
    if (!c->methods || !c->ser || !c->ok) return -1;
    char first_dev[8] = "";
    int multi_dev = 0;
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        size_t k = 0;
        while (k < c->n_methods && strncmp(c->methods[k], p->method, 32) != 0) k++;
        if (k == c->n_methods) {
            memcpy(c->methods[k], p->method, 32);
            c->methods[k][31] = '\0';
            c->n_methods++;
        }
        if (i == 0) memcpy(first_dev, p->device, sizeof first_dev);
        else if (strncmp(first_dev, p->device, sizeof first_dev) != 0) multi_dev = 1;
    }
    qsort(c->methods, c->n_methods, sizeof *c->methods, method_cmp);

    /* series: over ok rows, in method order then device name */
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        if (!ab_status_is_ok(p->status)) continue;
        size_t k = 0;
        for (; k < c->n_ser; k++)
            if (strncmp(c->ser[k].method, p->method, 32) == 0 &&
                (!multi_dev || strncmp(c->ser[k].device, p->device, 8) == 0)) break;
        if (k == c->n_ser) {
            series *s = &c->ser[c->n_ser++];
            memset(s, 0, sizeof *s);
            memcpy(s->method, p->method, 31);
            memcpy(s->device, p->device, 7);
            if (multi_dev) snprintf(s->name, sizeof s->name, "%s@%s", s->method, s->device);
            else snprintf(s->name, sizeof s->name, "%s", s->method);
            for (size_t m = 0; m < c->n_methods; m++)
                if (strcmp(c->methods[m], s->method) == 0) s->method_idx = (int)m + 1;
        }
    }
    /* sort series; remember the permutation through the names */
    for (size_t a = 1; a < c->n_ser; a++) {
        series t = c->ser[a];
        size_t b = a;
        while (b > 0) {
            int o = method_order(c->ser[b - 1].method, t.method);
            if (o == 0) o = strcmp(c->ser[b - 1].device, t.device);
            if (o <= 0) break;
            c->ser[b] = c->ser[b - 1];
            b--;
        }
        c->ser[b] = t;
    }
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        if (!ab_status_is_ok(p->status)) continue;
        xrow *r = &c->ok[c->n_ok++];
        r->p = p;
        r->series = 0;
        for (size_t k = 0; k < c->n_ser; k++)
            if (strncmp(c->ser[k].method, p->method, 32) == 0 &&
                (!multi_dev || strncmp(c->ser[k].device, p->device, 8) == 0)) {
                r->series = (int)k;
                break;
            }
        r->native = isnan(p->target_density);
        r->setting = r->native ? p->knob_value : p->target_density;
    }
    return 0;
}

/* Order ok rows by series, setting, seq_len, task, then file order. */
static int xrow_cmp(const void *a, const void *b)
{
    const xrow *x = a, *y = b;
    if (x->series != y->series) return x->series - y->series;
    if (x->native != y->native) return x->native - y->native;
    int o = cmp_num(x->setting, y->setting);
    if (o) return o;
    if (x->p->seq_len != y->p->seq_len) return (x->p->seq_len > y->p->seq_len) ? 1 : -1;
    o = strncmp(x->p->task, y->p->task, sizeof x->p->task);
    if (o) return o;
    return (x->p > y->p) - (x->p < y->p);
}

static void block_start(FILE *f, int *nblocks, const series *s)
{
    if (*nblocks > 0) fputs("\n\n", f);
    fprintf(f, "# method %s\n", s->name);
    (*nblocks)++;
}

/* ---- points.tsv ------------------------------------------------------ */

static const char *const POINT_COLS =
    "key\tmethod\tparams\tdevice\tdtype\ttask\tkernel\tlayout\tseq_len\theads\t"
    "head_dim\tcausal\tthreads\tseed\tdepth\ttarget_density\tknob_value\t"
    "achieved_density\tselect_ms\trun_ms\ttotal_ms\tmin_ms\tp10_ms\tp90_ms\tcv\t"
    "n_samples\tdense_gflops\trecall_mass\trecall_topk\trel_l2_err\tmax_abs_err\t"
    "accuracy\tacc_ci_lo\tacc_ci_hi\trows_scored\tstatus\tmessage";

static void write_points(FILE *f, const xctx *c)
{
    fprintf(f, "%s\n", POINT_COLS);
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        const char *sep = "\t";
        PUT_STR(f, p->key, 0); fputs(sep, f);
        PUT_STR(f, p->method, 0); fputs(sep, f);
        PUT_STR(f, p->params, 0); fputs(sep, f);
        PUT_STR(f, p->device, 0); fputs(sep, f);
        PUT_STR(f, p->dtype, 0); fputs(sep, f);
        PUT_STR(f, p->task, 0); fputs(sep, f);
        PUT_STR(f, p->kernel, 0); fputs(sep, f);
        PUT_STR(f, p->layout, 0); fputs(sep, f);
        fprintf(f, "%d\t%d\t%d\t%d\t%d\t%lld\t", (int)p->seq_len, (int)p->heads,
                (int)p->head_dim, (int)p->causal, (int)p->threads, (long long)p->seed);
        const double d1[] = {p->depth, p->target_density, p->knob_value,
                             p->achieved_density, p->select_ms, p->run_ms,
                             p->total_ms, p->min_ms, p->p10_ms, p->p90_ms, p->cv};
        for (size_t k = 0; k < sizeof d1 / sizeof d1[0]; k++) {
            put_num(f, d1[k]);
            fputs(sep, f);
        }
        fprintf(f, "%d\t", (int)p->n_samples);
        const double d2[] = {p->dense_gflops, p->recall_mass, p->recall_topk,
                             p->rel_l2_err, p->max_abs_err, p->accuracy,
                             p->acc_ci_lo, p->acc_ci_hi};
        for (size_t k = 0; k < sizeof d2 / sizeof d2[0]; k++) {
            put_num(f, d2[k]);
            fputs(sep, f);
        }
        fprintf(f, "%d\t", (int)p->rows_scored);
        PUT_STR(f, p->status, 0); fputs(sep, f);
        PUT_STR(f, p->message, 0);
        fputc('\n', f);
    }
}

/* ---- latency_vs_n.tsv --------------------------------------------------- */

/* Median of one field over rows[0..n). */
#define FIELD_MEDIAN(out, rows, n, expr, tmp)                 \
    do {                                                      \
        for (size_t q_ = 0; q_ < (n); q_++) {                 \
            const ab_point *p_ = (rows)[q_].p;                \
            (tmp)[q_] = (expr);                               \
        }                                                     \
        (out) = median_of((tmp), (n));                        \
    } while (0)

static void write_latency(FILE *f, const xctx *c, double *tmp)
{
    fputs("# attnbench export: latency vs sequence length (status ok rows only)\n"
          "# one block per method (gnuplot index), blocks separated by two blank lines\n"
          "# per method, the target density closest to 0.1 (1.0 for methods without a\n"
          "# knob; for native settings, the median achieved density closest to 0.1);\n"
          "# values are medians over seeds, tasks, depths of the per-point medians\n"
          "# columns: 1 seq_len  2 total_ms  3 p10_ms  4 p90_ms  5 achieved_density\n"
          "#          6 n_points  7 target_density (knob value if native)  8 method\n"
          "#          9 method_idx (line in methods.txt)\n", f);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = i;
        while (end < c->n_ok && c->ok[end].series == c->ok[i].series) end++;
        /* choose the setting */
        size_t best = i, bend = i;
        double bestd = INFINITY;
        for (size_t a = i; a < end;) {
            size_t b = a;
            while (b < end && c->ok[b].native == c->ok[a].native &&
                   same_num(c->ok[b].setting, c->ok[a].setting)) b++;
            double d;
            if (!c->ok[a].native) d = fabs(c->ok[a].setting - LATENCY_TARGET);
            else {
                double ach;
                FIELD_MEDIAN(ach, c->ok + a, b - a, p_->achieved_density, tmp);
                d = isnan(ach) ? INFINITY : fabs(ach - LATENCY_TARGET);
            }
            if (d < bestd - 1e-12 || bend == i) {
                bestd = d;
                best = a;
                bend = b;
            }
            a = b;
        }
        const series *s = &c->ser[c->ok[i].series];
        /* rows of the chosen setting are sorted by seq_len */
        int started = 0;
        for (size_t a = best; a < bend;) {
            size_t b = a;
            while (b < bend && c->ok[b].p->seq_len == c->ok[a].p->seq_len) b++;
            double ms, lo, hi, ach;
            FIELD_MEDIAN(ms, c->ok + a, b - a, p_->total_ms, tmp);
            FIELD_MEDIAN(lo, c->ok + a, b - a, p_->p10_ms, tmp);
            FIELD_MEDIAN(hi, c->ok + a, b - a, p_->p90_ms, tmp);
            FIELD_MEDIAN(ach, c->ok + a, b - a, p_->achieved_density, tmp);
            if (!isnan(ms) && ms > 0) {
                if (!started) block_start(f, &nblocks, s);
                started = 1;
                fprintf(f, "%d\t", (int)c->ok[a].p->seq_len);
                put_num(f, ms); fputc('\t', f);
                put_num(f, lo); fputc('\t', f);
                put_num(f, hi); fputc('\t', f);
                put_num(f, ach); fputc('\t', f);
                fprintf(f, "%zu\t", b - a);
                put_num(f, c->ok[a].setting); fputc('\t', f);
                fprintf(f, "%s\t%d\n", s->name, s->method_idx);
            }
            a = b;
        }
        i = end;
    }
}

/* ---- recall_vs_density.tsv / accuracy_vs_density.tsv ------------------- */

/* One aggregated output row. */
typedef struct agg {
    int seq_len;
    char task[32];
    double density, y1, y2, y3; /* per figure */
    size_t n;
} agg;

static int agg_cmp(const void *a, const void *b)
{
    const agg *x = a, *y = b;
    int o = strcmp(x->task, y->task);
    if (o) return o;
    if (x->seq_len != y->seq_len) return (x->seq_len > y->seq_len) ? 1 : -1;
    o = cmp_num(x->density, y->density);
    if (o) return o;
    return cmp_num(x->y1, y->y1);
}

/* Write a block of aggregated rows: sorted by task, seq_len, density; a
 * single blank line between (task, seq_len) segments so gnuplot breaks the
 * line there but keeps one dataset per method. */
static void write_aggs(FILE *f, int *nblocks, const series *s, agg *g, size_t ng, int kind)
{
    if (ng == 0) return;
    qsort(g, ng, sizeof *g, agg_cmp);
    block_start(f, nblocks, s);
    for (size_t k = 0; k < ng; k++) {
        if (k > 0 && (g[k].seq_len != g[k - 1].seq_len || strcmp(g[k].task, g[k - 1].task)))
            fputc('\n', f);
        put_num(f, g[k].density); fputc('\t', f);
        put_num(f, g[k].y1); fputc('\t', f);
        put_num(f, g[k].y2); fputc('\t', f);
        if (kind == 'a') {
            put_num(f, g[k].y3); fputc('\t', f);
            put_str(f, g[k].task, sizeof g[k].task, 1); fputc('\t', f);
        }
        fprintf(f, "%d\t%zu\t%s\t%d\n", g[k].seq_len, g[k].n, s->name, s->method_idx);
    }
}

static void write_recall(FILE *f, const xctx *c, double *tmp, agg *g)
{
    fputs("# attnbench export: attention recall vs density (status ok rows only)\n"
          "# one block per method (gnuplot index), blocks separated by two blank lines;\n"
          "# one row per (setting, seq_len), medians over seeds, tasks and depths;\n"
          "# rows sorted by seq_len then density, one blank line between seq_lens;\n"
          "# methods without recall (NaN, e.g. low-rank) are left out\n"
          "# columns: 1 achieved_density  2 recall_mass  3 recall_topk  4 seq_len\n"
          "#          5 n_points  6 method  7 method_idx (line in methods.txt)\n", f);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = i, ng = 0;
        while (end < c->n_ok && c->ok[end].series == c->ok[i].series) end++;
        for (size_t a = i; a < end;) {
            size_t b = a;
            while (b < end && c->ok[b].native == c->ok[a].native &&
                   same_num(c->ok[b].setting, c->ok[a].setting) &&
                   c->ok[b].p->seq_len == c->ok[a].p->seq_len) b++;
            agg *x = &g[ng];
            memset(x, 0, sizeof *x);
            x->seq_len = c->ok[a].p->seq_len;
            x->n = b - a;
            FIELD_MEDIAN(x->density, c->ok + a, b - a, p_->achieved_density, tmp);
            FIELD_MEDIAN(x->y1, c->ok + a, b - a, p_->recall_mass, tmp);
            FIELD_MEDIAN(x->y2, c->ok + a, b - a, p_->recall_topk, tmp);
            if (!isnan(x->density) && !isnan(x->y1)) ng++;
            a = b;
        }
        write_aggs(f, &nblocks, &c->ser[c->ok[i].series], g, ng, 'r');
        i = end;
    }
}

static int xrow_task_cmp(const void *a, const void *b)
{
    const xrow *x = a, *y = b;
    int o = strncmp(x->p->task, y->p->task, sizeof x->p->task);
    return o ? o : xrow_cmp(a, b);
}

/* Wilson score interval, 95%. */
static void wilson(double k, double n, double *lo, double *hi)
{
    const double z = 1.959963984540054;
    double ph = k / n, z2 = z * z;
    double den = 1 + z2 / n;
    double mid = (ph + z2 / (2 * n)) / den;
    double half = z * sqrt(ph * (1 - ph) / n + z2 / (4 * n * n)) / den;
    *lo = mid - half;
    *hi = mid + half;
    if (*lo < 0) *lo = 0;
    if (*hi > 1) *hi = 1;
}

static void write_accuracy(FILE *f, const xctx *c, double *tmp, agg *g, xrow *scratch)
{
    fputs("# attnbench export: task accuracy vs density (status ok rows only)\n"
          "# one block per method (gnuplot index), blocks separated by two blank lines;\n"
          "# one row per (task, setting, seq_len): accuracy pooled over seeds and depths\n"
          "# weighted by rows_scored, with a Wilson 95% interval on the pooled count\n"
          "# (a group of one point keeps its stored interval); rows sorted by task,\n"
          "# seq_len, density, one blank line between (task, seq_len) segments\n"
          "# columns: 1 achieved_density  2 accuracy  3 acc_ci_lo  4 acc_ci_hi  5 task\n"
          "#          6 seq_len  7 n_points  8 method  9 method_idx (line in methods.txt)\n", f);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = i, ng = 0, nr = 0;
        while (end < c->n_ok && c->ok[end].series == c->ok[i].series) end++;
        for (size_t a = i; a < end; a++)
            if (!isnan(c->ok[a].p->accuracy)) scratch[nr++] = c->ok[a];
        qsort(scratch, nr, sizeof *scratch, xrow_task_cmp);
        for (size_t a = 0; a < nr;) {
            size_t b = a;
            while (b < nr && strncmp(scratch[b].p->task, scratch[a].p->task, 32) == 0 &&
                   scratch[b].native == scratch[a].native &&
                   same_num(scratch[b].setting, scratch[a].setting) &&
                   scratch[b].p->seq_len == scratch[a].p->seq_len) b++;
            agg *x = &g[ng];
            memset(x, 0, sizeof *x);
            x->seq_len = scratch[a].p->seq_len;
            memcpy(x->task, scratch[a].p->task, sizeof x->task - 1);
            x->n = b - a;
            FIELD_MEDIAN(x->density, scratch + a, b - a, p_->achieved_density, tmp);
            if (b - a == 1) {
                x->y1 = scratch[a].p->accuracy;
                x->y2 = scratch[a].p->acc_ci_lo;
                x->y3 = scratch[a].p->acc_ci_hi;
            } else {
                double k = 0, nn = 0, sum = 0;
                for (size_t q = a; q < b; q++) {
                    const ab_point *p = scratch[q].p;
                    sum += p->accuracy;
                    if (p->rows_scored > 0) {
                        k += p->accuracy * p->rows_scored;
                        nn += p->rows_scored;
                    }
                }
                if (nn > 0) {
                    x->y1 = k / nn;
                    wilson(k, nn, &x->y2, &x->y3);
                } else { /* no counts: plain mean, interval from the extremes */
                    x->y1 = sum / (double)(b - a);
                    FIELD_MEDIAN(x->y2, scratch + a, b - a, p_->acc_ci_lo, tmp);
                    FIELD_MEDIAN(x->y3, scratch + a, b - a, p_->acc_ci_hi, tmp);
                }
            }
            if (!isnan(x->density)) ng++;
            a = b;
        }
        write_aggs(f, &nblocks, &c->ser[c->ok[i].series], g, ng, 'a');
        i = end;
    }
}

/* ---- speedup_vs_density.tsv --------------------------------------------- */

/* The workload a dense row is matched on. */
static int match_cmp(const ab_point *x, const ab_point *y)
{
    int o = strncmp(x->task, y->task, sizeof x->task);
    if (o) return o;
    o = strncmp(x->device, y->device, sizeof x->device);
    if (o) return o;
    o = strncmp(x->dtype, y->dtype, sizeof x->dtype);
    if (o) return o;
    if (x->seq_len != y->seq_len) return x->seq_len > y->seq_len ? 1 : -1;
    if (x->heads != y->heads) return x->heads > y->heads ? 1 : -1;
    if (x->head_dim != y->head_dim) return x->head_dim > y->head_dim ? 1 : -1;
    if (x->causal != y->causal) return x->causal > y->causal ? 1 : -1;
    if (x->seed != y->seed) return x->seed > y->seed ? 1 : -1;
    return cmp_num(x->depth, y->depth);
}

static int dense_cmp(const void *a, const void *b)
{
    const ab_point *const *x = a, *const *y = b;
    return match_cmp(*x, *y);
}

/* Median dense total_ms for p's workload, NaN when there is none. */
static double dense_ms_for(const ab_point *p, const ab_point **dense, size_t nd, double *tmp)
{
    size_t lo = 0, hi = nd;
    while (lo < hi) { /* first >= p */
        size_t mid = (lo + hi) / 2;
        if (match_cmp(dense[mid], p) < 0) lo = mid + 1;
        else hi = mid;
    }
    size_t m = 0;
    for (size_t k = lo; k < nd && match_cmp(dense[k], p) == 0; k++) tmp[m++] = dense[k]->total_ms;
    return median_of(tmp, m);
}

static void write_speedup(FILE *f, const xctx *c, double *tmp, double *tmp2, agg *g,
                          const ab_point **dense)
{
    fputs("# attnbench export: speedup over dense vs density (status ok rows only)\n"
          "# speedup = total_ms of method \"dense\" / total_ms of the method on the same\n"
          "# (task, device, dtype, seq_len, heads, head_dim, causal, seed, depth);\n"
          "# one block per method (gnuplot index), blocks separated by two blank lines;\n"
          "# one row per (setting, seq_len), medians over the matched points;\n"
          "# rows sorted by seq_len then density, one blank line between seq_lens\n"
          "# columns: 1 achieved_density  2 speedup  3 total_ms  4 seq_len\n"
          "#          5 n_points  6 method  7 method_idx (line in methods.txt)\n", f);
    size_t nd = 0;
    for (size_t i = 0; i < c->n_ok; i++)
        if (strcmp(c->ok[i].p->method, "dense") == 0 && c->ok[i].p->total_ms > 0)
            dense[nd++] = c->ok[i].p;
    if (nd == 0) return;
    qsort(dense, nd, sizeof *dense, dense_cmp);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = i, ng = 0;
        while (end < c->n_ok && c->ok[end].series == c->ok[i].series) end++;
        if (strcmp(c->ser[c->ok[i].series].method, "dense") == 0) {
            i = end;
            continue;
        }
        for (size_t a = i; a < end;) {
            size_t b = a;
            while (b < end && c->ok[b].native == c->ok[a].native &&
                   same_num(c->ok[b].setting, c->ok[a].setting) &&
                   c->ok[b].p->seq_len == c->ok[a].p->seq_len) b++;
            size_t m = 0;
            for (size_t q = a; q < b; q++) {
                const ab_point *p = c->ok[q].p;
                double dms = dense_ms_for(p, dense, nd, tmp2);
                if (isnan(dms) || !(p->total_ms > 0)) continue;
                tmp[m++] = dms / p->total_ms;
            }
            agg *x = &g[ng];
            memset(x, 0, sizeof *x);
            x->seq_len = c->ok[a].p->seq_len;
            x->n = m;
            x->y1 = median_of(tmp, m);
            FIELD_MEDIAN(x->density, c->ok + a, b - a, p_->achieved_density, tmp);
            FIELD_MEDIAN(x->y2, c->ok + a, b - a, p_->total_ms, tmp);
            if (m > 0 && !isnan(x->density)) ng++;
            a = b;
        }
        write_aggs(f, &nblocks, &c->ser[c->ok[i].series], g, ng, 's');
        i = end;
    }
}

/* ---- methods.txt, meta.txt ------------------------------------------- */

static void write_meta(FILE *f, const xctx *c)
{
    static const char *const keys[] = {"host", "cpu_model", "threads", "git_sha",
                                       "created_utc", "attnbench_version", "gpu_name"};
    fprintf(f, "file\t%s\n", c->path);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const char *v = ab_env_get(c->env, keys[k]);
        fprintf(f, "%s\t", keys[k]);
        put_str(f, v ? v : "", 4096, 0);
        fputc('\n', f);
    }
    fprintf(f, "n_points\t%zu\n", c->n);
    fprintf(f, "n_ok\t%zu\n", c->n_ok);
    fprintf(f, "n_failed\t%zu\n", c->n - c->n_ok);
    /* failures by status, statuses in name order */
    const char *prev = "";
    for (;;) {
        const char *next = NULL;
        size_t count = 0;
        for (size_t i = 0; i < c->n; i++) {
            const char *s = c->pts[i].status;
            if (ab_status_is_ok(s) || strncmp(s, prev, 16) <= 0) continue;
            if (!next || strncmp(s, next, 16) < 0) { next = s; count = 0; }
            if (strncmp(s, next, 16) == 0) count++;
        }
        if (!next) break;
        fputs("n_failed_", f);
        put_str(f, next, 16, 1);
        fprintf(f, "\t%zu\n", count);
        prev = next;
    }
}

/* ---- the command ------------------------------------------------------ */

static int export_all(const char *path, const char *dir, char *err, size_t errlen)
{
    ab_point *pts = NULL;
    size_t n = 0;
    ab_env env;
    memset(&env, 0, sizeof env);
    if (ab_results_read(path, &pts, &n, &env, err, errlen) != 0) return 2;
    int rc = 2;
    xctx c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.pts = pts;
    c.n = n;
    c.env = &env;
    double *tmp = malloc((n + 1) * sizeof *tmp);
    double *tmp2 = malloc((n + 1) * sizeof *tmp2);
    agg *g = malloc((n + 1) * sizeof *g);
    xrow *scratch = malloc((n + 1) * sizeof *scratch);
    const ab_point **dense = malloc((n + 1) * sizeof *dense);
    if (!tmp || !tmp2 || !g || !scratch || !dense || build_ctx(&c) != 0) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    qsort(c.ok, c.n_ok, sizeof *c.ok, xrow_cmp);
    if (mkdir_p(dir, err, errlen) != 0) goto done;

    static const char *const names[] = {"points.tsv", "latency_vs_n.tsv",
                                        "recall_vs_density.tsv", "accuracy_vs_density.tsv",
                                        "speedup_vs_density.tsv", "methods.txt", "meta.txt"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        FILE *f = open_out(dir, names[k], err, errlen);
        if (!f) goto done;
        switch (k) {
        case 0: write_points(f, &c); break;
        case 1: write_latency(f, &c, tmp); break;
        case 2: write_recall(f, &c, tmp, g); break;
        case 3: write_accuracy(f, &c, tmp, g, scratch); break;
        case 4: write_speedup(f, &c, tmp, tmp2, g, dense); break;
        case 5:
            for (size_t m = 0; m < c.n_methods; m++) {
                put_str(f, c.methods[m], sizeof c.methods[m], 1);
                fputc('\n', f);
            }
            break;
        default: write_meta(f, &c); break;
        }
        if (close_out(f, names[k], 0, err, errlen) != 0) goto done;
    }
    rc = 0;
done:
    free(c.methods);
    free(c.ser);
    free(c.ok);
    free(tmp);
    free(tmp2);
    free(g);
    free(scratch);
    free(dense);
    free(pts);
    ab_env_free(&env);
    return rc;
}

static void export_usage(FILE *f)
{
    fputs("usage: attnbench export RESULTS.h5 -d DIR\n"
          "\n"
          "Write the results file as TSV into DIR (created if missing):\n"
          "  points.tsv               every point, every column (failed points too)\n"
          "  latency_vs_n.tsv         per method: median latency vs sequence length\n"
          "  recall_vs_density.tsv    per method: attention recall vs density\n"
          "  accuracy_vs_density.tsv  per method: task accuracy (Wilson 95%) vs density\n"
          "  speedup_vs_density.tsv   per method: speedup over \"dense\" vs density\n"
          "  methods.txt, meta.txt    colour order; file, machine, commit, counts\n"
          "The per-figure files hold status-ok points only, one gnuplot block\n"
          "(index) per method; their columns are listed in a header comment.\n"
          "\n"
          "options:\n"
          "  -d, --dir DIR   output directory (required)\n"
          "  -h, --help      this text\n"
          "exit: 0 written, 2 usage or input error\n", f);
}

int ab_cmd_export(int argc, char **argv)
{
    const char *path = NULL, *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            export_usage(stdout);
            return 0;
        } else if (strcmp(a, "-d") == 0 || strcmp(a, "--dir") == 0) {
            if (i + 1 >= argc) {
                ab_errorf("export: %s needs a directory (see attnbench export --help)", a);
                return 2;
            }
            dir = argv[++i];
        } else if (strncmp(a, "--dir=", 6) == 0) {
            dir = a + 6;
        } else if (a[0] == '-' && a[1] != '\0') {
            ab_errorf("export: unknown option '%s' (see attnbench export --help)", a);
            return 2;
        } else if (!path) {
            path = a;
        } else {
            ab_errorf("export: more than one results file ('%s', '%s')", path, a);
            return 2;
        }
    }
    if (!path) {
        ab_errorf("export: no results file given (usage: attnbench export RESULTS.h5 -d DIR)");
        return 2;
    }
    if (!dir || !dir[0]) {
        ab_errorf("export: no output directory: -d DIR is required");
        return 2;
    }
    char err[512] = "";
    int rc = export_all(path, dir, err, sizeof err);
    if (rc != 0) ab_errorf("export: %s", err[0] ? err : "failed");
    return rc;
}
