/* simd.h — run-time ISA dispatch for the CPU attention kernels (internal).
 *
 * The three kernels (flash.c, blocksparse.c, gather.c) share one inner loop,
 * the online-softmax chunk step of FlashAttention-2 (Dao, 2023), in three
 * builds: AVX-512 (simd_avx512.c), AVX2+FMA (simd_avx2.c) and portable C
 * (simd_portable.c), all instantiated from simd_body.h / written over the
 * same tile layout (tile.h). The ISA is picked at run time from the CPU
 * flags (__builtin_cpu_supports); the environment variable AB_CPU_ISA
 * (portable | avx2 | avx512) may lower it, never raise it past what the CPU
 * has. The ISA-specific files compile their functions with
 * __attribute__((target(...))), so the default build flags do not matter. */
#ifndef AB_CPU_SIMD_H
#define AB_CPU_SIMD_H

#include <stdint.h>

#include "attnbench.h"

typedef enum ab_cpu_isa {
    AB_ISA_PORTABLE = 0,
    AB_ISA_AVX2 = 1,   /* AVX2 + FMA, 8 floats per vector */
    AB_ISA_AVX512 = 2, /* AVX-512F, 16 floats per vector */
    AB_ISA_COUNT
} ab_cpu_isa;

struct ab_tile;

/* 1 if this CPU (and OS) can run isa. */
int ab_cpu_isa_supported(int isa);
/* The best supported ISA, lowered by AB_CPU_ISA when that is set. */
int ab_cpu_isa_pick(void);
/* "portable", "avx2", "avx512" ("?" when out of range). */
const char *ab_cpu_isa_name(int isa);

/* One key chunk of the online softmax (see tile.h for the tile state).
 * k, v: (nk, d) rows of the chunk, row stride d; masked: 0 when every row
 * of the tile sees all nk columns; 1: row r sees columns [lo[r], lim[r]);
 * 2: row r sees column c iff em[c * ld + r]. */
typedef void (*ab_chunk_fn)(struct ab_tile *t, const float *k, const float *v, int nk, int masked);
void ab_chunk_portable(struct ab_tile *t, const float *k, const float *v, int nk, int masked);
void ab_chunk_avx2(struct ab_tile *t, const float *k, const float *v, int nk, int masked);
void ab_chunk_avx512(struct ab_tile *t, const float *k, const float *v, int nk, int masked);
/* The same step on a gathered chunk read in place: key row c is kr[c], value
 * row c vr[c]; it also prefetches the tile's next rows (t->pfk, t->pfv,
 * t->pfn; tile.h). The same arithmetic as ab_chunk_* on the rows copied out.
 * x86 builds only (tile.h's ab_tile_chunk_rows_fn). */
typedef void (*ab_chunk_rows_fn)(struct ab_tile *t, const float *const *kr, const float *const *vr, int nk,
                                 int masked);
void ab_chunk_rows_avx2(struct ab_tile *t, const float *const *kr, const float *const *vr, int nk,
                        int masked);
void ab_chunk_rows_avx512(struct ab_tile *t, const float *const *kr, const float *const *vr, int nk,
                          int masked);

/* bf16 (kernels.h): 1 if the CPU has AVX-512 BF16 (with F, BW and VL), the
 * chunk step on bf16 K, V rows with the tile's qt holding bf16 pairs
 * (begin_bf16 of flash.c), and the dense kernel on an explicit path
 * (AB_BF16_*): AB_BF16_WIDEN runs isa's fp32 chunk on widened rows, the
 * others are AB_EUNSUPPORTED unless ab_cpu_bf16_path_ok (1 if the path can
 * run head_dim d with this scale on this CPU). */
int ab_cpu_bf16_supported(void);
void ab_chunk_bf16_avx512(struct ab_tile *t, const uint16_t *k, const uint16_t *v, int nk, int masked,
                          float scale);
/* AMX (simd_avx512.c): 1 if the CPU has AMX-TILE and AMX-BF16 and the OS
 * granted this process the tile state (asked once); the per-thread tile
 * configuration and release; the chunk step on the tile unit (acc held
 * transposed, head_dim x ld; vt: V^T of the head from the chunk's first
 * key, row stride ldv). */
int ab_cpu_amx_supported(void);
void ab_amx_begin(void);
void ab_amx_end(void);
void ab_chunk_bf16_amx(struct ab_tile *t, const uint16_t *k, const uint16_t *vt, int ldv, int nk, int masked,
                       float scale);
int ab_cpu_bf16_path_ok(int path, int d, float scale);
int ab_kernel_flash_bf16_isa(const ab_shape *s, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                             float *out, int isa, int path);
int ab_kernel_layout_bf16_isa(const ab_problem *pb, const ab_layout *l, float *out, int isa, int path);
/* TOKEN and MIXED layouts with query blocks below this run on bf16 only
 * through the fp32 kernel's grouped tiles, which have no bf16 form. */
#define AB_BF16_MIN_BLOCK_Q 16

/* The vector exp's constants, one set for simd_avx512.c's ab_exp16 and
 * simd_avx2.c's ab_exp8, which run the same steps so that both ISAs give
 * the same bits (tests/test_blascore.c holds each to its own scalar model
 * of the steps): lanes below AB_EXP_FLUSH become 0; n = round(x log2 e);
 * r = x - n ln 2 in two parts (Cody-Waite); p = 1 + r + r^2 (P5 + r (P4 +
 * r (P3 + r (P2 + r (P1 + r P0))))); the result p 2^n. */
#define AB_EXP_FLUSH  (-87.33f)
#define AB_EXP_LOG2E  1.44269504088896341f
#define AB_EXP_LN2_HI 0.693359375f
#define AB_EXP_LN2_LO (-2.12194440e-4f)
#define AB_EXP_P0     1.9875691500e-4f
#define AB_EXP_P1     1.3981999507e-3f
#define AB_EXP_P2     8.3334519073e-3f
#define AB_EXP_P3     4.1665795894e-2f
#define AB_EXP_P4     1.6666665459e-1f
#define AB_EXP_P5     5.0000001201e-1f

/* ab_cpu_exp_shift_sum of kernels.h for each ISA. */
double ab_exp_shift_sum_portable(float *x, int n, float shift);
double ab_exp_shift_sum_avx2(float *x, int n, float shift);
double ab_exp_shift_sum_avx512(float *x, int n, float shift);
/* ab_cpu_exp_max_sum of kernels.h for each ISA. */
double ab_exp_max_sum_avx2(float *x, int n, float mx);
double ab_exp_max_sum_avx512(float *x, int n, float mx);
/* The AVX2 softmax pass's exp (same bits as ab_exp_shift_avx2 for x <= 0):
 * x[i] = e^x[i] in place, n a multiple of 8; a test hook. */
void ab_exp_nonpos_avx2(float *x, int n);
/* ab_cpu_exp_shift of kernels.h for each ISA. */
void ab_exp_shift_portable(float *x, int n, float shift);
void ab_exp_shift_avx2(float *x, int n, float shift);
void ab_exp_shift_avx512(float *x, int n, float shift);

/* The kernels of kernels.h with an explicit ISA (tests compare the paths;
 * the bench reports them). AB_EUNSUPPORTED when the CPU lacks isa. */
int ab_kernel_flash_isa(const ab_problem *pb, float *out, int isa);
int ab_kernel_blocksparse_isa(const ab_problem *pb, const ab_layout *l, float *out, int isa);
int ab_kernel_gather_isa(const ab_problem *pb, const ab_layout *l, float *out, int isa);
int ab_kernel_periodic_isa(const ab_problem *pb, const ab_periodic *pat, float *out, int isa);
ab_attn_tile *ab_attn_tile_new_isa(int head_dim, int rows, int isa);

#endif /* AB_CPU_SIMD_H */
