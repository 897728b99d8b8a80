/* haystack.h — the synthetic background attention layer (docs/spec/TASKS.md §2).
 *
 * Q and K are sums of components, each in its own band of dimensions, so each
 * component's effect on the logits s_ij = q_i.k_j/sqrt(d) is known in closed
 * form:
 *   sinks     attention sinks on the first S keys (StreamingLLM, Xiao et al.
 *             2023, arXiv:2309.17453)
 *   vertical  a seeded set of keys every query attends to (MInference, Jiang
 *             et al. 2024, arXiv:2407.02490, "vertical" pattern)
 *   local     a rotary code, peak at i = j decaying with distance, like RoPE's
 *             long-range decay (Su et al., RoFormer, arXiv:2104.09864)
 *   slash     the same rotary code shifted by fixed offsets: lines j = i - o
 *             (MInference's "slash" pattern)
 *   topics    geometric-length segments sharing a random direction
 *   noise     Gaussian, logit spread temperature tau
 *   free      a band left zero for the task's planted keys (needle band)
 * V is N(0, 1) in every dimension. Dimensions are allotted in this order:
 * d = 64 gives 1/1/16/16/8/22 (noise shrinks by the free band).
 *
 * A task includes AB_HAYSTACK_PARAMS first in its own param list, so the
 * knobs are `[task.NAME]` config keys of every task.
 */
#ifndef AB_HAYSTACK_H
#define AB_HAYSTACK_H

#include <stddef.h>

#include "attnbench.h"
#include "datasets/gen/rng.h"

typedef struct ab_haystack_cfg {
    double temperature;     /* tau: noise logits ~ N(0, tau^2) */
    double local_logit;     /* local code peak logit at i = j */
    double local_base;      /* rotary base b: omega_m = b^(-m/M) */
    int sinks;              /* S: number of sink keys */
    double sink_logit;      /* logit added on sink keys */
    double vertical_per_1k; /* expected vertical keys per 1000 tokens */
    double vertical_logit;  /* logit added on vertical keys */
    int slash_offset1;      /* first slash offset o1 (0 = off) */
    int slash_offset2;      /* second slash offset o2 (0 = off) */
    double slash_logit;     /* peak logit on j = i - o */
    double topic_len;       /* mean segment length L (geometric) */
    double topic_logit;     /* logit added within a segment */
    int free_dims;          /* trailing dims left zero in Q and K (task band);
                               not a config key: the task sets it */
} ab_haystack_cfg;

/* The bands: dimension indices into a head_dim vector. */
typedef struct ab_haystack_bands {
    int d;
    int sink;            /* one dimension */
    int vertical;        /* one dimension */
    int local0, n_local; /* even width: n_local/2 frequencies */
    int slash0, n_slash; /* even width */
    int topic0, n_topic;
    int noise0, n_noise;
    int free0, n_free; /* free0 + n_free == d */
} ab_haystack_bands;

/* The haystack knobs as an ab_param array fragment (12 entries, no NULL
 * terminator); a task puts it first in its params and reads them with
 * ab_haystack_cfg_from_params(p, 0, &cfg). */
#define AB_HAYSTACK_NPARAMS 12
#define AB_HAYSTACK_PARAMS                                                          \
    { "temperature", 1.0, 0.0, 8.0, 0, "noise logit spread tau (nats)" },           \
        { "local_logit", 4.0, 0.0, 30.0, 0, "local (rotary) peak logit at i=j" },   \
        { "local_base", 10000.0, 2.0, 1e9, 0, "rotary base of local/slash codes" }, \
        { "sinks", 4, 0, 1048576, 1, "number of sink keys S (StreamingLLM)" },      \
        { "sink_logit", 5.0, 0.0, 30.0, 0, "logit added on the S sink keys" },      \
        { "vertical_per_1k", 2.0, 0.0, 1000.0, 0, "vertical keys per 1K tokens" },  \
        { "vertical_logit", 3.0, 0.0, 30.0, 0, "logit added on vertical keys" },    \
        { "slash_offset1", 256, 0, 1073741824, 1, "slash offset o1 (0 = off)" },    \
        { "slash_offset2", 1024, 0, 1073741824, 1, "slash offset o2 (0 = off)" },   \
        { "slash_logit", 3.0, 0.0, 30.0, 0, "peak logit on the lines j = i - o" },  \
        { "topic_len", 512.0, 1.0, 1e9, 0, "mean topic segment length L" },         \
    {                                                                               \
        "topic_logit", 2.0, 0.0, 30.0, 0, "logit added within a topic segment"      \
    }

/* Fill c from p->v[first .. first + AB_HAYSTACK_NPARAMS) (free_dims = 0).
 * Returns AB_OK or AB_EINVAL when p holds too few values. */
int ab_haystack_cfg_from_params(const ab_params *p, int first, ab_haystack_cfg *c);

/* The default knobs (the defaults of AB_HAYSTACK_PARAMS, free_dims = 0). */
void ab_haystack_cfg_default(ab_haystack_cfg *c);

/* Allot the bands for head_dim d with free_dims trailing free dimensions.
 * d >= 16 is supported; bands shrink for small d (local/slash, then topics).
 * Returns AB_OK, or AB_EUNSUPPORTED / AB_EINVAL with the reason in why. */
int ab_haystack_bands_for(int d, int free_dims, ab_haystack_bands *b, char *why, size_t whylen);

/* Check knobs and shape; the reason goes to why (may be NULL). Returns AB_OK,
 * AB_EINVAL (bad knob/shape) or AB_EUNSUPPORTED (head_dim too small). */
int ab_haystack_check(const ab_haystack_cfg *c, const ab_shape *s, char *why, size_t whylen);

/* Generate q, k, v (heads, seq_len, head_dim). O(H N d), OpenMP over rows,
 * bit-identical for any thread count. The free band of q and k is zero.
 * Returns AB_OK, AB_EINVAL, AB_EUNSUPPORTED or AB_ENOMEM. */
int ab_haystack_generate(const ab_haystack_cfg *c, const ab_shape *s, ab_rng r, float *q, float *k, float *v);

/* One row alone (equal to the bulk output): q_row, k_row, v_row [head_dim].
 * O(row) for the topic scan plus O(d). */
int ab_haystack_row(const ab_haystack_cfg *c, const ab_shape *s, ab_rng r, int head, int row, float *q_row,
                    float *k_row, float *v_row);

/* Topic segment index of every position (shared by all heads): topic[n],
 * nondecreasing, topic[0] = 0. Returns the number of segments. */
int ab_haystack_topics(const ab_haystack_cfg *c, ab_rng r, int n, int *topic /* [n] */);

/* 1 if key j of head `head` is a vertical-stripe key. */
int ab_haystack_is_vertical(const ab_haystack_cfg *c, ab_rng r, int head, int j);

#endif
