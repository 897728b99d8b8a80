/* test_kill_long.c — the long kill test of issue 9 (`make test-long`; the
 * short version is cli/sigkill_then_resume_equals_uninterrupted in `make
 * test`). A sweep is stopped $AB_KILL_ROUNDS times (50 in make test-long)
 * at seeded random moments — mostly SIGKILL, every 5th round SIGTERM and
 * every 7th SIGINT — and resumed each time; after every stop the file must
 * open, a SIGTERM/SIGINT stop must exit 1 saying how to resume and leave no
 * journal. Finally the resumed file must hold exactly the points of an
 * uninterrupted run, each once, with the same quality numbers. The final
 * file is copied to $AB_KILL_KEEP (if set) for h5dump / h5py checks.
 * Skipped unless AB_KILL_ROUNDS is set. Needs $AB_BIN. */
#include <criterion/criterion.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness/store/point.h"
#include "harness/store/store.h"

static char g_dir[256];

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/ab_kill_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
}

TestSuite(kill_long, .init = setup, .fini = teardown);

static const char *bin(void)
{
    const char *b = getenv("AB_BIN");
    return b ? b : "build/attnbench";
}

/* 2 lengths x 4 seeds x (dense + window x 3 + oracle_topk_block x 3) = 56
 * points of ~0.1 s each: long enough that 50 stops land everywhere (store
 * open, data child, point children, rewrites), short enough for CI. */
static const char *cfg = "[sweep]\n"
                         "tasks = needle\n"
                         "methods = dense, window, oracle_topk_block\n"
                         "seq_lens = 256, 512\n"
                         "heads = 2\n"
                         "head_dims = 32\n"
                         "seeds = 1, 2, 3, 4\n"
                         "densities = 0.2, 0.35, 0.5\n"
                         "block_q = 32\n"
                         "block_k = 32\n"
                         "threads = 1\n"
                         "[timing]\n"
                         "warmup = 0\n"
                         "min_repeats = 3\n"
                         "max_repeats = 1000\n"
                         "min_time_s = 0.08\n"
                         "max_time_s = 1\n";

static pid_t spawn(const char *args, const char *errname)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(g_dir)) _exit(127);
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "exec '%s' %s -q >/dev/null 2>%s", bin(), args, errname);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const ab_point *)a)->key, ((const ab_point *)b)->key);
}

static ab_point *read_sorted(const char *name, size_t *n)
{
    char path[400], err[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    ab_point *p = NULL;
    ab_env env;
    memset(&env, 0, sizeof env);
    cr_assert_eq(ab_results_read(path, &p, n, &env, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
    qsort(p, *n, sizeof *p, cmp_key);
    return p;
}

static int run_wait(const char *args)
{
    pid_t pid = spawn(args, "/dev/null");
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

Test(kill_long, stops_at_random_moments_then_resume_equals_uninterrupted)
{
    const char *rs = getenv("AB_KILL_ROUNDS");
    if (!rs) cr_skip_test("set AB_KILL_ROUNDS (make test-long) to run the long kill test");
    int rounds = atoi(rs);
    unsigned seed = getenv("AB_KILL_SEED") ? (unsigned)strtoul(getenv("AB_KILL_SEED"), NULL, 10) : 20240901u;
    char path[400];
    snprintf(path, sizeof path, "%s/c.ini", g_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(cfg, f);
    fclose(f);
    cr_assert_eq(run_wait("run -c c.ini -o ref.h5"), 0, "the uninterrupted run failed");

    int kills = 0, terms = 0, ints = 0, finished_early = 0;
    for (int r = 0; r < rounds; r++) {
        pid_t pid = spawn(r ? "run -c c.ini -o k.h5 --resume" : "run -c c.ini -o k.h5", "err.txt");
        seed = seed * 1103515245u + 12345u;
        int ms = 30 + (int)((seed >> 16) % 500);
        struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
        int sig = r % 7 == 6 ? SIGINT : r % 5 == 4 ? SIGTERM : SIGKILL;
        kill(pid, sig);
        int st;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            finished_early++; /* the sweep was done before the signal */
        } else if (sig == SIGKILL) {
            cr_expect(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "round %d: not killed", r);
            kills++;
        } else {
            /* clean stop: exit 1, a message, no journal. The signal may land
             * before the handler is installed (then it kills, like SIGKILL). */
            if (WIFEXITED(st)) {
                cr_expect_eq(WEXITSTATUS(st), 1, "round %d: a clean stop exits %d, want 1", r,
                             WEXITSTATUS(st));
                char ep[400];
                snprintf(ep, sizeof ep, "%s/err.txt", g_dir);
                FILE *e = fopen(ep, "r");
                char buf[4096] = "";
                if (e) {
                    size_t l = fread(buf, 1, sizeof buf - 1, e);
                    buf[l] = 0;
                    fclose(e);
                }
                if (WEXITSTATUS(st) == 1)
                    cr_expect(strstr(buf, "interrupted by signal") && strstr(buf, "--resume"),
                              "round %d: no clean-stop message: %s", r, buf);
                snprintf(ep, sizeof ep, "%s/k.h5.journal", g_dir);
                cr_expect(access(ep, F_OK) != 0, "round %d: a clean stop left a journal", r);
                if (sig == SIGTERM)
                    terms++;
                else
                    ints++;
            } else
                kills++;
        }
        snprintf(path, sizeof path, "%s/k.h5", g_dir);
        if (access(path, F_OK) == 0) {
            size_t n;
            ab_point *p = read_sorted("k.h5", &n);
            for (size_t i = 1; i < n; i++)
                cr_assert(strcmp(p[i].key, p[i - 1].key), "round %d: key twice", r);
            free(p);
        }
    }
    cr_log_info("kill_long: %d rounds: %d killed, %d SIGTERM and %d SIGINT clean stops, %d finished first",
                rounds, kills, terms, ints, finished_early);
    fprintf(stderr,
            "kill_long: %d rounds: %d killed, %d SIGTERM and %d SIGINT clean stops, %d finished first\n",
            rounds, kills, terms, ints, finished_early);
    cr_assert_eq(run_wait("run -c c.ini -o k.h5 --resume"), 0, "the final --resume failed");
    size_t na, nb;
    ab_point *a = read_sorted("ref.h5", &na);
    ab_point *b = read_sorted("k.h5", &nb);
    cr_assert_eq(na, nb, "uninterrupted %zu points, stopped+resumed %zu", na, nb);
    for (size_t i = 0; i < na; i++) {
        cr_assert_str_eq(a[i].key, b[i].key);
        if (i) cr_assert(strcmp(b[i].key, b[i - 1].key) != 0, "point %s stored twice", b[i].key);
        cr_expect_str_eq(a[i].status, b[i].status);
#define SAME(fl) (a[i].fl == b[i].fl || (isnan(a[i].fl) && isnan(b[i].fl)))
        cr_expect(SAME(achieved_density) && SAME(knob_value), "%s: density/knob differ", a[i].method);
        cr_expect(SAME(recall_mass) && SAME(recall_topk) && SAME(accuracy), "%s: quality differs",
                  a[i].method);
        cr_expect(SAME(rel_l2_err) && SAME(max_abs_err), "%s: errors differ", a[i].method);
#undef SAME
    }
    free(a);
    free(b);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "h5dump -H '%s/k.h5' >/dev/null 2>&1", g_dir);
    cr_expect_eq(system(cmd), 0, "h5dump cannot read the resumed file");
    const char *keep = getenv("AB_KILL_KEEP");
    if (keep) {
        snprintf(cmd, sizeof cmd, "cp '%s/k.h5' '%s' && cp '%s/ref.h5' '%s.ref.h5'", g_dir, keep, g_dir,
                 keep);
        cr_expect_eq(system(cmd), 0, "cannot copy the result to %s", keep);
    }
}
