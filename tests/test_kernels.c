/* test_kernels.c — Criterion tests of the CPU kernels (kernels/cpu): the
 * fp64 reference against a naive formula, flash / blocksparse / gather
 * against the reference (dense and restricted to random layouts, odd
 * sequence lengths and head dims, causal and not), dispatch, argument
 * errors and bitwise determinism across OpenMP thread counts; the SIMD
 * builds of the inner loop (AVX2, AVX-512) against the portable one. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "runtime/layout.h"
#include "runtime/registry.h"
#include "runtime/kernels.h"
#include "kernels/kernels.h"

#define KT_TOL 1e-5 /* relative L2 error of an fp32 kernel against ref */

/* ---- deterministic inputs (splitmix64 -> uniform -> Box-Muller) ---------- */
static uint64_t kt_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double kt_unif(uint64_t *s) { return ((double)(kt_next(s) >> 11) + 0.5) * 0x1.0p-53; }
static int kt_int(uint64_t *s, int n) { return (int)(kt_next(s) % (uint64_t)n); }
static double kt_normal(uint64_t *s)
{
    double u1 = kt_unif(s), u2 = kt_unif(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef struct kt_case {
    ab_problem pb;
    float *q, *k, *v; /* (heads, seq_len, head_dim) each */
    float *out;       /* (heads, seq_len, head_dim) */
    double *ref;      /* (heads, seq_len, head_dim) */
    double *rsum;     /* (heads, seq_len): reference row sums */
    size_t n;         /* elements of one tensor */
} kt_case;

static void kt_make(kt_case *c, int heads, int n, int d, int causal, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->n = (size_t)heads * n * d;
    size_t bytes = (c->n ? c->n : 1) * sizeof(float);
    c->q = malloc(bytes);
    c->k = malloc(bytes);
    c->v = malloc(bytes);
    c->out = malloc(bytes);
    c->ref = malloc((c->n ? c->n : 1) * sizeof(double));
    c->rsum = malloc(((size_t)heads * n + 1) * sizeof(double));
    cr_assert(c->q && c->k && c->v && c->out && c->ref && c->rsum);
    uint64_t s = seed;
    for (size_t e = 0; e < c->n; e++) {
        c->q[e] = (float)kt_normal(&s);
        c->k[e] = (float)kt_normal(&s);
        c->v[e] = (float)kt_normal(&s);
        c->out[e] = NAN; /* every element must be written */
    }
    c->pb.s = (ab_shape){ heads, n, d, causal, (float)(1.0 / sqrt((double)d)), NULL, 0, 1, AB_PREFILL };
    c->pb.q = c->q;
    c->pb.k = c->k;
    c->pb.v = c->v;
    c->pb.seed = seed;
    c->pb.threads = 2;
}

static void kt_free(kt_case *c)
{
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->out);
    free(c->ref);
    free(c->rsum);
}

/* The reference for every row of every head (l may be NULL); also the
 * per-row sums (0 for a row that keeps nothing) in c->rsum. */
static void kt_ref_all(kt_case *c, const ab_layout *l)
{
    const int H = c->pb.s.heads, N = c->pb.s.seq_len, d = c->pb.s.head_dim;
    int *rows = malloc((size_t)(N ? N : 1) * sizeof(int));
    cr_assert_not_null(rows);
    for (int i = 0; i < N; i++) rows[i] = i;
    for (int h = 0; h < H; h++)
        cr_assert_eq(
            ab_ref_rows(&c->pb, h, rows, N, l, c->ref + (size_t)h * N * d, NULL, c->rsum + (size_t)h * N),
            AB_OK);
    free(rows);
}

/* ||out - ref|| / ||ref||; INFINITY if out has a NaN (an unwritten element)
 * or if a row the reference leaves empty is not exactly zero. */
static double kt_rel_l2(const kt_case *c)
{
    const int d = c->pb.s.head_dim;
    double num = 0.0, den = 0.0;
    for (size_t e = 0; e < c->n; e++) {
        double diff = (double)c->out[e] - c->ref[e];
        num += diff * diff;
        den += c->ref[e] * c->ref[e];
        if (isnan(c->out[e]) || (c->rsum[e / d] == 0.0 && c->out[e] != 0.0f)) return INFINITY;
    }
    if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY;
    return sqrt(num / den);
}

/* Rows that keep nothing (their outputs are checked to be zero by kt_rel_l2). */
static int kt_zero_rows(const kt_case *c)
{
    int zero_rows = 0;
    for (size_t r = 0; r < (size_t)c->pb.s.heads * c->pb.s.seq_len; r++) zero_rows += c->rsum[r] == 0.0;
    return zero_rows;
}

/* ---- the reference ------------------------------------------------------- */

Test(kernels_cpu, ref_matches_naive_formula)
{
    static const int cases[][3] = { { 1, 16, 1 }, { 7, 5, 0 }, { 63, 64, 1 }, { 65, 72, 0 }, { 130, 16, 1 } };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const int N = cases[t][0], d = cases[t][1], causal = cases[t][2], H = 2;
        kt_case c;
        kt_make(&c, H, N, d, causal, 100 + t);
        int rows[3] = { 0, N / 2, N - 1 };
        double out[3 * 72], mx[3], sm[3];
        for (int h = 0; h < H; h++) {
            cr_assert_eq(ab_ref_rows(&c.pb, h, rows, 3, NULL, out, mx, sm), AB_OK);
            for (int a = 0; a < 3; a++) {
                /* naive: softmax without the max shift (logits are O(1)) */
                const int i = rows[a], jend = causal ? i + 1 : N;
                const float *qi = c.q + ((size_t)h * N + i) * d;
                double z = 0.0, num[72] = { 0 }, lmax = -INFINITY;
                for (int j = 0; j < jend; j++) {
                    const float *kj = c.k + ((size_t)h * N + j) * d;
                    const float *vj = c.v + ((size_t)h * N + j) * d;
                    double s = 0.0;
                    for (int x = 0; x < d; x++) s += (double)qi[x] * kj[x];
                    s *= (double)c.pb.s.scale;
                    lmax = s > lmax ? s : lmax;
                    double e = exp(s);
                    z += e;
                    for (int x = 0; x < d; x++) num[x] += e * vj[x];
                }
                for (int x = 0; x < d; x++)
                    cr_assert_float_eq(out[a * d + x], num[x] / z, 1e-12,
                                       "N=%d d=%d causal=%d h=%d row=%d x=%d", N, d, causal, h, i, x);
                cr_assert_float_eq(mx[a], lmax, 1e-6 * fabs(lmax) + 1e-12);
                cr_assert_float_eq(sm[a], z * exp(-mx[a]), 1e-12 * sm[a]);
                cr_assert_geq(sm[a], 1.0 - 1e-12, "the max term contributes 1");
            }
        }
        kt_free(&c);
    }
}

Test(kernels_cpu, ref_with_layouts_and_errors)
{
    kt_case c;
    kt_make(&c, 2, 40, 8, 1, 7);
    ab_layout l;
    int rows[2] = { 5, 39 };
    double o1[16], o2[16], mx[2], sm[2];
    /* a DENSE layout equals no layout */
    ab_layout_init(&l, &c.pb.s, 16, 16);
    cr_assert_eq(ab_layout_dense(&l), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(ab_ref_rows(&c.pb, 1, rows, 2, NULL, o1, NULL, NULL), AB_OK);
    cr_assert_eq(ab_ref_rows(&c.pb, 1, rows, 2, &l, o2, NULL, NULL), AB_OK);
    cr_assert_eq(memcmp(o1, o2, sizeof o1), 0);
    ab_layout_free(&l);
    /* a row that keeps nothing: zeros, -inf, 0; a block above the diagonal
     * keeps nothing either */
    ab_layout_init(&l, &c.pb.s, 16, 16);
    cr_assert_eq(ab_layout_add_block(&l, 0, 0, 2), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(ab_ref_rows(&c.pb, 0, rows, 2, &l, o1, mx, sm), AB_OK);
    for (int x = 0; x < 16; x++) cr_assert_eq(o1[x], 0.0);
    cr_assert(isinf(mx[0]) && mx[0] < 0);
    cr_assert_eq(sm[0], 0.0);
    cr_assert_eq(sm[1], 0.0);
    /* errors */
    int bad = 40;
    cr_assert_eq(ab_ref_rows(&c.pb, 0, &bad, 1, NULL, o1, NULL, NULL), AB_EINVAL);
    cr_assert_eq(ab_ref_rows(&c.pb, 2, rows, 1, NULL, o1, NULL, NULL), AB_EINVAL);
    cr_assert_eq(ab_ref_rows(NULL, 0, rows, 1, NULL, o1, NULL, NULL), AB_EINVAL);
    ab_layout_free(&l);
    ab_layout_init(&l, &c.pb.s, 16, 16);
    cr_assert_eq(ab_layout_custom(&l, 0.5), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(ab_ref_rows(&c.pb, 0, rows, 1, &l, o1, NULL, NULL), AB_EINVAL);
    ab_layout_free(&l);
    kt_free(&c);
}

/* ---- flash ---------------------------------------------------------------- */

static const int kt_ns[] = { 1, 2, 63, 64, 65, 130, 257 };
static const int kt_ds[] = { 1, 16, 64, 72, 128 };

Test(kernels_cpu, flash_matches_ref)
{
    for (size_t a = 0; a < sizeof kt_ns / sizeof kt_ns[0]; a++)
        for (size_t b = 0; b < sizeof kt_ds / sizeof kt_ds[0]; b++)
            for (int causal = 0; causal < 2; causal++) {
                const int N = kt_ns[a], d = kt_ds[b];
                kt_case c;
                kt_make(&c, 2, N, d, causal, 1000 + 10 * a + b);
                kt_ref_all(&c, NULL);
                cr_assert_eq(ab_kernel_flash(&c.pb, c.out), AB_OK);
                double err = kt_rel_l2(&c);
                cr_assert_leq(err, KT_TOL, "flash N=%d d=%d causal=%d: rel L2 %g", N, d, causal, err);
                kt_free(&c);
            }
}

Test(kernels_cpu, flash_large_logits_and_extreme_dims)
{
    /* large logits exercise the running-max rescaling */
    kt_case c;
    kt_make(&c, 1, 200, 32, 1, 77);
    c.pb.s.scale = 1.5f;
    kt_ref_all(&c, NULL);
    cr_assert_eq(ab_kernel_flash(&c.pb, c.out), AB_OK);
    cr_assert_leq(kt_rel_l2(&c), KT_TOL);
    kt_free(&c);

    kt_make(&c, 1, 65, 512, 0, 78);
    kt_ref_all(&c, NULL);
    cr_assert_eq(ab_kernel_flash(&c.pb, c.out), AB_OK);
    cr_assert_leq(kt_rel_l2(&c), KT_TOL, "d = 512");
    kt_free(&c);

    kt_make(&c, 1, 10, 513, 0, 79);
    cr_assert_eq(ab_kernel_flash(&c.pb, c.out), AB_EUNSUPPORTED);
    c.pb.s.head_dim = 0;
    cr_assert_eq(ab_kernel_flash(&c.pb, c.out), AB_EINVAL);
    c.pb.s.head_dim = 16;
    cr_assert_eq(ab_kernel_flash(&c.pb, NULL), AB_EINVAL);
    cr_assert_eq(ab_kernel_flash(NULL, c.out), AB_EINVAL);
    c.pb.s.heads = 0;
    cr_assert_eq(ab_kernel_flash(&c.pb, c.out), AB_EINVAL);
    kt_free(&c);
}

/* ---- layouts for the sparse kernels ------------------------------------- */

enum { KT_FULL_BLOCKS, KT_ALL_TOKENS, KT_RAND_BLOCK, KT_RAND_TOKEN, KT_RAND_MIXED };

/* A finalised layout of the given style. Random styles leave ~1/4 of the
 * query blocks empty and list keys on both sides of the diagonal. */
static void kt_layout(ab_layout *l, const ab_shape *s, int bq, int bk, int style, uint64_t seed)
{
    uint64_t rng = seed;
    ab_layout_init(l, s, 64, 64);
    cr_assert_eq(ab_layout_set_blocks(l, bq, bk), AB_OK);
    const int nqb = l->n_qblocks, nkb = l->n_kblocks, N = s->seq_len;
    for (int h = 0; h < s->heads; h++)
        for (int qb = 0; qb < nqb; qb++) {
            switch (style) {
            case KT_FULL_BLOCKS: cr_assert_eq(ab_layout_add_block_range(l, h, qb, 0, nkb), AB_OK); break;
            case KT_ALL_TOKENS:
                for (int j = N - 1; j >= 0; j--) cr_assert_eq(ab_layout_add_token(l, h, qb, j), AB_OK);
                break;
            default:
                if (kt_unif(&rng) < 0.25) break; /* this query block keeps nothing */
                if (style != KT_RAND_TOKEN)
                    for (int kb = 0; kb < nkb; kb++)
                        if (kt_unif(&rng) < 0.3) cr_assert_eq(ab_layout_add_block(l, h, qb, kb), AB_OK);
                if (style != KT_RAND_BLOCK) {
                    int nt = kt_int(&rng, N < 150 ? N + 1 : 150);
                    for (int t = 0; t < nt; t++)
                        cr_assert_eq(ab_layout_add_token(l, h, qb, kt_int(&rng, N)), AB_OK);
                    if (kt_unif(&rng) < 0.5) { /* a run of consecutive keys (read in place: AB_TILE_RUN) */
                        const int a = kt_int(&rng, N), len = 16 + kt_int(&rng, 80);
                        for (int j = a; j < a + len && j < N; j++)
                            cr_assert_eq(ab_layout_add_token(l, h, qb, j), AB_OK);
                    }
                }
            }
        }
    /* make sure the intended kind comes out even when the dice said no */
    if (style == KT_RAND_MIXED || style == KT_RAND_BLOCK)
        cr_assert_eq(ab_layout_add_block(l, 0, nqb - 1, 0), AB_OK);
    if (style == KT_RAND_MIXED || style == KT_RAND_TOKEN)
        cr_assert_eq(ab_layout_add_token(l, 0, 0, N - 1), AB_OK);
    cr_assert_eq(ab_layout_finalize(l), AB_OK);
    char err[256];
    cr_assert_eq(ab_layout_validate(l, err, sizeof err), AB_OK, "%s", err);
}

static const int kt_blocks[][2] = { { 64, 64 }, { 16, 32 }, { 128, 128 }, { 100, 7 }, { 1, 1 }, { 200, 50 } };

static void kt_check_layout_kernel(int style, ab_layout_kind kind)
{
    static const int ns[] = { 1, 63, 65, 130, 257 };
    static const int ds[] = { 16, 72, 128 };
    int tested = 0, zero_rows = 0;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof kt_blocks / sizeof kt_blocks[0]; b++)
            for (int causal = 0; causal < 2; causal++) {
                const int N = ns[a], d = ds[(a + b) % 3];
                const int bq = kt_blocks[b][0], bk = kt_blocks[b][1];
                if (bq * bk == 1 && N > 65) continue; /* 1x1 blocks: keep the test fast */
                kt_case c;
                kt_make(&c, 2, N, d, causal, 5000 + 100 * a + 10 * b + causal);
                ab_layout l;
                kt_layout(&l, &c.pb.s, bq, bk, style, 99 + a * 31 + b * 7 + causal);
                cr_assert_eq(l.kind, kind, "kind %s", ab_layout_kind_name(l.kind));
                kt_ref_all(&c, &l);
                int rc = kind == AB_LAYOUT_BLOCK ? ab_kernel_blocksparse(&c.pb, &l, c.out)
                                                 : ab_kernel_gather(&c.pb, &l, c.out);
                cr_assert_eq(rc, AB_OK);
                double err = kt_rel_l2(&c);
                cr_assert_leq(err, KT_TOL, "%s style=%d N=%d d=%d bq=%d bk=%d causal=%d: %g",
                              ab_kernel_name(&l), style, N, d, bq, bk, causal, err);
                zero_rows += kt_zero_rows(&c);
                ab_layout_free(&l);
                kt_free(&c);
                tested++;
            }
    cr_assert_gt(tested, 40);
    cr_assert_gt(zero_rows, 100, "rows keeping nothing are exercised");
}

Test(kernels_cpu, blocksparse_full_mask_matches_dense_ref)
{
    /* compare with the unrestricted reference: a full mask is dense */
    static const int ns[] = { 1, 63, 65, 130, 257 };
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof kt_blocks / sizeof kt_blocks[0]; b++)
            for (int causal = 0; causal < 2; causal++) {
                const int N = ns[a], d = kt_ds[1 + (a + b) % 4];
                if (kt_blocks[b][0] == 1 && N > 65) continue;
                kt_case c;
                kt_make(&c, 2, N, d, causal, 7000 + 10 * a + b);
                ab_layout l;
                kt_layout(&l, &c.pb.s, kt_blocks[b][0], kt_blocks[b][1], KT_FULL_BLOCKS, 1);
                cr_assert_eq(ab_layout_kept_pairs(&l), ab_layout_valid_pairs(&l));
                kt_ref_all(&c, NULL);
                cr_assert_eq(ab_kernel_blocksparse(&c.pb, &l, c.out), AB_OK);
                double err = kt_rel_l2(&c);
                cr_assert_leq(err, KT_TOL, "N=%d d=%d blocks %dx%d causal=%d: %g", N, d, kt_blocks[b][0],
                              kt_blocks[b][1], causal, err);
                ab_layout_free(&l);
                kt_free(&c);
            }
}

Test(kernels_cpu, gather_all_tokens_matches_dense_ref)
{
    static const int ns[] = { 1, 63, 65, 130, 257 };
    static const int bqs[] = { 64, 16, 100, 300 };
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof bqs / sizeof bqs[0]; b++)
            for (int causal = 0; causal < 2; causal++) {
                const int N = ns[a], d = kt_ds[1 + (a + b) % 4];
                kt_case c;
                kt_make(&c, 2, N, d, causal, 8000 + 10 * a + b);
                ab_layout l;
                kt_layout(&l, &c.pb.s, bqs[b], 64, KT_ALL_TOKENS, 1);
                cr_assert_eq(l.kind, AB_LAYOUT_TOKEN);
                cr_assert_eq(ab_layout_kept_pairs(&l), ab_layout_valid_pairs(&l));
                kt_ref_all(&c, NULL);
                cr_assert_eq(ab_kernel_gather(&c.pb, &l, c.out), AB_OK);
                double err = kt_rel_l2(&c);
                cr_assert_leq(err, KT_TOL, "N=%d d=%d bq=%d causal=%d: %g", N, d, bqs[b], causal, err);
                ab_layout_free(&l);
                kt_free(&c);
            }
}

Test(kernels_cpu, blocksparse_random_layouts_match_ref)
{
    kt_check_layout_kernel(KT_RAND_BLOCK, AB_LAYOUT_BLOCK);
}

Test(kernels_cpu, gather_random_token_layouts_match_ref)
{
    kt_check_layout_kernel(KT_RAND_TOKEN, AB_LAYOUT_TOKEN);
}

Test(kernels_cpu, gather_random_mixed_layouts_match_ref)
{
    kt_check_layout_kernel(KT_RAND_MIXED, AB_LAYOUT_MIXED);
}

Test(kernels_cpu, empty_rows_are_zero)
{
    /* causal, only blocks above the diagonal: nothing is kept anywhere */
    kt_case c;
    kt_make(&c, 1, 130, 16, 1, 4242);
    ab_layout l;
    ab_layout_init(&l, &c.pb.s, 32, 32);
    for (int qb = 0; qb + 1 < l.n_kblocks; qb++)
        cr_assert_eq(ab_layout_add_block_range(&l, 0, qb, qb + 1, l.n_kblocks), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(ab_layout_kept_pairs(&l), 0);
    cr_assert_eq(ab_kernel_blocksparse(&c.pb, &l, c.out), AB_OK);
    for (size_t e = 0; e < c.n; e++) cr_assert_eq(c.out[e], 0.0f);
    ab_layout_free(&l);
    /* tokens beyond the diagonal only */
    ab_layout_init(&l, &c.pb.s, 32, 32);
    for (int qb = 0; qb < l.n_qblocks; qb++)
        for (int j = (qb + 1) * 32; j < 130; j += 3) cr_assert_eq(ab_layout_add_token(&l, 0, qb, j), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(ab_layout_kept_pairs(&l), 0);
    memset(c.out, 0xff, c.n * sizeof(float));
    cr_assert_eq(ab_kernel_gather(&c.pb, &l, c.out), AB_OK);
    for (size_t e = 0; e < c.n; e++) cr_assert_eq(c.out[e], 0.0f);
    ab_layout_free(&l);
    kt_free(&c);
}

/* ---- dispatch and argument checks --------------------------------------- */

Test(kernels_cpu, layout_dispatch)
{
    kt_case c;
    kt_make(&c, 2, 100, 24, 1, 31);
    float *o2 = malloc(c.n * sizeof(float));
    cr_assert_not_null(o2);
    ab_layout l;

    ab_layout_init(&l, &c.pb.s, 64, 64);
    cr_assert_eq(ab_layout_dense(&l), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_str_eq(ab_kernel_name(&l), "flash");
    cr_assert_eq(ab_kernel_layout(&c.pb, &l, c.out), AB_OK);
    cr_assert_eq(ab_kernel_flash(&c.pb, o2), AB_OK);
    cr_assert_eq(memcmp(c.out, o2, c.n * sizeof(float)), 0);
    cr_assert_eq(ab_kernel_blocksparse(&c.pb, &l, c.out), AB_EINVAL, "no CSR in DENSE");
    ab_layout_free(&l);

    kt_layout(&l, &c.pb.s, 32, 16, KT_RAND_BLOCK, 3);
    cr_assert_str_eq(ab_kernel_name(&l), "blocksparse");
    cr_assert_eq(ab_kernel_layout(&c.pb, &l, c.out), AB_OK);
    cr_assert_eq(ab_kernel_blocksparse(&c.pb, &l, o2), AB_OK);
    cr_assert_eq(memcmp(c.out, o2, c.n * sizeof(float)), 0);
    cr_assert_eq(ab_kernel_gather(&c.pb, &l, c.out), AB_EINVAL, "gather wants tokens");
    c.pb.s.causal = 0; /* shape mismatch with the layout */
    cr_assert_eq(ab_kernel_layout(&c.pb, &l, c.out), AB_EINVAL);
    c.pb.s.causal = 1;
    c.pb.s.seq_len = 99;
    cr_assert_eq(ab_kernel_layout(&c.pb, &l, c.out), AB_EINVAL);
    c.pb.s.seq_len = 100;
    ab_layout_free(&l);

    kt_layout(&l, &c.pb.s, 32, 16, KT_RAND_TOKEN, 4);
    cr_assert_str_eq(ab_kernel_name(&l), "gather");
    cr_assert_eq(ab_kernel_layout(&c.pb, &l, c.out), AB_OK);
    cr_assert_eq(ab_kernel_gather(&c.pb, &l, o2), AB_OK);
    cr_assert_eq(memcmp(c.out, o2, c.n * sizeof(float)), 0);
    cr_assert_eq(ab_kernel_blocksparse(&c.pb, &l, c.out), AB_EINVAL);
    ab_layout_free(&l);

    kt_layout(&l, &c.pb.s, 32, 16, KT_RAND_MIXED, 5);
    cr_assert_str_eq(ab_kernel_name(&l), "gather");
    cr_assert_eq(ab_kernel_layout(&c.pb, &l, c.out), AB_OK);
    ab_layout_free(&l);

    ab_layout_init(&l, &c.pb.s, 64, 64);
    cr_assert_eq(ab_layout_custom(&l, 0.1), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_str_eq(ab_kernel_name(&l), "custom");
    cr_assert_eq(ab_kernel_layout(&c.pb, &l, c.out), AB_EINVAL);
    ab_layout_free(&l);
    cr_assert_eq(ab_kernel_layout(&c.pb, NULL, c.out), AB_EINVAL);

    free(o2);
    kt_free(&c);
}

/* ---- determinism ------------------------------------------------------------ */

Test(kernels_cpu, bitwise_identical_for_1_and_2_threads)
{
    for (int causal = 0; causal < 2; causal++) {
        kt_case c;
        kt_make(&c, 3, 257, 72, causal, 555 + causal);
        float *o1 = malloc(c.n * sizeof(float));
        cr_assert_not_null(o1);
        ab_layout lb, lt, lm;
        kt_layout(&lb, &c.pb.s, 32, 16, KT_RAND_BLOCK, 11);
        kt_layout(&lt, &c.pb.s, 64, 64, KT_RAND_TOKEN, 12);
        kt_layout(&lm, &c.pb.s, 128, 32, KT_RAND_MIXED, 13);
        for (int kern = 0; kern < 4; kern++) {
            for (int pass = 0; pass < 2; pass++) {
                omp_set_num_threads(pass == 0 ? 1 : 2);
                float *o = pass == 0 ? o1 : c.out;
                int rc = kern == 0   ? ab_kernel_flash(&c.pb, o)
                         : kern == 1 ? ab_kernel_blocksparse(&c.pb, &lb, o)
                         : kern == 2 ? ab_kernel_gather(&c.pb, &lt, o)
                                     : ab_kernel_gather(&c.pb, &lm, o);
                cr_assert_eq(rc, AB_OK);
            }
            cr_assert_eq(memcmp(o1, c.out, c.n * sizeof(float)), 0,
                         "kernel %d causal %d differs between 1 and 2 threads", kern, causal);
        }
        ab_layout_free(&lb);
        ab_layout_free(&lt);
        ab_layout_free(&lm);
        free(o1);
        kt_free(&c);
    }
}

/* ---- SIMD paths against the portable fallback ---------------------------- */

/* ||a - b|| / ||b|| over n floats; INFINITY on a NaN. */
static double kt_rel_l2_f(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t e = 0; e < n; e++) {
        if (isnan(a[e]) || isnan(b[e])) return INFINITY;
        double diff = (double)a[e] - b[e];
        num += diff * diff;
        den += (double)b[e] * b[e];
    }
    return den == 0.0 ? (num == 0.0 ? 0.0 : INFINITY) : sqrt(num / den);
}

Test(kernels_cpu, isa_dispatch)
{
    cr_assert(ab_cpu_isa_supported(AB_ISA_PORTABLE));
    cr_assert_not(ab_cpu_isa_supported(-1));
    cr_assert_not(ab_cpu_isa_supported(AB_ISA_COUNT));
    cr_assert_str_eq(ab_cpu_isa_name(AB_ISA_AVX512), "avx512");
    cr_assert_str_eq(ab_cpu_isa_name(99), "?");
    /* the pick without AB_CPU_ISA (the caller's environment may set it: the
     * test runs the same under AB_CPU_ISA=avx2, the variable restored) */
    const char *was = getenv("AB_CPU_ISA");
    char saved[32] = "";
    if (was) snprintf(saved, sizeof saved, "%s", was);
    cr_assert_eq(unsetenv("AB_CPU_ISA"), 0);
    const int best = ab_cpu_isa_pick();
    cr_assert(ab_cpu_isa_supported(best));
    /* AB_CPU_ISA lowers the choice, never raises it (this test's own process) */
    cr_assert_eq(setenv("AB_CPU_ISA", "portable", 1), 0);
    cr_assert_eq(ab_cpu_isa_pick(), AB_ISA_PORTABLE);
    cr_assert_eq(setenv("AB_CPU_ISA", "avx2", 1), 0);
    cr_assert_eq(ab_cpu_isa_pick(), ab_cpu_isa_supported(AB_ISA_AVX2) ? AB_ISA_AVX2 : AB_ISA_PORTABLE);
    cr_assert_eq(setenv("AB_CPU_ISA", "nonsense", 1), 0);
    cr_assert_eq(ab_cpu_isa_pick(), best);
    cr_assert_eq(was ? setenv("AB_CPU_ISA", saved, 1) : unsetenv("AB_CPU_ISA"), 0);
    /* an ISA the CPU lacks (or no ISA at all) is refused, not run */
    kt_case c;
    kt_make(&c, 1, 20, 8, 0, 3);
    for (int isa = -1; isa <= AB_ISA_COUNT; isa++)
        cr_assert_eq(ab_kernel_flash_isa(&c.pb, c.out, isa),
                     ab_cpu_isa_supported(isa) ? AB_OK : AB_EUNSUPPORTED, "isa %d", isa);
    kt_free(&c);
}

/* Every supported ISA against the portable build and the fp64 reference,
 * for flash, blocksparse and gather, on odd N and head_dim (tails of every
 * register tile: N % 64, N % 4, d % 16, d % 8). */
Test(kernels_cpu, simd_paths_match_portable_odd_shapes)
{
    static const int ns[] = { 1, 3, 17, 67, 130 };
    static const int ds[] = { 1, 3, 8, 17, 33, 64, 100, 128 };
    int compared = 0;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof ds / sizeof ds[0]; b++)
            for (int causal = 0; causal < 2; causal++) {
                const int N = ns[a], d = ds[b];
                kt_case c;
                kt_make(&c, 2, N, d, causal, 9000 + 100 * a + 10 * b + causal);
                float *port = malloc(c.n * sizeof(float));
                cr_assert_not_null(port);
                ab_layout lb, lt;
                kt_layout(&lb, &c.pb.s, 32, 16, KT_RAND_BLOCK, 21 + a + b);
                kt_layout(&lt, &c.pb.s, 16, 64, KT_RAND_MIXED, 22 + a + b);
                for (int kern = 0; kern < 3; kern++) {
                    const ab_layout *l = kern == 0 ? NULL : kern == 1 ? &lb : &lt;
                    kt_ref_all(&c, l);
                    for (int isa = 0; isa < AB_ISA_COUNT; isa++) {
                        if (!ab_cpu_isa_supported(isa)) continue;
                        float *o = isa == AB_ISA_PORTABLE ? port : c.out;
                        int rc = kern == 0   ? ab_kernel_flash_isa(&c.pb, o, isa)
                                 : kern == 1 ? ab_kernel_blocksparse_isa(&c.pb, l, o, isa)
                                             : ab_kernel_gather_isa(&c.pb, l, o, isa);
                        cr_assert_eq(rc, AB_OK);
                        if (isa == AB_ISA_PORTABLE) memcpy(c.out, port, c.n * sizeof(float));
                        double err = kt_rel_l2(&c); /* against fp64, zero rows exact */
                        cr_assert_leq(err, KT_TOL, "kernel %d isa %s N=%d d=%d causal=%d: %g", kern,
                                      ab_cpu_isa_name(isa), N, d, causal, err);
                        double diff = kt_rel_l2_f(c.out, port, c.n);
                        cr_assert_leq(diff, 2 * KT_TOL, "kernel %d isa %s vs portable: %g", kern,
                                      ab_cpu_isa_name(isa), diff);
                        compared += isa != AB_ISA_PORTABLE;
                    }
                }
                ab_layout_free(&lb);
                ab_layout_free(&lt);
                free(port);
                kt_free(&c);
            }
    cr_log_info("SIMD comparisons: %d", compared);
}

Test(kernels_cpu, every_isa_bitwise_identical_for_1_and_2_threads)
{
    kt_case c;
    kt_make(&c, 3, 201, 40, 1, 777);
    float *o1 = malloc(c.n * sizeof(float));
    cr_assert_not_null(o1);
    ab_layout lb;
    kt_layout(&lb, &c.pb.s, 32, 16, KT_RAND_BLOCK, 31);
    for (int isa = 0; isa < AB_ISA_COUNT; isa++) {
        if (!ab_cpu_isa_supported(isa)) continue;
        for (int kern = 0; kern < 2; kern++) {
            for (int pass = 0; pass < 2; pass++) {
                omp_set_num_threads(pass == 0 ? 1 : 2);
                float *o = pass == 0 ? o1 : c.out;
                int rc = kern == 0 ? ab_kernel_flash_isa(&c.pb, o, isa)
                                   : ab_kernel_blocksparse_isa(&c.pb, &lb, o, isa);
                cr_assert_eq(rc, AB_OK);
            }
            cr_assert_eq(memcmp(o1, c.out, c.n * sizeof(float)), 0, "isa %s kernel %d", ab_cpu_isa_name(isa),
                         kern);
        }
    }
    ab_layout_free(&lb);
    free(o1);
    kt_free(&c);
}

/* Row-periodic layouts with one-row query blocks: head h keeps, for row i,
 * the keys i, i - r_h, i - 2 r_h, ... (w of them; non-causal: also w / 2
 * after i), a few random extra tokens, and some rows nothing. Rows i and
 * i + p share keys only when r_h divides p, so the grouped gather path
 * tiles every r_h-th row (kernels/cpu/gather.c, ab_group_period). Every ISA
 * against fp64 (zero rows exactly zero), and 1 vs 2 threads bitwise. */
Test(kernels_cpu, gather_row_periodic_layouts_match_ref)
{
    static const int rper[] = { 1, 2, 3, 5, 8 }; /* per head */
    static const int ns[] = { 64, 200, 517 };
    const int H = (int)(sizeof rper / sizeof rper[0]);
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (int causal = 0; causal < 2; causal++) {
            const int N = ns[a];
            kt_case c;
            kt_make(&c, H, N, 40, causal, 4200 + 10 * a + causal);
            float *o1 = malloc(c.n * sizeof(float));
            cr_assert_not_null(o1);
            ab_layout l;
            ab_layout_init(&l, &c.pb.s, 64, 64);
            cr_assert_eq(ab_layout_set_blocks(&l, 1, 16), AB_OK);
            uint64_t rng = 17 + a;
            for (int h = 0; h < H; h++) {
                const int r = rper[h], w = 20 + 7 * h;
                for (int i = 0; i < N; i++) {
                    if (i % 37 == 5) continue; /* keeps nothing */
                    int32_t keys[200];
                    int n = 0;
                    for (int k = 0; k < w && i - k * r >= 0; k++) keys[n++] = i - k * r;
                    if (!causal)
                        for (int k = 1; k <= w / 2 && i + k * r < N; k++) keys[n++] = i + k * r;
                    if (kt_unif(&rng) < 0.1) keys[n++] = kt_int(&rng, N);
                    cr_assert_eq(ab_layout_add_tokens(&l, h, i, keys, n), AB_OK);
                }
            }
            cr_assert_eq(ab_layout_finalize(&l), AB_OK);
            char err[256];
            cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_OK, "%s", err);
            kt_ref_all(&c, &l);
            for (int isa = 0; isa < AB_ISA_COUNT; isa++) {
                if (!ab_cpu_isa_supported(isa)) continue;
                for (int pass = 0; pass < 2; pass++) {
                    omp_set_num_threads(pass == 0 ? 1 : 2);
                    cr_assert_eq(ab_kernel_gather_isa(&c.pb, &l, pass == 0 ? o1 : c.out, isa), AB_OK);
                }
                const double e = kt_rel_l2(&c);
                cr_assert_leq(e, KT_TOL, "isa %s N=%d causal=%d: rel L2 %g", ab_cpu_isa_name(isa), N, causal,
                              e);
                cr_assert_eq(memcmp(o1, c.out, c.n * sizeof(float)), 0, "isa %s N=%d: 1 vs 2 threads",
                             ab_cpu_isa_name(isa), N);
            }
            ab_layout_free(&l);
            free(o1);
            kt_free(&c);
        }
}

/* ab_kernel_periodic against fp64 on the layout of the same pattern: per
 * head a period (0: no class part; 1; small; larger than some rows' class
 * spans; larger than N), per row a random window W and class span S (some
 * empty, some past [0, N), W inside S so that a non-causal row keeps two
 * class ranges (element maps), W covering S's start), under the interval
 * masks and a mask that is not one (element maps). Every ISA, d = 16 and 40; zero rows
 * exactly zero; 1 vs 2 threads bitwise. */
typedef struct kt_pd {
    int n;
    ab_periodic_row *rows; /* [heads * n] */
} kt_pd;

static void kt_pd_row(const void *ctx, int h, int i, ab_periodic_row *r)
{
    const kt_pd *p = ctx;
    *r = p->rows[(size_t)h * p->n + i];
}

/* A non-causal base mask whose spans are not exact (element maps). */
static int kt_gaps_allows(const ab_mask *m, int i, int j)
{
    (void)m;
    return (i + 2 * j) % 5 != 1 && j != 5;
}
static void kt_gaps_span(const ab_mask *m, int i, int *lo, int *hi)
{
    (void)i;
    *lo = 0;
    *hi = m->seq_len;
}
static const ab_mask_def kt_gaps = {
    .abi = AB_ABI_VERSION,
    .name = "kt_gaps",
    .syntax = "kt_gaps",
    .summary = "test fixture",
    .interval = 0,
    .allows = kt_gaps_allows,
    .span = kt_gaps_span,
};

Test(kernels_cpu, periodic_matches_ref)
{
    static const int per[] = { 0, 1, 3, 7, 90, 1000 }; /* per head */
    static const char *const masks[] = { "causal", "full", "sliding:40", "document:3", "kt_gaps" };
    const int H = (int)(sizeof per / sizeof per[0]);
    int cases = 0;
    for (size_t mk = 0; mk < sizeof masks / sizeof *masks; mk++)
        for (int d = 16; d <= 40; d += 24) {
            const int N = mk % 2 ? 157 : 300;
            kt_case c;
            ab_mask m;
            char err[256];
            kt_make(&c, H, N, d, 0, 5100 + 10 * mk + d);
            if (strcmp(masks[mk], "kt_gaps") == 0) {
                memset(&m, 0, sizeof m);
                m.def = &kt_gaps;
                m.seq_len = N;
            } else {
                cr_assert_eq(ab_mask_make(&m, masks[mk], N, 3 + mk, err, sizeof err), AB_OK, "%s", err);
            }
            c.pb.s.mask = &m;
            c.pb.s.causal = m.def->causal;
            kt_pd pd = { N, malloc((size_t)H * N * sizeof(ab_periodic_row)) };
            float *o1 = malloc(c.n * sizeof(float));
            int32_t *keys = malloc((size_t)2 * N * sizeof *keys);
            cr_assert(pd.rows && o1 && keys);
            ab_layout l;
            ab_layout_init(&l, &c.pb.s, 64, 64);
            cr_assert_eq(ab_layout_set_blocks(&l, 1, 16), AB_OK);
            uint64_t rng = 91 + mk + d;
            for (int h = 0; h < H; h++)
                for (int i = 0; i < N; i++) {
                    ab_periodic_row *r = &pd.rows[(size_t)h * N + i];
                    const int kind = kt_int(&rng, 6);
                    const int w = kt_int(&rng, 70), s = kt_int(&rng, 2 * N);
                    r->wlo = i - w + kt_int(&rng, 3);
                    r->whi = i + 1 + (kind == 1 ? w / 2 : 0);
                    r->slo = i - s;
                    r->shi = kind == 2 ? r->wlo : i + 1 + (kind >= 3 ? s / 3 : 0); /* kind 3-5: W inside S */
                    if (kind == 0) r->whi = r->wlo - 1;                            /* no window */
                    if (kind == 4) r->slo = r->wlo + 1;                            /* W covers S's start */
                    if (i % 41 == 7) r->shi = r->slo;                              /* no class part */
                    int n = 0;
                    for (int j = r->wlo > 0 ? r->wlo : 0; j < r->whi && j < N; j++) keys[n++] = j;
                    const int p = per[h];
                    for (int j = r->slo > 0 ? r->slo : 0; p > 0 && j < r->shi && j < N; j++)
                        if (((j - i) % p + p) % p == 0 && !(j >= r->wlo && j < r->whi)) keys[n++] = j;
                    cr_assert_eq(ab_layout_add_tokens(&l, h, i, keys, n), AB_OK);
                }
            cr_assert_eq(ab_layout_finalize(&l), AB_OK);
            kt_ref_all(&c, &l);
            cr_assert_gt(kt_zero_rows(&c), 0);
            const ab_periodic pat = { &pd, kt_pd_row, per };
            for (int isa = 0; isa < AB_ISA_COUNT; isa++) {
                if (!ab_cpu_isa_supported(isa)) continue;
                for (int pass = 0; pass < 2; pass++) {
                    omp_set_num_threads(pass == 0 ? 1 : 2);
                    cr_assert_eq(ab_kernel_periodic_isa(&c.pb, &pat, pass == 0 ? o1 : c.out, isa), AB_OK);
                }
                const double e = kt_rel_l2(&c);
                cr_expect_leq(e, KT_TOL, "isa %s mask %s d=%d: rel L2 %g", ab_cpu_isa_name(isa), masks[mk], d,
                              e);
                cr_expect_eq(memcmp(o1, c.out, c.n * sizeof(float)), 0, "isa %s mask %s: 1 vs 2 threads",
                             ab_cpu_isa_name(isa), masks[mk]);
                cases++;
            }
            const int bad[] = { 1, -1, 0, 0, 0, 0 };
            const ab_periodic neg = { &pd, kt_pd_row, bad };
            cr_expect_eq(ab_kernel_periodic_isa(&c.pb, &neg, c.out, AB_ISA_PORTABLE), AB_EINVAL);
            ab_layout_free(&l);
            ab_mask_free(&m);
            free(pd.rows);
            free(o1);
            free(keys);
            kt_free(&c);
        }
    cr_log_info("periodic cases: %d", cases);
}

/* The attention tile of the ABI (ab_attn_tile_*): every ISA, query rows
 * with a row stride, three key calls per tile (counts below, at and above
 * the chunk; lo/hi both given or one NULL; some rows seeing nothing in a
 * call or at all) and an empty call against the fp64 softmax over the union of what
 * each row saw, and the log-sum-exp of its logits. */
Test(kernels_cpu, attn_tile_matches_ref)
{
    const int nks[4] = { 13, 64, 150, 100 };
    uint64_t rng = 77;
    int cases = 0;
    for (int isa = 0; isa < AB_ISA_COUNT; isa++) {
        if (!ab_cpu_isa_supported(isa)) continue;
        for (int d = 8; d <= 72; d += 32)
            for (int nq = 1; nq <= 70; nq += 23) {
                const int ldq = d + 5;
                float *q = malloc((size_t)nq * ldq * sizeof *q), *kv[4][2], *out = malloc((size_t)nq * d * 4);
                float lse[80];
                int lo[3][80], hi[3][80];
                cr_assert(q && out);
                for (size_t e = 0; e < (size_t)nq * ldq; e++) q[e] = (float)(2 * kt_normal(&rng));
                for (int c = 0; c < 4; c++)
                    for (int w = 0; w < 2; w++) {
                        kv[c][w] = malloc((size_t)nks[c] * d * sizeof(float));
                        cr_assert(kv[c][w]);
                        for (int e = 0; e < nks[c] * d; e++) kv[c][w][e] = (float)kt_normal(&rng);
                    }
                for (int c = 0; c < 3; c++)
                    for (int r = 0; r < nq; r++) {
                        lo[c][r] = kt_int(&rng, nks[c] + 1) - 2;
                        hi[c][r] = lo[c][r] + kt_int(&rng, nks[c]);
                        if (r % 7 == 3) hi[c][r] = lo[c][r]; /* sees nothing in calls 0 and 1 */
                        if (c == 2) lo[c][r] = r % 7 == 3 ? nks[2] : r % 5 == 1 ? 1 : 0; /* nothing at all */
                    }
                unsigned char *allow = malloc((size_t)nks[3] * 80); /* key-major */
                cr_assert(allow);
                for (int j = 0; j < nks[3]; j++)
                    for (int r = 0; r < nq; r++) /* rows 4, 13, ...: none */
                        allow[(size_t)j * 80 + r] = r % 9 != 4 && kt_int(&rng, 3) == 0;
                ab_attn_tile *t = ab_attn_tile_new_isa(d, 80, isa);
                cr_assert(t);
                const float scale = 0.3f;
                ab_attn_tile_begin(t, q, ldq, nq, scale);
                ab_attn_tile_keys(t, kv[0][0], kv[0][1], nks[0], lo[0], hi[0]);
                ab_attn_tile_keys(t, kv[1][0], kv[1][1], nks[1], NULL, hi[1]);
                ab_attn_tile_keys(t, kv[2][0], kv[2][1], nks[2], lo[2], NULL);
                if (d == 8) ab_attn_tile_keys(t, kv[2][0], kv[2][1], 0, NULL, NULL); /* no keys */
                ab_attn_tile_keys_map(t, kv[3][0], kv[3][1], nks[3], allow, 80);
                ab_attn_tile_end(t, out, d, lse);
                ab_attn_tile_free(t);
                double num = 0, den = 0;
                for (int r = 0; r < nq; r++) {
                    double m = -INFINITY, sum = 0, o[72] = { 0 };
                    for (int pass = 0; pass < 2; pass++)
                        for (int c = 0; c < 4; c++) {
                            const int a = c == 1 || c == 3 ? 0 : lo[c][r], b = c >= 2 ? nks[c] : hi[c][r];
                            for (int j = a < 0 ? 0 : a; j < b && j < nks[c]; j++) {
                                if (c == 3 && !allow[(size_t)j * 80 + r]) continue;
                                double x = 0;
                                for (int e = 0; e < d; e++)
                                    x += (double)q[(size_t)r * ldq + e] * kv[c][0][(size_t)j * d + e];
                                x *= scale;
                                if (pass == 0) {
                                    m = x > m ? x : m;
                                    continue;
                                }
                                sum += exp(x - m);
                                for (int e = 0; e < d; e++) o[e] += exp(x - m) * kv[c][1][(size_t)j * d + e];
                            }
                        }
                    for (int e = 0; e < d; e++) {
                        const double ref = sum > 0 ? o[e] / sum : 0;
                        num += (out[(size_t)r * d + e] - ref) * (out[(size_t)r * d + e] - ref);
                        den += ref * ref;
                    }
                    if (sum > 0)
                        cr_expect(fabs(lse[r] - (m + log(sum))) <= 1e-5 * (1 + fabs(m + log(sum))),
                                  "isa %s row %d: lse %g, want %g", ab_cpu_isa_name(isa), r, lse[r],
                                  m + log(sum));
                    else
                        cr_expect(isinf(lse[r]) && lse[r] < 0, "row %d saw nothing: lse %g", r, lse[r]);
                }
                cr_expect_leq(sqrt(num / den), KT_TOL, "isa %s d=%d nq=%d: rel L2 %g", ab_cpu_isa_name(isa),
                              d, nq, sqrt(num / den));
                cases++;
                for (int c = 0; c < 4; c++) free(kv[c][0]), free(kv[c][1]);
                free(allow);
                free(q);
                free(out);
            }
    }
    cr_assert_null(ab_attn_tile_new_isa(16, 129, AB_ISA_PORTABLE));
    cr_assert_null(ab_attn_tile_new_isa(0, 16, AB_ISA_PORTABLE));
    cr_log_info("attention tile cases: %d", cases);
}

/* ---- bf16 inputs ---------------------------------------------------------- */

/* kt_make (2 heads) under the base mask spec bound to (n, mseed) in *m
 * (which must outlive c's use; the caller frees it). */
static void kt_make_mask(kt_case *c, ab_mask *m, int n, int d, const char *spec, uint64_t seed,
                         uint64_t mseed)
{
    kt_make(c, 2, n, d, 0, seed);
    char err[256];
    cr_assert_eq(ab_mask_make(m, spec, n, mseed, err, sizeof err), AB_OK, "%s: %s", spec, err);
    c->pb.s.mask = m;
    c->pb.s.causal = m->def->causal;
}

/* Q, K, V of c rounded to bf16 in place (fp32 values of the bf16 numbers);
 * returns the bf16 copies q | k | v (3 n, the caller frees). */
static uint16_t *kt_round_bf16(kt_case *c)
{
    uint16_t *b = malloc(3 * c->n * sizeof *b);
    cr_assert(b);
    float *src[3] = { c->q, c->k, c->v };
    for (int w = 0; w < 3; w++)
        for (size_t e = 0; e < c->n; e++) {
            b[w * c->n + e] = ab_bf16_from_float(src[w][e]);
            src[w][e] = ab_bf16_to_float(b[w * c->n + e]);
        }
    return b;
}

Test(kernels_cpu, bf16_rounding)
{
    cr_assert_eq(ab_bf16_from_float(1.0f), 0x3f80);
    cr_assert_eq(ab_bf16_to_float(0x3f80), 1.0f);
    cr_assert_eq(ab_bf16_from_float(1.0f + 0x1.0p-8f), 0x3f80, "a tie rounds to even (down)");
    cr_assert_eq(ab_bf16_from_float(1.0f + 0x1.8p-7f), 0x3f82, "a tie rounds to even (up)");
    cr_assert_eq(ab_bf16_from_float(1.0f + 0x1.2p-8f), 0x3f81, "above the tie rounds up");
    cr_assert_eq(ab_bf16_from_float(-INFINITY), 0xff80);
    cr_assert(isnan(ab_bf16_to_float(ab_bf16_from_float(NAN))));
    cr_assert(isinf(ab_bf16_to_float(ab_bf16_from_float(3.4e38f))), "beyond the bf16 range: inf");
}

/* The bf16 kernel on inputs already rounded to bf16, against the fp64
 * reference of those same values: widened to fp32 it must be as exact as
 * the fp32 kernel; the AVX-512 BF16 and AMX products (P rounded to bf16, 8 bits of
 * mantissa) within 8e-3 relative L2. Every base-mask shape (causal, full,
 * sliding, document), N and head_dim tails, a large scale. */
Test(kernels_cpu, bf16_flash_matches_ref)
{
    static const int ns[] = { 3, 5, 64, 67, 130, 300 };
    static const int ds[] = { 2, 16, 18, 32, 64, 72, 128 };
    static const char *masks[] = { "causal", "full", "sliding:40", "document:3" };
    int native_runs = 0, amx_runs = 0;
    double worst = 0;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof ds / sizeof ds[0]; b++)
            for (size_t mi = 0; mi < sizeof masks / sizeof masks[0]; mi++) {
                const int N = ns[a], d = ds[b];
                kt_case c;
                ab_mask m;
                kt_make_mask(&c, &m, N, d, masks[mi], 4000 + 50 * a + 7 * b + mi, 5);
                if (a == 3) c.pb.s.scale = 1.5f; /* large logits: the running-max rescaling */
                uint16_t *q = malloc(c.n * sizeof *q + 1), *k = malloc(c.n * sizeof *k + 1),
                         *v = malloc(c.n * sizeof *v + 1);
                cr_assert(q && k && v);
                for (size_t e = 0; e < c.n; e++) {
                    q[e] = ab_bf16_from_float(c.q[e]);
                    k[e] = ab_bf16_from_float(c.k[e]);
                    v[e] = ab_bf16_from_float(c.v[e]);
                    c.q[e] = ab_bf16_to_float(q[e]);
                    c.k[e] = ab_bf16_to_float(k[e]);
                    c.v[e] = ab_bf16_to_float(v[e]);
                }
                kt_ref_all(&c, NULL);
                for (int isa = 0; isa < AB_ISA_COUNT; isa++) {
                    if (!ab_cpu_isa_supported(isa)) continue;
                    for (size_t e = 0; e < c.n; e++) c.out[e] = NAN;
                    cr_assert_eq(ab_kernel_flash_bf16_isa(&c.pb.s, q, k, v, c.out, isa, 0), AB_OK);
                    const double e = kt_rel_l2(&c);
                    cr_assert_leq(e, KT_TOL, "widened, isa %s, N=%d d=%d %s: rel L2 %g", ab_cpu_isa_name(isa),
                                  N, d, masks[mi], e);
                }
                for (int nat = 1; nat <= 2; nat++) { /* 1: AVX-512 BF16 pairs, 2: AMX tiles */
                    for (size_t e = 0; e < c.n; e++) c.out[e] = NAN;
                    const int rc = ab_kernel_flash_bf16_isa(&c.pb.s, q, k, v, c.out, AB_ISA_AVX512, nat);
                    const int can =
                        nat == 1 ? ab_cpu_bf16_supported() && d >= 16 : ab_cpu_amx_supported() && d % 32 == 0;
                    if (can) {
                        cr_assert_eq(rc, AB_OK);
                        const double e = kt_rel_l2(&c);
                        cr_assert_leq(e, 8e-3, "%s, N=%d d=%d %s: rel L2 %g",
                                      nat == 1 ? "avx512-bf16" : "amx", N, d, masks[mi], e);
                        worst = e > worst ? e : worst;
                        native_runs += nat == 1;
                        amx_runs += nat == 2;
                    } else {
                        cr_assert_eq(rc, AB_EUNSUPPORTED, "native path %d without the ISA or with d = %d",
                                     nat, d);
                    }
                }
                /* the dispatcher: AMX where it can, else widened */
                for (size_t e = 0; e < c.n; e++) c.out[e] = NAN;
                cr_assert_eq(ab_cpu_flash_bf16(&c.pb.s, q, k, v, c.out), AB_OK);
                cr_assert_leq(kt_rel_l2(&c), 8e-3);
                free(q);
                free(k);
                free(v);
                ab_mask_free(&m);
                kt_free(&c);
            }
    if (!ab_cpu_bf16_supported())
        cr_log_info("no AVX-512 BF16 on this CPU: the native bf16 path was not run");
    else
        cr_assert_gt(native_runs, 0);
    cr_assert(amx_runs > 0 || !ab_cpu_amx_supported());
    /* a scale <= 0 (amx takes the max of the unscaled logits): the
     * dispatcher widens instead of failing, the explicit amx path refuses */
    {
        kt_case c;
        kt_make(&c, 2, 67, 64, 1, 4999);
        c.pb.s.scale = -0.3f;
        uint16_t *b = kt_round_bf16(&c);
        kt_ref_all(&c, NULL);
        cr_assert_eq(ab_cpu_flash_bf16(&c.pb.s, b, b + c.n, b + 2 * c.n, c.out), AB_OK);
        cr_assert_leq(kt_rel_l2(&c), KT_TOL, "scale -0.3: %g", kt_rel_l2(&c));
        cr_assert_eq(
            ab_kernel_flash_bf16_isa(&c.pb.s, b, b + c.n, b + 2 * c.n, c.out, AB_ISA_AVX512, AB_BF16_AMX),
            AB_EUNSUPPORTED);
        cr_assert_eq(ab_kernel_flash_bf16_isa(&c.pb.s, b, b + c.n, b + 2 * c.n, c.out, AB_ISA_AVX512, 3),
                     AB_EINVAL);
        /* a bf16 problem (ABI 9) through the layout kernel: DENSE, BLOCK and
         * TOKEN layouts run the bf16 kernels on q16, k16, v16 (the fp32 views
         * zeroed here, so reading them instead fails); tokens with query
         * blocks below 16 are unsupported */
        c.pb.q16 = b;
        c.pb.k16 = b + c.n;
        c.pb.v16 = b + 2 * c.n;
        float *zero = calloc(c.n, sizeof *zero);
        cr_assert(zero);
        c.pb.q = c.pb.k = c.pb.v = zero;
        ab_layout l;
        ab_layout_init(&l, &c.pb.s, 16, 16);
        cr_assert_eq(ab_layout_dense(&l), AB_OK);
        cr_assert_eq(ab_layout_finalize(&l), AB_OK);
        for (size_t e = 0; e < c.n; e++) c.out[e] = NAN;
        cr_assert_eq(ab_kernel_layout(&c.pb, &l, c.out), AB_OK);
        cr_assert_leq(kt_rel_l2(&c), KT_TOL, "layout kernel, bf16 problem: %g", kt_rel_l2(&c));
        ab_layout_free(&l);
        ab_layout_init(&l, &c.pb.s, 16, 16);
        for (int h = 0; h < 2; h++)
            for (int qb = 0; qb < l.n_qblocks; qb++)
                cr_assert_eq(ab_layout_add_block_range(&l, h, qb, 0, l.n_kblocks), AB_OK);
        cr_assert_eq(ab_layout_finalize(&l), AB_OK);
        cr_assert_eq(l.kind, AB_LAYOUT_BLOCK);
        for (size_t e = 0; e < c.n; e++) c.out[e] = NAN;
        cr_assert_eq(ab_kernel_layout(&c.pb, &l, c.out), AB_OK);
        cr_assert_leq(kt_rel_l2(&c), KT_TOL, "every block, bf16 problem: %g", kt_rel_l2(&c));
        ab_layout_free(&l);
        for (int bq = 16; bq >= 8; bq -= 8) { /* every key as a token; block_q 8: the grouped path */
            ab_layout_init(&l, &c.pb.s, bq, 16);
            for (int h = 0; h < 2; h++)
                for (int qb = 0; qb < l.n_qblocks; qb++)
                    for (int j = 0; j < 67; j++) cr_assert_eq(ab_layout_add_token(&l, h, qb, j), AB_OK);
            cr_assert_eq(ab_layout_finalize(&l), AB_OK);
            cr_assert_eq(l.kind, AB_LAYOUT_TOKEN);
            for (size_t e = 0; e < c.n; e++) c.out[e] = NAN;
            const int rc = ab_kernel_layout(&c.pb, &l, c.out);
            if (bq == 16) {
                cr_assert_eq(rc, AB_OK);
                cr_assert_leq(kt_rel_l2(&c), KT_TOL, "every token, bf16 problem: %g", kt_rel_l2(&c));
            } else {
                cr_assert_eq(rc, AB_EUNSUPPORTED, "block_q 8 tokens on bf16 inputs");
            }
            ab_layout_free(&l);
        }
        free(zero);
        free(b);
        kt_free(&c);
    }
    /* the dispatcher's path, and AB_BF16 choosing one */
    const int amx = ab_cpu_amx_supported() && ab_cpu_isa_pick() == AB_ISA_AVX512;
    cr_assert_eq(ab_cpu_bf16_path(128), amx ? AB_BF16_AMX : AB_BF16_WIDEN);
    cr_assert_eq(ab_cpu_bf16_path(48), AB_BF16_WIDEN, "AMX needs head_dim % 32 == 0");
    cr_assert_eq(setenv("AB_BF16", "avx512", 1), 0);
    cr_assert_eq(ab_cpu_bf16_path(128), ab_cpu_bf16_supported() && ab_cpu_isa_pick() == AB_ISA_AVX512
                                            ? AB_BF16_AVX512
                                            : AB_BF16_WIDEN);
    cr_assert_eq(setenv("AB_BF16", "widen", 1), 0);
    cr_assert_eq(ab_cpu_bf16_path(128), AB_BF16_WIDEN);
    cr_assert_eq(unsetenv("AB_BF16"), 0);
    cr_assert_str_eq(ab_cpu_bf16_path_name(AB_BF16_AMX), "amx");
    uint16_t x = 0;
    float o = 0;
    ab_shape s = { 1, 1, 16, 0, 0.25f, NULL, 0, 1, AB_PREFILL };
    cr_assert_eq(ab_cpu_flash_bf16(NULL, &x, &x, &x, &o), AB_EINVAL);
    cr_assert_eq(ab_cpu_flash_bf16(&s, &x, NULL, &x, &o), AB_EINVAL);
    s.head_dim = 513;
    cr_assert_eq(ab_cpu_flash_bf16(&s, &x, &x, &x, &o), AB_EUNSUPPORTED);
}

/* The bf16 layout kernels (flash.c over BLOCK, TOKEN and MIXED layouts) on
 * random layouts (runs of consecutive blocks included: they are one key
 * range, chunked across block edges; token chunks gathered), every path,
 * against the fp64 reference of the same bf16 values on the layout: widen
 * as exact as fp32, avx512 and amx within 8e-3; causal, full and two other
 * base masks. */
Test(kernels_cpu, bf16_layouts_match_ref)
{
    static const int ns[] = { 63, 130, 257, 300 };
    static const int ds[] = { 16, 32, 64, 128 };
    static const char *masks[] = { "causal", "full", "sliding:40", "document:3" };
    int runs[3] = { 0, 0, 0 }, kinds[3] = { 0, 0, 0 }, zero_rows = 0;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof kt_blocks / sizeof kt_blocks[0]; b++)
            for (size_t mi = 0; mi < 4; mi++) {
                const int N = ns[a], d = ds[(a + b + mi) % 4], bq = kt_blocks[b][0], bk = kt_blocks[b][1];
                if (bq * bk == 1 && N > 63) continue; /* 1x1 blocks: keep the test fast */
                const int style = (int)((a + b + mi) % 3), kind = style == 0   ? AB_LAYOUT_BLOCK
                                                                  : style == 1 ? AB_LAYOUT_TOKEN
                                                                               : AB_LAYOUT_MIXED;
                if (kind != AB_LAYOUT_BLOCK && bq < AB_BF16_MIN_BLOCK_Q) continue; /* unsupported, above */
                kt_case c;
                ab_mask m;
                kt_make_mask(&c, &m, N, d, masks[mi], 7000 + 100 * a + 10 * b + mi, 3);
                uint16_t *h16 = kt_round_bf16(&c);
                c.pb.q16 = h16;
                c.pb.k16 = h16 + c.n;
                c.pb.v16 = h16 + 2 * c.n;
                ab_layout l;
                kt_layout(&l, &c.pb.s, bq, bk,
                          kind == AB_LAYOUT_BLOCK   ? KT_RAND_BLOCK
                          : kind == AB_LAYOUT_TOKEN ? KT_RAND_TOKEN
                                                    : KT_RAND_MIXED,
                          3 + a * 31 + b * 7 + mi);
                cr_assert_eq((int)l.kind, kind);
                kinds[style]++;
                kt_ref_all(&c, &l);
                for (int path = AB_BF16_WIDEN; path <= AB_BF16_AMX; path++) {
                    if (!ab_cpu_bf16_path_ok(path, d, c.pb.s.scale)) continue;
                    const int isa = path == AB_BF16_WIDEN ? ab_cpu_isa_pick() : AB_ISA_AVX512;
                    for (size_t e = 0; e < c.n; e++) c.out[e] = NAN;
                    cr_assert_eq(ab_kernel_layout_bf16_isa(&c.pb, &l, c.out, isa, path), AB_OK);
                    const double e = kt_rel_l2(&c);
                    cr_assert_leq(e, path == AB_BF16_WIDEN ? KT_TOL : 8e-3,
                                  "%s %s N=%d d=%d bq=%d bk=%d %s: rel L2 %g", ab_layout_kind_name(l.kind),
                                  ab_cpu_bf16_path_name(path), N, d, bq, bk, masks[mi], e);
                    runs[path]++;
                }
                for (size_t e = 0; e < c.n; e++) c.out[e] = NAN;
                cr_assert_eq(ab_cpu_layout_bf16(&c.pb, &l, c.out), AB_OK);
                cr_assert_leq(kt_rel_l2(&c), 8e-3);
                zero_rows += kt_zero_rows(&c);
                ab_layout_free(&l);
                free(h16);
                ab_mask_free(&m);
                kt_free(&c);
            }
    cr_log_info("bf16 layout runs: widen %d, avx512 %d, amx %d; block %d, token %d, mixed %d layouts",
                runs[0], runs[1], runs[2], kinds[0], kinds[1], kinds[2]);
    cr_assert(kinds[0] > 10 && kinds[1] > 10 && kinds[2] > 10);
    cr_assert_gt(runs[AB_BF16_WIDEN], 50);
    cr_assert(runs[AB_BF16_AMX] > 0 || !ab_cpu_amx_supported());
    cr_assert(runs[AB_BF16_AVX512] > 0 || !ab_cpu_bf16_supported());
    cr_assert_gt(zero_rows, 100, "rows keeping nothing are exercised");
}
