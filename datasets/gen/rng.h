/* rng.h — counter-based randomness for the synthetic tasks (docs/spec/TASKS.md §1).
 *
 * Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3", SC 2011; the Random123 library). Key = (seed low word, seed high word
 * mixed with a task stream id); counter = (head, row, purpose, lane block).
 * Every number is a pure function of (seed, stream, head, row, purpose,
 * lane): generation order and OpenMP thread count never change a bit.
 * There is no generator state: an ab_rng is an immutable value.
 */
#ifndef AB_RNG_H
#define AB_RNG_H

#include <stdint.h>

/* Which (seed, task) stream numbers come from. Pass by value; never mutated. */
typedef struct ab_rng {
    uint64_t seed;
    uint32_t stream; /* task id, e.g. ab_rng_stream_id("needle") */
} ab_rng;

/* Purposes (third counter word). Each distinct use of randomness has its own
 * purpose so that, e.g., the noise of Q never shares numbers with that of K.
 * Task-specific purposes start at AB_PURPOSE_TASK. */
enum {
    AB_PURPOSE_NOISE_Q = 1, /* haystack noise band of q_i       (head, row) */
    AB_PURPOSE_NOISE_K,     /* haystack noise band of k_j       (head, row) */
    AB_PURPOSE_VALUE,       /* haystack values v_j              (head, row) */
    AB_PURPOSE_VERTICAL,    /* is key j a vertical stripe?      (head, row) */
    AB_PURPOSE_TOPIC_CUT,   /* does a topic segment start at i? (-, row)    */
    AB_PURPOSE_TOPIC_DIR,   /* unit direction of segment t      (head, t)   */
    AB_PURPOSE_CODEBOOK,    /* answer code c                    (-, c)      */
    AB_PURPOSE_SAMPLE_ROWS, /* scored-row sampling              (head, draw)*/
    AB_PURPOSE_TASK = 64    /* first purpose free for tasks */
};

/* Counter word used where a quantity is shared by all heads. */
#define AB_RNG_ALL_HEADS 0xFFFFFFFFu

/* 32-bit FNV-1a of a name: the stream id of a task. */
uint32_t ab_rng_stream_id(const char *name);

/* One Philox4x32-10 block: four raw 32-bit words. */
void ab_rng_u32x4(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, uint32_t lane, uint32_t out[4]);

/* Four uniforms in the open interval (0, 1), 32-bit resolution. */
void ab_rng_uniform4(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, uint32_t lane, double u[4]);

/* One uniform in [0, 1) with 53-bit resolution (lane block `lane`). */
double ab_rng_uniform53(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, uint32_t lane);

/* Four standard normals (Box-Muller on two pairs of uniforms, in double). */
void ab_rng_normal4(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, uint32_t lane, double z[4]);

/* n standard normals for one (head, row, purpose): element m comes from lane
 * block m/4, so a prefix of a longer draw equals a shorter draw. */
void ab_rng_normals(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, int n, double *out /* [n] */);

/* Same, each value scaled by `scale` in double and rounded once to float. */
void ab_rng_normals_f(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, int n, double scale,
                      float *out /* [n] */);

/* A uniformly random unit vector living in the band [b0, b0 + nb) of a
 * dim-dimensional space: out[0..dim) is zero outside the band. */
void ab_rng_unit_band(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, int dim, int b0, int nb,
                      double *out /* [dim] */);

/* Uniform integer in [0, n) for n >= 1 (53-bit uniform, negligible bias). */
int64_t ab_rng_below(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, int64_t n);

/* Sample k distinct rows of [0, n) uniformly without replacement (Floyd's
 * algorithm; draw t uses counter (head, t, purpose, 0)) and write them sorted
 * ascending to out[k]. Returns AB_OK, AB_EINVAL (k < 0, n < 0, k > n) or
 * AB_ENOMEM. */
int ab_rng_sample_rows(ab_rng r, uint32_t head, uint32_t purpose, int n, int k, int *out /* [k] */);

#endif
