/* test_fuzz_regressions.c — replays every input the fuzzers (fuzz/fuzz_TARGET.c,
 * `make fuzz`) ever flagged, kept in tests/fuzz_regressions/TARGET/, through
 * the same code path as the fuzz target, so a fixed finding stays fixed:
 *   config/    bytes of a config file   -> ab_config_load + ab_config_check
 *   run_args/  argv words (NUL/newline) -> `attnbench run -c tiny.ini WORDS
 *              --dry-run --dry-run` ($AB_BIN), must exit 0 or 2
 *   results/   mode byte + file bytes   -> ab_results_read (even: OUT.h5,
 *              odd: OUT.h5.journal); must return, 0 or a one-line error
 * The results inputs include files on which libhdf5 itself overflows a heap
 * buffer or loops forever: the reader's parse runs in a child process with
 * a deadline (harness/store/store.c), so the caller gets "damaged HDF5 file"
 * instead of a crash or a hang. Run from the
 * repository root (make test does). */
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/engine/config.h"
#include "harness/store/point.h"
#include "runtime/registry.h"
#include "harness/store/store.h"

#define REG_DIR "tests/fuzz_regressions"

static char g_dir[256];

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/ab_fuzzreg_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
}

TestSuite(fuzz_regressions, .init = setup, .fini = teardown);

static unsigned char *load(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    b[*len] = 0;
    fclose(f);
    return b;
}

static void save(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    if (n) fwrite(b, 1, n, f);
    fclose(f);
}

/* Calls fn(path) for each regular file of REG_DIR/sub; returns the count. */
static int each_input(const char *sub, void (*fn)(const char *path))
{
    char dir[300];
    snprintf(dir, sizeof dir, "%s/%s", REG_DIR, sub);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "no %s (run the tests from the repository root)", dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        fn(p);
        n++;
    }
    closedir(d);
    return n;
}

static void replay_config(const char *path)
{
    ab_registry_init();
    ab_config *c = malloc(sizeof *c);
    char err[1024] = "";
    if (ab_config_load(c, path, err, sizeof err) == 0)
        ab_config_check(c, err, sizeof err);
    else
        cr_expect(strstr(err, path) && !strchr(err, '\n'), "%s: error does not name the file in one line: %s",
                  path, err);
    ab_config_free(c);
    free(c);
}

Test(fuzz_regressions, config_inputs) { cr_expect_gt(each_input("config", replay_config), 0); }

static void replay_results(const char *path)
{
    size_t n;
    unsigned char *b = load(path, &n);
    char h5[300], jr[320];
    snprintf(h5, sizeof h5, "%s/r.h5", g_dir);
    snprintf(jr, sizeof jr, "%s/r.h5.journal", g_dir);
    unlink(h5);
    unlink(jr);
    if (n && (b[0] & 1))
        save(jr, b + 1, n - 1);
    else
        save(h5, n ? b + 1 : b, n ? n - 1 : 0);
    ab_point *p = NULL;
    size_t np = 0;
    ab_env env;
    memset(&env, 0, sizeof env);
    char err[512] = "";
    int rc = ab_results_read(h5, &p, &np, &env, err, sizeof err);
    if (rc) cr_expect(strstr(err, "r.h5") && !strchr(err, '\n'), "%s: bad error message: %s", path, err);
    for (size_t i = 0; i < np; i++) cr_expect_lt(strlen(p[i].key), sizeof p[i].key);
    free(p);
    ab_env_free(&env);
    free(b);
}

Test(fuzz_regressions, results_inputs)
{
    setenv("AB_H5_READ_TIMEOUT_S", "3", 1); /* hdf5-hang: libhdf5 loops on it */
    cr_expect_gt(each_input("results", replay_results), 0);
}

static void replay_run_args(const char *path)
{
    size_t n;
    unsigned char *b = load(path, &n);
    char cfg[300], cmd[8192];
    snprintf(cfg, sizeof cfg, "%s/tiny.ini", g_dir);
    static const char *tiny = "[sweep]\ntasks = needle\nmethods = dense, window\nseq_lens = 256\nheads = 1\n"
                              "head_dims = 16\ndensities = 0.5\nblock_q = 32\nblock_k = 32\nthreads = 1\n";
    save(cfg, (const unsigned char *)tiny, strlen(tiny));
    const char *ab = getenv("AB_BIN") ? getenv("AB_BIN") : "build/attnbench";
    int l = snprintf(cmd, sizeof cmd, "cd '%s' && '%s' run -c '%s'", g_dir, ab, cfg);
    /* each word single-quoted; a ' inside becomes '\'' */
    size_t i = 0;
    while (i <= n && l < (int)sizeof cmd - 64) {
        l += snprintf(cmd + l, sizeof cmd - (size_t)l, " '");
        for (; i < n && b[i] && b[i] != '\n' && l < (int)sizeof cmd - 64; i++) {
            if (b[i] == '\'')
                l += snprintf(cmd + l, sizeof cmd - (size_t)l, "'\\''");
            else
                cmd[l++] = (char)b[i];
        }
        cmd[l++] = '\'';
        cmd[l] = 0;
        i++;
    }
    snprintf(cmd + l, sizeof cmd - (size_t)l,
             " --dry-run --dry-run --no-estimate >/dev/null 2>&1 </dev/null");
    int st = system(cmd);
    cr_expect(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 2), "%s: attnbench %s (status %d)",
              path, WIFEXITED(st) ? "exited with an unexpected code" : "died", st);
    free(b);
}

Test(fuzz_regressions, run_args_inputs) { cr_expect_gt(each_input("run_args", replay_run_args), 0); }

/* trace/: structured trace files (fuzz/trace_case.h), replayed together
 * with the target's seed corpus fuzz/corpus/trace. */
#include "fuzz/trace_case.h"

static int trace_replays;
static void replay_trace(const char *path)
{
    size_t n;
    unsigned char *b = load(path, &n);
    char h5[300], why[800] = "";
    snprintf(h5, sizeof h5, "%s/t.h5", g_dir);
    cr_expect_eq(fuzz_trace_case(b, n, h5, why, sizeof why), 0, "%s: %s", path, why);
    trace_replays++;
    free(b);
}

Test(fuzz_regressions, trace_inputs)
{
    const char *dirs[2] = { REG_DIR "/trace", "fuzz/corpus/trace" };
    for (int i = 0; i < 2; i++) {
        DIR *d = opendir(dirs[i]);
        if (!d) continue; /* no regressions yet */
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char p[600];
            snprintf(p, sizeof p, "%s/%s", dirs[i], e->d_name);
            replay_trace(p);
        }
        closedir(d);
    }
    cr_expect_gt(trace_replays, 0, "no trace inputs (run from the repository root)");
}
