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
 *
 * Schedule (2026-12-06; the same layouts bit for bit): the estimates of
 * SEA_GROUP rows (4 blocks of 4) are one product, so each packed key panel
 * is read once for them; per block, each row's softmax in place, then under
 * an interval mask whose row spans leave no gap (causal, full, windows,
 * documents: every built-in mask) one pass turns the rows' summed
 * probabilities straight into ordered keys (sea_block_keys) and the top kk
 * come out in ascending order from a radix select (bs_key_nth, sampled
 * first) and a compress (sea_block_top); other masks keep the mass array,
 * the candidate list and bs_top_ascending. Until then a quickselect with a
 * comparator per candidate took about half of select(), which was 1.8x
 * dense at N = 16K, 4 heads, density 0.1 on an AVX-512 Xeon; now
 * 0.71-0.73x (docs/selectors.md, sixteenth session).
 */
#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/vecf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* out (n, r) = x (n, d) R (d, r) * mul, double accumulation: each output
 * the chain a = a + x[e] R[e][c] over e in order (a rounded product, then
 * the add: -std=c11 contracts nothing), SEA_DL columns c at a time in a
 * register of doubles (one column at a time it was 4 % of select() at
 * N = 16K; eight at a time in two AVX2 registers, GCC's lowering of the
 * 64-byte vector made it 3x slower than the scalar loop). */
#define SEA_DL (VW / 2)
typedef double sea_vd __attribute__((vector_size(SEA_DL * sizeof(double))));
static void project(const float *x, int n, int d, const double *R, int r, double mul, float *out)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        int c0 = 0;
        for (; c0 + SEA_DL <= r; c0 += SEA_DL) {
            sea_vd a = { 0 };
            for (int e = 0; e < d; e++) {
                sea_vd rr;
                memcpy(&rr, R + (size_t)e * r + c0, sizeof rr);
                a = a + (double)xi[e] * rr;
            }
            for (int c = 0; c < SEA_DL; c++) out[(size_t)i * r + c0 + c] = (float)(a[c] * mul);
        }
        for (int c = c0; c < r; c++) {
            double a = 0.0;
            for (int e = 0; e < d; e++) a += (double)xi[e] * R[(size_t)e * r + c];
            out[(size_t)i * r + c] = (float)(a * mul);
        }
    }
}

/* SEA_FAST_ROWS: the one-pass ranking (sea_block_keys) takes blocks of
 * at most this many rows under an interval mask (their spans are checked
 * for gaps row against row); SEA_GROUP: rows whose estimates are one
 * product (sea_select). */
enum { SEA_FAST_ROWS = 16, SEA_GROUP = 16 };

/* 1 when the non-empty spans [lo[i], hi[i]) of the nr rows cover [ulo,
 * uhi) with no gap: each key of it is then some row's. */
static int sea_covers(const int *lo, const int *hi, int nr, int ulo, int uhi)
{
    int at = ulo; /* covered up to here */
    for (int grew = 1; grew && at < uhi;) {
        grew = 0;
        for (int i = 0; i < nr; i++)
            if (lo[i] < hi[i] && lo[i] <= at && hi[i] > at) {
                at = hi[i];
                grew = 1;
            }
    }
    return at >= uhi;
}

/* bs_key_of (block_score.h) of the SEA_DL doubles x into out: the larger
 * the score the smaller the key, -0 as +0, NaN last (UINT64_MAX). Vectors
 * of one register throughout: GCC lowered 64-byte ones on AVX2 through
 * memory. */
typedef float sea_vf __attribute__((vector_size(SEA_DL * sizeof(float))));
typedef uint64_t sea_vu __attribute__((vector_size(SEA_DL * sizeof(uint64_t))));
typedef int64_t sea_vi __attribute__((vector_size(SEA_DL * sizeof(int64_t))));
static inline void sea_keys(sea_vd x, uint64_t *out)
{
    const sea_vi nan = (sea_vi)(x != x);
    x += 0.0;
    sea_vu u;
    memcpy(&u, &x, sizeof u);
    const sea_vu neg = (sea_vu)((sea_vi)u >> 63);
    const sea_vu asc = (u ^ neg) | (~neg & 0x8000000000000000ull);
    const sea_vu k = ~asc | (sea_vu)nan;
    memcpy(out, &k, sizeof k);
}

/* The keys (bs_key_of) of the summed probabilities of keys [ulo, uhi) of a
 * query block into key[0, uhi - ulo): for each key the rows whose span
 * [lo[i], hi[i]) holds it add p[i][j] inv[i] (the float product) in
 * double, row by row in order, as one mass array per block did row pass
 * after row pass (the same sums; rows with lo >= hi add nothing). p[i] is
 * row i of the block's probabilities, p[i][j - k0] for key j. Where every
 * row holds the key ([a, b)), SEA_DL keys at a time in vectors. */
static void sea_block_keys(const float *sc, int kc, int k0, int nr, const int *lo, const int *hi,
                           const float *inv, int ulo, int uhi, uint64_t *key)
{
    int a = ulo, b = uhi; /* keys every non-empty row holds: [a, b) */
    for (int i = 0; i < nr; i++)
        if (lo[i] < hi[i]) {
            a = lo[i] > a ? lo[i] : a;
            b = hi[i] < b ? hi[i] : b;
        }
    if (b < a) b = a;
    for (int j = ulo; j < uhi; j++) {
        if (j == a) { /* the interior: every row, in vectors */
            for (; j + SEA_DL <= b; j += SEA_DL) {
                sea_vd m = { 0 };
                for (int i = 0; i < nr; i++) {
                    if (lo[i] >= hi[i]) continue;
                    sea_vf pv;
                    memcpy(&pv, sc + (size_t)i * kc + (j - k0), sizeof pv);
                    pv = pv * inv[i];
                    m = m + __builtin_convertvector(pv, sea_vd);
                }
                sea_keys(m, key + (j - ulo));
            }
            if (j >= uhi) break;
        }
        double m = 0.0;
        for (int i = 0; i < nr; i++)
            if (j >= lo[i] && j < hi[i]) m += sc[(size_t)i * kc + (j - k0)] * inv[i];
        key[j - ulo] = bs_key_of(m);
    }
}

/* The kk keys of the block with the smallest key[t] (the largest mass;
 * ties to the lower index), t < nc, as ulo + t in ascending order into
 * out (room for nc + 16): bs_top_ascending's set and order without its
 * candidate array. w: nc more keys of scratch. */
static void sea_block_top(const uint64_t *key, int nc, int kk, int ulo, uint64_t *w, int32_t *out)
{
    if (kk >= nc) {
        for (int t = 0; t < nc; t++) out[t] = ulo + t;
        return;
    }
    const uint64_t kth = bs_key_nth(key, nc, kk, w);
    int less = 0, eq = 0;
    for (int t = 0; t < nc; t++) {
        less += key[t] < kth;
        eq += key[t] == kth;
    }
    int ties = kk - less, o = 0; /* 1 <= ties <= eq */
    if (ties == eq) {
        /* every tie taken (the usual case): the keys <= kth, their
         * positions compressed */
        bs_pos_le(key, nc, kth, ulo, out);
        return;
    }
    for (int t = 0; t < nc; t++) { /* branch-free: the order is data */
        const int te = key[t] == kth, take = (key[t] < kth) | (te & (ties > 0));
        ties -= te & take;
        out[o] = ulo + t;
        o += take;
    }
}

static int sea_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const sea_state *st = state;
    const int N = l->seq_len, H = l->heads, d = pb->s.head_dim, r = st->rank;
    int rc = ab_layout_set_blocks(l, st->block_q < N ? st->block_q : (N > 0 ? N : 1), l->block_k);
    if (rc != AB_OK) return rc;
    const int bq = l->block_q, nqb = l->n_qblocks;
    /* blocks whose estimates are one product: SEA_GROUP rows' worth */
    const int gb = bq < SEA_GROUP ? SEA_GROUP / bq : 1, ngrp = (nqb + gb - 1) / gb;
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
        float *sc = malloc((size_t)gb * bq * (N > 0 ? N : 1) * sizeof *sc); /* a group's estimates */
        double *mass = malloc((size_t)(N > 0 ? N : 1) * sizeof *mass);
        char *seen = malloc((size_t)(N > 0 ? N : 1));
        bs_cand *cd = malloc((size_t)(N > 0 ? N : 1) * sizeof *cd);
        int32_t *keys = malloc(((size_t)(N > 0 ? N : 1) + 16) * sizeof *keys); /* + sea_block_top's spare */
        uint64_t *skey = malloc(2 * (size_t)(N > 0 ? N : 1) * sizeof *skey);   /* the candidates' keys */
        int *rlo = malloc((size_t)bq * sizeof *rlo), *rhi = malloc((size_t)bq * sizeof *rhi);
        float *rinv = malloc((size_t)bq * sizeof *rinv); /* each row's 1 / sum, its span [rlo, rhi) */
        int ok = sc && mass && seen && cd && keys && skey && rlo && rhi && rinv;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < H * ngrp; task++) {
            if (!ok) continue;
            /* the estimates of gb consecutive blocks in one product (each
             * key panel read once for their rows), then block by block */
            const int h = task / ngrp, qb0 = (task % ngrp) * gb, qb1 = qb0 + gb < nqb ? qb0 + gb : nqb;
            const int g0 = qb0 * bq, g1 = qb1 * bq < N ? qb1 * bq : N;
            int gk0, gk1;
            bs_rows_span(&mask, g0, g1, &gk0, &gk1);
            if (gk1 <= gk0) continue;
            gk0 -= gk0 % BS_PANEL; /* from a panel start */
            const int ld = gk1 - gk0;
            bs_gemm_nt_packed(pq + ((size_t)h * N + g0) * r, r, g1 - g0, pkp + ((size_t)h * npan + gk0) * r,
                              ld, r, 1.0f, sc, ld);
            for (int qb = qb0; ok && qb < qb1; qb++) {
                const int r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
                int k0, k1;
                bs_rows_span(&mask, r0, r0 + nr, &k0, &k1);
                if (k1 <= k0) continue;
                k0 -= k0 % BS_PANEL; /* from a panel start: the keys added lie outside every row's span */
                const int kc = k1 - k0, iv = mask.def->interval;
                /* the block's rows in the group's product: key j of row i
                 * at sb[i ld + j - gk0] */
                float *sb = sc + (size_t)(r0 - g0) * ld;
                /* each row's softmax over its span, summed below */
                int ulo = k1, uhi = k0; /* the keys some row counts */
                for (int i = 0; i < nr; i++) {
                    int lo, hi;
                    ab_mask_span(&mask, r0 + i, &lo, &hi);
                    lo = lo > k0 ? lo : k0;
                    hi = hi < k1 ? hi : k1;
                    rlo[i] = rhi[i] = lo; /* empty unless the row counts keys */
                    if (lo >= hi) continue;
                    float *srow = sb + (size_t)i * ld + (lo - gk0);
                    const int len = hi - lo;
                    if (!iv) /* keys the mask hides in the span: exp gives 0 */
                        for (int j = 0; j < len; j++)
                            if (!ab_mask_allows(&mask, r0 + i, lo + j)) srow[j] = -INFINITY;
                    const float mx = bs_max(srow, len);
                    if (mx == -INFINITY) continue;
                    const double sum = ab_exp_max_sum(srow, len, mx); /* vector exp in place */
                    rhi[i] = hi;
                    rinv[i] = (float)(1.0 / sum);
                    if (iv) pairs += len; /* else counted below, where the mask allows */
                    ulo = lo < ulo ? lo : ulo;
                    uhi = hi > uhi ? hi : uhi;
                }
                const int kd = mc_dither(st->topk, qb);
                int nc = 0, kk;
                if (iv && nr <= SEA_FAST_ROWS && sea_covers(rlo, rhi, nr, ulo, uhi)) {
                    /* spans that leave no gap: every key of [ulo, uhi) is a
                     * candidate, its key (rank) made in one pass */
                    nc = uhi > ulo ? uhi - ulo : 0;
                    kk = kd < nc ? kd : nc;
                    sea_block_keys(sb, ld, gk0, nr, rlo, rhi, rinv, ulo, uhi, skey);
                    sea_block_top(skey, nc, kk, ulo, skey + nc, keys);
                } else {
                    /* the rows' sums, row after row: under an interval mask
                     * every key of the span counts, else those the mask
                     * allows */
                    for (int j = 0; j < kc; j++) {
                        mass[j] = 0.0;
                        seen[j] = 0;
                    }
                    for (int i = 0; i < nr; i++)
                        for (int j = rlo[i]; j < rhi[i]; j++) {
                            const float p = sb[(size_t)i * ld + (j - gk0)];
                            if (!iv && !(p > 0.0f || ab_mask_allows(&mask, r0 + i, j))) continue;
                            mass[j - k0] += p * rinv[i];
                            seen[j - k0] = 1;
                            pairs += !iv;
                        }
                    for (int j = 0; j < kc; j++)
                        if (seen[j]) cd[nc++] = (bs_cand){ .score = mass[j], .idx = k0 + j };
                    kk = kd < nc ? kd : nc;
                    bs_top_ascending(cd, nc, kk, skey); /* cd is in key order: the top kk, in it */
                    for (int t = 0; t < kk; t++) keys[t] = cd[t].idx;
                }
                cands += nc;
                const int ra = ab_layout_add_tokens(l, h, qb, keys, kk);
                if (ra != AB_OK) {
                    ok = 0;
#pragma omp atomic write
                    rc = ra;
                }
            }
        }
        free(sc);
        free(mass);
        free(seen);
        free(cd);
        free(keys);
        free(skey);
        free(rlo);
        free(rhi);
        free(rinv);
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
