/* dhsa.c — `dhsa`: DHSA, Dynamic Hierarchical Sparse Attention (2025,
 * "Long-Context Modeling with Dynamic Hierarchical Sparse Attention for
 * On-Device LLMs", arXiv 2510.24606).
 *
 * Per head:
 *   1. Adaptive chunking: a boundary goes where neighbouring keys stop
 *      resembling each other. With c_j = cos(k_{j-1}, k_j), the threshold is
 *      the (N / chunk_len)-th smallest c_j; scanning left to right a chunk
 *      ends before j when it has >= min_chunk tokens and c_j <= threshold, or
 *      when it reaches max_chunk tokens. (DHSA predicts boundaries with a
 *      small trained network; this similarity-drop rule is the training-free
 *      proxy docs/spec/METHODS.md describes.)
 *   2. Chunk representations by length-normalised aggregation, as the paper:
 *      the chunk's mean query / key times sqrt(chunk length).
 *   3. Chunk-pair scores S_c = Q̂ K̂ᵀ · scale, upsampled to tokens (every
 *      token pair inherits its chunks' score); each query keeps its top-k
 *      tokens, i.e. whole key chunks in descending score order until k
 *      tokens (the last chunk cut; equal scores: lower positions first). A
 *      query's own chunk is always kept (causal: the chunks after it are not
 *      candidates).
 * All queries of a chunk share one selection; the layout holds one list per
 * query block (harness block_q), so a block keeps the union over the chunks
 * its rows belong to (measured in the density). Knob k (tokens per query,
 * fractional budgets dithered over chunks by a golden-ratio sequence).
 * Cost O(N d + C² d) per head for C chunks, plus O(C log C) per query block.
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

enum { P_K = 0, P_CHUNK, P_MIN, P_MAX, P_COUNT };

typedef struct dhsa_state {
    double k;      /* tokens per query (density knob) */
    int chunk_len; /* mean chunk length aimed at */
    int min_chunk; /* shortest chunk (except the last) */
    int max_chunk; /* longest chunk */
} dhsa_state;

static int cmp_float(const void *pa, const void *pb)
{
    const float a = *(const float *)pa, b = *(const float *)pb;
    return (a > b) - (a < b);
}

static int dhsa_init(void *state, const ab_params *p, const ab_shape *s)
{
    dhsa_state *st = state;
    if (p->n < P_COUNT || !(p->v[P_K] >= 1 && p->v[P_K] <= (1 << 24))) {
        ab_set_error(state, "dhsa: k must be in [1, 2^24]");
        return AB_EINVAL;
    }
    const double c = p->v[P_CHUNK], mn = p->v[P_MIN], mx = p->v[P_MAX];
    if (!(mn >= 1 && mn <= c && c <= mx && mx <= (1 << 20))) {
        ab_set_error(state, "dhsa: need 1 <= min_chunk <= chunk_len <= max_chunk <= 2^20");
        return AB_EINVAL;
    }
    st->k = p->v[P_K];
    st->chunk_len = (int)c;
    st->min_chunk = (int)mn;
    st->max_chunk = (int)mx;
    return AB_OK;
}

/* Chunk boundaries of head h: start[0..nc] with start[nc] = N. Returns nc. */
static int chunk_bounds(const dhsa_state *st, const float *k, int N, int d, float *sim, float *tmp,
                        int32_t *start)
{
    for (int j = 1; j < N; j++) {
        const float *a = k + (size_t)(j - 1) * d, *b = k + (size_t)j * d;
        double ab = 0, aa = 0, bb = 0;
        for (int c = 0; c < d; c++) {
            ab += (double)a[c] * b[c];
            aa += (double)a[c] * a[c];
            bb += (double)b[c] * b[c];
        }
        const double den = sqrt(aa * bb);
        sim[j] = den > 0 ? (float)(ab / den) : 1.0f;
        if (isnan(sim[j])) sim[j] = 1.0f;
        tmp[j - 1] = sim[j];
    }
    float thr = -INFINITY;
    const int cuts = (N + st->chunk_len - 1) / st->chunk_len - 1; /* boundaries aimed at */
    if (cuts > 0 && N > 1) {
        qsort(tmp, (size_t)(N - 1), sizeof *tmp, cmp_float);
        thr = tmp[cuts - 1 < N - 2 ? cuts - 1 : N - 2];
    }
    int nc = 0;
    start[nc++] = 0;
    for (int j = 1; j < N; j++) {
        const int len = j - start[nc - 1];
        if ((len >= st->min_chunk && sim[j] <= thr) || len >= st->max_chunk) start[nc++] = j;
    }
    start[nc] = N;
    return nc;
}

/* Selection for head h, added to l one (query block, chunk) at a time. */
static int dhsa_head(const dhsa_state *st, const ab_problem *pb, ab_layout *l, int h)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, nqb = l->n_qblocks;
    const float *q = pb->q + (size_t)h * N * d;               /* (N, d) */
    const float *k = pb->k + (size_t)h * N * d;               /* (N, d) */
    float *sim = malloc((size_t)N * sizeof *sim);             /* (N) */
    float *tmp = malloc((size_t)N * sizeof *tmp);             /* (N) */
    int32_t *start = malloc((size_t)(N + 1) * sizeof *start); /* (C + 1) */
    int32_t *chunk_of = malloc((size_t)N * sizeof *chunk_of); /* (N) */
    float *qc = NULL, *kc = NULL;
    bs_cand *sc = malloc((size_t)N * sizeof *sc);     /* (C) */
    int32_t *keys = malloc((size_t)N * sizeof *keys); /* (N) one chunk's keys */
    int rc = (sim && tmp && start && chunk_of && sc && keys) ? AB_OK : AB_ENOMEM;
    int nc = 0;
    if (rc == AB_OK) {
        nc = chunk_bounds(st, k, N, d, sim, tmp, start);
        qc = calloc((size_t)nc * d, sizeof *qc); /* (C, d) */
        kc = calloc((size_t)nc * d, sizeof *kc); /* (C, d) */
        if (!qc || !kc) rc = AB_ENOMEM;
    }
    if (rc == AB_OK) {
        for (int c = 0; c < nc; c++) {
            const int a = start[c], b = start[c + 1];
            const float w = 1.0f / sqrtf((float)(b - a)); /* mean · sqrt(len) */
            for (int j = a; j < b; j++) {
                chunk_of[j] = c;
                for (int x = 0; x < d; x++) {
                    qc[(size_t)c * d + x] += q[(size_t)j * d + x];
                    kc[(size_t)c * d + x] += k[(size_t)j * d + x];
                }
            }
            for (int x = 0; x < d; x++) {
                qc[(size_t)c * d + x] *= w;
                kc[(size_t)c * d + x] *= w;
            }
        }
    }
    for (int qb = 0; rc == AB_OK && qb < nqb; qb++) {
        const int r0 = qb * bq, r1 = r0 + bq < N ? r0 + bq : N;
        for (int c = chunk_of[r0]; rc == AB_OK && c <= chunk_of[r1 - 1]; c++) {
            /* own chunk always */
            int nk = 0;
            for (int j = start[c]; j < start[c + 1]; j++) keys[nk++] = j;
            const int ncand = causal ? c : nc; /* candidate key chunks */
            int n = 0;
            for (int t = 0; t < ncand; t++) {
                if (t == c) continue;
                float acc = 0.0f;
                for (int x = 0; x < d; x++) acc += qc[(size_t)c * d + x] * kc[(size_t)t * d + x];
                sc[n++] = (bs_cand){ isnan(acc) ? -INFINITY : acc * pb->s.scale, t };
            }
            bs_sort_desc(sc, n);
            int64_t left = mc_dither(st->k, c);
            for (int t = 0; t < n && left > 0; t++) { /* chunks other than c: disjoint */
                const int a = start[sc[t].idx], b = start[sc[t].idx + 1];
                const int take = (int64_t)(b - a) < left ? b - a : (int)left;
                for (int j = a; j < a + take; j++) keys[nk++] = j;
                left -= take;
            }
            rc = ab_layout_add_tokens(l, h, qb, keys, nk);
        }
    }
    free(sim);
    free(tmp);
    free(start);
    free(chunk_of);
    free(qc);
    free(kc);
    free(sc);
    free(keys);
    return rc;
}

static int dhsa_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const dhsa_state *st = state;
    const int H = l->heads;
    int rc = AB_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int h = 0; h < H; h++) {
        const int r = dhsa_head(st, pb, l, h);
        if (r != AB_OK) {
#pragma omp atomic write
            rc = r;
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "dhsa: out of memory");
    return rc;
}

const ab_method ab_dhsa = {
    .abi = AB_ABI_VERSION,
    .name = "dhsa",
    .summary = "DHSA: adaptive chunks at key-similarity drops, length-normalised chunk scores, top-k tokens",
    .reference = "DHSA (Long-Context Modeling with Dynamic Hierarchical Sparse Attention, 2025, arXiv 2510.24606)",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_K] = { .name = "k", .def = 1024, .min = 1, .max = 1 << 24, .is_int = 0,
                  .help = "tokens kept per query besides its own chunk (fractional: dithered)" },
        [P_CHUNK] = { .name = "chunk_len", .def = 64, .min = 1, .max = 1 << 20, .is_int = 1,
                      .help = "mean chunk length aimed at (sets the similarity threshold)" },
        [P_MIN] = { .name = "min_chunk", .def = 16, .min = 1, .max = 1 << 20, .is_int = 1,
                    .help = "shortest chunk" },
        [P_MAX] = { .name = "max_chunk", .def = 256, .min = 1, .max = 1 << 20, .is_int = 1,
                    .help = "longest chunk" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_K, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(dhsa_state),
    .init = dhsa_init,
    .select = dhsa_select,
    .run = NULL, /* gather kernel */
    .fini = NULL,
};
AB_REGISTER(ab_dhsa)
