/* merge.c — `attnbench merge A.h5 B.h5 ... -o ALL.h5`: join the result files
 * of a sharded sweep by point key (the work: harness/store/merge.c).
 *
 * Exit: 0 merged, 1 merged with conflicts, 2 usage or unreadable input
 * (nothing written). */
#include "harness/cli/cli.h"
#include "harness/store/merge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AB_MERGE_MAX_INPUTS 4096

static void usage_merge(FILE *f)
{
    fprintf(f, "usage: attnbench merge A.h5 B.h5 ... -o ALL.h5 [-q]\n"
               "Merge result files (e.g. the shards of `run --shard I/N`) by point key.\n"
               "A point found in several inputs with identical rows is kept once; with\n"
               "different rows it is reported and the first input's row is kept (exit 1).\n"
               "Every input's environment is kept under /shards/shard_I.\n\n"
               "  -o, --out FILE   merged results file (replaced atomically)\n"
               "  -q, --quiet      no summary line\n"
               "  -h, --help       this text\n\n"
               "Exit: 0 merged, 1 merged but rows conflicted, 2 usage or unreadable input\n"
               "(nothing written).\n");
}

int ab_cmd_merge(int argc, char **argv)
{
    const char *out = NULL;
    int quiet = 0;
    const char **in = calloc((size_t)argc + 1, sizeof *in);
    int nin = 0;
    if (!in) {
        ab_errorf("merge: out of memory");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_merge(stdout);
            free(in);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            if (i + 1 >= argc) {
                ab_errorf("merge: option %s needs a value", a);
                free(in);
                return 2;
            }
            out = argv[++i];
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet"))
            quiet = 1;
        else if (a[0] == '-' && a[1]) {
            ab_errorf("merge: unknown option '%s' (see: attnbench merge --help)", a);
            free(in);
            return 2;
        } else
            in[nin++] = a;
    }
    if (!out) {
        ab_errorf("merge: no output file given (-o ALL.h5); see: attnbench merge --help");
        free(in);
        return 2;
    }
    if (nin == 0) {
        ab_errorf("merge: no input files given; see: attnbench merge --help");
        free(in);
        return 2;
    }
    if (nin > AB_MERGE_MAX_INPUTS) {
        ab_errorf("merge: %d inputs, at most %d", nin, AB_MERGE_MAX_INPUTS);
        free(in);
        return 2;
    }

    double t0 = (double)clock() / CLOCKS_PER_SEC;
    ab_merge_stats st;
    char err[1200];
    int rc = 2;
    if (ab_results_merge(in, nin, out, quiet, &st, err, sizeof err))
        ab_errorf("%s", err);
    else {
        if (!quiet)
            fprintf(stderr,
                    "attnbench: merged %d files, %zu points read, %zu unique (%zu identical duplicates, %zu "
                    "conflicts) in %.2f s CPU -> %s\n",
                    nin, st.read, st.unique, st.dups, st.conflicts, (double)clock() / CLOCKS_PER_SEC - t0,
                    out);
        rc = st.conflicts ? 1 : 0;
    }
    free(in);
    return rc;
}
