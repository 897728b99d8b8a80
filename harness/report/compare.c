/* compare.c — `attnbench compare A.h5 B.h5` (harness/cli/compare.c parses
 * its command line): do two results files agree?
 *
 * The check a user runs between two runs, two commits or two machines (in
 * the spirit of asv's `compare` and Criterion.rs's change detection): points
 * are matched by key; for each pair of timed, status-ok points it reports
 * the latency ratio B/A and the speedup ratio B/A (speedup over dense: the
 * paired 1/rel_dense of the timing protocol, or dense total / total for
 * files without it), each with the interval the two points' 95% intervals
 * allow, and whether the two intervals are disjoint (the point changed
 * beyond its measurement uncertainty). The summary gives the median, p90
 * and largest |log ratio| per quantity; --fail-above X turns the median
 * into a gate (exit 1). */
#include "harness/report/compare.h"
#include "harness/store/point.h"
#include "harness/store/store.h"
#include "harness/engine/timing.h"
#include "runtime/errors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cmp_side {
    double ms, ms_lo, ms_hi; /* latency and its interval (NaN: none) */
    double sp, sp_lo, sp_hi; /* speedup over dense and its interval (NaN: none) */
} cmp_side;

typedef struct cmp_row {
    const ab_point *a, *b;
    cmp_side sa, sb;
    double lat, lat_lo, lat_hi, spd, spd_lo, spd_hi; /* ratios B/A */
    double clock;                                    /* machine-speed index B/A (FMA probe), NaN unknown */
    int lat_changed, spd_changed;
} cmp_row;

static int timed_ok(const ab_point *p)
{
    return !strcmp(p->status, "ok") && p->total_ms > 0 && !strstr(p->timing, "untimed");
}

static int key_cmp(const void *x, const void *y)
{
    return strcmp(((const ab_point *)x)->key, ((const ab_point *)y)->key);
}

static const ab_point *find_key(const ab_point *v, size_t n, const char *key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int o = strcmp(v[mid].key, key);
        if (!o) return &v[mid];
        if (o < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The dense point of p's workload in v (same file), for files without the
 * paired ratio; NULL when there is none. */
static const ab_point *dense_of(const ab_point *v, size_t n, const ab_point *p)
{
    for (size_t i = 0; i < n; i++)
        if (ab_point_is_baseline(&v[i]) && timed_ok(&v[i]) &&
            !ab_point_work_cmp(&v[i], p, AB_WORK_MASK | AB_WORK_BASELINE))
            return &v[i];
    return NULL;
}

static void side_of(const ab_point *v, size_t n, const ab_point *p, cmp_side *s)
{
    s->ms = p->total_ms;
    s->ms_lo = p->total_lo_ms;
    s->ms_hi = p->total_hi_ms;
    s->sp = s->sp_lo = s->sp_hi = NAN;
    if (p->rel_dense > 0) {
        s->sp = 1.0 / p->rel_dense;
        s->sp_lo = p->rel_hi > 0 ? 1.0 / p->rel_hi : NAN;
        s->sp_hi = p->rel_lo > 0 ? 1.0 / p->rel_lo : NAN;
    } else if (strcmp(p->method, "dense")) {
        const ab_point *d = dense_of(v, n, p);
        if (d) s->sp = d->total_ms / p->total_ms;
    } else
        s->sp = 1.0;
}

/* ratio B/A with the interval its ends allow; changed: the intervals are disjoint */
static void ratio(double a, double alo, double ahi, double b, double blo, double bhi, double noise, double *r,
                  double *rlo, double *rhi, int *changed)
{
    *r = a > 0 && b > 0 ? b / a : NAN;
    *rlo = ahi > 0 && blo > 0 ? blo / ahi : NAN;
    *rhi = alo > 0 && bhi > 0 ? bhi / alo : NAN;
    *changed = alo > 0 && ahi > 0 && blo > 0 && bhi > 0 && (bhi < alo || blo > ahi) && fabs(log(*r)) > noise;
}

static void summary_of(const double *x, size_t n, double *med, double *p90, double *mx)
{
    *med = *p90 = *mx = NAN;
    if (!n) return;
    ab_stats s;
    ab_stats_compute(x, (int)n, &s);
    *med = s.median;
    *p90 = s.p90;
    *mx = s.max;
}

static void env_line(const char *path, const ab_env *e)
{
    const char *sha = ab_env_get(e, "git_sha"), *host = ab_env_get(e, "host"),
               *when = ab_env_get(e, "created_utc");
    const char *cpu = ab_env_get(e, "cpu_model"), *thr = ab_env_get(e, "threads");
    printf("  %s: commit %s, %s (%s), %s threads, %s\n", path, sha ? sha : "?", host ? host : "?",
           cpu ? cpu : "?", thr ? thr : "?", when ? when : "?");
}

static void print_row(const cmp_row *r)
{
    const ab_point *p = r->a;
    char dens[24];
    if (isnan(p->target_density))
        snprintf(dens, sizeof dens, "native");
    else
        snprintf(dens, sizeof dens, "%.3g", p->target_density);
    printf("  %-18s %-12s N=%-6d d=%-3d %-12s dens=%-6s  lat %9.4g -> %9.4g ms  x%-6.3g[%.3g, %.3g]%s",
           p->method, p->task, p->seq_len, p->head_dim, ab_point_mask(p), dens, r->sa.ms, r->sb.ms, r->lat,
           r->lat_lo, r->lat_hi, r->lat_changed ? " *" : "  ");
    if (!isnan(r->spd))
        printf("  speedup %7.3g -> %7.3g  x%-6.3g[%.3g, %.3g]%s", r->sa.sp, r->sb.sp, r->spd, r->spd_lo,
               r->spd_hi, r->spd_changed ? " *" : "");
    printf("\n");
}

static int row_by_change(const void *x, const void *y)
{
    const cmp_row *a = x, *b = y;
    double ka = fmax(isnan(a->spd) ? 0 : fabs(log(a->spd)), fabs(log(a->lat)));
    double kb = fmax(isnan(b->spd) ? 0 : fabs(log(b->spd)), fabs(log(b->lat)));
    return (ka < kb) - (ka > kb);
}

/* Pair the points of A and B by key into rows[]: the timed, status-ok pairs
 * with their ratios; counts what could not be paired. Returns the pairs. */
static size_t match_rows(const ab_point *pa, size_t na, const ab_point *pb, size_t nb, double noise,
                         cmp_row *rows, size_t *only_a, size_t *only_b, size_t *not_timed)
{
    size_t nr = 0;
    *only_a = *only_b = *not_timed = 0;
    for (size_t i = 0; i < na; i++) {
        const ab_point *b = find_key(pb, nb, pa[i].key);
        if (!b) {
            (*only_a)++;
            continue;
        }
        if (!timed_ok(&pa[i]) || !timed_ok(b)) {
            (*not_timed)++;
            continue;
        }
        cmp_row *r = &rows[nr++];
        r->a = &pa[i];
        r->b = b;
        side_of(pa, na, r->a, &r->sa);
        side_of(pb, nb, r->b, &r->sb);
        ratio(r->sa.ms, r->sa.ms_lo, r->sa.ms_hi, r->sb.ms, r->sb.ms_lo, r->sb.ms_hi, noise, &r->lat,
              &r->lat_lo, &r->lat_hi, &r->lat_changed);
        r->clock = r->a->fma_gflops > 0 && r->b->fma_gflops > 0 ? r->b->fma_gflops / r->a->fma_gflops : NAN;
        if (!strcmp(r->a->method, "dense"))
            r->spd = r->spd_lo = r->spd_hi = NAN;
        else
            ratio(r->sa.sp, r->sa.sp_lo, r->sa.sp_hi, r->sb.sp, r->sb.sp_lo, r->sb.sp_hi, noise, &r->spd,
                  &r->spd_lo, &r->spd_hi, &r->spd_changed);
    }
    for (size_t i = 0; i < nb; i++)
        if (!find_key(pa, na, pb[i].key)) (*only_b)++;
    return nr;
}

/* The summary table of |log ratio|; *lmed, *smed: the medians --fail-above
 * tests, *ns: the rows with a speedup. tmp: nr doubles. */
static void print_summary(const cmp_row *rows, size_t nr, double noise, double *tmp, double *lmed,
                          double *smed, size_t *ns)
{
    double lp90, lmax, sp90 = NAN, smax = NAN;
    size_t nl = 0, lch = 0, sch = 0;
    *smed = NAN;
    *ns = 0;
    for (size_t i = 0; i < nr; i++) {
        tmp[nl++] = fabs(log(rows[i].lat));
        lch += (size_t)rows[i].lat_changed;
    }
    summary_of(tmp, nl, lmed, &lp90, &lmax);
    for (size_t i = 0; i < nr; i++)
        if (rows[i].spd > 0) {
            tmp[(*ns)++] = fabs(log(rows[i].spd));
            sch += (size_t)rows[i].spd_changed;
        }
    summary_of(tmp, *ns, smed, &sp90, &smax);
    /* the machine's own speed: on a VM the host may change the clock between
     * (and within) runs; latency moves with it, paired speedups do not. One
     * factor per file pair, the median over points of the FMA-probe ratio
     * (a single probe is noisy: the host's clock swings within a second) */
    size_t nc = 0;
    double cmed = NAN, amed = NAN, ap90 = NAN, amax = NAN;
    for (size_t i = 0; i < nr; i++)
        if (rows[i].clock > 0) tmp[nc++] = rows[i].clock;
    if (nc >= 5) {
        double d1, d2;
        summary_of(tmp, nc, &cmed, &d1, &d2);
        for (size_t i = 0; i < nl; i++) tmp[i] = fabs(log(rows[i].lat * cmed));
        summary_of(tmp, nl, &amed, &ap90, &amax);
    } else
        nc = 0;
    printf("\n%-22s %8s %8s %8s %8s   %s\n", "|log(B/A)|", "points", "median", "p90", "max",
           "changed beyond intervals");
    printf("%-22s %8zu %8.4f %8.4f %8.4f   %zu\n", "latency (total_ms)", nl, *lmed, lp90, lmax, lch);
    if (*ns)
        printf("%-22s %8zu %8.4f %8.4f %8.4f   %zu\n", "speedup over dense", *ns, *smed, sp90, smax, sch);
    else
        printf("%-22s %8s   (no point with a speedup in both files)\n", "speedup over dense", "0");
    if (nc) {
        printf("%-22s %8zu %8.4f %8.4f %8.4f   (latency x the machine-speed ratio below)\n",
               "latency, equal clock", nl, amed, ap90, amax);
        printf("machine speed B/A (1-thread FMA probe in every round): x%.3f median%s\n", cmed,
               fabs(log(cmed)) > 0.03
                   ? ": the machine itself ran at another speed, so latencies moved with it"
                   : "");
    }
    printf("(a |log ratio| of 0.05 is a %.1f%% change; changed, '*' below: the two 95%% intervals do not "
           "overlap and\n"
           " the change exceeds --noise %g)\n",
           100 * (exp(0.05) - 1), noise);
}

/* The changed rows (every row with all), largest change first; sorts rows. */
static void list_rows(cmp_row *rows, size_t nr, int all)
{
    qsort(rows, nr, sizeof *rows, row_by_change);
    size_t shown = 0;
    for (size_t i = 0; i < nr; i++) {
        if (!all && !rows[i].lat_changed && !rows[i].spd_changed) continue;
        if (!shown++) printf("\n%s, largest change first:\n", all ? "every matched point" : "changed points");
        print_row(&rows[i]);
    }
    if (!shown) printf("\nno point changed beyond its intervals\n");
}

/* One row per matched point into path; -1 after an error message. */
static int write_tsv(const char *path, const cmp_row *rows, size_t nr)
{
    FILE *tf = fopen(path, "w");
    if (!tf) {
        ab_errorf("compare: cannot write %s", path);
        return -1;
    }
    fprintf(
        tf,
        "key\tmethod\ttask\tseq_len\theads\thead_dim\tmask\tdepth\ttarget_density\tms_a\tms_a_lo\tms_a_hi\t"
        "ms_b\tms_b_lo\tms_b_hi\tlatency_ratio\tlatency_ratio_lo\tlatency_ratio_hi\tlatency_changed\t"
        "speedup_a\tspeedup_b\tspeedup_ratio\tspeedup_ratio_lo\tspeedup_ratio_hi\tspeedup_changed\n");
    for (size_t i = 0; i < nr; i++) {
        const cmp_row *r = &rows[i];
        fprintf(tf,
                "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%."
                "6g\t%d\t"
                "%.6g\t%.6g\t%.6g\t%.6g\t%.6g\t%d\n",
                r->a->key, r->a->method, r->a->task, r->a->seq_len, r->a->heads, r->a->head_dim,
                ab_point_mask(r->a), r->a->depth, r->a->target_density, r->sa.ms, r->sa.ms_lo, r->sa.ms_hi,
                r->sb.ms, r->sb.ms_lo, r->sb.ms_hi, r->lat, r->lat_lo, r->lat_hi, r->lat_changed, r->sa.sp,
                r->sb.sp, r->spd, r->spd_lo, r->spd_hi, r->spd_changed);
    }
    if (fclose(tf)) {
        ab_errorf("compare: cannot write %s", path);
        return -1;
    }
    return 0;
}

/* --fail-above: 0 within, 1 above, 2 nothing to test. */
static int gate(const ab_compare_opts *o, double lmed, double smed, size_t ns)
{
    const char *metric = o->metric;
    int bad = 0;
    if ((!strcmp(metric, "speedup") || !strcmp(metric, "both")) && ns && smed > o->fail_above) bad = 1;
    if ((!strcmp(metric, "latency") || !strcmp(metric, "both")) && lmed > o->fail_above) bad = 1;
    if (!strcmp(metric, "speedup") && !ns) {
        ab_errorf("compare: --fail-above: no speedups to test");
        return 2;
    }
    if (bad) {
        printf("\nFAIL: median |log ratio| of %s above %g\n", metric, o->fail_above);
        return 1;
    }
    printf("\nok: median |log ratio| of %s within %g\n", metric, o->fail_above);
    return 0;
}

int ab_compare(const ab_compare_opts *o)
{
    ab_point *pa = NULL, *pb = NULL;
    size_t na = 0, nb = 0;
    ab_env ea, eb;
    memset(&ea, 0, sizeof ea);
    memset(&eb, 0, sizeof eb);
    char err[1024];
    int rc = 2;
    cmp_row *rows = NULL;
    double *tmp = NULL;
    if (ab_results_read(o->files[0], &pa, &na, &ea, err, sizeof err) ||
        ab_results_read(o->files[1], &pb, &nb, &eb, err, sizeof err)) {
        ab_errorf("compare: %s", err);
        goto done;
    }
    qsort(pa, na, sizeof *pa, key_cmp);
    qsort(pb, nb, sizeof *pb, key_cmp);
    rows = calloc(na + 1, sizeof *rows);
    tmp = malloc(sizeof(double) * (na + 1));
    if (!rows || !tmp) {
        ab_errorf("compare: out of memory");
        goto done;
    }
    size_t only_a, only_b, not_timed;
    size_t nr = match_rows(pa, na, pb, nb, o->noise, rows, &only_a, &only_b, &not_timed);
    printf("attnbench compare: B/A\n");
    env_line("A", &ea);
    env_line("B", &eb);
    printf("  %s = A, %s = B\n", o->files[0], o->files[1]);
    printf(
        "matched %zu timed points (%zu only in A, %zu only in B, %zu not timed or not ok in one of them)\n",
        nr, only_a, only_b, not_timed);
    if (!nr) {
        ab_errorf("compare: no timed, status-ok point in common: nothing to compare");
        goto done;
    }
    double lmed, smed;
    size_t ns;
    print_summary(rows, nr, o->noise, tmp, &lmed, &smed, &ns);
    if (!o->quiet) list_rows(rows, nr, o->all);
    if (o->tsv && write_tsv(o->tsv, rows, nr) != 0) goto done;
    rc = isnan(o->fail_above) ? 0 : gate(o, lmed, smed, ns);
done:
    free(rows);
    free(tmp);
    free(pa);
    free(pb);
    ab_env_free(&ea);
    ab_env_free(&eb);
    return rc;
}
