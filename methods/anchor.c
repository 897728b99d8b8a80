/* anchor.c — `anchor`: AnchorAttention's difference-aware stripe selection
 * (Zhang et al. 2025, "AnchorAttention: Difference-Aware Sparse Attention
 * with Stripe Granularity", arXiv 2505.23520).
 *
 * 1. Pattern-based anchor: the largest logits sit on the initial tokens and
 *    the local window, so each query row's anchor is
 *      x_a(i) = max_j in [init, window] q_i . k_j * scale,
 *    over the first key block and the local key blocks (causal).
 * 2. Difference-aware stripes: queries are compressed by block averaging;
 *    for query block qb the estimated logit of every visible key j is
 *    qbar(qb) . k_j * scale, compared with the block's mean anchor
 *    avgpool(x_a): key j is kept (a "stripe", i.e. a key column for the whole
 *    query block) iff  avgpool(x_a) - qbar . k_j * scale <= theta.
 * 3. Execution: the initial and local blocks densely plus the discrete
 *    stripes, a MIXED layout here (blocks + key tokens; the gather kernel
 *    loads the discrete keys, as the paper's kernel does).
 *
 * Density knob: theta (the margin, in logit units; rises with theta,
 * continuous). The local window is `local_blocks` key blocks ending at the
 * diagonal (default 1, the query block's own block, as the paper computes
 * the anchor on the initial block and the local block). The paper's theta
 * depends on the model's logit scale; our default 3 nats is not theirs.
 * Cost O(N^2 d / block_q) + O(N block d); memory O(N) per thread.
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdlib.h>

typedef struct anchor_state {
    double theta;     /* margin below the anchor */
    int local_blocks; /* key blocks of the local window, ending at the diagonal */
} anchor_state;

enum { P_THETA = 0, P_LOCAL, P_COUNT };

static int anchor_init(void *state, const ab_params *p, const ab_shape *s)
{
    anchor_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "anchor: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_THETA] >= 0 && p->v[P_THETA] <= 1e4) || !(p->v[P_LOCAL] >= 1 && p->v[P_LOCAL] <= 1024)) {
        ab_set_error(state, "anchor: theta must be in [0, 1e4], local_blocks in [1, 1024]");
        return AB_EINVAL;
    }
    st->theta = p->v[P_THETA];
    st->local_blocks = (int)p->v[P_LOCAL];
    return AB_OK;
}

static int anchor_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const anchor_state *st = state;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    const float scale = pb->s.scale;
    const int rows = H * nqb;
    int rc = AB_OK;

#pragma omp parallel
    {
        float *qm = malloc((size_t)d * sizeof *qm);
        float *bt = malloc((size_t)d * BS_PANEL * sizeof *bt);
        float *est = malloc((size_t)N * sizeof *est);           /* (N) estimated logits of one block */
        int32_t *stripes = malloc((size_t)N * sizeof *stripes); /* (N) kept key tokens of one block */
        int ok = qm && bt && est && stripes;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 2)
        for (int r = 0; r < rows; r++) {
            if (!ok) continue;
            const int h = r / nqb, qb = r % nqb;
            const float *q = pb->q + (size_t)h * N * d, *k = pb->k + (size_t)h * N * d;
            const int r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
            const int diag = bs_diag_block(qb, bq, bk, N);
            const int lo = diag - st->local_blocks + 1 > 0 ? diag - st->local_blocks + 1 : 0;
            const int hi =
                causal ? diag
                       : (diag + st->local_blocks - 1 < nkb - 1 ? diag + st->local_blocks - 1 : nkb - 1);
            /* anchor: per row max logit over block 0 and blocks [lo, hi] */
            double asum = 0.0;
            for (int i = 0; i < nr; i++) {
                const int qi = r0 + i;
                float m = -INFINITY;
                for (int b = 0; b <= hi; b = (b == 0 && lo > 1) ? lo : b + 1) {
                    const int j0 = b * bk, j1 = (b + 1) * bk < N ? (b + 1) * bk : N;
                    for (int j = j0; j < j1 && (!causal || j <= qi); j++) {
                        float s = 0.0f;
                        for (int c = 0; c < d; c++) s += q[(size_t)qi * d + c] * k[(size_t)j * d + c];
                        s *= scale;
                        m = s > m ? s : m;
                    }
                }
                asum += m;
            }
            const double anchor = asum / nr;
            /* stripes: pooled query against every visible key outside the dense blocks */
            bs_mean_rows(q, d, r0, nr, qm);
            const int kc = causal ? r0 + nr : N;
            bs_gemm_nt(qm, d, 1, k, d, kc, d, scale, est, kc, bt);
            int n = 0;
            for (int j = 0; j < kc; j++) {
                const int b = j / bk;
                if (b == 0 || (b >= lo && b <= hi)) continue;
                if (anchor - est[j] <= st->theta) stripes[n++] = j;
            }
            /* the first and the local blocks densely, plus the stripes */
            int ra = ab_layout_add_block(l, h, qb, 0);
            if (ra == AB_OK) ra = ab_layout_add_block_range(l, h, qb, lo, hi + 1);
            if (ra == AB_OK) ra = ab_layout_add_tokens(l, h, qb, stripes, n);
            if (ra != AB_OK) {
                ok = 0;
#pragma omp atomic write
                rc = ra;
            }
        }
        free(qm);
        free(bt);
        free(est);
        free(stripes);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "anchor: out of memory");
    return rc;
}

const ab_method ab_anchor = {
    .abi = AB_ABI_VERSION,
    .name = "anchor",
    .summary = "AnchorAttention: anchor = max logit on first + local blocks; key stripes within theta of it (pooled queries)",
    .reference = "Zhang et al. 2025, AnchorAttention: Difference-Aware Sparse Attention with Stripe Granularity, arXiv 2505.23520",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_THETA] = { .name = "theta", .def = 3.0, .min = 0, .max = 1e4, .is_int = 0,
                      .help = "keep key j if anchor - pooled-query logit(j) <= theta (logit units)" },
        [P_LOCAL] = { .name = "local_blocks", .def = 1, .min = 1, .max = 1024, .is_int = 1,
                      .help = "local window in key blocks ending at the diagonal (computed densely)" },
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
