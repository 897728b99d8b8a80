/* sweep.h — run a plan (grid.h): generate each problem once and measure
 * every point on it in an isolated child process with a time limit,
 * appending each point to the store as soon as all its rounds are done.
 * Prints nothing: progress goes to a reporter, failures to stderr. Also the
 * estimate of a plan's wall time (`run --dry-run`). */
#ifndef AB_SWEEP_H
#define AB_SWEEP_H
#include "attnbench.h"
#include "harness/engine/config.h"
#include "harness/engine/grid.h"
#include "harness/store/point.h"
#include "harness/store/store.h"

typedef struct ab_sweep_opts {
    const char *out;   /* the results file (HDF5) */
    const ab_env *env; /* the run's environment, recorded in it (sysinfo.h) */
    int resume;        /* keep the points already in `out` and run the rest; else replace it */
    int threads;       /* OpenMP/BLAS threads of every child */
    int save_tensors;  /* also write the tensors under OUT.tensors (tensors.h) */
} ab_sweep_opts;

/* Where the sweep stands, for a reporter. */
typedef struct ab_sweep_progress {
    int todo, skipped;      /* points to run, points already stored (resume) */
    int done;               /* points stored so far */
    long units, units_done; /* child runs expected in all (`rounds` per timed CPU point, 1 otherwise), done */
    double elapsed_s;       /* since the first point */
    int round;              /* of the last child run, 0-based */
    const base_pt *b;       /* the point's problem and job (NULL in start) */
    const job *j;
    const ab_point *p; /* the child's result (ran) or the stored point (stored) */
} ab_sweep_progress;

/* Callbacks, each optional. */
typedef struct ab_sweep_reporter {
    void *ctx;
    void (*start)(void *ctx, const ab_sweep_progress *s);  /* before the first point */
    void (*ran)(void *ctx, const ab_sweep_progress *s);    /* after each child run of a point */
    void (*stored)(void *ctx, const ab_sweep_progress *s); /* after each point is appended */
    void (*end)(void *ctx, const ab_sweep_progress *s);    /* after the last, before the store closes */
} ab_sweep_reporter;

typedef struct ab_sweep_result {
    int done, failed; /* points stored; those with a failure status (not unsupported / calib_failed) */
    int store_failed; /* an append (the sweep stopped) or the close failed (reported with ab_errorf) */
    int signal;       /* SIGINT / SIGTERM stopped it (the signal), else 0 */
    double elapsed_s;
} ab_sweep_result;

/* Open the store, run the plan's points it does not hold yet, close it.
 * SIGINT and SIGTERM stop the sweep between children (the problem in
 * progress is dropped; --resume reruns it). Returns -1 with err when the
 * store or the tensor folder cannot be made (nothing ran), else 0 with
 * the outcome in *res. */
int ab_sweep_run(const ab_config *c, const ab_plan *p, const ab_sweep_opts *o, const ab_sweep_reporter *rep,
                 ab_sweep_result *res, char *err, size_t errlen);

/* ---- the estimate: every method timed once on the plan's largest problem
 * (shrunk to N <= AB_PROBE_N), a cost model for the whole plan ---------- */
#define AB_PROBE_N   4096
#define AB_PROBE_MAX 256
typedef struct ab_estimate {
    /* the probe (ab_estimate_plan) */
    base_pt probe; /* the largest problem, shrunk */
    int big;       /* its index in the plan */
    const ab_method *ms[AB_PROBE_MAX];
    int nm;
    /* the figures (ab_estimate_run) */
    double total_s, data_s, cal_s, score_s, time_s; /* wall time and its parts */
    double big_share;                               /* of total: the points at the largest N */
    double dense_big_ms;                            /* dense at the largest N, per call */
    int big_n;
    char why[320]; /* not available: why */
} ab_estimate;

/* Choose the probe problem and the methods; 0 when the plan has no points
 * (nothing to estimate). */
int ab_estimate_plan(const ab_plan *p, ab_estimate *e);
/* Time the probe in child processes and fill the figures; -1 with e->why
 * when no estimate is available. */
int ab_estimate_run(const ab_config *c, const ab_plan *p, int threads, ab_estimate *e);
#endif
