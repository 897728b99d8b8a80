/* aggregate.c — the orders, medians, speedups and status counts that show
 * and export share (aggregate.h). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/report/aggregate.h"

ab_row ab_row_of(const ab_point *p)
{
    ab_row r = { p, 0, 0, isnan(p->target_density), 0 };
    r.setting = r.native ? p->knob_value : p->target_density;
    return r;
}

int ab_same_setting(const ab_row *x, const ab_row *y)
{
    return x->native == y->native && ab_same_num(x->setting, y->setting);
}

/* ---- numbers ---------------------------------------------------------- */

int ab_cmp_num(double a, double b)
{
    if (isnan(a) || isnan(b)) return isnan(a) - isnan(b); /* NaN last */
    return (a > b) - (a < b);
}

int ab_same_num(double a, double b)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b;
}

int ab_dbl_cmp(const void *a, const void *b) { return ab_cmp_num(*(const double *)a, *(const double *)b); }

double ab_median_of(double *v, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(v[i])) v[m++] = v[i];
    if (m == 0) return NAN;
    qsort(v, m, sizeof *v, ab_dbl_cmp);
    return (m % 2) ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
}

/* ---- orders ----------------------------------------------------------- */

int ab_method_order(const char *a, const char *b)
{
    int da = strcmp(a, "dense") == 0, db = strcmp(b, "dense") == 0;
    if (da != db) return db - da;
    return strcmp(a, b);
}

int ab_mask_order(const char *a0, const char *b0)
{
    const char *a = a0, *b = b0;
    int ra = strcmp(a, "causal") == 0 ? 0 : strcmp(a, "full") == 0 ? 1 : 2;
    int rb = strcmp(b, "causal") == 0 ? 0 : strcmp(b, "full") == 0 ? 1 : 2;
    if (ra != rb) return ra - rb;
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0') a++;
            while (*b == '0') b++;
            size_t la = strspn(a, "0123456789"), lb = strspn(b, "0123456789");
            if (la != lb) return la < lb ? -1 : 1;
            int o = strncmp(a, b, la);
            if (o) return o;
            a += la;
            b += lb;
            continue;
        }
        if (*a != *b) return (unsigned char)*a - (unsigned char)*b;
        a++;
        b++;
    }
    if (*a != *b) return (unsigned char)*a - (unsigned char)*b;
    return strcmp(a0, b0); /* "x:08" vs "x:8": still a fixed order */
}

/* ---- speedup over dense ------------------------------------------------ */

/* The workload a dense point is matched on (a bf16 point on fp32 dense). */
static int match_cmp(const ab_point *x, const ab_point *y)
{
    return ab_point_work_cmp(x, y, AB_WORK_MASK | AB_WORK_BASELINE);
}

static int ptr_match_cmp(const void *a, const void *b)
{
    const ab_point *const *x = a, *const *y = b;
    return match_cmp(*x, *y);
}

void ab_dense_sort(const ab_point **dense, size_t nd) { qsort(dense, nd, sizeof *dense, ptr_match_cmp); }

/* Median dense total_ms for p's workload, NaN when there is none. */
static double dense_ms_for(const ab_point *p, const ab_point *const *dense, size_t nd, double *tmp)
{
    size_t lo = 0, hi = nd;
    while (lo < hi) { /* first >= p */
        size_t mid = (lo + hi) / 2;
        if (match_cmp(dense[mid], p) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t m = 0;
    for (size_t k = lo; k < nd && match_cmp(dense[k], p) == 0; k++) tmp[m++] = dense[k]->total_ms;
    return ab_median_of(tmp, m);
}

double ab_dense_ms_of(const ab_point *p, const ab_point *const *dense, size_t nd, double *tmp)
{
    if (isfinite(p->dense_pair_ms) && p->dense_pair_ms > 0) return p->dense_pair_ms;
    return nd ? dense_ms_for(p, dense, nd, tmp) : NAN;
}

double ab_speedup_of(const ab_point *p, const ab_point *const *dense, size_t nd, double *tmp, double *lo,
                     double *hi, int *paired)
{
    double sp;
    *paired = ab_point_paired_speedup(p, &sp, lo, hi);
    if (*paired) return sp;
    if (!ab_point_timed(p) || nd == 0) return NAN;
    double dms = dense_ms_for(p, dense, nd, tmp);
    return isnan(dms) ? NAN : dms / p->total_ms;
}

size_t ab_group_speedup(const ab_row *rows, size_t n, const ab_point *const *dense, size_t nd, double *tmp,
                        double *tmp2, double *sp, double *lo, double *hi, int *paired)
{
    size_t m = 0, np = 0;
    double l, h, s;
    int pr;
    for (size_t q = 0; q < n; q++) {
        double v = ab_speedup_of(rows[q].p, dense, nd, tmp2, &l, &h, &pr);
        if (isnan(v)) continue;
        tmp[m++] = v;
        np += pr != 0;
    }
    *sp = ab_median_of(tmp, m);
    *paired = m > 0 && np == m;
    *lo = *hi = NAN;
    if (!*paired) return m;
    for (int end = 0; end < 2; end++) { /* the medians of the interval ends */
        size_t k = 0;
        for (size_t q = 0; q < n; q++)
            if (ab_point_paired_speedup(rows[q].p, &s, &l, &h)) tmp[k++] = end ? h : l;
        *(end ? hi : lo) = ab_median_of(tmp, k);
    }
    return m;
}

/* ---- statuses --------------------------------------------------------- */

void ab_tally_add(ab_tally *t, const char *status)
{
    if (ab_status_is_ok(status)) return;
    t->total++;
    size_t j = 0; /* the first entry not before status */
    while (j < t->n && strncmp(t->status[j], status, 16) < 0) j++;
    if (j < t->n && strncmp(t->status[j], status, 16) == 0) {
        t->count[j]++;
        return;
    }
    if (t->n == AB_TALLY_MAX) return;
    memmove(t->status[j + 1], t->status[j], (t->n - j) * sizeof t->status[0]);
    memmove(&t->count[j + 1], &t->count[j], (t->n - j) * sizeof t->count[0]);
    snprintf(t->status[j], sizeof t->status[j], "%.16s", status);
    t->count[j] = 1;
    t->n++;
}

void ab_tally_list(const ab_tally *t, char *out, size_t len)
{
    size_t used = 0;
    if (len) out[0] = '\0';
    for (size_t k = 0; k < t->n; k++) {
        int w = snprintf(out + used, len - used, "%s%.15s:%zu", used ? "," : "", t->status[k], t->count[k]);
        if (w < 0 || (size_t)w >= len - used) {
            out[used] = '\0';
            break;
        }
        used += (size_t)w;
    }
}
