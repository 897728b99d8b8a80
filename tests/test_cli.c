/* test_cli.c — the attnbench binary end to end: bad configs and bad
 * arguments exit 2 naming file/line/key and leave an existing results file
 * byte-identical; a small sweep records every point; GPU points without a
 * GPU are `unsupported`; SIGKILL during a sweep then --resume gives the same
 * points and numbers as an uninterrupted run; SIGTERM stops cleanly; the
 * base-mask axis (`list masks`, masks = ..., the causal alias, the mask and
 * its density in every row, resume across masks).
 * The binary's path comes from $AB_BIN (set by `make test`). */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness/store/point.h"
#include "harness/store/store.h"
#include "runtime/registry.h"

static char g_dir[256];

static const char *bin(void)
{
    const char *b = getenv("AB_BIN");
    return b ? b : "build/attnbench";
}

static void mkdir_tmp(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/ab_cli_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static void rm_tmp(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t r = fread(b, 1, (size_t)n, f);
    b[r] = 0;
    fclose(f);
    if (len) *len = r;
    return b;
}

/* Run the binary with args through the shell; stderr captured to a file.
 * Returns the exit code. */
static int run_ab(const char *args, char **err_out)
{
    char cmd[4096], errf[300];
    snprintf(errf, sizeof errf, "%s/stderr.txt", g_dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >/dev/null 2>'%s'", g_dir, bin(), args, errf);
    int st = system(cmd);
    if (err_out) *err_out = read_all(errf, NULL);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* As run_ab, with stdout kept: returns it (free()); *rc gets the exit code. */
static char *run_ab_stdout(const char *args, int *rc)
{
    char cmd[4096], outf[300];
    snprintf(outf, sizeof outf, "%s/stdout.txt", g_dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >'%s' 2>/dev/null", g_dir, bin(), args, outf);
    int st = system(cmd);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return read_all(outf, NULL);
}

static const char *tiny_cfg = "[sweep]\n"
                              "tasks = needle\n"
                              "methods = dense, window, oracle_topk_block\n"
                              "seq_lens = 512, 1024\n"
                              "heads = 2\n"
                              "head_dims = 32\n"
                              "densities = 0.25, 0.5\n"
                              "block_q = 32\n"
                              "block_k = 32\n"
                              "threads = 1\n"
                              "[timing]\n"
                              "warmup = 0\n"
                              "min_repeats = 2\n"
                              "max_repeats = 3\n"
                              "min_time_s = 0\n"
                              "max_time_s = 1\n";

TestSuite(cli, .init = mkdir_tmp, .fini = rm_tmp, .timeout = 120);

/* ---- bad input ------------------------------------------------------------ */
struct bad_cfg {
    const char *text;
    const char *expect;
};

static const struct bad_cfg bad_cfgs[] = {
    { "[sweep]\nseq_lenz = 1024\n", "c.ini:2: [sweep] key 'seq_lenz'" },
    { "[sweep]\nseq_lens = 1024, abc\n", "c.ini:2: [sweep] key 'seq_lens'" },
    { "[sweep]\nseq_lens = 0\n", "key 'seq_lens'" },
    { "[sweep]\nseq_lens = -5\n", "key 'seq_lens'" },
    { "[sweep]\nseq_lens =\n", "key 'seq_lens'" },
    { "[sweep]\nmethods = dense, nosuchmethod\n", "unknown method 'nosuchmethod'" },
    { "[sweep]\ntasks = nosuchtask\n", "unknown task 'nosuchtask'" },
    { "[sweep]\nhead_dims = 8\n", "key 'head_dims'" },
    { "[sweep]\ndensities = 0.1, 1.5\n", "key 'densities'" },
    { "[sweep]\ndensities = nan\n", "key 'densities'" },
    { "\n\n[timing]\nwarmup = 1\nwarmup = 2\n", "c.ini:5: [timing] key 'warmup': set twice" },
    { "[nosection]\nx = 1\n", "unknown section" },
    { "[method.window]\nwindoww = 3\n", "key 'windoww'" },
    { "[method.nosuch]\nx = 3\n", "unknown method 'nosuch'" },
    { "[method.xattention]\nblock_q = 0\n", "c.ini:2: [method.xattention] key 'block_q'" },
    { "[method.window]\nblock_k = 64, 128\n", "key 'block_k'" },
    { "[sweep]\nseq_lens = 16777216\nheads = 64\nhead_dims = 512\n", "GiB" },
    { "this is not ini\n", "c.ini:1:" },
    { "[timing]\nmin_repeats = 10\nmax_repeats = 2\n", "min_repeats" },
    { "[sweep]\nmasks = sliding:-1\n", "c.ini:2: [sweep] key 'masks'" },
    { "[sweep]\nseq_lens = 512\nmasks = document:100+200\n", "sum to 300, not N = 512" },
};

Test(cli, bad_configs_exit_2_and_leave_results_untouched)
{
    char path[300], out[300];
    snprintf(out, sizeof out, "%s/keep.h5", g_dir);
    write_file(out, "pretend results: must stay byte-identical\n");
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    for (size_t i = 0; i < sizeof bad_cfgs / sizeof bad_cfgs[0]; i++) {
        write_file(path, bad_cfgs[i].text);
        char *err = NULL;
        int rc = run_ab("run -c c.ini -o keep.h5", &err);
        cr_expect_eq(rc, 2, "config %zu: exit %d, want 2 (stderr: %s)", i, rc, err ? err : "");
        cr_expect(err && strstr(err, bad_cfgs[i].expect), "config %zu: stderr lacks '%s': %s", i,
                  bad_cfgs[i].expect, err ? err : "");
        free(err);
        char *now = read_all(out, NULL);
        cr_assert(now && !strcmp(now, "pretend results: must stay byte-identical\n"),
                  "config %zu touched the results file", i);
        free(now);
        char j[320];
        snprintf(j, sizeof j, "%s.journal", out);
        cr_expect(access(j, F_OK) != 0, "config %zu left a journal", i);
    }
}

Test(cli, bad_arguments_exit_2)
{
    const char *args[] = {
        "run -c missing.ini -o x.h5",
        "run -o x.h5",
        "run -c c.ini",
        "run -c c.ini -o x.h5 --threads abc",
        "run -c c.ini -o x.h5 --shard 3/2",
        "run -c c.ini -o x.h5 --methods nosuch",
        "run -c c.ini -o x.h5 --bogus",
        "nosuchcommand",
        "list bogus",
        "run -c c.ini -o x.h5 --devices tpu",
    };
    char path[300];
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    write_file(path, tiny_cfg);
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
        char *err = NULL;
        int rc = run_ab(args[i], &err);
        cr_expect_eq(rc, 2, "'%s': exit %d, want 2", args[i], rc);
        cr_expect(err && strncmp(err, "attnbench: ", 11) == 0, "'%s': no one-line error: %s", args[i],
                  err ? err : "");
        free(err);
        char x[300];
        snprintf(x, sizeof x, "%s/x.h5", g_dir);
        cr_expect(access(x, F_OK) != 0, "'%s' created a results file", args[i]);
    }
    char *err = NULL;
    cr_expect_eq(run_ab("run --help", &err), 0);
    free(err);
    cr_expect_eq(run_ab("list", &err), 0);
    free(err);
}

/* ---- sweeps --------------------------------------------------------------- */
static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const ab_point *)a)->key, ((const ab_point *)b)->key);
}

static ab_point *read_points(const char *path, size_t *n)
{
    ab_point *p = NULL;
    ab_env env;
    memset(&env, 0, sizeof env);
    char err[512];
    int rc = ab_results_read(path, &p, n, &env, err, sizeof err);
    cr_assert_eq(rc, 0, "reading %s: %s", path, err);
    ab_env_free(&env);
    qsort(p, *n, sizeof *p, cmp_key);
    return p;
}

/* Blocks: each method's native block unless the config overrides it, per
 * method over sweep-wide; every point records the blocks it used. */
static void blocks_of(const char *cfg, const char *method, int *bq, int *bk)
{
    char path[300], out[300];
    snprintf(path, sizeof path, "%s/b.ini", g_dir);
    write_file(path, cfg);
    char *err = NULL;
    int rc = run_ab("run -c b.ini -o b.h5 -q", &err);
    cr_assert_eq(rc, 0, "sweep failed (%d): %s", rc, err ? err : "");
    free(err);
    snprintf(out, sizeof out, "%s/b.h5", g_dir);
    size_t n;
    ab_point *p = read_points(out, &n);
    *bq = *bk = -1;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p[i].method, method) && !strcmp(p[i].status, "ok")) {
            *bq = p[i].block_q;
            *bk = p[i].block_k;
        }
    free(p);
}

Test(cli, blocks_native_unless_overridden)
{
    static const char *base = "[sweep]\ntasks = needle\nmethods = dense,\n    xattention\n\twindow\nseq_lens "
                              "= 1024\n" /* continued */
                              "heads = 1\nhead_dims = 32\ndensities = 0.5\nthreads = 1\n%s"
                              "[timing]\nrounds = 1\ntimed_depths = 0.123\n%s";
    char cfg[1024];
    int bq, bk;
    snprintf(cfg, sizeof cfg, base, "", "");
    blocks_of(cfg, "xattention", &bq, &bk);
    cr_expect(bq == 128 && bk == 128, "xattention native: %d x %d", bq, bk);
    blocks_of(cfg, "window", &bq, &bk);
    cr_expect(bq == 64 && bk == 64, "window (no native): %d x %d", bq, bk);
    blocks_of(cfg, "dense", &bq, &bk);
    cr_expect(bq == 0 && bk == 0, "dense has no blocks: %d x %d", bq, bk);
    snprintf(cfg, sizeof cfg, base, "block_q = 32\nblock_k = 32\n", "[method.xattention]\nblock_q = 64\n");
    blocks_of(cfg, "xattention", &bq, &bk);
    cr_expect(bq == 64 && bk == 64, "per method over sweep-wide (block_k follows its block_q): %d x %d", bq,
              bk);
    blocks_of(cfg, "window", &bq, &bk);
    cr_expect(bq == 32 && bk == 32, "sweep-wide: %d x %d", bq, bk);
}

Test(cli, small_sweep_records_every_point)
{
    char path[300], out[300];
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    write_file(path, tiny_cfg);
    char *err = NULL;
    int rc = run_ab("run -c c.ini -o r.h5", &err);
    cr_assert_eq(rc, 0, "sweep failed (%d): %s", rc, err ? err : "");
    free(err);
    snprintf(out, sizeof out, "%s/r.h5", g_dir);
    size_t n;
    ab_point *p = read_points(out, &n);
    /* 2 lengths x (dense 1 + window 2 + oracle 2) */
    cr_expect_eq(n, 10, "points: %zu", n);
    int ok_sparse = 0;
    for (size_t i = 0; i < n; i++) {
        /* Block granularity makes some targets unreachable at these tiny
         * sizes: that must be recorded as calib_failed, never faked. */
        cr_expect(!strcmp(p[i].status, "ok") || !strcmp(p[i].status, "calib_failed"), "%s N=%d: %s %s",
                  p[i].method, p[i].seq_len, p[i].status, p[i].message);
        if (!strcmp(p[i].status, "calib_failed")) {
            cr_expect(isnan(p[i].total_ms) && strlen(p[i].message) > 10,
                      "calib_failed point carries a timing");
            continue;
        }
        cr_expect(p[i].n_samples >= 2 && p[i].total_ms > 0);
        cr_expect(p[i].achieved_density > 0 && p[i].achieved_density <= 1);
        if (!strcmp(p[i].method, "dense")) {
            cr_expect(p[i].rel_l2_err < 1e-5, "dense rel err %g", p[i].rel_l2_err);
            cr_expect_float_eq(p[i].recall_mass, 1.0, 1e-12);
            cr_expect_float_eq(p[i].accuracy, 1.0, 1e-12);
        } else {
            ok_sparse++;
            cr_expect(fabs(p[i].achieved_density - p[i].target_density) <= 0.1 * p[i].target_density + 1e-12,
                      "%s: target %g achieved %g", p[i].method, p[i].target_density, p[i].achieved_density);
            cr_expect(p[i].recall_mass > 0 && p[i].recall_mass < 1, "%s recall %g", p[i].method,
                      p[i].recall_mass);
        }
    }
    cr_expect(ok_sparse >= 3, "only %d sparse points calibrated", ok_sparse);
    free(p);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "h5dump -H '%s' >/dev/null 2>&1", out);
    cr_expect_eq(system(cmd), 0, "h5dump cannot read the results file");
}

Test(cli, gpu_points_without_gpu_are_unsupported)
{
    char path[300], out[300];
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    write_file(path, tiny_cfg);
    char *err = NULL;
    int rc = run_ab("run -c c.ini -o g.h5 --devices gpu --methods dense", &err);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, err ? err : "");
    free(err);
    snprintf(out, sizeof out, "%s/g.h5", g_dir);
    size_t n;
    ab_point *p = read_points(out, &n);
    cr_assert_eq(n, 2);
    for (size_t i = 0; i < n; i++) {
        cr_expect_str_eq(p[i].device, "gpu");
        cr_expect_str_eq(p[i].status, "unsupported");
        cr_expect(strlen(p[i].message) > 10, "no reason given");
        cr_expect(isnan(p[i].total_ms), "a number was recorded for an unsupported point");
    }
    free(p);
}

/* The dtype axis (ABI 9): dense and a block method run on bf16 inputs,
 * paired with fp32 dense; a method without AB_BF16 (its own run() in
 * fp32) is recorded unsupported, never run on fp32 in its place; `methods = all`
 * adds bf16 points for exactly the methods that take bf16. */
Test(cli, bf16_dtype_axis_runs_what_takes_bf16_and_refuses_the_rest)
{
    static const char *cfg = "[sweep]\ntasks = needle\nmethods = dense, window, strided\n"
                             "seq_lens = 256\nheads = 2\nhead_dims = 32\ndensities = 0.5\nblock_q = 32\n"
                             "block_k = 32\nthreads = 1\ndtypes = fp32, bf16\n[timing]\nwarmup = 0\n"
                             "min_repeats = 2\nmax_repeats = 3\nmin_time_s = 0\nmax_time_s = 1\n";
    char path[300], out[300];
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    write_file(path, cfg);
    char *err = NULL;
    int rc = run_ab("run -c c.ini -o bf.h5", &err);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, err ? err : "");
    free(err);
    snprintf(out, sizeof out, "%s/bf.h5", g_dir);
    size_t n;
    ab_point *p = read_points(out, &n);
    cr_assert_eq(n, 6, "points: %zu", n);
    int seen = 0;
    double werr[2] = { NAN, NAN }; /* window's rel L2 error: fp32, bf16 */
    for (size_t i = 0; i < n; i++) {
        const int bf = !strcmp(p[i].dtype, "bf16"), dense = !strcmp(p[i].method, "dense");
        const int fp32only = !strcmp(p[i].method, "strided");
        cr_expect(bf || !strcmp(p[i].dtype, "fp32"), "dtype '%s'", p[i].dtype);
        if (bf && fp32only) {
            seen |= 2;
            cr_expect_str_eq(p[i].status, "unsupported");
            cr_expect(strstr(p[i].message, "fp32 inputs only"), "message: %s", p[i].message);
            cr_expect(isnan(p[i].total_ms), "a number was recorded for an unsupported point");
        } else if (bf) {
            seen |= dense ? 1 : 8;
            cr_expect_str_eq(p[i].status, "ok", "%s: %s", p[i].method, p[i].message);
            cr_expect_str_eq(p[i].kernel, dense ? "flash" : "blocksparse");
            /* the inputs were rounded to bf16: fp32 dense gives ~1e-6 */
            if (dense) {
                cr_expect(p[i].rel_l2_err > 1e-4 && p[i].rel_l2_err < 3e-2, "dense bf16 rel err %g",
                          p[i].rel_l2_err);
                cr_expect_float_eq(p[i].recall_mass, 1.0, 1e-12);
            } else {
                werr[1] = p[i].rel_l2_err;
            }
            cr_expect(p[i].rel_dense > 0 && p[i].rel_lo <= p[i].rel_dense && p[i].rel_dense <= p[i].rel_hi,
                      "%s bf16 against fp32 dense: %g [%g, %g]", p[i].method, p[i].rel_dense, p[i].rel_lo,
                      p[i].rel_hi);
            cr_expect(isfinite(p[i].dense_pair_ms) && p[i].dense_pair_ms > 0, "no paired fp32 dense");
        } else if (dense) {
            seen |= 4;
            cr_expect_float_eq(p[i].rel_dense, 1.0, 1e-12);
            cr_expect(p[i].rel_l2_err < 1e-5);
        } else if (!fp32only) {
            werr[0] = p[i].rel_l2_err;
        }
    }
    cr_expect_eq(seen, 15, "missing kinds of points: %d", seen);
    /* window's error against dense is its sparsity's, bf16 or not */
    cr_expect(werr[0] > 0 && fabs(werr[1] - werr[0]) < 2e-2 && werr[1] != werr[0],
              "window rel err fp32 %g, bf16 %g", werr[0], werr[1]);
    free(p);
    char *sh = run_ab_stdout("show bf.h5", &rc);
    cr_expect(rc == 0 && sh && strstr(sh, "dense:bf16") && strstr(sh, "window:bf16"),
              "show lacks the bf16 series:\n%s", sh ? sh : "");
    free(sh);
    /* methods = all: bf16 points for the methods that take bf16, only */
    write_file(path, "[sweep]\ntasks = needle\nmethods = all\nseq_lens = 256\nheads = 2\nhead_dims = 32\n"
                     "densities = 0.5\nthreads = 1\ndtypes = fp32, bf16\n");
    char *dry = run_ab_stdout("run -c c.ini --dry-run --no-estimate", &rc);
    cr_assert_eq(rc, 0, "dry run failed: %s", dry ? dry : "");
    int nbf = 0, nall = 0, want = 0;
    for (int i = 0; i < ab_method_count; i++)
        want += (ab_method_dtypes(ab_method_at(i)) & AB_BF16) && (ab_method_at(i)->phases & AB_PREFILL);
    for (char *line = strtok(dry, "\n"); line; line = strtok(NULL, "\n")) {
        if (strlen(line) <= 16 || line[16] != ' ') continue;
        nall++;
        char name[64] = "", dev[8] = "", dt[8] = "";
        if (sscanf(line + 16, "%63s %7s %7s", name, dev, dt) != 3 || strcmp(dt, "bf16")) continue;
        nbf++;
        const ab_method *m = ab_method_find(name);
        cr_expect(m && (ab_method_dtypes(m) & AB_BF16), "a bf16 point of a method without AB_BF16: %s", line);
    }
    cr_expect(nbf == want && want >= 2 && nall > nbf, "bf16 points %d (methods taking bf16: %d) of %d", nbf,
              want, nall);
    free(dry);
}

static const char *kill_cfg = "[sweep]\n"
                              "tasks = needle\n"
                              "methods = dense, window, oracle_topk_block\n"
                              "seq_lens = 256, 512\n"
                              "heads = 2\n"
                              "head_dims = 32\n"
                              "seeds = 1, 2\n"
                              "densities = 0.2, 0.5\n"
                              "block_q = 32\n"
                              "block_k = 32\n"
                              "threads = 1\n"
                              "[timing]\n"
                              "warmup = 0\n"
                              "min_repeats = 3\n"
                              "max_repeats = 1000\n"
                              "min_time_s = 0.12\n"
                              "max_time_s = 1\n";

static pid_t spawn_ab(const char *args)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(g_dir)) _exit(127);
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "exec '%s' %s -q >/dev/null 2>&1", bin(), args);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

Test(cli, sigkill_then_resume_equals_uninterrupted, .timeout = 300)
{
    char path[300], ref[300], out[300];
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    write_file(path, kill_cfg);
    char *err = NULL;
    cr_assert_eq(run_ab("run -c c.ini -o ref.h5", &err), 0, "%s", err ? err : "");
    free(err);
    snprintf(ref, sizeof ref, "%s/ref.h5", g_dir);
    snprintf(out, sizeof out, "%s/k.h5", g_dir);
    /* Kill at a few seeded moments, resuming each time; then finish. */
    unsigned seed = 12345;
    int first = 1;
    for (int round = 0; round < 6; round++) {
        pid_t pid = spawn_ab(first ? "run -c c.ini -o k.h5" : "run -c c.ini -o k.h5 --resume");
        first = 0;
        seed = seed * 1103515245u + 12345u;
        sleep_ms(100 + (int)((seed >> 16) % 1500));
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        /* The file must open after every kill (or not exist yet). */
        if (access(out, F_OK) == 0) {
            ab_point *p = NULL;
            size_t n = 0;
            ab_env env;
            memset(&env, 0, sizeof env);
            char e2[512];
            cr_assert_eq(ab_results_read(out, &p, &n, &env, e2, sizeof e2), 0, "after kill %d: %s", round,
                         e2);
            free(p);
            ab_env_free(&env);
        }
    }
    cr_assert_eq(run_ab("run -c c.ini -o k.h5 --resume", &err), 0, "%s", err ? err : "");
    free(err);
    size_t na, nb;
    ab_point *a = read_points(ref, &na);
    ab_point *b = read_points(out, &nb);
    cr_assert_eq(na, nb, "uninterrupted %zu points, killed+resumed %zu", na, nb);
    for (size_t i = 0; i < na; i++) {
        cr_assert_str_eq(a[i].key, b[i].key);
        if (i) cr_assert(strcmp(b[i].key, b[i - 1].key) != 0, "point %s stored twice", b[i].key);
        cr_expect_str_eq(a[i].status, b[i].status);
#define SAME(f) (a[i].f == b[i].f || (isnan(a[i].f) && isnan(b[i].f)))
        cr_expect(SAME(achieved_density), "%s density differs", a[i].method);
        cr_expect(SAME(knob_value), "%s knob differs", a[i].method);
        cr_expect(SAME(recall_mass) && SAME(recall_topk) && SAME(accuracy), "%s quality differs",
                  a[i].method);
        cr_expect(SAME(rel_l2_err), "%s rel err differs: %g vs %g", a[i].method, a[i].rel_l2_err,
                  b[i].rel_l2_err);
#undef SAME
    }
    free(a);
    free(b);
}

/* Shards calibrate each point as one run does (the first calibration guess
 * is the point's predecessor in its family, and a shard keeps whole
 * families): the merged shards equal the single run key by key, knobs and
 * quality numbers included. Untimed (scored) points keep it quick. */
static const char *shard_cfg = "[sweep]\n"
                               "tasks = needle\n"
                               "methods = dense, window, oracle_topk_block, quest_prefill\n"
                               "seq_lens = 256, 512\n"
                               "depths = 0.3, 0.7\n"
                               "heads = 2\n"
                               "head_dims = 32\n"
                               "densities = 0.25, 0.5\n"
                               "block_q = 32\n"
                               "block_k = 32\n"
                               "threads = 1\n"
                               "[timing]\n"
                               "timed_depths = 0.5\n";

Test(cli, shards_merged_equal_one_run, .timeout = 300)
{
    char path[300];
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    write_file(path, shard_cfg);
    char *e = NULL;
    cr_assert_eq(run_ab("run -c c.ini -o one.h5 -q", &e), 0, "%s", e ? e : "");
    free(e);
    for (int i = 0; i < 3; i++) {
        char a[128];
        snprintf(a, sizeof a, "run -c c.ini -o s%d.h5 -q --shard %d/3", i, i);
        cr_assert_eq(run_ab(a, &e), 0, "shard %d: %s", i, e ? e : "");
        free(e);
    }
    cr_assert_eq(run_ab("merge s0.h5 s1.h5 s2.h5 -o m.h5", &e), 0, "%s", e ? e : "");
    free(e);
    char one[300], m[300];
    snprintf(one, sizeof one, "%s/one.h5", g_dir);
    snprintf(m, sizeof m, "%s/m.h5", g_dir);
    size_t na, nb;
    ab_point *a = read_points(one, &na);
    ab_point *b = read_points(m, &nb);
    cr_assert_eq(na, nb, "one run %zu points, merged shards %zu", na, nb);
    int calibrated = 0;
    for (size_t i = 0; i < na; i++) {
        size_t k = 0;
        while (k < nb && strcmp(a[i].key, b[k].key)) k++;
        cr_assert_lt(k, nb, "point %s (%s) missing from the merged shards", a[i].key, a[i].method);
        cr_expect_str_eq(a[i].status, b[k].status, "%s", a[i].method);
#define SAME(f) (a[i].f == b[k].f || (isnan(a[i].f) && isnan(b[k].f)))
        cr_expect(SAME(knob_value), "%s N=%d depth %g target %g: knob %.17g in one run, %.17g in a shard",
                  a[i].method, a[i].seq_len, a[i].depth, a[i].target_density, a[i].knob_value,
                  b[k].knob_value);
        cr_expect(SAME(achieved_density) && SAME(recall_mass) && SAME(accuracy) && SAME(rel_l2_err),
                  "%s N=%d: quality differs", a[i].method, a[i].seq_len);
#undef SAME
        if (!isnan(a[i].target_density) && !isnan(a[i].knob_value)) calibrated++;
    }
    cr_expect_geq(calibrated, 8, "only %d calibrated points", calibrated);
    free(a);
    free(b);
}

Test(cli, sigterm_stops_cleanly_and_resume_finishes, .timeout = 300)
{
    char path[300], out[300];
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    write_file(path, kill_cfg);
    pid_t pid = spawn_ab("run -c c.ini -o t.h5");
    sleep_ms(700);
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "SIGTERM: want a clean exit 1");
    snprintf(out, sizeof out, "%s/t.h5", g_dir);
    char j[320];
    snprintf(j, sizeof j, "%s.journal", out);
    cr_expect(access(j, F_OK) != 0, "a clean stop leaves no journal");
    char *err = NULL;
    cr_assert_eq(run_ab("run -c c.ini -o t.h5 --resume", &err), 0, "%s", err ? err : "");
    free(err);
    size_t n;
    ab_point *p = read_points(out, &n);
    cr_expect_eq(n, 2 * 2 * (1 + 2 + 2), "points after resume: %zu", n);
    free(p);
}

/* --save-tensors: Q/K/V, the reference and each output are in the file, and
 * the stored rel_l2_err can be recomputed from them outside the harness. */
#include <hdf5.h>

static double *read_ds(hid_t f, const char *name, hsize_t *n_out)
{
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert(d >= 0, "no dataset %s", name);
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    double *buf = malloc(sizeof(double) * (size_t)n);
    cr_assert(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(sp);
    H5Dclose(d);
    *n_out = (hsize_t)n;
    return buf;
}

Test(cli, save_tensors_lets_anyone_recheck_a_number)
{
    char path[300], out[300];
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    write_file(path, tiny_cfg);
    char *err = NULL;
    int rc = run_ab("run -c c.ini -o s.h5 --methods window --save-tensors", &err);
    cr_assert_eq(rc, 0, "%s", err ? err : "");
    free(err);
    snprintf(out, sizeof out, "%s/s.h5", g_dir);
    size_t n;
    ab_point *p = read_points(out, &n);
    hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    int checked = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(p[i].status, "ok")) continue;
        char name[300], prob[200] = "";
        snprintf(name, sizeof name, "/tensors/%s", p[i].key);
        hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
        cr_assert(g >= 0, "no %s", name);
        hid_t a = H5Aopen(g, "problem", H5P_DEFAULT);
        hid_t t = H5Aget_type(a);
        cr_assert(H5Aread(a, t, prob) >= 0);
        H5Tclose(t);
        H5Aclose(a);
        H5Gclose(g);
        char pn[300];
        hsize_t no, nr, nro;
        snprintf(pn, sizeof pn, "/tensors/%s/out", p[i].key);
        double *o = read_ds(f, pn, &no);
        snprintf(pn, sizeof pn, "/tensors/%s/scored_rows", prob);
        double *rows = read_ds(f, pn, &nr);
        snprintf(pn, sizeof pn, "/tensors/%s/ref_out", prob);
        double *ref = read_ds(f, pn, &nro);
        const int H = p[i].heads, N = p[i].seq_len, d = p[i].head_dim;
        cr_assert_eq(no, (hsize_t)H * N * d);
        cr_assert_eq(nro, (hsize_t)H * nr * d);
        double sum = 0;
        for (int h = 0; h < H; h++)
            for (hsize_t r = 0; r < nr; r++) {
                double num = 0, den = 0;
                for (int c = 0; c < d; c++) {
                    double x = o[((size_t)h * N + (size_t)rows[r]) * d + c],
                           y = ref[((size_t)h * nr + r) * d + c];
                    num += (x - y) * (x - y);
                    den += y * y;
                }
                sum += sqrt(num / den);
            }
        double rel = sum / (H * (double)nr);
        cr_expect(fabs(rel - p[i].rel_l2_err) <= 1e-9 * (1 + rel), "recomputed %g, stored %g", rel,
                  p[i].rel_l2_err);
        free(o);
        free(rows);
        free(ref);
        checked++;
    }
    cr_expect(checked >= 2, "only %d points checked", checked);
    H5Fclose(f);
    free(p);
}

/* ---- base masks ------------------------------------------------------------ */
Test(cli, list_masks_names_syntax_and_causality)
{
    int rc;
    char *out = run_ab_stdout("list masks", &rc);
    cr_assert_eq(rc, 0);
    cr_assert_not_null(out);
    static const char *const want[] = {
        "causal ",
        "full ",
        "sliding ",
        "prefix ",
        "document ",
        "chunked ",
        "syntax: sliding:W; causal: yes",
        "syntax: full; causal: no",
        "syntax: document:K",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(out, want[i]), "list masks lacks '%s':\n%s", want[i], out);
    cr_expect(!strstr(out, "methods (") && !strstr(out, "tasks ("), "list masks lists only masks:\n%s", out);
    free(out);
    out = run_ab_stdout("list", &rc);
    cr_assert_eq(rc, 0);
    cr_expect(out && strstr(out, "methods (") && strstr(out, "tasks (") && strstr(out, "base masks (6)"),
              "the overview must mention the masks:\n%s", out ? out : "");
    free(out);
}

/* The keys of a dry run, sorted, one per line, into buf. */
static void dry_keys(const char *cfg_text, char *buf, size_t len, const char *must_have)
{
    char path[300];
    snprintf(path, sizeof path, "%s/d.ini", g_dir);
    write_file(path, cfg_text);
    int rc;
    char *out = run_ab_stdout("run -c d.ini --dry-run --no-estimate", &rc);
    cr_assert_eq(rc, 0, "dry run failed: %s", out ? out : "");
    if (must_have) cr_expect(strstr(out, must_have), "dry run lacks '%s':\n%s", must_have, out);
    char keys[64][24];
    int n = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        if (strlen(line) > 16 && line[16] == ' ' && n < 64)
            snprintf(keys[n++], sizeof keys[0], "%.16s", line);
    qsort(keys, (size_t)n, sizeof keys[0], (int (*)(const void *, const void *))strcmp);
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        strncat(buf, keys[i], len - strlen(buf) - 1);
        strncat(buf, "\n", len - strlen(buf) - 1);
    }
    free(out);
}

#define MASK_CFG_HEAD                                                                               \
    "[sweep]\ntasks = needle\nmethods = dense, window\nseq_lens = 256\nheads = 2\nhead_dims = 32\n" \
    "densities = 0.5\nblock_q = 32\nblock_k = 32\nthreads = 1\n"

Test(cli, causal_key_is_an_alias_of_masks)
{
    char a[2048], b[2048], c[2048];
    /* the default is the causal mask; causal = 1 / 0 spell masks = causal / full */
    dry_keys(MASK_CFG_HEAD, a, sizeof a, "mask=causal");
    dry_keys(MASK_CFG_HEAD "causal = 1\n", b, sizeof b, "mask=causal");
    cr_expect_str_eq(a, b, "default and causal = 1 differ");
    dry_keys(MASK_CFG_HEAD "masks = causal\n", c, sizeof c, "mask=causal");
    cr_expect_str_eq(a, c, "default and masks = causal differ");
    dry_keys(MASK_CFG_HEAD "causal = 0, 1\n", a, sizeof a, "mask=full");
    dry_keys(MASK_CFG_HEAD "masks = full, causal\n", b, sizeof b, "mask=full");
    cr_expect_str_eq(a, b, "causal = 0, 1 and masks = full, causal differ");
    /* another mask is another point */
    dry_keys(MASK_CFG_HEAD "masks = full, causal, document:4\n", c, sizeof c, "mask=document:4");
    cr_expect(strlen(c) == strlen(b) * 3 / 2, "document:4 adds its own keys:\n%s", c);
    for (char *k = c; (k = strchr(k, '\n')) && k[1]; k++)
        cr_expect(strncmp(k - 16, k + 1, 16), "two points share the key %.16s", k + 1);
    for (char *k = strtok(b, "\n"); k; k = strtok(NULL, "\n"))
        cr_expect(strstr(c, k), "key %s of the plain masks changed when a mask was added", k);
}

static double frac_doc(const int *len, int k, int n)
{
    double pairs = 0;
    for (int i = 0; i < k; i++) pairs += (double)len[i] * (len[i] + 1) / 2.0;
    return pairs / ((double)n * n);
}

/* masks = causal, then resumed with full and packed documents added: every
 * row carries its mask and the mask's density (values checkable by hand),
 * dense matches the fp64 reference under each mask (the data child and the
 * point child bind the same mask), GFLOP/s counts only allowed pairs. */
Test(cli, mask_axis_rows_carry_mask_and_density_and_resume)
{
    char path[300], out[300];
    snprintf(path, sizeof path, "%s/m.ini", g_dir);
    snprintf(out, sizeof out, "%s/m.h5", g_dir);
    static const char *timing =
        "[timing]\nwarmup = 0\nmin_repeats = 2\nmax_repeats = 2\nmin_time_s = 0\nmax_time_s = 1\n";
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%smasks = causal\n%s", MASK_CFG_HEAD, timing);
    write_file(path, cfg);
    char *err = NULL;
    int rc = run_ab("run -c m.ini -o m.h5", &err);
    cr_assert_eq(rc, 0, "sweep failed (%d): %s", rc, err ? err : "");
    free(err);
    size_t n0;
    ab_point *p0 = read_points(out, &n0);
    cr_assert_eq(n0, 2);

    snprintf(cfg, sizeof cfg, "%smasks = causal, full, document:64+64+128\n%s", MASK_CFG_HEAD, timing);
    write_file(path, cfg);
    rc = run_ab("run -c m.ini -o m.h5 --resume", &err);
    cr_assert_eq(rc, 0, "resumed sweep failed (%d): %s", rc, err ? err : "");
    cr_expect(err && strstr(err, "4 points to run (2 already stored)"), "resume: %s", err ? err : "");
    cr_expect(err && strstr(err, "mask=document:64+64+128"), "progress lines name the mask: %s",
              err ? err : "");
    free(err);
    size_t n;
    ab_point *p = read_points(out, &n);
    cr_assert_eq(n, 6, "points: %zu", n);
    const int doc[3] = { 64, 64, 128 };
    int seen[3] = { 0, 0, 0 }, dense_ok = 0;
    for (size_t i = 0; i < n; i++) {
        const ab_point *q = &p[i];
        double want;
        if (!strcmp(q->mask, "causal")) {
            want = 257.0 / 512.0;
            cr_expect_eq(q->causal, 1);
            seen[0]++;
        } else if (!strcmp(q->mask, "full")) {
            want = 1.0;
            cr_expect_eq(q->causal, 0);
            seen[1]++;
        } else if (!strcmp(q->mask, "document:64+64+128")) {
            want = frac_doc(doc, 3, 256);
            cr_expect_eq(q->causal, 1);
            seen[2]++;
        } else {
            cr_assert_fail("unexpected mask '%s'", q->mask);
        }
        cr_expect(fabs(q->mask_density - want) < 1e-15, "%s: mask_density %.17g, want %.17g", q->mask,
                  q->mask_density, want);
        cr_expect(!strcmp(q->status, "ok") || !strcmp(q->status, "calib_failed"), "%s %s: %s %s", q->method,
                  q->mask, q->status, q->message);
        if (!strcmp(q->method, "dense")) {
            cr_assert_str_eq(q->status, "ok", "dense under %s: %s", q->mask, q->message);
            cr_expect(q->rel_l2_err < 1e-5, "dense under %s vs the fp64 reference under it: rel err %g",
                      q->mask, q->rel_l2_err);
            cr_expect_float_eq(q->recall_mass, 1.0, 1e-9, "dense under %s recall %g", q->mask,
                               q->recall_mass);
            cr_expect_float_eq(q->achieved_density, 1.0, 1e-12, "dense density over the allowed pairs");
            double flops = 4.0 * q->heads * 256.0 * 256.0 * q->head_dim * want;
            cr_expect(fabs(q->dense_gflops * q->total_ms * 1e6 - flops) <= 1e-9 * flops,
                      "%s: GFLOP/s must count the allowed pairs only", q->mask);
            dense_ok++;
        }
        /* the causal rows of the first run were kept, not rerun */
        for (size_t k = 0; k < n0; k++)
            if (!strcmp(p0[k].key, q->key))
                cr_expect(p0[k].total_ms == q->total_ms || (isnan(p0[k].total_ms) && isnan(q->total_ms)),
                          "resume reran %s", q->key);
    }
    cr_expect(seen[0] == 2 && seen[1] == 2 && seen[2] == 2, "rows per mask: %d %d %d", seen[0], seen[1],
              seen[2]);
    cr_expect_eq(dense_ok, 3);
    free(p);
    free(p0);
}
