/* test_decode.c — the decode phase (include/attnbench.h, "decode"):
 *  - the decode kernel, every strategy and layout kind, against the fp64
 *    reference (ab_ref_decode_row), and the split-K / Lean merges against
 *    the unsplit kernel to fp32 rounding;
 *  - every registered method that decodes (phases & AB_DECODE), driven as the
 *    sweep drives it: init with the cache's capacity, prepare() on N keys,
 *    then S steps of dselect() -> finalize -> validate -> drun(), each step's
 *    output against the fp64 reference over the keys its layout keeps.
 * Driven by the registry, so a new decode method is tested with no new code.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "runtime/layout.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"

#define REL_TOL 2e-5

static double gauss(uint64_t *s)
{
    const double u = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53,
                 w = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * w);
}

/* A decode problem: L layers, H query heads, KV heads kv, d, a cache of
 * capacity cap; queries of S steps (S, L, H, d). Keys carry a few "heavy"
 * positions (large norm along the queries' direction) so selectors have
 * something to find, and layers are correlated (position persistence). */
typedef struct dprob {
    int L, H, kv, d, cap, S;
    float *q, *k, *v;
} dprob;

static void dprob_make(dprob *p, int L, int H, int kv, int d, int cap, int S, uint64_t seed)
{
    *p = (dprob){ L, H, kv, d, cap, S, NULL, NULL, NULL };
    const size_t nq = (size_t)S * L * H * d, nk = (size_t)L * kv * cap * d;
    p->q = malloc(nq * sizeof(float));
    p->k = malloc(nk * sizeof(float));
    p->v = malloc(nk * sizeof(float));
    cr_assert(p->q && p->k && p->v);
    uint64_t s = seed;
    for (size_t i = 0; i < nk; i++) {
        p->k[i] = (float)gauss(&s);
        p->v[i] = (float)gauss(&s);
    }
    for (size_t i = 0; i < nq; i++) p->q[i] = (float)gauss(&s);
    /* heavy keys at the same positions in every layer and KV head */
    for (int t = 0; t < 6; t++) {
        const int pos = (int)(ab_splitmix64(&s) % (uint64_t)(cap - S));
        for (int l = 0; l < L; l++)
            for (int h = 0; h < kv; h++)
                for (int c = 0; c < d; c++) p->k[(((size_t)l * kv + h) * cap + pos) * d + c] += 1.5f;
    }
    for (size_t i = 0; i < nq; i++) p->q[i] += 0.5f;
}

static void dprob_free(dprob *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
}

/* The view of step s (len keys) with `layers` folded or not. */
static ab_decode dview(const dprob *p, int s, int len, int layered)
{
    ab_decode dp = { 0 };
    dp.layers = layered ? p->L : 1;
    dp.heads = layered ? p->H : p->L * p->H;
    dp.kv_heads = layered ? p->kv : p->L * p->kv;
    dp.head_dim = p->d;
    dp.scale = 1.0f / sqrtf((float)p->d);
    dp.len = len;
    dp.cap = p->cap;
    dp.step = s;
    dp.q = p->q + (size_t)s * p->L * p->H * p->d;
    dp.k = p->k;
    dp.v = p->v;
    dp.seed = 7;
    dp.threads = 2;
    return dp;
}

/* The shape a decode method is created with: layers, heads and KV heads as
 * it sees them, a cache of capacity cap, head dim d. */
static ab_shape dshape(int layers, int heads, int kv, int cap, int d)
{
    ab_shape s = { 0 };
    s.heads = heads;
    s.kv_heads = kv;
    s.layers = layers;
    s.seq_len = cap;
    s.head_dim = d;
    s.causal = 1;
    s.scale = 1.0f / sqrtf((float)d);
    s.phase = AB_DECODE;
    return s;
}

/* max over rows of |o - ref| / |ref| */
static double max_rel(const ab_decode *dp, const ab_layout *l, const float *out)
{
    const int rows = dp->layers * dp->heads, d = dp->head_dim;
    double worst = 0, *ref = malloc(sizeof(double) * (size_t)d);
    cr_assert(ref);
    for (int r = 0; r < rows; r++) {
        ab_ref_decode_row(dp, r, l, ref, NULL, NULL);
        double e = 0, n = 0;
        for (int c = 0; c < d; c++) {
            const double x = out[(size_t)r * d + c] - ref[c];
            e += x * x;
            n += ref[c] * ref[c];
        }
        const double rel = sqrt(e) / (sqrt(n) > 1e-12 ? sqrt(n) : 1e-12);
        worst = rel > worst ? rel : worst;
    }
    free(ref);
    return worst;
}

/* ---- the kernel ------------------------------------------------------------ */

/* A layout of kind `kind` over step view dp: pages / tokens chosen by a
 * seeded draw, the current key always kept. pat: each row's pattern (rows
 * with the same pattern keep the same keys); NULL: every row its own. */
static void make_layout_pat(ab_layout *l, const ab_decode *dp, int kind, int bk, uint64_t seed,
                            const int *pat)
{
    ab_layout_init_decode(l, dp, bk);
    const int rows = dp->layers * dp->heads;
    if (kind == AB_LAYOUT_DENSE) {
        cr_assert_eq(ab_layout_dense(l), AB_OK);
    } else {
        uint64_t s = seed;
        for (int r = 0; r < rows; r++) {
            if (pat) s = seed + 7919u * (uint64_t)pat[r];
            for (int b = 0; b < l->n_kblocks; b++)
                if (kind != AB_LAYOUT_TOKEN && ab_splitmix64(&s) % 3 == 0)
                    cr_assert_eq(ab_layout_add_block(l, r, 0, b), AB_OK);
            for (int j = 0; j < dp->len; j++)
                if (kind != AB_LAYOUT_BLOCK && ab_splitmix64(&s) % 5 == 0)
                    cr_assert_eq(ab_layout_add_token(l, r, 0, j), AB_OK);
            if (kind == AB_LAYOUT_BLOCK)
                cr_assert_eq(ab_layout_add_block(l, r, 0, l->n_kblocks - 1), AB_OK);
            else
                cr_assert_eq(ab_layout_add_token(l, r, 0, dp->len - 1), AB_OK);
        }
    }
    cr_assert_eq(ab_layout_finalize(l), AB_OK);
    char err[200];
    cr_assert_eq(ab_layout_validate(l, err, sizeof err), AB_OK, "%s", err);
}

static void make_layout(ab_layout *l, const ab_decode *dp, int kind, int bk, uint64_t seed)
{
    make_layout_pat(l, dp, kind, bk, seed, NULL);
}

/* GQA rows of a sparse layout that keep the same keys are run as one unit
 * (their keys read once): groups of 4 with runs of equal rows of every
 * length (4; 3 + 1; 1 + 2 + 1; 1 + 1 + 1 + 1; a run broken and resumed),
 * every layout kind and strategy, against fp64 row by row. */
Test(decode, kernel_joins_gqa_rows_with_equal_keys)
{
    const int pat[20] = { 0, 0, 0, 0, 1, 1, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10, 11, 10, 10 };
    const int kinds[] = { AB_LAYOUT_BLOCK, AB_LAYOUT_TOKEN, AB_LAYOUT_MIXED };
    dprob p;
    dprob_make(&p, 1, 20, 5, 72, 700, 1, 77);
    ab_decode dp = dview(&p, 0, 697, 0);
    float *out = malloc(sizeof(float) * 20 * 72);
    cr_assert(out);
    for (int ki = 0; ki < 3; ki++) {
        ab_layout l;
        make_layout_pat(&l, &dp, kinds[ki], 16, 31 + ki, pat);
        for (int st = AB_DECODE_AUTO; st <= AB_DECODE_LEAN; st++) {
            cr_assert_eq(ab_kernel_decode(&dp, &l, out, st, 3), AB_OK);
            const double e = max_rel(&dp, &l, out);
            cr_expect(e <= REL_TOL, "kind %s strategy %d: rel err %.3g", ab_layout_kind_name(l.kind), st, e);
        }
        ab_layout_free(&l);
    }
    free(out);
    dprob_free(&p);
}

Test(decode, kernel_every_strategy_and_layout_matches_fp64)
{
    const int kinds[] = { AB_LAYOUT_DENSE, AB_LAYOUT_BLOCK, AB_LAYOUT_TOKEN, AB_LAYOUT_MIXED };
    const int strat[] = { AB_DECODE_AUTO, AB_DECODE_HEADS, AB_DECODE_SPLITK, AB_DECODE_LEAN };
    /* (L, H, kv, d, len): GQA groups of 1, 2 and 4, a length off every tile */
    const int shapes[][5] = { { 1, 1, 1, 64, 1 },
                              { 1, 1, 1, 64, 1000 },
                              { 2, 4, 2, 32, 333 },
                              { 1, 8, 2, 128, 517 },
                              { 1, 3, 3, 16, 64 } };
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int *sh = shapes[si];
        dprob p;
        dprob_make(&p, sh[0], sh[1], sh[2], sh[3], sh[4] + 3, 1, 11 + si);
        ab_decode dp = dview(&p, 0, sh[4], 0);
        float *out = malloc(sizeof(float) * (size_t)sh[0] * sh[1] * sh[3]);
        cr_assert(out);
        for (int ki = 0; ki < 4; ki++) {
            ab_layout l;
            make_layout(&l, &dp, kinds[ki], 16, 5 + ki);
            for (int st = 0; st < 4; st++)
                for (int splits = 0; splits <= 3; splits++) {
                    cr_assert_eq(ab_kernel_decode(&dp, &l, out, strat[st], splits), AB_OK);
                    const double e = max_rel(&dp, &l, out);
                    cr_expect(e <= REL_TOL, "shape %zu kind %s strategy %d splits %d: rel err %.3g", si,
                              ab_layout_kind_name(l.kind), strat[st], splits, e);
                }
            ab_layout_free(&l);
        }
        free(out);
        dprob_free(&p);
    }
}

/* The split-K and Lean merges change only the order of fp32 sums: the same
 * result as one unsplit pass to fp32 rounding, at 1, 2 and 5 threads. */
Test(decode, split_and_lean_merges_equal_the_unsplit_pass)
{
    dprob p;
    dprob_make(&p, 1, 2, 1, 128, 4099, 1, 3);
    ab_decode dp = dview(&p, 0, 4099, 0);
    float *ref = malloc(sizeof(float) * 2 * 128), *out = malloc(sizeof(float) * 2 * 128);
    cr_assert(ref && out);
    omp_set_num_threads(1);
    cr_assert_eq(ab_kernel_decode(&dp, NULL, ref, AB_DECODE_HEADS, 0), AB_OK);
    const int threads[] = { 1, 2, 5 };
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(threads[t]);
        for (int st = AB_DECODE_SPLITK; st <= AB_DECODE_LEAN; st++)
            for (int splits = 1; splits <= 7; splits += 3) {
                cr_assert_eq(ab_kernel_decode(&dp, NULL, out, st, splits), AB_OK);
                double worst = 0; /* per row: |o - o_unsplit| / |o_unsplit| */
                for (int r = 0; r < 2; r++) {
                    double e = 0, nn = 0;
                    for (int c = 0; c < 128; c++) {
                        e += (out[r * 128 + c] - ref[r * 128 + c]) *
                             (double)(out[r * 128 + c] - ref[r * 128 + c]);
                        nn += ref[r * 128 + c] * (double)ref[r * 128 + c];
                    }
                    worst = sqrt(e / nn) > worst ? sqrt(e / nn) : worst;
                }
                cr_expect(worst <= 2e-6, "threads %d strategy %d splits %d: %.3g from the unsplit pass",
                          threads[t], st, splits, worst);
            }
    }
    omp_set_num_threads(2);
    free(ref);
    free(out);
    dprob_free(&p);
}

Test(decode, kernel_rejects_bad_shapes)
{
    dprob p;
    dprob_make(&p, 1, 4, 2, 16, 40, 1, 1);
    ab_decode dp = dview(&p, 0, 32, 0);
    float out[4 * 16];
    ab_decode bad = dp;
    bad.kv_heads = 3; /* does not divide heads */
    cr_expect_eq(ab_kernel_decode(&bad, NULL, out, 0, 0), AB_EINVAL);
    bad = dp;
    bad.len = 41; /* past the capacity */
    cr_expect_eq(ab_kernel_decode(&bad, NULL, out, 0, 0), AB_EINVAL);
    bad = dp;
    bad.len = 0;
    cr_expect_eq(ab_kernel_decode(&bad, NULL, out, 0, 0), AB_EINVAL);
    dprob_free(&p);
}

/* ---- every decode method through the registry -------------------------------- */

typedef struct dcase {
    int mi;
    int L, H, kv, d, n, S;
} dcase;

ParameterizedTestParameters(decode, methods_match_fp64_on_their_layout)
{
    static dcase cs[64 * 2];
    size_t n = 0;
    for (int i = 0; i < ab_method_count && n + 2 <= sizeof cs / sizeof *cs; i++) {
        const ab_method *m = ab_method_at(i);
        if (!(m->phases & AB_DECODE) || !(m->devices & AB_CPU)) continue;
        cs[n++] = (dcase){ i, 1, 2, 2, 32, 700, 4 }; /* MHA, one layer */
        cs[n++] = (dcase){
            i, 4, 4, 2, 64, 1100, 5
        }; /* GQA, a layer stack (reuse layers after 2 dense + 1 selecting) */
    }
    return cr_make_param_array(dcase, cs, n);
}

ParameterizedTest(dcase *c, decode, methods_match_fp64_on_their_layout)
{
    const ab_method *m = ab_method_at(c->mi);
    dprob p;
    dprob_make(&p, c->L, c->H, c->kv, c->d, c->n + c->S, c->S, 100 + c->mi);
    const int layered = m->layered;
    ab_params prm;
    ab_params_defaults(m->params, AB_MAX_PARAMS, &prm);
    const ab_shape s = layered ? dshape(c->L, c->H, c->kv, c->n + c->S, c->d)
                               : dshape(1, c->L * c->H, c->L * c->kv, c->n + c->S, c->d);
    ab_instance in;
    cr_assert_eq(ab_instance_create(&in, m, &prm, &s), AB_OK, "%s init: %s", m->name, ab_instance_error(&in));
    ab_decode d0 = dview(&p, 0, c->n, layered);
    cr_assert_eq(ab_instance_prepare(&in, &d0), AB_OK, "%s prepare: %s", m->name, ab_instance_error(&in));
    float *out = malloc(sizeof(float) * (size_t)c->L * c->H * c->d);
    cr_assert(out);
    for (int st = 0; st < c->S; st++) {
        ab_decode dp = dview(&p, st, c->n + st + 1, layered);
        ab_layout l;
        ab_layout_init_decode(&l, &dp, m->block_k);
        int rc = ab_instance_dselect(&in, &dp, &l);
        cr_assert_eq(rc, AB_OK, "%s step %d dselect: %s", m->name, st, ab_instance_error(&in));
        cr_assert_eq(ab_layout_finalize(&l), AB_OK, "%s step %d finalize", m->name, st);
        char err[200];
        cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_OK, "%s step %d: %s", m->name, st, err);
        const double dens = ab_layout_density(&l);
        cr_expect(dens > 0 && dens <= 1, "%s step %d: density %g", m->name, st, dens);
        for (size_t i = 0; i < (size_t)c->L * c->H * c->d; i++) out[i] = NAN;
        rc = ab_instance_drun(&in, &dp, &l, out);
        cr_assert_eq(rc, AB_OK, "%s step %d drun: %s", m->name, st, ab_instance_error(&in));
        if (l.kind != AB_LAYOUT_CUSTOM) {
            const double e = max_rel(&dp, &l, out);
            cr_expect(e <= REL_TOL, "%s (L=%d H=%d kv=%d) step %d: rel err %.3g on its layout", m->name, c->L,
                      c->H, c->kv, st, e);
        }
        ab_layout_free(&l);
    }
    free(out);
    ab_instance_destroy(&in);
    dprob_free(&p);
}

/* ---- Quest's page choice ------------------------------------------------------- */

/* x rounded to bfloat16 toward -inf (up = 0) or +inf (up = 1), in double:
 * the bf16 grid at x's binade has 8 significant bits. */
static double bf16_round(double x, int up)
{
    if (x == 0) return 0;
    int e;
    frexp(x, &e);                         /* |x| in [2^(e-1), 2^e) */
    const double ulp = ldexp(1.0, e - 8); /* 8 significant bits */
    return (up ? ceil(x / ulp) : floor(x / ulp)) * ulp;
}

/* Quest keeps the page of the newest key and the K - 1 other pages of
 * largest bound U(p) = sum_c max(q_c min_c, q_c max_c), re-derived here in
 * double from the keys (min and max rounded outward to bfloat16 when
 * bits = 16): every kept page's bound is at least every dropped page's
 * (up to float rounding of the sum), over steps that append keys into a
 * partly filled page and open a new one (the incremental update), with
 * GQA groups of 2 and a head dim off the vector width. */
Test(decode, quest_keeps_the_pages_of_largest_bound)
{
    const ab_method *m = ab_method_find("quest");
    cr_assert(m);
    const int H = 4, kv = 2, d = 37, n = 1000, S = 20, page = 16, budget = 160;
    for (int bits = 16; bits <= 32; bits += 16) {
        dprob p;
        dprob_make(&p, 1, H, kv, d, n + S, S, 4242 + bits);
        ab_params prm;
        ab_params_defaults(m->params, AB_MAX_PARAMS, &prm);
        cr_assert_eq(ab_params_set(m->params, AB_MAX_PARAMS, &prm, "budget", budget), 0);
        cr_assert_eq(ab_params_set(m->params, AB_MAX_PARAMS, &prm, "bits", bits), 0);
        const ab_shape s = dshape(1, H, kv, n + S, d);
        ab_instance in;
        cr_assert_eq(ab_instance_create(&in, m, &prm, &s), AB_OK, "init: %s", ab_instance_error(&in));
        ab_decode d0 = dview(&p, 0, n, 0);
        cr_assert_eq(ab_instance_prepare(&in, &d0), AB_OK, "prepare: %s", ab_instance_error(&in));
        double *U = malloc(sizeof(double) * (size_t)(n + S) / page + sizeof(double) * 2);
        cr_assert(U);
        for (int st = 0; st < S; st++) {
            const int len = n + st + 1, np = (len + page - 1) / page, K = budget / page;
            ab_decode dp = dview(&p, st, len, 0);
            ab_layout l;
            ab_layout_init_decode(&l, &dp, page);
            cr_assert_eq(ab_instance_dselect(&in, &dp, &l), AB_OK, "dselect: %s", ab_instance_error(&in));
            cr_assert_eq(ab_layout_finalize(&l), AB_OK);
            for (int h = 0; h < H; h++) {
                const float *q = dp.q + (size_t)h * d;
                const float *k = p.k + (size_t)(h / (H / kv)) * p.cap * d;
                double umax = 0;
                for (int pg = 0; pg < np; pg++) {
                    double u = 0;
                    for (int c = 0; c < d; c++) {
                        double lo = INFINITY, hi = -INFINITY;
                        for (int j = pg * page; j < (pg + 1) * page && j < len; j++) {
                            lo = fmin(lo, k[(size_t)j * d + c]);
                            hi = fmax(hi, k[(size_t)j * d + c]);
                        }
                        if (bits == 16) {
                            lo = bf16_round(lo, 0);
                            hi = bf16_round(hi, 1);
                        }
                        u += fmax(q[c] * lo, q[c] * hi);
                    }
                    U[pg] = u;
                    umax = fmax(umax, fabs(u));
                }
                const double tol = 1e-5 * umax;
                int kept = 0;
                double kmin = INFINITY, dmax = -INFINITY;
                for (int pg = 0; pg < np - 1; pg++) {
                    const int in_l = ab_layout_contains(&l, h, 0, pg * page);
                    kept += in_l;
                    if (in_l)
                        kmin = fmin(kmin, U[pg]);
                    else
                        dmax = fmax(dmax, U[pg]);
                }
                cr_expect(ab_layout_contains(&l, h, 0, len - 1),
                          "bits %d step %d head %d: newest key dropped", bits, st, h);
                cr_expect_eq(kept, K - 1, "bits %d step %d head %d: %d pages besides the last, expected %d",
                             bits, st, h, kept, K - 1);
                cr_expect(kmin >= dmax - tol,
                          "bits %d step %d head %d: a kept page's bound %.9g < a dropped %.9g", bits, st, h,
                          kmin, dmax);
            }
            ab_layout_free(&l);
        }
        free(U);
        ab_instance_destroy(&in);
        dprob_free(&p);
    }
}

/* The rounding direction of bfloat16 bounds, where it decides the page: one
 * channel (d = 1), five pages, two chosen besides the last. Page 2 holds the
 * largest key; page 0's extreme key is 0.9999 and page 1's 1.0 (times the
 * query's sign, so the maximum decides for q = 1 and the minimum for
 * q = -1). Float bounds keep page 1. In bfloat16 rounded outward 0.9999
 * becomes 1.0, a tie that goes to the lower page: page 0; rounded the other
 * way it would become 0.996 and lose. */
Test(decode, quest_bf16_bounds_round_outward)
{
    const ab_method *m = ab_method_find("quest");
    cr_assert(m);
    enum { N = 80, PAGE = 16 };
    for (int sign = -1; sign <= 1; sign += 2)
        for (int bits = 16; bits <= 32; bits += 16) {
            float q = (float)sign, k[N] = { 0 }, v[N] = { 0 };
            k[0 * PAGE + 3] = sign * 0.9999f;
            k[1 * PAGE + 5] = sign * 1.0f;
            k[2 * PAGE + 7] = sign * 1.5f;
            dprob p = { 1, 1, 1, 1, N, 1, &q, k, v };
            ab_params prm;
            ab_params_defaults(m->params, AB_MAX_PARAMS, &prm);
            cr_assert_eq(ab_params_set(m->params, AB_MAX_PARAMS, &prm, "budget", 3 * PAGE), 0);
            cr_assert_eq(ab_params_set(m->params, AB_MAX_PARAMS, &prm, "bits", bits), 0);
            const ab_shape s = dshape(1, 1, 1, N, 1);
            ab_instance in;
            cr_assert_eq(ab_instance_create(&in, m, &prm, &s), AB_OK, "init: %s", ab_instance_error(&in));
            ab_decode dp = dview(&p, 0, N, 0);
            dp.threads = 1;
            cr_assert_eq(ab_instance_prepare(&in, &dp), AB_OK);
            ab_layout l;
            ab_layout_init_decode(&l, &dp, PAGE);
            cr_assert_eq(ab_instance_dselect(&in, &dp, &l), AB_OK, "dselect: %s", ab_instance_error(&in));
            cr_assert_eq(ab_layout_finalize(&l), AB_OK);
            const int want = bits == 16 ? 0 : 1;
            cr_expect(ab_layout_contains(&l, 0, 0, 2 * PAGE), "sign %d bits %d: page 2 dropped", sign, bits);
            cr_expect(ab_layout_contains(&l, 0, 0, N - 1), "sign %d bits %d: the last page dropped", sign,
                      bits);
            cr_expect(ab_layout_contains(&l, 0, 0, want * PAGE), "sign %d bits %d: page %d dropped", sign,
                      bits, want);
            cr_expect(!ab_layout_contains(&l, 0, 0, (1 - want) * PAGE), "sign %d bits %d: page %d kept", sign,
                      bits, 1 - want);
            ab_layout_free(&l);
            ab_instance_destroy(&in);
        }
}
