/* trace.h — reader of attnbench trace files (docs/traces.md): real Q, K, V of
 * attention layers stored in HDF5, for the `trace` task and `attnbench
 * trace-info` / `trace-run`.
 *
 *   /              attrs format = "attnbench-trace", version = 1 or 2, source,
 *                  dtype; version 2 adds model_type, config_sha256,
 *                  prompt_sha256, n_tokens, heads, kv_heads, head_dim, layers,
 *                  rope_theta, rope_scaling, synthetic, and for answer-bearing
 *                  traces needle_start, needle_end, question_start,
 *                  question_end, passkey, needle_depth
 *   /tokens        int32 [N]
 *   /layer_<L>/q   float32, float16, or bfloat16 bits (uint16 with dataset
 *                  attribute dtype = "bfloat16") [H, N, d]
 *   /layer_<L>/k   [H_kv, N, d]
 *   /layer_<L>/v   [H_kv, N, d]
 *   /layer_<L>/kv_map  int [H] (version 2, optional): query head -> K/V head;
 *                  absent: head h reads K/V head h / (H / H_kv), H_kv | H
 *   /layer_<L>/out float32 [H, N, d] (optional): the model's attention output
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

#define AB_TRACE_BF16 3 /* element code of bfloat16 bits (float16: 2, float32: 4) */

typedef struct ab_trace_info {
    int heads, kv_heads, n, d; /* q: [heads, n, d]; k, v: [kv_heads, n, d] */
    int elem_bytes;            /* 4 (float32) or 2 (float16, bfloat16) */
    int bf16;                  /* 1: bfloat16 bits */
    int has_kv_map;            /* 1: /layer_L/kv_map gives the query -> K/V head map */
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

/* What the root of a trace says (docs/traces.md). Absent numbers are -1,
 * absent strings "". */
#define AB_TRACE_MAX_LAYERS 512
typedef struct ab_trace_meta {
    int version;
    char source[160], model_type[48], dtype[16], passkey[64];
    char config_sha256[72], prompt_sha256[72];
    long long n_tokens;                        /* root n_tokens, else the length of /tokens, else -1 */
    int synthetic;                             /* 1: random weights or generated data; 0: a real model */
    int needle_start, needle_end;              /* answer-bearing: the needle's tokens [start, end) */
    int question_start, question_end;          /* its question's rows [start, end) */
    int n_layers, layers[AB_TRACE_MAX_LAYERS]; /* the /layer_<L> groups, ascending */
} ab_trace_meta;

/* Read the root: format, version, attributes, the layer groups. Validates
 * the answer spans (0 <= needle_start < needle_end <= question_start <
 * question_end <= n_tokens when n_tokens is known). AB_OK or AB_EINVAL with
 * one line in err. */
int ab_trace_meta_read(const char *path, ab_trace_meta *m, char *err, size_t errlen);

/* IEEE 754 binary16 to float (exact). */
float ab_half_to_float(unsigned short h);

#endif
