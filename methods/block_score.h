/* block_score.h — scoring and ranking of blocks, shared by the dynamic selectors
 * (xattention, minference_block, flexprefill, seer_proxy, quest_prefill,
 * anchor and anchor_small through anchor_core.h, pbs, cca; the token
 * selectors spark, oracle_topk_token, minference_vs, dhsa): a vectorisable A·Bᵀ on row-major panels, scaled
 * logit panels, block mean pooling, a deterministic (score desc, index asc)
 * sort and a softmax. The dithered fractional budget (mc_dither) and the
 * other method-wide helpers are in methods/keep.h, included here.
 * Header-only (static inline), not a method: it registers nothing.
 */
#ifndef AB_METHODS_BLOCK_SCORE_H
#define AB_METHODS_BLOCK_SCORE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "methods/keep.h"

#define BS_PANEL 64 /* B rows transposed at a time in bs_gemm_nt */

/* C[i][j] = alpha * sum_c A[i][c] * B[j][c] for i < m, j < n.
 * A: (m, D) with row stride lda; B: (n, D) with row stride ldb;
 * C: (m, n) with row stride ldc; bt: scratch of D * BS_PANEL floats.
 * B is transposed one panel at a time so the inner loop runs over B rows and
 * vectorises without reassociation: results are independent of threading. */
static inline void bs_gemm_nt(const float *A, int lda, int m, const float *B, int ldb, int n, int D,
                              float alpha, float *C, int ldc, float *bt)
{
    for (int j0 = 0; j0 < n; j0 += BS_PANEL) {
        const int nj = n - j0 < BS_PANEL ? n - j0 : BS_PANEL;
        for (int j = 0; j < nj; j++)
            for (int c = 0; c < D; c++) bt[(size_t)c * BS_PANEL + j] = B[(size_t)(j0 + j) * ldb + c];
        for (int i = 0; i < m; i++) {
            float acc[BS_PANEL];
            for (int j = 0; j < nj; j++) acc[j] = 0.0f;
            const float *a = A + (size_t)i * lda;
            for (int c = 0; c < D; c++) {
                const float ac = a[c];
                const float *br = bt + (size_t)c * BS_PANEL;
                for (int j = 0; j < nj; j++) acc[j] += ac * br[j];
            }
            float *crow = C + (size_t)i * ldc + j0;
            for (int j = 0; j < nj; j++) crow[j] = alpha * acc[j];
        }
    }
}

/* Scaled logits s[i][j] = sum_c (q[i][c] * scale) * k[j][c] for i < nr,
 * j < kc. q: (nr, d), k: (kc, d), s: (nr, kc), kt: scratch of d * BS_PANEL
 * floats. Unlike bs_gemm_nt the scale multiplies each query element before
 * the sum (the rounding the exact-score selectors were written with). */
static inline void bs_logits(const float *q, int nr, const float *k, int kc, int d, float scale, float *s,
                             float *kt)
{
    for (int j0 = 0; j0 < kc; j0 += BS_PANEL) {
        const int nj = kc - j0 < BS_PANEL ? kc - j0 : BS_PANEL;
        for (int j = 0; j < nj; j++)
            for (int c = 0; c < d; c++) kt[(size_t)c * BS_PANEL + j] = k[(size_t)(j0 + j) * d + c];
        for (int i = 0; i < nr; i++) {
            float *srow = s + (size_t)i * kc + j0; /* (nj) */
            for (int j = 0; j < nj; j++) srow[j] = 0.0f;
            for (int c = 0; c < d; c++) {
                const float qc = q[(size_t)i * d + c] * scale;
                const float *kr = kt + (size_t)c * BS_PANEL;
                for (int j = 0; j < nj; j++) srow[j] += qc * kr[j];
            }
        }
    }
}

/* Mean of rows [r0, r0 + nr) of x (rows of length d) into out (d). */
static inline void bs_mean_rows(const float *x, int d, int r0, int nr, float *out)
{
    for (int c = 0; c < d; c++) out[c] = 0.0f;
    for (int i = 0; i < nr; i++)
        for (int c = 0; c < d; c++) out[c] += x[(size_t)(r0 + i) * d + c];
    const float inv = 1.0f / (float)(nr > 0 ? nr : 1);
    for (int c = 0; c < d; c++) out[c] *= inv;
}

/* Mean-pool x (n, d) over blocks of `blk` rows into out (ceil(n/blk), d);
 * the last block averages only the rows it has. */
static inline void bs_pool_mean(const float *x, int n, int d, int blk, float *out)
{
    const int nb = (n + blk - 1) / blk;
    for (int b = 0; b < nb; b++) {
        const int r0 = b * blk, nr = n - r0 < blk ? n - r0 : blk;
        bs_mean_rows(x, d, r0, nr, out + (size_t)b * d);
    }
}

/* Key block holding the last row of query block qb (the "diagonal" block). */
static inline int bs_diag_block(int qb, int bq, int bk, int n)
{
    const int last = ((qb + 1) * bq < n ? (qb + 1) * bq : n) - 1;
    return last / bk;
}

/* Union of the base-mask spans of query rows [r0, r1): the keys any of them
 * may see lie in [*lo, *hi) (*lo >= *hi: none). For the shipped masks the
 * union is one interval, so the key blocks it touches are exactly the
 * blocks the mask leaves non-empty for these rows (under causal: up to the
 * diagonal; under a document mask: those of the rows' own documents). */
static inline void bs_rows_span(const ab_mask *m, int r0, int r1, int *lo, int *hi)
{
    int a = m->seq_len, b = 0;
    r1 = r1 < m->seq_len ? r1 : m->seq_len;
    for (int i = r0 > 0 ? r0 : 0; i < r1; i++) {
        int x, y;
        ab_mask_span(m, i, &x, &y);
        if (x < y) {
            a = x < a ? x : a;
            b = y > b ? y : b;
        }
    }
    *lo = a;
    *hi = b;
}

/* A scored candidate. */
typedef struct bs_cand {
    double score;
    int32_t idx;
} bs_cand;

/* Higher score first, then lower index; NaN ranks last. A total order, so
 * qsort is deterministic. */
static inline int bs_cand_cmp(const void *pa, const void *pb)
{
    const bs_cand *a = pa, *b = pb;
    const int an = isnan(a->score), bn = isnan(b->score);
    if (an != bn) return an - bn;
    if (!an) {
        if (a->score > b->score) return -1;
        if (a->score < b->score) return 1;
    }
    return (a->idx > b->idx) - (a->idx < b->idx);
}

static inline void bs_sort_desc(bs_cand *c, int n)
{
    if (n > 1) qsort(c, (size_t)n, sizeof *c, bs_cand_cmp);
}

/* The block choice of minference_block (and of seer_proxy's proxy gate):
 * per head and query block, the logits scale * pq(qb) . pk(kb) of the
 * candidate key blocks (those the base mask lets some row of the query
 * block see, bs_rows_span: under causal up to the diagonal block) are
 * ranked (ties to the lower index) and the best mc_dither(topk, qb) of them, at most
 * ceil(topk), are added to l as key blocks, one bulk call per query block.
 * The softmax the papers apply per row is monotone, so ranking the logits
 * is the same. pq: (heads, n_qblocks, d) pooled queries; pk: (heads,
 * n_kblocks, d) pooled keys. Returns AB_OK, AB_ENOMEM or the builder's
 * error. */
/* Blocks a pooled selector keeps whatever their score (bs_topk_pooled's
 * force): key block 0 (when the row's mask lets it see any of it) and the
 * diagonal block. */
#define BS_FORCE_SINK 1u
#define BS_FORCE_DIAG 2u

static inline int bs_topk_pooled(const ab_problem *pb, ab_layout *l, const float *pq, const float *pk,
                                 double topk, unsigned force)
{
    const int H = l->heads, d = pb->s.head_dim;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    const int rows = H * nqb;
    const int keep = (int)ceil(topk) < nkb ? (int)ceil(topk) : nkb;
    const ab_mask mask = ab_shape_mask(&pb->s);
    float *sc = malloc((size_t)rows * nkb * sizeof *sc);      /* (heads*n_qblocks, n_kblocks) */
    int32_t *cb = malloc((size_t)(2 * nqb + 1) * sizeof *cb); /* (n_qblocks, 2) candidate blocks [b0, b1) */
    int rc = sc && cb ? AB_OK : AB_ENOMEM;
    for (int qb = 0; rc == AB_OK && qb < nqb; qb++) {
        int lo, hi;
        bs_rows_span(&mask, qb * bq, (qb + 1) * bq, &lo, &hi);
        cb[2 * qb] = lo < hi ? lo / bk : 0;
        cb[2 * qb + 1] = lo < hi ? (hi + bk - 1) / bk : 0;
    }
    if (rc == AB_OK) {
#pragma omp parallel
        {
            float *bt = malloc((size_t)d * BS_PANEL * sizeof *bt);
            bs_cand *cand = malloc((size_t)nkb * sizeof *cand);
            int32_t *idx = malloc((size_t)(keep + 2) * sizeof *idx); /* (keep + forced) one row's blocks */
            int ok = bt && cand && idx;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(static)
            for (int h = 0; h < H; h++)
                if (ok)
                    bs_gemm_nt(pq + (size_t)h * nqb * d, d, nqb, pk + (size_t)h * nkb * d, d, nkb, d,
                               pb->s.scale, sc + (size_t)h * nqb * nkb, nkb, bt);
#pragma omp for schedule(static)
            for (int r = 0; r < rows; r++) {
                if (!ok) continue;
                const int qb = r % nqb, b0 = cb[2 * qb];
                const int nc = cb[2 * qb + 1] - b0;
                for (int b = 0; b < nc; b++) {
                    cand[b].score = sc[(size_t)r * nkb + b0 + b];
                    cand[b].idx = b0 + b;
                }
                bs_sort_desc(cand, nc);
                int kr = mc_dither(topk, qb);
                kr = kr < keep ? kr : keep;
                /* forced blocks first (they count towards the budget, and
                 * are kept even beyond it), then the best of the rest */
                const int diag = bs_diag_block(qb, bq, bk, l->seq_len);
                int n = 0;
                if ((force & BS_FORCE_SINK) && nc > 0 && b0 == 0) idx[n++] = 0;
                if ((force & BS_FORCE_DIAG) && diag >= b0 && diag < b0 + nc && !(n == 1 && diag == 0))
                    idx[n++] = diag;
                const int nf = n;
                for (int t = 0; t < nc && n < kr; t++) {
                    const int b = cand[t].idx;
                    if (!(nf > 0 && b == idx[0]) && !(nf > 1 && b == idx[1])) idx[n++] = b;
                }
                const int ra = ab_layout_add_blocks(l, r / nqb, qb, idx, n);
                if (ra != AB_OK) {
                    ok = 0;
#pragma omp atomic write
                    rc = ra;
                }
            }
            free(bt);
            free(cand);
            free(idx);
        }
    }
    free(sc);
    free(cb);
    return rc;
}

/* Pools one head's rows x (n, d) in blocks of blk rows into out (n_blocks, d). */
typedef void (*bs_pool_fn)(const float *x, int n, int d, int blk, float *out);

/* The select() of the pooled block selectors (MInference block, the
 * SeerAttention proxy): mean-pooled queries, keys pooled by pool_k, then
 * bs_topk_pooled. name prefixes the out-of-memory message. */
static inline int bs_select_pooled(void *state, const char *name, const ab_problem *pb, ab_layout *l,
                                   bs_pool_fn pool_k, double topk, unsigned force)
{
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    float *pq = malloc((size_t)H * nqb * d * sizeof *pq); /* (heads, n_qblocks, d) */
    float *pk = malloc((size_t)H * nkb * d * sizeof *pk); /* (heads, n_kblocks, d) */
    int rc = (pq && pk) ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) {
#pragma omp parallel for schedule(static)
        for (int h = 0; h < H; h++) {
            bs_pool_mean(pb->q + (size_t)h * N * d, N, d, bq, pq + (size_t)h * nqb * d);
            pool_k(pb->k + (size_t)h * N * d, N, d, bk, pk + (size_t)h * nkb * d);
        }
        rc = bs_topk_pooled(pb, l, pq, pk, topk, force);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "%s: out of memory", name);
    free(pq);
    free(pk);
    return rc;
}

/* In-place softmax of x[0..n) in double accumulation; returns nothing.
 * n == 0 is a no-op. */
static inline void bs_softmax(double *x, int n)
{
    if (n <= 0) return;
    double m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = exp(x[i] - m);
        s += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= s;
}

#endif
