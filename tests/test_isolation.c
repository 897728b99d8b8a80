/* test_isolation.c — per-point isolation (issue 9): a method that segfaults,
 * one that hangs, one that allocates without bound and one that returns NaN
 * (tests/fixtures/misbehave.c, built into $AB_FIXTURE_BIN by
 * mk/fixtures.mk) are each recorded with their own status and a message,
 * the well-behaved points of the same sweep still finish, and the exit code
 * is 1. Under AddressSanitizer the oom case is skipped (no RLIMIT_AS there:
 * ASan reserves terabytes of address space) and ASan is told to leave
 * SIGSEGV/SIGABRT to the kernel so the parent sees the real signal. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/store/point.h"
#include "harness/store/store.h"

#if defined(__SANITIZE_ADDRESS__)
#define AB_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AB_TEST_ASAN 1
#endif
#endif
#ifndef AB_TEST_ASAN
#define AB_TEST_ASAN 0
#endif

static char g_dir[256];

/* The fixture binary, or the test skipped. */
#define NEED_FIXTURES()                                                                         \
    do {                                                                                        \
        if (!getenv("AB_FIXTURE_BIN") || access(getenv("AB_FIXTURE_BIN"), X_OK))                \
            cr_skip_test("AB_FIXTURE_BIN is not set to an executable (run through make test)"); \
    } while (0)

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/ab_iso_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
}

TestSuite(isolation, .init = setup, .fini = teardown);

/* Two sweeps: the hang needs a short time limit, and the runaway
 * allocation must never race one (filling even a small budget can take
 * seconds on a fresh VM under the parallel test runner), so the oom case
 * runs alone with a generous limit and a small memory budget. */
static const char *cfg_fmt = "[sweep]\n"
                             "tasks = needle\n"
                             "methods = %s\n"
                             "seq_lens = 256\n"
                             "heads = 1\n"
                             "head_dims = 16\n"
                             "densities = 0.5\n"
                             "block_q = 32\n"
                             "block_k = 32\n"
                             "threads = 1\n"
                             "[timing]\n"
                             "warmup = 0\n"
                             "min_repeats = 2\n"
                             "max_repeats = 2\n"
                             "min_time_s = 0\n"
                             "point_timeout_s = %s\n"
                             "point_mem_gb = %s\n";

static const ab_point *find(const ab_point *p, size_t n, const char *method)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p[i].method, method)) return &p[i];
    return NULL;
}

/* Run one sweep of `methods` into DIR/NAME.h5; returns the exit code. */
static int sweep(const char *name, const char *methods, const char *timeout_s, const char *mem_gb, char *out,
                 size_t outlen)
{
    const char *fix = getenv("AB_FIXTURE_BIN");
    char cfg[300], errf[300], cmd[1400];
    snprintf(cfg, sizeof cfg, "%s/%s.ini", g_dir, name);
    snprintf(out, outlen, "%s/%s.h5", g_dir, name);
    snprintf(errf, sizeof errf, "%s/%s.stderr", g_dir, name);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, cfg_fmt, methods, timeout_s, mem_gb);
    fclose(f);
    const char *asan = getenv("ASAN_OPTIONS");
    snprintf(cmd, sizeof cmd,
             "ASAN_OPTIONS='%s%shandle_segv=0:handle_abort=0:detect_leaks=0' '%s' run -c '%s' -o '%s' "
             ">/dev/null 2>'%s'",
             asan ? asan : "", asan && *asan ? ":" : "", fix, cfg, out, errf);
    int st = system(cmd);
    cr_assert(WIFEXITED(st), "the sweep %s itself died", name);
    return WEXITSTATUS(st);
}

/* The points of the results file out (free them); *n their count. */
static ab_point *read_points(const char *out, size_t *n)
{
    ab_point *p = NULL;
    ab_env env;
    memset(&env, 0, sizeof env);
    char err[512];
    cr_assert_eq(ab_results_read(out, &p, n, &env, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
    return p;
}

static void expect_status(const char *out, const char *method, const char *status, const char *needle)
{
    size_t n = 0;
    ab_point *p = read_points(out, &n);
    const ab_point *q = find(p, n, method);
    cr_expect_not_null(q, "%s: no point recorded", method);
    if (q) {
        cr_expect_str_eq(q->status, status, "%s: status %s (%s), want %s", method, q->status, q->message,
                         status);
        if (*needle)
            cr_expect(strstr(q->message, needle), "%s: message lacks '%s': %s", method, needle, q->message);
        if (strcmp(status, "ok") && strcmp(status, "nan"))
            cr_expect(q->total_ms != q->total_ms, "%s: a failed point carries a time", method);
    }
    free(p);
}

Test(isolation, each_failure_gets_its_own_status)
{
    NEED_FIXTURES();
    char out[300];
    int rc = sweep("fx", "dense, fixture_segv, fixture_hang, fixture_nan, window", "3", "1", out, sizeof out);
    cr_expect_eq(rc, 1, "exit %d, want 1 (some points failed)", rc);
    expect_status(out, "fixture_segv", "crashed", "Segmentation fault");
    expect_status(out, "fixture_hang", "timeout", "point_timeout_s");
    expect_status(out, "fixture_nan", "nan", "NaN");
    expect_status(out, "dense", "ok", "");
    expect_status(out, "window", "ok", "");
}

/* The runaway allocation ends as oom on its memory budget, long before the
 * time limit: the two must never race. */
Test(isolation, runaway_allocation_is_oom_not_timeout)
{
    NEED_FIXTURES();
    if (AB_TEST_ASAN) {
        fprintf(stderr,
                "note: AddressSanitizer build: the oom case is skipped (RLIMIT_AS is not set under ASan)\n");
        return;
    }
    char out[300];
    int rc = sweep("oom", "dense, fixture_oom", "300", "0.25", out, sizeof out);
    cr_expect_eq(rc, 1, "exit %d, want 1 (the oom point failed)", rc);
    expect_status(out, "fixture_oom", "oom", "out of memory");
    expect_status(out, "dense", "ok", "");
}

/* A selector that runs out of memory at the dense end of its knob (routing
 * at N = 64K lists every query's keys in its untimed calls) still
 * calibrates: the out-of-memory counts as too dense and the target is
 * found below it. One that runs out of memory at every knob value, its
 * sparse end included, is recorded as oom in calibration, never as a
 * density. */
Test(isolation, out_of_memory_at_the_dense_end_calibrates_below_it)
{
    NEED_FIXTURES();
    char out[300];
    int rc = sweep("knob", "fixture_knob_oom, fixture_oom_always", "60", "1", out, sizeof out);
    cr_expect_eq(rc, 1, "exit %d, want 1 (fixture_oom_always failed)", rc);
    expect_status(out, "fixture_knob_oom", "ok", "");
    expect_status(out, "fixture_oom_always", "oom", "calibration: fixture_oom_always: out of memory");
    size_t n = 0;
    ab_point *p = read_points(out, &n);
    const ab_point *q = find(p, n, "fixture_knob_oom");
    cr_assert_not_null(q);
    cr_expect(q->knob_value <= 0.6, "calibrated at keep = %g, where select() fails", q->knob_value);
    cr_expect(fabs(q->achieved_density - 0.5) <= 0.05, "achieved density %g, target 0.5",
              q->achieved_density);
    free(p);
}
