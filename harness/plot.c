/* plot.c — `attnbench plot RESULTS.h5 -d DIR`: every figure from the file.
 *
 * Runs the export into DIR, then each script plots/NAME.gp (but common.gp,
 * which they all load) with gnuplot once per output format:
 *   gnuplot -e "datadir='DIR'; outfile='DIR/NAME'; term='png';
 *               footnote='...'; plotsdir='PLOTS'" PLOTS/NAME.gp
 * The script reads DIR/NAME.tsv and writes DIR/NAME.<term>. A figure whose
 * data file has no rows is skipped with a note. plots/ is found through
 * $AB_PLOTS_DIR, next to the executable (<exe dir>/../plots), or ./plots.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/cli.h"

#define PATH_CAP 4096
#define MAX_FORMATS 3

/* snprintf that reports truncation: 0 when all of it fitted. */
static int fmt_ok(int w, size_t len)
{
    return (w >= 0 && (size_t)w < len) ? 0 : -1;
}

static int is_exec(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

/* gnuplot on PATH into out; 0 when found. */
static int find_on_path(const char *name, char *out, size_t len)
{
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t dl = end ? (size_t)(end - path) : strlen(path);
        int w = snprintf(out, len, "%.*s/%s", (int)dl, dl ? path : ".", name);
        if (dl == 0) w = snprintf(out, len, "./%s", name);
        if (w > 0 && (size_t)w < len && is_exec(out)) return 0;
        path += dl;
        if (*path == ':') path++;
    }
    return -1;
}

static int has_common(const char *dir)
{
    char p[PATH_CAP + 16];
    if (fmt_ok(snprintf(p, sizeof p, "%s/common.gp", dir), sizeof p) != 0) return 0;
    return access(p, R_OK) == 0;
}

/* The plots/ directory: $AB_PLOTS_DIR, <exe>/../plots, <exe>/plots, ./plots. */
static int find_plots_dir(char *out, size_t len)
{
    const char *env = getenv("AB_PLOTS_DIR");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return has_common(out) ? 0 : -2;
    }
    char exe[PATH_CAP];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            static const char *const rel[] = {"/../plots", "/plots"};
            for (size_t k = 0; k < 2; k++) {
                char cand[PATH_CAP + 16];
                snprintf(cand, sizeof cand, "%s%s", exe, rel[k]);
                char real[PATH_MAX];
                if (has_common(cand) && realpath(cand, real)) {
                    snprintf(out, len, "%s", real);
                    return 0;
                }
            }
        }
    }
    if (has_common("plots")) {
        char real[PATH_MAX];
        if (realpath("plots", real)) snprintf(out, len, "%s", real);
        else snprintf(out, len, "plots");
        return 0;
    }
    return -1;
}

/* Number of data lines (not blank, not '#') in a file; -1 if unreadable. */
static long data_rows(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long rows = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        const char *s = line + strspn(line, " \t\r\n");
        if (*s && *s != '#') rows++;
    }
    free(line);
    fclose(f);
    return rows;
}

/* Value of KEY in DIR/meta.txt (key<TAB>value lines), "" when absent. */
static void meta_get(const char *dir, const char *key, char *out, size_t len)
{
    char path[PATH_CAP + 16], line[1024];
    out[0] = '\0';
    snprintf(path, sizeof path, "%s/meta.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == '\t') {
            line[strcspn(line, "\r\n")] = '\0';
            snprintf(out, len, "%s", line + kl + 1);
            break;
        }
    }
    fclose(f);
}

/* Append s to a gnuplot single-quoted string ('' stands for '). */
static void gp_quote(char *out, size_t len, const char *s)
{
    size_t o = strlen(out);
    for (; *s && o + 3 < len; s++) {
        if (*s == '\'') out[o++] = '\'';
        out[o++] = (*s == '\n' || *s == '\r') ? ' ' : *s;
    }
    out[o] = '\0';
}

static void gp_assign(char *out, size_t len, const char *name, const char *value)
{
    size_t o = strlen(out);
    snprintf(out + o, len - o, "%s%s='", o ? "; " : "", name);
    gp_quote(out, len, value);
    o = strlen(out);
    snprintf(out + o, len - o, "'");
}

/* Run gnuplot -e EXPR SCRIPT; its exit status, or -1 if it could not start. */
static int run_gnuplot(const char *gnuplot, const char *expr, const char *script)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        char *const args[] = {(char *)gnuplot, (char *)"-e", (char *)expr, (char *)script, NULL};
        execv(gnuplot, args);
        fprintf(stderr, "attnbench: plot: cannot run %s: %s\n", gnuplot, strerror(errno));
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static int gp_filter(const struct dirent *d)
{
    size_t l = strlen(d->d_name);
    return l > 3 && strcmp(d->d_name + l - 3, ".gp") == 0 && strcmp(d->d_name, "common.gp") != 0 &&
           d->d_name[0] != '.';
}

static void plot_usage(FILE *f)
{
    fputs("usage: attnbench plot RESULTS.h5 -d DIR [--format png,svg] [--gnuplot PATH]\n"
          "\n"
          "Export the results into DIR (see attnbench export --help), then draw every\n"
          "figure of plots/*.gp with gnuplot: DIR/latency_vs_n, recall_vs_density,\n"
          "accuracy_vs_density, speedup_vs_density, one file per format. A figure\n"
          "without data is skipped with a note. Each figure names the results file,\n"
          "host, threads and commit in a footnote.\n"
          "\n"
          "options:\n"
          "  -d, --dir DIR     output directory (required)\n"
          "  --format LIST     comma-separated: png, svg, pdf (default png,svg)\n"
          "  --gnuplot PATH    the gnuplot to run (default: gnuplot on PATH)\n"
          "  -h, --help        this text\n"
          "environment: AB_PLOTS_DIR overrides where the plots/*.gp scripts are found\n"
          "exit: 0 drawn, 1 gnuplot failed on a script, 2 usage or input error\n", f);
}

int ab_cmd_plot(int argc, char **argv)
{
    const char *path = NULL, *dir = NULL, *formats = "png,svg", *gnuplot_opt = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            plot_usage(stdout);
            return 0;
        }
        if (strcmp(a, "-d") == 0 || strcmp(a, "--dir") == 0) dst = &dir;
        else if (strcmp(a, "--format") == 0) dst = &formats;
        else if (strcmp(a, "--gnuplot") == 0) dst = &gnuplot_opt;
        else if (strncmp(a, "--dir=", 6) == 0) { dir = a + 6; continue; }
        else if (strncmp(a, "--format=", 9) == 0) { formats = a + 9; continue; }
        else if (strncmp(a, "--gnuplot=", 10) == 0) { gnuplot_opt = a + 10; continue; }
        else if (a[0] == '-' && a[1] != '\0') {
            ab_errorf("plot: unknown option '%s' (see attnbench plot --help)", a);
            return 2;
        } else if (!path) { path = a; continue; }
        else {
            ab_errorf("plot: more than one results file ('%s', '%s')", path, a);
            return 2;
        }
        if (i + 1 >= argc) {
            ab_errorf("plot: %s needs a value (see attnbench plot --help)", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!path) {
        ab_errorf("plot: no results file given (usage: attnbench plot RESULTS.h5 -d DIR)");
        return 2;
    }
    if (!dir || !dir[0]) {
        ab_errorf("plot: no output directory: -d DIR is required");
        return 2;
    }
    if (strlen(dir) > 1024) {
        ab_errorf("plot: output directory name too long");
        return 2;
    }

    /* formats */
    char fmt[MAX_FORMATS][8];
    int nfmt = 0;
    for (const char *s = formats; *s;) {
        size_t l = strcspn(s, ",");
        char one[16];
        snprintf(one, sizeof one, "%.*s", (int)(l < 15 ? l : 15), s);
        if (strcmp(one, "png") && strcmp(one, "svg") && strcmp(one, "pdf")) {
            ab_errorf("plot: unknown format '%.*s' in --format (png, svg, pdf)", (int)l, s);
            return 2;
        }
        int dup = 0;
        for (int k = 0; k < nfmt; k++) dup |= strcmp(fmt[k], one) == 0;
        if (!dup && nfmt < MAX_FORMATS) memcpy(fmt[nfmt++], one, 4); /* "png" + NUL */
        s += l;
        if (*s == ',') s++;
    }
    if (nfmt == 0) {
        ab_errorf("plot: --format names no format (png, svg, pdf)");
        return 2;
    }

    /* gnuplot, plots/ */
    char gnuplot[PATH_CAP];
    if (gnuplot_opt) {
        snprintf(gnuplot, sizeof gnuplot, "%s", gnuplot_opt);
        if (!strchr(gnuplot_opt, '/') && find_on_path(gnuplot_opt, gnuplot, sizeof gnuplot) != 0) {
            ab_errorf("plot: '%s' not found on PATH", gnuplot_opt);
            return 2;
        }
        if (!is_exec(gnuplot)) {
            ab_errorf("plot: '%s' is not an executable gnuplot", gnuplot_opt);
            return 2;
        }
    } else if (find_on_path("gnuplot", gnuplot, sizeof gnuplot) != 0) {
        ab_errorf("plot: gnuplot not found on PATH; install it (apt-get install gnuplot-nox) "
                  "or pass --gnuplot PATH");
        return 2;
    }
    char plots[PATH_CAP];
    int pr = find_plots_dir(plots, sizeof plots);
    if (pr != 0) {
        if (pr == -2) ab_errorf("plot: AB_PLOTS_DIR='%s' holds no common.gp", plots);
        else ab_errorf("plot: cannot find the plots/ scripts (next to the executable or in ./plots); "
                       "set AB_PLOTS_DIR");
        return 2;
    }

    /* export */
    char a0[] = "export", a2[] = "-d";
    char *xargv[] = {a0, (char *)path, a2, (char *)dir, NULL};
    int rc = ab_cmd_export(4, xargv);
    if (rc != 0) return rc;

    char file[1024], host[256], threads[64], sha[128], foot[2048];
    meta_get(dir, "host", host, sizeof host);
    meta_get(dir, "threads", threads, sizeof threads);
    meta_get(dir, "git_sha", sha, sizeof sha);
    const char *base = strrchr(path, '/');
    snprintf(file, sizeof file, "%s", base ? base + 1 : path);
    snprintf(foot, sizeof foot, "data: %s   host: %s   threads: %s   commit: %.12s", file,
             host[0] ? host : "?", threads[0] ? threads : "?", sha[0] ? sha : "?");

    struct dirent **ents = NULL;
    int ne = scandir(plots, &ents, gp_filter, alphasort);
    if (ne < 0) {
        ab_errorf("plot: cannot list %s: %s", plots, strerror(errno));
        return 2;
    }
    if (ne == 0) {
        free(ents);
        ab_errorf("plot: no *.gp scripts in %s", plots);
        return 2;
    }
    rc = 0;
    int written = 0;
    for (int e = 0; e < ne; e++) {
        char name[256], script[PATH_CAP + 300], data[1400], outbase[1400];
        snprintf(name, sizeof name, "%.*s", (int)(strlen(ents[e]->d_name) - 3), ents[e]->d_name);
        snprintf(script, sizeof script, "%s/%s", plots, ents[e]->d_name);
        snprintf(data, sizeof data, "%s/%s.tsv", dir, name);
        snprintf(outbase, sizeof outbase, "%s/%s", dir, name);
        long rows = data_rows(data);
        if (rows <= 0) {
            printf("note: skipped %s: %s\n", name,
                   rows < 0 ? "no data file" : "no status-ok points with the needed values");
            continue;
        }
        for (int k = 0; k < nfmt; k++) {
            char expr[8192] = "";
            gp_assign(expr, sizeof expr, "datadir", dir);
            gp_assign(expr, sizeof expr, "outfile", outbase);
            gp_assign(expr, sizeof expr, "term", fmt[k]);
            gp_assign(expr, sizeof expr, "footnote", foot);
            gp_assign(expr, sizeof expr, "plotsdir", plots);
            int st = run_gnuplot(gnuplot, expr, script);
            char out[1420];
            if (fmt_ok(snprintf(out, sizeof out, "%s.%s", outbase, fmt[k]), sizeof out) != 0) continue;
            struct stat sb;
            if (st != 0) {
                ab_errorf("plot: gnuplot failed on %s (%s, exit %d)", script, fmt[k], st);
                rc = 1;
            } else if (stat(out, &sb) != 0 || sb.st_size == 0) {
                ab_errorf("plot: %s wrote no %s", script, out);
                rc = 1;
            } else {
                printf("wrote %s\n", out);
                written++;
            }
        }
    }
    for (int e = 0; e < ne; e++) free(ents[e]);
    free(ents);
    if (rc == 0 && written == 0) printf("note: no figure had data; nothing drawn\n");
    return rc;
}
