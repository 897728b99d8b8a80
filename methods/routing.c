/* routing.c — `routing`: Routing Transformer attention, content-based
 * clusters of queries and keys by k-means (Roy, Saffar, Vaswani, Grangier
 * 2021, "Efficient Content-Based Sparse Attention with Routing
 * Transformers", TACL 9, arXiv 2003.05997; official code
 * google-research/google-research routing_transformer/utils.py:
 * clustered_local_attention_helper, cluster_items / nearest_neighbor,
 * gather_cluster_attention_items). Training-free: the paper learns the
 * centroids by online mini-batch k-means over training; here each problem
 * clusters its own Q and K. Per head:
 *   1. Normalise (official: layer_norm(scaling=False) on q and k): each
 *      query and key row is centred over its d features and scaled to unit
 *      L2 norm (the official layer norm divided by sqrt(d), the same
 *      directions: the paper's points on the unit sphere).
 *   2. Shared centroids: spherical k-means over the 2N points (N queries and
 *      N keys together, one set of C = n_clusters centroids, as the paper's
 *      shared update of mu from Q and K). Init: C distinct points drawn by a
 *      partial Fisher-Yates shuffle of the 2N points, seeded from pb->seed
 *      and the head (splitmix64). Then `iters` Lloyd steps: every point to
 *      its nearest centroid (largest dot product: the official distance is
 *      -x.mu; ties to the lower centroid), each centroid the normalised mean
 *      of its points (an empty cluster keeps its centroid). The dot products
 *      of all points with all centroids are SIMD FMA chains (each point
 *      broadcast against the centroids transposed, 8 points at a time),
 *      followed by their assignment and the cluster sums while those
 *      points are in cache (rt_lloyd_pass).
 *   3. Balanced routing, as gather_cluster_attention_items: with the final
 *      centroids, every centroid takes its w = ceil(N / C) nearest queries
 *      and, separately, its w nearest keys (top-w by dot product, ties to
 *      the lower position), so each cluster holds exactly w of each.
 *   4. Query i keeps the keys of every cluster that took it (a query may be
 *      in several clusters or in none), plus the local window: the `window`
 *      keys (i - window, i] (non-causal base masks: also [i, i + window)).
 * Deviations from the paper and the official code:
 *   - centroids are fitted per problem by Lloyd's algorithm (a fixed number
 *     of iterations from a seeded init) instead of learned online (EMA) over
 *     training;
 *   - the paper's routing and local attention are separate heads; here one
 *     head keeps the union of its cluster keys and its local window;
 *   - a query taken by several clusters attends the union of their keys in
 *     one softmax (the official code averages the per-cluster outputs,
 *     scatter_cluster_items); a query no cluster took keeps only its window
 *     (official: a zero output);
 *   - causality by original position (and any base mask, applied by the
 *     kernels): the official code masks by rank inside the cluster's sorted
 *     lists, exact only when queries and keys share positions (share_qk);
 *   - the C < 1 / w < 1 corner: C is capped at N (w >= 1).
 * Defaults: n_clusters 16, iters 4, window 32 (a window of 64 alone keeps
 * 12.5 % of the causal pairs at N = 1K, above the quick sweep's 10 % point).
 * n_clusters = 1 gives w = N: every query keeps every key (dense).
 * Layout: MIXED with one-row query blocks (the window as whole key blocks
 * plus edge tokens, the cluster keys as tokens); each row lists only keys
 * inside the base mask's span of that row: the metrics' exact view of the
 * key sets, built in the scored call and skipped in a timed one
 * (pb->timed), since run() does not read it.
 * run(): clustered, as the official code computes it. select() leaves the
 * routing in the state (cluster lists, each query's and each key's
 * clusters; fingerprinted by bk_checksum of Q and K). Every (head, cluster)
 * attends its w queries to its w keys on its own (the attention tile of
 * the ABI, ab_attn_tile: gathered queries and keys, the kernels' chunk
 * step), counting a pair only when the base mask allows it, the key is
 * outside the row's window and no earlier cluster that took the query also
 * took the key (an element map); keys outside a query tile's span (causal:
 * later keys) are skipped. Each query slot keeps its part (normalised row
 * and log-sum-exp). Then each tile of 64 consecutive rows computes its
 * window part (contiguous keys read in place, per-row ranges) and merges
 * its clusters' parts in ascending cluster order (methods/lse.h), so every
 * row is the exact softmax over the union, each key once, whatever the
 * thread count. On another
 * problem than select()'s (the check's perturbed keys) run() runs the
 * shared kernel on the layout: the same key sets.
 * Knob n_clusters (density falls as it rises, log scale): density ~ 1/C
 * plus the window's share.
 * Stated cost per head, P = 2N points, I = iters:
 *   FLOPs = 5 P d (normalise) + (I + 1) 2 P d C (point-centroid dot
 *   products, the GEMMs) + I (P C + P d + 3 C d) (argmax, sums, normalise
 *   the centroids) + 2 C * 2 N (quickselect of the top w queries and keys
 *   per cluster, ~2 compares per item) + 2 C w log2 w (sorting the chosen
 *   positions);
 *   bytes = 4 P d (read Q, K) + 4 P d (write the normalised points) +
 *   I 4 P d (read the points, once a pass after the first, which makes
 *   them unit as it goes) + 8 P C (the last pass's dot products, written
 *   and read back by the top-w choices; a Lloyd step's are consumed where
 *   they are computed) + 8 C w (the cluster lists). Until 2026-12-06
 *   every pass counted its dot products written and read back, (I + 1) 8 P
 *   C, which no pass does; and the points were made unit in a pass of
 *   their own, which the first Lloyd pass read back, (I + 1) 4 P d.
 * Selection is O(N C d) per head; building the rows is O(N w) (the layout
 * itself).
 */
#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/bucket.h"
#include "methods/lse.h"
#include "methods/vecf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { P_CLUSTERS = 0, P_ITERS, P_WINDOW, P_COUNT };

/* select()'s routing, for run(): per head the balanced cluster lists and
 * each query's and each key's clusters (CSR, clusters ascending). */
typedef struct rt_cache {
    int heads, n, d, C, w;
    uint64_t seed, sum;   /* fingerprint: seed and bk_checksum of Q, K (0: none) */
    int32_t *qsel, *ksel; /* (H, C, w): cluster c's queries / keys, ascending */
    int32_t *qptr, *qcl;  /* (H, N + 1), (H, C w): query i's clusters */
    int32_t *qslot;       /* (H, C w): beside qcl, the slot c w + t of i in c's list */
    int32_t *kptr, *kcl;  /* (H, N + 1), (H, C w): key j's clusters */
} rt_cache;

typedef struct routing_state {
    int clusters; /* C, before capping at N */
    int iters;    /* Lloyd iterations */
    int window;   /* local keys per query */
    rt_cache rt;  /* the last select()'s routing */
} routing_state;

static void rt_free(rt_cache *c)
{
    free(c->qsel);
    free(c->ksel);
    free(c->qptr);
    free(c->qcl);
    free(c->qslot);
    free(c->kptr);
    free(c->kcl);
    memset(c, 0, sizeof *c);
}

static int rt_alloc(rt_cache *c, int H, int N, int d, int C, int w)
{
    rt_free(c);
    const size_t cw = (size_t)H * C * w, np = (size_t)H * (N + 1);
    c->qsel = malloc(cw * sizeof *c->qsel);
    c->ksel = malloc(cw * sizeof *c->ksel);
    c->qcl = malloc(cw * sizeof *c->qcl);
    c->qslot = malloc(cw * sizeof *c->qslot);
    c->kcl = malloc(cw * sizeof *c->kcl);
    c->qptr = calloc(np, sizeof *c->qptr);
    c->kptr = calloc(np, sizeof *c->kptr);
    if (!(c->qsel && c->ksel && c->qcl && c->qslot && c->kcl && c->qptr && c->kptr)) {
        rt_free(c);
        return AB_ENOMEM;
    }
    c->heads = H;
    c->n = N;
    c->d = d;
    c->C = C;
    c->w = w;
    return AB_OK;
}

/* Members (lists (C, w)) to a CSR by position: ptr (N + 1) zeroed on entry,
 * cl the clusters of each position ascending, slot (may be NULL) beside it. */
static void rt_csr(const int32_t *lists, int C, int w, int N, int32_t *ptr, int32_t *cl, int32_t *slot)
{
    for (int t = 0; t < C * w; t++) ptr[lists[t] + 1]++;
    for (int i = 0; i < N; i++) ptr[i + 1] += ptr[i];
    for (int c = 0; c < C; c++)
        for (int t = 0; t < w; t++) {
            const int32_t at = ptr[lists[(size_t)c * w + t]]++;
            cl[at] = c;
            if (slot) slot[at] = c * w + t;
        }
    for (int i = N; i > 0; i--) ptr[i] = ptr[i - 1]; /* undo the fill's shift */
    ptr[0] = 0;
}

static int routing_init(void *state, const ab_params *p, const ab_shape *s)
{
    routing_state *st = state;
    (void)s;
    if (p->n < P_COUNT) {
        ab_set_error(state, "routing: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_CLUSTERS] >= 1 && p->v[P_CLUSTERS] <= (1 << 20))) {
        ab_set_error(state, "routing: n_clusters=%g outside [1, 2^20]", p->v[P_CLUSTERS]);
        return AB_EINVAL;
    }
    if (!(p->v[P_ITERS] >= 0 && p->v[P_ITERS] <= 100)) {
        ab_set_error(state, "routing: iters=%g outside [0, 100]", p->v[P_ITERS]);
        return AB_EINVAL;
    }
    if (!(p->v[P_WINDOW] >= 0 && p->v[P_WINDOW] <= (1 << 24))) {
        ab_set_error(state, "routing: window=%g outside [0, 2^24]", p->v[P_WINDOW]);
        return AB_EINVAL;
    }
    st->clusters = (int)p->v[P_CLUSTERS];
    st->iters = (int)p->v[P_ITERS];
    st->window = (int)p->v[P_WINDOW];
    return AB_OK;
}

static void routing_fini(void *state)
{
    routing_state *st = state;
    rt_free(&st->rt);
}

/* Centre each of the n <= UR_ROWS rows x (n, d) over its features and
 * scale it to unit L2 norm into o (n, d) (a constant row becomes zero). In
 * double, stored as float. Each row's sums run over c in order: the rows
 * are transposed into xt (d, UR_ROWS) and summed as the lanes of double
 * vectors, UR_ROWS independent chains (with eight rows read in place the
 * loops did not vectorise). */
enum { UR_ROWS = 16 };
static void unit_rows(const float *x, int n, int d, float *o, float *xt)
{
    bs_transpose(x, (size_t)d, NULL, n, d, xt, UR_ROWS);
    for (int c = 0; c < d; c++) /* rows past n add zeros */
        for (int r = n; r < UR_ROWS; r++) xt[(size_t)c * UR_ROWS + r] = 0.0f;
    vdr mu[UR_ROWS / VDR], ss[UR_ROWS / VDR]; /* row v VDR + u in lane u of vector v */
    for (int v = 0; v < UR_ROWS / VDR; v++) mu[v] = ss[v] = (vdr){ 0 };
    for (int c = 0; c < d; c++)
        for (int v = 0; v < UR_ROWS / VDR; v++) mu[v] += vdr_of_f(xt + (size_t)c * UR_ROWS + v * VDR);
    for (int v = 0; v < UR_ROWS / VDR; v++) mu[v] /= (double)d;
    for (int c = 0; c < d; c++)
        for (int v = 0; v < UR_ROWS / VDR; v++) {
            const vdr y = vdr_of_f(xt + (size_t)c * UR_ROWS + v * VDR) - mu[v];
            ss[v] += y * y;
        }
    for (int r = 0; r < n; r++) {
        const double sr = ss[r / VDR][r % VDR], mr = mu[r / VDR][r % VDR];
        const double inv = sr > 0.0 ? 1.0 / sqrt(sr) : 0.0;
        for (int c = 0; c < d; c++) o[(size_t)r * d + c] = (float)((x[(size_t)r * d + c] - mr) * inv);
    }
}

/* The points' chunks: RT_CHUNK points of one side (queries or keys) each,
 * more for many centroids (their partial sums take C d doubles a chunk);
 * fixed by N and C, so the sums are the same whatever the thread count. */
enum { RT_CHUNK = 4096 };
static int rt_chunk(int C) { return RT_CHUNK * (C > 64 ? (C + 63) / 64 : 1); }
static int rt_chunks(int N, int C) { return 2 * ((N + rt_chunk(C) - 1) / rt_chunk(C)); }
/* Chunk ch's side (0: queries, 1: keys) and its points [*a0, *a1) there. */
static inline int rt_chunk_span(int N, int C, int ch, int *a0, int *a1)
{
    const int ck = rt_chunk(C), half = rt_chunks(N, C) / 2;
    *a0 = (ch % half) * ck;
    *a1 = N - *a0 < ck ? N : *a0 + ck;
    return ch / half;
}

/* One pass over the P = 2N points, the queries' xs[0] (N, d) then the
 * keys' xs[1] (N, d), RT_PTS at a time: their dot products with the C
 * centroids cen (C, d), cen . x_p, each the chain of FMAs over the features
 * in order from zero that bs_gemm_nt computes (bs_bcast_rows: the points
 * broadcast against the centroids transposed into cent (d, cw), cw = C
 * rounded up to whole vectors); into dot (C, P) when given; and, when sum
 * is given, each point's nearest centroid (largest dot, ties to the lower)
 * in asg, the clusters' sums (double) and sizes, while the points are in
 * cache. The points go by chunks (rt_chunk), split over the threads when
 * par; each chunk sums its points in order into its own partial sums
 * (psum: rt_chunks (C, d), pcnt: rt_chunks C), added up in chunk order
 * (until 2026-12-06 one chain over all points, on one thread per head:
 * routing at N = 64K with one head ran on one core). Until 2026-12-05
 * every pass transposed all 2N points, 64 at a time, for a product with
 * only C rows, and the transposes took most of the pass. raw given (the
 * first pass): the points are made unit from the raw rows raw[0] (Q) and
 * raw[1] (K) of the head as the pass reaches them, written to xs, and,
 * without par (one thread takes the chunks in order: Q's, then K's), added
 * to the fingerprint cs. Returns AB_OK or AB_ENOMEM. */
/* RT_PF: the points that far ahead prefetched while a group computes
 * (about 2 % of select(); 2026-12-06) */
enum { RT_PTS = 8, RT_PF = 16 };

/* The n floats from p towards L2, a 64-byte line at a time. */
static inline void rt_prefetch(const float *p, int n)
{
    for (int q = 0; q < n; q += 16) __builtin_prefetch(p + q, 0, 2);
}
/* rt_lloyd_pass's work on the points [a0, a1) of x (their index in [0, P)
 * is g + p): dots into dot (C, P) when given, and with ps given their
 * nearest centroids into asg and their sums and sizes added into ps (C, d)
 * and pc (C). */
static inline __attribute__((always_inline)) void rt_pass_points(const float *x, size_t g, int a0, int a1,
                                                                 int d, int C, const float *cent, int cw,
                                                                 float *v, float *dot, size_t P, int32_t *asg,
                                                                 double *ps, int32_t *pc)
{
    for (int p0 = a0; p0 < a1; p0 += RT_PTS) {
        const int np = a1 - p0 < RT_PTS ? a1 - p0 : RT_PTS;
        if (p0 + RT_PF + RT_PTS <= a1) rt_prefetch(x + (size_t)(p0 + RT_PF) * d, RT_PTS * d);
        bs_bcast_rows(x + (size_t)p0 * d, (size_t)d, np, d, cent, cw, v);
        if (dot)
            for (int c = 0; c < C; c++)
                for (int r = 0; r < np; r++) dot[(size_t)c * P + g + p0 + r] = v[(size_t)r * cw + c];
        if (!ps) continue;
        for (int r = 0; r < np; r++) {
            const float *vr = v + (size_t)r * cw, *xr = x + (size_t)(p0 + r) * d;
            float best = vr[0];
            int a = 0;
            for (int c = 1; c < C; c++)
                if (vr[c] > best) {
                    best = vr[c];
                    a = c;
                }
            asg[g + p0 + r] = a;
            double *sr = ps + (size_t)a * d;
            for (int c = 0; c < d; c++) sr[c] += xr[c];
            pc[a]++;
        }
    }
}

/* The first Lloyd pass's extra work on one side (queries or keys): the
 * raw rows raw (N, d) made unit into xw (the pass's x) as the pass reaches
 * them (unit_rows, scratch xt), and, when cs is given, added to the
 * fingerprint cs (bk_sum_add; nfl = N d floats). Until 2026-12-06 the unit
 * points were a pass of their own before the first Lloyd pass, which read
 * them back from memory, and bk_checksum read Q and K once more after. */
typedef struct rt_fuse {
    const float *raw;
    float *xw, *xt;
    bk_sum *cs;
    size_t nfl;
} rt_fuse;

/* rt_pass_points over the points [a0, a1) of one chunk, UR_ROWS at a time
 * (made unit first when fu is given); ps and pc zeroed here. Inlined into
 * rt_pass_chunks with either dot or ps null (copies with their branches
 * folded away). */
static inline __attribute__((always_inline)) void rt_pass_chunk(const float *x, size_t g, int a0, int a1,
                                                                int d, int C, const float *cent, int cw,
                                                                float *v, float *dot, size_t P, int32_t *asg,
                                                                double *ps, int32_t *pc, const rt_fuse *fu)
{
    if (ps) {
        memset(ps, 0, (size_t)C * d * sizeof *ps);
        memset(pc, 0, (size_t)C * sizeof *pc);
    }
    if (!fu) {
        rt_pass_points(x, g, a0, a1, d, C, cent, cw, v, dot, P, asg, ps, pc);
        return;
    }
    for (int u0 = a0; u0 < a1; u0 += UR_ROWS) { /* UR_ROWS points: a whole number of RT_PTS */
        const int u1 = a1 - u0 < UR_ROWS ? a1 : u0 + UR_ROWS;
        /* the first pass: the points made unit here, while the rows are in cache */
        if (u1 + 2 * UR_ROWS <= a1) rt_prefetch(fu->raw + (size_t)(u0 + 2 * UR_ROWS) * d, UR_ROWS * d);
        unit_rows(fu->raw + (size_t)u0 * d, u1 - u0, d, fu->xw + (size_t)u0 * d, fu->xt);
        if (fu->cs) bk_sum_add(fu->cs, fu->raw, (size_t)u0 * d, (size_t)u1 * d, fu->nfl);
        rt_pass_points(x, g, u0, u1, d, C, cent, cw, v, dot, P, asg, ps, pc);
    }
}

/* Chunk ch of rt_lloyd_pass (psum null: the dots alone). Not
 * inlined into the OpenMP body: written or inlined there, the pass ran 8 %
 * slower in the harness (16K, 4 heads; 2026-12-06), its loops reading
 * their bounds through the outlined body's shared-variable block. */
static __attribute__((noinline)) void rt_pass_chunks(const float *const xs[2], int N, int d, int C,
                                                     const float *cent, int cw, float *v, float *dot,
                                                     int32_t *asg, double *psum, int32_t *pcnt, int ch)
{
    int a0, a1;
    const int side = rt_chunk_span(N, C, ch, &a0, &a1);
    const size_t P = 2 * (size_t)N, cd = (size_t)C * d;
    if (psum)
        rt_pass_chunk(xs[side], (size_t)side * N, a0, a1, d, C, cent, cw, v, NULL, P, asg,
                      psum + (size_t)ch * cd, pcnt + (size_t)ch * C, NULL);
    else
        rt_pass_chunk(xs[side], (size_t)side * N, a0, a1, d, C, cent, cw, v, dot, P, NULL, NULL, NULL, NULL);
}

/* rt_pass_chunks for the first pass (the points made unit from raw as it
 * goes, rt_fuse): a function of its own, since the fused copies inlined
 * beside the others left the other passes' product loops short of
 * registers (their row pointers spilled; routing's select() 5-15 % slower) */
static __attribute__((noinline)) void rt_pass_chunks_first(const float *const xs[2], int N, int d, int C,
                                                           const float *cent, int cw, float *v, float *dot,
                                                           int32_t *asg, double *psum, int32_t *pcnt, int ch,
                                                           const float *const raw[2], float *xt, bk_sum *cs)
{
    int a0, a1;
    const int side = rt_chunk_span(N, C, ch, &a0, &a1);
    const size_t P = 2 * (size_t)N, cd = (size_t)C * d;
    const rt_fuse fu = { raw[side], (float *)xs[side], xt, cs, (size_t)N * d };
    if (psum)
        rt_pass_chunk(xs[side], (size_t)side * N, a0, a1, d, C, cent, cw, v, NULL, P, asg,
                      psum + (size_t)ch * cd, pcnt + (size_t)ch * C, &fu);
    else /* no Lloyd step (iters 0): the routing pass is the first */
        rt_pass_chunk(xs[side], (size_t)side * N, a0, a1, d, C, cent, cw, v, dot, P, NULL, NULL, NULL, &fu);
}

static int rt_lloyd_pass(const float *const xs[2], int N, int d, const float *cen, int C, float *cent, int cw,
                         float *dot, int32_t *asg, double *sum, int32_t *cnt, double *psum, int32_t *pcnt,
                         const float *const raw[2], bk_sum *cs, int par)
{
    const int nch = rt_chunks(N, C);
    const size_t cd = (size_t)C * d;
    int bad = 0;
    bs_cols_t(cen, C, d, cw, cent);
#pragma omp parallel if (par)
    {
        float *v = malloc((size_t)RT_PTS * cw * sizeof *v);                /* the dots of RT_PTS points */
        float *xt = raw ? malloc((size_t)d * UR_ROWS * sizeof *xt) : NULL; /* unit_rows' transposed rows */
        if (!v || (raw && !xt)) {
#pragma omp atomic write
            bad = 1;
        }
        /* without par one thread takes the chunks in order: the queries'
         * then the keys', each in order, as cs's chain needs them */
#pragma omp for schedule(dynamic, 1)
        for (int ch = 0; ch < nch; ch++)
            if (v && raw && xt)
                rt_pass_chunks_first(xs, N, d, C, cent, cw, v, dot, asg, sum ? psum : NULL, pcnt, ch, raw, xt,
                                     par ? NULL : cs);
            else if (v && !raw)
                rt_pass_chunks(xs, N, d, C, cent, cw, v, dot, asg, sum ? psum : NULL, pcnt, ch);
        free(v);
        free(xt);
    }
    if (bad || !sum) return bad ? AB_ENOMEM : AB_OK;
    memcpy(sum, psum, cd * sizeof *sum);
    memcpy(cnt, pcnt, (size_t)C * sizeof *cnt);
    for (int ch = 1; ch < nch; ch++) {
        const double *ps = psum + (size_t)ch * cd;
        const int32_t *pc = pcnt + (size_t)ch * C;
        for (size_t t = 0; t < cd; t++) sum[t] += ps[t];
        for (int c = 0; c < C; c++) cnt[c] += pc[c];
    }
    return AB_OK;
}

/* Clustering, routing and rows of head h. par: split the head's own loops
 * over the threads (fewer heads than threads): the Lloyd passes by chunks
 * of points (the first making them unit) and the top-w choices by
 * (centroid, side); every number comes out the same either way. *hsum:
 * the head's share of bk_checksum, taken as the first pass reads Q and K
 * (0 with par). */
static int routing_head(const routing_state *st, const ab_problem *pb, ab_layout *l, int h, int par,
                        uint64_t *hsum)
{
    const rt_cache *rt = &st->rt; /* rt_alloc'd for this problem: C, w and the lists to fill */
    const int C = rt->C, w = rt->w;
    const ab_mask mask = ab_shape_mask(&pb->s);
    const size_t cwo = (size_t)h * C * w, npo = (size_t)h * (pb->s.seq_len + 1);
    const int N = pb->s.seq_len, d = pb->s.head_dim, P = 2 * N, bk = l->block_k, nch = rt_chunks(N, C);
    /* the unit points: queries and keys apart (each under glibc's 32 MiB
     * mmap threshold at N = 64K, d = 64, so the heap reuses them: one
     * array of both was mapped afresh every call, and its page faults
     * took a tenth of select()) */
    float *xq = malloc((size_t)N * d * sizeof *xq);            /* (N, d) unit queries */
    float *xk = malloc((size_t)N * d * sizeof *xk);            /* (N, d) unit keys */
    float *cen = malloc((size_t)C * d * sizeof *cen);          /* (C, d) centroids */
    float *dot = malloc((size_t)C * P * sizeof *dot);          /* (C, P) centroid . point */
    int32_t *asg = malloc((size_t)P * sizeof *asg);            /* (P) nearest centroid */
    const int cw = (C + VW - 1) / VW * VW;                     /* centroid lanes, whole vectors */
    float *cent = malloc((size_t)d * cw * sizeof *cent);       /* (d, cw) centroids transposed */
    double *sum = malloc((size_t)C * d * sizeof *sum);         /* (C, d) cluster sums */
    int32_t *cnt = malloc((size_t)C * sizeof *cnt);            /* (C) cluster sizes */
    double *psum = malloc((size_t)nch * C * d * sizeof *psum); /* (chunks, C, d) partial sums */
    int32_t *pcnt = malloc((size_t)nch * C * sizeof *pcnt);    /* (chunks, C) partial sizes */
    int32_t *perm = malloc((size_t)P * sizeof *perm);          /* init shuffle */
    float *xt0 = malloc((size_t)d * UR_ROWS * sizeof *xt0);    /* unit_rows' scratch for the init */
    int32_t *qsel = rt->qsel + cwo, *ksel = rt->ksel + cwo;    /* (C, w) queries, keys per cluster, sorted */
    int32_t *mptr = rt->qptr + npo, *mcl = rt->qcl + cwo;      /* query -> clusters (CSR) */
    int32_t *blk = malloc((2 * (size_t)l->n_kblocks + 2) * sizeof *blk); /* one row's entries */
    int32_t *tok = malloc(((size_t)C * w + 4 * (size_t)bk + 4) * sizeof *tok);
    int rc =
        (xq && xk && cen && dot && asg && cent && sum && cnt && psum && pcnt && perm && xt0 && blk && tok)
            ? AB_OK
            : AB_ENOMEM;
    const float *const xs[2] = { xq, xk };
    const float *const raw[2] = { pb->q + (size_t)h * N * d, pb->k + (size_t)h * N * d };
    bk_sum fp; /* the head's share of the fingerprint (bk_checksum), without par */
    bk_sum_init(&fp);
    if (rc == AB_OK) {
        /* init: C distinct points, a partial Fisher-Yates shuffle, made
         * unit here (the first pass makes every point unit: the same
         * values, each row's arithmetic its own) */
        uint64_t s = ab_mix64(pb->seed ^ ab_mix64(0x524f555445000000ull + (uint64_t)h)); /* "ROUTE" */
        for (int t = 0; t < P; t++) perm[t] = t;
        for (int c = 0; c < C; c++) {
            const int r = c + (int)(ab_splitmix64(&s) % (uint64_t)(P - c));
            const int32_t t = perm[c];
            perm[c] = perm[r];
            perm[r] = t;
            unit_rows(raw[perm[c] >= N] + (size_t)(perm[c] % N) * d, 1, d, cen + (size_t)c * d, xt0);
        }
        /* Lloyd steps of spherical k-means; the first makes the points unit */
        for (int it = 0; rc == AB_OK && it < st->iters; it++) {
            rc = rt_lloyd_pass(xs, N, d, cen, C, cent, cw, NULL, asg, sum, cnt, psum, pcnt, it ? NULL : raw,
                               &fp, par);
            for (int c = 0; rc == AB_OK && c < C; c++) {
                if (cnt[c] == 0) continue; /* empty: keep the centroid */
                const double *sr = sum + (size_t)c * d;
                double ss = 0.0;
                for (int u = 0; u < d; u++) ss += sr[u] * sr[u];
                if (!(ss > 0.0)) continue; /* points cancel out: keep it */
                const double inv = 1.0 / sqrt(ss);
                for (int u = 0; u < d; u++) cen[(size_t)c * d + u] = (float)(sr[u] * inv);
            }
        }
        /* balanced routing: each centroid's w nearest queries and keys */
        if (rc == AB_OK)
            rc = rt_lloyd_pass(xs, N, d, cen, C, cent, cw, dot, NULL, NULL, NULL, NULL, NULL,
                               st->iters ? NULL : raw, &fp, par);
        if (rc == AB_OK) *hsum = par ? 0 : bk_sum_head(&fp);
    }
    if (rc == AB_OK) {
#pragma omp parallel if (par)
        {
            bs_cand *cand = malloc((size_t)N * sizeof *cand);      /* one top-w selection */
            uint64_t *skey = malloc(2 * (size_t)N * sizeof *skey); /* its ordered keys (bs_top_ascending) */
            if (!cand || !skey) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int cs = 0; cs < 2 * C; cs++) {
                if (!cand || !skey) continue;
                const int c = cs / 2, side = cs % 2;
                const float *row = dot + (size_t)c * P + (size_t)side * N;
                for (int i = 0; i < N; i++) cand[i] = (bs_cand){ row[i], i };
                bs_top_ascending(cand, N, w, skey); /* the top w, in position order */
                int32_t *out = (side ? ksel : qsel) + (size_t)c * w;
                for (int t = 0; t < w; t++) out[t] = cand[t].idx;
            }
            free(cand);
            free(skey);
        }
    }
    if (rc == AB_OK) {
        /* the clusters of each query and of each key (CSR, clusters ascending) */
        rt_csr(qsel, C, w, N, mptr, mcl, rt->qslot + cwo);
        rt_csr(ksel, C, w, N, rt->kptr + npo, rt->kcl + cwo, NULL);
    }
    /* rows: the window as blocks + edge tokens, the cluster keys as tokens,
     * all within the base mask's span of the row (not in a timed call:
     * run() then works from the cache, and only the metrics read rows) */
    for (int i = 0; rc == AB_OK && !pb->timed && i < N; i++) {
        int lo, hi;
        ab_mask_span(&mask, i, &lo, &hi);
        int nb = 0, nt = 0;
        if (st->window > 0) {
            int a = i - st->window + 1, b = l->causal ? i + 1 : i + st->window;
            a = a > lo ? a : lo;
            b = b < hi ? b : hi;
            mc_span_collect(a, b, bk, N, blk, &nb, tok, &nt);
        }
        for (int t = mptr[i]; t < mptr[i + 1]; t++) {
            const int32_t *ks = ksel + (size_t)mcl[t] * w;
            const int t0 = bk_lower(ks, w, lo), t1 = bk_lower(ks, w, hi);
            memcpy(tok + nt, ks + t0, (size_t)(t1 - t0) * sizeof *tok);
            nt += t1 - t0;
        }
        rc = mc_flush_row(l, h, i, blk, nb, tok, nt);
    }
    free(xq);
    free(xk);
    free(cen);
    free(dot);
    free(asg);
    free(cent);
    free(sum);
    free(cnt);
    free(psum);
    free(pcnt);
    free(perm);
    free(xt0);
    free(blk);
    free(tok);
    return rc;
}

/* routing_head for head h (a bs_head_fn); its fingerprint share into hs[h]
 * (0 with par: the chunks then come in no fixed order) */
typedef struct rt_heads_ctx {
    bs_heads_ctx c;
    uint64_t *hs;
} rt_heads_ctx;

static int rt_one(void *ctx, int h, int par, double *fl, double *by)
{
    const rt_heads_ctx *c = ctx;
    (void)fl;
    (void)by;
    return routing_head(c->c.st, c->c.pb, c->c.l, h, par, c->hs + h);
}

static int routing_select(void *state, const ab_problem *pb, ab_layout *l)
{
    routing_state *st = state;
    const int N = pb->s.seq_len, d = pb->s.head_dim, H = pb->s.heads;
    if (N < 1 || d < 1) {
        ab_set_error(state, "routing: empty shape");
        return AB_EINVAL;
    }
    int rc = ab_layout_set_blocks(l, 1, l->block_k); /* one query row per layout row */
    if (rc != AB_OK) return rc;
    const int C = st->clusters < N ? st->clusters : N;
    const int w = (int)(((int64_t)N + C - 1) / C);
    rc = rt_alloc(&st->rt, H, N, d, C, w);
    if (rc != AB_OK) {
        ab_set_error(state, "routing: out of memory");
        return rc;
    }
    /* the heads, or one head's own loops, over the threads (bs_run_heads;
     * the cost is stated below) */
    uint64_t *hs = calloc((size_t)H, sizeof *hs); /* the heads' fingerprint shares */
    rt_heads_ctx c = { { st, pb, l }, hs };
    double unused[2] = { 0.0, 0.0 };
    rc = hs ? bs_run_heads(H, rt_one, &c, &unused[0], &unused[1]) : AB_ENOMEM;
    if (rc != AB_OK) {
        free(hs);
        rt_free(&st->rt);
        if (rc == AB_ENOMEM) ab_set_error(state, "routing: out of memory");
        return rc;
    }
    st->rt.seed = pb->seed;
    int all = 1; /* every head's share taken as its first pass read Q and K */
    for (int h = 0; h < H; h++) all &= hs[h] != 0;
    st->rt.sum = all ? bk_sum_heads(hs, H) : bk_checksum(pb);
    free(hs);
    const double P = 2.0 * N, I = st->iters;
    const double flops = H * (5.0 * P * d + (I + 1) * 2.0 * P * d * C + I * (P * C + P * d + 3.0 * C * d) +
                              4.0 * C * N + 2.0 * C * w * log2(w > 1 ? w : 1));
    const double bytes = H * (8.0 * P * d + I * 4.0 * P * d + 8.0 * P * C + 8.0 * C * w);
    return ab_layout_set_cost(l, flops, bytes);
}

static int rt_matches(const routing_state *st, const ab_problem *pb)
{
    const rt_cache *c = &st->rt;
    return c->qsel && c->heads == pb->s.heads && c->n == pb->s.seq_len && c->d == pb->s.head_dim &&
           c->seed == pb->seed && c->sum != 0 && c->sum == bk_checksum(pb);
}

/* Per thread: the attention tile (ab_attn_tile: the kernels' chunk step),
 * a query tile qg (BK_QT, d), a cluster's keys and values kg, vg (kcap, d)
 * and the pairs that count, key-major (kcap, BK_QT). */
typedef struct rt_scratch {
    ab_attn_tile *at;
    float *qg, *kg, *vg;
    unsigned char *allow;
    int kcap;
} rt_scratch;

#if defined(__AVX512BW__)
/* The allow-map row of key j for the BK_QT rows of a cluster tile (interval
 * base mask, clusters as bit sets): row a counts j when lo[a] <= j < hi[a],
 * j is outside [ws[a], we[a]) and no earlier cluster that took the row also
 * took j ((qe[a] & kj) == 0); rows outside `live` never. As the byte loop
 * below, on 16 rows per compare. */
static inline void rt_allow_row(unsigned char *al, int j, uint64_t kj, const int *lo, const int *hi,
                                const int *ws, const int *we, const uint64_t *qe, uint64_t live)
{
    const __m512i vj = _mm512_set1_epi32(j), vk = _mm512_set1_epi64((long long)kj);
    uint64_t m = 0, e = 0;
    for (int g = 0; g < BK_QT / 16; g++) {
        const __mmask16 in = _mm512_cmple_epi32_mask(_mm512_loadu_si512(lo + 16 * g), vj) &
                             _mm512_cmpgt_epi32_mask(_mm512_loadu_si512(hi + 16 * g), vj);
        const __mmask16 win = _mm512_cmple_epi32_mask(_mm512_loadu_si512(ws + 16 * g), vj) &
                              _mm512_cmpgt_epi32_mask(_mm512_loadu_si512(we + 16 * g), vj);
        m |= (uint64_t)(uint16_t)(in & ~win) << (16 * g);
    }
    for (int g = 0; g < BK_QT / 8; g++)
        e |= (uint64_t)_mm512_testn_epi64_mask(_mm512_loadu_si512(qe + 8 * g), vk) << (8 * g);
    _mm512_storeu_si512(al, _mm512_maskz_set1_epi8(m & e & live, 1));
}
#define RT_ALLOW_ROW 1
#elif defined(__AVX2__)
_Static_assert(BK_QT == 64, "rt_allow_row: one 64-bit mask per key");
/* 32 bits of m as 32 bytes of 0 / 1 at al: each byte picks the mask byte
 * that holds its bit (a shuffle within the 128-bit lanes), then tests it */
static inline void rt_bytes32(unsigned char *al, uint32_t m)
{
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2,
                                          2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i b = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)m), pick), bit);
    _mm256_storeu_si256((__m256i *)(void *)al,
                        _mm256_and_si256(_mm256_cmpeq_epi8(b, bit), _mm256_set1_epi8(1)));
}
/* rt_allow_row of AVX-512 on eight rows per compare: the same bytes as
 * the byte loop below, which GCC vectorised into about three times the
 * operations (the map was an eighth of routing's run() at N = 16K,
 * 2026-12-07) */
static inline void rt_allow_row(unsigned char *al, int j, uint64_t kj, const int *lo, const int *hi,
                                const int *ws, const int *we, const uint64_t *qe, uint64_t live)
{
    const __m256i vj = _mm256_set1_epi32(j), vk = _mm256_set1_epi64x((long long)kj),
                  z = _mm256_setzero_si256();
    uint64_t m = 0, e = 0;
    for (int g = 0; g < BK_QT / 8; g++) {
#define RT_GT(p) (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(p, vj)))
#define RT_LD(p) _mm256_loadu_si256((const __m256i *)(const void *)((p) + 8 * g))
        const unsigned lo_gt = RT_GT(RT_LD(lo)), hi_gt = RT_GT(RT_LD(hi)), ws_gt = RT_GT(RT_LD(ws)),
                       we_gt = RT_GT(RT_LD(we));
#undef RT_GT
#undef RT_LD
        /* lo <= j < hi, and not ws <= j < we */
        m |= (uint64_t)(~lo_gt & hi_gt & ~(~ws_gt & we_gt) & 0xffu) << (8 * g);
    }
    for (int g = 0; g < BK_QT / 4; g++) {
        const __m256i t =
            _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(qe + 4 * g)), vk);
        e |= (uint64_t)(unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(t, z))) << (4 * g);
    }
    const uint64_t a = m & e & live;
    rt_bytes32(al, (uint32_t)a);
    rt_bytes32(al + 32, (uint32_t)(a >> 32));
}
#define RT_ALLOW_ROW 1
#endif

/* Cluster c of head h against its own keys: the softmax (normalised rows
 * po, log-sum-exps pl, per query slot) of each of its w query slots over
 * the keys of c that the row counts here: allowed by the base mask,
 * outside the row's window (the window part counts those) and in no
 * earlier cluster that also took the query (the union counts each key
 * once). Keys are gathered once; each tile of BK_QT queries sees the run of
 * them inside its rows' spans. */
static void rt_cluster(const routing_state *st, const ab_problem *pb, const ab_mask *mask, int h, int c,
                       const uint64_t *qm, const uint64_t *km, float *pl, float *po, const rt_scratch *x)
{
    const rt_cache *rt = &st->rt;
    const int N = pb->s.seq_len, d = pb->s.head_dim, C = rt->C, w = rt->w, W = st->window;
    const int causal = pb->s.causal, interval = mask->def->interval;
    const int32_t *qs = rt->qsel + ((size_t)h * C + c) * w, *ks = rt->ksel + ((size_t)h * C + c) * w;
    const int32_t *qptr = rt->qptr + (size_t)h * (N + 1), *qcl = rt->qcl + (size_t)h * C * w;
    const int32_t *kptr = rt->kptr + (size_t)h * (N + 1), *kcl = rt->kcl + (size_t)h * C * w;
    const float *Q = pb->q + (size_t)h * N * d, *K = pb->k + (size_t)h * N * d,
                *V = pb->v + (size_t)h * N * d;
    bk_gather_rows(x->kg, K, ks, w, d, x->vg, V);
    for (int a0 = 0; a0 < w; a0 += BK_QT) {
        const int na = w - a0 < BK_QT ? w - a0 : BK_QT;
        int lo[BK_QT], hi[BK_QT], ws[BK_QT], we[BK_QT], multi[BK_QT], tlo = N, thi = 0;
        uint64_t qe[BK_QT]; /* (C <= 64) the clusters before c that took the row */
        bk_gather_rows(x->qg, Q, qs + a0, na, d, NULL, NULL);
        for (int a = 0; a < na; a++) {
            const int i = qs[a0 + a];
            ab_mask_span(mask, i, &lo[a], &hi[a]);
            ws[a] = W > 0 ? i - W + 1 : i + 1;
            we[a] = W > 0 ? (causal ? i + 1 : i + W) : i + 1;
            multi[a] = qcl[qptr[i]] != c; /* i sits in earlier clusters: their keys were counted */
            qe[a] = qm ? qm[i] & (((uint64_t)1 << c) - 1) : 0;
            tlo = lo[a] < tlo ? lo[a] : tlo;
            thi = hi[a] > thi ? hi[a] : thi;
        }
        /* the keys (ascending) inside the tile's span: [u0, u1) */
        int u0 = 0, u1 = w;
        while (u0 < w && ks[u0] < tlo) u0++;
        while (u1 > u0 && ks[u1 - 1] >= thi) u1--;
        int mapped = 0; /* the allow map already written */
#if defined(RT_ALLOW_ROW)
        if (interval && km) {                  /* the common case: 64-bit row masks per key, one byte store */
            for (int a = na; a < BK_QT; a++) { /* rows past na: none (and defined) */
                lo[a] = hi[a] = ws[a] = we[a] = 0;
                qe[a] = 0;
            }
            const uint64_t live = na == BK_QT ? ~(uint64_t)0 : ((uint64_t)1 << na) - 1;
            for (int u = u0; u < u1; u++)
                rt_allow_row(x->allow + (size_t)(u - u0) * BK_QT, ks[u], km[ks[u]], lo, hi, ws, we, qe, live);
            mapped = 1;
        }
#endif
        for (int u = u0; !mapped && u < u1; u++) {
            unsigned char *al = x->allow + (size_t)(u - u0) * BK_QT;
            const int j = ks[u];
            for (int a = 0; a < na; a++) al[a] = j >= lo[a] && j < hi[a] && !(j >= ws[a] && j < we[a]);
            if (!interval)
                for (int a = 0; a < na; a++) al[a] &= ab_mask_allows(mask, qs[a0 + a], j) != 0;
            if (km) { /* C <= 64: the clusters as bit sets */
                const uint64_t kj = km[j];
                for (int a = 0; a < na; a++) al[a] &= (qe[a] & kj) == 0;
                continue;
            }
            for (int a = 0; a < na; a++) {
                if (!multi[a] || !al[a]) continue;
                const int i = qs[a0 + a];
                for (int q = qptr[i]; q < qptr[i + 1] && qcl[q] < c && al[a]; q++)
                    for (int v = kptr[j]; v < kptr[j + 1] && kcl[v] <= qcl[q]; v++)
                        if (kcl[v] == qcl[q]) al[a] = 0;
            }
        }
        ab_attn_tile_begin(x->at, x->qg, d, na, pb->s.scale);
        if (u1 > u0)
            ab_attn_tile_keys_map(x->at, x->kg + (size_t)u0 * d, x->vg + (size_t)u0 * d, u1 - u0, x->allow,
                                  BK_QT);
        ab_attn_tile_end(x->at, po + ((size_t)c * w + a0) * d, d, pl + (size_t)c * w + a0);
    }
}

/* Rows i0 .. i0 + na - 1 of head h (na <= BK_QT): the softmax over each
 * row's window keys (inside its base-mask span; contiguous keys, read in
 * place), merged with the parts of the row's clusters in ascending cluster
 * order by their log-sum-exps, into out. */
static void rt_rows(const routing_state *st, const ab_problem *pb, const ab_mask *mask, int h, int i0, int na,
                    const float *pl, const float *po, const rt_scratch *x, float *out)
{
    const rt_cache *rt = &st->rt;
    const int N = pb->s.seq_len, d = pb->s.head_dim, W = st->window, causal = pb->s.causal;
    const float *Q = pb->q + (size_t)h * N * d, *K = pb->k + (size_t)h * N * d,
                *V = pb->v + (size_t)h * N * d;
    float *o = out + ((size_t)h * N + i0) * d, lse[BK_QT];
    ab_attn_tile_begin(x->at, Q + (size_t)i0 * d, d, na, pb->s.scale);
    if (W > 0) {
        const int ka = i0 - W + 1 > 0 ? i0 - W + 1 : 0;
        const int kb = causal ? i0 + na : (i0 + na - 1 + W < N ? i0 + na - 1 + W : N);
        int lo[BK_QT], hi[BK_QT];
        for (int a = 0; a < na; a++) {
            const int i = i0 + a;
            int ml, mh;
            ab_mask_span(mask, i, &ml, &mh);
            const int l0 = i - W + 1 > ml ? i - W + 1 : ml,
                      h0 = (causal ? i + 1 : i + W) < mh ? (causal ? i + 1 : i + W) : mh;
            lo[a] = l0 - ka;
            hi[a] = h0 - ka;
        }
        if (mask->def->interval) {
            ab_attn_tile_keys(x->at, K + (size_t)ka * d, V + (size_t)ka * d, kb - ka, lo, hi);
        } else {
            for (int j = ka; j < kb; j++) {
                unsigned char *al = x->allow + (size_t)(j - ka) * BK_QT;
                for (int a = 0; a < na; a++)
                    al[a] = j - ka >= lo[a] && j - ka < hi[a] && ab_mask_allows(mask, i0 + a, j);
            }
            ab_attn_tile_keys_map(x->at, K + (size_t)ka * d, V + (size_t)ka * d, kb - ka, x->allow, BK_QT);
        }
    }
    ab_attn_tile_end(x->at, o, d, lse);
    const size_t off = (size_t)h * rt->C * rt->w;
    const int32_t *qptr = rt->qptr + (size_t)h * (N + 1);
    for (int a = 0; a < na; a++) {
        const int i = i0 + a;
        for (int u = qptr[i]; u < qptr[i + 1]; u++) {
            const size_t sl = off + (size_t)rt->qslot[off + u];
            lse_merge(o + (size_t)a * d, &lse[a], po + sl * d, pl[sl], 0.0f, d);
        }
    }
}

/* The clustered run: every (head, cluster) against its own keys in parallel
 * (a part per query slot), then every row merges its window and its
 * clusters' parts in cluster order (thread-count independent). */
static int rt_attend(const routing_state *st, const ab_problem *pb, float *out)
{
    const rt_cache *rt = &st->rt;
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim, C = rt->C, w = rt->w;
    const size_t slots = (size_t)H * C * w;
    const int ntq = (N + BK_QT - 1) / BK_QT; /* rt_rows' query tiles per head */
    const long span = (long)BK_QT + 2L * st->window;
    const int kcap = w > span ? w : (int)(span < N ? span : N);
    float *pl = malloc(slots * sizeof *pl), *po = malloc(slots * d * sizeof *po);
    /* C <= 64: each query's and key's clusters as a bit set (heads, N) */
    uint64_t *qm = C <= 64 ? calloc((size_t)H * N, sizeof *qm) : NULL;
    uint64_t *km = C <= 64 ? calloc((size_t)H * N, sizeof *km) : NULL;
    int rc = pl && po && (C > 64 || (qm && km)) ? AB_OK : AB_ENOMEM;
    const ab_mask mask = ab_shape_mask(&pb->s);
    for (int h = 0; rc == AB_OK && qm && h < H; h++) {
        const int32_t *qptr = rt->qptr + (size_t)h * (N + 1), *qcl = rt->qcl + (size_t)h * C * w;
        const int32_t *kptr = rt->kptr + (size_t)h * (N + 1), *kcl = rt->kcl + (size_t)h * C * w;
        for (int i = 0; i < N; i++) {
            for (int u = qptr[i]; u < qptr[i + 1]; u++) qm[(size_t)h * N + i] |= (uint64_t)1 << qcl[u];
            for (int u = kptr[i]; u < kptr[i + 1]; u++) km[(size_t)h * N + i] |= (uint64_t)1 << kcl[u];
        }
    }
    if (rc == AB_OK) {
#pragma omp parallel
        {
            rt_scratch x = {
                .at = ab_attn_tile_new(d, BK_QT),
                .qg = malloc((size_t)BK_QT * d * sizeof(float)),
                .kg = malloc((size_t)w * d * sizeof(float)),
                .vg = malloc((size_t)w * d * sizeof(float)),
                .allow = malloc((size_t)kcap * BK_QT),
                .kcap = kcap,
            };
            const int ok = x.at && x.qg && x.kg && x.vg && x.allow;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int hc = 0; hc < H * C; hc++) {
                if (!ok) continue;
                const size_t off = (size_t)(hc / C) * C * w;
                const size_t ho = (size_t)(hc / C) * N;
                rt_cluster(st, pb, &mask, hc / C, hc % C, qm ? qm + ho : NULL, km ? km + ho : NULL, pl + off,
                           po + off * d, &x);
            }
#pragma omp for schedule(dynamic, 4)
            for (int t = 0; t < H * ntq; t++) {
                const int h = t / ntq, i0 = (t % ntq) * BK_QT;
                if (ok) rt_rows(st, pb, &mask, h, i0, N - i0 < BK_QT ? N - i0 : BK_QT, pl, po, &x, out);
            }
            ab_attn_tile_free(x.at);
            free(x.qg);
            free(x.kg);
            free(x.vg);
            free(x.allow);
        }
    }
    free(pl);
    free(po);
    free(qm);
    free(km);
    return rc;
}

/* The clustered run when the routing select() left matches the problem;
 * otherwise (run() on another problem: the check's perturbed keys) the
 * shared kernel on the layout, the same key sets. */
static int routing_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    const routing_state *st = state;
    if (!rt_matches(st, pb)) return ab_kernel_layout(pb, l, out);
    const int rc = rt_attend(st, pb, out);
    if (rc == AB_ENOMEM) ab_set_error(state, "routing: out of memory");
    return rc;
}

const ab_method ab_routing = {
    .abi = AB_ABI_VERSION,
    .family = "hashing",
    .name = "routing",
    .summary = "Routing Transformer: shared spherical k-means on Q and K, each centroid takes its N/C nearest "
               "queries and keys (balanced), query keeps its clusters' keys + a local window (token rows)",
    .reference = "Routing Transformer (Roy, Saffar, Vaswani, Grangier 2021, TACL, arXiv 2003.05997); "
                 "google-research/google-research routing_transformer/utils.py",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_CLUSTERS] = { .name = "n_clusters", .def = 16, .min = 1, .max = 4096, .is_int = 1,
                         .help = "k-means centroids C per head; each takes ceil(N/C) queries and keys "
                                 "(capped at N; 1 = dense)" },
        [P_ITERS] = { .name = "iters", .def = 4, .min = 0, .max = 100, .is_int = 1,
                      .help = "Lloyd iterations from the seeded init (random distinct points)" },
        [P_WINDOW] = { .name = "window", .def = 32, .min = 0, .max = 1 << 24, .is_int = 1,
                       .help = "local keys (i - window, i] every query keeps besides its clusters' keys" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_CLUSTERS, .increasing = 0, .log_scale = 1 },
    .state_size = sizeof(routing_state),
    .init = routing_init,
    .select = routing_select,
    .run = routing_run,
    .fini = routing_fini,
};
AB_REGISTER(ab_routing)
