/* show.c — the table of `attnbench show RESULTS.h5` (harness/cli/show.c
 * parses its command line): a summary table in the terminal.
 *
 * One row per (method, base mask, seq_len, target density) — per knob value
 * for native settings — with the median latency of the ok points that carry
 * a timing (untimed points, scored only, count in density, recall and
 * accuracy only), the speedup over the "dense" method on the same workloads
 * (same base mask: the paired ratio 1 / rel_dense with its 95% interval where
 * the points have it, else dense total_ms / total_ms), the achieved density,
 * the attention recall, the task accuracy, the points per status and the
 * timing flags. Above it, the run's environment (host, cpu, threads, commit,
 * date). Formats: aligned text, TSV (for scripts; the interval and the
 * latency interval as extra columns at the end) and Markdown (for notes and
 * issues).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/report/aggregate.h"
#include "harness/report/show.h"
#include "harness/store/point.h"
#include "harness/store/store.h"
#include "runtime/errors.h"

enum { FMT_TEXT = AB_SHOW_TEXT, FMT_TSV = AB_SHOW_TSV, FMT_MD = AB_SHOW_MD };

/* The table's columns; --sort takes these names. */
enum {
    C_METHOD,
    C_MASK,
    C_SEQ_LEN,
    C_TARGET,
    C_MS,
    C_SPEEDUP,
    C_DENSITY,
    C_RECALL,
    C_ACCURACY,
    C_OK,
    C_FAILED,
    C_TIMING, /* the text and Markdown table: up to here */
    C_SP_LO,
    C_SP_HI,
    C_PAIRED,
    C_MS_LO,
    C_MS_HI,
    C_TIMED,
    C_COUNT
};
#define C_SORTABLE C_TIMING /* --sort takes the names before it */
static const char *const COL_NAMES[C_COUNT] = { "method",  "mask",    "seq_len",    "target",     "ms",
                                                "speedup", "density", "recall",     "accuracy",   "ok",
                                                "failed",  "timing",  "speedup_lo", "speedup_hi", "paired",
                                                "ms_lo",   "ms_hi",   "timed" };

/* One table row. */
typedef struct srow {
    const ab_point *first;   /* a point of the group (method, device, seq_len...) */
    char name[48];           /* method, or method@device when several devices */
    char mask[AB_MASK_SPEC]; /* the base mask */
    int native;
    double setting;    /* target density, or the knob value when native */
    double v[C_COUNT]; /* numeric cells (NaN = none) */
    char failed[96];   /* "timeout:2,crashed:1" */
    char timing[96];   /* "untimed:2,interference:3" over the ok points, "" when none */
    size_t n_ok, n_failed;
} srow;

/* One --filter term: key=value. Terms with the same key are OR-ed. */
typedef struct sterm {
    char key[24];
    char value[160];
} sterm;
#define MAX_TERMS 32

/* ---- helpers ---------------------------------------------------------- */

/* Group key order: method, device, dtype, base mask, seq_len, setting. */
static int group_cmp(const ab_point *x, const ab_point *y)
{
    int o = ab_method_order(x->method, y->method);
    if (o) return o;
    o = strncmp(x->device, y->device, sizeof x->device);
    if (o) return o;
    o = ab_dtype_cmp(x->dtype, y->dtype);
    if (o) return o;
    o = ab_mask_order(ab_point_mask(x), ab_point_mask(y));
    if (o) return o;
    if (x->seq_len != y->seq_len) return x->seq_len > y->seq_len ? 1 : -1;
    ab_row rx = ab_row_of(x), ry = ab_row_of(y);
    if (rx.native != ry.native) return rx.native - ry.native;
    return ab_cmp_num(rx.setting, ry.setting);
}

static int row_group_cmp(const void *a, const void *b)
{
    const ab_row *x = a, *y = b;
    int o = group_cmp(x->p, y->p);
    return o ? o : (x->p > y->p) - (x->p < y->p);
}

/* ---- filter ---------------------------------------------------------- */

static const char *const FILTER_KEYS[] = { "method", "task",    "device", "dtype",   "kernel", "layout",
                                           "status", "key",     "mask",   "seq_len", "heads",  "head_dim",
                                           "causal", "threads", "seed",   "depth",   "target" };

static int parse_filter(const char *expr, sterm *t, int *nt)
{
    const char *s = expr;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        if (len == 0 || !eq || eq == s || *nt >= MAX_TERMS) {
            ab_errorf("show: bad --filter term '%.*s' (want key=value[,key=value...])", (int)len, s);
            return -1;
        }
        sterm *x = &t[(*nt)++];
        snprintf(x->key, sizeof x->key, "%.*s", (int)(eq - s), s);
        snprintf(x->value, sizeof x->value, "%.*s", (int)(len - (size_t)(eq - s) - 1), eq + 1);
        int known = 0;
        for (size_t k = 0; k < sizeof FILTER_KEYS / sizeof FILTER_KEYS[0]; k++)
            if (strcmp(x->key, FILTER_KEYS[k]) == 0) known = 1;
        if (!known) {
            ab_errorf("show: unknown --filter key '%s' (keys: method task device dtype kernel "
                      "layout status key mask seq_len heads head_dim causal threads seed depth target)",
                      x->key);
            return -1;
        }
        s += len;
        if (*s == ',') s++;
    }
    return 0;
}

static int term_matches(const sterm *t, const ab_point *p)
{
    const char *sv = NULL;
    size_t cap = 0;
    double nv = NAN;
    if (strcmp(t->key, "method") == 0) {
        sv = p->method;
        cap = sizeof p->method;
    } else if (strcmp(t->key, "task") == 0) {
        sv = p->task;
        cap = sizeof p->task;
    } else if (strcmp(t->key, "device") == 0) {
        sv = p->device;
        cap = sizeof p->device;
    } else if (strcmp(t->key, "dtype") == 0) {
        sv = p->dtype;
        cap = sizeof p->dtype;
    } else if (strcmp(t->key, "kernel") == 0) {
        sv = p->kernel;
        cap = sizeof p->kernel;
    } else if (strcmp(t->key, "layout") == 0) {
        sv = p->layout;
        cap = sizeof p->layout;
    } else if (strcmp(t->key, "status") == 0) {
        sv = p->status;
        cap = sizeof p->status;
    } else if (strcmp(t->key, "key") == 0) {
        sv = p->key;
        cap = sizeof p->key;
    } else if (strcmp(t->key, "mask") == 0) {
        sv = ab_point_mask(p);
        cap = AB_MASK_SPEC;
    } else if (strcmp(t->key, "seq_len") == 0)
        nv = p->seq_len;
    else if (strcmp(t->key, "heads") == 0)
        nv = p->heads;
    else if (strcmp(t->key, "head_dim") == 0)
        nv = p->head_dim;
    else if (strcmp(t->key, "causal") == 0)
        nv = p->causal;
    else if (strcmp(t->key, "threads") == 0)
        nv = p->threads;
    else if (strcmp(t->key, "seed") == 0)
        nv = (double)p->seed;
    else if (strcmp(t->key, "depth") == 0)
        nv = p->depth;
    else if (strcmp(t->key, "target") == 0)
        nv = p->target_density;
    if (sv) return strncmp(sv, t->value, cap) == 0 && strlen(t->value) < cap;
    char *end;
    double want = strtod(t->value, &end);
    if (end == t->value || *end) /* "native"/"nan" for NaN targets */
        return isnan(nv) && (strcmp(t->value, "native") == 0 || strcmp(t->value, "nan") == 0);
    return ab_same_num(nv, want) || fabs(nv - want) <= 1e-9 * fabs(want);
}

/* AND over keys, OR over terms sharing a key. */
static int point_passes(const sterm *t, int nt, const ab_point *p)
{
    for (int i = 0; i < nt; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].key, t[i].key) == 0) seen = 1;
        if (seen) continue;
        int any = 0;
        for (int j = i; j < nt && !any; j++)
            if (strcmp(t[j].key, t[i].key) == 0 && term_matches(&t[j], p)) any = 1;
        if (!any) return 0;
    }
    return 1;
}

/* ---- building the table ------------------------------------------------ */

static void fill_row(srow *r, const ab_row *g, size_t n, int multi_dev, const ab_point *const *dense,
                     size_t nd, double *tmp, double *tmp2)
{
    const ab_point *g0 = g[0].p;
    memset(r, 0, sizeof *r);
    r->first = g0;
    ab_point_series_name(g0, multi_dev, r->name, sizeof r->name);
    snprintf(r->mask, sizeof r->mask, "%.*s", AB_MASK_SPEC - 1, ab_point_mask(g0));
    r->native = g[0].native;
    r->setting = g[0].setting;
    for (int c = 0; c < C_COUNT; c++) r->v[c] = NAN;
    r->v[C_SEQ_LEN] = g0->seq_len;
    r->v[C_TARGET] = r->native ? NAN : r->setting;

    /* latency from the points with a timing; the rest from every ok point */
#define TIMED(x) (ab_point_timed(p_) ? (x) : NAN)
#define OK(x)    (ab_status_is_ok(p_->status) ? (x) : NAN)
    AB_ROWS_MEDIAN(r->v[C_MS], g, n, TIMED(p_->total_ms), tmp);
    AB_ROWS_MEDIAN(r->v[C_MS_LO], g, n, TIMED(p_->total_lo_ms), tmp);
    AB_ROWS_MEDIAN(r->v[C_MS_HI], g, n, TIMED(p_->total_hi_ms), tmp);
    AB_ROWS_MEDIAN(r->v[C_DENSITY], g, n, OK(p_->achieved_density), tmp);
    AB_ROWS_MEDIAN(r->v[C_RECALL], g, n, OK(p_->recall_mass), tmp);
#undef OK
#undef TIMED
    int paired;
    ab_group_speedup(g, n, dense, nd, tmp, tmp2, &r->v[C_SPEEDUP], &r->v[C_SP_LO], &r->v[C_SP_HI], &paired);
    r->v[C_PAIRED] = paired;
    double acc = 0;
    size_t nacc = 0, ntimed = 0;
    ab_tally bad = { 0 };
    for (size_t k = 0; k < n; k++) {
        const ab_point *p = g[k].p;
        ab_tally_add(&bad, p->status);
        if (!ab_status_is_ok(p->status)) continue;
        if (!isnan(p->accuracy)) {
            acc += p->accuracy;
            nacc++;
        }
        ntimed += ab_point_timed(p) != 0;
    }
    r->n_failed = bad.total;
    r->n_ok = n - bad.total;
    r->v[C_ACCURACY] = nacc ? acc / (double)nacc : NAN;
    r->v[C_OK] = (double)r->n_ok;
    r->v[C_FAILED] = (double)r->n_failed;
    r->v[C_TIMED] = (double)ntimed;
    ab_tally_list(&bad, r->failed, sizeof r->failed); /* failures by status, in name order */

    /* timing flags over the ok points */
    static const char *const flags[] = { "untimed", "unpaired", "interference", "rounds_disagree",
                                         "cores_shared" };
    size_t used = 0;
    for (size_t q = 0; q < sizeof flags / sizeof flags[0]; q++) {
        size_t count = 0;
        for (size_t k = 0; k < n; k++)
            count += ab_status_is_ok(g[k].p->status) && ab_point_has_flag(g[k].p, flags[q]);
        if (!count) continue;
        int w =
            snprintf(r->timing + used, sizeof r->timing - used, "%s%s:%zu", used ? "," : "", flags[q], count);
        if (w < 0 || (size_t)w >= sizeof r->timing - used) break;
        used += (size_t)w;
    }
}

/* Sort by one column (desc when the name starts with '-'), then group order. */
typedef struct sortspec {
    int col, desc;
} sortspec;

static int row_cmp_spec(const srow *x, const srow *y, const sortspec *s)
{
    int o = 0;
    if (s && s->col >= 0) {
        if (s->col == C_METHOD)
            o = ab_method_order(x->name, y->name);
        else if (s->col == C_MASK)
            o = ab_mask_order(x->mask, y->mask);
        else if (s->col == C_FAILED && x->n_failed == y->n_failed)
            o = strcmp(x->failed, y->failed);
        else if (s->col == C_TARGET && x->native != y->native)
            o = x->native - y->native;
        else if (s->col == C_TARGET && x->native)
            o = ab_cmp_num(x->setting, y->setting);
        else {
            double a = x->v[s->col], b = y->v[s->col];
            if (isnan(a) || isnan(b)) return isnan(a) - isnan(b); /* missing last */
            o = (a > b) - (a < b);
        }
        if (s->desc) o = -o;
    }
    return o ? o : group_cmp(x->first, y->first);
}

/* insertion sort: the table is small and this keeps ties in group order */
static void sort_rows(srow *r, size_t n, const sortspec *s)
{
    for (size_t i = 1; i < n; i++) {
        srow t = r[i];
        size_t j = i;
        while (j > 0 && row_cmp_spec(&r[j - 1], &t, s) > 0) {
            r[j] = r[j - 1];
            j--;
        }
        r[j] = t;
    }
}

/* ---- printing ------------------------------------------------------------ */

static void cell(char *buf, size_t len, const srow *r, int c, int fmt)
{
    double v = r->v[c];
    if (c == C_METHOD) {
        snprintf(buf, len, "%s", r->name);
        return;
    }
    if (c == C_MASK) {
        snprintf(buf, len, "%s", r->mask);
        return;
    }
    if (c == C_FAILED) {
        snprintf(buf, len, "%s", r->failed[0] ? r->failed : "-");
        return;
    }
    if (c == C_TIMING) {
        snprintf(buf, len, "%s", r->timing[0] ? r->timing : "-");
        return;
    }
    if (c == C_TARGET && r->native) {
        if (isnan(r->setting))
            snprintf(buf, len, "native");
        else
            snprintf(buf, len, "knob=%g", r->setting);
        return;
    }
    if (isnan(v)) {
        snprintf(buf, len, fmt == FMT_TSV ? "nan" : "-");
        return;
    }
    if (fmt == FMT_TSV) {
        if (c == C_SEQ_LEN || c == C_OK || c == C_FAILED || c == C_PAIRED || c == C_TIMED)
            snprintf(buf, len, "%.0f", v);
        else
            snprintf(buf, len, "%.6g", v);
        return;
    }
    switch (c) {
    case C_SEQ_LEN:
    case C_OK: snprintf(buf, len, "%.0f", v); break;
    case C_MS: snprintf(buf, len, v >= 100 ? "%.1f" : v >= 1 ? "%.3f" : "%.4f", v); break;
    case C_SPEEDUP: /* with the paired 95% interval when there is one */
        if (!isnan(r->v[C_SP_LO]) && !isnan(r->v[C_SP_HI]))
            snprintf(buf, len, "%.2fx [%.2f, %.2f]", v, r->v[C_SP_LO], r->v[C_SP_HI]);
        else
            snprintf(buf, len, "%.2fx", v);
        break;
    case C_TARGET: snprintf(buf, len, "%g", v); break;
    default: snprintf(buf, len, "%.3f", v); break;
    }
}

static void print_env(const char *path, const ab_env *env, size_t n, size_t n_ok, int n_shown, int fmt)
{
    static const char *const keys[][2] = { { "host", "host" },
                                           { "cpu", "cpu_model" },
                                           { "threads", "threads" },
                                           { "commit", "git_sha" },
                                           { "created", "created_utc" } };
    if (fmt == FMT_TSV)
        printf("# file\t%s\n", path);
    else if (fmt == FMT_MD)
        printf("**%s**\n\n", path);
    else
        printf("%s\n", path);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const char *v = ab_env_get(env, keys[k][1]);
        if (!v || !v[0]) v = "?";
        if (fmt == FMT_TSV)
            printf("# %s\t%s\n", keys[k][0], v);
        else if (fmt == FMT_MD)
            printf("- %s: %s\n", keys[k][0], v);
        else
            printf("  %-8s %s\n", keys[k][0], v);
    }
    static const char *const legend =
        "ms: median latency of the points with a timing (untimed = scored only); speedup over "
        "dense: paired ratio in the same process [95% interval, bootstrap over rounds], "
        "without an interval: dense latency / latency from separate runs";
    if (fmt == FMT_TSV)
        printf("# points\t%zu\n# ok\t%zu\n# failed\t%zu\n", n, n_ok, n - n_ok);
    else if (fmt == FMT_MD)
        printf("- points: %zu (%zu ok, %zu failed), %d rows shown\n- %s\n\n", n, n_ok, n - n_ok, n_shown,
               legend);
    else
        printf("  %-8s %zu (%zu ok, %zu failed), %d rows shown\n  %-8s %s\n\n", "points", n, n_ok, n - n_ok,
               n_shown, "note", legend);
}

static const char *const HEADS[C_COUNT] = { "method",  "mask",    "N",          "target",     "ms",
                                            "speedup", "density", "recall",     "accuracy",   "ok",
                                            "failed",  "timing",  "speedup_lo", "speedup_hi", "paired",
                                            "ms_lo",   "ms_hi",   "timed" };

static void print_table(const srow *rows, size_t nr, int fmt)
{
    char buf[128];
    if (fmt == FMT_TSV) {
        for (int c = 0; c < C_COUNT; c++) printf("%s%s", c ? "\t" : "", COL_NAMES[c]);
        putchar('\n');
        for (size_t i = 0; i < nr; i++) {
            for (int c = 0; c < C_COUNT; c++) {
                cell(buf, sizeof buf, &rows[i], c, fmt);
                printf("%s%s", c ? "\t" : "", buf);
            }
            putchar('\n');
        }
        return;
    }
    /* text and Markdown: the columns up to timing (the interval is in the
     * speedup cell) */
    const int nc = C_TIMING + 1;
    int w[C_COUNT];
    for (int c = 0; c < nc; c++) w[c] = (int)strlen(HEADS[c]);
    for (size_t i = 0; i < nr; i++)
        for (int c = 0; c < nc; c++) {
            cell(buf, sizeof buf, &rows[i], c, fmt);
            if ((int)strlen(buf) > w[c]) w[c] = (int)strlen(buf);
        }
        /* text columns left-aligned, numbers right-aligned */
#define LEFT(c) ((c) == C_METHOD || (c) == C_MASK || (c) == C_FAILED || (c) == C_TIMING)
    const char *sep = fmt == FMT_MD ? " | " : "  ";
    if (fmt == FMT_MD) fputs("| ", stdout);
    for (int c = 0; c < nc; c++) {
        int last_text = fmt == FMT_TEXT && c == nc - 1;
        printf("%s%*s", c ? sep : "", last_text ? 0 : LEFT(c) ? -w[c] : w[c], HEADS[c]);
    }
    puts(fmt == FMT_MD ? " |" : "");
    if (fmt == FMT_MD) {
        fputs("|", stdout);
        for (int c = 0; c < nc; c++) {
            putchar(LEFT(c) ? ':' : '-');
            for (int k = 0; k < w[c]; k++) putchar('-');
            fputs(LEFT(c) ? "-|" : ":|", stdout);
        }
        putchar('\n');
    }
    for (size_t i = 0; i < nr; i++) {
        if (fmt == FMT_MD) fputs("| ", stdout);
        for (int c = 0; c < nc; c++) {
            cell(buf, sizeof buf, &rows[i], c, fmt);
            int last_text = fmt == FMT_TEXT && c == nc - 1; /* no trailing blanks */
            printf("%s%*s", c ? sep : "", last_text ? 0 : LEFT(c) ? -w[c] : w[c], buf);
        }
        puts(fmt == FMT_MD ? " |" : "");
    }
#undef LEFT
}

/* ---- the table ---------------------------------------------------------- */

/* The --sort spec of name ("-COL": descending); -1 after an error message. */
static int parse_sort(const char *sort, sortspec *spec)
{
    const char *s = sort;
    spec->col = -1;
    spec->desc = 0;
    if (!sort) return 0;
    if (*s == '-') {
        spec->desc = 1;
        s++;
    }
    for (int c = 0; c < C_SORTABLE; c++)
        if (strcmp(s, COL_NAMES[c]) == 0 || (c == C_SEQ_LEN && strcmp(s, "N") == 0)) spec->col = c;
    if (spec->col < 0) {
        ab_errorf("show: unknown --sort column '%s' (method mask seq_len target ms speedup "
                  "density recall accuracy ok failed)",
                  sort);
        return -1;
    }
    return 0;
}

/* The rows of the points that pass the filter, in group order; dense[0..*nd)
 * the timed ok dense points (all of them, filtered or not) for the speedups. */
static size_t build_rows(const ab_point *pts, size_t n, const sterm *terms, int nt, srow *rows, ab_row *sel,
                         const ab_point **dense, double *tmp, double *tmp2, size_t *n_ok)
{
    size_t ns = 0, nd = 0;
    int multi_dev = 0;
    *n_ok = 0;
    for (size_t i = 0; i < n; i++) {
        const ab_point *p = &pts[i];
        if (strncmp(p->device, pts[0].device, sizeof p->device) != 0) multi_dev = 1;
        if (ab_status_is_ok(p->status)) {
            (*n_ok)++;
            if (ab_point_is_baseline(p) && ab_point_timed(p)) dense[nd++] = p;
        }
        if (point_passes(terms, nt, p)) sel[ns++] = ab_row_of(p);
    }
    ab_dense_sort(dense, nd);
    qsort(sel, ns, sizeof *sel, row_group_cmp);
    size_t nr = 0;
    for (size_t a = 0; a < ns;) {
        size_t b = a + 1;
        while (b < ns && group_cmp(sel[a].p, sel[b].p) == 0) b++;
        fill_row(&rows[nr++], sel + a, b - a, multi_dev, dense, nd, tmp, tmp2);
        a = b;
    }
    return nr;
}

int ab_show(const ab_show_opts *o)
{
    sortspec spec;
    if (parse_sort(o->sort, &spec) != 0) return 2;
    sterm terms[MAX_TERMS];
    int nt = 0;
    if (o->filter && parse_filter(o->filter, terms, &nt) != 0) return 2;

    ab_point *pts = NULL;
    size_t n = 0;
    ab_env env;
    memset(&env, 0, sizeof env);
    char err[512] = "";
    if (ab_results_read(o->path, &pts, &n, &env, err, sizeof err) != 0) {
        ab_errorf("show: %s", err[0] ? err : "cannot read the results file");
        return 2;
    }
    int rc = 0;
    ab_row *sel = malloc((n + 1) * sizeof *sel);
    const ab_point **dense = malloc((n + 1) * sizeof *dense);
    srow *rows = malloc((n + 1) * sizeof *rows);
    double *tmp = malloc((n + 1) * sizeof *tmp);
    double *tmp2 = malloc((n + 1) * sizeof *tmp2);
    if (!sel || !dense || !rows || !tmp || !tmp2) {
        ab_errorf("show: out of memory");
        rc = 2;
    } else {
        size_t n_ok;
        size_t nr = build_rows(pts, n, terms, nt, rows, sel, dense, tmp, tmp2, &n_ok);
        sort_rows(rows, nr, spec.col >= 0 ? &spec : NULL);
        print_env(o->path, &env, n, n_ok, (int)nr, o->format);
        print_table(rows, nr, o->format);
    }
    free(sel);
    free(dense);
    free(rows);
    free(tmp);
    free(tmp2);
    free(pts);
    ab_env_free(&env);
    return rc;
}
