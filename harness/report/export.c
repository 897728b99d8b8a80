/* export.c — `attnbench export RESULTS.h5 -d DIR` (harness/cli/export.c
 * parses its command line): the results file as TSV.
 *
 * Writes into DIR (created with its parents):
 *   points.tsv               every row, every scalar column (failed rows too)
 *   latency_vs_n.tsv         \
 *   recall_vs_density.tsv     |  status "ok" rows only, one gnuplot block
 *   accuracy_vs_density.tsv   |  (`index`) per method, blocks separated by
 *   speedup_vs_density.tsv    |  two blank lines, columns in a header comment;
 *   accuracy_vs_latency.tsv   |  a "# skip: REASON" line when a figure cannot
 *   needle_heatmap.tsv        |  be drawn from this file
 *   overhead_share.tsv        |
 *   cpu_vs_gpu.tsv            |
 *   breakeven.tsv             |  speedup over dense per method x (N, density)
 *   selectors.tsv            /   select and run vs dense, against the stated bound
 *   dense_vs_mask.tsv        dense time per base mask relative to causal,
 *                            with the ideal (allowed-pair ratio)
 *   summary.tsv              one row per method, device and base mask (index.html)
 *   methods.txt              method names, "dense" first then by name: the
 *                            position is the colour index of every figure
 *   masks.txt                the base masks of the file, in figure order
 *   meta.txt                 key<TAB>value: file, machine, commit, counts
 * Base masks: no figure file mixes points of different base masks (causal,
 * document:8, ...). The per-figure files above hold the points of the
 * primary mask (causal when the file has it, else the first in masks.txt);
 * when the file holds several masks, each other mask gets its own copy
 * NAME--SLUG.tsv (SLUG: the spec with every character but [A-Za-z0-9.-]
 * made '_'), e.g. latency_vs_n--document_8.tsv. Speedups compare with dense
 * under the same mask.
 * Output depends only on the input file, so exporting twice gives the same
 * bytes. Aggregates are medians over the points of a group (seeds, tasks,
 * depths...), so one outlier seed does not move a curve.
 * Timing (the timing protocol, docs/timing.md): latency, speedup, overhead
 * and break-even use only points with a timing (ab_point_timed: status ok,
 * total_ms finite, not flagged "untimed"); untimed points (scored only) count
 * in accuracy and recall. A point's speedup over dense is its paired ratio,
 * 1 / rel_dense with the interval [1 / rel_hi, 1 / rel_lo], when it has one,
 * else dense total_ms on the same workload / total_ms, without an interval.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "harness/engine/metrics.h"
#include "harness/report/aggregate.h"
#include "harness/report/export.h"
#include "harness/store/point.h"
#include "harness/store/store.h"

#define LATENCY_TARGET 0.1 /* latency_vs_n: the density each curve is taken at */

/* One "series" is one curve: a method, or method@device when the file holds
 * several devices. */
typedef struct series {
    char name[48];
    char method[32];
    char device[8];
    char dtype[8];        /* of its points (the dtype axis: "bf16" has its own series) */
    int baseline;         /* method "dense" on the device's own inputs (ab_point_is_baseline) */
    int method_idx;       /* 1-based position in methods.txt */
    int block_q, block_k; /* of the series' first ok point with blocks (0: none) */
    int custom;           /* its points have a custom layout (effective recall) */
} series;

/* An ok point with what the figures group it by (series: index into
 * xctx.ser, mask: into xctx.masks). */
typedef ab_row xrow;

typedef struct xctx {
    const char *path; /* the results file, as given */
    const ab_point *pts;
    size_t n;
    const ab_env *env;
    char (*methods)[32]; /* methods.txt order: by family (AB_FAMILIES order), then name */
    size_t n_methods;
    int *mfam; /* per method: index in AB_FAMILIES, or N_FAMILIES when unknown */
    series *ser;
    size_t n_ser;
    xrow *ok; /* status ok rows (of one mask while a figure is written) */
    size_t n_ok;
    xrow *ok_all; /* every status ok row, xrow_cmp order */
    size_t n_ok_all;
    char (*masks)[AB_MASK_SPEC]; /* distinct base masks, mask_order: [0] is primary */
    char (*slugs)[AB_MASK_SPEC]; /* file-name form of each */
    size_t n_masks;
    int multi_dev;          /* the file holds more than one device */
    char primary_dev[8];    /* "cpu" when it holds cpu points, else the first */
    const ab_point **dense; /* timed ok "dense" rows, sorted by match_cmp (speedups) */
    size_t n_dense;
    int cur_mask; /* the mask c->ok holds (select_mask), -1: every one */
} xctx;

/* ---- small helpers ------------------------------------------------------ */

/* Shortest "%.Ng" that reads back to the same double; "nan", "inf", "-inf". */
static void put_num(FILE *f, double v)
{
    if (isnan(v)) {
        fputs("nan", f);
        return;
    }
    if (isinf(v)) {
        fputs(v > 0 ? "inf" : "-inf", f);
        return;
    }
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, f);
}

/* v[0..n) as put_num, each followed by a tab. */
static void put_nums(FILE *f, const double *v, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        put_num(f, v[k]);
        fputc('\t', f);
    }
}

/* A string field: tabs and line breaks become spaces (TSV safety); with
 * nospace, blanks become '_' too (gnuplot reads columns split at blanks). */
static void put_str(FILE *f, const char *s, size_t cap, int nospace)
{
    size_t i = 0;
    for (; i < cap && s[i]; i++) {
        char c = s[i];
        if (c == '\t' || c == '\n' || c == '\r')
            c = nospace ? '_' : ' ';
        else if (nospace && c == ' ')
            c = '_';
        fputc(c, f);
    }
    if (nospace && i == 0) fputc('-', f);
}
#define PUT_STR(f, field, ns) put_str((f), (field), sizeof(field), (ns))

/* ---- base masks ------------------------------------------------------- */

/* Allowed pairs / N^2 of that mask (the plain causal or full value for a
 * row without a spec). */
static double mask_density_of(const ab_point *p)
{
    if (p->mask[0]) return p->mask_density;
    return p->causal ? (p->seq_len + 1.0) / (2.0 * p->seq_len) : 1.0;
}

static int mask_cmp(const void *a, const void *b) { return ab_mask_order((const char *)a, (const char *)b); }

/* Index of p's mask in c->masks (-1 if absent, which build_ctx rules out). */
static int mask_index(const xctx *c, const ab_point *p)
{
    const char *m = ab_point_mask(p);
    for (size_t k = 0; k < c->n_masks; k++)
        if (strncmp(c->masks[k], m, AB_MASK_SPEC) == 0) return (int)k;
    return -1;
}

#define N_FAMILIES 7 /* the words of AB_FAMILIES, in its (legend) order */
static const char *const fam_names[N_FAMILIES] = { "dense",   "static",  "block", "token",
                                                   "hashing", "lowrank", "linear" };

static int fam_index(const char *f)
{
    for (int i = 0; i < N_FAMILIES; i++)
        if (strcmp(f, fam_names[i]) == 0) return i;
    return N_FAMILIES;
}

/* methods.txt order: family (AB_FAMILIES order, unknown last), then
 * ab_method_order (dense first, then by name) inside a family */
typedef struct mfam_key {
    char name[32];
    int fam;
} mfam_key;

static int mfam_cmp(const void *a, const void *b)
{
    const mfam_key *x = a, *y = b;
    if (x->fam != y->fam) return x->fam < y->fam ? -1 : 1;
    return ab_method_order(x->name, y->name);
}

static void sort_methods(xctx *c)
{
    mfam_key *k = malloc((c->n_methods ? c->n_methods : 1) * sizeof *k);
    if (!k) { /* by name only */
        qsort(c->methods, c->n_methods, sizeof *c->methods, (int (*)(const void *, const void *))strcmp);
        for (size_t i = 0; i < c->n_methods; i++) c->mfam[i] = N_FAMILIES;
        return;
    }
    for (size_t i = 0; i < c->n_methods; i++) {
        memcpy(k[i].name, c->methods[i], 32);
        k[i].fam = c->mfam[i];
    }
    qsort(k, c->n_methods, sizeof *k, mfam_cmp);
    for (size_t i = 0; i < c->n_methods; i++) {
        memcpy(c->methods[i], k[i].name, 32);
        c->mfam[i] = k[i].fam;
    }
    free(k);
}

/* methods.txt: one line per method, in colour order: name, family ("-"
 * unknown), colour (1-based family position; N_FAMILIES + 1 unknown),
 * marker (1-based position inside its family). plots/common.gp reads them. */
static void write_methods(FILE *f, const xctx *c)
{
    int rank = 0;
    for (size_t m = 0; m < c->n_methods; m++) {
        rank = (m > 0 && c->mfam[m] == c->mfam[m - 1]) ? rank + 1 : 1;
        put_str(f, c->methods[m], sizeof c->methods[m], 1);
        fprintf(f, "\t%s\t%d\t%d\n", c->mfam[m] < N_FAMILIES ? fam_names[c->mfam[m]] : "-", c->mfam[m] + 1,
                rank);
    }
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
            snprintf(err, errlen, "cannot create directory '%.300s': %s", buf, strerror(errno));
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

void ab_export_header(const char *path, const char *tag, char *out, size_t len)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    size_t tl = strlen(tag);
    while (fgets(line, sizeof line, f) && line[0] == '#')
        if (strncmp(line, tag, tl) == 0) {
            line[strcspn(line, "\r\n")] = '\0';
            snprintf(out, len, "%.300s", line + tl);
            break;
        }
    fclose(f);
}

/* ---- methods, series, ok rows ------------------------------------------- */

/* When the series ran on different block sizes (methods at their native
 * blocks, docs/methods.md), each blocked series' legend names its block:
 * "xattention(b128)", "pbs(b128x64)"; one block for all: names unchanged. */
static void block_labels(xctx *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        if (!ab_status_is_ok(p->status) || p->block_q <= 0 || ab_point_is_decode(p)) continue;
        for (size_t k = 0; k < c->n_ser; k++)
            if (!c->ser[k].block_q && strncmp(c->ser[k].method, p->method, 32) == 0 &&
                (!c->multi_dev || strncmp(c->ser[k].device, p->device, 8) == 0)) {
                c->ser[k].block_q = p->block_q;
                c->ser[k].block_k = p->block_k;
            }
    }
    int differ = 0;
    for (size_t k = 1; k < c->n_ser; k++)
        for (size_t j = 0; j < k && !differ; j++)
            if (c->ser[k].block_q && c->ser[j].block_q &&
                (c->ser[k].block_q != c->ser[j].block_q || c->ser[k].block_k != c->ser[j].block_k))
                differ = 1;
    if (!differ) return;
    for (size_t k = 0; k < c->n_ser; k++) {
        series *s = &c->ser[k];
        size_t l = strlen(s->name);
        if (!s->block_q) continue;
        if (s->block_q == s->block_k)
            snprintf(s->name + l, sizeof s->name - l, "(b%d)", s->block_q);
        else
            snprintf(s->name + l, sizeof s->name - l, "(b%dx%d)", s->block_q, s->block_k);
    }
}

static int build_ctx(xctx *c)
{
    /* distinct methods and devices */
    c->methods = malloc((c->n + 1) * sizeof *c->methods);
    c->mfam = malloc((c->n + 1) * sizeof *c->mfam);
    c->ser = malloc((c->n + 1) * sizeof *c->ser);
    c->ok = malloc((c->n + 1) * sizeof *c->ok);
    c->ok_all = malloc((c->n + 1) * sizeof *c->ok_all);
    c->masks = malloc((c->n + 1) * sizeof *c->masks);
    c->slugs = malloc((c->n + 1) * sizeof *c->slugs);
    if (!c->methods || !c->mfam || !c->ser || !c->ok || !c->ok_all || !c->masks || !c->slugs) return -1;
    /* distinct base masks, in figure order, and their file-name forms */
    for (size_t i = 0; i < c->n; i++) {
        const char *m = ab_point_mask(&c->pts[i]);
        size_t k = 0;
        while (k < c->n_masks && strncmp(c->masks[k], m, AB_MASK_SPEC) != 0) k++;
        if (k == c->n_masks) snprintf(c->masks[c->n_masks++], AB_MASK_SPEC, "%.*s", AB_MASK_SPEC - 1, m);
    }
    qsort(c->masks, c->n_masks, sizeof *c->masks, mask_cmp);
    for (size_t k = 0; k < c->n_masks; k++) {
        char *sl = c->slugs[k];
        size_t l = 0;
        for (const char *q = c->masks[k]; *q && l + 1 < AB_MASK_SPEC; q++)
            sl[l++] = (isalnum((unsigned char)*q) || *q == '.' || *q == '-') ? *q : '_';
        sl[l] = '\0';
        for (size_t j = 0; j < k; j++) /* two specs with one slug: the later gets its index */
            if (strcmp(c->slugs[j], sl) == 0) {
                snprintf(sl + (l < AB_MASK_SPEC - 8 ? l : AB_MASK_SPEC - 8), 8, "_%d", (int)(k % 100000) + 1);
                break;
            }
    }
    char first_dev[8] = "";
    int multi_dev = 0;
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        size_t k = 0;
        while (k < c->n_methods && strncmp(c->methods[k], p->method, 32) != 0) k++;
        if (k == c->n_methods) {
            memcpy(c->methods[k], p->method, 32);
            c->methods[k][31] = '\0';
            c->mfam[k] = N_FAMILIES;
            c->n_methods++;
        }
        if (c->mfam[k] == N_FAMILIES && p->family[0]) {
            char fam[sizeof p->family + 1];
            snprintf(fam, sizeof fam, "%.*s", (int)sizeof p->family, p->family);
            c->mfam[k] = fam_index(fam);
        }
        if (i == 0)
            memcpy(first_dev, p->device, sizeof first_dev);
        else if (strncmp(first_dev, p->device, sizeof first_dev) != 0)
            multi_dev = 1;
        if (strncmp(p->device, "cpu", sizeof p->device) == 0) memcpy(c->primary_dev, "cpu", 4);
    }
    first_dev[sizeof first_dev - 1] = '\0';
    if (!c->primary_dev[0]) memcpy(c->primary_dev, first_dev, sizeof c->primary_dev);
    c->multi_dev = multi_dev;
    sort_methods(c);

    /* series: over ok rows, in method order then device name */
    for (size_t i = 0; i < c->n; i++) { /* decode points have their own table (decode.tsv) */
        const ab_point *p = &c->pts[i];
        if (!ab_status_is_ok(p->status) || ab_point_is_decode(p)) continue;
        size_t k = 0;
        for (; k < c->n_ser; k++)
            if (strncmp(c->ser[k].method, p->method, 32) == 0 &&
                (!multi_dev || strncmp(c->ser[k].device, p->device, 8) == 0) &&
                strncmp(c->ser[k].dtype, p->dtype, 8) == 0)
                break;
        if (k == c->n_ser) {
            series *s = &c->ser[c->n_ser++];
            memset(s, 0, sizeof *s);
            memcpy(s->method, p->method, 31);
            memcpy(s->device, p->device, 7);
            memcpy(s->dtype, p->dtype, 7);
            s->baseline = ab_point_is_baseline(p);
            ab_point_series_name(p, multi_dev, s->name, sizeof s->name);
            for (size_t m = 0; m < c->n_methods; m++)
                if (strcmp(c->methods[m], s->method) == 0) s->method_idx = (int)m + 1;
        }
        if (strncmp(p->layout, "custom", sizeof p->layout) == 0) c->ser[k].custom = 1;
    }
    block_labels(c);
    /* sort series; remember the permutation through the names */
    for (size_t a = 1; a < c->n_ser; a++) {
        series t = c->ser[a];
        size_t b = a;
        while (b > 0) {
            int o = ab_method_order(c->ser[b - 1].method, t.method);
            if (o == 0) o = strcmp(c->ser[b - 1].device, t.device);
            if (o == 0) o = ab_dtype_cmp(c->ser[b - 1].dtype, t.dtype); /* fp32 first */
            if (o <= 0) break;
            c->ser[b] = c->ser[b - 1];
            b--;
        }
        c->ser[b] = t;
    }
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        if (!ab_status_is_ok(p->status) || ab_point_is_decode(p)) continue;
        xrow *r = &c->ok_all[c->n_ok_all++];
        r->p = p;
        r->series = 0;
        r->mask = mask_index(c, p);
        for (size_t k = 0; k < c->n_ser; k++)
            if (strncmp(c->ser[k].method, p->method, 32) == 0 &&
                (!multi_dev || strncmp(c->ser[k].device, p->device, 8) == 0) &&
                strncmp(c->ser[k].dtype, p->dtype, 8) == 0) {
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
    if (x->mask != y->mask) return x->mask - y->mask;
    if (x->native != y->native) return x->native - y->native;
    int o = ab_cmp_num(x->setting, y->setting);
    if (o) return o;
    if (x->p->seq_len != y->p->seq_len) return (x->p->seq_len > y->p->seq_len) ? 1 : -1;
    o = strncmp(x->p->task, y->p->task, sizeof x->p->task);
    if (o) return o;
    return (x->p > y->p) - (x->p < y->p);
}

/* Point c->ok at the status ok rows of mask m (every one when m < 0); they
 * keep their xrow_cmp order. */
static void select_mask(xctx *c, int m)
{
    c->n_ok = 0;
    c->cur_mask = m;
    for (size_t i = 0; i < c->n_ok_all; i++)
        if (m < 0 || c->ok_all[i].mask == m) c->ok[c->n_ok++] = c->ok_all[i];
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
    "head_dim\tcausal\tmask\tmask_density\tthreads\tseed\tdepth\ttarget_density\tknob_value\t"
    "achieved_density\tselect_ms\trun_ms\ttotal_ms\tmin_ms\tp10_ms\tp90_ms\tcv\t"
    "n_samples\tdense_gflops\trecall_mass\trecall_topk\trel_l2_err\tmax_abs_err\t"
    "accuracy\tacc_ci_lo\tacc_ci_hi\tacc_trials\trows_scored\tstatus\tmessage\t"
    "rounds\tcalls\ttotal_lo_ms\ttotal_hi_ms\tdense_pair_ms\trel_dense\trel_lo\trel_hi\t"
    "speedup\tspeedup_lo\tspeedup_hi\tforeign_pct\tsteal_pct\tload1\ttiming\tpoint_s\tfma_gflops\t"
    "shared_pct\tblock_q\tblock_k\tselect_flops\tselect_bytes\tfamily\tphase\tkv_"
    "heads\tbatch\tsteps\tlayers\t"
    "layer_corr\tprepare_ms\tkv_bytes\tcache_bytes\tlayer_recall\ttparams\thead_recall";

static void write_points(FILE *f, const xctx *c)
{
    fprintf(f, "%s\n", POINT_COLS);
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        const char *sep = "\t";
        PUT_STR(f, p->key, 0);
        fputs(sep, f);
        PUT_STR(f, p->method, 0);
        fputs(sep, f);
        PUT_STR(f, p->params, 0);
        fputs(sep, f);
        PUT_STR(f, p->device, 0);
        fputs(sep, f);
        PUT_STR(f, p->dtype, 0);
        fputs(sep, f);
        PUT_STR(f, p->task, 0);
        fputs(sep, f);
        PUT_STR(f, p->kernel, 0);
        fputs(sep, f);
        PUT_STR(f, p->layout, 0);
        fputs(sep, f);
        fprintf(f, "%d\t%d\t%d\t%d\t", (int)p->seq_len, (int)p->heads, (int)p->head_dim, (int)p->causal);
        put_str(f, ab_point_mask(p), AB_MASK_SPEC, 0);
        fputs(sep, f);
        put_num(f, mask_density_of(p));
        fputs(sep, f);
        fprintf(f, "%d\t%lld\t", (int)p->threads, (long long)p->seed);
        const double d1[] = { p->depth,     p->target_density, p->knob_value, p->achieved_density,
                              p->select_ms, p->run_ms,         p->total_ms,   p->min_ms,
                              p->p10_ms,    p->p90_ms,         p->cv };
        put_nums(f, d1, sizeof d1 / sizeof d1[0]);
        fprintf(f, "%d\t", (int)p->n_samples);
        const double d2[] = { p->dense_gflops, p->recall_mass, p->recall_topk, p->rel_l2_err,
                              p->max_abs_err,  p->accuracy,    p->acc_ci_lo,   p->acc_ci_hi };
        put_nums(f, d2, sizeof d2 / sizeof d2[0]);
        fprintf(f, "%d\t%d\t", (int)p->acc_trials, (int)p->rows_scored);
        PUT_STR(f, p->status, 0);
        fputs(sep, f);
        PUT_STR(f, p->message, 0);
        /* the timing protocol; speedup = 1 / rel_dense of a timed point (NaN
         * without a paired ratio: the figures then fall back to dense
         * total_ms / total_ms) */
        fprintf(f, "\t%d\t%d\t", (int)p->rounds, (int)p->calls);
        double sp, sp_lo, sp_hi;
        ab_point_paired_speedup(p, &sp, &sp_lo, &sp_hi);
        const double d3[] = {
            p->total_lo_ms, p->total_hi_ms, p->dense_pair_ms, p->rel_dense, p->rel_lo, p->rel_hi, sp,
            sp_lo,          sp_hi,          p->foreign_pct,   p->steal_pct, p->load1
        };
        put_nums(f, d3, sizeof d3 / sizeof d3[0]);
        PUT_STR(f, p->timing, 0);
        fputs(sep, f);
        put_num(f, p->point_s);
        fputs(sep, f);
        put_num(f, p->fma_gflops);
        fputs(sep, f);
        put_num(f, p->shared_pct);
        fprintf(f, "\t%d\t%d\t", (int)p->block_q, (int)p->block_k);
        put_num(f, p->select_flops);
        fputs(sep, f);
        put_num(f, p->select_bytes);
        fputc('\t', f);
        put_str(f, p->family, sizeof p->family, 1);
        fputc('\t', f);
        put_str(f, p->phase[0] ? p->phase : "prefill", sizeof p->phase, 1);
        fprintf(f, "\t%d\t%d\t%d\t%d\t", (int)p->kv_heads, (int)p->batch, (int)p->steps, (int)p->layers);
        const double d4[] = { p->layer_corr, p->prepare_ms, p->kv_bytes, p->cache_bytes };
        put_nums(f, d4, 4);
        put_str(f, p->layer_recall, sizeof p->layer_recall, 1);
        fputc('\t', f);
        put_str(f, p->tparams, sizeof p->tparams, 1);
        fputc('\t', f);
        put_str(f, p->head_recall, sizeof p->head_recall, 1);
        fputc('\n', f);
    }
}

/* ---- latency_vs_n.tsv, cpu_vs_gpu.tsv ----------------------------------- */

/* The end of the run of c->ok rows from i that share its series. */
static size_t series_end(const xctx *c, size_t i)
{
    size_t end = i;
    while (end < c->n_ok && c->ok[end].series == c->ok[i].series) end++;
    return end;
}

/* What a group shares beside the setting: GRP_LEN the seq_len, GRP_TASK the task. */
enum { GRP_LEN = 1, GRP_TASK = 2 };

/* The end of the group of rows[a..n) that share rows[a]'s setting (and its
 * seq_len and task as `by` says); rows sorted so that a group is a run. */
static size_t group_end(const xrow *rows, size_t a, size_t n, int by)
{
    size_t b = a;
    while (b < n && ab_same_setting(&rows[b], &rows[a]) &&
           (!(by & GRP_LEN) || rows[b].p->seq_len == rows[a].p->seq_len) &&
           (!(by & GRP_TASK) || strncmp(rows[b].p->task, rows[a].p->task, 32) == 0))
        b++;
    return b;
}

/* rows[0..n) are one series' rows in xrow_cmp order (grouped by setting).
 * Pick the setting a one-setting figure shows: the target density closest to
 * LATENCY_TARGET (1.0 for methods without a knob); for native settings, the
 * one whose median achieved density is closest. Sets [*b0, *b1). */
static void pick_setting(const xrow *rows, size_t n, double *tmp, size_t *b0, size_t *b1)
{
    double bestd = INFINITY;
    *b0 = *b1 = 0;
    for (size_t a = 0; a < n;) {
        size_t b = group_end(rows, a, n, 0);
        double d;
        if (!rows[a].native)
            d = fabs(rows[a].setting - LATENCY_TARGET);
        else {
            double ach;
            AB_ROWS_MEDIAN(ach, rows + a, b - a, p_->achieved_density, tmp);
            d = isnan(ach) ? INFINITY : fabs(ach - LATENCY_TARGET);
        }
        if (d < bestd - 1e-12 || *b1 == 0) {
            bestd = d;
            *b0 = a;
            *b1 = b;
        }
        a = b;
    }
}

/* 1-based index of a device name among "cpu", "gpu", others. */
static int device_idx(const char *dev)
{
    if (strncmp(dev, "cpu", 8) == 0) return 1;
    if (strncmp(dev, "gpu", 8) == 0) return 2;
    return 3;
}

/* The rows of rows[0..n) that carry a timing (ab_point_timed) into out,
 * order kept; their count. */
static size_t timed_rows(const xrow *rows, size_t n, xrow *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (ab_point_timed(rows[i].p)) out[m++] = rows[i];
    return m;
}

/* The timed rows of the series c->ok[i..end) into scratch and, among them,
 * the setting a one-setting figure shows: scratch[*b0..*b1), by seq_len.
 * 0 when the series has no timed row. */
static int pick_timed(const xctx *c, size_t i, size_t end, xrow *scratch, double *tmp, size_t *b0, size_t *b1)
{
    size_t nt = timed_rows(c->ok + i, end - i, scratch);
    if (nt == 0) return 0;
    pick_setting(scratch, nt, tmp, b0, b1);
    return 1;
}

/* "# note: ..." header line of a timing figure: the status-ok points of the
 * figure's base mask (on device dev, any when NULL) that it leaves out for
 * having no timing, and the timing flags of those it uses (plot puts the
 * line in the figure's footnote). what: how the untimed points are treated. */
static void timing_note(FILE *f, const xctx *c, const char *dev, const char *what)
{
    size_t untimed = 0, inter = 0, disagree = 0, shared = 0, timed = 0;
    for (size_t i = 0; i < c->n_ok; i++) {
        const ab_point *p = c->ok[i].p;
        if (dev && strncmp(p->device, dev, sizeof p->device) != 0) continue;
        if (!ab_point_timed(p)) {
            untimed++;
            continue;
        }
        timed++;
        inter += ab_point_has_flag(p, "interference") != 0;
        disagree += ab_point_has_flag(p, "rounds_disagree") != 0;
        shared += ab_point_has_flag(p, "cores_shared") != 0;
    }
    if (untimed == 0 && inter == 0 && disagree == 0 && shared == 0) return;
    fputs("# note: ", f);
    const char *sep = "";
    if (untimed) {
        fprintf(f, "untimed (scored only): %zu ok point%s, %s", untimed, untimed == 1 ? "" : "s", what);
        sep = "   ";
    }
    if (inter || disagree || shared) {
        fprintf(f, "%sflagged (of %zu timed): ", sep, timed);
        if (inter) fprintf(f, "interference %zu", inter);
        if (disagree) fprintf(f, "%srounds_disagree %zu", inter ? ", " : "", disagree);
        if (shared) fprintf(f, "%scores_shared %zu", inter || disagree ? ", " : "", shared);
    }
    fputc('\n', f);
}

/* all_dev = 0: latency_vs_n.tsv, series of the primary device only;
 * all_dev = 1: cpu_vs_gpu.tsv, every series, written only when the file
 * holds several devices (else a "# skip:" line and no rows). Timed points
 * only; the setting is picked among them. */
static void write_latency(FILE *f, const xctx *c, double *tmp, xrow *scratch, int all_dev)
{
    if (!all_dev)
        fputs("# attnbench export: latency vs sequence length (status ok rows with a timing only)\n", f);
    else
        fputs("# attnbench export: latency vs sequence length on every device (status ok rows\n"
              "# with a timing only)\n",
              f);
    fprintf(f, "# device: %s\n", all_dev ? "all" : c->primary_dev);
    timing_note(f, c, all_dev ? NULL : c->primary_dev, "left out");
    fputs("# one block per method (gnuplot index), blocks separated by two blank lines\n"
          "# per method, the target density closest to 0.1 (1.0 for methods without a\n"
          "# knob; for native settings, the median achieved density closest to 0.1);\n"
          "# values are medians over seeds, tasks, depths of the per-point medians;\n"
          "# total_lo_ms / total_hi_ms: medians of the points' 95% intervals of total_ms\n"
          "# (hierarchical bootstrap over rounds and samples; nan in files written\n"
          "# before the timing protocol)\n"
          "# columns: 1 seq_len  2 total_ms  3 p10_ms  4 p90_ms  5 achieved_density\n"
          "#          6 n_points  7 target_density (knob value if native)  8 method\n"
          "#          9 method_idx (line in methods.txt)  10 device  11 device_idx\n"
          "#          (1 cpu, 2 gpu, 3 other)  12 select_ms  13 total_lo_ms  14 total_hi_ms\n",
          f);
    if (all_dev && !c->multi_dev) {
        fprintf(f, "# skip: the file holds points of one device only (%s)\n", c->primary_dev);
        return;
    }
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = series_end(c, i);
        const series *s = &c->ser[c->ok[i].series];
        size_t b0, b1, i0 = i;
        i = end;
        if (!all_dev && strncmp(s->device, c->primary_dev, sizeof s->device) != 0) continue;
        if (!pick_timed(c, i0, end, scratch, tmp, &b0, &b1)) continue;
        /* rows of the chosen setting are sorted by seq_len */
        int started = 0;
        for (size_t a = b0; a < b1;) {
            size_t b = group_end(scratch, a, b1, GRP_LEN);
            double ms, lo, hi, ach, sel, clo, chi;
            AB_ROWS_MEDIAN(ms, scratch + a, b - a, p_->total_ms, tmp);
            AB_ROWS_MEDIAN(lo, scratch + a, b - a, p_->p10_ms, tmp);
            AB_ROWS_MEDIAN(hi, scratch + a, b - a, p_->p90_ms, tmp);
            AB_ROWS_MEDIAN(ach, scratch + a, b - a, p_->achieved_density, tmp);
            AB_ROWS_MEDIAN(sel, scratch + a, b - a, p_->select_ms, tmp);
            AB_ROWS_MEDIAN(clo, scratch + a, b - a, p_->total_lo_ms, tmp);
            AB_ROWS_MEDIAN(chi, scratch + a, b - a, p_->total_hi_ms, tmp);
            if (!isnan(ms) && ms > 0) {
                if (!started) block_start(f, &nblocks, s);
                started = 1;
                fprintf(f, "%d\t", (int)scratch[a].p->seq_len);
                put_nums(f, (const double[]){ ms, lo, hi, ach }, 4);
                fprintf(f, "%zu\t", b - a);
                put_num(f, scratch[a].setting);
                fputc('\t', f);
                fprintf(f, "%s\t%d\t", s->name, s->method_idx);
                put_str(f, s->device, sizeof s->device, 1);
                fprintf(f, "\t%d\t", device_idx(s->device));
                put_nums(f, (const double[]){ sel, clo }, 2);
                put_num(f, chi);
                fputc('\n', f);
            }
            a = b;
        }
    }
}

/* ---- recall_vs_density.tsv / accuracy_vs_density.tsv ------------------- */

/* One aggregated output row. */
typedef struct agg {
    int seq_len;
    char task[32];
    double density, y1, y2, y3; /* per figure */
    double y4, y5;              /* speedup: its interval */
    int paired;                 /* speedup: 1 when every point of the row is paired */
    size_t n;
} agg;

static int agg_cmp(const void *a, const void *b)
{
    const agg *x = a, *y = b;
    int o = strcmp(x->task, y->task);
    if (o) return o;
    if (x->seq_len != y->seq_len) return (x->seq_len > y->seq_len) ? 1 : -1;
    o = ab_cmp_num(x->density, y->density);
    if (o) return o;
    return ab_cmp_num(x->y1, y->y1);
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
        if (k > 0 && (g[k].seq_len != g[k - 1].seq_len || strcmp(g[k].task, g[k - 1].task))) fputc('\n', f);
        put_num(f, g[k].density);
        fputc('\t', f);
        put_num(f, g[k].y1);
        fputc('\t', f);
        put_num(f, g[k].y2);
        fputc('\t', f);
        if (kind == 'a') {
            put_num(f, g[k].y3);
            fputc('\t', f);
            put_str(f, g[k].task, sizeof g[k].task, 1);
            fputc('\t', f);
        }
        fprintf(f, "%d\t%zu\t%s\t%d", g[k].seq_len, g[k].n, s->name, s->method_idx);
        if (kind == 's') {
            fputc('\t', f);
            put_num(f, g[k].y4);
            fputc('\t', f);
            put_num(f, g[k].y5);
            fprintf(f, "\t%d", g[k].paired);
        }
        fputc('\n', f);
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
          "#          5 n_points  6 method  7 method_idx (line in methods.txt)\n",
          f);
    int any_custom = 0;
    for (size_t i = 0; i < c->n_ok; i++) any_custom |= c->ser[c->ok[i].series].custom;
    if (any_custom)
        fputs("# note: * custom layout (low-rank, pooled, linear): effective recall, the exact attention "
              "mass on "
              "the keys its implied weights rank highest, as many as its density allows (docs/tasks.md)\n",
              f);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = series_end(c, i), ng = 0;
        for (size_t a = i; a < end;) {
            size_t b = group_end(c->ok, a, end, GRP_LEN);
            agg *x = &g[ng];
            memset(x, 0, sizeof *x);
            x->seq_len = c->ok[a].p->seq_len;
            x->n = b - a;
            AB_ROWS_MEDIAN(x->density, c->ok + a, b - a, p_->achieved_density, tmp);
            AB_ROWS_MEDIAN(x->y1, c->ok + a, b - a, p_->recall_mass, tmp);
            AB_ROWS_MEDIAN(x->y2, c->ok + a, b - a, p_->recall_topk, tmp);
            if (!isnan(x->density) && !isnan(x->y1)) ng++;
            a = b;
        }
        series sr = c->ser[c->ok[i].series];
        if (sr.custom) { /* marked: its recall is an effective recall */
            const size_t l = strnlen(sr.name, sizeof sr.name);
            if (l + 2 < sizeof sr.name) memcpy(sr.name + l, "*", 2);
        }
        write_aggs(f, &nblocks, &sr, g, ng, 'r');
        i = end;
    }
}

static int xrow_task_cmp(const void *a, const void *b)
{
    const xrow *x = a, *y = b;
    int o = strncmp(x->p->task, y->p->task, sizeof x->p->task);
    return o ? o : xrow_cmp(a, b);
}

/* The number of answers behind a point's accuracy (stored as acc_trials);
 * NaN when the point has none. */
static double answers_of(const ab_point *p) { return p->acc_trials > 0 ? (double)p->acc_trials : NAN; }

/* Accuracy of a group: a single point keeps its stored value and interval;
 * several are pooled: k and n summed over the points (n = acc_trials),
 * with a Wilson 95% interval on the pooled count. When some n cannot be
 * known (acc_trials 0): the plain mean, with the widest stored bounds. */
static void pool_accuracy(const xrow *rows, size_t n, double *tmp, double *acc, double *lo, double *hi)
{
    if (n == 1) {
        *acc = rows[0].p->accuracy;
        *lo = rows[0].p->acc_ci_lo;
        *hi = rows[0].p->acc_ci_hi;
        return;
    }
    double k = 0, nn = 0, sum = 0, mlo = INFINITY, mhi = -INFINITY;
    size_t m = 0;
    int counted = 1;
    for (size_t q = 0; q < n; q++) {
        const ab_point *p = rows[q].p;
        if (isnan(p->accuracy)) continue;
        m++;
        sum += p->accuracy;
        if (p->acc_ci_lo < mlo) mlo = p->acc_ci_lo;
        if (p->acc_ci_hi > mhi) mhi = p->acc_ci_hi;
        double a = answers_of(p);
        if (isnan(a))
            counted = 0;
        else {
            k += floor(p->accuracy * a + 0.5);
            nn += a;
        }
    }
    (void)tmp;
    if (m == 0) {
        *acc = *lo = *hi = NAN;
    } else if (counted && nn > 0) {
        *acc = k / nn;
        ab_wilson(k, nn, lo, hi);
    } else {
        *acc = sum / (double)m;
        *lo = isinf(mlo) ? NAN : mlo;
        *hi = isinf(mhi) ? NAN : mhi;
    }
}

static void write_accuracy(FILE *f, const xctx *c, double *tmp, agg *g, xrow *scratch)
{
    fputs("# attnbench export: task accuracy vs density (status ok rows only)\n"
          "# one block per method (gnuplot index), blocks separated by two blank lines;\n"
          "# one row per (task, setting, seq_len): accuracy pooled over seeds and depths\n"
          "# (answers summed over points, from each point's acc_trials;\n"
          "# interval), with a Wilson 95% interval on the pooled count (a group of one\n"
          "# point keeps its stored interval; if a count is unknown: the mean,\n"
          "# with the widest stored bounds); rows sorted by task,\n"
          "# seq_len, density, one blank line between (task, seq_len) segments\n"
          "# columns: 1 achieved_density  2 accuracy  3 acc_ci_lo  4 acc_ci_hi  5 task\n"
          "#          6 seq_len  7 n_points  8 method  9 method_idx (line in methods.txt)\n",
          f);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = series_end(c, i), ng = 0, nr = 0;
        for (size_t a = i; a < end; a++)
            if (!isnan(c->ok[a].p->accuracy)) scratch[nr++] = c->ok[a];
        qsort(scratch, nr, sizeof *scratch, xrow_task_cmp);
        for (size_t a = 0; a < nr;) {
            size_t b = group_end(scratch, a, nr, GRP_TASK | GRP_LEN);
            agg *x = &g[ng];
            memset(x, 0, sizeof *x);
            x->seq_len = scratch[a].p->seq_len;
            memcpy(x->task, scratch[a].p->task, sizeof x->task - 1);
            x->n = b - a;
            AB_ROWS_MEDIAN(x->density, scratch + a, b - a, p_->achieved_density, tmp);
            pool_accuracy(scratch + a, b - a, tmp, &x->y1, &x->y2, &x->y3);
            if (!isnan(x->density)) ng++;
            a = b;
        }
        write_aggs(f, &nblocks, &c->ser[c->ok[i].series], g, ng, 'a');
        i = end;
    }
}

/* ---- speedup_vs_density.tsv --------------------------------------------- */

static void write_speedup(FILE *f, const xctx *c, double *tmp, double *tmp2, agg *g, xrow *scratch)
{
    fputs("# attnbench export: speedup over dense vs density (status ok rows with a\n"
          "# timing only)\n",
          f);
    timing_note(f, c, NULL, "left out");
    fputs("# a point's speedup, select() included: paired = 1 / rel_dense, the median over\n"
          "# its samples of time / dense-flash time measured in the same child process\n"
          "# (adjacent calls), with the 95% interval [1 / rel_hi, 1 / rel_lo] (bootstrap\n"
          "# over rounds); without a paired ratio (files before the timing protocol,\n"
          "# unpaired points): total_ms of method \"dense\" / total_ms of the method on the\n"
          "# same (task, device, dtype, seq_len, heads, head_dim, base mask, seed, depth),\n"
          "# no interval; one block per method (gnuplot index), blocks separated by two\n"
          "# blank lines; one row per (setting, seq_len): the median over its points;\n"
          "# paired = 1 when every point of the row is paired (speedup_lo/hi: medians of\n"
          "# the points' interval ends), 0 otherwise (speedup_lo/hi nan);\n"
          "# rows sorted by seq_len then density, one blank line between seq_lens\n"
          "# columns: 1 achieved_density  2 speedup  3 total_ms  4 seq_len\n"
          "#          5 n_points  6 method  7 method_idx (line in methods.txt)\n"
          "#          8 speedup_lo  9 speedup_hi  10 paired (1/0)\n",
          f);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = series_end(c, i), ng = 0;
        const series *s = &c->ser[c->ok[i].series];
        size_t nt = s->baseline ? 0 : timed_rows(c->ok + i, end - i, scratch);
        i = end;
        for (size_t a = 0; a < nt;) {
            size_t b = group_end(scratch, a, nt, GRP_LEN);
            agg *x = &g[ng];
            memset(x, 0, sizeof *x);
            x->seq_len = scratch[a].p->seq_len;
            x->n = ab_group_speedup(scratch + a, b - a, c->dense, c->n_dense, tmp, tmp2, &x->y1, &x->y4,
                                    &x->y5, &x->paired);
            AB_ROWS_MEDIAN(x->density, scratch + a, b - a, p_->achieved_density, tmp);
            AB_ROWS_MEDIAN(x->y2, scratch + a, b - a, p_->total_ms, tmp);
            if (x->n > 0 && !isnan(x->y1) && !isnan(x->density)) ng++;
            a = b;
        }
        write_aggs(f, &nblocks, s, g, ng, 's');
    }
    if (nblocks == 0)
        fputs("# skip: no timed status-ok point with a speedup over dense (a paired ratio, "
              "or a timed \"dense\" point on its workload)\n",
              f);
}

/* ---- accuracy_vs_latency.tsv -------------------------------------------- */

/* One (series, task, setting) point of the accuracy-latency plane. */
typedef struct alpt {
    const char *task; /* into the points */
    int seq_len;
    double ms, acc, lo, hi, density, ms_lo, ms_hi;
    size_t n, n_timed;
    int front;
} alpt;

static int alpt_cmp(const void *a, const void *b)
{
    const alpt *x = a, *y = b;
    int o = strncmp(x->task, y->task, 32);
    if (o) return o;
    if (x->front != y->front) return y->front - x->front; /* front rows first */
    o = ab_cmp_num(x->ms, y->ms);
    return o ? o : ab_cmp_num(x->acc, y->acc);
}

/* The largest seq_len of each task among timed rows with an accuracy. */
static int task_maxn(const xctx *c, const char *task)
{
    int m = 0;
    for (size_t i = 0; i < c->n_ok; i++) {
        const ab_point *p = c->ok[i].p;
        if (!isnan(p->accuracy) && ab_point_timed(p) && p->seq_len > m &&
            strncmp(p->task, task, sizeof p->task) == 0)
            m = p->seq_len;
    }
    return m;
}

static void write_acc_latency(FILE *f, const xctx *c, double *tmp, xrow *scratch, alpt *al)
{
    fputs("# attnbench export: task accuracy vs latency (status ok rows only)\n", f);
    timing_note(f, c, NULL, "in the accuracy only");
    fputs("# per task, the points at the task's largest sequence length with a timed point;\n"
          "# one row per (method, task, setting): median total_ms over its timed points\n"
          "# (seeds and depths; total_lo/hi_ms: medians of their 95% intervals),\n"
          "# accuracy pooled over all its status-ok points, untimed (scored-only) ones\n"
          "# included (answers summed, Wilson 95% interval); a setting without a timed\n"
          "# point is left out;\n"
          "# on_front = 1 for the method's Pareto-optimal settings on that task (no\n"
          "# other setting is at least as fast and at least as accurate, one of the\n"
          "# two strictly); rows sorted by task, front rows first, then by latency\n"
          "# one block per method (gnuplot index), blocks separated by two blank lines\n"
          "# columns: 1 total_ms  2 accuracy  3 acc_ci_lo  4 acc_ci_hi  5 achieved_density\n"
          "#          6 on_front  7 task  8 seq_len  9 n_points  10 method\n"
          "#          11 method_idx (line in methods.txt)  12 n_timed  13 total_lo_ms\n"
          "#          14 total_hi_ms\n",
          f);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = series_end(c, i), nr = 0, na = 0;
        for (size_t a = i; a < end; a++) {
            const ab_point *p = c->ok[a].p;
            if (!isnan(p->accuracy) && p->seq_len == task_maxn(c, p->task)) scratch[nr++] = c->ok[a];
        }
        qsort(scratch, nr, sizeof *scratch, xrow_task_cmp);
        for (size_t a = 0; a < nr;) {
            size_t b = group_end(scratch, a, nr, GRP_TASK);
            alpt *x = &al[na++];
            x->task = scratch[a].p->task;
            x->seq_len = scratch[a].p->seq_len;
            x->n = b - a;
            x->front = 0;
            /* latency from the timed points only; accuracy from all */
            AB_ROWS_MEDIAN(x->ms, scratch + a, b - a, ab_point_timed(p_) ? p_->total_ms : NAN, tmp);
            AB_ROWS_MEDIAN(x->ms_lo, scratch + a, b - a, ab_point_timed(p_) ? p_->total_lo_ms : NAN, tmp);
            AB_ROWS_MEDIAN(x->ms_hi, scratch + a, b - a, ab_point_timed(p_) ? p_->total_hi_ms : NAN, tmp);
            x->n_timed = 0;
            for (size_t q = a; q < b; q++) x->n_timed += ab_point_timed(scratch[q].p) != 0;
            AB_ROWS_MEDIAN(x->density, scratch + a, b - a, p_->achieved_density, tmp);
            pool_accuracy(scratch + a, b - a, tmp, &x->acc, &x->lo, &x->hi);
            if (isnan(x->acc) || isnan(x->ms)) na--;
            a = b;
        }
        for (size_t a = 0; a < na; a++) {
            int dominated = 0;
            for (size_t b = 0; b < na && !dominated; b++)
                if (b != a && strncmp(al[a].task, al[b].task, 32) == 0 && al[b].ms <= al[a].ms &&
                    al[b].acc >= al[a].acc && (al[b].ms < al[a].ms || al[b].acc > al[a].acc))
                    dominated = 1;
            al[a].front = !dominated;
        }
        qsort(al, na, sizeof *al, alpt_cmp);
        const series *s = &c->ser[c->ok[i].series];
        if (na > 0) block_start(f, &nblocks, s);
        for (size_t a = 0; a < na; a++) {
            put_num(f, al[a].ms);
            fputc('\t', f);
            put_num(f, al[a].acc);
            fputc('\t', f);
            put_num(f, al[a].lo);
            fputc('\t', f);
            put_num(f, al[a].hi);
            fputc('\t', f);
            put_num(f, al[a].density);
            fputc('\t', f);
            fprintf(f, "%d\t", al[a].front);
            put_str(f, al[a].task, 32, 1);
            fprintf(f, "\t%d\t%zu\t%s\t%d\t%zu\t", al[a].seq_len, al[a].n, s->name, s->method_idx,
                    al[a].n_timed);
            put_num(f, al[a].ms_lo);
            fputc('\t', f);
            put_num(f, al[a].ms_hi);
            fputc('\n', f);
        }
        i = end;
    }
}

/* ---- needle_heatmap.tsv ---------------------------------------------------- */

static int is_needle(const ab_point *p)
{
    return strncmp(p->task, "needle", sizeof p->task) == 0 && !isnan(p->accuracy);
}

/* Sorted distinct values of v[0..n) in place; returns their count. */
static size_t uniq_sorted(double *v, size_t n)
{
    qsort(v, n, sizeof *v, ab_dbl_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || !ab_same_num(v[m - 1], v[i])) v[m++] = v[i];
    return m;
}

static size_t index_of(const double *v, size_t n, double x)
{
    for (size_t i = 0; i < n; i++)
        if (ab_same_num(v[i], x)) return i;
    return 0;
}

static int xrow_len_depth_cmp(const void *a, const void *b)
{
    const xrow *x = a, *y = b;
    if (x->p->seq_len != y->p->seq_len) return x->p->seq_len > y->p->seq_len ? 1 : -1;
    int o = ab_cmp_num(x->p->depth, y->p->depth);
    return o ? o : (x->p > y->p) - (x->p < y->p);
}

static void write_heatmap(FILE *f, const xctx *c, double *tmp, xrow *scratch, double *lens, double *depths)
{
    fputs("# attnbench export: needle accuracy by sequence length and depth (status ok\n"
          "# rows only); per method, the setting closest to density 0.1 (as in\n"
          "# latency_vs_n.tsv); one row per (seq_len, depth): accuracy pooled over seeds\n"
          "# (answers summed); len_idx and depth_idx index the sorted distinct\n"
          "# lengths and depths of the whole file, so every method shares the grid\n"
          "# one block per method (gnuplot index), blocks separated by two blank lines\n"
          "# columns: 1 len_idx  2 depth_idx  3 accuracy  4 seq_len  5 depth\n"
          "#          6 achieved_density  7 n_points  8 method  9 method_idx\n",
          f);
    size_t nl = 0, nd = 0;
    for (size_t i = 0; i < c->n_ok; i++)
        if (is_needle(c->ok[i].p)) {
            lens[nl++] = c->ok[i].p->seq_len;
            depths[nd++] = c->ok[i].p->depth;
        }
    if (nl == 0) {
        fputs("# skip: no status-ok needle points with an accuracy\n", f);
        return;
    }
    nl = uniq_sorted(lens, nl);
    nd = uniq_sorted(depths, nd);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = series_end(c, i), nr = 0;
        for (size_t a = i; a < end; a++)
            if (is_needle(c->ok[a].p)) scratch[nr++] = c->ok[a];
        if (nr == 0) {
            i = end;
            continue;
        }
        size_t b0, b1;
        pick_setting(scratch, nr, tmp, &b0, &b1);
        xrow *r = scratch + b0;
        size_t m = b1 - b0;
        qsort(r, m, sizeof *r, xrow_len_depth_cmp);
        const series *s = &c->ser[c->ok[i].series];
        block_start(f, &nblocks, s);
        for (size_t a = 0; a < m;) {
            size_t b = a;
            while (b < m && r[b].p->seq_len == r[a].p->seq_len && ab_same_num(r[b].p->depth, r[a].p->depth))
                b++;
            double acc, lo, hi, dens;
            pool_accuracy(r + a, b - a, tmp, &acc, &lo, &hi);
            AB_ROWS_MEDIAN(dens, r + a, b - a, p_->achieved_density, tmp);
            fprintf(f, "%zu\t%zu\t", index_of(lens, nl, r[a].p->seq_len),
                    index_of(depths, nd, r[a].p->depth));
            put_num(f, acc);
            fputc('\t', f);
            fprintf(f, "%d\t", (int)r[a].p->seq_len);
            put_num(f, r[a].p->depth);
            fputc('\t', f);
            put_num(f, dens);
            fputc('\t', f);
            fprintf(f, "%zu\t%s\t%d\n", b - a, s->name, s->method_idx);
            a = b;
        }
        i = end;
    }
}

/* ---- overhead_share.tsv ------------------------------------------------ */

static void write_overhead(FILE *f, const xctx *c, double *tmp, xrow *scratch)
{
    fputs("# attnbench export: selector overhead share vs sequence length (status ok\n"
          "# rows with a timing only); share = select_ms / total_ms of each point (medians of the\n"
          "# timed repeats), then the median over seeds, tasks and depths; per method\n"
          "# the setting closest to density 0.1 (as in latency_vs_n.tsv); methods whose\n"
          "# points all have a dense layout (nothing to select) are left out\n",
          f);
    fprintf(f, "# device: %s\n", c->primary_dev);
    timing_note(f, c, c->primary_dev, "left out");
    fputs("# one block per method (gnuplot index), blocks separated by two blank lines\n"
          "# columns: 1 seq_len  2 share (0..1)  3 select_ms  4 total_ms\n"
          "#          5 achieved_density  6 n_points  7 method  8 method_idx\n",
          f);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = series_end(c, i);
        const series *s = &c->ser[c->ok[i].series];
        int selects = 0; /* a dense layout selects nothing: no overhead to show */
        for (size_t a = i; a < end && !selects; a++)
            selects = strncmp(c->ok[a].p->layout, "dense", sizeof c->ok[a].p->layout) != 0;
        size_t b0, b1, i0 = i;
        i = end;
        if (!selects || strncmp(s->device, c->primary_dev, sizeof s->device) != 0) continue;
        if (!pick_timed(c, i0, end, scratch, tmp, &b0, &b1)) continue;
        int started = 0;
        for (size_t a = b0; a < b1;) {
            size_t b = group_end(scratch, a, b1, GRP_LEN);
            double share, sel, ms, dens;
            AB_ROWS_MEDIAN(share, scratch + a, b - a,
                           !isnan(p_->select_ms) ? p_->select_ms / p_->total_ms : NAN, tmp);
            AB_ROWS_MEDIAN(sel, scratch + a, b - a, p_->select_ms, tmp);
            AB_ROWS_MEDIAN(ms, scratch + a, b - a, p_->total_ms, tmp);
            AB_ROWS_MEDIAN(dens, scratch + a, b - a, p_->achieved_density, tmp);
            if (!isnan(share)) {
                if (!started) block_start(f, &nblocks, s);
                started = 1;
                fprintf(f, "%d\t", (int)scratch[a].p->seq_len);
                put_nums(f, (const double[]){ share, sel, ms, dens }, 4);
                fprintf(f, "%zu\t%s\t%d\n", b - a, s->name, s->method_idx);
            }
            a = b;
        }
    }
}

/* ---- selectors.tsv ------------------------------------------------------ */

/* Dense attention's FLOPs on p's workload: 4 d per allowed (query, key)
 * pair per head (QK^T and PV, a multiply-add counting 2). */
static double dense_flops_of(const ab_point *p)
{
    const double n = (double)p->seq_len;
    return 4.0 * (double)p->head_dim * (double)p->heads * mask_density_of(p) * n * n;
}

static void write_selectors(FILE *f, const xctx *c, double *tmp, double *tmp2, xrow *scratch)
{
    const char *bw_s = ab_env_get(c->env, "stream_triad_gbs");
    const double bw = bw_s ? strtod(bw_s, NULL) : NAN; /* GB/s: bytes / (bw 1e6) is ms */
    fputs("# attnbench export: each selector against its stated bound (status ok rows with a\n"
          "# timing only; docs/selectors.md). select_rel = select_ms / dense_ms and run_rel =\n"
          "# run_ms / dense_ms, dense_ms the paired dense calls (dense_pair_ms; unpaired: the\n"
          "# \"dense\" points of the workload); speedup as in speedup_vs_density.tsv; bound_rel =\n"
          "# select_flops / dense FLOPs (4 d pairs heads), the work the method states with\n"
          "# ab_layout_set_cost; efficiency = bound_rel / select_rel (1: select runs as fast\n"
          "# as dense runs its FLOPs; issue target >= 0.5); sel_gflops = select_flops /\n"
          "# select_ms. bytes_rel = the time select_bytes (the bytes it states) take at the\n"
          "# run's STREAM triad bandwidth, over dense_ms; roofline_rel = max(bound_rel,\n"
          "# bytes_rel), the roofline of both; roofline_eff = roofline_rel / select_rel.\n"
          "# Medians over seeds, tasks and depths at the setting closest to\n"
          "# density 0.1 (as in latency_vs_n.tsv); methods with a dense layout are left out\n",
          f);
    fprintf(f, "# device: %s\n", c->primary_dev);
    if (bw > 0)
        fprintf(f, "# bandwidth: STREAM triad %.2f GB/s (stream_triad_gbs in meta.txt)\n", bw);
    else
        fputs("# note: no stream_triad_gbs in the file ([timing] measure_bandwidth = 1 measures it): "
              "bytes_rel, roofline_rel and roofline_eff are nan\n",
              f);
    timing_note(f, c, c->primary_dev, "left out");
    fputs("# one block per method (gnuplot index), blocks separated by two blank lines\n"
          "# columns: 1 seq_len  2 select_rel  3 run_rel  4 speedup  5 bound_rel  6 efficiency\n"
          "#          7 sel_gflops  8 achieved_density  9 select_ms  10 run_ms  11 dense_ms\n"
          "#          12 select_flops  13 n_points  14 method  15 method_idx  16 bytes_rel\n"
          "#          17 roofline_rel  18 roofline_eff  19 select_bytes\n",
          f);
    int nblocks = 0;
    size_t i = 0;
    while (i < c->n_ok) {
        size_t end = series_end(c, i);
        const series *s = &c->ser[c->ok[i].series];
        int selects = 0;
        for (size_t a = i; a < end && !selects; a++)
            selects = strncmp(c->ok[a].p->layout, "dense", sizeof c->ok[a].p->layout) != 0;
        size_t b0, b1, i0 = i;
        i = end;
        if (!selects || s->baseline || strncmp(s->device, c->primary_dev, sizeof s->device) != 0) continue;
        if (!pick_timed(c, i0, end, scratch, tmp, &b0, &b1)) continue;
        int started = 0;
        for (size_t a = b0; a < b1;) {
            size_t b = group_end(scratch, a, b1, GRP_LEN);
            double srel, rrel, sp, brel, gfl, dens, sel, run, dms, fl, by, byrel, lo_, hi_;
            int pr_;
            AB_ROWS_MEDIAN(dms, scratch + a, b - a, ab_dense_ms_of(p_, c->dense, c->n_dense, tmp2), tmp);
            AB_ROWS_MEDIAN(srel, scratch + a, b - a,
                           p_->select_ms / ab_dense_ms_of(p_, c->dense, c->n_dense, tmp2), tmp);
            AB_ROWS_MEDIAN(rrel, scratch + a, b - a,
                           p_->run_ms / ab_dense_ms_of(p_, c->dense, c->n_dense, tmp2), tmp);
            AB_ROWS_MEDIAN(sp, scratch + a, b - a,
                           ab_speedup_of(p_, c->dense, c->n_dense, tmp2, &lo_, &hi_, &pr_), tmp);
            AB_ROWS_MEDIAN(brel, scratch + a, b - a, p_->select_flops / dense_flops_of(p_), tmp);
            AB_ROWS_MEDIAN(gfl, scratch + a, b - a, p_->select_flops / (1e6 * p_->select_ms), tmp);
            AB_ROWS_MEDIAN(dens, scratch + a, b - a, p_->achieved_density, tmp);
            AB_ROWS_MEDIAN(sel, scratch + a, b - a, p_->select_ms, tmp);
            AB_ROWS_MEDIAN(run, scratch + a, b - a, p_->run_ms, tmp);
            AB_ROWS_MEDIAN(fl, scratch + a, b - a, p_->select_flops, tmp);
            AB_ROWS_MEDIAN(by, scratch + a, b - a, p_->select_bytes, tmp);
            AB_ROWS_MEDIAN(byrel, scratch + a, b - a,
                           p_->select_bytes / (bw * 1e6) / ab_dense_ms_of(p_, c->dense, c->n_dense, tmp2),
                           tmp);
            if (isfinite(srel) && srel > 0) {
                if (!started) block_start(f, &nblocks, s);
                started = 1;
                fprintf(f, "%d\t", (int)scratch[a].p->seq_len);
                const double eff = brel / srel;
                /* the roofline: the larger of the two bounds (NaN without a bandwidth) */
                const double roof = isfinite(byrel) ? (byrel > brel ? byrel : brel) : NAN;
                put_nums(f, (const double[]){ srel, rrel, sp, brel, eff, gfl, dens, sel, run, dms, fl }, 11);
                fprintf(f, "%zu\t%s\t%d\t", b - a, s->name, s->method_idx);
                put_nums(f, (const double[]){ byrel, roof, roof / srel }, 3);
                put_num(f, by);
                fputc('\n', f);
            }
            a = b;
        }
    }
    if (nblocks == 0)
        fputs("# skip: no timed status-ok point of a selecting method with a paired dense timing\n", f);
}

/* ---- breakeven.tsv ------------------------------------------------------ */

/* One column of the break-even map: a sequence length and a setting (a
 * target density, or "native": the method's own knob value). */
typedef struct bcol {
    int seq_len, native;
    double target; /* NaN when native */
} bcol;

static int bcol_cmp(const void *a, const void *b)
{
    const bcol *x = a, *y = b;
    if (x->seq_len != y->seq_len) return x->seq_len > y->seq_len ? 1 : -1;
    if (x->native != y->native) return x->native - y->native; /* native last */
    return ab_cmp_num(x->target, y->target);
}

static int in_bcol(const ab_point *p, const bcol *k)
{
    int native = isnan(p->target_density);
    return p->seq_len == k->seq_len && native == k->native && (native || p->target_density == k->target);
}

/* A point of the map's set: this figure's base mask, the primary device, not
 * the baseline (fp32 dense). */
static int breakeven_point(const xctx *c, const ab_point *p)
{
    return !ab_point_is_baseline(p) && !ab_point_is_decode(p) &&
           strncmp(p->device, c->primary_dev, sizeof p->device) == 0 &&
           (c->cur_mask < 0 || mask_index(c, p) == c->cur_mask);
}

/* Why a cell of method meth, column k has no speedup: "not_run" (no point),
 * "untimed" (status ok, scored only), "no_dense" (timed, but neither a
 * paired ratio nor a timed dense point on its workload), else the most
 * common non-ok status of its points (calib_failed, unsupported, crashed...). */
static void cell_note(const xctx *c, const char *meth, const bcol *k, char *out, size_t len)
{
    size_t any = 0, timed = 0;
    ab_tally t = { 0 }; /* the non-ok statuses seen, and how often */
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        if (strncmp(p->method, meth, 32) || !breakeven_point(c, p) || !in_bcol(p, k)) continue;
        any++;
        timed += ab_point_timed(p) != 0;
        ab_tally_add(&t, p->status);
    }
    size_t best = 0;
    for (size_t j = 1; j < t.n; j++) /* most common, ties by name */
        if (t.count[j] > t.count[best]) best = j;
    if (!any)
        snprintf(out, len, "not_run");
    else if (timed)
        snprintf(out, len, "no_dense");
    else if (t.n)
        snprintf(out, len, "%.15s", t.status[best]);
    else
        snprintf(out, len, "untimed");
}

static void write_breakeven(FILE *f, const xctx *c, double *tmp, double *tmp2, xrow *scratch, xrow *scratch2)
{
    fputs("# attnbench export: break-even map, the speedup over dense of each method\n"
          "# (rows) per sequence length and target density (columns), select() included\n",
          f);
    fprintf(f, "# device: %s\n", c->primary_dev);
    timing_note(f, c, c->primary_dev, "left out");
    fputs("# a cell is the median over the timed status-ok points of its method, N and\n"
          "# setting (tasks, seeds, depths) of the point's speedup: paired = 1 / rel_dense,\n"
          "# the ratio to dense flash in the same child process, with the 95% interval\n"
          "# [1 / rel_hi, 1 / rel_lo] (bootstrap over rounds; medians of the points'\n"
          "# interval ends); without a paired ratio on every point: total_ms of \"dense\"\n"
          "# on the same workload / total_ms, no interval (paired = 0);\n"
          "# sig: 1 when speedup_lo > 1 (significantly faster than dense), -1 when\n"
          "# speedup_hi < 1 (significantly slower), 0 when the interval holds 1 or there is\n"
          "# no interval, nan for an empty cell; an empty cell (speedup nan) says why in\n"
          "# column 14: calib_failed, unsupported, crashed, ... (its points' most common\n"
          "# status), untimed (scored only), no_dense (nothing to compare with), not_run;\n"
          "# rows: methods in methods.txt order but dense; columns: seq_len ascending,\n"
          "# target densities ascending inside, native (the method's own knob) last;\n"
          "# one line per cell, row by row; col and row count from 0\n"
          "# columns: 1 col  2 row  3 speedup  4 speedup_lo  5 speedup_hi  6 sig\n"
          "#          7 paired (1/0)  8 seq_len  9 target_density (nan: native)\n"
          "#          10 achieved_density  11 n_points  12 method  13 method_idx\n"
          "#          14 note (- when the cell has a value)  15 flags (timing flags of\n"
          "#          its points, - when none)  16 total_ms\n",
          f);
    /* the columns: every (N, setting) a point of the set has, any status */
    bcol *cols = malloc((c->n + 1) * sizeof *cols);
    if (!cols) {
        fputs("# skip: out of memory\n", f);
        return;
    }
    size_t nc = 0;
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        if (!breakeven_point(c, p)) continue;
        bcol k = { p->seq_len, isnan(p->target_density), p->target_density };
        if (k.native) k.target = NAN;
        size_t j = 0;
        while (j < nc && bcol_cmp(&cols[j], &k) != 0) j++;
        if (j == nc) cols[nc++] = k;
    }
    qsort(cols, nc, sizeof *cols, bcol_cmp);
    /* is there any value to draw? */
    int any = 0;
    for (size_t i = 0; i < c->n_ok && !any; i++) {
        const ab_point *p = c->ok[i].p;
        double l, h;
        int pr;
        any = breakeven_point(c, p) && !isnan(ab_speedup_of(p, c->dense, c->n_dense, tmp2, &l, &h, &pr));
    }
    if (!any) {
        fputs("# skip: no timed status-ok point with a speedup over dense on the primary "
              "device\n",
              f);
        free(cols);
        return;
    }
    int row = 0;
    for (size_t m = 0; m < c->n_methods; m++) {
        const char *meth = c->methods[m];
        int has = 0;
        for (size_t i = 0; i < c->n && !has; i++)
            has = !strncmp(c->pts[i].method, meth, 32) && breakeven_point(c, &c->pts[i]);
        if (!has) continue;
        for (size_t k = 0; k < nc; k++) {
            size_t nr = 0;
            for (size_t i = 0; i < c->n_ok; i++) {
                const ab_point *p = c->ok[i].p;
                if (!strncmp(p->method, meth, 32) && breakeven_point(c, p) && in_bcol(p, &cols[k]))
                    scratch[nr++] = c->ok[i];
            }
            size_t nt = timed_rows(scratch, nr, scratch2);
            double sp = NAN, lo = NAN, hi = NAN, dens = NAN, ms = NAN;
            int paired = 0;
            size_t np =
                ab_group_speedup(scratch2, nt, c->dense, c->n_dense, tmp, tmp2, &sp, &lo, &hi, &paired);
            char note[32] = "-", flags[64] = "";
            if (np > 0 && !isnan(sp)) {
                AB_ROWS_MEDIAN(dens, scratch2, nt, p_->achieved_density, tmp);
                AB_ROWS_MEDIAN(ms, scratch2, nt, p_->total_ms, tmp);
                static const char *const fl[] = { "interference", "rounds_disagree", "unpaired",
                                                  "cores_shared" };
                for (size_t q = 0; q < sizeof fl / sizeof fl[0]; q++) {
                    int hit = 0;
                    for (size_t t = 0; t < nt && !hit; t++) hit = ab_point_has_flag(scratch2[t].p, fl[q]);
                    if (hit)
                        snprintf(flags + strlen(flags), sizeof flags - strlen(flags), "%s%s",
                                 flags[0] ? "," : "", fl[q]);
                }
            } else {
                sp = lo = hi = NAN;
                np = 0;
                paired = 0;
                cell_note(c, meth, &cols[k], note, sizeof note);
            }
            double sig = isnan(sp) ? NAN : (lo > 1) ? 1 : (hi < 1) ? -1 : 0;
            fprintf(f, "%zu\t%d\t", k, row);
            put_num(f, sp);
            fputc('\t', f);
            put_num(f, lo);
            fputc('\t', f);
            put_num(f, hi);
            fputc('\t', f);
            put_num(f, sig);
            fprintf(f, "\t%d\t%d\t", paired, cols[k].seq_len);
            put_num(f, cols[k].target);
            fputc('\t', f);
            put_num(f, dens);
            fprintf(f, "\t%zu\t", np);
            put_str(f, meth, 32, 1);
            fprintf(f, "\t%zu\t%s\t%s\t", m + 1, note, flags[0] ? flags : "-");
            put_num(f, ms);
            fputc('\n', f);
        }
        row++;
    }
    free(cols);
}

/* ---- summary.tsv -------------------------------------------------------- */

/* "timeout:2,crashed:1" for the non-ok points among pts[] with this method
 * (any when NULL), device (any when NULL) and base mask (any when NULL);
 * "-" when none. */
static void not_ok_list(const xctx *c, const char *method, const char *dev, const char *mask, char *out,
                        size_t len)
{
    ab_tally t = { 0 };
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        if (ab_point_is_decode(p)) continue;
        if ((method && strncmp(p->method, method, 32)) || (dev && strncmp(p->device, dev, 8)) ||
            (mask && strncmp(ab_point_mask(p), mask, AB_MASK_SPEC)))
            continue;
        ab_tally_add(&t, p->status);
    }
    ab_tally_list(&t, out, len);
    if (!out[0]) snprintf(out, len, "-");
}

/* The summary.tsv row of one method (methods.txt line m + 1) on one device
 * under base mask mk; nothing when it has no point there. */
static void summary_row(FILE *f, const xctx *c, size_t m, const char *dev, size_t mk, double *tmp,
                        double *tmp2, xrow *scratch, xrow *scratch2)
{
    const char *meth = c->methods[m], *mask = c->masks[mk];
    const ab_point *first = NULL;
    size_t npts = 0, nok = 0;
    for (size_t k = 0; k < c->n; k++) {
        const ab_point *p = &c->pts[k];
        if (ab_point_is_decode(p) || strncmp(p->method, meth, 32) || strncmp(p->device, dev, 8) ||
            strncmp(ab_point_mask(p), mask, AB_MASK_SPEC))
            continue;
        npts++;
        if (ab_status_is_ok(p->status)) {
            nok++;
            if (!first || !ab_status_is_ok(first->status)) first = p;
        } else if (!first)
            first = p;
    }
    if (npts == 0) return;
    char bad[160];
    not_ok_list(c, meth, dev, mask, bad, sizeof bad);
    /* the series' rows under this mask */
    size_t nr = 0;
    for (size_t k = 0; k < c->n_ok; k++) {
        const series *s = &c->ser[c->ok[k].series];
        if (!strncmp(s->method, meth, 32) && (!c->multi_dev || !strncmp(s->device, dev, 8)) &&
            c->ok[k].mask == (int)mk)
            scratch[nr++] = c->ok[k];
    }
    double v[13];
    for (int k = 0; k < 13; k++) v[k] = NAN;
    int seq_len = 0, paired = 0;
    size_t n_timed = 0;
    double target = NAN, knob = NAN;
    if (nr > 0) {
        /* the setting picked and its largest N: among the timed rows when
         * there are (so latency and speedup have values), else among all */
        size_t nt = timed_rows(scratch, nr, scratch2);
        const xrow *pool = nt ? scratch2 : scratch;
        size_t b0, b1;
        pick_setting(pool, nt ? nt : nr, tmp, &b0, &b1);
        for (size_t k = b0; k < b1; k++)
            if (pool[k].p->seq_len > seq_len) seq_len = pool[k].p->seq_len;
        const int native = pool[b0].native;
        const double setting = pool[b0].setting;
        /* every ok row of that setting and N: accuracy and recall from all,
         * timing from the timed ones */
        size_t g = 0;
        for (size_t k = 0; k < nr; k++)
            if (scratch[k].native == native && ab_same_num(scratch[k].setting, setting) &&
                scratch[k].p->seq_len == seq_len)
                scratch[g++] = scratch[k];
        const ab_point *p0 = scratch[0].p;
        target = p0->target_density;
        knob = p0->knob_value;
        AB_ROWS_MEDIAN(v[0], scratch, g, p_->achieved_density, tmp);
        AB_ROWS_MEDIAN(v[3], scratch, g, p_->recall_mass, tmp);
        AB_ROWS_MEDIAN(v[4], scratch, g, p_->recall_topk, tmp);
        double lo, hi;
        pool_accuracy(scratch, g, tmp, &v[5], &lo, &hi);
        n_timed = timed_rows(scratch, g, scratch2);
        AB_ROWS_MEDIAN(v[1], scratch2, n_timed, p_->total_ms, tmp);
        AB_ROWS_MEDIAN(v[6], scratch2, n_timed, !isnan(p_->select_ms) ? p_->select_ms / p_->total_ms : NAN,
                       tmp);
        AB_ROWS_MEDIAN(v[9], scratch2, n_timed, p_->total_lo_ms, tmp);
        AB_ROWS_MEDIAN(v[10], scratch2, n_timed, p_->total_hi_ms, tmp);
        ab_group_speedup(scratch2, n_timed, c->dense, c->n_dense, tmp, tmp2, &v[2], &v[7], &v[8], &paired);
    }
    put_str(f, meth, 32, 1);
    fputc('\t', f);
    put_str(f, dev, 8, 1);
    fputc('\t', f);
    put_str(f, first->layout, sizeof first->layout, 1);
    fputc('\t', f);
    put_str(f, first->kernel, sizeof first->kernel, 1);
    fprintf(f, "\t%zu\t%zu\t%s\t%d\t", npts, nok, bad, seq_len);
    put_num(f, target);
    fputc('\t', f);
    put_num(f, knob);
    for (int k = 0; k < 7; k++) {
        fputc('\t', f);
        put_num(f, v[k]);
    }
    fprintf(f, "\t%zu\t", m + 1);
    put_str(f, mask, AB_MASK_SPEC, 1);
    fputc('\t', f);
    put_num(f, v[7]);
    fputc('\t', f);
    put_num(f, v[8]);
    fprintf(f, "\t%d\t", paired);
    put_num(f, v[9]);
    fputc('\t', f);
    put_num(f, v[10]);
    fprintf(f, "\t%zu\n", n_timed);
}

static void write_summary(FILE *f, const xctx *c, double *tmp, double *tmp2, xrow *scratch, xrow *scratch2)
{
    fputs("# attnbench export: one row per method, device and base mask (masks in\n"
          "# masks.txt order); the values are those of the setting closest to density\n"
          "# 0.1 (as in latency_vs_n.tsv) at the method's largest sequence length there,\n"
          "# both picked among the points with a timing when the method has any there;\n"
          "# medians over seeds, tasks and depths (accuracy pooled); density, recall and\n"
          "# accuracy over every status-ok point of that setting and N, latency,\n"
          "# speedup and select share over its timed points (n_timed; untimed = scored\n"
          "# only); speedup is over \"dense\" on the same workloads (same mask): the\n"
          "# paired ratio (1 / rel_dense, same child process) where the points have it,\n"
          "# with speedup_lo/hi the medians of their 95% intervals and paired = 1, else\n"
          "# dense total_ms / total_ms (paired = 0, no interval); total_lo/hi_ms: medians\n"
          "# of the points' 95% intervals of total_ms; nan where the method has no\n"
          "# status-ok point or the value does not apply\n"
          "# columns: 1 method  2 device  3 layout  4 kernel  5 n_points  6 n_ok\n"
          "#          7 not_ok (status:count,...)  8 seq_len  9 target_density\n"
          "#          10 knob_value  11 achieved_density  12 total_ms  13 speedup\n"
          "#          14 recall_mass  15 recall_topk  16 accuracy  17 select_share\n"
          "#          18 method_idx (line in methods.txt)  19 mask  20 speedup_lo\n"
          "#          21 speedup_hi  22 paired (1/0)  23 total_lo_ms  24 total_hi_ms\n"
          "#          25 n_timed\n",
          f);
    static const char *const devs[] = { "cpu", "gpu" };
    for (size_t m = 0; m < c->n_methods; m++) {
        const char *meth = c->methods[m];
        /* devices: cpu, gpu, then any other in file order */
        for (size_t d = 0; d < 2 + c->n; d++) {
            const char *dev = NULL;
            if (d < 2)
                dev = devs[d];
            else {
                const ab_point *p = &c->pts[d - 2];
                if (strncmp(p->method, meth, 32) || device_idx(p->device) < 3) continue;
                int seen = 0;
                for (size_t k = 0; k < d - 2 && !seen; k++)
                    seen = !strncmp(c->pts[k].method, meth, 32) && !strncmp(c->pts[k].device, p->device, 8);
                if (seen) continue;
                dev = p->device;
            }
            for (size_t mk = 0; mk < c->n_masks; mk++)
                summary_row(f, c, m, dev, mk, tmp, tmp2, scratch, scratch2);
        }
    }
}

/* ---- methods.txt, meta.txt ------------------------------------------- */

/* points not status ok, both phases (c->n_ok holds the prefill rows only) */
static size_t nfailed_of(const xctx *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++) n += !ab_status_is_ok(c->pts[i].status);
    return n;
}

static void write_meta(FILE *f, const xctx *c)
{
    static const char *const keys[] = { "host",        "cpu_model",         "threads",  "git_sha",
                                        "created_utc", "attnbench_version", "gpu_name", "gpu_count",
                                        "cuda_build",  "stream_triad_gbs" };
    fprintf(f, "file\t%s\n", c->path);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const char *v = ab_env_get(c->env, keys[k]);
        fprintf(f, "%s\t", keys[k]);
        put_str(f, v ? v : "", 4096, 0);
        fputc('\n', f);
    }
    /* devices, in cpu, gpu, other order */
    fputs("devices\t", f);
    int any = 0;
    for (int want = 1; want <= 3; want++)
        for (size_t i = 0; i < c->n; i++) {
            const ab_point *p = &c->pts[i];
            if (device_idx(p->device) != want) continue;
            int seen = 0;
            for (size_t k = 0; k < i && !seen; k++)
                seen = strncmp(c->pts[k].device, p->device, sizeof p->device) == 0;
            if (seen) continue;
            if (any++) fputc(',', f);
            put_str(f, p->device, sizeof p->device, 1);
        }
    fputc('\n', f);
    fprintf(f, "primary_device\t%s\n", c->primary_dev);
    /* base masks, in figure order; the first is the one NAME.tsv holds */
    fputs("masks\t", f);
    for (size_t k = 0; k < c->n_masks; k++) {
        if (k) fputc(',', f);
        put_str(f, c->masks[k], AB_MASK_SPEC, 1);
    }
    fprintf(f, "\nn_masks\t%zu\nprimary_mask\t", c->n_masks);
    if (c->n_masks) put_str(f, c->masks[0], AB_MASK_SPEC, 1);
    fputc('\n', f);
    /* sequence lengths, ascending */
    fputs("seq_lens\t", f);
    int prev_n = 0;
    for (;;) {
        int next = 0;
        for (size_t i = 0; i < c->n; i++)
            if (c->pts[i].seq_len > prev_n && (next == 0 || c->pts[i].seq_len < next))
                next = c->pts[i].seq_len;
        if (next == 0) break;
        fprintf(f, "%s%d", prev_n ? "," : "", next);
        prev_n = next;
    }
    fputc('\n', f);
    fprintf(f, "n_points\t%zu\n", c->n);
    fprintf(f, "n_ok\t%zu\n", c->n - nfailed_of(c));
    /* the timing protocol: ok points with a timing, scored only, paired,
     * and the timing flags of the timed ones */
    size_t nt = 0, nu = 0, npair = 0, nint = 0, ndis = 0;
    for (size_t i = 0; i < c->n_ok; i++) {
        const ab_point *p = c->ok[i].p;
        double sp, lo, hi;
        if (!ab_point_timed(p)) {
            nu++;
            continue;
        }
        nt++;
        npair += ab_point_paired_speedup(p, &sp, &lo, &hi) != 0;
        nint += ab_point_has_flag(p, "interference") != 0;
        ndis += ab_point_has_flag(p, "rounds_disagree") != 0;
    }
    fprintf(f, "n_timed\t%zu\nn_untimed\t%zu\nn_paired\t%zu\n", nt, nu, npair);
    fprintf(f, "n_flag_interference\t%zu\nn_flag_rounds_disagree\t%zu\n", nint, ndis);
    fprintf(f, "n_failed\t%zu\n", nfailed_of(c));
    /* failures by status, statuses in name order */
    ab_tally t = { 0 };
    for (size_t i = 0; i < c->n; i++) ab_tally_add(&t, c->pts[i].status);
    for (size_t k = 0; k < t.n; k++) {
        fputs("n_failed_", f);
        put_str(f, t.status[k], 16, 1);
        fprintf(f, "\t%zu\n", t.count[k]);
    }
}

/* ---- masks.txt ----------------------------------------------------------- */

static void write_masks(FILE *f, const xctx *c)
{
    fputs("# attnbench export: the base masks of the file in figure order; the first is\n"
          "# the primary mask: NAME.tsv holds its points, NAME--SLUG.tsv those of each\n"
          "# other mask (files written only when the file holds several masks)\n"
          "# columns: 1 mask_idx  2 mask  3 slug  4 n_points  5 n_ok\n"
          "#          6 not_ok (status:count,... or -)  7 seed (of its first point)\n"
          "#          8 seq_len (its largest)  9 mask_density (allowed pairs / N^2 there)\n",
          f);
    for (size_t k = 0; k < c->n_masks; k++) {
        size_t np = 0, nok = 0;
        const ab_point *first = NULL, *big = NULL;
        for (size_t i = 0; i < c->n; i++) {
            const ab_point *p = &c->pts[i];
            if (strncmp(ab_point_mask(p), c->masks[k], AB_MASK_SPEC)) continue;
            np++;
            nok += ab_status_is_ok(p->status) != 0;
            if (!first) first = p;
            if (!big || p->seq_len > big->seq_len) big = p;
        }
        char bad[160];
        not_ok_list(c, NULL, NULL, c->masks[k], bad, sizeof bad);
        fprintf(f, "%zu\t", k + 1);
        put_str(f, c->masks[k], AB_MASK_SPEC, 1);
        fputc('\t', f);
        put_str(f, c->slugs[k], AB_MASK_SPEC, 1);
        fprintf(f, "\t%zu\t%zu\t%s\t%lld\t%d\t", np, nok, bad, first ? (long long)first->seed : 0LL,
                big ? (int)big->seq_len : 0);
        put_num(f, big ? mask_density_of(big) : NAN);
        fputc('\n', f);
    }
}

/* ---- dense_vs_mask.tsv ------------------------------------------------------- */

/* One dense point against causal dense on the same workload. */
typedef struct dvm {
    int seq_len, mask;
    double ratio, ideal, ms, cms, md;
} dvm;

static int dvm_cmp(const void *a, const void *b)
{
    const dvm *x = a, *y = b;
    if (x->seq_len != y->seq_len) return x->seq_len > y->seq_len ? 1 : -1;
    if (x->mask != y->mask) return x->mask - y->mask;
    return ab_cmp_num(x->ratio, y->ratio);
}

/* The workload of a point apart from its base mask. */
static int work_cmp(const ab_point *x, const ab_point *y) { return ab_point_work_cmp(x, y, 0); }

static void write_dense_mask(FILE *f, const xctx *c, double *tmp, dvm *w)
{
    fputs("# attnbench export: dense attention time under each base mask relative to\n"
          "# causal (status ok points of method \"dense\" with a timing only)\n",
          f);
    fprintf(f, "# device: %s\n", c->primary_dev);
    fputs("# time_ratio = total_ms of dense under the mask / total_ms of dense under\n"
          "# causal on the same (task, dtype, seq_len, heads, head_dim, seed, depth);\n"
          "# ideal_ratio = allowed pairs of the mask / allowed pairs of causal (time\n"
          "# proportional to the pairs the mask allows); efficiency = ideal / time ratio;\n"
          "# one row per (seq_len, mask): medians over the matched points\n"
          "# one block per seq_len (gnuplot index), blocks separated by two blank lines\n"
          "# columns: 1 mask_idx (line in masks.txt)  2 time_ratio  3 ideal_ratio\n"
          "#          4 dense_ms  5 causal_ms  6 mask_density  7 seq_len  8 n_points\n"
          "#          9 mask  10 efficiency\n",
          f);
    int causal = -1;
    for (size_t k = 0; k < c->n_masks; k++)
        if (strcmp(c->masks[k], "causal") == 0) causal = (int)k;
    if (c->n_masks < 2) {
        fprintf(f, "# skip: the file holds one base mask only (%s)\n", c->n_masks ? c->masks[0] : "none");
        return;
    }
    if (causal < 0) {
        fputs("# skip: no point under the causal mask to compare with\n", f);
        return;
    }
    size_t nw = 0;
    for (size_t i = 0; i < c->n_dense; i++) {
        const ab_point *p = c->dense[i];
        if (strncmp(p->device, c->primary_dev, sizeof p->device)) continue;
        size_t m = 0;
        double cmd = NAN;
        for (size_t k = 0; k < c->n_dense; k++) {
            const ab_point *q = c->dense[k];
            if (mask_index(c, q) != causal || work_cmp(p, q) != 0) continue;
            tmp[m++] = q->total_ms;
            cmd = mask_density_of(q);
        }
        double cms = ab_median_of(tmp, m);
        if (isnan(cms) || !(cms > 0)) continue;
        dvm *x = &w[nw++];
        x->seq_len = p->seq_len;
        x->mask = mask_index(c, p);
        x->ms = p->total_ms;
        x->cms = cms;
        x->md = mask_density_of(p);
        x->ratio = p->total_ms / cms;
        x->ideal = cmd > 0 ? x->md / cmd : NAN;
    }
    if (nw == 0) {
        fputs("# skip: no status-ok dense points under causal and another mask on the "
              "same workload\n",
              f);
        return;
    }
    qsort(w, nw, sizeof *w, dvm_cmp);
    for (size_t a = 0; a < nw;) {
        if (a > 0 && w[a].seq_len != w[a - 1].seq_len) fputs("\n\n", f);
        if (a == 0 || w[a].seq_len != w[a - 1].seq_len) fprintf(f, "# seq_len %d\n", w[a].seq_len);
        size_t b = a;
        while (b < nw && w[b].seq_len == w[a].seq_len && w[b].mask == w[a].mask) b++;
        double v[5];
        for (size_t q = a; q < b; q++) tmp[q - a] = w[q].ratio;
        v[0] = ab_median_of(tmp, b - a);
        for (size_t q = a; q < b; q++) tmp[q - a] = w[q].ideal;
        v[1] = ab_median_of(tmp, b - a);
        for (size_t q = a; q < b; q++) tmp[q - a] = w[q].ms;
        v[2] = ab_median_of(tmp, b - a);
        for (size_t q = a; q < b; q++) tmp[q - a] = w[q].cms;
        v[3] = ab_median_of(tmp, b - a);
        for (size_t q = a; q < b; q++) tmp[q - a] = w[q].md;
        v[4] = ab_median_of(tmp, b - a);
        fprintf(f, "%d\t", w[a].mask + 1);
        for (int k = 0; k < 5; k++) {
            put_num(f, v[k]);
            fputc('\t', f);
        }
        fprintf(f, "%d\t%zu\t", w[a].seq_len, b - a);
        put_str(f, c->masks[w[a].mask], AB_MASK_SPEC, 1);
        fputc('\t', f);
        put_num(f, v[0] > 0 ? v[1] / v[0] : NAN);
        fputc('\n', f);
        a = b;
    }
}

/* ---- the command ------------------------------------------------------ */

/* The per-figure files, in this order (ab_export's first switch); each is written
 * once per base mask when the file holds several. */
static const char *const FIG_FILES[] = { "latency_vs_n",       "recall_vs_density",   "accuracy_vs_density",
                                         "speedup_vs_density", "accuracy_vs_latency", "needle_heatmap",
                                         "overhead_share",     "cpu_vs_gpu",          "breakeven",
                                         "selectors" };
#define N_FIG_FILES (sizeof FIG_FILES / sizeof FIG_FILES[0])

/* Remove DIR/FIG--*.tsv left by an earlier export (of another file): each
 * export writes the per-mask copies afresh. */
static void remove_stale(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".tsv") != 0) continue;
        for (size_t k = 0; k < N_FIG_FILES; k++) {
            size_t fl = strlen(FIG_FILES[k]);
            if (strncmp(e->d_name, FIG_FILES[k], fl) == 0 && strncmp(e->d_name + fl, "--", 2) == 0) {
                char path[4352];
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                unlink(path);
                break;
            }
        }
    }
    closedir(d);
}

typedef struct xbufs {
    double *tmp, *tmp2, *tmp3;
    agg *g;
    xrow *scratch, *scratch2;
    alpt *al;
    dvm *dv;
} xbufs;

/* Write figure file k for base mask mk (c->ok already holds its rows). */
static int write_figure(const char *dir, xctx *c, size_t k, size_t mk, const xbufs *x, char *err,
                        size_t errlen)
{
    char name[256];
    if (mk == 0)
        snprintf(name, sizeof name, "%s.tsv", FIG_FILES[k]);
    else
        snprintf(name, sizeof name, "%s--%s.tsv", FIG_FILES[k], c->slugs[mk]);
    FILE *f = open_out(dir, name, err, errlen);
    if (!f) return -1;
    fputs("# mask: ", f);
    put_str(f, c->n_masks ? c->masks[mk] : "", AB_MASK_SPEC, 1);
    if (c->n_masks > 1) fprintf(f, " (base mask %zu of %zu: see masks.txt)", mk + 1, c->n_masks);
    fputc('\n', f);
    switch (k) {
    case 0: write_latency(f, c, x->tmp, x->scratch, 0); break;
    case 1: write_recall(f, c, x->tmp, x->g); break;
    case 2: write_accuracy(f, c, x->tmp, x->g, x->scratch); break;
    case 3: write_speedup(f, c, x->tmp, x->tmp2, x->g, x->scratch); break;
    case 4: write_acc_latency(f, c, x->tmp, x->scratch, x->al); break;
    case 5: write_heatmap(f, c, x->tmp, x->scratch, x->tmp2, x->tmp3); break;
    case 6: write_overhead(f, c, x->tmp, x->scratch); break;
    case 7: write_latency(f, c, x->tmp, x->scratch, 1); break;
    case 8: write_breakeven(f, c, x->tmp, x->tmp2, x->scratch, x->scratch2); break;
    default: write_selectors(f, c, x->tmp, x->tmp2, x->scratch); break;
    }
    return close_out(f, name, 0, err, errlen);
}

/* ---- decode: decode_*.tsv (docs/decode.md) ------------------------------
 * Decode points stay out of every prefill figure above (their workload is a
 * step, not a prefill) and get their own four files, one block per method
 * in methods.txt order. Columns of each file are in its header. */
enum { DEC_LATENCY, DEC_SPEEDUP, DEC_ACCURACY, DEC_LAYERS, N_DEC };
static const char *const DEC_FILES[N_DEC] = { "decode_latency.tsv", "decode_speedup.tsv",
                                              "decode_accuracy.tsv", "decode_layers.tsv" };
#define DEC_REF 0.0625 /* the setting figures pick: 1/16 of the cache (Quest's budget in the issue) */

static int dec_ok(const ab_point *p) { return ab_point_is_decode(p) && ab_status_is_ok(p->status); }

/* distance of a point's setting from DEC_REF (log), methods without a knob 0 */
static double dec_dist(const ab_point *p)
{
    const double t = isnan(p->target_density) ? p->achieved_density : p->target_density;
    return t > 0 && !isnan(p->knob_value) ? fabs(log(t / DEC_REF)) : 0;
}

/* a decode point of the figure `which` draws: ok, and for the layer figure
 * one with per-layer recall */
static int dec_use(const ab_point *p, int which)
{
    return dec_ok(p) && (which != DEC_LAYERS || p->layer_recall[0]);
}

/* the largest cache length of method meth's points for figure which (0: none) */
static int dec_maxn(const xctx *c, const char *meth, int which)
{
    int n = 0;
    for (size_t i = 0; i < c->n; i++)
        if (dec_use(&c->pts[i], which) && !strncmp(c->pts[i].method, meth, 32) && c->pts[i].seq_len > n)
            n = c->pts[i].seq_len;
    return n;
}

/* the point of meth at cache length n closest to DEC_REF (NULL: none) */
static const ab_point *dec_pick(const xctx *c, const char *meth, int n, int which)
{
    const ab_point *best = NULL;
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        if (!dec_use(p, which) || strncmp(p->method, meth, 32) || p->seq_len != n) continue;
        if (!best || dec_dist(p) < dec_dist(best)) best = p;
    }
    return best;
}

/* 1 when method meth has a row in figure which */
static int dec_has_rows(const xctx *c, const char *meth, int which)
{
    for (size_t i = 0; i < c->n; i++) {
        const ab_point *p = &c->pts[i];
        if (!dec_use(p, which) || strncmp(p->method, meth, 32)) continue;
        if (which == DEC_LATENCY && p == dec_pick(c, meth, p->seq_len, which) && ab_point_timed(p)) return 1;
        if (which == DEC_SPEEDUP && ab_point_timed(p)) return 1;
        if (which == DEC_ACCURACY && p->acc_trials > 0) return 1;
        if (which == DEC_LAYERS && p == dec_pick(c, meth, dec_maxn(c, meth, which), which)) return 1;
    }
    return 0;
}

static void write_decode(FILE *f, const xctx *c, int which)
{
    const char *bw_s = ab_env_get(c->env, "stream_triad_gbs");
    const double bw = bw_s ? strtod(bw_s, NULL) : NAN; /* GB/s = bytes per ns */
    static const char *const head[N_DEC] = {
        "# decode latency per step vs cache length, each method at its setting closest to 1/16 of the cache\n"
        "# columns: 1 N  2 step_ms (median)  3 lo  4 hi (95%)  5 kv_GBps (K/V bytes read / run time)\n"
        "#          6 bw_fraction (kv_GBps / STREAM triad)  7 limit_ms (whole cache / triad)  8 method  9 "
        "method_idx\n"
        "#          10 density  11 threads  12 prepare_ms\n",
        "# decode speedup over dense decode (paired) vs the fraction of the K/V cache read per step, every\n"
        "# timed point. columns: 1 kv_fraction (K/V bytes the attention reads / cache bytes)  2 speedup  3 "
        "lo\n"
        "#          4 hi  5 N  6 density  7 method  8 method_idx  9 select_share (select / step)\n"
        "#          10 read_fraction ((K/V bytes + the bytes select() states it moves) / cache bytes)\n",
        "# decode accuracy at the decode queries vs density (budget), every point with answers\n"
        "# columns: 1 density  2 accuracy  3 lo  4 hi (Wilson 95%)  5 dense_accuracy  6 N  7 method  8 "
        "method_idx\n"
        "#          9 recall_mass  10 trials\n",
        "# mass recall per layer of the stack (layered problems), at the largest N, setting closest to 1/16\n"
        "# columns: 1 layer  2 recall_mass  3 method  4 method_idx  5 N  6 density\n"
    };
    fputs(head[which], f);
    if (which == DEC_LATENCY && !(bw > 0))
        fputs("# note: no stream_triad_gbs in the file: no bandwidth line\n", f);
    int nblocks = 0;
    for (size_t m = 0; m < c->n_methods; m++) {
        const char *meth = c->methods[m];
        const int maxn = dec_maxn(c, meth, which);
        if (!maxn || !dec_has_rows(c, meth, which)) continue;
        if (nblocks++) fputs("\n\n", f);
        fprintf(f, "# method %s\n", meth);
        if (which == DEC_LATENCY) {
            for (int prev = 0;;) { /* each N, ascending */
                int n = 0;
                for (size_t i = 0; i < c->n; i++)
                    if (dec_ok(&c->pts[i]) && !strncmp(c->pts[i].method, meth, 32) &&
                        c->pts[i].seq_len > prev && (!n || c->pts[i].seq_len < n))
                        n = c->pts[i].seq_len;
                if (!n) break;
                prev = n;
                const ab_point *p = dec_pick(c, meth, n, which);
                if (!p || !ab_point_timed(p)) continue;
                const double gbs = p->kv_bytes / (p->run_ms * 1e6);
                const double v[] = {
                    n, p->total_ms, p->total_lo_ms, p->total_hi_ms, gbs, gbs / bw, p->cache_bytes / (bw * 1e6)
                };
                put_nums(f, v, 7);
                fprintf(f, "%s\t%zu\t", meth, m + 1);
                put_num(f, p->achieved_density);
                fprintf(f, "\t%d\t", (int)p->threads);
                put_num(f, p->prepare_ms);
                fputc('\n', f);
            }
            continue;
        }
        for (size_t i = 0; i < c->n; i++) {
            const ab_point *p = &c->pts[i];
            if (!dec_use(p, which) || strncmp(p->method, meth, 32)) continue;
            if (which == DEC_LAYERS && p->seq_len != maxn) continue;
            if (which == DEC_SPEEDUP) {
                double sp, lo, hi;
                if (!ab_point_timed(p)) continue;
                ab_point_paired_speedup(p, &sp, &lo, &hi);
                const double v[] = {
                    p->kv_bytes / p->cache_bytes, sp, lo, hi, p->seq_len, p->achieved_density
                };
                put_nums(f, v, 6);
                fprintf(f, "%s\t%zu\t", meth, m + 1);
                put_num(f, p->select_ms / p->total_ms);
                fputc('\t', f);
                put_num(f,
                        (p->kv_bytes + (isfinite(p->select_bytes) ? p->select_bytes : 0)) / p->cache_bytes);
                fputc('\n', f);
            } else if (which == DEC_ACCURACY) {
                if (p->acc_trials <= 0) continue;
                double dacc = NAN;
                for (size_t k = 0; k < c->n; k++)
                    if (dec_ok(&c->pts[k]) && !strcmp(c->pts[k].method, "dense") &&
                        !ab_point_work_cmp(&c->pts[k], p, AB_WORK_MASK))
                        dacc = c->pts[k].accuracy;
                const double v[] = {
                    p->achieved_density, p->accuracy, p->acc_ci_lo, p->acc_ci_hi, dacc, maxn
                };
                put_nums(f, v, 6);
                fprintf(f, "%s\t%zu\t", meth, m + 1);
                put_num(f, p->recall_mass);
                fprintf(f, "\t%d\n", (int)p->acc_trials);
            } else if (which == DEC_LAYERS && p == dec_pick(c, meth, maxn, which)) {
                double r[64];
                const size_t nl = ab_point_get_list(p->layer_recall, r, 64);
                for (size_t layer = 0; layer < nl; layer++) {
                    fprintf(f, "%zu\t", layer);
                    put_num(f, r[layer]);
                    fprintf(f, "\t%s\t%zu\t%d\t", meth, m + 1, maxn);
                    put_num(f, p->achieved_density);
                    fputc('\n', f);
                }
            }
        }
    }
}

/* ---- traces: trace_heads.tsv, trace_head_recall.tsv (docs/traces.md) ----
 * Points of the trace task (prefill, status ok, with per-head recall) at
 * each method's largest N. trace_heads.tsv: per method and setting, the
 * spread of mass recall over every (layer, head) of the trace (min,
 * quartiles, max) and the pooled needle accuracy; trace_head_recall.tsv:
 * one row per (point, head) for one's own analysis. */
enum { TR_HEADS, TR_LONG, N_TR };
static const char *const TR_FILES[N_TR] = { "trace_heads.tsv", "trace_head_recall.tsv" };

static int tr_use(const ab_point *p)
{
    return !strcmp(p->task, "trace") && !ab_point_is_decode(p) && ab_status_is_ok(p->status) &&
           p->head_recall[0];
}

/* the layer of a trace point (its `layer=` task parameter; absent: 0) */
static int tr_layer(const ab_point *p)
{
    const char *l = strstr(p->tparams, "layer=");
    return l ? atoi(l + 6) : 0;
}

/* the q-quantile of sorted v[0, n) (linear interpolation) */
static double tr_quantile(const double *v, size_t n, double q)
{
    const double at = q * (double)(n - 1);
    const size_t i = (size_t)at;
    return i + 1 < n ? v[i] + (at - (double)i) * (v[i + 1] - v[i]) : v[n - 1];
}

static void write_trace_figs(FILE *f, const xctx *c, int which)
{
    if (which == TR_HEADS)
        fputs("# trace task: mass recall spread over every stored (layer, head), each method at the prefix\n"
              "# N with the most layers measured (the largest such N)\n"
              "# columns: 1 density (mean achieved)  2 median  3 q25  4 q75  5 min  6 max  7 method  8 "
              "method_idx\n"
              "#          9 N  10 heads_pooled  11 layers  12 accuracy (needle, pooled)  13 trials\n",
              f);
    else
        fputs("# trace task: mass recall of every head of every point\n"
              "# columns: 1 method  2 N  3 target  4 density  5 layer  6 head  7 recall_mass  8 accuracy\n",
              f);
    int nblocks = 0;
    double *v = malloc(sizeof(double) * (c->n * 64 + 1));
    unsigned char *done = calloc(c->n + 1, 1);
    if (!v || !done) {
        free(v);
        free(done);
        return;
    }
    for (size_t m = 0; m < c->n_methods; m++) {
        const char *meth = c->methods[m];
        /* the prefix drawn: the one with the most layers measured (a sweep
         * cut short at the longest prefix must not compare a few heads
         * there with every head elsewhere), the largest of those */
        int maxn = 0, best_layers = 0;
        for (size_t i = 0; i < c->n; i++) {
            const ab_point *p = &c->pts[i];
            if (!tr_use(p) || strncmp(p->method, meth, 32) || p->seq_len == maxn) continue;
            unsigned char seen[64] = { 0 };
            int nl = 0;
            for (size_t k = 0; k < c->n; k++) {
                const ab_point *o = &c->pts[k];
                if (!tr_use(o) || strncmp(o->method, meth, 32) || o->seq_len != p->seq_len) continue;
                const int L = tr_layer(o);
                if (L >= 0 && L < 64 && !seen[L]) {
                    seen[L] = 1;
                    nl++;
                }
            }
            if (nl > best_layers || (nl == best_layers && p->seq_len > maxn)) {
                best_layers = nl;
                maxn = p->seq_len;
            }
        }
        if (!maxn) continue;
        if (which == TR_LONG) {
            for (size_t i = 0; i < c->n; i++) {
                const ab_point *p = &c->pts[i];
                if (!tr_use(p) || strncmp(p->method, meth, 32)) continue;
                const size_t nh = ab_point_get_list(p->head_recall, v, 64);
                for (size_t h = 0; h < nh; h++) {
                    fprintf(f, "%s\t%d\t", meth, (int)p->seq_len);
                    const double x[] = { p->target_density, p->achieved_density };
                    put_nums(f, x, 2);
                    fprintf(f, "%d\t%zu\t", tr_layer(p), h);
                    put_num(f, v[h]);
                    fputc('\t', f);
                    put_num(f, p->accuracy);
                    fputc('\n', f);
                }
            }
            continue;
        }
        if (nblocks++) fputs("\n\n", f);
        fprintf(f, "# method %s\n", meth);
        memset(done, 0, c->n);
        for (;;) { /* each setting (target density), ascending */
            const ab_point *first = NULL;
            for (size_t i = 0; i < c->n; i++) {
                const ab_point *p = &c->pts[i];
                if (done[i] || !tr_use(p) || strncmp(p->method, meth, 32) || p->seq_len != maxn) continue;
                if (!first || p->target_density < first->target_density) first = p;
            }
            if (!first) break;
            size_t nv = 0;
            int layers = 0, seen[64] = { 0 };
            double dens = 0, acc_k = 0, acc_n = 0;
            int np = 0;
            for (size_t i = 0; i < c->n; i++) {
                const ab_point *p = &c->pts[i];
                if (done[i] || !tr_use(p) || strncmp(p->method, meth, 32) || p->seq_len != maxn) continue;
                const int same = isnan(first->target_density)
                                     ? isnan(p->target_density) && !strcmp(p->params, first->params)
                                     : p->target_density == first->target_density;
                if (!same) continue;
                done[i] = 1;
                nv += ab_point_get_list(p->head_recall, v + nv, 64);
                dens += p->achieved_density;
                np++;
                const int L = tr_layer(p);
                if (L >= 0 && L < 64 && !seen[L]) {
                    seen[L] = 1;
                    layers++;
                }
                if (p->acc_trials > 0) {
                    acc_k += p->accuracy * p->acc_trials;
                    acc_n += p->acc_trials;
                }
            }
            if (!nv) continue;
            qsort(v, nv, sizeof *v, ab_dbl_cmp);
            const double x[] = {
                dens / np, tr_quantile(v, nv, 0.5), tr_quantile(v, nv, 0.25), tr_quantile(v, nv, 0.75), v[0],
                v[nv - 1]
            };
            put_nums(f, x, 6);
            fprintf(f, "%s\t%zu\t%d\t%zu\t%d\t", meth, m + 1, maxn, nv, layers);
            const double a[] = { acc_n > 0 ? acc_k / acc_n : NAN };
            put_nums(f, a, 1);
            fprintf(f, "%.0f\n", acc_n);
        }
    }
    free(v);
    free(done);
}

/* The whole-file outputs, in this order (ab_export's second switch). */
static const char *const OTHER_FILES[] = { "dense_vs_mask.tsv", "summary.tsv", "methods.txt", "masks.txt",
                                           "meta.txt" };

int ab_export(const ab_export_opts *o, char *err, size_t errlen)
{
    const char *path = o->path, *dir = o->dir;
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
    xbufs x;
    x.tmp = malloc((n + 1) * sizeof *x.tmp);
    x.tmp2 = malloc((n + 1) * sizeof *x.tmp2);
    x.tmp3 = malloc((n + 1) * sizeof *x.tmp3);
    x.g = malloc((n + 1) * sizeof *x.g);
    x.scratch = malloc((n + 1) * sizeof *x.scratch);
    x.scratch2 = malloc((n + 1) * sizeof *x.scratch2);
    x.al = malloc((n + 1) * sizeof *x.al);
    x.dv = malloc((n + 1) * sizeof *x.dv);
    const ab_point **dense = malloc((n + 1) * sizeof *dense);
    if (!x.tmp || !x.tmp2 || !x.tmp3 || !x.al || !x.g || !x.scratch || !x.scratch2 || !x.dv || !dense ||
        build_ctx(&c) != 0) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    qsort(c.ok_all, c.n_ok_all, sizeof *c.ok_all, xrow_cmp);
    select_mask(&c, -1);
    c.dense = dense;
    for (size_t i = 0; i < c.n_ok; i++)
        if (ab_point_is_baseline(c.ok[i].p) && ab_point_timed(c.ok[i].p)) dense[c.n_dense++] = c.ok[i].p;
    ab_dense_sort(dense, c.n_dense);
    if (mkdir_p(dir, err, errlen) != 0) goto done;
    remove_stale(dir);

    FILE *f = open_out(dir, "points.tsv", err, errlen);
    if (!f) goto done;
    write_points(f, &c);
    if (close_out(f, "points.tsv", 0, err, errlen) != 0) goto done;
    /* one pass per mask; a file without points still gets the primary files */
    size_t passes = c.n_masks > 1 ? c.n_masks : 1;
    for (size_t mk = 0; mk < passes; mk++) {
        select_mask(&c, c.n_masks > 1 ? (int)mk : -1);
        for (size_t k = 0; k < N_FIG_FILES; k++)
            if (write_figure(dir, &c, k, mk, &x, err, errlen) != 0) goto done;
    }
    select_mask(&c, -1);
    for (size_t k = 0; k < sizeof OTHER_FILES / sizeof OTHER_FILES[0]; k++) {
        f = open_out(dir, OTHER_FILES[k], err, errlen);
        if (!f) goto done;
        switch (k) {
        case 0: write_dense_mask(f, &c, x.tmp, x.dv); break;
        case 1: write_summary(f, &c, x.tmp, x.tmp2, x.scratch, x.scratch2); break;
        case 2: write_methods(f, &c); break;
        case 3: write_masks(f, &c); break;
        default: write_meta(f, &c); break;
        }
        if (close_out(f, OTHER_FILES[k], 0, err, errlen) != 0) goto done;
    }
    for (int k = 0; k < N_DEC; k++) {
        f = open_out(dir, DEC_FILES[k], err, errlen);
        if (!f) goto done;
        write_decode(f, &c, k);
        if (close_out(f, DEC_FILES[k], 0, err, errlen) != 0) goto done;
    }
    for (int k = 0; k < N_TR; k++) {
        f = open_out(dir, TR_FILES[k], err, errlen);
        if (!f) goto done;
        write_trace_figs(f, &c, k);
        if (close_out(f, TR_FILES[k], 0, err, errlen) != 0) goto done;
    }
    rc = 0;
done:
    free(c.methods);
    free(c.mfam);
    free(c.ser);
    free(c.ok);
    free(c.ok_all);
    free(c.masks);
    free(c.slugs);
    free(x.tmp);
    free(x.tmp2);
    free(x.tmp3);
    free(x.al);
    free(x.g);
    free(x.scratch);
    free(x.scratch2);
    free(x.dv);
    free(dense);
    free(pts);
    ab_env_free(&env);
    return rc;
}
