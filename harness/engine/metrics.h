/* metrics.h — quality of a method's output against the exact fp64
 * reference, on a set of scored rows (docs/spec/TASKS.md §4). Nothing is N×N: the
 * reference is computed once per problem for the scored rows only, and each
 * method is scored by walking only the keys its layout keeps. */
#ifndef AB_METRICS_H
#define AB_METRICS_H

#include <stdint.h>
#include "attnbench.h"

/* Reference data for one problem. Arrays live wherever the caller's
 * allocator put them (the sweep uses a shared mapping). */
typedef struct ab_refset {
    int heads, d, n_rows, topk; /* topk: entries per row in topk_idx */
    int *rows;                  /* [n_rows] scored query rows (sorted, same for every head) */
    double *out;                /* (heads, n_rows, d) fp64 reference output */
    double *rmax;               /* (heads, n_rows) max logit over allowed keys */
    double *rsum;               /* (heads, n_rows) sum exp(logit - rmax) */
    int32_t *topk_idx;          /* (heads, n_rows, topk) dense top-k keys; -1 pads */
} ab_refset;

typedef void *(*ab_alloc_fn)(void *ctx, size_t bytes);

/* Choose scored rows: all rows when N <= exact_max_n, else `must` rows
 * (task query rows) plus `sample` rows drawn uniformly without replacement
 * with the seeded generator. Returns the count; rows (caller-allocated,
 * capacity N) sorted and unique. */
int ab_choose_rows(int n, int exact_max_n, const int *must, int n_must, int sample, uint64_t seed, int *rows);
/* Build the reference: O(heads * n_rows * N * d). Uses OpenMP over rows. */
int ab_refset_build(ab_refset *r, const ab_problem *pb, const int *rows, int n_rows, int topk,
                    ab_alloc_fn alloc, void *alloc_ctx);

/* The reference of a decode problem (docs/decode.md): dp is the whole stack
 * folded (layers 1, heads L*B*H, kv_heads L*B*kv, cap N + steps), q its steps'
 * queries (steps, heads, d); rows are the steps (rows[s] = n + s, the key
 * count before the step), out (heads, steps, d), the top-k over the step's
 * n + s + 1 keys. */
int ab_refset_build_decode(ab_refset *r, const ab_decode *dp, int n, int steps, int topk, ab_alloc_fn alloc,
                           void *alloc_ctx);

#define AB_SCORE_HEADS 64
typedef struct ab_scores {
    /* CUSTOM layouts: the effective recall (ab_score_in) when the method
     * gives its implied weights, else NaN */
    double recall_mass;
    double recall_topk;
    double rel_l2; /* mean over scored rows of |o - ô| / |o| */
    double max_abs;
    int rows;                         /* (head, row) pairs scored */
    int nonfinite;                    /* 1 if the method's output has NaN/Inf on a scored row */
    int effective;                    /* 1: the recalls are effective recalls (CUSTOM, weights()) */
    double head_mass[AB_SCORE_HEADS]; /* mass recall of each of the first 64 heads (NaN as above) */
} ab_scores;

int ab_score(const ab_refset *r, const ab_problem *pb, const ab_layout *l, const float *out, ab_scores *s);
/* The same, given the method instance that ran (NULL: none): a CUSTOM
 * layout is then scored by effective recall when the method has weights()
 * (ABI 6): per scored row, the exact attention mass on the allowed keys its
 * implied weights rank highest, max(1, round(density x allowed)) of them,
 * and the share of the dense top-k keys among them (docs/tasks.md). */
struct ab_instance;
int ab_score_in(const ab_refset *r, const ab_problem *pb, const ab_layout *l, const struct ab_instance *in,
                const float *out, ab_scores *s);

/* Wilson score interval (95%) for k successes out of n (Wilson 1927,
 * JASA 22:209); k and n are counts, as doubles so pooled counts fit; NaN
 * when n <= 0. */
void ab_wilson(double k, double n, double *lo, double *hi);

/* The task's answers decoded from out (heads, seq_len, head_dim) and
 * scored: *acc the fraction right (NaN with no trials), [*lo, *hi] its
 * Wilson interval, *trials the answers (or answer groups) counted. */
void ab_accuracy(const ab_answer *ans, const float *out, int seq_len, double *acc, double *lo, double *hi,
                 int32_t *trials);
/* Score out for one point: achieved density and layout kind from l, the
 * scores against r, and the accuracy on ans (when it has answers) into p.
 * Returns 1 when out has NaN or Inf on the scored rows, else 0. */
struct ab_point;
int ab_score_point(const ab_refset *r, const ab_problem *pb, const ab_layout *l, const struct ab_instance *in,
                   const float *out, const ab_answer *ans, struct ab_point *p);
#endif
