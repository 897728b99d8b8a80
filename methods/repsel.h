/* repsel.h — block selection by block representatives, shared by the
 * training-free proxies landmark_proxy, chunkllm_proxy and nosa_proxy.
 *
 * Each of those methods scores key blocks through one or a few
 * "representative" vectors per block (a mean key, a boundary token's key,
 * compressed keys) against one representative query per query block, then
 * keeps per query block some forced blocks (local, sink) and the best-scoring
 * others. This header holds the common part:
 *   - rs_live_blocks: which (query block, key block) pairs the base mask
 *     leaves non-empty (ab_mask_block), so a budget is never spent on a block
 *     the mask empties and such a block is never listed;
 *   - rs_pick_rows / rs_pool_*: gathering representative rows;
 *   - rs_force / rs_take_best: a row's forced blocks and its top-k by score;
 *   - rs_select: the driver: per head one GEMM of the query representatives
 *     against the key representatives (bs_gemm_nt, methods/block_score.h),
 *     an optional max over the representatives of a block, and the method's
 *     row rule (a callback), one bulk ab_layout_add_blocks per row; it adds
 *     its work to the caller's FLOP and byte counts (ab_layout_set_cost units).
 * Header-only (static inline), not a method: it registers nothing.
 */
#ifndef AB_METHODS_REPSEL_H
#define AB_METHODS_REPSEL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"
#include "methods/block_score.h"

/* live[(qb * nkb) + kb] = 1 when the base mask lets some row of query block
 * qb see some key of key block kb (not AB_BLOCK_EMPTY). Only key blocks in
 * the rows' span union (bs_rows_span) are classified. Returns NULL when out
 * of memory. */
static inline uint8_t *rs_live_blocks(const ab_problem *pb, const ab_layout *l)
{
    const int N = l->seq_len, bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    uint8_t *live = calloc((size_t)nqb * nkb + 1, 1);
    if (!live) return NULL;
    const ab_mask mask = ab_shape_mask(&pb->s);
#pragma omp parallel for schedule(dynamic, 4)
    for (int qb = 0; qb < nqb; qb++) {
        const int r0 = qb * bq, r1 = r0 + bq < N ? r0 + bq : N;
        int lo, hi;
        bs_rows_span(&mask, r0, r1, &lo, &hi);
        if (lo >= hi) continue;
        for (int kb = lo / bk; kb < nkb && kb * bk < hi; kb++) {
            const int k1 = (kb + 1) * bk < N ? (kb + 1) * bk : N;
            live[(size_t)qb * nkb + kb] = ab_mask_block(&mask, r0, r1, kb * bk, k1) != AB_BLOCK_EMPTY;
        }
    }
    return live;
}

/* out[b] = x[row(b)] for b < nb, rows of length d: row(b) = min(n - 1,
 * max(0, b * step + off)) — e.g. the last row of each block (step = blk,
 * off = blk - 1) or the row before each block (off = -1). */
static inline void rs_pick_rows(const float *x, int n, int d, int nb, int step, int off, float *out)
{
    for (int b = 0; b < nb; b++) {
        long r = (long)b * step + off;
        r = r < 0 ? 0 : r > n - 1 ? n - 1 : r;
        memcpy(out + (size_t)b * d, x + (size_t)r * d, (size_t)d * sizeof *out);
    }
}

/* Sliding means of x (n, d): out[t] = mean of rows [t stride, min(n, t stride
 * + kernel)) for t < rs_n_windows(n, stride) (the last ones may be short, so
 * every row is in some window). */
static inline int rs_n_windows(int n, int stride) { return (n + stride - 1) / stride; }

static inline void rs_pool_windows(const float *x, int n, int d, int kernel, int stride, float *out)
{
    const int nt = rs_n_windows(n, stride);
    for (int t = 0; t < nt; t++) {
        const int r0 = t * stride, nr = n - r0 < kernel ? n - r0 : kernel;
        bs_mean_rows(x, d, r0, nr, out + (size_t)t * d);
    }
}

/* Window range [*lo, *hi) of rs_pool_windows that overlaps key block kb (keys
 * [kb bk, (kb + 1) bk) clipped to n). */
static inline void rs_window_range(int kb, int bk, int n, int kernel, int stride, int *lo, int *hi)
{
    const int k0 = kb * bk, k1 = (kb + 1) * bk < n ? (kb + 1) * bk : n;
    const int nt = rs_n_windows(n, stride);
    /* t overlaps when t stride < k1 and t stride + kernel > k0 */
    const int a = k0 - kernel < 0 ? 0 : (k0 - kernel) / stride + 1;
    int b = (k1 + stride - 1) / stride;
    b = b < nt ? b : nt;
    *lo = a < b ? a : b;
    *hi = b;
}

/* Keep key block kb in the row when the mask leaves it live and it is not
 * taken yet; returns the new count n. */
static inline int rs_force(const uint8_t *live, uint8_t *taken, int nkb, int kb, int32_t *idx, int n)
{
    if (kb >= 0 && kb < nkb && live[kb] && !taken[kb]) {
        taken[kb] = 1;
        idx[n++] = kb;
    }
    return n;
}

/* Keep the first `count` live key blocks of the row (the sink / initial
 * blocks: under a document mask those of the row's own document); returns
 * the new count n. */
static inline int rs_force_first(const uint8_t *live, uint8_t *taken, int nkb, int count, int32_t *idx, int n)
{
    for (int kb = 0; kb < nkb && count > 0; kb++)
        if (live[kb]) {
            n = rs_force(live, taken, nkb, kb, idx, n);
            count--;
        }
    return n;
}

/* Add the best `take` live, not yet taken key blocks of the row by score
 * (higher first, ties to the lower index, NaN last) to idx[n ...]; returns
 * the new count. cand: scratch of nkb. *ops += the selection's compares. */
static inline int rs_take_best(const float *score, const uint8_t *live, uint8_t *taken, int nkb, int take,
                               bs_cand *cand, int32_t *idx, int n, double *ops)
{
    int nc = 0;
    for (int kb = 0; kb < nkb; kb++)
        if (live[kb] && !taken[kb]) {
            cand[nc].score = score[kb];
            cand[nc].idx = kb;
            nc++;
        }
    take = take < nc ? take : nc;
    if (take <= 0) return n;
    if (take < nc) bs_select_top(cand, nc, take);
    *ops += 2.0 * nc;
    for (int t = 0; t < take; t++) {
        taken[cand[t].idx] = 1;
        idx[n++] = cand[t].idx;
    }
    return n;
}

/* A method's row rule: fill idx with the key blocks query block qb keeps,
 * from score (nkb: the query-aware block scores of this row), agn (nkb: the
 * query-agnostic block importance of this head, or NULL), live (nkb: the
 * mask's live blocks of this row) and taken (nkb zeros; mark what you keep,
 * rs_force / rs_take_best do). Returns the number of blocks in idx. */
typedef int (*rs_row_fn)(const void *cfg, const ab_layout *l, int qb, const float *score, const float *agn,
                         const uint8_t *live, uint8_t *taken, bs_cand *cand, int32_t *idx, double *ops);

typedef struct rs_spec {
    const char *name;
    const float *qrep; /* (H, nqb, d): one query representative per query block */
    const float *krep; /* (H, nrep, d): key representatives */
    int nrep;          /* per head; = nkb when rep_lo is NULL */
    /* NULL: block kb's score is rep kb's; else the max over reps [rep_lo[kb], rep_hi[kb]) */
    const int32_t *rep_lo, *rep_hi;
    const float *agn; /* (H, nkb) query-agnostic importance, or NULL */
    rs_row_fn row;
    const void *cfg;
} rs_spec;

/* The driver (see the header comment). Adds to *flops the GEMM (2 d per
 * logit, every (query block, representative) pair of every head: computed
 * whole), the max over representatives, the row rules' compares; to *bytes
 * the representatives read and the logits written and read (fp32). */
static inline int rs_select(void *state, const ab_problem *pb, ab_layout *l, const rs_spec *sp, double *flops,
                            double *bytes)
{
    const int H = l->heads, d = pb->s.head_dim, nqb = l->n_qblocks, nkb = l->n_kblocks, nrep = sp->nrep;
    uint8_t *live = rs_live_blocks(pb, l);
    int rc = live ? AB_OK : AB_ENOMEM;
    double ops = 0.0;
    if (rc == AB_OK) {
#pragma omp parallel reduction(+ : ops)
        {
            float *bt = malloc((size_t)(d > 0 ? d : 1) * BS_PANEL * sizeof *bt);
            float *lg = malloc(((size_t)nqb * nrep + 1) * sizeof *lg);
            float *sc = sp->rep_lo ? malloc(((size_t)nqb * nkb + 1) * sizeof *sc) : lg;
            bs_cand *cand = malloc(((size_t)nkb + 1) * sizeof *cand);
            int32_t *idx = malloc(((size_t)nkb + 1) * sizeof *idx);
            uint8_t *taken = calloc((size_t)nkb + 1, 1);
            int ok = bt && lg && sc && cand && idx && taken;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(static)
            for (int h = 0; h < H; h++) {
                if (!ok) continue;
                bs_gemm_nt(sp->qrep + (size_t)h * nqb * d, d, nqb, sp->krep + (size_t)h * nrep * d, d, nrep,
                           d, pb->s.scale, lg, nrep, bt);
                if (sp->rep_lo)
                    for (int qb = 0; qb < nqb; qb++)
                        for (int kb = 0; kb < nkb; kb++) {
                            float m = -INFINITY;
                            for (int t = sp->rep_lo[kb]; t < sp->rep_hi[kb]; t++) {
                                const float x = lg[(size_t)qb * nrep + t];
                                m = x > m ? x : m;
                            }
                            sc[(size_t)qb * nkb + kb] = m;
                            ops += sp->rep_hi[kb] - sp->rep_lo[kb];
                        }
                const float *agn = sp->agn ? sp->agn + (size_t)h * nkb : NULL;
                for (int qb = 0; ok && qb < nqb; qb++) {
                    const uint8_t *lv = live + (size_t)qb * nkb;
                    const int n =
                        sp->row(sp->cfg, l, qb, sc + (size_t)qb * nkb, agn, lv, taken, cand, idx, &ops);
                    for (int t = 0; t < n; t++) taken[idx[t]] = 0;
                    const int ra = ab_layout_add_blocks(l, h, qb, idx, n);
                    if (ra != AB_OK) {
                        ok = 0;
#pragma omp atomic write
                        rc = ra;
                    }
                }
            }
            free(bt);
            free(lg);
            if (sc != lg) free(sc);
            free(cand);
            free(idx);
            free(taken);
        }
    }
    free(live);
    if (rc == AB_ENOMEM) ab_set_error(state, "%s: out of memory", sp->name);
    if (rc == AB_OK) {
        const double logits = (double)H * nqb * nrep;
        *flops += logits * 2.0 * d + ops;
        *bytes += ((double)H * (nqb + nrep) * d + 2.0 * logits) * sizeof(float);
    }
    return rc;
}

#endif
