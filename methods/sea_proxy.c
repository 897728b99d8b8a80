/* sea_proxy.c — `sea_proxy`: a training-free stand-in for SEA (Lee, Kim,
 * Willette and Hwang, "SEA: Sparse Linear Attention with Estimated Attention
 * Mask", ICLR 2024, arXiv 2310.01777; official code gmlwns2000/sea-attention,
 * codename "perlin").
 *
 * SEA estimates each row's attention with linear cost (a Performer kernel
 * attention whose output a trained CNN decoder turns into a compressed
 * attention matrix), keeps the top-k keys of every row of that estimate and
 * runs exact softmax attention on them. The estimator is trained (distilled
 * from the teacher's attention), so this file is a proxy: the estimate is a
 * training-free low-rank random projection of Q and K instead,
 *     est(i, j) = scale * (q_i R) . (k_j R) / r,
 * R a d x r matrix of N(0, 1) entries drawn from pb->seed (a
 * Johnson-Lindenstrauss sketch: E[R R^T] = r I, so est is an unbiased
 * estimate of the logit scale * q_i . k_j at 2r instead of 2d FLOPs per pair).
 * Per query block of block_q rows (default 4; block_q = 1 is SEA's per-row
 * top-k), the estimated logits of each row go through a softmax over the
 * keys the base mask lets it see, the probabilities are summed over the
 * block's rows, and the topk keys with the largest summed estimate (ties to
 * the lower index) form the block's key list: TOKEN layout, run = NULL, so
 * the shared kernel computes exact softmax attention on it.
 *
 * What the proxy cannot reproduce: SEA's trained estimator (its decoder sees
 * the Performer context and learns the teacher's attention shape, e.g.
 * sinks and local bands); SEA's compressed-width mask (top-k at a reduced
 * key resolution, interpolated back) — we rank every key; SEA's dynamic k
 * per row. Deviations: the projection estimate (stated above) replaces the
 * Performer + CNN; query blocks of block_q rows share a list.
 *
 * Density knob: topk (rises with it; fractional budgets dithered over query
 * blocks by mc_dither, so density moves smoothly). Base masks: every mask,
 * through its spans (ab_mask_span / ab_mask_allows): only keys some row of
 * the block may see are candidates.
 *
 * Stated cost (ab_layout_set_cost): projections 2 d r per query and key row,
 * 2 r per estimated pair + 4 (max, exp, sum, mass add), ~2 per candidate for
 * the quickselect; bytes: Q and K read once, the projections written and
 * read back, the estimated logits written and read.
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

enum { P_TOPK = 0, P_RANK, P_BLOCKQ, P_COUNT };

typedef struct sea_state {
    double topk; /* mean keys per query block (fractional: dithered) */
    int rank;    /* r: projection width */
    int block_q; /* query rows sharing one key list */
} sea_state;

static int sea_init(void *state, const ab_params *p, const ab_shape *s)
{
    (void)s;
    sea_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "sea_proxy: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_TOPK] >= 1 && p->v[P_TOPK] <= (1 << 24)) || !(p->v[P_RANK] >= 1 && p->v[P_RANK] <= 1024) ||
        !(p->v[P_BLOCKQ] >= 1 && p->v[P_BLOCKQ] <= 4096)) {
        ab_set_error(state, "sea_proxy: topk in [1, 2^24], rank in [1, 1024], block_q in [1, 4096]");
        return AB_EINVAL;
    }
    st->topk = p->v[P_TOPK];
    st->rank = (int)p->v[P_RANK];
    st->block_q = (int)p->v[P_BLOCKQ];
    return AB_OK;
}

/* A standard normal from the seeded stream (Box-Muller, one of the pair). */
static double sea_gauss(uint64_t *s)
{
    const double u1 = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = (ab_splitmix64(s) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* out (n, r) = x (n, d) R (d, r) * mul, double accumulation. */
static void project(const float *x, int n, int d, const double *R, int r, double mul, float *out)
{
    for (int i = 0; i < n; i++)
        for (int c = 0; c < r; c++) {
            double a = 0.0;
            for (int e = 0; e < d; e++) a += (double)x[(size_t)i * d + e] * R[(size_t)e * r + c];
            out[(size_t)i * r + c] = (float)(a * mul);
        }
}

static int sea_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const sea_state *st = state;
    const int N = l->seq_len, H = l->heads, d = pb->s.head_dim, r = st->rank;
    int rc = ab_layout_set_blocks(l, st->block_q < N ? st->block_q : (N > 0 ? N : 1), l->block_k);
    if (rc != AB_OK) return rc;
    const int bq = l->block_q, nqb = l->n_qblocks, rows = H * nqb;
    const ab_mask mask = ab_shape_mask(&pb->s);

    double *R = malloc((size_t)d * r * sizeof *R);
    /* pk: each head's key projections, packed once for bs_gemm_nt_packed
     * (panels of 64 keys from key 0): no per-block transposition */
    const size_t npan = ((size_t)N + BS_PANEL - 1) / BS_PANEL * BS_PANEL;
    float *pq = malloc((size_t)H * N * r * sizeof *pq), *pk = malloc((size_t)H * N * r * sizeof *pk);
    float *pkp = malloc((size_t)H * (npan > 0 ? npan : 1) * r * sizeof *pkp);
    if (!R || !pq || !pk || !pkp) {
        free(R);
        free(pq);
        free(pk);
        free(pkp);
        ab_set_error(state, "sea_proxy: out of memory");
        return AB_ENOMEM;
    }
    uint64_t s = ab_mix64(pb->seed ^ 0x5ea0000000000001ull);
    for (size_t t = 0; t < (size_t)d * r; t++) R[t] = sea_gauss(&s);
#pragma omp parallel for schedule(static)
    for (int h = 0; h < H; h++) {
        project(pb->q + (size_t)h * N * d, N, d, R, r, (double)pb->s.scale / r, pq + (size_t)h * N * r);
        project(pb->k + (size_t)h * N * d, N, d, R, r, 1.0, pk + (size_t)h * N * r);
        bs_pack_nt(pk + (size_t)h * N * r, r, N, r, pkp + (size_t)h * npan * r);
    }

    double pairs = 0.0, cands = 0.0;
#pragma omp parallel reduction(+ : pairs, cands)
    {
        float *sc = malloc((size_t)bq * (N > 0 ? N : 1) * sizeof *sc);
        double *mass = malloc((size_t)(N > 0 ? N : 1) * sizeof *mass);
        char *seen = malloc((size_t)(N > 0 ? N : 1));
        bs_cand *cd = malloc((size_t)(N > 0 ? N : 1) * sizeof *cd);
        int32_t *keys = malloc((size_t)(N > 0 ? N : 1) * sizeof *keys);
        int ok = sc && mass && seen && cd && keys;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 4)
        for (int row = 0; row < rows; row++) {
            if (!ok) continue;
            const int h = row / nqb, qb = row % nqb;
            const int r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
            int k0, k1;
            bs_rows_span(&mask, r0, r0 + nr, &k0, &k1);
            if (k1 <= k0) continue;
            k0 -= k0 % BS_PANEL; /* from a panel start: the keys added lie outside every row's span */
            const int kc = k1 - k0;
            bs_gemm_nt_packed(pq + ((size_t)h * N + r0) * r, r, nr, pkp + ((size_t)h * npan + k0) * r, kc, r,
                              1.0f, sc, kc);
            for (int j = 0; j < kc; j++) {
                mass[j] = 0.0;
                seen[j] = 0;
            }
            for (int i = 0; i < nr; i++) {
                int lo, hi;
                ab_mask_span(&mask, r0 + i, &lo, &hi);
                lo = lo > k0 ? lo : k0;
                hi = hi < k1 ? hi : k1;
                if (lo >= hi) continue;
                float *srow = sc + (size_t)i * kc + (lo - k0);
                const int len = hi - lo;
                if (!mask.def->interval) /* keys the mask hides in the span: exp gives 0 */
                    for (int j = 0; j < len; j++)
                        if (!ab_mask_allows(&mask, r0 + i, lo + j)) srow[j] = -INFINITY;
                const float mx = bs_max(srow, len);
                if (mx == -INFINITY) continue;
                const double sum = ab_exp_shift_sum(srow, len, mx); /* vector exp in place */
                const float inv = (float)(1.0 / sum);
                if (mask.def->interval) { /* every key of the span counts */
                    double *ms = mass + (lo - k0);
                    char *sn = seen + (lo - k0);
                    for (int j = 0; j < len; j++) {
                        ms[j] += srow[j] * inv;
                        sn[j] = 1;
                    }
                    pairs += len;
                    continue;
                }
                for (int j = 0; j < len; j++)
                    if (srow[j] > 0.0f || mask.def->interval || ab_mask_allows(&mask, r0 + i, lo + j)) {
                        mass[lo - k0 + j] += srow[j] * inv;
                        seen[lo - k0 + j] = 1;
                        pairs += 1.0;
                    }
            }
            int nc = 0;
            for (int j = 0; j < kc; j++)
                if (seen[j]) cd[nc++] = (bs_cand){ .score = mass[j], .idx = k0 + j };
            const int kd = mc_dither(st->topk, qb), kk = kd < nc ? kd : nc;
            bs_select_top(cd, nc, kk);
            for (int t = 0; t < kk; t++) keys[t] = cd[t].idx;
            cands += nc;
            const int ra = ab_layout_add_tokens(l, h, qb, keys, kk);
            if (ra != AB_OK) {
                ok = 0;
#pragma omp atomic write
                rc = ra;
            }
        }
        free(sc);
        free(mass);
        free(seen);
        free(cd);
        free(keys);
    }
    free(R);
    free(pq);
    free(pk);
    free(pkp);
    if (rc == AB_ENOMEM) ab_set_error(state, "sea_proxy: out of memory");
    if (rc != AB_OK) return rc;
    const double proj = 2.0 * (2.0 * H * (double)N * d * r);
    return ab_layout_set_cost(l, proj + (2.0 * r + 4.0) * pairs + 2.0 * cands,
                              4.0 * (2.0 * H * (double)N * d) + 4.0 * 2.0 * 2.0 * H * (double)N * r +
                                  8.0 * pairs);
}

const ab_method ab_sea_proxy = {
    .abi = AB_ABI_VERSION,
    .family = "token",
    .name = "sea_proxy",
    .summary = "SEA proxy (SEA trains its estimator): top-k keys per query block from a low-rank random-projection estimate of the attention, exact attention on them",
    .reference = "Lee et al. 2023, SEA: Sparse Linear Attention with Estimated Attention Mask, arXiv 2310.01777",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .params = {
        [P_TOPK] = { .name = "topk", .def = 64, .min = 1, .max = 1 << 24, .is_int = 0,
                     .help = "mean keys kept per query block (fractional budgets dithered over blocks)" },
        [P_RANK] = { .name = "rank", .def = 16, .min = 1, .max = 1024, .is_int = 1,
                     .help = "width r of the random projection of Q and K (the estimate's cost: 2r per pair)" },
        [P_BLOCKQ] = { .name = "block_q", .def = 4, .min = 1, .max = 4096, .is_int = 1,
                       .help = "query rows sharing one key list (1 = SEA's per-row top-k)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_TOPK, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(sea_state),
    .init = sea_init,
    .select = sea_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_sea_proxy)
