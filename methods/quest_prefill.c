/* quest_prefill.c — `quest_prefill`: Quest's query-aware page selection
 * (Tang et al. 2024, "Quest: Query-Aware Sparsity for Efficient Long-Context
 * LLM Inference", arXiv 2406.10774; code mit-han-lab/Quest), applied per
 * query block for prefill.
 *
 * Quest is a decode method: the KV cache is cut into pages of 16 keys, each
 * page stores the elementwise min and max of its keys, and a query q bounds
 * its largest logit on page p by
 *   U(p) = sum_c max(q_c * min_c(p), q_c * max_c(p)),
 * then attends the top pages by U within a token budget. The prefill variant
 * (docs/spec/METHODS.md) does this once per query block with the block's mean query.
 * The key block holding the diagonal is always kept (Quest always keeps the
 * current page; in prefill the local block plays that role); the budget is
 * spent on the other causally visible pages, and only on pages the base
 * mask lets the query block see (bs_rows_span: under a document mask, the
 * block's own documents).
 *
 * Layout: TOKEN (the tokens of the chosen pages plus the diagonal block),
 * executed by the gather kernel; when page == block_k the pages are key
 * blocks and the layout is BLOCK (block-sparse kernel).
 *
 * Density knob: token_budget, tokens per query block beyond the diagonal
 * block; budget/page pages, fractional part dithered over query blocks by the
 * golden-ratio sequence (as oracle_topk_block.c), so density moves smoothly.
 * Cost O(N^2 d / (block_q page)) + O(N d); memory O(N d / page).
 *
 * The adaptation's own choices (not in Quest, which scores one decode query
 * against the pages of its past): (1) the query is the block's mean query,
 * so U bounds the mean query's logits, not every row's; (2) the forced
 * "current page" is the layout's key block holding the block's last row,
 * and the budget excludes it (Quest's controller, quest/utils/controller.py,
 * counts the last page inside page_budget); (3) the candidates are the pages
 * that begin before that block, on a grid of `page` keys from key 0 (Quest's
 * pages are absolute too); (4) ties go to the lower page; (5) no floor of 3
 * pages (evaluation/quest_attention.py uses max(3, budget / 16); the CUDA
 * path has none). The bound itself is Quest's (the estimate kernel,
 * quest/ops/csrc/estimate.cu). Re-derived in tests/rederive/methods/
 * quest_prefill.py.
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

typedef struct quest_state {
    double budget; /* tokens per query block, beyond the diagonal block */
    int page;      /* keys per page */
} quest_state;

enum { P_BUDGET = 0, P_PAGE, P_COUNT };

static int quest_init(void *state, const ab_params *p, const ab_shape *s)
{
    quest_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "quest_prefill: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_BUDGET] >= 1 && p->v[P_BUDGET] <= (1 << 24))) {
        ab_set_error(state, "quest_prefill: token_budget=%g outside [1, 2^24]", p->v[P_BUDGET]);
        return AB_EINVAL;
    }
    if (!(p->v[P_PAGE] >= 1 && p->v[P_PAGE] <= 4096)) {
        ab_set_error(state, "quest_prefill: page=%g outside [1, 4096]", p->v[P_PAGE]);
        return AB_EINVAL;
    }
    st->budget = p->v[P_BUDGET];
    st->page = (int)p->v[P_PAGE];
    return AB_OK;
}

/* *lo = v < *lo ? v : *lo and *hi = v > *hi ? v : *hi over the VW lanes
 * of one register (methods/vecf.h), v at p (the old value when unordered
 * or equal): vminps / vmaxps with v first, else a bit select. One
 * register's width: GCC had kept 64-byte generic vectors on the stack
 * under AVX2 (2026-12-06). By pointer: a vector passed by value has
 * another ABI without its ISA. */
static inline void pm_minmax(const float *p, vf *lo, vf *hi)
{
    const vf v = v_load(p);
#if defined(__AVX512F__)
    *lo = _mm512_min_ps(v, *lo);
    *hi = _mm512_max_ps(v, *hi);
#else
    const vu32 a = (vu32)(v < *lo), b = (vu32)(v > *hi);
    *lo = (vf)(((vu32)v & a) | ((vu32)*lo & ~a));
    *hi = (vf)(((vu32)v & b) | ((vu32)*hi & ~b));
#endif
}

/* QB_W pages a tile: the bounds pass keeps a tile's pages in the vector
 * lanes, QB_W / 8 AVX-512 vectors of doubles (else QB_W / 4 of 32 bytes) */
#define QB_W 32

/* Elementwise min and max of pages [p0, p1) of k (n, d) (p0 a multiple of
 * QB_W) into the page tiles pt, widened to double: tile t holds, for each
 * column c in turn, the min then the max of pages [t QB_W, (t + 1) QB_W)
 * (2 d QB_W doubles); lanes past the last page are 0. The bounds pass
 * then reads each c's row of QB_W pages as vectors, already in double,
 * and every query block reads them as they are: converted from float and
 * transposed per group of query blocks instead, with the rows of a head's
 * pages 4 KB apart, the widening took as long as the products
 * (2026-12-06). Page ranges are independent, so a head's pages can be
 * split over threads. */
static int page_minmax(const float *k, int n, int d, int P, int p0, int p1, double *pt)
{
    enum { PG = 16 }; /* pages per pass: their rows kept (PG, d), then stored into the tiles */
    const int np = (n + P - 1) / P;
    float *a = malloc((size_t)2 * PG * d * sizeof *a), *b;
    if (!a) return AB_ENOMEM;
    b = a + (size_t)PG * d;
    for (int g0 = p0; g0 < p1; g0 += PG) {
        const int ng = p1 - g0 < PG ? p1 - g0 : PG;
        for (int g = 0; g < ng; g++) {
            const int j0 = (g0 + g) * P, nj = n - j0 < P ? n - j0 : P;
            float *ar = a + (size_t)g * d, *br = b + (size_t)g * d;
            const float *kr = k + (size_t)j0 * d;
            int c0 = 0;
            /* VW columns in registers over the page's keys (pm_minmax:
             * NaN and -0 fall as in the scalar loop) */
            for (; c0 + VW <= d; c0 += VW) {
                vf lo, hi;
                memcpy(&lo, kr + c0, sizeof lo);
                hi = lo;
                for (int j = 1; j < nj; j++) pm_minmax(kr + (size_t)j * d + c0, &lo, &hi);
                memcpy(ar + c0, &lo, sizeof lo);
                memcpy(br + c0, &hi, sizeof hi);
            }
            for (int c = c0; c < d; c++) {
                ar[c] = br[c] = kr[c];
                for (int j = 1; j < nj; j++) {
                    const float v = kr[(size_t)j * d + c];
                    ar[c] = v < ar[c] ? v : ar[c];
                    br[c] = v > br[c] ? v : br[c];
                }
            }
        }
        const int t = g0 / QB_W, l0 = g0 % QB_W; /* PG divides QB_W: one tile */
        double *tile = pt + (size_t)t * 2 * d * QB_W;
        for (int c = 0; c < d; c++) {
            double *lo = tile + (size_t)2 * c * QB_W + l0, *hi = lo + QB_W;
            for (int g = 0; g < ng; g++) {
                lo[g] = a[(size_t)g * d + c];
                hi[g] = b[(size_t)g * d + c];
            }
            if (g0 + ng == np) /* the last page: zero the lanes past it */
                for (int g = l0 + ng; g < QB_W; g++) lo[g - l0] = hi[g - l0] = 0.0;
        }
    }
    free(a);
    return AB_OK;
}

/* Quest's bound of the pages of tiles [ta, te) for G query blocks at
 * once: u[g ldu + p - ta QB_W] = sum over c, in order, of max(q_c
 * min_c(p), q_c max_c(p)), in double, q the block's mean query qm + g d.
 * min <= max, so the larger product is q_c max_c(p) when q_c >= 0 and q_c
 * min_c(p) otherwise: one product per element, from the row the sign of
 * q_c picks. A float times a float is exact in double, so the sums are
 * those of the two-product form bit for bit, whatever the tiling. A tile's
 * QB_W pages stay in registers over c and each tile serves all G blocks
 * while it is in L1: the pages are read once per G blocks, not once per
 * block. pt: the head's page tiles (page_minmax). */
#define QB_G 8 /* query blocks per pass over the pages */
typedef double qb_vd __attribute__((vector_size(4 * sizeof(double))));

#if defined(__AVX512F__)
/* The bounds of NB blocks (1 or 2, a constant at each call; queries qd in
 * double and the offsets qo of the tile rows their signs pick, rows d
 * apart: quest_bounds) over one tile: one FMA per 8 pages, the product exact, so
 * the fused add rounds as the plain one. Two blocks at a time where there
 * are two: with the four sums of one block the loop waited on the FMA
 * latency. */
static inline __attribute__((always_inline)) void qb_tile_avx512(const int NB, const double *qd,
                                                                 const int32_t *qo, int d, const double *tile,
                                                                 double *u, size_t ldu)
{
    __m512d acc[2][4];
    for (int b = 0; b < NB; b++)
        for (int v = 0; v < 4; v++) acc[b][v] = _mm512_setzero_pd();
    for (int c = 0; c < d; c++)
        for (int b = 0; b < NB; b++) {
            const double *src = tile + qo[(size_t)b * d + c];
            const __m512d x = _mm512_set1_pd(qd[(size_t)b * d + c]);
            for (int v = 0; v < 4; v++)
                acc[b][v] = _mm512_fmadd_pd(x, _mm512_loadu_pd(src + v * 8), acc[b][v]);
        }
    for (int b = 0; b < NB; b++)
        for (int v = 0; v < 4; v++) _mm512_storeu_pd(u + (size_t)b * ldu + v * 8, acc[b][v]);
}
#endif

static void quest_bounds(const float *qm, int G, const double *pt, int d, int ta, int te, double *u, int ldu,
                         double *qd, int32_t *qo)
{
    /* per block and column, once for every tile: the query in double and
     * the offset of the row its sign picks (min, or max when q_c >= 0) */
    for (int g = 0; g < G; g++)
        for (int c = 0; c < d; c++) {
            const float qc = qm[(size_t)g * d + c];
            qd[(size_t)g * d + c] = (double)qc;
            qo[(size_t)g * d + c] = (2 * c + (qc >= 0.0f)) * QB_W;
        }
    for (int t = ta; t < te; t++) {
        const double *tile = pt + (size_t)t * 2 * d * QB_W;
        const size_t o = (size_t)(t - ta) * QB_W;
#if defined(__AVX512F__)
        int g = 0;
        for (; g + 2 <= G; g += 2)
            qb_tile_avx512(2, qd + (size_t)g * d, qo + (size_t)g * d, d, tile, u + (size_t)g * ldu + o, ldu);
        if (g < G)
            qb_tile_avx512(1, qd + (size_t)g * d, qo + (size_t)g * d, d, tile, u + (size_t)g * ldu + o, ldu);
#else
        for (int g = 0; g < G; g++) {
            const double *q = qd + (size_t)g * d;
            const int32_t *qof = qo + (size_t)g * d;
            /* 32-byte vectors: GCC keeps these in AVX2 registers, where
             * 64-byte ones went through the stack (5x slower, 2026-12-06) */
            qb_vd acc[QB_W / 4];
            for (int v = 0; v < QB_W / 4; v++) acc[v] = (qb_vd){ 0 };
            for (int c = 0; c < d; c++) {
                const double *src = tile + qof[c];
                const double qc = q[c];
                for (int v = 0; v < QB_W / 4; v++) {
                    qb_vd x;
                    memcpy(&x, src + v * 4, sizeof x);
                    acc[v] += qc * x;
                }
            }
            memcpy(u + (size_t)g * ldu + o, acc, sizeof acc);
        }
#endif
    }
}

static int quest_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const quest_state *st = state;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks;
    const int P = st->page, np = (N + P - 1) / P;
    const int as_blocks = P == bk;
    const double pages = st->budget / P; /* mean pages per query block */
    const int keep = (int)ceil(pages) < np ? (int)ceil(pages) : np;
    const int ngrp = (nqb + QB_G - 1) / QB_G, groups = H * ngrp; /* QB_G query blocks of one head */
    const int pchunk = 256, npc = (np + pchunk - 1) / pchunk;    /* pages per min/max task */
    const ab_mask mask = ab_shape_mask(&pb->s);

    const int ntile = (np + QB_W - 1) / QB_W, np32 = ntile * QB_W;
    double *pt = malloc((size_t)H * np32 * 2 * d * sizeof *pt); /* (heads, ntile) page tiles */
    int rc = pt ? AB_OK : AB_ENOMEM;
    double cands = 0.0; /* candidate pages scored */

    if (rc == AB_OK) {
#pragma omp parallel for schedule(static)
        for (int t = 0; t < H * npc; t++) {
            const int h = t / npc, p0 = t % npc * pchunk, p1 = p0 + pchunk < np ? p0 + pchunk : np;
            if (page_minmax(pb->k + (size_t)h * N * d, N, d, P, p0, p1, pt + (size_t)h * np32 * 2 * d) !=
                AB_OK) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
        }
    }
    if (rc == AB_OK) {
#pragma omp parallel reduction(+ : cands)
        {
            float *qm = malloc((size_t)QB_G * d * sizeof *qm);  /* the group's mean queries */
            double *qd = malloc((size_t)QB_G * d * sizeof *qd); /* quest_bounds' scratch */
            int32_t *qo = malloc((size_t)QB_G * d * sizeof *qo);
            bs_cand *cand = malloc((size_t)np * sizeof *cand);
            double *u = malloc((size_t)QB_G * np32 * sizeof *u); /* (QB_G, np32) bounds of a tile range */
            /* one row's key blocks (diagonal + pages) or key tokens */
            int32_t *idx = malloc(((size_t)bk + (size_t)keep * P + 1) * sizeof *idx);
            uint64_t *key = malloc((size_t)2 * np * sizeof *key + 1); /* bs_top_ascending's scratch */
            int ok = qm && qd && qo && cand && u && idx && key;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
            /* heaviest groups (under causal, the last) first */
#pragma omp for schedule(dynamic, 1)
            for (int gi = groups - 1; gi >= 0; gi--) {
                if (!ok) continue;
                const int h = gi / ngrp, qb0 = gi % ngrp * QB_G;
                const int G = nqb - qb0 < QB_G ? nqb - qb0 : QB_G;
                int pa[QB_G], pe[QB_G], ua = np, ue = 0; /* each block's candidate pages; their union */
                for (int g = 0; g < G; g++) {
                    const int qb = qb0 + g, r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
                    const int d0 = bs_diag_block(qb, bq, bk, N) * bk;
                    bs_mean_rows(pb->q + (size_t)h * N * d, d, r0, nr, qm + (size_t)g * d);
                    int lo, hi; /* keys the base mask lets some row here see */
                    bs_rows_span(&mask, r0, r0 + nr, &lo, &hi);
                    /* candidate pages: [pa, pe) (visible to the base mask;
                     * causal: beginning before the diagonal block) minus
                     * those inside the diagonal block */
                    pa[g] = pe[g] = 0;
                    if (lo < hi) {
                        pa[g] = lo / P;
                        pe[g] = (hi + P - 1) / P;
                        if (causal && (d0 + P - 1) / P < pe[g]) pe[g] = (d0 + P - 1) / P;
                        pe[g] = pe[g] < np ? pe[g] : np;
                    }
                    if (pe[g] > pa[g]) {
                        ua = pa[g] < ua ? pa[g] : ua;
                        ue = pe[g] > ue ? pe[g] : ue;
                    }
                }
                /* the tiles holding pages [ua, ue); u from page ua0 */
                const int ta = ue > ua ? ua / QB_W : 0, te = ue > ua ? (ue + QB_W - 1) / QB_W : 0;
                const int ua0 = ta * QB_W;
                quest_bounds(qm, G, pt + (size_t)h * np32 * 2 * d, d, ta, te, u, np32, qd, qo);
                for (int g = 0; g < G && ok; g++) {
                    const int qb = qb0 + g, diag = bs_diag_block(qb, bq, bk, N);
                    const int d0 = diag * bk, d1 = (diag + 1) * bk; /* the forced block's keys */
                    const double *ug = u + (size_t)g * np32;        /* from page ua0 */
                    int m = 0;
                    for (int p = pa[g]; p < pe[g]; p++) {
                        const int j0 = p * P, j1 = j0 + P;
                        if (j0 >= d0 && j1 <= d1) continue; /* inside the diagonal block */
                        cand[m].score = ug[p - ua0];
                        cand[m].idx = p;
                        m++;
                    }
                    int kr = mc_dither(pages, qb);
                    kr = kr < keep ? kr : keep;
                    const int n = m < kr ? m : kr;
                    /* the n best pages, in page order */
                    bs_top_ascending(cand, m, n, key);
                    cands += m;
                    /* the diagonal block and the chosen pages, ascending (so
                     * finalize has no sorting to do): as key blocks when
                     * pages are key blocks, else as their key tokens */
                    int ni = 0, ra, diag_out = 0;
                    if (as_blocks) {
                        for (int t = 0; t < n; t++) {
                            if (!diag_out && cand[t].idx > diag) idx[ni++] = diag, diag_out = 1;
                            idx[ni++] = cand[t].idx;
                        }
                        if (!diag_out) idx[ni++] = diag;
                        ra = ab_layout_add_blocks(l, h, qb, idx, ni);
                    } else {
                        const int e1 = d1 < N ? d1 : N;
                        for (int t = 0; t < n; t++) {
                            const int j0 = cand[t].idx * P, j1 = j0 + P < N ? j0 + P : N;
                            const int b0 = j1 < d0 ? j1 : d0, a1 = j0 > e1 ? j0 : e1;
                            for (int j = j0; j < b0; j++) idx[ni++] = j; /* before the diagonal block */
                            if (!diag_out && j1 > d0) {                  /* the page reaches it */
                                for (int x = d0; x < e1; x++) idx[ni++] = x;
                                diag_out = 1;
                            }
                            for (int j = a1; j < j1; j++) idx[ni++] = j; /* after it */
                        }
                        if (!diag_out)
                            for (int x = d0; x < e1; x++) idx[ni++] = x;
                        ra = ab_layout_add_tokens(l, h, qb, idx, ni);
                    }
                    if (ra != AB_OK) {
                        ok = 0;
#pragma omp atomic write
                        rc = ra;
                    }
                }
            }
            free(qm);
            free(qd);
            free(qo);
            free(cand);
            free(u);
            free(idx);
            free(key);
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "quest_prefill: out of memory");
    free(pt);
    if (rc != AB_OK) return rc;
    /* page min/max 2 compares per key element; per query block the mean
     * query (rows*d adds); per candidate page the bound U, 4d (2 mul, max,
     * add), and 3 for the top-n pass (key, quickselect, stable pass) */
    const double flops = 2.0 * H * N * d + (double)H * N * d + 4.0 * d * cands + 3.0 * cands;
    /* Q and K read once, the page bounds written and read back once (a
     * head's 2 np d floats, 512 KB at 16K, stay in cache for its query
     * blocks; until 2026-12-06 each candidate page counted its 2d floats
     * read from memory again) */
    const double bytes = 4.0 * (2.0 * H * N * d + 4.0 * H * np * d);
    return ab_layout_set_cost(l, flops, bytes);
}

const ab_method ab_quest_prefill = {
    .abi = AB_ABI_VERSION,
    .family = "block",
    .name = "quest_prefill",
    .summary = "Quest, prefill adaptation (ours; Quest is defined for decode): page (16-key) min/max upper bounds vs the block's mean query, top pages + diagonal",
    .reference = "Tang et al. 2024, Quest, arXiv 2406.10774 (mit-han-lab/Quest); prefill variant per query block",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_BUDGET] = { .name = "token_budget", .def = 1024, .min = 1, .max = 1 << 24, .is_int = 0,
                       .help = "key tokens per query block beyond the diagonal block (budget/page pages, dithered)" },
        [P_PAGE] = { .name = "page", .def = 16, .min = 1, .max = 4096, .is_int = 1,
                     .help = "keys per page (Quest: 16); page == block_k gives a block layout" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_BUDGET, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(quest_state),
    .init = quest_init,
    .select = quest_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_quest_prefill)
