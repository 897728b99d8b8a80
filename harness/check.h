/* check.h — `attnbench check`: the per-method conformance check (layout
 * validity, exact density, agreement with the layout-restricted fp64
 * reference, knob effect), callable on any ab_method, registered or not. */
#ifndef AB_CHECK_H
#define AB_CHECK_H

#include <stddef.h>
#include "attnbench.h"

#define AB_CHECK_TOL 1e-5 /* relative L2 error allowed against the reference */

typedef struct ab_check_result {
    int configs;       /* (N, d, causal, block, knob) configurations run */
    int unsupported;   /* configurations the method declined (AB_EUNSUPPORTED) */
    double worst_err;  /* worst relative L2 error vs the restricted reference */
    double dens_lo, dens_hi; /* density at the knob's low / high end (N = 512, causal) */
    int inversions;    /* knob sweep steps where density moved the wrong way
                          (-1: the knob did not move density at all) */
    char layouts[64];  /* layout kinds seen, e.g. "block,mixed" */
} ab_check_result;

enum { AB_CHECK_PASS = 0, AB_CHECK_FAIL = 1, AB_CHECK_SKIP = 2 };

/* Run the check of one method on the CPU. quick: the small grid (what
 * `make test` runs). Returns AB_CHECK_PASS, AB_CHECK_FAIL (report holds the
 * first failure) or AB_CHECK_SKIP (not a CPU prefill method; report says
 * why). res may be NULL. Warnings (e.g. a non-monotone knob) go to report
 * on a pass. */
int ab_check_method(const ab_method *m, int quick, ab_check_result *res, char *report, size_t n);
#endif
