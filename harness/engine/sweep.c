/* sweep.c — `attnbench run`: expand the config into a grid, generate each
 * problem once, and measure every (method, device, density) on it in an
 * isolated child process with a time limit; append each point to the
 * crash-safe store as soon as it ends.
 *
 * Process structure (libgomp is not fork-safe: a process that ran an OpenMP
 * region cannot use OpenMP in a forked child, so the parent never does):
 *   parent ── mmap a shared arena for one problem
 *          ├─ data child: generate Q, K, V and the answer into the arena,
 *          │              build the fp64 reference on the scored rows
 *          └─ one child per point: calibrate, time select() and run()
 *                                  apart, score; write the row to a pipe
 * A crash, timeout or out-of-memory in a child becomes a status; the sweep
 * goes on. */
#include "harness/engine/blascore.h"
#include "runtime/layout.h"
#include "harness/cli/cli.h"
#include "harness/engine/config.h"
#include "harness/engine/gpu.h"
#include "harness/engine/metrics.h"
#include "runtime/plugin.h"
#include "harness/store/point.h"
#include "runtime/registry.h"
#include "harness/store/store.h"
#include "harness/engine/sysinfo.h"
#include "harness/engine/tensors.h"
#include "harness/engine/timing.h"
#include "kernels/kernels.h"

#include <cblas.h>
#include <ctype.h>
#include <pthread.h>
#include <sched.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

void openblas_set_num_threads(int n);

/* ---- grid ---------------------------------------------------------------- */
typedef struct base_pt {
    const ab_task *task;
    ab_params tparams;
    const char *tstr[AB_TASK_MAX_STRINGS]; /* string params (point into the config) */
    int n, heads, d;
    const char *mask;    /* base mask spec (points into the config) */
    int causal;          /* the mask's def->causal */
    double mask_density; /* allowed pairs / N^2 of the mask bound to (n, seed) */
    int64_t seed;
    double depth;
    int timed;           /* 0: the points are scored only ([timing] timed_tasks / timed_depths) */
} base_pt;

typedef struct job {
    int base;
    const ab_method *m;
    ab_params params;
    unsigned device;
    double target;      /* NaN: native (knob fixed) */
    char key[24];
    uint64_t fam;       /* hash of the key without N and depth: the calibration family */
    int family;         /* the family's number, in order of first appearance (job_chain) */
    char pred[24];      /* key of the family's point just before this one ("": none) */
} job;

typedef struct run_opts {
    const char *config, *out;
    int resume, dry_run, quiet, threads, shard_i, shard_n, save_tensors, no_estimate;
    char methods[AB_CFG_LIST][AB_CFG_NAME];
    int n_methods;
    unsigned devices;
} run_opts;

static int override_values(const ab_override *o, int n, const char *plugin, const char *param, const double **v);

static const char *override_string(const ab_override *o, int n, const char *plugin, const char *param)
{
    for (int i = 0; i < n; i++)
        if (o[i].is_str && !strcmp(o[i].plugin, plugin) && !strcmp(o[i].param, param)) return o[i].str;
    return NULL;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 0x100000001b3ull; }
    return h;
}

/* The string a point's key hashes; n < 0 leaves out N and the depth (the
 * point's calibration family: see job_chain). */
static void key_string(const base_pt *b, const job *j, const ab_config *c, int threads, int n, char *buf, size_t bl)
{
    char tp[2560], mp[256];
    ab_params_format(b->task->params, AB_TASK_MAX_PARAMS, &b->tparams, tp, sizeof tp);
    for (int i = 0; i < AB_TASK_MAX_STRINGS && b->task->string_params[i]; i++) {
        size_t l = strlen(tp);
        snprintf(tp + l, sizeof tp - l, ",%s=%s", b->task->string_params[i], b->tstr[i] ? b->tstr[i] : "");
    }
    ab_params_format(j->m->params, AB_MAX_PARAMS, &j->params, mp, sizeof mp);
    /* the plain masks keep the keys of files written before base masks
     * (c1 = causal, c0 = full); any other mask adds its spec */
    char mk[AB_MASK_SPEC + 8];
    if (!strcmp(b->mask, "causal") || !strcmp(b->mask, "full")) snprintf(mk, sizeof mk, "c%d", b->causal);
    else snprintf(mk, sizeof mk, "c%d|m%s", b->causal, b->mask);
    snprintf(buf, bl, "v1|%s|%s|N%d|H%d|d%d|%s|s%lld|z%.6g|%s|%s|%s|t%.6g|b%dx%d|T%d",
             b->task->name, tp, n, b->heads, b->d, mk, (long long)b->seed, n < 0 ? -1.0 : b->depth,
             j->m->name, isnan(j->target) ? mp : "", j->device == AB_GPU ? "gpu" : "cpu",
             j->target, c->block_q, c->block_k, threads);
}

static void job_key(const base_pt *b, job *j, const ab_config *c, int threads)
{
    char buf[4096];
    key_string(b, j, c, threads, b->n, buf, sizeof buf);
    snprintf(j->key, sizeof j->key, "%016llx", (unsigned long long)fnv1a(buf));
    key_string(b, j, c, threads, -1, buf, sizeof buf);
    j->fam = fnv1a(buf);
}

static int override_values(const ab_override *o, int n, const char *plugin, const char *param, const double **v)
{
    for (int i = 0; i < n; i++)
        if (!o[i].is_str && !strcmp(o[i].plugin, plugin) && !strcmp(o[i].param, param)) { *v = o[i].v; return o[i].n; }
    return 0;
}

/* Defaults + config overrides (first value of each list). */
static void method_params(const ab_config *c, const ab_method *m, ab_params *p)
{
    ab_params_defaults(m->params, AB_MAX_PARAMS, p);
    for (int i = 0; i < p->n; i++) {
        const double *v;
        if (override_values(c->mo, c->n_mo, m->name, m->params[i].name, &v) > 0) p->v[i] = v[0];
    }
}

/* Append the jobs of one problem: every method x device x density. */
static void add_jobs(const ab_config *c, const ab_method *const *ms, int nm, unsigned devs, const ab_grid *ax, int b,
                     job *jobs, int *nj)
{
    for (int mi = 0; mi < nm; mi++)
        for (unsigned dv = AB_CPU; dv <= AB_GPU; dv <<= 1) {
            if (!(devs & dv)) continue;
            const ab_method *m = ms[mi];
            job base_job = { .base = b, .m = m, .device = dv };
            method_params(c, m, &base_job.params);
            int kp = m->density_knob.param;
            if (kp < 0) {
                base_job.target = 1.0;
                jobs[(*nj)++] = base_job;
            } else if (c->native) {
                const double *v;
                int nv = override_values(c->mo, c->n_mo, m->name, m->params[kp].name, &v);
                double def = m->params[kp].def;
                if (nv == 0) { v = &def; nv = 1; }
                for (int k = 0; k < nv; k++) {
                    job jj = base_job;
                    jj.target = NAN;
                    jj.params.v[kp] = m->params[kp].is_int ? round(v[k]) : v[k];
                    jobs[(*nj)++] = jj;
                }
            } else {
                for (int k = 0; k < ax->n_dens; k++) {
                    job jj = base_job;
                    jj.target = ax->densities[k];
                    jobs[(*nj)++] = jj;
                }
            }
        }
}

/* The problem's task, its parameters and string parameters from the config. */
static void base_task(const ab_config *c, const char *task, base_pt *bp)
{
    bp->task = ab_task_find(task);
    ab_params_defaults(bp->task->params, AB_TASK_MAX_PARAMS, &bp->tparams);
    for (int k = 0; k < bp->tparams.n; k++) {
        const double *v;
        if (override_values(c->to, c->n_to, bp->task->name, bp->task->params[k].name, &v) > 0) bp->tparams.v[k] = v[0];
    }
    for (int k = 0; k < AB_TASK_MAX_STRINGS && bp->task->string_params[k]; k++)
        bp->tstr[k] = override_string(c->to, c->n_to, bp->task->name, bp->task->string_params[k]);
}

/* The mask's causal flag and allowed-pair fraction at (N, seed), once per
 * (mask, N, seed) (cached in *mc); the mask is bound again in each child. */
typedef struct mask_memo { const char *mask; int n; int64_t seed; int causal; double frac; } mask_memo;
static int base_mask(const ab_config *c, base_pt *bp, mask_memo **mc, int *nmc, const char *where, char *err,
                     size_t errlen)
{
    for (int q = 0; q < *nmc; q++)
        if ((*mc)[q].n == bp->n && (*mc)[q].seed == bp->seed && !strcmp((*mc)[q].mask, bp->mask)) {
            bp->causal = (*mc)[q].causal;
            bp->mask_density = (*mc)[q].frac;
            return 0;
        }
    ab_mask mk;
    char why[300];
    int rc = ab_mask_make(&mk, bp->mask, bp->n, (uint64_t)bp->seed, why, sizeof why);
    if (rc == AB_OK) {
        bp->causal = mk.def->causal;
        bp->mask_density = ab_mask_fraction(&mk);
        mask_memo *nm = realloc(*mc, sizeof **mc * (size_t)(*nmc + 1));
        if (nm) {
            *mc = nm;
            nm[(*nmc)++] = (mask_memo){ bp->mask, bp->n, bp->seed, bp->causal, bp->mask_density };
        }
    } else snprintf(err, errlen, "%s: %s: mask '%s' at N = %d: %s", c->path, where, bp->mask, bp->n, why);
    ab_mask_free(&mk);
    return rc == AB_OK ? 0 : -1;
}

/* Open-addressing set of 64-bit hashes -> index (dedupe of problems and
 * points across grids). */
typedef struct hidx { uint64_t *h; int *v; size_t cap; } hidx;
static int hidx_init(hidx *x, size_t n)
{
    x->cap = 16;
    while (x->cap < 2 * n + 16) x->cap <<= 1;
    x->h = calloc(x->cap, sizeof *x->h);
    x->v = malloc(x->cap * sizeof *x->v);
    return x->h && x->v ? 0 : -1;
}
static void hidx_free(hidx *x) { free(x->h); free(x->v); }
/* index stored under h, else stores v and returns -1 (h != 0) */
static int hidx_get_put(hidx *x, uint64_t h, int v)
{
    if (!h) h = 1;
    for (size_t i = (size_t)h & (x->cap - 1);; i = (i + 1) & (x->cap - 1)) {
        if (!x->h[i]) { x->h[i] = h; x->v[i] = v; return -1; }
        if (x->h[i] == h) return x->v[i];
    }
}

static uint64_t base_hash(const base_pt *b)
{
    char buf[AB_MASK_SPEC + 160];
    snprintf(buf, sizeof buf, "%s|%d|%d|%d|%s|%lld|%.17g", b->task->name, b->n, b->heads, b->d, b->mask,
             (long long)b->seed, b->depth);
    return fnv1a(buf);
}

/* Calibration is deterministic per point: its first guess is the knob of
 * the point's predecessor, the point of the same family (same method,
 * target, device, task, mask, heads, d, seed: the key without N and depth)
 * on the nearest earlier problem in run order (problems run in index
 * order). The predecessor is found in the results store, so a resumed run
 * or a shard (shards keep whole families) calibrates every point exactly as
 * one uninterrupted run does. Also numbers the families (--shard splits by
 * that number). nb: problems (every job's base is below it). */
static int job_chain(job *jobs, int nj, int nb)
{
    int *ord = malloc(sizeof(int) * (size_t)(nj + 1)), *at = calloc((size_t)nb + 1, sizeof(int));
    int *last = malloc(sizeof(int) * (size_t)(nj + 1)), nf = 0;
    hidx hf = { 0 };
    if (!ord || !at || !last || hidx_init(&hf, (size_t)nj)) { free(ord); free(at); free(last); hidx_free(&hf); return -1; }
    /* families numbered in order of first appearance in the job list */
    for (int i = 0; i < nj; i++) {
        int f = hidx_get_put(&hf, jobs[i].fam, nf);
        jobs[i].family = f < 0 ? nf++ : f;
        at[jobs[i].base + 1]++;
    }
    /* run order: by problem, then job order (a stable counting sort) */
    for (int bi = 0; bi < nb; bi++) at[bi + 1] += at[bi];
    for (int i = 0; i < nj; i++) ord[at[jobs[i].base]++] = i;
    /* last[f]: family f's latest calibrated job so far in run order */
    for (int f = 0; f < nf; f++) last[f] = -1;
    for (int r = 0; r < nj; r++) {
        job *j = &jobs[ord[r]];
        j->pred[0] = 0;
        if (isnan(j->target)) continue; /* native points do not calibrate */
        if (last[j->family] >= 0) snprintf(j->pred, sizeof j->pred, "%s", jobs[last[j->family]].key);
        last[j->family] = ord[r];
    }
    free(last);
    free(at);
    free(ord);
    hidx_free(&hf);
    return 0;
}

/* Every grid of the config ([sweep] and its [sweep.NAME] blocks) expanded
 * in order; a problem or a point that two grids share is kept once (the
 * first), so blocks may overlap freely. */
static int build_grid(const ab_config *c, const run_opts *o, int threads, base_pt **bases_out, int *nb_out,
                      job **jobs_out, int *nj_out, char *err, size_t errlen)
{
    unsigned devs = o->devices ? o->devices : c->devices;
    size_t nb = 0, nj_cap = 0;
    for (int g = 0; g < ab_config_ngrids(c); g++) {
        ab_grid ax;
        ab_config_grid(c, g, &ax);
        size_t nbg = (size_t)ax.n_tasks * ax.n_lens * ax.n_heads * ax.n_dims * ax.n_masks * ax.n_seeds * ax.n_depths;
        size_t nm = o->n_methods ? (size_t)o->n_methods : ax.n_methods ? (size_t)ax.n_methods : (size_t)ab_method_count;
        size_t per = (size_t)(c->native ? AB_CFG_LIST : ax.n_dens) + 1;
        nb += nbg;
        nj_cap += nbg * nm * 2 * per;
    }
    base_pt *bases = calloc(nb ? nb : 1, sizeof *bases);
    job *jobs = calloc(nj_cap + 1, sizeof *jobs);
    mask_memo *mc = NULL;
    int nmc = 0, rc = -1;
    hidx hb = { 0 }, hj = { 0 };
    if (!bases || !jobs || hidx_init(&hb, nb) || hidx_init(&hj, nj_cap)) {
        snprintf(err, errlen, "out of memory building the grid");
        goto fail;
    }
    int b = 0, nj = 0;
    for (int g = 0; g < ab_config_ngrids(c); g++) {
        ab_grid ax;
        ab_config_grid(c, g, &ax);
        /* methods of this grid: CLI list, else the grid's, else all */
        const ab_method *ms[256];
        int nm = 0;
        if (o->n_methods) {
            for (int i = 0; i < o->n_methods; i++) ms[nm++] = ab_method_find(o->methods[i]);
        } else if (ax.n_methods) {
            for (int i = 0; i < ax.n_methods; i++) ms[nm++] = ab_method_find(ax.methods[i]);
        } else {
            for (int i = 0; i < ab_method_count && nm < 256; i++) ms[nm++] = ab_method_at(i);
        }
        for (int ti = 0; ti < ax.n_tasks; ti++)
            for (int li = 0; li < ax.n_lens; li++)
                for (int hi = 0; hi < ax.n_heads; hi++)
                    for (int di = 0; di < ax.n_dims; di++)
                        for (int ci = 0; ci < ax.n_masks; ci++)
                            for (int si = 0; si < ax.n_seeds; si++)
                                for (int zi = 0; zi < ax.n_depths; zi++) {
                                    base_pt *bp = &bases[b];
                                    memset(bp, 0, sizeof *bp);
                                    base_task(c, ax.tasks[ti], bp);
                                    bp->n = ax.seq_lens[li];
                                    bp->heads = ax.heads[hi];
                                    bp->d = ax.head_dims[di];
                                    bp->mask = ax.masks[ci];
                                    bp->seed = ax.seeds[si];
                                    bp->depth = ax.depths[zi];
                                    bp->timed = ab_config_timed(c, bp->task->name, bp->depth);
                                    int bi = hidx_get_put(&hb, base_hash(bp), b);
                                    if (bi < 0) { /* a new problem */
                                        if (base_mask(c, bp, &mc, &nmc, ax.masks_where, err, errlen)) goto fail;
                                        bi = b++;
                                    }
                                    int j0 = nj;
                                    add_jobs(c, ms, nm, devs, &ax, bi, jobs, &nj);
                                    int k = j0;
                                    for (int q = j0; q < nj; q++) { /* keep points no earlier grid had */
                                        job_key(&bases[bi], &jobs[q], c, threads);
                                        if (hidx_get_put(&hj, fnv1a(jobs[q].key), q) < 0) jobs[k++] = jobs[q];
                                    }
                                    nj = k;
                                }
    }
    if (job_chain(jobs, nj, b)) {
        snprintf(err, errlen, "out of memory building the grid");
        goto fail;
    }
    /* sharding: whole calibration families, every shard_n-th in order of
     * first appearance, so a shard holds each point's predecessor */
    if (o->shard_n > 1) {
        int k = 0;
        for (int i = 0; i < nj; i++)
            if (jobs[i].family % o->shard_n == o->shard_i) jobs[k++] = jobs[i];
        nj = k;
    }
    *bases_out = bases; *nb_out = b; *jobs_out = jobs; *nj_out = nj;
    bases = NULL;
    jobs = NULL;
    rc = 0;
fail:
    hidx_free(&hb);
    hidx_free(&hj);
    free(mc);
    free(bases);
    free(jobs);
    return rc;
}

/* ---- shared arena for one problem -------------------------------------- */
typedef struct arena_hdr {
    size_t size, used;
    int status;              /* data child: 0 ok, else AB_E* */
    char msg[256];
    float *q, *k, *v;
    ab_answer ans;
    ab_refset ref;
} arena_hdr;

static void *arena_alloc(void *ctx, size_t bytes)
{
    arena_hdr *a = ctx;
    size_t off = (a->used + 63) & ~(size_t)63;
    if (off + bytes > a->size) return NULL;
    a->used = off + bytes;
    return (char *)a + off;
}

static size_t arena_size(const base_pt *b, const ab_config *c)
{
    size_t t = (size_t)b->heads * b->n * b->d;
    size_t rows = (size_t)b->n;
    size_t ref = (size_t)b->heads * rows * ((size_t)b->d * 8 + 16 + (size_t)c->topk * 4) + rows * 4;
    size_t ans = (size_t)b->heads * rows * 6 * 4 + ((size_t)1 << 22);
    return sizeof(arena_hdr) + 3 * t * 4 + ref + ans + ((size_t)1 << 20);
}

static int copy_ints(arena_hdr *a, int **dst, const int *src, int n)
{
    if (!src) { *dst = NULL; return 0; }
    *dst = arena_alloc(a, sizeof(int) * (size_t)(n ? n : 1));
    if (!*dst) return -1;
    memcpy(*dst, src, sizeof(int) * (size_t)n);
    return 0;
}

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
static void bind_threads(int threads)
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

const char *ab_binding_mode(void)
{
    if (getenv("OMP_PROC_BIND") || getenv("OMP_PLACES")) return "environment (OMP_PROC_BIND / OMP_PLACES as set)";
    return "attnbench: in each child, OpenMP thread i on the i-th allowed CPU; OpenBLAS pool unbound";
}

static void data_problem(arena_hdr *a, const base_pt *b, const ab_config *c, int threads, const char *save_dir,
                         const char *problem, ab_shape s);

/* In the data child: generate and build the reference. */
static void data_child(arena_hdr *a, const base_pt *b, const ab_config *c, int threads,
                       const char *save_dir, const char *problem)
{
    omp_set_num_threads(threads);
    bind_threads(threads);
    size_t t = (size_t)b->heads * b->n * b->d;
    a->q = arena_alloc(a, t * 4);
    a->k = arena_alloc(a, t * 4);
    a->v = arena_alloc(a, t * 4);
    if (!a->q || !a->k || !a->v) { a->status = AB_ENOMEM; snprintf(a->msg, sizeof a->msg, "arena too small"); return; }
    ab_mask mk; /* this process's own copy of the base mask, bound to (N, data seed) */
    int mrc = ab_mask_make(&mk, b->mask, b->n, (uint64_t)b->seed, a->msg, sizeof a->msg);
    if (mrc) { a->status = mrc; ab_mask_free(&mk); return; }
    ab_shape s = { b->heads, b->n, b->d, mk.def->causal, 1.0f / sqrtf((float)b->d), &mk };
    data_problem(a, b, c, threads, save_dir, problem, s);
    ab_mask_free(&mk);
}

static void data_problem(arena_hdr *a, const base_pt *b, const ab_config *c, int threads, const char *save_dir,
                         const char *problem, ab_shape s)
{
    ab_answer ans;
    memset(&ans, 0, sizeof ans);
    char why[200] = "";
    ab_task_input in = { .p = &b->tparams, .str = b->tstr, .s = s, .seed = (uint64_t)b->seed,
                         .depth = b->depth };
    int rc = ab_task_generate(b->task, &in, a->q, a->k, a->v, &ans, why, sizeof why);
    if (rc) {
        a->status = rc;
        snprintf(a->msg, sizeof a->msg, "task %s: %s", b->task->name, why[0] ? why : ab_strerror(rc));
        ab_answer_free(&ans);
        return;
    }
    a->ans = ans;
    if (copy_ints(a, &a->ans.head, ans.head, ans.n) || copy_ints(a, &a->ans.row, ans.row, ans.n) ||
        copy_ints(a, &a->ans.code, ans.code, ans.n) || copy_ints(a, &a->ans.key_pos, ans.key_pos, ans.n) ||
        copy_ints(a, &a->ans.group, ans.group, ans.n)) {
        a->status = AB_ENOMEM; snprintf(a->msg, sizeof a->msg, "arena too small for the answer");
        ab_answer_free(&ans);
        return;
    }
    a->ans.codebook = NULL;
    if (ans.codebook) {
        size_t cb = sizeof(float) * (size_t)ans.n_codes * ans.head_dim;
        a->ans.codebook = arena_alloc(a, cb);
        if (!a->ans.codebook) { a->status = AB_ENOMEM; ab_answer_free(&ans); return; }
        memcpy(a->ans.codebook, ans.codebook, cb);
    }
    int *rows = malloc(sizeof(int) * (size_t)b->n);
    if (!rows) { a->status = AB_ENOMEM; ab_answer_free(&ans); return; }
    int nr = ab_choose_rows(b->n, c->exact_max_n, ans.row, ans.n, c->score_rows, (uint64_t)b->seed, rows);
    ab_answer_free(&ans);
    ab_problem pb = { s, a->q, a->k, a->v, (uint64_t)b->seed, threads };
    rc = nr < 0 ? AB_ENOMEM : ab_refset_build(&a->ref, &pb, rows, nr, c->topk, arena_alloc, a);
    free(rows);
    if (rc) { a->status = rc; snprintf(a->msg, sizeof a->msg, "reference: %s", ab_strerror(rc)); return; }
    if (save_dir && ab_tensors_write_problem(save_dir, problem, &pb, &a->ref, a->msg, sizeof a->msg)) a->status = AB_EINTERNAL;
}

/* ---- one point, in its child ------------------------------------------- */
typedef struct point_ctx {
    const ab_config *c;
    const base_pt *b;
    const job *j;
    const arena_hdr *a;
    int threads;
    double cached_knob;   /* NaN: none */
    const char *save_dir; /* --save-tensors: OUT.h5.tensors, else NULL */
    const char *problem;  /* name of this problem's tensor file */
    double mem_limit;     /* RLIMIT_AS of the point's child in bytes; 0: none */
    int round;            /* 0: calibrate, score and time; > 0: time again with `knob` */
    double knob;          /* round > 0: the knob value round 0 settled on (NaN: none) */
} point_ctx;

/* Instance with knob value v; select; finalize; density. Returns rc. */
static int eval_knob(const point_ctx *x, const ab_problem *pb, ab_params prm, double v,
                     double *density, char *msg, size_t ml)
{
    const ab_method *m = x->j->m;
    int kp = m->density_knob.param;
    if (kp >= 0) prm.v[kp] = m->params[kp].is_int ? round(v) : v;
    ab_instance in;
    int rc = ab_instance_create(&in, m, &prm, &pb->s);
    ab_layout l;
    ab_layout_init(&l, &pb->s, x->c->block_q, x->c->block_k);
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
static double from_u(const ab_knob *k, double u, double v_ref) { return k->log_scale && v_ref > 0 ? exp(u) : u; }

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
static int calibrate(const point_ctx *x, const ab_problem *pb, double target, double *knob,
                     double *achieved, char *msg, size_t ml)
{
    const ab_method *m = x->j->m;
    const ab_knob *kn = &m->density_knob;
    const ab_param *kp = &m->params[kn->param];
    const double tol = x->c->tolerance;
    const int inc = kn->increasing;
    int rc, evals = 0;
    double dv;
#define WITHIN(dd) (fabs((dd) - target) <= tol * target)
#define EVAL(v, out) (evals++, g_calib_evals = evals, eval_knob(x, pb, x->j->params, (v), (out), msg, ml))
    /* f > 0: density above the target */
#define F_OF(dd) ((dd) > 0 ? log((dd) / target) : -50.0)
    double best = NAN, bestd = NAN;
#define KEEP(v, dd) do { if (isnan(bestd) || fabs((dd) - target) < fabs(bestd - target)) { best = (v); bestd = (dd); } } while (0)
    /* bracket: a = the side whose density is below the target, b = above */
    double va = NAN, da = NAN, vb = NAN, db = NAN;
    if (!isnan(x->cached_knob) && x->cached_knob >= kp->min && x->cached_knob <= kp->max) {
        double g = kp->is_int ? round(x->cached_knob) : x->cached_knob;
        if ((rc = EVAL(g, &dv))) return rc;
        KEEP(g, dv);
        if (WITHIN(dv)) { *knob = g; *achieved = dv; return 0; }
        if (dv < target) { va = g; da = dv; } else { vb = g; db = dv; }
        /* step towards the other side: x2 (log knobs) or an eighth of the range */
        double step_u = kn->log_scale ? log(2.0) : (kp->max - kp->min) / 8;
        for (int e = 0; e < 4 && (isnan(va) || isnan(vb)); e++, step_u *= 2) {
            const int up = isnan(vb) == (inc != 0); /* move the knob up? */
            double u = to_u(kn, g) + (up ? step_u : -step_u);
            double v = from_u(kn, u, g);
            if (kp->is_int) v = round(v);
            if (v < kp->min) v = kp->min;
            if (v > kp->max) v = kp->max;
            if (v == g) break;
            if ((rc = EVAL(v, &dv))) return rc;
            KEEP(v, dv);
            if (WITHIN(dv)) { *knob = v; *achieved = dv; return 0; }
            if (dv < target) { va = v; da = dv; } else { vb = v; db = dv; }
            g = v;
            if (v == kp->min || v == kp->max) break;
        }
    }
    if (isnan(va) || isnan(vb)) { /* the range ends: the bracket, or proof the target is out of reach */
        const double vlo_d = inc ? kp->min : kp->max, vhi_d = inc ? kp->max : kp->min; /* low / high density ends */
        double dmin = NAN, dmax = NAN;
        if (isnan(va)) {
            if ((rc = EVAL(vlo_d, &dmin))) return rc;
            KEEP(vlo_d, dmin);
            if (WITHIN(dmin)) { *knob = vlo_d; *achieved = dmin; return 0; }
            if (dmin < target) { va = vlo_d; da = dmin; }
        }
        if (isnan(vb)) {
            if ((rc = EVAL(vhi_d, &dmax))) return rc;
            KEEP(vhi_d, dmax);
            if (WITHIN(dmax)) { *knob = vhi_d; *achieved = dmax; return 0; }
            if (dmax > target) { vb = vhi_d; db = dmax; }
        }
        if (isnan(va) || isnan(vb)) {
            double lo_d = isnan(dmin) ? da : dmin, hi_d = isnan(dmax) ? db : dmax;
            snprintf(msg, ml, "target density %.4g outside the reachable range [%.4g, %.4g] of %s in [%g, %g]",
                     target, lo_d, hi_d, kp->name, kp->min, kp->max);
            *achieved = isnan(va) ? (isnan(dmin) ? da : dmin) : (isnan(dmax) ? db : dmax);
            *knob = isnan(va) ? vlo_d : vhi_d;
            return 1;
        }
    }
    /* false position (Illinois) inside [va, vb] (densities da < target < db) */
    double fa = F_OF(da), fb = F_OF(db);
    int side = 0; /* which end stayed twice: halve its f (Illinois) */
    for (int it = 0; it < x->c->max_iters; it++) {
        if (kp->is_int && fabs(vb - va) <= 1) break;
        const int lg = kn->log_scale && va > 0 && vb > 0; /* both ends in one space */
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
        if ((rc = EVAL(v, &dv))) return rc;
        KEEP(v, dv);
        if (WITHIN(dv)) { *knob = v; *achieved = dv; return 0; }
        const double fv = F_OF(dv);
        if (dv < target) {
            va = v; fa = fv;
            if (side < 0) fb *= 0.5;
            side = side < 0 ? side - 1 : -1;
        } else {
            vb = v; fb = fv;
            if (side > 0) fa *= 0.5;
            side = side > 0 ? side + 1 : 1;
        }
        if (side == 3 || side == -3) side = 0;
    }
    *knob = best;
    *achieved = bestd;
    snprintf(msg, ml, "no value of %s reaches density %.4g within %.0f%%: nearest %.4g at %s=%.6g (%d evaluations)",
             kp->name, target, tol * 100, bestd, kp->name, best, evals);
    return 1;
#undef WITHIN
#undef EVAL
#undef F_OF
#undef KEEP
}

static void measure_masked(const point_ctx *x, ab_point *p, const ab_mask *mk);

static void measure_point(const point_ctx *x, ab_point *p)
{
    const base_pt *b = x->b;
    omp_set_num_threads(x->threads);
    bind_threads(x->threads);
    openblas_set_num_threads(x->threads);
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

/* One call: a fresh layout, select() (+ finalize) and run(); their times in
 * ms added to *sel and *run. */
static int one_call(ab_instance *in, const ab_problem *pb, const ab_config *c, ab_layout *l, float *out, double *sel,
                    double *run)
{
    ab_layout_free(l);
    ab_layout_init(l, &pb->s, c->block_q, c->block_k);
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
static int time_round(const point_ctx *x, ab_instance *in, const ab_problem *pb, ab_layout *l, float *out, ab_point *p)
{
    const ab_config *c = x->c;
    const ab_method *dm = ab_method_find("dense");
    int paired = c->paired && dm && x->j->m != dm;
    ab_instance dn;
    ab_layout dl;
    memset(&dl, 0, sizeof dl);
    float *dout = NULL;
    int rc = AB_OK, dn_live = 0;
    if (paired) {
        ab_params dp;
        ab_params_defaults(dm->params, AB_MAX_PARAMS, &dp);
        size_t t = (size_t)pb->s.heads * pb->s.seq_len * pb->s.head_dim;
        dout = malloc(t * sizeof *dout);
        if (dout && ab_instance_create(&dn, dm, &dp, &pb->s) == AB_OK) dn_live = 1;
        else if (dout) ab_instance_destroy(&dn);
        if (!dn_live) { paired = 0; snprintf(p->timing, sizeof p->timing, "unpaired"); }
    }
    const double fma0 = ab_fma_probe(1.0); /* the machine's speed now (docs/timing.md) */
    /* warm-up (at least one call of each, which also sizes the batches) */
    double tm = 0, td = 0;
    for (int w = 0; w < (c->warmup > 1 ? c->warmup : 1) && rc == AB_OK; w++) {
        double s0 = 0, r0 = 0;
        rc = one_call(in, pb, c, l, out, &s0, &r0);
        tm = s0 + r0;
        if (rc == AB_OK && paired) {
            double s1 = 0, r1 = 0;
            rc = one_call(&dn, pb, c, &dl, dout, &s1, &r1);
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
        const int dense_first = paired && (n + x->round) % 2 == 0; /* rounds alternate too: 1-pair rounds stay balanced */
        for (int k = 0; dense_first && k < kd && rc == AB_OK; k++) rc = one_call(&dn, pb, c, &dl, dout, &dsel, &drun);
        for (int k = 0; k < km && rc == AB_OK; k++) rc = one_call(in, pb, c, l, out, &sel, &run);
        for (int k = 0; paired && !dense_first && k < kd && rc == AB_OK; k++)
            rc = one_call(&dn, pb, c, &dl, dout, &dsel, &drun);
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
        if ((n >= c->min_repeats && el >= c->min_time_s) || n >= c->max_repeats || n >= cap || el >= c->max_time_s)
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
    if (rc) {
        const char *e = *ab_instance_error(in) ? ab_instance_error(in) : dn_live && *ab_instance_error(&dn) ? ab_instance_error(&dn) : ab_strerror(rc);
        ab_point_set_status(p, ab_status_of_code(rc), "timing round %d: %s", x->round + 1, e);
    }
    ab_layout_free(&dl);
    if (dn_live) ab_instance_destroy(&dn);
    free(dout);
    return rc;
}

static void measure_masked(const point_ctx *x, ab_point *p, const ab_mask *mk)
{
    const ab_config *c = x->c;
    const base_pt *b = x->b;
    const job *j = x->j;
    const ab_method *m = j->m;
    const arena_hdr *a = x->a;
    ab_shape s = { b->heads, b->n, b->d, mk->def->causal, 1.0f / sqrtf((float)b->d), mk };
    ab_problem pb = { s, a->q, a->k, a->v, (uint64_t)b->seed, x->threads };
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
            fprintf(stderr, "\ncalibrate %s N=%d target %.3g: %d evaluations (guess %s), rc %d\n", m->name, b->n, j->target,
                    g_calib_evals, isnan(x->cached_knob) ? "none" : "used", rc);
        p->knob_value = knob;
        p->achieved_density = achieved;
        if (rc == 1) { ab_point_set_status(p, "calib_failed", "%s", msg); return; }
        if (rc) { ab_point_set_status(p, ab_status_of_code(rc), "calibration: %s", msg); return; }
    }
    if (kp >= 0) prm.v[kp] = m->params[kp].is_int ? round(knob) : knob;
    p->knob_value = knob;
    ab_params_format(m->params, AB_MAX_PARAMS, &prm, p->params, sizeof p->params);
    if (j->device == AB_GPU) { /* harness/engine/gpu.c: upload, select, run, time with CUDA events, score */
        ab_gpu_point_in gi = { c, m, &prm, &pb, &a->ref, &a->ans };
        ab_gpu_measure(&gi, p);
        snprintf(p->timing, sizeof p->timing, "unpaired");
        p->rounds = 1;
        return;
    }

    ab_instance in;
    int rc = ab_instance_create(&in, m, &prm, &s);
    if (rc) {
        ab_point_set_status(p, ab_status_of_code(rc), "init: %s", *ab_instance_error(&in) ? ab_instance_error(&in) : ab_strerror(rc));
        ab_instance_destroy(&in);
        return;
    }
    size_t t = (size_t)b->heads * b->n * b->d;
    float *out = malloc(t * sizeof(float));
    if (!out) { ab_point_set_status(p, "oom", "cannot allocate the output (%zu bytes)", t * sizeof(float)); ab_instance_destroy(&in); return; }
    ab_layout l;
    memset(&l, 0, sizeof l);
    if (x->round > 0) { /* timing only: round 0 scored this point */
        if (time_round(x, &in, &pb, &l, out, p) == AB_OK) ab_point_set_status(p, "ok", "%s", "");
        goto done;
    }
    /* round 0: one call, checked and scored (every call computes the same) */
    ab_layout_free(&l);
    ab_layout_init(&l, &s, c->block_q, c->block_k);
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
        p->achieved_density = ab_layout_density(&l);
        snprintf(p->layout, sizeof p->layout, "%s", ab_layout_kind_name(l.kind));
        snprintf(p->kernel, sizeof p->kernel, "%s", m->run ? "method" : ab_kernel_name(&l));
        ab_scores sc;
        ab_score(&a->ref, &pb, &l, out, &sc);
        p->recall_mass = sc.recall_mass;
        p->recall_topk = sc.recall_topk;
        p->rel_l2_err = sc.rel_l2;
        p->max_abs_err = sc.max_abs;
        p->rows_scored = sc.rows;
        if (a->ans.n > 0) {
            int ok = 0, all = 0;
            ab_answer_score(&a->ans, out, b->n, &ok, &all);
            p->accuracy = all ? (double)ok / all : NAN;
            ab_wilson(ok, all, &p->acc_ci_lo, &p->acc_ci_hi);
            p->acc_trials = all;
        }
        char terr[200] = "";
        if (sc.nonfinite) {
            ab_point_set_status(p, "nan", "output has NaN or Inf on scored rows");
            goto done;
        }
        if (x->save_dir && ab_tensors_write_point(x->save_dir, j->key, x->problem, &pb, &l, out, terr, sizeof terr)) {
            ab_point_set_status(p, "error", "--save-tensors: %s", terr);
            goto done;
        }
    }
    if (!b->timed) {
        snprintf(p->timing, sizeof p->timing, "untimed");
        ab_point_set_status(p, "ok", "%s", "");
        goto done;
    }
    if (time_round(x, &in, &pb, &l, out, p) == AB_OK) ab_point_set_status(p, "ok", "%s", "");
done:
    ab_layout_free(&l);
    free(out);
    ab_instance_destroy(&in);
}

/* The point's figures from its samples (every round): medians, spread,
 * the bootstrap intervals and the flags. */
static void finish_timing(ab_point *p, const ab_config *c)
{
    int n = p->n_samples;
    if (n <= 0 || strcmp(p->status, "ok")) return;
    double *tot = malloc(sizeof(double) * (size_t)n * 2);
    int *grp = malloc(sizeof(int) * (size_t)n * 2);
    if (!tot || !grp) { free(tot); free(grp); return; }
    double *rat = tot + n;
    int *rgrp = grp + n, nr = 0;
    for (int i = 0; i < n; i++) {
        tot[i] = p->sample_select_ms[i] + p->sample_run_ms[i];
        grp[i] = p->sample_round[i];
        if (p->sample_calls[i] < 1) p->sample_calls[i] = 1;
        if (p->sample_dense_ms[i] > 0) { rat[nr] = tot[i] / p->sample_dense_ms[i]; rgrp[nr++] = p->sample_round[i]; }
        else p->sample_dense_ms[i] = NAN;
    }
    ab_stats st, ss, sr;
    ab_stats_compute(tot, n, &st);
    ab_stats_compute(p->sample_select_ms, n, &ss);
    ab_stats_compute(p->sample_run_ms, n, &sr);
    p->select_ms = ss.median;
    p->run_ms = sr.median;
    p->total_ms = st.median;
    p->min_ms = st.min;
    p->p10_ms = st.p10;
    p->p90_ms = st.p90;
    p->cv = st.cv;
    const uint64_t seed = fnv1a(p->key);
    ab_median_ci(tot, grp, n, 0.95, 2000, seed, &p->total_lo_ms, &p->total_hi_ms);
    const double flops = 4.0 * p->heads * (double)p->seq_len * p->seq_len * p->head_dim * p->mask_density;
    p->dense_gflops = flops / (st.median * 1e-3) / 1e9;
    p->rel_dense = p->rel_lo = p->rel_hi = p->dense_pair_ms = NAN;
    if (!strcmp(p->method, "dense") && !strcmp(p->device, "cpu")) {
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
    const double spare = ncpu > thr ? 100.0 * (ncpu - thr) / ncpu : 0, ours = 100.0 * (thr < ncpu ? thr : ncpu) / ncpu;
    if ((p->foreign_pct > spare + c->interference_pct * ours / 100 || p->steal_pct > c->interference_pct * ours / 100) &&
        !strstr(fl, "interference"))
        snprintf(fl + strlen(fl), sizeof fl - strlen(fl), "%sinterference", fl[0] ? "," : "");
    if (p->rounds > 1) {
        double lo = INFINITY, hi = 0, *v = malloc(sizeof(double) * (size_t)n);
        for (int r = 0; v && r < p->rounds; r++) {
            int m = 0;
            for (int i = 0; i < n; i++)
                if (p->sample_round[i] == r) v[m++] = nr > 0 && p->sample_dense_ms[i] > 0 ? tot[i] / p->sample_dense_ms[i] : tot[i];
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
static void add_round(ab_point *p, const ab_point *q)
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
    if (q->fma_gflops > 0) p->fma_gflops = p->fma_gflops > 0 ? (p->fma_gflops * r + q->fma_gflops) / (r + 1) : q->fma_gflops;
    if (q->shared_pct >= 0) p->shared_pct = p->shared_pct >= 0 ? (p->shared_pct * r + q->shared_pct) / (r + 1) : q->shared_pct;
    if (q->timing[0] && !strstr(p->timing, q->timing))
        snprintf(p->timing + strlen(p->timing), sizeof p->timing - strlen(p->timing), "%s%s", p->timing[0] ? "," : "",
                 q->timing);
}

/* ---- the parent's loop --------------------------------------------------- */
static volatile sig_atomic_t g_stop = 0; /* set by SIGINT/SIGTERM only */
static void on_signal(int sig) { g_stop = sig; }

static void fill_point_ids(ab_point *p, const base_pt *b, const job *j, int threads)
{
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", j->key);
    snprintf(p->method, sizeof p->method, "%s", j->m->name);
    ab_params_format(j->m->params, AB_MAX_PARAMS, &j->params, p->params, sizeof p->params);
    snprintf(p->device, sizeof p->device, "%s", j->device == AB_GPU ? "gpu" : "cpu");
    snprintf(p->dtype, sizeof p->dtype, "fp32");
    snprintf(p->task, sizeof p->task, "%s", b->task->name);
    p->seq_len = b->n; p->heads = b->heads; p->head_dim = b->d; p->causal = b->causal;
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
}

/* Fork fn(arg) into a child; wait up to timeout_s for it, reading `len`
 * bytes it writes into buf. Returns: 1 got the bytes, 0 no bytes (see
 * *wstatus), -2 timeout (child killed), -3 interrupted, -1 fork error. */
typedef void (*child_fn)(void *arg, int fd);
#define AB_EXIT_NOMEM 4 /* a point's child could not allocate its result */
static int run_isolated(child_fn fn, void *arg, void *buf, size_t len, double timeout_s, int *wstatus,
                        struct rusage *ru)
{
    int fds[2];
    if (pipe(fds)) return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) { close(fds[0]); close(fds[1]); return -1; }
    if (pid == 0) {
        close(fds[0]);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        fn(arg, fds[1]);
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    double deadline = ab_now_ms() + timeout_s * 1e3;
    int result = 0;
    for (;;) {
        if (g_stop) { result = -3; break; }
        double left = deadline - ab_now_ms();
        if (left <= 0) { result = -2; break; }
        struct pollfd pf = { fds[0], POLLIN, 0 };
        int pr = poll(&pf, 1, left > 200 ? 200 : (int)left + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) continue;
        ssize_t r = read(fds[0], (char *)buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* EOF */
        got += (size_t)r;
        if (got == len) { result = 1; break; }
    }
    if (result == -2 || result == -3) kill(pid, SIGKILL);
    close(fds[0]);
    if (ru) memset(ru, 0, sizeof *ru);
    while (wait4(pid, wstatus, 0, ru) < 0 && errno == EINTR) {}
    return result;
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
    if (write(fd, &ok, 1) != 1) _exit(3);
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
    const char *buf = (const char *)p;
    size_t left = sizeof *p;
    while (left) {
        ssize_t w = write(fd, buf, left);
        if (w <= 0) _exit(5);
        buf += w;
        left -= (size_t)w;
    }
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
        snprintf(mem, sizeof mem, " after reaching %.2f GiB resident of its %.2f GiB limit ([timing] point_mem_gb)",
                 peak / 1073741824.0, mem_limit / 1073741824.0);
    if (res == -2) ab_point_set_status(p, "timeout", "no result within point_timeout_s = %g s; child killed", timeout_s);
    else if (res == -1) ab_point_set_status(p, "error", "fork failed: %s", strerror(errno));
    else if (WIFSIGNALED(wstatus)) {
        int sg = WTERMSIG(wstatus);
        if (sg == SIGKILL) ab_point_set_status(p, "oom", "child killed by a SIGKILL attnbench did not send (the out-of-memory killer), peak %.2f GiB resident", peak / 1073741824.0);
        else if (near_limit) ab_point_set_status(p, "oom", "out of memory: child killed by signal %d (%s)%s", sg, strsignal(sg), mem);
        else ab_point_set_status(p, "crashed", "child killed by signal %d (%s)", sg, strsignal(sg));
    } else if (WEXITSTATUS(wstatus) == AB_EXIT_NOMEM || near_limit)
        ab_point_set_status(p, "oom", "out of memory: child exited with status %d without a result%s", WEXITSTATUS(wstatus), mem);
    else ab_point_set_status(p, "error", "child exited with status %d without a result", WEXITSTATUS(wstatus));
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

/* ---- --dry-run: how long will this take? -------------------------------- */
/* One method's cost on the probe problem (ms) and the density it ran at. */
typedef struct probe_res { double sel_ms, run_ms, density; int ok; } probe_res;
#define AB_PROBE_N 4096
#define AB_PROBE_MAX 256

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
        ab_shape s = { pa->b->heads, pa->b->n, pa->b->d, mk.def->causal, 1.0f / sqrtf((float)pa->b->d), &mk };
        ab_problem pb = { s, pa->a->q, pa->a->k, pa->a->v, (uint64_t)pa->b->seed, pa->threads };
        float *out = malloc((size_t)s.heads * s.seq_len * s.head_dim * sizeof(float));
        const ab_method *dm = ab_method_find("dense");
        for (int i = -1; out && i < pa->nm; i++) {
            const ab_method *m = i < 0 ? dm : pa->ms[i];
            probe_res *r = &res[i + 1];
            if (!m || !(m->devices & AB_CPU)) continue;
            ab_params prm;
            method_params(pa->c, m, &prm);
            ab_instance in;
            ab_layout l;
            memset(&l, 0, sizeof l);
            if (ab_instance_create(&in, m, &prm, &s) == AB_OK) {
                double s0 = 0, r0 = 0, s1 = 0, r1 = 0;
                if (one_call(&in, &pb, pa->c, &l, out, &s0, &r0) == AB_OK &&
                    one_call(&in, &pb, pa->c, &l, out, &s1, &r1) == AB_OK) {
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

static void fmt_dur(double s, char *buf, size_t n);

/* h:mm:ss, or days beyond two of them */
static void fmt_long(double s, char *buf, size_t n)
{
    if (s >= 2 * 86400) snprintf(buf, n, "%.1f days", s / 86400);
    else fmt_dur(s, buf, n);
}

/* Time every method once on the largest problem of the grid, shrunk to
 * N <= AB_PROBE_N, and add up a cost model of the whole run (docs/timing.md):
 * work scales as N^2 * heads * d * allowed pairs; per point: calibration
 * (~3 select() calls), one scored call, and for timed points `rounds` x
 * (warm-up + samples) of the method and of dense, with batching. */
static void dry_run_estimate(const ab_config *c, const base_pt *bases, int nb, const job *jobs, int nj, int threads)
{
    if (nj == 0) return;
    int big = 0;
    for (int i = 1; i < nb; i++)
        if ((double)bases[i].n * bases[i].n * bases[i].heads * bases[i].d * bases[i].mask_density >
            (double)bases[big].n * bases[big].n * bases[big].heads * bases[big].d * bases[big].mask_density)
            big = i;
    base_pt pbase = bases[big];
    if (pbase.n > AB_PROBE_N) pbase.n = AB_PROBE_N;
    ab_mask mk;
    char why[300];
    if (ab_mask_make(&mk, pbase.mask, pbase.n, (uint64_t)pbase.seed, why, sizeof why) != AB_OK) pbase.mask = "causal";
    else pbase.mask_density = ab_mask_fraction(&mk);
    ab_mask_free(&mk);
    if (!strcmp(pbase.mask, "causal")) pbase.mask_density = (pbase.n + 1.0) / (2.0 * pbase.n);
    probe_arg pa;
    memset(&pa, 0, sizeof pa);
    for (int i = 0; i < nj && pa.nm < AB_PROBE_MAX; i++) {
        int seen = 0;
        for (int k = 0; k < pa.nm; k++) seen |= pa.ms[k] == jobs[i].m;
        if (!seen) pa.ms[pa.nm++] = jobs[i].m;
    }
    fprintf(stderr, "attnbench: estimating: timing %d methods once on %s at N = %d (H = %d, d = %d, mask %s)...\n",
            pa.nm, pbase.task->name, pbase.n, pbase.heads, pbase.d, pbase.mask);
    size_t asz = arena_size(&pbase, c);
    arena_hdr *a = mmap(NULL, asz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) { printf("estimate: not available (cannot map the probe problem)\n"); return; }
    memset(a, 0, sizeof *a);
    a->size = asz;
    a->used = sizeof *a;
    data_arg da = { a, &pbase, c, threads, NULL, "probe" };
    char okb;
    int ws = 0;
    double t0 = ab_now_ms();
    int r = run_isolated(data_entry, &da, &okb, 1, c->point_timeout_s, &ws, NULL);
    const double gen_ms = ab_now_ms() - t0;
    static probe_res res[AB_PROBE_MAX + 1];
    pa.c = c; pa.b = &pbase; pa.a = a; pa.threads = threads;
    if (r != 1 || a->status) {
        printf("estimate: not available (the probe problem could not be generated: %s)\n", a->msg);
        munmap(a, asz);
        return;
    }
    r = run_isolated(probe_entry, &pa, res, sizeof res, c->point_timeout_s, &ws, NULL);
    munmap(a, asz);
    if (r != 1 || !res[0].ok) { printf("estimate: not available (the probe did not finish)\n"); return; }
    const double np2 = (double)pbase.n * pbase.n * pbase.heads * pbase.d * pbase.mask_density;
    const double dense_p = res[0].sel_ms + res[0].run_ms;
    double t_data = 0, t_cal = 0, t_score = 0, t_time = 0, t_big = 0, t_over = 0;
    const int big_n = bases[big].n;
    for (int i = 0; i < nb; i++) { /* data + fp64 reference per problem, scaled by N^2 */
        int has = 0;
        for (int k = 0; k < nj && !has; k++) has = jobs[k].base == i;
        if (has) t_data += gen_ms * ((double)bases[i].n * bases[i].n) / ((double)pbase.n * pbase.n);
    }
    for (int i = 0; i < nj; i++) {
        const job *j = &jobs[i];
        const base_pt *b = &bases[j->base];
        if (j->device != AB_CPU) continue;
        int k = 0;
        while (k < pa.nm && pa.ms[k] != j->m) k++;
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
        t_over += 5;
        if (b->n == big_n) t_big += pt_ms;
    }
    const double total = (t_data + t_cal + t_score + t_time) / 1e3;
    char tb[32], db[32], cb[32], sb[32], mb[32];
    fmt_long(total, tb, sizeof tb);
    fmt_long(t_data / 1e3, db, sizeof db);
    fmt_long(t_cal / 1e3, cb, sizeof cb);
    fmt_long(t_score / 1e3, sb, sizeof sb);
    fmt_long(t_time / 1e3, mb, sizeof mb);
    printf("estimate: %d points, about %s of wall time on this machine with %d thread%s\n", nj, tb, threads,
           threads > 1 ? "s" : "");
    printf("  data + fp64 reference %s, calibration %s, scoring %s, timing %s (%d round%s%s; h:mm:ss)\n", db, cb, sb, mb, c->rounds,
           c->rounds > 1 ? "s" : "", c->paired ? ", paired with dense" : "");
    printf("  points at the largest N = %d: %.0f%% of the time; dense at that N: ~%.3g ms per call\n", big_n,
           total > 0 ? 100 * t_big / 1e3 / total : 0, dense_p * (double)bases[big].n * bases[big].n * bases[big].heads *
                                                       bases[big].d * bases[big].mask_density / np2);
    printf("  (each method timed once at N = %d and scaled by N^2 x heads x d x allowed pairs; selectors that grow\n"
           "   faster, or a machine under load, make it longer)\n", pbase.n);
    if (total > 2 * 3600)
        printf("  that is long for one machine: split it with --shard I/N, or on a cluster with\n"
               "  scripts/slurm_sweep.sh %s -n 64 -o OUT.h5 (docs/scaling.md)\n", c->path);
    (void)t_over;
}

static void usage_run(FILE *f)
{
    fprintf(f,
            "usage: attnbench run -c CONFIG -o OUT.h5 [options]\n"
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
#define NEED_ARG() do { if (i + 1 >= argc) { ab_errorf("run: option %s needs a value", a); return 2; } } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_run(stdout); return 0; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--config")) { NEED_ARG(); o->config = argv[++i]; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) { NEED_ARG(); o->out = argv[++i]; }
        else if (!strcmp(a, "--resume")) o->resume = 1;
        else if (!strcmp(a, "--dry-run")) o->dry_run = 1;
        else if (!strcmp(a, "--no-estimate")) o->no_estimate = 1;
        else if (!strcmp(a, "--save-tensors")) o->save_tensors = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) o->quiet = 1;
        else if (!strcmp(a, "--methods")) {
            NEED_ARG();
            char err[256];
            if (ab_parse_name_list(argv[++i], o->methods, AB_CFG_LIST, &o->n_methods, err, sizeof err)) {
                ab_errorf("run: --methods: %s", err);
                return 2;
            }
            for (int k = 0; k < o->n_methods; k++)
                if (!ab_method_find(o->methods[k])) { ab_errorf("run: --methods: unknown method '%s' (see: attnbench list methods)", o->methods[k]); return 2; }
        } else if (!strcmp(a, "--devices")) {
            NEED_ARG();
            char names[4][AB_CFG_NAME], err[256];
            int n;
            if (ab_parse_name_list(argv[++i], names, 4, &n, err, sizeof err)) { ab_errorf("run: --devices: %s", err); return 2; }
            for (int k = 0; k < n; k++) {
                if (!strcmp(names[k], "cpu")) o->devices |= AB_CPU;
                else if (!strcmp(names[k], "gpu")) o->devices |= AB_GPU;
                else { ab_errorf("run: --devices: unknown device '%s' (cpu, gpu)", names[k]); return 2; }
            }
        } else if (!strcmp(a, "--threads")) {
            NEED_ARG();
            char *end;
            long t = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || t < 0 || t > 4096) { ab_errorf("run: --threads: '%s' is not an integer in [0, 4096]", argv[i]); return 2; }
            o->threads = (int)t;
        } else if (!strcmp(a, "--shard")) {
            NEED_ARG();
            int si, sn;
            char extra;
            if (sscanf(argv[++i], "%d/%d%c", &si, &sn, &extra) != 2 || sn < 1 || si < 0 || si >= sn) {
                ab_errorf("run: --shard: '%s' is not I/N with 0 <= I < N", argv[i]);
                return 2;
            }
            o->shard_i = si; o->shard_n = sn;
        } else { ab_errorf("run: unknown option '%s' (see: attnbench run --help)", a); return 2; }
#undef NEED_ARG
    }
    if (!o->config) { ab_errorf("run: no config given (-c CONFIG); see: attnbench run --help"); return 2; }
    if (!o->out && !o->dry_run) { ab_errorf("run: no output file given (-o OUT.h5); see: attnbench run --help"); return 2; }
    return -1;
}

static void fmt_dur(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 864000) { snprintf(buf, n, "--:--"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

int ab_cmd_run(int argc, char **argv)
{
    run_opts o;
    int prc = parse_run_args(argc, argv, &o);
    if (prc >= 0) return prc;

    ab_config *c = malloc(sizeof *c);
    if (!c) { ab_errorf("out of memory"); return 2; }
    char err[1024];
    if (ab_config_load(c, o.config, err, sizeof err) || ab_config_check(c, err, sizeof err)) {
        ab_errorf("%s", err);
        ab_config_free(c);
        free(c);
        return 2;
    }
    int threads = o.threads >= 0 ? o.threads : c->threads;
    if (threads == 0) threads = ab_default_threads();
    const double mem_limit = point_mem_limit(c);

    base_pt *bases = NULL;
    job *jobs = NULL;
    int nb = 0, nj = 0;
    if (build_grid(c, &o, threads, &bases, &nb, &jobs, &nj, err, sizeof err)) {
        ab_errorf("%s", err);
        ab_config_free(c);
        free(c);
        return 2;
    }
    if (!o.quiet) ab_blas_core_announce(); /* the input is good: now say how OpenBLAS runs */
    if (o.dry_run) {
        printf("%d points (%d problems), threads=%d%s\n", nj, nb, threads, o.shard_n > 1 ? " (this shard)" : "");
        for (int i = 0; i < nj; i++) {
            const base_pt *b = &bases[jobs[i].base];
            char mp[160];
            ab_params_format(jobs[i].m->params, AB_MAX_PARAMS, &jobs[i].params, mp, sizeof mp);
            printf("%s  %-18s %-4s %-8s N=%-6d H=%-2d d=%-3d mask=%s seed=%lld depth=%.2f density=%s%.3g  %s\n",
                   jobs[i].key, jobs[i].m->name, jobs[i].device == AB_GPU ? "gpu" : "cpu", b->task->name, b->n,
                   b->heads, b->d, b->mask, (long long)b->seed, b->depth, isnan(jobs[i].target) ? "native:" : "",
                   isnan(jobs[i].target) ? 0.0 : jobs[i].target, mp);
        }
        fflush(stdout);
        if (!o.no_estimate) dry_run_estimate(c, bases, nb, jobs, nj, threads);
        free(bases); free(jobs); ab_config_free(c); free(c);
        return 0;
    }

    ab_env env;
    memset(&env, 0, sizeof env);
    ab_env_capture(&env, c, argc + 1, argv - 1, threads);
    ab_store *st = NULL;
    if (ab_store_open(o.out, &env, o.resume, &st, err, sizeof err)) {
        ab_errorf("%s", err);
        ab_env_free(&env);
        free(bases); free(jobs); ab_config_free(c); free(c);
        return 2;
    }
    ab_env_free(&env);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char save_dir[1100];
    if (o.save_tensors && ab_tensors_dir(o.out, save_dir, sizeof save_dir)) {
        ab_errorf("--save-tensors: cannot create %s.tensors: %s", o.out, strerror(errno));
        ab_store_close(st, err, sizeof err);
        free(bases); free(jobs); ab_config_free(c); free(c);
        return 2;
    }
    int tty = !o.quiet && isatty(STDERR_FILENO);
    int todo = 0, skipped = 0;
    long units = 0; /* child runs expected: `rounds` per timed CPU point, 1 otherwise */
    for (int i = 0; i < nj; i++) {
        if (o.resume && ab_store_has(st, jobs[i].key)) { skipped++; continue; }
        todo++;
        units += jobs[i].device == AB_CPU && bases[jobs[i].base].timed ? c->rounds : 1;
    }
    if (!o.quiet)
        fprintf(stderr, "attnbench: %d points to run (%d already stored), %d threads, %d timing round%s per point%s, output %s\n",
                todo, skipped, threads, c->rounds, c->rounds > 1 ? "s" : "", c->paired ? " (paired with dense)" : "", o.out);
    int done = 0, failed = 0, store_failed = 0;
    long units_done = 0;
    double t0 = ab_now_ms();
    ab_point *pt = malloc(sizeof *pt);
    int *pj = malloc(sizeof(int) * (size_t)(nj + 1)), *order = malloc(sizeof(int) * (size_t)(nj + 1));
    unsigned char *live = malloc((size_t)nj + 1);
    if (!pt || !pj || !order || !live) { ab_errorf("out of memory"); g_stop = -1; }

    for (int bi = 0; bi < nb && !g_stop; bi++) {
        const base_pt *b = &bases[bi];
        int np = 0; /* this problem's pending jobs, in grid order */
        for (int i = 0; i < nj; i++)
            if (jobs[i].base == bi && !(o.resume && ab_store_has(st, jobs[i].key))) pj[np++] = i;
        if (!np) continue;
        size_t asz = arena_size(b, c);
        arena_hdr *a = mmap(NULL, asz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        int data_ok = 0, data_unsup = 0; /* data_unsup: the task has no valid trial here */
        char data_msg[300] = "", problem[160] = "";
        if (a == MAP_FAILED) {
            snprintf(data_msg, sizeof data_msg, "cannot map %zu bytes for the problem: %s", asz, strerror(errno));
            a = NULL;
        } else {
            memset(a, 0, sizeof *a);
            a->size = asz;
            a->used = sizeof *a;
            /* --save-tensors names this problem's file after what defines it */
            char mslug[AB_MASK_SPEC]; /* the mask spec as a file-name-safe word */
            snprintf(mslug, sizeof mslug, "%s", b->mask);
            for (char *ch = mslug; *ch; ch++)
                if (!isalnum((unsigned char)*ch) && *ch != '.' && *ch != '-') *ch = '_';
            snprintf(problem, sizeof problem, "problem_%s_N%d_H%d_d%d_%s_s%lld_z%.4g", b->task->name, b->n,
                     b->heads, b->d, mslug, (long long)b->seed, b->depth);
            data_arg da = { a, b, c, threads, o.save_tensors ? save_dir : NULL, problem };
            char okb;
            int ws = 0;
            int r = run_isolated(data_entry, &da, &okb, 1, c->point_timeout_s, &ws, NULL);
            if (r == -3) { munmap(a, asz); break; }
            if (r == 1 && a->status == 0) data_ok = 1;
            else if (r == 1) {
                snprintf(data_msg, sizeof data_msg, "data generation failed: %s", a->msg);
                data_unsup = a->status == AB_EUNSUPPORTED;
            }
            else {
                ab_point tmp;
                memset(&tmp, 0, sizeof tmp);
                classify_failure(&tmp, r, ws, c->point_timeout_s, NULL, 0);
                snprintf(data_msg, sizeof data_msg, "data generation %s: %s", tmp.status, tmp.message);
            }
        }
        ab_point *res = calloc((size_t)np, sizeof *res);
        if (!res) { ab_errorf("out of memory"); g_stop = -1; if (a) munmap(a, asz); break; }
        /* Rounds: round 0 calibrates, scores and times each point in its own
         * child; rounds 1.. time the timed points again, each in a fresh
         * child, so a point's samples come from `rounds` processes spread over
         * the problem's whole stretch of the sweep. Each round visits the
         * points in its own shuffled order, so drift over time spreads over
         * all of them instead of following the grid. */
        uint64_t ord_seed = fnv1a(problem[0] ? problem : b->task->name);
        for (int r = 0; r < c->rounds && !g_stop; r++) {
            for (int q = 0; q < np; q++) order[q] = q;
            uint64_t sm = ord_seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(r + 1));
            for (int q = np - 1; q > 0; q--) { /* Fisher-Yates with an LCG */
                sm = sm * 6364136223846793005ull + 1442695040888963407ull;
                int w = (int)((sm >> 33) % (uint64_t)(q + 1)), tmp = order[q];
                order[q] = order[w];
                order[w] = tmp;
            }
            for (int q = 0; q < np && !g_stop; q++) {
                const int k = order[q];
                const job *j = &jobs[pj[k]];
                if (r > 0 && !live[k]) continue;
                ab_point *pr = r == 0 ? &res[k] : pt;
                fill_point_ids(pr, b, j, threads);
                char gpu_why[256] = "";
                int interrupted = 0;
                if (r > 0) { /* timing only, with the knob round 0 found */
                    point_ctx x = { c, b, j, a, threads, NAN, NULL, problem, mem_limit, r, res[k].knob_value };
                    if (point_child(&x, pr, &res[k].point_s, mem_limit) == -3) { interrupted = 1; break; }
                    if (!strcmp(pr->status, "ok")) add_round(&res[k], pr);
                    else { /* a round that failed fails the point: no timing from the others */
                        ab_point *f = &res[k];
                        snprintf(f->status, sizeof f->status, "%s", pr->status);
                        snprintf(f->message, sizeof f->message, "round %d of %d: %.200s", r + 1, c->rounds, pr->message);
                        f->n_samples = 0;
                        f->rounds = 0;
                        live[k] = 0;
                    }
                    if (res[k].rounds >= c->rounds) live[k] = 0;
                } else if (!data_ok) {
                    ab_point_set_status(pr, data_unsup ? "unsupported" : strstr(data_msg, "oom") || strstr(data_msg, "memory") ? "oom" : "error", "%s", data_msg);
                } else if (j->device == AB_GPU) {
                    /* ab_gpu_count() probes in its own child: this process never initialises CUDA */
                    if (!(j->m->devices & AB_GPU)) ab_point_set_status(pr, "unsupported", "method %s has no GPU implementation", j->m->name);
                    else if (ab_gpu_count(gpu_why, sizeof gpu_why) == 0) ab_point_set_status(pr, "unsupported", "%s", gpu_why);
                    else { /* a child like a CPU point, but no RLIMIT_AS: the CUDA runtime reserves huge virtual ranges */
                        point_ctx x = { c, b, j, a, threads, NAN, NULL, problem, 0, 0, NAN };
                        x.cached_knob = pred_knob(st, j);
                        double ps = 0;
                        if (point_child(&x, pr, &ps, 0) == -3) { interrupted = 1; break; }
                        pr->point_s = ps;
                    }
                } else if (!(j->m->devices & AB_CPU)) {
                    ab_point_set_status(pr, "unsupported", "method %s has no CPU implementation", j->m->name);
                } else {
                    point_ctx x = { c, b, j, a, threads, NAN, o.save_tensors ? save_dir : NULL, problem, mem_limit, 0, NAN };
                    x.cached_knob = pred_knob(st, j);
                    double ps = 0;
                    int rr = point_child(&x, pr, &ps, mem_limit);
                    if (rr == -3) { interrupted = 1; break; }
                    pr->point_s = ps;
                }
                if (r == 0) live[k] = j->device == AB_CPU && b->timed && !strcmp(pr->status, "ok") && pr->rounds == 1 &&
                                      c->rounds > 1;
                if (interrupted) break;
                units_done++;
                if (tty) {
                    double el = (ab_now_ms() - t0) / 1e3;
                    char eta[32], elb[32], dens[32];
                    fmt_dur(units_done < units ? el / units_done * (units - units_done) : 0, eta, sizeof eta);
                    fmt_dur(el, elb, sizeof elb);
                    if (isnan(j->target)) snprintf(dens, sizeof dens, "native");
                    else snprintf(dens, sizeof dens, "%.3g", j->target);
                    char last[48] = "scored";
                    if (pr->n_samples > 0)
                        snprintf(last, sizeof last, "%.3g ms", pr->sample_select_ms[0] + pr->sample_run_ms[0]);
                    fprintf(stderr, "\r\033[K[%d/%d points, round %d/%d] %s %s N=%d d=%d mask=%s density=%s: %s %s | %s elapsed, ETA %s",
                            done, todo, r + 1, c->rounds, j->m->name, b->task->name, b->n, b->d, b->mask, dens, pr->status,
                            strcmp(pr->status, "ok") ? "" : last, elb, eta);
                }
            }
        }
        /* A point is stored once all its rounds are done; an interrupt in the
         * middle of a problem drops that problem's points (resume reruns them). */
        for (int k = 0; k < np && !g_stop; k++) {
            const job *j = &jobs[pj[k]];
            ab_point *pr = &res[k];
            finish_timing(pr, c);
            if (ab_store_append(st, pr, err, sizeof err)) {
                ab_errorf("%s", err);
                store_failed = 1;
                g_stop = -1;
                break;
            }
            done++;
            if (!ab_status_is_ok(pr->status) && strcmp(pr->status, "unsupported") && strcmp(pr->status, "calib_failed"))
                failed++;
            if (!o.quiet && !tty) {
                double el = (ab_now_ms() - t0) / 1e3;
                char eta[32], dens[32];
                fmt_dur(units_done < units ? el / units_done * (units - units_done) : 0, eta, sizeof eta);
                if (isnan(j->target)) snprintf(dens, sizeof dens, "native");
                else snprintf(dens, sizeof dens, "%.3g", j->target);
                fprintf(stderr, "[%d/%d] %s %s N=%d H=%d d=%d mask=%s depth=%.2g density=%s -> %s total=%.4g ms [%.4g, %.4g] x dense %.3g recall=%.3f acc=%.3f%s%s%s (ETA %s)\n",
                        done, todo, j->m->name, b->task->name, b->n, b->heads, b->d, b->mask, b->depth, dens, pr->status,
                        pr->total_ms, pr->total_lo_ms, pr->total_hi_ms, pr->rel_dense, pr->recall_mass, pr->accuracy,
                        pr->timing[0] ? " [" : "", pr->timing, pr->timing[0] ? "]" : "", eta);
                if (pr->message[0]) fprintf(stderr, "    %s\n", pr->message);
            }
        }
        free(res);
        if (a) munmap(a, asz);
    }
    if (tty) fprintf(stderr, "\n");
    free(pt);
    free(pj);
    free(order);
    free(live);
    int interrupted = g_stop > 0;
    if (ab_store_close(st, err, sizeof err)) {
        ab_errorf("%s", err);
        store_failed = 1;
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    free(bases); free(jobs); ab_config_free(c); free(c);
    if (interrupted) {
        fprintf(stderr, "attnbench: interrupted by signal %d: %d completed points are stored in %s; run again with --resume to finish\n",
                (int)g_stop, done, o.out);
        return 1;
    }
    if (store_failed) {
        fprintf(stderr, "attnbench: stopped because the results could not be written (see above); every point completed "
                        "before that is kept in %s and its .journal; fix the cause (disk space, permissions) and run "
                        "again with --resume\n", o.out);
        return 1;
    }
    if (!o.quiet)
        fprintf(stderr, "attnbench: %d points done (%d failed) in %.1f s -> %s\n", done, failed,
                (ab_now_ms() - t0) / 1e3, o.out);
    return failed ? 1 : 0;
}
