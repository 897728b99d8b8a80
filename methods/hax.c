/* hax.c — `hax`: HAX, locality-sensitive Hashing Attention with sparse Key
 * Selection (Zhan, Zhao, Zhu, Tang 2025, "Overcoming Long-Context
 * Limitations of State-Space Models via Context-Dependent Sparse
 * Attention", arXiv 2507.00449; code DeepGraphLearning/HAX,
 * src/modeling_enhanced_mamba2.py, sparse_arch "sign_bin_lsh+key_selection"),
 * the paper that defines the joint-recall task. HAX is trained end to end
 * (an SSM with a sparse-attention branch and a learned key scorer); this is
 * the training-free proxy of docs/spec/METHODS.md 4.2. Per head, query i
 * (causal: keys j <= i) keeps:
 *   - LSH (as the official sign_bin_lsh): Q and K are centred by their mean
 *     over the sequence and each coordinate is divided by its L2 norm over
 *     the sequence (the official F.normalize(x) on (batch, length, dim)
 *     normalises dim 1, the length); `bits` seeded Gaussian hyperplanes H
 *     (head_dim x bits, from pb->seed and the head by splitmix64 and
 *     Box-Muller, see hax_head) give the bucket sum_t [x.H_t > 0] 2^t; the
 *     query keeps the b most recent keys of its bucket (lsh_sliding_window).
 *   - KS (key selection, official cumtopk): the b keys j <= i of highest
 *     importance u_j. HAX learns u with an MLP; the proxy uses METHODS.md
 *     4.2's training-free score, the column sum of the causal softmax of the
 *     last 64 queries (MInference's vertical estimate).
 *   - Local (METHODS.md 4.2 (c), not in the official HAX): the `window` keys
 *     before the query block and the block's own rows (so every row keeps
 *     its diagonal, which the official LSH + KS do not guarantee).
 * b = keys / 2: the official sparse_keys (64 in scripts/joint_recall.py)
 * split evenly between the two sources (sparse_keys // 2); num_hash = 8
 * bits there. The layout holds one key list per query block (harness
 * block_q): the union over its rows. Non-causal base masks: every key is a
 * candidate of every row (the official code is causal only) and the window
 * extends `window` keys past the block too.
 * Knob `keys` (fractional budgets dithered over query blocks by a
 * golden-ratio sequence): density rises with it. Token layout.
 * Cost O(N d (bits + 64) + N log N) per head, plus O(N + block_q * b) per
 * query block. The KS logits go key tile by key tile (a tile of K
 * transposed stays in cache across the 64 queries), in double vectors (each
 * fp32 product exact in double, as before).
 * Stated cost (ab_layout_set_cost), per head, S = the keys the KS queries
 * see (about 64 N causal): FLOPs = 2 N d (6 + 2 bits) (centre, normalise,
 * project Q and K) + S (2d + 7) (logits, softmax, column sums) + 4 N log2 N
 * (two sorts, the Fenwick pass) + N (log2 N + keys) (bucket search and
 * takes); bytes = 8 N d (Q and K in fp32) + 16 S (the logits in double
 * written and read back). At N = 16K, d = 64, bits = 8: about 0.55 % of
 * dense (64 / N of it is the KS logits).
 */
#include "attnbench.h"
#include "methods/keep.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#include <sleef.h>
#endif

enum { P_KEYS = 0, P_BITS, P_WINDOW, P_COUNT };

#define KS_QUERIES 64 /* queries whose softmax columns score the keys */

typedef struct hax_state {
    double keys; /* keys per query from LSH + KS, half each (density knob) */
    int bits;    /* sign-bit hash length (num_hash) */
    int window;  /* local keys before each query block */
} hax_state;

/* One standard normal draw from the splitmix64 stream *s (Box-Muller, the
 * cosine branch, two 53-bit uniforms in (0, 1)). */
static double gauss(uint64_t *s)
{
    *s = mc_mix64(*s);
    const double u1 = ((*s >> 11) + 0.5) * 0x1.0p-53;
    *s = mc_mix64(*s);
    const double u2 = ((*s >> 11) + 0.5) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static int hax_init(void *state, const ab_params *p, const ab_shape *s)
{
    hax_state *st = state;
    (void)s;
    if (p->n < P_COUNT) {
        ab_set_error(state, "hax: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_KEYS] >= 1 && p->v[P_KEYS] <= (1 << 24))) {
        ab_set_error(state, "hax: keys=%g outside [1, 2^24]", p->v[P_KEYS]);
        return AB_EINVAL;
    }
    if (!(p->v[P_BITS] >= 1 && p->v[P_BITS] <= 30) || !(p->v[P_WINDOW] >= 0 && p->v[P_WINDOW] <= (1 << 24))) {
        ab_set_error(state, "hax: bits must be in [1, 30], window in [0, 2^24]");
        return AB_EINVAL;
    }
    st->keys = p->v[P_KEYS];
    st->bits = (int)p->v[P_BITS];
    st->window = (int)p->v[P_WINDOW];
    return AB_OK;
}

/* double vectors of one register (8 lanes under AVX-512, else 4: a wider
 * GNU vector than the ISA's registers is split through the stack) and the
 * floats that widen into one */
#if defined(__AVX512F__)
#define HX_VL   8
#define HX_EXPD Sleef_expd8_u10avx512f /* the KS softmax's exp, one register */
#define HX_MD   __m512d
#else
#define HX_VL 4
#if defined(__AVX2__)
#define HX_EXPD Sleef_expd4_u10avx2
#define HX_MD   __m256d
#endif
#endif
typedef double vd __attribute__((vector_size(HX_VL * sizeof(double))));
typedef float vfh __attribute__((vector_size(HX_VL * sizeof(float))));

/* Sign-bit buckets of the rows of x (N, d): centre each coordinate by its
 * mean over the rows, divide it by its L2 norm over the rows (eps 1e-12, as
 * F.normalize), project on H (d, bits). In double throughout. */
static int sign_buckets(const float *x, int N, int d, const double *H, int bits, double *mu, double *nrm,
                        int32_t *out)
{
    enum { SB_ROWS = 4 };
    const int nw = (bits + HX_VL - 1) / HX_VL;
    vd *Hv = aligned_alloc(sizeof(vd), (size_t)d * nw * sizeof *Hv); /* H, bits padded to HX_VL */
    double *xs = malloc((size_t)SB_ROWS * d * sizeof *xs);           /* the rows centred and scaled */
    if (!Hv || !xs) {
        free(Hv);
        free(xs);
        return AB_ENOMEM;
    }
    for (int c = 0; c < d; c++)
        for (int t = 0; t < nw * HX_VL; t++)
            Hv[(size_t)c * nw + t / HX_VL][t % HX_VL] = t < bits ? H[(size_t)c * bits + t] : 0.0;
    for (int c = 0; c < d; c++) mu[c] = nrm[c] = 0.0;
    for (int i = 0; i < N; i++)
        for (int c = 0; c < d; c++) mu[c] += x[(size_t)i * d + c];
    for (int c = 0; c < d; c++) mu[c] /= N;
    for (int i = 0; i < N; i++)
        for (int c = 0; c < d; c++) {
            const double v = x[(size_t)i * d + c] - mu[c];
            nrm[c] += v * v;
        }
    for (int c = 0; c < d; c++) nrm[c] = fmax(sqrt(nrm[c]), 1e-12);
    /* bits in vector lanes: the same products and per-bit order of sums as
     * a scalar loop; SB_ROWS rows at a time, so their sums are independent
     * chains (one row's chain of d dependent adds left the FP units idle) */
    for (int i0 = 0; i0 < N; i0 += SB_ROWS) {
        const int nr = N - i0 < SB_ROWS ? N - i0 : SB_ROWS;
        vd pv[SB_ROWS][32 / HX_VL] = { { { 0 } } }; /* bits <= 30 < 32 */
        for (int r = 0; r < SB_ROWS; r++) {         /* the rows centred and scaled, vectorised over c */
            const float *xr = x + (size_t)(i0 + (r < nr ? r : 0)) * d;
            double *vr = xs + (size_t)r * d;
            for (int c = 0; c < d; c++) vr[c] = (xr[c] - mu[c]) / nrm[c];
        }
        for (int c = 0; c < d; c++) {
            const vd *hr = Hv + (size_t)c * nw;
            for (int r = 0; r < SB_ROWS; r++) {
                const double v = xs[(size_t)r * d + c];
                for (int t = 0; t < nw; t++) pv[r][t] += v * hr[t];
            }
        }
        for (int r = 0; r < nr; r++) {
            double proj[32];
            memcpy(proj, pv[r], sizeof pv[r]);
            int32_t b = 0;
            for (int t = 0; t < bits; t++) b |= (int32_t)(proj[t] > 0) << t;
            out[i0 + r] = b;
        }
    }
    free(Hv);
    free(xs);
    return AB_OK;
}

/* Logits of query qi (d) against keys [0, kc) in double, lg[j] = scale *
 * sum_c qi[c] kt[c][j]: kt is K transposed (d, ldk) in fp32, zero past N,
 * ldk a multiple of KT. Each fp32 product is exact in double; tiles of KT
 * keys in double vectors, as GEMV. */
enum { KT = 32, KV = KT / HX_VL, KS_QB = 4 };
/* a product of two floats is exact in double, so a fused multiply-add gives
 * the same sums as the multiply and add: let the compiler fuse them */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
static void ks_logits(const float *qi, int nqi, const float *kt, int ldk, int d, int j, const int *kc,
                      double scale, double *lg, size_t ldl)
{
    /* KS_QB queries at a time: each widened key vector serves all of them */
    vd a[KS_QB][KV];
    for (int r = 0; r < KS_QB; r++)
        for (int u = 0; u < KV; u++) a[r][u] = (vd){ 0 };
    for (int c = 0; c < d; c++) {
        const float *kr = kt + (size_t)c * ldk + j;
        vd kv[KV];
#pragma GCC unroll 8
        for (int u = 0; u < KV; u++) {
            vfh k;
            memcpy(&k, kr + u * HX_VL, sizeof k);
            kv[u] = __builtin_convertvector(k, vd);
        }
#pragma GCC unroll 4
        for (int r = 0; r < KS_QB; r++) {
            const double x = qi[(size_t)(r < nqi ? r : 0) * d + c];
#pragma GCC unroll 8
            for (int u = 0; u < KV; u++) a[r][u] += x * kv[u];
        }
    }
    for (int r = 0; r < nqi; r++) {
        double t[KT];
        memcpy(t, a[r], sizeof a[r]);
        for (int u = 0; u < KT && j + u < kc[r]; u++) lg[(size_t)r * ldl + j + u] = t[u] * scale;
    }
}
#pragma GCC pop_options

/* A key with its bucket, or with its importance. */
typedef struct bkey {
    int32_t b, j;
} bkey;

static int cmp_bkey(const void *pa, const void *pb)
{
    const bkey *a = pa, *b = pb;
    if (a->b != b->b) return (a->b > b->b) - (a->b < b->b);
    return (a->j > b->j) - (a->j < b->j);
}

typedef struct ukey {
    double u;
    int32_t j;
} ukey;

/* Higher importance first, then lower position (NaN last). */
static int cmp_ukey(const void *pa, const void *pb)
{
    const ukey *a = pa, *b = pb;
    if (a->u != b->u) return a->u > b->u ? -1 : 1;
    return (a->j > b->j) - (a->j < b->j);
}

/* Selection for head h, added to l one query block at a time. */
static int hax_head(const hax_state *st, const ab_problem *pb, ab_layout *l, int h)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal, bits = st->bits;
    const int bq = l->block_q, nqb = l->n_qblocks;
    const float *q = pb->q + (size_t)h * N * d;           /* (N, d) */
    const float *k = pb->k + (size_t)h * N * d;           /* (N, d) */
    double *H = malloc((size_t)d * bits * sizeof *H);     /* (d, bits) */
    double *mu = malloc((size_t)d * sizeof *mu);          /* (d) */
    double *nrm = malloc((size_t)d * sizeof *nrm);        /* (d) */
    int32_t *hq = malloc((size_t)N * sizeof *hq);         /* (N) query buckets */
    int32_t *hk = malloc((size_t)N * sizeof *hk);         /* (N) key buckets */
    bkey *by = malloc((size_t)N * sizeof *by);            /* (N) keys by (bucket, position) */
    double *u = calloc((size_t)N, sizeof *u);             /* (N) key importance */
    ukey *rk = malloc((size_t)N * sizeof *rk);            /* (N) keys by importance */
    int32_t *rank = malloc((size_t)N * sizeof *rank);     /* (N) rank of key j */
    int32_t *fen = calloc((size_t)N + 1, sizeof *fen);    /* (N + 1) Fenwick tree on ranks */
    int32_t *before = malloc((size_t)N * sizeof *before); /* (N) #{j' < j ranked before j} */
    int32_t *stamp = malloc((size_t)N * sizeof *stamp);   /* (N) last block that took key j */
    int32_t *keys = malloc((size_t)N * sizeof *keys);     /* (N) one block's keys */
    const int ldk = (N + KT - 1) / KT * KT + KT;      /* + KT: no power-of-two stride (L1 set conflicts) */
    float *kt = malloc((size_t)d * ldk * sizeof *kt); /* (d, ldk) K transposed */
    double *lgall = malloc((size_t)(N < KS_QUERIES ? N : KS_QUERIES) * ldk * sizeof *lgall); /* logits */
    int rc =
        (H && mu && nrm && hq && hk && by && u && rk && rank && fen && before && stamp && keys && kt && lgall)
            ? AB_OK
            : AB_ENOMEM;
    if (rc == AB_OK) {
        /* hyperplanes: the splitmix64 stream of seed and head, (d, bits)
         * row-major, bits fastest */
        uint64_t s = mc_mix64(pb->seed ^ mc_mix64(0x4841580000000000ull + (uint64_t)h));
        for (size_t t = 0; t < (size_t)d * bits; t++) H[t] = gauss(&s);
        if (sign_buckets(q, N, d, H, bits, mu, nrm, hq) != AB_OK ||
            sign_buckets(k, N, d, H, bits, mu, nrm, hk) != AB_OK)
            rc = AB_ENOMEM;
    }
    if (rc == AB_OK) {
        for (int j = 0; j < N; j++) by[j] = (bkey){ hk[j], j };
        qsort(by, (size_t)N, sizeof *by, cmp_bkey);
        /* KS importance: column sums of the last KS_QUERIES queries' softmax */
        for (int j0 = 0; j0 < ldk; j0 += KT) /* transpose in tiles of KT keys */
            for (int c = 0; c < d; c++) {
                float *o = kt + (size_t)c * ldk;
                for (int j = j0; j < j0 + KT; j++) o[j] = j < N ? k[(size_t)j * d + c] : 0.0f;
            }
        /* the logits of the last KS_QUERIES queries, key tile by key tile
         * (the tile of kt stays in cache across the queries) */
        const int i0 = N - KS_QUERIES > 0 ? N - KS_QUERIES : 0;
        for (int j = 0; j < N; j += KT)
            for (int i = i0; i < N;) {
                int kc[KS_QB], nqi = 0; /* the queries from i that see key j */
                while (nqi < KS_QB && i + nqi < N && (!causal || j < i + nqi + 1)) {
                    kc[nqi] = causal ? i + nqi + 1 : N;
                    nqi++;
                }
                if (nqi == 0) {
                    i++;
                    continue;
                }
                ks_logits(q + (size_t)i * d, nqi, kt, ldk, d, j, kc, pb->s.scale,
                          lgall + (size_t)(i - i0) * ldk, ldk);
                i += nqi;
            }
        for (int i = i0; i < N; i++) {
            const int kc = causal ? i + 1 : N;
            double mx = -INFINITY, sum = 0.0;
            double *lg = lgall + (size_t)(i - i0) * ldk;
            for (int j = 0; j < kc; j++) mx = lg[j] > mx ? lg[j] : mx;
            if (!isfinite(mx)) continue;
            int j = 0;
#if defined(HX_EXPD)
            { /* exp HX_VL at a time (SLEEF, 1.0 ulp); lanes summed by halving */
                vd acc = { 0 };
                for (; j + HX_VL <= kc; j += HX_VL) {
                    vd x;
                    memcpy(&x, lg + j, sizeof x);
                    const vd e = (vd)HX_EXPD((HX_MD)(x - mx));
                    memcpy(lg + j, &e, sizeof e);
                    acc += e;
                }
                double lanes[HX_VL];
                memcpy(lanes, &acc, sizeof lanes);
                for (int w = HX_VL / 2; w >= 1; w /= 2)
                    for (int t = 0; t < w; t++) lanes[t] += lanes[t + w];
                sum = lanes[0];
            }
#endif
            for (; j < kc; j++) sum += (lg[j] = exp(lg[j] - mx));
            for (j = 0; j < kc; j++) u[j] += lg[j] / sum;
        }
        for (int j = 0; j < N; j++) rk[j] = (ukey){ isnan(u[j]) ? -INFINITY : u[j], j };
        qsort(rk, (size_t)N, sizeof *rk, cmp_ukey);
        for (int r = 0; r < N; r++) rank[rk[r].j] = r;
        for (int j = 0; j < N; j++) { /* keys before j ranked before j */
            int c = 0;
            for (int x = rank[j]; x > 0; x -= x & -x) c += fen[x];
            before[j] = c;
            for (int x = rank[j] + 1; x <= N; x += x & -x) fen[x]++;
        }
        for (int j = 0; j < N; j++) stamp[j] = -1;
    }
    for (int qb = 0; rc == AB_OK && qb < nqb; qb++) {
        const int r0 = qb * bq, r1 = r0 + bq < N ? r0 + bq : N;
        const int b = mc_dither(st->keys / 2, qb); /* per source and query */
        int n = 0;
#define TAKE(j)               \
    do {                      \
        if (stamp[j] != qb) { \
            stamp[j] = qb;    \
            keys[n++] = (j);  \
        }                     \
    } while (0)
        /* local: the block's rows and `window` keys before (non-causal: and
         * after) them */
        {
            const int lo = r0 - st->window > 0 ? r0 - st->window : 0;
            const int hi = causal ? r1 : (r1 + st->window < N ? r1 + st->window : N);
            for (int j = lo; j < hi; j++) TAKE(j);
        }
        for (int i = r0; b > 0 && i < r1; i++) {
            /* LSH: the b most recent keys j <= i (non-causal: any j) in
             * query i's bucket; `by` is sorted by (bucket, position) */
            const int last = causal ? i : N - 1;
            int a = 0, z = N; /* first entry after (hq[i], last) */
            while (a < z) {
                const int m = a + (z - a) / 2;
                if (by[m].b < hq[i] || (by[m].b == hq[i] && by[m].j <= last))
                    a = m + 1;
                else
                    z = m;
            }
            for (int t = a - 1, c = 0; t >= 0 && by[t].b == hq[i] && c < b; t--, c++) TAKE(by[t].j);
        }
        if (b > 0) {
            /* KS: the union over the rows i of the top b keys of [0, i]: the
             * top b of [0, r0], and each later key of the block that ranks
             * among the top b of its own prefix */
            const int first = causal ? r0 : N - 1;
            for (int r = 0, c = 0; r < N && c < b; r++)
                if (rk[r].j <= first) {
                    TAKE(rk[r].j);
                    c++;
                }
            for (int j = r0 + 1; causal && j < r1; j++)
                if (before[j] < b) TAKE(j);
        }
#undef TAKE
        rc = ab_layout_add_tokens(l, h, qb, keys, n);
    }
    free(H);
    free(mu);
    free(nrm);
    free(hq);
    free(hk);
    free(by);
    free(u);
    free(rk);
    free(rank);
    free(fen);
    free(before);
    free(stamp);
    free(keys);
    free(kt);
    free(lgall);
    return rc;
}

static int hax_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const hax_state *st = state;
    const int H = l->heads, N = pb->s.seq_len, d = pb->s.head_dim;
    int rc = AB_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int h = 0; h < H; h++) {
        const int r = hax_head(st, pb, l, h);
        if (r != AB_OK) {
#pragma omp atomic write
            rc = r;
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "hax: out of memory");
    if (rc != AB_OK) return rc;
    /* cost: see the header comment */
    double kcs = 0.0; /* keys seen by the KS queries */
    for (int i = N - KS_QUERIES > 0 ? N - KS_QUERIES : 0; i < N; i++) kcs += pb->s.causal ? i + 1 : N;
    const double lg = N > 1 ? log2((double)N) : 1.0;
    const double flops = (double)H * (2.0 * N * d * (6.0 + 2.0 * st->bits) + kcs * (2.0 * d + 7.0) +
                                      4.0 * N * lg + N * (lg + st->keys));
    const double bytes = (double)H * (8.0 * N * d + 16.0 * kcs);
    return ab_layout_set_cost(l, flops, bytes);
}

const ab_method ab_hax = {
    .abi = AB_ABI_VERSION,
    .family = "hashing",
    .name = "hax",
    .summary = "HAX proxy: sign-bit LSH bucket-mates + key selection by last-64-query softmax mass + local window (token)",
    .reference = "HAX (Zhan et al. 2025, arXiv 2507.00449; DeepGraphLearning/HAX)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_KEYS] = { .name = "keys", .def = 64, .min = 1, .max = 1 << 24, .is_int = 0,
                     .help = "keys per query from LSH and key selection, half each (official sparse_keys)" },
        [P_BITS] = { .name = "bits", .def = 8, .min = 1, .max = 30, .is_int = 1,
                     .help = "sign-bit hash length (official num_hash)" },
        [P_WINDOW] = { .name = "window", .def = 64, .min = 0, .max = 1 << 24, .is_int = 1,
                       .help = "local keys before each query block's own rows (always kept)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_KEYS, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(hax_state),
    .init = hax_init,
    .select = hax_select,
    .run = NULL, /* gather kernel */
    .fini = NULL,
};
AB_REGISTER(ab_hax)
