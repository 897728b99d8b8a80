/* flexprefill.c — `flexprefill`: FlexPrefill's context-aware per-head choice
 * between query-aware block selection and vertical-slash, with cumulative
 * attention budgets (Lai et al. 2025, "FlexPrefill: A Context-Aware Sparse
 * Attention Mechanism for Efficient Long-Sequence Inference",
 * arXiv 2502.20766; code bytedance/FlexPrefill,
 * flex_prefill/ops/flex_prefill_attention.py: flex_prefill_attention and
 * get_active_blocks, also copied in microsoft/MInference
 * minference/modules/flexprefill.py and ported in sglang).
 *
 * Per head, with B the layout's (square) block, following get_active_blocks:
 *  0. N <= max(2 B, ceil(min_budget / B) B): dense (flex_prefill_attention).
 *  1. A = softmax(Q_last K^T * scale) for the last B queries (causal);
 *     vertical[j] = mean over those rows of A[., j]; slash[o] = mean over
 *     rows of the sum of A along the diagonal at offset o = i - j.
 *  2. Budgets by cumulative attention: n_v = (keys needed for vertical to
 *     cover gamma) / 128 + 1, likewise n_s for slash — the authors divide
 *     by a literal 128 (their default block) whatever the block size; both
 *     clamped to [ceil(min_budget / B), n_blocks].
 *  3. Pattern choice: a = softmax(mean(Q_last) . meanpool(K)^T * scale) over
 *     key blocks, v = vertical sum-pooled to key blocks; if
 *     sqrt(JSD(a, v)) < tau the head is query-aware, else vertical-slash. As
 *     in torch, a zero entry in a or v makes the divergence NaN (0 log 0),
 *     and NaN < tau is false: vertical-slash.
 *  4. Vertical-slash (at block granularity, as the authors' kernel): the
 *     slash profile is sum-pooled over runs of B entries of its reversed
 *     index x = N - 1 - o (the authors' layout; zero-padded at the end, so
 *     with N not a multiple of B the last run, the main block diagonal,
 *     holds the offsets 0 .. (N - 1) mod B); pooled run x stands for the
 *     block offset n_blocks - 1 - x. Keep the top n_v key-block columns of
 *     v and the top n_s block offsets (column 0 and the main block diagonal
 *     always kept); a column kb is kept by every query block at or after
 *     it, an offset s by query block qb as key block qb - s.
 *  5. Query-aware: n_v = n_s = min budget, plus the blocks of
 *     softmax_row(meanpool(Q) meanpool(K)^T * scale) (causal) flattened over
 *     all query blocks, sorted, kept while the cumulative sum is
 *     <= gamma * n_qblocks (each row sums to 1).
 * gamma >= 1 keeps everything. The result is a BLOCK layout (the authors'
 * execution is block-sparse too; no token lists are needed). The estimate
 * uses the shape's logit scale (the authors hard-code 1/sqrt(d), the
 * default here).
 *
 * Defaults: gamma 0.9 and tau 0.1 as the authors' paper; min_budget 1
 * token, i.e. one block, the default of the authors' library function
 * (their paper's runs at 128K set 1024 tokens, which at N <= 16K alone
 * keeps ~2 x 1024 keys per row: a density floor of 0.7-0.9 at N = 2K, so no
 * low target could be calibrated). For long contexts set it per config:
 *   [method.flexprefill]
 *   min_budget = 1024
 *
 * Density knob: gamma (rises with gamma). Memory: O(B N) per head for the
 * last-block probabilities and O(n_blocks^2) per head for the pooled
 * scores, never N x N. Cost O(B N d). Stated cost (ab_layout_set_cost), per
 * head: FLOPs = C (2 d + 7) (C = logits of the last B rows, sum of their
 * causal lengths: the dot product, max, exp, sum, scale, vertical and slash
 * adds) + 4 N (the two cover counts, weighted quickselects of ~2 N steps) +
 * (N + B) d + nkb (2 d + 9) + 4 nkb (two block selections) + 2 N, plus for a query-aware head N d + M (2 d + 3) +
 * M log2 M (M pooled causal logits); bytes = 4 (N d + B d + 2 C) (+ 4 N d
 * query-aware): K and the last queries read, logits written and read.
 * Re-derived in
 * tests/rederive/methods/flexprefill.py.
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdlib.h>

typedef struct flex_state {
    double gamma;      /* cumulative attention coverage */
    double tau;        /* sqrt-JSD threshold for query-aware heads */
    double min_budget; /* tokens */
} flex_state;

enum { P_GAMMA = 0, P_TAU, P_MINB, P_COUNT };

/* The authors turn cover counts (keys, diagonals) into blocks by dividing by
 * 128, a literal, not their block_size argument (get_active_blocks). */
enum { FLEX_BUDGET_DIV = 128 };

static int flex_init(void *state, const ab_params *p, const ab_shape *s)
{
    flex_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "flexprefill: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_GAMMA] >= 0 && p->v[P_GAMMA] <= 1) || !(p->v[P_TAU] >= 0 && p->v[P_TAU] <= 1) ||
        !(p->v[P_MINB] >= 0 && p->v[P_MINB] <= (1 << 30))) {
        ab_set_error(state, "flexprefill: gamma, tau must be in [0, 1], min_budget in [0, 2^30]");
        return AB_EINVAL;
    }
    st->gamma = p->v[P_GAMMA];
    st->tau = p->v[P_TAU];
    st->min_budget = p->v[P_MINB];
    return AB_OK;
}

/* Number of largest entries of x (n, sums to ~1) whose cumulative sum first
 * exceeds g: count of sorted prefix sums <= g, plus one (score_cover_topk).
 * The entries are >= 0, so the prefix sums grow and the count is the largest
 * c whose c best entries sum to <= g: found by a weighted quickselect
 * (expected O(n)) instead of a full sort — partition around a pivot, keep
 * the better part whole when its mass still fits, else descend into it;
 * the last few entries are sorted and walked as the authors do. */
static int cover_count(const double *x, int n, double g, bs_cand *c)
{
    for (int i = 0; i < n; i++) {
        c[i].score = x[i];
        c[i].idx = i;
    }
    int lo = 0, hi = n; /* c[0, lo) kept (mass cum); the boundary in [lo, hi] */
    double cum = 0.0;
    while (hi - lo > 32) {
        const int mid = lo + (hi - lo) / 2;
        bs_median3(c, lo, mid, hi - 1);
        const bs_cand pv = c[hi - 1]; /* the median of three */
        int st = lo;
        double mass = 0.0; /* of the entries ranked before the pivot */
        for (int i = lo; i < hi - 1; i++)
            if (bs_cand_cmp(&c[i], &pv) < 0) {
                const bs_cand t = c[i];
                c[i] = c[st];
                c[st] = t;
                mass += t.score;
                st++;
            }
        c[hi - 1] = c[st];
        c[st] = pv;
        if (!(cum + mass <= g)) {
            hi = st; /* the boundary is among the better ones */
        } else {
            cum += mass;
            if (!(cum + pv.score <= g)) return st + 1; /* st kept, the pivot exceeds */
            cum += pv.score;
            lo = st + 1;
        }
    }
    bs_sort_desc(c + lo, hi - lo);
    int k = lo;
    for (int i = lo; i < hi; i++) {
        cum += c[i].score;
        if (cum <= g)
            k++;
        else
            break;
    }
    return k + 1;
}

/* sqrt of the Jensen-Shannon divergence of p and q (n entries each); NaN
 * when an entry is not positive, as the authors' torch expression gives
 * (0 * log 0 = NaN), so that head is never query-aware. */
static double sqrt_jsd(const double *p, const double *q, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        if (!(p[i] > 0) || !(q[i] > 0)) return NAN;
        const double m = 0.5 * (p[i] + q[i]);
        s += 0.5 * p[i] * log(p[i] / m) + 0.5 * q[i] * log(q[i] / m);
    }
    return sqrt(s > 0 ? s : 0);
}

/* Select for one head into keep (n_qblocks, n_kblocks), adding its work
 * (ab_layout_set_cost's units) to *fl and *by; returns AB_OK or AB_ENOMEM.
 * par: split the head's own loops over the threads. */
static int flex_head(const flex_state *st, const ab_problem *pb, const ab_layout *l, int h, uint8_t *keep,
                     double *fl, double *by, int par)
{
    const int N = l->seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    const float scale = pb->s.scale;
    const float *q = pb->q + (size_t)h * N * d, *k = pb->k + (size_t)h * N * d;
    const int nl = N < bq ? N : bq, r0 = N - nl; /* the last nl queries */
    const int nmax = N > nkb ? N : nkb;

    /* the last-block logits, bs_group_rows(N, nl) rows at a time (at most
     * 64, and 16 MiB: heap, not a fresh mapping per call) */
    const int gr = bs_group_rows(N, nl);
    float *s = malloc((size_t)gr * N * sizeof *s); /* (gr, N) */
    float *bt = malloc((size_t)d * BS_PANEL * sizeof *bt);
    double *row = malloc((size_t)(N > nkb ? N : nkb) * sizeof *row);
    double *vert = calloc((size_t)N, sizeof *vert);   /* (N) by key */
    double *slash = calloc((size_t)N, sizeof *slash); /* (N) by offset i - j */
    double *vb = calloc((size_t)nkb, sizeof *vb);     /* (n_kblocks) pooled vertical */
    double *sb = calloc((size_t)nkb, sizeof *sb);     /* (n_kblocks) pooled slash by run of x = N-1-o */
    double *a = malloc((size_t)nkb * sizeof *a);
    float *pq = malloc((size_t)nqb * d * sizeof *pq);   /* (n_qblocks, d) */
    float *pk = malloc((size_t)nkb * d * sizeof *pk);   /* (n_kblocks, d) */
    float *ps = malloc((size_t)nqb * nkb * sizeof *ps); /* (n_qblocks, n_kblocks) */
    bs_cand *tmp = malloc((size_t)nmax * sizeof *tmp);
    bs_cand *flat = NULL;
    int rc = (s && bt && row && vert && slash && vb && sb && a && pq && pk && ps && tmp) ? AB_OK : AB_ENOMEM;
    if (rc != AB_OK) goto out;

    for (size_t i = 0; i < (size_t)nqb * nkb; i++) keep[i] = 0;
    /* min budget in blocks; short sequences run dense (flex_prefill_attention) */
    const int minb = (int)ceil(st->min_budget / bk);
    if (st->gamma >= 1.0 || N <= (2 > minb ? 2 : minb) * bk) {
        for (int qb = 0; qb < nqb; qb++)
            for (int kb = 0; kb < nkb; kb++) keep[(size_t)qb * nkb + kb] = 1;
        goto out;
    }

    /* 1. last-block attention, vertical and slash profiles (row: the
     * slash sums reversed, zeroed here). With par (fewer heads than
     * threads), each step's loop is split over the threads: the logits by
     * key chunks, the softmax by rows, the sums by key (vertical) and by x
     * (slash) chunks; every element gets the same operations in the same
     * order as in one loop. */
    for (int x = 0; x < N; x++) row[x] = 0.0;
    double *ws = malloc((size_t)nl * sizeof *ws); /* each row's 1 / (sum nl) */
    if (!ws) {
        rc = AB_ENOMEM;
        goto out;
    }
    enum { FX_KC = 2048 };
    const int nkc = (N + FX_KC - 1) / FX_KC;
    int bad = 0;
    double cells = 0.0; /* logits used */
    for (int i = 0; i < nl; i++) cells += causal ? r0 + i + 1 : N;
    for (int g0 = 0; g0 < nl && !bad; g0 += gr) { /* rows [g0, g1) in s */
        const int g1 = g0 + gr < nl ? g0 + gr : nl;
        /* by key chunks over the threads when par, else one product */
        if (bs_gemm_chunks(q + (size_t)(r0 + g0) * d, d, g1 - g0, k, d, N, d, 1.0f, scale, s, N, bt,
                           par ? FX_KC : N, par))
            bad = 1;
#pragma omp parallel for schedule(static) if (par)
        for (int i = g0; i < g1; i++) {
            /* softmax in place (float, the kernels' vector exp) */
            const int qi = r0 + i, nv = causal ? qi + 1 : N;
            float *sr = s + (size_t)(i - g0) * N;
            const float mx = bs_max(sr, nv);
            ws[i] = 1.0 / (ab_exp_max_sum(sr, nv, mx) * nl);
        }
#pragma omp parallel for schedule(static) if (par)
        for (int t = 0; t < nkc; t++) {
            /* each probability / nl added in double to its column (keys
             * [ja0, jb0)) and to its diagonal (slash by x = N - 1 - offset
             * in [ja0, jb0): row qi's offset qi - j at N - 1 - qi + j, so
             * the loop runs forward and vectorises), the rows in order */
            const int ja0 = t * FX_KC, jb0 = N - ja0 < FX_KC ? N : ja0 + FX_KC;
            /* where every row of the group has its term (keys below the
             * first row's bound; x at or past its offset), summed in
             * registers (bs_rowsum: the same terms in the same order); the
             * ragged rest row by row */
            const int nv0 = causal ? r0 + g0 + 1 : N, off0 = N - 1 - (r0 + g0);
            const int vz = jb0 < nv0 ? jb0 : nv0, xa = ja0 > off0 ? ja0 : off0;
            const int xz = jb0 < xa ? jb0 : xa; /* the rows' own slash entries end here */
            if (vz > ja0) bs_rowsum(s, (size_t)N, g1 - g0, NULL, ws + g0, 0, 0, 0, ja0, vz, vert);
            if (jb0 > xa) bs_rowsum(s, (size_t)N, g1 - g0, NULL, ws + g0, 0, off0, 1, xa, jb0, row);
            for (int i = g0; i < g1; i++) {
                const int qi = r0 + i, nv = causal ? qi + 1 : N;
                const int nd = nv < qi + 1 ? nv : qi + 1; /* keys j <= qi */
                const float *sr = s + (size_t)(i - g0) * N;
                const double w = ws[i];
                for (int j = vz > ja0 ? vz : ja0; j < (jb0 < nv ? jb0 : nv); j++) vert[j] += sr[j] * w;
                const int off = N - 1 - qi;
                const int ja = ja0 - off > 0 ? ja0 - off : 0, jz = xz - off < nd ? xz - off : nd;
                double *xr = row + off;
                for (int j = ja; j < jz; j++) xr[j] += sr[j] * w;
            }
        }
    }
    free(ws);
    if (bad) {
        rc = AB_ENOMEM;
        goto out;
    }
    for (int o = 0; o < N; o++) slash[o] = row[N - 1 - o];
    *fl += cells * (2.0 * d + 7.0); /* logit; max, exp, sum, scale, vertical (2), slash */
    *by += (double)N * d * sizeof(float) + (double)nl * d * sizeof(float) + 2.0 * cells * sizeof(float);
    for (int j = 0; j < N; j++) {
        vb[j / bk] += vert[j];
        sb[(N - 1 - j) / bk] += slash[j]; /* offset j sits at x = N - 1 - j */
    }

    /* 2. budgets in blocks */
    int nv = cover_count(vert, N, st->gamma, tmp) / FLEX_BUDGET_DIV + 1;
    int ns = cover_count(slash, N, st->gamma, tmp) / FLEX_BUDGET_DIV + 1;

    /* 3. pattern choice */
    bs_pool_mean(k, N, d, bk, pk);
    bs_mean_rows(q, d, r0, nl, pq);
    bs_gemm_nt(pq, d, 1, pk, d, nkb, d, scale, ps, nkb, bt);
    /* profiles pooled (2 N), two cover counts (a weighted selection, ~2 N
     * compares and adds each), K and last Q pooled, nkb logits and their
     * softmax (3), the JSD (~6 per block), two block selections (~2 nkb) */
    *fl += 2.0 * N + 4.0 * N + (double)(N + nl) * d + nkb * (2.0 * d + 9.0) + 4.0 * nkb;
    for (int b = 0; b < nkb; b++) a[b] = ps[b];
    bs_softmax(a, nkb);
    const int query_aware = sqrt_jsd(a, vb, nkb) < st->tau;
    if (query_aware) nv = ns = minb;
    nv = nv < minb ? minb : nv;
    ns = ns < minb ? minb : ns;
    nv = nv > nkb ? nkb : nv;
    ns = ns > nkb ? nkb : ns;

    /* 4. vertical columns and slash diagonals (column 0 and the last slash
     * run, the main block diagonal, forced) */
    for (int b = 0; b < nkb; b++) {
        tmp[b].score = b == 0 ? INFINITY : vb[b];
        tmp[b].idx = b;
    }
    bs_sort_top(tmp, nkb, nv); /* only the best nv are read */
    for (int t = 0; t < nv; t++) {
        const int kb = tmp[t].idx;
        for (int qb = 0; qb < nqb; qb++)
            if (!causal || kb <= bs_diag_block(qb, bq, bk, N)) keep[(size_t)qb * nkb + kb] = 1;
    }
    for (int b = 0; b < nkb; b++) {
        tmp[b].score = b == nkb - 1 ? INFINITY : sb[b];
        tmp[b].idx = b;
    }
    bs_sort_top(tmp, nkb, ns);
    for (int t = 0; t < ns; t++) {
        const int off = nkb - 1 - tmp[t].idx; /* block offset of run x */
        for (int qb = 0; qb < nqb; qb++) {
            const int kb = bs_diag_block(qb, bq, bk, N) - off;
            if (kb >= 0) keep[(size_t)qb * nkb + kb] = 1;
        }
    }

    /* 5. query-aware blocks from the pooled estimate, flattened over rows */
    if (query_aware) {
        flat = malloc((size_t)nqb * nkb * sizeof *flat);
        if (!flat) {
            rc = AB_ENOMEM;
            goto out;
        }
        bs_pool_mean(q, N, d, bq, pq);
        bs_gemm_nt(pq, d, nqb, pk, d, nkb, d, scale, ps, nkb, bt);
        int m = 0;
        for (int qb = 0; qb < nqb; qb++) {
            const int nc = causal ? bs_diag_block(qb, bq, bk, N) + 1 : nkb;
            for (int b = 0; b < nc; b++) row[b] = ps[(size_t)qb * nkb + b];
            bs_softmax(row, nc);
            for (int b = 0; b < nc; b++) {
                flat[m].score = row[b];
                flat[m].idx = qb * nkb + b;
                m++;
            }
        }
        bs_sort_desc_par(flat, m, par);
        /* Q pooled, the causal pooled logits, softmax (3 each), flat sort */
        *fl += (double)N * d + m * (2.0 * d + 3.0) + (m > 1 ? m * log2((double)m) : 0.0);
        *by += (double)N * d * sizeof(float);
        const double budget = st->gamma * nqb;
        double cum = 0.0;
        for (int t = 0; t < m; t++) {
            cum += flat[t].score;
            if (cum > budget) break;
            keep[flat[t].idx] = 1;
        }
    }
out:
    free(s);
    free(bt);
    free(row);
    free(vert);
    free(slash);
    free(vb);
    free(sb);
    free(a);
    free(pq);
    free(pk);
    free(ps);
    free(tmp);
    free(flat);
    return rc;
}

/* One head: its selection into keep (n_qblocks, n_kblocks), then into l one
 * query block at a time (a bs_head_fn). */
static int flex_one(void *ctx, int h, int par, double *flops, double *bytes)
{
    const bs_heads_ctx *c = ctx;
    const flex_state *st = c->st;
    const ab_problem *pb = c->pb;
    ab_layout *l = c->l;
    const int nqb = l->n_qblocks, nkb = l->n_kblocks;
    uint8_t *keep = malloc((size_t)nqb * nkb * sizeof *keep); /* (n_qblocks, n_kblocks) */
    int32_t *idx = malloc((size_t)nkb * sizeof *idx);         /* (n_kblocks) one row's blocks */
    int r = keep && idx ? flex_head(st, pb, l, h, keep, flops, bytes, par) : AB_ENOMEM;
    for (int qb = 0; r == AB_OK && qb < nqb; qb++) {
        int n = 0;
        for (int kb = 0; kb < nkb; kb++)
            if (keep[(size_t)qb * nkb + kb]) idx[n++] = kb;
        r = ab_layout_add_blocks(l, h, qb, idx, n);
    }
    free(keep);
    free(idx);
    return r;
}

static int flex_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const flex_state *st = state;
    const int H = l->heads;
    double flops = 0.0, bytes = 0.0;
    /* the heads, or one head's own loops, over the threads (bs_run_heads) */
    bs_heads_ctx c = { st, pb, l };
    int rc = bs_run_heads(H, flex_one, &c, &flops, &bytes);
    if (rc == AB_OK) rc = ab_layout_set_cost(l, flops, bytes);
    if (rc == AB_ENOMEM) ab_set_error(state, "flexprefill: out of memory");
    return rc;
}

const ab_method ab_flexprefill = {
    .abi = AB_ABI_VERSION,
    .family = "block",
    .name = "flexprefill",
    .summary = "FlexPrefill: per head query-aware blocks or vertical-slash (by sqrt-JSD), cumulative-attention budgets",
    .reference = "Lai et al. 2025, FlexPrefill, arXiv 2502.20766 (bytedance/FlexPrefill)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .block_q = 128, /* the official block_size (flex_prefill_attention) */
    .params = {
        [P_GAMMA] = { .name = "gamma", .def = 0.9, .min = 0, .max = 1, .is_int = 0,
                      .help = "cumulative attention coverage (1 keeps all)" },
        [P_TAU] = { .name = "tau", .def = 0.1, .min = 0, .max = 1, .is_int = 0,
                    .help = "sqrt-JSD threshold below which a head is query-aware" },
        [P_MINB] = { .name = "min_budget", .def = 1, .min = 0, .max = 1 << 30, .is_int = 1,
                     .help = "minimum vertical and slash tokens per head, rounded up to blocks (1: one "
                             "block, the library default; the paper's 128K runs: 1024)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_GAMMA, .increasing = 1, .log_scale = 0 },
    .state_size = sizeof(flex_state),
    .init = flex_init,
    .select = flex_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_flexprefill)
