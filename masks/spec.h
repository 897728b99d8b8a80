/* spec.h — number parsing shared by the mask plugins (internal). */
#ifndef AB_MASKS_SPEC_H
#define AB_MASKS_SPEC_H

#include <errno.h>
#include <stdlib.h>

/* A whole-string integer in [lo, hi]; 0 on success. */
static inline int ab_spec_int(const char *s, long long lo, long long hi, long long *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* A whole-string finite double; 0 on success. */
static inline int ab_spec_double(const char *s, double *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v == v) || v > 1e300 || v < -1e300) return -1;
    *out = v;
    return 0;
}

#endif
