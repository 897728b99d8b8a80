/* minference_block.c — `minference_block`: MInference's block-sparse pattern
 * (Jiang et al. 2024, "MInference 1.0: Accelerating Pre-filling for
 * Long-Context LLMs via Dynamic Sparse Attention", arXiv 2407.02490; code
 * microsoft/MInference, minference/ops/block_sparse_flash_attention.py,
 * _build_block_index).
 *
 * Per head: mean-pool Q over query blocks and K over key blocks, block
 * scores = softmax(pooled Q . pooled K^T * scale) with the causal block mask
 * (key blocks up to the diagonal), and keep the top-k key blocks of each
 * query block (ties to the lower index). As in the official code no block is
 * force-kept: the diagonal survives because it scores high on real data.
 * The softmax is monotone within a row, so ranking the logits is the same.
 *
 * The budget may be fractional (the density knob): k = 2.4 keeps 2 blocks in
 * 60% of the query blocks and 3 in 40%, dithered by the golden-ratio
 * sequence as in oracle_topk_block.c, so density moves smoothly. The
 * official default is topk = 100 blocks of 64 (MInference's block size).
 *
 * Cost O(N^2 d / (block_q block_k)) + O(N d) pooling; memory O(N d / block).
 * Stated cost (ab_layout_set_cost, via bs_select_pooled): FLOPs = 2 H N d
 * (pool Q and K: one add per element) + H (nqb + nkb) d (the 1/blk scale) +
 * sum over rows of (2 d C_r + 2 C_r + k log2 k) (a d-long logit per candidate key
 * block C_r, a selection of the best k = topk + 2, their sort); bytes = 4 (2 H N d + H (nqb + nkb) d
 * + 2 sum C_r) (Q and K read, pooled rows written, logits written and read).
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdlib.h>

typedef struct mib_state {
    double topk; /* mean key blocks kept per query block */
} mib_state;

static int mib_init(void *state, const ab_params *p, const ab_shape *s)
{
    mib_state *st = state;
    if (p->n < 1 || !(p->v[0] >= 1 && p->v[0] <= (1 << 16))) {
        ab_set_error(state, "minference_block: topk must be in [1, 65536]");
        return AB_EINVAL;
    }
    st->topk = p->v[0];
    return AB_OK;
}

static int mib_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const mib_state *st = state;
    return bs_select_pooled(state, "minference_block", pb, l, bs_pool_mean, 1.0, st->topk, 0);
}

const ab_method ab_minference_block = {
    .abi = AB_ABI_VERSION,
    .family = "block",
    .name = "minference_block",
    .summary = "MInference block-sparse: mean-pooled Q.K^T block scores, top-k key blocks per query block",
    .reference = "Jiang et al. 2024, MInference 1.0, arXiv 2407.02490 (microsoft/MInference)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .block_q = 64, /* the official block (_build_block_index) */
    .params = {
        { .name = "topk", .def = 100, .min = 1, .max = 1 << 16, .is_int = 0,
          .help = "mean key blocks kept per query block (official 100; fractional budgets dithered)" },
        { .name = NULL },
    },
    .density_knob = { .param = 0, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(mib_state),
    .init = mib_init,
    .select = mib_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_minference_block)
