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

/* Elementwise min and max of each page of k (n, d) into mn, mx, stored
 * transposed as (d, npages): the bound pass then runs over pages in the
 * vector lanes, each page's sum still taken over c in order. */
static int page_minmax(const float *k, int n, int d, int P, float *mn, float *mx)
{
    const int np = (n + P - 1) / P;
    float *a = malloc((size_t)2 * d * sizeof *a), *b;
    if (!a) return AB_ENOMEM;
    b = a + d;
    for (int p = 0; p < np; p++) {
        const int j0 = p * P, nj = n - j0 < P ? n - j0 : P;
        for (int c = 0; c < d; c++) a[c] = b[c] = k[(size_t)j0 * d + c];
        for (int j = 1; j < nj; j++)
            for (int c = 0; c < d; c++) {
                const float v = k[(size_t)(j0 + j) * d + c];
                a[c] = v < a[c] ? v : a[c];
                b[c] = v > b[c] ? v : b[c];
            }
        for (int c = 0; c < d; c++) {
            mn[(size_t)c * np + p] = a[c];
            mx[(size_t)c * np + p] = b[c];
        }
    }
    free(a);
    return AB_OK;
}

/* Quest's bound of nu pages: u[p] = sum over c, in order, of
 * max(q_c min_c(p), q_c max_c(p)), in double. min <= max, so the larger
 * product is q_c max_c(p) when q_c >= 0 and q_c min_c(p) otherwise: one
 * product per element, from the row the sign of q_c picks. A float times
 * a float is exact in double, so the sums are those of the two-product
 * form bit for bit. QB_W pages at a time stay in registers over c. mn, mx:
 * (d, ld) rows, from the first page. */
#define QB_W 32
typedef double qb_vd __attribute__((vector_size(QB_W / 4 * sizeof(double))));
typedef float qb_vf __attribute__((vector_size(QB_W / 4 * sizeof(float))));

static void quest_bounds(const float *qm, const float *mn, const float *mx, int ld, int d, int nu, double *u)
{
    int p0 = 0;
    for (; p0 + QB_W <= nu; p0 += QB_W) {
        qb_vd acc[4] = { { 0 }, { 0 }, { 0 }, { 0 } };
        for (int c = 0; c < d; c++) {
            const float *src = (qm[c] >= 0.0f ? mx : mn) + (size_t)c * ld + p0;
            const double qc = (double)qm[c];
            for (int g = 0; g < 4; g++) {
                qb_vf f;
                memcpy(&f, src + g * (QB_W / 4), sizeof f);
                acc[g] += qc * __builtin_convertvector(f, qb_vd);
            }
        }
        memcpy(u + p0, acc, sizeof acc);
    }
    for (int p = p0; p < nu; p++) u[p] = 0.0;
    for (int c = 0; c < d && p0 < nu; c++) {
        const double qc = (double)qm[c];
        const float *src = (qm[c] >= 0.0f ? mx : mn) + (size_t)c * ld;
        for (int p = p0; p < nu; p++) u[p] += qc * src[p];
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
    const int rows = H * nqb;
    const ab_mask mask = ab_shape_mask(&pb->s);

    float *mn = malloc((size_t)H * np * d * sizeof *mn); /* (heads, d, npages) */
    float *mx = malloc((size_t)H * np * d * sizeof *mx); /* (heads, d, npages) */
    int rc = (mn && mx) ? AB_OK : AB_ENOMEM;
    double cands = 0.0; /* candidate pages scored */

    if (rc == AB_OK) {
#pragma omp parallel for schedule(static)
        for (int h = 0; h < H; h++)
            if (page_minmax(pb->k + (size_t)h * N * d, N, d, P, mn + (size_t)h * np * d,
                            mx + (size_t)h * np * d) != AB_OK) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
    }
    if (rc == AB_OK) {
#pragma omp parallel reduction(+ : cands)
        {
            float *qm = malloc((size_t)d * sizeof *qm);
            bs_cand *cand = malloc((size_t)np * sizeof *cand);
            double *u = malloc((size_t)np * sizeof *u); /* (npages) bounds of a page range */
            /* one row's key blocks (diagonal + pages) or key tokens */
            int32_t *idx = malloc(((size_t)bk + (size_t)keep * P + 1) * sizeof *idx);
            uint64_t *key = malloc((size_t)2 * np * sizeof *key + 1); /* bs_top_ascending's scratch */
            int ok = qm && cand && u && idx && key;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 4)
            for (int r = 0; r < rows; r++) {
                if (!ok) continue;
                const int h = r / nqb, qb = r % nqb;
                const int r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
                const int diag = bs_diag_block(qb, bq, bk, N);
                const int d0 = diag * bk, d1 = (diag + 1) * bk; /* the forced block's keys */
                bs_mean_rows(pb->q + (size_t)h * N * d, d, r0, nr, qm);
                int lo, hi; /* keys the base mask lets some row here see */
                bs_rows_span(&mask, r0, r0 + nr, &lo, &hi);
                /* candidate pages: [pa, pe) (visible to the base mask; causal:
                 * beginning before the diagonal block) minus those inside the
                 * diagonal block */
                int pa = 0, pe = 0;
                if (lo < hi) {
                    pa = lo / P;
                    pe = (hi + P - 1) / P;
                    if (causal && (d0 + P - 1) / P < pe) pe = (d0 + P - 1) / P;
                    pe = pe < np ? pe : np;
                }
                const int nu = pe > pa ? pe - pa : 0;
                quest_bounds(qm, mn + (size_t)h * d * np + pa, mx + (size_t)h * d * np + pa, np, d, nu, u);
                int m = 0;
                for (int p = pa; p < pe; p++) {
                    const int j0 = p * P, j1 = j0 + P;
                    if (j0 >= d0 && j1 <= d1) continue; /* inside the diagonal block */
                    cand[m].score = u[p - pa];
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
                 * finalize has no sorting to do): as key blocks when pages
                 * are key blocks, else as their key tokens */
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
                        for (int j = j0; j < j1; j++) {
                            if (!diag_out && j >= d0) {
                                for (int x = d0; x < e1; x++) idx[ni++] = x;
                                diag_out = 1;
                            }
                            if (j < d0 || j >= e1) idx[ni++] = j;
                        }
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
            free(qm);
            free(cand);
            free(u);
            free(idx);
            free(key);
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "quest_prefill: out of memory");
    free(mn);
    free(mx);
    if (rc != AB_OK) return rc;
    /* page min/max 2 compares per key element; per query block the mean
     * query (rows*d adds); per candidate page the bound U, 4d (2 mul, max,
     * add), and 3 for the top-n pass (key, quickselect, stable pass) */
    const double flops = 2.0 * H * N * d + (double)H * N * d + 4.0 * d * cands + 3.0 * cands;
    const double bytes = 4.0 * (2.0 * H * N * d + 2.0 * H * np * d + 2.0 * d * cands);
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
