/* scatterbrain.c — `scatterbrain`: sparse (LSH) + low-rank (Performer)
 * attention, untrained (Chen, Dao, Winsor, Song, Rudra and Re,
 * "Scatterbrain: Unifying Sparse and Low-rank Attention Approximation",
 * NeurIPS 2021, arXiv 2110.15343; official code HazyResearch/scatterbrain).
 *
 * Scatterbrain approximates the unnormalised attention matrix exp(S) by a
 * low-rank estimate L = phi(Q) phi(K)^T on all keys plus a sparse correction
 * on a set of pairs found by LSH, (exp(S) - L) restricted to that set, so
 * the implied weight of key j for query i is
 *     w_ij = exp(s_ij)            for j in S_i (the LSH bucket-mates),
 *     w_ij = phi(q_i) . phi(k_j)  for every other key the base mask allows,
 * and out_i = sum_j w_ij v_j / sum_j w_ij (the paper's unbiased combination,
 * normalised by the same combination applied to the ones vector).
 *  - low-rank part: FAVOR+ positive orthogonal random features of
 *    methods/favor.h (m features per head, drawn from (pb->seed, head));
 *    positive features make every w_ij > 0, so no clamping is needed; query
 *    features get eps = 1e-6 after their per-row shift, key features none
 *    (favor.h: causality up to rounding);
 *  - sparse part: angular LSH (Reformer / Andoni et al. 2015 "random
 *    rotations"): per round t a d x ceil(b/2) Gaussian matrix R_t drawn from
 *    (pb->seed, head, t); code(x) = argmax of the first b entries of
 *    [x R_t, -x R_t] (ties to the lower index), the same R_t for queries and
 *    keys, x R_t in fp32 as a packed GEMM (methods/lsh.h, shared with
 *    reformer); S_i = keys the mask allows sharing a code with q_i in some round,
 *    plus key i itself (which every mask here allows).
 * run() computes the low-rank sums over all allowed keys as linear attention
 * (full: totals phi(K)^T [V 1]; causal: chunks of 64 rows, a masked in-chunk
 * tile plus the carried prefix state; the state in double, each chunk's
 * phi(K)^T [V 1] added as one fp32 product), then the sparse correction bucket by
 * bucket: in round t the queries of code c attend the keys of code c (j <= i
 * under causal) in tiles of 64 queries x 256 keys (exact logits and feature
 * products as two packed GEMMs; under causal each register tile of rows
 * only up to the keys its last row may see), skipping pairs an earlier round already
 * gave, each pair weighing exp(s_ij) - phi(q_i).phi(k_j) in an online
 * softmax whose running max starts at the row's feature shift c_q,i + c_k
 * (so nothing overflows); then key i itself where no round shares its code;
 * then low-rank sums plus correction over the same combination of [v 1].
 *
 * Deviations: the official code's sparse part is SMYRF (asymmetric LSH with
 * balanced clusters) or a local window; we use plain angular LSH with
 * unbalanced buckets and 1 or 2 rounds; no training; features redrawn per
 * problem seed.
 *
 * Density knob: buckets b in [1, 64] (density falls as b rises; b = 1 puts
 * every key in S_i: exact attention; capped at 64 because the hashing cost,
 * r b/2 projections per row, would make density rise again). Reported
 * density = FLOPs over dense FLOPs (4 d per allowed pair: logit and P.V, the
 * convention of performer.c), in pair units, clamped to [0, 1]:
 *   sum_i |S_i| (1 + m/(2d))   exact logit + P.V on S_i, the overlap's phi.phi
 *   + N (2 m + r ceil(b/2))    per row: q and k features (2 d m each), state
 *                              update and readout (~2 m d each), hashing of q
 *                              and k (r rounds, 2 d per projection).
 * The low-rank part alone costs ~2m / (mean row length): at N = 512 and the
 * default m = 64 density stays near 0.6-0.9 whatever b.
 * Base masks: plain causal and full only (AB_EUNSUPPORTED otherwise): the
 * low-rank state sums over a prefix or everything, not a document.
 * Selection cost (ab_layout_set_cost): the hashing of Q and K and the bucket
 * counting that gives |S_i| (select() computes the codes to state density;
 * run() takes them from the state when Q, K and the seed are the ones
 * select() hashed, by bk_checksum as reformer does, else hashes again).
 * weights(): O(N d (m + r b/2)) per row (recomputes codes and key features);
 * reads the state only.
 */
#include "attnbench.h"
#include "methods/plain_mask.h"
#include "methods/block_score.h"
#include "methods/bucket.h"
#include "methods/favor.h"
#include "methods/lsh.h"
#include "methods/vecf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* rows of a low-rank chunk: BS_PANEL, so a chunk's transposed key
 * features are one packed panel (sb_lowrank's in-chunk product) */
#define SB_CHUNK 64
_Static_assert(SB_CHUNK == BS_PANEL, "a low-rank chunk is one panel");
#define SB_MAXB 64
#define SB_MAXR 2   /* rounds (hashes) */
#define SB_QT   64  /* queries per bucket tile */
#define SB_KT   256 /* keys per bucket tile (a multiple of BS_PANEL) */

enum { P_BUCKETS = 0, P_HASHES, P_FEATURES, P_COUNT };

/* select()'s LSH codes, for run(): hashing Q and K again was about a
 * tenth of run(). Recognised by shape, seed and a checksum of Q and K
 * (bk_checksum, as reformer's sort), else recomputed. */
typedef struct sb_codes_cache {
    int heads, n, d;
    uint64_t seed, sum; /* sum 0: empty */
    int *qc, *kc;       /* (heads, r, n) */
} sb_codes_cache;

typedef struct sb_state {
    int buckets;  /* b */
    int hashes;   /* rounds r (1 or 2) */
    int features; /* m */
    sb_codes_cache cache;
} sb_state;

static void sb_cache_free(sb_codes_cache *c)
{
    free(c->qc);
    free(c->kc);
    memset(c, 0, sizeof *c);
}

static int sb_cache_matches(const sb_codes_cache *c, const ab_problem *pb)
{
    return c->sum != 0 && c->heads == pb->s.heads && c->n == pb->s.seq_len && c->d == pb->s.head_dim &&
           c->seed == pb->seed && c->sum == bk_checksum(pb);
}

static void sb_fini(void *state) { sb_cache_free(&((sb_state *)state)->cache); }

static int sb_init(void *state, const ab_params *p, const ab_shape *s)
{
    (void)s;
    sb_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "scatterbrain: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_BUCKETS] >= 1 && p->v[P_BUCKETS] <= SB_MAXB) ||
        !(p->v[P_HASHES] >= 1 && p->v[P_HASHES] <= SB_MAXR) ||
        !(p->v[P_FEATURES] >= 1 && p->v[P_FEATURES] <= 4096)) {
        ab_set_error(state, "scatterbrain: buckets in [1, %d], hashes in [1, 2], features in [1, 4096]",
                     SB_MAXB);
        return AB_EINVAL;
    }
    st->buckets = (int)p->v[P_BUCKETS];
    st->hashes = (int)p->v[P_HASHES];
    st->features = (int)p->v[P_FEATURES];
    return AB_OK;
}

static int sb_mask_ok(void *state, const ab_shape *s)
{
    return mc_plain_mask_only(state, s, 1, "scatterbrain", "the low-rank state sums a prefix or all keys");
}

/* The rotations of (seed, head), drawn in (round, e, c) order and stored
 * as rows for bs_gemm_nt: Rf[(t hb + c) d + e] = R_t[e][c], hb = ceil(b / 2). */
static void sb_rotations(uint64_t seed, int head, int hashes, int d, int hb, float *Rf)
{
    uint64_t s = ab_mix64(seed ^ 0x7363617474657242ull) ^ ab_mix64((uint64_t)head + 0x1234ull);
    for (int t = 0; t < hashes; t++)
        for (int e = 0; e < d; e++)
            for (int c = 0; c < hb; c++) Rf[((size_t)t * hb + c) * d + e] = (float)favor_gauss(&s);
}

/* LSH codes of n rows of x: code[t * n + i] = the code of row i in round t
 * (methods/lsh.h: argmax of the first b entries of [x R_t, -x R_t], the
 * first maximum winning; fp32 projections as one FMA chain each, so
 * select(), run() and weights(), which hashes one query row, agree bit for
 * bit). P: pmax >= lsh_scratch_floats(hb) floats (the rounds that fit share
 * one pass over x); bt: favor_bt_floats(d) floats. */
static void sb_codes(const float *x, int n, int d, const float *Rf, int hashes, int hb, int b, int *code,
                     float *P, size_t pmax, float *bt)
{
    lsh_codes_rounds(x, n, d, Rf, hashes, hb, b, P, pmax, bt, code, NULL, NULL);
}

/* 1 if key j shares a code with query i in some round before `upto`. */
static int sb_shared(const int *qc, const int *kc, int n, int upto, int i, int j)
{
    for (int t = 0; t < upto; t++)
        if (qc[(size_t)t * n + i] == kc[(size_t)t * n + j]) return 1;
    return 0;
}

static int sb_select(void *state, const ab_problem *pb, ab_layout *l)
{
    sb_state *st = state;
    const int ok = sb_mask_ok(state, &pb->s);
    if (ok != AB_OK) return ok;
    const int H = pb->s.heads, n = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int b = st->buckets, r = st->hashes, hb = (b + 1) / 2, m = st->features;
    double sparse = 0.0, valid = 0.0;
    int rc = AB_OK;
    sb_codes_cache *cc = &st->cache;
    sb_cache_free(cc);
    const size_t per = (size_t)r * (n > 0 ? n : 1); /* codes per head */
    cc->qc = malloc((size_t)(H > 0 ? H : 1) * per * sizeof *cc->qc);
    cc->kc = malloc((size_t)(H > 0 ? H : 1) * per * sizeof *cc->kc);
    uint64_t *hs = malloc((size_t)(H > 0 ? H : 1) * sizeof *hs); /* the heads' bk_sum_head */
    if (!cc->qc || !cc->kc || !hs) {
        free(hs);
        sb_cache_free(cc);
        ab_set_error(state, "scatterbrain: out of memory");
        return AB_ENOMEM;
    }
#pragma omp parallel reduction(+ : sparse)
    {
        float *R = malloc((size_t)r * d * hb * sizeof *R),
              *P = malloc(lsh_scratch_floats(r * hb) * sizeof *P),
              *bt = malloc(favor_bt_floats(d) * sizeof *bt);
        int *cnt = malloc((size_t)(b + b + b * b) * sizeof *cnt); /* round 0, round 1, both */
        const int okw = R && P && bt && cnt;
        if (!okw) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int h = 0; h < H; h++) {
            if (!okw) continue;
            int *qc = cc->qc + (size_t)h * per, *kc = cc->kc + (size_t)h * per;
            sb_rotations(pb->seed, h, r, d, hb, R);
            /* the codes, and the head's share of the fingerprint */
            hs[h] = bk_codes_qk(pb->q + (size_t)h * n * d, pb->k + (size_t)h * n * d, n, d, R, r, hb, b, P,
                                lsh_scratch_floats(r * hb), bt, qc, kc);
            memset(cnt, 0, (size_t)(b + b + b * b) * sizeof *cnt);
            if (!causal)
                for (int j = 0; j < n; j++) {
                    cnt[kc[j]]++;
                    if (r == 2) {
                        cnt[b + kc[n + j]]++;
                        cnt[2 * b + kc[j] * b + kc[n + j]]++;
                    }
                }
            for (int i = 0; i < n; i++) {
                if (causal) { /* keys j <= i: add key i first */
                    cnt[kc[i]]++;
                    if (r == 2) {
                        cnt[b + kc[n + i]]++;
                        cnt[2 * b + kc[i] * b + kc[n + i]]++;
                    }
                }
                double si = cnt[qc[i]];
                if (r == 2) si += cnt[b + qc[n + i]] - cnt[2 * b + qc[i] * b + qc[n + i]];
                if (!sb_shared(qc, kc, n, r, i, i)) si += 1.0; /* key i itself */
                sparse += si;
            }
        }
        free(R);
        free(P);
        free(bt);
        free(cnt);
    }
    if (rc != AB_OK) {
        free(hs);
        sb_cache_free(cc);
        ab_set_error(state, "scatterbrain: out of memory");
        return rc;
    }
    cc->heads = H;
    cc->n = n;
    cc->d = d;
    cc->seed = pb->seed;
    cc->sum = bk_sum_heads(hs, H);
    free(hs);
    for (int i = 0; i < n; i++) valid += causal ? i + 1 : n;
    valid *= H;
    const double work = sparse * (1.0 + (double)m / (2.0 * d)) + (double)H * n * (2.0 * m + (double)r * hb);
    double dens = valid > 0 ? work / valid : 1.0;
    dens = dens > 1.0 ? 1.0 : dens;
    rc = ab_layout_custom(l, dens);
    if (rc != AB_OK) return rc;
    /* hashing 2 d per projection, r hb per row of Q and K; counting ~4 per row */
    return ab_layout_set_cost(l, (double)H * n * (2.0 * (2.0 * d * r * hb) + 8.0 * r),
                              4.0 * 2.0 * H * (double)n * d + 4.0 * (2.0 * r * H * (double)n));
}

/* Per-head scratch of run(). */
typedef struct sb_work {
    float *R;
    int *qc, *kc;
    int *qstart, *qlist; /* queries sorted by code per round: (r, b + 1), (r, n) */
    int *kstart, *klist; /* keys likewise */
    float *W, *pq, *pk, *lr, *kv, *tile, *bt;
    float *kt;  /* (m, SB_CHUNK): a chunk's key features transposed */
    float *pqt; /* (max(m, SB_CHUNK), SB_CHUNK): a chunk's query features or in-chunk tile transposed */
    float *z;   /* (m): a chunk's key feature sums, the ones column of kv */
    double *kvd;
    float *cq;
    /* the sparse correction: per-row running max, sum and numerator */
    float *rmx, *racc;
    double *rsm;
    /* one bucket tile: queries and their features pre-gathered, logits /
     * weights, feature products; the bucket's keys (and their features)
     * packed and values gathered once for all its query tiles, kcap keys
     * (a multiple of BS_PANEL) */
    float *qg, *pg, *kp, *fp, *vg, *sc, *lt, *o;
    int kcap;
    int32_t *kcode; /* (r, SB_KT): the tile keys' codes per round */
    int32_t rows[SB_QT];
} sb_work;

static void sb_work_free(sb_work *w)
{
    void *p[] = { w->R,   w->qc,   w->kc,  w->qstart, w->qlist, w->kstart, w->klist, w->W,
                  w->pq,  w->pk,   w->lr,  w->kv,     w->tile,  w->bt,     w->kvd,   w->cq,
                  w->rmx, w->racc, w->rsm, w->qg,     w->pg,    w->kp,     w->fp,    w->vg,
                  w->sc,  w->lt,   w->o,   w->kt,     w->kcode, w->pqt,    w->z };
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) free(p[i]);
}

/* A bucket tile's own buffers in w (and the GEMMs' bt), fresh: sb_work_alloc
 * gives them to a head's scratch, sb_sparse to each further thread's copy
 * of it. 1, or 0 when out of memory (what was allocated stays, for
 * sb_work_free or sb_tile_free). */
static int sb_tiles_alloc(sb_work *w, int d, int m, int r)
{
    w->qg = malloc((size_t)SB_QT * d * sizeof *w->qg);
    w->pg = malloc((size_t)SB_QT * m * sizeof *w->pg);
    w->kp = malloc((size_t)SB_KT * d * sizeof *w->kp);
    w->fp = malloc((size_t)SB_KT * m * sizeof *w->fp);
    w->vg = malloc((size_t)SB_KT * d * sizeof *w->vg);
    w->sc = malloc((size_t)SB_QT * SB_KT * sizeof *w->sc);
    w->lt = malloc((size_t)SB_QT * SB_KT * sizeof *w->lt);
    w->o = malloc((size_t)SB_QT * d * sizeof *w->o);
    w->kcode = malloc((size_t)r * SB_KT * sizeof *w->kcode);
    w->bt = malloc(favor_bt_floats(d + 1 > m ? d + 1 : m) * sizeof *w->bt);
    w->kcap = SB_KT;
    return w->qg && w->pg && w->kp && w->fp && w->vg && w->sc && w->lt && w->o && w->kcode && w->bt;
}

static int sb_work_alloc(sb_work *w, int n, int d, int m, int r, int b)
{
    const int hb = (b + 1) / 2, d1 = d + 1;
    const size_t nn = (size_t)(n > 0 ? n : 1);
    memset(w, 0, sizeof *w);
    w->R = malloc((size_t)r * d * hb * sizeof *w->R);
    w->qc = malloc((size_t)r * nn * sizeof *w->qc);
    w->kc = malloc((size_t)r * nn * sizeof *w->kc);
    w->qstart = malloc((size_t)r * (b + 1) * sizeof *w->qstart);
    w->qlist = malloc((size_t)r * nn * sizeof *w->qlist);
    w->kstart = malloc((size_t)r * (b + 1) * sizeof *w->kstart);
    w->klist = malloc((size_t)r * nn * sizeof *w->klist);
    w->W = malloc((size_t)m * d * sizeof *w->W);
    w->pq = malloc(nn * m * sizeof *w->pq);
    w->pk = malloc(nn * m * sizeof *w->pk);
    w->lr = malloc(nn * d1 * sizeof *w->lr);
    w->kv = malloc((size_t)m * d1 * sizeof *w->kv);
    w->tile = malloc((size_t)SB_CHUNK * SB_CHUNK * sizeof *w->tile);
    w->kt = malloc((size_t)m * SB_CHUNK * sizeof *w->kt);
    w->pqt = malloc((size_t)(m > SB_CHUNK ? m : SB_CHUNK) * SB_CHUNK * sizeof *w->pqt);
    w->z = malloc((size_t)m * sizeof *w->z);
    w->kvd = malloc((size_t)m * d1 * sizeof *w->kvd);
    w->cq = malloc(nn * sizeof *w->cq);
    w->rmx = malloc(nn * sizeof *w->rmx);
    w->racc = malloc(nn * d * sizeof *w->racc);
    w->rsm = malloc(nn * sizeof *w->rsm);
    const int tiles = sb_tiles_alloc(w, d, m, r);
    return w->R && w->qc && w->kc && w->qstart && w->qlist && w->kstart && w->klist && w->W && w->pq &&
           w->pk && w->lr && w->kv && w->tile && w->kvd && w->cq && w->rmx && w->racc && w->rsm && w->kt &&
           w->pqt && w->z && tiles;
}

/* The [V 1] products below run their GEMMs over the d value columns
 * only, read in place in V, and add the ones column apart: as a (d + 1)-wide
 * B it was a second 64-wide panel holding one column, nearly doubling three
 * of the four GEMMs of a chunk (and the copy of [V 1] with stride d + 1 was
 * 1.3 % of run()'s samples at N = 16K, 2026-12-06). Each ones-column entry
 * is the chain the GEMM computed (products in the same order, from the same
 * start), so the sums are the same bits. */

/* o[i d1 + d] = sum_x pq[i][x] z[x] for the L rows of pq (L, m), one fmaf
 * chain per row in x order from 0 (the GEMM's chain against the ones
 * column), vectorised across rows through w->pqt. */
static void sb_ones_readout(sb_work *w, const float *pq, int L, int m, const float *z, float *o, int d1)
{
    float acc[SB_CHUNK];
    bs_transpose(pq, (size_t)m, NULL, L, m, w->pqt, SB_CHUNK);
    for (int i = 0; i < L; i++) acc[i] = 0.0f;
    for (int x = 0; x < m; x++) {
        const float *p = w->pqt + (size_t)x * SB_CHUNK, zx = z[x];
        for (int i = 0; i < L; i++) acc[i] = fmaf(p[i], zx, acc[i]);
    }
    for (int i = 0; i < L; i++) o[(size_t)i * d1 + d1 - 1] = acc[i];
}

/* kvd += pk[c0, c0 + L)^T [V 1][c0, c0 + L) (v: the head's values, n x d):
 * the chunk's key features transposed into w->kt (which the caller may
 * read after), their product with the values as one GEMM into w->kv (float
 * sums over the chunk's L keys), the ones column the features' sums in key
 * order, added to the double state. A per-key double update of the (m, d + 1) state was most
 * of the low-rank part's time. */
static void sb_state_add(sb_work *w, const float *v, int c0, int L, int d1, int m)
{
    const int d = d1 - 1;
    bs_transpose(w->pk + (size_t)c0 * m, (size_t)m, NULL, L, m, w->kt, SB_CHUNK);
    bs_gemm_nn(w->kt, SB_CHUNK, m, v + (size_t)c0 * d, d, L, d, w->kv, d1, 0, w->bt);
    for (int x = 0; x < m; x++) w->z[x] = 0.0f;
    for (int j = 0; j < L; j++) {
        const float *f = w->pk + (size_t)(c0 + j) * m;
        for (int x = 0; x < m; x++) w->z[x] += f[x];
    }
    for (int x = 0; x < m; x++) w->kv[(size_t)x * d1 + d] = w->z[x];
    for (size_t t = 0; t < (size_t)m * d1; t++) w->kvd[t] += w->kv[t];
}

/* Low-rank sums of one head in feature units: lr[i] = pq_i . sum_j pk_j [v_j 1]
 * over the allowed keys (causal: j <= i, chunked; full: all). */
static void sb_lowrank(sb_work *w, const float *v, int n, int d, int m, int causal)
{
    const int d1 = d + 1;
    for (size_t t = 0; t < (size_t)m * d1; t++) w->kvd[t] = 0.0;
    if (!causal) {
        for (int c0 = 0; c0 < n; c0 += SB_CHUNK)
            sb_state_add(w, v, c0, n - c0 < SB_CHUNK ? n - c0 : SB_CHUNK, d1, m);
        for (size_t t = 0; t < (size_t)m * d1; t++) w->kv[t] = (float)w->kvd[t];
        bs_gemm_nn(w->pq, m, n, w->kv, d1, m, d, w->lr, d1, 0, w->bt);
        for (int x = 0; x < m; x++) w->z[x] = w->kv[(size_t)x * d1 + d];
        for (int c0 = 0; c0 < n; c0 += SB_CHUNK)
            sb_ones_readout(w, w->pq + (size_t)c0 * m, n - c0 < SB_CHUNK ? n - c0 : SB_CHUNK, m, w->z,
                            w->lr + (size_t)c0 * d1, d1);
        return;
    }
    for (int c0 = 0; c0 < n; c0 += SB_CHUNK) {
        const int L = n - c0 < SB_CHUNK ? n - c0 : SB_CHUNK;
        float *o = w->lr + (size_t)c0 * d1;
        /* carried state (keys < c0) */
        for (size_t t = 0; t < (size_t)m * d1; t++) w->kv[t] = (float)w->kvd[t];
        bs_gemm_nn(w->pq + (size_t)c0 * m, m, L, w->kv, d1, m, d, o, d1, 0, w->bt);
        for (int x = 0; x < m; x++) w->z[x] = w->kv[(size_t)x * d1 + d];
        sb_ones_readout(w, w->pq + (size_t)c0 * m, L, m, w->z, o, d1);
        /* the state past the chunk; its transposed features give the tile */
        sb_state_add(w, v, c0, L, d1, m);
        /* in-chunk: tril(PQ PK^T) [V 1] (the chains of bs_gemm_nt on pk).
         * w->kt (m, SB_CHUNK) is one packed panel of the chunk's keys, so
         * each register tile of rows computes the keys up to its last row
         * only (lim), and the product with V sums over those only: past
         * the diagonal the tile is zero, the same chains without their
         * fma(0, v, s) = s steps (2026-12-07: half of the two products) */
        int lim[SB_CHUNK / BS_MR + 1];
        bs_tril_scores(w->pq + (size_t)c0 * m, m, L, w->kt, m, w->tile, SB_CHUNK, lim);
        for (int i = 0; i < L; i++)
            for (int j = i + 1; j < L; j++) w->tile[(size_t)i * SB_CHUNK + j] = 0.0f;
        bs_gemm_nn_rag(w->tile, SB_CHUNK, L, v + (size_t)c0 * d, d, L, lim, d, o, d1, 1, w->bt);
        /* its ones column: the row sums of the tile, zeros included, added
         * in key order to what the readout left (the GEMM's chain) */
        bs_transpose(w->tile, SB_CHUNK, NULL, L, L, w->pqt, SB_CHUNK);
        {
            float acc[SB_CHUNK];
            for (int i = 0; i < L; i++) acc[i] = o[(size_t)i * d1 + d];
            for (int j = 0; j < L; j++) {
                const float *tj = w->pqt + (size_t)j * SB_CHUNK;
                for (int i = 0; i < L; i++) acc[i] += tj[i];
            }
            for (int i = 0; i < L; i++) o[(size_t)i * d1 + d] = acc[i];
        }
    }
}

/* Positions sorted by code per round, ascending inside each bucket: the
 * positions of bucket c of round t are list[t n + start[t (b+1) + c] ..
 * start[t (b+1) + c + 1]). */
static void sb_buckets(const int *code, int n, int r, int b, int *start, int *list)
{
    for (int t = 0; t < r; t++) {
        int *st = start + (size_t)t * (b + 1), *li = list + (size_t)t * n;
        const int *kc = code + (size_t)t * n;
        for (int c = 0; c <= b; c++) st[c] = 0;
        for (int j = 0; j < n; j++) st[kc[j] + 1]++;
        for (int c = 0; c < b; c++) st[c + 1] += st[c];
        for (int j = 0; j < n; j++) li[st[kc[j]]++] = j;
        for (int c = b; c > 0; c--) st[c] = st[c - 1];
        st[0] = 0;
    }
}

/* Moves row i's running state to the max mn = max(tm, its running max):
 * scales its sum and numerator by exp(old max - mn) and returns mn, with
 * exp(lrs_i - mn) in *gl (the factor of the low-rank estimate phi_i.phi_j
 * in the new units). The caller then adds the new pairs' weights. */
static float sb_rebase(sb_work *w, int i, float tm, int d, float ck, float *gl)
{
    const float mo = w->rmx[i], mn = tm > mo ? tm : mo, lrs = w->cq[i] + ck;
    /* exp(0) = 1 exactly: no call while the max stays where it was (a
     * libm exp in double was 1.5 % of run()'s samples at 16K) */
    const double alpha = mo == mn ? 1.0 : exp((double)mo - (double)mn);
    *gl = lrs == mn ? 1.0f : (float)exp((double)lrs - (double)mn); /* exp(lrs - mn) */
    w->rsm[i] *= alpha;
    w->rmx[i] = mn;
    if (alpha != 1.0) {
        float *orow = w->racc + (size_t)i * d;
        const float fa = (float)alpha;
        for (int e = 0; e < d; e++) orow[e] *= fa;
    }
    return mn;
}

/* s[c] -= g[c] gl for c < n (the product rounded, then the difference);
 * returns the sum of the new s[c] in double: sixteen lanes (vdr_sum16:
 * lane u + 8 onto lane u, then pairs), then the tail (one chain of n dependent
 * adds was the largest part of a tile's own time). */
static double sb_sub_sum(float *s, const float *g, float gl, int n)
{
    vdr a[16 / VDR]; /* lane u: the elements c + u, c a multiple of 16 */
    for (int v = 0; v < 16 / VDR; v++) a[v] = (vdr){ 0 };
    v8f gv = { 0 };
    gv += gl;
    int c = 0;
    for (; c + 16 <= n; c += 16) {
        v8f x0, x1, y0, y1;
        memcpy(&x0, s + c, sizeof x0);
        memcpy(&x1, s + c + 8, sizeof x1);
        memcpy(&y0, g + c, sizeof y0);
        memcpy(&y1, g + c + 8, sizeof y1);
        y0 *= gv;
        y1 *= gv;
        x0 -= y0;
        x1 -= y1;
        memcpy(s + c, &x0, sizeof x0);
        memcpy(s + c + 8, &x1, sizeof x1);
        for (int v = 0; v < 16 / VDR; v++) a[v] += vdr_of_f(s + c + v * VDR); /* the stored floats, widened */
    }
    double ps = vdr_sum16(a);
    for (; c < n; c++) {
        const float y = g[c] * gl;
        s[c] -= y;
        ps += s[c];
    }
    return ps;
}

/* A tile row's mask in one pass: s[c] = -inf and g[c] = 0 where key
 * kidx[c] is past jmax or an earlier round gave it the row's code (qv[tp]
 * against kcode row tp, tp < t); returns the max of the new s as bs_max
 * gives it (NaN when s[0] is; else NaN entries skipped). The loops it
 * replaced read the row four times. */
static float sb_mask_max(float *s, float *g, const int32_t *kidx, int jmax, const int32_t *kcode,
                         const int *qv, int t, int nc)
{
    typedef int32_t vi __attribute__((vector_size(VW * sizeof(int32_t))));
    const vf ninf = v_splat(-INFINITY);
    vf mx = ninf;
    int c = 0;
    for (; c + VW <= nc; c += VW) {
        vi kv, drop;
        memcpy(&kv, kidx + c, sizeof kv);
        drop = kv > jmax;
        for (int tp = 0; tp < t; tp++) {
            vi kc;
            memcpy(&kc, kcode + (size_t)tp * SB_KT + c, sizeof kc);
            drop |= kc == qv[tp];
        }
        vi x, y;
        memcpy(&x, s + c, sizeof x);
        memcpy(&y, g + c, sizeof y);
        vi ni;
        memcpy(&ni, &ninf, sizeof ni);
        x = (x & ~drop) | (ni & drop);
        y &= ~drop; /* +0.0f */
        memcpy(s + c, &x, sizeof x);
        memcpy(g + c, &y, sizeof y);
        vf xf;
        memcpy(&xf, &x, sizeof xf);
        const vi gt = xf > mx;
        vi mi;
        memcpy(&mi, &mx, sizeof mi);
        mi = (x & gt) | (mi & ~gt);
        memcpy(&mx, &mi, sizeof mx);
    }
    float lanes[VW], m = -INFINITY;
    v_store(lanes, mx);
    for (int u = 0; u < VW; u++) m = lanes[u] > m ? lanes[u] : m;
    for (; c < nc; c++) {
        int drop = kidx[c] > jmax;
        for (int tp = 0; tp < t; tp++) drop |= kcode[(size_t)tp * SB_KT + c] == qv[tp];
        if (drop) {
            s[c] = -INFINITY;
            g[c] = 0.0f;
        }
        m = s[c] > m ? s[c] : m;
    }
    return nc > 0 && s[0] != s[0] ? s[0] : nc > 0 ? m : -INFINITY;
}

/* One tile of the sparse correction: rows w->rows[0, na) (their queries in
 * w->qg, features in w->pg) against nk keys w->kidx (packed in w->kp and
 * w->fp, values in w->vg). Pair (i, j) counts when j <= i (causal) and no
 * earlier round gave i and j one code; its weight, in the row's running
 * units exp(-mx), is exp(s_ij) - exp(lrs_i) phi_i.phi_j (the exact weight
 * minus the low-rank estimate the low-rank sums already hold). The running
 * max starts at lrs_i, so nothing the final combination adds overflows. */
static void sb_tile(sb_work *w, const float *kp, const float *fp, const float *vg, const int32_t *kidx,
                    int na, int nk, int d, int m, int n, int t, int causal, float scale, float ck)
{
    /* Under causal the keys a row may see are a prefix of the tile's (rows
     * and keys ascend): each register tile of BS_MR rows computes the
     * columns up to its last row's prefix, rounded up to 16 (at most nk),
     * and its rows' loops below run that far. Past a row's own prefix the
     * mask gives what the whole width gave (-inf, weight 0); the rounding
     * keeps every kept column in the vector part of the exp and the sums,
     * so the results are the same bits as over all nk columns, which the
     * last tenth of the products had computed for nothing (2026-12-07). */
    int ncol[SB_QT / BS_MR + 1];
    for (int a0 = 0, c = 0; a0 < na; a0 += BS_MR) {
        const int al = (a0 + BS_MR < na ? a0 + BS_MR : na) - 1;
        if (causal)
            while (c < nk && kidx[c] <= w->rows[al]) c++;
        else
            c = nk;
        const int c16 = (c + 15) / 16 * 16;
        ncol[a0 / BS_MR] = c16 < nk ? c16 : nk;
    }
    bs_gemm_nt_packed_rag(w->qg, d, na, kp, nk, ncol, d, scale, w->sc, SB_KT);
    bs_gemm_nt_packed_rag(w->pg, m, na, fp, nk, ncol, m, 1.0f, w->lt, SB_KT);
    for (int tp = 0; tp < t; tp++) /* the keys' codes of the earlier rounds, once per tile */
        for (int c = 0; c < nk; c++) w->kcode[(size_t)tp * SB_KT + c] = w->kc[(size_t)tp * n + kidx[c]];
    int any = 0;
    unsigned char upd[SB_QT];
    for (int a = 0; a < na; a++) {
        const int i = w->rows[a], nc = ncol[a / BS_MR];
        float *s = w->sc + (size_t)a * SB_KT, *g = w->lt + (size_t)a * SB_KT;
        int qv[SB_MAXR]; /* the row's codes of the earlier rounds */
        for (int tp = 0; tp < t; tp++) qv[tp] = w->qc[(size_t)tp * n + i];
        const float tm = sb_mask_max(s, g, kidx, causal ? i : n - 1, w->kcode, qv, t, nc);
        if (!(tm > -INFINITY)) {
            for (int c = 0; c < nc; c++) s[c] = 0.0f;
            upd[a] = 0;
            continue;
        }
        float gl;
        const float mn = sb_rebase(w, i, tm, d, ck, &gl);
        ab_exp_shift(s, nc, mn);
        w->rsm[i] += sb_sub_sum(s, g, gl, nc);
        upd[a] = 1;
        any = 1;
    }
    if (!any) return;
    bs_gemm_nn_rag(w->sc, SB_KT, na, vg, d, nk, ncol, d, w->o, d, 0, w->bt);
    for (int a = 0; a < na; a++) {
        if (!upd[a]) continue;
        float *orow = w->racc + (size_t)w->rows[a] * d;
        const float *src = w->o + (size_t)a * d;
        for (int e = 0; e < d; e++) orow[e] += src[e];
    }
}

/* sb_tile for the single pairs (i, i) of the nr <= 4 rows rows[]: the
 * same weight exp(s_ii) - exp(lrs_i) phi_i.phi_i in the row's running
 * units, the logit and the feature product as one FMA chain each in
 * element order (as the tile's GEMMs compute them). The rows' chains run
 * side by side: one row's chain alone waited on the FMA latency (3 % of
 * run()'s samples at 16K). */
static void sb_own(sb_work *w, const float *q, const float *k, const float *v, const int *rows, int nr, int d,
                   int m, float scale, float ck)
{
    const float *qr[4], *kr[4], *fq[4], *fk[4];
    for (int u = 0; u < 4; u++) { /* past nr: rows[0] again, unused */
        const size_t i = (size_t)rows[u < nr ? u : 0];
        qr[u] = q + i * d;
        kr[u] = k + i * d;
        fq[u] = w->pq + i * m;
        fk[u] = w->pk + i * m;
    }
    float dot[4] = { 0.0f, 0.0f, 0.0f, 0.0f }, fd[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
    for (int e = 0; e < d; e++)
        for (int u = 0; u < 4; u++) dot[u] = fmaf(qr[u][e], kr[u][e], dot[u]);
    for (int x = 0; x < m; x++)
        for (int u = 0; u < 4; u++) fd[u] = fmaf(fq[u][x], fk[u][x], fd[u]);
    for (int u = 0; u < nr; u++) {
        const int i = rows[u];
        float s = scale * dot[u];
        if (!(s > -INFINITY)) continue; /* NaN input: as the tile, no update */
        float gl;
        const float mn = sb_rebase(w, i, s, d, ck, &gl);
        ab_exp_shift(&s, 1, mn);
        s -= fd[u] * gl;
        w->rsm[i] += s;
        float *orow = w->racc + (size_t)i * d;
        const float *vi = v + (size_t)i * d;
        for (int e = 0; e < d; e++) orow[e] += s * vi[e];
    }
}

/* Room in w->kp, w->fp and w->vg for a bucket's first nk keys, the packed
 * ones kept; 0 when out of memory. */
static int sb_bucket_room(sb_work *w, int nk, int d, int m)
{
    if (nk <= w->kcap) return 1;
    int cap = w->kcap;
    while (cap < nk) cap *= 2; /* stays a multiple of BS_PANEL */
    float *kp = realloc(w->kp, (size_t)cap * d * sizeof *kp);
    if (!kp) return 0;
    w->kp = kp;
    float *fp = realloc(w->fp, (size_t)cap * m * sizeof *fp);
    if (!fp) return 0;
    w->fp = fp;
    float *vg = realloc(w->vg, (size_t)cap * d * sizeof *vg);
    if (!vg) return 0;
    w->vg = vg;
    w->kcap = cap;
    return 1;
}

/* Bucket c of round t: its queries against its keys (causal: up to each
 * query tile's last row), the keys packed once for all its query tiles;
 * rows of the bucket only (round t gives every row one bucket). */
static int sb_bucket(sb_work *w, const float *q, const float *k, const float *v, int n, int d, int m, int b,
                     int t, int c, int causal, float scale, float ck)
{
    const int *qs = w->qlist + (size_t)t * n + w->qstart[(size_t)t * (b + 1) + c];
    const int nq = w->qstart[(size_t)t * (b + 1) + c + 1] - w->qstart[(size_t)t * (b + 1) + c];
    const int *ks = w->klist + (size_t)t * n + w->kstart[(size_t)t * (b + 1) + c];
    const int nkb = w->kstart[(size_t)t * (b + 1) + c + 1] - w->kstart[(size_t)t * (b + 1) + c];
    int kend = 0;   /* keys of the bucket at or before the tile's last query (causal) */
    int packed = 0; /* keys of the bucket in w->kp, w->fp, w->vg */
    for (int a0 = 0; a0 < nq; a0 += SB_QT) {
        const int na = nq - a0 < SB_QT ? nq - a0 : SB_QT;
        const int ilast = qs[a0 + na - 1];
        if (causal)
            while (kend < nkb && ks[kend] <= ilast) kend++;
        else
            kend = nkb;
        if (kend == 0) continue;
        bk_gather_rows(w->qg, q, qs + a0, na, d, NULL, NULL);
        bk_gather_rows(w->pg, w->pq, qs + a0, na, m, NULL, NULL);
        memcpy(w->rows, qs + a0, (size_t)na * sizeof *w->rows);
        if (kend > packed) { /* the bucket's keys up to kend, from the partial panel on */
            if (!sb_bucket_room(w, kend, d, m)) return AB_ENOMEM;
            const int p0 = packed / BS_PANEL * BS_PANEL;
            bs_pack_gather(k, d, ks + p0, kend - p0, w->kp + (size_t)p0 * d);
            bs_pack_gather(w->pk, m, ks + p0, kend - p0, w->fp + (size_t)p0 * m);
            bk_gather_rows(w->vg + (size_t)packed * d, v, ks + packed, kend - packed, d, NULL, NULL);
            packed = kend;
        }
        for (int k0 = 0; k0 < kend; k0 += SB_KT) {
            const int nk = kend - k0 < SB_KT ? kend - k0 : SB_KT;
            sb_tile(w, w->kp + (size_t)k0 * d, w->fp + (size_t)k0 * m, w->vg + (size_t)k0 * d, ks + k0, na,
                    nk, d, m, n, t, causal, scale, ck);
        }
    }
    return AB_OK;
}

static void sb_tile_free(sb_work *tw)
{
    void *p[] = { tw->qg, tw->pg, tw->kp, tw->fp, tw->vg, tw->sc, tw->lt, tw->o, tw->kcode, tw->bt };
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) free(p[i]);
}

/* The sparse correction of one head over its buckets, round by round, then
 * each row's own key when no round gave it the row's code, then the
 * combination with the low-rank sums into out (n, d). par (fewer heads
 * than threads): a round's buckets over the threads, each thread with its
 * own tile scratch; a round gives each row one bucket, so a row's updates
 * come from one thread in the order one thread would make them, and the
 * rounds follow each other: the same bits (until 2026-12-06 one head ran on
 * one thread: at N = 64K with one head run() used one core). */
static int sb_sparse(sb_work *w, const float *q, const float *k, const float *v, int n, int d, int m, int r,
                     int b, int causal, float scale, float ck, float *out, int par)
{
    for (int i = 0; i < n; i++) {
        w->rmx[i] = w->cq[i] + ck; /* lrs_i: the low-rank part's log units */
        w->rsm[i] = 0.0;
    }
    memset(w->racc, 0, (size_t)n * d * sizeof *w->racc);
    int rc = AB_OK;
#pragma omp parallel if (par)
    {
        sb_work tw = *w; /* the head's arrays; the first thread works in w's own tile buffers */
        const int own = omp_get_thread_num() > 0;
        int ok = own ? sb_tiles_alloc(&tw, d, m, r) : 1; /* the others in fresh ones */
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
        for (int t = 0; t < r; t++) {
#pragma omp for schedule(dynamic, 1)
            for (int c = 0; c < b; c++)
                if (ok && sb_bucket(&tw, q, k, v, n, d, m, b, t, c, causal, scale, ck) != AB_OK) {
                    ok = 0;
#pragma omp atomic write
                    rc = AB_ENOMEM;
                }
        }
        /* the row's own key, when it shares no code with the query: one
         * pair, sb_tile's update without a tile (a 1 x 1 tile would pack and
         * zero two 64-wide panels per row), four such rows at a time */
        int own4[4], no = 0;
#pragma omp for schedule(static)
        for (int i = 0; i < n; i++)
            if (!sb_shared(tw.qc, tw.kc, n, r, i, i)) {
                own4[no++] = i;
                if (no == 4) {
                    sb_own(&tw, q, k, v, own4, no, d, m, scale, ck);
                    no = 0;
                }
            }
        if (no) sb_own(&tw, q, k, v, own4, no, d, m, scale, ck);
        if (own) {
            sb_tile_free(&tw);
        } else { /* sb_bucket_room may have moved w's key buffers */
            w->kp = tw.kp;
            w->fp = tw.fp;
            w->vg = tw.vg;
            w->kcap = tw.kcap;
        }
    }
    if (rc != AB_OK) return rc;
    const int d1 = d + 1;
#pragma omp parallel for schedule(static) if (par)
    for (int i = 0; i < n; i++) {
        const float lrs = w->cq[i] + ck;
        const double f =
            lrs == w->rmx[i] ? 1.0 : exp((double)lrs - (double)w->rmx[i]); /* low-rank units in the row's */
        const float *lri = w->lr + (size_t)i * d1, *acc = w->racc + (size_t)i * d;
        const double den = f * lri[d] + w->rsm[i];
        const float inv = (float)(1.0 / den);
        float *o = out + (size_t)i * d;
        for (int e = 0; e < d; e++) o[e] = ((float)(f * lri[e]) + acc[e]) * inv;
    }
    return AB_OK;
}

/* run() for head h in w (its scratch); par: the sparse pass's buckets
 * over the threads (sb_sparse). */
static int sb_head(const sb_state *st, const ab_problem *pb, const sb_codes_cache *cc, sb_work *w, int h,
                   float *out, int par)
{
    const int n = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int b = st->buckets, r = st->hashes, hb = (b + 1) / 2, m = st->features;
    const float scale = pb->s.scale, xs = sqrtf(pb->s.scale);
    const size_t per = (size_t)r * (n > 0 ? n : 1);
    const float *q = pb->q + (size_t)h * n * d, *k = pb->k + (size_t)h * n * d,
                *v = pb->v + (size_t)h * n * d;
    if (cc) { /* select()'s codes of this problem */
        memcpy(w->qc, cc->qc + (size_t)h * per, per * sizeof *w->qc);
        memcpy(w->kc, cc->kc + (size_t)h * per, per * sizeof *w->kc);
    } else {
        sb_rotations(pb->seed, h, r, d, hb, w->R);
        /* sc: SB_QT * SB_KT >= LSH_ROWS * hb floats */
        sb_codes(q, n, d, w->R, r, hb, b, w->qc, w->sc, (size_t)SB_QT * SB_KT, w->bt);
        sb_codes(k, n, d, w->R, r, hb, b, w->kc, w->sc, (size_t)SB_QT * SB_KT, w->bt);
    }
    sb_buckets(w->qc, n, r, b, w->qstart, w->qlist);
    sb_buckets(w->kc, n, r, b, w->kstart, w->klist);
    if (favor_draw(pb->seed, h, m, d, w->W) != AB_OK) return AB_ENOMEM;
    favor_project(q, n, d, d, w->W, m, xs, w->pq, w->bt);
    favor_exp_rows(w->pq, n, m, FAVOR_EPS, w->cq);
    const float ck = favor_project(k, n, d, d, w->W, m, xs, w->pk, w->bt);
    favor_exp_global(w->pk, n, m, ck, 0.0f);
    sb_lowrank(w, v, n, d, m, causal);
    return sb_sparse(w, q, k, v, n, d, m, r, b, causal, scale, ck, out + (size_t)h * n * d, par);
}

/* What run() hands each head: the state, the problem, select()'s codes when
 * they are this problem's (NULL: hash again), the output, and one scratch
 * per thread (a head reuses its thread's: allocated per head, the heads'
 * buffers were new memory every time, run() 3 % slower at 16K). */
typedef struct sb_run_ctx {
    const sb_state *st;
    const ab_problem *pb;
    const sb_codes_cache *cc;
    float *out;
    sb_work *w;
} sb_run_ctx;

/* sb_head for head h in its thread's scratch (a bs_head_fn: the heads over
 * the threads, or with fewer heads than threads one head at a time, its
 * buckets over the threads). */
static int sb_one(void *ctx, int h, int par, double *fl, double *by)
{
    const sb_run_ctx *c = ctx;
    (void)fl;
    (void)by;
    return sb_head(c->st, c->pb, c->cc, &c->w[par ? 0 : omp_get_thread_num()], h, c->out, par);
}

static int sb_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    (void)l;
    const sb_state *st = state;
    const int mok = sb_mask_ok(state, &pb->s);
    if (mok != AB_OK) return mok;
    /* one scratch per thread, or one when bs_run_heads runs one head at a time */
    const int nt = pb->s.heads < omp_get_max_threads() ? 1 : omp_get_max_threads();
    sb_work *w = calloc((size_t)nt, sizeof *w);
    int rc = w ? AB_OK : AB_ENOMEM;
    for (int t = 0; rc == AB_OK && t < nt; t++)
        if (!sb_work_alloc(&w[t], pb->s.seq_len, pb->s.head_dim, st->features, st->hashes, st->buckets))
            rc = AB_ENOMEM;
    if (rc == AB_OK) {
        sb_run_ctx c = { st, pb, sb_cache_matches(&st->cache, pb) ? &st->cache : NULL, out, w };
        double unused[2] = { 0.0, 0.0 };
        rc = bs_run_heads(pb->s.heads, sb_one, &c, &unused[0], &unused[1]);
    }
    for (int t = 0; w && t < nt; t++) sb_work_free(&w[t]); /* frees what was allocated (NULLs are fine) */
    free(w);
    if (rc != AB_OK) ab_set_error(state, "scatterbrain: out of memory");
    return rc;
}

/* Implied weights of one row, in the log domain: log w_ij = s_ij on S_i,
 * log(phi(q_i) . phi(k_j)) elsewhere (true features, no shared shift), then
 * shifted by the row max. */
static int sb_weights(void *state, const ab_problem *pb, const ab_layout *l, int head, int row, double *w)
{
    (void)l;
    const sb_state *st = state;
    const int mok = sb_mask_ok(state, &pb->s);
    if (mok != AB_OK) return mok;
    const int n = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int b = st->buckets, r = st->hashes, hb = (b + 1) / 2, m = st->features;
    const double scale = pb->s.scale;
    const float xsf = sqrtf(pb->s.scale); /* as run() */
    const float *q = pb->q + (size_t)head * n * d, *k = pb->k + (size_t)head * n * d,
                *qi = q + (size_t)row * d;
    float *R = malloc((size_t)r * d * hb * sizeof *R), *P = malloc(lsh_scratch_floats(r * hb) * sizeof *P),
          *bt = malloc(favor_bt_floats(d) * sizeof *bt);
    float *W = malloc((size_t)m * d * sizeof *W);
    double *fq = malloc((size_t)m * sizeof *fq), *u = malloc((size_t)m * sizeof *u);
    int *kc = malloc((size_t)r * (n > 0 ? n : 1) * sizeof *kc);
    int rc = (R && P && bt && W && fq && u && kc) ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) rc = favor_draw(pb->seed, head, m, d, W);
    if (rc != AB_OK) {
        free(R);
        free(P);
        free(bt);
        free(W);
        free(fq);
        free(u);
        free(kc);
        return rc;
    }
    sb_rotations(pb->seed, head, r, d, hb, R);
    sb_codes(k, n, d, R, r, hb, b, kc, P, lsh_scratch_floats(r * hb), bt);
    int qc[2];
    sb_codes(qi, 1, d, R, r, hb, b, qc, P, lsh_scratch_floats(r * hb), bt); /* qc[t * 1 + 0] */
    /* query features in run()'s form: per-row shift cq (its max), + eps */
    double sq = 0.0, cq = -INFINITY;
    for (int e = 0; e < d; e++) sq += (double)qi[e] * qi[e];
    for (int x = 0; x < m; x++) {
        double a = 0.0;
        for (int e = 0; e < d; e++) a += (double)W[(size_t)x * d + e] * qi[e];
        u[x] = a * xsf - 0.5 * (double)xsf * xsf * sq;
        cq = u[x] > cq ? u[x] : cq;
    }
    for (int x = 0; x < m; x++) fq[x] = (exp(u[x] - cq) + (double)FAVOR_EPS) / sqrt((double)m);
    const int jmax = causal ? row : n - 1;
    double mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (j > jmax) {
            w[j] = -INFINITY;
            continue;
        }
        int in = j == row;
        for (int t = 0; t < r && !in; t++) in = kc[(size_t)t * n + j] == qc[t];
        const float *kj = k + (size_t)j * d;
        if (in) {
            double a = 0.0;
            for (int e = 0; e < d; e++) a += (double)qi[e] * kj[e];
            w[j] = a * scale;
        } else {
            double sk = 0.0, ak = -INFINITY;
            for (int e = 0; e < d; e++) sk += (double)kj[e] * kj[e];
            for (int x = 0; x < m; x++) {
                double a = 0.0;
                for (int e = 0; e < d; e++) a += (double)W[(size_t)x * d + e] * kj[e];
                u[x] = a * xsf - 0.5 * (double)xsf * xsf * sk;
                ak = u[x] > ak ? u[x] : ak;
            }
            double s = 0.0;
            for (int x = 0; x < m; x++) s += fq[x] * exp(u[x] - ak) / sqrt((double)m);
            w[j] = s > 0 ? cq + ak + log(s) : -INFINITY;
        }
        mx = w[j] > mx ? w[j] : mx;
    }
    for (int j = 0; j < n; j++) w[j] = w[j] == -INFINITY ? 0.0 : exp(w[j] - mx);
    free(R);
    free(P);
    free(bt);
    free(W);
    free(fq);
    free(u);
    free(kc);
    return AB_OK;
}

const ab_method ab_scatterbrain = {
    .abi = AB_ABI_VERSION,
    .family = "lowrank",
    .approx_tol = 3.3, /* measured worst 2.18 (full), 1.54 (causal) at defaults, N = 512: 1.5x */
    .name = "scatterbrain",
    .summary = "Scatterbrain, untrained: exact exp(logit) on LSH bucket-mates + FAVOR+ low-rank estimate on every other key, one normaliser (custom run)",
    .reference = "Chen et al. 2021, Scatterbrain: Unifying Sparse and Low-rank Attention Approximation, NeurIPS, arXiv 2110.15343",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_BUCKETS] = { .name = "buckets", .def = 8, .min = 1, .max = SB_MAXB, .is_int = 1,
                        .help = "LSH buckets per round (density falls as it rises; 1 = exact attention)" },
        [P_HASHES] = { .name = "hashes", .def = 2, .min = 1, .max = SB_MAXR, .is_int = 1,
                       .help = "LSH rounds (a key is in the sparse set if it shares a bucket in any round)" },
        [P_FEATURES] = { .name = "features", .def = 64, .min = 1, .max = 4096, .is_int = 1,
                         .help = "FAVOR+ random features m of the low-rank part" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_BUCKETS, .increasing = 0, .log_scale = 1 },
    .state_size = sizeof(sb_state),
    .init = sb_init,
    .select = sb_select,
    .run = sb_run,
    .fini = sb_fini,
    .weights = sb_weights,
};
AB_REGISTER(ab_scatterbrain)
