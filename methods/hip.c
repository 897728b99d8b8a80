/* hip.c — `hip`: HiP, Hierarchically Pruned attention (Lee et al. 2024,
 * "HiP Attention: Sparse Sub-Quadratic Attention with Hierarchical
 * Attention Pruning", arXiv 2406.09827; code DeepAuto-AI/hip-attention).
 *
 * Training-free top-k key estimation in O(N log N): per query block, the
 * candidate keys (causal: the keys before the block; under a base mask
 * they start where the block's first visible key is, e.g. its document's
 * start, so the search stays inside what the mask allows) are split into k equal
 * branches; each iteration halves every branch, scores each half by one
 * representative key (here the half's middle token) by its largest logit
 * over the block's queries (max-pooled, as HiP), and keeps the k best
 * halves (a branch already down to one token competes as it is). After
 * ~log2(N / k) iterations every kept branch is a single token: the block's
 * k keys. The block's own rows (the diagonal block) and the first `sinks`
 * keys are always kept. Token layout.
 *
 * block_q = 32 query rows per block (the paper's block_size_q); k = 512
 * (the paper's default). Deviation: HiP prunes down to key blocks of
 * block_size_k (2 in the paper's kernels); we go down to single tokens.
 * The knob k may be fractional: blocks keep floor(k) or floor(k) + 1 keys,
 * dithered by a golden-ratio sequence over query blocks.
 * Cost O(N · k · log(N / k) · d) per head (each representative is scored
 * against every query of its block).
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

enum { P_K = 0, P_SINKS, P_BLOCKQ, P_COUNT };

typedef struct hip_state {
    double k;    /* keys per query block (density knob) */
    int sinks;   /* leading keys always kept */
    int block_q; /* query rows per block (HiP's block_size_q) */
} hip_state;

/* A branch: keys [a, b) with the score of its representative. */
typedef struct branch {
    float s;
    int32_t a, b;
} branch;

/* x ranks before y: higher score, then lower start (a total order: starts
 * are distinct among disjoint branches). */
static int before(branch x, branch y) { return x.s > y.s || (x.s == y.s && x.a < y.a); }

/* select_top(x, n, k): the k best first (keep.h). */
MC_DEFINE_SELECT_TOP(select_top, branch, before)

static int hip_init(void *state, const ab_params *p, const ab_shape *s)
{
    hip_state *st = state;
    if (p->n < P_COUNT || !(p->v[P_K] >= 1 && p->v[P_K] <= (1 << 24)) ||
        !(p->v[P_SINKS] >= 0 && p->v[P_SINKS] <= (1 << 20)) ||
        !(p->v[P_BLOCKQ] >= 1 && p->v[P_BLOCKQ] <= 4096)) {
        ab_set_error(state, "hip: k must be in [1, 2^24], sinks in [0, 2^20], block_q in [1, 4096]");
        return AB_EINVAL;
    }
    st->block_q = (int)p->v[P_BLOCKQ];
    st->k = p->v[P_K];
    st->sinks = (int)p->v[P_SINKS];
    return AB_OK;
}

/* Score of the representative (middle) key of [a, b): the largest logit
 * over the block's nr queries, qt (d, nr) transposed and scaled; acc (nr). */
static float rep_score(const float *k, const float *qt, float *acc, int d, int nr, int a, int b)
{
    const float *kr = k + (size_t)(a + (b - a) / 2) * d;
    for (int i = 0; i < nr; i++) acc[i] = 0.0f;
    for (int c = 0; c < d; c++) {
        const float kc = kr[c];
        const float *qr = qt + (size_t)c * nr;
        for (int i = 0; i < nr; i++) acc[i] += kc * qr[i];
    }
    float mx = -INFINITY;
    for (int i = 0; i < nr; i++) mx = acc[i] > mx ? acc[i] : mx; /* NaN never wins */
    return mx;
}

/* Selection for head h, added to l one query block at a time. */
static int hip_head(const hip_state *st, const ab_problem *pb, ab_layout *l, int h)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, nqb = l->n_qblocks;
    const float *q = pb->q + (size_t)h * N * d; /* (N, d) */
    const float *k = pb->k + (size_t)h * N * d; /* (N, d) */
    const int kmax = (int)ceil(st->k) < N ? (int)ceil(st->k) : N;
    const ab_mask mask = ab_shape_mask(&pb->s);
    float *qm = malloc((size_t)d * bq * sizeof *qm);             /* (d, block_q) queries, transposed */
    float *acc = malloc((size_t)bq * sizeof *acc);               /* (block_q) */
    branch *br = malloc((size_t)3 * (kmax + 1) * sizeof *br);    /* (3k): k kept + 2k children */
    int32_t *keys = malloc((size_t)(2 * N + bq) * sizeof *keys); /* (2N + block_q) one block's keys */
    int rc = (qm && acc && br && keys) ? AB_OK : AB_ENOMEM;
    for (int qb = 0; rc == AB_OK && qb < nqb; qb++) {
        const int r0 = qb * bq, r1 = r0 + bq < N ? r0 + bq : N;
        /* candidates: keys [A, R) (non-causal: everything but the block),
         * A the first key the base mask lets a row of the block see (0
         * under causal, full, prefix and chunked) */
        const int R = causal ? r0 : N;
        int A, hi_;
        bs_rows_span(&mask, r0, r1, &A, &hi_);
        A = A >= hi_ || A > R ? R : A; /* no visible key before the block: none */
        int kk = mc_dither(st->k, qb);
        kk = kk < kmax ? kk : kmax;
        int n = 0;
        if (R - A <= kk) {
            for (int j = A; j < R; j++) keys[n++] = j;
        } else if (kk > 0) {
            const int nr = r1 - r0;
            for (int i = 0; i < nr; i++)
                for (int c = 0; c < d; c++)
                    qm[(size_t)c * nr + i] = q[(size_t)(r0 + i) * d + c] * pb->s.scale;
            /* k equal branches over [A, R) */
            int nb = kk;
            for (int t = 0; t < nb; t++) {
                br[t].a = (int32_t)(A + (int64_t)t * (R - A) / nb);
                br[t].b = (int32_t)(A + (int64_t)(t + 1) * (R - A) / nb);
                br[t].s = 0.0f;
            }
            for (;;) {
                int longest = 1, nc = 0;
                for (int t = 0; t < nb; t++)
                    longest = br[t].b - br[t].a > longest ? br[t].b - br[t].a : longest;
                if (longest <= 1) break;
                /* halve every branch (children go to the end of br) */
                branch *ch = br + nb;
                for (int t = 0; t < nb; t++) {
                    const int a = br[t].a, b = br[t].b;
                    if (b - a <= 1) {
                        ch[nc++] = (branch){ rep_score(k, qm, acc, d, nr, a, b), a, b };
                    } else {
                        const int m = a + (b - a) / 2;
                        ch[nc++] = (branch){ rep_score(k, qm, acc, d, nr, a, m), a, m };
                        ch[nc++] = (branch){ rep_score(k, qm, acc, d, nr, m, b), m, b };
                    }
                }
                select_top(ch, nc, kk);
                for (int t = 0; t < kk; t++) br[t] = ch[t];
                nb = kk;
            }
            for (int t = 0; t < nb; t++) /* disjoint branches inside [A, R) */
                for (int j = br[t].a; j < br[t].b; j++) keys[n++] = j;
        }
        /* always: the block's own rows (the diagonal) and the sinks */
        for (int j = r0; j < r1; j++) keys[n++] = j;
        const int s1 = st->sinks < N ? st->sinks : N;
        for (int j = 0; j < s1; j++) keys[n++] = j;
        rc = ab_layout_add_tokens(l, h, qb, keys, n);
    }
    free(qm);
    free(acc);
    free(br);
    free(keys);
    return rc;
}

static int hip_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const hip_state *st = state;
    int rc = ab_layout_set_blocks(
        l, st->block_q < l->seq_len ? st->block_q : (l->seq_len > 0 ? l->seq_len : 1), l->block_k);
    if (rc != AB_OK) return rc;
    const int H = l->heads;
#pragma omp parallel for schedule(dynamic, 1)
    for (int h = 0; h < H; h++) {
        const int r = hip_head(st, pb, l, h);
        if (r != AB_OK) {
#pragma omp atomic write
            rc = r;
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "hip: out of memory");
    return rc;
}

const ab_method ab_hip = {
    .abi = AB_ABI_VERSION,
    .name = "hip",
    .summary = "HiP: per 32-query block, hierarchical halving of k branches scored by a middle key (max over queries)",
    .reference = "HiP Attention (Lee et al. 2024, arXiv 2406.09827; DeepAuto-AI/hip-attention)",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_K] = { .name = "k", .def = 512, .min = 1, .max = 1 << 24, .is_int = 0,
                  .help = "keys kept per query block (fractional budgets dithered over blocks)" },
        [P_SINKS] = { .name = "sinks", .def = 0, .min = 0, .max = 1 << 20, .is_int = 1,
                      .help = "leading keys always kept" },
        [P_BLOCKQ] = { .name = "block_q", .def = 32, .min = 1, .max = 4096, .is_int = 1,
                       .help = "query rows per block (HiP block_size_q); representatives scored by their max logit" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_K, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(hip_state),
    .init = hip_init,
    .select = hip_select,
    .run = NULL, /* gather kernel */
    .fini = NULL,
};
AB_REGISTER(ab_hip)
