/* test_blascore.c — OpenBLAS core selection (harness/engine/blascore.h) and the
 * vector exp helper dense_blas uses:
 *   - the decision: a core below what the CPU supports is replaced, an equal
 *     or better or unknown one is kept;
 *   - end to end, on any machine: AB_BLAS_SIMULATE=Prescott makes OpenBLAS
 *     start on its Prescott kernels as on a CPU it does not recognise; the
 *     run switches to the CPU's best core, says so, and records the detected,
 *     best and running cores in the results file;
 *   - OPENBLAS_CORETYPE set by the user is never overridden (a warning only);
 *   - ab_exp_shift_sum equals expf and a fp64 sum on every ISA this CPU has. */
#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/engine/blascore.h"
#include "harness/store/point.h"
#include "harness/store/store.h"
#include "kernels/cpu/simd.h"

Test(blascore, decision_ranks_cores_by_isa)
{
    cr_expect_str_eq(ab_blas_pick_core("Prescott", "SkylakeX"), "SkylakeX");
    cr_expect_str_eq(ab_blas_pick_core("Prescott", "Haswell"), "Haswell");
    cr_expect_str_eq(ab_blas_pick_core("Nehalem", "Zen"), "Zen");
    cr_expect_str_eq(ab_blas_pick_core("Sandybridge", "SkylakeX"), "SkylakeX");
    cr_expect_str_eq(ab_blas_pick_core("Haswell", "SkylakeX"), "SkylakeX");
    cr_expect_null(ab_blas_pick_core("SkylakeX", "SkylakeX"));
    cr_expect_null(ab_blas_pick_core("Cooperlake", "SkylakeX"));
    cr_expect_null(ab_blas_pick_core("Zen", "Haswell"));
    cr_expect_null(ab_blas_pick_core("Haswell", "Zen"));
    cr_expect_null(ab_blas_pick_core("SomeFutureCore", "SkylakeX"), "an unknown core is never replaced");
    cr_expect_null(ab_blas_pick_core("Prescott", ""), "a CPU below AVX has nothing better");
    cr_expect_eq(ab_blas_core_rank("prescott"), 1, "names compare without case, as OpenBLAS does");
}

static char g_dir[256];
static void mk(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/ab_blas_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}
static void rm(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
}

static const char *cfg =
    "[sweep]\ntasks = needle\nmethods = dense_blas\nseq_lens = 256\nheads = 1\nhead_dims = 32\n"
    "block_q = 32\nblock_k = 32\nthreads = 1\n"
    "[timing]\nwarmup = 0\nmin_repeats = 1\nmax_repeats = 1\nmin_time_s = 0\n";

/* Run a one-point sweep under `envs`; returns the exit code, the file's
 * environment in *env and stderr in *err (free()). */
static int sweep(const char *envs, ab_env *env, char **err)
{
    const char *b = getenv("AB_BIN");
    char path[300], cmd[2048], errf[300], out[300];
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    snprintf(out, sizeof out, "%s/r.h5", g_dir);
    snprintf(errf, sizeof errf, "%s/err.txt", g_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(cfg, f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "env -u OPENBLAS_CORETYPE -u AB_BLAS_SIMULATE %s '%s' run -c '%s' -o '%s' 2>'%s' >/dev/null",
             envs, b ? b : "build/attnbench", path, out, errf);
    int st = system(cmd);
    f = fopen(errf, "r");
    *err = calloc(1, 8192);
    if (f) {
        size_t n = fread(*err, 1, 8191, f);
        (*err)[n] = 0;
        fclose(f);
    }
    ab_point *p = NULL;
    size_t n = 0;
    char e[300];
    memset(env, 0, sizeof *env);
    cr_assert_eq(ab_results_read(out, &p, &n, env, e, sizeof e), 0, "%s", e);
    cr_expect_eq(n, 1u);
    if (n) cr_expect_str_eq(p[0].status, "ok", "%s", p[0].message);
    free(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

TestSuite(blas_run, .init = mk, .fini = rm, .timeout = 120);

Test(blas_run, a_fallback_core_is_replaced_checked_and_recorded)
{
    const char *best = ab_blas_best_core();
    if (ab_blas_core_rank(best) <= 1) cr_skip_test("this CPU has nothing better than SSE kernels");
    ab_env env;
    char *err;
    cr_assert_eq(sweep("AB_BLAS_SIMULATE=Prescott", &env, &err), 0, "%s", err);
    cr_expect_str_eq(ab_env_get(&env, "openblas_coretype_detected"), "Prescott");
    cr_expect_str_eq(ab_env_get(&env, "openblas_coretype_source"), "attnbench");
    cr_expect_str_eq(ab_env_get(&env, "openblas_coretype_best"), best);
    cr_expect_str_eq(ab_env_get(&env, "openblas_coretype"), best, "running %s",
                     ab_env_get(&env, "openblas_coretype"));
    cr_expect(strstr(err, "OPENBLAS_CORETYPE=") && strstr(err, "SGEMM checked"), "nothing said on stderr: %s",
              err);
    ab_env_free(&env);
    free(err);
}

Test(blas_run, the_environment_is_never_overridden)
{
    ab_env env;
    char *err;
    cr_assert_eq(sweep("OPENBLAS_CORETYPE=Prescott", &env, &err), 0, "%s", err);
    cr_expect_str_eq(ab_env_get(&env, "openblas_coretype"), "Prescott");
    cr_expect_str_eq(ab_env_get(&env, "openblas_coretype_source"), "environment");
    if (ab_blas_core_rank(ab_blas_best_core()) > 1)
        cr_expect(strstr(err, "warning: OPENBLAS_CORETYPE=Prescott"), "no warning: %s", err);
    ab_env_free(&env);
    free(err);
}

Test(blas_run, a_recognised_cpu_is_left_alone)
{
    ab_env env;
    char *err;
    cr_assert_eq(sweep("", &env, &err), 0, "%s", err);
    const char *src = ab_env_get(&env, "openblas_coretype_source");
    /* on a CPU this OpenBLAS knows, nothing changes; on one it does not,
     * attnbench switched (both are right; never "environment") */
    cr_expect(!strcmp(src, "library") || !strcmp(src, "attnbench"), "source %s", src);
    if (!strcmp(src, "library"))
        cr_expect_str_eq(ab_env_get(&env, "openblas_coretype"),
                         ab_env_get(&env, "openblas_coretype_detected"));
    ab_env_free(&env);
    free(err);
}

Test(vexp, exp_shift_sum_matches_expf_on_every_isa)
{
    static float x[1000], y[1000];
    for (int isa = 0; isa < AB_ISA_COUNT; isa++) {
        if (!ab_cpu_isa_supported(isa)) continue;
        for (int n = 0; n < 1000; n = n * 3 + 1) {
            for (int i = 0; i < n; i++)
                x[i] = y[i] = (i % 7 == 3) ? -INFINITY : (float)((i * 37) % 101) * 0.13f - 6.0f;
            double want = 0;
            for (int i = 0; i < n; i++) want += (double)expf(y[i] - 1.5f);
            double got = isa == AB_ISA_AVX512 ? ab_exp_shift_sum_avx512(x, n, 1.5f)
                         : isa == AB_ISA_AVX2 ? ab_exp_shift_sum_avx2(x, n, 1.5f)
                                              : ab_exp_shift_sum_portable(x, n, 1.5f);
            cr_expect(fabs(got - want) <= 1e-6 * want + 1e-30, "%s n=%d: sum %.9g want %.9g",
                      ab_cpu_isa_name(isa), n, got, want);
            for (int i = 0; i < n; i++) {
                float e = expf(y[i] - 1.5f);
                cr_expect(fabsf(x[i] - e) <= 3e-7f * e, "%s n=%d i=%d: %.9g want %.9g", ab_cpu_isa_name(isa),
                          n, i, x[i], e);
                if (fabsf(x[i] - e) > 3e-7f * e) break;
            }
        }
    }
}

/* ab_exp_shift gives ab_exp_shift_sum's values bit for bit on every ISA
 * (vector and tail elements alike), and the public one the picked ISA's. */
Test(vexp, exp_shift_is_exp_shift_sum_without_the_sum)
{
    static float x[300], y[300];
    for (int isa = 0; isa < AB_ISA_COUNT; isa++) {
        if (!ab_cpu_isa_supported(isa)) continue;
        static const int ns[] = { 0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 256, 300 };
        for (size_t t = 0; t < sizeof ns / sizeof *ns; t++) {
            const int n = ns[t];
            for (int i = 0; i < n; i++)
                x[i] = y[i] = (i % 5 == 2) ? -INFINITY : (float)((i * 53) % 97) * 0.21f - 9.0f;
            if (isa == AB_ISA_AVX512) {
                ab_exp_shift_sum_avx512(x, n, -0.75f);
                ab_exp_shift_avx512(y, n, -0.75f);
            } else if (isa == AB_ISA_AVX2) {
                ab_exp_shift_sum_avx2(x, n, -0.75f);
                ab_exp_shift_avx2(y, n, -0.75f);
            } else {
                ab_exp_shift_sum_portable(x, n, -0.75f);
                ab_exp_shift_portable(y, n, -0.75f);
            }
            cr_expect(n == 0 || !memcmp(x, y, (size_t)n * sizeof *x), "%s n=%d: values differ",
                      ab_cpu_isa_name(isa), n);
        }
    }
    for (int i = 0; i < 37; i++) x[i] = y[i] = (float)i * -0.4f;
    ab_exp_shift_sum(x, 37, 1.0f);
    ab_exp_shift(y, 37, 1.0f);
    cr_expect(!memcmp(x, y, sizeof(float) * 37), "public entry points differ");
}

/* The vector exp of the AVX2 and AVX-512 kernels (ab_exp8, ab_exp16) as
 * the scalar steps it is written from: n = round(x log2 e) in float, r = x
 * - n ln 2 in two FMAs, e^r = 1 + r + r^2 p(r), 2^n exactly; 0 below
 * -87.33 (and for -inf), NaN kept. */
static float exp_model(float x)
{
    if (!(x >= -87.33f) && !isnan(x)) return 0.0f;
    const float n = nearbyintf(x * 1.44269504088896341f);
    float r = fmaf(-n, 0.693359375f, x);
    r = fmaf(-n, -2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r + 1.0f);
    if (isnan(p) || isinf(n)) return NAN; /* x NaN or +inf: r is NaN */
    return ldexpf(p, (int)fmaxf(fminf(n, 300.0f), -300.0f));
}

/* Holds exp (in place on x[0, n), n a multiple of 16) to exp_model bit
 * for bit on the edges, -inf and NaN (and +inf when hi > 0), then on
 * every 61st float pattern of [-100, hi] (hi 100 or 0), in chunks; NaN
 * matches any NaN. Reports at most five misses; returns the inputs
 * checked. */
static int exp_sweep(const char *name, void (*exp)(float *x, int n), const float *edge, size_t nedge,
                     float hi)
{
    enum { CH = 4096 };
    static float x[CH], want[CH];
    int bad = 0, total = 0;
    uint32_t u = 0; /* +0 up to hi, then -0 down to -100 */
    for (int pass = 0; pass < 2 && bad < 5; pass++)
        for (int done = 0; !done && bad < 5;) {
            int n = 0;
            if (pass == 0) {
                for (size_t e = 0; e < nedge; e++) x[n++] = edge[e];
                if (hi > 0) x[n++] = INFINITY;
                x[n++] = -INFINITY;
                x[n++] = NAN;
                done = 1;
            } else {
                for (; n < CH; u += 61) {
                    float f;
                    memcpy(&f, &u, sizeof f);
                    if (!(f >= -100.0f && f <= hi)) {
                        if (u & 0x80000000u) { /* past -100: finished */
                            done = 1;
                            break;
                        }
                        u = 0x80000000u; /* the negative half */
                        continue;
                    }
                    x[n++] = f;
                }
            }
            while (n % 16) x[n++] = hi > 0 ? 1.0f : -1.0f; /* whole vectors: no expf tail */
            for (int i = 0; i < n; i++) want[i] = exp_model(x[i]);
            exp(x, n);
            total += n;
            for (int i = 0; i < n && bad < 5; i++)
                if (memcmp(&x[i], &want[i], sizeof *x) && !(isnan(x[i]) && isnan(want[i]))) {
                    cr_expect(0, "%s: exp gives %a, the model %a", name, (double)x[i], (double)want[i]);
                    bad++;
                }
        }
    return total;
}

static void exp_avx2(float *x, int n) { ab_exp_shift_avx2(x, n, 0.0f); }
static void exp_avx512(float *x, int n) { ab_exp_shift_avx512(x, n, 0.0f); }

/* Both vector exps are that model bit for bit, on a sweep of the floats
 * in [-100, 100] and on the edges (the flush, the overflow, n = 128,
 * infinities, NaN, huge and tiny inputs): AVX2 and AVX-512 give the same
 * probabilities (2026-12-07; AVX2 had taken SLEEF's exp). */
Test(vexp, vector_exp_is_the_model_on_every_isa)
{
    static const float edge[] = { 0.0f,     -0.0f,  -87.33f, -87.329994f, -87.33001f, -87.5f,  -88.0f,
                                  -103.0f,  -1e30f, 1e30f,   88.0f,       88.38f,     88.5f,   88.72f,
                                  88.7228f, 88.73f, 89.0f,   100.0f,      1e-30f,     -1e-30f, 1e-40f,
                                  -1e-40f,  0.5f,   -0.5f,   1.0f,        -1.0f };
    if (ab_cpu_isa_supported(AB_ISA_AVX2))
        exp_sweep("avx2", exp_avx2, edge, sizeof edge / sizeof *edge, 100.0f);
    if (ab_cpu_isa_supported(AB_ISA_AVX512))
        exp_sweep("avx512", exp_avx512, edge, sizeof edge / sizeof *edge, 100.0f);
}

/* ab_exp_max_sum is ab_exp_shift_sum, values and sum bit for bit, when the
 * shift is at least every element (the selectors' and decode's row max):
 * rows of every length around the vector widths, with -inf, the max
 * itself and elements down to 100 below it, on every ISA and through the
 * public entry points. On AVX2 the two take different exps (one
 * power-of-two factor against two). */
Test(vexp, max_sum_is_shift_sum_below_the_max)
{
    static float x[600], y[600];
    static const int ns[] = { 0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200, 513, 600 };
    for (int isa = 0; isa <= AB_ISA_COUNT; isa++) { /* AB_ISA_COUNT: the public pair */
        /* the portable path has one exp (libm's): nothing to compare */
        if (isa == AB_ISA_PORTABLE || (isa < AB_ISA_COUNT && !ab_cpu_isa_supported(isa))) continue;
        for (size_t t = 0; t < sizeof ns / sizeof *ns; t++) {
            const int n = ns[t];
            float mx = -INFINITY;
            for (int i = 0; i < n; i++) {
                x[i] = (i % 11 == 4) ? -INFINITY : (float)((i * 71) % 601) * -0.1667f + 3.25f;
                mx = x[i] > mx ? x[i] : mx;
            }
            memcpy(y, x, (size_t)n * sizeof *x);
            double a, b;
            if (isa == AB_ISA_COUNT) {
                a = ab_exp_shift_sum(x, n, mx);
                b = ab_exp_max_sum(y, n, mx);
            } else if (isa == AB_ISA_AVX512) {
                a = ab_exp_shift_sum_avx512(x, n, mx);
                b = ab_exp_max_sum_avx512(y, n, mx);
            } else {
                a = ab_exp_shift_sum_avx2(x, n, mx);
                b = ab_exp_max_sum_avx2(y, n, mx);
            }
            cr_expect(a == b && (n == 0 || !memcmp(x, y, (size_t)n * sizeof *x)),
                      "isa %d n=%d: %.17g vs %.17g", isa, n, a, b);
            cr_expect(n < 8 || a >= 1.0, "isa %d n=%d: the max's own term is 1, sum %g", isa, n, a);
        }
    }
}

/* The AVX2 softmax pass's exp (ab_exp8_nonpos: one power-of-two factor
 * instead of two) is the same model bit for bit on every 61st float
 * pattern of [-100, 0], the edges at and below zero, -inf and NaN. A
 * factor built from n + 126 instead of n + 127 fails it on every input. */
Test(vexp, softmax_exp_is_the_model_at_or_below_zero)
{
    static const float edge[] = {
        0.0f,   -0.0f,   -87.33f, -87.329994f, -87.33001f, -87.5f, -88.0f,  -103.0f,
        -1e30f, -1e-30f, -1e-40f, -0.5f,       -1.0f,      -86.0f, -87.32f, -62.0f
    };
    if (!ab_cpu_isa_supported(AB_ISA_AVX2)) return;
    const int total = exp_sweep("avx2 softmax", ab_exp_nonpos_avx2, edge, sizeof edge / sizeof *edge, 0.0f);
    cr_expect(total > 10000000, "only %d inputs", total);
}

/* The AVX-512 exp flushes results below FLT_MIN to zero (no subnormal p:
 * they cost microcode assists downstream), keeps the normal range and NaN. */
Test(vexp, avx512_exp_flushes_subnormal_results)
{
    if (!ab_cpu_isa_supported(AB_ISA_AVX512)) return;
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = i < 16 ? -88.0f - (float)i : -87.0f + 0.1f * (float)(i - 16);
    x[31] = NAN;
    double s = ab_exp_shift_sum_avx512(x, 31, 0.0f); /* the NaN lane is left out of the sum */
    for (int i = 0; i < 16; i++) cr_expect_eq(x[i], 0.0f, "x[%d] = %g: want 0 (subnormal flushed)", i, x[i]);
    for (int i = 16; i < 31; i++)
        cr_expect(x[i] >= FLT_MIN && fabsf(x[i] - expf(-87.0f + 0.1f * (float)(i - 16))) <= 3e-7f * x[i],
                  "x[%d] = %g", i, x[i]);
    cr_expect(s > 0);
    float y[16];
    for (int i = 0; i < 16; i++) y[i] = i == 5 ? NAN : -1.0f;
    ab_exp_shift_sum_avx512(y, 16, 0.0f);
    cr_expect(isnan(y[5]), "NaN stays NaN");
}
