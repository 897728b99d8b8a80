/* cli.h — the subcommands of the attnbench binary. Each takes the argv that
 * follows the subcommand name (argv[0] is the subcommand) and returns the
 * process exit code: 0 success, 1 some points failed (recorded), 2 usage,
 * config or input error (nothing written). Each prints its own --help. */
#ifndef AB_CLI_H
#define AB_CLI_H

int ab_cmd_list(int argc, char **argv);
int ab_cmd_run(int argc, char **argv);
int ab_cmd_show(int argc, char **argv);       /* harness/cli/show.c -> report/show.h */
int ab_cmd_export(int argc, char **argv);     /* harness/cli/export.c -> report/export.h */
int ab_cmd_plot(int argc, char **argv);       /* harness/cli/plot.c -> report/plot.h */
int ab_cmd_merge(int argc, char **argv);      /* harness/cli/merge.c */
int ab_cmd_check(int argc, char **argv);      /* harness/cli/check.c */
int ab_cmd_mask(int argc, char **argv);       /* harness/cli/mask.c -> report/draw.h */
int ab_cmd_compare(int argc, char **argv);    /* harness/cli/compare.c -> report/compare.h */
int ab_cmd_trace_info(int argc, char **argv); /* harness/cli/trace.c -> datasets/gen/trace.h */
int ab_cmd_trace_run(int argc, char **argv);

#include "runtime/errors.h" /* ab_errorf */
#endif
