/* measure.h — one point, measured in its own child process (docs/timing.md):
 * calibrate the density knob, one scored call against the fp64 reference,
 * then a timing round of samples paired with dense; and the parent's side:
 * a point's identity, merging rounds, the figures from the samples. */
#ifndef AB_MEASURE_H
#define AB_MEASURE_H
#include "attnbench.h"
#include "runtime/layout.h"
#include "runtime/plugin.h"
#include "harness/engine/config.h"
#include "harness/engine/grid.h"
#include "harness/engine/problem.h"
#include "harness/store/point.h"

/* What a point's child measures. */
typedef struct point_ctx {
    const ab_config *c;
    const base_pt *b;
    const job *j;
    const arena_hdr *a;
    int threads;
    double cached_knob;   /* NaN: none */
    const char *save_dir; /* --save-tensors: OUT.h5.tensors, else NULL */
    const char *problem;  /* name of this problem's tensor file */
    double mem_limit;     /* RLIMIT_AS of the point's child in bytes; 0: none */
    int round;            /* 0: calibrate, score and time; > 0: time again with `knob` */
    double knob;          /* round > 0: the knob value round 0 settled on (NaN: none) */
} point_ctx;

/* In the point's child: measure x into p (filled by fill_point_ids); the
 * outcome is p's status. */
void measure_point(const point_ctx *x, ab_point *p);
/* p cleared to the identity of job j on problem b, every figure NaN. */
void fill_point_ids(ab_point *p, const base_pt *b, const job *j, int threads);
/* Add a later round's samples (child result q) to the point p. */
void ab_add_round(ab_point *p, const ab_point *q);
/* The point's figures from its samples (every round). */
void ab_finish_timing(ab_point *p, const ab_config *c);
/* The latency fields of p (select_ms, run_ms, total_ms and the spread of
 * total: min, p10, p90, cv) from n samples of each part; CPU and GPU points. */
void ab_point_latency(ab_point *p, const double *sel, const double *run, const double *tot, int n);

/* One call: a fresh layout, select() (+ finalize) and run(); their times in
 * ms added to *sel and *run. */
int ab_one_call(ab_instance *in, const ab_problem *pb, int block_q, int block_k, ab_layout *l, float *out,
                double *sel, double *run);
/* Bind this process's OpenMP threads, one per allowed CPU (docs/timing.md). */
void ab_bind_threads(int threads);
/* Keep freed memory in the process for the timed calls (measure.c). */
void ab_malloc_keep(void);
#endif
