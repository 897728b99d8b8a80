/* kernels.h — execution kernels and layout internals (harness-facing).
 *
 * Kernels know nothing of methods or the harness: they take an ab_problem
 * and (for sparse kernels) a finalised ab_layout, and write
 * out (heads, seq_len, head_dim). The public entry points a method may call
 * (ab_kernel_flash, ab_kernel_layout) are declared in include/attnbench.h.
 */
#ifndef AB_KERNELS_H
#define AB_KERNELS_H

#include "attnbench.h"

/* ---- layout lifecycle (kernels/cpu/layout.c) --------------------------- */
/* Prepare an empty layout for shape s with the given default block sizes. */
void ab_layout_init(ab_layout *l, const ab_shape *s, int block_q, int block_k);
/* After select(): sort, dedup and build the CSR arrays; set kind.
 * An untouched layout (no call at all) is an error (AB_EINVAL). */
int ab_layout_finalize(ab_layout *l);
/* Check structure: CSR monotone, indices in range and sorted/unique, token
 * lists disjoint from kept blocks in MIXED, custom density in [0,1]. */
int ab_layout_validate(const ab_layout *l, char *err, size_t errlen);
void ab_layout_free(ab_layout *l);
/* Kept causally valid pairs (exact, O(entries)), and all valid pairs. */
int64_t ab_layout_kept_pairs(const ab_layout *l);
int64_t ab_layout_valid_pairs(const ab_layout *l);
const char *ab_layout_kind_name(ab_layout_kind k);

/* ---- CPU kernels ------------------------------------------------------- */
/* Exact attention for a subset of query rows of one head, fp64 accumulation.
 * l == NULL: every causally valid key; else only keys l keeps (a row that
 * keeps nothing yields zeros). out: nrows * head_dim doubles.
 * Optional outputs (may be NULL): row_max[nrows] = max logit over the used
 * keys (scaled), row_sum[nrows] = sum exp(logit - row_max). */
int ab_ref_rows(const ab_problem *pb, int head, const int *rows, int nrows,
                const ab_layout *l, double *out, double *row_max, double *row_sum);

/* Tiled online-softmax kernels (fp32). All handle N % block != 0. */
int ab_kernel_blocksparse(const ab_problem *pb, const ab_layout *l, float *out);
int ab_kernel_gather(const ab_problem *pb, const ab_layout *l, float *out); /* TOKEN and MIXED */
/* The kernel ab_kernel_layout() would use for this layout: "flash",
 * "blocksparse", "gather" or "custom". */
const char *ab_kernel_name(const ab_layout *l);

/* ---- GPU (kernels/cuda, only when built with CUDA) --------------------- */
/* Number of usable CUDA devices (0 when built without CUDA or none found);
 * on 0, why[] says why. Defined in harness/gpu.c: it probes in a
 * short-lived child, so the caller never initialises CUDA (children it
 * forks later can still use the GPU). The GPU kernels: kernels/cuda/ab_cuda.h. */
int ab_gpu_count(char *why, size_t whylen);

#endif
