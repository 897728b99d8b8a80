/* dense.c — `dense`: exact attention over every causally valid (query, key)
 * pair, executed by the shared tiled online-softmax kernel (FlashAttention,
 * Dao et al. 2022; FA2, Dao 2023). The density-1 reference point every
 * sparse method is compared with; it has no params and no density knob.
 * In decode, every key of the cache through the shared decode kernel.
 * On bf16 inputs (the sweep's dtypes axis) the same kernel's bf16 path.
 */
#include "attnbench.h"

static int dense_init(void *state, const ab_params *p, const ab_shape *s) { return AB_OK; /* no params */ }

static int dense_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const int rc = ab_layout_dense(l);
    return rc == AB_OK ? ab_layout_set_cost(l, 0, 0) : rc; /* nothing to select */
}

/* decode: every key of the cache, run by the shared decode kernel
 * (ab_kernel_decode, AB_DECODE_AUTO: Lean Attention's even split) */
static int dense_dselect(void *state, const ab_decode *dp, ab_layout *l)
{
    const int rc = ab_layout_dense(l);
    return rc == AB_OK ? ab_layout_set_cost(l, 0, 0) : rc;
}

const ab_method ab_dense = {
    .abi = AB_ABI_VERSION,
    .family = "dense",
    .name = "dense",
    .summary = "exact dense attention (shared FlashAttention-style kernel)",
    .reference = "FlashAttention (Dao et al. 2022, arXiv 2205.14135); FA2 (arXiv 2307.08691)",
    .devices = AB_CPU | AB_GPU,
    .phases = AB_PREFILL | AB_DECODE,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: ab_kernel_layout's bf16 flash (kernels/cpu/flash.c) */
    .params = { { .name = NULL } },
    .density_knob = { .param = -1 },
    .state_size = 0,
    .init = dense_init,
    .select = dense_select,
    .run = NULL, /* the shared flash kernel */
    .fini = NULL,
    .dselect = dense_dselect,
};
AB_REGISTER(ab_dense)
