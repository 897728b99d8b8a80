/* periodic.c — exact attention over a row-periodic pattern, computed from
 * the pattern instead of from a layout (ab_kernel_periodic,
 * include/attnbench.h): the run() of the strided heads of the Sparse
 * Transformer (Child et al. 2019, arXiv 1904.10509) and of Longformer's
 * dilated window (Beltagy et al. 2020, arXiv 2004.05150).
 *
 * Head h has a period p_h >= 0; row i of head h keeps
 *   W_i = [wlo, whi)                                  consecutive keys, and
 *   S_i = { j : j = i (mod p_h), slo <= j < shi } \ W_i  keys of i's class
 * (p_h = 0: S_i is empty), as the pattern's row function states them,
 * clipped to [0, N) and intersected with the base mask. The output row is
 * the exact softmax over W_i ∪ S_i (zero when empty).
 *
 * Why not the layout kernels: these layouts have one-row query blocks (the
 * class of row i differs from that of row i + 1) and a layout lists every
 * kept (row, key) pair, O(H N w) of them. Here the work is tiled by the
 * pattern's structure and runs on the flash chunk step (tile.h, the
 * vectorised simd_*.c), as the layout kernels do:
 *   phase 1: the windows, AB_PD_TQ consecutive rows against their
 *            contiguous key span, read in place; each row's own range is
 *            the chunk's per-row column range [lo, lim);
 *   phase 2: the classes, AB_PD_TQ rows c, c + p, c + 2p, ... of class c
 *            (a tile of row stride p) against the class's keys, gathered.
 * A head with a class part keeps phase 1's running max, sum and
 * unnormalised output per row (out holds the latter) and phase 2 resumes
 * from them, so each row's keys are visited once, in a fixed order (window
 * chunks, then class chunks, ascending): the result does not depend on the
 * thread count. Rows whose remaining class keys form two ranges (a
 * non-causal window inside the class's span) and masks that are not
 * intervals use the chunk step's element map instead of column ranges.
 * Memory: 2 H N floats besides the output, and one tile per thread. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"
#include "kernels/kernels.h"

#define AB_PD_TQ 64 /* query rows per tile (the window methods' block) */

static int pd_min(int a, int b) { return a < b ? a : b; }
static int pd_max(int a, int b) { return a > b ? a : b; }

/* The tile's rows keep the absolute keys [xlo[r], xhi[r]) ∪ [ylo[r],
 * yhi[r]) (empty ranges: lo >= hi), each already inside the row's mask
 * span. Sets the tile's spans to the first range and its min/max over the
 * rows; returns 1 if some row has a second range. *klo, *khi: the hull of
 * every row's keys (klo >= khi: no row keeps any). */
typedef struct pd_rows {
    int xlo[AB_PD_TQ], xhi[AB_PD_TQ], ylo[AB_PD_TQ], yhi[AB_PD_TQ];
} pd_rows;

static int pd_set_spans(ab_tile *t, const pd_rows *pr, int *klo, int *khi)
{
    int two = 0, lo = INT32_MAX, hi = 0;
    t->minlo = t->minhi = INT32_MAX;
    t->maxlo = t->maxhi = 0;
    for (int r = 0; r < t->nq; r++) {
        const int a = pr->xlo[r], b = pd_max(pr->xlo[r], pr->xhi[r]);
        t->slo[r] = a;
        t->shi[r] = b;
        t->maxlo = pd_max(t->maxlo, a); /* over every row: an empty row is never "fully seen" */
        t->minhi = pd_min(t->minhi, b);
        if (a < b) {
            lo = pd_min(lo, a);
            hi = pd_max(hi, b);
        }
        if (pr->ylo[r] < pr->yhi[r]) {
            two = 1;
            lo = pd_min(lo, pr->ylo[r]);
            hi = pd_max(hi, pr->yhi[r]);
        }
    }
    t->minlo = lo; /* narrows a chunk to the keys some row keeps */
    t->maxhi = hi;
    *klo = lo;
    *khi = hi;
    return two;
}

/* A chunk under the element map: key c of the chunk is j0 + c (idx NULL)
 * or idx[c]; row r keeps it if it lies in one of the row's ranges and the
 * mask (when not an interval mask) allows the pair. The chunk step runs
 * unless no row keeps any key. */
static void pd_chunk_em(ab_tile *t, const pd_rows *pr, const float *k, const float *v, int j0,
                        const int32_t *idx, int nk)
{
    int64_t any = 0;
    for (int c = 0; c < nk; c++) {
        unsigned char *e = t->em + (size_t)c * t->ld;
        const int j = idx ? idx[c] : j0 + c;
        for (int r = 0; r < t->nq; r++) {
            const int in = (j >= pr->xlo[r] && j < pr->xhi[r]) || (j >= pr->ylo[r] && j < pr->yhi[r]);
            e[r] = (unsigned char)(in && (t->interval || ab_mask_allows(t->mask, ab_tile_row(t, r), j)));
            any += e[r];
        }
        for (int r = t->nq; r < t->ld; r++) e[r] = 1;
    }
    if (any) t->chunk(t, k, v, nk, 2);
}

/* Phase 1, one tile: rows i0 .. i0+nq-1 of head h against their windows.
 * raw: keep the running state (m, l in rm, rl; acc in out's rows) for
 * phase 2; else write the normalised rows. */
static void pd_window_tile(ab_tile *t, const ab_problem *pb, const ab_periodic *pat, const ab_mask *mask,
                           int h, int i0, int nq, float *rm, float *rl, float *out_h, int raw)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim;
    const size_t ho = (size_t)h * N * d;
    const float *K = pb->k + ho, *V = pb->v + ho;
    pd_rows pr;
    ab_tile_begin(t, pb->q + ho + (size_t)i0 * d, i0, nq, pb->s.scale, mask);
    for (int r = 0; r < nq; r++) {
        ab_periodic_row w = { 0, 0, 0, 0 };
        pat->row(pat->ctx, h, i0 + r, &w);
        pr.xlo[r] = pd_max(w.wlo, t->slo[r]);
        pr.xhi[r] = pd_min(w.whi, t->shi[r]);
        pr.ylo[r] = pr.yhi[r] = 0;
    }
    int klo, khi;
    pd_set_spans(t, &pr, &klo, &khi);
    for (int j0 = klo; j0 < khi; j0 += t->tk) {
        const int nk = pd_min(t->tk, khi - j0);
        if (t->interval)
            ab_tile_contig(t, K, V, j0, nk);
        else
            pd_chunk_em(t, &pr, K + (size_t)j0 * d, V + (size_t)j0 * d, j0, NULL, nk);
    }
    if (!raw) {
        ab_tile_end(t, out_h + (size_t)i0 * d);
        return;
    }
    for (int r = 0; r < nq; r++) {
        rm[i0 + r] = t->m[r];
        rl[i0 + r] = t->l[r];
        memcpy(out_h + (size_t)(i0 + r) * d, t->acc + (size_t)r * t->dp, (size_t)d * sizeof(float));
    }
}

/* Phase 2, one tile: the class-c rows c + (t0 + r) p, r < nq, of head h,
 * resuming from phase 1's state, against their class keys outside their
 * windows; writes the normalised rows. idx: AB_TILE_K scratch. */
static void pd_class_tile(ab_tile *t, const ab_problem *pb, const ab_periodic *pat, const ab_mask *mask,
                          int h, int p, int c, int t0, int nq, const float *rm, const float *rl, float *out_h,
                          int32_t *idx)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim;
    const size_t ho = (size_t)h * N * d;
    const float *K = pb->k + ho, *V = pb->v + ho;
    const int i0 = c + t0 * p;
    pd_rows pr;
    ab_tile_begin_rs(t, pb->q + ho + (size_t)i0 * d, i0, nq, p, pb->s.scale, mask);
    for (int r = 0; r < nq; r++) {
        const int i = i0 + r * p;
        t->m[r] = rm[i];
        t->l[r] = rl[i];
        memcpy(t->acc + (size_t)r * t->dp, out_h + (size_t)i * d, (size_t)d * sizeof(float));
        ab_periodic_row w = { 0, 0, 0, 0 };
        pat->row(pat->ctx, h, i, &w);
        const int a0 = pd_max(w.slo, t->slo[r]), a1 = pd_min(w.shi, t->shi[r]); /* S before removing W */
        const int w0 = pd_max(w.wlo, t->slo[r]), w1 = pd_min(w.whi, t->shi[r]); /* W as phase 1 had it */
        pr.ylo[r] = pr.yhi[r] = 0;
        if (w1 <= w0 || w1 <= a0 || w0 >= a1) { /* W misses S's range */
            pr.xlo[r] = a0;
            pr.xhi[r] = a1;
        } else if (w0 <= a0) { /* W covers S's start */
            pr.xlo[r] = w1;
            pr.xhi[r] = a1;
        } else { /* S's start up to W, and what follows W */
            pr.xlo[r] = a0;
            pr.xhi[r] = w0;
            pr.ylo[r] = w1;
            pr.yhi[r] = a1;
        }
    }
    int klo, khi;
    const int two = pd_set_spans(t, &pr, &klo, &khi);
    if (klo < khi) {
        /* the class's keys c + u p with klo <= c + u p < khi */
        const int u0 = klo > c ? (klo - c + p - 1) / p : 0;
        const int u1 = khi > c ? (khi - c + p - 1) / p : 0;
        for (int ua = u0; ua < u1; ua += t->tk) {
            const int nk = pd_min(t->tk, u1 - ua);
            for (int e = 0; e < nk; e++) idx[e] = c + (ua + e) * p;
            if (t->interval && !two) {
                ab_tile_gather(t, K, V, idx, nk);
                continue;
            }
            for (int e = 0; e < nk; e++) {
                memcpy(t->kp + (size_t)e * d, K + (size_t)idx[e] * d, (size_t)d * sizeof(float));
                memcpy(t->vp + (size_t)e * d, V + (size_t)idx[e] * d, (size_t)d * sizeof(float));
            }
            pd_chunk_em(t, &pr, t->kp, t->vp, 0, idx, nk);
        }
    }
    ab_tile_end(t, out_h + (size_t)i0 * d);
}

/* One work item: phase 1, head h and row tile a; phase 2, head h, class a,
 * its tile b. */
typedef struct pd_item {
    int h, a, b;
} pd_item;

int ab_kernel_periodic_isa(const ab_problem *pb, const ab_periodic *pat, float *out, int isa)
{
    int rc = ab_tile_check_problem(pb, out);
    if (rc) return rc;
    if (!pat || !pat->row || !pat->period) return AB_EINVAL;
    if (!ab_cpu_isa_supported(isa)) return AB_EUNSUPPORTED;
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    for (int h = 0; h < H; h++)
        if (pat->period[h] < 0) return AB_EINVAL;
    if (N == 0) return AB_OK;
    const ab_mask mask = ab_shape_mask(&pb->s);
    const int nqt = (N + AB_PD_TQ - 1) / AB_PD_TQ;
    const int64_t n1 = (int64_t)H * nqt;
    int64_t n2 = 0;
    for (int h = 0; h < H; h++)
        for (int c = 0, p = pat->period[h]; p > 0 && c < p && c < N; c++)
            n2 += ((N - c + p - 1) / p + AB_PD_TQ - 1) / AB_PD_TQ;
    float *rm = n2 ? malloc((size_t)H * N * sizeof *rm) : NULL;
    float *rl = n2 ? malloc((size_t)H * N * sizeof *rl) : NULL;
    pd_item *it = malloc((size_t)(n1 + n2) * sizeof *it);
    if (!it || (n2 && (!rm || !rl))) {
        free(rm);
        free(rl);
        free(it);
        return AB_ENOMEM;
    }
    int64_t k = 0;
    for (int a = nqt - 1; a >= 0; a--) /* the later (longer, under causal) rows first */
        for (int h = 0; h < H; h++) it[k++] = (pd_item){ h, a, 0 };
    for (int h = 0; h < H; h++)
        for (int c = 0, p = pat->period[h]; p > 0 && c < p && c < N; c++)
            for (int b = ((N - c + p - 1) / p + AB_PD_TQ - 1) / AB_PD_TQ - 1; b >= 0; b--)
                it[k++] = (pd_item){ h, c, b };
    int failed = 0;
#pragma omp parallel
    {
        ab_tile t;
        int32_t idx[AB_TILE_K];
        const int ok = ab_tile_alloc(&t, d, AB_PD_TQ, AB_TILE_K, isa) == AB_OK;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t x = 0; x < n1; x++) {
            if (!ok) continue;
            const pd_item *w = &it[x];
            const int i0 = w->a * AB_PD_TQ, nq = pd_min(AB_PD_TQ, N - i0);
            const size_t ro = (size_t)w->h * N;
            pd_window_tile(&t, pb, pat, &mask, w->h, i0, nq, rm ? rm + ro : NULL, rl ? rl + ro : NULL,
                           out + ro * d, pat->period[w->h] > 0);
        }
        /* (the implicit barrier: every window before any class) */
#pragma omp for schedule(dynamic, 1)
        for (int64_t x = n1; x < n1 + n2; x++) {
            if (!ok) continue;
            const pd_item *w = &it[x];
            const int p = pat->period[w->h], ncls = (N - w->a + p - 1) / p;
            const int t0 = w->b * AB_PD_TQ, nq = pd_min(AB_PD_TQ, ncls - t0);
            const size_t ro = (size_t)w->h * N;
            pd_class_tile(&t, pb, pat, &mask, w->h, p, w->a, t0, nq, rm + ro, rl + ro, out + ro * d, idx);
        }
        if (ok) ab_tile_free(&t);
    }
    free(rm);
    free(rl);
    free(it);
    return failed ? AB_ENOMEM : AB_OK;
}

int ab_cpu_periodic(const ab_problem *pb, const ab_periodic *pat, float *out)
{
    return ab_kernel_periodic_isa(pb, pat, out, ab_cpu_isa_pick());
}
