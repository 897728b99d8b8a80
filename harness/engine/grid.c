/* grid.c — the config expanded into problems and points (grid.h): each
 * [sweep] / [sweep.NAME] grid in order, an odometer over its axes, problems
 * and points deduplicated by hash, keys, calibration families and chains,
 * the shard. */
#include "harness/engine/grid.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int override_values(const ab_override *o, int n, const char *plugin, const char *param,
                           const double **v)
{
    for (int i = 0; i < n; i++)
        if (!o[i].is_str && !strcmp(o[i].plugin, plugin) && !strcmp(o[i].param, param)) {
            *v = o[i].v;
            return o[i].n;
        }
    return 0;
}

uint64_t ab_fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The string a point's key hashes; n < 0 leaves out N and the depth (the
 * point's calibration family: see job_chain). */
static void key_string(const base_pt *b, const job *j, const ab_config *c, int threads, int n, char *buf,
                       size_t bl)
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
    if (!strcmp(b->mask, "causal") || !strcmp(b->mask, "full"))
        snprintf(mk, sizeof mk, "c%d", b->causal);
    else
        snprintf(mk, sizeof mk, "c%d|m%s", b->causal, b->mask);
    snprintf(buf, bl, "v1|%s|%s|N%d|H%d|d%d|%s|s%lld|z%.6g|%s|%s|%s|t%.6g|b%dx%d|T%d", b->task->name, tp, n,
             b->heads, b->d, mk, (long long)b->seed, n < 0 ? -1.0 : b->depth, j->m->name,
             isnan(j->target) ? mp : "", j->device == AB_GPU ? "gpu" : "cpu", j->target, j->block_q,
             j->block_k, threads);
    if (j->dtype == AB_BF16) { /* fp32 points keep the keys of files written before the dtype axis */
        const size_t l = strlen(buf);
        snprintf(buf + l, bl - l, "|bf16");
    }
}

void ab_base_phase_tag(const base_pt *b, char *buf, size_t n)
{
    if (b->phase != AB_DECODE && b->kv_heads == b->heads) {
        buf[0] = 0;
        return;
    }
    if (b->phase != AB_DECODE)
        snprintf(buf, n, "|kv%d", b->kv_heads);
    else
        snprintf(buf, n, "|dec|kv%d|B%d|S%d|L%d|r%.6g", b->kv_heads, b->batch, b->steps, b->layers,
                 b->layer_corr);
}

static void job_key(const base_pt *b, job *j, const ab_config *c, int threads)
{
    char buf[4096], tag[96];
    key_string(b, j, c, threads, b->n, buf, sizeof buf);
    ab_base_phase_tag(b, tag, sizeof tag);
    strncat(buf, tag, sizeof buf - strlen(buf) - 1);
    snprintf(j->key, sizeof j->key, "%016llx", (unsigned long long)ab_fnv1a(buf));
    key_string(b, j, c, threads, -1, buf, sizeof buf);
    strncat(buf, tag, sizeof buf - strlen(buf) - 1);
    j->fam = ab_fnv1a(buf);
}

/* Defaults + config overrides (first value of each list). */
void ab_method_params(const ab_config *c, const ab_method *m, ab_params *p)
{
    ab_params_defaults(m->params, AB_MAX_PARAMS, p);
    for (int i = 0; i < p->n; i++) {
        const double *v;
        if (override_values(c->mo, c->n_mo, m->name, m->params[i].name, &v) > 0) p->v[i] = v[0];
    }
}

/* Append the jobs of one problem: every method x device (x dtype on the
 * CPU) x density. */
static void add_jobs(const ab_config *c, const ab_method *const *ms, int nm, unsigned devs, const ab_grid *ax,
                     int b, job *jobs, int *nj, int phase, int all)
{
    for (int mi = 0; mi < nm; mi++)
        for (int slot = 0; slot < 3; slot++) { /* cpu fp32, cpu bf16, gpu (fp16: docs/gpu.md) */
            const unsigned dv = slot < 2 ? AB_CPU : AB_GPU, dt = slot == 1 ? AB_BF16 : AB_FP32;
            if (!(devs & dv) || (dv == AB_CPU && !(c->dtypes & dt))) continue;
            const ab_method *m = ms[mi];
            /* `methods = all` means every method of the phase and dtype; a
             * method listed by name that lacks either is run and recorded
             * unsupported */
            if (all && !(m->phases & (unsigned)phase)) continue;
            if (all && dt == AB_BF16 && !(ab_method_dtypes(m) & dt)) continue;
            job base_job = { .base = b, .m = m, .device = dv, .dtype = dt };
            ab_method_params(c, m, &base_job.params);
            ab_config_blocks(c, m, &base_job.block_q, &base_job.block_k);
            int kp = m->density_knob.param;
            if (kp < 0) {
                base_job.target = 1.0;
                jobs[(*nj)++] = base_job;
            } else if (c->native) {
                const double *v;
                int nv = override_values(c->mo, c->n_mo, m->name, m->params[kp].name, &v);
                double def = m->params[kp].def;
                if (nv == 0) {
                    v = &def;
                    nv = 1;
                }
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

/* The problem's task, its parameters (variant `var` of its lists) and
 * string parameters from the config. */
static void base_task(const ab_config *c, const char *task, int var, base_pt *bp)
{
    bp->task = ab_task_find(task);
    ab_config_task_params(c, bp->task, var, &bp->tparams, bp->tstr);
}

/* The mask's causal flag and allowed-pair fraction at (N, seed), once per
 * (mask, N, seed) (cached in *mc); the mask is bound again in each child. */
typedef struct mask_memo {
    const char *mask;
    int n;
    int64_t seed;
    int causal;
    double frac;
} mask_memo;
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
    } else
        snprintf(err, errlen, "%s: %s: mask '%s' at N = %d: %s", c->path, where, bp->mask, bp->n, why);
    ab_mask_free(&mk);
    return rc == AB_OK ? 0 : -1;
}

/* Open-addressing set of 64-bit hashes -> index (dedupe of problems and
 * points across grids). */
typedef struct hidx {
    uint64_t *h;
    int *v;
    size_t cap;
} hidx;
static int hidx_init(hidx *x, size_t n)
{
    x->cap = 16;
    while (x->cap < 2 * n + 16) x->cap <<= 1;
    x->h = calloc(x->cap, sizeof *x->h);
    x->v = malloc(x->cap * sizeof *x->v);
    return x->h && x->v ? 0 : -1;
}
static void hidx_free(hidx *x)
{
    free(x->h);
    free(x->v);
}
/* index stored under h, else stores v and returns -1 (h != 0) */
static int hidx_get_put(hidx *x, uint64_t h, int v)
{
    if (!h) h = 1;
    for (size_t i = (size_t)h & (x->cap - 1);; i = (i + 1) & (x->cap - 1)) {
        if (!x->h[i]) {
            x->h[i] = h;
            x->v[i] = v;
            return -1;
        }
        if (x->h[i] == h) return x->v[i];
    }
}

static uint64_t base_hash(const base_pt *b)
{
    char buf[AB_MASK_SPEC + 2900], tag[96], tp[2560];
    ab_base_phase_tag(b, tag, sizeof tag);
    ab_params_format(b->task->params, AB_TASK_MAX_PARAMS, &b->tparams, tp, sizeof tp);
    snprintf(buf, sizeof buf, "%s|%d|%d|%d|%s|%lld|%.17g%s|%s", b->task->name, b->n, b->heads, b->d, b->mask,
             (long long)b->seed, b->depth, tag, tp);
    return ab_fnv1a(buf);
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
    if (!ord || !at || !last || hidx_init(&hf, (size_t)nj)) {
        free(ord);
        free(at);
        free(last);
        hidx_free(&hf);
        return -1;
    }
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

/* The state of one expansion: what is built so far and the dedupe sets. */
typedef struct grid_build {
    const ab_config *c;
    int threads;
    unsigned devs;
    base_pt *bases;
    int nb;
    job *jobs;
    int nj;
    hidx hb, hj;   /* problems and points seen (dedupe across grids) */
    int phase, kv; /* the phase axis position being expanded (kv 0: = heads) */
    int all;       /* the grid's methods are `all` (not listed by name) */
    mask_memo *mc; /* base_mask's cache */
    int nmc;
    int *vtask, *vvar; /* the task axis: grid task index and variant of each position */
} grid_build;

/* Upper bounds of the problems and jobs of every grid. */
static void grid_capacity(const ab_config *c, const ab_plan_opts *o, size_t *nb, size_t *nj)
{
    *nb = *nj = 0;
    for (int g = 0; g < ab_config_ngrids(c); g++) {
        ab_grid ax;
        ab_config_grid(c, g, &ax);
        size_t nvar = 0;
        for (int t = 0; t < ax.n_tasks; t++)
            nvar += (size_t)ab_config_task_variants(c, ab_task_find(ax.tasks[t]));
        size_t nbg = nvar * ax.n_lens * ax.n_heads * ax.n_dims * ax.n_masks * ax.n_seeds * ax.n_depths;
        size_t nm = o->n_methods   ? (size_t)o->n_methods
                    : ax.n_methods ? (size_t)ax.n_methods
                                   : (size_t)ab_method_count;
        size_t per = (size_t)(c->native ? AB_CFG_LIST : ax.n_dens) + 1;
        nbg *= (size_t)ax.n_kv * 2; /* kv_heads x phases */
        *nb += nbg;
        *nj += nbg * nm * 3 * per; /* cpu fp32, cpu bf16, gpu */
    }
}

/* Methods of a grid: the command line's list, else the grid's, else all. */
static int grid_methods(const ab_plan_opts *o, const ab_grid *ax, const ab_method **ms)
{
    int nm = 0;
    if (o->n_methods) {
        for (int i = 0; i < o->n_methods; i++) ms[nm++] = ab_method_find(o->methods[i]);
    } else if (ax->n_methods) {
        for (int i = 0; i < ax->n_methods; i++) ms[nm++] = ab_method_find(ax->methods[i]);
    } else {
        for (int i = 0; i < ab_method_count && nm < 256; i++) ms[nm++] = ab_method_at(i);
    }
    return nm;
}

/* The grid's axes, outermost first: task, length, heads, head dim, mask,
 * seed, depth. */
enum { AX_TASK, AX_LEN, AX_HEADS, AX_DIM, AX_MASK, AX_SEED, AX_DEPTH, AX_N };

/* Next position of the odometer ix over axes of sizes n (the last axis
 * turns fastest); 0 after the last one. */
static int odometer_next(int *ix, const int *n)
{
    for (int a = AX_N - 1; a >= 0; a--) {
        if (++ix[a] < n[a]) return 1;
        ix[a] = 0;
    }
    return 0;
}

/* The problem at odometer position ix of grid ax (a new one, or the one an
 * earlier grid made) and its points no earlier grid had. */
static int grid_problem(grid_build *gb, const ab_grid *ax, const int *ix, const ab_method *const *ms, int nm,
                        char *err, size_t errlen)
{
    const ab_config *c = gb->c;
    base_pt *bp = &gb->bases[gb->nb];
    memset(bp, 0, sizeof *bp);
    base_task(c, ax->tasks[gb->vtask[ix[AX_TASK]]], gb->vvar[ix[AX_TASK]], bp);
    bp->n = ax->seq_lens[ix[AX_LEN]];
    bp->heads = ax->heads[ix[AX_HEADS]];
    bp->d = ax->head_dims[ix[AX_DIM]];
    bp->mask = ax->masks[ix[AX_MASK]];
    bp->seed = ax->seeds[ix[AX_SEED]];
    bp->depth = ax->depths[ix[AX_DEPTH]];
    bp->timed = ab_config_timed(c, bp->task->name, bp->depth);
    bp->phase = gb->phase;
    bp->kv_heads = gb->kv > 0 ? gb->kv : bp->heads;
    bp->batch = gb->phase == AB_DECODE ? c->batch : 1;
    bp->steps = gb->phase == AB_DECODE ? c->steps : 0;
    bp->layers = gb->phase == AB_DECODE ? ax->layers : 1;
    bp->layer_corr = gb->phase == AB_DECODE ? ax->layer_corr : 0;
    if (gb->phase == AB_DECODE && strcmp(bp->mask, "causal"))
        return 0; /* a decode query sees the whole cache */
    int bi = hidx_get_put(&gb->hb, base_hash(bp), gb->nb);
    if (bi < 0) { /* a new problem */
        if (base_mask(c, bp, &gb->mc, &gb->nmc, ax->masks_where, err, errlen)) return -1;
        bi = gb->nb++;
    }
    int j0 = gb->nj, k = j0;
    add_jobs(c, ms, nm, gb->devs, ax, bi, gb->jobs, &gb->nj, gb->phase, gb->all);
    for (int q = j0; q < gb->nj; q++) { /* keep points no earlier grid had */
        job_key(&gb->bases[bi], &gb->jobs[q], c, gb->threads);
        if (hidx_get_put(&gb->hj, ab_fnv1a(gb->jobs[q].key), q) < 0) gb->jobs[k++] = gb->jobs[q];
    }
    gb->nj = k;
    return 0;
}

/* Every problem of grid g, in axis order. */
static int grid_expand(grid_build *gb, const ab_plan_opts *o, int g, char *err, size_t errlen)
{
    ab_grid ax;
    ab_config_grid(gb->c, g, &ax);
    const ab_method *ms[256];
    const int nm = grid_methods(o, &ax, ms);
    gb->all = !o->n_methods && !ax.n_methods;
    int nvar = 0; /* the task axis: every variant of every task */
    for (int t = 0; t < ax.n_tasks; t++) nvar += ab_config_task_variants(gb->c, ab_task_find(ax.tasks[t]));
    free(gb->vtask);
    free(gb->vvar);
    gb->vtask = malloc(sizeof(int) * (size_t)(nvar + 1));
    gb->vvar = malloc(sizeof(int) * (size_t)(nvar + 1));
    if (!gb->vtask || !gb->vvar) {
        snprintf(err, errlen, "out of memory building the grid");
        return -1;
    }
    for (int t = 0, i = 0; t < ax.n_tasks; t++)
        for (int v = 0; v < ab_config_task_variants(gb->c, ab_task_find(ax.tasks[t])); v++, i++) {
            gb->vtask[i] = t;
            gb->vvar[i] = v;
        }
    const int n[AX_N] = { nvar, ax.n_lens, ax.n_heads, ax.n_dims, ax.n_masks, ax.n_seeds, ax.n_depths };
    for (int a = 0; a < AX_N; a++)
        if (n[a] <= 0) return 0;
    /* the phase axis outermost (every prefill point first), then kv_heads */
    for (unsigned ph = AB_PREFILL; ph <= AB_DECODE; ph <<= 1) {
        if (!(ax.phases & ph)) continue;
        for (int k = 0; k < ax.n_kv; k++) {
            int ix[AX_N] = { 0 };
            gb->phase = (int)ph;
            gb->kv = ax.kv_heads[k];
            do {
                if (grid_problem(gb, &ax, ix, ms, nm, err, errlen)) return -1;
            } while (odometer_next(ix, n));
        }
    }
    return 0;
}

/* Every grid of the config ([sweep] and its [sweep.NAME] blocks) expanded
 * in order; a problem or a point that two grids share is kept once (the
 * first), so blocks may overlap freely. */
int ab_plan_build(const ab_config *c, const ab_plan_opts *o, int threads, ab_plan *p, char *err,
                  size_t errlen)
{
    size_t nb, nj_cap;
    grid_capacity(c, o, &nb, &nj_cap);
    grid_build gb = { .c = c, .threads = threads, .devs = o->devices ? o->devices : c->devices };
    gb.bases = calloc(nb ? nb : 1, sizeof *gb.bases);
    gb.jobs = calloc(nj_cap + 1, sizeof *gb.jobs);
    int rc = -1;
    if (!gb.bases || !gb.jobs || hidx_init(&gb.hb, nb) || hidx_init(&gb.hj, nj_cap)) {
        snprintf(err, errlen, "out of memory building the grid");
        goto fail;
    }
    for (int g = 0; g < ab_config_ngrids(c); g++)
        if (grid_expand(&gb, o, g, err, errlen)) goto fail;
    if (job_chain(gb.jobs, gb.nj, gb.nb)) {
        snprintf(err, errlen, "out of memory building the grid");
        goto fail;
    }
    /* sharding: whole calibration families, every shard_n-th in order of
     * first appearance, so a shard holds each point's predecessor */
    if (o->shard_n > 1) {
        int k = 0;
        for (int i = 0; i < gb.nj; i++)
            if (gb.jobs[i].family % o->shard_n == o->shard_i) gb.jobs[k++] = gb.jobs[i];
        gb.nj = k;
    }
    for (int i = 0; i < gb.nj; i++) /* the data child generates a held-out draw only where it is read */
        if (gb.jobs[i].m->heldout) gb.bases[gb.jobs[i].base].heldout = 1;
    *p = (ab_plan){ gb.bases, gb.nb, gb.jobs, gb.nj };
    gb.bases = NULL;
    gb.jobs = NULL;
    rc = 0;
fail:
    hidx_free(&gb.hb);
    hidx_free(&gb.hj);
    free(gb.mc);
    free(gb.vtask);
    free(gb.vvar);
    free(gb.bases);
    free(gb.jobs);
    return rc;
}

void ab_plan_free(ab_plan *p)
{
    free(p->bases);
    free(p->jobs);
    memset(p, 0, sizeof *p);
}
