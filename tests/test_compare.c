/* test_compare.c — `attnbench compare A.h5 B.h5` on results files built
 * with the store API, so every ratio is known:
 *   - a file against itself: every ratio 1, nothing changed, exit 0;
 *   - B 20% slower on one point with tight intervals: that point is listed
 *     as changed, the medians are what the points say, --fail-above below
 *     the median exits 1 and above it exits 0;
 *   - the paired speedup (1/rel_dense) is used when present, the dense
 *     point of the workload otherwise (old files);
 *   - untimed points are not compared; bad arguments exit 2. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness/store/point.h"
#include "harness/store/store.h"

static char g_dir[256];
static void mk(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/ab_cmp_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}
static void rm(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
}
TestSuite(compare, .init = mk, .fini = rm, .timeout = 60);

static void point(ab_point *p, const char *key, const char *method, int n, double ms, double rel)
{
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    snprintf(p->method, sizeof p->method, "%s", method);
    snprintf(p->device, sizeof p->device, "cpu");
    snprintf(p->dtype, sizeof p->dtype, "fp32");
    snprintf(p->task, sizeof p->task, "needle");
    snprintf(p->mask, sizeof p->mask, "causal");
    snprintf(p->status, sizeof p->status, "ok");
    p->seq_len = n;
    p->heads = 2;
    p->head_dim = 64;
    p->causal = 1;
    p->target_density = 0.1;
    p->total_ms = ms;
    p->total_lo_ms = ms * 0.99;
    p->total_hi_ms = ms * 1.01;
    p->rel_dense = rel;
    p->rel_lo = rel * 0.99;
    p->rel_hi = rel * 1.01;
    p->rounds = 3;
}

static void write_file(const char *name, const ab_point *p, size_t n)
{
    char path[400], err[300];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_env_set(&env, "git_sha", "test");
    cr_assert_eq(ab_results_write(path, p, n, &env, NULL, 0, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
}

/* Run compare; returns the exit code and stdout in *out (free()). */
static int cmp(const char *args, char **out)
{
    const char *b = getenv("AB_BIN");
    char cmd[1200], of[400];
    snprintf(of, sizeof of, "%s/out.txt", g_dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' compare %s > '%s' 2>&1", g_dir, b ? b : "build/attnbench",
             args, of);
    int st = system(cmd);
    FILE *f = fopen(of, "r");
    *out = calloc(1, 65536);
    if (f) {
        size_t n = fread(*out, 1, 65535, f);
        (*out)[n] = 0;
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void make_pair(void)
{
    ab_point a[5], b[5];
    point(&a[0], "00000000000000d1", "dense", 1024, 10.0, 1.0);
    point(&a[1], "00000000000000a1", "window", 1024, 2.0, 0.2);
    point(&a[2], "00000000000000a2", "xattention", 1024, 4.0, 0.4);
    point(&a[3], "00000000000000a3", "hip", 1024, 8.0, 0.8);
    point(&a[4], "00000000000000a4", "quest_prefill", 1024, 3.0, NAN);
    snprintf(a[4].timing, sizeof a[4].timing, "untimed");
    memcpy(b, a, sizeof a);
    /* xattention: 20% slower in B, and its speedup 20% lower */
    b[2].total_ms *= 1.2;
    b[2].total_lo_ms *= 1.2;
    b[2].total_hi_ms *= 1.2;
    b[2].rel_dense *= 1.2;
    b[2].rel_lo *= 1.2;
    b[2].rel_hi *= 1.2;
    /* hip: 1% slower, inside the noise threshold */
    b[3].total_ms *= 1.01;
    write_file("a.h5", a, 5);
    write_file("b.h5", b, 5);
}

Test(compare, a_file_against_itself_agrees)
{
    make_pair();
    char *out;
    int rc = cmp("a.h5 a.h5 --fail-above 0", &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "matched 4 timed points"), "%s", out);
    cr_expect(strstr(out, "no point changed beyond its intervals"), "%s", out);
    free(out);
}

Test(compare, a_shifted_point_is_listed_and_gates)
{
    make_pair();
    char *out;
    int rc = cmp("a.h5 b.h5", &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "xattention"), "the changed point is not listed:\n%s", out);
    cr_expect(!strstr(out, "  hip "), "a 1%% change is inside --noise:\n%s", out);
    /* speedups of window, xattention, hip (dense left out): |log| 0, log 1.2, 0 -> median 0 */
    cr_expect(strstr(out, "speedup over dense            3"), "%s", out);
    free(out);
    rc = cmp("a.h5 b.h5 --fail-above 0.05 --metric latency", &out);
    cr_expect_eq(rc, 0, "latency |log| are 0, 0, 0.00995, 0.182: median 0.004975 < 0.05:\n%s", out);
    free(out);
    rc = cmp("a.h5 b.h5 --fail-above 0.004 --metric latency", &out);
    cr_expect_eq(rc, 1, "latency median 0.004975 > 0.004 must fail:\n%s", out);
    cr_expect(strstr(out, "FAIL"), "%s", out);
    free(out);
    char tsv[400];
    snprintf(tsv, sizeof tsv, "a.h5 b.h5 -q --tsv '%s/r.tsv'", g_dir);
    rc = cmp(tsv, &out);
    cr_expect_eq(rc, 0);
    free(out);
    snprintf(tsv, sizeof tsv, "%s/r.tsv", g_dir);
    FILE *f = fopen(tsv, "r");
    cr_assert_not_null(f);
    char line[2048];
    int rows = 0, found = 0;
    while (fgets(line, sizeof line, f)) {
        rows++;
        if (strstr(line, "xattention")) {
            found = 1;
            cr_expect(strstr(line, "\t1.2\t"), "latency ratio 1.2 missing: %s", line);
        }
    }
    fclose(f);
    cr_expect_eq(rows, 5, "header + 4 matched points");
    cr_expect(found);
}

Test(compare, files_without_the_paired_ratio_use_the_dense_point)
{
    ab_point a[2], b[2];
    point(&a[0], "00000000000000d1", "dense", 1024, 10.0, NAN);
    point(&a[1], "00000000000000a1", "window", 1024, 2.0, NAN);
    memcpy(b, a, sizeof a);
    b[1].total_ms = 2.5; /* speedup 5 -> 4: ratio 0.8 */
    b[1].total_lo_ms = 2.48;
    b[1].total_hi_ms = 2.52;
    write_file("oa.h5", a, 2);
    write_file("ob.h5", b, 2);
    char *out;
    int rc = cmp("oa.h5 ob.h5 --all", &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "speedup       5 ->       4"), "fallback speedup missing:\n%s", out);
    free(out);
}

Test(compare, bad_arguments_exit_2)
{
    make_pair();
    const char *bad[] = { "a.h5",
                          "a.h5 b.h5 c.h5",
                          "a.h5 nosuch.h5",
                          "a.h5 b.h5 --fail-above x",
                          "a.h5 b.h5 --metric speed",
                          "a.h5 b.h5 --bogus",
                          "a.h5 b.h5 --noise -1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out;
        int rc = cmp(bad[i], &out);
        cr_expect_eq(rc, 2, "'%s': exit %d\n%s", bad[i], rc, out);
        cr_expect(strstr(out, "attnbench: compare:"), "'%s': no message\n%s", bad[i], out);
        free(out);
    }
}

/* A host that ran B 10% faster: every latency 1/1.1 of A's and every FMA
 * probe 1.1x. Raw latency moves by log 1.1, at equal clock by ~0; the
 * speedups (paired) do not move at all. */
Test(compare, a_faster_machine_is_told_apart_from_faster_code)
{
    ab_point a[6], b[6];
    const char *names[6] = { "dense", "window", "xattention", "hip", "fixed", "bigbird" };
    for (int i = 0; i < 6; i++) {
        char key[24];
        snprintf(key, sizeof key, "00000000000000%02x", i + 1);
        point(&a[i], key, names[i], 2048, 10.0 + i, i ? 0.1 * i : 1.0);
        a[i].fma_gflops = 40.0;
        b[i] = a[i];
        b[i].total_ms /= 1.1;
        b[i].total_lo_ms /= 1.1;
        b[i].total_hi_ms /= 1.1;
        b[i].fma_gflops = 44.0;
    }
    write_file("ca.h5", a, 6);
    write_file("cb.h5", b, 6);
    char *out;
    int rc = cmp("ca.h5 cb.h5 --fail-above 0.01", &out);
    cr_expect_eq(rc, 0, "speedups did not move: %s", out);
    cr_expect(strstr(out, "latency (total_ms)            6   0.0953"), "raw latency moved by log 1.1:\n%s",
              out);
    cr_expect(strstr(out, "latency, equal clock          6   0.0000"), "equal clock removes it:\n%s", out);
    cr_expect(strstr(out, "machine speed B/A (1-thread FMA probe in every round): x1.100"), "%s", out);
    free(out);
}
