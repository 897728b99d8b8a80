/* export.c — `attnbench export RESULTS.h5 -d DIR`: the command line of the
 * TSV export (harness/report/export.c). */
#include <stdio.h>
#include <string.h>

#include "harness/cli/cli.h"
#include "harness/report/export.h"

static void export_usage(FILE *f)
{
    fputs("usage: attnbench export RESULTS.h5 -d DIR\n"
          "\n"
          "Write the results file as TSV into DIR (created if missing):\n"
          "  points.tsv               every point, every column (failed points too)\n"
          "  latency_vs_n.tsv         per method: median latency vs sequence length\n"
          "  recall_vs_density.tsv    per method: attention recall vs density\n"
          "  accuracy_vs_density.tsv  per method: task accuracy (Wilson 95%) vs density\n"
          "  speedup_vs_density.tsv   per method: speedup over \"dense\" vs density\n"
          "  accuracy_vs_latency.tsv  per method and task: accuracy vs latency, Pareto flag\n"
          "  needle_heatmap.tsv       per method: needle accuracy by length x depth\n"
          "  overhead_share.tsv       per method: select / total vs sequence length\n"
          "  selectors.tsv            per method: select and run / dense, the stated bound\n"
          "  cpu_vs_gpu.tsv           latency vs length on each device (several devices)\n"
          "  breakeven.tsv            speedup over dense per method x (N, target density),\n"
          "                           with its 95% interval and significance\n"
          "  dense_vs_mask.tsv        dense time per base mask relative to causal, and the\n"
          "                           ideal (ratio of allowed pairs)\n"
          "  summary.tsv              one row per method, device and base mask\n"
          "  methods.txt, masks.txt   colour order; the base masks in figure order\n"
          "  meta.txt                 file, machine, commit, counts\n"
          "The per-figure files hold status-ok points only, one gnuplot block\n"
          "(index) per method; their columns are listed in a header comment.\n"
          "Latency, speedup, overhead and break-even use only points with a timing\n"
          "(untimed points, scored only, count in accuracy and recall); the speedup\n"
          "over dense is the paired ratio (1 / rel_dense, measured in the same child\n"
          "process, with its 95% interval) where a point has it, else dense total_ms /\n"
          "total_ms on the same workload (no interval).\n"
          "No figure file mixes base masks: NAME.tsv holds the primary mask (causal\n"
          "when present), and with several masks NAME--SLUG.tsv each other one\n"
          "(e.g. latency_vs_n--document_8.tsv; masks.txt lists the slugs).\n"
          "\n"
          "options:\n"
          "  -d, --dir DIR   output directory (required)\n"
          "  -h, --help      this text\n"
          "exit: 0 written, 2 usage or input error\n",
          f);
}

int ab_cmd_export(int argc, char **argv)
{
    const char *path = NULL, *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            export_usage(stdout);
            return 0;
        } else if (strcmp(a, "-d") == 0 || strcmp(a, "--dir") == 0) {
            if (i + 1 >= argc) {
                ab_errorf("export: %s needs a directory (see attnbench export --help)", a);
                return 2;
            }
            dir = argv[++i];
        } else if (strncmp(a, "--dir=", 6) == 0) {
            dir = a + 6;
        } else if (a[0] == '-' && a[1] != '\0') {
            ab_errorf("export: unknown option '%s' (see attnbench export --help)", a);
            return 2;
        } else if (!path) {
            path = a;
        } else {
            ab_errorf("export: more than one results file ('%s', '%s')", path, a);
            return 2;
        }
    }
    if (!path) {
        ab_errorf("export: no results file given (usage: attnbench export RESULTS.h5 -d DIR)");
        return 2;
    }
    if (!dir || !dir[0]) {
        ab_errorf("export: no output directory: -d DIR is required");
        return 2;
    }
    char err[512] = "";
    const ab_export_opts o = { path, dir };
    int rc = ab_export(&o, err, sizeof err);
    if (rc != 0) ab_errorf("export: %s", err[0] ? err : "failed");
    return rc;
}
