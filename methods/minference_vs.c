/* minference_vs.c — `minference_vs`: MInference's vertical-slash pattern
 * (Jiang et al. 2024, "MInference 1.0: Accelerating Pre-filling for
 * Long-Context LLMs via Dynamic Sparse Attention", arXiv 2407.02490; code
 * microsoft/MInference, vertical_and_slash_kernel and
 * convert_vertical_slash_indexes).
 *
 * Estimation, per head, from the last last_q = 64 queries only:
 *   A = softmax(Q_last Kᵀ · scale), causally masked       (last_q, N)
 *   vertical score of key j   = Σ_m A[m, j]               (column sums)
 *   slash score of offset o   = Σ_m A[m, i_m − o]         (diagonal sums)
 * The first sink_verticals = 30 columns and the local_slashes = 100 offsets
 * nearest the main diagonal get +inf (always kept), as in the official code;
 * then the top n_v = max(30, scale·n_vertical) columns and the top
 * n_s = max(50, scale·n_slash) offsets are kept (ties: lower index / smaller
 * offset first). Defaults 1000 / 6096 are the authors' vertical-slash
 * config; the single knob `scale` moves both together and is continuous in
 * effect (one column / one diagonal per step of 1/n).
 *
 * Index construction, as the authors' kernel does it
 * (csrc/vertical_slash_index.cu, convert_vertical_slash_indexes_kernel, via
 * minference/ops/pit_sparse_flash_attention_v2.py), per query block of
 * bq rows ending at end_m (BLOCK_SIZE_M = bq, BLOCK_SIZE_N = bk; 64 / 64 in
 * the authors' code): kept offsets in descending order, those >= end_m
 * skipped; offset o stands for the bq keys ending at
 * e = max(end_m - o, bq) (the diagonal's segment, pushed to [0, bq) near the
 * first key); e more than bq past the current range's end opens a new
 * range, e past it by at most bq extends the range by exactly bq (so a
 * range may cover keys on no kept diagonal, as the kernel computes them).
 * Each range runs as bk-wide key tiles from its start; vertical columns
 * inside a range are dropped, the others before the last range's end become
 * column (token) indices, those after it are dropped. Here the tiles are
 * written as whole key blocks where they cover an aligned block (MIXED
 * layout) and as tokens elsewhere, the same key set.
 * Differences from the authors: every head uses vertical-slash (the
 * offline per-head pattern search is not reproduced); equal scores (the
 * +inf of the forced parts, when n_s < local_slashes) go to the smaller
 * offset where torch.topk leaves the order open; the estimate uses the
 * shape's logit scale (the authors hard-code 1/sqrt(d), the default here);
 * non-causal input (not in the paper) uses the same estimator with
 * negative offsets allowed and a symmetric local band. Re-derived in
 * tests/rederive/methods/minference_vs.py.
 *
 * Cost: O(last_q · N · d) for the estimate plus O(N) ranking per head
 * and O(n_qblocks · (n_v + n_s)) to write the layout; memory O(last_q · N)
 * per head in flight, never N × N. Stated cost (ab_layout_set_cost), per head:
 * FLOPs = C (2 d + 6) (C = causally valid logits of the last L rows: dot
 * product, max, exp, sum, scale, column and diagonal adds) + 2 N + 2 n_off
 * (quickselect of the top n_v columns, n_s offsets) + n_v log2 n_v +
 * n_s log2 n_s (their sorts by index) +
 * n_qblocks (n_v + n_s) (the index pass); bytes = 4 (L d + N d + 2 C).
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { P_SCALE = 0, P_NV, P_NS, P_LASTQ, P_SINKV, P_LOCALS, P_COUNT };

typedef struct mvs_state {
    double scale;   /* multiplies n_vertical and n_slash (density knob) */
    int n_vertical; /* authors' vertical_size at scale 1 */
    int n_slash;    /* authors' slash_size at scale 1 */
    int last_q;     /* estimation queries (the last rows) */
    int sink_v;     /* leading columns always kept */
    int local_s;    /* offsets nearest the diagonal always kept */
} mvs_state;

static int mvs_init(void *state, const ab_params *p, const ab_shape *s)
{
    mvs_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "minference_vs: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_SCALE] > 0 && p->v[P_SCALE] <= 1e6)) {
        ab_set_error(state, "minference_vs: scale=%g outside (0, 1e6]", p->v[P_SCALE]);
        return AB_EINVAL;
    }
    for (int i = P_NV; i < P_COUNT; i++)
        if (!(p->v[i] >= (i == P_LASTQ ? 1 : 0) && p->v[i] <= (1 << 24))) {
            ab_set_error(state, "minference_vs: param %d = %g out of range", i, p->v[i]);
            return AB_EINVAL;
        }
    st->scale = p->v[P_SCALE];
    st->n_vertical = (int)p->v[P_NV];
    st->n_slash = (int)p->v[P_NS];
    st->last_q = (int)p->v[P_LASTQ];
    st->sink_v = (int)p->v[P_SINKV];
    st->local_s = (int)p->v[P_LOCALS];
    return AB_OK;
}

/* Per-head scratch and result. */
typedef struct head_work {
    float *a;         /* (last_q, N) logits, then probabilities */
    bs_cand *vert;    /* (N) column scores (a candidate: a column or an offset) */
    bs_cand *slash;   /* (n_off) offset scores, index = o - o_min */
    int32_t *v_keep;  /* (n_v) kept columns, ascending */
    int32_t *s_keep;  /* (n_s) kept offsets, descending */
    int32_t *lo, *hi; /* (n_s) merged ranges of one query block */
    float *kt;        /* (head_dim, BS_PANEL) one key tile, transposed */
    int32_t *blk;     /* (n_kblocks) key blocks of one query block */
    int32_t *tok;     /* (2N) key tokens of one query block; [N, 2N): the ranges' ragged ends */
} head_work;

static void head_work_free(head_work *w)
{
    free(w->a);
    free(w->vert);
    free(w->slash);
    free(w->v_keep);
    free(w->s_keep);
    free(w->lo);
    free(w->hi);
    free(w->kt);
    free(w->blk);
    free(w->tok);
}

static int cmp_i32_asc(const void *pa, const void *pb)
{
    const int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    return (a > b) - (a < b);
}

static int cmp_i32_desc(const void *pa, const void *pb) { return cmp_i32_asc(pb, pa); }

/* The whole selection of head h, added to l one query block at a time; its
 * work (ab_layout_set_cost's units) added to *fl and *by. */
static int mvs_head(const mvs_state *st, const ab_problem *pb, ab_layout *l, int h, double *fl, double *by,
                    int par)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks;
    const float scale = pb->s.scale;
    const int L = st->last_q < N ? st->last_q : N;
    const int o_min = causal ? 0 : -(L - 1);    /* offsets the last rows can see */
    const int n_off = N - o_min;                /* offsets o in [o_min, N - 1] */
    const float *q = pb->q + (size_t)h * N * d; /* (N, d) */
    const float *k = pb->k + (size_t)h * N * d; /* (N, d) */

    int n_v = (int)fmin((double)N, fmax(30.0, round(st->scale * st->n_vertical)));
    int n_s = (int)fmin((double)n_off, fmax(50.0, round(st->scale * st->n_slash)));

    head_work w = { 0 };
    w.a = malloc((size_t)L * N * sizeof *w.a);
    w.vert = malloc((size_t)N * sizeof *w.vert);
    w.slash = malloc((size_t)n_off * sizeof *w.slash);
    w.v_keep = malloc((size_t)n_v * sizeof *w.v_keep);
    w.s_keep = malloc((size_t)n_s * sizeof *w.s_keep);
    w.lo = malloc((size_t)n_s * sizeof *w.lo);
    w.hi = malloc((size_t)n_s * sizeof *w.hi);
    w.kt = malloc((size_t)d * BS_PANEL * sizeof *w.kt);
    w.blk = malloc((size_t)l->n_kblocks * sizeof *w.blk);
    w.tok = malloc(2 * (size_t)N * sizeof *w.tok);
    if (!w.a || !w.vert || !w.slash || !w.v_keep || !w.s_keep || !w.lo || !w.hi || !w.kt || !w.blk ||
        !w.tok) {
        head_work_free(&w);
        return AB_ENOMEM;
    }

    /* With par (fewer heads than threads) the logits, the softmax and the
     * sums are split over the threads (key chunks, rows, key and diagonal
     * chunks); every element gets the same operations in the same order. */
    enum { MV_KC = 2048 };
    const int kc = par ? MV_KC : N, nkc = (N + kc - 1) / kc;
    int bad = 0;
    double cells = 0.0; /* logits used (causally valid) */
    for (int m = 0; m < L; m++) cells += causal ? N - L + m + 1 : N;
    /* Logits of the last L rows against all keys (bs_logits' arithmetic). */
    if (bs_gemm_chunks(q + (size_t)(N - L) * d, d, L, k, d, N, d, scale, 1.0f, w.a, N, w.kt, kc, par))
        bad = 1;
    if (bad) {
        head_work_free(&w);
        return AB_ENOMEM;
    }
    /* A = softmax of the last L rows (row i = N - L + m sees j <= i): the
     * shifted exponentials in place and each row's 1 / sum in inv; the
     * sums below take each probability as the float product e * inv (the
     * values a pass scaling the panel in place had stored, and one pass
     * over it fewer), and entries past a row's end are left out of them
     * (they had been zeroed, and added as zeros) */
    float *inv = malloc((size_t)L * sizeof *inv);
    if (!inv) {
        head_work_free(&w);
        return AB_ENOMEM;
    }
#pragma omp parallel for schedule(static) if (par)
    for (int m = 0; m < L; m++) {
        const int i = N - L + m, nv = causal ? i + 1 : N;
        float *row = w.a + (size_t)m * N; /* (N) */
        const float mx = bs_max(row, nv);
        const double sum = ab_exp_max_sum(row, nv, mx); /* the kernels' vector exp */
        inv[m] = (float)(1.0 / sum);
    }

    /* Column sums and diagonal sums. */
    for (int j = 0; j < N; j++) {
        w.vert[j].score = 0.0;
        w.vert[j].idx = j;
    }
    for (int t = 0; t < n_off; t++) {
        w.slash[t].score = 0.0;
        w.slash[t].idx = t + o_min; /* the offset itself */
    }
    /* summed in plain double arrays (vectorisable; same order per entry as
     * summing into the candidates), then copied into them */
    double *vs = calloc((size_t)N + n_off, sizeof *vs), *ss = vs ? vs + N : NULL;
    if (!vs) {
        free(inv);
        head_work_free(&w);
        return AB_ENOMEM;
    }
    const int vfull = causal ? N - L + 1 : N; /* columns every row has */
    const int nsc = (n_off + kc - 1) / kc;    /* chunks of ss */
    /* row m adds to entries [base_m, base_m + je_m) of ss; every row does
     * from the first row's base (the largest) to the smallest end, where
     * the diagonal sums run in registers (bs_rowsum, the same adds in the
     * same order) */
    const int base0 = n_off - 1 - (N - L - o_min);
    int hmin = n_off;
    for (int m = 0; m < L; m++) {
        const int i = N - L + m, je = i - o_min + 1 < N ? i - o_min + 1 : N;
        hmin = n_off - 1 - (i - o_min) + je < hmin ? n_off - 1 - (i - o_min) + je : hmin;
    }
#pragma omp parallel for schedule(static) if (par)
    for (int t = 0; t < nkc + nsc; t++) {
        if (t < nkc) { /* columns [j0, j1), the rows in order */
            const int j0 = t * kc, j1 = N - j0 < kc ? N : j0 + kc, jf = j1 < vfull ? j1 : vfull;
            if (jf > j0) bs_rowsum(w.a, (size_t)N, L, inv, NULL, 0, 0, 0, j0, jf, vs); /* in registers */
            for (int m = 0; m < L; m++) { /* the columns only the later rows have */
                const int nv = causal ? N - L + m + 1 : N, ja = jf > j0 ? jf : j0, jz = j1 < nv ? j1 : nv;
                const float *row = w.a + (size_t)m * N, wm = inv[m];
                for (int j = ja; j < jz; j++) vs[j] += (double)(row[j] * wm);
            }
            continue;
        }
        /* offsets o = i - j >= o_min: j <= i - o_min. ss holds them
         * reversed (entry n_off - 1 - (o - o_min)), so that key j's offset
         * is a forward index and the loop vectorises like the one above
         * (sd[-j] did not); each entry gets the same adds in row order.
         * Here entries [e0, e1) of ss. */
        const int e0 = (t - nkc) * kc, e1 = n_off - e0 < kc ? n_off : e0 + kc;
        /* [fa, fz): this chunk's part of the register range; the ragged
         * rest row by row */
        int fa = e0 > base0 ? e0 : base0, fz = e1 < hmin ? e1 : hmin;
        if (fz > fa)
            bs_rowsum(w.a, (size_t)N, L, inv, NULL, 0, base0, 1, fa, fz, ss);
        else
            fa = fz = e1; /* no register range here: "below it" is every entry */
        for (int m = 0; m < L; m++) {
            const int i = N - L + m;
            const float *row = w.a + (size_t)m * N, wm = inv[m];
            const int je = i - o_min + 1 < N ? i - o_min + 1 : N;
            const int base = n_off - 1 - (i - o_min); /* sd = ss + base: sd[j] is offset i - j */
            const int ja = e0 - base > 0 ? e0 - base : 0, jz = e1 - base < je ? e1 - base : je;
            double *sd = ss + base;
            for (int j = ja; j < jz && j < fa - base; j++)
                sd[j] += (double)(row[j] * wm); /* below the range */
            for (int j = ja > fz - base ? ja : fz - base; j < jz; j++)
                sd[j] += (double)(row[j] * wm); /* above */
        }
    }
    for (int j = 0; j < N; j++) w.vert[j].score = vs[j];
    for (int t = 0; t < n_off; t++) w.slash[t].score = ss[n_off - 1 - t];
    free(vs);
    free(inv);
    /* Forced parts: sinks and the local band; NaN ranks last. */
    for (int j = 0; j < N; j++) {
        if (j < st->sink_v)
            w.vert[j].score = INFINITY;
        else if (isnan(w.vert[j].score))
            w.vert[j].score = -1.0;
    }
    for (int t = 0; t < n_off; t++) {
        const int o = t + o_min;
        if (o < st->local_s && o > -st->local_s)
            w.slash[t].score = INFINITY;
        else if (isnan(w.slash[t].score))
            w.slash[t].score = -1.0;
        /* equal scores: the offset nearer the diagonal first */
        w.slash[t].idx = o;
    }
    /* the tops as sets (v_keep and s_keep are sorted below): key scratch */
    uint64_t *tk = malloc(3 * (size_t)(N > n_off ? N : n_off) * sizeof *tk);
    if (!tk) {
        head_work_free(&w);
        return AB_ENOMEM;
    }
    bs_top_set(w.vert, N, n_v, tk);
    /* Rank offsets by score, ties by |o| then o: sort on a key with the
     * index replaced by a rank of |o|. */
    for (int t = 0; t < n_off; t++) {
        const int o = w.slash[t].idx;
        w.slash[t].idx = 2 * (o < 0 ? -o : o) + (o < 0); /* 0, 1(-)... : bijective */
    }
    bs_top_set(w.slash, n_off, n_s, tk);
    free(tk);
    for (int t = 0; t < n_v; t++) w.v_keep[t] = w.vert[t].idx;
    for (int t = 0; t < n_s; t++) {
        const int c = w.slash[t].idx;
        w.s_keep[t] = (c & 1) ? -(c >> 1) : (c >> 1);
    }
    qsort(w.v_keep, (size_t)n_v, sizeof *w.v_keep, cmp_i32_asc);
    qsort(w.s_keep, (size_t)n_s, sizeof *w.s_keep, cmp_i32_desc);

    /* stated work: per logit the dot product (2 d), max, exp, sum, scale,
     * column and diagonal adds (6); the four sorts; per query block a pass
     * over the kept offsets and columns. Bytes: the last L queries and K
     * read, the probabilities written and read back. */
    *fl += cells * (2.0 * d + 6.0) + 2.0 * N + 2.0 * n_off + n_v * log2((double)n_v + 1.0) +
           n_s * log2((double)n_s + 1.0) + (double)nqb * (n_v + n_s);
    *by += ((double)L * d + (double)N * d + 2.0 * cells) * sizeof(float);

    int rc = AB_OK;
    /* s_keep[ts, n_s): the offsets below the current block's end_m (the
     * offsets descend, end_m grows with qb, so ts only moves down): the
     * loop below had tested every kept offset in every block, and the
     * skips were a third of mvs_head's own time at N = 16K (2026-12-08) */
    int ts = n_s;
    for (int qb = 0; rc == AB_OK && qb < nqb; qb++) {
        /* end_m: the query block's end unclipped (the kernel pads rows) */
        const int r0 = qb * bq, end_m = r0 + bq, r1 = end_m < N ? end_m : N;
        const int kend = causal ? r1 : N; /* keys any row here may see */
        /* The kernel's ranges (convert_vertical_slash_indexes_kernel):
         * offsets descending; one at or past end_m reaches no row here; an
         * offset o stands for the bq keys ending at e = max(end_m - o, bq);
         * e more than bq past the current range's end opens a new range,
         * e past it by at most bq extends the range by exactly bq. */
        int nr = 0;
        while (ts > 0 && w.s_keep[ts - 1] < end_m) ts--;
        for (int t = ts; t < n_s; t++) {
            const int o = w.s_keep[t];
            const int e = end_m - o > bq ? end_m - o : bq;
            if (nr > 0 && e <= w.hi[nr - 1] + bq) {
                if (e > w.hi[nr - 1]) w.hi[nr - 1] += bq;
            } else {
                w.lo[nr] = e - bq;
                w.hi[nr] = e;
                nr++;
            }
        }
        /* Columns count up to the last range's end only (the kernel stops
         * there), and not past the keys the rows may see. */
        int vlim = nr > 0 ? w.hi[nr - 1] : 0;
        vlim = vlim < kend ? vlim : kend;
        /* Each range is run as bk-wide key tiles from its start; clip to
         * [0, kend) and merge what the rounding made overlap. */
        int nm = 0;
        for (int x = 0; x < nr; x++) {
            int a = w.lo[x], b = a + (w.hi[x] - a + bk - 1) / bk * bk;
            b = b < kend ? b : kend;
            if (a >= b) continue;
            if (nm > 0 && a <= w.hi[nm - 1]) {
                if (b > w.hi[nm - 1]) w.hi[nm - 1] = b;
            } else {
                w.lo[nm] = a;
                w.hi[nm] = b;
                nm++;
            }
        }
        nr = nm;
        /* Each range: aligned key blocks it covers whole, tokens at the
         * ragged ends (ranges are disjoint, so no block or token repeats);
         * the tokens ascending in rt. */
        int32_t *rt = w.tok + N;
        int nb = 0, nrt = 0;
        for (int x = 0; x < nr; x++) {
            const int a = w.lo[x], b = w.hi[x];
            int kb0 = (a + bk - 1) / bk, kb1 = b / bk;          /* whole blocks [kb0, kb1) */
            if (b == N && kb1 * bk < N && kb1 * bk >= a) kb1++; /* last, partial key block */
            if (kb0 < kb1) {
                for (int kb = kb0; kb < kb1; kb++) w.blk[nb++] = kb;
                const int e0 = kb0 * bk, e1 = kb1 * bk < N ? kb1 * bk : N;
                for (int j = a; j < e0; j++) rt[nrt++] = j;
                for (int j = e1; j < b; j++) rt[nrt++] = j;
            } else {
                for (int j = a; j < b; j++) rt[nrt++] = j;
            }
        }
        /* Vertical columns outside the ranges, merged with rt: the row's
         * tokens go in ascending (the layout then has nothing to sort). */
        int x = 0, nt = 0, u = 0;
        for (int t = 0; t < n_v; t++) {
            const int j = w.v_keep[t];
            if (j >= vlim) break;
            while (x < nr && w.hi[x] <= j) x++;
            if (x < nr && w.lo[x] <= j) continue; /* inside a slash range */
            while (u < nrt && rt[u] < j) w.tok[nt++] = rt[u++];
            w.tok[nt++] = j;
        }
        while (u < nrt) w.tok[nt++] = rt[u++];
        rc = ab_layout_add_blocks(l, h, qb, w.blk, nb);
        if (rc == AB_OK) rc = ab_layout_add_tokens(l, h, qb, w.tok, nt);
    }
    head_work_free(&w);
    return rc;
}

static int mvs_one(void *ctx, int h, int par, double *fl, double *by)
{
    const bs_heads_ctx *c = ctx;
    return mvs_head(c->st, c->pb, c->l, h, fl, by, par);
}

static int mvs_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const mvs_state *st = state;
    const int H = l->heads;
    if (l->seq_len < 1) {
        const int rd = ab_layout_dense(l);
        return rd == AB_OK ? ab_layout_set_cost(l, 0.0, 0.0) : rd;
    }
    double flops = 0.0, bytes = 0.0;
    /* the heads, or one head's own loops, over the threads (bs_run_heads) */
    bs_heads_ctx c = { st, pb, l };
    int rc = bs_run_heads(H, mvs_one, &c, &flops, &bytes);
    if (rc == AB_OK) rc = ab_layout_set_cost(l, flops, bytes);
    if (rc == AB_ENOMEM) ab_set_error(state, "minference_vs: out of memory");
    return rc;
}

const ab_method ab_minference_vs = {
    .abi = AB_ABI_VERSION,
    .family = "token",
    .name = "minference_vs",
    .summary = "MInference vertical-slash: last-64-query estimate, top verticals + top diagonals (mixed layout)",
    .reference = "MInference (Jiang et al. 2024, arXiv 2407.02490; microsoft/MInference)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_SCALE] = { .name = "scale", .def = 1.0, .min = 1e-3, .max = 1e4, .is_int = 0,
                      .help = "multiplies n_vertical and n_slash together (density knob)" },
        [P_NV] = { .name = "n_vertical", .def = 1000, .min = 0, .max = 1 << 24, .is_int = 1,
                   .help = "vertical columns kept at scale 1 (at least 30)" },
        [P_NS] = { .name = "n_slash", .def = 6096, .min = 0, .max = 1 << 24, .is_int = 1,
                   .help = "slash diagonals kept at scale 1 (at least 50)" },
        [P_LASTQ] = { .name = "last_q", .def = 64, .min = 1, .max = 1 << 16, .is_int = 1,
                      .help = "last query rows used for the estimate" },
        [P_SINKV] = { .name = "sink_verticals", .def = 30, .min = 0, .max = 1 << 16, .is_int = 1,
                      .help = "leading key columns always kept" },
        [P_LOCALS] = { .name = "local_slashes", .def = 100, .min = 0, .max = 1 << 16, .is_int = 1,
                       .help = "diagonals nearest i = j always kept (local band)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_SCALE, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(mvs_state),
    .init = mvs_init,
    .select = mvs_select,
    .run = NULL, /* gather kernel (mixed / token) */
    .fini = NULL,
};
AB_REGISTER(ab_minference_vs)
