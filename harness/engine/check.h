/* check.h — `attnbench check`: the per-method conformance check (layout
 * validity, exact density, agreement with the layout-restricted fp64
 * reference, knob effect) under every base mask, callable on any
 * ab_method, registered or not. */
#ifndef AB_CHECK_H
#define AB_CHECK_H

#include <stddef.h>
#include "attnbench.h"

#define AB_CHECK_TOL 1e-5 /* relative L2 error allowed against the reference */

#define AB_CHECK_MAX_MASKS 32 /* base masks one check covers */

typedef struct ab_check_result {
    int configs;                 /* (mask, N, d, block, knob) configurations run */
    int unsupported;             /* configurations the method declined (AB_EUNSUPPORTED) */
    int masks;                   /* base masks checked (bound at some length) */
    int mask_skips;              /* (mask, N, d) cases the mask spec cannot be bound at
                          (e.g. document:3 at N = 1): not run */
    char masks_unsupported[160]; /* masks under which every configuration
                                    was declined, e.g. "document:3, sliding:37" */
    double worst_err;            /* worst relative L2 error vs the restricted reference */
    double dens_lo, dens_hi;     /* density at the knob's low / high end (N = 512, causal) */
    int inversions;              /* knob sweep steps where density moved the wrong way
                          (-1: the knob did not move density at all) */
    char layouts[64];            /* layout kinds seen, e.g. "block,mixed" */
} ab_check_result;

enum { AB_CHECK_PASS = 0, AB_CHECK_FAIL = 1, AB_CHECK_SKIP = 2 };

/* Run the check of one method on the CPU under the default base masks
 * (ab_check_mask_specs). quick: the small grid and masks (what `make test`
 * runs). Returns AB_CHECK_PASS, AB_CHECK_FAIL (report holds the first
 * failure) or AB_CHECK_SKIP (not a CPU prefill method; report says why).
 * res may be NULL. Warnings (e.g. a non-monotone knob) and the masks the
 * method declined go to report on a pass. */
int ab_check_method(const ab_method *m, int quick, ab_check_result *res, char *report, size_t n);
/* The same under the base masks specs[0, nspecs) (NULL: the defaults). */
int ab_check_method_masks(const ab_method *m, int quick, const char *const *specs, int nspecs,
                          ab_check_result *res, char *report, size_t n);
/* The default mask specs: one per registered mask (quick: causal, full,
 * document:3), at most cap. Returns the count, or -1 with err set when a
 * registered mask has no spec that parses. */
int ab_check_mask_specs(int quick, char specs[][AB_MASK_SPEC], int cap, char *err, size_t errlen);
#endif
