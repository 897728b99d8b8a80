/* seer_proxy.c — `seer_proxy`: a TRAINING-FREE PROXY of SeerAttention's
 * block gate (Gao et al. 2024, "SeerAttention: Learning Intrinsic Sparse
 * Attention in Your LLMs", arXiv 2410.13276; code microsoft/SeerAttention).
 *
 * SeerAttention's AttnGate pools Q over each query block (average) and K over
 * each key block (max, min and average, concatenated), passes both through
 * small learned linear layers, and takes softmax(gate_q . gate_k^T) as the
 * predicted block importance; inference keeps the top-k blocks (or those
 * above a threshold). Here the learned layers are replaced by identities:
 * the pooled query, repeated three times, against [avg; max; min] of the key
 * block, i.e.
 *   score(qb, kb) = scale * mean_q(qb) . (avg_k(kb) + max_k(kb) + min_k(kb)),
 * softmax over the causally valid key blocks (monotone, so the ranking of the
 * logits). Key block 0 and the diagonal block are always kept, as the proxy
 * definition (docs/spec/METHODS.md §3.4) requires; they count towards the
 * per-query-block budget k, which the best-scoring other blocks fill (ties
 * to the lower index). No learned weights, no RoPE inside the gate: this is
 * a proxy of the trained gate, not SeerAttention's quality.
 *
 * Fractional budget dithered over query blocks (golden-ratio sequence, as in
 * oracle_topk_block.c), so the density knob topk moves smoothly.
 * Cost O(N^2 d / (block_q block_k)) + O(N d); memory O(N d / block).
 * Stated cost (ab_layout_set_cost, via bs_select_pooled): FLOPs = H N d (1 + 3)
 * (Q mean: one add per element; K avg, max, min: three per element) +
 * H (nqb + nkb) d + sum over rows of (2 d C_r + 2 C_r + k log2 k) (candidate logits,
 * the selection and sort of the best k = topk + 2); bytes = 4 (2 H N d + H (nqb + nkb) d + 2 sum C_r).
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdlib.h>

typedef struct seer_state {
    double topk; /* mean key blocks kept per query block */
} seer_state;

static int seer_init(void *state, const ab_params *p, const ab_shape *s)
{
    seer_state *st = state;
    if (p->n < 1 || !(p->v[0] >= 1 && p->v[0] <= (1 << 16))) {
        ab_set_error(state, "seer_proxy: topk must be in [1, 65536]");
        return AB_EINVAL;
    }
    st->topk = p->v[0];
    return AB_OK;
}

/* Per key block of x (n, d): avg + max + min elementwise into out
 * (ceil(n/blk), d) — the proxy gate's key feature against a repeated query. */
static void pool_avg_max_min(const float *x, int n, int d, int blk, float *out)
{
    const int nb = (n + blk - 1) / blk;
    for (int b = 0; b < nb; b++) {
        const int r0 = b * blk, nr = n - r0 < blk ? n - r0 : blk;
        float *o = out + (size_t)b * d;
        for (int c = 0; c < d; c++) {
            float s = 0.0f, mx = x[(size_t)r0 * d + c], mn = mx;
            for (int i = 0; i < nr; i++) {
                const float v = x[(size_t)(r0 + i) * d + c];
                s += v;
                mx = v > mx ? v : mx;
                mn = v < mn ? v : mn;
            }
            o[c] = s / (float)nr + mx + mn;
        }
    }
}

static int seer_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const seer_state *st = state;
    return bs_select_pooled(state, "seer_proxy", pb, l, pool_avg_max_min, 3.0, st->topk,
                            BS_FORCE_SINK | BS_FORCE_DIAG);
}

const ab_method ab_seer_proxy = {
    .abi = AB_ABI_VERSION,
    .family = "block",
    .name = "seer_proxy",
    .summary = "SeerAttention training-free proxy: pooled Q . [avg;max;min] pooled K gate, top-k key blocks",
    .reference = "Gao et al. 2024, SeerAttention, arXiv 2410.13276 (microsoft/SeerAttention); training-free proxy",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .block_q = 64, /* SeerAttention's gate block size */
    .params = {
        { .name = "topk", .def = 16, .min = 1, .max = 1 << 16, .is_int = 0,
          .help = "mean key blocks kept per query block (fractional budgets dithered)" },
        { .name = NULL },
    },
    .density_knob = { .param = 0, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(seer_state),
    .init = seer_init,
    .select = seer_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_seer_proxy)
