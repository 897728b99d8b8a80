/* sysinfo.c — what machine, libraries and build produced a results file. */
#include "harness/engine/sysinfo.h"
#include "harness/engine/blascore.h"
#include "harness/engine/decode.h"
#include "harness/engine/gpu.h"
#include "harness/engine/timing.h"
#include "kernels/kernels.h"

#include <cblas.h>
#include <hdf5.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef AB_GIT_SHA
#define AB_GIT_SHA "unknown"
#endif
#ifndef AB_BUILD_FLAGS
#define AB_BUILD_FLAGS "unknown"
#endif
#define AB_VERSION "0.1.0"

/* OpenBLAS extensions (declared in its cblas.h on Debian, repeated here for
 * other distributions' headers). */
char *openblas_get_config(void);
char *openblas_get_corename(void);

int ab_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void cpuinfo_field(const char *field, char *out, size_t n)
{
    out[0] = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    size_t fl = strlen(field);
    while (getline(&line, &cap, f) > 0) {
        if (strncmp(line, field, fl) == 0) {
            char *c = strchr(line, ':');
            if (!c) continue;
            c++;
            while (*c == ' ') c++;
            c[strcspn(c, "\n")] = 0;
            snprintf(out, n, "%s", c);
            break;
        }
    }
    free(line);
    fclose(f);
}

void ab_env_capture(ab_env *e, const ab_config *c, int argc, char **argv, int threads)
{
    char buf[8192];
    ab_env_set(e, "attnbench_version", AB_VERSION);
    ab_env_set(e, "git_sha", AB_GIT_SHA);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    ab_env_set(e, "created_utc", buf);
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < argc && off < sizeof buf; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", i ? " " : "", argv[i]);
    ab_env_set(e, "command_line", buf);
    ab_env_set(e, "config_path", c->path);
    ab_env_set(e, "config_text", c->text ? c->text : "");
    if (gethostname(buf, sizeof buf) != 0) strcpy(buf, "unknown");
    buf[sizeof buf - 1] = 0;
    ab_env_set(e, "host", buf);
    cpuinfo_field("model name", buf, sizeof buf);
    ab_env_set(e, "cpu_model", buf);
    cpuinfo_field("flags", buf, sizeof buf);
    ab_env_set(e, "cpu_flags", buf);
    snprintf(buf, sizeof buf, "%d", threads);
    ab_env_set(e, "threads", buf);
    snprintf(buf, sizeof buf, "%ld", sysconf(_SC_NPROCESSORS_ONLN));
    ab_env_set(e, "cpus_online", buf);
    ab_env_set(e, "openblas_version", openblas_get_config());
    ab_env_set(e, "openblas_coretype", openblas_get_corename());
    const ab_blas_core *bc = ab_blas_core_info();
    ab_env_set(e, "openblas_coretype_detected", bc->detected);
    ab_env_set(e, "openblas_coretype_best", bc->best);
    ab_env_set(e, "openblas_coretype_source", bc->source);
    if (bc->note[0]) ab_env_set(e, "openblas_coretype_note", bc->note);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    ab_env_set(e, "env_OPENBLAS_CORETYPE", ct ? ct : "");
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    snprintf(buf, sizeof buf, "%u.%u.%u", maj, min, rel);
    ab_env_set(e, "hdf5_version", buf);
#ifdef __VERSION__
    ab_env_set(e, "compiler", "gcc " __VERSION__);
#endif
    ab_env_set(e, "compiler_flags", AB_BUILD_FLAGS);
    /* how threads were placed: bound by attnbench in each child unless the
     * environment says otherwise (harness/engine/measure.c, docs/timing.md) */
    snprintf(buf, sizeof buf, "OMP_PROC_BIND=%s OMP_PLACES=%s OMP_WAIT_POLICY=%s GOMP_SPINCOUNT=%s",
             getenv("OMP_PROC_BIND") ? getenv("OMP_PROC_BIND") : "(unset)",
             getenv("OMP_PLACES") ? getenv("OMP_PLACES") : "(unset)",
             getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "(unset)",
             getenv("GOMP_SPINCOUNT") ? getenv("GOMP_SPINCOUNT") : "(unset)");
    ab_env_set(e, "thread_placement", buf);
    ab_env_set(e, "thread_binding", ab_binding_mode());
    ab_env_set(e, "malloc", ab_malloc_mode());
    ab_env_set(e, "timing_protocol",
               "docs/timing.md: rounds in fresh child processes, interleaved; samples paired with "
               "dense flash (D M, M D, ...); calls batched to min_sample_ms; medians with "
               "hierarchical-bootstrap 95% intervals");
    /* decode is bound by memory bandwidth: its figures draw this limit;
     * selectors.tsv states each selector's bytes at it ([timing]
     * measure_bandwidth = 1) */
    if ((c->phases & AB_DECODE) || c->measure_bandwidth) {
        snprintf(buf, sizeof buf, "%.2f", ab_stream_triad_gbs(threads, 256));
        ab_env_set(e, "stream_triad_gbs", buf);
        snprintf(buf, sizeof buf,
                 "STREAM triad a = b + s*c (McCalpin), 3 x 256 MiB fp32, best of 5, %d threads, "
                 "counted as 3 arrays moved (no write-allocate)",
                 threads);
        ab_env_set(e, "stream_triad_method", buf);
    }
    if (c->phases & AB_DECODE) {
        snprintf(buf, sizeof buf,
                 c->decode_cold ? "cold: %zu MiB streamed through before every timed step (docs/decode.md)"
                                : "warm: steps run back to back (decode_cold = 0)",
                 ab_dec_flush_bytes() >> 20);
        ab_env_set(e, "decode_cache", buf);
    }
    /* GPU name, driver, CUDA / cuBLAS versions, clocks, memory: probed in a
     * short-lived child so this process never initialises CUDA (gpu.c) */
    ab_gpu_env(e);
}

/* STREAM's triad (McCalpin, "Memory Bandwidth and Machine Balance", 1995):
 * a[i] = b[i] + s * c[i] over three arrays of `mib` MiB each (far larger
 * than the last-level cache), split in `threads` equal parts, each part
 * first touched and then run by its own thread; the best of 5 runs, counting
 * 3 arrays moved per pass as STREAM does. GB/s (1e9 bytes); NaN when the
 * arrays cannot be allocated. Plain pthreads, not OpenMP: the sweep's parent
 * calls it, and a process that forks children must not start an OpenMP
 * team (libgomp's pool does not survive fork). */
typedef struct triad_part {
    float *a, *b, *c;
    size_t lo, hi;
    int init;
} triad_part;

static void *triad_run(void *arg)
{
    triad_part *t = arg;
    if (t->init)
        for (size_t i = t->lo; i < t->hi; i++) {
            t->a[i] = 0.0f;
            t->b[i] = 1.0f;
            t->c[i] = 2.0f;
        }
    else
        for (size_t i = t->lo; i < t->hi; i++) t->a[i] = t->b[i] + 3.0f * t->c[i];
    return NULL;
}

static int triad_pass(triad_part *parts, int threads, int init)
{
    pthread_t tid[64];
    int started = 0;
    for (int t = 0; t < threads; t++) {
        parts[t].init = init;
        if (t > 0 && pthread_create(&tid[t], NULL, triad_run, &parts[t]) == 0)
            started |= 1 << (t < 30 ? t : 30);
        else if (t > 0)
            triad_run(&parts[t]);
    }
    triad_run(&parts[0]);
    for (int t = 1; t < threads; t++)
        if (started & (1 << (t < 30 ? t : 30))) pthread_join(tid[t], NULL);
    return 0;
}

double ab_stream_triad_gbs(int threads, int mib)
{
    if (threads < 1) threads = 1;
    if (threads > 30) threads = 30;
    const size_t n = (size_t)mib * 1048576 / sizeof(float);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *cc = malloc(n * sizeof *cc);
    double best = NAN;
    if (a && b && cc) {
        triad_part parts[30];
        for (int t = 0; t < threads; t++)
            parts[t] = (triad_part){ a, b, cc, n * t / threads, n * (t + 1) / threads, 1 };
        triad_pass(parts, threads, 1);
        for (int r = 0; r < 5; r++) {
            const double t0 = ab_now_ms();
            triad_pass(parts, threads, 0);
            const double ms = ab_now_ms() - t0;
            const double gbs = 3.0 * n * sizeof(float) / (ms * 1e6);
            if (!(best >= gbs)) best = gbs;
        }
        if (a[n / 2] != 7.0f) best = NAN; /* the loop ran */
    }
    free(a);
    free(b);
    free(cc);
    return best;
}
