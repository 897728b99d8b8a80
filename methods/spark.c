/* spark.c — `spark`: Spark attention (You et al. 2025, "Spark Transformer:
 * Reactivating Sparsity in FFN and Attention", arXiv 2506.06644), the
 * training-free proxy of docs/spec/METHODS.md §3.10.
 *
 * Spark attention predicts which keys a query needs from a cheap low-rank
 * part of the logits — the first r dimensions of q and k (the paper
 * reallocates those dimensions to the predictor during pretraining) — and
 * keeps them with *statistical top-k*, a sort-free linear-time top-k: for a
 * score vector x of length n, θ = mean(x) + std(x)·Φ⁻¹(1 − k/n) (std with
 * 1/n, Φ⁻¹ the standard normal quantile) and the entries x_j > θ are kept.
 * (The operator as Google ships it for Gemma 3n's FFN:
 * Gemma3nTextMLP._gaussian_topk in huggingface transformers,
 * models/gemma3n/modeling_gemma3n.py — mean, std(unbiased=False), cutoff
 * mean + std·icdf(target sparsity = 1 − k/n), relu(x − cutoff), which keeps
 * x > cutoff.) The kept keys then get exact attention.
 *
 * Proxy (no pretrained predictor exists for synthetic tensors): per query
 * row i, the approximate scores are a_ij = q_i[:r] · k_j[:r] with
 * r = max(1, d/4), over the n keys the base mask lets row i see ([0, i]
 * under causal). No 1/√d (or 1/√r) scale is applied: θ moves with any
 * positive scale of the row, so the kept set would not change. If k >= n
 * the row keeps all n keys (Φ⁻¹(≤ 0) = −∞); otherwise the keys with
 * a_ij > θ. The row's own key (the diagonal) is always kept, as §3.10
 * specifies, so every row attends to at least one key. Nothing else is
 * forced: the definition has no sinks and no local window (the previous
 * version's sinks = 4 and local = 16 are gone, as are its sampled mean/std
 * and its exact full-d logits).
 *
 * Layout: TOKEN. The layout holds one key list per query block, so rows
 * are grouped in blocks of block_q = 16 (a parameter) and a block keeps the
 * union of its rows' kept keys; every row of the block then attends
 * (exactly, by the gather kernel, causally masked) to that union. The union
 * makes a block keep up to block_q times the per-row k; the harness
 * calibrates k to the target density, which is the measured fraction of
 * the causal (row, key) pairs the union covers — not k/n. block_q = 1 is
 * the exact per-row selection (heavy at large N).
 *
 * Knob k: keys per query row, continuous (1 − k/n moves Φ⁻¹ smoothly);
 * density rises with k (θ falls, so a larger k keeps a superset).
 *
 * Cost of select: K[:, :r] is packed once per head into panels of PW keys.
 * Interval base masks (all shipped ones): a row's mean and variance come
 * from prefix moments of K[:, :r] (S1 = sum k[:r], S2 = sum k[:r] k[:r]^T,
 * checkpoints every CPS keys, in double): mean = q.S1/n, E[x^2] = q^T S2 q/n,
 * so no pass over the scores is needed for them; one fused register-tiled
 * kernel (GNU C vectors: 8 rows x PW keys) forms q[:r].k[:r] and compares
 * it with the row's threshold in registers, OR-ing the kept keys of the
 * block. (OpenBLAS SGEMM was slower here: with an inner dimension of 16 it
 * spends twice its multiply time re-packing K per call.) Other masks: the
 * scores are stored and a row takes three passes (mean, centred sum of
 * squares, threshold).
 * Stated cost (ab_layout_set_cost), per head, P = the (row, key) pairs the
 * base mask allows (N(N+1)/2 causal), mw = r + r(r+1)/2: FLOPs = P (2r + 1)
 * (one r-term dot product and one compare per pair) + 2 N mw (prefix sums)
 * + N (2 CPS mw + 2 r^2) (each row's span sums and quadratic form);
 * bytes = 8 N r (Q[:, :r] and K[:, :r] in fp32). Non-interval masks: FLOPs
 * P (2r + 5) (+ mean, centred square, compare) and bytes + 8 P (scores
 * written and read back). At d = 64 (r = 16), causal: bound = 33 / 256 =
 * 0.129 of dense (4 d per pair).
 * Memory: O(block_q · N) per thread, plus the packed K[:, :r] (H·N·r).
 */
#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/vecf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { P_K = 0, P_BLOCKQ, P_COUNT };

typedef struct spark_state {
    double k;    /* keys per query row (statistical top-k target) */
    int block_q; /* query rows sharing one key list */
} spark_state;

static int spark_init(void *state, const ab_params *p, const ab_shape *s)
{
    spark_state *st = state;
    (void)s;
    if (p->n < P_COUNT) {
        ab_set_error(state, "spark: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_K] >= 1 && p->v[P_K] <= (1 << 24))) {
        ab_set_error(state, "spark: k=%g outside [1, 2^24]", p->v[P_K]);
        return AB_EINVAL;
    }
    if (!(p->v[P_BLOCKQ] >= 1 && p->v[P_BLOCKQ] <= 4096)) {
        ab_set_error(state, "spark: block_q=%g outside [1, 4096]", p->v[P_BLOCKQ]);
        return AB_EINVAL;
    }
    st->k = p->v[P_K];
    st->block_q = (int)p->v[P_BLOCKQ];
    return AB_OK;
}

/* Φ⁻¹(p), the standard normal quantile, for 0 < p < 1: Acklam's rational
 * approximation (relative error < 1.2e-9) on the lower half, refined by one
 * Halley step on Φ(x) − p with Φ(x) = erfc(−x/√2)/2 (accurate for x <= 0),
 * which brings it to double precision; the upper half by symmetry.
 * The coefficients are those of P. J. Acklam's published algorithm. */
static double norm_quantile(double p)
{
    static const double a[6] = { -3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                                 1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00 };
    static const double b[5] = { -5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                 6.680131188771972e+01, -1.328068155288572e+01 };
    static const double c[6] = { -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                 -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00 };
    static const double e[4] = { 7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                 3.754408661907416e+00 };
    if (p > 0.5) return -norm_quantile(1.0 - p); /* symmetry: work in the lower half */
    double x;
    if (p < 0.02425) { /* lower tail */
        const double t = sqrt(-2.0 * log(p));
        x = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) /
            ((((e[0] * t + e[1]) * t + e[2]) * t + e[3]) * t + 1.0);
    } else { /* central region */
        const double u = p - 0.5, t = u * u;
        x = (((((a[0] * t + a[1]) * t + a[2]) * t + a[3]) * t + a[4]) * t + a[5]) * u /
            (((((b[0] * t + b[1]) * t + b[2]) * t + b[3]) * t + b[4]) * t + 1.0);
    }
    /* Halley: f = Φ(x) − p, f' = φ(x), f'' = −x φ(x) */
    const double err = 0.5 * erfc(-x / M_SQRT2) - p;
    const double u = err * sqrt(2.0 * M_PI) * exp(0.5 * x * x);
    return x - u / (1.0 + 0.5 * x * u);
}

/* Float vectors of one register (methods/vecf.h). */
enum { PW = 2 * VW, CHUNK = 1024 }; /* keys per packed panel; moment chunk */

static inline double v_sum(vf v)
{
    double t = 0.0;
    for (int l = 0; l < VW; l++) t += v[l];
    return t;
}

/* Pack K[:, :r] of one head (N, d) into panels of PW keys, kp[p][c][j] =
 * K[p·PW + j][c], zero past N: a panel is one contiguous r × PW tile. */
static void pack_keys(const float *k, int N, int d, int r, float *kp, int p)
{
    float *o = kp + (size_t)p * r * PW;
    for (int c = 0; c < r; c++)
        for (int j = 0; j < PW; j++) {
            const int g = p * PW + j;
            o[(size_t)c * PW + j] = g < N ? k[(size_t)g * d + c] : 0.0f;
        }
}

/* s[i][j] = q_i[:r] · k_{p0·PW + j}[:r] for i < nr, j < kc: q (nr rows of
 * stride ldq), kp the packed panels, s rows of stride lds. Register tiles of
 * 4 rows × PW keys; each panel is read once per 4 rows. */
static void approx_scores(const float *q, int ldq, int nr, const float *kp, int p0, int kc, int r, float *s,
                          int lds)
{
    for (int p = 0; p * PW < kc; p++) {
        const float *b = kp + (size_t)(p0 + p) * r * PW;
        const int nj = kc - p * PW < PW ? kc - p * PW : PW;
        float *o = s + (size_t)p * PW;
        int i = 0;
        for (; i + 4 <= nr; i += 4) {
            const float *q0 = q + (size_t)i * ldq, *q1 = q0 + ldq, *q2 = q1 + ldq, *q3 = q2 + ldq;
            vf a[4][2] = { { { 0 } } };
            for (int c = 0; c < r; c++) {
                const vf b0 = v_load(b + (size_t)c * PW), b1 = v_load(b + (size_t)c * PW + VW);
                const vf x0 = v_splat(q0[c]), x1 = v_splat(q1[c]), x2 = v_splat(q2[c]), x3 = v_splat(q3[c]);
                a[0][0] = v_fma(x0, b0, a[0][0]);
                a[0][1] = v_fma(x0, b1, a[0][1]);
                a[1][0] = v_fma(x1, b0, a[1][0]);
                a[1][1] = v_fma(x1, b1, a[1][1]);
                a[2][0] = v_fma(x2, b0, a[2][0]);
                a[2][1] = v_fma(x2, b1, a[2][1]);
                a[3][0] = v_fma(x3, b0, a[3][0]);
                a[3][1] = v_fma(x3, b1, a[3][1]);
            }
            for (int u = 0; u < 4; u++) {
                float *ou = o + (size_t)(i + u) * lds;
                if (nj == PW) {
                    v_store(ou, a[u][0]);
                    v_store(ou + VW, a[u][1]);
                } else {
                    float t[PW];
                    v_store(t, a[u][0]);
                    v_store(t + VW, a[u][1]);
                    memcpy(ou, t, (size_t)nj * sizeof *t);
                }
            }
        }
        for (; i < nr; i++) {
            const float *qi = q + (size_t)i * ldq;
            vf a0 = { 0 }, a1 = { 0 };
            for (int c = 0; c < r; c++) {
                const vf x = v_splat(qi[c]);
                a0 = v_fma(x, v_load(b + (size_t)c * PW), a0);
                a1 = v_fma(x, v_load(b + (size_t)c * PW + VW), a1);
            }
            float t[PW];
            v_store(t, a0);
            v_store(t + VW, a1);
            memcpy(o + (size_t)i * lds, t, (size_t)nj * sizeof *t);
        }
    }
}

/* Population mean and variance of x[0, n) (fp32 values): vector partial
 * sums over CHUNK-element chunks, chunks added in double; the variance is
 * the centred sum of squares about the fp32 mean, corrected for that
 * mean's rounding. */
static void row_moments(const float *x, int n, double *mean, double *var)
{
    double s = 0.0;
    int j = 0;
    while (n - j >= 2 * VW) {
        const int m = (n - j < CHUNK ? n - j : CHUNK) / (2 * VW) * (2 * VW), e = j + m;
        vf a = { 0 }, b = { 0 };
        for (; j < e; j += 2 * VW) {
            a += v_load(x + j);
            b += v_load(x + j + VW);
        }
        s += v_sum(a + b);
    }
    for (; j < n; j++) s += x[j];
    const double mu = s / n;
    const float muf = (float)mu;
    const vf mv = v_splat(muf);
    double q = 0.0;
    j = 0;
    while (n - j >= 2 * VW) {
        const int m = (n - j < CHUNK ? n - j : CHUNK) / (2 * VW) * (2 * VW), e = j + m;
        vf a = { 0 }, b = { 0 };
        for (; j < e; j += 2 * VW) {
            const vf u = v_load(x + j) - mv, w = v_load(x + j + VW) - mv;
            a = v_fma(u, u, a);
            b = v_fma(w, w, b);
        }
        q += v_sum(a + b);
    }
    for (; j < n; j++) {
        const double u = (double)x[j] - muf;
        q += u * u;
    }
    const double off = mu - muf;
    const double v = q / n - off * off;
    *mean = mu;
    *var = v > 0.0 ? v : 0.0;
}

/* Row gi's kept keys, OR-ed into keep[j - k0]: srow holds its approximate
 * scores for keys [k0, k0 + kc); the row may see keys [sa, sb) (a subset),
 * every one of them when the mask is an interval, else those allows()
 * passes (a scalar path; the shipped masks are all intervals). */
static void row_keep(const float *srow, int k0, int sa, int sb, double kk, const ab_mask *mask, int gi,
                     unsigned char *keep)
{
    const int interval = mask->def->interval;
    int n = 0;
    if (interval)
        n = sb - sa;
    else
        for (int j = sa; j < sb; j++) n += ab_mask_allows(mask, gi, j);
    if (n <= 0) return;
    if (kk >= n) { /* Φ⁻¹(1 − k/n) = −∞: the whole row */
        for (int j = sa; j < sb; j++)
            if (interval || ab_mask_allows(mask, gi, j)) keep[j - k0] = 1;
        return;
    }
    const double z = -norm_quantile(kk / n); /* Φ⁻¹(1 − k/n), without forming 1 − k/n */
    double mu, var;
    if (interval) {
        row_moments(srow + (sa - k0), n, &mu, &var);
    } else { /* two passes in double over the allowed keys */
        double s = 0.0, q = 0.0;
        for (int j = sa; j < sb; j++)
            if (ab_mask_allows(mask, gi, j)) s += srow[j - k0];
        mu = s / n;
        for (int j = sa; j < sb; j++)
            if (ab_mask_allows(mask, gi, j)) q += (srow[j - k0] - mu) * (srow[j - k0] - mu);
        var = q / n;
    }
    const double thr = mu + sqrt(var) * z;
    /* x > thr for a float x is x > thf, thf the largest float <= thr */
    float thf = (float)thr;
    if ((double)thf > thr) thf = nextafterf(thf, -INFINITY);
    const float *x = srow + (sa - k0);
    unsigned char *kp = keep + (sa - k0);
    if (interval)
        for (int j = 0; j < sb - sa; j++) kp[j] |= x[j] > thf;
    else
        for (int j = 0; j < sb - sa; j++) kp[j] |= x[j] > thf && ab_mask_allows(mask, gi, sa + j);
}

/* Prefix moments of K[:, :r] (one head), for the rows' mean and variance
 * without a pass over their scores: mean_j(q.k_j) = q.S1 / n and
 * mean_j((q.k_j)^2) = q^T S2 q / n over a key span, S1 = sum k_j[:r], S2 =
 * sum k_j[:r] k_j[:r]^T (upper triangle, MW = r + r(r+1)/2 doubles per
 * entry). cp[x] holds the sums over keys [0, x * CPS); a span's sums are
 * two checkpoints plus at most CPS - 1 keys each. */
enum { CPS = 16 };
static void add_key(const float *kr, int r, double sgn, double *m)
{
    for (int c = 0; c < r; c++) m[c] += sgn * kr[c];
    double *t = m + r;
    for (int c = 0; c < r; c++)
        for (int e = c; e < r; e++) *t++ += sgn * ((double)kr[c] * kr[e]);
}
static void prefix_moments(const float *k, int N, int d, int r, double *cp)
{
    const int mw = r + r * (r + 1) / 2, ncp = N / CPS + 1;
    double *m = cp;
    for (int c = 0; c < mw; c++) m[c] = 0.0;
    for (int x = 1; x < ncp; x++) {
        double *o = cp + (size_t)x * mw;
        for (int c = 0; c < mw; c++) o[c] = m[c];
        for (int j = (x - 1) * CPS; j < x * CPS; j++) add_key(k + (size_t)j * d, r, 1.0, o);
        m = o;
    }
}
/* Sums over keys [0, x) added to m with sign sgn. */
static void span_sums(const double *cp, const float *k, int d, int r, int x, double sgn, double *m)
{
    const int mw = r + r * (r + 1) / 2, c0 = x / CPS;
    const double *b = cp + (size_t)c0 * mw;
    for (int c = 0; c < mw; c++) m[c] += sgn * b[c];
    for (int j = c0 * CPS; j < x; j++) add_key(k + (size_t)j * d, r, sgn, m);
}
/* The sums over keys [0, x) of one head, kept between the rows of a block:
 * m holds 0 + cp[x / CPS] + the keys from that checkpoint to x, added in
 * key order (span_sums from a zero m), for x = at; the next row's x = at + 1
 * inside the same checkpoint interval adds one key, which is the same
 * sequence of additions, so the sums are bit for bit those of span_sums
 * (a causal row's span ends one key after its predecessor's: this saves
 * the up to CPS - 1 keys span_sums re-adds per row). at < 0: empty. */
typedef struct prefix_cache {
    int at;
    double *m; /* (mw) */
} prefix_cache;

static const double *prefix_to(prefix_cache *pc, const double *cp, const float *k, int d, int r, int x)
{
    const int mw = r + r * (r + 1) / 2;
    if (pc->at >= 0 && x == pc->at + 1 && x / CPS == pc->at / CPS) {
        add_key(k + (size_t)pc->at * d, r, 1.0, pc->m);
    } else if (x != pc->at) {
        for (int c = 0; c < mw; c++) pc->m[c] = 0.0;
        span_sums(cp, k, d, r, x, 1.0, pc->m);
    }
    pc->at = x;
    return pc->m;
}

/* The threshold of a row seeing keys [sa, sb) (n = sb - sa > kk): the
 * largest float <= mean + std * z of its approximate scores. m: scratch
 * (mw); pc: the sums up to sb (prefix_to). */
static float span_threshold(const double *cp, const float *k, int d, int r, const float *qi, int sa, int sb,
                            double z, double *m, prefix_cache *pc)
{
    const int mw = r + r * (r + 1) / 2, n = sb - sa;
    memcpy(m, prefix_to(pc, cp, k, d, r, sb), (size_t)mw * sizeof *m);
    span_sums(cp, k, d, r, sa, -1.0, m);
    double s1 = 0.0, s2 = 0.0;
    const double *t = m + r;
    for (int c = 0; c < r; c++) {
        s1 += (double)qi[c] * m[c];
        s2 += (double)qi[c] * qi[c] * *t++;
        for (int e = c + 1; e < r; e++) s2 += 2.0 * ((double)qi[c] * qi[e]) * *t++;
    }
    const double mu = s1 / n, v = s2 / n - mu * mu;
    const double thr = mu + sqrt(v > 0.0 ? v : 0.0) * z;
    float thf = (float)thr;
    if ((double)thf > thr) thf = nextafterf(thf, -INFINITY);
    return thf;
}

typedef int vi __attribute__((vector_size(VW * sizeof(int))));
typedef unsigned char vb __attribute__((vector_size(VW)));

/* OR (x > th) into kp[0, VW) */
static inline void or_mask(unsigned char *kp, vi m)
{
    vb b;
    memcpy(&b, kp, sizeof b);
    b |= __builtin_convertvector(m, vb) & 1;
    memcpy(kp, &b, sizeof b);
}

/* Fused predictor + statistical threshold: for rows i < nr (q stride ldq)
 * with thresholds th[i] and spans [sa[i], sb[i]), keep[j - kb] |= q_i[:r] .
 * k_j[:r] > th[i] for the keys j in the span, j in [kb, kb + kc) (kb = p0 *
 * PW). Register tiles of RU rows x PW keys; a panel inside every tile row's
 * span is compared in registers, a panel at a span edge key by key. Up to
 * GB tile rows (GB RU query rows) take each panel in turn while it is in
 * L1: the packed K[:, :r] (1 MB a head at N = 16K) is streamed once per GB
 * RU rows, not once per RU (approx_keep waited on those loads). */
enum { RU = 8, GB = 2 }; /* rows per register tile; tile rows per panel pass */
typedef struct keep_rows {
    const float *qr[RU]; /* the tile's query rows (the last repeated in padding) */
    vf tv[RU];           /* their thresholds */
    int i, nu;           /* first row, rows */
    int ca, cb, ua, ub;  /* common span; union span */
} keep_rows;

static void approx_keep(const float *q, int ldq, int nr, const float *kp, int p0, int kc, int r,
                        const float *th, const int *sa, const int *sb, unsigned char *keep)
{
    const int kb = p0 * PW;
    for (int i0 = 0; i0 < nr; i0 += GB * RU) {
        keep_rows g[GB];
        int ng = 0, pa = 1 << 30, pz = 0; /* tile rows with keys; the union of their spans */
        for (int i = i0; i < nr && i < i0 + GB * RU; i += RU) {
            keep_rows *e = &g[ng];
            e->i = i;
            e->nu = nr - i < RU ? nr - i : RU;
            e->ca = 0, e->cb = 1 << 30, e->ua = 1 << 30, e->ub = 0;
            for (int u = 0; u < RU; u++) {
                const int w = u < e->nu ? i + u : i;
                e->qr[u] = q + (size_t)w * ldq;
                e->tv[u] = v_splat(th[w]);
                e->ca = sa[w] > e->ca ? sa[w] : e->ca;
                e->cb = sb[w] < e->cb ? sb[w] : e->cb;
                e->ua = sa[w] < e->ua ? sa[w] : e->ua;
                e->ub = sb[w] > e->ub ? sb[w] : e->ub;
            }
            if (e->ua >= e->ub) continue;
            pa = e->ua < pa ? e->ua : pa;
            pz = e->ub > pz ? e->ub : pz;
            ng++;
        }
        for (int p = ng ? (pa - kb) / PW : 0; ng && p * PW < kc && kb + p * PW < pz; p++) {
            const float *b = kp + (size_t)(p0 + p) * r * PW;
            const int j0 = kb + p * PW;
            unsigned char *o = keep + (j0 - kb);
            for (int x = 0; x < ng; x++) {
                const keep_rows *e = &g[x];
                if (j0 + PW <= e->ua || j0 >= e->ub) continue;
                const float *const *qr = e->qr;
                vf a0[RU], a1[RU];
                for (int u = 0; u < RU; u++) a0[u] = a1[u] = v_splat(0.0f);
                for (int c = 0; c < r; c++) {
                    const vf b0 = v_load(b + (size_t)c * PW), b1 = v_load(b + (size_t)c * PW + VW);
                    for (int u = 0; u < RU; u++) {
                        const vf xv = v_splat(qr[u][c]);
                        a0[u] = v_fma(xv, b0, a0[u]);
                        a1[u] = v_fma(xv, b1, a1[u]);
                    }
                }
                if (j0 >= e->ca && j0 + PW <= e->cb && j0 + PW <= kb + kc) {
                    vi m0 = a0[0] > e->tv[0], m1 = a1[0] > e->tv[0];
                    for (int u = 1; u < RU; u++) {
                        m0 |= a0[u] > e->tv[u];
                        m1 |= a1[u] > e->tv[u];
                    }
                    or_mask(o, m0);
                    or_mask(o + VW, m1);
                } else {
                    for (int u = 0; u < e->nu; u++) {
                        float t[PW];
                        v_store(t, a0[u]);
                        v_store(t + VW, a1[u]);
                        const int w = e->i + u, lo = sa[w] > j0 ? sa[w] : j0;
                        const int hi = sb[w] < j0 + PW ? sb[w] : j0 + PW;
                        for (int j = lo; j < hi && j < kb + kc; j++) o[j - j0] |= t[j - j0] > th[w];
                    }
                }
            }
        }
    }
}

static int spark_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const spark_state *st = state;
    int rc = ab_layout_set_blocks(
        l, st->block_q < l->seq_len ? st->block_q : (l->seq_len > 0 ? l->seq_len : 1), l->block_k);
    if (rc != AB_OK) return rc;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim;
    const int r = d / 4 > 0 ? d / 4 : 1; /* predictor dimensions */
    const int bq = l->block_q, nqb = l->n_qblocks, tasks = H * nqb;
    const int npan = (N + PW - 1) / PW; /* key panels per head */
    const ab_mask mask = ab_shape_mask(&pb->s);
    if (N < 1) return AB_OK;
    float *kp = malloc((size_t)H * npan * r * PW * sizeof *kp); /* (H, npan, r, PW) packed K[:, :r] */
    if (!kp) {
        ab_set_error(state, "spark: out of memory");
        return AB_ENOMEM;
    }
#pragma omp parallel for schedule(static)
    for (int x = 0; x < H * npan; x++)
        pack_keys(pb->k + (size_t)(x / npan) * N * d, N, d, r, kp + (size_t)(x / npan) * npan * r * PW,
                  x % npan);
    /* interval masks: each row's mean and variance from prefix moments of
     * K[:, :r], so one fused pass scores and thresholds */
    const int interval = mask.def->interval, mw = r + r * (r + 1) / 2, ncp = N / CPS + 1;
    double *cp = interval ? malloc((size_t)H * ncp * mw * sizeof *cp) : NULL;
    if (interval && !cp) {
        free(kp);
        ab_set_error(state, "spark: out of memory");
        return AB_ENOMEM;
    }
    if (interval) {
#pragma omp parallel for schedule(static)
        for (int h = 0; h < H; h++)
            prefix_moments(pb->k + (size_t)h * N * d, N, d, r, cp + (size_t)h * ncp * mw);
    }

#pragma omp parallel
    {
        /* scores of one query block over its keys, from the panel holding
         * its first key: at most bq x (N + PW) */
        float *s = malloc((size_t)bq * (N + PW) * sizeof *s);
        unsigned char *keep = malloc((size_t)N + PW); /* union mark, same key origin */
        int32_t *keys = malloc((size_t)N * sizeof *keys);
        float *th = malloc((size_t)bq * sizeof *th);
        int *sa = malloc((size_t)bq * 2 * sizeof *sa), *sb = sa ? sa + bq : NULL;
        double *mom = malloc(2 * (size_t)mw * sizeof *mom);
        prefix_cache pc = { -1, mom ? mom + mw : NULL };
        int ok = s && keep && keys && th && sa && mom;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 4)
        for (int t = 0; t < tasks; t++) {
            if (!ok) continue;
            /* causal: the longest query blocks first, for balance */
            const int h = t % H, qb = nqb - 1 - t / H;
            const int r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
            pc.at = -1; /* the sums are per head */
            int k0, k1; /* keys any row of the block may see */
            bs_rows_span(&mask, r0, r0 + nr, &k0, &k1);
            int n = 0;
            if (k0 < k1) {
                const int p0 = k0 / PW, kb = p0 * PW, kc = k1 - kb; /* s column j: key kb + j */
                if (interval) {
                    memset(keep, 0, (size_t)kc + PW);
                    const float *kh = pb->k + (size_t)h * N * d;
                    for (int i = 0; i < nr; i++) {
                        const int gi = r0 + i;
                        ab_mask_span(&mask, gi, &sa[i], &sb[i]);
                        sa[i] = sa[i] > k0 ? sa[i] : k0;
                        sb[i] = sb[i] < k1 ? sb[i] : k1;
                        const int nn = sb[i] - sa[i];
                        th[i] = INFINITY;
                        if (nn <= 0) {
                            sa[i] = sb[i] = k0;
                        } else if (st->k >= nn) { /* Phi^-1(1 - k/n) = -inf: the whole row */
                            memset(keep + (sa[i] - kb), 1, (size_t)nn);
                        } else {
                            th[i] = span_threshold(cp + (size_t)h * ncp * mw, kh, d, r,
                                                   pb->q + ((size_t)h * N + gi) * d, sa[i], sb[i],
                                                   -norm_quantile(st->k / nn), mom, &pc);
                        }
                    }
                    approx_keep(pb->q + ((size_t)h * N + r0) * d, d, nr, kp + (size_t)h * npan * r * PW, p0,
                                kc, r, th, sa, sb, keep);
                    for (int i = 0; i < nr; i++) {
                        const int gi = r0 + i;
                        if (gi >= k0 && gi < k1 && ab_mask_allows(&mask, gi, gi))
                            keep[gi - kb] = 1; /* diagonal */
                    }
                } else {
                    approx_scores(pb->q + ((size_t)h * N + r0) * d, d, nr, kp + (size_t)h * npan * r * PW, p0,
                                  kc, r, s, kc);
                    memset(keep, 0, (size_t)kc);
                    for (int i = 0; i < nr; i++) {
                        const int gi = r0 + i;
                        int ra_, rb_;
                        ab_mask_span(&mask, gi, &ra_, &rb_);
                        ra_ = ra_ > k0 ? ra_ : k0;
                        rb_ = rb_ < k1 ? rb_ : k1;
                        if (ra_ < rb_) row_keep(s + (size_t)i * kc, kb, ra_, rb_, st->k, &mask, gi, keep);
                        if (gi >= k0 && gi < k1 && ab_mask_allows(&mask, gi, gi))
                            keep[gi - kb] = 1; /* diagonal */
                    }
                }
                for (int j = k0 - kb; j < kc; j++)
                    if (keep[j]) keys[n++] = kb + j;
            }
            const int ra = ab_layout_add_tokens(l, h, qb, keys, n);
            if (ra != AB_OK) {
                ok = 0;
#pragma omp atomic write
                rc = ra;
            }
        }
        free(s);
        free(keep);
        free(keys);
        free(th);
        free(sa);
        free(mom);
    }
    free(kp);
    free(cp);
    if (rc == AB_ENOMEM) ab_set_error(state, "spark: out of memory");
    if (rc != AB_OK) return rc;
    /* cost: see the header comment */
    double pairs = 0.0;
    for (int i = 0; i < N; i++) {
        int a, b;
        ab_mask_span(&mask, i, &a, &b);
        pairs += b > a ? b - a : 0;
    }
    double flops, bytes = 8.0 * H * N * r; /* Q[:, :r] and K[:, :r] in fp32 */
    if (interval) {
        flops = H * (pairs * (2.0 * r + 1.0) + 2.0 * N * mw + N * (2.0 * CPS * mw + 2.0 * r * r));
    } else {
        flops = H * pairs * (2.0 * r + 5.0);
        bytes += 8.0 * H * pairs; /* the score rows written and read back */
    }
    return ab_layout_set_cost(l, flops, bytes);
}

const ab_method ab_spark = {
    .abi = AB_ABI_VERSION,
    .family = "token",
    .name = "spark",
    .summary = "training-free proxy (paper pretrains the predictor): per row, statistical top-k (mean + "
               "std*invPhi(1-k/n)) of q[:d/4].k[:d/4] + diagonal; union per 16-row block",
    .reference = "Spark Transformer (You et al. 2025, arXiv 2506.06644): low-rank predictor + statistical top-k",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_K] = { .name = "k", .def = 256, .min = 1, .max = 1 << 24, .is_int = 0,
                  .help = "keys per query row: keep approximate scores > mean + std*invPhi(1 - k/n)" },
        [P_BLOCKQ] = { .name = "block_q", .def = 16, .min = 1, .max = 4096, .is_int = 1,
                       .help = "query rows sharing one key list (union of their rows)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_K, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(spark_state),
    .init = spark_init,
    .select = spark_select,
    .run = NULL, /* gather kernel */
    .fini = NULL,
};
AB_REGISTER(ab_spark)
