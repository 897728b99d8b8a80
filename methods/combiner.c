/* combiner.c — `combiner`: Combiner-Fixed, untrained (Ren, Dai, Dai, Yang,
 * Leskovec, Schuurmans and Dai, "Combiner: Full Attention Transformer with
 * Sparse Computation Cost", NeurIPS 2021, arXiv 2107.05768).
 *
 * Combiner keeps full attention support but factorises it: each query i
 * attends directly to its own region of keys and, for every other region r
 * it may see, to a summary of it, all under one softmax normaliser:
 *     out_i = [ sum_{j in own(i)} e^{l_ij} v_j
 *             + sum_r e^{l_ir} sum_{j in r} p(j|r) v_j ] / Z_i,
 *     Z_i  =   sum_{j in own(i)} e^{l_ij} + sum_r e^{l_ir},
 * so every row's weights are a proper mixture over all keys the mask allows
 * (Combiner's "full attention capability"). Combiner-Fixed: the sequence is
 * cut into regions of s consecutive tokens; own(i) is i's region (causal:
 * its keys up to i); the summarised regions are the earlier ones (causal) or
 * all the others (non-causal).
 *
 * Our choices (the paper leaves them to the parameterisation, which it trains):
 *  - region key: the mean key kbar_r (the paper's "mean" pooling);
 *  - region logit: l_ir = scale * q_i . kbar_r + log |r|: the region counts
 *    as |r| keys of logit q_i . kbar_r (a first-order estimate of its
 *    partition sum; the paper has exp(q_i . k_r) alone, with trained
 *    projections free to learn that scale) — our deviation, without which
 *    an untrained summary is outweighed by every single local key;
 *  - p(j|r): the local attention of the region's summary query, the mean
 *    query qbar_r, over the region's keys: softmax_j(scale * qbar_r . k_j)
 *    (the paper's local-attention parameterisation of p(j|Omega_r));
 *    the region value is sum_j p(j|r) v_j.
 * Implied weights (weights(), ABI 6): w_ij = e^{l_ij} on own(i),
 * e^{l_ir} p(j|r) on a summarised region (shifted by the row max).
 *
 * Density knob: region size s (rises with it: s >= N is exactly dense
 * attention). A row costs about s/2 + i/s logits, which falls with s below
 * sqrt(N), so the region size used is max(s, ceil(sqrt(N))): density is
 * then monotone in s with a floor ~ 2/sqrt(N) (our deviation; the paper uses
 * s = sqrt(N)). Reported density = score FLOPs over dense score FLOPs:
 * (sum over rows of direct keys + summarised regions, plus one pooling logit
 * per key of the regions in use) / allowed pairs, capped at 1.
 *
 * Base masks: plain causal and full only; regions and their summaries would
 * cross document, window, prefix or chunk boundaries, so select() and run()
 * return AB_EUNSUPPORTED for the others. Memory: region keys and values
 * (N/s, d) per head and one 64-row attention tile per thread. Selection
 * cost (ab_layout_set_cost): 0, 0 — a static pattern; the summaries and the
 * attention are run()'s work (per 64-row tile: the own keys and the region
 * summaries as online softmaxes on the kernels' chunk step, ab_attn_tile,
 * merged by log-sum-exp with the regions' log |r|).
 */
#include "attnbench.h"
#include "methods/plain_mask.h"
#include "methods/block_score.h"
#include "methods/lse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CMB_TILE 64 /* query rows per tile in run() */

typedef struct combiner_state {
    int region; /* s as set (the size used is max(s, ceil(sqrt(N)))) */
} combiner_state;

enum { P_REGION = 0, P_COUNT };

static int combiner_init(void *state, const ab_params *p, const ab_shape *s)
{
    (void)s;
    combiner_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "combiner: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_REGION] >= 1 && p->v[P_REGION] <= (1 << 24))) {
        ab_set_error(state, "combiner: region must be in [1, 2^24]");
        return AB_EINVAL;
    }
    st->region = (int)p->v[P_REGION];
    return AB_OK;
}

/* The region size used at length n. */
static int region_size(const combiner_state *st, int n)
{
    int f = (int)ceil(sqrt((double)n));
    f = f > 1 ? f : 1;
    const int s = st->region > f ? st->region : f;
    return s < n ? s : (n > 0 ? n : 1);
}

/* Row i's direct keys [*lo, *hi): its region (causal: up to i). */
static void own_range(int s, int n, int causal, int i, int *lo, int *hi)
{
    *lo = i / s * s;
    const int e = *lo + s < n ? *lo + s : n;
    *hi = causal ? i + 1 : e;
}

static int combiner_mask_ok(void *state, const ab_shape *s)
{
    return mc_plain_mask_only(state, s, 1, "combiner", "region summaries pool keys across its boundaries");
}

static int combiner_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const combiner_state *st = state;
    const int ok = combiner_mask_ok(state, &pb->s);
    if (ok != AB_OK) return ok;
    const int n = pb->s.seq_len, causal = pb->s.causal, s = region_size(st, n);
    const int nreg = (n + s - 1) / s;
    double kept = 0.0, valid = 0.0;
    int used = 0; /* regions some row summarises: [0, used) */
    for (int i = 0; i < n; i++) {
        int lo, hi;
        own_range(s, n, causal, i, &lo, &hi);
        const int regs = causal ? i / s : nreg - 1;
        kept += (hi - lo) + regs;
        valid += causal ? i + 1 : n;
        if (causal)
            used = regs > used ? regs : used;
        else if (regs > 0)
            used = nreg;
    }
    /* pooling: one logit qbar_r . k_j per key of a region in use */
    kept += used * (double)s < n ? used * (double)s : n;
    double dens = valid > 0 ? kept / valid : 1.0;
    dens = dens > 1.0 ? 1.0 : dens;
    const int rc = ab_layout_custom(l, dens);
    return rc == AB_OK ? ab_layout_set_cost(l, 0.0, 0.0) : rc;
}

/* Region r = [j0, j1) of one head: pooling probabilities p (j1 - j0) of the
 * mean query over the keys (double), and the mean key kbar (d). */
static void region_pool(const float *q, const float *k, int d, int j0, int j1, double scale, double *qbar,
                        double *p, double *kbar)
{
    const int m = j1 - j0;
    for (int e = 0; e < d; e++) qbar[e] = kbar[e] = 0.0;
    for (int j = j0; j < j1; j++)
        for (int e = 0; e < d; e++) {
            qbar[e] += q[(size_t)j * d + e];
            kbar[e] += k[(size_t)j * d + e];
        }
    for (int e = 0; e < d; e++) {
        qbar[e] /= m;
        kbar[e] /= m;
    }
    for (int j = j0; j < j1; j++) {
        double a = 0.0;
        for (int e = 0; e < d; e++) a += qbar[e] * k[(size_t)j * d + e];
        p[j - j0] = a * scale;
    }
    bs_softmax(p, m);
}

static int combiner_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    (void)l;
    const combiner_state *st = state;
    const int mok = combiner_mask_ok(state, &pb->s);
    if (mok != AB_OK) return mok;
    const int H = pb->s.heads, n = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int s = region_size(st, n), nreg = (n + s - 1) / s;
    const float scale = pb->s.scale;
    const int ntiles = (n + CMB_TILE - 1) / CMB_TILE;
    float *rk = malloc((size_t)H * nreg * d * sizeof *rk); /* (heads, nreg, d) mean keys */
    float *rv = malloc((size_t)H * nreg * d * sizeof *rv); /* (heads, nreg, d) pooled values */
    float *lb = malloc((size_t)nreg * sizeof *lb);         /* log |r| */
    int rc = (rk && rv && lb) ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) {
        for (int r = 0; r < nreg; r++) lb[r] = (float)log((double)((r + 1) * s < n ? s : n - r * s));
#pragma omp parallel
        {
            double *p = malloc((size_t)s * sizeof *p), *qb = malloc((size_t)d * 2 * sizeof *qb);
            if (!p || !qb) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(static)
            for (int t = 0; t < H * nreg; t++) {
                if (!p || !qb) continue;
                const int h = t / nreg, r = t % nreg, j0 = r * s, j1 = j0 + s < n ? j0 + s : n;
                const float *q = pb->q + (size_t)h * n * d, *k = pb->k + (size_t)h * n * d,
                            *v = pb->v + (size_t)h * n * d;
                region_pool(q, k, d, j0, j1, scale, qb, p, qb + d);
                float *a = rk + ((size_t)h * nreg + r) * d, *b = rv + ((size_t)h * nreg + r) * d;
                for (int e = 0; e < d; e++) {
                    a[e] = (float)qb[d + e];
                    double acc = 0.0;
                    for (int j = j0; j < j1; j++) acc += p[j - j0] * v[(size_t)j * d + e];
                    b[e] = (float)acc;
                }
            }
            free(p);
            free(qb);
        }
    }
    if (rc == AB_OK) {
#pragma omp parallel
        {
            ab_attn_tile *at = ab_attn_tile_new(d, CMB_TILE);
            float *o2 = malloc((size_t)CMB_TILE * d * sizeof *o2);
            const int ok = at && o2;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int tix = 0; tix < H * ntiles; tix++) {
                if (!ok) continue;
                const int h = tix / ntiles, r0 = (tix % ntiles) * CMB_TILE;
                const int r1 = r0 + CMB_TILE < n ? r0 + CMB_TILE : n, nr = r1 - r0;
                const float *q = pb->q + ((size_t)h * n + r0) * d, *k = pb->k + (size_t)h * n * d,
                            *v = pb->v + (size_t)h * n * d;
                const float *hk = rk + (size_t)h * nreg * d, *hv = rv + (size_t)h * nreg * d;
                float *o = out + ((size_t)h * n + r0) * d;
                /* per row: own keys [lo, hi); summarised regions [0, ca) and,
                 * non-causal, [cb, nfull) of the full ones, and the partial
                 * last region (index nfull) when it is not the row's own */
                const int nfull = n / s;
                int lo[CMB_TILE], hi[CMB_TILE], ca[CMB_TILE], cb[CMB_TILE], lp[CMB_TILE];
                float lse[CMB_TILE], lse2[CMB_TILE];
                int anyp = 0;
                for (int x = 0; x < nr; x++) {
                    const int i = r0 + x, own = i / s;
                    own_range(s, n, causal, i, &lo[x], &hi[x]);
                    ca[x] = own < nfull ? own : nfull;
                    cb[x] = causal ? nfull : own + 1 < nfull ? own + 1 : nfull;
                    lp[x] = !causal && nfull < nreg && own != nfull;
                    anyp |= lp[x];
                }
                /* the own keys, then each summary part with its log |r|
                 * (full regions: log s), merged by log-sum-exp; each part
                 * is one online softmax on the kernels' chunk step
                 * (ab_attn_tile; methods/lse.h) */
                ab_attn_tile_begin(at, q, d, nr, scale);
                lse_keys_ranges(at, k, v, d, nr, lo, hi);
                ab_attn_tile_end(at, o, d, lse);
                ab_attn_tile_begin(at, q, d, nr, scale);
                lse_keys_outside(at, hk, hv, nfull, d, nr, ca, cb);
                ab_attn_tile_end(at, o2, d, lse2);
                for (int x = 0; x < nr; x++)
                    lse_merge(o + (size_t)x * d, &lse[x], o2 + (size_t)x * d, lse2[x], lb[0], d);
                if (anyp) {
                    ab_attn_tile_begin(at, q, d, nr, scale);
                    ab_attn_tile_keys(at, hk + (size_t)nfull * d, hv + (size_t)nfull * d, 1, NULL, lp);
                    ab_attn_tile_end(at, o2, d, lse2);
                    for (int x = 0; x < nr; x++)
                        lse_merge(o + (size_t)x * d, &lse[x], o2 + (size_t)x * d, lse2[x], lb[nfull], d);
                }
            }
            ab_attn_tile_free(at);
            free(o2);
        }
    }
    if (rc != AB_OK) ab_set_error(state, "combiner: out of memory");
    free(rk);
    free(rv);
    free(lb);
    return rc;
}

/* Implied weights of row `row` (see the header): O(N d) per row, recomputes
 * the summaries in double; reads the state only. */
static int combiner_weights(void *state, const ab_problem *pb, const ab_layout *l, int head, int row,
                            double *w)
{
    (void)l;
    const combiner_state *st = state;
    const int mok = combiner_mask_ok(state, &pb->s);
    if (mok != AB_OK) return mok;
    const int n = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int s = region_size(st, n), nreg = (n + s - 1) / s, own = row / s;
    const double scale = pb->s.scale;
    const float *q = pb->q + (size_t)head * n * d, *k = pb->k + (size_t)head * n * d;
    const float *qi = q + (size_t)row * d;
    double *p = malloc((size_t)s * sizeof *p), *qk = malloc((size_t)2 * d * sizeof *qk);
    double *rl = malloc((size_t)nreg * sizeof *rl);
    if (!p || !qk || !rl) {
        free(p);
        free(qk);
        free(rl);
        return AB_ENOMEM;
    }
    int lo, hi;
    own_range(s, n, causal, row, &lo, &hi);
    const int last = causal ? own : nreg; /* summarised: [0, last) except own */
    double mx = -INFINITY;
    for (int j = 0; j < n; j++) w[j] = 0.0;
    for (int j = lo; j < hi; j++) {
        double a = 0.0;
        for (int e = 0; e < d; e++) a += (double)qi[e] * k[(size_t)j * d + e];
        w[j] = a * scale;
        mx = w[j] > mx ? w[j] : mx;
    }
    for (int r = 0; r < last; r++) {
        if (r == own) continue;
        const int j0 = r * s, j1 = j0 + s < n ? j0 + s : n;
        region_pool(q, k, d, j0, j1, scale, qk, p, qk + d);
        double a = 0.0;
        for (int e = 0; e < d; e++) a += (double)qi[e] * qk[d + e];
        rl[r] = a * scale + log((double)(j1 - j0));
        mx = rl[r] > mx ? rl[r] : mx;
    }
    for (int j = lo; j < hi; j++) w[j] = exp(w[j] - mx);
    for (int r = 0; r < last; r++) {
        if (r == own) continue;
        const int j0 = r * s, j1 = j0 + s < n ? j0 + s : n;
        region_pool(q, k, d, j0, j1, scale, qk, p, qk + d);
        const double wr = exp(rl[r] - mx);
        for (int j = j0; j < j1; j++) w[j] = wr * p[j - j0];
    }
    free(p);
    free(qk);
    free(rl);
    return AB_OK;
}

const ab_method ab_combiner = {
    .abi = AB_ABI_VERSION,
    .family = "lowrank",
    .approx_tol = 1.15, /* measured worst 0.765 (full), 0.380 (causal) at s = 128, N = 512: 1.5x */
    .name = "combiner",
    .summary = "Combiner-Fixed, untrained (the paper trains its projections): direct attention in the query's region of s keys + one mean-key summary per other region, spread by the region's local attention (custom run)",
    .reference = "Ren et al. 2021, Combiner: Full Attention Transformer with Sparse Computation Cost, NeurIPS, arXiv 2107.05768",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_REGION] = { .name = "region", .def = 128, .min = 1, .max = 1 << 24, .is_int = 1,
                       .help = "region size s (used: max(s, ceil(sqrt(N)))); s >= N is dense attention" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_REGION, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(combiner_state),
    .init = combiner_init,
    .select = combiner_select,
    .run = combiner_run,
    .fini = NULL,
    .weights = combiner_weights,
};
AB_REGISTER(ab_combiner)
