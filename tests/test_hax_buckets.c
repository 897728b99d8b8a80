/* test_hax_buckets.c — hax's sign-bit buckets from the float product
 * (methods/hax.c sf_rows) equal the double projection's (sb_rows), bit for
 * bit, on the rows where the two could disagree: rows that equal the column
 * mean, whose centred projection is exactly zero, so that the double
 * comparison x . H' > mu . H' is decided by rounding alone. The float path
 * must send every such row back to the double projection (its margin test);
 * without that test about half of their bits would come out differently.
 * Also random rows with a mean offset, at the head sizes with a compiled-in
 * d (64, 128) and a run-time one. hax.c is included with its registration
 * turned off, to reach its static functions. */
#include <criterion/criterion.h>

#include "attnbench.h"
#undef AB_REGISTER
#define AB_REGISTER(sym)
#define ab_hax ab_hax_buckets_test
#include "methods/hax.c"

/* Buckets of x (n, d) on `bits` hyperplanes of seed `seed`, by the float
 * path (fast 1; *slow: rows sent back to double, -1 if the path was not
 * taken) or the double one. */
static void buckets(const float *x, int n, int d, int bits, uint64_t seed, int fast, int32_t *out, int *slow)
{
    double *H = malloc((size_t)d * bits * sizeof *H), mu[256], nrm[256];
    cr_assert(H && d <= 256);
    uint64_t s = seed;
    for (int t = 0; t < d * bits; t++) H[t] = gauss(&s);
    cr_assert_eq(sign_buckets(x, n, d, H, bits, mu, nrm, out, fast, slow), AB_OK);
    free(H);
}

static void expect_same(const float *x, int n, int d, int bits, uint64_t seed, int want_slow)
{
    int32_t *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    int slow = 0, slow0 = 0;
    cr_assert(a && b);
    buckets(x, n, d, bits, seed, 1, a, &slow);
    buckets(x, n, d, bits, seed, 0, b, &slow0);
    cr_expect_eq(slow0, -1, "fast = 0 took the float path");
    int diff = 0;
    for (int i = 0; i < n; i++) diff += a[i] != b[i];
    cr_expect_eq(diff, 0, "d=%d bits=%d: %d of %d buckets differ between the float and double paths", d, bits,
                 diff, n);
#if VW >= 8
    cr_expect(slow >= 0, "d=%d bits=%d: the float path was not taken", d, bits);
    if (want_slow) cr_expect(slow >= want_slow, "d=%d bits=%d: only %d rows fell back", d, bits, slow);
#else
    (void)want_slow;
#endif
    free(a);
    free(b);
}

/* Rows m + delta_i, m - delta_i and m in turn, one row m for all (dyadic
 * values: every sum is exact, so the column mean is m exactly and a third
 * of the rows equal it). */
Test(hax_buckets, mean_rows_fall_back_to_double)
{
    static const int ds[] = { 64, 128, 40 };
    for (int k = 0; k < 3; k++) {
        const int d = ds[k], n = 3 * 200;
        float *x = malloc((size_t)n * d * sizeof *x), m[128];
        cr_assert(x);
        uint64_t s = 77 + (uint64_t)k;
        for (int c = 0; c < d; c++) {
            s = mc_mix64(s);
            m[c] = (float)((int)(s % 64) - 32) / 8.0f;
        }
        for (int i = 0; i < 200; i++)
            for (int c = 0; c < d; c++) {
                s = mc_mix64(s);
                const float dl = (float)((int)(s % 16) + 1) / 16.0f;
                x[(size_t)(3 * i) * d + c] = m[c] + dl;
                x[(size_t)(3 * i + 1) * d + c] = m[c] - dl;
                x[(size_t)(3 * i + 2) * d + c] = m[c];
            }
        expect_same(x, n, d, 8, 5 + (uint64_t)k, 200);
        expect_same(x, n, d, 5, 9 + (uint64_t)k, 200);
        free(x);
    }
}

Test(hax_buckets, random_rows_agree)
{
    static const int ds[] = { 64, 128, 40 };
    for (int k = 0; k < 3; k++) {
        const int d = ds[k], n = 1013;
        float *x = malloc((size_t)n * d * sizeof *x);
        cr_assert(x);
        uint64_t s = 3 + (uint64_t)k;
        for (int i = 0; i < n * d; i++) x[i] = (float)(gauss(&s) + 4.0 * (i % d) / d);
        expect_same(x, n, d, 8, 11 + (uint64_t)k, 0);
        expect_same(x, n, d, 1, 12 + (uint64_t)k, 0);
        free(x);
    }
}
