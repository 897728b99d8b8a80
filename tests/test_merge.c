/* test_merge.c — `attnbench merge` (harness/cli/merge.c, issue 9): points are
 * joined by key; a key repeated with an identical row is kept once; a key
 * repeated with a different row is reported (one message per conflict,
 * naming the key and the field), the first row is kept and the exit code is
 * 1; a shard left with only a journal (killed run) still contributes; every
 * input's environment is kept under /shards/shard_I. Needs $AB_BIN. */
#include <criterion/criterion.h>

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/store/point.h"
#include "harness/store/store.h"

static char g_dir[256];

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/ab_merge_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
}

TestSuite(merge, .init = setup, .fini = teardown);

static void mkpoint(ab_point *p, int i, double ms)
{
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%016x", 0x1000 + i);
    snprintf(p->method, sizeof p->method, "window");
    snprintf(p->task, sizeof p->task, "needle");
    snprintf(p->status, sizeof p->status, "ok");
    p->seq_len = 256 * (i + 1);
    p->causal = 1;
    snprintf(p->mask, sizeof p->mask, "causal");
    p->mask_density = (p->seq_len + 1.0) / (2.0 * p->seq_len);
    p->total_ms = ms;
    p->n_samples = 2;
    p->sample_run_ms[0] = ms;
    p->sample_run_ms[1] = ms + 0.5;
}

/* masks: NULL, or the base mask spec of each point (its mask_density is
 * then made up from the spec's length: only equality matters here) */
static void write_shard_masked(const char *name, const char *host, const int *ids, const double *ms, int n,
                               const char *const *masks)
{
    ab_point *p = calloc((size_t)n, sizeof *p);
    for (int i = 0; i < n; i++) {
        mkpoint(&p[i], ids[i], ms[i]);
        if (masks) {
            snprintf(p[i].mask, sizeof p[i].mask, "%s", masks[i]);
            p[i].mask_density = 1.0 / (double)strlen(masks[i]);
        }
    }
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_env_set(&env, "host", host);
    char path[400], err[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    cr_assert_eq(ab_results_write(path, p, (size_t)n, &env, NULL, 0, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
    free(p);
}

static void write_shard(const char *name, const char *host, const int *ids, const double *ms, int n)
{
    write_shard_masked(name, host, ids, ms, n, NULL);
}

static int merge(const char *args, char *errbuf, size_t len)
{
    char cmd[2048], ef[300];
    snprintf(ef, sizeof ef, "%s/merge.err", g_dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' merge %s 2>'%s'", g_dir,
             getenv("AB_BIN") ? getenv("AB_BIN") : "build/attnbench", args, ef);
    int st = system(cmd);
    FILE *f = fopen(ef, "r");
    size_t r = f ? fread(errbuf, 1, len - 1, f) : 0;
    errbuf[r] = 0;
    if (f) fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static ab_point *read_all(const char *name, size_t *n, ab_env *env)
{
    char path[400], err[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    ab_point *p = NULL;
    cr_assert_eq(ab_results_read(path, &p, n, env, err, sizeof err), 0, "%s", err);
    return p;
}

Test(merge, joins_by_key_keeps_identical_duplicates_once_and_every_shard_env)
{
    write_shard("a.h5", "node-a", (int[]){ 0, 1, 2 }, (double[]){ 1, 2, 3 }, 3);
    write_shard("b.h5", "node-b", (int[]){ 3, 4 }, (double[]){ 4, 5 }, 2);
    char err[4096];
    /* a.h5 twice: its rows are identical, so nothing conflicts */
    int rc = merge("a.h5 b.h5 a.h5 -o all.h5", err, sizeof err);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
    cr_expect(strstr(err, "8 points read, 5 unique (3 identical duplicates, 0 conflicts)"), "%s", err);
    size_t n;
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_point *p = read_all("all.h5", &n, &env);
    cr_assert_eq(n, 5);
    for (size_t i = 0; i < n; i++) cr_expect_eq(p[i].seq_len, 256 * ((int)i + 1), "order or rows changed");
    cr_expect_float_eq(p[1].sample_run_ms[1], 2.5, 1e-12, "raw samples lost");
    cr_expect_str_eq(ab_env_get(&env, "host"), "node-a");
    cr_expect_str_eq(ab_env_get(&env, "merged_points"), "5");
    ab_env_free(&env);
    free(p);
    /* every input's environment under /shards/shard_I */
    char path[400];
    snprintf(path, sizeof path, "%s/all.h5", g_dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    const char *want[] = { "node-a", "node-b", "node-a" };
    for (int s = 0; s < 3; s++) {
        char g[64];
        snprintf(g, sizeof g, "/shards/shard_%d", s);
        hid_t a = H5Aopen_by_name(f, g, "host", H5P_DEFAULT, H5P_DEFAULT);
        cr_assert(a >= 0, "no %s/host", g);
        hid_t t = H5Aget_type(a);
        char *v = NULL;
        cr_assert(H5Aread(a, t, &v) >= 0);
        cr_expect_str_eq(v, want[s], "%s host", g);
        H5free_memory(v);
        H5Tclose(t);
        H5Aclose(a);
    }
    H5Fclose(f);
}

Test(merge, conflicting_rows_are_reported_first_kept_exit_1)
{
    write_shard("a.h5", "node-a", (int[]){ 0, 1 }, (double[]){ 1, 2 }, 2);
    write_shard("b.h5", "node-b", (int[]){ 1, 2 }, (double[]){ 9, 3 }, 2); /* key 1 differs */
    char err[4096];
    int rc = merge("a.h5 b.h5 -o all.h5", err, sizeof err);
    cr_expect_eq(rc, 1, "exit %d, want 1: %s", rc, err);
    cr_expect(strstr(err, "conflict: point 0000000000001001") && strstr(err, "b.h5") &&
                  strstr(err, "total_ms"),
              "no per-conflict message naming key, file and field: %s", err);
    size_t n;
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_point *p = read_all("all.h5", &n, &env);
    ab_env_free(&env);
    cr_assert_eq(n, 3);
    cr_expect_float_eq(p[1].total_ms, 2.0, 1e-12, "the first row must be kept");
    free(p);
}

Test(merge, a_killed_shard_contributes_its_journal)
{
    /* a store that was never closed: OUT holds nothing yet, the journal
     * holds both points (as after a SIGKILL right after two appends) */
    char path[400], err[512];
    snprintf(path, sizeof path, "%s/k.h5", g_dir);
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_env_set(&env, "host", "node-k");
    ab_store *st;
    cr_assert_eq(ab_store_open(path, &env, 0, &st, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
    ab_point *p = calloc(1, sizeof *p);
    for (int i = 0; i < 2; i++) {
        mkpoint(p, 10 + i, 1.0);
        cr_assert_eq(ab_store_append(st, p, err, sizeof err), 0, "%s", err);
    }
    free(p);
    ab_store_abandon(st);
    write_shard("a.h5", "node-a", (int[]){ 0 }, (double[]){ 1 }, 1);
    char e2[4096];
    cr_assert_eq(merge("a.h5 k.h5 -o all.h5", e2, sizeof e2), 0, "%s", e2);
    size_t n;
    memset(&env, 0, sizeof env);
    ab_point *q = read_all("all.h5", &n, &env);
    ab_env_free(&env);
    cr_expect_eq(n, 3, "journaled points of the killed shard missing: %zu", n);
    free(q);
}

/* The base mask is part of a point: rows that differ only in it conflict
 * (naming the field), rows with their own keys keep their masks. */
Test(merge, base_mask_is_part_of_the_row)
{
    write_shard_masked("a.h5", "node-a", (int[]){ 0, 1 }, (double[]){ 1, 2 }, 2,
                       (const char *const[]){ "causal", "document:8" });
    write_shard_masked("b.h5", "node-b", (int[]){ 1, 2 }, (double[]){ 2, 3 }, 2,
                       (const char *const[]){ "document:4", "full" });
    char err[4096];
    int rc = merge("a.h5 b.h5 -o all.h5", err, sizeof err);
    cr_expect_eq(rc, 1, "exit %d, want 1: %s", rc, err);
    cr_expect(strstr(err, "conflict: point 0000000000001001") &&
                  strstr(err, "mask: 'document:8' vs 'document:4'"),
              "the conflict must name the mask: %s", err);
    size_t n;
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_point *p = read_all("all.h5", &n, &env);
    ab_env_free(&env);
    cr_assert_eq(n, 3);
    cr_expect_str_eq(p[0].mask, "causal");
    cr_expect_str_eq(p[1].mask, "document:8", "the first row must be kept");
    cr_expect_str_eq(p[2].mask, "full");
    cr_expect_eq(p[2].mask_density, 0.25);
    free(p);
}
