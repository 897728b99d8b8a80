/* fuzz_run_args.c — libFuzzer target for the command line of `attnbench run`
 * (parse_run_args in harness/cli/run.c, reached through ab_cmd_run). The input
 * is split at NUL bytes and newlines into argv words; a small fixed config
 * and `--dry-run` twice are always added (an option's value may swallow
 * one, never two), so the parser, the --methods / --devices / --threads /
 * --shard values and the grid expansion run, and nothing is ever measured or
 * written. As in main(), argv[-1] is the program name (ab_cmd_run records
 * the whole command line). Build and run: make fuzz (mk/fuzz.mk). */
#include "harness/cli/cli.h"
#include "runtime/registry.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_WORDS 64

static const char *cfg_text = "[sweep]\ntasks = needle\nmethods = dense, window\nseq_lens = 256\nheads = 1\n"
                              "head_dims = 16\ndensities = 0.5\nblock_q = 32\nblock_k = 32\nthreads = 1\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char cfg[64];
    if (!cfg[0]) {
        ab_registry_init();
        /* no terminal input, no output noise: a word like -c /dev/stdin must not block */
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            close(nul);
        }
        snprintf(cfg, sizeof cfg, "/tmp/ab_fuzz_run_args_%d.ini", (int)getpid());
        FILE *f = fopen(cfg, "w");
        if (!f) abort();
        fputs(cfg_text, f);
        fclose(f);
    }
    if (size > 4096) return 0;
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    char *full[MAX_WORDS + 8];
    char **argv = full + 1;
    int argc = 0;
    full[0] = "attnbench";
    argv[argc++] = "run";
    argv[argc++] = "-c";
    argv[argc++] = cfg;
    char *w = buf;
    for (size_t i = 0; i <= size && argc < MAX_WORDS; i++)
        if (buf[i] == 0 || buf[i] == '\n') {
            buf[i] = 0;
            argv[argc++] = w;
            w = buf + i + 1;
        }
    argv[argc++] = "--dry-run";
    argv[argc++] = "--dry-run";
    argv[argc++] = "--no-estimate";
    argv[argc] = NULL;
    ab_cmd_run(argc, argv);
    fflush(stdout);
    free(buf);
    return 0;
}
