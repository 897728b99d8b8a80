/* fdio.h — whole reads and writes on a file descriptor: short transfers and
 * EINTR are retried, so a caller sees all of it, end of file or an errno. */
#ifndef AB_STORE_FDIO_H
#define AB_STORE_FDIO_H

#include <stddef.h>
#include <sys/types.h>

/* Write all len bytes at offset off (pwrite): 0, or -1 with errno (ENOSPC
 * when the file system takes nothing). */
int ab_pwrite_all(int fd, const void *buf, size_t len, off_t off);
/* Read up to len bytes: the count (short only at end of file), or -1 with
 * errno. */
ssize_t ab_read_full(int fd, void *buf, size_t len);
#endif
