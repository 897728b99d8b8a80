/* hax.c — `hax`: HAX, locality-sensitive Hashing Attention with sparse Key
 * Selection (Zhan, Zhao, Zhu, Tang 2025, "Overcoming Long-Context
 * Limitations of State-Space Models via Context-Dependent Sparse
 * Attention", arXiv 2507.00449; code DeepGraphLearning/HAX), the paper that
 * defines the joint-recall task. HAX combines two context-dependent sparse
 * patterns: LSH attention (queries routed to keys hashed to the same bucket,
 * as in Reformer, Kitaev et al. 2020) and key selection (KS: every query also
 * attends a few globally important keys), plus local attention.
 *
 * Training-free proxy, per head:
 *   - LSH: `rounds` seeded random rotations R (head_dim × buckets/2, Gaussian,
 *     from pb->seed and the head); a vector x falls in bucket
 *     argmax([xR, −xR]) (angular LSH). Keys are hashed one by one; a query
 *     block is hashed by its mean query.
 *   - Each query block ranks the keys sharing its bucket in any round by
 *     the mean query's logit and keeps the best `keys` of them.
 *   - KS: if the bucket-mates run out before the budget, the rest of the
 *     budget goes to the keys with the highest mean-query logit overall
 *     (HAX learns its key scorer; the pooled-query logit stands in for it).
 *   - Local: each query block's own rows and the `window` keys before them.
 * Knob `keys` (keys per query block, fractional budgets dithered over
 * blocks by a golden-ratio sequence): density rises with it. Token layout.
 * Cost O(N² d / block_q) for the pooled logits, O(N d · buckets) hashing.
 */
#include "attnbench.h"
#include "methods/keep.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { P_KEYS = 0, P_BUCKETS, P_ROUNDS, P_WINDOW, P_COUNT };

typedef struct hax_state {
    double keys; /* keys selected per query block (density knob) */
    int buckets; /* LSH buckets per round (even) */
    int rounds;  /* hashing rounds */
    int window;  /* local keys per query block */
} hax_state;

static double gauss(uint64_t *s)
{
    *s = mc_mix64(*s);
    const double u1 = ((*s >> 11) + 0.5) * 0x1.0p-53;
    *s = mc_mix64(*s);
    const double u2 = ((*s >> 11) + 0.5) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static int hax_init(void *state, const ab_params *p, const ab_shape *s)
{
    hax_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "hax: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_KEYS] >= 1 && p->v[P_KEYS] <= (1 << 24))) {
        ab_set_error(state, "hax: keys=%g outside [1, 2^24]", p->v[P_KEYS]);
        return AB_EINVAL;
    }
    const int b = (int)p->v[P_BUCKETS];
    if (b < 2 || b > 4096 || b % 2 || !(p->v[P_ROUNDS] >= 1 && p->v[P_ROUNDS] <= 16) ||
        !(p->v[P_WINDOW] >= 1 && p->v[P_WINDOW] <= (1 << 20))) {
        ab_set_error(state, "hax: buckets must be even in [2, 4096], rounds in [1, 16], window in [1, 2^20]");
        return AB_EINVAL;
    }
    st->keys = p->v[P_KEYS];
    st->buckets = b;
    st->rounds = (int)p->v[P_ROUNDS];
    st->window = (int)p->v[P_WINDOW];
    return AB_OK;
}

/* Bucket of x (d) under rotation rot (d, half): argmax over [xR, -xR]. */
static int lsh_bucket(const float *x, const float *rot, int d, int half)
{
    int best = 0;
    double bv = -INFINITY;
    for (int t = 0; t < half; t++) {
        double acc = 0.0;
        for (int c = 0; c < d; c++) acc += (double)x[c] * rot[(size_t)c * half + t];
        if (acc > bv) {
            bv = acc;
            best = t;
        }
        if (-acc > bv) {
            bv = -acc;
            best = half + t;
        }
    }
    return best;
}

/* A scored key. */
typedef struct scored {
    float s;
    int32_t i;
} scored;

/* a ranks before b: higher score, then lower index (a total order). */
static int before(scored a, scored b) { return a.s > b.s || (a.s == b.s && a.i < b.i); }

/* select_top(x, n, k): the k best first (keep.h). */
MC_DEFINE_SELECT_TOP(select_top, scored, before)

/* Selection for head h, added to l one query block at a time. */
static int hax_head(const hax_state *st, const ab_problem *pb, ab_layout *l, int h)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, nqb = l->n_qblocks, half = st->buckets / 2, R = st->rounds;
    const float *q = pb->q + (size_t)h * N * d;                 /* (N, d) */
    const float *k = pb->k + (size_t)h * N * d;                 /* (N, d) */
    float *kt = malloc((size_t)d * N * sizeof *kt);             /* (d, N) K transposed */
    float *sc = malloc((size_t)N * sizeof *sc);                 /* (N) logits or projections */
    float *best = malloc((size_t)N * sizeof *best);             /* (N) best projection so far */
    float *rot = malloc((size_t)R * d * half * sizeof *rot);    /* (rounds, d, half) */
    int32_t *kbucket = malloc((size_t)R * N * sizeof *kbucket); /* (rounds, N) */
    float *qm = malloc((size_t)d * sizeof *qm);                 /* (d) pooled query */
    scored *cand = malloc((size_t)N * sizeof *cand);            /* (N) */
    scored *rest = malloc((size_t)N * sizeof *rest);            /* (N) */
    unsigned char *in = malloc((size_t)N);                      /* (N) bucket-mate mark */
    int32_t *keys = malloc((size_t)2 * N * sizeof *keys);       /* (2N) one block's keys */
    int rc = (kt && sc && best && rot && kbucket && qm && cand && rest && in && keys) ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) {
        uint64_t s = mc_mix64(pb->seed ^ mc_mix64(0x4841580000000000ull + (uint64_t)h));
        for (size_t t = 0; t < (size_t)R * d * half; t++) rot[t] = (float)gauss(&s);
        for (int j = 0; j < N; j++)
            for (int c = 0; c < d; c++) kt[(size_t)c * N + j] = k[(size_t)j * d + c];
        /* key buckets: argmax over [kR, -kR], one rotation column at a time
         * (inner loops over keys vectorise) */
        for (int r = 0; r < R; r++) {
            int32_t *kb = kbucket + (size_t)r * N;
            for (int t = 0; t < half; t++) {
                for (int j = 0; j < N; j++) sc[j] = 0.0f;
                for (int c = 0; c < d; c++) {
                    const float rc_ = rot[((size_t)r * d + c) * half + t];
                    const float *kr = kt + (size_t)c * N;
                    for (int j = 0; j < N; j++) sc[j] += rc_ * kr[j];
                }
                for (int j = 0; j < N; j++) {
                    if (t == 0 || sc[j] > best[j]) {
                        best[j] = sc[j];
                        kb[j] = t;
                    }
                    if (-sc[j] > best[j]) {
                        best[j] = -sc[j];
                        kb[j] = half + t;
                    }
                }
            }
        }
    }
    for (int qb = 0; rc == AB_OK && qb < nqb; qb++) {
        const int r0 = qb * bq, r1 = r0 + bq < N ? r0 + bq : N;
        const int kc = causal ? r1 : N;
        for (int c = 0; c < d; c++) qm[c] = 0.0f;
        for (int i = r0; i < r1; i++)
            for (int c = 0; c < d; c++) qm[c] += q[(size_t)i * d + c];
        for (int c = 0; c < d; c++) qm[c] /= (float)(r1 - r0);
        memset(in, 0, (size_t)kc);
        for (int r = 0; r < R; r++) {
            const int b = lsh_bucket(qm, rot + (size_t)r * d * half, d, half);
            for (int j = 0; j < kc; j++) in[j] |= kbucket[(size_t)r * N + j] == b;
        }
        for (int j = 0; j < kc; j++) sc[j] = 0.0f;
        for (int c = 0; c < d; c++) {
            const float qc = qm[c];
            const float *kr = kt + (size_t)c * N;
            for (int j = 0; j < kc; j++) sc[j] += qc * kr[j];
        }
        int nc = 0, nrest = 0;
        for (int j = 0; j < kc; j++) {
            const float acc = isnan(sc[j]) ? -INFINITY : sc[j];
            if (in[j])
                cand[nc++] = (scored){ acc, j };
            else
                rest[nrest++] = (scored){ acc, j };
        }
        /* this block's budget, dithered */
        const int budget = mc_dither(st->keys, qb);
        const int from_lsh = budget < nc ? budget : nc;
        const int from_ks = budget - from_lsh < nrest ? budget - from_lsh : nrest;
        int n = 0;
        select_top(cand, nc, from_lsh);
        for (int t = 0; t < from_lsh; t++) keys[n++] = cand[t].i;
        if (from_ks > 0) {
            select_top(rest, nrest, from_ks);
            for (int t = 0; t < from_ks; t++) keys[n++] = rest[t].i;
        }
        /* local: the block's own rows and `window` keys before them
         * (non-causal: also after them) */
        const int lo = r0 - st->window;
        const int hi = causal ? r1 : r1 + st->window;
        for (int j = lo < 0 ? 0 : lo; j < hi && j < N; j++) keys[n++] = j;
        rc = ab_layout_add_tokens(l, h, qb, keys, n);
    }
    free(kt);
    free(sc);
    free(best);
    free(rot);
    free(kbucket);
    free(qm);
    free(cand);
    free(rest);
    free(in);
    free(keys);
    return rc;
}

static int hax_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const hax_state *st = state;
    const int H = l->heads;
    int rc = AB_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int h = 0; h < H; h++) {
        const int r = hax_head(st, pb, l, h);
        if (r != AB_OK) {
#pragma omp atomic write
            rc = r;
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "hax: out of memory");
    return rc;
}

const ab_method ab_hax = {
    .abi = AB_ABI_VERSION,
    .name = "hax",
    .summary = "HAX proxy: LSH bucket-mates ranked by pooled-query logit + key selection + local window (token)",
    .reference = "HAX (Zhan et al. 2025, arXiv 2507.00449; DeepGraphLearning/HAX)",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_KEYS] = { .name = "keys", .def = 256, .min = 1, .max = 1 << 24, .is_int = 0,
                     .help = "keys selected per query block (bucket-mates first, then key selection)" },
        [P_BUCKETS] = { .name = "buckets", .def = 16, .min = 2, .max = 4096, .is_int = 1,
                        .help = "LSH buckets per round (even)" },
        [P_ROUNDS] = { .name = "rounds", .def = 2, .min = 1, .max = 16, .is_int = 1,
                       .help = "LSH hashing rounds" },
        [P_WINDOW] = { .name = "window", .def = 64, .min = 1, .max = 1 << 20, .is_int = 1,
                       .help = "local keys before each query block's own rows (always kept)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_KEYS, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(hax_state),
    .init = hax_init,
    .select = hax_select,
    .run = NULL, /* gather kernel */
    .fini = NULL,
};
AB_REGISTER(ab_hax)
