/* test_isolation.c — per-point isolation (issue 9): a method that segfaults,
 * one that hangs, one that allocates without bound and one that returns NaN
 * (tests/fixtures/misbehave.c, built into $AB_FIXTURE_BIN by
 * mk/fixtures.mk) are each recorded with their own status and a message,
 * the well-behaved points of the same sweep still finish, and the exit code
 * is 1. Under AddressSanitizer the oom case is skipped (no RLIMIT_AS there:
 * ASan reserves terabytes of address space) and ASan is told to leave
 * SIGSEGV/SIGABRT to the kernel so the parent sees the real signal. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/point.h"
#include "harness/store.h"

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

static const char *cfg_fmt =
    "[sweep]\n"
    "tasks = needle\n"
    "methods = dense, fixture_segv, fixture_hang, %sfixture_nan, window\n"
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
    "point_timeout_s = 3\n"
    "point_mem_gb = 1\n";

static const ab_point *find(const ab_point *p, size_t n, const char *method)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p[i].method, method)) return &p[i];
    return NULL;
}

Test(isolation, each_failure_gets_its_own_status)
{
    const char *fix = getenv("AB_FIXTURE_BIN");
    if (!fix || access(fix, X_OK)) cr_skip_test("AB_FIXTURE_BIN is not set to an executable (run through make test)");
    if (AB_TEST_ASAN) fprintf(stderr, "note: AddressSanitizer build: the oom case is skipped (RLIMIT_AS is not set under ASan)\n");
    char cfg[300], out[300], errf[300], cmd[1400];
    snprintf(cfg, sizeof cfg, "%s/fx.ini", g_dir);
    snprintf(out, sizeof out, "%s/fx.h5", g_dir);
    snprintf(errf, sizeof errf, "%s/stderr.txt", g_dir);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fprintf(f, cfg_fmt, AB_TEST_ASAN ? "" : "fixture_oom, ");
    fclose(f);
    const char *asan = getenv("ASAN_OPTIONS");
    snprintf(cmd, sizeof cmd, "ASAN_OPTIONS='%s%shandle_segv=0:handle_abort=0:detect_leaks=0' '%s' run -c '%s' -o '%s' >/dev/null 2>'%s'",
             asan ? asan : "", asan && *asan ? ":" : "", fix, cfg, out, errf);
    int st = system(cmd);
    cr_assert(WIFEXITED(st), "the sweep itself died");
    cr_expect_eq(WEXITSTATUS(st), 1, "exit %d, want 1 (some points failed)", WEXITSTATUS(st));

    ab_point *p = NULL;
    size_t n = 0;
    ab_env env;
    memset(&env, 0, sizeof env);
    char err[512];
    cr_assert_eq(ab_results_read(out, &p, &n, &env, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
    cr_expect_eq(n, AB_TEST_ASAN ? 5u : 6u, "points recorded: %zu", n);
    struct { const char *method, *status, *needle; } want[] = {
        { "fixture_segv", "crashed", "Segmentation fault" },
        { "fixture_hang", "timeout", "point_timeout_s" },
        { "fixture_oom", "oom", "out of memory" },
        { "fixture_nan", "nan", "NaN" },
        { "dense", "ok", "" },
        { "window", "ok", "" },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (AB_TEST_ASAN && !strcmp(want[i].method, "fixture_oom")) continue;
        const ab_point *q = find(p, n, want[i].method);
        cr_expect_not_null(q, "%s: no point recorded", want[i].method);
        if (!q) continue;
        cr_expect_str_eq(q->status, want[i].status, "%s: status %s (%s), want %s", want[i].method, q->status,
                         q->message, want[i].status);
        if (*want[i].needle)
            cr_expect(strstr(q->message, want[i].needle), "%s: message lacks '%s': %s", want[i].method,
                      want[i].needle, q->message);
        if (strcmp(want[i].status, "ok") && strcmp(want[i].status, "nan"))
            cr_expect(q->total_ms != q->total_ms, "%s: a failed point carries a time", want[i].method);
    }
    free(p);
}
