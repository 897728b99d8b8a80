/* test_static_methods.c — properties of the static patterns (methods/
 * ashape, strided, fixed, bigbird, dilated, s2attn, powerattn, moa) that the
 * registry-wide reference test does not see: the pattern each paper defines,
 * seeding, head heterogeneity, knob monotonicity and full coverage. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/plugin.h"
#include "runtime/layout.h"
#include "runtime/registry.h"
#include "kernels/kernels.h"

typedef struct tp {
    ab_problem pb;       /* pb.heldout points at held: a tp must not move */
    ab_problem held;     /* the held-out draw (ab_problem.heldout): the same generator at another seed */
    float *q, *k, *v;    /* (heads, seq_len, head_dim) */
    float *hq, *hk, *hv; /* the held-out draw's */
} tp;

static void tp_fill(float *q, float *k, float *v, size_t cnt, uint64_t seed)
{
    uint64_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < cnt; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const float x = (float)((double)(s >> 11) * 0x1.0p-53 - 0.5);
        q[i] = x;
        k[i] = -x * 0.7f + 0.1f;
        v[i] = x * 2.0f;
    }
}

static void tp_make(tp *t, int heads, int n, int d, int causal, uint64_t seed)
{
    const size_t cnt = (size_t)heads * n * d;
    float **arr[6] = { &t->q, &t->k, &t->v, &t->hq, &t->hk, &t->hv };
    for (int i = 0; i < 6; i++) cr_assert((*arr[i] = malloc(cnt * sizeof(float))));
    tp_fill(t->q, t->k, t->v, cnt, seed);
    tp_fill(t->hq, t->hk, t->hv, cnt, ab_heldout_seed(seed));
    const ab_shape s = { heads, n, d, causal, 1.0f / sqrtf((float)d), NULL, 0, 1, AB_PREFILL };
    t->held = (ab_problem){ s, t->hq, t->hk, t->hv, ab_heldout_seed(seed), 1, NULL, 0, NULL, NULL, NULL };
    t->pb = (ab_problem){ s, t->q, t->k, t->v, seed, 1, &t->held, 0, NULL, NULL, NULL };
}

static void tp_free(tp *t)
{
    free(t->q);
    free(t->k);
    free(t->v);
    free(t->hq);
    free(t->hk);
    free(t->hv);
}

/* Select with `name`'s defaults plus overrides "k=v" pairs; finalised. */
static void sel(const char *name, const ab_problem *pb, int block, const char *const *kv, int nkv,
                ab_layout *l)
{
    const ab_method *m = ab_method_find(name);
    cr_assert(m, "%s not registered", name);
    ab_params p;
    ab_params_defaults(m->params, AB_MAX_PARAMS, &p);
    for (int i = 0; i < nkv; i++) {
        char key[64];
        const char *eq = strchr(kv[i], '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - kv[i]), kv[i]);
        cr_assert_eq(ab_params_set(m->params, AB_MAX_PARAMS, &p, key, atof(eq + 1)), 0, "%s: %s", name,
                     kv[i]);
    }
    ab_layout_init(l, &pb->s, block, block);
    ab_instance in;
    cr_assert_eq(ab_instance_create(&in, m, &p, &pb->s), AB_OK);
    cr_assert_eq(ab_instance_select(&in, pb, l), AB_OK, "%s: %s", name, ab_instance_error(&in));
    ab_instance_destroy(&in);
    cr_assert_eq(ab_layout_finalize(l), AB_OK);
    char err[256];
    cr_assert_eq(ab_layout_validate(l, err, sizeof err), AB_OK, "%s: %s", name, err);
}

static int same_layout(const ab_layout *a, const ab_layout *b)
{
    const int H = a->heads, N = a->seq_len;
    for (int h = 0; h < H; h++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++)
                if (ab_layout_contains(a, h, i, j) != ab_layout_contains(b, h, i, j)) return 0;
    return 1;
}

Test(static_methods, bigbird_seeded)
{
    tp t;
    tp_make(&t, 2, 1024, 16, 1, 5);
    ab_layout a, b, c;
    sel("bigbird", &t.pb, 64, NULL, 0, &a);
    sel("bigbird", &t.pb, 64, NULL, 0, &b);
    t.pb.seed = 6;
    sel("bigbird", &t.pb, 64, NULL, 0, &c);
    cr_expect(same_layout(&a, &b), "same seed, different layouts");
    cr_expect(!same_layout(&a, &c), "different seeds, same layout");
    /* the two heads draw different random blocks */
    int differ = 0;
    for (int i = 0; i < 1024 && !differ; i += 64)
        for (int j = 0; j <= i; j += 64)
            differ |= ab_layout_contains(&a, 0, i, j) != ab_layout_contains(&a, 1, i, j);
    cr_expect(differ, "heads 0 and 1 have the same random blocks");
    ab_layout_free(&a);
    ab_layout_free(&b);
    ab_layout_free(&c);
    tp_free(&t);
}

/* Larger r keeps a superset (monotone density): random=2 ⊂ random=5. */
Test(static_methods, bigbird_random_nested)
{
    tp t;
    tp_make(&t, 2, 2048, 16, 1, 9);
    const char *r2[] = { "random=2" }, *r5[] = { "random=5.5" };
    ab_layout a, b;
    sel("bigbird", &t.pb, 64, r2, 1, &a);
    sel("bigbird", &t.pb, 64, r5, 1, &b);
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 2048; i += 64)
            for (int j = 0; j <= i; j += 64)
                if (ab_layout_contains(&a, h, i, j))
                    cr_assert(ab_layout_contains(&b, h, i, j), "h %d i %d j %d", h, i, j);
    cr_expect_lt(ab_layout_density(&a), ab_layout_density(&b));
    ab_layout_free(&a);
    ab_layout_free(&b);
    tp_free(&t);
}

/* Heads jointly cover every causally valid key block when H >= s, and each
 * head alone does not. */
Test(static_methods, s2attn_heads_cover_context)
{
    tp t;
    const int H = 4, N = 2048, B = 64;
    tp_make(&t, H, N, 16, 1, 3);
    const char *kv[] = { "vert_stride=4", "local_blocks=1" };
    ab_layout l;
    sel("s2attn", &t.pb, B, kv, 2, &l);
    for (int qb = 0; qb < N / B; qb++)
        for (int kb = 0; kb <= qb; kb++) {
            int any = 0;
            for (int h = 0; h < H; h++) any |= ab_layout_contains(&l, h, qb * B + B - 1, kb * B);
            cr_assert(any, "query block %d key block %d kept by no head", qb, kb);
        }
    for (int h = 0; h < H; h++) {
        const int qb = N / B - 1;
        int cnt = 0;
        for (int kb = 0; kb < qb; kb++) cnt += ab_layout_contains(&l, h, qb * B, kb * B);
        cr_expect(cnt >= qb / 4 - 1 && cnt <= qb / 4 + 1, "head %d keeps %d of %d earlier blocks, want ~1/4",
                  h, cnt, qb);
    }
    ab_layout_free(&l);
    tp_free(&t);
}

Test(static_methods, powerattn_power_of_two_distances)
{
    tp t;
    const int N = 4096, B = 64;
    tp_make(&t, 1, N, 16, 1, 4);
    const char *kv[] = { "local_blocks=0", "sink_blocks=0" };
    ab_layout l;
    sel("powerattn", &t.pb, B, kv, 2, &l);
    for (int qb = 0; qb < N / B; qb++)
        for (int kb = 0; kb <= qb; kb++) {
            const int dist = qb - kb, want = dist == 0 || (dist & (dist - 1)) == 0;
            cr_assert_eq(ab_layout_contains(&l, 0, qb * B + B - 1, kb * B), want, "qb %d kb %d", qb, kb);
        }
    ab_layout_free(&l);
    tp_free(&t);
}

/* Row i keeps exactly: the window (i-l, i] and the keys at distance 0 mod s. */
Test(static_methods, strided_exact_per_row)
{
    tp t;
    const int N = 700;
    tp_make(&t, 1, N, 16, 1, 2);
    const char *kv[] = { "window=40", "stride=25" };
    ab_layout l;
    sel("strided", &t.pb, 64, kv, 2, &l);
    for (int i = 0; i < N; i++)
        for (int j = 0; j <= i; j++) {
            const int want = i - j < 40 || (i - j) % 25 == 0;
            cr_assert_eq(ab_layout_contains(&l, 0, i, j), want, "i %d j %d", i, j);
        }
    ab_layout_free(&l);
    tp_free(&t);
}

/* Head h keeps i - k*(1 + h mod D), k < w, exactly. */
Test(static_methods, dilated_exact_per_head)
{
    tp t;
    const int N = 500, H = 3;
    tp_make(&t, H, N, 16, 1, 8);
    const char *kv[] = { "window=20", "max_dilation=3" };
    ab_layout l;
    sel("dilated", &t.pb, 64, kv, 2, &l);
    for (int h = 0; h < H; h++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j <= i; j++) {
                const int dl = 1 + h % 3, want = (i - j) % dl == 0 && (i - j) / dl < 20;
                cr_assert_eq(ab_layout_contains(&l, h, i, j), want, "h %d i %d j %d", h, i, j);
            }
    ab_layout_free(&l);
    tp_free(&t);
}

/* Own length-l block + c summary cells of each earlier block (head 0: the
 * last c positions). */
Test(static_methods, fixed_exact)
{
    tp t;
    const int N = 600, L = 128, C = 8;
    tp_make(&t, 1, N, 16, 1, 8);
    const char *kv[] = { "block=128", "summary=8" };
    ab_layout l;
    sel("fixed", &t.pb, 64, kv, 2, &l);
    for (int i = 0; i < N; i++)
        for (int j = 0; j <= i; j++) {
            const int want = j / L == i / L || j % L >= L - C;
            cr_assert_eq(ab_layout_contains(&l, 0, i, j), want, "i %d j %d", i, j);
        }
    ab_layout_free(&l);
    tp_free(&t);
}

/* StreamingLLM: the first 4 tokens and the query block's window. */
Test(static_methods, ashape_sinks_and_window)
{
    tp t;
    const int N = 1000, B = 64, W = 100;
    tp_make(&t, 1, N, 16, 1, 8);
    const char *kv[] = { "window=100", "sinks=4" };
    ab_layout l;
    sel("ashape", &t.pb, B, kv, 2, &l);
    for (int i = 0; i < N; i++)
        for (int j = 0; j <= i; j++) {
            const int r0 = i / B * B, want = j < 4 || j > r0 - W;
            cr_assert_eq(ab_layout_contains(&l, 0, i, j), want, "i %d j %d", i, j);
        }
    ab_layout_free(&l);
    tp_free(&t);
}

/* Density rises monotonically with each knob, and at the knob's top the
 * layouts that can keep everything do (density 1). */
Test(static_methods, knobs_monotone)
{
    static const char *const names[] = { "ashape",  "strided", "fixed",     "bigbird",
                                         "dilated", "s2attn",  "powerattn", "moa" };
    static const int full[] = { 1, 1, 1, 1, 0, 1, 1, 1 };
    tp t;
    tp_make(&t, 4, 1024, 16, 1, 11);
    for (int a = 0; a < 8; a++) {
        const ab_method *m = ab_method_find(names[a]);
        cr_assert(m);
        const ab_param *kp = &m->params[m->density_knob.param];
        double prev = m->density_knob.increasing ? -1 : 2;
        for (int s = 0; s <= 12; s++) {
            const double f = s / 12.0;
            double v = m->density_knob.log_scale ? exp(log(kp->min) + f * (log(kp->max) - log(kp->min)))
                                                 : kp->min + f * (kp->max - kp->min);
            v = fmin(kp->max, fmax(kp->min, v));
            char kv[96];
            snprintf(kv, sizeof kv, "%s=%.17g", kp->name, v);
            const char *kvs[] = { kv };
            ab_layout l;
            sel(names[a], &t.pb, 64, kvs, 1, &l);
            const double dd = ab_layout_density(&l);
            if (m->density_knob.increasing)
                cr_expect_geq(dd, prev - 1e-12, "%s: %s -> %g after %g", names[a], kv, dd, prev);
            else
                cr_expect_leq(dd, prev + 1e-12, "%s: %s -> %g after %g", names[a], kv, dd, prev);
            if (full[a] && s == (m->density_knob.increasing ? 12 : 0))
                cr_expect_eq(dd, 1.0, "%s: density %g at %s, want 1", names[a], dd, kv);
            prev = dd;
            ab_layout_free(&l);
        }
    }
    tp_free(&t);
}

/* Head h of (q, k), rows [0, n): a rotary code peaked at i = j (local
 * attention) when local, else zero queries (uniform, long-range attention). */
static void moa_head(float *q, float *k, int h, int n, int d, int local)
{
    for (int i = 0; i < n; i++)
        for (int c = 0; c < d / 2; c++) {
            const size_t e = ((size_t)h * n + i) * d + 2 * c;
            const double w = 0.23 * pow(1.37, c); /* incommensurate: no period */
            /* q_i . k_j = 25 sum_c cos(w_c (i - j)): peaked at i = j */
            k[e] = (float)(5.0 * cos(w * i));
            k[e + 1] = (float)(5.0 * sin(w * i));
            q[e] = local ? k[e] : 0.0f;
            q[e + 1] = local ? k[e + 1] : 0.0f;
        }
}

/* moa: spans follow the locality of the HELD-OUT draw, not of the scored
 * input. In the held-out draw head 0 attends locally and head 1 uniformly;
 * the scored input is the opposite. The uniform head of the held-out draw
 * must get the longer span (MoA profiles offline on calibration data), and
 * the layout must not change when the scored input does. Without a
 * held-out draw the method is unsupported. */
Test(static_methods, moa_spans_follow_heldout_locality)
{
    tp t;
    const int N = 1024, d = 16;
    tp_make(&t, 2, N, d, 1, 12);
    moa_head(t.hq, t.hk, 0, N, d, 1);
    moa_head(t.hq, t.hk, 1, N, d, 0);
    moa_head(t.q, t.k, 0, N, d, 0);
    moa_head(t.q, t.k, 1, N, d, 1);
    const char *kv[] = { "budget=0.3" };
    ab_layout l, l2;
    sel("moa", &t.pb, 64, kv, 1, &l);
    int span[2] = { 0, 0 };
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < N; j += 64) span[h] += ab_layout_contains(&l, h, N - 1, j);
    cr_expect_lt(span[0], span[1], "held-out local head span %d blocks >= held-out uniform head span %d",
                 span[0], span[1]);
    /* the scored input does not move the layout: swap it for the held-out draw's twin */
    moa_head(t.q, t.k, 0, N, d, 1);
    moa_head(t.q, t.k, 1, N, d, 0);
    sel("moa", &t.pb, 64, kv, 1, &l2);
    cr_expect(same_layout(&l, &l2), "moa's layout changed with the scored input");
    ab_layout_free(&l2);
    /* no held-out draw: unsupported, not a profile of the scored input */
    const ab_method *m = ab_method_find("moa");
    ab_params p;
    ab_params_defaults(m->params, AB_MAX_PARAMS, &p);
    ab_problem bare = t.pb;
    bare.heldout = NULL;
    ab_layout_init(&l2, &bare.s, 64, 64);
    ab_instance in;
    cr_assert_eq(ab_instance_create(&in, m, &p, &bare.s), AB_OK);
    cr_expect_eq(ab_instance_select(&in, &bare, &l2), AB_EUNSUPPORTED);
    ab_instance_destroy(&in);
    ab_layout_free(&l2);
    ab_layout_free(&l);
    tp_free(&t);
}

/* moa: 64 sink tokens are one key block at block 64 and at block 128 (the
 * official kernel keeps sink_size / 64 blocks of 64); the band of the
 * smallest span is the diagonal block. */
Test(static_methods, moa_sinks_and_band)
{
    tp t;
    const int N = 1024;
    tp_make(&t, 2, N, 16, 1, 13);
    const char *kv[] = { "budget=0.0001" };
    for (int B = 64; B <= 128; B *= 2) {
        ab_layout l;
        sel("moa", &t.pb, B, kv, 1, &l);
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < N; i += 37)
                for (int j = 0; j <= i; j++) {
                    const int want = j < B || j / B == i / B;
                    cr_expect_eq(ab_layout_contains(&l, h, i, j), want, "block %d head %d i %d j %d", B, h, i,
                                 j);
                }
        ab_layout_free(&l);
    }
    tp_free(&t);
}

/* strided's and dilated's run() computes the pattern from its parameters
 * (ab_kernel_periodic: windows as row tiles, the rest per residue class),
 * not from the layout: over knobs the registry tests leave at their
 * defaults (global keys, one dilation, strides below and above the
 * window, windows past N), both masks kinds (interval spans and the
 * per-pair documents mask) and causal and not, its output is the fp64
 * reference on the layout select() built. */
Test(static_methods, periodic_run_matches_layout_reference)
{
    static const char *const masks[] = { "causal", "full", "document:3", "sliding:37", "prefix:0.3" };
    static const char *const cfg[][3] = {
        { "strided", "window=40", "stride=25" },        { "strided", "window=3.5", "stride=7" },
        { "strided", "window=900", "stride=1" },        { "strided", "window=1", "stride=0" },
        { "dilated", "window=20", "max_dilation=3" },   { "dilated", "window=9.3", "global=5" },
        { "dilated", "window=1000", "max_dilation=1" }, { "dilated", "window=7", "global=300" },
    };
    const int H = 3, N = 301, d = 16;
    for (size_t mk = 0; mk < sizeof masks / sizeof *masks; mk++)
        for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
            ab_mask m;
            char err[256];
            cr_assert_eq(ab_mask_make(&m, masks[mk], N, 40 + mk, err, sizeof err), AB_OK, "%s", err);
            tp t;
            tp_make(&t, H, N, d, m.def->causal, 40 + c);
            t.pb.s.mask = t.held.s.mask = &m;
            const ab_method *me = ab_method_find(cfg[c][0]);
            cr_assert(me);
            ab_params p;
            ab_params_defaults(me->params, AB_MAX_PARAMS, &p);
            for (int a = 1; a < 3; a++) {
                char key[64];
                const char *eq = strchr(cfg[c][a], '=');
                snprintf(key, sizeof key, "%.*s", (int)(eq - cfg[c][a]), cfg[c][a]);
                cr_assert_eq(ab_params_set(me->params, AB_MAX_PARAMS, &p, key, atof(eq + 1)), 0);
            }
            ab_layout l;
            ab_layout_init(&l, &t.pb.s, 32, 32);
            ab_instance in;
            float *out = malloc((size_t)H * N * d * sizeof *out);
            double *ref = malloc((size_t)N * d * sizeof *ref);
            int *rows = malloc((size_t)N * sizeof *rows);
            cr_assert(out && ref && rows);
            for (int i = 0; i < N; i++) rows[i] = i;
            cr_assert_eq(ab_instance_create(&in, me, &p, &t.pb.s), AB_OK);
            cr_assert_eq(ab_instance_select(&in, &t.pb, &l), AB_OK);
            cr_assert_eq(ab_layout_finalize(&l), AB_OK);
            cr_assert_eq(ab_instance_run(&in, &t.pb, &l, out), AB_OK, "%s", ab_instance_error(&in));
            for (int h = 0; h < H; h++) {
                cr_assert_eq(ab_ref_rows(&t.pb, h, rows, N, &l, ref, NULL, NULL), AB_OK);
                double num = 0, den = 0;
                for (size_t e = 0; e < (size_t)N * d; e++) {
                    const double x = (double)out[(size_t)h * N * d + e] - ref[e];
                    num += x * x;
                    den += ref[e] * ref[e];
                }
                cr_expect_leq(sqrt(num / (den > 0 ? den : 1)), 1e-5,
                              "%s %s %s, mask %s, head %d: rel. error %g", cfg[c][0], cfg[c][1], cfg[c][2],
                              masks[mk], h, sqrt(num / (den > 0 ? den : 1)));
            }
            ab_instance_destroy(&in);
            ab_layout_free(&l);
            free(out);
            free(ref);
            free(rows);
            tp_free(&t);
            ab_mask_free(&m);
        }
}
