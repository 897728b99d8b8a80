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

#include <stdint.h>
#include <string.h>

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
 * forwards ab_kernel_flash, ab_kernel_layout, ab_kernel_periodic,
 * ab_attn_tile_* and ab_exp_shift_sum to these). */
int ab_cpu_flash(const ab_problem *pb, float *out);
int ab_cpu_layout(const ab_problem *pb, const ab_layout *l, float *out);
int ab_cpu_periodic(const ab_problem *pb, const ab_periodic *pat, float *out);
ab_attn_tile *ab_cpu_attn_tile_new(int head_dim, int rows);
void ab_cpu_attn_tile_free(ab_attn_tile *t);
void ab_cpu_attn_tile_begin(ab_attn_tile *t, const float *q, size_t ldq, int nq, float scale);
void ab_cpu_attn_tile_keys(ab_attn_tile *t, const float *k, const float *v, int nk, const int *lo,
                           const int *hi);
void ab_cpu_attn_tile_keys_map(ab_attn_tile *t, const float *k, const float *v, int nk,
                               const unsigned char *allow, size_t lda);
void ab_cpu_attn_tile_end(const ab_attn_tile *t, float *out, size_t ldo, float *lse);
double ab_cpu_exp_shift_sum(float *x, int n, float shift);
double ab_cpu_exp_max_sum(float *x, int n, float mx);
void ab_cpu_exp_shift(float *x, int n, float shift);

/* Decode (include/attnbench.h "decode"; kernels/cpu/decode.c). */
int ab_cpu_decode(const ab_decode *dp, const ab_layout *l, float *out, int strategy, int splits);
/* fp64 reference of one decode row (row = layer*heads + head) over the keys
 * l keeps (NULL: all len keys): out[d]; *rmax, *rsum as in ab_ref_rows. */
int ab_ref_decode_row(const ab_decode *dp, int row, const ab_layout *l, double *out, double *rmax,
                      double *rsum);

/* ---- bf16 inputs (docs/kernels.md "bf16") ------------------------------
 * bfloat16: the upper 16 bits of an IEEE binary32. Q, K and V are stored as
 * bf16, (heads, seq_len, head_dim) like the fp32 problem; logits, softmax,
 * accumulation and the output are fp32. */
static inline uint16_t ab_bf16_from_float(float x) /* round to nearest even */
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float ab_bf16_to_float(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
/* Dense attention of bf16 Q, K, V (s: shape and base mask, as in
 * ab_problem) into fp32 out, by one of three paths (ab_cpu_bf16_path):
 *   AB_BF16_AMX     the AMX tile unit (TDPBF16PS) for QK^T and PV, P rounded
 *                   to bf16, fp32 accumulation (the FlashAttention recipe;
 *                   the default where the CPU has AMX and d % 32 == 0);
 *   AB_BF16_AVX512  AVX-512 BF16 pair products (vdpbf16ps), same numerics;
 *   AB_BF16_WIDEN   each key chunk widened to fp32 as it is read and the
 *                   fp32 kernel run: exact products of the bf16 values.
 * The environment variable AB_BF16=widen|avx512|amx picks one. */
enum { AB_BF16_WIDEN = 0, AB_BF16_AVX512 = 1, AB_BF16_AMX = 2 };
int ab_cpu_flash_bf16(const ab_shape *s, const uint16_t *q, const uint16_t *k, const uint16_t *v, float *out);
/* The same over a finalised layout on pb's bf16 copies q16, k16, v16
 * (ABI 9): DENSE, BLOCK (block-sparse), TOKEN and MIXED (gathered keys);
 * AB_EUNSUPPORTED for TOKEN or MIXED with block_q < 16 (the fp32 gather
 * kernel's grouped one-row tiles) and AB_EINVAL for CUSTOM. */
int ab_cpu_layout_bf16(const ab_problem *pb, const ab_layout *l, float *out);
/* The path ab_cpu_flash_bf16 takes here for head_dim d; its name. */
int ab_cpu_bf16_path(int d);
const char *ab_cpu_bf16_path_name(int path);

/* Tiled online-softmax kernels (fp32). All handle N % block != 0. */
int ab_kernel_blocksparse(const ab_problem *pb, const ab_layout *l, float *out);
int ab_kernel_gather(const ab_problem *pb, const ab_layout *l, float *out); /* TOKEN and MIXED */
/* The kernel ab_kernel_layout() would use for this layout: "flash",
 * "blocksparse", "gather" or "custom". */
const char *ab_kernel_name(const ab_layout *l);

#endif
