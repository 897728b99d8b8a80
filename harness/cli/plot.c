/* plot.c — `attnbench plot RESULTS.h5 -d DIR`: the command line of the
 * figures and the index page (harness/report/plot.c). */
#include <stdio.h>
#include <string.h>

#include "harness/cli/cli.h"
#include "harness/report/plot.h"

static void plot_usage(FILE *f)
{
    fputs("usage: attnbench plot RESULTS.h5 -d DIR [--format png,svg] [--gnuplot PATH] [--no-gallery]\n"
          "\n"
          "Export the results into DIR (see attnbench export --help), draw every figure\n"
          "of plots/*.gp with gnuplot (one file per format), then write DIR/index.html:\n"
          "  latency_vs_n         latency vs N, log-log (dense, dense_blas: exact references)\n"
          "  speedup_vs_density   speedup over dense vs density, one panel per N\n"
          "  recall_vs_density    attention-mass and top-k recall vs density\n"
          "  accuracy_vs_density  task accuracy vs density, one panel per task (Wilson 95%)\n"
          "  accuracy_vs_latency  accuracy vs latency, each method's Pareto front\n"
          "  needle_heatmap       needle accuracy by length x depth, one panel per method\n"
          "  overhead_share       select() share of the latency vs N\n"
          "  selectors            select / dense against the stated bound, per method\n"
          "  cpu_vs_gpu           latency on each device (files with several devices)\n"
          "  breakeven            speedup over dense per method x (N, target density): log\n"
          "                       colour centred at 1, the value, and whether its 95%\n"
          "                       interval lies above or below 1\n"
          "  dense_vs_mask        dense time per base mask relative to causal, against the\n"
          "                       ideal (allowed-pair ratio; files with several masks)\n"
          "  mask_gallery/        `attnbench mask --gallery` under the primary mask and\n"
          "                       each base mask alone, when this build has it\n"
          "No figure mixes base masks: with several, each figure is drawn once per mask\n"
          "(NAME.png for the primary mask, NAME--SLUG.png for the others, masks.txt).\n"
          "Only status-ok points are drawn (timing figures: those with a timing; their\n"
          "error bars are 95% intervals, bootstrap over rounds); the others are counted\n"
          "in each footnote, with the file, host, CPU/GPU, threads and commit. A figure\n"
          "without data is skipped with a note. index.html is static (no scripts, no\n"
          "network): copy DIR anywhere and open it.\n"
          "\n"
          "options:\n"
          "  -d, --dir DIR     output directory (required)\n"
          "  --format LIST     comma-separated: png, svg, pdf (default png,svg)\n"
          "  --gnuplot PATH    the gnuplot to run (default: gnuplot on PATH)\n"
          "  --no-gallery      do not run `attnbench mask --gallery`\n"
          "  -h, --help        this text\n"
          "environment: AB_PLOTS_DIR overrides where the plots/*.gp scripts are found\n"
          "exit: 0 drawn, 1 gnuplot failed on a script, 2 usage or input error\n",
          f);
}

/* The comma list of --format into o; -1 after an error message. */
static int parse_formats(const char *formats, ab_plot_opts *o)
{
    o->n_formats = 0;
    for (const char *s = formats; *s;) {
        size_t l = strcspn(s, ",");
        char one[16];
        snprintf(one, sizeof one, "%.*s", (int)(l < 15 ? l : 15), s);
        if (strcmp(one, "png") && strcmp(one, "svg") && strcmp(one, "pdf")) {
            ab_errorf("plot: unknown format '%.*s' in --format (png, svg, pdf)", (int)l, s);
            return -1;
        }
        int dup = 0;
        for (int k = 0; k < o->n_formats; k++) dup |= strcmp(o->formats[k], one) == 0;
        if (!dup && o->n_formats < AB_PLOT_MAX_FORMATS)
            memcpy(o->formats[o->n_formats++], one, 4); /* "png" + NUL */
        s += l;
        if (*s == ',') s++;
    }
    if (o->n_formats == 0) {
        ab_errorf("plot: --format names no format (png, svg, pdf)");
        return -1;
    }
    return 0;
}

int ab_cmd_plot(int argc, char **argv)
{
    ab_plot_opts o = { .gallery = 1 };
    const char *path = NULL, *dir = NULL, *formats = "png,svg", *gnuplot_opt = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            plot_usage(stdout);
            return 0;
        }
        if (strcmp(a, "--no-gallery") == 0) {
            o.gallery = 0;
            continue;
        }
        if (strcmp(a, "-d") == 0 || strcmp(a, "--dir") == 0)
            dst = &dir;
        else if (strcmp(a, "--format") == 0)
            dst = &formats;
        else if (strcmp(a, "--gnuplot") == 0)
            dst = &gnuplot_opt;
        else if (strncmp(a, "--dir=", 6) == 0) {
            dir = a + 6;
            continue;
        } else if (strncmp(a, "--format=", 9) == 0) {
            formats = a + 9;
            continue;
        } else if (strncmp(a, "--gnuplot=", 10) == 0) {
            gnuplot_opt = a + 10;
            continue;
        } else if (a[0] == '-' && a[1] != '\0') {
            ab_errorf("plot: unknown option '%s' (see attnbench plot --help)", a);
            return 2;
        } else if (!path) {
            path = a;
            continue;
        } else {
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
    if (parse_formats(formats, &o) != 0) return 2;
    o.path = path;
    o.dir = dir;
    o.gnuplot = gnuplot_opt;
    return ab_plot(&o);
}
