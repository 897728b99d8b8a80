/* periodic.h — exact attention over a window plus a residue class, computed
 * from the pattern instead of from a layout: the run() of the row-periodic
 * static patterns, the strided heads of the Sparse Transformer (Child et al.
 * 2019, arXiv 1904.10509) and Longformer's dilated window (Beltagy et al.
 * 2020, arXiv 2004.05150). Header-only (static inline), not a method: it
 * registers nothing.
 *
 * The pattern: head h has a period p_h >= 1, and row i of head h keeps
 *   W_i = [wlo, whi)                                   consecutive keys, and
 *   S_i = { j : j = i (mod p_h), slo <= j < shi } \ W_i   keys of i's class,
 * both as the method's row function states them (clipped to [0, N)), each
 * intersected with the base mask. The output row is the exact softmax over
 * W_i ∪ S_i (zero when empty), so it equals the fp64 reference on the layout
 * the method's select() builds for the same rows, up to float rounding.
 *
 * Why not the layout kernel: these layouts have one-row query blocks (the
 * class of row i differs from that of row i + 1), and a layout holds every
 * (row, key) entry, O(H N w) of them, built in select(). Here select() builds
 * nothing in timed calls (ABI 8) and the work is tiled by structure:
 *   phase 1: the windows, 64 consecutive rows against their contiguous key
 *            span (K packed straight from its rows, V read in place);
 *   phase 2: the classes, 64 rows c, c + p, c + 2p, ... of class c against
 *            the class's keys in their span (gathered, bs_pack_gather).
 * Each pass is logits by bs_gemm_nt_packed on pre-scaled queries, the
 * row's ranges applied as -inf in branch-free passes, and the online softmax
 * tile update bk_tile_update (methods/bucket.h). A row's updates come in a
 * fixed order (its window's key tiles, then its class's, ascending), so the
 * result does not depend on the thread count. Memory: O(H N) besides the
 * output, plus per thread one query tile and one key tile.
 */
#ifndef AB_METHODS_PERIODIC_H
#define AB_METHODS_PERIODIC_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/bucket.h"

/* The ranges of one row, before the mask: W = [wlo, whi), S = the keys of
 * the row's class in [slo, shi) outside W. Empty ranges: lo >= hi. */
typedef struct pd_row {
    int wlo, whi, slo, shi;
} pd_row;

typedef void (*pd_row_fn)(const void *ctx, int h, int i, pd_row *r);

typedef struct pd_spec {
    const void *ctx;   /* the method's state, passed to row() */
    pd_row_fn row;     /* the ranges of row i of head h */
    const int *period; /* [heads] p_h >= 1, or 0: the head has no class part (S empty) */
} pd_spec;

/* A's range [lo, hi) intersected with [a, b). */
static inline void pd_clip(int *lo, int *hi, int a, int b)
{
    *lo = *lo > a ? *lo : a;
    *hi = *hi < b ? *hi : b;
    if (*hi < *lo) *hi = *lo;
}

/* The scratch of one thread. */
typedef struct pd_scratch {
    float *qg, *kg, *vg, *sc, *o, *bt;
    int32_t *kidx, *rows;
    int lo[BK_QT], hi[BK_QT], xlo[BK_QT], xhi[BK_QT];
} pd_scratch;

static inline void pd_scratch_free(pd_scratch *x)
{
    free(x->qg);
    free(x->kg);
    free(x->vg);
    free(x->sc);
    free(x->o);
    free(x->bt);
    free(x->kidx);
    free(x->rows);
}

static inline int pd_scratch_alloc(pd_scratch *x, int d)
{
    memset(x, 0, sizeof *x);
    x->qg = malloc((size_t)BK_QT * d * sizeof *x->qg);
    x->kg = malloc((size_t)BK_KT * d * sizeof *x->kg);
    x->vg = malloc((size_t)BK_KT * d * sizeof *x->vg);
    x->sc = malloc((size_t)BK_QT * BK_KT * sizeof *x->sc);
    x->o = malloc((size_t)BK_QT * d * sizeof *x->o);
    x->bt = malloc((size_t)(d > BS_KC ? d : BS_KC) * BS_PANEL * sizeof *x->bt);
    x->kidx = malloc((size_t)BK_KT * sizeof *x->kidx);
    x->rows = malloc((size_t)BK_QT * sizeof *x->rows);
    if (x->qg && x->kg && x->vg && x->sc && x->o && x->bt && x->kidx && x->rows) return AB_OK;
    pd_scratch_free(x);
    return AB_ENOMEM;
}

/* Phase 2's logits and update: the tile's na rows (x->qg, pre-scaled)
 * against nk gathered class keys (x->kg packed, x->vg, positions x->kidx)
 * whose class indices start at u0. Row a counts key c when lo[a] <= u0 + c
 * < hi[a], its position lies outside [xlo[a], xhi[a]) (the row's window,
 * counted in phase 1) and, under a mask that is not an interval, the mask
 * allows the pair. */
static inline void pd_class_update(pd_scratch *x, const ab_mask *mask, int na, int nk, int u0, int d,
                                   float *mx, double *sm, float *O)
{
    bs_gemm_nt_packed(x->qg, d, na, x->kg, nk, d, 1.0f, x->sc, BK_KT);
    for (int a = 0; a < na; a++) {
        float *s = x->sc + (size_t)a * BK_KT;
        const int l0 = x->lo[a] - u0, h0 = x->hi[a] - u0; /* in tile columns */
        const int x0 = x->xlo[a], x1 = x->xhi[a];
        const int32_t *kp = x->kidx;
        for (int c = 0; c < nk; c++)
            s[c] = c >= l0 && c < h0 && (kp[c] < x0 || kp[c] >= x1) ? s[c] : -INFINITY;
        if (!mask->def->interval)
            for (int c = 0; c < nk; c++)
                if (s[c] > -INFINITY && !ab_mask_allows(mask, x->rows[a], kp[c])) s[c] = -INFINITY;
    }
    bk_tile_update(x->sc, BK_KT, na, nk, x->vg, d, x->rows, mx, sm, O, x->o, x->bt);
}

/* Phase 1, one tile: rows i0 .. i0+na-1 of head h against their windows. */
static inline void pd_window_tile(const ab_problem *pb, const pd_spec *sp, const ab_mask *mask, pd_scratch *x,
                                  int h, int i0, int na, float *mx, double *sm, float *O)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim;
    const float *Q = pb->q + (size_t)h * N * d, *K = pb->k + (size_t)h * N * d,
                *V = pb->v + (size_t)h * N * d;
    int klo = N, khi = 0;
    for (int a = 0; a < na; a++) {
        pd_row r;
        int ml, mh;
        sp->row(sp->ctx, h, i0 + a, &r);
        ab_mask_span(mask, i0 + a, &ml, &mh);
        pd_clip(&r.wlo, &r.whi, ml, mh);
        x->lo[a] = r.wlo;
        x->hi[a] = r.whi;
        x->rows[a] = i0 + a;
        if (r.wlo < r.whi) {
            klo = r.wlo < klo ? r.wlo : klo;
            khi = r.whi > khi ? r.whi : khi;
        }
    }
    if (klo >= khi) return;
    bs_scale_rows(Q, d, NULL, i0, na, pb->s.scale, x->qg);
    for (int k0 = klo; k0 < khi; k0 += BK_KT) {
        const int nk = khi - k0 < BK_KT ? khi - k0 : BK_KT;
        bs_pack_nt(K + (size_t)k0 * d, d, nk, d, x->kg);
        bs_gemm_nt_packed(x->qg, d, na, x->kg, nk, d, 1.0f, x->sc, BK_KT);
        for (int a = 0; a < na; a++) {
            float *s = x->sc + (size_t)a * BK_KT;
            const int l0 = x->lo[a] - k0, h0 = x->hi[a] - k0;
            for (int c = 0; c < nk; c++) s[c] = c >= l0 && c < h0 ? s[c] : -INFINITY;
            if (!mask->def->interval)
                for (int c = 0; c < nk; c++)
                    if (s[c] > -INFINITY && !ab_mask_allows(mask, i0 + a, k0 + c)) s[c] = -INFINITY;
        }
        bk_tile_update(x->sc, BK_KT, na, nk, V + (size_t)k0 * d, /* the values in place */
                       d, x->rows, mx, sm, O, x->o, x->bt);
    }
}

/* Phase 2, one tile: the class-c rows c + (t0 + a) p, a < na, of head h
 * against their classes' keys outside their windows. */
static inline void pd_class_tile(const ab_problem *pb, const pd_spec *sp, const ab_mask *mask, pd_scratch *x,
                                 int h, int p, int c, int t0, int na, float *mx, double *sm, float *O)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim;
    const float *Q = pb->q + (size_t)h * N * d, *K = pb->k + (size_t)h * N * d,
                *V = pb->v + (size_t)h * N * d;
    const int ncls = (N - c + p - 1) / p; /* keys (and rows) in the class */
    int mlo = ncls, mhi = 0;
    for (int a = 0; a < na; a++) {
        const int i = c + (t0 + a) * p;
        pd_row r;
        int ml, mh;
        sp->row(sp->ctx, h, i, &r);
        ab_mask_span(mask, i, &ml, &mh);
        pd_clip(&r.wlo, &r.whi, ml, mh);
        pd_clip(&r.slo, &r.shi, ml, mh);
        /* class indices u with slo <= c + u p < shi */
        const int u0 = r.slo > c ? (r.slo - c + p - 1) / p : 0;
        const int u1 = r.shi > c ? (r.shi - c + p - 1) / p : 0;
        x->lo[a] = u0;
        x->hi[a] = u1 > u0 ? u1 : u0;
        x->xlo[a] = r.wlo;
        x->xhi[a] = r.whi;
        x->rows[a] = i;
        if (u0 < u1) {
            mlo = u0 < mlo ? u0 : mlo;
            mhi = u1 > mhi ? u1 : mhi;
        }
    }
    if (mlo >= mhi) return;
    bs_scale_rows(Q, d, x->rows, 0, na, pb->s.scale, x->qg);
    for (int m0 = mlo; m0 < mhi; m0 += BK_KT) {
        const int nk = mhi - m0 < BK_KT ? mhi - m0 : BK_KT;
        for (int u = 0; u < nk; u++) {
            const int j = c + (m0 + u) * p;
            x->kidx[u] = j;
            memcpy(x->vg + (size_t)u * d, V + (size_t)j * d, (size_t)d * sizeof *x->vg);
        }
        bs_pack_gather(K, d, x->kidx, nk, x->kg);
        pd_class_update(x, mask, na, nk, m0, d, mx, sm, O);
    }
}

/* One item of a phase: phase 1, head h and row tile a (rows a*BK_QT ..);
 * phase 2, head h, class a, its tile b (class rows b*BK_QT ..). */
typedef struct pd_item {
    int h, a, b;
} pd_item;

/* out (heads, N, d) = the attention of sp's pattern over pb. AB_OK or
 * AB_ENOMEM. */
static inline int pd_attend(const ab_problem *pb, const pd_spec *sp, float *out)
{
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    if (N <= 0 || H <= 0) return AB_OK;
    const ab_mask mask = ab_shape_mask(&pb->s);
    const int nqt = (N + BK_QT - 1) / BK_QT;
    int64_t n1 = (int64_t)H * nqt, n2 = 0;
    for (int h = 0; h < H; h++) {
        const int p = sp->period[h];
        for (int c = 0; p > 0 && c < p && c < N; c++) n2 += ((N - c + p - 1) / p + BK_QT - 1) / BK_QT;
    }
    float *rmax = malloc((size_t)H * N * sizeof *rmax);
    double *rsum = malloc((size_t)H * N * sizeof *rsum);
    pd_item *it = malloc((size_t)(n1 + n2) * sizeof *it);
    int rc = rmax && rsum && it ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) {
        int64_t k = 0;
        for (int t = nqt - 1; t >= 0; t--) /* the later (longer, under causal) rows first */
            for (int h = 0; h < H; h++) it[k++] = (pd_item){ h, t, 0 };
        for (int h = 0; h < H; h++) {
            const int p = sp->period[h];
            for (int c = 0; p > 0 && c < p && c < N; c++) {
                const int nt = ((N - c + p - 1) / p + BK_QT - 1) / BK_QT;
                for (int t = nt - 1; t >= 0; t--) it[k++] = (pd_item){ h, c, t };
            }
        }
        for (size_t x = 0; x < (size_t)H * N; x++) {
            rmax[x] = -INFINITY;
            rsum[x] = 0.0;
        }
        memset(out, 0, (size_t)H * N * d * sizeof *out);
    }
    if (rc == AB_OK) {
#pragma omp parallel
        {
            pd_scratch x;
            const int ok = pd_scratch_alloc(&x, d) == AB_OK;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int64_t k = 0; k < n1; k++) {
                if (!ok) continue;
                const pd_item *w = &it[k];
                const int i0 = w->a * BK_QT, na = N - i0 < BK_QT ? N - i0 : BK_QT;
                const size_t ho = (size_t)w->h * N;
                pd_window_tile(pb, sp, &mask, &x, w->h, i0, na, rmax + ho, rsum + ho, out + ho * d);
            }
            /* (the implicit barrier: every window before any class update) */
#pragma omp for schedule(dynamic, 1)
            for (int64_t k = n1; k < n1 + n2; k++) {
                if (!ok) continue;
                const pd_item *w = &it[k];
                const int p = sp->period[w->h], nc = (N - w->a + p - 1) / p;
                const int t0 = w->b * BK_QT, na = nc - t0 < BK_QT ? nc - t0 : BK_QT;
                const size_t ho = (size_t)w->h * N;
                pd_class_tile(pb, sp, &mask, &x, w->h, p, w->a, t0, na, rmax + ho, rsum + ho, out + ho * d);
            }
            if (ok) pd_scratch_free(&x);
        }
    }
    if (rc == AB_OK) bk_normalize(out, rsum, (int64_t)H * N, d);
    free(rmax);
    free(rsum);
    free(it);
    return rc;
}

#endif
