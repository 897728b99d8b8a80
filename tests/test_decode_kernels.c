/* test_decode_kernels.c — edge cases of the decode kernel's vector paths
 * (kernels/cpu/decode.c: seg_tile_avx512, seg_tile_avx2 and their shared
 * tile driver), beyond tests/test_decode.c:
 *  - head dims that are not a multiple of 8 or 16 (masked last vector),
 *    from 1 to 256, and more than 64 / 128 columns (several accumulator
 *    blocks);
 *  - cache lengths of 1, under one tile, one tile exactly, one key past a
 *    tile, and a partly filled last tile, with a short last page;
 *  - every layout kind (DENSE, BLOCK, TOKEN, MIXED) and strategy, GQA groups
 *    of 1, 3, 4, 8, 12 and 16 (odd groups: AVX2 pairs rows, the last alone;
 *    more than 16: two units per KV head);
 *  - each vector path against the fp64 reference, against the portable path
 *    (AB_CPU_ISA=portable; same maths, other summation and FMA order: to
 *    1e-5, d = 1 leaves a single output column, sensitive to rounding), and
 *    run twice at 2 threads with the same bits (no dependence on thread
 *    timing).
 * The vector paths tested are every one the CPU has, selected through
 * AB_CPU_ISA: the AVX2 path, and on an AVX-512 CPU also the AVX-512 one
 * (ab_cpu_isa_pick's own choice there). On a CPU with neither, the kernel
 * runs the portable path both times and the comparisons hold trivially. */
#include <criterion/criterion.h>

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"
#include "runtime/layout.h"

#define REL_TOL 2e-5

static double gauss(uint64_t *s)
{
    const double u = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53,
                 w = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * w);
}

typedef struct kprob {
    ab_decode dp;
    float *q, *k, *v;
} kprob;

/* One layer, H query heads, kv KV heads, head dim d, len keys (cap len + 5). */
static void kprob_make(kprob *p, int H, int kv, int d, int len, uint64_t seed)
{
    const int cap = len + 5;
    const size_t nq = (size_t)H * d, nk = (size_t)kv * cap * d;
    p->q = malloc(nq * sizeof(float));
    p->k = malloc(nk * sizeof(float));
    p->v = malloc(nk * sizeof(float));
    cr_assert(p->q && p->k && p->v);
    uint64_t s = seed;
    for (size_t i = 0; i < nk; i++) {
        p->k[i] = (float)gauss(&s);
        p->v[i] = (float)gauss(&s);
    }
    for (size_t i = 0; i < nq; i++) p->q[i] = (float)gauss(&s) + 0.3f;
    memset(&p->dp, 0, sizeof p->dp);
    p->dp.layers = 1;
    p->dp.heads = H;
    p->dp.kv_heads = kv;
    p->dp.head_dim = d;
    p->dp.scale = 1.0f / sqrtf((float)d);
    p->dp.len = len;
    p->dp.cap = cap;
    p->dp.q = p->q;
    p->dp.k = p->k;
    p->dp.v = p->v;
    p->dp.threads = 2;
}

static void kprob_free(kprob *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
}

/* A seeded layout of `kind`; pages of bk keys, the last (short) page and the
 * current key always kept. */
static void klayout(ab_layout *l, const ab_decode *dp, int kind, int bk, uint64_t seed)
{
    ab_layout_init_decode(l, dp, bk);
    if (kind == AB_LAYOUT_DENSE) {
        cr_assert_eq(ab_layout_dense(l), AB_OK);
    } else {
        uint64_t s = seed;
        for (int r = 0; r < dp->heads; r++) {
            for (int b = 0; b < l->n_kblocks; b++)
                if (kind != AB_LAYOUT_TOKEN && ab_splitmix64(&s) % 2 == 0)
                    cr_assert_eq(ab_layout_add_block(l, r, 0, b), AB_OK);
            for (int j = 0; j < dp->len; j++)
                if (kind != AB_LAYOUT_BLOCK && ab_splitmix64(&s) % 3 == 0)
                    cr_assert_eq(ab_layout_add_token(l, r, 0, j), AB_OK);
            if (kind == AB_LAYOUT_TOKEN)
                cr_assert_eq(ab_layout_add_token(l, r, 0, dp->len - 1), AB_OK);
            else
                cr_assert_eq(ab_layout_add_block(l, r, 0, l->n_kblocks - 1), AB_OK);
        }
    }
    cr_assert_eq(ab_layout_finalize(l), AB_OK);
    char err[200];
    cr_assert_eq(ab_layout_validate(l, err, sizeof err), AB_OK, "%s", err);
}

static double rel_l2(const float *a, const double *ref, int d)
{
    double e = 0, n = 0;
    for (int c = 0; c < d; c++) {
        e += (a[c] - ref[c]) * (a[c] - ref[c]);
        n += ref[c] * ref[c];
    }
    return sqrt(e) / (sqrt(n) > 1e-12 ? sqrt(n) : 1e-12);
}

static double rel_f(const float *a, const float *b, int rows, int d)
{
    double w = 0;
    for (int r = 0; r < rows; r++) {
        double e = 0, n = 0;
        for (int c = 0; c < d; c++) {
            const double x = a[(size_t)r * d + c] - (double)b[(size_t)r * d + c];
            e += x * x;
            n += (double)b[(size_t)r * d + c] * b[(size_t)r * d + c];
        }
        const double q = sqrt(e) / (sqrt(n) > 1e-12 ? sqrt(n) : 1e-12);
        w = q > w ? q : w;
    }
    return w;
}

/* Every kind and strategy on one problem, on one path (AB_CPU_ISA = isa):
 * vs fp64, vs the portable path, and the same bits twice. */
static void check_problem_isa(kprob *p, const char *what, int isa)
{
    const ab_decode *dp = &p->dp;
    const int d = dp->head_dim, rows = dp->heads;
    const char *in = ab_cpu_isa_name(isa);
    const int kinds[] = { AB_LAYOUT_DENSE, AB_LAYOUT_BLOCK, AB_LAYOUT_TOKEN, AB_LAYOUT_MIXED };
    float *o = malloc(sizeof(float) * rows * d), *o2 = malloc(sizeof(float) * rows * d),
          *op = malloc(sizeof(float) * rows * d);
    double *ref = malloc(sizeof(double) * d);
    cr_assert(o && o2 && op && ref);
    for (int ki = 0; ki < 4; ki++) {
        ab_layout l;
        klayout(&l, dp, kinds[ki], ki == 3 ? 7 : 16, 100 + ki + d);
        for (int st = AB_DECODE_AUTO; st <= AB_DECODE_LEAN; st++) {
            const int splits = st == AB_DECODE_SPLITK ? 3 : 0;
            setenv("AB_CPU_ISA", in, 1);
            cr_assert_eq(ab_kernel_decode(dp, &l, o, st, splits), AB_OK);
            double worst = 0;
            for (int r = 0; r < rows; r++) {
                ab_ref_decode_row(dp, r, &l, ref, NULL, NULL);
                const double e = rel_l2(o + (size_t)r * d, ref, d);
                worst = e > worst ? e : worst;
            }
            cr_expect(worst <= REL_TOL, "%s %s kind %s strategy %d: rel err %.3g vs fp64", in, what,
                      ab_layout_kind_name(l.kind), st, worst);
            cr_assert_eq(ab_kernel_decode(dp, &l, o2, st, splits), AB_OK);
            cr_expect(!memcmp(o, o2, sizeof(float) * rows * d), "%s %s kind %s strategy %d: two runs differ",
                      in, what, ab_layout_kind_name(l.kind), st);
            setenv("AB_CPU_ISA", "portable", 1);
            cr_assert_eq(ab_kernel_decode(dp, &l, op, st, splits), AB_OK);
            unsetenv("AB_CPU_ISA");
            const double ep = rel_f(o, op, rows, d);
            cr_expect(ep <= 1e-5, "%s %s kind %s strategy %d: %.3g from the portable path", in, what,
                      ab_layout_kind_name(l.kind), st, ep);
        }
        ab_layout_free(&l);
    }
    free(o);
    free(o2);
    free(op);
    free(ref);
}

/* check_problem_isa on every vector path this CPU has (AVX2, AVX-512);
 * on a CPU with neither, on the portable path. */
static void check_problem(kprob *p, const char *what)
{
    int ran = 0;
    for (int isa = AB_ISA_AVX2; isa < AB_ISA_COUNT; isa++)
        if (ab_cpu_isa_supported(isa)) {
            check_problem_isa(p, what, isa);
            ran++;
        }
    if (!ran) check_problem_isa(p, what, AB_ISA_PORTABLE);
}

Test(decode_kernels, head_dims_off_the_vector_width)
{
    const int ds[] = { 1, 5, 16, 17, 24, 31, 48, 64, 100, 127, 128, 129, 136, 144, 192, 200, 255, 256 };
    omp_set_num_threads(2);
    for (size_t i = 0; i < sizeof ds / sizeof *ds; i++) {
        kprob p;
        kprob_make(&p, 4, 2, ds[i], 150, 7 + i);
        char what[64];
        snprintf(what, sizeof what, "d %d", ds[i]);
        check_problem(&p, what);
        kprob_free(&p);
    }
}

Test(decode_kernels, lengths_around_the_tile)
{
    const int lens[] = { 1, 2, 7, 8, 9, 63, 64, 65, 127, 128, 129, 200, 1031 };
    omp_set_num_threads(2);
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        kprob p;
        kprob_make(&p, 2, 1, 128, lens[i], 31 + i);
        char what[64];
        snprintf(what, sizeof what, "len %d", lens[i]);
        check_problem(&p, what);
        kprob_free(&p);
    }
}

Test(decode_kernels, gqa_groups)
{
    /* (H, kv): groups of 1, 3, 4, 8, 16 and 32 (two units of 16 per KV head) */
    const int hk[][2] = { { 3, 3 }, { 3, 1 }, { 8, 2 }, { 8, 1 }, { 16, 1 }, { 32, 1 }, { 24, 2 } };
    omp_set_num_threads(2);
    for (size_t i = 0; i < sizeof hk / sizeof *hk; i++) {
        kprob p;
        kprob_make(&p, hk[i][0], hk[i][1], 72, 333, 51 + i);
        char what[64];
        snprintf(what, sizeof what, "H %d kv %d", hk[i][0], hk[i][1]);
        check_problem(&p, what);
        kprob_free(&p);
    }
}

/* Results do not depend on the number of threads beyond the fp32 order of
 * the merges, and not at all on timing: LEAN at 1..4 threads. */
Test(decode_kernels, lean_across_thread_counts)
{
    kprob p;
    kprob_make(&p, 1, 1, 128, 5000, 77);
    float ref[128], o[128], o2[128];
    omp_set_num_threads(1);
    cr_assert_eq(ab_kernel_decode(&p.dp, NULL, ref, AB_DECODE_HEADS, 0), AB_OK);
    for (int t = 1; t <= 4; t++) {
        omp_set_num_threads(t);
        cr_assert_eq(ab_kernel_decode(&p.dp, NULL, o, AB_DECODE_LEAN, 0), AB_OK);
        cr_assert_eq(ab_kernel_decode(&p.dp, NULL, o2, AB_DECODE_LEAN, 0), AB_OK);
        cr_expect(!memcmp(o, o2, sizeof o), "threads %d: two runs differ", t);
        const double e = rel_f(o, ref, 1, 128);
        cr_expect(e <= 2e-6, "threads %d: %.3g from the unsplit pass", t, e);
    }
    omp_set_num_threads(2);
    kprob_free(&p);
}
