/* atomic.h — durable whole-file replacement: write a temporary file, fsync
 * it, rename it over the target and fsync the directory, so the target is
 * always either the old or the new content, never a torn mix. */
#ifndef AB_STORE_ATOMIC_H
#define AB_STORE_ATOMIC_H

#include <stddef.h>

/* Write buf to tmp, fsync, rename over path, fsync the directory. On any
 * failure tmp is removed and path is untouched (except a failed directory
 * sync, after which path already holds the new content). 0, or -1 with a
 * one-line message in err. */
int ab_write_atomic(const char *path, const char *tmp, const void *buf, size_t len, char *err, size_t errlen);
/* fsync the directory holding path, so a rename/create/unlink is durable.
 * File systems that cannot fsync a directory (EINVAL, EROFS) are accepted.
 * 0, or -1 with errno. */
int ab_fsync_dir(const char *path);
#endif
