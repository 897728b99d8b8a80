/* favor.h — FAVOR+ positive orthogonal random features for the softmax
 * kernel (Choromanski et al. 2021, "Rethinking Attention with Performers",
 * arXiv 2009.14794; we followed the definitions of the official code,
 * google-research/google-research performer/fast_attention/jax/
 * fast_attention.py: softmax_kernel_transformation and
 * GaussianOrthogonalRandomMatrix with scaling 0). Shared by methods/performer.c
 * and methods/scatterbrain.c. Header-only (static inline), not a method: it
 * registers nothing.
 *
 * The estimator. For x, y in R^d and rows w_1..w_m of W,
 *     phi(x)_r = exp(w_r . x - |x|^2 / 2) / sqrt(m)
 * gives E[phi(x) . phi(y)] = exp(x . y) when the w_r are N(0, I_d). For the
 * attention logit scale s (1/sqrt(d)), map x = sqrt(s) q and y = sqrt(s) k
 * (xscale = sqrt(s) below), so phi(x) . phi(y) estimates exp(s q . k).
 * Orthogonal features: W is drawn in blocks of d rows, each block an exact
 * orthonormal set (Gram-Schmidt of a Gaussian d x d matrix, i.e. Haar), each
 * row then scaled by an independent chi_d norm (the norm of a fresh Gaussian
 * d-vector), so each row is marginally N(0, I_d). A last partial block takes
 * the first m mod d rows of a full block.
 *
 * API (all single-threaded per call; callers parallelise over heads/rows):
 *   favor_draw(seed, head, m, d, W)           W (m, d): the feature matrix of
 *       (seed, head): a pure function of its arguments.
 *   favor_project(X, n, d, ldx, W, m, xscale, U, bt)
 *       U[i][r] = w_r . (xscale X_i) - |xscale X_i|^2 / 2  (float, GEMM via
 *       bs_gemm_nt); returns max over U (the global stabiliser).
 *   favor_project_packed(X, n, d, ldx, wp, m, xscale, U)  the same with W
 *       packed once by bs_pack_nt.
 *   favor_exp_rows(U, n, m, eps, c)          per-row stabiliser (queries):
 *       c[i] = max_r U[i][r]; U[i][r] <- (exp(U[i][r] - c[i]) + eps) / sqrt(m).
 *   favor_exp_global(U, n, m, c, eps)        one stabiliser c (keys; pass the
 *       max of favor_project over every key row of the head):
 *       U[i][r] <- (exp(U[i][r] - c) + eps) / sqrt(m).
 *   favor_phi_row(x, d, W, m, xscale, c, eps, out)  one row in double,
 *       for weights(): out[r] = (exp(u_r - c) + eps) / sqrt(m) with u as
 *       favor_project; c < -1e300 (e.g. -INFINITY) means "this row's max".
 * Stabilisers: the official code subtracts the per-row max of w . x for
 * queries and the global max for keys, then adds eps = 1e-6. Pass eps = 0
 * for keys stabilised by a max over the whole sequence under a causal mask:
 * with eps > 0 a key's feature would depend (by ~eps) on later keys'
 * values through c (performer.c adds eps to queries only). With eps = 0 the
 * true features are recovered exactly as phi_true = phi_out * exp(c), so a
 * per-row query shift cancels in any row-normalised ratio and a global key
 * shift cancels everywhere (scatterbrain, which mixes with exact exp logits,
 * must multiply back by exp(c_q[i] + c_k)). The query shift here also
 * includes the -|x|^2/2 term (a per-row constant: the row's largest feature
 * is exactly 1, where the official code's is exp(-|x|^2/2), so large-norm
 * queries cannot underflow); the estimate is the same up to eps.
 * Scratch bt: (d > BS_KC ? d : BS_KC) * BS_PANEL floats (bs_gemm_nt).
 */
#ifndef AB_METHODS_FAVOR_H
#define AB_METHODS_FAVOR_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "attnbench.h"
#include "methods/block_score.h"

#define FAVOR_EPS 1e-6f /* the official numerical_stabilizer */

/* Scratch floats bs_gemm_nt needs for depth d. */
static inline size_t favor_bt_floats(int d) { return (size_t)(d > BS_KC ? d : BS_KC) * BS_PANEL; }

/* A standard normal from the stream (Box-Muller, one value per call). */
static inline double favor_gauss(uint64_t *st)
{
    const double u1 = ((double)(ab_splitmix64(st) >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = (double)(ab_splitmix64(st) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* W (m, d) for (seed, head); AB_ENOMEM if the d x d work block cannot be
 * allocated (W is then left unspecified). */
static inline int favor_draw(uint64_t seed, int head, int m, int d, float *W)
{
    double *g = malloc((size_t)d * d * sizeof *g);
    if (!g) return AB_ENOMEM;
    uint64_t st = ab_mix64(seed ^ 0x6661766f722bull /* "favor+" */) ^ ab_mix64((uint64_t)head + 0x51ull);
    for (int b0 = 0; b0 < m; b0 += d) {
        const int nb = m - b0 < d ? m - b0 : d;
        for (size_t t = 0; t < (size_t)d * d; t++) g[t] = favor_gauss(&st);
        /* modified Gram-Schmidt over the rows: an orthonormal basis */
        for (int r = 0; r < d; r++) {
            double *a = g + (size_t)r * d;
            for (int p = 0; p < r; p++) {
                const double *b = g + (size_t)p * d;
                double dot = 0;
                for (int c = 0; c < d; c++) dot += a[c] * b[c];
                for (int c = 0; c < d; c++) a[c] -= dot * b[c];
            }
            double nrm = 0;
            for (int c = 0; c < d; c++) nrm += a[c] * a[c];
            nrm = sqrt(nrm);
            for (int c = 0; c < d; c++) a[c] = nrm > 0 ? a[c] / nrm : 0.0;
        }
        for (int r = 0; r < nb; r++) {
            double chi = 0; /* norm of an independent Gaussian d-vector */
            for (int c = 0; c < d; c++) {
                const double z = favor_gauss(&st);
                chi += z * z;
            }
            chi = sqrt(chi);
            for (int c = 0; c < d; c++) W[(size_t)(b0 + r) * d + c] = (float)(chi * g[(size_t)r * d + c]);
        }
    }
    free(g);
    return AB_OK;
}

/* The norm term of favor_project on the products U = xscale X W^T:
 * U[i][r] -= |xscale X_i|^2 / 2; returns the max over U. */
static inline float favor_shift(const float *X, int n, int d, int ldx, int m, float xscale, float *U)
{
    float mx = -INFINITY;
    for (int i0 = 0; i0 < n; i0 += 16) {
        /* sixteen rows' sums of squares side by side, each one chain in
         * element order (a row's chain alone waits on the add's latency:
         * 2-3 % of scatterbrain's run() at 16K) */
        const int nr = n - i0 < 16 ? n - i0 : 16;
        float sq[16];
        bs_row_sq16f(X + (size_t)i0 * ldx, (size_t)ldx, nr, d, sq);
        for (int t = 0; t < nr; t++) {
            const float h = 0.5f * xscale * xscale * sq[t];
            float *u = U + (size_t)(i0 + t) * m;
            for (int r = 0; r < m; r++) u[r] -= h;
            const float rm = bs_max(u, m);
            mx = rm > mx ? rm : mx;
        }
    }
    return mx;
}

/* U (n, m) row stride m: U[i][r] = w_r . (xscale X_i) - |xscale X_i|^2 / 2.
 * X (n, d) row stride ldx. Returns the max over U (-INFINITY when n = 0). */
static inline float favor_project(const float *X, int n, int d, int ldx, const float *W, int m, float xscale,
                                  float *U, float *bt)
{
    bs_gemm_nt(X, ldx, n, W, d, m, d, xscale, U, m, bt);
    return favor_shift(X, n, d, ldx, m, xscale, U);
}

/* favor_project with W packed by bs_pack_nt(W, d, m, d, wp) (ceil(m / 64)
 * * 64 * d floats): the same U, bit for bit, without transposing W's
 * panels again on every call (the product of 64 rows, m = 320, d = 64:
 * 19.1 -> 16.4 us in cache; 4 % at 256 rows). */
static inline float favor_project_packed(const float *X, int n, int d, int ldx, const float *wp, int m,
                                         float xscale, float *U)
{
    bs_gemm_nt_packed(X, ldx, n, wp, m, d, xscale, U, m);
    return favor_shift(X, n, d, ldx, m, xscale, U);
}

/* Per-row stabiliser (queries); c (n) receives each row's shift (may be NULL). */
static inline void favor_exp_rows(float *U, int n, int m, float eps, float *c)
{
    const float inv = (float)(1.0 / sqrt((double)m));
    for (int i = 0; i < n; i++) {
        float *u = U + (size_t)i * m;
        const float mx = bs_max(u, m);
        ab_exp_shift(u, m, mx);
        for (int r = 0; r < m; r++) u[r] = (u[r] + eps) * inv;
        if (c) c[i] = mx;
    }
}

/* One stabiliser c for all rows (keys). */
static inline void favor_exp_global(float *U, int n, int m, float c, float eps)
{
    const float inv = (float)(1.0 / sqrt((double)m));
    for (int i = 0; i < n; i++) {
        float *u = U + (size_t)i * m;
        ab_exp_shift(u, m, c);
        for (int r = 0; r < m; r++) u[r] = (u[r] + eps) * inv;
    }
}

/* One row in double (weights()): out (m). c <= -1e300: the row's own max. */
static inline void favor_phi_row(const float *x, int d, const float *W, int m, float xscale, double c,
                                 double eps, double *out)
{
    double sq = 0;
    for (int e = 0; e < d; e++) sq += (double)x[e] * x[e];
    const double h = 0.5 * (double)xscale * xscale * sq;
    double mx = -INFINITY;
    for (int r = 0; r < m; r++) {
        const float *w = W + (size_t)r * d;
        double s = 0;
        for (int e = 0; e < d; e++) s += (double)w[e] * x[e];
        out[r] = s * xscale - h;
        mx = out[r] > mx ? out[r] : mx;
    }
    const double sh = c <= -1e300 ? mx : c, inv = 1.0 / sqrt((double)m);
    for (int r = 0; r < m; r++) out[r] = (exp(out[r] - sh) + eps) * inv;
}

#endif
