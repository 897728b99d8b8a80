/* compare.c — `attnbench compare A.h5 B.h5`: the command line of the
 * comparison of two results files (harness/report/compare.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/cli/cli.h"
#include "harness/report/compare.h"

static void usage_compare(FILE *f)
{
    fprintf(f, "usage: attnbench compare A.h5 B.h5 [options]\n"
               "Match the points of two results files by key and compare their timings:\n"
               "latency (total_ms) and speedup over dense, each as the ratio B/A with the\n"
               "interval the two points' 95%% intervals allow. A point 'changed' when its two\n"
               "intervals do not overlap. The summary gives the median, p90 and max of\n"
               "|log(B/A)| over the matched points (0.05 is about 5%%).\n\n"
               "  --fail-above X    exit 1 when the median |log ratio| of --metric exceeds X\n"
               "  --noise X         a change smaller than |log ratio| X is never 'changed' (default 0.02)\n"
               "  --metric M        speedup (default), latency, or both: what --fail-above tests\n"
               "  --all             list every matched point, not only the changed ones\n"
               "  --tsv FILE        write one row per matched point to FILE\n"
               "  -q, --quiet       the summary only\n"
               "  -h, --help        this text\n\n"
               "Speedups use the paired ratio to dense measured in the same child process\n"
               "(rel_dense) when the file has it, else dense total_ms / total_ms of the\n"
               "matching dense point (files written before the timing protocol). Points\n"
               "of the method dense itself have speedup 1 by definition and are left out\n"
               "of the speedup summary.\n\n"
               "Exit: 0 compared (and under the gate), 1 the gate failed, 2 usage or an\n"
               "unreadable file, or no timed point in common.\n");
}

int ab_cmd_compare(int argc, char **argv)
{
    ab_compare_opts o = { { NULL, NULL }, NULL, "speedup", NAN, 0.02, 0, 0 };
    int nf = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_compare(stdout);
            return 0;
        } else if (!strcmp(a, "--all"))
            o.all = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet"))
            o.quiet = 1;
        else if (!strcmp(a, "--fail-above") || !strcmp(a, "--metric") || !strcmp(a, "--tsv") ||
                 !strcmp(a, "--noise")) {
            if (i + 1 >= argc) {
                ab_errorf("compare: option %s needs a value", a);
                return 2;
            }
            const char *v = argv[++i];
            if (a[2] == 'f' || a[2] == 'n') {
                char *end;
                double x = strtod(v, &end);
                if (*end || end == v || !(x >= 0) || !isfinite(x)) {
                    ab_errorf("compare: %s: '%s' is not a number >= 0", a, v);
                    return 2;
                }
                if (a[2] == 'f')
                    o.fail_above = x;
                else
                    o.noise = x;
            } else if (a[2] == 'm') {
                if (strcmp(v, "speedup") && strcmp(v, "latency") && strcmp(v, "both")) {
                    ab_errorf("compare: --metric: '%s' is not speedup, latency or both", v);
                    return 2;
                }
                o.metric = v;
            } else
                o.tsv = v;
        } else if (a[0] == '-' && a[1]) {
            ab_errorf("compare: unknown option '%s' (see: attnbench compare --help)", a);
            return 2;
        } else if (nf < 2)
            o.files[nf++] = a;
        else {
            ab_errorf("compare: give two results files (a third: '%s')", a);
            return 2;
        }
    }
    if (nf != 2) {
        ab_errorf("compare: give two results files: attnbench compare A.h5 B.h5 (see --help)");
        return 2;
    }
    return ab_compare(&o);
}
