/* merge.h — join results files by point key (merge.c; `attnbench merge`). */
#ifndef AB_STORE_MERGE_H
#define AB_STORE_MERGE_H

#include <stddef.h>

typedef struct ab_merge_stats {
    size_t read;      /* points read from all inputs */
    size_t unique;    /* points written */
    size_t dups;      /* identical rows seen again */
    size_t conflicts; /* differing rows seen again (each reported on stderr; the first kept) */
} ab_merge_stats;

/* Merge the nin results files in[] into out (replaced atomically). Each
 * conflict and each environment mismatch (config, commit, schema; not with
 * quiet) is one line on stderr. Returns 0 (see st->conflicts), or -1 with
 * err when an input cannot be read or out cannot be written (then out is
 * left as it was). */
int ab_results_merge(const char *const *in, int nin, const char *out, int quiet, ab_merge_stats *st,
                     char *err, size_t errlen);
#endif
