/* cca.c — `cca`: Core Context Aware attention (Chen et al. 2024, "Core
 * Context Aware Transformers for Long Context Language Modeling" /
 * CCA-Attention, arXiv 2412.12465).
 *
 * CCA replaces distant raw tokens by pooled "core tokens":
 *  - globality-aware pooling: keys are grouped into groups of g tokens; each
 *    group's importance weights are the attention of the group's last query
 *    over the group's keys, w = softmax(q_last . K_group^T * scale), and the
 *    core token is (sum w k, sum w v);
 *  - locality-preserving attention: a window of raw tokens before the query;
 *  - fusion: one softmax over [core tokens; raw local tokens].
 * To keep the pooled and raw parts a partition of the keys (so nothing is
 * counted twice and window >= N is exactly dense attention), the raw window
 * of row i starts at the group boundary b(i) = g * floor(max(0, i-w+1) / g)
 * and row i attends the core tokens of the groups before b(i) (all complete
 * and causally valid) plus raw keys [b(i), i]. Non-causal: raw keys in the
 * group-aligned band around i, core tokens for every other group. The paper
 * lets the window and the core tokens overlap; this is our deviation.
 *
 * Keys are pooled, so no (query, key) layout describes it: CUSTOM layout with
 * its own run(). Reported density = score FLOPs over dense score FLOPs:
 * (sum over rows of the core and raw keys attended + one logit per pooled
 * token for the groups in use) / causally valid pairs.
 *
 * Base masks: plain causal and full only. Core tokens pool keys across any
 * boundary a document, window, prefix or chunk mask draws, so under those
 * select() and run() return AB_EUNSUPPORTED (recorded as "unsupported")
 * rather than a silently wrong result.
 *
 * Density knob: window (rises with it; density ~ (w + i/g) / i per row, so
 * its floor is ~1/g). Defaults g = 16, window = 1024 (ours; the paper's
 * group size and window depend on the model and context length). Memory:
 * core keys/values (N/g, d) per head and one 64-row attention tile per
 * thread; never N x N. Selection cost (ab_layout_set_cost): 0, 0 — select()
 * only states the static pattern's density; the pooling and the attention
 * over core and raw keys are run()'s work (per 64-row tile: one online
 * softmax over the core tokens, then the raw keys, on the kernels' chunk
 * step through ab_attn_tile).
 *
 * weights() (ABI 6): a raw key weighs exp(its logit); a core token's
 * exp(q . k_core) is split over its group's keys by the pooling weights,
 * so run()'s row is sum w v / sum w (the core value is the pooled one).
 */
#include "attnbench.h"
#include "methods/plain_mask.h"
#include "methods/block_score.h"
#include "methods/lse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CCA_TILE 64 /* query rows per tile in run() */

typedef struct cca_state {
    int window; /* raw local tokens (before group alignment) */
    int group;  /* g */
} cca_state;

enum { P_WINDOW = 0, P_GROUP, P_COUNT };

static int cca_init(void *state, const ab_params *p, const ab_shape *s)
{
    cca_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "cca: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_WINDOW] >= 1 && p->v[P_WINDOW] <= (1 << 24)) ||
        !(p->v[P_GROUP] >= 1 && p->v[P_GROUP] <= 4096)) {
        ab_set_error(state, "cca: window must be in [1, 2^24], group in [1, 4096]");
        return AB_EINVAL;
    }
    st->window = (int)p->v[P_WINDOW];
    st->group = (int)p->v[P_GROUP];
    return AB_OK;
}

/* Raw key range [*lo, *hi) of row i; the core groups it uses are those
 * entirely outside it. */
static void raw_range(const cca_state *st, int n, int causal, int i, int *lo, int *hi)
{
    const int g = st->group, w = st->window;
    const int a = i - w + 1 > 0 ? i - w + 1 : 0;
    *lo = a / g * g;
    if (causal) {
        *hi = i + 1;
    } else {
        const long e = (long)i + w; /* exclusive end of the symmetric band */
        const long eg = (e + g - 1) / g * g;
        *hi = eg < n ? (int)eg : n;
    }
}

/* AB_OK under the plain causal / full base masks, else AB_EUNSUPPORTED. */
static int cca_mask_ok(void *state, const ab_shape *s)
{
    return mc_plain_mask_only(state, s, 1, "cca", "core tokens pool keys across its boundaries");
}

static int cca_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const cca_state *st = state;
    const int ok = cca_mask_ok(state, &pb->s);
    if (ok != AB_OK) return ok;
    const int n = pb->s.seq_len, g = st->group, causal = pb->s.causal;
    const int ng = (n + g - 1) / g;
    double kept = 0.0, valid = 0.0;
    int used_groups = 0; /* groups whose core token some row uses */
    for (int i = 0; i < n; i++) {
        int lo, hi;
        raw_range(st, n, causal, i, &lo, &hi);
        const int cores = causal ? lo / g : lo / g + (ng - (hi + g - 1) / g);
        kept += (hi - lo) + cores;
        valid += causal ? i + 1 : n;
        if (causal)
            used_groups = lo / g > used_groups ? lo / g : used_groups;
        else if (cores > 0)
            used_groups = ng;
    }
    /* pooling: one importance logit per token of a group in use */
    kept += used_groups * (double)g < n ? used_groups * (double)g : n;
    double dens = valid > 0 ? kept / valid : 1.0;
    dens = dens > 1.0 ? 1.0 : dens;
    const int rc = ab_layout_custom(l, dens);
    /* a static pattern: the pooling and the attention are run()'s work */
    return rc == AB_OK ? ab_layout_set_cost(l, 0.0, 0.0) : rc;
}

/* Core keys and values of one head: ck, cv (ng, d). */
static void pool_cores(const float *q, const float *k, const float *v, int n, int d, int g, float scale,
                       double *w, float *ck, float *cv)
{
    const int ng = (n + g - 1) / g;
    for (int c = 0; c < ng; c++) {
        const int j0 = c * g, j1 = j0 + g < n ? j0 + g : n, t = j1 - 1;
        for (int j = j0; j < j1; j++) {
            float s = 0.0f;
            for (int e = 0; e < d; e++) s += q[(size_t)t * d + e] * k[(size_t)j * d + e];
            w[j - j0] = (double)s * scale;
        }
        bs_softmax(w, j1 - j0);
        float *a = ck + (size_t)c * d, *b = cv + (size_t)c * d;
        for (int e = 0; e < d; e++) a[e] = b[e] = 0.0f;
        for (int j = j0; j < j1; j++) {
            const float wj = (float)w[j - j0];
            for (int e = 0; e < d; e++) {
                a[e] += wj * k[(size_t)j * d + e];
                b[e] += wj * v[(size_t)j * d + e];
            }
        }
    }
}

static int cca_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    const cca_state *st = state;
    const int H = pb->s.heads, n = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int g = st->group, ng = (n + g - 1) / g;
    const int mok = cca_mask_ok(state, &pb->s);
    if (mok != AB_OK) return mok;
    const float scale = pb->s.scale;
    const int ntiles = (n + CCA_TILE - 1) / CCA_TILE;
    float *ck = malloc((size_t)H * ng * d * sizeof *ck); /* (heads, ng, d) core keys */
    float *cv = malloc((size_t)H * ng * d * sizeof *cv); /* (heads, ng, d) core values */
    int rc = (ck && cv) ? AB_OK : AB_ENOMEM;

    if (rc == AB_OK) {
#pragma omp parallel
        {
            double *w = malloc((size_t)g * sizeof *w);
            if (!w) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(static)
            for (int h = 0; h < H; h++)
                if (w)
                    pool_cores(pb->q + (size_t)h * n * d, pb->k + (size_t)h * n * d,
                               pb->v + (size_t)h * n * d, n, d, g, scale, w, ck + (size_t)h * ng * d,
                               cv + (size_t)h * ng * d);
            free(w);
        }
    }
    if (rc == AB_OK) {
#pragma omp parallel
        {
            ab_attn_tile *at = ab_attn_tile_new(d, CCA_TILE);
            if (!at) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int tix = 0; tix < H * ntiles; tix++) {
                if (!at) continue;
                const int h = tix / ntiles, r0 = (tix % ntiles) * CCA_TILE;
                const int r1 = r0 + CCA_TILE < n ? r0 + CCA_TILE : n, nr = r1 - r0;
                const float *q = pb->q + (size_t)h * n * d, *k = pb->k + (size_t)h * n * d,
                            *v = pb->v + (size_t)h * n * d;
                const float *hk = ck + (size_t)h * ng * d, *hv = cv + (size_t)h * ng * d;
                /* per row: core tokens [0, ca) and [cb, ng) (groups entirely
                 * outside the raw range), raw keys [lo, hi) */
                int ca[CCA_TILE], cb[CCA_TILE], lo[CCA_TILE], hi[CCA_TILE];
                for (int i = r0; i < r1; i++) {
                    const int x = i - r0;
                    raw_range(st, n, causal, i, &lo[x], &hi[x]);
                    ca[x] = lo[x] / g;
                    cb[x] = causal ? ng : (hi[x] + g - 1) / g;
                }
                /* one softmax over the core tokens, then the raw keys (the
                 * kernels' chunk step, ab_attn_tile; methods/lse.h) */
                ab_attn_tile_begin(at, q + (size_t)r0 * d, d, nr, scale);
                lse_keys_outside(at, hk, hv, ng, d, nr, ca, cb);
                lse_keys_ranges(at, k, v, d, nr, lo, hi);
                ab_attn_tile_end(at, out + ((size_t)h * n + r0) * d, d, NULL);
            }
            ab_attn_tile_free(at);
        }
    }
    if (rc != AB_OK) ab_set_error(state, "cca: out of memory");
    free(ck);
    free(cv);
    return rc;
}

/* weights(): the implied weight of every key for row `row` of head `head`,
 * consistent with run(): a raw key j in [lo, hi) weighs exp(l_ij - m); a
 * key j of a pooled group c weighs exp(l_ic - m) * pw_j, the core token's
 * weight split over its group by the pooling weights pw (which sum to 1),
 * so that sum_j w_j v_j = exp(l_ic - m) cv_c. l: scaled logits, m their max
 * over the row. Recomputes the pooling of the groups in use (double
 * accumulation; run() uses float: they agree to fp32 rounding). O(N d) per
 * row; reads the state only. */
static int cca_weights(void *state, const ab_problem *pb, const ab_layout *l, int head, int row, double *w)
{
    (void)l;
    const cca_state *st = state;
    const int mok = cca_mask_ok(state, &pb->s);
    if (mok != AB_OK) return mok;
    const int n = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal, g = st->group;
    const int ng = (n + g - 1) / g;
    const double scale = pb->s.scale;
    const float *q = pb->q + (size_t)head * n * d, *k = pb->k + (size_t)head * n * d;
    const float *qi = q + (size_t)row * d;
    double *pw = malloc((size_t)g * sizeof *pw), *ckc = malloc((size_t)d * sizeof *ckc);
    if (!pw || !ckc) {
        free(pw);
        free(ckc);
        return AB_ENOMEM;
    }
    int lo, hi;
    raw_range(st, n, causal, row, &lo, &hi);
    const int ca = lo / g, cb = causal ? ng : (hi + g - 1) / g;
    for (int j = 0; j < n; j++) w[j] = -INFINITY; /* logits first, then weights */
    for (int j = lo; j < hi; j++) {
        double s = 0.0;
        for (int e = 0; e < d; e++) s += (double)qi[e] * k[(size_t)j * d + e];
        w[j] = s * scale;
    }
    double mx = -INFINITY;
    for (int j = lo; j < hi; j++) mx = w[j] > mx ? w[j] : mx;
    /* pass 1: core logits (stored at the group's first key), pass 2: weights */
    for (int pass = 0; pass < 2; pass++) {
        for (int c = 0; c < ng; c++) {
            if (c >= ca && c < cb) continue;
            const int j0 = c * g, j1 = j0 + g < n ? j0 + g : n, t = j1 - 1;
            for (int j = j0; j < j1; j++) {
                double s = 0.0;
                for (int e = 0; e < d; e++) s += (double)q[(size_t)t * d + e] * k[(size_t)j * d + e];
                pw[j - j0] = s * scale;
            }
            bs_softmax(pw, j1 - j0);
            if (pass == 0) {
                for (int e = 0; e < d; e++) ckc[e] = 0.0;
                for (int j = j0; j < j1; j++)
                    for (int e = 0; e < d; e++) ckc[e] += pw[j - j0] * k[(size_t)j * d + e];
                double s = 0.0;
                for (int e = 0; e < d; e++) s += (double)qi[e] * ckc[e];
                w[j0] = s * scale; /* the core logit, until pass 2 */
                mx = w[j0] > mx ? w[j0] : mx;
            } else {
                const double wc = exp(w[j0] - mx);
                for (int j = j0; j < j1; j++) w[j] = wc * pw[j - j0];
            }
        }
    }
    for (int j = lo; j < hi; j++) w[j] = exp(w[j] - mx);
    for (int j = 0; j < n; j++)
        if (w[j] == -INFINITY) w[j] = 0.0;
    free(pw);
    free(ckc);
    return AB_OK;
}

const ab_method ab_cca = {
    .abi = AB_ABI_VERSION,
    .family = "lowrank",
    .approx_tol = 1e-5, /* default window 1024 >= N of the test: exact */
    .name = "cca",
    .summary = "CCA-attention, untrained pattern (the paper fine-tunes for it): groups of g keys pooled into importance-weighted core tokens + raw local window (custom run)",
    .reference = "Chen et al. 2024, Core Context Aware attention (CCA-Attention), arXiv 2412.12465",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_WINDOW] = { .name = "window", .def = 1024, .min = 1, .max = 1 << 24, .is_int = 1,
                       .help = "raw local tokens before the query (aligned down to a group boundary)" },
        [P_GROUP] = { .name = "group", .def = 16, .min = 1, .max = 4096, .is_int = 1,
                      .help = "tokens pooled into one core token (g)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_WINDOW, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(cca_state),
    .init = cca_init,
    .select = cca_select,
    .run = cca_run,
    .fini = NULL,
    .weights = cca_weights,
};
AB_REGISTER(ab_cca)
