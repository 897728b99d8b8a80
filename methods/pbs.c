/* pbs.c — `pbs`: Permuted Block-Sparse attention (PBS-Attn; Wang et al.
 * 2025, "Sparser Block-Sparse Attention via Token Permutation",
 * arXiv 2510.21270; code xinghaow99/pbs-attn).
 *
 * Block-sparse selection wastes budget when a block's mass sits on a few of
 * its keys. PBS-Attn permutes keys within segments so that important keys
 * cluster into few blocks, selects blocks on the permuted order and
 * unpermutes. Per head:
 *  1. Key importance: column sums of softmax(Q_last K^T * scale) over the
 *     last block_q queries (causal), as the authors estimate it.
 *  2. Segment-wise permutation: keys are sorted by importance (descending,
 *     ties to the lower index) within each segment of `segment` tokens, so
 *     causality between segments is untouched; each segment then splits into
 *     permuted blocks of block_k keys.
 *  3. Per query block: score each permuted block of the segments that end
 *     before the diagonal key block by pooled query . mean key of the
 *     permuted block, keep the top-k (fractional k dithered over query
 *     blocks as oracle_topk_block.c); the keys between the last whole
 *     segment and the diagonal block are candidates as ordinary blocks; the
 *     diagonal block is always kept (in the authors' kernel the diagonal
 *     segment is computed with its causal mask).
 *  4. Our kernels take original token indices, so a kept permuted block is
 *     written as its original key indices: a TOKEN layout, which the gather
 *     kernel packs contiguously — the "unpermute" is the index list itself
 *     and the output needs no reordering.
 * Non-causal: every segment other than the one holding the diagonal block is
 * permuted.
 *
 * Density knob: topk, permuted key blocks per query block beyond the
 * diagonal (fractional, continuous). Memory O(N) per head plus one
 * (block_q, N) logit panel per thread; cost O(block_q N d + N^2 d / block_q).
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdlib.h>

typedef struct pbs_state {
    double topk; /* permuted blocks per query block beyond the diagonal */
    int segment; /* permutation segment in tokens (rounded up to block_k) */
} pbs_state;

enum { P_TOPK = 0, P_SEG, P_COUNT };

static int pbs_init(void *state, const ab_params *p, const ab_shape *s)
{
    pbs_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "pbs: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_TOPK] >= 0 && p->v[P_TOPK] <= (1 << 16)) ||
        !(p->v[P_SEG] >= 1 && p->v[P_SEG] <= (1 << 20))) {
        ab_set_error(state, "pbs: topk must be in [0, 65536], segment in [1, 2^20]");
        return AB_EINVAL;
    }
    st->topk = p->v[P_TOPK];
    st->segment = (int)p->v[P_SEG];
    return AB_OK;
}

/* Permuted candidate block: keys perm[j0 .. j1). */
typedef struct pblock {
    int j0, j1;
} pblock;

static int pbs_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const pbs_state *st = state;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks;
    const float scale = pb->s.scale;
    const int seg = (st->segment + bk - 1) / bk * bk;
    const int npb = (N + bk - 1) / bk + (N + seg - 1) / seg; /* bound on candidate blocks */
    const int keep = (int)ceil(st->topk) < npb ? (int)ceil(st->topk) : npb;
    const int kcap = keep > 0 ? keep : 1;
    const int rows = H * nqb;

    int32_t *perm = malloc((size_t)H * N * sizeof *perm);   /* (heads, N) key order */
    float *pkm = malloc((size_t)H * npb * d * sizeof *pkm); /* (heads, npb, d) permuted block means */
    pblock *blk = malloc((size_t)H * npb * sizeof *blk);    /* (heads, npb) */
    int *nblk = malloc((size_t)H * sizeof *nblk);
    int *seg_first =
        malloc((size_t)H * ((N + seg - 1) / seg + 1) * sizeof *seg_first); /* first block of segment */
    int rc = (perm && pkm && blk && nblk && seg_first) ? AB_OK : AB_ENOMEM;
    const int nseg = (N + seg - 1) / seg;

    if (rc == AB_OK) {
        /* 1-2: per head importance and permutation */
#pragma omp parallel
        {
            const int nl = N < bq ? N : bq;
            float *s = malloc((size_t)nl * N * sizeof *s); /* (nl, N) */
            float *bt = malloc((size_t)d * BS_PANEL * sizeof *bt);
            double *row = malloc((size_t)N * sizeof *row);
            bs_cand *imp = malloc((size_t)N * sizeof *imp);
            const int ok = s && bt && row && imp;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int h = 0; h < H; h++) {
                if (!ok) continue;
                const float *q = pb->q + (size_t)h * N * d, *k = pb->k + (size_t)h * N * d;
                const int r0 = N - nl;
                bs_gemm_nt(q + (size_t)r0 * d, d, nl, k, d, N, d, scale, s, N, bt);
                for (int j = 0; j < N; j++) {
                    imp[j].score = 0.0;
                    imp[j].idx = j;
                }
                for (int i = 0; i < nl; i++) {
                    const int nv = causal ? r0 + i + 1 : N;
                    for (int j = 0; j < nv; j++) row[j] = s[(size_t)i * N + j];
                    bs_softmax(row, nv);
                    for (int j = 0; j < nv; j++) imp[j].score += row[j];
                }
                int32_t *pm = perm + (size_t)h * N;
                pblock *bl = blk + (size_t)h * npb;
                float *means = pkm + (size_t)h * npb * d;
                int *sf = seg_first + (size_t)h * (nseg + 1);
                int nb = 0;
                for (int g = 0; g < nseg; g++) {
                    const int j0 = g * seg, j1 = j0 + seg < N ? j0 + seg : N;
                    bs_sort_desc(imp + j0, j1 - j0);
                    for (int j = j0; j < j1; j++) pm[j] = imp[j].idx;
                    sf[g] = nb;
                    for (int b0 = j0; b0 < j1; b0 += bk) {
                        const int b1 = b0 + bk < j1 ? b0 + bk : j1;
                        float *mu = means + (size_t)nb * d;
                        for (int c = 0; c < d; c++) mu[c] = 0.0f;
                        for (int j = b0; j < b1; j++)
                            for (int c = 0; c < d; c++) mu[c] += k[(size_t)pm[j] * d + c];
                        for (int c = 0; c < d; c++) mu[c] /= (float)(b1 - b0);
                        bl[nb].j0 = b0;
                        bl[nb].j1 = b1;
                        nb++;
                    }
                }
                sf[nseg] = nb;
                nblk[h] = nb;
            }
            free(s);
            free(bt);
            free(row);
            free(imp);
        }
    }
    if (rc == AB_OK) {
        /* 3: per query block, score permuted blocks of the earlier segments;
         * 4: add the kept ones as original key indices */
#pragma omp parallel
        {
            float *qm = malloc((size_t)d * sizeof *qm);
            bs_cand *cand = malloc((size_t)npb * sizeof *cand);
            int32_t *keys =
                malloc((size_t)(kcap + 1) * bk * sizeof *keys); /* (keep + 1 blocks) one row's keys */
            int ok = qm && cand && keys;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 4)
            for (int r = 0; r < rows; r++) {
                if (!ok) continue;
                const int h = r / nqb, qb = r % nqb;
                const int r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
                const int d0 = bs_diag_block(qb, bq, bk, N) * bk; /* diagonal block start */
                const int dseg = d0 / seg;                        /* its segment */
                const float *means = pkm + (size_t)h * npb * d;
                const int *sf = seg_first + (size_t)h * (nseg + 1);
                bs_mean_rows(pb->q + (size_t)h * N * d, d, r0, nr, qm);
                int m = 0;
                for (int g = 0; g < nseg; g++) {
                    if (g == dseg || (causal && g > dseg)) continue;
                    for (int b = sf[g]; b < sf[g + 1]; b++) {
                        double sc = 0.0;
                        for (int c = 0; c < d; c++) sc += (double)qm[c] * means[(size_t)b * d + c];
                        cand[m].score = sc;
                        cand[m].idx = b;
                        m++;
                    }
                }
                /* the diagonal segment's blocks before the diagonal, unpermuted:
                 * encoded as -(key block index) - 1 */
                for (int kb = dseg * seg / bk; kb * bk < d0; kb++) {
                    const int j0 = kb * bk;
                    double sc = 0.0;
                    for (int j = j0; j < j0 + bk; j++)
                        for (int c = 0; c < d; c++) sc += (double)qm[c] * pb->k[((size_t)h * N + j) * d + c];
                    cand[m].score = sc / bk;
                    cand[m].idx = -kb - 1;
                    m++;
                }
                if (!causal) /* the diagonal segment's blocks after the diagonal */
                    for (int kb = d0 / bk + 1; kb * bk < N && kb * bk < (dseg + 1) * seg; kb++) {
                        const int j0 = kb * bk, j1 = j0 + bk < N ? j0 + bk : N;
                        double sc = 0.0;
                        for (int j = j0; j < j1; j++)
                            for (int c = 0; c < d; c++)
                                sc += (double)qm[c] * pb->k[((size_t)h * N + j) * d + c];
                        cand[m].score = sc / (j1 - j0);
                        cand[m].idx = -kb - 1;
                        m++;
                    }
                bs_sort_desc(cand, m);
                int kr = mc_dither(st->topk, qb);
                kr = kr < keep ? kr : keep;
                const int n = m < kr ? m : kr;
                /* kept permuted blocks as original key indices, plus the diagonal block */
                const int32_t *pm = perm + (size_t)h * N;
                const pblock *bl = blk + (size_t)h * npb;
                const int e1 = d0 + bk < N ? d0 + bk : N;
                int nk = 0;
                for (int j = d0; j < e1; j++) keys[nk++] = j;
                for (int t = 0; t < n; t++) {
                    const int b = cand[t].idx;
                    if (b < 0) {
                        const int j0 = (-b - 1) * bk, j1 = j0 + bk < N ? j0 + bk : N;
                        for (int j = j0; j < j1; j++) keys[nk++] = j;
                    } else {
                        for (int j = bl[b].j0; j < bl[b].j1; j++) keys[nk++] = pm[j];
                    }
                }
                const int ra = ab_layout_add_tokens(l, h, qb, keys, nk);
                if (ra != AB_OK) {
                    ok = 0;
#pragma omp atomic write
                    rc = ra;
                }
            }
            free(qm);
            free(cand);
            free(keys);
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "pbs: out of memory");
    free(perm);
    free(pkm);
    free(blk);
    free(nblk);
    free(seg_first);
    return rc;
}

const ab_method ab_pbs = {
    .abi = AB_ABI_VERSION,
    .name = "pbs",
    .summary = "PBS-Attn: keys permuted within segments by last-block importance, top-k permuted blocks (token layout)",
    .reference = "Wang et al. 2025, PBS-Attn (Permuted Block-Sparse), arXiv 2510.21270 (xinghaow99/pbs-attn)",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_TOPK] = { .name = "topk", .def = 16, .min = 0.01, .max = 1 << 16, .is_int = 0,
                     .help = "permuted key blocks per query block beyond the diagonal (fractional, dithered)" },
        [P_SEG] = { .name = "segment", .def = 256, .min = 1, .max = 1 << 20, .is_int = 1,
                    .help = "permutation segment in tokens (rounded up to whole key blocks)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_TOPK, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(pbs_state),
    .init = pbs_init,
    .select = pbs_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_pbs)
