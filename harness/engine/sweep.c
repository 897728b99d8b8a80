/* sweep.c — one sweep (sweep.h): generate each problem of the plan once
 * and measure every (method, device, density) on it in an isolated child
 * process with a time limit; append each point to the crash-safe store as
 * soon as it ends. Also the --dry-run estimate, which times a probe problem
 * the same way.
 *
 * Process structure (libgomp is not fork-safe: a process that ran an OpenMP
 * region cannot use OpenMP in a forked child, so the parent never does):
 *   parent ── mmap a shared arena for one problem (problem.c)
 *          ├─ data child: generate Q, K, V and the answer into the arena,
 *          │              build the fp64 reference on the scored rows
 *          └─ one child per point: calibrate, time select() and run()
 *                                  apart, score; write the row to a pipe
 *                                  (measure.c)
 * A crash, timeout or out-of-memory in a child becomes a status; the sweep
 * goes on. */
#include "harness/engine/sweep.h"
#include "harness/engine/gpu.h"
#include "harness/engine/measure.h"
#include "harness/engine/problem.h"
#include "harness/engine/tensors.h"
#include "harness/engine/timing.h"
#include "runtime/errors.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"
#include "runtime/isolate.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

void openblas_set_num_threads(int n);

/* ---- children ------------------------------------------------------------ */
static volatile sig_atomic_t g_stop = 0; /* set by SIGINT/SIGTERM only */
static void on_signal(int sig) { g_stop = sig; }

/* Fork fn(arg) into a child; wait up to timeout_s for it, reading `len`
 * bytes it writes into buf. Returns: 1 got the bytes, 0 no bytes (see
 * *wstatus), -2 timeout (child killed), -3 interrupted, -1 fork error. */
#define AB_EXIT_NOMEM 4 /* a point's child could not allocate its result */
static int run_isolated(ab_child_fn fn, void *arg, void *buf, size_t len, double timeout_s, int *wstatus,
                        struct rusage *ru)
{
    const ab_isolate_opts o = { timeout_s, &g_stop, AB_ISO_DFL_SIGNALS };
    return ab_isolate(fn, arg, buf, len, &o, wstatus, ru);
}

typedef struct data_arg {
    arena_hdr *a;
    const base_pt *b;
    const ab_config *c;
    int threads;
    const char *save_dir, *problem;
} data_arg;
static void data_entry(void *arg, int fd)
{
    data_arg *d = arg;
    data_child(d->a, d->b, d->c, d->threads, d->save_dir, d->problem);
    char ok = 1;
    if (ab_write_all(fd, &ok, 1)) _exit(3);
}

/* This process's mapped address space (VmSize), 0 if unknown. */
static double vm_size_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    double kb = 0;
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "VmSize: %lf kB", &kb) == 1) break;
        fclose(f);
    }
    return kb * 1024.0;
}

static void point_entry(void *arg, int fd)
{
    point_ctx *x = arg;
    /* Runaway allocation must fail here (ENOMEM, abort) rather than wake
     * the machine's OOM killer; classify_failure then says "oom". Not for
     * GPU points: the CUDA runtime maps far more address space than RAM. */
    if (x->mem_limit > 0 && x->j->device != AB_GPU) { /* CUDA reserves huge address ranges */
        /* The budget is on top of what is already mapped: the program, its
         * libraries (a CUDA build maps cuBLAS, hundreds of MiB) and the
         * shared problem arena. */
        double base = vm_size_bytes();
        struct rlimit rl = { (rlim_t)(base + x->mem_limit), (rlim_t)(base + x->mem_limit) };
        setrlimit(RLIMIT_AS, &rl);
    }
    ab_point *p = malloc(sizeof *p);
    if (!p) _exit(AB_EXIT_NOMEM);
    fill_point_ids(p, x->b, x->j, x->threads);
    measure_point(x, p);
    if (ab_write_all(fd, p, sizeof *p)) _exit(5);
    free(p);
}

/* A child that died without a result. SIGKILL is only ever sent by us on
 * timeout or interrupt (handled before), so another SIGKILL is the kernel's
 * OOM killer. A child that died (any signal, or an exit without a result)
 * after its resident peak reached half of its address-space limit ran out
 * of memory under RLIMIT_AS: malloc failed and the code aborted or crashed. */
static void classify_failure(ab_point *p, int res, int wstatus, double timeout_s, const struct rusage *ru,
                             double mem_limit)
{
    double peak = ru ? (double)ru->ru_maxrss * 1024.0 : 0; /* ru_maxrss is in KiB */
    int near_limit = mem_limit > 0 && peak >= 0.5 * mem_limit;
    char mem[160] = "";
    if (mem_limit > 0)
        snprintf(mem, sizeof mem,
                 " after reaching %.2f GiB resident of its %.2f GiB limit ([timing] point_mem_gb)",
                 peak / 1073741824.0, mem_limit / 1073741824.0);
    if (res == -2)
        ab_point_set_status(p, "timeout", "no result within point_timeout_s = %g s; child killed", timeout_s);
    else if (res == -1)
        ab_point_set_status(p, "error", "fork failed: %s", strerror(errno));
    else if (WIFSIGNALED(wstatus)) {
        int sg = WTERMSIG(wstatus);
        if (sg == SIGKILL)
            ab_point_set_status(p, "oom",
                                "child killed by a SIGKILL attnbench did not send (the out-of-memory "
                                "killer), peak %.2f GiB resident",
                                peak / 1073741824.0);
        else if (near_limit)
            ab_point_set_status(p, "oom", "out of memory: child killed by signal %d (%s)%s", sg,
                                strsignal(sg), mem);
        else
            ab_point_set_status(p, "crashed", "child killed by signal %d (%s)", sg, strsignal(sg));
    } else if (WEXITSTATUS(wstatus) == AB_EXIT_NOMEM || near_limit)
        ab_point_set_status(p, "oom", "out of memory: child exited with status %d without a result%s",
                            WEXITSTATUS(wstatus), mem);
    else
        ab_point_set_status(p, "error", "child exited with status %d without a result", WEXITSTATUS(wstatus));
}

/* Run one point's child (x) into pr: a failure becomes pr's status, the
 * child's wall time is added to pr->point_s. Returns run_isolated's code
 * (-3: interrupted). */
static int point_child(point_ctx *x, ab_point *pr, double *point_s, double mem_limit)
{
    int ws = 0;
    struct rusage ru;
    const double w0 = ab_now_ms();
    int rr = run_isolated(point_entry, x, pr, sizeof *pr, x->c->point_timeout_s, &ws, &ru);
    if (rr == -3) return rr;
    if (rr != 1) {
        fill_point_ids(pr, x->b, x->j, x->threads);
        classify_failure(pr, rr, ws, x->c->point_timeout_s, &ru, mem_limit);
    }
    *point_s += (ab_now_ms() - w0) / 1e3;
    return rr;
}

/* Address-space budget of a point's child, on top of what it has mapped at
 * fork (program, libraries, shared problem): [timing] point_mem_gb GiB, by
 * default 80% of physical memory, 0 = none. None under AddressSanitizer
 * (its shadow memory reserves terabytes of address space). */
static double point_mem_limit(const ab_config *c)
{
#if defined(__SANITIZE_ADDRESS__)
    return 0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return 0;
#endif
#endif
    if (c->point_mem_gb >= 0) return c->point_mem_gb * 1073741824.0;
    return 0.8 * (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
}

/* The first calibration guess for job j: its predecessor's knob (see
 * job_chain), NaN when it has none or the predecessor found no knob. */
static double pred_knob(const ab_store *st, const job *j)
{
    const ab_point *p = j->pred[0] ? ab_store_get(st, j->pred) : NULL;
    return p ? p->knob_value : NAN;
}

/* ---- the parent's loop --------------------------------------------------- */
/* The sweep's state in the parent. */
typedef struct sweep {
    const ab_config *c;
    const ab_plan *p;
    const ab_sweep_opts *o;
    const ab_sweep_reporter *rep;
    ab_store *st;
    const char *save_dir; /* --save-tensors: the folder, else NULL */
    double mem_limit;     /* point_mem_limit */
    double t0;            /* ab_now_ms() at the first point */
    ab_sweep_progress pg;
    ab_sweep_result *res;
    ab_point *pt;        /* a later round's child result */
    int *pj, *order;     /* the problem's pending jobs; one round's order of them */
    unsigned char *live; /* pending job k is still timed in later rounds */
} sweep;

/* One problem in the parent: its arena, whether its data child made it,
 * its pending points' results. */
typedef struct problem_run {
    const base_pt *b;
    arena_hdr *a;
    size_t asz;
    int data_ok, data_unsup; /* data_unsup: the task has no valid trial here */
    char data_msg[300], problem[160];
    int np;
    ab_point *res;
} problem_run;

static void report(const sweep *s, void (*fn)(void *, const ab_sweep_progress *), const base_pt *b,
                   const job *j, const ab_point *p)
{
    if (!fn) return;
    ab_sweep_progress pg = s->pg;
    pg.elapsed_s = (ab_now_ms() - s->t0) / 1e3;
    pg.b = b;
    pg.j = j;
    pg.p = p;
    fn(s->rep->ctx, &pg);
}

/* Map the problem's arena and generate it in the data child. Returns -3
 * when interrupted (the arena is unmapped), else 0 (pr says how it went). */
static int sweep_data(const sweep *s, problem_run *pr)
{
    const ab_config *c = s->c;
    pr->a = ab_arena_map(pr->b, c, &pr->asz);
    if (!pr->a) {
        snprintf(pr->data_msg, sizeof pr->data_msg, "cannot map %zu bytes for the problem: %s", pr->asz,
                 strerror(errno));
        return 0;
    }
    /* --save-tensors names this problem's file after what defines it */
    ab_problem_name(pr->b, pr->problem, sizeof pr->problem);
    data_arg da = { pr->a, pr->b, c, s->o->threads, s->save_dir, pr->problem };
    char okb;
    int ws = 0;
    int r = run_isolated(data_entry, &da, &okb, 1, c->point_timeout_s, &ws, NULL);
    if (r == -3) {
        ab_arena_unmap(pr->a, pr->asz);
        pr->a = NULL;
        return -3;
    }
    if (r == 1 && pr->a->status == 0)
        pr->data_ok = 1;
    else if (r == 1) {
        snprintf(pr->data_msg, sizeof pr->data_msg, "data generation failed: %s", pr->a->msg);
        pr->data_unsup = pr->a->status == AB_EUNSUPPORTED;
    } else {
        ab_point tmp;
        memset(&tmp, 0, sizeof tmp);
        classify_failure(&tmp, r, ws, c->point_timeout_s, NULL, 0);
        snprintf(pr->data_msg, sizeof pr->data_msg, "data generation %s: %s", tmp.status, tmp.message);
    }
    return 0;
}

/* Why job j cannot run on its device here (in why), else NULL. */
static const char *device_unsupported(const job *j, char *why, size_t wl)
{
    if (!(j->m->devices & j->device)) {
        snprintf(why, wl, "method %s has no %s implementation", j->m->name,
                 j->device == AB_GPU ? "GPU" : "CPU");
        return why;
    }
    /* ab_gpu_count() probes in its own child: this process never initialises CUDA */
    if (j->device == AB_GPU && ab_gpu_count(why, wl) == 0) return why;
    return NULL;
}

/* Round r of the problem's pending point k: round 0 calibrates, scores and
 * times it (into pr->res[k]); later rounds time it again with the knob
 * round 0 found and add their samples. Returns -3 when interrupted. */
static int sweep_point(sweep *s, problem_run *pr, int k, int r)
{
    const ab_config *c = s->c;
    const base_pt *b = pr->b;
    const job *j = &s->p->jobs[s->pj[k]];
    ab_point *res = &pr->res[k], *pt = r == 0 ? res : s->pt;
    fill_point_ids(pt, b, j, s->o->threads);
    char why[256] = "";
    if (r == 0 && !pr->data_ok) {
        ab_point_set_status(pt,
                            pr->data_unsup                                                  ? "unsupported"
                            : strstr(pr->data_msg, "oom") || strstr(pr->data_msg, "memory") ? "oom"
                                                                                            : "error",
                            "%s", pr->data_msg);
    } else if (r == 0 && device_unsupported(j, why, sizeof why)) {
        ab_point_set_status(pt, "unsupported", "%s", why);
    } else {
        /* the device difference: a GPU point's child has no RLIMIT_AS (the
         * CUDA runtime reserves huge virtual ranges) and writes no tensors */
        const int gpu = j->device == AB_GPU;
        const double lim = gpu ? 0 : s->mem_limit;
        point_ctx x = { c,
                        b,
                        j,
                        pr->a,
                        s->o->threads,
                        NAN,
                        gpu || r > 0 ? NULL : s->save_dir,
                        pr->problem,
                        lim,
                        r,
                        r > 0 ? res->knob_value : NAN };
        if (r == 0) x.cached_knob = pred_knob(s->st, j);
        double ps = 0;
        if (point_child(&x, pt, r > 0 ? &res->point_s : &ps, lim) == -3) return -3;
        if (r == 0)
            pt->point_s = ps;
        else if (!strcmp(pt->status, "ok"))
            ab_add_round(res, pt);
        else { /* a round that failed fails the point: no timing from the others */
            snprintf(res->status, sizeof res->status, "%s", pt->status);
            snprintf(res->message, sizeof res->message, "round %d of %d: %.200s", r + 1, c->rounds,
                     pt->message);
            res->n_samples = 0;
            res->rounds = 0;
            s->live[k] = 0;
        }
    }
    if (r > 0 && res->rounds >= c->rounds) s->live[k] = 0;
    if (r == 0)
        s->live[k] =
            j->device == AB_CPU && b->timed && !strcmp(pt->status, "ok") && pt->rounds == 1 && c->rounds > 1;
    s->pg.units_done++;
    s->pg.round = r;
    report(s, s->rep->ran, b, j, pt);
    return 0;
}

/* Rounds: round 0 calibrates, scores and times each point in its own
 * child; rounds 1.. time the timed points again, each in a fresh child, so
 * a point's samples come from `rounds` processes spread over the problem's
 * whole stretch of the sweep. Each round visits the points in its own
 * shuffled order, so drift over time spreads over all of them instead of
 * following the grid. */
static void sweep_rounds(sweep *s, problem_run *pr)
{
    const int np = pr->np;
    uint64_t ord_seed = ab_fnv1a(pr->problem[0] ? pr->problem : pr->b->task->name);
    for (int r = 0; r < s->c->rounds && !g_stop; r++) {
        for (int q = 0; q < np; q++) s->order[q] = q;
        uint64_t sm = ord_seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(r + 1));
        for (int q = np - 1; q > 0; q--) { /* Fisher-Yates with an LCG */
            sm = sm * 6364136223846793005ull + 1442695040888963407ull;
            int w = (int)((sm >> 33) % (uint64_t)(q + 1)), tmp = s->order[q];
            s->order[q] = s->order[w];
            s->order[w] = tmp;
        }
        for (int q = 0; q < np && !g_stop; q++) {
            const int k = s->order[q];
            if (r > 0 && !s->live[k]) continue;
            if (sweep_point(s, pr, k, r) == -3) break;
        }
    }
}

/* A point is stored once all its rounds are done; an interrupt in the
 * middle of a problem drops that problem's points (resume reruns them). */
static void sweep_store(sweep *s, problem_run *pr)
{
    char err[1024];
    for (int k = 0; k < pr->np && !g_stop; k++) {
        const job *j = &s->p->jobs[s->pj[k]];
        ab_point *pt = &pr->res[k];
        ab_finish_timing(pt, s->c);
        if (ab_store_append(s->st, pt, err, sizeof err)) {
            ab_errorf("%s", err);
            s->res->store_failed = 1;
            g_stop = -1;
            break;
        }
        s->pg.done++;
        if (!ab_status_is_ok(pt->status) && strcmp(pt->status, "unsupported") &&
            strcmp(pt->status, "calib_failed"))
            s->res->failed++;
        report(s, s->rep->stored, pr->b, j, pt);
    }
}

/* Problem bi: generate it, run its pending points, store them. */
static void sweep_problem(sweep *s, int bi)
{
    problem_run pr = { .b = &s->p->bases[bi] };
    for (int i = 0; i < s->p->nj; i++)
        if (s->p->jobs[i].base == bi && !(s->o->resume && ab_store_has(s->st, s->p->jobs[i].key)))
            s->pj[pr.np++] = i;
    if (!pr.np) return;
    if (sweep_data(s, &pr) == -3) return;
    pr.res = calloc((size_t)pr.np, sizeof *pr.res);
    if (!pr.res) {
        ab_errorf("out of memory");
        g_stop = -1;
        ab_arena_unmap(pr.a, pr.asz);
        return;
    }
    sweep_rounds(s, &pr);
    sweep_store(s, &pr);
    free(pr.res);
    ab_arena_unmap(pr.a, pr.asz);
}

/* Every problem in order, with SIGINT / SIGTERM caught. */
static void sweep_problems(sweep *s)
{
    const ab_plan *p = s->p;
    for (int i = 0; i < p->nj; i++) {
        if (s->o->resume && ab_store_has(s->st, p->jobs[i].key)) {
            s->pg.skipped++;
            continue;
        }
        s->pg.todo++;
        s->pg.units += p->jobs[i].device == AB_CPU && p->bases[p->jobs[i].base].timed ? s->c->rounds : 1;
    }
    s->t0 = ab_now_ms();
    report(s, s->rep->start, NULL, NULL, NULL);
    s->t0 = ab_now_ms();
    s->pt = malloc(sizeof *s->pt);
    s->pj = malloc(sizeof(int) * (size_t)(p->nj + 1));
    s->order = malloc(sizeof(int) * (size_t)(p->nj + 1));
    s->live = malloc((size_t)p->nj + 1);
    if (!s->pt || !s->pj || !s->order || !s->live) {
        ab_errorf("out of memory");
        g_stop = -1;
    }
    for (int bi = 0; bi < p->nb && !g_stop; bi++) sweep_problem(s, bi);
    report(s, s->rep->end, NULL, NULL, NULL);
    free(s->pt);
    free(s->pj);
    free(s->order);
    free(s->live);
}

int ab_sweep_run(const ab_config *c, const ab_plan *p, const ab_sweep_opts *o, const ab_sweep_reporter *rep,
                 ab_sweep_result *res, char *err, size_t errlen)
{
    static const ab_sweep_reporter quiet = { 0 };
    sweep s = {
        .c = c, .p = p, .o = o, .rep = rep ? rep : &quiet, .mem_limit = point_mem_limit(c), .res = res
    };
    memset(res, 0, sizeof *res);
    if (ab_store_open(o->out, o->env, o->resume, &s.st, err, errlen)) return -1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char save_dir[1100], cerr[1024];
    if (o->save_tensors && ab_tensors_dir(o->out, save_dir, sizeof save_dir)) {
        snprintf(err, errlen, "--save-tensors: cannot create %s.tensors: %s", o->out, strerror(errno));
        ab_store_close(s.st, cerr, sizeof cerr);
        return -1;
    }
    s.save_dir = o->save_tensors ? save_dir : NULL;
    sweep_problems(&s);
    res->done = s.pg.done;
    res->signal = g_stop > 0 ? (int)g_stop : 0;
    if (ab_store_close(s.st, cerr, sizeof cerr)) {
        ab_errorf("%s", cerr);
        res->store_failed = 1;
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    res->elapsed_s = (ab_now_ms() - s.t0) / 1e3;
    return 0;
}

/* ---- --dry-run: how long will this take? -------------------------------- */
/* One method's cost on the probe problem (ms) and the density it ran at. */
typedef struct probe_res {
    double sel_ms, run_ms, density;
    int ok;
} probe_res;

typedef struct probe_arg {
    const ab_config *c;
    const base_pt *b;
    const arena_hdr *a;
    int threads;
    const ab_method *ms[AB_PROBE_MAX];
    int nm;
} probe_arg;

/* In a child: dense flash once, then every method's select()+run() at its
 * default knob, each after one untimed call. Writes (nm + 1) probe_res. */
static void probe_entry(void *arg, int fd)
{
    probe_arg *pa = arg;
    omp_set_num_threads(pa->threads);
    openblas_set_num_threads(pa->threads);
    probe_res res[AB_PROBE_MAX + 1];
    memset(res, 0, sizeof res);
    ab_mask mk;
    char why[200];
    if (ab_mask_make(&mk, pa->b->mask, pa->b->n, (uint64_t)pa->b->seed, why, sizeof why) == AB_OK) {
        ab_shape s = { pa->b->heads, pa->b->n, pa->b->d, mk.def->causal, 1.0f / sqrtf((float)pa->b->d),
                       &mk,          0,        1,        AB_PREFILL };
        ab_problem hpb, pb = { s, pa->a->q, pa->a->k, pa->a->v, (uint64_t)pa->b->seed, pa->threads, NULL,
                               0, NULL,     NULL,     NULL };
        const ab_problem *held = ab_arena_heldout(pa->a, s, pa->threads, &hpb);
        float *out = malloc((size_t)s.heads * s.seq_len * s.head_dim * sizeof(float));
        const ab_method *dm = ab_method_find("dense");
        for (int i = -1; out && i < pa->nm; i++) {
            const ab_method *m = i < 0 ? dm : pa->ms[i];
            probe_res *r = &res[i + 1];
            if (!m || !(m->devices & AB_CPU)) continue;
            ab_params prm;
            ab_method_params(pa->c, m, &prm);
            int bq, bk;
            ab_config_blocks(pa->c, m, &bq, &bk);
            pb.heldout = m->heldout ? held : NULL;
            ab_instance in;
            ab_layout l;
            memset(&l, 0, sizeof l);
            if (ab_instance_create(&in, m, &prm, &s) == AB_OK) {
                double s0 = 0, r0 = 0, s1 = 0, r1 = 0;
                if (ab_one_call(&in, &pb, bq, bk, &l, out, &s0, &r0) == AB_OK &&
                    ab_one_call(&in, &pb, bq, bk, &l, out, &s1, &r1) == AB_OK) {
                    r->sel_ms = s1;
                    r->run_ms = r1;
                    r->density = ab_layout_density(&l);
                    r->ok = 1;
                }
            }
            ab_layout_free(&l);
            ab_instance_destroy(&in);
        }
        free(out);
    }
    ab_mask_free(&mk);
    if (write(fd, res, sizeof res) != (ssize_t)sizeof res) _exit(3);
}

/* The plan's largest problem (by N^2 x heads x d x allowed pairs), shrunk
 * to N <= AB_PROBE_N, and the methods its points use. */
int ab_estimate_plan(const ab_plan *p, ab_estimate *e)
{
    memset(e, 0, sizeof *e);
    if (p->nj == 0) return 0;
    const base_pt *bases = p->bases;
    int big = 0;
    for (int i = 1; i < p->nb; i++)
        if ((double)bases[i].n * bases[i].n * bases[i].heads * bases[i].d * bases[i].mask_density >
            (double)bases[big].n * bases[big].n * bases[big].heads * bases[big].d * bases[big].mask_density)
            big = i;
    base_pt pbase = bases[big];
    if (pbase.n > AB_PROBE_N) pbase.n = AB_PROBE_N;
    /* the probe is a prefill problem (a decode plan is estimated from it too) */
    pbase.phase = AB_PREFILL;
    pbase.kv_heads = pbase.heads;
    pbase.batch = pbase.layers = 1;
    pbase.steps = 0;
    if (strcmp(pbase.mask, "causal") && bases[big].phase == AB_DECODE) pbase.mask = "causal";
    ab_mask mk;
    char why[300];
    if (ab_mask_make(&mk, pbase.mask, pbase.n, (uint64_t)pbase.seed, why, sizeof why) != AB_OK)
        pbase.mask = "causal";
    else
        pbase.mask_density = ab_mask_fraction(&mk);
    ab_mask_free(&mk);
    if (!strcmp(pbase.mask, "causal")) pbase.mask_density = (pbase.n + 1.0) / (2.0 * pbase.n);
    for (int i = 0; i < p->nj && e->nm < AB_PROBE_MAX; i++) {
        int seen = 0;
        for (int k = 0; k < e->nm; k++) seen |= e->ms[k] == p->jobs[i].m;
        if (!seen) e->ms[e->nm++] = p->jobs[i].m;
    }
    pbase.heldout = 0;
    for (int k = 0; k < e->nm; k++) pbase.heldout |= e->ms[k]->heldout;
    e->probe = pbase;
    e->big = big;
    return 1;
}

/* The cost model of the whole plan from the probe's figures (docs/timing.md):
 * work scales as N^2 * heads * d * allowed pairs; per point: calibration
 * (~3 select() calls), one scored call, and for timed points `rounds` x
 * (warm-up + samples) of the method and of dense, with batching. */
static void estimate_model(const ab_config *c, const ab_plan *p, ab_estimate *e, const probe_res *res,
                           double gen_ms)
{
    const base_pt *bases = p->bases, *pbase = &e->probe;
    const double np2 = (double)pbase->n * pbase->n * pbase->heads * pbase->d * pbase->mask_density;
    const double dense_p = res[0].sel_ms + res[0].run_ms;
    double t_data = 0, t_cal = 0, t_score = 0, t_time = 0, t_big = 0;
    const int big_n = bases[e->big].n;
    for (int i = 0; i < p->nb; i++) { /* data + fp64 reference per problem, scaled by N^2 */
        int has = 0;
        for (int k = 0; k < p->nj && !has; k++) has = p->jobs[k].base == i;
        if (has) t_data += gen_ms * ((double)bases[i].n * bases[i].n) / ((double)pbase->n * pbase->n);
    }
    for (int i = 0; i < p->nj; i++) {
        const job *j = &p->jobs[i];
        const base_pt *b = &bases[j->base];
        if (j->device != AB_CPU) continue;
        int k = 0;
        while (k < e->nm && e->ms[k] != j->m) k++;
        const probe_res *pr = &res[k + 1];
        const double sc = (double)b->n * b->n * b->heads * b->d * b->mask_density / np2;
        double sel = (pr->ok ? pr->sel_ms : dense_p) * sc;
        double run = pr->ok ? pr->run_ms * sc : dense_p * sc;
        if (pr->ok && pr->density > 0 && !isnan(j->target) && j->m->density_knob.param >= 0)
            run *= fmin(1.0, j->target) / pr->density;
        const double dense = dense_p * sc, call = sel + run;
        double pt_ms = 5; /* fork, init, scoring */
        const double cal = j->m->density_knob.param >= 0 && !isnan(j->target) ? 3 * sel : 0;
        pt_ms += cal + call;
        t_cal += cal;
        t_score += call + 5;
        if (b->timed) {
            const int paired = c->paired && strcmp(j->m->name, "dense");
            const double sm = fmax(call, c->min_sample_ms), sd = paired ? fmax(dense, c->min_sample_ms) : 0;
            const double per = sm + sd;
            double ns = ceil(c->min_time_s * 1e3 / per);
            if (ns < c->min_repeats) ns = c->min_repeats;
            if (ns > c->max_repeats) ns = c->max_repeats;
            if (ns * per > c->max_time_s * 1e3 && ns > 1) ns = fmax(1, floor(c->max_time_s * 1e3 / per));
            const double w = (c->warmup > 1 ? c->warmup : 1) * (call + (paired ? dense : 0));
            const double tt = c->rounds * (w + ns * per) + (c->rounds - 1) * 5;
            pt_ms += tt;
            t_time += tt;
        }
        if (b->n == big_n) t_big += pt_ms;
    }
    e->total_s = (t_data + t_cal + t_score + t_time) / 1e3;
    e->data_s = t_data / 1e3;
    e->cal_s = t_cal / 1e3;
    e->score_s = t_score / 1e3;
    e->time_s = t_time / 1e3;
    e->big_n = big_n;
    e->big_share = e->total_s > 0 ? t_big / 1e3 / e->total_s : 0;
    e->dense_big_ms = dense_p * (double)bases[e->big].n * bases[e->big].n * bases[e->big].heads *
                      bases[e->big].d * bases[e->big].mask_density / np2;
}

/* Generate the probe problem and time every method once on it, each in a
 * child as in the sweep, then the model. */
int ab_estimate_run(const ab_config *c, const ab_plan *p, int threads, ab_estimate *e)
{
    size_t asz;
    arena_hdr *a = ab_arena_map(&e->probe, c, &asz);
    if (!a) {
        snprintf(e->why, sizeof e->why, "cannot map the probe problem");
        return -1;
    }
    data_arg da = { a, &e->probe, c, threads, NULL, "probe" };
    char okb;
    int ws = 0;
    double t0 = ab_now_ms();
    int r = run_isolated(data_entry, &da, &okb, 1, c->point_timeout_s, &ws, NULL);
    const double gen_ms = ab_now_ms() - t0;
    static probe_res res[AB_PROBE_MAX + 1];
    probe_arg pa = { c, &e->probe, a, threads, { 0 }, e->nm };
    memcpy(pa.ms, e->ms, sizeof pa.ms);
    if (r != 1 || a->status) {
        snprintf(e->why, sizeof e->why, "the probe problem could not be generated: %s", a->msg);
        ab_arena_unmap(a, asz);
        return -1;
    }
    r = run_isolated(probe_entry, &pa, res, sizeof res, c->point_timeout_s, &ws, NULL);
    ab_arena_unmap(a, asz);
    if (r != 1 || !res[0].ok) {
        snprintf(e->why, sizeof e->why, "the probe did not finish");
        return -1;
    }
    estimate_model(c, p, e, res, gen_ms);
    return 0;
}
