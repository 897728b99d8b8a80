/* anchor_small.c — `anchor_small`: OUR small-region variant of
 * AnchorAttention's stripe selection (Zhang et al. 2025, arXiv 2505.23520;
 * the official geometry is `anchor`, methods/anchor.c).
 *
 * Why it exists: the official regions are a whole group of 2048 keys each
 * (the first group and the query's own group), so at N <= 4096 `anchor` is
 * dense and at 8K it still keeps over 60% of the causal pairs. This variant
 * shrinks them to blocks so that the method selects at N of a few thousand.
 * The keep rule is the paper's; only the geometry is ours:
 *  - initial region: key block 0; local region: `local_blocks` key blocks
 *    ending at the query block's diagonal block (non-causal: extending as
 *    far past it);
 *  - anchor a_i = the largest logit s * q_i . k_j over those blocks (causal);
 *  - one pooled query and one pooled anchor (the means over the rows of the
 *    harness query block) per query block: a key j outside both regions
 *    (causal: j up to the block's last row) is kept iff
 *    s * qbar . k_j + theta >= abar. Stripes are per query block, not shared
 *    by a group.
 * The shared selection is methods/anchor_core.h (a group of one query block
 * pooled as one sub-block). Layout MIXED: the regions as key blocks plus the
 * stripes as key tokens. The paper's theta depends on the model's logit
 * scale; our default 3 nats is not theirs (the official 12 is for 2048-key
 * regions).
 *
 * Density knob: theta (rises with theta, continuous). Cost
 * O(N^2 d / block_q) + O(N block_k local_blocks d); memory O(N) per thread.
 */
#include "attnbench.h"
#include "methods/anchor_core.h"

#include <math.h>
#include <stdlib.h>

typedef struct anchor_small_state {
    double theta;     /* margin below the pooled anchor */
    int local_blocks; /* key blocks of the local window, ending at the diagonal */
} anchor_small_state;

enum { P_THETA = 0, P_LOCAL, P_COUNT };

static int anchor_small_init(void *state, const ab_params *p, const ab_shape *s)
{
    anchor_small_state *st = state;
    (void)s;
    if (p->n < P_COUNT) {
        ab_set_error(state, "anchor_small: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_THETA] >= 0 && p->v[P_THETA] <= 1e4) || !(p->v[P_LOCAL] >= 1 && p->v[P_LOCAL] <= 1024)) {
        ab_set_error(state, "anchor_small: theta must be in [0, 1e4], local_blocks in [1, 1024]");
        return AB_EINVAL;
    }
    st->theta = p->v[P_THETA];
    st->local_blocks = (int)p->v[P_LOCAL];
    return AB_OK;
}

static int anchor_small_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const anchor_small_state *st = state;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    int rc = AB_OK;
    double flops = 0.0, bytes = 0.0;

    const int nbat = (nqb + ANC_BATCH - 1) / ANC_BATCH; /* batches of query blocks per head */
    /* every head's K packed once (bs_pack_nt): the batches' logits then
     * read the panels in place instead of each batch transposing the keys
     * it scores again */
    const int npan = (N + BS_PANEL - 1) / BS_PANEL;
    float *kp = malloc((size_t)H * npan * BS_PANEL * d * sizeof *kp);
    if (!kp) {
        ab_set_error(state, "anchor_small: out of memory");
        return AB_ENOMEM;
    }
#pragma omp parallel for schedule(static)
    for (int r = 0; r < H * npan; r++) {
        const int h = r / npan, p = r % npan, j0 = p * BS_PANEL;
        const int nj = N - j0 < BS_PANEL ? N - j0 : BS_PANEL;
        bs_pack_nt(pb->k + ((size_t)h * N + j0) * d, d, nj, d, kp + ((size_t)h * npan + p) * BS_PANEL * d);
    }
#pragma omp parallel reduction(+ : flops, bytes)
    {
        anc_scratch sc;
        /* (ANC_BATCH, N) the kept keys of a batch's blocks (128 N bytes) */
        int32_t *stripes = malloc((size_t)ANC_BATCH * N * sizeof *stripes);
        int32_t *kbs = malloc(((size_t)nkb + 1) * sizeof *kbs); /* one row's dense blocks */
        int ok = anc_scratch_alloc(&sc, bq, ANC_BATCH, d) && stripes && kbs;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int r = 0; r < H * nbat; r++) {
            if (!ok) continue;
            /* one batch: query blocks [qa, qz) of head h, their pooled
             * queries scored in one product per key panel (anc_keep) */
            const int h = r / nbat, qa = (r % nbat) * ANC_BATCH;
            const int qz = qa + ANC_BATCH < nqb ? qa + ANC_BATCH : nqb;
            anc_group g[ANC_BATCH];
            int T[ANC_BATCH], t0[ANC_BATCH], n[ANC_BATCH], lo[ANC_BATCH], hi[ANC_BATCH], rows = 0;
            const size_t off = (size_t)h * N * d;
            sc.kp = kp + (size_t)h * npan * BS_PANEL * d;
            for (int qb = qa; qb < qz; qb++) {
                const int b = qb - qa, diag = bs_diag_block(qb, bq, bk, N);
                lo[b] = diag - st->local_blocks + 1 > 0 ? diag - st->local_blocks + 1 : 0;
                hi[b] = causal
                            ? diag
                            : (diag + st->local_blocks - 1 < nkb - 1 ? diag + st->local_blocks - 1 : nkb - 1);
                g[b] = (anc_group){ .r0 = qb * bq,
                                    .r1 = (qb + 1) * bq < N ? (qb + 1) * bq : N,
                                    .sub = bq,
                                    .init1 = bk < N ? bk : N,
                                    .loc0 = lo[b] * bk,
                                    .loc1 = (hi[b] + 1) * bk < N ? (hi[b] + 1) * bk : N };
                t0[b] = rows;
                T[b] = anc_pool(pb->q + off, pb->k + off, N, d, causal, pb->s.scale, &g[b], &sc, rows);
                rows += T[b];
            }
            anc_keep(pb->k + off, N, d, causal, pb->s.scale, st->theta, g, T, t0, qz - qa, &sc, stripes,
                     (size_t)N, n);
            for (int qb = qa; ok && qb < qz; qb++) {
                /* the first and the local blocks densely (one ascending
                 * call per row: the layout then has nothing to sort), plus
                 * the stripes */
                const int b = qb - qa;
                int nk = 0;
                if (lo[b] > 0) kbs[nk++] = 0;
                for (int kb = lo[b]; kb <= hi[b]; kb++) kbs[nk++] = kb;
                int ra = ab_layout_add_blocks(l, h, qb, kbs, nk);
                if (ra == AB_OK) ra = ab_layout_add_tokens(l, h, qb, stripes + (size_t)b * N, n[b]);
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
        free(kbs);
    }
    free(kp);
    if (rc == AB_ENOMEM) ab_set_error(state, "anchor_small: out of memory");
    bytes += 4.0 * H * (double)N * d; /* K once per head (anc_pool) */
    return rc == AB_OK ? ab_layout_set_cost(l, flops, bytes) : rc;
}

const ab_method ab_anchor_small = {
    .abi = AB_ABI_VERSION,
    .family = "block",
    .name = "anchor_small",
    .summary = "our AnchorAttention variant: one-block first/local regions and per-block stripes (the official "
               "2048-key regions are dense below 4K; this selects at a few thousand tokens)",
    .reference = "Zhang et al. 2025, AnchorAttention: Difference-Aware Sparse Attention with Stripe Granularity, arXiv 2505.23520",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_THETA] = { .name = "theta", .def = 3.0, .min = 0, .max = 1e4, .is_int = 0,
                      .help = "keep key j if s*qbar.k_j + theta >= the block's pooled anchor (logit units)" },
        [P_LOCAL] = { .name = "local_blocks", .def = 1, .min = 1, .max = 1024, .is_int = 1,
                      .help = "local window in key blocks ending at the diagonal (computed densely)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_THETA, .increasing = 1, .log_scale = 0 },
    .state_size = sizeof(anchor_small_state),
    .init = anchor_small_init,
    .select = anchor_small_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_anchor_small)
