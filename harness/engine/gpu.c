/* gpu.c — GPU points of a sweep (kernels/cuda/ab_cuda.h): fork-safe device
 * discovery, the GPU facts of a results file, and the measurement of one
 * point — select (on the device for window / oracle_topk_block, else
 * select() on the CPU with the layout copy timed as selection overhead),
 * run the FlashAttention-2 style kernel for the layout (Dao 2023, arXiv
 * 2307.08691) or the cuBLAS baseline, timed with CUDA events, then score
 * the downloaded output against the fp64 reference like a CPU point.
 *
 * Fork safety: a process that initialised the CUDA runtime cannot hand a
 * working CUDA context to fork()ed children. The sweep parent forks one
 * child per point, so it must never touch CUDA itself: ab_gpu_count() and
 * ab_gpu_env() ask a short-lived child and read the answer from a pipe.
 */
#include "harness/engine/gpu.h"
#include "harness/engine/measure.h"
#include "runtime/isolate.h"
#include "runtime/layout.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/registry.h" /* ab_mask_fraction */
#include "harness/engine/timing.h"
#include "kernels/kernels.h"

/* ---- discovery in a child ---------------------------------------------- */

typedef struct probe_result {
    int count;
    char why[256];
    ab_cuda_info info; /* device 0, when count > 0 */
} probe_result;

#define PROBE_TIMEOUT_MS 120000

static void probe_child(void *arg, int fd)
{
    probe_result c;
    memset(&c, 0, sizeof c);
    c.count = ab_cuda_device_count(c.why, sizeof c.why);
    if (c.count > 0 && ab_cuda_device_info(0, &c.info, c.why, sizeof c.why) != AB_OK) c.count = 0;
    if (ab_write_all(fd, &c, sizeof c)) _exit(1);
}

/* Fill r from a child process; the caller never initialises CUDA. */
static void probe(probe_result *r)
{
    memset(r, 0, sizeof *r);
    if (!ab_cuda_built()) { /* stubs: no CUDA to initialise, no child needed */
        r->count = ab_cuda_device_count(r->why, sizeof r->why);
        return;
    }
    const ab_isolate_opts o = { PROBE_TIMEOUT_MS / 1e3, NULL, 0 };
    ab_child ch;
    if (ab_child_start(&ch, probe_child, NULL, &o) < 0) {
        snprintf(r->why, sizeof r->why, "GPU probe: %s: %s", ch.failed, strerror(errno));
        return;
    }
    int got = ab_child_read(&ch, r, sizeof *r);
    ab_child_reap(&ch, NULL, NULL);
    if (got != 1) {
        memset(r, 0, sizeof *r);
        snprintf(r->why, sizeof r->why, "GPU probe child gave no answer (crashed or timed out)");
    }
}

int ab_gpu_count(char *why, size_t whylen)
{
    probe_result r;
    probe(&r);
    if (r.count == 0 && why && whylen) snprintf(why, whylen, "%s", r.why);
    return r.count;
}

/* The kernel module's version line ("NVRM version: ..."), without CUDA. */
static void nvidia_driver_version(char *out, size_t n)
{
    out[0] = 0;
    FILE *f = fopen("/proc/driver/nvidia/version", "r");
    if (!f) return;
    if (fgets(out, (int)n, f)) out[strcspn(out, "\n")] = 0;
    fclose(f);
}

void ab_gpu_env(ab_env *e)
{
    probe_result r;
    probe(&r);
    char buf[512];
    snprintf(buf, sizeof buf, "%d", r.count);
    ab_env_set(e, "gpu_count", buf);
    ab_env_set(e, "cuda_build", ab_cuda_built() ? "yes" : "no");
    nvidia_driver_version(buf, sizeof buf);
    ab_env_set(e, "driver", buf);
    if (r.count == 0) {
        ab_env_set(e, "gpu_name", "none");
        ab_env_set(e, "gpu_info", r.why);
        ab_env_set(e, "cuda_version", "");
        return;
    }
    const ab_cuda_info *i = &r.info;
    ab_env_set(e, "gpu_name", i->name);
    snprintf(buf, sizeof buf,
             "compute capability %d.%d, %d SMs, %.1f GiB, SM clock %d MHz, memory clock %d MHz, %d-bit bus",
             i->cc_major, i->cc_minor, i->sm_count, (double)i->total_mem / (1 << 30), i->clock_mhz,
             i->mem_clock_mhz, i->mem_bus_bits);
    ab_env_set(e, "gpu_info", buf);
    snprintf(buf, sizeof buf, "%d.%d", i->runtime_version / 1000, i->runtime_version % 1000 / 10);
    ab_env_set(e, "cuda_version", buf);
    snprintf(buf, sizeof buf, "%d.%d", i->driver_version / 1000, i->driver_version % 1000 / 10);
    ab_env_set(e, "cuda_driver_version", buf);
    snprintf(buf, sizeof buf, "%d", i->cublas_version);
    ab_env_set(e, "cublas_version", buf);
    snprintf(buf, sizeof buf, "%d", i->clock_mhz);
    ab_env_set(e, "gpu_clock_mhz", buf);
    snprintf(buf, sizeof buf, "%d", i->mem_clock_mhz);
    ab_env_set(e, "gpu_mem_clock_mhz", buf);
    snprintf(buf, sizeof buf, "%zu", i->total_mem);
    ab_env_set(e, "gpu_memory_bytes", buf);
}

/* ---- one select + run ------------------------------------------------------ */

ab_gpu_path ab_gpu_path_of(const ab_method *m)
{
    if (!strcmp(m->name, "window") || !strcmp(m->name, "oracle_topk_block")) return AB_GPU_SEL_DEVICE;
    if (!strcmp(m->name, "dense_blas")) return AB_GPU_CUBLAS;
    return AB_GPU_SEL_HOST;
}

const char *ab_gpu_kernel_name(const ab_method *m, ab_layout_kind kind)
{
    if (ab_gpu_path_of(m) == AB_GPU_CUBLAS) return "cublas";
    switch (kind) {
    case AB_LAYOUT_DENSE: return "gpu_flash";
    case AB_LAYOUT_BLOCK: return "gpu_blocksparse";
    case AB_LAYOUT_TOKEN:
    case AB_LAYOUT_MIXED: return "gpu_gather";
    case AB_LAYOUT_CUSTOM: break;
    }
    return "custom";
}

/* Value of the named param of an instance (NaN when absent). */
static double param(const ab_instance *in, const char *name)
{
    for (int i = 0; i < AB_MAX_PARAMS && in->m->params[i].name; i++)
        if (!strcmp(in->m->params[i].name, name)) return in->params.v[i];
    return NAN;
}

static int device_select(ab_cuda *g, const ab_instance *in, int bq, int bk)
{
    if (!strcmp(in->m->name, "window"))
        return ab_cuda_select_window(g, bq, bk, (int)param(in, "window"), (int)param(in, "sink_blocks"));
    return ab_cuda_select_oracle_topk(g, bq, bk, param(in, "topk"));
}

int ab_gpu_select_run(ab_cuda *g, ab_instance *in, const ab_problem *pb, int block_q, int block_k,
                      ab_layout *l, double *sel_ms, double *copy_ms, double *run_ms, char *err, size_t errlen)
{
    const ab_gpu_path path = ab_gpu_path_of(in->m);
    int rc;
    *sel_ms = *copy_ms = *run_ms = 0;
    ab_layout_kind kind = AB_LAYOUT_BLOCK;
    if (path == AB_GPU_SEL_DEVICE) {
        if ((rc = ab_cuda_timer_start(g)) || (rc = device_select(g, in, block_q, block_k)) ||
            (rc = ab_cuda_timer_stop(g, sel_ms))) {
            snprintf(err, errlen, "device select: %s", ab_cuda_error(g));
            return rc;
        }
    } else {
        double t0 = ab_now_ms();
        rc = ab_instance_select(in, pb, l);
        if (rc == AB_OK) rc = ab_layout_finalize(l);
        double t1 = ab_now_ms();
        if (rc) {
            snprintf(err, errlen, "select: %s",
                     *ab_instance_error(in) ? ab_instance_error(in) : ab_strerror(rc));
            return rc;
        }
        *sel_ms = t1 - t0;
        kind = l->kind;
        if (path == AB_GPU_CUBLAS && kind != AB_LAYOUT_DENSE) {
            snprintf(err, errlen, "the cuBLAS path needs a dense layout, got %s", ab_layout_kind_name(kind));
            return AB_EINTERNAL;
        }
        if (kind == AB_LAYOUT_CUSTOM) {
            snprintf(err, errlen, "method %s computes a CUSTOM layout itself; there is no GPU kernel for it",
                     in->m->name);
            return AB_EUNSUPPORTED;
        }
        if ((rc = ab_cuda_upload_layout(g, l))) {
            snprintf(err, errlen, "layout copy: %s", ab_cuda_error(g));
            return rc;
        }
        *copy_ms = ab_now_ms() - t1;
    }
    if ((rc = ab_cuda_timer_start(g))) goto cuda_fail;
    rc = path == AB_GPU_CUBLAS ? ab_cuda_dense_cublas(g) : ab_cuda_run_layout(g, kind);
    if (rc) goto cuda_fail;
    if ((rc = ab_cuda_timer_stop(g, run_ms)) || (rc = ab_cuda_sync(g))) goto cuda_fail;
    return AB_OK;
cuda_fail:
    snprintf(err, errlen, "GPU run: %s", ab_cuda_error(g));
    return rc;
}

int ab_gpu_layout_from_device(ab_cuda *g, ab_layout *l, char *err, size_t errlen)
{
    int rc = ab_cuda_download_layout(g, l);
    if (rc == AB_OK) rc = ab_layout_finalize(l);
    if (rc == AB_OK && ab_layout_validate(l, err, errlen))
        rc = AB_EINTERNAL;
    else if (rc)
        snprintf(err, errlen, "device layout: %s", *ab_cuda_error(g) ? ab_cuda_error(g) : ab_strerror(rc));
    return rc;
}

/* ---- one point ------------------------------------------------------------ */

/* A GPU point's timed calls (milliseconds). */
typedef struct gpu_samples {
    int n;
    double sel[AB_MAX_SAMPLES], run[AB_MAX_SAMPLES], tot[AB_MAX_SAMPLES], copy[AB_MAX_SAMPLES];
} gpu_samples;

/* Statistics of the samples, the layout (l) and the downloaded output (out)
 * scored against the reference, and the final status into p. */
static void record_point(const ab_gpu_point_in *x, ab_point *p, const gpu_samples *t, const ab_layout *l,
                         const float *out, const char *gpu_name)
{
    const ab_shape *s = &x->pb->s;
    ab_stats sc_copy;
    ab_stats_compute(t->copy, t->n, &sc_copy);
    ab_point_latency(p, t->sel, t->run, t->tot, t->n);
    p->n_samples = t->n;
    for (int i = 0; i < t->n; i++) {
        p->sample_select_ms[i] = t->sel[i];
        p->sample_run_ms[i] = t->run[i];
    }
    const ab_mask fm = ab_shape_mask(s); /* dense-equivalent work over the pairs the base mask allows */
    const double flops =
        4.0 * s->heads * (double)s->seq_len * s->seq_len * s->head_dim * ab_mask_fraction(&fm);
    p->dense_gflops = flops / (p->total_ms * 1e-3) / 1e9;
    snprintf(p->kernel, sizeof p->kernel, "%s", ab_gpu_kernel_name(x->m, l->kind));
    const int nonfinite = ab_score_point(x->ref, x->pb, l, NULL, out, x->ans, p);
    if (nonfinite)
        ab_point_set_status(p, "nan", "output has NaN or Inf on scored rows");
    else if (ab_gpu_path_of(x->m) == AB_GPU_SEL_DEVICE)
        ab_point_set_status(p, "ok", "fp16 on %s; selected on the device", gpu_name);
    else
        ab_point_set_status(p, "ok",
                            "fp16 on %s; select on CPU, layout copy median %.3g ms included in select_ms",
                            gpu_name, sc_copy.median);
}

void ab_gpu_measure(const ab_gpu_point_in *x, ab_point *p)
{
    const ab_config *c = x->c;
    const ab_problem *pb = x->pb;
    const ab_shape *s = &pb->s;
    char why[256] = "", err[256] = "";
    snprintf(p->dtype, sizeof p->dtype, "fp16");
    if (ab_cuda_device_count(why, sizeof why) == 0) {
        ab_point_set_status(p, "unsupported", "%s", why);
        return;
    }
    if (s->mask && strcmp(s->mask->def->name, "causal") && strcmp(s->mask->def->name, "full")) {
        /* the CUDA kernels apply only the causal flag; other base masks
         * would need the block classifier on the device */
        ab_point_set_status(p, "unsupported", "base mask %s: the GPU kernels support causal and full only",
                            s->mask->spec);
        return;
    }
    if (x->m->run && ab_gpu_path_of(x->m) != AB_GPU_CUBLAS) {
        ab_point_set_status(p, "unsupported", "method %s runs its own CPU run(); it has no GPU kernel",
                            x->m->name);
        return;
    }
    ab_cuda_info info;
    ab_cuda_device_info(0, &info, why, sizeof why);
    ab_cuda *g = NULL;
    int rc = ab_cuda_open(&g, s, AB_CUDA_FP16, err, sizeof err);
    if (rc) {
        ab_point_set_status(p, ab_status_of_code(rc), "%s", err);
        return;
    }
    ab_instance in;
    memset(&in, 0, sizeof in);
    ab_layout l;
    memset(&l, 0, sizeof l);
    const size_t t = (size_t)s->heads * s->seq_len * s->head_dim;
    float *out = malloc(t * sizeof *out); /* (heads, seq_len, head_dim) */
    if (!out) {
        ab_point_set_status(p, "oom", "cannot allocate the output (%zu bytes)", t * sizeof *out);
        goto done;
    }
    if ((rc = ab_cuda_upload_qkv(g, pb->q, pb->k, pb->v))) {
        ab_point_set_status(p, ab_status_of_code(rc), "upload Q, K, V: %s", ab_cuda_error(g));
        goto done;
    }
    rc = ab_instance_create(&in, x->m, x->prm, s);
    if (rc) {
        ab_point_set_status(p, ab_status_of_code(rc), "init: %s",
                            *ab_instance_error(&in) ? ab_instance_error(&in) : ab_strerror(rc));
        goto done;
    }
    const ab_gpu_path path = ab_gpu_path_of(x->m);
    gpu_samples smp;
    smp.n = 0;
    const double t_start = ab_now_ms();
    for (int it = 0;; it++) {
        ab_layout_free(&l);
        ab_layout_init(&l, s, x->block_q, x->block_k);
        double sm, cm, rm;
        rc = ab_gpu_select_run(g, &in, pb, x->block_q, x->block_k, &l, &sm, &cm, &rm, err, sizeof err);
        if (rc == AB_OK && it == 0 && path != AB_GPU_SEL_DEVICE) {
            char verr[200];
            if (ab_layout_validate(&l, verr, sizeof verr)) {
                ab_point_set_status(p, "error", "invalid layout: %s", verr);
                goto done;
            }
        }
        if (rc) {
            ab_point_set_status(p, ab_status_of_code(rc), "%s: %s", it == 0 ? "first call" : "repeat", err);
            goto done;
        }
        if (it < c->warmup) continue;
        smp.sel[smp.n] = sm + cm; /* the layout copy is selection overhead */
        smp.copy[smp.n] = cm;
        smp.run[smp.n] = rm;
        smp.tot[smp.n] = sm + cm + rm;
        smp.n++;
        double el = (ab_now_ms() - t_start) / 1e3;
        if ((smp.n >= c->min_repeats && el >= c->min_time_s) || smp.n >= c->max_repeats ||
            smp.n >= AB_MAX_SAMPLES || el >= c->max_time_s)
            break;
    }
    if (path == AB_GPU_SEL_DEVICE) { /* the layout the device built, for density and scoring */
        ab_layout_free(&l);
        ab_layout_init(&l, s, x->block_q, x->block_k);
        if ((rc = ab_gpu_layout_from_device(g, &l, err, sizeof err))) {
            ab_point_set_status(p, ab_status_of_code(rc), "%s", err);
            goto done;
        }
    }
    if ((rc = ab_cuda_download_out(g, out))) {
        ab_point_set_status(p, ab_status_of_code(rc), "download output: %s", ab_cuda_error(g));
        goto done;
    }
    record_point(x, p, &smp, &l, out, info.name);
done:
    ab_layout_free(&l);
    free(out);
    ab_instance_destroy(&in);
    ab_cuda_close(g);
}
