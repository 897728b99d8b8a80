/* ref.c — the reference: exact attention for chosen query rows of one head,
 * fp64 accumulation, two passes (max of the logits, then sum of exp), either
 * over every key the base mask allows or only over the allowed keys a
 * layout keeps. Used
 * to score the fp32 kernels and the sparse methods; speed is secondary. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

/* 1 if key block kb is in row r's block list (sorted). */
static int row_has_block(const ab_layout *l, int64_t r, int32_t kb)
{
    int64_t lo = l->blk_ptr[r], hi = l->blk_ptr[r + 1];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (l->blk_idx[mid] < kb)
            lo = mid + 1;
        else if (l->blk_idx[mid] > kb)
            hi = mid;
        else
            return 1;
    }
    return 0;
}

/* The keys query row i of head h uses, into keys[] (room for N); returns
 * their count. l must be a valid layout (ab_layout_validate). */
static int row_keys(const ab_layout *l, const ab_mask *m, int N, int h, int i, int *keys)
{
    int jbeg, jend;
    ab_mask_span(m, i, &jbeg, &jend);
    int n = 0;
    if (!l || l->kind == AB_LAYOUT_DENSE) {
        for (int j = jbeg; j < jend; j++)
            if (ab_mask_allows(m, i, j)) keys[n++] = j;
        return n;
    }
    const int64_t r = (int64_t)h * l->n_qblocks + i / l->block_q;
    const int has_blk = l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_MIXED;
    if (has_blk) {
        for (int64_t e = l->blk_ptr[r]; e < l->blk_ptr[r + 1]; e++) {
            int64_t k0 = (int64_t)l->blk_idx[e] * l->block_k;
            const int64_t k1 = k0 + l->block_k < jend ? k0 + l->block_k : jend;
            k0 = k0 > jbeg ? k0 : jbeg;
            for (int64_t j = k0; j < k1 && n < N; j++) /* n < N: a valid layout */
                if (ab_mask_allows(m, i, (int)j)) keys[n++] = (int)j;
        }
    }
    if (l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED) {
        for (int64_t e = l->tok_ptr[r]; e < l->tok_ptr[r + 1]; e++) {
            const int j = l->tok_idx[e];
            if (!ab_mask_allows(m, i, j) || n >= N || (has_blk && row_has_block(l, r, j / l->block_k)))
                continue; /* masked, or already counted with its block */
            keys[n++] = j;
        }
    }
    return n;
}

int ab_ref_rows(const ab_problem *pb, int head, const int *rows, int nrows, const ab_layout *l,
                double *out /* (nrows, head_dim) */, double *row_max /* [nrows] or NULL */,
                double *row_sum /* [nrows] or NULL */)
{
    if (!pb || !pb->q || !pb->k || !pb->v || nrows < 0 || (nrows > 0 && (!rows || !out))) return AB_EINVAL;
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    const int causal = pb->s.causal != 0;
    const ab_mask mask = ab_shape_mask(&pb->s);
    const double scale = pb->s.scale;
    if (H <= 0 || N < 0 || d <= 0 || head < 0 || head >= H) return AB_EINVAL;
    for (int a = 0; a < nrows; a++)
        if (rows[a] < 0 || rows[a] >= N) return AB_EINVAL;
    if (l) {
        if (l->kind == AB_LAYOUT_CUSTOM || l->heads != H || l->seq_len != N || (l->causal != 0) != causal ||
            l->mask != pb->s.mask)
            return AB_EINVAL;
        if (l->kind != AB_LAYOUT_DENSE &&
            (l->block_q <= 0 || l->block_k <= 0 ||
             ((l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_MIXED) && !l->blk_ptr) ||
             ((l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED) && !l->tok_ptr)))
            return AB_EINVAL;
    }
    if (nrows == 0) return AB_OK;
    const size_t hoff = (size_t)head * N * d;
    const float *q = pb->q + hoff; /* (seq_len, head_dim) */
    const float *k = pb->k + hoff; /* (seq_len, head_dim) */
    const float *v = pb->v + hoff; /* (seq_len, head_dim) */
    int failed = 0;

#pragma omp parallel if (nrows >= 4)
    {
        /* MIXED rows list a key at most once: N entries suffice */
        int *keys = malloc((size_t)N * sizeof(int));        /* [seq_len] */
        double *logit = malloc((size_t)N * sizeof(double)); /* [seq_len] */
        const int ok = keys && logit;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int a = 0; a < nrows; a++) {
            if (!ok) continue;
            const int i = rows[a];
            double *o = out + (size_t)a * d;
            const int nk = row_keys(l, &mask, N, head, i, keys);
            memset(o, 0, (size_t)d * sizeof(double));
            if (nk == 0) {
                if (row_max) row_max[a] = -INFINITY;
                if (row_sum) row_sum[a] = 0.0;
                continue;
            }
            const float *qi = q + (size_t)i * d;
            double mx = -INFINITY;
            for (int c = 0; c < nk; c++) {
                const float *kj = k + (size_t)keys[c] * d;
                double dot = 0.0;
                for (int x = 0; x < d; x++) dot += (double)qi[x] * (double)kj[x];
                logit[c] = dot * scale;
                if (logit[c] > mx) mx = logit[c];
            }
            double sum = 0.0;
            for (int c = 0; c < nk; c++) {
                const double p = exp(logit[c] - mx);
                const float *vj = v + (size_t)keys[c] * d;
                sum += p;
                for (int x = 0; x < d; x++) o[x] += p * (double)vj[x];
            }
            for (int x = 0; x < d; x++) o[x] /= sum;
            if (row_max) row_max[a] = mx;
            if (row_sum) row_sum[a] = sum;
        }
        free(keys);
        free(logit);
    }
    return failed ? AB_ENOMEM : AB_OK;
}
