/* plant.h — helpers shared by the planted-answer tasks (TASKS.md §3):
 * log-partitions of a query row over the haystack, orthonormal key
 * directions in the task's free band, the answer codebook and answer arrays.
 * The planting rule follows TASKS.md ("Signal strength") and the needle task
 * (datasets/task_needle.c); the tasks follow RULER (Hsieh et al. 2024,
 * arXiv:2404.06654) and the HAX joint-recall task (2025).
 */
#ifndef AB_PLANT_H
#define AB_PLANT_H

#include <stddef.h>

#include "datasets/rng.h"
#include "datasets/task.h"

/* Dot product of two float vectors in double. */
double ab_plant_dot(const float *a /* [d] */, const float *b /* [d] */, int d);

/* Log-sum-exp over keys j in [j0, j1) of q.k_j / sqrt(d), skipping keys with
 * skip[j] != 0 (skip may be NULL). kh points at the head's keys
 * (seq_len, head_dim). Returns -INFINITY when no key is summed. */
double ab_plant_lse(const float *qr /* [d] */, const float *kh, int d, int j0,
                    int j1, const unsigned char *skip /* [seq_len] or NULL */);

/* n orthonormal vectors living in the band [b0, b0 + nb) of a d-dimensional
 * space (n <= nb): Gram-Schmidt on seeded normals drawn at counters
 * (head, row0 + i, purpose). out: (n, d), zero outside the band. */
int ab_plant_orthonormal(ab_rng r, uint32_t head, uint32_t row0,
                         uint32_t purpose, int d, int b0, int nb, int n,
                         double *out /* [n][d] */);

/* Allocate the answer arrays for n queries (group too when with_group) and a
 * codebook of C codes: random unit vectors scaled by sqrt(d), shared by all
 * heads, the same construction as the needle task. Returns AB_OK or
 * AB_ENOMEM (the answer is then freed). */
int ab_plant_answer_alloc(ab_answer *a, ab_rng r, int n, int with_group, int C,
                          int d, double decode_floor);

/* The haystack log-partition floor of TASKS.md: ln N + tau^2 / 2. */
double ab_plant_lz_floor(int n, double temperature);

#endif
