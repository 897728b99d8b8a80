/* plot.c — `attnbench plot RESULTS.h5 -d DIR` (harness/cli/plot.c parses its
 * command line): every figure from the file.
 *
 * Runs the export into DIR, then each script plots/NAME.gp (but common.gp,
 * which they all load) with gnuplot once per output format:
 *   gnuplot -e "datadir='DIR'; outfile='DIR/NAME'; term='png';
 *               footnote='...'; plotsdir='PLOTS'" PLOTS/NAME.gp
 * The script reads DIR/NAME.tsv and writes DIR/NAME.<term>. A figure whose
 * data file has no rows is skipped with a note (the reason from its
 * "# skip:" line when export wrote one). plots/ is found through
 * $AB_PLOTS_DIR, next to the executable (<exe dir>/../plots), or ./plots.
 * The footnote names the file, host, CPU (and GPU), threads and commit, and
 * counts the points left out for a non-ok status; a timing figure's has a
 * third line (footnote3) with the untimed (scored-only) points it leaves out
 * and the timing flags of the points it draws (the data file's "# note:").
 * Base masks: when the file holds several (causal, document:8, ...), export
 * writes each figure's data once per mask (NAME.tsv for the primary mask,
 * NAME--SLUG.tsv for each other one, listed in masks.txt) and each is drawn
 * into its own DIR/NAME[--SLUG].<term>, the script getting datafile= and
 * masktitle= too; no figure mixes masks. The footnote names the mask and
 * counts the non-ok points under it. dense_vs_mask (one figure across masks)
 * names them all. Then the mask gallery (`attnbench mask --gallery` under the
 * primary mask, plus the base mask alone for each mask of the file,
 * `attnbench mask dense --mask SPEC`; only when the binary has that command)
 * and DIR/index.html (html.c). Figures as in the paper-style list of the README
 * ("Figures"; sparse-attention evaluations such as MInference, arXiv 2407.02490).
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

#include "harness/report/export.h"
#include "harness/report/html.h"
#include "harness/report/plot.h"
#include "runtime/errors.h"

#define PATH_CAP 4096

/* snprintf that reports truncation: 0 when all of it fitted. */
static int fmt_ok(int w, size_t len) { return (w >= 0 && (size_t)w < len) ? 0 : -1; }

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
            static const char *const rel[] = { "/../plots", "/plots" };
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
        if (realpath("plots", real))
            snprintf(out, len, "%s", real);
        else
            snprintf(out, len, "plots");
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

/* The reason in a "# skip: REASON" header line of a figure file, "" if none. */
static void skip_reason(const char *path, char *out, size_t len)
{
    ab_export_header(path, "# skip: ", out, len);
}

/* The text of a "# note: TEXT" header line of a figure file (export's count
 * of the untimed points a timing figure leaves out and of the timing flags of
 * those it uses), "" if none. */
static void note_line(const char *path, char *out, size_t len)
{
    ab_export_header(path, "# note: ", out, len);
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

/* "timeout:2,crashed:1" -> "timeout 2, crashed 1" appended to out. */
static void append_counts(char *out, size_t len, const char *list)
{
    size_t o = strlen(out);
    for (const char *s = list; *s && o + 3 < len; s++) {
        if (*s == ':')
            out[o++] = ' ';
        else if (*s == ',') {
            out[o++] = ',';
            out[o++] = ' ';
        } else
            out[o++] = *s;
    }
    out[o] = '\0';
}

/* Footnote line 2 of a figure of one base mask: the mask and the points
 * left out under it. */
static void mask_footnote(char *out, size_t len, const ab_report_mask *m, int n_masks)
{
    long bad = m->n_points - m->n_ok;
    if (bad <= 0) {
        snprintf(out, len, "mask: %s   all %ld points%s status ok", m->spec, m->n_points,
                 n_masks > 1 ? " under this mask" : "");
        return;
    }
    snprintf(out, len, "mask: %s   left out: %ld of %ld points%s not ok (", m->spec, bad, m->n_points,
             n_masks > 1 ? " under this mask" : "");
    append_counts(out, len, m->notok);
    size_t o = strlen(out);
    snprintf(out + o, len - o, ")");
}

/* Run argv[0] with argv; stdout and stderr to the file `log` when given.
 * Its exit status, or -1 if it could not start. */
static int run_prog(char *const argv[], const char *log)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (log) {
            FILE *lf = fopen(log, "w");
            if (!lf) _exit(126);
            dup2(fileno(lf), 1);
            dup2(fileno(lf), 2);
        }
        execv(argv[0], argv);
        fprintf(stderr, "attnbench: plot: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Run gnuplot -e EXPR SCRIPT; its exit status, or -1 if it could not start. */
static int run_gnuplot(const char *gnuplot, const char *expr, const char *script)
{
    char *const args[] = { (char *)gnuplot, (char *)"-e", (char *)expr, (char *)script, NULL };
    return run_prog(args, NULL);
}

/* The attnbench executable to ask for `mask`: this process when it is
 * attnbench, else $AB_BIN (the test binary runs plot in-process). */
static int find_self(char *out, size_t len)
{
    char exe[PATH_CAP];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        const char *base = strrchr(exe, '/');
        base = base ? base + 1 : exe;
        if (strcmp(base, "attnbench") == 0) {
            snprintf(out, len, "%s", exe);
            return 0;
        }
    }
    const char *env = getenv("AB_BIN");
    if (env && *env && is_exec(env)) {
        snprintf(out, len, "%s", env);
        return 0;
    }
    return -1;
}

/* 1 when `exe --help` lists a `mask` command. */
static int has_mask_cmd(const char *exe, const char *dir)
{
    char log[PATH_CAP + 32];
    snprintf(log, sizeof log, "%s/.help.txt", dir);
    char *const args[] = { (char *)exe, (char *)"--help", NULL };
    int st = run_prog(args, log);
    int found = 0;
    FILE *f = fopen(log, "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (strncmp(line + strspn(line, " "), "mask ", 5) == 0 && line[0] == ' ') found = 1;
        fclose(f);
    }
    unlink(log);
    return st == 0 && found;
}

/* Largest N drawn for a base mask's own picture (the mask command's time
 * and memory stay small; the title gives the N used). */
#define BASE_MASK_MAX_N 65536

/* The mask gallery: `attnbench mask --gallery -n N --density D --mask PRIMARY
 * -o DIR/mask_gallery` when the binary has that command, then the base mask
 * alone for each mask of the file: `attnbench mask dense --mask SPEC -n N
 * --heads 1 --seed S -o DIR/mask_gallery/base_SLUG.png` at the mask's largest
 * N (at most BASE_MASK_MAX_N) and the seed of its first point, so document
 * lengths are those of the sweep. Writes a one-line note for the report into
 * note (what was drawn, or why not). */
static void draw_gallery(const char *dir, const ab_report_mask *masks, int n_masks, char *note, size_t len)
{
    char exe[PATH_CAP], lens[256], n_arg[32], gdir[PATH_CAP], log[PATH_CAP + 16];
    snprintf(gdir, sizeof gdir, "%s/mask_gallery", dir);
    if (find_self(exe, sizeof exe) != 0) {
        snprintf(note, len, "not drawn: the attnbench executable was not found (set AB_BIN)");
        return;
    }
    if (!has_mask_cmd(exe, dir)) {
        snprintf(note, len, "not drawn: this attnbench build has no `mask` command");
        printf("note: skipped mask gallery: this attnbench has no `mask` command\n");
        return;
    }
    meta_get(dir, "seq_lens", lens, sizeof lens);
    int n = atoi(lens);
    if (n <= 0) n = 1024;
    snprintf(n_arg, sizeof n_arg, "%d", n);
    if (mkdir(gdir, 0777) != 0 && errno != EEXIST) {
        snprintf(note, len, "not drawn: cannot create %.200s: %.100s", gdir, strerror(errno));
        return;
    }
    /* no stale base-mask picture of another results file */
    DIR *d = opendir(gdir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strncmp(e->d_name, "base_", 5) == 0) {
            char stale[PATH_CAP + 300];
            if (fmt_ok(snprintf(stale, sizeof stale, "%s/%s", gdir, e->d_name), sizeof stale) == 0)
                unlink(stale);
        }
    if (d) closedir(d);
    snprintf(log, sizeof log, "%s/mask.log", gdir);
    char primary[128] = "causal", seed[32] = "1";
    if (n_masks > 0) {
        snprintf(primary, sizeof primary, "%s", masks[0].spec);
        snprintf(seed, sizeof seed, "%ld", masks[0].seed);
    }
    char *const args[] = { exe,
                           (char *)"mask",
                           (char *)"--gallery",
                           (char *)"-n",
                           n_arg,
                           (char *)"--density",
                           (char *)"0.1",
                           (char *)"--mask",
                           primary,
                           (char *)"--seed",
                           seed,
                           (char *)"-o",
                           gdir,
                           NULL };
    int st = run_prog(args, log);
    if (st != 0) {
        snprintf(note, len,
                 "not drawn: `attnbench mask --gallery` exited with %d (see mask_gallery/mask.log)", st);
        ab_errorf("plot: attnbench mask --gallery failed (exit %d); see %s", st, log);
        return;
    }
    printf("wrote %s/\n", gdir);
    int drawn = 0, failed = 0;
    for (int k = 0; k < n_masks; k++) {
        char png[PATH_CAP + 300], mn[32], ms[32], blog[PATH_CAP + 300];
        int mn_v = masks[k].max_n > 0 ? masks[k].max_n : n;
        if (mn_v > BASE_MASK_MAX_N) mn_v = BASE_MASK_MAX_N;
        snprintf(mn, sizeof mn, "%d", mn_v);
        snprintf(ms, sizeof ms, "%ld", masks[k].seed);
        if (fmt_ok(snprintf(png, sizeof png, "%s/base_%s.png", gdir, masks[k].slug), sizeof png) ||
            fmt_ok(snprintf(blog, sizeof blog, "%s/base_%s.log", gdir, masks[k].slug), sizeof blog))
            continue;
        char *const bargs[] = { exe,
                                (char *)"mask",
                                (char *)"dense",
                                (char *)"--mask",
                                (char *)masks[k].spec,
                                (char *)"-n",
                                mn,
                                (char *)"--heads",
                                (char *)"1",
                                (char *)"--seed",
                                ms,
                                (char *)"-o",
                                png,
                                NULL };
        int bst = run_prog(bargs, blog);
        if (bst != 0) {
            ab_errorf("plot: attnbench mask dense --mask %s failed (exit %d); see %s", masks[k].spec, bst,
                      blog);
            failed++;
        } else {
            unlink(blog);
            printf("wrote %s\n", png);
            drawn++;
        }
    }
    int w = snprintf(note, len,
                     "drawn by `attnbench mask --gallery -n %d --density 0.1 --mask %s` "
                     "with each method's default parameters (not read from the results file)",
                     n, primary);
    if (w > 0 && (size_t)w < len && n_masks > 0)
        snprintf(note + w, len - (size_t)w,
                 "; the base masks alone by `attnbench mask dense "
                 "--mask SPEC` at each mask's largest N (at most %d) and its first point's "
                 "seed: %d drawn%s",
                 BASE_MASK_MAX_N, drawn, failed ? ", some failed (see the .log files)" : "");
}

/* 1 when a figure file starts with export's "# mask: SPEC" line (a figure
 * of one base mask), 0 for a figure across masks or no file. */
static int has_mask_line(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[64] = "";
    int yes = fgets(line, sizeof line, f) && strncmp(line, "# mask: ", 8) == 0;
    fclose(f);
    return yes;
}

/* Remove DIR/NAME.{png,svg,pdf} and DIR/NAME--*.{png,svg,pdf} left by an
 * earlier plot into the same DIR. */
static void remove_stale_figs(const char *dir, const char *name)
{
    DIR *d = opendir(dir);
    if (!d) return;
    size_t nl = strlen(name);
    for (struct dirent *e; (e = readdir(d));) {
        const char *f = e->d_name;
        size_t l = strlen(f);
        if (strncmp(f, name, nl) != 0 || l < 4) continue;
        if (f[nl] != '.' && strncmp(f + nl, "--", 2) != 0) continue;
        const char *ext = f + l - 4;
        if (strcmp(ext, ".png") && strcmp(ext, ".svg") && strcmp(ext, ".pdf")) continue;
        if (f[nl] == '.' && l != nl + 4) continue; /* NAME.x.png is another name's */
        char path[PATH_CAP + 300];
        if (fmt_ok(snprintf(path, sizeof path, "%s/%s", dir, f), sizeof path) == 0) unlink(path);
    }
    closedir(d);
}

static int gp_filter(const struct dirent *d)
{
    size_t l = strlen(d->d_name);
    return l > 3 && strcmp(d->d_name + l - 3, ".gp") == 0 && strcmp(d->d_name, "common.gp") != 0 &&
           d->d_name[0] != '.';
}

/* The gnuplot to run into out: o->gnuplot (a path, or a name on PATH), else
 * gnuplot on PATH; -1 after an error message. */
static int find_gnuplot(const ab_plot_opts *o, char *out, size_t len)
{
    if (o->gnuplot) {
        snprintf(out, len, "%s", o->gnuplot);
        if (!strchr(o->gnuplot, '/') && find_on_path(o->gnuplot, out, len) != 0) {
            ab_errorf("plot: '%s' not found on PATH", o->gnuplot);
            return -1;
        }
        if (!is_exec(out)) {
            ab_errorf("plot: '%s' is not an executable gnuplot", o->gnuplot);
            return -1;
        }
    } else if (find_on_path("gnuplot", out, len) != 0) {
        ab_errorf("plot: gnuplot not found on PATH; install it (apt-get install gnuplot-nox) "
                  "or pass --gnuplot PATH");
        return -1;
    }
    return 0;
}

/* Append to out[*used..len) what snprintf writes when all of it fits. */
#define APPEND(out, len, used, ...)                                        \
    do {                                                                   \
        int w_ = snprintf((out) + *(used), (len) - *(used), __VA_ARGS__);  \
        if (w_ > 0 && (size_t)w_ < (len) - *(used)) *(used) += (size_t)w_; \
    } while (0)

/* Footnote line 1 of every figure: the file, host, CPU (GPU), threads, commit. */
static void machine_footnote(const char *dir, const char *path, char *foot, size_t len)
{
    char file[1024], host[256], threads[64], sha[128], cpu[256], gpu[256], devs[64];
    meta_get(dir, "host", host, sizeof host);
    meta_get(dir, "threads", threads, sizeof threads);
    meta_get(dir, "git_sha", sha, sizeof sha);
    meta_get(dir, "cpu_model", cpu, sizeof cpu);
    meta_get(dir, "gpu_name", gpu, sizeof gpu);
    meta_get(dir, "devices", devs, sizeof devs);
    const char *base = strrchr(path, '/');
    snprintf(file, sizeof file, "%s", base ? base + 1 : path);
    int has_gpu = strstr(devs, "gpu") != NULL;
    snprintf(foot, len, "data: %s   host: %s   CPU: %s%s%s   threads: %s   commit: %.18s", file,
             host[0] ? host : "?", cpu[0] ? cpu : "?", has_gpu ? "   GPU: " : "",
             has_gpu ? (gpu[0] ? gpu : "?") : "", threads[0] ? threads : "?", sha[0] ? sha : "?");
}

/* Footnote line 2 of the figures across masks (dense_vs_mask): every mask,
 * the points left out of the whole file, e.g. "left out: 57 of 270 points
 * not ok (calib_failed 50, timeout 7)". */
static void file_footnote(const char *dir, const ab_report_mask *masks, int n_masks, char *foot2, size_t len)
{
    char npts[32], nfail[32];
    meta_get(dir, "n_points", npts, sizeof npts);
    meta_get(dir, "n_failed", nfail, sizeof nfail);
    size_t used = 0;
    foot2[0] = '\0';
    if (n_masks > 0) APPEND(foot2, len, &used, "masks:");
    for (int k = 0; k < n_masks && used < len; k++)
        APPEND(foot2, len, &used, "%s %s", k ? "," : "", masks[k].spec);
    if (n_masks > 0 && used < len) APPEND(foot2, len, &used, "   ");
    if (atol(nfail) == 0) {
        snprintf(foot2 + used, len - used, "all %s points status ok", npts[0] ? npts : "0");
        return;
    }
    APPEND(foot2, len, &used, "left out: %s of %s points not ok (", nfail, npts);
    char mpath[PATH_CAP + 16], line[256];
    snprintf(mpath, sizeof mpath, "%s/meta.txt", dir);
    FILE *mf = fopen(mpath, "r");
    int k = 0;
    while (mf && fgets(line, sizeof line, mf)) {
        if (strncmp(line, "n_failed_", 9) != 0) continue;
        line[strcspn(line, "\r\n")] = '\0';
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = '\0';
        APPEND(foot2, len, &used, "%s%s %s", k++ ? ", " : "", line + 9, tab + 1);
    }
    if (mf) fclose(mf);
    snprintf(foot2 + used, len - used, ")");
}

/* What every figure of one run shares. */
typedef struct plot_run {
    const ab_plot_opts *o;
    char gnuplot[PATH_CAP], plots[PATH_CAP];
    char foot[2048], foot2[1024]; /* footnote lines 1 and 2 (the latter across masks) */
    ab_report_mask masks[AB_REPORT_MAX_MASKS];
    int n_masks;
    int written; /* figure files drawn */
} plot_run;

/* Draw variant v of the figure NAME (0: DIR/NAME.tsv, the primary mask or
 * a figure across masks; k: DIR/NAME--SLUG.tsv of mask k, when export wrote
 * it) in every format. 0, or 1 when gnuplot failed. */
static int plot_variant(plot_run *r, const char *name, const char *script, int v)
{
    const char *dir = r->o->dir;
    char data[1400], outbase[1400], vname[400], foot2m[1024], mtitle[200] = "";
    if (v == 0)
        snprintf(vname, sizeof vname, "%s", name);
    else
        snprintf(vname, sizeof vname, "%s--%.128s", name, r->masks[v].slug);
    snprintf(data, sizeof data, "%s/%s.tsv", dir, vname);
    snprintf(outbase, sizeof outbase, "%s/%s", dir, vname);
    long rows = data_rows(data);
    if (v > 0 && rows < 0) return 0; /* no per-mask copy: a figure across masks */
    /* which mask this figure shows: the data file's "# mask:" line */
    int mk = v;
    if (v == 0 && !has_mask_line(data)) mk = -1;
    if (mk >= 0 && mk < r->n_masks) {
        mask_footnote(foot2m, sizeof foot2m, &r->masks[mk], r->n_masks);
        if (r->n_masks > 1 || strcmp(r->masks[mk].spec, "causal") != 0)
            snprintf(mtitle, sizeof mtitle, "%.128s", r->masks[mk].spec);
    } else
        snprintf(foot2m, sizeof foot2m, "%s", r->foot2);
    char note[400];
    note_line(data, note, sizeof note);
    if (rows <= 0) {
        char why[400];
        skip_reason(data, why, sizeof why);
        printf("note: skipped %s: %s\n", vname,
               rows < 0 ? "no data file"
               : why[0] ? why
                        : "no status-ok points with the needed values");
        return 0;
    }
    int rc = 0;
    for (int k = 0; k < r->o->n_formats; k++) {
        const char *fmt = r->o->formats[k];
        char expr[8192] = "";
        gp_assign(expr, sizeof expr, "datadir", dir);
        gp_assign(expr, sizeof expr, "datafile", data);
        gp_assign(expr, sizeof expr, "outfile", outbase);
        gp_assign(expr, sizeof expr, "term", fmt);
        gp_assign(expr, sizeof expr, "footnote", r->foot);
        gp_assign(expr, sizeof expr, "footnote2", foot2m);
        gp_assign(expr, sizeof expr, "footnote3", note);
        gp_assign(expr, sizeof expr, "masktitle", mtitle);
        gp_assign(expr, sizeof expr, "plotsdir", r->plots);
        int st = run_gnuplot(r->gnuplot, expr, script);
        char out[1420];
        if (fmt_ok(snprintf(out, sizeof out, "%s.%s", outbase, fmt), sizeof out) != 0) continue;
        struct stat sb;
        if (st != 0) {
            ab_errorf("plot: gnuplot failed on %s (%s, %s, exit %d)", script, vname, fmt, st);
            rc = 1;
        } else if (stat(out, &sb) != 0 || sb.st_size == 0) {
            ab_errorf("plot: %s wrote no %s", script, out);
            rc = 1;
        } else {
            printf("wrote %s\n", out);
            r->written++;
        }
    }
    return rc;
}

/* Every plots/NAME.gp but common.gp, each variant. 0, 1 gnuplot failed on
 * one, 2 after an error message (no scripts). */
static int plot_scripts(plot_run *r)
{
    struct dirent **ents = NULL;
    int ne = scandir(r->plots, &ents, gp_filter, alphasort);
    if (ne < 0) {
        ab_errorf("plot: cannot list %s: %s", r->plots, strerror(errno));
        return 2;
    }
    if (ne == 0) {
        free(ents);
        ab_errorf("plot: no *.gp scripts in %s", r->plots);
        return 2;
    }
    int rc = 0;
    for (int e = 0; e < ne; e++) {
        char name[256], script[PATH_CAP + 300];
        snprintf(name, sizeof name, "%.*s", (int)(strlen(ents[e]->d_name) - 3), ents[e]->d_name);
        snprintf(script, sizeof script, "%s/%s", r->plots, ents[e]->d_name);
        remove_stale_figs(r->o->dir, name);
        for (int v = 0; v < (r->n_masks > 1 ? r->n_masks : 1); v++)
            if (plot_variant(r, name, script, v) != 0) rc = 1;
    }
    for (int e = 0; e < ne; e++) free(ents[e]);
    free(ents);
    return rc;
}

int ab_plot(const ab_plot_opts *o)
{
    plot_run *r = calloc(1, sizeof *r);
    if (!r) {
        ab_errorf("plot: out of memory");
        return 2;
    }
    int rc = 2;
    r->o = o;
    if (find_gnuplot(o, r->gnuplot, sizeof r->gnuplot) != 0) goto done;
    int pr = find_plots_dir(r->plots, sizeof r->plots);
    if (pr != 0) {
        if (pr == -2)
            ab_errorf("plot: AB_PLOTS_DIR='%s' holds no common.gp", r->plots);
        else
            ab_errorf("plot: cannot find the plots/ scripts (next to the executable or in ./plots); "
                      "set AB_PLOTS_DIR");
        goto done;
    }
    char err[512] = "";
    const ab_export_opts xo = { o->path, o->dir };
    rc = ab_export(&xo, err, sizeof err);
    if (rc != 0) {
        ab_errorf("export: %s", err[0] ? err : "failed");
        goto done;
    }
    machine_footnote(o->dir, o->path, r->foot, sizeof r->foot);
    r->n_masks = ab_report_read_masks(o->dir, r->masks, AB_REPORT_MAX_MASKS);
    file_footnote(o->dir, r->masks, r->n_masks, r->foot2, sizeof r->foot2);
    rc = plot_scripts(r);
    if (rc == 2) goto done;
    if (rc == 0 && r->written == 0) printf("note: no figure had data; nothing drawn\n");

    char gallery[512] = "";
    if (o->gallery)
        draw_gallery(o->dir, r->masks, r->n_masks, gallery, sizeof gallery);
    else
        snprintf(gallery, sizeof gallery, "not drawn: plot ran with --no-gallery");
    if (ab_report_write(o->path, o->dir, gallery, err, sizeof err) != 0) {
        ab_errorf("plot: %s", err);
        rc = 2;
        goto done;
    }
    printf("wrote %s/index.html\n", o->dir);
done:
    free(r);
    return rc;
}
