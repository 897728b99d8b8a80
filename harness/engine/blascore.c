/* blascore.c — choose OpenBLAS's core type before it matters (blascore.h).
 * Depends on libc and OpenBLAS only, so the bench programs link it too. */
#include "harness/engine/blascore.h"

#include <cblas.h>
#include <errno.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

char *openblas_get_corename(void);
char *openblas_get_config(void);

static ab_blas_core g_core;

/* Execute this program again: its real path (valgrind and similar tools
 * virtualise the /proc/self/exe link but not an exec of it), else the link. */
static void exec_self(char *const *argv)
{
    char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n > 0) {
        path[n] = 0;
        execv(path, argv);
    }
    execv("/proc/self/exe", argv);
}

const ab_blas_core *ab_blas_core_info(void)
{
    if (!g_core.running[0]) {
        snprintf(g_core.running, sizeof g_core.running, "%s", openblas_get_corename());
        snprintf(g_core.source, sizeof g_core.source, "library");
    }
    return &g_core;
}

/* Core names of OpenBLAS 0.3.x (driver/others/dynamic.c) by the widest
 * vector ISA their SGEMM kernels use. */
static const struct {
    const char *name;
    int rank;
} core_ranks[] = {
    { "SapphireRapids", 4 }, { "Cooperlake", 4 }, { "SkylakeX", 4 },
    { "Haswell", 3 },        { "Zen", 3 },        { "Sandybridge", 2 },
    { "Bulldozer", 2 },      { "Piledriver", 2 }, { "Steamroller", 2 },
    { "Excavator", 2 },      { "Prescott", 1 },   { "Core2", 1 },
    { "Penryn", 1 },         { "Dunnington", 1 }, { "Nehalem", 1 },
    { "Atom", 1 },           { "Opteron", 1 },    { "Opteron_SSE3", 1 },
    { "Barcelona", 1 },      { "Bobcat", 1 },     { "Nano", 1 },
    { "Athlon", 1 },         { "Katmai", 1 },     { "Coppermine", 1 },
    { "Northwood", 1 },      { "Banias", 1 },     { "Generic", 1 },
};

int ab_blas_core_rank(const char *core)
{
    if (!core) return 0;
    for (size_t i = 0; i < sizeof core_ranks / sizeof core_ranks[0]; i++)
        if (!strcasecmp(core, core_ranks[i].name)) return core_ranks[i].rank;
    return 0;
}

const char *ab_blas_best_core(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return __builtin_cpu_is("amd") ? "Zen" : "Haswell";
    if (__builtin_cpu_supports("avx")) return "Sandybridge";
    return "";
}

const char *ab_blas_pick_core(const char *detected, const char *best)
{
    int have = ab_blas_core_rank(detected), can = ab_blas_core_rank(best);
    if (have == 0 || can == 0 || have >= can) return NULL;
    return best;
}

/* One SGEMM with odd sizes (edge kernels included) against a double
 * reference: 0 when every element is within 1e-4 of its magnitude bound. */
static int sgemm_check(char *why, size_t wl)
{
    enum { M = 67, N = 53, K = 71 };
    static float a[M * K], b[K * N], c[M * N];
    uint32_t s = 12345u;
    for (int i = 0; i < M * K; i++) {
        s = s * 1664525u + 1013904223u;
        a[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    for (int i = 0; i < K * N; i++) {
        s = s * 1664525u + 1013904223u;
        b[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                ref += (double)a[i * K + k] * b[k * N + j];
                mag += fabs((double)a[i * K + k] * b[k * N + j]);
            }
            if (!(fabs(c[i * N + j] - ref) <= 1e-4 * (mag + 1e-30))) {
                snprintf(why, wl, "SGEMM element (%d,%d) = %g, reference %g", i, j, c[i * N + j], ref);
                return -1;
            }
        }
    return 0;
}

/* `PROG __blas-probe CORE`: OpenBLAS must be running CORE and compute a
 * correct SGEMM. Prints one line; exit 0 when both hold. */
static void probe_main(const char *want)
{
    char why[200] = "";
    const char *run = openblas_get_corename();
    int rc = 0;
    if (strcasecmp(run, want)) {
        snprintf(why, sizeof why, "OpenBLAS runs %s, not %s", run, want);
        rc = 1;
    } else if (sgemm_check(why, sizeof why))
        rc = 1;
    printf("%s\n", rc ? why : "ok");
    fflush(stdout);
    _exit(rc);
}

/* Run `/proc/self/exe __blas-probe core` with OPENBLAS_CORETYPE=core. */
static int probe(const char *core, char *why, size_t wl)
{
    int fds[2];
    if (pipe(fds)) {
        snprintf(why, wl, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        snprintf(why, wl, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[1]);
        setenv("OPENBLAS_CORETYPE", core, 1);
        unsetenv("AB_BLAS_SIMULATE");
        char *args[] = { (char *)"attnbench", (char *)"__blas-probe", (char *)core, NULL };
        exec_self(args);
        printf("exec /proc/self/exe: %s\n", strerror(errno));
        fflush(stdout);
        _exit(127);
    }
    close(fds[1]);
    char buf[256];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof buf - 1 &&
           ((r = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0 || (r < 0 && errno == EINTR)))
        if (r > 0) got += (size_t)r;
    buf[got] = 0;
    buf[strcspn(buf, "\n")] = 0;
    close(fds[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    if (WIFSIGNALED(st))
        snprintf(why, wl, "the check died of signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(why, wl, "%s", buf[0] ? buf : "the check failed");
    return -1;
}

void ab_blas_core_setup(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "__blas-probe")) probe_main(argv[2]);
    ab_blas_core *g = &g_core;
    memset(g, 0, sizeof *g);
    snprintf(g->running, sizeof g->running, "%s", openblas_get_corename());
    snprintf(g->best, sizeof g->best, "%s", ab_blas_best_core());
    const char *ct = getenv("OPENBLAS_CORETYPE");
    const char *reexec = getenv("AB_BLAS_REEXEC");
    const char *sim = getenv("AB_BLAS_SIMULATE");
    char simbuf[32] = "";
    if (getenv("AB_BLAS_SIMULATED")) snprintf(simbuf, sizeof simbuf, "%s", getenv("AB_BLAS_SIMULATED"));
    const char *simulated = simbuf[0] ? simbuf : NULL;

    if (reexec) { /* we re-executed ourselves with the better core */
        snprintf(g->detected, sizeof g->detected, "%s", reexec);
        snprintf(g->source, sizeof g->source, "attnbench");
        int sim_run = simulated != NULL;
        snprintf(g->note, sizeof g->note,
                 "OpenBLAS chose its %.31s kernels%s on a CPU that runs %.31s: using OPENBLAS_CORETYPE=%.31s "
                 "(SGEMM checked "
                 "against a double-precision reference; set OPENBLAS_CORETYPE yourself to choose)",
                 g->detected, sim_run ? " (simulated by AB_BLAS_SIMULATE)" : "", g->best, g->running);
        unsetenv("AB_BLAS_REEXEC");
        unsetenv("AB_BLAS_SIMULATED");
        return;
    }
    if (sim && *sim && !(ct && *ct)) { /* testing aid: run as if OpenBLAS had detected `sim` */
        setenv("OPENBLAS_CORETYPE", sim, 1);
        setenv("AB_BLAS_SIMULATED", sim, 1);
        unsetenv("AB_BLAS_SIMULATE");
        fflush(stdout);
        fflush(stderr);
        exec_self(argv);
        snprintf(g->note, sizeof g->note, "AB_BLAS_SIMULATE: cannot re-execute: %.200s", strerror(errno));
    }
    if (ct && *ct && !simulated) { /* the user's choice: never overridden */
        snprintf(g->source, sizeof g->source, "environment");
        if (ab_blas_pick_core(g->running, g->best))
            snprintf(g->note, sizeof g->note,
                     "warning: OPENBLAS_CORETYPE=%.40s from the environment runs OpenBLAS's %.31s kernels, "
                     "below this "
                     "CPU's %.31s: dense_blas and the SGEMM roofline will be slower than the machine can go",
                     ct, g->running, g->best);
        return;
    }
    memcpy(g->detected, g->running, sizeof g->detected);
    snprintf(g->source, sizeof g->source, "library");
    if (simulated) {
        unsetenv("OPENBLAS_CORETYPE");
        unsetenv("AB_BLAS_SIMULATED");
    }
    const char *pick = ab_blas_pick_core(g->running, g->best);
    if (!pick) return;
    if (!strstr(openblas_get_config(), "DYNAMIC_ARCH")) {
        snprintf(
            g->note, sizeof g->note,
            "warning: OpenBLAS runs its %.31s kernels on a CPU that supports %.31s, and this OpenBLAS build "
            "(without DYNAMIC_ARCH) cannot switch: dense_blas and the SGEMM roofline are slower than the "
            "machine",
            g->running, g->best);
        return;
    }
    char why[256] = "";
    if (probe(pick, why, sizeof why) == 0) {
        setenv("OPENBLAS_CORETYPE", pick, 1);
        setenv("AB_BLAS_REEXEC", g->running, 1);
        if (simulated) setenv("AB_BLAS_SIMULATED", simulated, 1);
        fflush(stdout);
        fflush(stderr);
        exec_self(argv);
        snprintf(why, sizeof why, "cannot re-execute: %s", strerror(errno));
        unsetenv("OPENBLAS_CORETYPE");
        unsetenv("AB_BLAS_REEXEC");
    }
    snprintf(g->note, sizeof g->note,
             "warning: OpenBLAS runs its %.31s kernels on a CPU that supports %.31s, and %.31s failed its "
             "check (%.300s): kept %.31s",
             g->running, g->best, pick, why, g->running);
}

void ab_blas_core_announce(void)
{
    static int said;
    if (g_core.note[0] && !said) fprintf(stderr, "attnbench: %s\n", g_core.note);
    said = 1;
}
