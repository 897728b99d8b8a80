/* mask.c — `attnbench mask METHOD | --gallery`: the command line of the
 * layout pictures (harness/report/draw.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"
#include "harness/cli/cli.h"
#include "harness/report/draw.h"

static void mask_usage(FILE *f)
{
    fputs("usage: attnbench mask METHOD [-n N] [--mask SPEC] [--density D | --param k=v ...] [--head H] -o "
          "FILE.png\n"
          "       attnbench mask --gallery [-n N] [--mask SPEC] [--density D] -o DIR\n"
          "Draw which (query, key) pairs a method keeps on the needle task's haystack\n"
          "(seeded; 8 heads, d = 64) under a base mask: query blocks down, key blocks across,\n"
          "dark = kept, light grey = forbidden by the base mask. --density calibrates the\n"
          "method's knob first (density over the pairs the mask allows).\n"
          "`attnbench mask dense --mask SPEC` draws the base mask alone.\n"
          "  -n N          sequence length (default 4096)\n"
          "  --mask SPEC   base mask (default causal): full, sliding:W, prefix:F, document:K,\n"
          "                chunked:C, ... (attnbench list masks); bound to N and --seed\n"
          "  --density D   calibrate the density knob to D (gallery default 0.1)\n"
          "  --param k=v   set a method parameter (repeatable; single method only)\n"
          "  --head H      head to draw (default 0)\n"
          "  --heads H     heads of the problem (default 8)\n"
          "  --seed S      haystack seed, also the base mask's (document lengths; default 1)\n"
          "  --gallery     every registered CPU prefill method: DIR/mask_METHOD.png + DIR/mask_gallery.png\n"
          "Writes FILE.dat (cell matrix) and FILE.gp (gnuplot script) beside each PNG.\n"
          "Exit: 0 drawn, 1 a method or gnuplot failed, 2 usage error.\n",
          f);
}

int ab_cmd_mask(int argc, char **argv)
{
    ab_draw_opts o = { .n = 4096, .heads = 8, .head = 0, .seed = 1, .density = NAN, .spec = "causal" };
    int gallery = 0;
    const char *params[AB_MAX_PARAMS];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int more = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            mask_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--gallery"))
            gallery = 1;
        else if (!strcmp(a, "-n") && more)
            o.n = atoi(argv[++i]);
        else if (!strcmp(a, "--density") && more)
            o.density = atof(argv[++i]);
        else if (!strcmp(a, "--head") && more)
            o.head = atoi(argv[++i]);
        else if (!strcmp(a, "--heads") && more)
            o.heads = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && more)
            o.seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "-o") && more)
            o.out = argv[++i];
        else if (!strcmp(a, "--mask") && more)
            o.spec = argv[++i];
        else if (!strcmp(a, "--param") && more) {
            if (o.nparams == AB_MAX_PARAMS) {
                ab_errorf("mask: too many --param");
                return 2;
            }
            params[o.nparams++] = argv[++i];
        } else if (a[0] != '-' && !o.method)
            o.method = a;
        else {
            ab_errorf("mask: unknown or incomplete argument '%s' (see attnbench mask --help)", a);
            return 2;
        }
    }
    o.params = params;
    if (!o.out) {
        ab_errorf("mask: -o is required");
        return 2;
    }
    if (gallery == !!o.method) {
        ab_errorf("mask: give either METHOD or --gallery");
        return 2;
    }
    if (o.n < 32 || o.n > (1 << 20) || o.heads < 1 || o.head < 0 || o.head >= o.heads) {
        ab_errorf("mask: need 32 <= N <= 2^20 and 0 <= head < heads");
        return 2;
    }
    if (!isnan(o.density) && !(o.density > 0 && o.density <= 1)) {
        ab_errorf("mask: --density must be in (0, 1]");
        return 2;
    }
    if (gallery && o.nparams) {
        ab_errorf("mask: --param applies to one method, not --gallery");
        return 2;
    }
    if (gallery && isnan(o.density)) o.density = 0.1;
    return ab_draw(&o);
}
