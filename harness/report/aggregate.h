/* aggregate.h — what `show` and `export` both compute from the points of a
 * results file: the orders of methods and base masks, medians that skip
 * NaN, the setting a point ran at, the speedup over dense (paired, or
 * matched on the workload) of a point and of a group, and the count of the
 * points per non-ok status. */
#ifndef AB_AGGREGATE_H
#define AB_AGGREGATE_H

#include <stddef.h>

#include "harness/store/point.h"

/* One point with the setting it ran at: the unit show's rows and export's
 * figures group. series and mask are export's (its curve and base mask
 * index); show leaves them 0. */
typedef struct ab_row {
    const ab_point *p;
    int series;
    int mask;
    int native;     /* target_density is NaN: the knob_value is the setting */
    double setting; /* target_density, or knob_value when native */
} ab_row;

/* The row of p (series and mask 0). */
ab_row ab_row_of(const ab_point *p);
/* 1 when two rows ran at the same setting (NaN settings equal). */
int ab_same_setting(const ab_row *x, const ab_row *y);

/* Numbers: order with NaN last; equality with NaN == NaN; qsort on
 * doubles (NaN last); the median of the non-NaN values of v[0..n) (sorts
 * them to the front of v), NaN when there are none. */
int ab_cmp_num(double a, double b);
int ab_same_num(double a, double b);
int ab_dbl_cmp(const void *a, const void *b);
double ab_median_of(double *v, size_t n);

/* out = the median of expr over rows[0..n) (expr reads the point p_; a NaN
 * value leaves the point out); tmp: n doubles. */
#define AB_ROWS_MEDIAN(out, rows, n, expr, tmp) \
    do {                                        \
        for (size_t q_ = 0; q_ < (n); q_++) {   \
            const ab_point *p_ = (rows)[q_].p;  \
            (tmp)[q_] = (expr);                 \
        }                                       \
        (out) = ab_median_of((tmp), (n));       \
    } while (0)

/* "dense" first, then by name. */
int ab_method_order(const char *a, const char *b);
/* Base masks: causal, full, then the others by name with numbers compared
 * as numbers (sliding:512 before sliding:4096). */
int ab_mask_order(const char *a, const char *b);

/* Speedup over dense. dense[0..nd) are the timed status-ok points of method
 * "dense", sorted by ab_dense_sort (matched on the workload, base mask
 * included). */
void ab_dense_sort(const ab_point **dense, size_t nd);
/* The speedup over dense of one point: paired (1 / rel_dense with its
 * interval, *paired = 1) when it has a paired ratio, else the median dense
 * total_ms of its workload / its total_ms (*paired = 0, no interval); NaN
 * without a timing or when neither is known. tmp: nd doubles. */
double ab_speedup_of(const ab_point *p, const ab_point *const *dense, size_t nd, double *tmp, double *lo,
                     double *hi, int *paired);
/* The speedup of a group of rows: the median of the points' speedups.
 * When every point with a speedup is paired, *paired = 1 and [*lo, *hi] are
 * the medians of their interval ends; else *paired = 0 and no interval.
 * Returns the number of points with a speedup. tmp, tmp2: n + 1 and nd
 * doubles. */
/* The dense time p is compared with: its paired dense median (dense_pair_ms)
 * when it has one, else the median total_ms of the "dense" points of its
 * workload (as ab_speedup_of); NaN when neither. tmp: nd doubles. */
double ab_dense_ms_of(const ab_point *p, const ab_point *const *dense, size_t nd, double *tmp);
size_t ab_group_speedup(const ab_row *rows, size_t n, const ab_point *const *dense, size_t nd, double *tmp,
                        double *tmp2, double *sp, double *lo, double *hi, int *paired);

/* Points per non-ok status, statuses in name order. */
#define AB_TALLY_MAX 32
typedef struct ab_tally {
    char status[AB_TALLY_MAX][17];
    size_t count[AB_TALLY_MAX];
    size_t n;     /* distinct statuses (more than AB_TALLY_MAX: the rest dropped) */
    size_t total; /* non-ok points counted */
} ab_tally;

/* Count a status (an ok one is not counted). */
void ab_tally_add(ab_tally *t, const char *status);
/* "timeout:2,crashed:1" into out ("" when none; stops before an entry
 * that does not fit). */
void ab_tally_list(const ab_tally *t, char *out, size_t len);

#endif
