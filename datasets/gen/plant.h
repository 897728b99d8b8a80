/* plant.h — helpers shared by the planted-answer tasks (docs/spec/TASKS.md §3):
 * log-partitions of a query row over the haystack, orthonormal key
 * directions in the task's free band, the answer codebook and answer arrays.
 * The planting rule follows docs/spec/TASKS.md ("Signal strength") and the needle task
 * (datasets/tasks/needle.c); where the base mask lets a planted key sit is
 * worked out here too (ab_plant_window). The tasks follow RULER (Hsieh et
 * al. 2024, arXiv:2404.06654) and the HAX joint-recall task (2025).
 */
#ifndef AB_PLANT_H
#define AB_PLANT_H

#include <stddef.h>

#include "datasets/gen/rng.h"
#include "attnbench.h"

/* Dot product of two float vectors in double. */
double ab_plant_dot(const float *a /* [d] */, const float *b /* [d] */, int d);

/* Log-sum-exp over keys j in [j0, j1) of q.k_j / sqrt(d), skipping keys with
 * skip[j] != 0 (skip may be NULL). kh points at the head's keys
 * (seq_len, head_dim). Returns -INFINITY when no key is summed. */
double ab_plant_lse(const float *qr /* [d] */, const float *kh, int d, int j0, int j1,
                    const unsigned char *skip /* [seq_len] or NULL */);

/* n orthonormal vectors living in the band [b0, b0 + nb) of a d-dimensional
 * space (n <= nb): Gram-Schmidt on seeded normals drawn at counters
 * (head, row0 + i, purpose). out: (n, d), zero outside the band. */
int ab_plant_orthonormal(ab_rng r, uint32_t head, uint32_t row0, uint32_t purpose, int d, int b0, int nb,
                         int n, double *out /* [n][d] */);

/* Allocate the answer arrays for n queries (group too when with_group) and a
 * codebook of C codes: random unit vectors scaled by sqrt(d), shared by all
 * heads, the same construction as the needle task. Returns AB_OK or
 * AB_ENOMEM (the answer is then freed). */
int ab_plant_answer_alloc(ab_answer *a, ab_rng r, int n, int with_group, int C, int d, double decode_floor);

/* The haystack log-partition floor of docs/spec/TASKS.md: ln n + tau^2 / 2, with n
 * the context length (ab_plant_context). */
double ab_plant_lz_floor(int n, double temperature);

/* ---- base masks (docs/spec/TASKS.md §3, "Base masks") -------------------------------
 * A planted key must lie where every query row that retrieves it may see it
 * under the shape's base mask (ab_shape.mask; NULL: plain causal / full).
 * The task's query rows are [q0, q1); a planted key is never one of them.
 * ab_plant_window picks the longest run [a, b) of consecutive query rows
 * (the latest on ties) whose common visible keys outside [q0, q1) number at
 * least `need`, and lists those keys ascending: a task places by depth
 * within that list, so depth stays the relative position in the context
 * the query rows see. Query rows outside the run are no valid trial (their
 * queries are left as haystack and they are not in the answer). For an
 * interval mask the common keys of a run are the intersection of its row
 * spans; for any other mask the run is chosen on spans and its keys then
 * filtered by allows(), so it may come back empty. Under plain causal or
 * full the run is every query row and the keys are [0, q0) (the task's
 * query rows being the last rows): placements are those of before masks. */
typedef struct ab_plant_window {
    int a, b;  /* valid query rows [a, b); a == b: none */
    int n;     /* visible keys (0 when no run has `need` of them) */
    int *keys; /* [n] ascending positions */
} ab_plant_window;

/* The mask of the input's shape (by value, see ab_shape_mask). AB_EINVAL
 * with the reason (prefixed by `task`) when it is bound to another length. */
int ab_plant_mask(const ab_task_input *in, const char *task, ab_mask *m);

/* Fill w (zeroed first). Returns AB_OK (check w->n) or AB_ENOMEM. */
int ab_plant_window_find(const ab_mask *m, int q0, int q1, int need, ab_plant_window *w);
void ab_plant_window_free(ab_plant_window *w);

/* The context length of rows [a, b): the most keys one of them may see.
 * N for the last row under causal or full. */
int ab_plant_context(const ab_mask *m, int a, int b);

/* ab_plant_lse over exactly the keys query row `row` may see under m (its
 * span, tested element by element for a non-interval mask). */
double ab_plant_lse_row(const float *qr /* [d] */, const float *kh, int d, const ab_mask *m, int row,
                        const unsigned char *skip /* [seq_len] or NULL */);

/* One unsupported-trial reason: "TASK: under mask SPEC no run of the query
 * rows [q0, q1) sees NEED common keys before them (WHAT)". Returns
 * AB_EUNSUPPORTED. */
int ab_plant_no_window(const ab_task_input *in, const char *task, const ab_mask *m, int q0, int q1, int need,
                       const char *what);

#endif
