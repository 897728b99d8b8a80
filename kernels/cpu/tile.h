/* tile.h — the online-softmax tile step shared by the CPU kernels
 * (flash.c, blocksparse.c, gather.c). Internal; static inline only.
 *
 * One work item is a query tile of at most AB_TILE_Q rows of one head. Its
 * state is FlashAttention-2 style: running max m, running sum l and the
 * unnormalised output acc. Keys arrive in chunks of at most tk columns,
 * either contiguous (flash, blocksparse) or gathered from an index list
 * (gather). For every query row a chunk contributes a valid *prefix* of its
 * columns (lim[r]): the causal mask inside a contiguous diagonal chunk and
 * the causal cut of a sorted token list both have that shape.
 *
 * ab_tile_step() is the inner loop to replace with SIMD later: it only sees
 * a transposed key chunk kt (d, tk), a value chunk (nk, d) and lim[]. */
#ifndef AB_CPU_TILE_H
#define AB_CPU_TILE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"

#define AB_TILE_Q 64          /* query rows per work item at most */
#define AB_TILE_K 64          /* key columns per chunk at most */
#define AB_MAX_HEAD_DIM 512   /* larger head_dim: AB_EUNSUPPORTED */

typedef struct ab_tile {
    int d, tq, tk;
    float *buf;  /* one aligned allocation holding the arrays below */
    float *kt;   /* (d, tk): key chunk, transposed, row stride tk */
    float *vp;   /* (tk, d): packed value chunk (gather) */
    float *s;    /* (tk): logits, then probabilities, of one query row */
    float *m;    /* (tq): running max of the scaled logits */
    float *l;    /* (tq): running sum of exp(logit - m) */
    float *acc;  /* (tq, d): unnormalised output */
    int *lim;    /* (tq): valid column prefix of the current chunk per row */
} ab_tile;

/* Check the problem's shape and pointers. */
static inline int ab_tile_check_problem(const ab_problem *pb, const float *out)
{
    if (!pb || !out || !pb->q || !pb->k || !pb->v)
        return AB_EINVAL;
    if (pb->s.heads <= 0 || pb->s.seq_len < 0 || pb->s.head_dim <= 0)
        return AB_EINVAL;
    if (pb->s.head_dim > AB_MAX_HEAD_DIM)
        return AB_EUNSUPPORTED;
    return AB_OK;
}

/* Per-thread scratch for query tiles of up to tq rows and key chunks of up
 * to tk columns. Returns AB_OK or AB_ENOMEM. */
static inline int ab_tile_alloc(ab_tile *t, int d, int tq, int tk)
{
    memset(t, 0, sizeof(*t));
    /* every array starts on a 64-byte boundary */
#define AB_TILE_PAD(n) ((((size_t)(n)) + 15) & ~(size_t)15)
    size_t n_kt = AB_TILE_PAD((size_t)d * tk), n_vp = AB_TILE_PAD((size_t)tk * d);
    size_t n_s = AB_TILE_PAD(tk), n_m = AB_TILE_PAD(tq), n_acc = AB_TILE_PAD((size_t)tq * d);
#undef AB_TILE_PAD
    size_t total = n_kt + n_vp + n_s + 2 * n_m + n_acc;
    t->buf = aligned_alloc(64, total * sizeof(float));
    t->lim = malloc((size_t)tq * sizeof(int));
    if (!t->buf || !t->lim) {
        free(t->buf);
        free(t->lim);
        t->buf = NULL;
        t->lim = NULL;
        return AB_ENOMEM;
    }
    t->d = d;
    t->tq = tq;
    t->tk = tk;
    t->kt = t->buf;
    t->vp = t->kt + n_kt;
    t->s = t->vp + n_vp;
    t->m = t->s + n_s;
    t->l = t->m + n_m;
    t->acc = t->l + n_m;
    return AB_OK;
}

static inline void ab_tile_free(ab_tile *t)
{
    free(t->buf);
    free(t->lim);
    t->buf = NULL;
    t->lim = NULL;
}

/* Start a query tile of nq <= tq rows. */
static inline void ab_tile_begin(ab_tile *t, int nq)
{
    for (int r = 0; r < nq; r++) {
        t->m[r] = -INFINITY;
        t->l[r] = 0.0f;
    }
    memset(t->acc, 0, (size_t)nq * t->d * sizeof(float));
}

/* The inner loop. q: (nq, d) query rows; t->kt: (d, tk) keys of the chunk;
 * v: (nk, d) values of the chunk; row r uses columns [0, t->lim[r]). */
static inline void ab_tile_step(ab_tile *t, const float *q, int nq, const float *v,
                                float scale)
{
    const int d = t->d, tk = t->tk;
    const float *restrict kt = t->kt;
    float *restrict s = t->s;
    for (int r = 0; r < nq; r++) {
        const int lim = t->lim[r];
        if (lim <= 0)
            continue;
        const float *restrict qr = q + (size_t)r * d;
        float *restrict acc = t->acc + (size_t)r * d;
        /* S = q K^T, one row, vectorised over the key columns */
        for (int c = 0; c < lim; c++)
            s[c] = 0.0f;
        for (int x = 0; x < d; x++) {
            const float qx = qr[x];
            const float *restrict kx = kt + (size_t)x * tk;
            for (int c = 0; c < lim; c++)
                s[c] += qx * kx[c];
        }
        float mx = t->m[r];
        for (int c = 0; c < lim; c++) {
            s[c] *= scale;
            mx = s[c] > mx ? s[c] : mx;
        }
        /* rescale the old state: alpha = exp(m - m'), 0 on the first chunk */
        const float alpha = expf(t->m[r] - mx);
        float sum = 0.0f;
        for (int c = 0; c < lim; c++) {
            s[c] = expf(s[c] - mx);
            sum += s[c];
        }
        t->l[r] = t->l[r] * alpha + sum;
        t->m[r] = mx;
        if (alpha != 1.0f)
            for (int x = 0; x < d; x++)
                acc[x] *= alpha;
        /* acc += P V, vectorised over head_dim */
        for (int c = 0; c < lim; c++) {
            const float p = s[c];
            const float *restrict vc = v + (size_t)c * d;
            for (int x = 0; x < d; x++)
                acc[x] += p * vc[x];
        }
    }
}

/* Contiguous key chunk [j0, j0 + nk), nk <= tk, of one head.
 * q: (nq, d) query rows i0.. of the head; k, v: (seq_len, d) of the head. */
static inline void ab_tile_contig(ab_tile *t, const float *q, int i0, int nq,
                                  const float *k, const float *v, int j0, int nk,
                                  int causal, float scale)
{
    const int d = t->d, tk = t->tk;
    if (causal) {
        if (j0 > i0 + nq - 1)
            return; /* the whole chunk is above the diagonal */
        if (nk > i0 + nq - j0)
            nk = i0 + nq - j0; /* columns no row of the tile can see */
    }
    for (int r = 0; r < nq; r++) {
        int lim = causal ? i0 + r - j0 + 1 : nk;
        t->lim[r] = lim < 0 ? 0 : lim > nk ? nk : lim;
    }
    for (int c = 0; c < nk; c++) {
        const float *kc = k + (size_t)(j0 + c) * d;
        for (int x = 0; x < d; x++)
            t->kt[(size_t)x * tk + c] = kc[x];
    }
    ab_tile_step(t, q, nq, v + (size_t)j0 * d, scale);
}

/* Gathered key chunk: the nk <= tk keys idx[0..nk) (sorted ascending) are
 * packed into kt and vp first. Arguments as in ab_tile_contig. */
static inline void ab_tile_gather(ab_tile *t, const float *q, int i0, int nq,
                                  const float *k, const float *v, const int32_t *idx,
                                  int nk, int causal, float scale)
{
    const int d = t->d, tk = t->tk;
    if (nk <= 0 || (causal && idx[0] > i0 + nq - 1))
        return;
    for (int c = 0; c < nk; c++) {
        const float *kc = k + (size_t)idx[c] * d;
        for (int x = 0; x < d; x++)
            t->kt[(size_t)x * tk + c] = kc[x];
        memcpy(t->vp + (size_t)c * d, v + (size_t)idx[c] * d, (size_t)d * sizeof(float));
    }
    int c = 0;
    for (int r = 0; r < nq; r++) {
        if (causal)
            while (c < nk && idx[c] <= i0 + r)
                c++;
        t->lim[r] = causal ? c : nk;
    }
    ab_tile_step(t, q, nq, t->vp, scale);
}

/* The kept key blocks blk[0..nblk) (sorted) of one query tile; block_k may
 * exceed tk: each block is streamed in chunks. */
static inline void ab_tile_blocks(ab_tile *t, const float *q, int i0, int nq,
                                  const float *k, const float *v, const int32_t *blk,
                                  int64_t nblk, int block_k, int seq_len, int causal,
                                  float scale)
{
    for (int64_t e = 0; e < nblk; e++) {
        const int64_t k0 = (int64_t)blk[e] * block_k;
        if (causal && k0 > i0 + nq - 1)
            break; /* sorted: every later block is above the diagonal */
        const int k1 = (int)(k0 + block_k < seq_len ? k0 + block_k : seq_len);
        for (int j0 = (int)k0; j0 < k1; j0 += t->tk) {
            const int nk = k1 - j0 < t->tk ? k1 - j0 : t->tk;
            ab_tile_contig(t, q, i0, nq, k, v, j0, nk, causal, scale);
        }
    }
}

/* Write the tile's rows: out (nq, d) = acc / l; a row that kept nothing is 0. */
static inline void ab_tile_end(const ab_tile *t, float *out, int nq)
{
    const int d = t->d;
    for (int r = 0; r < nq; r++) {
        float *o = out + (size_t)r * d;
        const float *a = t->acc + (size_t)r * d;
        const float lr = t->l[r];
        if (lr > 0.0f) {
            for (int x = 0; x < d; x++)
                o[x] = a[x] / lr;
        } else {
            memset(o, 0, (size_t)d * sizeof(float));
        }
    }
}

/* Work items of a layout kernel: (head, query block, sub-tile of at most
 * AB_TILE_Q rows). Item `it` is mapped heaviest-first for causal balance.
 * Returns 0 if the sub-tile is empty (partial last block). */
static inline int ab_tile_item(int64_t it, int heads, int n_qblocks, int nsub, int block_q,
                               int seq_len, int *h, int *qb, int *i0, int *nq)
{
    const int64_t rest = it / heads;
    *h = (int)(it % heads);
    *qb = n_qblocks - 1 - (int)(rest / nsub);
    const int64_t start = (int64_t)*qb * block_q + (rest % nsub) * (int64_t)AB_TILE_Q;
    int64_t end = (int64_t)*qb * block_q + block_q;
    if (end > seq_len)
        end = seq_len;
    if (start >= end)
        return 0;
    *i0 = (int)start;
    *nq = (int)(end - start < AB_TILE_Q ? end - start : AB_TILE_Q);
    return 1;
}

/* Shape checks shared by the layout kernels. */
static inline int ab_tile_check_layout(const ab_problem *pb, const ab_layout *l)
{
    if (!l || l->heads != pb->s.heads || l->seq_len != pb->s.seq_len ||
        (l->causal != 0) != (pb->s.causal != 0) || l->block_q <= 0 || l->block_k <= 0)
        return AB_EINVAL;
    if (l->n_qblocks != (int)(((int64_t)l->seq_len + l->block_q - 1) / l->block_q) ||
        l->n_kblocks != (int)(((int64_t)l->seq_len + l->block_k - 1) / l->block_k))
        return AB_EINVAL;
    return AB_OK;
}

#endif /* AB_CPU_TILE_H */
