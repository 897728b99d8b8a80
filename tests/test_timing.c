/* test_timing.c — the timing protocol (docs/timing.md):
 *   - the hierarchical bootstrap interval of a median: deterministic for a
 *     seed, brackets the median, wider when rounds disagree than when the
 *     same spread sits inside one round, safe with unequal rounds;
 *   - a sweep with rounds = 3: every timed point has samples from three
 *     child processes, a paired ratio to dense with an interval around it,
 *     a latency interval around total_ms; the dense point is its own
 *     baseline; points outside timed_tasks / timed_depths are scored only
 *     (no time, flagged untimed); a [sweep.NAME] block adds its grid
 *     (inheriting the axes it does not set) and a point two grids share
 *     runs once. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/store/point.h"
#include "harness/store/store.h"
#include "harness/engine/timing.h"

Test(timing, median_ci_brackets_the_median_and_is_deterministic)
{
    double x[60];
    int g[60];
    for (int i = 0; i < 60; i++) {
        x[i] = 10.0 + (double)((i * 37) % 11) * 0.1;
        g[i] = i / 20;
    }
    double lo, hi, lo2, hi2;
    ab_median_ci(x, g, 60, 0.95, 2000, 42, &lo, &hi);
    ab_median_ci(x, g, 60, 0.95, 2000, 42, &lo2, &hi2);
    double med = ab_median(x, 60);
    cr_expect(lo <= med && med <= hi, "[%g, %g] misses the median %g", lo, hi, med);
    cr_expect(lo == lo2 && hi == hi2, "same seed, different interval");
    cr_expect(hi - lo < 1.0, "interval too wide: [%g, %g]", lo, hi);
}

Test(timing, median_ci_counts_the_spread_between_rounds)
{
    /* the same 60 values: once shuffled over three rounds, once with each
     * round holding one level (rounds disagree): the second interval is wider */
    double x[60];
    int mixed[60], split[60];
    for (int i = 0; i < 60; i++) {
        x[i] = 10.0 + (double)(i / 20);
        mixed[i] = i % 3;
        split[i] = i / 20;
    }
    double lo1, hi1, lo2, hi2;
    ab_median_ci(x, mixed, 60, 0.95, 2000, 7, &lo1, &hi1);
    ab_median_ci(x, split, 60, 0.95, 2000, 7, &lo2, &hi2);
    cr_expect(hi2 - lo2 > hi1 - lo1, "rounds that disagree give [%g, %g], mixed [%g, %g]", lo2, hi2, lo1,
              hi1);
    cr_expect(lo2 <= 10.0 + 1e-12 && hi2 >= 12.0 - 1e-12, "between-round spread not covered: [%g, %g]", lo2,
              hi2);
}

Test(timing, median_ci_with_unequal_rounds_and_edge_cases)
{
    /* a big round drawn three times must fit (this overflowed once) */
    double x[203];
    int g[203];
    for (int i = 0; i < 203; i++) {
        x[i] = (double)i;
        g[i] = i < 200 ? 0 : i - 199;
    }
    double lo, hi;
    ab_median_ci(x, g, 203, 0.95, 500, 1, &lo, &hi);
    cr_expect(isfinite(lo) && isfinite(hi) && lo <= hi);
    ab_median_ci(x, NULL, 0, 0.95, 500, 1, &lo, &hi);
    cr_expect(isnan(lo) && isnan(hi), "no samples: NaN");
    double one = 3.0;
    ab_median_ci(&one, NULL, 1, 0.95, 100, 1, &lo, &hi);
    cr_expect(lo == 3.0 && hi == 3.0);
}

Test(timing, cpuload_reads_this_machine)
{
    ab_cpuload a, b;
    ab_cpuload_read(&a);
    volatile double s = 0;
    for (int i = 0; i < 20000000; i++) s += i * 1e-9;
    ab_cpuload_read(&b);
    double foreign, steal, total;
    ab_cpuload_diff(&a, &b, &foreign, &steal, &total);
    cr_expect(a.ok && b.ok, "/proc/stat unreadable");
    cr_expect(b.self_s > a.self_s, "our own CPU time did not advance");
    cr_expect(foreign >= 0 && steal >= 0 && total >= 0);
}

/* ---- the protocol end to end --------------------------------------------- */
static char g_dir[256];
static void mk(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/ab_timing_XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}
static void rm(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) {}
}
TestSuite(protocol, .init = mk, .fini = rm, .timeout = 240);

static const char *proto_cfg = "[sweep]\n"
                               "tasks = needle\n"
                               "methods = dense, window, oracle_topk_block\n"
                               "seq_lens = 512, 1024\n"
                               "heads = 1\n"
                               "head_dims = 32\n"
                               "depths = 0.25, 0.5\n"
                               "densities = 0.5\n"
                               "block_q = 32\n"
                               "block_k = 32\n"
                               "threads = 1\n"
                               "[timing]\n"
                               "rounds = 3\n"
                               "warmup = 0\n"
                               "min_repeats = 2\n"
                               "max_repeats = 4\n"
                               "min_time_s = 0\n"
                               "min_sample_ms = 2\n"
                               "timed_tasks = needle\n"
                               "timed_depths = 0.5\n"
                               "[sweep.pk]\n"
                               "tasks = passkey\n"
                               "seq_lens = 1024\n"
                               "depths = 0.75\n"
                               "[sweep.overlap]\n"
                               "seq_lens = 1024\n"
                               "depths = 0.5\n";

/* Write config `text` as g_dir/NAME.ini, run it into g_dir/NAME.h5 and
 * read the points back. */
static void run_config(const char *name, const char *text, ab_point **p, size_t *n)
{
    const char *bin = getenv("AB_BIN");
    char cfg[300], out[300], cmd[1024], err[300];
    snprintf(cfg, sizeof cfg, "%s/%s.ini", g_dir, name);
    snprintf(out, sizeof out, "%s/%s.h5", g_dir, name);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' run -c '%s' -o '%s' -q", bin ? bin : "build/attnbench", cfg, out);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "run of %s failed", name);
    cr_assert_eq(ab_results_read(out, p, n, NULL, err, sizeof err), 0, "%s", err);
}

Test(protocol, rounds_pairs_intervals_and_untimed_points)
{
    ab_point *p = NULL;
    size_t n = 0;
    run_config("c", proto_cfg, &p, &n);
    /* needle: 2 N x 2 depths x 3 methods; block pk: passkey at N = 1024, depth
     * 0.75; block overlap: needle N = 1024 depth 0.5, already in [sweep] */
    cr_assert_eq(n, 15u, "points: %zu", n);
    int timed = 0, untimed = 0;
    for (size_t i = 0; i < n; i++) {
        const ab_point *q = &p[i];
        cr_assert_str_eq(q->status, "ok", "%s %s N=%d: %s", q->method, q->task, q->seq_len, q->message);
        if (!strcmp(q->task, "passkey")) {
            cr_expect_eq(q->seq_len, 1024);
            cr_expect_eq(q->depth, 0.75);
        }
        const int want_timed = !strcmp(q->task, "needle") && q->depth == 0.5;
        if (!want_timed) {
            untimed++;
            cr_expect(isnan(q->total_ms) && q->n_samples == 0 && q->rounds == 0,
                      "%s: scored-only point carries a time", q->method);
            cr_expect(strstr(q->timing, "untimed"), "%s: flags '%s'", q->method, q->timing);
            cr_expect(isfinite(q->recall_mass), "%s: scored-only point has no recall", q->method);
            continue;
        }
        timed++;
        cr_expect_eq(q->rounds, 3, "%s N=%d: %d rounds", q->method, q->seq_len, q->rounds);
        cr_expect(isnan(q->shared_pct), "%s: 1 thread, yet a shared-core figure %g", q->method,
                  q->shared_pct);
        int seen[3] = { 0 };
        for (int k = 0; k < q->n_samples; k++) {
            cr_assert(q->sample_round[k] >= 0 && q->sample_round[k] < 3);
            seen[q->sample_round[k]]++;
            cr_expect(q->sample_calls[k] >= 1);
        }
        for (int r = 0; r < 3; r++)
            cr_expect(seen[r] >= 2 && seen[r] <= 4, "%s: round %d has %d samples", q->method, r, seen[r]);
        cr_expect(q->total_lo_ms <= q->total_ms && q->total_ms <= q->total_hi_ms, "%s: %g outside [%g, %g]",
                  q->method, q->total_ms, q->total_lo_ms, q->total_hi_ms);
        if (!strcmp(q->method, "dense")) {
            cr_expect_eq(q->rel_dense, 1.0, "dense is its own baseline");
            continue;
        }
        cr_expect(q->rel_dense > 0 && q->rel_lo <= q->rel_dense && q->rel_dense <= q->rel_hi,
                  "%s: ratio %g [%g, %g]", q->method, q->rel_dense, q->rel_lo, q->rel_hi);
        for (int k = 0; k < q->n_samples; k++)
            cr_expect(q->sample_dense_ms[k] > 0, "%s: unpaired sample %d", q->method, k);
        /* the paired ratio is the median of the stored samples' ratios
         * (recomputed here: exact, whatever the machine did) */
        double rs[64];
        int nr = 0;
        for (int k = 0; k < q->n_samples && nr < 64; k++)
            rs[nr++] = (q->sample_select_ms[k] + q->sample_run_ms[k]) / q->sample_dense_ms[k];
        const double med = ab_median(rs, nr);
        cr_expect(fabs(med - q->rel_dense) <= 1e-9 * med,
                  "%s: rel_dense %.17g, median of sample ratios %.17g", q->method, q->rel_dense, med);
    }
    cr_expect_eq(timed, 6);
    cr_expect_eq(untimed, 9);
    free(p);
}

/* With 2 threads every timed point says what share of its sample pairs the
 * shared-core guard dropped (0-100 %); shared_core_check = 0 turns it off. */
static void run_two_threads(int check, ab_point **p, size_t *n)
{
    char text[512], name[16];
    snprintf(name, sizeof name, "two%d", check);
    snprintf(text, sizeof text,
             "[sweep]\ntasks = needle\nmethods = dense, window\nseq_lens = 512\nheads = 2\nhead_dims = 32\n"
             "densities = 0.5\nblock_q = 32\nblock_k = 32\nthreads = 2\n"
             "[timing]\nrounds = 2\nwarmup = 0\nmin_repeats = 2\nmax_repeats = 3\nmin_time_s = 0\n"
             "min_sample_ms = 1\nshared_core_check = %d\n",
             check);
    run_config(name, text, p, n);
    cr_assert_eq(*n, 2u);
}

Test(protocol, two_threads_record_shared_core_drops)
{
    ab_point *p = NULL;
    size_t n = 0;
    run_two_threads(1, &p, &n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(p[i].status, "ok", "%s: %s", p[i].method, p[i].message);
        cr_expect(p[i].shared_pct >= 0 && p[i].shared_pct <= 100, "%s: shared_pct %g", p[i].method,
                  p[i].shared_pct);
        cr_expect(p[i].n_samples >= 4, "%s: %d samples kept", p[i].method, p[i].n_samples);
    }
    free(p);
    run_two_threads(0, &p, &n);
    for (size_t i = 0; i < n; i++)
        cr_expect(isnan(p[i].shared_pct), "%s: check off, yet %g", p[i].method, p[i].shared_pct);
    free(p);
}

Test(timing, team_probe_is_the_slowest_thread)
{
    const double one = ab_fma_probe(2.0), team1 = ab_fma_probe_team(1, 2.0),
                 team2 = ab_fma_probe_team(2, 2.0);
    cr_expect(one > 0 && team1 > 0 && team2 > 0, "probes %g %g %g", one, team1, team2);
    /* one thread's rate; two threads each run at most one core's rate */
    cr_expect(team1 < 3 * one && one < 3 * team1, "1-thread team %g vs probe %g", team1, one);
    cr_expect(team2 < 3 * one, "2-thread team's slowest %g vs one thread %g", team2, one);
}

/* --dry-run times every method once on the largest problem and prints an
 * estimate of the whole run; --no-estimate prints the grid only. */
Test(protocol, dry_run_prints_an_estimate)
{
    const char *bin = getenv("AB_BIN");
    char cfg[300], cmd[1024], outf[300];
    snprintf(cfg, sizeof cfg, "%s/c.ini", g_dir);
    snprintf(outf, sizeof outf, "%s/dry.txt", g_dir);
    FILE *f = fopen(cfg, "w");
    cr_assert_not_null(f);
    fputs(proto_cfg, f);
    fclose(f);
    for (int no = 0; no < 2; no++) {
        snprintf(cmd, sizeof cmd, "'%s' run -c '%s' --dry-run %s > '%s' 2>/dev/null",
                 bin ? bin : "build/attnbench", cfg, no ? "--no-estimate" : "", outf);
        int st = system(cmd);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "dry run failed");
        f = fopen(outf, "r");
        cr_assert_not_null(f);
        char buf[65536];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        cr_expect(strstr(buf, "15 points"), "grid size missing:\n%s", buf);
        if (no)
            cr_expect(!strstr(buf, "estimate:"), "--no-estimate still estimates");
        else
            cr_expect(strstr(buf, "estimate: ") && strstr(buf, "timing"), "no estimate:\n%s", buf);
    }
}
