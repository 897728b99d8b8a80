/* atomic.c — durable whole-file replacement (atomic.h). */
#include "harness/store/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/store/fdio.h"
#include "runtime/errors.h"

int ab_fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (!dir) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc < 0 && e != EINVAL && e != EROFS) {
        errno = e;
        return -1;
    }
    return 0;
}

int ab_write_atomic(const char *path, const char *tmp, const void *buf, size_t len, char *err, size_t errlen)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ab_fail(err, errlen, -1, "cannot create %s: %s", tmp, strerror(errno));
    if (ab_pwrite_all(fd, buf, len, 0) < 0 || fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return ab_fail(err, errlen, -1, "cannot write %s: %s", tmp, strerror(e));
    }
    if (close(fd) < 0) {
        int e = errno;
        unlink(tmp);
        return ab_fail(err, errlen, -1, "cannot write %s: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return ab_fail(err, errlen, -1, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    if (ab_fsync_dir(path) < 0)
        return ab_fail(err, errlen, -1, "cannot sync the directory of %s: %s", path, strerror(errno));
    return 0;
}
