/* decode.h — a decode point's calls (docs/decode.md): the views of one
 * step that a method sees, one timed call (prepare, then every step's
 * dselect and drun), its density for calibration, and the scored call. */
#ifndef AB_DECODE_H
#define AB_DECODE_H
#include "attnbench.h"
#include "runtime/plugin.h"
#include "harness/engine/grid.h"
#include "harness/engine/problem.h"
#include "harness/store/point.h"

typedef struct ab_dec_ctx {
    const base_pt *b;
    const arena_hdr *a;
    int threads;
    int block_k; /* the layouts' page (the job's block_k) */
    int cold;    /* evict the CPU caches before every timed step ([timing] decode_cold) */
} ab_dec_ctx;

/* Bytes the eviction before a cold step streams through: twice the
 * last-level cache (sysfs), at least 64 MiB, at most 1 GiB. */
size_t ab_dec_flush_bytes(void);

/* The shape init() of method m sees for this problem (phase AB_DECODE; the
 * stack folded into heads unless m->layered). */
ab_shape ab_dec_shape(const ab_dec_ctx *x, const ab_method *m);
/* Floats of one call's output: steps x layers x batch x heads x d. */
size_t ab_dec_out_floats(const ab_dec_ctx *x);
/* One call: prepare() on the cache of N keys, then the S steps (dselect,
 * finalize, drun into out (steps, L*B*H, d)); select and run times per
 * step (ms, summed over the steps, divided by S) added to *sel and *run,
 * prepare's to *prep. */
int ab_dec_call(const ab_dec_ctx *x, ab_instance *in, float *out, double *sel, double *run, double *prep);
/* Mean layout density over the steps (prepare and dselect only). */
int ab_dec_density(const ab_dec_ctx *x, ab_instance *in, double *density);
/* The scored call: one call whose every step is scored against the
 * reference (recalls, errors, density, K/V bytes per step, selector cost,
 * per-layer recall) and whose outputs are scored for accuracy; into p.
 * Returns AB_E* (p's status is the caller's), 1 on NaN or Inf. */
int ab_dec_scored_call(const ab_dec_ctx *x, ab_instance *in, float *out, ab_point *p);
#endif
