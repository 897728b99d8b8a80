/* show.c — `attnbench show RESULTS.h5`: the command line of the summary
 * table (harness/report/show.c). */
#include <stdio.h>
#include <string.h>

#include "harness/cli/cli.h"
#include "harness/report/show.h"

static void show_usage(FILE *f)
{
    fputs("usage: attnbench show RESULTS.h5 [--sort COL] [--filter EXPR] [--format text|tsv|md]\n"
          "\n"
          "Print the run's environment and one row per (method, base mask, seq_len,\n"
          "target density): median latency of the ok points with a timing (untimed\n"
          "points are scored only), speedup over \"dense\" on the same workloads under\n"
          "the same mask (the paired ratio measured in the same process, with its 95%\n"
          "interval, where the points have it; else dense latency / latency), achieved\n"
          "density (of the pairs the mask allows), attention (mass) recall, mean task\n"
          "accuracy, ok points, failed points by status and the timing flags of the ok\n"
          "points (untimed, unpaired, interference, rounds_disagree, cores_shared). --format tsv adds\n"
          "speedup_lo speedup_hi paired ms_lo ms_hi timed.\n"
          "\n"
          "options:\n"
          "  --sort COL       method mask seq_len target ms speedup density recall accuracy\n"
          "                   ok failed; a leading '-' sorts descending (--sort -speedup)\n"
          "  --filter EXPR    key=value terms joined by commas; terms with the same key\n"
          "                   are alternatives (method=window,method=dense,seq_len=1024,\n"
          "                   mask=document:8). keys: method task device dtype kernel\n"
          "                   layout status key mask seq_len heads head_dim causal\n"
          "                   threads seed depth target\n"
          "  --format FMT     text (default), tsv, md\n"
          "  -h, --help       this text\n"
          "exit: 0 shown, 2 usage or input error\n",
          f);
}

/* "--opt VALUE" or "--opt=VALUE"; returns the value or NULL (not this option). */
static const char *opt_value(int argc, char **argv, int *i, const char *name, int *bad)
{
    size_t len = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, len) != 0) return NULL;
    if (a[len] == '=') return a + len + 1;
    if (a[len] != '\0') return NULL;
    if (*i + 1 >= argc) {
        ab_errorf("show: %s needs a value (see attnbench show --help)", name);
        *bad = 1;
        return NULL;
    }
    return argv[++*i];
}

int ab_cmd_show(int argc, char **argv)
{
    ab_show_opts o = { NULL, NULL, NULL, AB_SHOW_TEXT };
    const char *format = "text";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int bad = 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            show_usage(stdout);
            return 0;
        } else if ((v = opt_value(argc, argv, &i, "--sort", &bad))) {
            o.sort = v;
        } else if ((v = opt_value(argc, argv, &i, "--filter", &bad))) {
            o.filter = v;
        } else if ((v = opt_value(argc, argv, &i, "--format", &bad))) {
            format = v;
        } else if (bad) {
            return 2;
        } else if (a[0] == '-' && a[1] != '\0') {
            ab_errorf("show: unknown option '%s' (see attnbench show --help)", a);
            return 2;
        } else if (!o.path) {
            o.path = a;
        } else {
            ab_errorf("show: more than one results file ('%s', '%s')", o.path, a);
            return 2;
        }
    }
    if (!o.path) {
        ab_errorf("show: no results file given (usage: attnbench show RESULTS.h5)");
        return 2;
    }
    if (strcmp(format, "text") == 0)
        o.format = AB_SHOW_TEXT;
    else if (strcmp(format, "tsv") == 0)
        o.format = AB_SHOW_TSV;
    else if (strcmp(format, "md") == 0)
        o.format = AB_SHOW_MD;
    else {
        ab_errorf("show: unknown --format '%s' (text, tsv or md)", format);
        return 2;
    }
    return ab_show(&o);
}
