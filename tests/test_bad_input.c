/* test_bad_input.c — the bad-input table of issue 9: malformed configs and
 * command lines (unknown keys, bad numbers, NaN/Inf, huge lengths, empty
 * lists, duplicate keys and sections, unreadable and wrong-type files, a
 * text file given as results to show/export/plot/merge/--resume, ...). Each
 * must exit 2 with a one-line message that names the file, line and key (or
 * the option / file at fault), and leave an existing results file
 * byte-identical with no journal or temporary file beside it.
 * The binary comes from $AB_BIN (set by `make test`). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/store/point.h"
#include "harness/store/store.h"

static char g_dir[256];

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/ab_bad_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static void teardown(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
}

TestSuite(bad_input, .init = setup, .fini = teardown);

static const char *bin(void)
{
    const char *b = getenv("AB_BIN");
    return b ? b : "build/attnbench";
}

static void put(const char *name, const char *text, size_t len)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    fwrite(text, 1, len, f);
    fclose(f);
}

static char *slurp(const char *name, size_t *len)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t r = fread(b, 1, (size_t)n, f);
    b[r] = 0;
    fclose(f);
    *len = r;
    return b;
}

static int exists(const char *name)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    return access(path, F_OK) == 0;
}

static int run_ab(const char *args, char **err_out)
{
    char cmd[4096], errf[300];
    snprintf(errf, sizeof errf, "%s/stderr.txt", g_dir);
    char plots[512] = "plots";
    if (!getenv("AB_PLOTS_DIR") && getcwd(plots, sizeof plots - 8)) strcat(plots, "/plots");
    snprintf(cmd, sizeof cmd,
             "cd '%s' && AB_PLOTS_DIR=\"${AB_PLOTS_DIR:-%s}\" '%s' %s >/dev/null 2>'%s' </dev/null", g_dir,
             plots, bin(), args, errf);
    int st = system(cmd);
    size_t l;
    *err_out = slurp("stderr.txt", &l);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A real one-point results file, keep.h5, written through the store API. */
static void make_results(void)
{
    ab_point *p = calloc(1, sizeof *p);
    snprintf(p->key, sizeof p->key, "00112233aabbccdd");
    snprintf(p->method, sizeof p->method, "dense");
    snprintf(p->task, sizeof p->task, "needle");
    snprintf(p->status, sizeof p->status, "ok");
    p->seq_len = 256;
    p->total_ms = 1.25;
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_env_set(&env, "host", "test");
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/keep.h5", g_dir);
    cr_assert_eq(ab_results_write(path, p, 1, &env, NULL, 0, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
    free(p);
}

/* Configs given as c.ini to `run -c c.ini -o keep.h5`; stderr must hold
 * every one of the (up to three) fragments. */
struct bad_cfg {
    const char *text;
    const char *want[3];
};

static const struct bad_cfg cfgs[] = {
    /* unknown keys and sections */
    { "[sweep]\nseq_lenz = 1024\n", { "c.ini:2:", "[sweep] key 'seq_lenz'", "unknown key" } },
    { "[timing]\nwarmupp = 1\n", { "c.ini:2:", "[timing] key 'warmupp'", "unknown key" } },
    { "[nosection]\nx = 1\n", { "c.ini:2:", "key 'x'", "unknown section [nosection]" } },
    { "seq_lens = 1024\n", { "c.ini:1:", "key 'seq_lens'", "unknown section" } },
    { "[method.window]\nwindoww = 3\n", { "c.ini:2:", "key 'windoww'", "unknown parameter" } },
    { "[method.nosuch]\nx = 3\n", { "c.ini:2:", "key 'x'", "unknown method 'nosuch'" } },
    { "[task.needle]\nnosuch = 3\n", { "c.ini:2:", "key 'nosuch'", "unknown parameter" } },
    { "[sweep]\nmethods = dense, nosuchmethod\n",
      { "c.ini:2:", "key 'methods'", "unknown method 'nosuchmethod'" } },
    { "[sweep]\ntasks = nosuchtask\n", { "c.ini:2:", "key 'tasks'", "unknown task 'nosuchtask'" } },
    { "[sweep]\ndevices = tpu\n", { "c.ini:2:", "key 'devices'", "tpu" } },
    { "[sweep]\ndtypes = fp32, fp8\n", { "c.ini:2:", "key 'dtypes'", "unknown dtype 'fp8'" } },
    { "[sweep]\ndtypes = bf16, bf16\n", { "c.ini:2:", "key 'dtypes'", "listed twice" } },
    { "[sweep.more]\ndtypes = bf16\n", { "c.ini:2:", "[sweep.more] key 'dtypes'", "grid axes only" } },
    /* bad numbers, NaN, Inf */
    { "[sweep]\nseq_lens = 1024, abc\n", { "c.ini:2:", "key 'seq_lens'", "'abc' is not a finite number" } },
    { "[sweep]\nseq_lens = 1024x\n", { "c.ini:2:", "key 'seq_lens'", "1024x" } },
    { "[sweep]\ndensities = nan\n", { "c.ini:2:", "key 'densities'", "finite" } },
    { "[timing]\nmin_time_s = inf\n", { "c.ini:2:", "key 'min_time_s'", "finite" } },
    { "[timing]\nmax_time_s = 1e999\n", { "c.ini:2:", "key 'max_time_s'", "finite" } },
    { "[sweep]\nheads = 2.5\n", { "c.ini:2:", "key 'heads'", "not an integer" } },
    { "[sweep]\nseeds = -1\n", { "c.ini:2:", "key 'seeds'", "seed" } },
    { "[sweep]\nseq_lens = -5\n", { "c.ini:2:", "key 'seq_lens'", "outside" } },
    { "[sweep]\nseq_lens = 0\n", { "c.ini:2:", "key 'seq_lens'", "outside" } },
    { "[sweep]\nhead_dims = 8\n", { "c.ini:2:", "key 'head_dims'", "outside" } },
    { "[sweep]\ncausal = 2\n", { "c.ini:2:", "key 'causal'", "outside" } },
    { "[sweep]\ndepths = 1.5\n", { "c.ini:2:", "key 'depths'", "outside" } },
    { "[sweep]\ndensities = 0.1, 1.5\n", { "c.ini:2:", "key 'densities'", "outside" } },
    { "[sweep]\ndensities = 0\n", { "c.ini:2:", "key 'densities'", "outside" } },
    { "[sweep]\nblock_q = 0\n", { "c.ini:2:", "key 'block_q'", "outside" } },
    { "[sweep]\nthreads = -1\n", { "c.ini:2:", "key 'threads'", "outside" } },
    { "[timing]\npoint_timeout_s = 0\n", { "c.ini:2:", "key 'point_timeout_s'", "must be" } },
    { "[timing]\npoint_mem_gb = -2\n", { "c.ini:2:", "key 'point_mem_gb'", "must be" } },
    { "[timing]\nrounds = 0\n", { "c.ini:2:", "[timing] key 'rounds'", "[1, 16]" } },
    { "[timing]\nrounds = 2.5\n", { "c.ini:2:", "key 'rounds'", "integer" } },
    { "[timing]\npaired = 2\n", { "c.ini:2:", "key 'paired'", "0 or 1" } },
    { "[timing]\nshared_core_check = 3\n", { "c.ini:2:", "key 'shared_core_check'", "0 or 1" } },
    { "[timing]\nmin_sample_ms = -1\n", { "c.ini:2:", "key 'min_sample_ms'", "must be" } },
    { "[timing]\ninterference_pct = 0\n", { "c.ini:2:", "key 'interference_pct'", "must be" } },
    { "[timing]\nmeasure_bandwidth = 2\n", { "c.ini:2:", "key 'measure_bandwidth'", "must be 0 or 1" } },
    { "[timing]\ntimed_tasks = needle, nosuch\n",
      { "c.ini:2:", "key 'timed_tasks'", "unknown task 'nosuch'" } },
    { "[timing]\ntimed_depths = 1.5\n", { "c.ini:2:", "key 'timed_depths'", "outside [0, 1]" } },
    { "[sweep.more]\ndevices = gpu\n", { "c.ini:2:", "[sweep.more] key 'devices'", "grid axes only" } },
    { "[sweep.more]\ntasks = nosuch\n", { "c.ini:2:", "[sweep.more] key 'tasks'", "unknown task" } },
    { "[sweep.more]\nmethods = dense, nosuch\n",
      { "c.ini:2:", "[sweep.more] key 'methods'", "unknown method" } },
    { "[sweep.]\nseq_lens = 512\n", { "c.ini:2:", "[sweep.] key 'seq_lens'", "needs a name" } },
    { "[sweep]\ndensities = native\n[sweep.b]\ndensities = 0.1\n",
      { "c.ini:4:", "[sweep.b] key 'densities'", "native" } },
    { "[sweep]\nseq_lens = 512\n[sweep.b]\nmasks = document:100+200\n",
      { "c.ini:4:", "[sweep.b] key 'masks'", "not N = 512" } },
    { "[calibration]\ntolerance = 1.5\n", { "c.ini:2:", "key 'tolerance'", "must be" } },
    { "[calibration]\nmax_iters = 0\n", { "c.ini:2:", "key 'max_iters'", "must be" } },
    { "[method.window]\nwindow = -3\n", { "c.ini:2:", "key 'window'", "outside" } },
    /* base masks ([sweep] masks, and causal, its old spelling) */
    { "[sweep]\nmasks = sliding:-1\n",
      { "c.ini:2:", "[sweep] key 'masks'", "sliding needs a window W >= 1" } },
    { "[sweep]\nmasks = causal, nosuchmask\n", { "c.ini:2:", "key 'masks'", "unknown mask 'nosuchmask'" } },
    { "[sweep]\nseq_lens = 1024\nmasks = document:256+512\n",
      { "c.ini:3:", "key 'masks'", "sum to 768, not N = 1024" } },
    { "\n[sweep]\nmasks = causal, prefix:768\nseq_lens = 1024, 512\n",
      { "c.ini:3:", "key 'masks'", "prefix:768' at N = 512" } },
    { "[sweep]\nseq_lens = 256\nmasks = document:300\n",
      { "c.ini:3:", "key 'masks'", "300 documents do not fit" } },
    { "[sweep]\nmasks = document\n", { "c.ini:2:", "key 'masks'", "document needs a count" } },
    { "[sweep]\nmasks = document:4:zipf\n", { "c.ini:2:", "key 'masks'", "zipf" } },
    { "[sweep]\nmasks = full:3\n", { "c.ini:2:", "key 'masks'", "takes no argument" } },
    { "[sweep]\nmasks = full, full\n", { "c.ini:2:", "key 'masks'", "listed twice" } },
    { "[sweep]\nmasks = causal,\n", { "c.ini:2:", "key 'masks'", "empty list element" } },
    { "[sweep]\nmasks =\n", { "c.ini:2:", "key 'masks'", "empty" } },
    { "[sweep]\nmasks = causal\nheads = 2\ncausal = 1\n",
      { "c.ini:4:", "key 'causal'", "not both (masks is set at line 2)" } },
    { "[sweep]\ncausal = 0\nmasks = full\n", { "c.ini:3:", "key 'masks'", "not both" } },
    /* huge lengths */
    { "[sweep]\nseq_lens = 99999999999\n", { "c.ini:2:", "key 'seq_lens'", "outside" } },
    { "[sweep]\nseq_lens = 16777216\nheads = 64\nhead_dims = 512\n", { "c.ini", "key 'seq_lens'", "GiB" } },
    /* the phase axis (docs/decode.md) */
    { "[sweep]\nphases = prefill, dekode\n", { "c.ini:2:", "key 'phases'", "unknown phase 'dekode'" } },
    { "[sweep]\nphases = decode, decode\n", { "c.ini:2:", "key 'phases'", "listed twice" } },
    { "[sweep]\nheads = 8\nkv_heads = 3\n", { "c.ini:3:", "key 'kv_heads'", "3 does not divide heads = 8" } },
    { "[sweep]\nheads = 4\nkv_heads = 8\n", { "c.ini:3:", "key 'kv_heads'", "does not divide" } },
    { "[sweep]\nheads = 8\n[sweep.b]\nheads = 4\nkv_heads = 3\n",
      { "c.ini:5:", "[sweep.b] key 'kv_heads'", "does not divide heads = 4" } },
    { "[sweep.b]\nsteps = 4\n", { "c.ini:2:", "key 'steps'", "set once in [sweep]" } },
    { "[sweep]\nphases = decode\nsteps = 0\n", { "c.ini:3:", "key 'steps'", "outside" } },
    { "[sweep]\nphases = decode\nlayers = 2.5\n", { "c.ini:3:", "key 'layers'", "not an integer" } },
    { "[sweep]\nphases = decode\nlayer_corr = 1.5\n", { "c.ini:3:", "key 'layer_corr'", "outside [0, 1]" } },
    { "[sweep]\nphases = decode\nseq_lens = 16000000\nheads = 64\nhead_dims = 256\nbatch = 8\n",
      { "c.ini", "key 'seq_lens'", "GiB" } },
    /* empty lists and elements, repeated names */
    { "[sweep]\nseq_lens =\n", { "c.ini:2:", "key 'seq_lens'", "empty" } },
    { "[sweep]\nheads = 2,,4\n", { "c.ini:2:", "key 'heads'", "empty list element" } },
    { "[sweep]\nmethods = ,\n", { "c.ini:2:", "key 'methods'", "empty" } },
    { "[sweep]\nseq_lens = 512,\n", { "c.ini:2:", "key 'seq_lens'", "empty list element" } },
    { "[sweep]\nmethods = dense, dense\n", { "c.ini:2:", "key 'methods'", "listed twice" } },
    { "[sweep]\nseq_lens = "
      "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,"
      "33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65\n",
      { "c.ini:2:", "key 'seq_lens'", "more than 64" } },
    /* long lines and continuation lines */
    { "[sweep]\nheads = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, "
      "24, 25,"
      " 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, "
      "51, 52, 53, 54, 55, 56, 57, 58, 59, 60\n",
      { "c.ini:2:", "line longer than", "indented lines" } },
    { "[sweep]\nmethods = dense,\n    nosuch\n", { "c.ini:2:", "key 'methods'", "unknown method 'nosuch'" } },
    { "[sweep]\nheads = 2\n  4,\n", { "c.ini:2:", "key 'heads'", "empty list element" } },
    /* duplicate keys and sections */
    { "\n\n[timing]\nwarmup = 1\nwarmup = 2\n", { "c.ini:5:", "[timing] key 'warmup'", "set twice" } },
    { "[sweep]\nheads = 2\n[timing]\nwarmup = 1\n[sweep]\nhead_dims = 32\n",
      { "c.ini:6:", "[sweep] key 'head_dims'", "section [sweep] appears a second time" } },
    /* cross-field and syntax */
    { "[timing]\nmin_repeats = 10\nmax_repeats = 2\n", { "c.ini", "key 'min_repeats'", "max_repeats" } },
    { "this is not ini\n", { "c.ini:1:", "syntax error", "" } },
    { "[sweep\nheads = 2\n", { "c.ini:1:", "syntax error", "" } },
};

Test(bad_input, malformed_configs_exit_2_name_file_line_key_and_touch_nothing)
{
    make_results();
    size_t klen;
    char *before = slurp("keep.h5", &klen);
    cr_assert_not_null(before);
    size_t ncfg = sizeof cfgs / sizeof cfgs[0];
    for (size_t i = 0; i < ncfg; i++) {
        put("c.ini", cfgs[i].text, strlen(cfgs[i].text));
        char *err = NULL;
        int rc = run_ab("run -c c.ini -o keep.h5", &err);
        cr_expect_eq(rc, 2, "config %zu (%s): exit %d, want 2; stderr: %s", i, cfgs[i].text, rc,
                     err ? err : "");
        for (int k = 0; k < 3; k++)
            if (cfgs[i].want[k] && *cfgs[i].want[k])
                cr_expect(err && strstr(err, cfgs[i].want[k]), "config %zu (%s): stderr lacks \"%s\": %s", i,
                          cfgs[i].text, cfgs[i].want[k], err ? err : "");
        cr_expect(err && !strncmp(err, "attnbench: ", 11) && strchr(err, '\n') == err + strlen(err) - 1,
                  "config %zu: not one 'attnbench: ' line: %s", i, err ? err : "");
        free(err);
        size_t l;
        char *now = slurp("keep.h5", &l);
        cr_assert(now && l == klen && !memcmp(now, before, l), "config %zu touched the results file", i);
        free(now);
        cr_expect(!exists("keep.h5.journal") && !exists("keep.h5.tmp"),
                  "config %zu left a journal or tmp file", i);
    }
    free(before);
    cr_expect_geq(ncfg, 30, "the table must hold at least 30 configs");
}

/* Command lines: the config c.ini is valid, keep.h5 a real results file,
 * text.h5 a text file, dir.h5/ a directory. */
struct bad_cli {
    const char *args;
    const char *want[2];
};

static const struct bad_cli clis[] = {
    { "run -c missing.ini -o keep.h5", { "missing.ini", "cannot open config" } },
    { "run -c cdir -o keep.h5", { "cdir", "cannot read config" } },
    { "run -c bin.ini -o keep.h5", { "bin.ini", "not a text file" } },
    { "run -o keep.h5", { "no config", "" } },
    { "run -c c.ini", { "no output", "" } },
    { "run -c", { "-c", "needs a value" } },
    { "run -c c.ini -o keep.h5 --threads abc", { "--threads", "abc" } },
    { "run -c c.ini -o keep.h5 --threads 99999", { "--threads", "99999" } },
    { "run -c c.ini -o keep.h5 --shard 3/2", { "--shard", "3/2" } },
    { "run -c c.ini -o keep.h5 --shard 0/0", { "--shard", "0/0" } },
    { "run -c c.ini -o keep.h5 --shard 1/2x", { "--shard", "1/2x" } },
    { "run -c c.ini -o keep.h5 --shard -1/2", { "--shard", "-1/2" } },
    { "run -c c.ini -o keep.h5 --methods nosuch", { "--methods", "nosuch" } },
    { "run -c c.ini -o keep.h5 --methods dense,dense", { "--methods", "listed twice" } },
    { "run -c c.ini -o keep.h5 --methods ''", { "--methods", "empty" } },
    { "run -c c.ini -o keep.h5 --devices tpu", { "--devices", "tpu" } },
    { "run -c c.ini -o keep.h5 --bogus", { "--bogus", "unknown option" } },
    { "run -c c.ini -o text.h5 --resume", { "text.h5", "not an HDF5 file" } },
    { "run -c c.ini -o dir.h5 --resume", { "dir.h5", "" } },
    { "run -c c.ini -o nodir/x.h5", { "nodir/x.h5", "" } },
    { "show text.h5", { "text.h5", "not an HDF5 file" } },
    { "show dir.h5", { "dir.h5", "" } },
    { "show missing.h5", { "missing.h5", "" } },
    { "export text.h5 -d exp", { "text.h5", "not an HDF5 file" } },
    { "plot text.h5 -d fig", { "text.h5", "not an HDF5 file" } },
    { "merge keep.h5 text.h5 -o merged.h5", { "text.h5", "not an HDF5 file" } },
    { "merge keep.h5 -o", { "-o", "needs a value" } },
    { "merge keep.h5", { "no output", "" } },
    { "merge -o merged.h5", { "no input", "" } },
    { "nosuchcommand", { "nosuchcommand", "" } },
    { "list bogus", { "bogus", "" } },
};

Test(bad_input, malformed_command_lines_exit_2_and_touch_nothing)
{
    make_results();
    static const char *good =
        "[sweep]\ntasks = needle\nmethods = dense\nseq_lens = 256\nheads = 1\nhead_dims = 16\n";
    put("c.ini", good, strlen(good));
    put("bin.ini", "[sweep]\n\0\1\2", 11);
    put("text.h5", "just some text, not results\n", 28);
    char path[512];
    snprintf(path, sizeof path, "%s/dir.h5", g_dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/cdir", g_dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    size_t klen, tlen;
    char *before = slurp("keep.h5", &klen), *tbefore = slurp("text.h5", &tlen);
    size_t n = sizeof clis / sizeof clis[0];
    for (size_t i = 0; i < n; i++) {
        char *err = NULL;
        int rc = run_ab(clis[i].args, &err);
        cr_expect_eq(rc, 2, "'%s': exit %d, want 2; stderr: %s", clis[i].args, rc, err ? err : "");
        for (int k = 0; k < 2; k++)
            if (*clis[i].want[k])
                cr_expect(err && strstr(err, clis[i].want[k]), "'%s': stderr lacks \"%s\": %s", clis[i].args,
                          clis[i].want[k], err ? err : "");
        cr_expect(err && !strncmp(err, "attnbench: ", 11), "'%s': no 'attnbench: ' message: %s", clis[i].args,
                  err ? err : "");
        free(err);
        size_t l;
        char *now = slurp("keep.h5", &l);
        cr_assert(now && l == klen && !memcmp(now, before, l), "'%s' touched keep.h5", clis[i].args);
        free(now);
        now = slurp("text.h5", &l);
        cr_assert(now && l == tlen && !memcmp(now, tbefore, l), "'%s' touched text.h5", clis[i].args);
        free(now);
        cr_expect(!exists("keep.h5.journal") && !exists("text.h5.journal") && !exists("keep.h5.tmp") &&
                      !exists("merged.h5") && !exists("exp") && !exists("fig"),
                  "'%s' left a file behind", clis[i].args);
    }
    free(before);
    free(tbefore);
    cr_expect_geq(n, 30, "the table must hold at least 30 command lines");
}
