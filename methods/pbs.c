/* pbs.c — `pbs`: Permuted Block-Sparse attention (PBS-Attn; Wang et al.
 * 2025, "Sparser Block-Sparse Attention via Token Permutation",
 * arXiv 2510.21270; code xinghaow99/pbs-attn, pbs_attn/src: pbs.py,
 * permute_states.py, utils.py).
 *
 * Block-sparse selection wastes budget when a block's mass sits on a few of
 * its keys. PBS-Attn permutes keys within segments so that important keys
 * cluster into few blocks, selects blocks on the permuted order and
 * attends to them through the permutation. Per head, as the official code:
 *  1. Importance (last_block_attn_sorting): the last block of queries
 *     against the keys of the complete segments, softmax per query row (no
 *     causal mask there, as in the official code), averaged over the rows.
 *  2. Permutation: within each complete segment of `segment` tokens the keys
 *     are sorted by importance (descending; ties to the lower index); the
 *     incomplete last segment keeps its order. Queries are not permuted.
 *  3. Selection (permuted_block_selection, select_blocks): pooled query =
 *     mean of the query block, pooled key = mean of each permuted key block
 *     (zero-padded to whole blocks, as the official padding); logits / sqrt(d)
 *     over the key blocks that are causal (up to the diagonal) and outside
 *     the query block's own segment; row softmax; the blocks in descending
 *     score up to and including the first at which the cumulative mass
 *     reaches tau (none when no block reaches it; every candidate at
 *     tau >= 1, the official threshold == 1 case).
 *  4. Always kept: the whole own segment (segment_mask, causal inside) and
 *     the permuted block that holds token 0 (force_select_first_block).
 *  5. N <= segment: dense attention (the official fallback).
 * Our kernels take original token indices, so each kept permuted block is
 * written as its original key indices: a TOKEN layout, which the gather
 * kernel packs contiguously; the base mask then applies causality.
 * Non-causal base masks: step 3 drops the causal condition.
 *
 * Density knob: tau (rises with tau). Memory O(N) per head plus one
 * (block_q, N) logit panel per thread; cost O(block_q N d + N^2 d / block_q).
 */
#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/vecf.h"

#include <math.h>
#include <stdlib.h>

#define AB_PBS_DMAX  256 /* features summed at a time in a block mean */
#define PBS_PART_MIN 64  /* candidates from which the best quarter is sorted first */

typedef struct pbs_state {
    double tau;  /* cumulative block mass to keep per query block */
    int segment; /* permutation segment in tokens (rounded up to block_k) */
} pbs_state;

enum { P_TAU = 0, P_SEG, P_COUNT };

static int pbs_init(void *state, const ab_params *p, const ab_shape *s)
{
    pbs_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "pbs: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_TAU] >= 0 && p->v[P_TAU] <= 1) || !(p->v[P_SEG] >= 1 && p->v[P_SEG] <= (1 << 20))) {
        ab_set_error(state, "pbs: tau must be in [0, 1], segment in [1, 2^20]");
        return AB_EINVAL;
    }
    st->tau = p->v[P_TAU];
    st->segment = (int)p->v[P_SEG];
    return AB_OK;
}

/* Steps 1-2 for one head: the key order perm[0, N) (original indices) by
 * the importance of the keys of the complete segments [0, C) to the last nl
 * queries. s: (gr, C) logit panel (gr = bs_group_rows(C, nl) rows at a
 * time), bt: d * BS_PANEL floats, row: C doubles, imp: C candidates, ws:
 * nl floats. par: split the loops over the threads (fewer heads than
 * threads); every element gets the same operations in the same order. */
static int pbs_permute(const float *q, const float *k, int N, int d, int nl, int seg, float scale, float *s,
                       int gr, float *bt, double *row, bs_cand *imp, float *ws, int32_t *perm, int par)
{
    const int C = N / seg * seg;
    for (int j = 0; j < N; j++) perm[j] = j;
    if (C == 0) return AB_OK;
    for (int j = 0; j < C; j++) row[j] = 0.0;
    enum {
        PB_KC = 2048
    }; /* keys per chunk when split over threads (else one chunk: each row streamed whole) */
    const int kc = par ? PB_KC : C, nkc = (C + kc - 1) / kc;
    int bad = 0;
    for (int g0 = 0; g0 < nl && !bad; g0 += gr) { /* rows [g0, g1) of the last nl */
        const int g1 = g0 + gr < nl ? g0 + gr : nl;
        /* the logit panel (block_score.h's GEMM: OpenBLAS spent a third
         * of its time packing at this shape), by key chunks */
        if (bs_gemm_chunks(q + (size_t)(N - nl + g0) * d, d, g1 - g0, k, d, C, d, 1.0f, scale, s, C, bt, kc,
                           par))
            bad = 1;
#pragma omp parallel for schedule(static) if (par)
        for (int i = g0; i < g1; i++) { /* row softmax (max, exp, sum) */
            float *si = s + (size_t)(i - g0) * C;
            const float mx = bs_max(si, C);
            const double sum = ab_exp_max_sum(si, C, mx); /* the kernels' vector exp, any ISA */
            ws[i] = (float)(1.0 / (sum * nl));
        }
#pragma omp parallel for schedule(static) if (par)
        for (int t = 0; t < nkc; t++) { /* the mean over the rows, in row order */
            const int j0 = t * kc, j1 = C - j0 < kc ? C : j0 + kc;
            bs_rowsum(s, (size_t)C, g1 - g0, ws + g0, NULL, 0, 0, 0, j0, j1, row); /* in registers */
        }
    }
    if (bad) return AB_ENOMEM;
    for (int j = 0; j < C; j++) {
        imp[j].score = row[j];
        imp[j].idx = j;
    }
#pragma omp parallel for schedule(static) if (par)
    for (int g0 = 0; g0 < C; g0 += seg) {
        bs_sort_desc(imp + g0, seg);
        for (int j = g0; j < g0 + seg; j++) perm[j] = imp[j].idx;
    }
    return AB_OK;
}

/* Steps 3-4 for query block qb of one head: the kept keys (original
 * indices, ascending, once each) into keys; returns their count. pkt: (d, ldk) the
 * means of the permuted key blocks, transposed (columns past nkb zero);
 * bmask, bw0, wmax: each permuted block's keys as wmax words of bits from
 * word bw0[b] (pbs_masks), or NULL: bit by bit through perm; cand: nkb;
 * qm: d; sc: ldk; kbm: N / 64 + 1 + wmax zero words. */
static int pbs_row(const pbs_state *st, const ab_problem *pb, const ab_layout *l, int h, int qb, int seg,
                   const int32_t *perm, const float *pkt, int ldk, int first_blk, const uint64_t *bmask,
                   const int32_t *bw0, int wmax, float *qm, bs_cand *cand, bs_cand *cand2, uint64_t *key,
                   double *sc, uint64_t *kbm, int32_t *keys, int *ncand)
{
    const int N = l->seq_len, d = pb->s.head_dim, bq = l->block_q, bk = l->block_k, nkb = l->n_kblocks;
    const int r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
    const int own = r0 / seg, diag = bs_diag_block(qb, bq, bk, N);
    bs_mean_rows(pb->q + (size_t)h * N * d, d, r0, nr, qm);
    for (int c = 0; c < d; c++) qm[c] *= (float)nr / (float)bq; /* zero-padded rows count in the mean */
    /* the logits of the key blocks up to the last candidate, VDR blocks
     * to a double vector: each lane the c-ordered chain a scalar loop per
     * block had (a chain waits on its add every step) */
    const int kend = pb->s.causal && diag + 1 < nkb ? diag + 1 : nkb;
    int kb0 = 0;
    for (; kb0 + 32 <= kend; kb0 += 32) { /* 32 / VDR chains in flight (the same chains) */
        vdr acc[32 / VDR];
        for (int u = 0; u < 32 / VDR; u++) acc[u] = (vdr){ 0 };
        for (int c = 0; c < d; c++) {
            const double qc = qm[c];
            for (int u = 0; u < 32 / VDR; u++) acc[u] += qc * vdr_of_f(pkt + (size_t)c * ldk + kb0 + VDR * u);
        }
        memcpy(sc + kb0, acc, sizeof acc);
    }
    for (; kb0 < kend; kb0 += 8) {
        vdr acc[8 / VDR];
        for (int u = 0; u < 8 / VDR; u++) acc[u] = (vdr){ 0 };
        for (int c = 0; c < d; c++) {
            const double qc = qm[c];
            for (int u = 0; u < 8 / VDR; u++) acc[u] += qc * vdr_of_f(pkt + (size_t)c * ldk + kb0 + VDR * u);
        }
        memcpy(sc + kb0, acc, sizeof acc);
    }
    /* the own segment's key blocks [ob0, ob1) (seg is whole blocks) */
    const int ob0 = own * (seg / bk), ob1 = ob0 + seg / bk;
    int m = 0;
    for (int kb = 0; kb < kend; kb++) {
        if (kb >= ob0 && kb < ob1) continue;
        cand[m].score = sc[kb] * pb->s.scale;
        cand[m].idx = kb;
        m++;
    }
    *ncand = m;
    int n = 0;
    if (m > 0) {
        double mx = cand[0].score, tot = 0.0;
        for (int t = 1; t < m; t++) mx = cand[t].score > mx ? cand[t].score : mx;
        for (int t = 0; t < m; t++) tot += (cand[t].score = exp(cand[t].score - mx));
        for (int t = 0; t < m; t++) cand[t].score /= tot;
        /* the blocks in descending score up to the first whose cumulative
         * mass reaches tau. Mostly that is within the best eighth of the
         * candidates (N = 16K-64K at density 0.1), so the best quarter is
         * sorted first (bs_top_ascending, then a sort of those): the same
         * first entries as the full sort, the same sums in the same order.
         * Only when tau is not reached within them are all of them sorted
         * (the sort of every candidate took a sixth of select() at 64K) */
        int top = st->tau < 1.0 && m >= PBS_PART_MIN ? m / 4 : m;
        if (top < m) {
            memcpy(cand2, cand, (size_t)m * sizeof *cand);
            bs_top_ascending(cand, m, top, key);
        }
        for (;;) {
            bs_sort_desc(cand, top);
            double cum = 0.0;
            for (int t = 0; t < top; t++) {
                cum += cand[t].score;
                n = t + 1;
                if (st->tau < 1.0 && cum >= st->tau) break;
            }
            if (st->tau >= 1.0 || cum >= st->tau) break;
            if (top == m) {
                n = 0; /* never reached (rounding): none, as the official */
                break;
            }
            memcpy(cand, cand2, (size_t)m * sizeof *cand); /* not within the best quarter: all of them */
            top = m;
        }
    }
    /* the kept keys as bits (kbm: N / 64 + 1 words, zero on entry and on
     * return), then read out ascending and once each: the permuted blocks'
     * keys come in importance order, which the layout builder would sort */
#define PBS_TAKE(j) (kbm[(j) >> 6] |= 1ull << ((j)&63))
    for (int t = 0; t <= n; t++) {
        const int b = t < n ? cand[t].idx : first_blk; /* the kept blocks, then the one holding token 0 */
        if (b < 0) continue;
        if (bmask) { /* the block's keys as words of bits (pbs_masks) */
            const uint64_t *mw = bmask + (size_t)b * wmax;
            uint64_t *kw = kbm + bw0[b];
            for (int u = 0; u < wmax; u++) kw[u] |= mw[u];
        } else {
            const int j0 = b * bk, j1 = j0 + bk < N ? j0 + bk : N;
            for (int j = j0; j < j1; j++) PBS_TAKE(perm[j]);
        }
    }
    const int s1 = (own + 1) * seg < N ? (own + 1) * seg : N;
    mc_set_bits(kbm, own * seg, s1); /* the own segment (the mask keeps it causal) */
#undef PBS_TAKE
    return mc_take_bits(kbm, N / 64 + 1, keys, 0);
}

/* Steps 1-2 scratch of one thread: the logit panel s (gr rows of the C
 * keys of the complete segments at a time), the GEMM's bt, the mean row,
 * the importances imp and the row weights ws. */
typedef struct pbs_scratch {
    float *s, *bt, *ws;
    double *row;
    bs_cand *imp;
    int gr;
} pbs_scratch;

static void pbs_scratch_free(pbs_scratch *w)
{
    free(w->s);
    free(w->bt);
    free(w->ws);
    free(w->row);
    free(w->imp);
}

static int pbs_scratch_alloc(pbs_scratch *w, int N, int d, int nl, int seg)
{
    const int C = N / seg * seg;
    w->gr = bs_group_rows(C, nl);
    w->s = malloc((size_t)w->gr * (C > 0 ? C : 1) * sizeof *w->s);
    w->bt = malloc((size_t)d * BS_PANEL * sizeof *w->bt);
    w->row = malloc((size_t)(C > 0 ? C : 1) * sizeof *w->row);
    w->imp = malloc((size_t)(C > 0 ? C : 1) * sizeof *w->imp);
    w->ws = malloc((size_t)nl * sizeof *w->ws);
    return w->s && w->bt && w->row && w->imp && w->ws ? AB_OK : AB_ENOMEM;
}

/* Steps 1-2 and the permuted key blocks' means (transposed into means,
 * (d, ldk)) for head h; *first: the permuted block holding token 0. */
static int pbs_prep(const ab_problem *pb, const ab_layout *l, int h, int seg, int nl, pbs_scratch *w,
                    int32_t *pm, float *means, int ldk, int *first, int par)
{
    const int N = l->seq_len, d = pb->s.head_dim, bk = l->block_k, nkb = l->n_kblocks;
    const float *k = pb->k + (size_t)h * N * d;
    if (pbs_permute(pb->q + (size_t)h * N * d, k, N, d, nl, seg, pb->s.scale, w->s, w->gr, w->bt, w->row,
                    w->imp, w->ws, pm, par) != AB_OK)
        return AB_ENOMEM;
    *first = -1;
#pragma omp parallel for schedule(static) if (par)
    for (int b = 0; b < ldk; b++) { /* the permuted blocks' means, each summed in key order */
        float mu[AB_PBS_DMAX];
        for (int c0 = 0; c0 < d; c0 += AB_PBS_DMAX) {
            const int nc = d - c0 < AB_PBS_DMAX ? d - c0 : AB_PBS_DMAX;
            for (int c = 0; c < nc; c++) mu[c] = 0.0f;
            for (int j = b * bk; b < nkb && j < (b + 1) * bk && j < N; j++) {
                if (pm[j] == 0) *first = b; /* one block holds token 0: one writer */
                for (int c = 0; c < nc; c++) mu[c] += k[(size_t)pm[j] * d + c0 + c];
            }
            for (int c = 0; c < nc; c++)
                means[(size_t)(c0 + c) * ldk + b] = mu[c] / (float)bk; /* zero-padded */
        }
    }
    return AB_OK;
}

typedef struct pbs_ctx {
    const ab_problem *pb;
    const ab_layout *l;
    int seg, nl;
    int32_t *perm; /* (heads, N) */
    float *pkm;    /* (heads, d, ldk) */
    int ldk;
    int *first; /* (heads) */
} pbs_ctx;

/* pbs_prep for head h with its own scratch (a bs_head_fn) */
static int pbs_one(void *ctx, int h, int par, double *fl, double *by)
{
    const pbs_ctx *c = ctx;
    const int N = c->l->seq_len, d = c->pb->s.head_dim;
    pbs_scratch w;
    int r = pbs_scratch_alloc(&w, N, d, c->nl, c->seg);
    if (r == AB_OK)
        r = pbs_prep(c->pb, c->l, h, c->seg, c->nl, &w, c->perm + (size_t)h * N,
                     c->pkm + (size_t)h * c->ldk * d, c->ldk, c->first + h, par);
    pbs_scratch_free(&w);
    (void)fl;
    (void)by;
    return r;
}

/* Each permuted block's keys as words of bits, for the heads' permutations
 * perm (H, N): block b of head h as the wmax words (*bm)[(h nkb + b) wmax
 * ...] from word (*w0)[h nkb + b] of a row's bit set. A block's keys lie
 * in its own segment (the permutation stays within segments), so in the
 * wmax = seg / 64 + 2 words from its segment's first; pbs_select builds
 * them where that is at most a quarter of a block's keys. Setting each
 * kept block's keys through perm had been a third of pbs_row's time
 * (2026-12-08, 16K, bk 64, seg 256: 64 scattered bits against 6 words).
 * A key outside its block's segment (the permutation makes none) leaves
 * *bm NULL: pbs_row then sets the keys one by one. */
static int pbs_masks(const int32_t *perm, int H, int N, int nkb, int bk, int seg, int wmax, uint64_t **bm,
                     int32_t **w0)
{
    uint64_t *m = calloc((size_t)H * nkb * wmax, sizeof *m);
    int32_t *o = malloc((size_t)H * nkb * sizeof *o);
    if (!m || !o) {
        free(m);
        free(o);
        return AB_ENOMEM;
    }
    for (int hb = 0; hb < H * nkb; hb++) {
        const int h = hb / nkb, b = hb % nkb, j0 = b * bk, j1 = j0 + bk < N ? j0 + bk : N;
        uint64_t *mw = m + (size_t)hb * wmax;
        o[hb] = (j0 / seg * seg) >> 6;
        for (int j = j0; j < j1; j++) {
            const int key = perm[(size_t)h * N + j], u = (key >> 6) - o[hb];
            if (u < 0 || u >= wmax) {
                free(m);
                free(o);
                return AB_OK;
            }
            mw[u] |= 1ull << (key & 63);
        }
    }
    *bm = m;
    *w0 = o;
    return AB_OK;
}

static int pbs_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const pbs_state *st = state;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    const int seg = (st->segment + bk - 1) / bk * bk;
    if (N <= seg) { /* the official fallback */
        const int rd = ab_layout_dense(l);
        return rd == AB_OK ? ab_layout_set_cost(l, 0, 0) : rd;
    }
    const int nl = N < bq ? N : bq;
    int32_t *perm = malloc((size_t)H * N * sizeof *perm); /* (heads, N) key order */
    const int ldk = (nkb + 7) / 8 * 8;
    float *pkm = malloc((size_t)H * ldk * d * sizeof *pkm); /* (heads, d, ldk) permuted block means^T */
    int *first = malloc((size_t)H * sizeof *first);         /* permuted block holding token 0 */
    int rc = (perm && pkm && first) ? AB_OK : AB_ENOMEM;
    double cands = 0.0, sorted = 0.0; /* step 3: candidate blocks scored, m log2 m of their sorts */
    if (rc == AB_OK) {
        /* the heads, or one head's own loops, over the threads (bs_run_heads;
         * the cost is stated below) */
        pbs_ctx c = { pb, l, seg, nl, perm, pkm, ldk, first };
        double unused[2] = { 0.0, 0.0 };
        rc = bs_run_heads(H, pbs_one, &c, &unused[0], &unused[1]);
    }
    const int wmax = seg / 64 + 2; /* words a block's keys span (pbs_masks) */
    uint64_t *bmask = NULL;
    int32_t *bw0 = NULL;
    if (rc == AB_OK && wmax <= bk / 4) rc = pbs_masks(perm, H, N, nkb, bk, seg, wmax, &bmask, &bw0);
    if (rc == AB_OK) {
#pragma omp parallel reduction(+ : cands, sorted)
        {
            float *qm = malloc((size_t)d * sizeof *qm);
            bs_cand *cand = malloc(2 * (size_t)nkb * sizeof *cand), *cand2 = cand ? cand + nkb : NULL;
            uint64_t *key = malloc(2 * (size_t)nkb * sizeof *key); /* bs_top_ascending's scratch */
            double *sc = malloc((size_t)ldk * sizeof *sc);
            uint64_t *kbm = calloc((size_t)N / 64 + 1 + wmax, sizeof *kbm);       /* one row's keys as bits */
            int32_t *keys = malloc(((size_t)nkb * bk + bk + seg) * sizeof *keys); /* one row's keys */
            int ok = qm && cand && key && sc && kbm && keys;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 4)
            for (int r = 0; r < H * nqb; r++) {
                if (!ok) continue;
                const int h = r / nqb, qb = r % nqb;
                int m = 0;
                const int nk = pbs_row(st, pb, l, h, qb, seg, perm + (size_t)h * N, pkm + (size_t)h * ldk * d,
                                       ldk, first[h], bmask ? bmask + (size_t)h * nkb * wmax : NULL,
                                       bw0 ? bw0 + (size_t)h * nkb : NULL, wmax, qm, cand, cand2, key, sc,
                                       kbm, keys, &m);
                cands += m;
                sorted += m > 1 ? m * log2((double)m) : 0.0;
                const int ra = ab_layout_add_tokens(l, h, qb, keys, nk);
                if (ra != AB_OK) {
                    ok = 0;
#pragma omp atomic write
                    rc = ra;
                }
            }
            free(qm);
            free(cand);
            free(key);
            free(sc);
            free(kbm);
            free(keys);
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "pbs: out of memory");
    free(bmask);
    free(bw0);
    free(perm);
    free(pkm);
    free(first);
    if (rc != AB_OK) return rc;
    /* per head: importance logits 2d per (last-block row, key) of the
     * complete segments C, their softmax and mean 6 per entry (max, exp,
     * sum, divide, scale, add), the segment sorts C log2(seg), the permuted
     * block means N d adds; per query block the pooled query (rows d), per
     * candidate block its logit 2d + 1 and softmax 4, the sort m log2 m */
    const double C = (double)(N / seg * seg);
    const double flops = H * (2.0 * d * nl * C + 6.0 * nl * C + C * log2((double)seg) + (double)N * d) +
                         (double)H * N * d + (2.0 * d + 5.0) * cands + sorted;
    /* Q and K once each, K again for the means (gathered in permuted
     * order), the logit panel written and read, the block means written
     * and read once (a head's nkb d floats stay in cache across its query
     * blocks; until 2026-12-06 each candidate counted its d floats again) */
    const double bytes = 4.0 * H * (2.0 * N * d + (double)N * d + 2.0 * nl * C + 2.0 * nkb * d);
    return ab_layout_set_cost(l, flops, bytes);
}

const ab_method ab_pbs = {
    .abi = AB_ABI_VERSION,
    .family = "block",
    .name = "pbs",
    .summary = "PBS-Attn: keys permuted within segments by last-block importance, permuted blocks to cumulative mass tau + own segment + token-0 block",
    .reference = "Wang et al. 2025, PBS-Attn (Permuted Block-Sparse), arXiv 2510.21270 (xinghaow99/pbs-attn)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .block_q = 128, /* the official block_size (pbs_attn; the paper's configs) */
    .params = {
        [P_TAU] = { .name = "tau", .def = 0.9, .min = 0, .max = 1, .is_int = 0,
                    .help = "cumulative softmax mass of permuted blocks to keep (official threshold; 1 keeps all)" },
        [P_SEG] = { .name = "segment", .def = 256, .min = 1, .max = 1 << 20, .is_int = 1,
                    .help = "permutation segment in tokens (rounded up to whole key blocks)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_TAU, .increasing = 1, .log_scale = 0 },
    .state_size = sizeof(pbs_state),
    .init = pbs_init,
    .select = pbs_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_pbs)
