/* hip.c — `hip`: HiP, Hierarchically Pruned attention (Lee et al. 2024,
 * "HiP Attention: Sparse Sub-Quadratic Attention with Hierarchical
 * Attention Pruning", arXiv 2406.09827; code DeepAuto-AI/hip-attention).
 *
 * Training-free top-k key estimation in O(N log N), as the mask estimation
 * of HiP v1.1 (src/hip_attn/v1_1/attention2_draft_prefetch.py: the
 * HiPAttentionArgs defaults sample_method "center", branch_method "half";
 * kernels masking_iteration_draft_cuda_initialize, _dup_and_score,
 * _partial_softmax, _argsort, _gather; block_sparse_attention for what is
 * attended). Per query block of block_q rows [r0, r1), in key blocks of
 * block_k tokens (HiP's block_size_k, 2):
 *  - candidates: the keys [sinks, r1 - window) (HiP attends the sink tokens
 *    and the sliding window anyway, so the search skips them), B blocks of
 *    block_k from key `sinks` on; m = k / block_k branches (HiP: mask_k /
 *    block_size_k). B <= m: every candidate block.
 *  - initial branches (initialize): branch t starts at
 *    floor(floor(B / m * t) / step) * step (B / m * t in float32, clipped
 *    to B), step = ceil(2^floor(log2 B) / m), and ends where t + 1 starts
 *    (branches aligned to a power-of-two grid; empty ones drop out).
 *  - rounds, while the largest initial branch, halved once per round, is
 *    above 1 (the kernel's max_group_size): every branch [s, s + g) splits
 *    into [s, s + g/2) and [s + g/2, s + g) (an empty child drops out, so a
 *    one-block branch goes on as itself); each child [c, c + n) is scored
 *    by its centre key block c + n/2: the largest q_i . k_j over that
 *    block's keys j and over every stride_q-th query of the block (rows
 *    r0 + stride_q - 1 + t stride_q, HiP's block_stride_q), counting a pair
 *    only if j <= i - window (the scoring kernel's causal sliding-window
 *    exclusion); the m best children survive (ties: the lower start).
 *  - kept: the surviving blocks' keys, the sinks [0, sinks) and the sliding
 *    window of the block's rows ((i - window, i] for each row i, so
 *    (r0 - window, r1) for the block); HiP's attention lets row i use a
 *    selected key only if j <= i - window, which the per-block union
 *    covers. Token layout, one row per query block.
 * Re-derived in NumPy in tests/rederive/methods/hip.py.
 *
 * Defaults: block_q 32, block_k 2, k 512 (the paper's runs:
 * docs/REPRODUCE.md, --k 512 --block_size_q 32 --block_size_k 2),
 * stride_q 2 and sinks 16 (HiPAttentionArgs). Deviations, on purpose:
 *  - window defaults to 32, not HiPAttentionArgs' 256: a 256-key band alone
 *    is a 0.25-0.45 density floor at N = 1-2K (set window = 256 per config
 *    for the official value at long N);
 *  - the official ranking is an argsort of bfloat16 sigmoids of bfloat16
 *    scores (ties of saturated sigmoids fall in the sort's order); we rank
 *    the float scores, ties to the lower start; a logit of exactly 0, which
 *    the official kernel takes for padding, counts as a logit here;
 *  - the knob k may be fractional: k / block_k branches, dithered over
 *    query blocks by the golden-ratio sequence (keep.h);
 *  - under a base mask the candidates start at the block's first visible
 *    key if that is after the sinks (blocks counted from there);
 *  - non-causal (HiP requires window = sinks = 0 there): every visible key
 *    is a candidate, no pair is excluded, and the sinks and the block's own
 *    rows are kept.
 * Cost O(N / block_q · k · log(N / k) · block_q / stride_q · d) per head.
 * Each round is GEMM-shaped when block_q / stride_q fits two vectors (32
 * under AVX-512, 16 under AVX2): the centre blocks' keys of all children in
 * tiles of keys x the scoring queries in the lanes, a masked lane max per
 * key; the top m by a branch-free quickselect on 64-bit rank keys, no sort.
 * Stated cost (ab_layout_set_cost), counted as the rounds run: per scored
 * key and scoring query 2d + 1 FLOPs (dot product, masked max), per round
 * nc log2 nc for the top-m of its nc children; bytes = the scoring query
 * rows and K once per head in fp32 (each datum once, docs/selectors.md;
 * until 2026-12-06 every round of every query block counted the key rows
 * it scored, 0.10 of dense at N = 16K). At the defaults (k 512, block_q 32,
 * block_k 2, stride_q 2) this is about 0.156 of dense at N = 8K.
 */
#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/vecf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { P_K = 0, P_SINKS, P_BLOCKQ, P_BLOCKK, P_STRIDEQ, P_WINDOW, P_COUNT };

typedef struct hip_state {
    double k;    /* keys per query block (density knob) */
    int sinks;   /* leading keys always kept (HiP's sink_token_size) */
    int block_q; /* query rows per block (HiP's block_size_q) */
    int block_k; /* keys per key block of the search (HiP's block_size_k) */
    int stride;  /* every stride-th query scores (HiP's block_stride_q) */
    int window;  /* sliding window per row (HiP's sliding_window_size) */
} hip_state;

/* A branch: key blocks [a, a + g) with the score of its centre block. */
typedef struct branch {
    float s;
    int32_t a, g;
} branch;

/* A child's rank as one unsigned key: the score's bits mapped to an
 * order-preserving unsigned (a zero's sign dropped: before() sees +0 ==
 * -0), then the start reversed, so key(x) > key(y) exactly when x ranks
 * before y. Scores are never NaN (score_keys and block_score drop NaN). */
static inline uint64_t rank_key(float s, int32_t a)
{
    s += 0.0f; /* -0 -> +0 */
    uint32_t u;
    memcpy(&u, &s, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint32_t)(INT32_MAX - a);
}

/* Reorder x[0, n) (distinct keys) so that its first k entries are the k
 * largest, unordered: quickselect whose partition is branch-free (every
 * key is written to both ends of tmp (n) and the end it belongs to
 * advances), where keep.h's comparator quickselect on branch structs
 * mispredicted about every other compare. */
static void top_keys(uint64_t *x, uint64_t *tmp, int n, int k)
{
    int lo = 0, hi = n; /* x[0, lo) beat x[lo, n); the k-th is in [lo, hi) */
    while (hi - lo > 1 && k > lo && k < hi) {
        const uint64_t p0 = x[lo], p1 = x[lo + (hi - lo) / 2], p2 = x[hi - 1];
        const uint64_t mn = p0 < p1 ? p0 : p1, mx = p0 < p1 ? p1 : p0;
        const uint64_t piv = p2 < mn ? mn : p2 > mx ? mx : p2; /* median of three */
        int a = lo, b = hi;
        for (int i = lo; i < hi; i++) {
            const uint64_t v = x[i];
            tmp[a] = v;
            tmp[b - 1] = v;
            a += v > piv;
            b -= v < piv;
        }
        tmp[a] = piv; /* distinct keys: [a, b) is the pivot alone */
        memcpy(x + lo, tmp + lo, (size_t)(hi - lo) * sizeof *x);
        if (k <= a)
            hi = a;
        else
            lo = a + 1;
    }
}

static int hip_init(void *state, const ab_params *p, const ab_shape *s)
{
    hip_state *st = state;
    if (p->n < P_COUNT || !(p->v[P_K] >= 1 && p->v[P_K] <= (1 << 24)) ||
        !(p->v[P_SINKS] >= 0 && p->v[P_SINKS] <= (1 << 20)) ||
        !(p->v[P_BLOCKQ] >= 1 && p->v[P_BLOCKQ] <= 4096) ||
        !(p->v[P_BLOCKK] >= 1 && p->v[P_BLOCKK] <= 4096) ||
        !(p->v[P_STRIDEQ] >= 1 && p->v[P_STRIDEQ] <= p->v[P_BLOCKQ]) ||
        !(p->v[P_WINDOW] >= 1 && p->v[P_WINDOW] <= (1 << 24))) {
        ab_set_error(state,
                     "hip: k must be in [1, 2^24], sinks in [0, 2^20], block_q and block_k in [1, 4096], "
                     "stride_q in [1, block_q], window in [1, 2^24]");
        return AB_EINVAL;
    }
    st->k = p->v[P_K];
    st->sinks = (int)p->v[P_SINKS];
    st->block_q = (int)p->v[P_BLOCKQ];
    st->block_k = (int)p->v[P_BLOCKK];
    st->stride = (int)p->v[P_STRIDEQ];
    st->window = (int)p->v[P_WINDOW];
    return AB_OK;
}

/* Score of the key block at key j0 (keys [j0, min(j0 + bk, N))): the largest
 * logit over the nr scoring queries, qt (d, nr) transposed, rows[i] their
 * positions; under causal a pair counts only if key <= row - window. -inf
 * when no pair counts. acc (nr). */
static float block_score(const float *k, const float *qt, const int *rows, float *acc, int d, int nr, int j0,
                         int j1, int causal, int window)
{
    float mx = -INFINITY;
    for (int j = j0; j < j1; j++) {
        const float *kr = k + (size_t)j * d;
        for (int i = 0; i < nr; i++) acc[i] = 0.0f;
        for (int c = 0; c < d; c++) {
            const float kc = kr[c];
            const float *qr = qt + (size_t)c * nr;
            for (int i = 0; i < nr; i++) acc[i] += kc * qr[i];
        }
        for (int i = 0; i < nr; i++)
            if ((!causal || j <= rows[i] - window) && acc[i] > mx) mx = acc[i]; /* NaN never wins */
    }
    return mx;
}

/* Float vectors of VW lanes (methods/vecf.h): the scoring queries of a
 * block sit in the lanes of one vector when nr <= VW, of two when nr <=
 * 2 VW (the defaults' 16 queries under AVX2: until 2026-12-07 such a build
 * took block_score's scalar loop, 4x slower than the lanes). */
typedef int vi __attribute__((vector_size(VW * sizeof(int))));
enum { KU = 8, KU2 = 6 }; /* keys per register tile: one vector of queries, two */

/* acc[u] = sum_c qv[c] kr_u[c] for the KU = 8 key rows: a function of its
 * own, so that the eight row pointers stay in registers (inlined into
 * score_keys, GCC kept five of them on the stack and reloaded them on
 * every c: hip's select() ran load-bound). */
_Static_assert(KU == 8, "score_tile takes eight rows");
static __attribute__((noinline)) void score_tile(const vf *qv, int d, const float *k0, const float *k1,
                                                 const float *k2, const float *k3, const float *k4,
                                                 const float *k5, const float *k6, const float *k7, vf *acc)
{
    vf a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 }, a4 = { 0 }, a5 = { 0 }, a6 = { 0 }, a7 = { 0 };
    for (int c = 0; c < d; c++) {
        const vf x = qv[c];
        a0 = v_fma(x, v_splat(k0[c]), a0);
        a1 = v_fma(x, v_splat(k1[c]), a1);
        a2 = v_fma(x, v_splat(k2[c]), a2);
        a3 = v_fma(x, v_splat(k3[c]), a3);
        a4 = v_fma(x, v_splat(k4[c]), a4);
        a5 = v_fma(x, v_splat(k5[c]), a5);
        a6 = v_fma(x, v_splat(k6[c]), a6);
        a7 = v_fma(x, v_splat(k7[c]), a7);
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
    acc[4] = a4;
    acc[5] = a5;
    acc[6] = a6;
    acc[7] = a7;
}

/* The same for two vectors of queries, qv (d, 2), and KU2 = 6 key rows:
 * acc[2 u + v] = sum_c qv[2 c + v] kr_u[c]; lane by lane the chains of
 * score_tile (one FMA per c, in order), so a query's scores do not depend
 * on how many lanes the build has. Twelve accumulators: 4 rows ran 20 %
 * slower on Zen 3 (AVX2, 16 registers). */
_Static_assert(KU2 == 6 && 2 * KU2 >= KU, "score_tile2 takes six rows");
static __attribute__((noinline)) void score_tile2(const vf *qv, int d, const float *k0, const float *k1,
                                                  const float *k2, const float *k3, const float *k4,
                                                  const float *k5, vf *acc)
{
    vf a0 = { 0 }, b0 = { 0 }, a1 = { 0 }, b1 = { 0 }, a2 = { 0 }, b2 = { 0 }, a3 = { 0 }, b3 = { 0 };
    vf a4 = { 0 }, b4 = { 0 }, a5 = { 0 }, b5 = { 0 };
    for (int c = 0; c < d; c++) {
        const vf x = qv[2 * c], y = qv[2 * c + 1];
        vf t = v_splat(k0[c]);
        a0 = v_fma(x, t, a0);
        b0 = v_fma(y, t, b0);
        t = v_splat(k1[c]);
        a1 = v_fma(x, t, a1);
        b1 = v_fma(y, t, b1);
        t = v_splat(k2[c]);
        a2 = v_fma(x, t, a2);
        b2 = v_fma(y, t, b2);
        t = v_splat(k3[c]);
        a3 = v_fma(x, t, a3);
        b3 = v_fma(y, t, b3);
        t = v_splat(k4[c]);
        a4 = v_fma(x, t, a4);
        b4 = v_fma(y, t, b4);
        t = v_splat(k5[c]);
        a5 = v_fma(x, t, a5);
        b5 = v_fma(y, t, b5);
    }
    acc[0] = a0;
    acc[1] = b0;
    acc[2] = a1;
    acc[3] = b1;
    acc[4] = a2;
    acc[5] = b2;
    acc[6] = a3;
    acc[7] = b3;
    acc[8] = a4;
    acc[9] = b4;
    acc[10] = a5;
    acc[11] = b5;
}

/* The largest of the lanes of a where ok is set and a is not NaN (NaN
 * never wins); -inf if none: an exact max, so the lanes' order is moot. */
static inline float lane_max(vf a, vi ok)
{
    const vi ninf = (vi){ 0 } + (int)0xff800000u; /* -inf bits */
    ok &= a == a;
    vi bits;
    memcpy(&bits, &a, sizeof bits);
    bits = (bits & ok) | (ninf & ~ok);
    vf x;
    memcpy(&x, &bits, sizeof x);
#if defined(__AVX512F__)
    return _mm512_reduce_max_ps(x);
#else
    float mx = x[0];
    for (int i = 1; i < VW; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
#endif
}

/* GEMM-shaped scoring of one round: out[t] = the largest logit of keys
 * kj[t] over the nr (<= nv VW, nv 1 or 2) scoring queries in the lanes of
 * qv (d, nv), zero-padded, counting query i only if it is one (i < nr)
 * and, under causal, kj[t] <= rows[i] - window; -inf if none. Tiles of KU
 * (nv 2: KU2) keys x nv VW queries, each qv row loaded once per tile. */
static void score_keys(const float *k, int d, const vf *qv, int nv, const int *rows, int nr, int causal,
                       int window, const int *kj, int nk, float *out)
{
    vi rv[2], lane[2];
    for (int v = 0; v < 2; v++)
        for (int i = 0; i < VW; i++) {
            rv[v][i] = v * VW + i < nr ? rows[v * VW + i] : -(1 << 30);
            lane[v][i] = v * VW + i;
        }
    const int ku = nv == 1 ? KU : KU2;
    for (int g = 0; g < nk; g += ku) {
        const int nu = nk - g < ku ? nk - g : ku;
        const float *kr[KU];
        for (int u = 0; u < ku; u++) kr[u] = k + (size_t)kj[g + (u < nu ? u : 0)] * d;
        /* the next tile's rows (random rows of K, mostly L2 or L3 misses)
         * are fetched while this one is scored */
        for (int u = g + ku; u < g + 2 * ku && u < nk; u++)
            for (int c = 0; c < d; c += 64 / (int)sizeof(float))
                __builtin_prefetch(k + (size_t)kj[u] * d + c);
        vf acc[2 * KU2];
        if (nv == 1)
            score_tile(qv, d, kr[0], kr[1], kr[2], kr[3], kr[4], kr[5], kr[6], kr[7], acc);
        else
            score_tile2(qv, d, kr[0], kr[1], kr[2], kr[3], kr[4], kr[5], acc);
        for (int u = 0; u < nu; u++) {
            float mx = -INFINITY;
            for (int v = 0; v < nv; v++) {
                const float x =
                    lane_max(acc[u * nv + v], causal ? rv[v] >= kj[g + u] + window : lane[v] < nr);
                mx = x > mx ? x : mx;
            }
            out[g + u] = mx;
        }
    }
}

/* Selection for one query block (h, qb), added to l. Scratch: qt (d,
 * block_q), rows and acc (block_q), br (3 m + 3) branches, keys (3 N +
 * block_k + 1), rk (twice br's), gof (N + 1), kbm (N / 64 + 1 zero words). */
static int hip_row(const hip_state *st, const ab_problem *pb, ab_layout *l, int h, int qb, float *qt,
                   int *rows, float *acc, branch *br, int32_t *keys, vf *qv, int *kj, float *ks, uint64_t *rk,
                   int32_t *gof, uint64_t *kbm, double *cost)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, bk = st->block_k, W = st->window;
    const float *q = pb->q + (size_t)h * N * d; /* (N, d) */
    const float *k = pb->k + (size_t)h * N * d; /* (N, d) */
    const ab_mask mask = ab_shape_mask(&pb->s);
    const int r0 = qb * bq, r1 = r0 + bq < N ? r0 + bq : N;
    const int s1 = st->sinks < r1 ? st->sinks : r1;
    int n = 0;
    /* candidates [lo, hi): after the sinks and the first key the base mask
     * lets a row of the block see; causal: before the window of the block's
     * last row; non-causal: up to the last visible key */
    int A, V;
    bs_rows_span(&mask, r0, r1, &A, &V);
    const int lo = A > st->sinks ? A : st->sinks;
    const int hi = causal ? (r1 - W < V ? r1 - W : V) : V;
    const int B = hi > lo ? (hi - lo + bk - 1) / bk : 0; /* candidate key blocks */
    const int m = mc_dither(st->k / bk, qb);             /* branches */
    int nb = 0;
    if (B > 0 && B <= m) {
        br[nb++] = (branch){ 0.0f, 0, B };
    } else if (B > 0 && m > 0) {
        int nr = 0; /* scoring queries: every stride-th row, the last of each stride */
        for (int i = r0 + st->stride - 1; i < r1 && nr < bq / st->stride; i += st->stride) rows[nr++] = i;
        for (int i = 0; i < nr; i++)
            for (int c = 0; c < d; c++) qt[(size_t)c * nr + i] = q[(size_t)rows[i] * d + c];
        cost[1] += (double)nr * d * sizeof(float);
        /* initial branches on the power-of-two grid of the official kernel */
        const int step = (int)(((int64_t)1 << (int)floor(log2((double)B))) + m - 1) / m;
        const float ratio = (float)B / (float)m;
        int g0 = 0, prev = 0;
        for (int t = 1; t <= m; t++) {
            int x = (int)(ratio * (float)t) / step * step;
            x = x < B ? x : B;
            if (x > prev) {
                br[nb++] = (branch){ 0.0f, prev, x - prev };
                g0 = x - prev > g0 ? x - prev : g0;
            }
            prev = x > prev ? x : prev;
        }
        const int nv = nr <= VW ? 1 : 2, fast = nr <= 2 * VW;
        if (fast) /* the scoring queries in the lanes of nv vectors, zero-padded */
            for (int c = 0; c < d; c++)
                for (int v = 0; v < nv; v++)
                    for (int i = 0; i < VW; i++)
                        qv[c * nv + v][i] = v * VW + i < nr ? qt[(size_t)c * nr + v * VW + i] : 0.0f;
        for (double g = g0; g > 1; g *= 0.5) {
            /* halve every branch (children go to the end of br) */
            branch *ch = br + nb;
            int nc = 0, nk = 0;
            for (int t = 0; t < nb; t++) {
                const int a = br[t].a, gl = br[t].g / 2, gr = br[t].g - gl;
                const int c[2] = { a, a + gl }, cn[2] = { gl, gr };
                for (int u = 0; u < 2; u++) {
                    if (cn[u] <= 0) continue;
                    const int j0 = lo + (c[u] + cn[u] / 2) * bk, j1 = j0 + bk < N ? j0 + bk : N;
                    if (fast) {
                        for (int j = j0; j < j1; j++) kj[nk++] = j;
                        ch[nc++] = (branch){ 0.0f, c[u], cn[u] };
                    } else {
                        ch[nc++] =
                            (branch){ block_score(k, qt, rows, acc, d, nr, j0, j1, causal, W), c[u], cn[u] };
                    }
                    cost[0] += (double)(j1 - j0) * nr * (2.0 * d + 1.0);
                }
            }
            if (fast) { /* one GEMM-shaped pass, then each child's max over its keys */
                score_keys(k, d, qv, nv, rows, nr, causal, W, kj, nk, ks);
                for (int t = 0, x = 0; t < nc; t++) {
                    const int j0 = lo + (ch[t].a + ch[t].g / 2) * bk, j1 = j0 + bk < N ? j0 + bk : N;
                    float mx = -INFINITY;
                    for (int j = j0; j < j1; j++, x++)
                        if (ks[x] > mx) mx = ks[x];
                    ch[t].s = mx;
                }
            }
            const int keep = nc < m ? nc : m;
            if (keep < nc) {
                for (int t = 0; t < nc; t++) {
                    rk[t] = rank_key(ch[t].s, ch[t].a);
                    gof[ch[t].a] = ch[t].g;
                }
                top_keys(rk, rk + nc, nc, keep);
                for (int t = 0; t < keep; t++) {
                    const int32_t a = INT32_MAX - (int32_t)(uint32_t)rk[t];
                    br[t] = (branch){ 0.0f, a, gof[a] };
                }
            } else {
                for (int t = 0; t < keep; t++) br[t] = ch[t];
            }
            cost[0] += nc > 1 ? nc * log2((double)nc) : 0.0;
            nb = keep;
        }
    }
    /* the chosen key blocks, the sinks and the sliding window of the
     * block's rows (non-causal: the block's own rows), marked in the bit
     * set kbm (zero on entry and on return) and read out ascending, once
     * each: the blocks come in rank order, which the layout builder would
     * sort */
    for (int t = 0; t < nb; t++) {
        const int j0 = lo + br[t].a * bk, j1 = lo + (br[t].a + br[t].g) * bk;
        mc_set_bits(kbm, j0, j1 < N ? j1 : N);
    }
    mc_set_bits(kbm, 0, s1);
    mc_set_bits(kbm, causal ? (r0 - W + 1 > 0 ? r0 - W + 1 : 0) : r0, r1);
    n = mc_take_bits(kbm, N / 64 + 1, keys, n);
    return ab_layout_add_tokens(l, h, qb, keys, n);
}

static int hip_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const hip_state *st = state;
    int rc = ab_layout_set_blocks(
        l, st->block_q < l->seq_len ? st->block_q : (l->seq_len > 0 ? l->seq_len : 1), l->block_k);
    if (rc != AB_OK) return rc;
    const int N = pb->s.seq_len, d = pb->s.head_dim, bq = l->block_q, nqb = l->n_qblocks;
    const int rows = l->heads * nqb;
    const double mmax = ceil(st->k / st->block_k) + 1;
    const size_t nbr = 3 * (size_t)(mmax < N ? mmax : N) + 3;
    double flops = 0.0, bytes = 0.0; /* counted as the rounds run (see the header) */
#pragma omp parallel
    {
        float *qt = malloc((size_t)d * bq * sizeof *qt);                          /* (d, block_q) */
        float *acc = malloc((size_t)bq * sizeof *acc);                            /* (block_q) */
        int *qrows = malloc((size_t)bq * sizeof *qrows);                          /* (block_q) */
        branch *br = malloc(nbr * sizeof *br);                                    /* kept + children */
        int32_t *keys = malloc(((size_t)3 * N + st->block_k + 1) * sizeof *keys); /* one row's keys */
        vf *qv = aligned_alloc(sizeof(vf), (size_t)2 * d * sizeof *qv);           /* (d, 2) lanes */
        int *kj = malloc(nbr * st->block_k * sizeof *kj);                         /* a round's keys */
        float *ks = malloc(nbr * st->block_k * sizeof *ks);                       /* their scores */
        uint64_t *rk = malloc(2 * nbr * sizeof *rk);                              /* children's ranks */
        int32_t *gof = malloc(((size_t)N + 1) * sizeof *gof);    /* a child's size by start */
        uint64_t *kbm = calloc((size_t)N / 64 + 1, sizeof *kbm); /* one row's keys as bits */
        double cost[2] = { 0.0, 0.0 };
        int ok = qt && acc && qrows && br && keys && qv && kj && ks && rk && gof && kbm;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 4)
        for (int r = 0; r < rows; r++) {
            if (!ok) continue;
            const int ra = hip_row(st, pb, l, r / nqb, r % nqb, qt, qrows, acc, br, keys, qv, kj, ks, rk, gof,
                                   kbm, cost);
            if (ra != AB_OK) {
                ok = 0;
#pragma omp atomic write
                rc = ra;
            }
        }
        free(qt);
        free(acc);
        free(qrows);
        free(br);
        free(keys);
        free(qv);
        free(kj);
        free(ks);
        free(rk);
        free(gof);
        free(kbm);
#pragma omp atomic
        flops += cost[0];
#pragma omp atomic
        bytes += cost[1];
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "hip: out of memory");
    if (rc != AB_OK) return rc;
    bytes += (double)l->heads * N * d * sizeof(float); /* K once per head */
    return ab_layout_set_cost(l, flops, bytes);
}

const ab_method ab_hip = {
    .abi = AB_ABI_VERSION,
    .family = "token",
    .name = "hip",
    .summary = "HiP (v1.1 mask estimation): per 32-query block, k/2 branches of 2-key blocks halved each round, scored by the centre block's max logit over every 2nd query; + 16 sinks and a sliding window",
    .reference = "HiP Attention (Lee et al. 2024, arXiv 2406.09827; DeepAuto-AI/hip-attention)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_K] = { .name = "k", .def = 512, .min = 1, .max = 1 << 24, .is_int = 0,
                  .help = "keys searched per query block: k / block_k branches (fractional budgets dithered over blocks)" },
        [P_SINKS] = { .name = "sinks", .def = 16, .min = 0, .max = 1 << 20, .is_int = 1,
                      .help = "leading keys always kept (HiP sink_token_size)" },
        [P_BLOCKQ] = { .name = "block_q", .def = 32, .min = 1, .max = 4096, .is_int = 1,
                       .help = "query rows per block (HiP block_size_q)" },
        [P_BLOCKK] = { .name = "block_k", .def = 2, .min = 1, .max = 4096, .is_int = 1,
                       .help = "keys per key block of the search (HiP block_size_k)" },
        [P_STRIDEQ] = { .name = "stride_q", .def = 2, .min = 1, .max = 4096, .is_int = 1,
                        .help = "every stride_q-th query of a block scores the branches (HiP block_stride_q)" },
        [P_WINDOW] = { .name = "window", .def = 32, .min = 1, .max = 1 << 24, .is_int = 1,
                       .help = "sliding window per row, always kept and left out of the search (HiP: 256)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_K, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(hip_state),
    .init = hip_init,
    .select = hip_select,
    .run = NULL, /* gather kernel */
    .fini = NULL,
};
AB_REGISTER(ab_hip)
