/* anchor.c — `anchor`: AnchorAttention's difference-aware stripe selection
 * in the official geometry (Zhang et al. 2025, "AnchorAttention:
 * Difference-Aware Sparse Attention with Stripe Granularity", arXiv
 * 2505.23520; code YuzhongHuangCS/AnchorAttention: the Triton kernels
 * get_mask_fused_anchor_triton (step 1), get_q_mask_triton (step 2) and
 * _triton_stripe_sparse_attn_fwd_kernel_step3, with the torch reference
 * get_mask_block; defaults of anchor_attn: block_size 128, step 16,
 * difference 12, init_cnt = local_cnt = 1).
 *
 * Queries are taken in groups of `group` sub-blocks of `block` rows
 * (official: 16 x 128 = 2048 queries). For group G (rows [G*gs, (G+1)*gs),
 * gs = block * group):
 *  - initial region: the first group's keys [0, gs); local region: the
 *    group's own keys [G*gs, (G+1)*gs), both causal, both attended densely;
 *  - anchor a_i = the largest logit s * q_i . k_j over those two regions;
 *  - per sub-block t of `block` rows: pooled query qbar_t (mean) and pooled
 *    anchor abar_t (mean of a_i);
 *  - stripes: a key j of the middle region [gs, G*gs) is kept iff for some
 *    t, s * qbar_t . k_j + theta >= abar_t (theta in natural-log units: the
 *    official code scales theta and the logits by log2(e) alike); the list
 *    is shared by every row of the group (the union over its sub-blocks).
 * The shared selection is methods/anchor_core.h.
 *
 * Our choices, where the official code has none or differs:
 *  - Regions are disjoint and leave no gap: the middle region is every key
 *    between the initial region and the group. The official stripe scan
 *    runs over keys [block, G*gs - block): it starts inside the initial
 *    region (those keys are kept anyway; its step 3 would count them twice)
 *    and never tests the `block` keys just before the group, which then no
 *    row of the group attends (docs/spec/METHODS.md 3.5: disjoint regions).
 *  - The official code requires N to be a multiple of gs; a partial last
 *    group or sub-block is pooled over the rows it has.
 *  - Non-causal base masks (the paper is causal only): the local region is
 *    the whole group and the middle region every key outside both regions.
 *  - Layout: MIXED, per harness query block (block_q must divide gs, else
 *    unsupported): the initial and local regions as key blocks (ragged edges
 *    as tokens), plus the group's stripe list as tokens (the gather kernel
 *    loads discrete keys, as the paper's kernel does).
 * Short sequences: with N <= 2 gs (causal) or N <= gs (non-causal) every
 * key is in an initial or local region: dense, as the official method.
 * `anchor_small` (methods/anchor_small.c) is our variant with one-block
 * regions, which selects at a few thousand tokens.
 *
 * Density knob: theta (rises with theta, continuous). Cost per head
 * O(N * 2gs * d) for the anchors plus O(N^2 d / block) for the stripe test;
 * memory O(N) per thread.
 */
#include "attnbench.h"
#include "methods/anchor_core.h"

#include <math.h>
#include <stdlib.h>

typedef struct anchor_state {
    double theta; /* margin below the pooled anchor */
    int block;    /* rows per pooled sub-block */
    int group;    /* sub-blocks per group */
} anchor_state;

enum { P_THETA = 0, P_BLOCK, P_GROUP, P_COUNT };

static int anchor_init(void *state, const ab_params *p, const ab_shape *s)
{
    anchor_state *st = state;
    (void)s;
    if (p->n < P_COUNT) {
        ab_set_error(state, "anchor: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_THETA] >= 0 && p->v[P_THETA] <= 1e4) || !(p->v[P_BLOCK] >= 1 && p->v[P_BLOCK] <= 4096) ||
        !(p->v[P_GROUP] >= 1 && p->v[P_GROUP] <= 256)) {
        ab_set_error(state, "anchor: theta must be in [0, 1e4], block in [1, 4096], group in [1, 256]");
        return AB_EINVAL;
    }
    st->theta = p->v[P_THETA];
    st->block = (int)p->v[P_BLOCK];
    st->group = (int)p->v[P_GROUP];
    return AB_OK;
}

static int anchor_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const anchor_state *st = state;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks;
    const int gs = st->block * st->group;
    if (causal ? N <= 2 * gs : N <= gs) { /* only initial and local keys */
        const int rd = ab_layout_dense(l);
        return rd == AB_OK ? ab_layout_set_cost(l, 0, 0) : rd;
    }
    if (gs % bq != 0) {
        ab_set_error(state,
                     "anchor: a group of %d queries must be a whole number of query blocks (block_q %d)", gs,
                     bq);
        return AB_EUNSUPPORTED;
    }
    const int ng = (N + gs - 1) / gs, tasks = H * ng;
    int rc = AB_OK;
    double flops = 0.0, bytes = 0.0;

#pragma omp parallel reduction(+ : flops, bytes)
    {
        anc_scratch sc;
        int32_t *stripes = malloc((size_t)N * sizeof *stripes); /* (N) one group's kept keys */
        int ok = anc_scratch_alloc(&sc, st->block, st->group, d) && stripes;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int r = 0; r < tasks; r++) {
            if (!ok) continue;
            const int h = r / ng, G = ng - 1 - r % ng; /* the costliest (last) groups first */
            const anc_group g = { .r0 = G * gs,
                                  .r1 = (G + 1) * gs < N ? (G + 1) * gs : N,
                                  .sub = st->block,
                                  .init1 = gs,
                                  .loc0 = G * gs,
                                  .loc1 = (G + 1) * gs < N ? (G + 1) * gs : N };
            const size_t off = (size_t)h * N * d;
            const int n =
                anc_stripes(pb->q + off, pb->k + off, N, d, causal, pb->s.scale, st->theta, &g, &sc, stripes);
            /* every query block of the group: both regions (causal: up to its
             * diagonal block) and the group's stripes */
            for (int qb = g.r0 / bq; ok && qb < nqb && qb * bq < g.r1; qb++) {
                const int end = causal ? (bs_diag_block(qb, bq, bk, N) + 1) * bk : N;
                int ra = mc_add_span(l, h, qb, 0, end < g.init1 ? end : g.init1);
                if (ra == AB_OK) ra = mc_add_span(l, h, qb, g.loc0, end < g.loc1 ? end : g.loc1);
                if (ra == AB_OK) ra = ab_layout_add_tokens(l, h, qb, stripes, n);
                if (ra != AB_OK) {
                    ok = 0;
#pragma omp atomic write
                    rc = ra;
                }
            }
        }
        flops += sc.flops;
        bytes += sc.bytes;
        anc_scratch_free(&sc);
        free(stripes);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "anchor: out of memory");
    bytes += 4.0 * H * (double)N * d; /* K once per head (anc_pool) */
    return rc == AB_OK ? ab_layout_set_cost(l, flops, bytes) : rc;
}

const ab_method ab_anchor = {
    .abi = AB_ABI_VERSION,
    .family = "block",
    .name = "anchor",
    .summary = "AnchorAttention (official geometry): dense first group + own group (2048 keys each); middle key "
               "stripes within theta of the pooled anchor, shared by the group's 16 sub-blocks",
    .reference = "Zhang et al. 2025, AnchorAttention: Difference-Aware Sparse Attention with Stripe Granularity, arXiv 2505.23520",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .block_q = 128, /* the official block_size (anchor_attn; groups of step = 16 blocks) */
    .params = {
        [P_THETA] = { .name = "theta", .def = 12.0, .min = 0, .max = 1e4, .is_int = 0,
                      .help = "keep key j if s*qbar.k_j + theta >= pooled anchor for some sub-block (natural-log units; official 12)" },
        [P_BLOCK] = { .name = "block", .def = 128, .min = 1, .max = 4096, .is_int = 1,
                      .help = "query rows per pooled sub-block (official block_size 128)" },
        [P_GROUP] = { .name = "group", .def = 16, .min = 1, .max = 256, .is_int = 1,
                      .help = "sub-blocks per query group; init and local regions are one group of keys (official step 16)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_THETA, .increasing = 1, .log_scale = 0 },
    .state_size = sizeof(anchor_state),
    .init = anchor_init,
    .select = anchor_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_anchor)
