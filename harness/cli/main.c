/* main.c — the attnbench command line: subcommand dispatch, `list`
 * (methods, tasks, base masks), help. */
#include "harness/engine/blascore.h"
#include "harness/cli/cli.h"
#include "runtime/registry.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(
        f,
        "attnbench — a reproducible benchmark and evaluation suite for sparse attention\n\n"
        "usage: attnbench COMMAND [options]   (attnbench COMMAND --help for details)\n\n"
        "  list [methods|tasks|masks]    what is registered, with summaries\n"
        "  run -c CONFIG -o OUT.h5       run a sweep (--resume, --methods, --threads, --shard, --dry-run)\n"
        "  show OUT.h5                   summary table in the terminal\n"
        "  export OUT.h5 -d DIR          TSV per figure\n"
        "  merge A.h5 B.h5 ... -o ALL.h5 merge result files (shards) by point key\n"
        "  compare A.h5 B.h5             latency and speedup ratios B/A per point, with intervals\n"
        "  plot OUT.h5 -d DIR            all figures (PNG + SVG) via gnuplot\n"
        "  check [--methods a,b]         every method vs the fp64 reference on its own layout\n"
        "  mask METHOD -o FILE.png       draw a method's layout (--gallery: every method)\n"
        "  trace-info T.h5               what a trace file holds, validated (docs/traces.md)\n"
        "  trace-run T.h5 --layer L -o F one method's output on a trace layer (raw float32)\n\n"
        "Exit codes: 0 success, 1 some points failed (still recorded), 2 usage or config error.\n");
}

static void print_params(const ab_param *p, int cap)
{
    int n = ab_param_count(p, cap);
    for (int i = 0; i < n; i++)
        printf("      %-16s default %-8g range [%g, %g]%s  %s\n", p[i].name, p[i].def, p[i].min, p[i].max,
               p[i].is_int ? " int" : "", p[i].help ? p[i].help : "");
}

int ab_cmd_list(int argc, char **argv)
{
    int methods = 1, tasks = 1, masks = 1, verbose = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attnbench list [methods|tasks|masks] [-v]\n"
                   "List the registered methods, tasks and base masks (the [sweep] masks\n"
                   "axis); -v also lists the parameters of methods and tasks.\n");
            return 0;
        } else if (!strcmp(argv[i], "methods"))
            tasks = masks = 0;
        else if (!strcmp(argv[i], "tasks"))
            methods = masks = 0;
        else if (!strcmp(argv[i], "masks"))
            methods = tasks = 0;
        else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
            verbose = 1;
        else {
            ab_errorf("list: unknown argument '%s' (methods, tasks, masks, -v)", argv[i]);
            return 2;
        }
    }
    if (methods) {
        printf("methods (%d):\n", ab_method_count);
        for (int i = 0; i < ab_method_count; i++) {
            const ab_method *m = ab_method_at(i);
            const char *knob = m->density_knob.param >= 0 ? m->params[m->density_knob.param].name : "-";
            printf("  %-20s %s\n  %-20s   family: %s; knob: %s; devices: %s%s; ref: %s\n", m->name,
                   m->summary ? m->summary : "", "", m->family, knob, m->devices & AB_CPU ? "cpu" : "",
                   m->devices & AB_GPU ? " gpu" : "", m->reference ? m->reference : "-");
            if (verbose) {
                if (m->block_q > 0)
                    printf(
                        "  %-20s   native block: %d x %d (used unless the config sets block_q / block_k)\n",
                        "", m->block_q, m->block_k > 0 ? m->block_k : m->block_q);
                print_params(m->params, AB_MAX_PARAMS);
            }
        }
    }
    if (tasks) {
        printf("%stasks (%d):\n", methods ? "\n" : "", ab_task_count);
        for (int i = 0; i < ab_task_count; i++) {
            const ab_task *t = ab_task_at(i);
            printf("  %-20s %s\n", t->name, t->summary ? t->summary : "");
            if (verbose) print_params(t->params, AB_TASK_MAX_PARAMS);
        }
    }
    if (masks) {
        printf("%sbase masks (%d): [sweep] masks = SPEC, ...; every method's layout is intersected with it\n",
               methods || tasks ? "\n" : "", ab_mask_count);
        for (int i = 0; i < ab_mask_count; i++) {
            const ab_mask_def *m = ab_mask_at(i);
            printf("  %-20s %s\n  %-20s   syntax: %s; causal: %s\n", m->name, m->summary ? m->summary : "",
                   "", m->syntax ? m->syntax : m->name, m->causal ? "yes" : "no");
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    /* Commands that compute: make OpenBLAS run the kernels this CPU deserves
     * (may re-execute the program once; harness/engine/blascore.h). */
    if (!strcmp(cmd, "run") || !strcmp(cmd, "check") || !strcmp(cmd, "__blas-probe"))
        ab_blas_core_setup(argc, argv);
    ab_registry_init();
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "list")) return ab_cmd_list(argc - 1, argv + 1);
    if (!strcmp(cmd, "run")) return ab_cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "show")) return ab_cmd_show(argc - 1, argv + 1);
    if (!strcmp(cmd, "export")) return ab_cmd_export(argc - 1, argv + 1);
    if (!strcmp(cmd, "plot")) return ab_cmd_plot(argc - 1, argv + 1);
    if (!strcmp(cmd, "merge")) return ab_cmd_merge(argc - 1, argv + 1);
    if (!strcmp(cmd, "check")) return ab_cmd_check(argc - 1, argv + 1);
    if (!strcmp(cmd, "mask")) return ab_cmd_mask(argc - 1, argv + 1);
    if (!strcmp(cmd, "compare")) return ab_cmd_compare(argc - 1, argv + 1);
    if (!strcmp(cmd, "trace-info")) return ab_cmd_trace_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "trace-run")) return ab_cmd_trace_run(argc - 1, argv + 1);
    ab_errorf("unknown command '%s' (see: attnbench --help)", cmd);
    return 2;
}
