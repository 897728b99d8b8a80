/* pset.c — a set of points by key (pset.h). The index is kept at most half
 * full, so probe sequences stay short. */
#include "harness/store/pset.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a, 64 bit, over the key (at most the key field's size). */
static uint64_t key_hash(const char *k)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(((ab_point *)0)->key) && k[i]; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return h;
}

size_t ab_pset_find(const ab_pset *s, const char *key)
{
    if (!s->nslot) return SIZE_MAX;
    size_t mask = s->nslot - 1;
    for (size_t h = (size_t)key_hash(key) & mask; s->slot[h]; h = (h + 1) & mask) {
        const ab_point *p = &s->v[s->slot[h] - 1];
        if (strncmp(p->key, key, sizeof p->key) == 0) return s->slot[h] - 1;
    }
    return SIZE_MAX;
}

static int pset_rehash(ab_pset *s, size_t nslot)
{
    size_t *slot = calloc(nslot, sizeof *slot);
    if (!slot) return -1;
    for (size_t i = 0; i < s->n; i++) {
        size_t h = (size_t)key_hash(s->v[i].key) & (nslot - 1);
        while (slot[h]) h = (h + 1) & (nslot - 1);
        slot[h] = i + 1;
    }
    free(s->slot);
    s->slot = slot;
    s->nslot = nslot;
    return 0;
}

int ab_pset_reserve(ab_pset *s, size_t extra)
{
    if (extra > SIZE_MAX / 4 - s->n) return -1;
    size_t need = s->n + extra;
    if (need > s->cap) {
        size_t cap = s->cap ? s->cap : 64;
        while (cap < need) cap *= 2;
        if (cap > SIZE_MAX / sizeof(ab_point)) return -1;
        ab_point *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    if (need * 2 > s->nslot) {
        size_t nslot = s->nslot ? s->nslot : 128;
        while (need * 2 > nslot) nslot *= 2;
        if (pset_rehash(s, nslot) < 0) return -1;
    }
    return 0;
}

int ab_pset_put(ab_pset *s, const ab_point *p)
{
    size_t i = ab_pset_find(s, p->key);
    if (i != SIZE_MAX) {
        s->v[i] = *p;
        return 0;
    }
    if (ab_pset_reserve(s, 1) < 0) return -1;
    s->v[s->n] = *p;
    size_t mask = s->nslot - 1;
    size_t h = (size_t)key_hash(p->key) & mask;
    while (s->slot[h]) h = (h + 1) & mask;
    s->slot[h] = ++s->n;
    return 0;
}

void ab_pset_free(ab_pset *s)
{
    free(s->v);
    free(s->slot);
    memset(s, 0, sizeof *s);
}
