/* moa.c — `moa`: a training-free proxy of MoA, Mixture of Sparse Attention
 * (Fu et al. 2024, "MoA: Mixture of Sparse Attention for Automatic Large
 * Language Model Compression", arXiv 2406.14909; thu-nics/MoA). MoA gives
 * every head its own sliding window (plus the initial "sink" tokens) with an
 * elastic span α_h + β_h·N found offline by profiling the model's attention
 * and searching under a density budget. Without a model to profile, this
 * proxy measures each head's locality on the problem itself:
 *   1. for `sample_rows` query rows spread over the second half of the
 *      sequence, the exact softmax row; the head's span need D_h = mean over
 *      the rows of the smallest distance whose window (plus the sink blocks)
 *      holds `mass` (0.9) of the row's attention;
 *   2. spans w_h = clamp(λ·D_h, block_k, N) with λ found by bisection so
 *      that the mean over heads of the band's modelled density equals
 *      `budget` — heads with more distant mass get longer spans;
 *   3. per head and query block, sink blocks plus a band of w_h / block_k
 *      key blocks ending at the diagonal (fractional counts dithered over
 *      query blocks), executed by the shared block-sparse kernel.
 * The sampled rows cost O(H · sample_rows · N · d), reported as select time.
 *
 * Density knob: `budget`, the target mean density; the measured density is
 * close to it (the model counts whole blocks exactly, up to the
 * block_q != block_k case) and monotone in it.
 */
#include "attnbench.h"
#include "methods/keep.h"

#include <math.h>
#include <stdlib.h>

typedef struct moa_state {
    double budget; /* target mean density */
    int sink_blocks;
    int sample_rows;
    double mass; /* fraction of a row's attention a span must hold */
} moa_state;

enum { P_BUDGET = 0, P_SINK, P_ROWS, P_MASS, P_COUNT };

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

static int moa_init(void *state, const ab_params *p, const ab_shape *s)
{
    moa_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "moa: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_BUDGET] > 0 && p->v[P_BUDGET] <= 1) || !(p->v[P_SINK] >= 0 && p->v[P_SINK] <= (1 << 20)) ||
        !(p->v[P_ROWS] >= 1 && p->v[P_ROWS] <= 4096) || !(p->v[P_MASS] > 0 && p->v[P_MASS] <= 1)) {
        ab_set_error(
            state,
            "moa: budget in (0, 1], sink_blocks in [0, 2^20], sample_rows in [1, 4096], mass in (0, 1]");
        return AB_EINVAL;
    }
    st->budget = p->v[P_BUDGET];
    st->sink_blocks = (int)p->v[P_SINK];
    st->sample_rows = (int)p->v[P_ROWS];
    st->mass = p->v[P_MASS];
    return AB_OK;
}

/* Smallest distance D such that keys within D of row i (plus keys < sink_end)
 * hold `mass` of the row's softmax. s: (N) scratch. */
static int row_span(const ab_problem *pb, int h, int i, int sink_end, double mass, float *s)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, nv = pb->s.causal ? i + 1 : N;
    const float *q = pb->q + ((size_t)h * N + i) * d; /* (head_dim) */
    const float *k = pb->k + (size_t)h * N * d;       /* (N, head_dim) */
    float mx = -INFINITY;
    for (int j = 0; j < nv; j++) {
        float acc = 0.0f;
        for (int c = 0; c < d; c++) acc += q[c] * k[(size_t)j * d + c];
        s[j] = acc * pb->s.scale;
        mx = s[j] > mx ? s[j] : mx;
    }
    double tot = 0.0, sink = 0.0;
    for (int j = 0; j < nv; j++) {
        s[j] = expf(s[j] - mx);
        tot += s[j];
        if (j < sink_end) sink += s[j];
    }
    const double need = mass * tot;
    double acc = sink;
    for (int dist = 0; dist < N; dist++) {
        const int a = i - dist, b = i + dist;
        if (a >= sink_end && a >= 0) acc += s[a];
        if (dist > 0 && b < nv && b >= sink_end) acc += s[b];
        if (acc >= need) return dist;
    }
    return N;
}

/* Expected kept causally valid pairs of a band of x key blocks (dithered:
 * floor or ceil) plus sinks, summed over query blocks; and all valid pairs. */
static double band_density(const ab_layout *l, int sink_blocks, double x)
{
    const int n = l->seq_len, bq = l->block_q, bk = l->block_k, nkb = l->n_kblocks;
    const double f = x - floor(x);
    double kept = 0.0, valid = 0.0;
    for (int qb = 0; qb < l->n_qblocks; qb++) {
        const int r0 = qb * bq, r1 = imin(n, (qb + 1) * bq);
        const int kfirst = r0 / bk, klast = (r1 - 1) / bk;
        for (int e = 0; e < 2; e++) {
            const int k = (int)floor(x) + e;
            const double wgt = e ? f : 1.0 - f;
            if (wgt == 0.0) continue;
            const int lo = imax(0, kfirst - k + 1) * bk;              /* first kept key of the band */
            const int hi = l->causal ? n : imin(n, (klast + k) * bk); /* band end (exclusive) */
            const int send = imin(imin(sink_blocks, nkb) * bk, lo);   /* sink keys outside the band */
            double p = 0.0;
            for (int i = r0; i < r1; i++) {
                const int top = l->causal ? i + 1 : hi;
                p += (top > lo ? top - lo : 0) + imin(send, top);
            }
            kept += wgt * p;
        }
        for (int i = r0; i < r1; i++) valid += l->causal ? i + 1 : n;
    }
    return valid > 0 ? kept / valid : 1.0;
}

static int moa_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const moa_state *st = state;
    const int H = l->heads, N = l->seq_len, bk = l->block_k;
    const int R = imin(st->sample_rows, imax(1, N - N / 2));
    const int sink_end = imin(st->sink_blocks * bk, N);
    double *need = calloc((size_t)H * R, sizeof *need); /* (heads, sample_rows) spans, tokens */
    double *span = malloc((size_t)H * sizeof *span);    /* (heads) */
    int rc = need && span ? AB_OK : AB_ENOMEM;

    if (rc == AB_OK && N > 0) {
#pragma omp parallel
        {
            float *s = malloc((size_t)N * sizeof *s); /* (N) one row's scores */
            if (!s) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < H * R; t++) {
                if (!s) continue;
                const int h = t / R, r = t % R;
                const int i = N / 2 + (int)((int64_t)r * (N - N / 2) / R);
                need[t] = row_span(pb, h, i, sink_end, st->mass, s);
            }
            free(s);
        }
    }
    if (rc == AB_OK) {
        /* D_h, then λ by bisection in log space on the modelled mean density */
        for (int h = 0; h < H; h++) {
            double m = 0.0;
            for (int r = 0; r < R; r++) m += need[(size_t)h * R + r];
            span[h] = m / R + 1.0;
        }
        double lo = -40.0, hi = 40.0; /* log λ */
        for (int it = 0; it < 80; it++) {
            const double mid = 0.5 * (lo + hi), lam = exp(mid);
            double dens = 0.0;
            for (int h = 0; h < H; h++) {
                const double w = fmin(fmax(lam * span[h], bk), (double)N + bk);
                dens += band_density(l, st->sink_blocks, w / bk);
            }
            if (dens / H < st->budget)
                lo = mid;
            else
                hi = mid;
        }
        const double lam = exp(hi);
        for (int h = 0; h < H; h++) span[h] = fmin(fmax(lam * span[h], bk), (double)N + bk) / bk; /* blocks */
    }
    for (int qb = 0; rc == AB_OK && qb < l->n_qblocks; qb++) {
        const int r0 = qb * l->block_q, r1 = imin(N, (qb + 1) * l->block_q);
        const int kfirst = r0 / bk, klast = (r1 - 1) / bk;
        for (int h = 0; rc == AB_OK && h < H; h++) {
            const int k = imax(1, mc_dither(span[h], qb));
            const int lo = imax(0, kfirst - k + 1),
                      hi = l->causal ? klast : imin(l->n_kblocks - 1, klast + k - 1);
            rc = ab_layout_add_block_range(l, h, qb, lo, hi + 1);
            const int sb = imin(st->sink_blocks, lo);
            if (rc == AB_OK && sb > 0) rc = ab_layout_add_block_range(l, h, qb, 0, sb);
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "moa: out of memory");
    free(need);
    free(span);
    return rc;
}

const ab_method ab_moa = {
    .abi = AB_ABI_VERSION,
    .name = "moa",
    .summary = "MoA proxy (training-free): per-head window spans from the head's measured locality, mean density = budget",
    .reference = "MoA (Fu et al. 2024, arXiv 2406.14909), training-free proxy",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_BUDGET] = { .name = "budget", .def = 0.1, .min = 1e-4, .max = 1, .is_int = 0,
                       .help = "target mean density over heads (spans scaled to meet it)" },
        [P_SINK] = { .name = "sink_blocks", .def = 1, .min = 0, .max = 1 << 20, .is_int = 1,
                     .help = "leading key blocks every head keeps (MoA's initial tokens)" },
        [P_ROWS] = { .name = "sample_rows", .def = 32, .min = 1, .max = 4096, .is_int = 1,
                     .help = "query rows per head profiled for locality (second half of the sequence)" },
        [P_MASS] = { .name = "mass", .def = 0.9, .min = 1e-3, .max = 1, .is_int = 0,
                     .help = "a head's span need: distance holding this fraction of a row's attention" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_BUDGET, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(moa_state),
    .init = moa_init,
    .select = moa_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_moa)
