/* oracle_topk_block.c — `oracle_topk_block`: the block-sparse upper bound.
 * For each head and query block, the exact attention mass each key block
 * receives (the sum over the block's rows of the softmax probabilities of its
 * keys) is computed from the real scores; the top-k key blocks by mass are
 * kept (ties to the lower index; causal: only key blocks up to the diagonal
 * are candidates). No practical selector can beat it at equal block count,
 * the yardstick for MInference / XAttention-style block selectors.
 *
 * The budget may be fractional: k = 2.4 keeps 2 blocks in 60% of the query
 * blocks and 3 in 40%, spread evenly over the rows by a fixed golden-ratio
 * sequence, so the density knob moves smoothly even when there are only a
 * few dozen blocks per row (a whole-block budget jumps by 1/n_blocks).
 *
 * Cost: O(N² d) like dense attention, reported honestly as select time.
 * Memory: O(block_q · N) per thread (one query block's scores), never N × N.
 */
#include "attnbench.h"
#include "methods/common.h"

#include <math.h>
#include <stdlib.h>

typedef struct oracle_state {
    double topk; /* mean key blocks kept per query block (may be fractional) */
} oracle_state;

/* A candidate key block and the mass it receives. */
typedef struct block_mass {
    double mass;
    int32_t idx;
} block_mass;

/* Per-thread scratch. */
typedef struct scratch {
    float *s;       /* (block_q, N) scaled logits, then exp(logit - row max) */
    float *kt;      /* (head_dim, block_k) one key block, transposed */
    block_mass *bm; /* (n_kblocks) */
} scratch;

static int oracle_init(void *state, const ab_params *p, const ab_shape *s)
{
    oracle_state *st = state;
    if (p->n < 1 || !(p->v[0] >= 1 && p->v[0] <= (1 << 16))) {
        ab_set_error(state, "oracle_topk_block: topk must be in [1, 65536]");
        return AB_EINVAL;
    }
    st->topk = p->v[0];
    return AB_OK;
}

/* Higher mass first, then lower index: a total order, so qsort is
 * deterministic. */
static int by_mass_desc(const void *pa, const void *pb)
{
    const block_mass *a = pa, *b = pb;
    if (a->mass > b->mass) return -1;
    if (a->mass < b->mass) return 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* Block masses for query rows [r0, r0 + nr) of head h into w->bm, sorted by
 * mass; returns the number of candidate key blocks. */
static int qblock_masses(const ab_problem *pb, const ab_layout *l, int h, int r0, int nr, scratch *w)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, bk = l->block_k, causal = pb->s.causal;
    const float scale = pb->s.scale;
    const int kc = causal ? r0 + nr : N;  /* key columns any row here may see */
    const int nc = (kc + bk - 1) / bk;    /* candidate key blocks */
    const float *q = pb->q + ((size_t)h * N + r0) * d; /* (nr, d) */
    const float *k = pb->k + (size_t)h * N * d;        /* (N, d) */

    /* Logits S (nr, kc), one key block at a time: with the block transposed
     * the inner loop runs over keys, which vectorises without reassociation. */
    for (int kb = 0; kb < nc; kb++) {
        const int j0 = kb * bk, nj = kc - j0 < bk ? kc - j0 : bk;
        for (int j = 0; j < nj; j++)
            for (int c = 0; c < d; c++) w->kt[(size_t)c * bk + j] = k[(size_t)(j0 + j) * d + c];
        for (int i = 0; i < nr; i++) {
            float *srow = w->s + (size_t)i * kc + j0; /* (nj) */
            for (int j = 0; j < nj; j++) srow[j] = 0.0f;
            for (int c = 0; c < d; c++) {
                const float qc = q[(size_t)i * d + c] * scale;
                const float *kr = w->kt + (size_t)c * bk;
                for (int j = 0; j < nj; j++) srow[j] += qc * kr[j];
            }
        }
    }

    for (int kb = 0; kb < nc; kb++) {
        w->bm[kb].mass = 0.0;
        w->bm[kb].idx = kb;
    }
    /* Per row: softmax over its valid keys, then add each key block's share. */
    for (int i = 0; i < nr; i++) {
        float *srow = w->s + (size_t)i * kc; /* (kc) */
        const int nv = causal ? r0 + i + 1 : kc;
        float m = srow[0];
        for (int j = 1; j < nv; j++) m = srow[j] > m ? srow[j] : m;
        double sum = 0.0;
        for (int j = 0; j < nv; j++) {
            srow[j] = expf(srow[j] - m);
            sum += srow[j];
        }
        const double inv = 1.0 / sum;
        for (int kb = 0; kb * bk < nv; kb++) {
            const int j1 = (kb + 1) * bk < nv ? (kb + 1) * bk : nv;
            double acc = 0.0;
            for (int j = kb * bk; j < j1; j++) acc += srow[j];
            w->bm[kb].mass += acc * inv;
        }
    }
    for (int kb = 0; kb < nc; kb++)
        if (isnan(w->bm[kb].mass)) w->bm[kb].mass = -1.0; /* non-finite input: rank last */
    qsort(w->bm, (size_t)nc, sizeof *w->bm, by_mass_desc);
    return nc;
}

static int oracle_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const oracle_state *st = state;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    const int kmax = (int)ceil(st->topk);
    const int keep = kmax < nkb ? kmax : nkb; /* most blocks a row keeps */
    const int rows = H * nqb;

    int rc = AB_OK;

#pragma omp parallel
    {
        scratch w;
        w.s = malloc((size_t)bq * N * sizeof *w.s);
        w.kt = malloc((size_t)d * bk * sizeof *w.kt);
        w.bm = malloc((size_t)nkb * sizeof *w.bm);
        int32_t *chosen = malloc((size_t)(keep > 0 ? keep : 1) * sizeof *chosen); /* (keep) one row's blocks */
        int ok = w.s && w.kt && w.bm && chosen;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int r = 0; r < rows; r++) {
            if (!ok) continue;
            const int h = r / nqb, qb = r % nqb;
            const int r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
            const int nc = qblock_masses(pb, l, h, r0, nr, &w);
            /* this row's budget: floor(topk), plus one with probability
             * frac(topk), dithered by the golden-ratio sequence of qb */
            const int kr = mc_dither(st->topk, qb);
            const int kc = kr < keep ? kr : keep;
            const int n = nc < kc ? nc : kc; /* >= 1: nc >= 1, topk >= 1 */
            for (int t = 0; t < n; t++) chosen[t] = w.bm[t].idx;
            const int ra = ab_layout_add_blocks(l, h, qb, chosen, n); /* thread-safe */
            if (ra != AB_OK) {
                ok = 0;
#pragma omp atomic write
                rc = ra;
            }
        }
        free(w.s);
        free(w.kt);
        free(w.bm);
        free(chosen);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "oracle_topk_block: out of memory (block_q x N scores per thread)");
    return rc;
}

const ab_method ab_oracle_topk_block = {
    .abi = AB_ABI_VERSION,
    .name = "oracle_topk_block",
    .summary = "upper bound: per query block, the top-k key blocks by exact attention mass",
    .reference = "oracle upper bound (cf. MInference / XAttention block-sparse analyses)",
    .devices = AB_CPU | AB_GPU,
    .phases = AB_PREFILL,
    .params = {
        { .name = "topk", .def = 8, .min = 1, .max = 1 << 16, .is_int = 0,
          .help = "mean key blocks kept per query block (fractional budgets dithered over rows)" },
        { .name = NULL },
    },
    .density_knob = { .param = 0, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(oracle_state),
    .init = oracle_init,
    .select = oracle_select,
    .run = NULL, /* block-sparse kernel */
    .fini = NULL,
};
AB_REGISTER(ab_oracle_topk_block)
