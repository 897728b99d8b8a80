/* chunkllm_proxy.c — `chunkllm_proxy`: a TRAINING-FREE PROXY of ChunkLLM's
 * chunk selection (Ouyang, Lv, Ren, Wei, Wang and Feng 2025, "ChunkLLM: A
 * Lightweight Pluggable Framework for Accelerating LLMs Inference",
 * arXiv 2510.02361; no official code was available to us).
 *
 * ChunkLLM cuts the context into semantic chunks at boundaries predicted by
 * a trained Chunk Adapter (an FFN on the first layer's hidden states,
 * trained on sentence boundaries), scores the chunks per layer with trained
 * Q- and K-Adapters (distilled from the full attention), keeps the top-k
 * chunks, and — its "intra-chunk attention consistency" — re-selects only
 * when the current token is a chunk boundary: the tokens of a chunk reuse
 * the selection made at the boundary before them.
 * This proxy:
 *   - fixed-size chunks: the key blocks of 64 (no boundary predictor, no
 *     semantic chunks: the layout kernels need a fixed grid);
 *   - a chunk is represented by the key of its last token (its boundary
 *     token) and a query chunk selects with the query of the boundary token
 *     before it (row qb * 64 - 1; row 0 for the first chunk), as the
 *     boundary-triggered selection does; the adapters are identities, so
 *     the score is scale * q_boundary . k_boundary;
 *   - the chunk holding the query rows and the `local` - 1 chunks before it
 *     and the first `sink` chunks the query chunk may see (under a document
 *     mask, those of its document) are always kept (ours: the paper's own
 *     locality rule and budgets could not be checked offline), then the
 *     best k other chunks the base mask leaves non-empty (ties to the lower
 *     index); k is real-valued, dithered over query chunks (mc_dither);
 *   - exact softmax attention over the kept chunks (shared block kernel).
 * What it cannot reproduce: semantic chunk boundaries, the trained
 * (distilled) chunk scores, and its KV-cache retention (a decode-time
 * effect); the boundary-key representative is our reading of the paper.
 * Defaults (ours): k = 8 chunks, local = 1, sink = 1.
 *
 * Cost: FLOPs = 2 d H nqb nkb (every boundary logit, computed whole) +
 * 2 sum_r C_r (the selection over each row's C_r candidates); no pooling
 * (the representatives are copied rows); bytes = 4 (3 H (nqb + nkb) d
 * (rows read, copied, read by the GEMM) + 2 H nqb nkb).
 */
#include "attnbench.h"
#include "methods/repsel.h"

#include <math.h>
#include <stdlib.h>

typedef struct ckl_state {
    double k;  /* selected chunks per query chunk (mean) */
    int local; /* local chunks ending at the query's own */
    int sink;  /* first chunks always kept */
} ckl_state;

enum { P_K = 0, P_LOCAL, P_SINK, P_COUNT };

static int ckl_init(void *state, const ab_params *p, const ab_shape *s)
{
    ckl_state *st = state;
    (void)s;
    if (p->n < P_COUNT || !(p->v[P_K] >= 0.125 && p->v[P_K] <= (1 << 16)) ||
        !(p->v[P_LOCAL] >= 1 && p->v[P_LOCAL] <= (1 << 16)) ||
        !(p->v[P_SINK] >= 0 && p->v[P_SINK] <= (1 << 16))) {
        ab_set_error(state, "chunkllm_proxy: k in [0.125, 65536], local in [1, 65536], sink in [0, 65536]");
        return AB_EINVAL;
    }
    st->k = p->v[P_K];
    st->local = (int)p->v[P_LOCAL];
    st->sink = (int)p->v[P_SINK];
    return AB_OK;
}

static int ckl_row(const void *cfg, const ab_layout *l, int qb, const float *score, const float *agn,
                   const uint8_t *live, uint8_t *taken, bs_cand *cand, int32_t *idx, double *ops)
{
    const ckl_state *st = cfg;
    const int nkb = l->n_kblocks, diag = bs_diag_block(qb, l->block_q, l->block_k, l->seq_len);
    (void)agn;
    int n = 0;
    for (int t = 0; t < st->local && diag - t >= 0; t++) n = rs_force(live, taken, nkb, diag - t, idx, n);
    n = rs_force_first(live, taken, nkb, st->sink, idx, n);
    return rs_take_best(score, live, taken, nkb, mc_dither(st->k, qb), cand, idx, n, ops);
}

static int ckl_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const ckl_state *st = state;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    float *rq = malloc(((size_t)H * nqb * d + 1) * sizeof *rq);
    float *rk = malloc(((size_t)H * nkb * d + 1) * sizeof *rk);
    int rc = rq && rk ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) {
#pragma omp parallel for schedule(static)
        for (int h = 0; h < H; h++) {
            /* the boundary before each query chunk; the last token of each key chunk */
            rs_pick_rows(pb->q + (size_t)h * N * d, N, d, nqb, bq, -1, rq + (size_t)h * nqb * d);
            rs_pick_rows(pb->k + (size_t)h * N * d, N, d, nkb, bk, bk - 1, rk + (size_t)h * nkb * d);
        }
        double flops = 0.0;
        double bytes = 2.0 * H * (double)(nqb + nkb) * d * sizeof(float);
        const rs_spec sp = {
            .name = "chunkllm_proxy", .qrep = rq, .krep = rk, .nrep = nkb, .row = ckl_row, .cfg = st
        };
        rc = rs_select(state, pb, l, &sp, &flops, &bytes);
        if (rc == AB_OK) rc = ab_layout_set_cost(l, flops, bytes);
    } else {
        ab_set_error(state, "chunkllm_proxy: out of memory");
    }
    free(rq);
    free(rk);
    return rc;
}

const ab_method ab_chunkllm_proxy = {
    .abi = AB_ABI_VERSION,
    .family = "block",
    .name = "chunkllm_proxy",
    .summary = "ChunkLLM PROXY: fixed 64-token chunks (paper: learned semantic boundaries) scored by boundary "
               "q.k (paper: trained QK adapters), top-k + sink + local chunks",
    .reference = "Ouyang et al. 2025, ChunkLLM, arXiv 2510.02361",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .block_q = 64,
    .params = {
        [P_K] = { .name = "k", .def = 8, .min = 0.125, .max = 1 << 16, .is_int = 0,
                  .help = "selected chunks per query chunk besides sink and local (fractional: dithered)" },
        [P_LOCAL] = { .name = "local", .def = 1, .min = 1, .max = 1 << 16, .is_int = 1,
                      .help = "local chunks ending at the query's own chunk, always kept" },
        [P_SINK] = { .name = "sink", .def = 1, .min = 0, .max = 1 << 16, .is_int = 1,
                     .help = "first chunks always kept (attention sink)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_K, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(ckl_state),
    .init = ckl_init,
    .select = ckl_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_chunkllm_proxy)
