/* pset.h — a set of points by key: an insertion-ordered array plus an
 * open-addressing (linear probing) index on the key, FNV-1a hashed. */
#ifndef AB_STORE_PSET_H
#define AB_STORE_PSET_H

#include <stddef.h>

#include "harness/store/point.h"

typedef struct ab_pset {
    ab_point *v; /* the points, in order of first insertion */
    size_t n, cap;
    size_t *slot; /* index + 1; 0 = empty */
    size_t nslot; /* power of two */
} ab_pset;        /* zero-initialised = empty */

/* Index of the point with this key in s->v, or SIZE_MAX. */
size_t ab_pset_find(const ab_pset *s, const char *key);
/* Make room for `extra` more points, so that the ab_pset_put of as many
 * new keys that follow cannot fail. 0, or -1 out of memory. */
int ab_pset_reserve(ab_pset *s, size_t extra);
/* Insert, or replace (the later point wins, keeping the first one's
 * position). 0, or -1 out of memory. */
int ab_pset_put(ab_pset *s, const ab_point *p);
void ab_pset_free(ab_pset *s);
#endif
