/* check.c — `attnbench check`: argv, the table of methods x devices and the
 * exit code; the check itself is harness/engine/check.c (check.h). */
#include "harness/cli/cli.h"
#include "harness/engine/check.h"
#include "harness/engine/blascore.h"
#include "harness/engine/gpu.h"
#include "runtime/registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the command ------------------------------------------------------------ */

static int listed(const char *list, const char *name)
{
    const size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *c = strchr(p, ',');
        const size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        p = c ? c + 1 : NULL;
    }
    return 0;
}

int ab_cmd_check(int argc, char **argv)
{
    const char *methods = NULL, *masks = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attnbench check [--methods a,b] [--masks SPEC,SPEC] [--quick]\n"
                   "Check every registered method (or the listed ones) on each device under every\n"
                   "registered base mask (one spec each: causal, full, document:3, sliding:37,\n"
                   "prefix:0.3, chunked:50; a mask not in that table under its bare name) over a grid\n"
                   "of shapes (N = 1, 100, 257, 512; d = 16, 64; blocks 64 and 32; three knob values).\n"
                   "--quick (what make test runs): masks causal, full and document:3 only, N = 1, 77,\n"
                   "256, block 64, two knob values. --masks: these specs instead, e.g.\n"
                   "--masks document:8:longtail,sliding:100.\n"
                   "Per configuration: the layout is valid, no kept pair the base mask forbids\n"
                   "counts, its density (kept allowed pairs / allowed pairs) equals a brute-force\n"
                   "count, and the output matches the fp64 reference restricted to the layout and\n"
                   "the mask within %g relative L2 error per head. A configuration a method\n"
                   "declines (unsupported) is counted, not failed.\n"
                   "Exit: 0 all pass, 1 some method fails, 2 usage error.\n",
                   AB_CHECK_TOL);
            return 0;
        } else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--methods") && i + 1 < argc)
            methods = argv[++i];
        else if (!strncmp(argv[i], "--methods=", 10))
            methods = argv[i] + 10;
        else if (!strcmp(argv[i], "--masks") && i + 1 < argc)
            masks = argv[++i];
        else if (!strncmp(argv[i], "--masks=", 8))
            masks = argv[i] + 8;
        else {
            ab_errorf("check: unknown argument '%s' (see attnbench check --help)", argv[i]);
            return 2;
        }
    }
    if (methods) /* every listed name must exist */
        for (const char *p = methods; *p;) {
            const char *c = strchr(p, ',');
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(c ? c - p : (ptrdiff_t)strlen(p)), p);
            if (!ab_method_find(name)) {
                ab_errorf("check: unknown method '%s' (attnbench list methods)", name);
                return 2;
            }
            p = c ? c + 1 : p + strlen(p);
        }
    char specs[AB_CHECK_MAX_MASKS][AB_MASK_SPEC];
    const char *sp[AB_CHECK_MAX_MASKS];
    int nspecs = 0;
    char err[256];
    if (masks) /* comma-separated specs (no spec holds a comma) */
        for (const char *p = masks; *p;) {
            const char *c = strchr(p, ',');
            const size_t len = c ? (size_t)(c - p) : strlen(p);
            if (nspecs == AB_CHECK_MAX_MASKS) {
                ab_errorf("check: --masks: more than %d specs", AB_CHECK_MAX_MASKS);
                return 2;
            }
            if (len == 0 || len >= AB_MASK_SPEC) {
                ab_errorf("check: --masks: empty or too long spec in '%s'", masks);
                return 2;
            }
            memcpy(specs[nspecs], p, len);
            specs[nspecs][len] = 0;
            if (ab_mask_check_spec(specs[nspecs], err, sizeof err)) {
                ab_errorf("check: --masks: %s", err);
                return 2;
            }
            nspecs++;
            p = c ? c + 1 : p + len;
        }
    if (masks && !nspecs) {
        ab_errorf("check: --masks: no spec given");
        return 2;
    }
    if (!masks && (nspecs = ab_check_mask_specs(quick, specs, AB_CHECK_MAX_MASKS, err, sizeof err)) < 0) {
        ab_errorf("check: %s", err);
        return 2;
    }
    for (int i = 0; i < nspecs; i++) sp[i] = specs[i];
    ab_blas_core_announce();
    char gpu_why[256] = "";
    const int gpus = ab_gpu_count(gpu_why, sizeof gpu_why);
    printf("attnbench check%s: tolerance %g relative L2 vs the fp64 reference on each method's layout\nbase "
           "masks:",
           quick ? " --quick" : "", AB_CHECK_TOL);
    for (int i = 0; i < nspecs; i++) printf("%s %s", i ? "," : "", sp[i]);
    printf("\n\n");
    printf("%-20s %-6s %-6s %7s %10s  %-18s %-17s %s\n", "method", "device", "result", "configs", "worst_err",
           "density lo..hi", "layouts", "detail");
    int failed = 0, passed = 0;
    for (int i = 0; i < ab_method_count; i++) {
        const ab_method *m = ab_method_at(i);
        if (methods && !listed(methods, m->name)) continue;
        ab_check_result r;
        char report[640];
        const int v = ab_check_method_masks(m, quick, sp, nspecs, &r, report, sizeof report);
        char dr[32] = "-";
        if (!isnan(r.dens_lo)) snprintf(dr, sizeof dr, "%.3f..%.3f", r.dens_lo, r.dens_hi);
        printf("%-20s %-6s %-6s %7d %10.2e  %-18s %-17s %s\n", m->name, "cpu",
               v == AB_CHECK_PASS   ? "pass"
               : v == AB_CHECK_FAIL ? "FAIL"
                                    : "skip",
               r.configs, r.worst_err, dr, r.layouts[0] ? r.layouts : "-", report);
        fflush(stdout);
        failed += v == AB_CHECK_FAIL;
        passed += v == AB_CHECK_PASS;
        printf("%-20s %-6s %-6s %7s %10s  %-18s %-17s skipped: %s%s%s%s\n", m->name, "gpu", "skip", "-", "-",
               "-", "-",
               gpus == 0                ? "no GPU"
               : !(m->devices & AB_GPU) ? "method has no GPU implementation"
                                        : "check runs the CPU path; make test-gpu checks the GPU one",
               gpus == 0 && gpu_why[0] ? " (" : "", gpus == 0 ? gpu_why : "",
               gpus == 0 && gpu_why[0] ? ")" : "");
    }
    printf("\n%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
