/* xattention.c — `xattention`: XAttention's antidiagonal block scoring with a
 * cumulative-mass threshold (Xu et al. 2025, "XAttention: Block Sparse
 * Attention with Antidiagonal Scoring", arXiv 2503.16428; code
 * mit-han-lab/x-attention, xattn/src/Xattention.py: xattn_estimate and
 * find_blocks_chunked).
 *
 * Estimation, per head. With stride S, reduced query row rq stands for the S
 * queries rq*S .. rq*S+S-1 and reduced key rk for the S keys rk*S .. rk*S+S-1;
 * their score is the sum along the antidiagonal of that S x S tile,
 *   a(rq, rk) = sum_t q[rq*S + S-1-t] . k[rk*S + t],
 * computed as one dot product of a reversed-strided query row and a strided
 * key row of length S*d (positions past N count as zero vectors). As in the
 * official code the logit scale is 1/(sqrt(d) * S) (the reduced logit is the
 * mean of S ordinary logits), the reduced causal mask keeps rk <= rq, and the
 * softmax runs over each reduced row. Summing the probabilities over the
 * (block_q/S) x (block_k/S) cells of each block gives the block scores; each
 * query-block row is normalised by its total.
 *
 * Selection, per query block (find_blocks_chunked, prefill mode): the first
 * key block (keep_first) and the diagonal block are always kept and their
 * mass counts first; the other blocks follow in descending score and each
 * is kept while the mass kept before it is < tau * total, i.e. the smallest
 * prefix whose cumulative mass reaches tau. tau >= 1 keeps every block.
 *
 * Block and stride. The method declares its official 128-token block
 * (Xattention_prefill's block_size default), so the sweep runs it on
 * 128 x 128 blocks unless a config overrides that; the stride has no default
 * in the official code (the paper uses 8 and 16); ours is 8, i.e. 16 x 16
 * samples per 128-block (8 x 8 on 64-blocks). S must divide block_q and
 * block_k, otherwise the largest common divisor of the three is used.
 *
 * Base masks: the reduced mask generalises the causal one. A reduced row
 * softmaxes over the reduced keys its S queries may see under the base mask
 * (the union of their spans: rk <= rq under causal, the own document's
 * under a document mask), the candidate key blocks are those the mask lets
 * the query block see (bs_rows_span), and key block 0 is forced only when
 * it is one of them. Under causal and full this is exactly the above.
 *
 * Density knob: tau (rises with tau; continuous, the many rows make the step
 * function fine-grained). Not materialised: N x N. Reduced scores of 8 query
 * blocks at a time (8 block_q/S x N/S) per thread, plus the reshaped Q and K
 * (same size as Q and K). Cost O(N^2 d / S): the estimation is itself
 * quadratic, S times cheaper than dense, reported as select time.
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdlib.h>

#define XA_GROUP 8 /* query blocks scored together (shares key panels) */

typedef struct xattn_state {
    double tau;     /* cumulative mass threshold */
    int stride;     /* S */
    int keep_first; /* always keep key block 0 */
} xattn_state;

enum { P_TAU = 0, P_STRIDE, P_KEEP_FIRST, P_COUNT };

static int gcd(int a, int b)
{
    while (b) {
        const int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static int xattn_init(void *state, const ab_params *p, const ab_shape *s)
{
    xattn_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "xattention: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_TAU] >= 0 && p->v[P_TAU] <= 1)) {
        ab_set_error(state, "xattention: threshold=%g outside [0, 1]", p->v[P_TAU]);
        return AB_EINVAL;
    }
    if (!(p->v[P_STRIDE] >= 1 && p->v[P_STRIDE] <= 128)) {
        ab_set_error(state, "xattention: stride=%g outside [1, 128]", p->v[P_STRIDE]);
        return AB_EINVAL;
    }
    st->tau = p->v[P_TAU];
    st->stride = (int)p->v[P_STRIDE];
    st->keep_first = p->v[P_KEEP_FIRST] != 0;
    return AB_OK;
}

/* Reshape one head: qr (nr, S*d) rows of reversed-strided queries, kr (nr,
 * S*d) rows of strided keys, zero past N. */
static void reshape_head(const float *q, const float *k, int n, int d, int S, int nr, float *qr, float *kr)
{
    for (int r = 0; r < nr; r++)
        for (int t = 0; t < S; t++) {
            const int iq = r * S + S - 1 - t, ik = r * S + t;
            float *dq = qr + ((size_t)r * S + t) * d, *dk = kr + ((size_t)r * S + t) * d;
            for (int c = 0; c < d; c++) {
                dq[c] = iq < n ? q[(size_t)iq * d + c] : 0.0f;
                dk[c] = ik < n ? k[(size_t)ik * d + c] : 0.0f;
            }
        }
}

static int xattn_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const xattn_state *st = state;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    const int S = gcd(gcd(st->stride, bq), bk);
    const int nr = (N + S - 1) / S; /* reduced rows (queries and keys) */
    const int D = S * d;            /* reduced row length */
    const int mq = bq / S;          /* reduced rows per query block */
    const float alpha = pb->s.scale / (float)S;
    const int ngrp = (nqb + XA_GROUP - 1) / XA_GROUP;
    const ab_mask mask = ab_shape_mask(&pb->s);

    float *qr = malloc((size_t)H * nr * D * sizeof *qr);          /* (heads, nr, S*d) */
    float *kr = malloc((size_t)H * nr * D * sizeof *kr);          /* (heads, nr, S*d) */
    const int kpb = bk / S;                                       /* reduced keys per key block */
    double cells = 0.0, sorted = 0.0;                             /* reduced scores used; sort work */
    const int npk = (nr + BS_PANEL - 1) / BS_PANEL * BS_PANEL;    /* packed key rows */
    float *kp_all = malloc((size_t)H * npk * D * sizeof *kp_all); /* (heads, npk, S*d) packed */
    int rc = (qr && kr && kp_all) ? AB_OK : AB_ENOMEM;

    if (rc == AB_OK) {
#pragma omp parallel for schedule(static)
        for (int h = 0; h < H; h++)
            reshape_head(pb->q + (size_t)h * N * d, pb->k + (size_t)h * N * d, N, d, S, nr,
                         qr + (size_t)h * nr * D, kr + (size_t)h * nr * D);
            /* the reduced keys packed once per head (bs_pack_nt): every task
         * of the head reuses the panels instead of transposing them again */
#pragma omp parallel for schedule(static)
        for (int h = 0; h < H; h++)
            bs_pack_nt(kr + (size_t)h * nr * D, D, nr, D, kp_all + (size_t)h * npk * D);
#pragma omp parallel reduction(+ : cells, sorted)
        {
            float *sc =
                malloc((size_t)XA_GROUP * mq * nr * sizeof *sc); /* (group*block_q/S, nr) reduced scores */
            double *bsum = malloc((size_t)nkb * sizeof *bsum);   /* (n_kblocks) block scores */
            bs_cand *cand = malloc((size_t)nkb * sizeof *cand);
            uint8_t *kp = malloc((size_t)nkb * sizeof *kp);   /* (n_kblocks) kept blocks of one row */
            int32_t *idx = malloc((size_t)nkb * sizeof *idx); /* (n_kblocks) the same as a list */
            int ok = sc && bsum && cand && kp && idx;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
            /* one task = XA_GROUP consecutive query blocks of one head, so each
             * transposed key panel serves XA_GROUP * block_q / S query rows */
#pragma omp for schedule(dynamic, 1)
            for (int task = 0; task < H * ngrp; task++) {
                if (!ok) continue;
                const int h = task / ngrp, qb0 = (task % ngrp) * XA_GROUP;
                const int qb1 = qb0 + XA_GROUP < nqb ? qb0 + XA_GROUP : nqb;
                const int g0 = qb0 * mq, g1 = qb1 * mq < nr ? qb1 * mq : nr; /* reduced rows of the task */
                const int gkc = causal ? g1 : nr;
                bs_gemm_nt_packed(qr + ((size_t)h * nr + g0) * D, D, g1 - g0, kp_all + (size_t)h * npk * D,
                                  gkc, D, alpha, sc, gkc);
                for (int qb = qb0; ok && qb < qb1; qb++) {
                    const int rq0 = qb * mq;
                    const int nq = nr - rq0 < mq ? nr - rq0 : mq; /* >= 1 */
                    const int diag = bs_diag_block(qb, bq, bk, N);
                    int lo, hi; /* keys the query block may see */
                    bs_rows_span(&mask, qb * bq, (qb + 1) * bq, &lo, &hi);
                    const int b0 = lo < hi ? lo / bk : 0,
                              nc = lo < hi ? (hi + bk - 1) / bk : 0; /* candidates [b0, nc) */
                    for (int b = 0; b < nkb; b++) bsum[b] = 0.0;
                    for (int i = 0; i < nq; i++) {
                        /* reduced keys [j0, nv) of this reduced row's S queries */
                        int a0, a1;
                        bs_rows_span(&mask, (rq0 + i) * S, (rq0 + i + 1) * S, &a0, &a1);
                        const int j0 = a0 < a1 ? a0 / S : 0, jv = a0 < a1 ? (a1 + S - 1) / S : 0;
                        const int nv = jv < gkc ? jv : gkc;
                        if (j0 >= nv) continue;
                        /* softmax in place (float, the kernels' vector exp), then the
                         * probabilities summed per key block (kpb reduced
                         * keys each) and added in double */
                        float *srow = sc + (size_t)(rq0 + i - g0) * gkc;
                        const float mx = bs_max(srow + j0, nv - j0);
                        const double inv = 1.0 / ab_exp_max_sum(srow + j0, nv - j0, mx);
                        cells += nv - j0;
                        for (int j = j0; j < nv;) {
                            const int b = j / kpb, je = (b + 1) * kpb < nv ? (b + 1) * kpb : nv;
                            float part = 0.0f;
                            for (; j < je; j++) part += srow[j];
                            bsum[b < nkb ? b : nkb - 1] += (double)part * inv;
                        }
                    }
                    double total = 0.0;
                    for (int b = b0; b < nc; b++) total += bsum[b];
                    for (int b = 0; b < nkb; b++) kp[b] = 0;
                    if (st->tau >= 1.0) {
                        for (int b = b0; b < nc; b++) kp[b] = 1;
                    } else {
                        /* forced blocks first, their mass counted */
                        double cum = bsum[diag];
                        kp[diag] = 1;
                        if (st->keep_first && b0 == 0 && !kp[0]) {
                            kp[0] = 1;
                            cum += bsum[0];
                        }
                        int m = 0;
                        for (int b = b0; b < nc; b++)
                            if (!kp[b]) {
                                cand[m].score = bsum[b];
                                cand[m].idx = b;
                                m++;
                            }
                        bs_sort_desc(cand, m);
                        sorted += m > 1 ? m * log2((double)m) : 0.0;
                        const double need = st->tau * total;
                        for (int t = 0; t < m && cum < need; t++) {
                            kp[cand[t].idx] = 1;
                            cum += cand[t].score;
                        }
                    }
                    int n = 0;
                    for (int b = 0; b < nkb; b++)
                        if (kp[b]) idx[n++] = b;
                    const int ra = ab_layout_add_blocks(l, h, qb, idx, n);
                    if (ra != AB_OK) {
                        ok = 0;
#pragma omp atomic write
                        rc = ra;
                    }
                }
            }
            free(sc);
            free(bsum);
            free(cand);
            free(kp);
            free(idx);
        }
    }
    if (rc == AB_OK) {
        /* per reduced score used: a dot product of length S*d (2*S*d), max, exp,
         * sum, block sum (4); the sorts; bytes: Q and K read, each reduced score
         * written and read back */
        const double flops = cells * (2.0 * D + 4.0) + sorted;
        const double bytes = 2.0 * H * (double)N * d * sizeof(float) + 2.0 * cells * sizeof(float);
        rc = ab_layout_set_cost(l, flops, bytes);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "xattention: out of memory");
    free(qr);
    free(kr);
    free(kp_all);
    return rc;
}

const ab_method ab_xattention = {
    .abi = AB_ABI_VERSION,
    .family = "block",
    .name = "xattention",
    .summary = "XAttention: antidiagonal (stride S) block scores, keep blocks to cumulative mass tau",
    .reference = "Xu et al. 2025, XAttention, arXiv 2503.16428 (mit-han-lab/x-attention)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .block_q = 128, /* the official block_size (xattn_estimate, find_blocks_chunked) */
    .params = {
        [P_TAU] = { .name = "threshold", .def = 0.9, .min = 0, .max = 1, .is_int = 0,
                    .help = "cumulative block mass to keep per query block (tau; 1 keeps all)" },
        [P_STRIDE] = { .name = "stride", .def = 8, .min = 1, .max = 128, .is_int = 1,
                       .help = "antidiagonal stride S (official 16 on 128-blocks; 8 keeps 8x8 samples on 64-blocks)" },
        [P_KEEP_FIRST] = { .name = "keep_first", .def = 1, .min = 0, .max = 1, .is_int = 1,
                           .help = "always keep key block 0, as find_blocks_chunked does (diagonal always kept)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_TAU, .increasing = 1, .log_scale = 0 },
    .state_size = sizeof(xattn_state),
    .init = xattn_init,
    .select = xattn_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_xattention)
