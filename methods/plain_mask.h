/* plain_mask.h — the base-mask rule of the methods that pool or sum keys
 * across any boundary a mask draws (cca's core tokens, combiner's region
 * summaries, the prefix sums of performer, scatterbrain and lawcat_proxy):
 * they run under the plain causal mask (and the full one where they allow
 * it) and decline every other base mask with AB_EUNSUPPORTED and a message
 * naming the mask and why, recorded as "unsupported" rather than a wrong
 * result. Header-only (static inline); registers nothing. */
#ifndef AB_METHODS_PLAIN_MASK_H
#define AB_METHODS_PLAIN_MASK_H

#include "attnbench.h"

#include <string.h>

/* AB_OK under "causal" (and "full" when allow_full), else AB_EUNSUPPORTED
 * with "METHOD: base mask 'SPEC' is not supported (WHY); only causal[ and
 * full]" set on state. */
static inline int mc_plain_mask_only(void *state, const ab_shape *s, int allow_full, const char *method,
                                     const char *why)
{
    const ab_mask m = ab_shape_mask(s);
    if (!strcmp(m.def->name, "causal") || (allow_full && !strcmp(m.def->name, "full"))) return AB_OK;
    ab_set_error(state, "%s: base mask '%s' is not supported (%s); only causal%s", method, m.spec, why,
                 allow_full ? " and full" : "");
    return AB_EUNSUPPORTED;
}

#endif
