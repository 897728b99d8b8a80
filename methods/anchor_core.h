/* anchor_core.h — the stripe selection of AnchorAttention (Zhang et al.
 * 2025, "AnchorAttention: Difference-Aware Sparse Attention with Stripe
 * Granularity", arXiv 2505.23520), shared by `anchor` (the official
 * geometry, methods/anchor.c) and `anchor_small` (our small-region variant,
 * methods/anchor_small.c). Header-only (static inline), not a method: it
 * registers nothing.
 *
 * For one group of query rows [r0, r1) with a dense initial region of keys
 * [0, init1) and a dense local region [loc0, loc1):
 *  1. anchor (pattern-based anchor computation): a_i = the largest logit
 *     s * q_i . k_j of row i over the initial and local regions (causal:
 *     j <= i), the row max the official step 1 leaves in its M buffer;
 *  2. the group's rows are cut into sub-blocks of `sub` rows; each gives a
 *     pooled query qbar_t (mean of its rows) and a pooled anchor abar_t
 *     (mean of its a_i);
 *  3. difference-aware stripes: a key j outside both regions (causal: j <
 *     r1) is kept iff for SOME sub-block t, s * qbar_t . k_j + theta >=
 *     abar_t; the kept keys form one sorted list for the whole group.
 * The anchor pass runs only when the group has a candidate key.
 */
#ifndef AB_METHODS_ANCHOR_CORE_H
#define AB_METHODS_ANCHOR_CORE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "methods/block_score.h"
#include "methods/vecf.h"

#define ANC_CHUNK 1024 /* keys scored per panel */
#ifndef ANC_BATCH
#define ANC_BATCH 32 /* groups scored together at most (anc_keep) */
#endif

/* One group: query rows [r0, r1), pooled in sub-blocks of `sub` rows; dense
 * regions [0, init1) and [loc0, loc1) (keys). */
typedef struct anc_group {
    int r0, r1, sub;
    int init1;
    int loc0, loc1;
} anc_group;

/* Per-thread scratch for groups of at most max_sub rows per sub-block and
 * max_t sub-blocks, head dim d. */
typedef struct anc_scratch {
    float *panel;    /* (max(max_sub, max_t), ANC_CHUNK) logits */
    float *qbar;     /* (max_t, d) pooled queries */
    double *abar;    /* (max_t) pooled anchors */
    float *thr;      /* (max_t) their float thresholds (anc_thr) */
    float *rmax;     /* (max_sub) running row maxima */
    float *bt;       /* (d, BS_PANEL) gemm scratch */
    const float *kp; /* the head's K packed by bs_pack_nt (set by the caller), or
                        NULL: each panel of keys transposed where it is used */
    double flops;    /* work of the groups this scratch scored (anc_stripes adds) */
    double bytes;
} anc_scratch;

static inline int anc_scratch_alloc(anc_scratch *s, int max_sub, int max_t, int d)
{
    const int rows = max_sub > max_t ? max_sub : max_t;
    s->panel = malloc((size_t)rows * ANC_CHUNK * sizeof *s->panel);
    s->qbar = malloc((size_t)max_t * d * sizeof *s->qbar);
    s->abar = malloc((size_t)max_t * sizeof *s->abar);
    s->thr = malloc((size_t)max_t * sizeof *s->thr);
    s->rmax = malloc((size_t)max_sub * sizeof *s->rmax);
    s->bt = malloc((size_t)d * BS_PANEL * sizeof *s->bt);
    s->kp = NULL;
    s->flops = s->bytes = 0.0;
    return s->panel && s->qbar && s->abar && s->thr && s->rmax && s->bt;
}

static inline void anc_scratch_free(anc_scratch *s)
{
    free(s->panel);
    free(s->qbar);
    free(s->abar);
    free(s->thr);
    free(s->rmax);
    free(s->bt);
}

/* The candidate key ranges of g: [0, kend) minus the two dense regions, as
 * at most two ranges c[0..1] = [c0, c1); returns their total size. */
static inline int anc_candidates(const anc_group *g, int kend, int c[2][2])
{
    const int a = g->loc0 > g->init1 ? g->loc0 : g->init1; /* the local region beyond the initial one */
    c[0][0] = g->init1;
    c[0][1] = a < kend ? a : kend; /* between the regions */
    c[1][0] = g->loc1 > g->init1 ? g->loc1 : g->init1;
    c[1][1] = kend; /* after both */
    int n = 0;
    for (int r = 0; r < 2; r++) {
        if (c[r][1] < c[r][0]) c[r][1] = c[r][0];
        n += c[r][1] - c[r][0];
    }
    return n;
}

/* Logits of rows [a, a + m) of the m rows at x (stride d) against keys
 * [j0, j0 + nj) into s->panel (row stride nj); j0 a multiple of BS_PANEL
 * when s->kp is set (its panels are used in place). */
static inline void anc_logits(const float *x, int m, const float *k, int d, float scale, int j0, int nj,
                              anc_scratch *s)
{
    if (s->kp)
        bs_gemm_nt_packed(x, d, m, s->kp + (size_t)(j0 / BS_PANEL) * d * BS_PANEL, nj, d, scale, s->panel,
                          nj);
    else
        bs_gemm_nt(x, d, m, k + (size_t)j0 * d, d, nj, d, scale, s->panel, nj, s->bt);
}

/* The first key of the panel loop over keys from k0: k0 itself, or the
 * start of its packed panel. */
static inline int anc_first(const anc_scratch *s, int k0) { return s->kp ? k0 / BS_PANEL * BS_PANEL : k0; }

/* Running max over keys [k0, k1) of the logits of rows [a, b): rmax[i - a]
 * (causal: keys j <= i only). */
static inline void anc_rowmax(const float *q, const float *k, int d, float scale, int causal, int a, int b,
                              int k0, int k1, anc_scratch *s)
{
    for (int j0 = anc_first(s, k0); j0 < k1; j0 += ANC_CHUNK) {
        const int nj = k1 - j0 < ANC_CHUNK ? k1 - j0 : ANC_CHUNK, lo = k0 > j0 ? k0 - j0 : 0;
        if (causal && j0 >= b) break;
        anc_logits(q + (size_t)a * d, b - a, k, d, scale, j0, nj, s);
        for (int i = a; i < b; i++) {
            const float *row = s->panel + (size_t)(i - a) * nj;
            const int n = causal ? (i - j0 + 1 < nj ? i - j0 + 1 : nj) : nj;
            float m = s->rmax[i - a];
#pragma omp simd reduction(max : m)
            for (int j = lo; j < n; j++) m = row[j] > m ? row[j] : m;
            s->rmax[i - a] = m;
        }
    }
}

/* Pairs (row i in [a, b), key j in [x0, x1)) with j <= i under causal. */
static inline double anc_pairs(int a, int b, int x0, int x1, int causal)
{
    if (x1 <= x0 || b <= a) return 0.0;
    if (!causal) return (double)(b - a) * (x1 - x0);
    double n = 0.0;
    for (int i = a; i < b; i++) {
        const int e = i + 1 < x1 ? i + 1 : x1;
        n += e > x0 ? e - x0 : 0;
    }
    return n;
}

/* Steps 1-2 for group g of one head: its T sub-blocks' pooled queries and
 * anchors into qbar, abar from row t0 on; returns T (0: no candidate key,
 * nothing written). Adds the algorithm's work to s->flops and s->bytes:
 * anchors 2d+1 per (row, region key) pair (causal), pooling rows*(d+1)
 * adds, stripe logits 2d+1 per (sub-block, candidate key); bytes the
 * group's Q rows. The K rows of the regions and candidates are every
 * group's: the caller counts K once per head (the least a pass that scores
 * all groups' pooled queries against each key panel reads; until
 * 2026-12-06 every group counted its own, N / 64 times K at 16K for
 * anchor_small, 30x the FLOPs' time at the STREAM bandwidth). */
static inline int anc_pool(const float *q, const float *k, int N, int d, int causal, float scale,
                           const anc_group *g, anc_scratch *s, int t0)
{
    const int kend = causal ? (g->r1 < N ? g->r1 : N) : N;
    int c[2][2];
    const int ncand = anc_candidates(g, kend, c);
    if (ncand == 0) return 0;
    /* the two dense regions, the local one without what the initial one has */
    const int dr[2][2] = {
        { 0, g->init1 }, { g->loc0 > g->init1 ? g->loc0 : g->init1, g->loc1 > g->init1 ? g->loc1 : g->init1 }
    };
    const int T = (g->r1 - g->r0 + g->sub - 1) / g->sub;
    for (int t = 0; t < T; t++) {
        const int a = g->r0 + t * g->sub, b = a + g->sub < g->r1 ? a + g->sub : g->r1;
        for (int i = a; i < b; i++) s->rmax[i - a] = -INFINITY;
        for (int r = 0; r < 2; r++) anc_rowmax(q, k, d, scale, causal, a, b, dr[r][0], dr[r][1], s);
        double sum = 0.0;
        for (int i = a; i < b; i++) sum += s->rmax[i - a];
        s->abar[t0 + t] = sum / (b - a);
        bs_mean_rows(q, d, a, b - a, s->qbar + (size_t)(t0 + t) * d);
    }
    const int rows = g->r1 - g->r0;
    double pairs = 0.0;
    for (int r = 0; r < 2; r++) pairs += anc_pairs(g->r0, g->r1, dr[r][0], dr[r][1], causal);
    s->flops += (2.0 * d + 1) * pairs + (double)rows * (d + 1) + (2.0 * d + 1) * T * ncand;
    s->bytes += 4.0 * (double)rows * d;
    return T;
}

/* Floats in value order as int32 (the map is its own inverse; NaNs fall
 * outside [key(-inf), key(+inf)]). */
static inline int32_t anc_key(float x)
{
    int32_t b;
    memcpy(&b, &x, sizeof b);
    return b ^ ((b >> 31) & 0x7fffffff);
}
static inline float anc_unkey(int32_t k)
{
    const int32_t b = k ^ ((k >> 31) & 0x7fffffff);
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* The smallest float x with (double)x + theta >= abar, into *thr (NaN if
 * no float passes): then for every float logit, NaN included, the test
 * logit >= *thr is the double one. With theta finite, (double)x + theta
 * never decreases as x grows, so a binary search over the floats in order
 * finds it (32 steps). 0 for a theta that is not finite (the caller keeps
 * the double test). */
static inline int anc_thr(double abar, double theta, float *thr)
{
    if (!isfinite(theta)) return 0;
    if (!((double)INFINITY + theta >= abar)) { /* not even +inf: NaN abar, or +inf */
        *thr = NAN;
        return 1;
    }
    int64_t lo = anc_key(-INFINITY), hi = anc_key(INFINITY); /* hi passes (int64: hi - lo > 2^31) */
    if ((double)-INFINITY + theta >= abar) {
        *thr = -INFINITY;
        return 1;
    }
    while (hi - lo > 1) { /* lo fails, hi passes */
        const int64_t mid = lo + (hi - lo) / 2;
        if ((double)anc_unkey((int32_t)mid) + theta >= abar)
            hi = mid;
        else
            lo = mid;
    }
    *thr = anc_unkey((int32_t)hi);
    return 1;
}

typedef float v16f __attribute__((vector_size(16 * sizeof(float))));
typedef int v16i __attribute__((vector_size(16 * sizeof(int))));

/* Append j + u for the lanes u of *keep that are set (all bits) to out[n..]
 * (a pointer: a 64-byte vector passed by value has another ABI without
 * AVX-512);
 * returns the new n. Writes out[n .. n + 15] at most. */
static inline int anc_emit(int32_t *out, int n, const v16i *keep, int j)
{
#if defined(__AVX512F__)
    __m512i kv;
    memcpy(&kv, keep, sizeof kv);
    const __mmask16 m = _mm512_test_epi32_mask(kv, kv);
    if (m) {
        const __m512i idx = _mm512_add_epi32(
            _mm512_set1_epi32(j), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        _mm512_mask_compressstoreu_epi32(out + n, m, idx);
        n += __builtin_popcount((unsigned)m);
    }
#else
    for (int u = 0; u < 16; u++) {
        out[n] = j + u;
        n += (*keep)[u] != 0;
    }
#endif
    return n;
}

/* Step 3 for ng groups g[0, ng) of one head pooled by anc_pool, group b's
 * T[b] sub-blocks at rows t0[b] of qbar, abar (T[b] = 0: no candidate):
 * the kept keys of group b, sorted, into stripes + b * ldst, their count
 * into n[b]. All pooled queries of the groups go through one product per
 * panel of keys (block_score.h's register-tiled GEMM; OpenBLAS's packing
 * cost more than the multiply at these shapes), so that a group of one
 * sub-block (anchor_small) is not a matrix-vector product re-reading K:
 * each group then keeps the keys of its own candidate ranges. */
static inline void anc_keep(const float *k, int N, int d, int causal, float scale, double theta,
                            const anc_group *g, const int *T, const int *t0, int ng, anc_scratch *s,
                            int32_t *stripes, size_t ldst, int *n)
{
    int c[ANC_BATCH][2][2], e[ANC_BATCH], ka = N, kz = 0, rows = 0;
    for (int b = 0; b < ng; b++) {
        n[b] = e[b] = 0; /* e[b]: the end of group b's candidates */
        if (!T[b]) continue;
        anc_candidates(&g[b], causal ? (g[b].r1 < N ? g[b].r1 : N) : N, c[b]);
        for (int r = 0; r < 2; r++)
            if (c[b][r][1] > c[b][r][0]) {
                ka = c[b][r][0] < ka ? c[b][r][0] : ka;
                kz = c[b][r][1] > kz ? c[b][r][1] : kz;
                e[b] = c[b][r][1] > e[b] ? c[b][r][1] : e[b];
            }
        rows = t0[b] + T[b] > rows ? t0[b] + T[b] : rows;
    }
    /* the test (double)logit + theta >= abar[t] as logit >= thr[t] in
     * float (anc_thr), when every threshold has one */
    int fast = 1;
    for (int t = 0; t < rows && fast; t++) fast = anc_thr(s->abar[t], theta, &s->thr[t]);
    for (int j0 = anc_first(s, ka); j0 < kz; j0 += ANC_CHUNK) {
        const int nj = kz - j0 < ANC_CHUNK ? kz - j0 : ANC_CHUNK;
        /* only the rows from the first group whose candidates reach this
         * panel (under causal a batch's early groups end before its last
         * panels); each row's logits are the same chains whatever rows
         * share the product */
        int r0 = rows;
        for (int b = 0; b < ng; b++)
            if (T[b] && e[b] > j0 && t0[b] < r0) r0 = t0[b];
        if (r0 == rows) continue;
        anc_logits(s->qbar + (size_t)r0 * d, rows - r0, k, d, scale, j0, nj, s);
        for (int b = 0; b < ng; b++) {
            if (!T[b] || e[b] <= j0) continue;
            int32_t *out = stripes + (size_t)b * ldst;
            for (int r = 0; r < 2; r++) {
                const int x0 = c[b][r][0] > j0 ? c[b][r][0] : j0;
                const int x1 = c[b][r][1] < j0 + nj ? c[b][r][1] : j0 + nj;
                /* sixteen keys at a time: lane u is kept iff some
                 * sub-block t has logit >= thr[t], the scalar test */
                int j = x0;
#if defined(__AVX2__) && !defined(__AVX512F__)
                /* eight keys at a time in one register (the 16-lane GNU
                 * vectors went through the stack without AVX-512, and
                 * the emit was a scalar loop: a quarter of anchor_small's
                 * select() on a Zen 3, 2026-12-07) */
                if (fast)
                    for (; j + 8 <= x1; j += 8) {
                        __m256 keep = _mm256_setzero_ps();
                        for (int t = t0[b]; t < t0[b] + T[b]; t++)
                            keep = _mm256_or_ps(
                                keep,
                                _mm256_cmp_ps(_mm256_loadu_ps(s->panel + (size_t)(t - r0) * nj + (j - j0)),
                                              _mm256_set1_ps(s->thr[t]), _CMP_GE_OQ));
                        n[b] = bs_emit_bits8(out, n[b], (unsigned)_mm256_movemask_ps(keep), j);
                    }
#endif
                if (fast)
                    for (; j + 16 <= x1; j += 16) {
                        v16i keep = { 0 };
                        for (int t = t0[b]; t < t0[b] + T[b]; t++) {
                            v16f lf;
                            memcpy(&lf, s->panel + (size_t)(t - r0) * nj + (j - j0), sizeof lf);
                            keep |= lf >= s->thr[t];
                        }
                        n[b] = anc_emit(out, n[b], &keep, j);
                    }
                for (; j < x1; j++)
                    for (int t = t0[b]; t < t0[b] + T[b]; t++)
                        if ((double)s->panel[(size_t)(t - r0) * nj + (j - j0)] + theta >= s->abar[t]) {
                            out[n[b]++] = j;
                            break;
                        }
            }
        }
    }
    for (int b = 0; b < ng; b++) s->bytes += 4.0 * n[b];
}

/* Steps 1-3 for group g of one head (q, k: (N, d)); the kept keys, sorted,
 * into stripes; returns their count. */
static inline int anc_stripes(const float *q, const float *k, int N, int d, int causal, float scale,
                              double theta, const anc_group *g, anc_scratch *s, int32_t *stripes)
{
    const int T = anc_pool(q, k, N, d, causal, scale, g, s, 0), t0 = 0;
    int n = 0;
    if (T) anc_keep(k, N, d, causal, scale, theta, g, &T, &t0, 1, s, stripes, 0, &n);
    return n;
}
#endif
