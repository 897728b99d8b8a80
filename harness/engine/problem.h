/* problem.h — one problem of the sweep in memory shared by the processes
 * that use it: the data child generates Q, K, V and the task's answer into
 * the arena and builds the fp64 reference on the scored rows; the point
 * children read them. */
#ifndef AB_PROBLEM_H
#define AB_PROBLEM_H
#include <stddef.h>
#include "attnbench.h"
#include "harness/engine/config.h"
#include "harness/engine/grid.h"
#include "harness/engine/metrics.h"

/* The arena's header; what it allocates follows it. */
typedef struct arena_hdr {
    size_t size, used;
    int status; /* data child: 0 ok, else AB_E* */
    char msg[256];
    float *q, *k, *v;
    float *hq, *hk, *hv; /* the held-out draw (base_pt.heldout), else NULL */
    uint64_t hseed;      /* its seed, ab_heldout_seed(seed) */
    ab_answer ans;
    ab_refset ref;
} arena_hdr;

/* A shared anonymous mapping large enough for problem b (its size in
 * *size); NULL with errno when it cannot be mapped. */
arena_hdr *ab_arena_map(const base_pt *b, const ab_config *c, size_t *size);
void ab_arena_unmap(arena_hdr *a, size_t size);

/* In the data child: generate the problem into the arena and build the
 * reference (a->status and a->msg say what failed); when b->heldout, also
 * its held-out draw (left NULL if it equals the scored draw: a task that
 * ignores its seed); with save_dir, also write its tensors there as
 * `problem`. */
void data_child(arena_hdr *a, const base_pt *b, const ab_config *c, int threads, const char *save_dir,
                const char *problem);

/* The held-out draw of the arena's problem as a problem of shape s
 * (*out filled, returned), or NULL when the arena has none. */
const ab_problem *ab_arena_heldout(const arena_hdr *a, ab_shape s, int threads, ab_problem *out);

/* The problem's name after what defines it (--save-tensors file names). */
void ab_problem_name(const base_pt *b, char *buf, size_t n);
#endif
