/* measure.c — one point in its child (measure.h): thread binding,
 * calibration of the density knob, the scored first call, timing rounds;
 * in the parent, the point's identity and its figures from the samples. */
#include "harness/engine/measure.h"
#include "harness/engine/decode.h"
#include "harness/engine/gpu.h"
#include "harness/engine/metrics.h"
#include "harness/engine/sysinfo.h"
#include "harness/engine/tensors.h"
#include "harness/engine/timing.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"
#include "kernels/kernels.h"

#include <cblas.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void openblas_set_num_threads(int n);

/* ---- thread binding (docs/timing.md) ----------------------------------------
 * Unbound, two OpenMP threads on a 2-vCPU VM sometimes shared one vCPU for
 * a whole process (every barrier then waits for a 4 ms scheduler tick: a
 * 5 ms call took 16 or 24 ms). So each child binds OpenMP thread i to the
 * i-th CPU it may use, once, before it measures; libgomp keeps the same
 * threads for later teams. OpenBLAS's thread pool is created first, unbound,
 * so a method that calls threaded BLAS still gets every core (binding with
 * OMP_PROC_BIND would pin the whole process, BLAS pool included, to one
 * core). Set OMP_PROC_BIND or OMP_PLACES to bind your own way instead
 * (OMP_PROC_BIND=false: not at all). */
void ab_bind_threads(int threads)
{
    if (getenv("OMP_PROC_BIND") || getenv("OMP_PLACES") || threads < 2) return;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed)) return;
    int cpus[CPU_SETSIZE], n = 0;
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &allowed)) cpus[n++] = i;
    if (n < 2) return;
    { /* OpenBLAS creates its pool on the first threaded call: now, unbound */
        enum { M = 192 };
        static float x[M * M], y[M * M], z[M * M];
        openblas_set_num_threads(threads);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, M, M, 1.0f, x, M, y, M, 0.0f, z, M);
    }
#pragma omp parallel num_threads(threads)
    {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[omp_get_thread_num() % n], &one);
        pthread_setaffinity_np(pthread_self(), sizeof one, &one);
    }
}

/* Freed memory stays in the process. glibc serves a block of 128 KiB or
 * more with mmap and unmaps it on free, so a select() that builds a layout
 * of megabytes page-faults it all in again on every timed call (at N = 16K,
 * 4 heads, quest_prefill's select() + finalize: 23.0 ms, 5.3 ms of them
 * first-touch faults), a cost of the allocator, not of the method (a
 * caching allocator, as deep-learning frameworks use, pays it once). Each
 * child raises the mmap threshold to its maximum (32 MiB on 64-bit glibc)
 * and turns trimming off, once, before it measures: every call after the
 * warm-up reuses the memory of the one before. Larger blocks are still
 * mapped per call. Leave it to the environment by setting MALLOC_* or
 * GLIBC_TUNABLES (ab_malloc_mode says which). */
static int malloc_from_env(void)
{
    return getenv("GLIBC_TUNABLES") || getenv("MALLOC_MMAP_THRESHOLD_") || getenv("MALLOC_TRIM_THRESHOLD_");
}

void ab_malloc_keep(void)
{
    static int done;
    if (done || malloc_from_env()) return;
    done = 1;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

const char *ab_malloc_mode(void)
{
    if (malloc_from_env()) return "environment (GLIBC_TUNABLES / MALLOC_* as set)";
    return "attnbench: glibc mmap threshold 32 MiB, no trim (freed memory reused across timed calls)";
}

const char *ab_binding_mode(void)
{
    if (getenv("OMP_PROC_BIND") || getenv("OMP_PLACES"))
        return "environment (OMP_PROC_BIND / OMP_PLACES as set)";
    return "attnbench: in each child, OpenMP thread i on the i-th allowed CPU; OpenBLAS pool unbound";
}

/* Instance with knob value v; select; finalize; density. Returns rc. */
static int eval_knob(const point_ctx *x, const ab_problem *pb, ab_params prm, double v, double *density,
                     char *msg, size_t ml)
{
    const ab_method *m = x->j->m;
    int kp = m->density_knob.param;
    if (kp >= 0) prm.v[kp] = m->params[kp].is_int ? round(v) : v;
    ab_instance in;
    if (x->b->phase == AB_DECODE) { /* the mean density over the steps */
        const ab_dec_ctx dx = { x->b, x->a, x->threads, x->j->block_k, x->c->decode_cold };
        const ab_shape ds = ab_dec_shape(&dx, m);
        int rc = ab_instance_create(&in, m, &prm, &ds);
        if (rc == AB_OK) rc = ab_dec_density(&dx, &in, density);
        if (rc) snprintf(msg, ml, "%s", *ab_instance_error(&in) ? ab_instance_error(&in) : ab_strerror(rc));
        ab_instance_destroy(&in);
        return rc;
    }
    int rc = ab_instance_create(&in, m, &prm, &pb->s);
    ab_layout l;
    ab_layout_init(&l, &pb->s, x->j->block_q, x->j->block_k);
    if (rc == AB_OK) rc = ab_instance_select(&in, pb, &l);
    if (rc == AB_OK) rc = ab_layout_finalize(&l);
    if (rc == AB_OK) *density = ab_layout_density(&l);
    if (rc) snprintf(msg, ml, "%s", *ab_instance_error(&in) ? ab_instance_error(&in) : ab_strerror(rc));
    ab_layout_free(&l);
    ab_instance_destroy(&in);
    return rc;
}

/* The knob in the space where density moves most evenly: log for
 * log-scale knobs (when positive), else the knob itself. */
static double to_u(const ab_knob *k, double v) { return k->log_scale && v > 0 ? log(v) : v; }
static double from_u(const ab_knob *k, double u, double v_ref)
{
    return k->log_scale && v_ref > 0 ? exp(u) : u;
}

/* Calibration: find a knob value whose achieved density is within
 * tolerance of the target. select() only, so it is cheap next to timing,
 * but an expensive selector at large N pays for every evaluation, so:
 *   1. a guess (the knob of the point's predecessor: the same method and
 *      target on the previous problem of its family, see job_chain) is
 *      tried first: often it is already
 *      within tolerance (one evaluation), else it brackets one side and a
 *      few doubling steps usually find the other;
 *   2. otherwise the knob's range ends bracket the target (or prove it is
 *      out of reach: calib_failed);
 *   3. the bracket shrinks by false position on (knob or log knob, log
 *      density) with the Illinois modification (superlinear on smooth
 *      curves), falling back to bisection whenever a step does not at
 *      least halve the bracket, and stepping by whole units for integer
 *      knobs.
 * Returns 0 and the knob, 1 if the target is out of reach (message says
 * the reachable range, or the nearest value), or an AB_E* code. */
static int g_calib_evals; /* select() evaluations of the last calibration (AB_CALIB_TRACE) */

/* The state of one calibration: the nearest value so far and the bracket
 * [va, vb] with densities da < target < db (NaN: that side not found yet). */
typedef struct calib {
    const point_ctx *x;
    const ab_problem *pb;
    const ab_knob *kn;
    const ab_param *kp;
    double target, tol;
    double best, bestd;
    double va, da, vb, db;
    double knob, achieved; /* the answer, once found */
    double vok;            /* the densest knob value select() completed at (NaN: none yet) */
    int evals, ooms;
    char *msg;
    size_t ml;
} calib;

/* Is a the denser setting of the knob than b? */
static int calib_denser(const calib *cs, double a, double b) { return cs->kn->increasing ? a > b : a < b; }

/* select() at knob v: density *dv, the nearest value kept. Returns an AB_E*
 * code, 1 when v is within tolerance (the answer), else 0.
 *
 * Out of memory at v counts as density 1 (above any target) when v is
 * denser than every value select() completed at and is not the knob's
 * sparse end: a layout that grows with the knob is the one cause that
 * fits. Routing at N = 64K lists every query's keys in its untimed calls,
 * and the dense end (one cluster) needs 2^31 of them, so calibration
 * stopped there with "oom" before this rule (2026-12-06). An out-of-memory
 * that the knob does not explain stays an error. */
static int calib_try(calib *cs, double v, double *dv)
{
    g_calib_evals = ++cs->evals;
    int rc = eval_knob(cs->x, cs->pb, cs->x->j->params, v, dv, cs->msg, cs->ml);
    const double sparse_end = cs->kn->increasing ? cs->kp->min : cs->kp->max;
    if (rc == AB_ENOMEM && v != sparse_end && (isnan(cs->vok) || calib_denser(cs, v, cs->vok))) {
        cs->ooms++;
        *dv = 1.0; /* a bracket end, never the answer nor the nearest value */
        return 0;
    }
    if (rc) return rc;
    if (isnan(cs->vok) || calib_denser(cs, v, cs->vok)) cs->vok = v;
    if (isnan(cs->bestd) || fabs(*dv - cs->target) < fabs(cs->bestd - cs->target)) {
        cs->best = v;
        cs->bestd = *dv;
    }
    if (fabs(*dv - cs->target) > cs->tol * cs->target) return 0;
    cs->knob = v;
    cs->achieved = *dv;
    return 1;
}

/* v becomes the bracket end on its side of the target. */
static void calib_side(calib *cs, double v, double dv)
{
    if (dv < cs->target) {
        cs->va = v;
        cs->da = dv;
    } else {
        cs->vb = v;
        cs->db = dv;
    }
}

/* 1. From the guess g, step towards the other side: x2 (log knobs) or an
 * eighth of the range, doubling, at most four steps. */
static int calib_guess(calib *cs, double g)
{
    const ab_knob *kn = cs->kn;
    const ab_param *kp = cs->kp;
    double dv;
    int rc = calib_try(cs, g, &dv);
    if (rc) return rc;
    calib_side(cs, g, dv);
    double step_u = kn->log_scale ? log(2.0) : (kp->max - kp->min) / 8;
    for (int e = 0; e < 4 && (isnan(cs->va) || isnan(cs->vb)); e++, step_u *= 2) {
        const int up = isnan(cs->vb) == (kn->increasing != 0); /* move the knob up? */
        double u = to_u(kn, g) + (up ? step_u : -step_u);
        double v = from_u(kn, u, g);
        if (kp->is_int) v = round(v);
        if (v < kp->min) v = kp->min;
        if (v > kp->max) v = kp->max;
        if (v == g) break;
        if ((rc = calib_try(cs, v, &dv))) return rc;
        calib_side(cs, v, dv);
        g = v;
        if (v == kp->min || v == kp->max) break;
    }
    return 0;
}

/* 2. The range ends: the missing bracket ends, or proof that the target is
 * out of reach (2, message set). */
static int calib_ends(calib *cs)
{
    const ab_param *kp = cs->kp;
    const int inc = cs->kn->increasing;
    const double vlo_d = inc ? kp->min : kp->max,
                 vhi_d = inc ? kp->max : kp->min; /* low / high density ends */
    double dmin = NAN, dmax = NAN;
    int rc;
    if (isnan(cs->va)) {
        if ((rc = calib_try(cs, vlo_d, &dmin))) return rc;
        if (dmin < cs->target) {
            cs->va = vlo_d;
            cs->da = dmin;
        }
    }
    if (isnan(cs->vb)) {
        if ((rc = calib_try(cs, vhi_d, &dmax))) return rc;
        if (dmax > cs->target) {
            cs->vb = vhi_d;
            cs->db = dmax;
        }
    }
    if (!isnan(cs->va) && !isnan(cs->vb)) return 0;
    const double lo_d = isnan(dmin) ? cs->da : dmin, hi_d = isnan(dmax) ? cs->db : dmax;
    snprintf(cs->msg, cs->ml,
             "target density %.4g outside the reachable range [%.4g, %.4g] of %s in [%g, %g]", cs->target,
             lo_d, hi_d, kp->name, kp->min, kp->max);
    cs->achieved = isnan(cs->va) ? lo_d : hi_d;
    cs->knob = isnan(cs->va) ? vlo_d : vhi_d;
    return 2;
}

/* f > 0: density above the target */
static double calib_f(const calib *cs, double d) { return d > 0 ? log(d / cs->target) : -50.0; }

/* 3. False position (Illinois) inside [va, vb]; 2 when the iterations run
 * out (the nearest value, message set). */
static int calib_false_position(calib *cs)
{
    const ab_param *kp = cs->kp;
    double fa = calib_f(cs, cs->da), fb = calib_f(cs, cs->db), dv;
    int side = 0; /* which end stayed twice: halve its f (Illinois) */
    for (int it = 0; it < cs->x->c->max_iters; it++) {
        const double va = cs->va, vb = cs->vb;
        if (kp->is_int && fabs(vb - va) <= 1) break;
        const int lg = cs->kn->log_scale && va > 0 && vb > 0; /* both ends in one space */
        const double ua = lg ? log(va) : va, ub = lg ? log(vb) : vb;
        double u = fa != fb ? ua - fa * (ub - ua) / (fb - fa) : 0.5 * (ua + ub);
        /* safeguard: stay inside, away from the ends; bisect when the last
         * step kept the same end (slow convergence) */
        const double w = ub - ua;
        if (!(fabs(u - ua) > 0.05 * fabs(w) && fabs(ub - u) > 0.05 * fabs(w)) || side == 2 || side == -2)
            u = 0.5 * (ua + ub);
        double v = lg ? exp(u) : u;
        if (kp->is_int) {
            v = round(v);
            double lo = fmin(va, vb), hi = fmax(va, vb);
            if (v <= lo) v = lo + 1;
            if (v >= hi) v = hi - 1;
        }
        const int rc = calib_try(cs, v, &dv);
        if (rc) return rc;
        const double fv = calib_f(cs, dv);
        calib_side(cs, v, dv);
        if (dv < cs->target) {
            fa = fv;
            if (side < 0) fb *= 0.5;
            side = side < 0 ? side - 1 : -1;
        } else {
            fb = fv;
            if (side > 0) fa *= 0.5;
            side = side > 0 ? side + 1 : 1;
        }
        if (side == 3 || side == -3) side = 0;
    }
    cs->knob = cs->best;
    cs->achieved = cs->bestd;
    snprintf(cs->msg, cs->ml,
             "no value of %s reaches density %.4g within %.0f%%: nearest %.4g at %s=%.6g (%d evaluations)",
             kp->name, cs->target, cs->tol * 100, cs->bestd, kp->name, cs->best, cs->evals);
    return 2;
}

static int calibrate(const point_ctx *x, const ab_problem *pb, double target, double *knob, double *achieved,
                     char *msg, size_t ml)
{
    const ab_method *m = x->j->m;
    calib cs = { .x = x,
                 .pb = pb,
                 .kn = &m->density_knob,
                 .kp = &m->params[m->density_knob.param],
                 .target = target,
                 .tol = x->c->tolerance,
                 .best = NAN,
                 .bestd = NAN,
                 .va = NAN,
                 .da = NAN,
                 .vb = NAN,
                 .db = NAN,
                 .vok = NAN,
                 .msg = msg,
                 .ml = ml };
    const ab_param *kp = cs.kp;
    int rc = 0;
    if (!isnan(x->cached_knob) && x->cached_knob >= kp->min && x->cached_knob <= kp->max)
        rc = calib_guess(&cs, kp->is_int ? round(x->cached_knob) : x->cached_knob);
    if (!rc && (isnan(cs.va) || isnan(cs.vb))) rc = calib_ends(&cs);
    if (!rc) rc = calib_false_position(&cs);
    if (rc < 0) return rc;
    if (rc == 2 && cs.ooms > 0) {
        const size_t n = strlen(msg);
        snprintf(msg + n, ml - n, "; %d denser setting%s ran out of memory (counted as density 1)", cs.ooms,
                 cs.ooms > 1 ? "s" : "");
    }
    *knob = cs.knob;
    *achieved = cs.achieved;
    return rc == 1 ? 0 : 1;
}

/* One call: a fresh layout, select() (+ finalize) and run(); their times in
 * ms added to *sel and *run. */
int ab_one_call(ab_instance *in, const ab_problem *pb, int block_q, int block_k, ab_layout *l, float *out,
                double *sel, double *run)
{
    ab_layout_free(l);
    ab_layout_init(l, &pb->s, block_q, block_k);
    double t0 = ab_now_ms();
    int rc = ab_instance_select(in, pb, l);
    if (rc == AB_OK) rc = ab_layout_finalize(l);
    double t1 = ab_now_ms();
    if (rc == AB_OK) rc = ab_instance_run(in, pb, l, out);
    double t2 = ab_now_ms();
    *sel += t1 - t0;
    *run += t2 - t1;
    return rc;
}

/* Calls per sample so one sample lasts at least min_sample_ms (Google
 * Benchmark's iteration scaling): a lost scheduler slice (4 ms at HZ=250)
 * then moves a sample by a small fraction, not by 2-10x. */
static int batch_calls(double call_ms, double min_sample_ms)
{
    if (!(call_ms > 0) || min_sample_ms <= 0) return 1;
    double k = ceil(min_sample_ms / call_ms);
    return k < 1 ? 1 : k > 100000 ? 100000 : (int)k;
}

/* Time one round in this child: warm-up, then samples of the method, each
 * paired with an adjacent sample of dense flash on the same problem (order
 * D M, M D, D M, ...: a linear drift cancels over two pairs), until the
 * round's repeat and time bounds are met. Records the samples (round 0 of
 * this child's numbering: the parent renumbers) and what other processes
 * and the hypervisor took meanwhile. */
/* One call of either phase (dx: the decode context, else NULL): select +
 * run times added to *sel and *run; decode's prepare() to *prep. */
static int call1(const point_ctx *x, const ab_dec_ctx *dx, ab_instance *in, const ab_problem *pb,
                 ab_layout *l, float *out, double *sel, double *run, double *prep)
{
    if (dx) return ab_dec_call(dx, in, out, sel, run, prep);
    return ab_one_call(in, pb, x->j->block_q, x->j->block_k, l, out, sel, run);
}

static int time_round(const point_ctx *x, const ab_dec_ctx *dx, ab_instance *in, const ab_problem *pb,
                      ab_layout *l, float *out, ab_point *p)
{
    double prep = 0, dprep = 0;
    int nprep = 0;
    const ab_config *c = x->c;
    const ab_method *dm = ab_method_find("dense");
    /* a bf16 point pairs with fp32 dense, the sweep's one baseline (dense
     * on bf16 too: its ratio is what bf16 buys) */
    const int bf16 = pb && pb->q16;
    int paired = c->paired && dm && (x->j->m != dm || bf16);
    ab_instance dn;
    ab_layout dl;
    memset(&dl, 0, sizeof dl);
    float *dout = NULL;
    int rc = AB_OK, dn_live = 0;
    if (paired) {
        ab_params dp;
        ab_params_defaults(dm->params, AB_MAX_PARAMS, &dp);
        size_t t = dx ? ab_dec_out_floats(dx) : (size_t)pb->s.heads * pb->s.seq_len * pb->s.head_dim;
        const ab_shape dsh = dx ? ab_dec_shape(dx, dm) : pb->s;
        dout = malloc(t * sizeof *dout);
        if (dout && ab_instance_create(&dn, dm, &dp, &dsh) == AB_OK)
            dn_live = 1;
        else if (dout)
            ab_instance_destroy(&dn);
        if (!dn_live) {
            paired = 0;
            snprintf(p->timing, sizeof p->timing, "unpaired");
        }
    }
    ab_problem tpb, dpb;        /* the timed calls' view: nothing but run() reads their layouts */
    const ab_problem *dpp = pb; /* dense's: the fp32 inputs */
    if (pb) {
        tpb = *pb;
        tpb.timed = 1;
        pb = dpp = &tpb;
    }
    if (bf16) {
        dpb = tpb;
        dpb.q = x->a->q;
        dpb.k = x->a->k;
        dpb.v = x->a->v;
        dpb.q16 = dpb.k16 = dpb.v16 = NULL;
        dpp = &dpb;
    }
    const double fma0 = ab_fma_probe(1.0); /* the machine's speed now (docs/timing.md) */
    /* warm-up (at least one call of each, which also sizes the batches) */
    double tm = 0, td = 0;
    for (int w = 0; w < (c->warmup > 1 ? c->warmup : 1) && rc == AB_OK; w++) {
        double s0 = 0, r0 = 0;
        rc = call1(x, dx, in, pb, l, out, &s0, &r0, &dprep);
        tm = s0 + r0;
        if (rc == AB_OK && paired) {
            double s1 = 0, r1 = 0;
            rc = call1(x, dx, &dn, dpp, &dl, dout, &s1, &r1, &dprep);
            td = s1 + r1;
        }
    }
    const int km = batch_calls(tm, c->min_sample_ms), kd = batch_calls(td, c->min_sample_ms);
    const int cap = AB_MAX_SAMPLES / c->rounds > 0 ? AB_MAX_SAMPLES / c->rounds : 1;
    /* Shared-core guard: a short FMA probe on every thread before the first
     * pair and after each one. A pair is kept when the probes on both sides
     * ran at >= 0.7x the best rate this child has seen, else dropped and
     * measured again (up to 4x max_repeats drops, within max_time_s); the
     * host that runs two vCPUs on one core slows dense and a sparse method
     * by different factors, which pairing cannot cancel. */
    const int guard = c->shared_core_check && x->threads > 1;
    double best_rate = fma0, team = guard ? ab_fma_probe_team(x->threads, 0.5) : NAN;
    if (team > best_rate) best_rate = team;
    int ok_before = !guard || !(team < 0.7 * best_rate), dropped = 0, kept_shared = 0;
    ab_cpuload la, lb;
    p->load1 = ab_loadavg1();
    ab_cpuload_read(&la);
    const double start = ab_now_ms();
    int n = 0;
    while (rc == AB_OK) {
        double sel = 0, run = 0, dsel = 0, drun = 0;
        const int dense_first =
            paired && (n + x->round) % 2 == 0; /* rounds alternate too: 1-pair rounds stay balanced */
        for (int k = 0; dense_first && k < kd && rc == AB_OK; k++)
            rc = call1(x, dx, &dn, dpp, &dl, dout, &dsel, &drun, &dprep);
        for (int k = 0; k < km && rc == AB_OK; k++, nprep++)
            rc = call1(x, dx, in, pb, l, out, &sel, &run, &prep);
        for (int k = 0; paired && !dense_first && k < kd && rc == AB_OK; k++)
            rc = call1(x, dx, &dn, dpp, &dl, dout, &dsel, &drun, &dprep);
        if (rc) break;
        if (guard) {
            team = ab_fma_probe_team(x->threads, 0.5);
            if (team > best_rate) best_rate = team;
            const int ok_after = !(team < 0.7 * best_rate), drop = !(ok_before && ok_after);
            ok_before = ok_after;
            if (drop && dropped < 4 * c->max_repeats && (ab_now_ms() - start) / 1e3 < c->max_time_s) {
                dropped++;
                continue;
            }
            kept_shared += drop;
        }
        p->sample_select_ms[n] = sel / km;
        p->sample_run_ms[n] = run / km;
        p->sample_dense_ms[n] = paired ? (dsel + drun) / kd : NAN;
        p->sample_round[n] = 0;
        p->sample_calls[n] = km;
        n++;
        const double el = (ab_now_ms() - start) / 1e3;
        if ((n >= c->min_repeats && el >= c->min_time_s) || n >= c->max_repeats || n >= cap ||
            el >= c->max_time_s)
            break;
    }
    ab_cpuload_read(&lb);
    p->fma_gflops = 0.5 * (fma0 + ab_fma_probe(1.0));
    p->shared_pct = guard && n + dropped > 0 ? 100.0 * dropped / (n + dropped) : NAN;
    if (kept_shared) /* out of drops: some kept pairs were measured on a shared core */
        snprintf(p->timing + strlen(p->timing), sizeof p->timing - strlen(p->timing), "%scores_shared",
                 p->timing[0] ? "," : "");
    double foreign, steal, total;
    ab_cpuload_diff(&la, &lb, &foreign, &steal, &total);
    p->foreign_pct = total > 0 ? 100.0 * foreign / total : NAN;
    p->steal_pct = total > 0 ? 100.0 * steal / total : NAN;
    p->n_samples = n;
    p->calls = km;
    p->rounds = 1;
    if (dx && nprep > 0) p->prepare_ms = prep / nprep;
    if (rc) {
        const char *e = *ab_instance_error(in)               ? ab_instance_error(in)
                        : dn_live && *ab_instance_error(&dn) ? ab_instance_error(&dn)
                                                             : ab_strerror(rc);
        ab_point_set_status(p, ab_status_of_code(rc), "timing round %d: %s", x->round + 1, e);
    }
    ab_layout_free(&dl);
    if (dn_live) ab_instance_destroy(&dn);
    free(dout);
    return rc;
}

/* A prefill point on its problem pb (fp32 or bf16 inputs). */
static void measure_problem(const point_ctx *x, ab_point *p, const ab_problem *ppb)
{
    const ab_config *c = x->c;
    const base_pt *b = x->b;
    const job *j = x->j;
    const ab_method *m = j->m;
    const arena_hdr *a = x->a;
    const ab_problem pb = *ppb;
    const ab_shape s = pb.s;
    ab_params prm = j->params;
    int kp = m->density_knob.param;
    char msg[256] = "";
    double knob = kp >= 0 ? prm.v[kp] : NAN, achieved = NAN;

    if (x->round > 0) { /* the knob round 0 settled on: no second calibration */
        if (kp >= 0 && !isnan(x->knob)) knob = x->knob;
    } else if (kp >= 0 && !isnan(j->target)) {
        g_calib_evals = 0;
        int rc = calibrate(x, &pb, j->target, &knob, &achieved, msg, sizeof msg);
        if (getenv("AB_CALIB_TRACE")) /* a debugging aid: how many select() calls calibration took */
            fprintf(stderr, "\ncalibrate %s N=%d target %.3g: %d evaluations (guess %s), rc %d\n", m->name,
                    b->n, j->target, g_calib_evals, isnan(x->cached_knob) ? "none" : "used", rc);
        p->knob_value = knob;
        p->achieved_density = achieved;
        if (rc == 1) {
            ab_point_set_status(p, "calib_failed", "%s", msg);
            return;
        }
        if (rc) {
            ab_point_set_status(p, ab_status_of_code(rc), "calibration: %s", msg);
            return;
        }
    }
    if (kp >= 0) prm.v[kp] = m->params[kp].is_int ? round(knob) : knob;
    p->knob_value = knob;
    ab_params_format(m->params, AB_MAX_PARAMS, &prm, p->params, sizeof p->params);
    if (j->device == AB_GPU) { /* harness/engine/gpu.c: upload, select, run, time with CUDA events, score */
        ab_gpu_point_in gi = { c, m, &prm, &pb, &a->ref, &a->ans, x->j->block_q, x->j->block_k };
        ab_gpu_measure(&gi, p);
        snprintf(p->timing, sizeof p->timing, "unpaired");
        p->rounds = 1;
        return;
    }

    ab_instance in;
    int rc = ab_instance_create(&in, m, &prm, &s);
    if (rc) {
        ab_point_set_status(p, ab_status_of_code(rc), "init: %s",
                            *ab_instance_error(&in) ? ab_instance_error(&in) : ab_strerror(rc));
        ab_instance_destroy(&in);
        return;
    }
    size_t t = (size_t)b->heads * b->n * b->d;
    float *out = malloc(t * sizeof(float));
    if (!out) {
        ab_point_set_status(p, "oom", "cannot allocate the output (%zu bytes)", t * sizeof(float));
        ab_instance_destroy(&in);
        return;
    }
    ab_layout l;
    memset(&l, 0, sizeof l);
    if (x->round > 0) { /* timing only: round 0 scored this point */
        if (time_round(x, NULL, &in, &pb, &l, out, p) == AB_OK) ab_point_set_status(p, "ok", "%s", "");
        goto done;
    }
    /* round 0: one call, checked and scored (every call computes the same) */
    ab_layout_free(&l);
    ab_layout_init(&l, &s, x->j->block_q, x->j->block_k);
    rc = ab_instance_select(&in, &pb, &l);
    if (rc == AB_OK) rc = ab_layout_finalize(&l);
    if (rc == AB_OK) {
        char verr[200];
        if (ab_layout_validate(&l, verr, sizeof verr)) {
            ab_point_set_status(p, "error", "invalid layout: %s", verr);
            goto done;
        }
        rc = ab_instance_run(&in, &pb, &l, out);
    }
    if (rc) {
        ab_point_set_status(p, ab_status_of_code(rc), "first call: %s",
                            *ab_instance_error(&in) ? ab_instance_error(&in) : ab_strerror(rc));
        goto done;
    }
    {
        snprintf(p->kernel, sizeof p->kernel, "%s", m->run ? "method" : ab_kernel_name(&l));
        const int nonfinite = ab_score_point(&a->ref, &pb, &l, &in, out, &a->ans, p);
        char terr[200] = "";
        if (nonfinite) {
            ab_point_set_status(p, "nan", "output has NaN or Inf on scored rows");
            goto done;
        }
        if (x->save_dir &&
            ab_tensors_write_point(x->save_dir, j->key, x->problem, &pb, &l, out, terr, sizeof terr)) {
            ab_point_set_status(p, "error", "--save-tensors: %s", terr);
            goto done;
        }
    }
    if (!b->timed) {
        snprintf(p->timing, sizeof p->timing, "untimed");
        ab_point_set_status(p, "ok", "%s", "");
        goto done;
    }
    if (time_round(x, NULL, &in, &pb, &l, out, p) == AB_OK) ab_point_set_status(p, "ok", "%s", "");
done:
    ab_layout_free(&l);
    free(out);
    ab_instance_destroy(&in);
}

/* The bf16 inputs of a problem (ABI 9): Q, K, V rounded to bf16, and the
 * same values widened to fp32 for the selectors and the checks. */
typedef struct bf16_inputs {
    uint16_t *h;
    float *f;
} bf16_inputs;

static int bf16_inputs_make(bf16_inputs *bi, ab_problem *pb)
{
    const size_t t = (size_t)pb->s.heads * pb->s.seq_len * pb->s.head_dim;
    bi->h = malloc(3 * t * sizeof *bi->h);
    bi->f = malloc(3 * t * sizeof *bi->f);
    if (!bi->h || !bi->f) return AB_ENOMEM;
    const float *src[3] = { pb->q, pb->k, pb->v };
    for (int w = 0; w < 3; w++)
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < t; i++) {
            const uint16_t h = ab_bf16_from_float(src[w][i]);
            bi->h[w * t + i] = h;
            bi->f[w * t + i] = ab_bf16_to_float(h);
        }
    pb->q = bi->f;
    pb->k = bi->f + t;
    pb->v = bi->f + 2 * t;
    pb->q16 = bi->h;
    pb->k16 = bi->h + t;
    pb->v16 = bi->h + 2 * t;
    return AB_OK;
}

static void measure_masked(const point_ctx *x, ab_point *p, const ab_mask *mk)
{
    const base_pt *b = x->b;
    const arena_hdr *a = x->a;
    ab_shape s = { b->heads, b->n, b->d, mk->def->causal, 1.0f / sqrtf((float)b->d), mk, 0, 1, AB_PREFILL };
    ab_problem hpb, pb = { s, a->q, a->k, a->v, (uint64_t)b->seed, x->threads, NULL, 0, NULL, NULL, NULL };
    if (x->j->m->heldout) pb.heldout = ab_arena_heldout(a, s, x->threads, &hpb);
    bf16_inputs bi = { NULL, NULL };
    if (x->j->dtype == AB_BF16 && bf16_inputs_make(&bi, &pb))
        ab_point_set_status(p, "oom", "cannot allocate the bf16 inputs");
    else
        measure_problem(x, p, &pb);
    free(bi.h);
    free(bi.f);
}

/* A decode point (docs/decode.md): calibrate on the mean density over the
 * steps, one scored call, then timing rounds of whole calls (prepare and S
 * steps) paired with dense decode; the times are per step. */
static void measure_decode(const point_ctx *x, ab_point *p)
{
    const base_pt *b = x->b;
    const job *j = x->j;
    const ab_method *m = j->m;
    if (!(m->phases & AB_DECODE)) {
        ab_point_set_status(p, "unsupported", "%s has no decode phase (prefill only)", m->name);
        return;
    }
    if (j->device != AB_CPU) {
        ab_point_set_status(p, "unsupported", "decode runs on the CPU only");
        return;
    }
    if (j->dtype != AB_FP32) {
        ab_point_set_status(p, "unsupported", "decode takes fp32 inputs only");
        return;
    }
    const ab_dec_ctx dx = { b, x->a, x->threads, j->block_k, x->c->decode_cold };
    ab_params prm = j->params;
    const int kp = m->density_knob.param;
    char msg[256] = "";
    double knob = kp >= 0 ? prm.v[kp] : NAN, achieved = NAN;
    if (x->round > 0) {
        if (kp >= 0 && !isnan(x->knob)) knob = x->knob;
    } else if (kp >= 0 && !isnan(j->target)) {
        const int rc = calibrate(x, NULL, j->target, &knob, &achieved, msg, sizeof msg);
        p->knob_value = knob;
        p->achieved_density = achieved;
        if (rc) {
            ab_point_set_status(p, rc == 1 ? "calib_failed" : ab_status_of_code(rc), "%s%s",
                                rc == 1 ? "" : "calibration: ", msg);
            return;
        }
    }
    if (kp >= 0) prm.v[kp] = m->params[kp].is_int ? round(knob) : knob;
    p->knob_value = knob;
    ab_params_format(m->params, AB_MAX_PARAMS, &prm, p->params, sizeof p->params);
    const ab_shape s = ab_dec_shape(&dx, m);
    ab_instance in;
    int rc = ab_instance_create(&in, m, &prm, &s);
    float *out = rc == AB_OK ? malloc(ab_dec_out_floats(&dx) * sizeof(float)) : NULL;
    if (rc == AB_OK && !out) {
        ab_point_set_status(p, "oom", "cannot allocate the output");
        goto done;
    }
    if (rc) {
        ab_point_set_status(p, ab_status_of_code(rc), "init: %s",
                            *ab_instance_error(&in) ? ab_instance_error(&in) : ab_strerror(rc));
        goto done;
    }
    snprintf(p->kernel, sizeof p->kernel, "%s", m->drun ? "method" : "decode");
    if (x->round == 0) {
        rc = ab_dec_scored_call(&dx, &in, out, p);
        if (rc == 1) {
            ab_point_set_status(p, "nan", "output has NaN or Inf on scored rows");
            goto done;
        }
        if (rc) {
            if (!p->status[0])
                ab_point_set_status(p, ab_status_of_code(rc), "first call: %s",
                                    *ab_instance_error(&in) ? ab_instance_error(&in) : ab_strerror(rc));
            goto done;
        }
        if (!b->timed) {
            snprintf(p->timing, sizeof p->timing, "untimed");
            ab_point_set_status(p, "ok", "%s", "");
            goto done;
        }
    }
    if (time_round(x, &dx, &in, NULL, NULL, out, p) == AB_OK) ab_point_set_status(p, "ok", "%s", "");
done:
    free(out);
    ab_instance_destroy(&in);
}

void measure_point(const point_ctx *x, ab_point *p)
{
    const base_pt *b = x->b;
    omp_set_num_threads(x->threads);
    ab_bind_threads(x->threads);
    openblas_set_num_threads(x->threads);
    ab_malloc_keep();
    if (b->phase == AB_DECODE) {
        measure_decode(x, p);
        return;
    }
    if (!(x->j->m->phases & AB_PREFILL)) {
        ab_point_set_status(p, "unsupported", "%s is a decode method (no prefill phase)", x->j->m->name);
        return;
    }
    if (!(ab_method_dtypes(x->j->m) & x->j->dtype)) {
        ab_point_set_status(p, "unsupported", "%s takes %s inputs only (ab_method.dtypes)", x->j->m->name,
                            ab_method_dtypes(x->j->m) & AB_FP32 ? "fp32" : "bf16");
        return;
    }
    ab_mask mk; /* this process's own copy of the base mask, bound to (N, data seed) */
    char merr[200];
    int mrc = ab_mask_make(&mk, b->mask, b->n, (uint64_t)b->seed, merr, sizeof merr);
    if (mrc) {
        ab_point_set_status(p, ab_status_of_code(mrc), "base mask %s: %s", b->mask, merr);
        ab_mask_free(&mk);
        return;
    }
    measure_masked(x, p, &mk);
    ab_mask_free(&mk);
}

void ab_point_latency(ab_point *p, const double *sel, const double *run, const double *tot, int n)
{
    ab_stats st, ss, sr;
    ab_stats_compute(tot, n, &st);
    ab_stats_compute(sel, n, &ss);
    ab_stats_compute(run, n, &sr);
    p->select_ms = ss.median;
    p->run_ms = sr.median;
    p->total_ms = st.median;
    p->min_ms = st.min;
    p->p10_ms = st.p10;
    p->p90_ms = st.p90;
    p->cv = st.cv;
}

/* The point's figures from its samples (every round): medians, spread,
 * the bootstrap intervals and the flags. */
void ab_finish_timing(ab_point *p, const ab_config *c)
{
    int n = p->n_samples;
    if (n <= 0 || strcmp(p->status, "ok")) return;
    double *tot = malloc(sizeof(double) * (size_t)n * 2);
    int *grp = malloc(sizeof(int) * (size_t)n * 2);
    if (!tot || !grp) {
        free(tot);
        free(grp);
        return;
    }
    double *rat = tot + n;
    int *rgrp = grp + n, nr = 0;
    for (int i = 0; i < n; i++) {
        tot[i] = p->sample_select_ms[i] + p->sample_run_ms[i];
        grp[i] = p->sample_round[i];
        if (p->sample_calls[i] < 1) p->sample_calls[i] = 1;
        if (p->sample_dense_ms[i] > 0) {
            rat[nr] = tot[i] / p->sample_dense_ms[i];
            rgrp[nr++] = p->sample_round[i];
        } else
            p->sample_dense_ms[i] = NAN;
    }
    ab_point_latency(p, p->sample_select_ms, p->sample_run_ms, tot, n);
    const uint64_t seed = ab_fnv1a(p->key);
    ab_median_ci(tot, grp, n, 0.95, 2000, seed, &p->total_lo_ms, &p->total_hi_ms);
    const double flops =
        ab_point_is_decode(p) /* a step: every query head over the whole cache */
            ? 4.0 * p->heads * p->layers * p->batch * (p->seq_len + 0.5 * p->steps) * p->head_dim
            : 4.0 * p->heads * (double)p->seq_len * p->seq_len * p->head_dim * p->mask_density;
    p->dense_gflops = flops / (p->total_ms * 1e-3) / 1e9;
    p->rel_dense = p->rel_lo = p->rel_hi = p->dense_pair_ms = NAN;
    if (ab_point_is_baseline(p) && !strcmp(p->device, "cpu")) {
        p->rel_dense = p->rel_lo = p->rel_hi = 1.0; /* the baseline, by definition */
        p->dense_pair_ms = p->total_ms;
    } else if (nr > 0) {
        double *dd = malloc(sizeof(double) * (size_t)n);
        int m = 0;
        for (int i = 0; dd && i < n; i++)
            if (p->sample_dense_ms[i] > 0) dd[m++] = p->sample_dense_ms[i];
        p->dense_pair_ms = dd ? ab_median(dd, m) : NAN;
        free(dd);
        p->rel_dense = ab_median(rat, nr);
        ab_median_ci(rat, rgrp, nr, 0.95, 2000, seed ^ 1, &p->rel_lo, &p->rel_hi);
    }
    /* flags: interference, and rounds whose medians disagree by > 20% */
    char fl[sizeof p->timing] = "";
    if (p->timing[0]) snprintf(fl, sizeof fl, "%s", p->timing);
    /* interference: other processes needed more than the cores this point
     * left idle plus interference_pct of the ones it used, or the
     * hypervisor stole more than interference_pct of them */
    const double ncpu = (double)ab_default_threads(), thr = p->threads > 0 ? p->threads : 1;
    const double spare = ncpu > thr ? 100.0 * (ncpu - thr) / ncpu : 0,
                 ours = 100.0 * (thr < ncpu ? thr : ncpu) / ncpu;
    if ((p->foreign_pct > spare + c->interference_pct * ours / 100 ||
         p->steal_pct > c->interference_pct * ours / 100) &&
        !strstr(fl, "interference"))
        snprintf(fl + strlen(fl), sizeof fl - strlen(fl), "%sinterference", fl[0] ? "," : "");
    if (p->rounds > 1) {
        double lo = INFINITY, hi = 0, *v = malloc(sizeof(double) * (size_t)n);
        for (int r = 0; v && r < p->rounds; r++) {
            int m = 0;
            for (int i = 0; i < n; i++)
                if (p->sample_round[i] == r)
                    v[m++] = nr > 0 && p->sample_dense_ms[i] > 0 ? tot[i] / p->sample_dense_ms[i] : tot[i];
            if (!m) continue;
            double md = ab_median(v, m);
            lo = md < lo ? md : lo;
            hi = md > hi ? md : hi;
        }
        free(v);
        if (lo > 0 && hi / lo > 1.2)
            snprintf(fl + strlen(fl), sizeof fl - strlen(fl), "%srounds_disagree", fl[0] ? "," : "");
    }
    snprintf(p->timing, sizeof p->timing, "%s", fl);
    free(tot);
    free(grp);
}

/* Add a later round's samples (child result q) to the point p. */
void ab_add_round(ab_point *p, const ab_point *q)
{
    const int r = p->rounds;
    for (int i = 0; i < q->n_samples && p->n_samples < AB_MAX_SAMPLES; i++) {
        const int k = p->n_samples++;
        p->sample_select_ms[k] = q->sample_select_ms[i];
        p->sample_run_ms[k] = q->sample_run_ms[i];
        p->sample_dense_ms[k] = q->sample_dense_ms[i];
        p->sample_round[k] = r;
        p->sample_calls[k] = q->sample_calls[i];
    }
    p->rounds = r + 1;
    if (q->calls > p->calls) p->calls = q->calls;
    if (!(p->foreign_pct >= q->foreign_pct)) p->foreign_pct = q->foreign_pct;
    if (!(p->steal_pct >= q->steal_pct)) p->steal_pct = q->steal_pct;
    if (!(p->load1 >= q->load1)) p->load1 = q->load1;
    if (q->fma_gflops > 0)
        p->fma_gflops = p->fma_gflops > 0 ? (p->fma_gflops * r + q->fma_gflops) / (r + 1) : q->fma_gflops;
    if (q->shared_pct >= 0)
        p->shared_pct = p->shared_pct >= 0 ? (p->shared_pct * r + q->shared_pct) / (r + 1) : q->shared_pct;
    if (q->timing[0] && !strstr(p->timing, q->timing))
        snprintf(p->timing + strlen(p->timing), sizeof p->timing - strlen(p->timing), "%s%s",
                 p->timing[0] ? "," : "", q->timing);
}

void fill_point_ids(ab_point *p, const base_pt *b, const job *j, int threads)
{
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", j->key);
    snprintf(p->method, sizeof p->method, "%s", j->m->name);
    snprintf(p->family, sizeof p->family, "%s", j->m->family ? j->m->family : "");
    ab_params_format(j->m->params, AB_MAX_PARAMS, &j->params, p->params, sizeof p->params);
    snprintf(p->device, sizeof p->device, "%s", j->device == AB_GPU ? "gpu" : "cpu");
    snprintf(p->dtype, sizeof p->dtype, "%s", j->dtype == AB_BF16 ? "bf16" : "fp32");
    snprintf(p->task, sizeof p->task, "%s", b->task->name);
    for (int i = 0, off = 0; i < ab_param_count(b->task->params, AB_TASK_MAX_PARAMS); i++)
        if (b->tparams.v[i] != b->task->params[i].def && off < (int)sizeof p->tparams)
            off += snprintf(p->tparams + off, sizeof p->tparams - (size_t)off, "%s%s=%.6g", off ? "," : "",
                            b->task->params[i].name, b->tparams.v[i]);
    p->seq_len = b->n;
    p->heads = b->heads;
    p->head_dim = b->d;
    p->causal = b->causal;
    snprintf(p->mask, sizeof p->mask, "%s", b->mask);
    p->mask_density = b->mask_density;
    p->threads = threads;
    p->seed = b->seed;
    p->depth = b->depth;
    p->target_density = j->target;
    p->knob_value = NAN;
    p->achieved_density = NAN;
    p->select_ms = p->run_ms = p->total_ms = p->min_ms = p->p10_ms = p->p90_ms = p->cv = NAN;
    p->dense_gflops = NAN;
    p->recall_mass = p->recall_topk = p->rel_l2_err = p->max_abs_err = NAN;
    p->accuracy = p->acc_ci_lo = p->acc_ci_hi = NAN;
    p->total_lo_ms = p->total_hi_ms = p->dense_pair_ms = p->rel_dense = p->rel_lo = p->rel_hi = NAN;
    p->foreign_pct = p->steal_pct = p->load1 = p->fma_gflops = p->shared_pct = NAN;
    p->point_s = 0;
    snprintf(p->phase, sizeof p->phase, "%s", b->phase == AB_DECODE ? "decode" : "prefill");
    p->kv_heads = b->kv_heads;
    p->batch = b->batch;
    p->steps = b->steps;
    p->layers = b->layers;
    p->layer_corr = b->phase == AB_DECODE ? b->layer_corr : NAN;
    p->prepare_ms = p->kv_bytes = p->cache_bytes = NAN;
}
