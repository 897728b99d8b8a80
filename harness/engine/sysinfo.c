/* sysinfo.c — what machine, libraries and build produced a results file. */
#include "harness/engine/sysinfo.h"
#include "harness/engine/blascore.h"
#include "harness/engine/gpu.h"
#include "kernels/kernels.h"

#include <cblas.h>
#include <hdf5.h>
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
    ab_env_set(e, "timing_protocol",
               "docs/timing.md: rounds in fresh child processes, interleaved; samples paired with "
               "dense flash (D M, M D, ...); calls batched to min_sample_ms; medians with "
               "hierarchical-bootstrap 95% intervals");
    /* GPU name, driver, CUDA / cuBLAS versions, clocks, memory: probed in a
     * short-lived child so this process never initialises CUDA (gpu.c) */
    ab_gpu_env(e);
}
