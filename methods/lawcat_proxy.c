/* lawcat_proxy.c — `lawcat_proxy`: a training-free stand-in for LAWCAT (Liu
 * et al. 2025, "LAWCAT: Efficient Distillation from Quadratic to Linear
 * Attention with Convolution across Tokens for Long Context Modeling", arXiv
 * 2509.18467; official code github.com/zeyuliu1037/LAWCAT, not consulted:
 * not in our index).
 *
 * LAWCAT distils a pretrained transformer's softmax attention into linear
 * attention: a causal depthwise Conv1D over time (kernel size r + 1, 4 in the
 * paper) on the queries and on the keys, a feature map shared by queries and
 * keys (a learned linear layer with a nonlinear activation), and normalised
 * gated linear attention,
 *     out_i = sum_{j<=i} g_ij phi(q~_i).phi(k~_j) v_j / sum_{j<=i} g_ij phi(q~_i).phi(k~_j).
 * What we compute, per head, with fixed (untrained) parts:
 *   conv: q~_t = sum_{s=0..r} c_s q_{t-s} (zero before the sequence start),
 *     likewise k~, with the fixed normalised decaying filter c_s = 2^-s / sum
 *     (the paper learns one filter per channel);
 *   feature map: phi(x) = [softmax(x), softmax(-x)] over the d channels (m =
 *     2 d features): the Hedgehog-style activation with the identity as its
 *     projection (the paper learns the projection, by distillation against
 *     the teacher's attention weights);
 *   gates: g_ij = lambda^(i-j) with one fixed lambda (param; 1 = unit gates,
 *     the default; the paper's gates are learned);
 * the attention itself by methods/linear_attn.h (chunked causal; with unit
 * gates under the full mask the non-causal form, sum over all j).
 * What it cannot reproduce: anything the distillation learns (filters,
 * feature projection, gates), hence how close a trained LAWCAT gets to the
 * teacher; its error against softmax attention here is that of an untrained
 * linear attention (approx_tol below, measured).
 *
 * Layout CUSTOM, own run(), no density knob (density_knob.param = -1): its
 * cost does not follow a budget. Density = FLOPs over dense score FLOPs
 * (4 d x allowed pairs per head), clamped to [0, 1) (never exactly 1: not exact): per head
 *   conv 4 (r + 1) N d + features 16 N d (two softmaxes of Q and of K) +
 *   linear attention with m = 2 d: causal 4 N m d + 2 N C (m + d) + 3 N m
 *   (+ 2 N C + N m with a decay), full 4 N m d + 3 N m.
 * Base masks: causal (any lambda) and full (lambda = 1 only); others
 * AB_EUNSUPPORTED (the conv and the recurrence cross their boundaries).
 * weights(): w_j = lambda^(i-j) phi(q~_i).phi(k~_j) (fp64, from the key
 * features kept from run()). Selection cost: 0, 0 (run() does the work).
 */
#include "attnbench.h"
#include "methods/plain_mask.h"
#include "methods/block_score.h"
#include "methods/linear_attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LC_MAXCONV 64
#define LC_ROWS    256 /* rows per feature task */

typedef struct lawcat_state {
    int conv;     /* kernel size r + 1 */
    float lambda; /* decay per step */
    float logl;   /* log(lambda) as the kernel uses it */
    double filt[LC_MAXCONV];
    /* kept from the last run() for weights() (and, of the same shape, for
     * the next run()): key features pk, query-feature scratch pq, m = 2d */
    la_feats f;
} lawcat_state;

enum { P_CONV = 0, P_LAMBDA, P_COUNT };

static int lawcat_init(void *state, const ab_params *p, const ab_shape *s)
{
    lawcat_state *st = state;
    (void)s;
    if (p->n < P_COUNT) {
        ab_set_error(state, "lawcat_proxy: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_CONV] >= 1 && p->v[P_CONV] <= LC_MAXCONV) ||
        !(p->v[P_LAMBDA] >= 0.5 && p->v[P_LAMBDA] <= 1.0)) {
        ab_set_error(state, "lawcat_proxy: conv must be in [1, %d], lambda in [0.5, 1]", LC_MAXCONV);
        return AB_EINVAL;
    }
    st->conv = (int)p->v[P_CONV];
    st->lambda = (float)p->v[P_LAMBDA];
    st->logl = logf(st->lambda);
    double sum = 0;
    for (int t = 0; t < st->conv; t++) sum += st->filt[t] = ldexp(1.0, -t);
    for (int t = 0; t < st->conv; t++) st->filt[t] /= sum;
    return AB_OK;
}

static void lawcat_fini(void *state)
{
    lawcat_state *st = state;
    la_feats_free(&st->f);
}

static int lawcat_mask_ok(const lawcat_state *st, void *state, const ab_shape *s)
{
    return mc_plain_mask_only(state, s, st->lambda == 1.0f, "lawcat_proxy",
                              "a causal recurrence and conv across its boundaries; full needs lambda = 1");
}

static double lawcat_flops(const lawcat_state *st, int n, int d, int causal)
{
    const double N = n, D = d, M = 2.0 * d, C = LA_CHUNK;
    double f = 4.0 * st->conv * N * D + 16.0 * N * D;
    if (causal) {
        f += 4 * N * M * D + 2 * N * C * (M + D) + 3 * N * M;
        if (st->lambda != 1.0f) f += 2 * N * C + N * M;
    } else {
        f += 4 * N * M * D + 3 * N * M;
    }
    return f;
}

static int lawcat_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const lawcat_state *st = state;
    const int ok = lawcat_mask_ok(st, state, &pb->s);
    if (ok != AB_OK) return ok;
    const int n = pb->s.seq_len, d = pb->s.head_dim;
    const double pairs = pb->s.causal ? (double)n * (n + 1) / 2.0 : (double)n * n;
    double dens = lawcat_flops(st, n, d, pb->s.causal) / (4.0 * d * pairs);
    dens = dens < 1.0 ? dens : 1.0; /* its work can exceed dense: reported as 1 */
    const int rc = ab_layout_custom(l, dens);
    return rc == AB_OK ? ab_layout_set_cost(l, 0.0, 0.0) : rc;
}

/* phi of conv'd row t of x (n, d): out (2d) floats; tmp (d) doubles. */
static void lawcat_phi(const lawcat_state *st, const float *x, int t, int d, double *tmp, double *out)
{
    for (int e = 0; e < d; e++) tmp[e] = 0;
    for (int s = 0; s < st->conv && s <= t; s++) {
        const float *r = x + (size_t)(t - s) * d;
        const double c = st->filt[s];
        for (int e = 0; e < d; e++) tmp[e] += c * r[e];
    }
    double mx = -INFINITY, mn = INFINITY;
    for (int e = 0; e < d; e++) {
        mx = tmp[e] > mx ? tmp[e] : mx;
        mn = tmp[e] < mn ? tmp[e] : mn;
    }
    double sp = 0, sn = 0;
    for (int e = 0; e < d; e++) {
        sp += out[e] = exp(tmp[e] - mx);
        sn += out[d + e] = exp(mn - tmp[e]);
    }
    for (int e = 0; e < d; e++) {
        out[e] /= sp;
        out[d + e] /= sn;
    }
}

static int lawcat_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    lawcat_state *st = state;
    (void)l;
    const int mok = lawcat_mask_ok(st, state, &pb->s);
    if (mok != AB_OK) return mok;
    const int H = pb->s.heads, n = pb->s.seq_len, d = pb->s.head_dim, m = 2 * d;
    la_feats_ensure(&st->f, H, n, d, m, 1); /* the last call's arrays when the shape matches */
    float *pq = st->f.pq, *pk = st->f.pk;
    float *ld = st->lambda != 1.0f ? malloc((size_t)n * sizeof(float)) : NULL;
    int rc = (pk && pq && (st->lambda == 1.0f || ld)) ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) {
        if (ld)
            for (int t = 0; t < n; t++) ld[t] = st->logl;
        const int nb = (n + LC_ROWS - 1) / LC_ROWS;
#pragma omp parallel
        {
            double *tmp = malloc((size_t)d * sizeof *tmp), *f = malloc((size_t)m * sizeof *f);
            if (!tmp || !f) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < H * nb; t++) {
                if (!tmp || !f) continue;
                const int h = t / nb, r0 = (t % nb) * LC_ROWS, r1 = r0 + LC_ROWS < n ? r0 + LC_ROWS : n;
                const float *q = pb->q + (size_t)h * n * d, *k = pb->k + (size_t)h * n * d;
                for (int i = r0; i < r1; i++) {
                    float *oq = pq + ((size_t)h * n + i) * m, *ok = pk + ((size_t)h * n + i) * m;
                    lawcat_phi(st, q, i, d, tmp, f);
                    for (int e = 0; e < m; e++) oq[e] = (float)f[e];
                    lawcat_phi(st, k, i, d, tmp, f);
                    for (int e = 0; e < m; e++) ok[e] = (float)f[e];
                }
            }
            free(tmp);
            free(f);
        }
    }
    if (rc == AB_OK) {
        const la_args a = { .heads = H,
                            .n = n,
                            .m = m,
                            .d = d,
                            .causal = pb->s.causal,
                            .pq = pq,
                            .pk = pk,
                            .v = pb->v,
                            .logdecay = ld,
                            .ld_stride = 0,
                            .out = out };
        rc = la_run(&a);
    }
    free(ld);
    if (rc != AB_OK) {
        lawcat_fini(state);
        ab_set_error(state, "lawcat_proxy: out of memory");
    }
    return rc;
}

static int lawcat_weights(void *state, const ab_problem *pb, const ab_layout *l, int head, int row, double *w)
{
    const lawcat_state *st = state;
    (void)l;
    const int n = pb->s.seq_len, d = pb->s.head_dim, m = 2 * d;
    if (!la_feats_hold(&st->f, n, d, head) || row < 0 || row >= n) return AB_EINVAL;
    double *tmp = malloc((size_t)d * sizeof *tmp), *fq = malloc((size_t)m * sizeof *fq);
    if (!tmp || !fq) {
        free(tmp);
        free(fq);
        return AB_ENOMEM;
    }
    lawcat_phi(st, pb->q + (size_t)head * n * d, row, d, tmp, fq);
    /* the kernel's q features are fp32: round as it does */
    for (int e = 0; e < m; e++) fq[e] = (float)fq[e];
    const int hi = pb->s.causal ? row + 1 : n;
    const float *pk = st->f.pk + (size_t)head * n * m;
    for (int j = 0; j < n; j++) {
        double s = 0;
        if (j < hi) {
            for (int e = 0; e < m; e++) s += fq[e] * pk[(size_t)j * m + e];
            if (st->lambda != 1.0f) s *= exp((double)(row - j) * st->logl);
        }
        w[j] = s;
    }
    free(tmp);
    free(fq);
    return AB_OK;
}

const ab_method ab_lawcat_proxy = {
    .abi = AB_ABI_VERSION,
    .family = "linear",
    .approx_tol = 1.25, /* measured worst 0.822 (untrained linear attention), x1.5 */
    .name = "lawcat_proxy",
    .summary = "LAWCAT proxy, untrained (the paper distils filters, feature map and gates): causal conv over time on Q and K, [softmax(x), softmax(-x)] features, fixed decay, normalised linear attention (custom run)",
    .reference = "Liu et al. 2025, LAWCAT: Efficient Distillation from Quadratic to Linear Attention with Convolution across Tokens for Long Context Modeling, arXiv 2509.18467",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_CONV] = { .name = "conv", .def = 4, .min = 1, .max = LC_MAXCONV, .is_int = 1,
                     .help = "causal conv kernel size r+1 on Q and K (paper: 4); fixed filter 2^-s, normalised" },
        [P_LAMBDA] = { .name = "lambda", .def = 1.0, .min = 0.5, .max = 1.0, .is_int = 0,
                       .help = "fixed gate: weight lambda^(i-j) on key j for query i (1: unit gates)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = -1, .increasing = 1, .log_scale = 0 },
    .state_size = sizeof(lawcat_state),
    .init = lawcat_init,
    .select = lawcat_select,
    .run = lawcat_run,
    .fini = lawcat_fini,
    .weights = lawcat_weights,
};
AB_REGISTER(ab_lawcat_proxy)
