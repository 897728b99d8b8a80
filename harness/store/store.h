/* store.h — results storage: the HDF5 file of the README ("Results file"), made crash-safe.
 *
 * HDF5 1.10 is not crash-safe (a SIGKILL mid-write can leave a file that
 * does not open), so the HDF5 file is never modified in place:
 *   - every completed point is appended to OUT.h5.journal (a checksummed
 *     binary record, fsync'd) before anything else happens;
 *   - OUT.h5 is rewritten as a whole into OUT.h5.tmp and atomically renamed
 *     over OUT.h5 (at open, at most once per second while points arrive,
 *     and at close); after a successful final write the journal is removed.
 * So OUT.h5 always opens, and a point is lost only if its journal record was
 * not completely written. Readers (show, export, resume) merge OUT.h5 with a
 * leftover journal, so nothing completed is ever missing.
 */
#ifndef AB_STORE_H
#define AB_STORE_H

#include <stddef.h>
#include "harness/store/point.h"

typedef struct ab_store ab_store;

/* Open OUT for writing. resume = 0: any existing OUT (and journal) is
 * replaced once the first rewrite happens. resume = 1: existing points of
 * OUT and its journal are loaded (a malformed OUT is an error, nothing is
 * touched). env is copied and written as root attributes. */
int ab_store_open(const char *path, const ab_env *env, int resume, ab_store **out, char *err, size_t errlen);
/* 1 if a point with this key and a final status is stored. */
int ab_store_has(const ab_store *st, const char *key);
/* The stored point with this key (loaded on resume or appended since
 * open), or NULL. Valid until the next append or close. */
const ab_point *ab_store_get(const ab_store *st, const char *key);
/* Journal the point (fsync), then rewrite OUT if >= 1 s since the last. */
int ab_store_append(ab_store *st, const ab_point *p, char *err, size_t errlen);
/* Final rewrite, remove the journal, free. Safe with st == NULL. */
int ab_store_close(ab_store *st, char *err, size_t errlen);
/* Stop without a final rewrite (child processes after fork, tests). */
void ab_store_abandon(ab_store *st);
size_t ab_store_count(const ab_store *st);

/* Read every point of a results file (plus its leftover journal, if any),
 * ordered as written. Errors (missing file, not HDF5, not an attnbench file,
 * newer/older schema) return -1 with a one-line message. */
int ab_results_read(const char *path, ab_point **pts, size_t *n, ab_env *env, char *err, size_t errlen);

/* Write a complete results file in one go (for `attnbench merge`): the
 * points in order (keys must be unique; a repeated key keeps the last row),
 * env as root attributes and, when nshards > 0, /shards/shard_I holding
 * shards[I] as attributes. Atomic like the store (PATH.tmp, fsync, rename);
 * a leftover PATH.journal is removed. 0, or -1 with a one-line message. */
int ab_results_write(const char *path, const ab_point *pts, size_t n, const ab_env *env, const ab_env *shards,
                     int nshards, char *err, size_t errlen);
#endif
