/* kernels.c — the kernel helpers of the ABI (include/attnbench.h) and the
 * dense reference of runtime/kernels.h, forwarded to the CPU kernels of
 * kernels/cpu. A plugin calls these; the kernels know nothing of plugins. */
#include "runtime/kernels.h"
#include "kernels/kernels.h"

int ab_kernel_flash(const ab_problem *pb, float *out) { return ab_cpu_flash(pb, out); }

int ab_kernel_layout(const ab_problem *pb, const ab_layout *l, float *out)
{
    return ab_cpu_layout(pb, l, out);
}

int ab_kernel_periodic(const ab_problem *pb, const ab_periodic *pat, float *out)
{
    return ab_cpu_periodic(pb, pat, out);
}

ab_attn_tile *ab_attn_tile_new(int head_dim, int rows) { return ab_cpu_attn_tile_new(head_dim, rows); }

void ab_attn_tile_free(ab_attn_tile *t) { ab_cpu_attn_tile_free(t); }

void ab_attn_tile_begin(ab_attn_tile *t, const float *q, size_t ldq, int nq, float scale)
{
    ab_cpu_attn_tile_begin(t, q, ldq, nq, scale);
}

void ab_attn_tile_keys(ab_attn_tile *t, const float *k, const float *v, int nk, const int *lo, const int *hi)
{
    ab_cpu_attn_tile_keys(t, k, v, nk, lo, hi);
}

void ab_attn_tile_keys_map(ab_attn_tile *t, const float *k, const float *v, int nk,
                           const unsigned char *allow, size_t lda)
{
    ab_cpu_attn_tile_keys_map(t, k, v, nk, allow, lda);
}

void ab_attn_tile_end(const ab_attn_tile *t, float *out, size_t ldo, float *lse)
{
    ab_cpu_attn_tile_end(t, out, ldo, lse);
}

double ab_exp_shift_sum(float *x, int n, float shift) { return ab_cpu_exp_shift_sum(x, n, shift); }
double ab_exp_max_sum(float *x, int n, float mx) { return ab_cpu_exp_max_sum(x, n, mx); }
void ab_exp_shift(float *x, int n, float shift) { ab_cpu_exp_shift(x, n, shift); }

int ab_kernel_decode(const ab_decode *dp, const ab_layout *l, float *out, int strategy, int splits)
{
    return ab_cpu_decode(dp, l, out, strategy, splits);
}
