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
 * query block. The KS estimate is computed as minference_vs computes its
 * vertical one: the logits of the 64 queries as one fp32 product
 * (block_score.h), the softmax in fp32, the column sums in double (until
 * 2026-12-05 the logits were exact fp32 products summed in double, at half
 * the vector width: 1.4x the whole select()).
 * Stated cost (ab_layout_set_cost), per head, S = the keys the KS queries
 * see (about 64 N causal): FLOPs = 2 N d (6 + 2 bits) (centre, normalise,
 * project Q and K) + S (2d + 7) (logits, softmax, column sums) + 4 N log2 N
 * (two sorts, the Fenwick pass) + N (log2 N + keys) (bucket search and
 * takes); bytes = 8 N d (Q and K in fp32) + 8 S (the fp32 logits written and
 * read back). At N = 16K, d = 64, bits = 8: about 0.55 % of
 * dense (64 / N of it is the KS logits).
 */
#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/keep.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
#define HX_VL 8
#else
#define HX_VL 4
#endif
typedef double vd __attribute__((vector_size(HX_VL * sizeof(double))));
typedef float vfh __attribute__((vector_size(HX_VL * sizeof(float))));

/* HX_VL floats from p widened into *y (by pointer: a vd returned by value
 * changes the ABI without AVX, -Wpsabi): one vcvtps2pd from memory (GCC made the
 * generic widening of a memcpy'd vfh two 8-byte loads, two converts and
 * an insert under AVX2: most of col_stats' time on a Zen 3, 2026-12-07) */
static inline __attribute__((always_inline)) void hx_widen(const float *p, vd *y)
{
#if defined(__AVX512F__)
    *y = (vd)_mm512_cvtps_pd(_mm256_loadu_ps(p));
#elif defined(__AVX2__)
    *y = (vd)_mm256_cvtps_pd(_mm_loadu_ps(p));
#else
    vfh f;
    memcpy(&f, p, sizeof f);
    *y = __builtin_convertvector(f, vd);
#endif
}

/* c + a * b, one rounding where the ISA has an FMA; HX_SPLAT(x): every
 * lane x (a GNU vector plus a scalar is an add, not a broadcast). Macros:
 * a function passing vd by value warns (-Wpsabi) without AVX. */
#if defined(__AVX512F__)
#define HX_FMA(a, b, c) ((vd)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
#define HX_SPLAT(x)     ((vd)_mm512_set1_pd(x))
#else
#if defined(__FMA__)
#define HX_FMA(a, b, c) ((vd)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#else
#define HX_FMA(a, b, c) ((a) * (b) + (c))
#endif
#define HX_SPLAT(x) ((vd){ (x), (x), (x), (x) })
#endif

enum { SB_ROWS = 8 };
/* The rows a group takes for NW vectors of bits: SB_ROWS, or under AVX2
 * (16 vector registers) as many as keep the R NW sums and the broadcast
 * row element in registers (at bits = 8, NW = 2: 6 rows, 12 sums; with 8
 * rows the 16 sums spilled, and sign_buckets was a third of hax's
 * select() on a Zen 3, 2026-12-07). Each sum is the same chain either way. */
#if defined(__AVX512F__)
#define SB_R(nw) SB_ROWS
#else
#define SB_R(nw) ((nw) == 1 ? SB_ROWS : 12 / (nw) > 1 ? 12 / (nw) : 1)
#endif
/* The sign bits of R <= SB_ROWS rows xs (R, d; the rows as they are, in
 * double) on Hv (d, NW vectors; the hyperplanes with each coordinate's
 * scale folded in) against the thresholds bt (NW vectors): bit t is
 * [x . H'_t > bt_t], bt_t = mu . H'_t, the projection of the centred row.
 * Each row's projections as NW vectors in registers (NW a constant: with
 * a run-time count GCC kept them on the stack, and every add went through
 * a store and a reload), one FMA per coordinate in c order. */
static inline __attribute__((always_inline)) void sb_project(const int NW, const int R, const double *xs,
                                                             const vd *Hv, const vd *bt, int d, int bits,
                                                             int nr, int32_t *out)
{
    vd pv[SB_ROWS][NW];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < NW; t++) pv[r][t] = (vd){ 0 };
    for (int c = 0; c < d; c++) { /* d a constant where it can be (sb_rows) */
        const vd *hr = Hv + (size_t)c * NW;
        for (int r = 0; r < R; r++) {
            const vd v = HX_SPLAT(xs[(size_t)r * d + c]);
            for (int t = 0; t < NW; t++) pv[r][t] = HX_FMA(v, hr[t], pv[r][t]);
        }
    }
    for (int r = 0; r < nr; r++) {
        double proj[NW * HX_VL], thr[NW * HX_VL];
        memcpy(proj, pv[r], sizeof pv[r]);
        memcpy(thr, bt, sizeof thr);
        int32_t b = 0;
        for (int t = 0; t < bits; t++) b |= (int32_t)(proj[t] > thr[t]) << t;
        out[r] = b;
    }
}

/* The sign bits of the N rows of x (N, d) into out, SB_R(NW) rows at a time
 * (their sums independent chains: one row's chain of d dependent adds left
 * the FP units idle), each group converted to double into xs (R, d)
 * first. D: d as a constant (0: the run-time d). With a run-time d the
 * eight rows' addresses xs + r d took eight registers, and GCC reloaded
 * them from the stack before every FMA: a constant folds them into one
 * base and displacements (2026-12-06; the same FMAs in the same order). */
static inline __attribute__((always_inline)) void sb_rows(const int NW, const int D, const float *x, int N,
                                                          int d, double *xs, const vd *Hv, const vd *bt,
                                                          int bits, int32_t *out)
{
    const int dd = D ? D : d, R = SB_R(NW);
    for (int i0 = 0; i0 < N; i0 += R) {
        const int nr = N - i0 < R ? N - i0 : R;
        for (int r = 0; r < R; r++) { /* the rows in double, vectorised over c */
            const float *xr = x + (size_t)(i0 + (r < nr ? r : 0)) * dd;
            double *vr = xs + (size_t)r * dd;
            for (int c = 0; c < dd; c++) vr[c] = xr[c];
        }
        sb_project(NW, R, xs, Hv, bt, dd, bits, nr, out + i0);
    }
}

/* The same sign bits from a float product, where it decides them
 * (2026-12-08). The double projection above, with its conversion of every
 * row, was about half of sign_buckets' time on a Zen 3 (AVX2: 4 doubles a
 * vector, so two FMAs per coordinate at bits = 8). Here the bits are the
 * lanes of one float vector (bits <= VW), the rows are broadcast as they
 * are, and each row's float projection p_t = sum_c x_c h_t,c (h_t,c = the
 * hyperplane H'_t,c rounded to float; FMAs in c order) is compared with
 * the threshold rounded to float. The double chain P_t of sb_project and
 * p_t both lie within (d + 2) u ||x|| ||H'_t|| (1 + small) of the exact
 * product (u = 2^-24, Cauchy-Schwarz on sum_c |x_c h_t,c|), and the
 * threshold's rounding is within u |thr_t|; so where
 *     |p_t - thr_t| > M_t = 2 (d + 2) u ||x|| ||H'_t|| + 2 u |thr_t| + 2^-120
 * (the factor 2 covers the float rounding of M_t, of the norm and of the
 * difference; the last term, products below the normal range) the bit is
 * the double's: [P_t > thr_t] = [p_t > thr_t]. A row with any bit inside
 * its margin, a non-finite value, or a norm below 2^-50 (its squares may
 * have underflowed) is projected again in double, by sb_project itself, so
 * every bucket is sb_rows', bit for bit. On Gaussian rows at N = 16K 4 in
 * 10^4 rows fall back (1.3 % with column means 50 standard deviations out).
 * sign_buckets takes this path for bits <= VW when every hyperplane entry
 * and threshold is within 2^+-100. Each group prefetches the rows SF_PF
 * groups ahead: without, the twelve rows' strided broadcasts left the
 * hardware prefetcher behind. With col_stats by row blocks, sign_buckets
 * took 0.68-0.73x the time at N = 16K, d = 64, bits = 8 (one thread, eight
 * 4 MB inputs in turn, old and new alternated; Zen 3, AVX2). */
#if VW >= 8
#if defined(__AVX512F__)
#define SF_R 24 /* rows a group: their sums, the hyperplane vector and the broadcast in 32 registers */
#else
#define SF_R 12 /* the same in AVX2's 16 */
#endif
#define SF_PF 2 /* groups ahead that sf_rows prefetches */
/* the lanes where a > b (false for NaN) as bits */
static inline uint32_t sf_gt(vf a, vf b)
{
#if defined(__AVX512F__)
    return (uint32_t)_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ);
#else
    return (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ));
#endif
}

/* The double projection of the one row xr (d floats) through sb_project,
 * for the rows the float product leaves undecided. */
static void sf_exact_row(int nw, const float *xr, int d, double *xs, const vd *Hv, const vd *bt, int bits,
                         int32_t *out)
{
    for (int c = 0; c < d; c++) xs[c] = xr[c];
    if (nw == 1)
        sb_project(1, 1, xs, Hv, bt, d, bits, 1, out);
    else
        sb_project(2, 1, xs, Hv, bt, d, bits, 1, out);
}

/* The sign bits of the N rows of x (N, d) into out, SF_R rows at a time,
 * from the float hyperplanes Hf (d vectors), the float thresholds thf and
 * the margin M_t = mg1_t ||x|| + mg0_t; D: d as a constant (0: run time).
 * nw, Hv, bt, xs: sb_project's, for the rows that fall back; xt: SF_R
 * rows of scratch. Returns the number of rows that fell back. */
static inline __attribute__((always_inline)) int sf_rows(const int D, const float *x, int N, int d,
                                                         const vf *Hf, vf thf, vf mg1, vf mg0, int bits,
                                                         int nw, const vd *Hv, const vd *bt, double *xs,
                                                         float *xt, int32_t *out)
{
    const int dd = D ? D : d;
    const uint32_t lanes = (uint32_t)((1ull << bits) - 1);
    int slow = 0;
    for (int i0 = 0; i0 < N; i0 += SF_R) {
        const int nr = N - i0 < SF_R ? N - i0 : SF_R;
        /* the group's rows at one base and constant offsets (twelve row
         * pointers had taken every spare register, and GCC reloaded them
         * from the stack in the loop); the last group's rows copied into
         * xt first, zero rows after them */
        const float *xb = x + (size_t)i0 * dd;
        if (nr < SF_R) {
            memcpy(xt, xb, (size_t)nr * dd * sizeof *xt);
            memset(xt + (size_t)nr * dd, 0, (size_t)(SF_R - nr) * dd * sizeof *xt);
            xb = xt;
        }
        vf acc[SF_R];
        for (int r = 0; r < SF_R; r++) acc[r] = v_splat(0.0f);
        if (i0 + (SF_PF + 1) * SF_R <= N) {
            const char *nx = (const char *)(x + (size_t)(i0 + SF_PF * SF_R) * dd);
            for (int l = 0; l < SF_R * dd * 4; l += 64) __builtin_prefetch(nx + l);
        }
        for (int c = 0; c < dd; c++) {
            const vf h = Hf[c];
            for (int r = 0; r < SF_R; r++) acc[r] = v_fma(v_splat(xb[(size_t)r * dd + c]), h, acc[r]);
        }
        for (int r = 0; r < nr; r++) {
            const float *xr = xb + (size_t)r * dd;
            vf s = v_splat(0.0f);
            int c = 0;
            for (; c + VW <= dd; c += VW) {
                const vf v = v_load(xr + c);
                s = v_fma(v, v, s);
            }
            float n2 = 0.0f;
            for (int t = 0; t < VW; t++) n2 += s[t];
            for (; c < dd; c++) n2 += xr[c] * xr[c];
            const vf dl = acc[r] - thf;
            const vf ad = (vf)((vu32)dl & 0x7fffffffu);
            const uint32_t ok = sf_gt(ad, v_fma(mg1, v_splat(sqrtf(n2)), mg0)) & lanes;
            if (ok == lanes && n2 >= 0x1p-100f) {
                out[i0 + r] = (int32_t)(sf_gt(dl, v_splat(0.0f)) & lanes);
            } else {
                sf_exact_row(nw, xr, dd, xs, Hv, bt, bits, out + i0 + r);
                slow++;
            }
        }
    }
    return slow;
}
#endif

/* The column statistics of x (N, d) in one pass over memory, in double:
 * mu[c] = sum_i x[i][c] / N, the sum in row order (the same sum as a
 * scalar loop), and m2[c] = sum_i (x[i][c] - mu[c])^2. m2 goes by blocks
 * of SB_BLK rows: each block's squares about its own mean, over rows
 * still in L2, merged into the running figure by the pairwise update of
 * Chan, Golub and LeVeque (1979): M2 += M2_b + delta^2 n n_b / (n + n_b).
 * It is as stable as the two-pass sum, to within a few ulps of it; the
 * two passes over the whole of x had each streamed it from memory again,
 * and they were a third of the hashing's time at N = 16K. CS_COLS columns
 * at a time, their sums in registers. (Whole-vector conversions: a
 * version that filled the vector lane by lane gave wrong sums with GCC 12
 * at -O3, right ones at -O0.) */
#define CS_V  8  /* vectors of columns a group */
#define CS_PF 64 /* rows ahead that col_stats' first pass prefetches */
enum { CS_COLS = CS_V * HX_VL, SB_BLK = 256 };
static int col_stats(const float *x, int N, int d, double *mu, double *m2)
{
    /* row blocks outer, the column groups of a block inner, so the
     * block's lines come from memory once, and the first group's pass
     * prefetches CS_PF rows ahead; with the groups outer each group had
     * streamed x again, half or a quarter of every row's lines at a
     * stride (2026-12-08; the same sums in the same order). Each group's
     * running figures wait in gs, gm and gq between blocks. */
    const int G = d / CS_COLS, c0 = G * CS_COLS;
    vd *gs = G ? aligned_alloc(sizeof(vd), (size_t)3 * G * CS_V * sizeof *gs) : NULL;
    if (G && !gs) return AB_ENOMEM;
    if (gs) {
        vd *gm = gs + (size_t)G * CS_V, *gq = gm + (size_t)G * CS_V; /* sums, running means, running M2 */
        for (int v = 0; v < 3 * G * CS_V; v++) gs[v] = (vd){ 0 };
        for (int b0 = 0, n = 0; b0 < N; b0 += SB_BLK) {
            const int nb = N - b0 < SB_BLK ? N - b0 : SB_BLK;
            for (int g = 0; g < G; g++) {
                vd s[CS_V], bs[CS_V], bq[CS_V];
                for (int v = 0; v < CS_V; v++) {
                    s[v] = gs[g * CS_V + v];
                    bs[v] = bq[v] = (vd){ 0 };
                }
                for (int i = b0; i < b0 + nb; i++) {
                    const float *xr = x + (size_t)i * d + g * CS_COLS;
                    if (g == 0 && i + CS_PF < N)
                        for (int l = 0; l < d; l += 16) __builtin_prefetch(x + (size_t)(i + CS_PF) * d + l);
                    for (int v = 0; v < CS_V; v++) {
                        vd y;
                        hx_widen(xr + v * HX_VL, &y);
                        s[v] += y;
                        bs[v] += y;
                    }
                }
                for (int v = 0; v < CS_V; v++) bs[v] /= (double)nb; /* the block's mean */
                for (int i = b0; i < b0 + nb; i++) {
                    const float *xr = x + (size_t)i * d + g * CS_COLS;
                    for (int v = 0; v < CS_V; v++) {
                        vd y;
                        hx_widen(xr + v * HX_VL, &y);
                        y -= bs[v];
                        bq[v] += y * y;
                    }
                }
                const double w = (double)nb / (n + nb), f = (double)n * w;
                for (int v = 0; v < CS_V; v++) {
                    const vd dl = bs[v] - gm[g * CS_V + v];
                    gs[g * CS_V + v] = s[v];
                    gq[g * CS_V + v] += bq[v] + dl * dl * f;
                    gm[g * CS_V + v] += dl * w;
                }
            }
            n += nb;
        }
        for (int g = 0; g < G; g++)
            for (int v = 0; v < CS_V; v++) {
                const vd m = gs[g * CS_V + v] / (double)N;
                memcpy(mu + g * CS_COLS + v * HX_VL, &m, sizeof m);
                memcpy(m2 + g * CS_COLS + v * HX_VL, &gq[g * CS_V + v], sizeof m);
            }
        free(gs);
    }
    for (int c = c0; c < d; c++) { /* the rest, one column at a time, the same steps */
        double sc = 0.0, rm = 0.0, rq = 0.0;
        for (int b0 = 0, n = 0; b0 < N; b0 += SB_BLK) {
            const int nb = N - b0 < SB_BLK ? N - b0 : SB_BLK;
            double bs = 0.0, bq = 0.0;
            for (int i = b0; i < b0 + nb; i++) {
                sc += x[(size_t)i * d + c];
                bs += x[(size_t)i * d + c];
            }
            bs /= (double)nb;
            for (int i = b0; i < b0 + nb; i++) {
                const double y = x[(size_t)i * d + c] - bs;
                bq += y * y;
            }
            const double g = (double)nb / (n + nb), f = (double)n * g, dl = bs - rm;
            rq += bq + dl * dl * f;
            rm += dl * g;
            n += nb;
        }
        mu[c] = sc / N;
        m2[c] = rq;
    }
    return AB_OK;
}

/* Sign-bit buckets of the rows of x (N, d): centre each coordinate by its
 * mean over the rows, divide it by its L2 norm over the rows (eps 1e-12, as
 * F.normalize), project on H (d, bits). In double throughout. The scale
 * is folded into the hyperplanes (H'[c][t] = H[c][t] / norm[c]) and the
 * centring into a threshold per bit (x . H' > mu . H'), so a row costs d
 * FMAs per vector of bits and nothing else; until 2026-12-05 each row was
 * centred and scaled first (a subtract and a multiply per coordinate) and
 * projected with separate multiplies and adds (the hashing 2.0 -> 1.7 ms
 * a head at N = 16K). The sign can differ from the centred product's
 * only where the projection is within rounding of zero: of terms up to
 * |mu_c| / norm_c here (at most about 2^23 for a coordinate that is not
 * constant), of terms below 1 in the centred form. The buckets of the
 * needle task's heads are the same as before, bit for bit. fast: where
 * bits fit a float vector, the float product of sf_rows, which gives the
 * same buckets (rows it cannot decide go through sb_project); *slow (if
 * not NULL): those rows, or -1 when the double projection ran throughout
 * (tests/test_hax_buckets.c). */
static int sign_buckets(const float *x, int N, int d, const double *H, int bits, double *mu, double *nrm,
                        int32_t *out, int fast, int *slow)
{
    const int nw = (bits + HX_VL - 1) / HX_VL;                       /* <= 32 / HX_VL: bits <= 30 */
    vd *Hv = aligned_alloc(sizeof(vd), (size_t)d * nw * sizeof *Hv); /* H', bits padded to HX_VL */
    vd bt[32 / HX_VL];                                               /* the thresholds mu . H'_t */
    double *xs = malloc((size_t)SB_ROWS * d * sizeof *xs);           /* the rows in double */
    if (!Hv || !xs) {
        free(Hv);
        free(xs);
        return AB_ENOMEM;
    }
    if (col_stats(x, N, d, mu, nrm) != AB_OK) {
        free(Hv);
        free(xs);
        return AB_ENOMEM;
    }
    double thr[32] = { 0 };
    for (int c = 0; c < d; c++) {
        /* a constant coordinate (all its rows equal to its mean: mu is
         * then exact, and so is the zero) adds nothing to the centred
         * product; in x . H' it would add mu H'_ct twice over, once each
         * side, at the eps scale (1e12): out of the sums altogether */
        const int flat = nrm[c] == 0.0;
        nrm[c] = fmax(sqrt(nrm[c]), 1e-12);
        for (int t = 0; t < nw * HX_VL; t++) {
            const double h = t < bits && !flat ? H[(size_t)c * bits + t] / nrm[c] : 0.0;
            Hv[(size_t)c * nw + t / HX_VL][t % HX_VL] = h;
            thr[t] += mu[c] * h;
        }
    }
    memcpy(bt, thr, (size_t)nw * sizeof *bt);
    int ns = -1; /* rows sf_rows sent back to double; -1: the float product not taken */
#if VW >= 8
    /* the float product (sf_rows) where bits fit its lanes and every
     * entry is well inside the float range */
    vf *Hf = fast && bits <= VW ? aligned_alloc(sizeof(vf), (size_t)d * sizeof *Hf) : NULL;
    float *xt = Hf ? malloc((size_t)SF_R * d * sizeof *xt) : NULL; /* sf_rows' last group */
    int in_range = xt != NULL;
    vf thf = v_splat(0.0f), mg1 = v_splat(0.0f), mg0 = v_splat(0.0f);
    for (int t = 0; Hf && t < bits; t++) {
        double h2 = 0.0;
        for (int c = 0; c < d; c++) {
            const double h = Hv[(size_t)c * nw + t / HX_VL][t % HX_VL], a = fabs(h);
            in_range &= a == 0.0 || (a > 0x1p-100 && a < 0x1p100);
            Hf[c][t] = (float)h;
            h2 += h * h;
        }
        in_range &= fabs(thr[t]) < 0x1p100;
        thf[t] = (float)thr[t];
        mg1[t] = (float)(2.0 * (d + 2) * 0x1p-24 * sqrt(h2));
        mg0[t] = (float)(2.0 * 0x1p-24 * fabs(thr[t]) + 0x1p-120);
    }
    for (int c = 0; Hf && c < d; c++)
        for (int t = bits; t < VW; t++) Hf[c][t] = 0.0f;
    if (Hf && in_range) {
        if (d == 64)
            ns = sf_rows(64, x, N, d, Hf, thf, mg1, mg0, bits, nw, Hv, bt, xs, xt, out);
        else if (d == 128)
            ns = sf_rows(128, x, N, d, Hf, thf, mg1, mg0, bits, nw, Hv, bt, xs, xt, out);
        else
            ns = sf_rows(0, x, N, d, Hf, thf, mg1, mg0, bits, nw, Hv, bt, xs, xt, out);
    }
    free(Hf);
    free(xt);
#else
    (void)fast;
#endif
    if (slow) *slow = ns;
    if (ns < 0) /* the double projection throughout */
        switch (nw * 4 + (d == 64 ? 1 : d == 128 ? 2 : 0)) {
#define SB_CASE(n)                                                         \
    case 4 * n: sb_rows(n, 0, x, N, d, xs, Hv, bt, bits, out); break;      \
    case 4 * n + 1: sb_rows(n, 64, x, N, d, xs, Hv, bt, bits, out); break; \
    case 4 * n + 2: sb_rows(n, 128, x, N, d, xs, Hv, bt, bits, out); break;
            SB_CASE(1)
            SB_CASE(2)
            SB_CASE(3)
            SB_CASE(4)
#if HX_VL < 8
            SB_CASE(5)
            SB_CASE(6)
            SB_CASE(7)
            SB_CASE(8)
#endif
#undef SB_CASE
        }
    free(Hv);
    free(xs);
    return AB_OK;
}

/* A key with its bucket. */
typedef struct bkey {
    int32_t b, j;
} bkey;

/* Sort by (bucket, position): a stable LSD radix sort on the bucket's
 * 8-bit digits of a[0, N), which is in position order (t: N scratch). */
static void sort_by_bucket(bkey *a, bkey *t, int N, int bits)
{
    bkey *src = a, *dst = t;
    for (int sh = 0; sh < bits; sh += 8) {
        int cnt[257] = { 0 };
        for (int i = 0; i < N; i++) cnt[((src[i].b >> sh) & 255) + 1]++;
        for (int c = 0; c < 256; c++) cnt[c + 1] += cnt[c];
        for (int i = 0; i < N; i++) dst[cnt[(src[i].b >> sh) & 255]++] = src[i];
        bkey *x = src;
        src = dst;
        dst = x;
    }
    if (src != a) memcpy(a, src, (size_t)N * sizeof *a);
}

/* Selection for head h, added to l one query block at a time. par: split
 * the head's own loops over the threads (fewer heads than threads): the
 * two hashings side by side, the KS product by key chunks, its softmax by
 * rows and its column sums by key chunks, and the query blocks. */
static int hax_head(const hax_state *st, const ab_problem *pb, ab_layout *l, int h, int par)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal, bits = st->bits;
    const int bq = l->block_q, nqb = l->n_qblocks, nw = (N + 63) / 64;
    const float *q = pb->q + (size_t)h * N * d;                /* (N, d) */
    const float *k = pb->k + (size_t)h * N * d;                /* (N, d) */
    double *H = malloc((size_t)d * bits * sizeof *H);          /* (d, bits) */
    double *mu = malloc((size_t)2 * d * sizeof *mu);           /* (2, d) Q's, K's */
    double *nrm = malloc((size_t)2 * d * sizeof *nrm);         /* (2, d) */
    int32_t *hq = malloc((size_t)N * sizeof *hq);              /* (N) query buckets */
    int32_t *hk = malloc((size_t)N * sizeof *hk);              /* (N) key buckets */
    bkey *by = malloc(2 * (size_t)N * sizeof *by);             /* (N) keys by (bucket, position); N scratch */
    double *u = calloc((size_t)N, sizeof *u);                  /* (N) key importance */
    bs_cand *rk = malloc((size_t)N * sizeof *rk);              /* (N) keys by importance */
    int32_t *rank = malloc((size_t)N * sizeof *rank);          /* (N) rank of key j */
    int32_t *fen = calloc((size_t)N + 1, sizeof *fen);         /* (N + 1) Fenwick tree on ranks */
    int32_t *before = malloc((size_t)N * sizeof *before);      /* (N) #{j' < j ranked before j} */
    float *kt = malloc((size_t)d * BS_PANEL * sizeof *kt);     /* bs_gemm_core scratch */
    const int L = N < KS_QUERIES ? N : KS_QUERIES, i0 = N - L; /* the KS queries [i0, N) */
    const int kcw = par ? 4096 : N, nkc = (N + kcw - 1) / kcw; /* KS key chunks */
    float *lgall = malloc((size_t)L * N * sizeof *lgall);      /* (L, N) KS logits */
    float *inv = malloc((size_t)L * sizeof *inv);              /* (L) their softmax scales; 0: row skipped */
    int rc = (H && mu && nrm && hq && hk && by && u && rk && rank && fen && before && kt && lgall && inv)
                 ? AB_OK
                 : AB_ENOMEM;
    if (rc == AB_OK) {
        /* hyperplanes: the splitmix64 stream of seed and head, (d, bits)
         * row-major, bits fastest */
        uint64_t s = mc_mix64(pb->seed ^ mc_mix64(0x4841580000000000ull + (uint64_t)h));
        for (size_t t = 0; t < (size_t)d * bits; t++) H[t] = gauss(&s);
#pragma omp parallel for schedule(static) if (par)
        for (int x = 0; x < 2; x++)
            if (sign_buckets(x ? k : q, N, d, H, bits, mu + (size_t)x * d, nrm + (size_t)x * d, x ? hk : hq,
                             1, NULL) != AB_OK) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
    }
    if (rc == AB_OK) {
        for (int j = 0; j < N; j++) by[j] = (bkey){ hk[j], j };
        sort_by_bucket(by, by + N, N, bits);
        /* KS importance: column sums of the last KS_QUERIES queries'
         * softmax, as minference_vs's vertical estimate: the logits as one
         * product (block_score.h), each row's softmax in float (the
         * kernels' vector exp), each probability added in double to its
         * column in row order */
        if (bs_gemm_chunks(q + (size_t)i0 * d, d, L, k, d, N, d, pb->s.scale, 1.0f, lgall, N, kt, kcw, par))
            rc = AB_ENOMEM;
    }
    if (rc == AB_OK) {
#pragma omp parallel for schedule(static) if (par)
        for (int i = i0; i < N; i++) {
            const int kc = causal ? i + 1 : N;
            float *lg = lgall + (size_t)(i - i0) * N;
            const float mx = bs_max(lg, kc);
            inv[i - i0] = isfinite(mx) ? (float)(1.0 / ab_exp_max_sum(lg, kc, mx)) : 0.0f;
        }
#pragma omp parallel for schedule(static) if (par)
        for (int t = 0; t < nkc; t++) { /* columns [j0, j1), the rows in order */
            /* below the first row's end every row has its terms: summed in
             * registers (bs_rowsum, the same adds in the same order) */
            const int ja = t * kcw, jb = N - ja < kcw ? N : ja + kcw, kc0 = causal ? i0 + 1 : N;
            const int fz = jb < kc0 ? jb : kc0;
            if (fz > ja) bs_rowsum(lgall, (size_t)N, L, inv, NULL, 1, 0, 0, ja, fz, u);
            for (int i = i0; i < N; i++) {
                const int kc = causal ? i + 1 : N, j0 = fz > ja ? fz : ja, j1 = kc < jb ? kc : jb;
                const float *lg = lgall + (size_t)(i - i0) * N, w = inv[i - i0];
                if (w == 0.0f) continue; /* a row with no finite logit */
                for (int j = j0; j < j1; j++) u[j] += lg[j] * w;
            }
        }
        /* higher importance first, then lower position (NaN as -inf) */
        for (int j = 0; j < N; j++) rk[j] = (bs_cand){ isnan(u[j]) ? -INFINITY : u[j], j };
        bs_sort_desc_par(rk, N, par);
        for (int r = 0; r < N; r++) rank[rk[r].idx] = r;
        for (int j = 0; j < N; j++) { /* keys before j ranked before j */
            int c = 0;
            for (int x = rank[j]; x > 0; x -= x & -x) c += fen[x];
            before[j] = c;
            for (int x = rank[j] + 1; x <= N; x += x & -x) fen[x]++;
        }
    }
#define TAKE(j) (kbm[(j) >> 6] |= 1ull << ((j)&63))
    /* with at most 2^16 buckets, each bucket's start in `by` and its count
     * of keys j <= the current row (rows come in order): no binary search
     * per row, whose unpredictable branches were a quarter of hax_head's
     * own time in a profile */
    const int nbk = bits <= 16 ? 1 << bits : 0;
    int32_t *bstart = NULL;
    if (rc == AB_OK && nbk) {
        bstart = calloc((size_t)nbk + 1, sizeof *bstart);
        if (!bstart) rc = AB_ENOMEM;
        for (int j = 0; rc == AB_OK && j < N; j++) bstart[hk[j] + 1]++;
        for (int c = 0; rc == AB_OK && c < nbk; c++) bstart[c + 1] += bstart[c];
    }
    /* The query blocks; with par, split over the threads. Each thread keeps
     * its own bucket counts (keys <= its row) and seen ranks, which only move
     * forward: its blocks come in increasing order (monotonic), and a
     * thread's first row catches them up from zero. */
#pragma omp parallel if (par && rc == AB_OK)
    {
        int32_t *keys = malloc((size_t)N * sizeof *keys); /* (N) one block's keys */
        uint64_t *kbm =
            calloc(2 * (size_t)nw, sizeof *kbm); /* (nw) one block's keys as bits; (nw) ranks seen */
        uint64_t *rbm = kbm ? kbm + nw : NULL;   /* ranks of the keys some row so far may see */
        /* per bucket: its keys <= the current row, the block that last took
         * from it and where that range ended */
        int32_t *bcnt = nbk ? calloc((size_t)nbk * 3, sizeof *bcnt) : NULL;
        int32_t *tblk = bcnt ? bcnt + nbk : NULL, *tend = bcnt ? bcnt + 2 * (size_t)nbk : NULL;
        for (int c = 0; tblk && c < nbk; c++) tblk[c] = -1;
        int r = rc == AB_OK && keys && kbm && (bcnt || !nbk) ? AB_OK : AB_ENOMEM, seen = 0, added = 0;
#pragma omp for schedule(monotonic : dynamic, 8)
        for (int qb = 0; qb < nqb; qb++) {
            if (r != AB_OK) continue;
            const int r0 = qb * bq, r1 = r0 + bq < N ? r0 + bq : N;
            const int b = mc_dither(st->keys / 2, qb); /* per source and query */
            /* local: the block's rows and `window` keys before (non-causal:
             * and after) them */
            {
                const int lo = r0 - st->window > 0 ? r0 - st->window : 0;
                const int hi = causal ? r1 : (r1 + st->window < N ? r1 + st->window : N);
                mc_set_bits(kbm, lo, hi);
            }
            for (int i = r0; b > 0 && i < r1; i++) {
                /* LSH: the b most recent keys j <= i (non-causal: any j) in
                 * query i's bucket; `by` is sorted by (bucket, position) */
                const int last = causal ? i : N - 1;
                int a = 0, z = N; /* first entry after (hq[i], last) */
                if (bstart) {     /* the bucket's start and its keys <= last so far */
                    for (; added <= last; added++) bcnt[hk[added]]++;
                    const int hb = hq[i], s0 = bstart[hb];
                    a = s0 + bcnt[hb];
                    /* entries [lo, a) of `by`, less those an earlier row of
                     * this block in the same bucket took: its range ended at
                     * tend[hb] <= a and began at or before lo (both move
                     * forward with the row). A count known up front, where
                     * the walk below tests each entry's bucket (its exit
                     * branch mispredicted once a row) */
                    int lo = a - b > s0 ? a - b : s0;
                    if (tblk[hb] == qb && tend[hb] > lo) lo = tend[hb];
                    for (int t = lo; t < a; t++) TAKE(by[t].j);
                    tblk[hb] = qb;
                    tend[hb] = a;
                    continue;
                }
                while (a < z) { /* more than 2^16 buckets: a binary search, and a walk */
                    const int m = a + (z - a) / 2;
                    if (by[m].b < hq[i] || (by[m].b == hq[i] && by[m].j <= last))
                        a = m + 1;
                    else
                        z = m;
                }
                for (int t = a - 1, c = 0; t >= 0 && by[t].b == hq[i] && c < b; t--, c++) TAKE(by[t].j);
            }
            if (b > 0) {
                /* KS: the union over the rows i of the top b keys of [0, i]:
                 * the top b of [0, r0] (the b lowest ranks among the keys
                 * seen so far, from rbm), and each later key of the block
                 * that ranks among the top b of its own prefix */
                const int first = causal ? r0 : N - 1;
                for (; seen <= first; seen++) rbm[rank[seen] >> 6] |= 1ull << (rank[seen] & 63);
                int c = 0;
                for (int w = 0; w < nw && c < b; w++)
                    for (uint64_t x = rbm[w]; x && c < b; x &= x - 1, c++)
                        TAKE(rk[w * 64 + __builtin_ctzll(x)].idx);
                for (int j = r0 + 1; causal && j < r1; j++)
                    if (before[j] < b) TAKE(j);
            }
            /* the block's keys in ascending order, once each */
            r = ab_layout_add_tokens(l, h, qb, keys, mc_take_bits(kbm, nw, keys, 0));
        }
        if (r != AB_OK) {
#pragma omp atomic write
            rc = r;
        }
        free(keys);
        free(kbm);
        free(bcnt);
    }
#undef TAKE
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
    free(bstart);
    free(kt);
    free(lgall);
    free(inv);
    return rc;
}

static int hax_one(void *ctx, int h, int par, double *fl, double *by)
{
    const bs_heads_ctx *c = ctx;
    (void)fl;
    (void)by;
    return hax_head(c->st, c->pb, c->l, h, par);
}

static int hax_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const hax_state *st = state;
    const int H = l->heads, N = pb->s.seq_len, d = pb->s.head_dim;
    /* the heads, or one head's own loops, over the threads (bs_run_heads;
     * the cost is stated below, from the shape) */
    bs_heads_ctx c = { st, pb, l };
    double unused[2] = { 0.0, 0.0 };
    const int rc = bs_run_heads(H, hax_one, &c, &unused[0], &unused[1]);
    if (rc == AB_ENOMEM) ab_set_error(state, "hax: out of memory");
    if (rc != AB_OK) return rc;
    /* cost: see the header comment */
    double kcs = 0.0; /* keys seen by the KS queries */
    for (int i = N - KS_QUERIES > 0 ? N - KS_QUERIES : 0; i < N; i++) kcs += pb->s.causal ? i + 1 : N;
    const double lg = N > 1 ? log2((double)N) : 1.0;
    const double flops = (double)H * (2.0 * N * d * (6.0 + 2.0 * st->bits) + kcs * (2.0 * d + 7.0) +
                                      4.0 * N * lg + N * (lg + st->keys));
    const double bytes = (double)H * (8.0 * N * d + 8.0 * kcs);
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
