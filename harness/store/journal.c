/* journal.c — the results store's journal of points (journal.h). */
#include "harness/store/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/store/fdio.h"
#include "runtime/errors.h"

#define AB_JOURNAL_MAGIC "ABJRNL01"
#define AB_JREC_MAGIC    0x52504241u /* "ABPR" little-endian */

typedef struct jheader {
    char magic[8];
    uint32_t point_size;
    uint32_t schema;
} jheader;

#define REC_HDR (2 * sizeof(uint32_t))                          /* magic, length */
#define REC_LEN (REC_HDR + sizeof(ab_point) + sizeof(uint32_t)) /* + point, CRC */

int ab_journal_init(ab_journal *j)
{
    memset(j, 0, sizeof *j);
    j->fd = -1;
    ab_crc32_init(&j->crc);
    return (j->rec = malloc(REC_LEN)) ? 0 : -1;
}

void ab_journal_free(ab_journal *j)
{
    ab_journal_close(j);
    free(j->rec);
    j->rec = NULL;
}

int ab_journal_create(const char *path, char *err, size_t errlen)
{
    jheader h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, AB_JOURNAL_MAGIC, sizeof h.magic);
    h.point_size = (uint32_t)sizeof(ab_point);
    h.schema = AB_SCHEMA_VERSION;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ab_fail(err, errlen, -1, "cannot create %s: %s", path, strerror(errno));
    if (ab_pwrite_all(fd, &h, sizeof h, 0) < 0 || fdatasync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return ab_fail(err, errlen, -1, "cannot write %s: %s", path, strerror(e));
    }
    return fd;
}

void ab_journal_attach(ab_journal *j, int fd)
{
    j->fd = fd;
    j->off = (off_t)sizeof(jheader);
}

ab_point *ab_journal_slot(ab_journal *j) { return (ab_point *)(void *)(j->rec + REC_HDR); }

int ab_journal_append(ab_journal *j, const char *path, char *err, size_t errlen)
{
    const uint32_t hdr[2] = { AB_JREC_MAGIC, (uint32_t)sizeof(ab_point) };
    memcpy(j->rec, hdr, sizeof hdr);
    uint32_t crc = ab_crc32(&j->crc, ab_journal_slot(j), sizeof(ab_point));
    memcpy(j->rec + REC_HDR + sizeof(ab_point), &crc, sizeof crc);
    if (ab_pwrite_all(j->fd, j->rec, REC_LEN, j->off) < 0 || fdatasync(j->fd) < 0) {
        int e = errno;
        /* drop the partial record, or later records would be unreadable */
        if (ftruncate(j->fd, j->off) < 0) j->broken = 1;
        return ab_fail(err, errlen, -1, "cannot write %s: %s", path, strerror(e));
    }
    j->off += (off_t)REC_LEN;
    return 0;
}

void ab_journal_restart(ab_journal *j)
{
    if (j->fd >= 0 && !j->broken && ftruncate(j->fd, (off_t)sizeof(jheader)) == 0) {
        j->off = (off_t)sizeof(jheader);
        fdatasync(j->fd);
    }
}

void ab_journal_close(ab_journal *j)
{
    if (j->fd >= 0) close(j->fd);
    j->fd = -1;
}

/* The header of an open journal: 1 valid, 0 torn while being created
 * (an empty journal), -1 with a message. */
static int read_header(int fd, const char *path, char *err, size_t errlen)
{
    jheader h;
    ssize_t got = ab_read_full(fd, &h, sizeof h);
    if (got < 0) return ab_fail(err, errlen, -1, "cannot read %s: %s", path, strerror(errno));
    if ((size_t)got < sizeof h) return 0;
    if (memcmp(h.magic, AB_JOURNAL_MAGIC, sizeof h.magic) != 0)
        return ab_fail(err, errlen, -1, "%s is not an attnbench journal", path);
    if (h.point_size != sizeof(ab_point))
        return ab_fail(err, errlen, -1,
                       "%s was written by an attnbench build with %u-byte points, "
                       "this build uses %zu: read it with that build or remove it",
                       path, h.point_size, sizeof(ab_point));
    if (h.schema != AB_SCHEMA_VERSION)
        return ab_fail(err, errlen, -1, "%s has schema version %u, this attnbench reads %d", path, h.schema,
                       AB_SCHEMA_VERSION);
    return 1;
}

int ab_journal_load(const char *path, int (*take)(void *ctx, ab_point *p), void *ctx, int *found, char *err,
                    size_t errlen)
{
    int rc = -1;
    ab_point *p = NULL;
    ab_crc32_table ct;
    *found = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        return ab_fail(err, errlen, -1, "cannot open %s: %s", path, strerror(errno));
    }
    *found = 1;
    int hv = read_header(fd, path, err, errlen);
    if (hv <= 0) {
        rc = hv;
        goto cleanup;
    }
    if (!(p = malloc(sizeof *p))) {
        ab_fail(err, errlen, -1, "cannot read %s: out of memory", path);
        goto cleanup;
    }
    ab_crc32_init(&ct);
    for (;;) {
        uint32_t rh[2], crc;
        ssize_t got = ab_read_full(fd, rh, sizeof rh);
        if (got < 0) {
            ab_fail(err, errlen, -1, "cannot read %s: %s", path, strerror(errno));
            goto cleanup;
        }
        if ((size_t)got < sizeof rh || rh[0] != AB_JREC_MAGIC || rh[1] != sizeof *p) break;
        if (ab_read_full(fd, p, sizeof *p) != (ssize_t)sizeof *p ||
            ab_read_full(fd, &crc, sizeof crc) != (ssize_t)sizeof crc || crc != ab_crc32(&ct, p, sizeof *p))
            break;
        if (take(ctx, p) < 0) {
            ab_fail(err, errlen, -1, "cannot read %s: out of memory", path);
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    free(p);
    close(fd);
    return rc;
}
