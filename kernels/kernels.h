/* kernels.h — the execution kernels (harness- and runtime-facing).
 *
 * Kernels know nothing of methods or the harness: they take an ab_problem
 * and (for sparse kernels) a finalised ab_layout, and write
 * out (heads, seq_len, head_dim). They include only include/ and kernels/;
 * the ABI functions they call (mask queries, layout reads) are defined in
 * runtime/. The entry points a method may call (ab_kernel_layout,
 * ab_exp_shift_sum) are declared in include/attnbench.h, ab_kernel_flash in
 * runtime/kernels.h; runtime/kernels.c forwards them here.
 */
#ifndef AB_KERNELS_H
#define AB_KERNELS_H

#include "attnbench.h"

/* ---- CPU kernels ------------------------------------------------------- */
/* Exact attention for a subset of query rows of one head, fp64 accumulation.
 * l == NULL: every causally valid key; else only keys l keeps (a row that
 * keeps nothing yields zeros). out: nrows * head_dim doubles.
 * Optional outputs (may be NULL): row_max[nrows] = max logit over the used
 * keys (scaled), row_sum[nrows] = sum exp(logit - row_max). */
int ab_ref_rows(const ab_problem *pb, int head, const int *rows, int nrows, const ab_layout *l, double *out,
                double *row_max, double *row_sum);

/* The kernels behind the ABI helpers of include/attnbench.h (runtime/kernels.c
 * forwards ab_kernel_flash, ab_kernel_layout and ab_exp_shift_sum to these). */
int ab_cpu_flash(const ab_problem *pb, float *out);
int ab_cpu_layout(const ab_problem *pb, const ab_layout *l, float *out);
double ab_cpu_exp_shift_sum(float *x, int n, float shift);

/* Decode (include/attnbench.h "decode"; kernels/cpu/decode.c). */
int ab_cpu_decode(const ab_decode *dp, const ab_layout *l, float *out, int strategy, int splits);
/* fp64 reference of one decode row (row = layer*heads + head) over the keys
 * l keeps (NULL: all len keys): out[d]; *rmax, *rsum as in ab_ref_rows. */
int ab_ref_decode_row(const ab_decode *dp, int row, const ab_layout *l, double *out, double *rmax,
                      double *rsum);

/* Tiled online-softmax kernels (fp32). All handle N % block != 0. */
int ab_kernel_blocksparse(const ab_problem *pb, const ab_layout *l, float *out);
int ab_kernel_gather(const ab_problem *pb, const ab_layout *l, float *out); /* TOKEN and MIXED */
/* The kernel ab_kernel_layout() would use for this layout: "flash",
 * "blocksparse", "gather" or "custom". */
const char *ab_kernel_name(const ab_layout *l);

#endif
