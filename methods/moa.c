/* moa.c — `moa`: a proxy of MoA, Mixture of Sparse Attention (Fu et al.
 * 2024, "MoA: Mixture of Sparse Attention for Automatic Large Language
 * Model Compression", arXiv 2406.14909; thu-nics/MoA).
 *
 * MoA. Every head keeps the initial "sink" tokens (64 in the paper) and a
 * causal band of its own span, elastic in the length: span_h(N) = α_h +
 * β_h·N. The pairs (α_h, β_h) are fixed offline: on calibration text the
 * profiler scores each candidate span of each head by the attention it
 * keeps, weighted by the loss gradient (a first-order Taylor estimate; the
 * kept-sum is matrix_reserve_score in MoA/attention/sparse_mask.py), and an
 * optimiser picks one candidate per head so that the mean density meets the
 * budget over several lengths. At run time nothing depends on the input: the
 * prefill kernel (MoA/kernels/mixture_of_attention.py calling
 * block_sparse_attention_prefill.py, BLOCK_M = BLOCK_N = 64) keeps, per head
 * and query block, key blocks 0 .. sink_size/64 - 1 and the local_size/64
 * key blocks that end at the diagonal block.
 *
 * The proxy (docs/spec/METHODS.md 2.8): no model, no gradient, one length.
 *   1. Profile, offline, on the problem's held-out draw (ab_problem.heldout:
 *      the same task, shape and mask at another seed; never the scored
 *      input, whose attention holds the answer). For `sample_rows` query
 *      rows spread evenly over the sequence, the exact softmax row under the
 *      base mask; M_h(k) = the mean over those rows of the fraction of the
 *      row's attention inside the pattern of span k (k key blocks of band
 *      plus the sink blocks): MoA's reserve score with the attention itself
 *      in place of its gradient-weighted attention effect.
 *   2. Allocate by one common mass level m: head h gets the smallest span
 *      k_h(m) with M_h(k) >= m; m is bisected to the highest level whose
 *      mean density over heads (the pattern's kept pairs over the base
 *      mask's pairs, counted exactly) is not above `budget` (the smallest
 *      spans when even they exceed it).
 *   3. Per head and query block: sink blocks plus the band, key blocks from
 *      (block of the first row) - k_h + 1 through the block of the last
 *      row, i.e. k_h blocks ending at the diagonal when block_q = block_k,
 *      as in the official kernel. Under a non-causal base mask the band also
 *      reaches k_h - 1 blocks past the diagonal (our extension; MoA is
 *      causal). Sinks: `sink_tokens` (64) round up to whole key blocks (one
 *      block at block_k = 64, as in the official kernel; one of 128 at 128).
 *
 * It cannot reproduce: the gradient-based profiler (loss sensitivity, not
 * attention mass, ranks MoA's candidates), profiling on natural text with
 * the model's own answers, the optimiser over candidate sets, and the
 * elastic rule: spans are fitted at the problem's one length, not as
 * α_h + β_h·N across lengths.
 *
 * Cost: the profile, O(H · sample_rows · N · d), runs on an instance's first
 * select() and is kept (MoA profiles once, offline), so timed calls pay only
 * the allocation (a bisection over the profile) and the layout. Without a
 * held-out draw (a task that ignores its seed, e.g. a trace) the method is
 * unsupported.
 */
#include "attnbench.h"

#include <math.h>
#include <stdlib.h>

typedef struct moa_state {
    double budget; /* target mean density */
    int sink_tokens, sample_rows;
    /* the offline profile, kept across select() calls; key: the draw, mask and blocks */
    const float *key_q, *key_k;
    const void *key_mask;
    uint64_t key_seed;
    int key_bq, key_bk, key_n, key_h;
    int kmax;     /* spans 1 .. kmax key blocks (kmax = n_kblocks keeps everything) */
    double *mass; /* (heads, kmax + 1): M_h(k); index 0 unused */
    double *dens; /* (kmax + 1): one head's density at span k; < 0: not counted yet */
    double valid; /* pairs the base mask allows */
} moa_state;

enum { P_BUDGET = 0, P_SINK, P_ROWS, P_COUNT };

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

static int moa_init(void *state, const ab_params *p, const ab_shape *s)
{
    moa_state *st = state;
    (void)s;
    if (p->n < P_COUNT) {
        ab_set_error(state, "moa: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_BUDGET] > 0 && p->v[P_BUDGET] <= 1) || !(p->v[P_SINK] >= 0 && p->v[P_SINK] <= (1 << 24)) ||
        !(p->v[P_ROWS] >= 1 && p->v[P_ROWS] <= 65536)) {
        ab_set_error(state, "moa: budget in (0, 1], sink_tokens in [0, 2^24], sample_rows in [1, 65536]");
        return AB_EINVAL;
    }
    st->budget = p->v[P_BUDGET];
    st->sink_tokens = (int)p->v[P_SINK];
    st->sample_rows = (int)p->v[P_ROWS];
    return AB_OK;
}

static void moa_fini(void *state)
{
    moa_state *st = state;
    free(st->mass);
    free(st->dens);
    st->mass = st->dens = NULL;
}

/* The pattern of span k for query block qb: band key blocks [*lo, *hi] and
 * sink blocks [0, *ns) (ns <= lo: disjoint). */
static void pattern(const ab_layout *l, int sb, int qb, int k, int *lo, int *hi, int *ns)
{
    const int r0 = qb * l->block_q, r1 = imin(l->seq_len, (qb + 1) * l->block_q);
    const int kfirst = r0 / l->block_k, klast = (r1 - 1) / l->block_k;
    *lo = imax(0, kfirst - k + 1);
    *hi = l->causal ? klast : imin(l->n_kblocks - 1, klast + k - 1);
    *ns = imin(sb, *lo);
}

/* One profiled row i of head h of the held-out draw hp: out[k] for k = 1..K
 * is the fraction of the row's softmax (under the base mask mk) inside the
 * pattern of span k. s: (N) scores, bm: (n_kblocks + 1) scratch. */
static void row_profile(const ab_problem *hp, const ab_mask *mk, const ab_layout *l, int sb, int h, int i,
                        double *s, double *bm, double *out)
{
    const int N = l->seq_len, d = hp->s.head_dim, bk = l->block_k, nkb = l->n_kblocks, K = nkb;
    const float *q = hp->q + ((size_t)h * N + i) * d; /* (head_dim) */
    const float *kk = hp->k + (size_t)h * N * d;      /* (N, head_dim) */
    int lo, hi;
    ab_mask_span(mk, i, &lo, &hi);
    double mx = -INFINITY;
    for (int j = lo; j < hi; j++) {
        if (!mk->def->interval && !ab_mask_allows(mk, i, j)) {
            s[j] = -INFINITY;
            continue;
        }
        double acc = 0.0;
        for (int c = 0; c < d; c++) acc += (double)q[c] * kk[(size_t)j * d + c];
        s[j] = acc * hp->s.scale;
        mx = s[j] > mx ? s[j] : mx;
    }
    for (int b = 0; b <= nkb; b++) bm[b] = 0.0;
    for (int j = lo; j < hi && mx > -INFINITY; j++)
        if (s[j] > -INFINITY) bm[j / bk + 1] += exp(s[j] - mx);
    for (int b = 0; b < nkb; b++) bm[b + 1] += bm[b]; /* prefix sums: bm[b] = mass of blocks < b */
    const double tot = bm[nkb];
    for (int k = 1; k <= K; k++) {
        int blo, bhi, ns;
        pattern(l, sb, i / l->block_q, k, &blo, &bhi, &ns);
        /* dropped: blocks [ns, blo) and past the band; exactly 0 when nothing is dropped */
        const double drop = (bm[blo] - bm[ns]) + (bm[nkb] - bm[bhi + 1]);
        out[k] = tot > 0 ? 1.0 - drop / tot : 1.0;
    }
}

/* Fill st->mass from the held-out draw (and reset the density table). */
static int moa_profile(moa_state *st, const ab_problem *pb, const ab_layout *l, int sb)
{
    const ab_problem *hp = pb->heldout;
    const int H = l->heads, N = l->seq_len, K = l->n_kblocks, R = imin(st->sample_rows, N);
    const ab_mask mk = ab_shape_mask(&pb->s);
    free(st->mass);
    free(st->dens);
    st->mass = malloc((size_t)H * (K + 1) * sizeof *st->mass);
    st->dens = malloc((size_t)(K + 1) * sizeof *st->dens);
    double *rows = malloc((size_t)H * R * (K + 1) * sizeof *rows); /* (heads, rows, spans) */
    int rc = st->mass && st->dens && rows ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) {
#pragma omp parallel
        {
            double *s = malloc((size_t)N * sizeof *s), *bm = malloc((size_t)(K + 1) * sizeof *bm);
            if (!s || !bm) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < H * R; t++) {
                if (!s || !bm) continue;
                const int h = t / R, r = t % R;
                const int i = (int)(((int64_t)2 * r + 1) * N / (2 * R)); /* evenly spread rows */
                row_profile(hp, &mk, l, sb, h, i, s, bm, rows + (size_t)t * (K + 1));
            }
            free(s);
            free(bm);
        }
    }
    if (rc == AB_OK) {
        for (int h = 0; h < H; h++)
            for (int k = 1; k <= K; k++) {
                double m = 0.0;
                for (int r = 0; r < R; r++) m += rows[((size_t)h * R + r) * (K + 1) + k];
                st->mass[(size_t)h * (K + 1) + k] = m / R;
            }
        for (int k = 0; k <= K; k++) st->dens[k] = -1.0;
        double v = 0.0;
        for (int i = 0; i < N; i++) v += (double)ab_mask_row_count(&mk, i, 0, N);
        st->valid = v;
        st->kmax = K;
        st->key_q = pb->heldout->q;
        st->key_k = pb->heldout->k;
        st->key_seed = pb->heldout->seed;
        st->key_mask = pb->s.mask;
        st->key_bq = l->block_q;
        st->key_bk = l->block_k;
        st->key_n = N;
        st->key_h = H;
    } else {
        free(st->mass);
        free(st->dens);
        st->mass = st->dens = NULL;
    }
    free(rows);
    return rc;
}

/* One head's density at span k: kept pairs the base mask allows over all
 * it allows (memoised in st->dens). */
static double span_density(moa_state *st, const ab_layout *l, const ab_mask *mk, int sb, int k)
{
    if (st->dens[k] >= 0) return st->dens[k];
    const int N = l->seq_len, bk = l->block_k;
    double kept = 0.0;
    for (int qb = 0; qb < l->n_qblocks; qb++) {
        int lo, hi, ns;
        pattern(l, sb, qb, k, &lo, &hi, &ns);
        for (int i = qb * l->block_q; i < imin(N, (qb + 1) * l->block_q); i++)
            kept += (double)ab_mask_row_count(mk, i, lo * bk, imin(N, (hi + 1) * bk)) +
                    (double)(ns > 0 ? ab_mask_row_count(mk, i, 0, ns * bk) : 0);
    }
    return st->dens[k] = st->valid > 0 ? kept / st->valid : 1.0;
}

/* Head h's span at level m: the smallest k with M_h(k) >= m. */
static int span_at(const moa_state *st, int h, double m)
{
    const double *M = st->mass + (size_t)h * (st->kmax + 1);
    for (int k = 1; k <= st->kmax; k++)
        if (M[k] >= m) return k;
    return st->kmax;
}

static double level_density(moa_state *st, const ab_layout *l, const ab_mask *mk, int sb, double m)
{
    double s = 0.0;
    for (int h = 0; h < l->heads; h++) s += span_density(st, l, mk, sb, span_at(st, h, m));
    return s / l->heads;
}

static int moa_select(void *state, const ab_problem *pb, ab_layout *l)
{
    moa_state *st = state;
    const ab_problem *hp = pb->heldout;
    if (!hp || !hp->q || !hp->k || hp->s.seq_len != pb->s.seq_len || hp->s.heads != pb->s.heads ||
        hp->s.head_dim != pb->s.head_dim) {
        ab_set_error(state, "moa: needs a held-out draw of the task to profile (ab_problem.heldout): "
                            "none here (a task that ignores its seed, e.g. a trace, has no other draw)");
        return AB_EUNSUPPORTED;
    }
    const int H = l->heads, N = l->seq_len, bk = l->block_k;
    if (N <= 0 || H <= 0) return ab_layout_set_cost(l, 0, 0);
    const int sb = (int)(((int64_t)st->sink_tokens + bk - 1) / bk); /* sink tokens in whole key blocks */
    int rc = AB_OK;
    if (!st->mass || st->key_q != hp->q || st->key_k != hp->k || st->key_seed != hp->seed ||
        st->key_mask != (const void *)pb->s.mask || st->key_bq != l->block_q || st->key_bk != bk ||
        st->key_n != N || st->key_h != H)
        rc = moa_profile(st, pb, l, sb);
    if (rc == AB_ENOMEM) ab_set_error(state, "moa: out of memory");
    if (rc != AB_OK) return rc;

    /* the common mass level: highest m with mean density <= budget */
    const ab_mask mk = ab_shape_mask(&pb->s);
    double lo = 0.0, hi = 1.0;
    if (level_density(st, l, &mk, sb, 1.0) <= st->budget)
        lo = 1.0;
    else
        for (int it = 0; it < 64; it++) {
            const double mid = 0.5 * (lo + hi);
            if (level_density(st, l, &mk, sb, mid) <= st->budget)
                lo = mid;
            else
                hi = mid;
        }
    for (int h = 0; rc == AB_OK && h < H; h++) {
        const int k = span_at(st, h, lo);
        for (int qb = 0; rc == AB_OK && qb < l->n_qblocks; qb++) {
            int blo, bhi, ns;
            pattern(l, sb, qb, k, &blo, &bhi, &ns);
            rc = ab_layout_add_block_range(l, h, qb, blo, bhi + 1);
            if (rc == AB_OK && ns > 0) rc = ab_layout_add_block_range(l, h, qb, 0, ns);
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "moa: out of memory");
    if (rc != AB_OK) return rc;
    /* MoA's run-time selection is input-independent: the spans come from the
     * offline profile (our held-out draw, cached in the state like MoA's
     * per-model profile, not counted per call). Per call: the bisection of
     * the common mass level, 64 steps of a span look-up per head (K compares)
     * over the (H, K) mass table; the density table is memoised. */
    const int K = l->n_kblocks;
    return ab_layout_set_cost(l, 65.0 * H * K, 8.0 * H * (K + 1));
}

const ab_method ab_moa = {
    .abi = AB_ABI_VERSION,
    .family = "static",
    .name = "moa",
    .summary = "MoA proxy: per-head band spans from the attention-mass profile of a held-out draw, one "
               "common mass level bisected to the budget, + 64 sink tokens (not MoA's gradient profiler, "
               "nor its alpha+beta*N spans across lengths)",
    .reference = "MoA (Fu et al. 2024, arXiv 2406.14909; thu-nics/MoA), proxy of docs/spec/METHODS.md 2.8",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .heldout = 1,
    .params = {
        [P_BUDGET] = { .name = "budget", .def = 0.1, .min = 1e-4, .max = 1, .is_int = 0,
                       .help = "target mean density over heads (the common mass level is bisected to it)" },
        [P_SINK] = { .name = "sink_tokens", .def = 64, .min = 0, .max = 1 << 24, .is_int = 1,
                     .help = "initial tokens every head keeps (paper: 64), rounded up to whole key blocks" },
        [P_ROWS] = { .name = "sample_rows", .def = 64, .min = 1, .max = 65536, .is_int = 1,
                     .help = "rows per head of the held-out draw profiled (spread evenly over the sequence)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_BUDGET, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(moa_state),
    .init = moa_init,
    .select = moa_select,
    .run = NULL,
    .fini = moa_fini,
};
AB_REGISTER(ab_moa)
