/* performer.c — `performer`: FAVOR+ linear attention (Choromanski et al.
 * 2021, "Rethinking Attention with Performers", ICLR 2021, arXiv 2009.14794;
 * we followed the official google-research/google-research
 * performer/fast_attention/jax/fast_attention.py: softmax_kernel_transformation,
 * GaussianOrthogonalRandomMatrix with scaling 0, causal/non-causal numerator
 * and denominator).
 *
 * Computes, per head, the normalised linear attention
 *     out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j)
 * over the keys the base mask allows (causal: j <= i, prefix sums of
 * phi(k_j) v_j^T and phi(k_j); full: totals), where phi is the FAVOR+
 * positive orthogonal random feature map of methods/favor.h with m features:
 * phi(x)_r = (exp(w_r.x - |x|^2/2 - c) + eps) / sqrt(m), x = sqrt(scale) q or
 * sqrt(scale) k, so that E[phi(q).phi(k)] = exp(scale q.k) (up to the
 * stabilisers c and eps). W: m rows in blocks of d orthonormal rows with chi_d
 * norms, redrawn per (pb->seed, head). Stabilisers as the official code:
 * c = per-row max for queries (cancels in the ratio), the head's global max
 * for keys (a constant: cancels), eps = 1e-6 added after the shift to the
 * query features only (see deviations).
 * The kernel is methods/linear_attn.h (chunked causal, state carried across
 * chunks; O(N m d) time). It asks for each chunk's features where its pass
 * reaches them (performer_feat: the queries' projected and exponentiated
 * there, in cache); only the keys' projections are kept whole (N m floats a
 * head), since their stabiliser is the head's maximum over all of them. W
 * is a pure function of (seed, head, m, d): drawn and packed when these
 * change, else the last call's (the model's fixed projection).
 *
 * Deviations from the paper/official code: the query stabiliser also
 * includes the per-row -|x|^2/2 term (same estimate up to eps, no underflow
 * for large-norm queries); the official code adds eps to the key features
 * too, which under a causal mask makes row i depend (by ~eps relative to
 * the global key max) on keys after i; we add it to queries only, so the
 * output is exact in ratio and causal up to float rounding (a key whose
 * features all underflow, exp(u - c) < 1e-38, gets weight 0; a row whose
 * keys all do outputs 0); features are redrawn per problem seed rather than
 * per training step (there is no training); fp32 throughout except the
 * per-chunk normaliser sums (fp64).
 *
 * Layout CUSTOM, own run(). Density = score FLOPs over dense score FLOPs
 * (4 d x allowed pairs per head), clamped to [0, 1) (never exactly 1: not exact):
 *   features 4 N m d + 2 N m (Q and K projections, exp) plus
 *   causal: 4 N m d (state update and readout) + 2 N C (m + d) (the masked
 *   in-chunk tiles, C = 64) + 3 N m (normalisers);
 *   full: 4 N m d + 3 N m.
 * Density knob: m (rises with it; density ~ 2 m / (mean row length)).
 * Base masks: causal and full; others AB_EUNSUPPORTED (the prefix sums do
 * not follow document, window, prefix or chunk boundaries).
 * weights(): w_j = phi(q_i).phi(k_j) in fp64 from the stored W, key
 * stabiliser and key projections of the last run() (the key features
 * made from them as run() made them).
 * Selection cost: 0, 0 (select() only states the density; the features and
 * the attention are run()'s work).
 */
#include "attnbench.h"
#include "methods/plain_mask.h"
#include "methods/block_score.h"
#include "methods/favor.h"
#include "methods/linear_attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PF_ROWS 256 /* key rows per projection task */

typedef struct performer_state {
    int m;
    /* kept from the last run() for weights() (and, of the same shape, for
     * the next run()): */
    la_feats f;     /* pk: the keys' projections before the exp (favor_project's U) */
    float *w;       /* (heads, m, d) feature matrices */
    float *wp;      /* (heads, wps) the same packed by bs_pack_nt */
    float *ck;      /* (heads) key stabilisers */
    uint64_t wseed; /* the seed w was drawn for */
    float xscale;
} performer_state;

/* What performer_feat reads: the chunk features of la_run. */
typedef struct performer_ctx {
    const float *q, *uk, *wp, *ck;
    int n, d, m;
    size_t wps;
    float xs;
} performer_ctx;

enum { P_M = 0, P_COUNT };

static int performer_init(void *state, const ab_params *p, const ab_shape *s)
{
    performer_state *st = state;
    (void)s;
    if (p->n < P_COUNT) {
        ab_set_error(state, "performer: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_M] >= 1 && p->v[P_M] <= 4096)) {
        ab_set_error(state, "performer: m must be in [1, 4096]");
        return AB_EINVAL;
    }
    st->m = (int)p->v[P_M];
    return AB_OK;
}

static void performer_fini(void *state)
{
    performer_state *st = state;
    free(st->w);
    free(st->wp);
    free(st->ck);
    la_feats_free(&st->f);
    st->w = st->wp = st->ck = NULL;
}

static int performer_mask_ok(void *state, const ab_shape *s)
{
    return mc_plain_mask_only(state, s, 1, "performer",
                              "the linear-attention prefix sums do not follow its boundaries");
}

/* Method FLOPs of one head (see the header). */
static double performer_flops(int n, int m, int d, int causal)
{
    const double N = n, M = m, D = d;
    const double feat = 4 * N * M * D + 2 * N * M;
    const double lin =
        causal ? 4 * N * M * D + 2 * N * LA_CHUNK * (M + D) + 3 * N * M : 4 * N * M * D + 3 * N * M;
    return feat + lin;
}

static int performer_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const performer_state *st = state;
    const int ok = performer_mask_ok(state, &pb->s);
    if (ok != AB_OK) return ok;
    const int n = pb->s.seq_len, d = pb->s.head_dim;
    const double pairs = pb->s.causal ? (double)n * (n + 1) / 2.0 : (double)n * n;
    double dens = performer_flops(n, st->m, d, pb->s.causal) / (4.0 * d * pairs);
    dens = dens < 1.0 ? dens : 1.0; /* its work can exceed dense: reported as 1 */
    const int rc = ab_layout_custom(l, dens);
    return rc == AB_OK ? ab_layout_set_cost(l, 0.0, 0.0) : rc;
}

/* Floats of one head's packed feature matrix. */
static size_t performer_wps(int m, int d) { return (size_t)((m + BS_PANEL - 1) / BS_PANEL) * BS_PANEL * d; }

/* la_feat_fn: the query features of rows [r0, r0 + L) from their
 * projection (per-row stabiliser), the key features from the projections
 * the key pass kept (the head's stabiliser): the same floats, row for
 * row, as projecting and exponentiating all rows beforehand. */
static void performer_feat(const void *ctx, int h, int r0, int L, float *fq, float *fk)
{
    const performer_ctx *c = ctx;
    const size_t row = (size_t)h * c->n + r0;
    if (fq) {
        favor_project_packed(c->q + row * c->d, L, c->d, c->d, c->wp + (size_t)h * c->wps, c->m, c->xs, fq);
        favor_exp_rows(fq, L, c->m, FAVOR_EPS, NULL);
    }
    if (fk) {
        memcpy(fk, c->uk + row * c->m, (size_t)L * c->m * sizeof *fk);
        favor_exp_global(fk, L, c->m, c->ck[h], 0.0f);
    }
}

static int performer_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    performer_state *st = state;
    (void)l;
    const int mok = performer_mask_ok(state, &pb->s);
    if (mok != AB_OK) return mok;
    const int H = pb->s.heads, n = pb->s.seq_len, d = pb->s.head_dim, m = st->m;
    const float xs = sqrtf(pb->s.scale);
    const size_t wps = performer_wps(m, d);
    /* W is a pure function of (seed, head, m, d): the last call's when
     * they match (the model's fixed projection at inference), else drawn
     * and packed afresh */
    int draw = st->wseed != pb->seed || !st->w;
    if (la_feats_ensure(&st->f, H, n, d, m, 0) || !st->w) { /* else: the last call's arrays */
        free(st->w);
        free(st->wp);
        free(st->ck);
        st->w = malloc((size_t)H * m * d * sizeof(float));
        st->wp = malloc((size_t)H * wps * sizeof(float));
        st->ck = malloc((size_t)H * sizeof(float));
        draw = 1;
    }
    st->xscale = xs;
    float *uk = st->f.pk;
    const int nb = (n + PF_ROWS - 1) / PF_ROWS;
    float *bmax = malloc((size_t)H * nb * sizeof(float));
    int rc = (st->w && st->wp && uk && st->ck && bmax) ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK && draw) {
        st->wseed = pb->seed;
#pragma omp parallel for schedule(static)
        for (int h = 0; h < H; h++) {
            if (favor_draw(pb->seed, h, m, d, st->w + (size_t)h * m * d) != AB_OK) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            } else {
                bs_pack_nt(st->w + (size_t)h * m * d, d, m, d, st->wp + (size_t)h * wps);
            }
        }
    }
    if (rc == AB_OK) {
        /* the keys' projections and their block maxima; the head's
         * maximum is the keys' stabiliser */
#pragma omp parallel for schedule(dynamic, 1)
        for (int t = 0; t < H * nb; t++) {
            const int h = t / nb, r0 = (t % nb) * PF_ROWS, r1 = r0 + PF_ROWS < n ? r0 + PF_ROWS : n;
            bmax[t] = favor_project_packed(pb->k + ((size_t)h * n + r0) * d, r1 - r0, d, d,
                                           st->wp + (size_t)h * wps, m, xs, uk + ((size_t)h * n + r0) * m);
        }
        for (int h = 0; h < H; h++) {
            float c = -INFINITY;
            for (int b = 0; b < nb; b++) c = bmax[(size_t)h * nb + b] > c ? bmax[(size_t)h * nb + b] : c;
            st->ck[h] = c;
        }
        const performer_ctx c = {
            .q = pb->q, .uk = uk, .wp = st->wp, .ck = st->ck, .n = n, .d = d, .m = m, .wps = wps, .xs = xs
        };
        const la_args a = { .heads = H,
                            .n = n,
                            .m = m,
                            .d = d,
                            .causal = pb->s.causal,
                            .feat = performer_feat,
                            .ctx = &c,
                            .v = pb->v,
                            .logdecay = NULL,
                            .ld_stride = 0,
                            .out = out };
        rc = la_run(&a);
    }
    free(bmax);
    if (rc != AB_OK) {
        performer_fini(state);
        ab_set_error(state, "performer: out of memory");
    }
    return rc;
}

static int performer_weights(void *state, const ab_problem *pb, const ab_layout *l, int head, int row,
                             double *w)
{
    const performer_state *st = state;
    (void)l;
    const int n = pb->s.seq_len, d = pb->s.head_dim, m = st->m;
    if (!st->w || !la_feats_hold(&st->f, n, d, head) || row < 0 || row >= n) return AB_EINVAL;
    double *fq = malloc((size_t)m * sizeof *fq);
    float *fk = malloc((size_t)m * sizeof *fk);
    if (!fq || !fk) {
        free(fq);
        free(fk);
        return AB_ENOMEM;
    }
    favor_phi_row(pb->q + ((size_t)head * n + row) * d, d, st->w + (size_t)head * m * d, m, st->xscale,
                  -INFINITY, FAVOR_EPS, fq);
    const int hi = pb->s.causal ? row + 1 : n;
    const float *uk = st->f.pk + (size_t)head * n * m;
    for (int j = 0; j < n; j++) {
        double s = 0;
        if (j < hi) { /* key j's features as run() made them */
            memcpy(fk, uk + (size_t)j * m, (size_t)m * sizeof *fk);
            favor_exp_global(fk, 1, m, st->ck[head], 0.0f);
            for (int r = 0; r < m; r++) s += fq[r] * fk[r];
        }
        w[j] = s;
    }
    free(fq);
    free(fk);
    return AB_OK;
}

const ab_method ab_performer = {
    .abi = AB_ABI_VERSION,
    .family = "lowrank",
    .approx_tol = 5.0, /* measured worst 3.28 (Gaussian N=512 d=64: FAVOR+ variance at |x|^2 = 8), x1.5 */
    .name = "performer",
    .summary = "Performer FAVOR+: positive orthogonal random features (m per head, redrawn per seed), normalised linear attention, causal prefix sums (custom run)",
    .reference = "Choromanski et al. 2021, Rethinking Attention with Performers, arXiv 2009.14794",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_M] = { .name = "m", .def = 256, .min = 4, .max = 4096, .is_int = 1,
                  .help = "random features per head (FAVOR+ nb_features; official default 256)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_M, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(performer_state),
    .init = performer_init,
    .select = performer_select,
    .run = performer_run,
    .fini = performer_fini,
    .weights = performer_weights,
};
AB_REGISTER(ab_performer)
