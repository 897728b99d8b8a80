/* run.c — `attnbench run`: the command line of a sweep (options, the
 * --dry-run grid and estimate, progress lines); the sweep itself is
 * harness/engine/sweep.c. */
#include "harness/cli/cli.h"
#include "harness/engine/blascore.h"
#include "harness/engine/config.h"
#include "harness/engine/grid.h"
#include "harness/engine/sweep.h"
#include "harness/engine/sysinfo.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct run_opts {
    const char *config, *out;
    int resume, dry_run, quiet, threads, save_tensors, no_estimate;
    ab_plan_opts plan; /* --methods, --devices, --shard */
} run_opts;

static void usage_run(FILE *f)
{
    fprintf(f, "usage: attnbench run -c CONFIG -o OUT.h5 [options]\n"
               "Run the sweep the config describes and store every point in OUT.h5.\n\n"
               "  -c, --config FILE    INI config (see configs/quick.ini)\n"
               "  -o, --out FILE       results file (HDF5); replaced unless --resume\n"
               "      --resume         keep the points already in OUT.h5 and run the rest\n"
               "      --methods a,b    only these methods (default: the config's list, else all)\n"
               "      --devices cpu,gpu  override [sweep] devices\n"
               "      --threads T      OpenMP/BLAS threads (default: [sweep] threads, 0 = all cores)\n"
               "      --shard I/N      run every N-th calibration family (method x density, all lengths\n"
               "                       and depths) starting at I (0 <= I < N)\n"
               "      --dry-run        print the grid and an estimate of the run's time (from a short\n"
               "                       timing of every method on the largest problem at N <= 4096,\n"
               "                       scaled), then exit; nothing is written\n"
               "      --no-estimate    with --dry-run: the grid only (no timing)\n"
               "      --save-tensors   also store Q, K, V, the fp64 reference and every method's\n"
               "                       output and layout under /tensors (small runs only)\n"
               "  -q, --quiet          no progress output\n"
               "  -h, --help           this text\n\n"
               "Exit: 0 all points ok (or unsupported / calib_failed), 1 some points failed\n"
               "(crashed, timeout, oom, error, nan: still recorded), 2 usage or config error\n"
               "(nothing written).\n");
}

static int parse_run_args(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->threads = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define NEED_ARG()                                        \
    do {                                                  \
        if (i + 1 >= argc) {                              \
            ab_errorf("run: option %s needs a value", a); \
            return 2;                                     \
        }                                                 \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_run(stdout);
            return 0;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            NEED_ARG();
            o->config = argv[++i];
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            NEED_ARG();
            o->out = argv[++i];
        } else if (!strcmp(a, "--resume"))
            o->resume = 1;
        else if (!strcmp(a, "--dry-run"))
            o->dry_run = 1;
        else if (!strcmp(a, "--no-estimate"))
            o->no_estimate = 1;
        else if (!strcmp(a, "--save-tensors"))
            o->save_tensors = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet"))
            o->quiet = 1;
        else if (!strcmp(a, "--methods")) {
            NEED_ARG();
            char err[256];
            if (ab_parse_name_list(argv[++i], o->plan.methods, AB_CFG_LIST, &o->plan.n_methods, err,
                                   sizeof err)) {
                ab_errorf("run: --methods: %s", err);
                return 2;
            }
            for (int k = 0; k < o->plan.n_methods; k++)
                if (!ab_method_find(o->plan.methods[k])) {
                    ab_errorf("run: --methods: unknown method '%s' (see: attnbench list methods)",
                              o->plan.methods[k]);
                    return 2;
                }
        } else if (!strcmp(a, "--devices")) {
            NEED_ARG();
            char names[4][AB_CFG_NAME], err[256];
            int n;
            if (ab_parse_name_list(argv[++i], names, 4, &n, err, sizeof err)) {
                ab_errorf("run: --devices: %s", err);
                return 2;
            }
            for (int k = 0; k < n; k++) {
                if (!strcmp(names[k], "cpu"))
                    o->plan.devices |= AB_CPU;
                else if (!strcmp(names[k], "gpu"))
                    o->plan.devices |= AB_GPU;
                else {
                    ab_errorf("run: --devices: unknown device '%s' (cpu, gpu)", names[k]);
                    return 2;
                }
            }
        } else if (!strcmp(a, "--threads")) {
            NEED_ARG();
            char *end;
            long t = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || t < 0 || t > 4096) {
                ab_errorf("run: --threads: '%s' is not an integer in [0, 4096]", argv[i]);
                return 2;
            }
            o->threads = (int)t;
        } else if (!strcmp(a, "--shard")) {
            NEED_ARG();
            int si, sn;
            char extra;
            if (sscanf(argv[++i], "%d/%d%c", &si, &sn, &extra) != 2 || sn < 1 || si < 0 || si >= sn) {
                ab_errorf("run: --shard: '%s' is not I/N with 0 <= I < N", argv[i]);
                return 2;
            }
            o->plan.shard_i = si;
            o->plan.shard_n = sn;
        } else {
            ab_errorf("run: unknown option '%s' (see: attnbench run --help)", a);
            return 2;
        }
#undef NEED_ARG
    }
    if (!o->config) {
        ab_errorf("run: no config given (-c CONFIG); see: attnbench run --help");
        return 2;
    }
    if (!o->out && !o->dry_run) {
        ab_errorf("run: no output file given (-o OUT.h5); see: attnbench run --help");
        return 2;
    }
    return -1;
}

static void fmt_dur(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 864000) {
        snprintf(buf, n, "--:--");
        return;
    }
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

/* h:mm:ss, or days beyond two of them */
static void fmt_long(double s, char *buf, size_t n)
{
    if (s >= 2 * 86400)
        snprintf(buf, n, "%.1f days", s / 86400);
    else
        fmt_dur(s, buf, n);
}

/* The mask, or for the phase axis what else defines the problem. */
static const char *where_of(const base_pt *b, char *buf, size_t n)
{
    if (b->phase == AB_DECODE)
        snprintf(buf, n, "%s decode kv=%d S=%d L=%d B=%d", b->mask, b->kv_heads, b->steps, b->layers,
                 b->batch);
    else if (b->kv_heads != b->heads)
        snprintf(buf, n, "%s kv=%d", b->mask, b->kv_heads);
    else
        snprintf(buf, n, "%s", b->mask);
    return buf;
}

/* ":bf16" after a method's name on the dtype axis (the series names). */
static const char *dt_tag(const job *j) { return j->dtype == AB_BF16 ? ":bf16" : ""; }

/* --dry-run: every point of the plan, one a line. */
static void print_plan(const ab_plan *p, int threads, int shard)
{
    printf("%d points (%d problems), threads=%d%s\n", p->nj, p->nb, threads, shard ? " (this shard)" : "");
    for (int i = 0; i < p->nj; i++) {
        const job *j = &p->jobs[i];
        const base_pt *b = &p->bases[j->base];
        char mp[160], wb[AB_MASK_SPEC + 64];
        ab_params_format(j->m->params, AB_MAX_PARAMS, &j->params, mp, sizeof mp);
        printf(
            "%s  %-18s %-4s %-4s %-8s N=%-6d H=%-2d d=%-3d mask=%s seed=%lld depth=%.2f density=%s%.3g  %s\n",
            j->key, j->m->name, j->device == AB_GPU ? "gpu" : "cpu",
            j->device == AB_GPU   ? "fp16"
            : j->dtype == AB_BF16 ? "bf16"
                                  : "fp32",
            b->task->name, b->n, b->heads, b->d, where_of(b, wb, sizeof wb), (long long)b->seed, b->depth,
            isnan(j->target) ? "native:" : "", isnan(j->target) ? 0.0 : j->target, mp);
    }
    fflush(stdout);
}

/* --dry-run: time every method once on the largest problem of the grid,
 * shrunk to N <= AB_PROBE_N, and print the cost model of the whole run
 * (harness/engine/sweep.c, docs/timing.md). */
static void print_estimate(const ab_config *c, const ab_plan *p, int threads)
{
    static ab_estimate e;
    if (!ab_estimate_plan(p, &e)) return;
    fprintf(stderr,
            "attnbench: estimating: timing %d methods once on %s at N = %d (H = %d, d = %d, mask %s)...\n",
            e.nm, e.probe.task->name, e.probe.n, e.probe.heads, e.probe.d, e.probe.mask);
    if (ab_estimate_run(c, p, threads, &e)) {
        printf("estimate: not available (%s)\n", e.why);
        return;
    }
    char tb[32], db[32], cb[32], sb[32], mb[32];
    fmt_long(e.total_s, tb, sizeof tb);
    fmt_long(e.data_s, db, sizeof db);
    fmt_long(e.cal_s, cb, sizeof cb);
    fmt_long(e.score_s, sb, sizeof sb);
    fmt_long(e.time_s, mb, sizeof mb);
    printf("estimate: %d points, about %s of wall time on this machine with %d thread%s\n", p->nj, tb,
           threads, threads > 1 ? "s" : "");
    printf("  data + fp64 reference %s, calibration %s, scoring %s, timing %s (%d round%s%s; h:mm:ss)\n", db,
           cb, sb, mb, c->rounds, c->rounds > 1 ? "s" : "", c->paired ? ", paired with dense" : "");
    printf("  points at the largest N = %d: %.0f%% of the time; dense at that N: ~%.3g ms per call\n",
           e.big_n, 100 * e.big_share, e.dense_big_ms);
    printf("  (each method timed once at N = %d and scaled by N^2 x heads x d x allowed pairs; selectors "
           "that grow\n"
           "   faster, or a machine under load, make it longer)\n",
           e.probe.n);
    if (e.total_s > 2 * 3600)
        printf("  that is long for one machine: split it with --shard I/N, or on a cluster with\n"
               "  scripts/slurm_sweep.sh %s -n 64 -o OUT.h5 (docs/scaling.md)\n",
               c->path);
}

/* ---- progress on stderr -------------------------------------------------- */
typedef struct progress {
    const ab_config *c;
    const run_opts *o;
    int threads;
} progress;

static void eta_of(const ab_sweep_progress *s, char *buf, size_t n)
{
    fmt_dur(s->units_done < s->units ? s->elapsed_s / s->units_done * (s->units - s->units_done) : 0, buf, n);
}

static void density_of(const job *j, char *buf, size_t n)
{
    if (isnan(j->target))
        snprintf(buf, n, "native");
    else
        snprintf(buf, n, "%.3g", j->target);
}

static void on_start(void *ctx, const ab_sweep_progress *s)
{
    const progress *g = ctx;
    fprintf(stderr,
            "attnbench: %d points to run (%d already stored), %d threads, %d timing round%s per point%s, "
            "output %s\n",
            s->todo, s->skipped, g->threads, g->c->rounds, g->c->rounds > 1 ? "s" : "",
            g->c->paired ? " (paired with dense)" : "", g->o->out);
}

/* The fields of a child run's progress line: ETA, elapsed time, density,
 * base mask, and what the run gave ("12.3 ms", "scored" when it had no
 * timed sample, "" unless ok). */
typedef struct ran_fields {
    char eta[32], elb[32], dens[32], wb[AB_MASK_SPEC + 64], last[48];
} ran_fields;

static void ran_fields_of(const ab_sweep_progress *s, ran_fields *f)
{
    const ab_point *pr = s->p;
    eta_of(s, f->eta, sizeof f->eta);
    fmt_dur(s->elapsed_s, f->elb, sizeof f->elb);
    density_of(s->j, f->dens, sizeof f->dens);
    where_of(s->b, f->wb, sizeof f->wb);
    if (strcmp(pr->status, "ok"))
        f->last[0] = 0;
    else if (pr->n_samples > 0)
        snprintf(f->last, sizeof f->last, "%.3g ms", pr->sample_select_ms[0] + pr->sample_run_ms[0]);
    else
        snprintf(f->last, sizeof f->last, "scored");
}

/* On a terminal: one line, rewritten after every child. */
static void on_ran(void *ctx, const ab_sweep_progress *s)
{
    const progress *g = ctx;
    ran_fields f;
    ran_fields_of(s, &f);
    fprintf(stderr,
            "\r\033[K[%d/%d points, round %d/%d] %s%s %s N=%d d=%d mask=%s density=%s: %s %s | %s elapsed, "
            "ETA %s",
            s->done, s->todo, s->round + 1, g->c->rounds, s->j->m->name, dt_tag(s->j), s->b->task->name,
            s->b->n, s->b->d, f.wb, f.dens, s->p->status, f.last, f.elb, f.eta);
}

/* Elsewhere (a log): one line per child run as it ends. A problem's points
 * are stored together after the last round of all of them (the rounds
 * interleave its methods, docs/timing.md), so without these a long problem
 * would leave the log silent until its end. */
static void on_ran_log(void *ctx, const ab_sweep_progress *s)
{
    const progress *g = ctx;
    ran_fields f;
    ran_fields_of(s, &f);
    fprintf(
        stderr,
        "  run %ld/%ld (round %d/%d) %s%s %s N=%d H=%d d=%d mask=%s density=%s: %s %s | %s elapsed, ETA %s\n",
        s->units_done, s->units, s->round + 1, g->c->rounds, s->j->m->name, dt_tag(s->j), s->b->task->name,
        s->b->n, s->b->heads, s->b->d, f.wb, f.dens, s->p->status, f.last, f.elb, f.eta);
}

/* Elsewhere (a log): one line per stored point. */
static void on_stored(void *ctx, const ab_sweep_progress *s)
{
    const ab_point *pr = s->p;
    const base_pt *b = s->b;
    char eta[32], dens[32], wb[AB_MASK_SPEC + 64], rel[48] = "";
    eta_of(s, eta, sizeof eta);
    density_of(s->j, dens, sizeof dens);
    /* GPU points have no paired dense (a CPU protocol): export divides by
     * the GPU dense point instead, so print nothing rather than "nan". */
    if (isfinite(pr->rel_dense)) snprintf(rel, sizeof rel, " x dense %.3g", pr->rel_dense);
    fprintf(stderr,
            "[%d/%d] %s%s %s N=%d H=%d d=%d mask=%s depth=%.2g density=%s -> %s total=%.4g ms [%.4g, %.4g]%s "
            "recall=%.3f acc=%.3f%s%s%s (ETA %s)\n",
            s->done, s->todo, s->j->m->name, dt_tag(s->j), b->task->name, b->n, b->heads, b->d,
            where_of(b, wb, sizeof wb), b->depth, dens, pr->status, pr->total_ms, pr->total_lo_ms,
            pr->total_hi_ms, rel, pr->recall_mass, pr->accuracy, pr->timing[0] ? " [" : "", pr->timing,
            pr->timing[0] ? "]" : "", eta);
    if (pr->message[0]) fprintf(stderr, "    %s\n", pr->message);
}

static void on_end(void *ctx, const ab_sweep_progress *s) { fprintf(stderr, "\n"); }

/* The sweep into o->out, with progress unless --quiet; the exit code. */
static int run_sweep(const ab_config *c, const ab_plan *plan, const run_opts *o, int threads, int argc,
                     char **argv)
{
    ab_env env;
    memset(&env, 0, sizeof env);
    ab_env_capture(&env, c, argc + 1, argv - 1, threads); /* argv[-1]: the program, as main() passes it */
    const int tty = !o->quiet && isatty(STDERR_FILENO);
    progress g = { c, o, threads };
    const ab_sweep_reporter rep = { &g, o->quiet ? NULL : on_start,
                                    tty        ? on_ran
                                    : o->quiet ? NULL
                                               : on_ran_log,
                                    !o->quiet && !tty ? on_stored : NULL, tty ? on_end : NULL };
    const ab_sweep_opts so = { o->out, &env, o->resume, threads, o->save_tensors };
    ab_sweep_result res;
    char err[1024];
    int rc = ab_sweep_run(c, plan, &so, &rep, &res, err, sizeof err);
    ab_env_free(&env);
    if (rc) {
        ab_errorf("%s", err);
        return 2;
    }
    if (res.signal) {
        fprintf(stderr,
                "attnbench: interrupted by signal %d: %d completed points are stored in %s; run again with "
                "--resume to finish\n",
                res.signal, res.done, o->out);
        return 1;
    }
    if (res.store_failed) {
        fprintf(
            stderr,
            "attnbench: stopped because the results could not be written (see above); every point completed "
            "before that is kept in %s and its .journal; fix the cause (disk space, permissions) and run "
            "again with --resume\n",
            o->out);
        return 1;
    }
    if (!o->quiet)
        fprintf(stderr, "attnbench: %d points done (%d failed) in %.1f s -> %s\n", res.done, res.failed,
                res.elapsed_s, o->out);
    return res.failed ? 1 : 0;
}

int ab_cmd_run(int argc, char **argv)
{
    run_opts o;
    int prc = parse_run_args(argc, argv, &o);
    if (prc >= 0) return prc;

    ab_config *c = malloc(sizeof *c);
    if (!c) {
        ab_errorf("out of memory");
        return 2;
    }
    char err[1024];
    ab_plan plan = { 0 };
    int rc = 2;
    if (ab_config_load(c, o.config, err, sizeof err) || ab_config_check(c, err, sizeof err)) {
        ab_errorf("%s", err);
        goto done;
    }
    int threads = o.threads >= 0 ? o.threads : c->threads;
    if (threads == 0) threads = ab_default_threads();
    if (ab_plan_build(c, &o.plan, threads, &plan, err, sizeof err)) {
        ab_errorf("%s", err);
        goto done;
    }
    if (!o.quiet) ab_blas_core_announce(); /* the input is good: now say how OpenBLAS runs */
    if (o.dry_run) {
        print_plan(&plan, threads, o.plan.shard_n > 1);
        if (!o.no_estimate) print_estimate(c, &plan, threads);
        rc = 0;
    } else
        rc = run_sweep(c, &plan, &o, threads, argc, argv);
done:
    ab_plan_free(&plan);
    ab_config_free(c);
    free(c);
    return rc;
}
