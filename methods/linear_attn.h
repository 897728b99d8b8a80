/* linear_attn.h — normalised linear attention over given feature maps, the
 * shared kernel of methods/performer.c and methods/lawcat_proxy.c. Header-only
 * (static inline), not a method: it registers nothing.
 *
 * Given per head the query features PQ (N, m), key features PK (N, m) (non-
 * negative, so every weight below is >= 0), values V (N, d) and optionally a
 * per-step decay a_t = exp(logdecay[t]) in (0, 1], it computes
 *     out_i = sum_j g_ij (pq_i . pk_j) v_j / sum_j g_ij (pq_i . pk_j)
 * with, causal: j <= i and g_ij = prod_{t=j+1..i} a_t (1 without decay), i.e.
 * the recurrence S_t = a_t S_{t-1} + pk_t v_t^T, z_t = a_t z_{t-1} + pk_t,
 * out_t = pq_t S_t / pq_t . z_t; non-causal: all j, g = 1 (no decay).
 *
 * Causal is chunked (LA_CHUNK rows; the "chunkwise parallel" form of linear
 * attention, Katharopoulos et al. 2020 / Yang et al. 2023 GLA): inside a chunk
 * a masked L x L score tile (bs_gemm_nt, decay exp(lb_i - lb_j) with lb the
 * running log-decay, never > 1) times V (bs_gemm_nn); across chunks the
 * carried state S (m, d) and z (m): out += diag(exp(lb_i)) PQ S, then
 * S <- exp(lb_L) S + (f * PK)^T V with f_j = exp(lb_L - lb_j). O(N (m d + C (m
 * + d))) time, O(m d) state per worker: linear in N.
 * Parallelism: over heads, and when heads < threads also over segments of
 * whole chunks of one head with a prefix pass (phase 1: each segment's own end
 * state from zero, in parallel; phase 2: per head, the start state of each
 * segment by the recurrence over segments; phase 3: every segment's outputs
 * from its start state, in parallel). Non-causal: phase 1 partial sums, phase
 * 2 their total (fixed order), phase 3 out = PQ S / PQ z. The result depends
 * on the segment count (thread count) only by float rounding; for a given
 * thread count it is deterministic.
 * Features: given whole, or made a chunk at a time by a hook of the
 * method's (la_args.feat) where the pass reaches the chunk, so that no
 * (heads, N, m) array is written and read back (performer).
 */
#ifndef AB_METHODS_LINEAR_ATTN_H
#define AB_METHODS_LINEAR_ATTN_H

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/vecf.h"

#define LA_CHUNK 64
_Static_assert(LA_CHUNK == BS_PANEL, "a chunk's transposed key features are one packed panel");

/* Features made a chunk at a time (la_args.feat): rows [r0, r0 + L) of
 * head h, L <= LA_CHUNK, query features into fq (L, m) and key features
 * into fk (L, m), each only when not NULL (the pass wants it). Called
 * concurrently from every worker: ctx is shared, read-only. */
typedef void (*la_feat_fn)(const void *ctx, int h, int r0, int L, float *fq, float *fk);

typedef struct la_args {
    int heads, n, m, d;
    int causal;
    /* (heads, n, m) both; or both NULL and feat given: each chunk's
     * features made where the pass reaches it (a worker's own buffers, in
     * cache), never written out whole. */
    const float *pq, *pk;
    la_feat_fn feat;
    const void *ctx;
    const float *v; /* (heads, n, d) */
    /* NULL (no decay) or log a_t <= 0 per step: (heads, n) with head stride
     * ld_stride (0: one array for every head). Causal only. */
    const float *logdecay;
    size_t ld_stride;
    float *out; /* (heads, n, d) */
} la_args;

/* The feature arrays of a linear-attention run(), held in the method's
 * state: pk, the last run's key features or what they are made from
 * (performer: the keys' projections; weights() reads them), and pq,
 * query-feature scratch (NULL when not asked for); both (heads, n, m)
 * floats for head_dim d. Kept for the next run() of the same shape:
 * freed and allocated per call,
 * arrays at or above the timing's 32 MiB mmap threshold (64 MB at 16K for
 * performer) were mapped afresh and page-faulted in on every timed call. */
typedef struct la_feats {
    int heads, n, d, m;
    float *pk, *pq;
} la_feats;

static inline void la_feats_free(la_feats *f)
{
    free(f->pk);
    free(f->pq);
    f->pk = f->pq = NULL;
}

/* f's arrays for this shape (pq only when with_q): the kept ones when
 * it matches, else fresh ones. Returns 1 when fresh (arrays of the
 * caller's that follow the shape must be made again), 0 when kept; on
 * allocation failure pk (or a wanted pq) is NULL. */
static inline int la_feats_ensure(la_feats *f, int heads, int n, int d, int m, int with_q)
{
    if (f->pk && (f->pq || !with_q) && f->heads == heads && f->n == n && f->d == d && f->m == m) return 0;
    la_feats_free(f);
    f->heads = heads;
    f->n = n;
    f->d = d;
    f->m = m;
    f->pk = malloc((size_t)heads * n * m * sizeof(float));
    f->pq = with_q ? malloc((size_t)heads * n * m * sizeof(float)) : NULL;
    return 1;
}

/* 1 if f holds key features of head `head` of an (n, d) problem. */
static inline int la_feats_hold(const la_feats *f, int n, int d, int head)
{
    return f->pk && f->n == n && f->d == d && head >= 0 && head < f->heads;
}

typedef struct la_work {
    float *t;   /* (C, C) score tile */
    float *kt;  /* (m, C) PK^T of a chunk (decayed for the state update) */
    float *qs;  /* (C, m) decayed PQ of a chunk */
    float *bt;  /* gemm scratch */
    double *lb; /* (C) running log-decay */
    double *den;
    float *fq, *fk; /* (C, m) a chunk's features (la_args.feat), else NULL */
} la_work;

static inline void la_work_free(la_work *w)
{
    free(w->fq);
    free(w->fk);
    free(w->t);
    free(w->kt);
    free(w->qs);
    free(w->bt);
    free(w->lb);
    free(w->den);
}

static inline int la_work_alloc(la_work *w, int m, int d, int feat)
{
    if (feat) {
        w->fq = malloc((size_t)LA_CHUNK * m * sizeof(float));
        w->fk = malloc((size_t)LA_CHUNK * m * sizeof(float));
        if (!w->fq || !w->fk) return 0;
    }
    int deep = m > d ? m : d;
    deep = deep > BS_KC ? deep : BS_KC;
    w->t = malloc((size_t)LA_CHUNK * LA_CHUNK * sizeof(float));
    w->kt = malloc((size_t)m * LA_CHUNK * sizeof(float));
    w->qs = malloc((size_t)LA_CHUNK * m * sizeof(float));
    w->bt = malloc((size_t)deep * BS_PANEL * sizeof(float));
    w->lb = malloc(LA_CHUNK * sizeof(double));
    w->den = malloc(LA_CHUNK * sizeof(double));
    return w->t && w->kt && w->qs && w->bt && w->lb && w->den;
}

/* sum_r x[r] z[r] in double: sixteen lanes (r mod 16; vdr_sum16: lane
 * u + 8 onto lane u, then pairs), then the scalar tail. The normaliser of a row
 * (pq_i . z); a scalar chain of m dependent adds was a quarter of
 * la_chunk's own time. */
static inline double la_dot(const float *x, const double *z, int m)
{
    vdr a[16 / VDR]; /* lane u: the terms r + u, r a multiple of 16 */
    for (int v = 0; v < 16 / VDR; v++) a[v] = (vdr){ 0 };
    int r = 0;
    for (; r + 16 <= m; r += 16)
        for (int v = 0; v < 16 / VDR; v++) a[v] += vdr_of_f(x + r + v * VDR) * vdr_load(z + r + v * VDR);
    for (; r + 8 <= m; r += 8)
        for (int v = 0; v < 8 / VDR; v++) a[v] += vdr_of_f(x + r + v * VDR) * vdr_load(z + r + v * VDR);
    double s = vdr_sum16(a);
    for (; r < m; r++) s += (double)x[r] * z[r];
    return s;
}

/* z[r] += sum_{j < L} fl(pk[j][r] f[j]) for r < m (f NULL: 1), each sum in
 * double in j order from zero, as the scalar loop over kt's rows: the
 * same bits, 32 columns of pk at a time along its rows. Returns the
 * first column it left (the caller sums the rest). */
static inline int la_colsums(const float *pk, int L, int m, const float *f, double *z)
{
    int r = 0;
    for (; r + 32 <= m; r += 32) {
        vdr sv[32 / VDR];
        for (int v = 0; v < 32 / VDR; v++) sv[v] = (vdr){ 0 };
        for (int j = 0; j < L; j++) {
            const float *p = pk + (size_t)j * m + r;
            for (int v = 0; v < 32 / VDR; v++) {
                vdrf x;
                memcpy(&x, p + v * VDR, sizeof x);
                if (f) x *= f[j];
                sv[v] += vdr_widen(x);
            }
        }
        for (int v = 0; v < 32 / VDR; v++) {
            const vdr zv = vdr_load(z + r + v * VDR) + sv[v];
            memcpy(z + r + v * VDR, &zv, sizeof zv);
        }
    }
    return r;
}

/* One causal chunk of L rows. S (m, d), z (m) hold the state before the chunk
 * (have_state: nonzero); out (L, d) or NULL (state update only); the state is
 * advanced past the chunk when upd. */
static inline void la_chunk(const float *pq, const float *pk, const float *v, const float *ld, int L, int m,
                            int d, float *S, double *z, int have_state, float *out, int upd, la_work *w)
{
    double acc = 0;
    for (int t = 0; t < L; t++) {
        acc += ld ? (double)ld[t] : 0.0;
        w->lb[t] = acc;
    }
    /* kt = pk^T (bs_transpose: a store per element at stride LA_CHUNK
     * was a quarter of performer's run). The score tile reads it as B of
     * a plain product (the same chains as bs_gemm_nt on pk, which
     * transposed pk again into its panel); the state update after the
     * decay scaling below. */
    bs_transpose(pk, (size_t)m, NULL, L, m, w->kt, LA_CHUNK);
    if (out) {
        /* the causal score tile up to each register tile's last row, and
         * the product with V over those keys only (the same chains
         * without their fma(0, v, s) = s steps) */
        int lim[LA_CHUNK / BS_MR + 1];
        bs_tril_scores(pq, m, L, w->kt, m, w->t, LA_CHUNK, lim);
        for (int i = 0; i < L; i++) {
            float *tr = w->t + (size_t)i * LA_CHUNK;
            double s = 0;
            for (int j = 0; j <= i; j++) {
                if (ld) tr[j] *= (float)exp(w->lb[i] - w->lb[j]);
                s += tr[j];
            }
            for (int j = i + 1; j < L; j++) tr[j] = 0.0f;
            w->den[i] = s;
        }
        bs_gemm_nn_rag(w->t, LA_CHUNK, L, v, d, L, lim, d, out, d, 0, w->bt);
        if (have_state) {
            const float *qa = pq;
            if (ld) {
                for (int i = 0; i < L; i++) {
                    const float f = (float)exp(w->lb[i]);
                    for (int r = 0; r < m; r++) w->qs[(size_t)i * m + r] = pq[(size_t)i * m + r] * f;
                }
                qa = w->qs;
            }
            bs_gemm_nn(qa, m, L, S, d, m, d, out, d, 1, w->bt);
            for (int i = 0; i < L; i++) w->den[i] += la_dot(qa + (size_t)i * m, z, m);
        }
        for (int i = 0; i < L; i++) {
            const float inv = w->den[i] > 0 ? (float)(1.0 / w->den[i]) : 0.0f;
            for (int e = 0; e < d; e++) out[(size_t)i * d + e] *= inv;
        }
    }
    if (upd) {
        const double end = w->lb[L - 1];
        float fj[LA_CHUNK];
        for (int j = 0; j < L; j++) fj[j] = ld ? (float)exp(end - w->lb[j]) : 1.0f;
        if (ld)
            for (int r = 0; r < m; r++) {
                float *restrict kr = w->kt + (size_t)r * LA_CHUNK;
                for (int j = 0; j < L; j++) kr[j] *= fj[j];
            }
        if (!have_state) {
            memset(S, 0, (size_t)m * d * sizeof *S);
            for (int r = 0; r < m; r++) z[r] = 0;
        } else if (ld) {
            const float f = (float)exp(end);
            for (size_t t = 0; t < (size_t)m * d; t++) S[t] *= f;
            for (int r = 0; r < m; r++) z[r] *= f;
        }
        bs_gemm_nn(w->kt, LA_CHUNK, m, v, d, L, d, S, d, 1, w->bt);
        for (int r = la_colsums(pk, L, m, ld ? fj : NULL, z); r < m; r++) {
            const float *kr = w->kt + (size_t)r * LA_CHUNK;
            double s = 0;
            for (int j = 0; j < L; j++) s += kr[j];
            z[r] += s;
        }
    }
}

/* Rows [r0, r1) of one head: causal from the state (S, z) (have_state) and
 * writing out when out != NULL; leaves the state after row r1 - 1 in (S, z)
 * when upd. Non-causal (S, z are the totals): out = PQ S / PQ z. */
static inline void la_segment(const la_args *a, int h, int r0, int r1, float *S, double *z, int have_state,
                              int write, int upd, la_work *w)
{
    const int m = a->m, d = a->d, n = a->n;
    const float *pq = a->pq ? a->pq + (size_t)h * n * m : NULL,
                *pk = a->pk ? a->pk + (size_t)h * n * m : NULL, *v = a->v + (size_t)h * n * d;
    const float *ld = a->logdecay ? a->logdecay + (size_t)h * a->ld_stride : NULL;
    float *out = a->out + (size_t)h * n * d;
    /* the pass wants query features where it writes rows, key features
     * where it scores a causal chunk or sums the state */
    const int want_q = write, want_k = a->causal || !write;
    for (int c0 = r0; c0 < r1; c0 += LA_CHUNK) {
        const int L = r1 - c0 < LA_CHUNK ? r1 - c0 : LA_CHUNK;
        const float *cq = pq ? pq + (size_t)c0 * m : NULL, *ck = pk ? pk + (size_t)c0 * m : NULL;
        if (a->feat) {
            a->feat(a->ctx, h, c0, L, want_q ? w->fq : NULL, want_k ? w->fk : NULL);
            cq = w->fq;
            ck = w->fk;
        }
        if (a->causal) {
            const int more = upd || c0 + L < r1;
            la_chunk(cq, ck, v + (size_t)c0 * d, ld ? ld + c0 : NULL, L, m, d, S, z, have_state,
                     write ? out + (size_t)c0 * d : NULL, more, w);
            have_state = have_state || more;
        } else if (write) {
            float *o = out + (size_t)c0 * d;
            bs_gemm_nn(cq, m, L, S, d, m, d, o, d, 0, w->bt);
            for (int i = 0; i < L; i++) {
                const double s = la_dot(cq + (size_t)i * m, z, m);
                const float inv = s > 0 ? (float)(1.0 / s) : 0.0f;
                for (int e = 0; e < d; e++) o[(size_t)i * d + e] *= inv;
            }
        } else { /* non-causal partial sums */
            la_chunk(cq, ck, v + (size_t)c0 * d, NULL, L, m, d, S, z, have_state, NULL, 1, w);
            have_state = 1;
        }
    }
}

/* Segments per head for the current thread count. */
static inline int la_segments(int heads, int n)
{
#ifdef _OPENMP
    const int T = omp_get_max_threads();
#else
    const int T = 1;
#endif
    const int nch = (n + LA_CHUNK - 1) / LA_CHUNK;
    int s = (T + heads - 1) / heads;
    s = s < nch ? s : nch;
    return s > 1 ? s : 1;
}

/* The whole (heads, n) problem; AB_OK, AB_EINVAL (decay without causality,
 * bad sizes) or AB_ENOMEM. */
static inline int la_run(const la_args *a)
{
    const int H = a->heads, n = a->n, m = a->m, d = a->d;
    if (H < 1 || n < 1 || m < 1 || d < 1 || (a->logdecay && !a->causal) || !(a->pq && a->pk) == !a->feat)
        return AB_EINVAL;
    const int nseg = la_segments(H, n);
    const int nch = (n + LA_CHUNK - 1) / LA_CHUNK;
    const size_t md = (size_t)m * d;
    /* per (head, segment): state S (m, d), z (m), segment log-decay */
    float *S = malloc((size_t)H * nseg * md * sizeof *S);
    double *Z = malloc((size_t)H * nseg * m * sizeof *Z);
    double *D = calloc((size_t)H * nseg, sizeof *D);
    float *tmpS = malloc(md * sizeof *tmpS);
    double *tmpZ = malloc((size_t)m * sizeof *tmpZ);
    int rc = (S && Z && D && tmpS && tmpZ) ? AB_OK : AB_ENOMEM;
    const int phase1 = !a->causal || nseg > 1;
    if (rc == AB_OK) {
#pragma omp parallel
        {
            la_work w = { 0 };
            const int ok = la_work_alloc(&w, m, d, a->feat != NULL);
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
            if (phase1) {
#pragma omp for schedule(dynamic, 1)
                for (int t = 0; t < H * nseg; t++) {
                    const int h = t / nseg, s = t % nseg;
                    const int r0 = (int)((long)nch * s / nseg) * LA_CHUNK,
                              r1e = (int)((long)nch * (s + 1) / nseg) * LA_CHUNK;
                    const int r1 = r1e < n ? r1e : n;
                    if (!ok || (a->causal && s == nseg - 1)) continue;
                    la_segment(a, h, r0, r1, S + (size_t)t * md, Z + (size_t)t * m, 0, 0, 1, &w);
                    if (a->logdecay) {
                        const float *ld = a->logdecay + (size_t)h * a->ld_stride;
                        double acc = 0;
                        for (int i = r0; i < r1; i++) acc += ld[i];
                        D[t] = acc;
                    }
                }
#pragma omp single
                {
                    for (int h = 0; h < H && rc == AB_OK; h++) {
                        float *Sh = S + (size_t)h * nseg * md;
                        double *Zh = Z + (size_t)h * nseg * m;
                        if (a->causal) { /* exclusive prefix: segment s's start state */
                            memset(tmpS, 0, md * sizeof *tmpS);
                            for (int r = 0; r < m; r++) tmpZ[r] = 0;
                            for (int s = 0; s < nseg; s++) {
                                float *Ss = Sh + (size_t)s * md;
                                double *Zs = Zh + (size_t)s * m;
                                const float f = (float)exp(D[(size_t)h * nseg + s]);
                                for (size_t q = 0; q < md; q++) {
                                    const float loc = s < nseg - 1 ? Ss[q] : 0.0f;
                                    Ss[q] = tmpS[q];
                                    tmpS[q] = f * tmpS[q] + loc;
                                }
                                for (int r = 0; r < m; r++) {
                                    const double loc = s < nseg - 1 ? Zs[r] : 0.0;
                                    Zs[r] = tmpZ[r];
                                    tmpZ[r] = f * tmpZ[r] + loc;
                                }
                            }
                        } else { /* totals into segment 0 */
                            for (int s = 1; s < nseg; s++) {
                                for (size_t q = 0; q < md; q++) Sh[q] += Sh[(size_t)s * md + q];
                                for (int r = 0; r < m; r++) Zh[r] += Zh[(size_t)s * m + r];
                            }
                        }
                    }
                }
            }
#pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < H * nseg; t++) {
                const int h = t / nseg, s = t % nseg;
                const int r0 = (int)((long)nch * s / nseg) * LA_CHUNK,
                          r1e = (int)((long)nch * (s + 1) / nseg) * LA_CHUNK;
                const int r1 = r1e < n ? r1e : n;
                if (!ok) continue;
                if (a->causal)
                    la_segment(a, h, r0, r1, S + (size_t)t * md, Z + (size_t)t * m, s > 0, 1, 0, &w);
                else
                    la_segment(a, h, r0, r1, S + (size_t)h * nseg * md, Z + (size_t)h * nseg * m, 1, 1, 0,
                               &w);
            }
            la_work_free(&w);
        }
    }
    free(S);
    free(Z);
    free(D);
    free(tmpS);
    free(tmpZ);
    return rc;
}

#endif
