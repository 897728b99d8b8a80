/* oracle_topk_token.c — `oracle_topk_token`: the token-level upper bound.
 * Exact scores, no estimation: the yardstick for token selectors
 * (MInference vertical-slash, HiP, Spark, DHSA, HAX), as oracle_topk_block
 * is for block selectors (cf. the oracle top-k analyses of MInference,
 * arXiv 2407.02490, and of HiP, arXiv 2406.09827).
 *
 * The layout holds one key list per query block, so a strictly per-row top-k
 * needs block_q = 1 (an N-row CSR, heavy at large N). Instead the query rows
 * are grouped in small blocks (block_q = 16 by default; set 1 for the exact
 * per-row top-k) and each block keeps the k keys with the largest summed
 * exact softmax probability over its rows (a key counts only for the rows
 * the base mask lets see it, and only keys some row may see are
 * candidates). For a shared list of k keys this is exactly the
 * choice that maximises the block's mean attention-mass recall, so it is the
 * true optimum of the metric for this layout; with block_q = 1 it is the
 * exact per-row top-k. Density is measured, as for every method.
 *
 * The budget may be fractional: k = 40.3 keeps 41 keys in 30% of the query
 * blocks and 40 in the rest, spread by a golden-ratio sequence over the
 * blocks, so the harness's bisection reaches any density within ±10%.
 *
 * Cost: O(N² d) exact scores, like dense attention, reported as select time.
 * Memory: O(block_q · N) per thread, never N × N.
 *
 * Decode (dselect): each (layer, head) row of the step keeps the newest key
 * and the k - 1 other keys with the largest exact logit q·k_j of this
 * step's query (the softmax is monotone in the logit, so these are the keys
 * of largest attention probability): the per-row top-k, exact, recomputed
 * every step (no state). k = `topk` dithered over the rows (floor or ceil,
 * golden-ratio sequence of the row index), at least 1, at most len; the
 * newest key counts inside k. block_q is ignored (one query per row). Ties
 * go to the lower key, a NaN logit ranks last. Layout TOKEN. Cost: 2d per
 * key per row (the logits), ~2 per key (quickselect); bytes: every key of
 * every KV head once (a row reads its KV head's keys; the query heads of a
 * GQA group re-read them from cache), the queries, the logits.
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

enum { P_TOPK = 0, P_BLOCKQ, P_COUNT };

typedef struct oracle_tok_state {
    double topk; /* mean keys kept per query block (fractional: dithered) */
    int block_q; /* query rows sharing one key list */
} oracle_tok_state;

/* Per-thread scratch. */
typedef struct scratch {
    float *s;     /* (block_q, N) scaled logits, then probabilities */
    float *kt;    /* (head_dim, BS_PANEL) one key tile, transposed */
    double *mass; /* (N) summed probability per key */
    int32_t *ix;  /* (N) candidate indices for the selection */
    char *seen;   /* (N) 1: some row of the block may see the key */
} scratch;

static int oracle_tok_init(void *state, const ab_params *p, const ab_shape *s)
{
    oracle_tok_state *st = state;
    if (p->n < P_COUNT || !(p->v[P_TOPK] >= 1 && p->v[P_TOPK] <= (1 << 24))) {
        ab_set_error(state, "oracle_topk_token: topk must be in [1, 2^24]");
        return AB_EINVAL;
    }
    if (!(p->v[P_BLOCKQ] >= 1 && p->v[P_BLOCKQ] <= 4096)) {
        ab_set_error(state, "oracle_topk_token: block_q must be in [1, 4096]");
        return AB_EINVAL;
    }
    st->topk = p->v[P_TOPK];
    st->block_q = (int)p->v[P_BLOCKQ];
    return AB_OK;
}

/* a ranks before b: more mass, then lower index (a total order). */
static int before(const double *m, int32_t a, int32_t b) { return m[a] > m[b] || (m[a] == m[b] && a < b); }

/* Partial selection: reorder ix[0, n) so that its first k entries are the k
 * best by `before` (in no particular order). Quickselect with a
 * median-of-three pivot; the result set is unique (total order). */
static void select_top(const double *m, int32_t *ix, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (lo < hi && k > lo && k <= hi) {
        const int mid = lo + (hi - lo) / 2;
        /* median of three to ix[mid] */
        if (before(m, ix[mid], ix[lo])) {
            int32_t t = ix[mid];
            ix[mid] = ix[lo];
            ix[lo] = t;
        }
        if (before(m, ix[hi], ix[lo])) {
            int32_t t = ix[hi];
            ix[hi] = ix[lo];
            ix[lo] = t;
        }
        if (before(m, ix[hi], ix[mid])) {
            int32_t t = ix[hi];
            ix[hi] = ix[mid];
            ix[mid] = t;
        }
        const int32_t pv = ix[mid];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(m, ix[i], pv)) i++;
            while (before(m, pv, ix[j])) j--;
            if (i <= j) {
                int32_t t = ix[i];
                ix[i] = ix[j];
                ix[j] = t;
                i++;
                j--;
            }
        }
        /* [lo, j] rank before-or-equal pv, [i, hi] after-or-equal */
        if (k <= j + 1)
            hi = j;
        else if (k >= i + 1)
            lo = i;
        else
            return; /* the k-th lies between j and i: done */
    }
}

/* Summed probabilities of rows [r0, r0 + nr) of head h over the keys the
 * base mask allows them, for keys [k0, k0 + kc) (the union of the rows'
 * spans), into w->mass[j - k0]; w->seen[j - k0] = 1 when some row may see
 * key j. */
static void block_mass(const ab_problem *pb, const ab_mask *mask, int h, int r0, int nr, int k0, int kc,
                       scratch *w)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, exact = mask->def->interval;
    const float *q = pb->q + ((size_t)h * N + r0) * d; /* (nr, d) */
    const float *k = pb->k + ((size_t)h * N + k0) * d; /* (kc, d) */
    bs_logits(q, nr, k, kc, d, pb->s.scale, w->s, w->kt);
    for (int j = 0; j < kc; j++) {
        w->mass[j] = 0.0;
        w->seen[j] = 0;
    }
    for (int i = 0; i < nr; i++) {
        float *srow = w->s + (size_t)i * kc; /* (kc): key j at srow[j - k0] */
        int lo, hi;
        ab_mask_span(mask, r0 + i, &lo, &hi);
        float mx = -INFINITY;
        for (int j = lo; j < hi; j++)
            if ((exact || ab_mask_allows(mask, r0 + i, j)) && !(srow[j - k0] <= mx)) mx = srow[j - k0];
        if (mx == -INFINITY) continue; /* no allowed key */
        double sum = 0.0;
        for (int j = lo; j < hi; j++) {
            float *x = &srow[j - k0];
            const int ok = exact || ab_mask_allows(mask, r0 + i, j);
            *x = ok ? expf(*x - mx) : 0.0f;
            w->seen[j - k0] |= (char)ok;
            sum += *x;
        }
        const double inv = 1.0 / sum;
        for (int j = lo; j < hi; j++) w->mass[j - k0] += srow[j - k0] * inv;
    }
    for (int j = 0; j < kc; j++)
        if (isnan(w->mass[j])) w->mass[j] = -1.0; /* non-finite input: rank last */
}

static int oracle_tok_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const oracle_tok_state *st = state;
    int rc = ab_layout_set_blocks(
        l, st->block_q < l->seq_len ? st->block_q : (l->seq_len > 0 ? l->seq_len : 1), l->block_k);
    if (rc != AB_OK) return rc;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim;
    const int bq = l->block_q, nqb = l->n_qblocks, rows = H * nqb;
    const ab_mask mask = ab_shape_mask(&pb->s);

    double pairs = 0.0, cands = 0.0; /* allowed (row, key) pairs; candidates of the top-k */
#pragma omp parallel reduction(+ : pairs, cands)
    {
        scratch w;
        w.s = malloc((size_t)bq * N * sizeof *w.s);
        w.kt = malloc((size_t)d * BS_PANEL * sizeof *w.kt);
        w.mass = malloc((size_t)N * sizeof *w.mass);
        w.ix = malloc((size_t)N * sizeof *w.ix);
        w.seen = malloc((size_t)(N > 0 ? N : 1));
        int ok = w.s && w.kt && w.mass && w.ix && w.seen;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 4)
        for (int r = 0; r < rows; r++) {
            if (!ok) continue;
            const int h = r / nqb, qb = r % nqb;
            const int r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
            /* keys [k0, k1) any row here may see: the union of the spans */
            int k0 = N, k1 = 0;
            for (int i = r0; i < r0 + nr; i++) {
                int lo, hi;
                ab_mask_span(&mask, i, &lo, &hi);
                if (lo < hi) {
                    k0 = lo < k0 ? lo : k0;
                    k1 = hi > k1 ? hi : k1;
                }
            }
            const int kc = k1 > k0 ? k1 - k0 : 0;
            int nc = 0; /* candidates: keys some row may see, as offsets from k0 */
            if (kc > 0) {
                block_mass(pb, &mask, h, r0, nr, k0, kc, &w);
                for (int j = 0; j < kc; j++)
                    if (w.seen[j]) w.ix[nc++] = j;
            }
            /* this block's budget: floor(topk) plus one with probability
             * frac(topk), dithered by the golden-ratio sequence of qb */
            const int kd = mc_dither(st->topk, qb);
            const int kk = kd < nc ? kd : nc;
            select_top(w.mass, w.ix, nc, kk);
            for (int i = r0; i < r0 + nr; i++) pairs += (double)ab_mask_row_count(&mask, i, 0, N);
            cands += nc;
            for (int t = 0; t < kk; t++) w.ix[t] += k0;
            const int ra = ab_layout_add_tokens(l, h, qb, w.ix, kk);
            if (ra != AB_OK) {
                ok = 0;
#pragma omp atomic write
                rc = ra;
            }
        }
        free(w.s);
        free(w.kt);
        free(w.mass);
        free(w.ix);
        free(w.seen);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "oracle_topk_token: out of memory");
    if (rc != AB_OK) return rc;
    /* exact logits 2d per allowed pair, softmax max + exp + sum + the mass
     * multiply-add 5 per pair, a linear top-k over the candidates (~2 per
     * candidate); bytes: Q and K once, each logit written and read back */
    return ab_layout_set_cost(l, (2.0 * d + 5.0) * pairs + 2.0 * cands,
                              4.0 * (2.0 * H * N * d) + 8.0 * pairs);
}

/* a logit and its key, for the decode selection */
typedef struct dcand {
    float s;
    int32_t j;
} dcand;

static inline int dc_before(dcand a, dcand b) { return a.s > b.s || (a.s == b.s && a.j < b.j); }
MC_DEFINE_SELECT_TOP(dcand_top, dcand, dc_before)

static float dot_row(const float *q, const float *k, int d)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < d; c++) s += q[c] * k[c];
    return s;
}

/* dselect (decode): per row, the newest key plus the top k - 1 others by
 * the exact logit. */
static int oracle_tok_dselect(void *state, const ab_decode *dp, ab_layout *l)
{
    const oracle_tok_state *st = state;
    const int d = dp->head_dim, H = dp->heads, len = dp->len, rows = dp->layers * H;
    if (l->heads != rows || len < 1) {
        ab_set_error(state, "oracle_topk_token: layout has %d rows for %d (layer, head) queries", l->heads,
                     rows);
        return AB_EINVAL;
    }
    int rc = AB_OK;
    double kept_cands = 0.0;
#pragma omp parallel if ((double)rows * len * d > 32768.0) reduction(+ : kept_cands)
    {
        dcand *c = malloc((size_t)len * sizeof *c);
        int32_t *keys = malloc((size_t)len * sizeof *keys);
        int ok = c && keys;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            if (!ok) continue;
            const int layer = r / H, h = r % H;
            const size_t g = (size_t)layer * dp->kv_heads + ab_kv_head(dp, h);
            const float *q = dp->q + (size_t)r * d, *k = dp->k + g * dp->cap * d;
            int k_r = mc_dither(st->topk, r);
            k_r = k_r < 1 ? 1 : (k_r > len ? len : k_r);
            const int others = len - 1; /* keys [0, len - 1): the candidates */
            for (int j = 0; j < others; j++) {
                const float x = dot_row(q, k + (size_t)j * d, d);
                c[j] = (dcand){ isnan(x) ? -INFINITY : x, j };
            }
            dcand_top(c, others, k_r - 1);
            for (int t = 0; t < k_r - 1; t++) keys[t] = c[t].j;
            keys[k_r - 1] = len - 1; /* the newest key: always kept */
            kept_cands += others;
            const int ra = ab_layout_add_tokens(l, r, 0, keys, k_r);
            if (ra != AB_OK) {
                ok = 0;
#pragma omp atomic write
                rc = ra;
            }
        }
        free(c);
        free(keys);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "oracle_topk_token: out of memory");
    if (rc != AB_OK) return rc;
    /* logits 2d per candidate, quickselect ~2 per candidate; bytes: K of
     * every KV head once, the queries, each logit written and read */
    return ab_layout_set_cost(l, (2.0 * d + 2.0) * kept_cands,
                              4.0 * d * (double)dp->layers * dp->kv_heads * (len - 1) + 4.0 * d * rows +
                                  8.0 * kept_cands);
}

const ab_method ab_oracle_topk_token = {
    .abi = AB_ABI_VERSION,
    .family = "token",
    .name = "oracle_topk_token",
    .summary = "upper bound: per query block of 16 rows, the top-k keys by exact summed attention mass; decode: per-row top-k by exact logit",
    .reference = "oracle upper bound (cf. MInference arXiv 2407.02490, HiP arXiv 2406.09827 top-k analyses)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL | AB_DECODE,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_TOPK] = { .name = "topk", .def = 256, .min = 1, .max = 1 << 24, .is_int = 0,
                     .help = "mean keys kept per query block (fractional budgets dithered over blocks)" },
        [P_BLOCKQ] = { .name = "block_q", .def = 16, .min = 1, .max = 4096, .is_int = 1,
                       .help = "query rows sharing one key list (1 = exact per-row top-k)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_TOPK, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(oracle_tok_state),
    .init = oracle_tok_init,
    .select = oracle_tok_select,
    .run = NULL, /* gather kernel */
    .fini = NULL,
    .dselect = oracle_tok_dselect,
};
AB_REGISTER(ab_oracle_topk_token)
