/* trace.h — reader of attnbench trace files (docs/spec/TASKS.md §6): real Q, K, V of
 * one attention layer stored in HDF5, for the `trace` task.
 *
 *   /              attrs format = "attnbench-trace", version = 1, source, dtype
 *   /layer_<L>/q   float32 or float16 [H, N, d]
 *   /layer_<L>/k   [H_kv, N, d]   (H_kv divides H: grouped-query attention)
 *   /layer_<L>/v   [H_kv, N, d]
 *                  attrs causal (int), scale (float, default 1/sqrt(d)),
 *                  rope_applied (int)
 *
 * Every failure is one line naming the file and the dataset (and the index
 * of a non-finite value).
 */
#ifndef AB_TRACE_H
#define AB_TRACE_H

#include <stddef.h>

#include "attnbench.h"

typedef struct ab_trace_info {
    int heads, kv_heads, n, d; /* q: [heads, n, d]; k, v: [kv_heads, n, d] */
    int elem_bytes;            /* 4 (float32) or 2 (float16) */
    int causal;                /* the layer's `causal` attribute (-1: absent) */
    double scale;              /* the layer's `scale` attribute (1/sqrt(d) if absent) */
    int rope_applied;          /* -1: absent */
} ab_trace_info;

/* Validate the file's structure and that it can serve the requested shape:
 * s->seq_len <= N (the first seq_len tokens are used), s->heads <= H (the
 * first heads), s->head_dim == d. Cheap: reads metadata only. Returns AB_OK,
 * or AB_EINVAL with a one-line reason in err. info may be NULL. */
int ab_trace_check(const char *path, int layer, const ab_shape *s, ab_trace_info *info, char *err,
                   size_t errlen);

/* Load the requested slice as float32 (heads, seq_len, head_dim), converting
 * float16, expanding grouped K/V heads (head h reads kv head h / (H / H_kv)),
 * and scaling q by scale_trace / s->scale so that the logits are the model's.
 * Non-finite values are rejected naming the dataset and [head, token, dim]
 * (file coordinates). Returns AB_OK, AB_EINVAL or AB_ENOMEM. */
int ab_trace_load(const char *path, int layer, const ab_shape *s, float *q, float *k, float *v, char *err,
                  size_t errlen);

/* IEEE 754 binary16 to float (exact). */
float ab_half_to_float(unsigned short h);

#endif
