/* journal.h — the results store's journal (store.c): each point is
 * appended as one checksummed record and fdatasync'd before anything else
 * happens, so it survives a SIGKILL once ab_journal_append returned.
 *
 * Format (native byte order; a journal never leaves the machine):
 *   header  "ABJRNL01" | u32 sizeof(ab_point) | u32 AB_SCHEMA_VERSION
 *   record  u32 AB_JREC_MAGIC | u32 length | ab_point bytes | u32 CRC32
 * A reader stops silently at the first short or corrupt record (the torn
 * tail of a SIGKILL), so a record counts whole or not at all.
 */
#ifndef AB_STORE_JOURNAL_H
#define AB_STORE_JOURNAL_H

#include <stddef.h>
#include <sys/types.h>

#include "harness/store/crc32.h"
#include "harness/store/point.h"

typedef struct ab_journal {
    int fd;             /* open for appending; -1: none */
    off_t off;          /* end of the last complete record */
    int broken;         /* a failed append could not be rolled back */
    unsigned char *rec; /* one record's buffer */
    ab_crc32_table crc;
} ab_journal;

/* No file yet (fd -1), the record buffer and the CRC table: 0, or -1 out
 * of memory. */
int ab_journal_init(ab_journal *j);
/* Close the file (if open) and free the buffer. */
void ab_journal_free(ab_journal *j);
/* Create a journal file holding only the header: its fd (for
 * ab_journal_attach), or -1 with a one-line message (path is removed). */
int ab_journal_create(const char *path, char *err, size_t errlen);
/* Append to fd, a journal just created: records start after the header. */
void ab_journal_attach(ab_journal *j, int fd);
/* Where the next record's point goes: fill it, then ab_journal_append. */
ab_point *ab_journal_slot(ab_journal *j);
/* Append the slot's point as one record (one write, then fdatasync). On
 * failure the partial record is cut off again (if that fails too the
 * journal is broken) and -1 comes back with a one-line message. */
int ab_journal_append(ab_journal *j, const char *path, char *err, size_t errlen);
/* Cut the journal back to its header (its points are safe elsewhere); a
 * broken journal or a failed truncate is left as it is. */
void ab_journal_restart(ab_journal *j);
/* Close the file (the buffer stays until ab_journal_free). */
void ab_journal_close(ab_journal *j);

/* Read the complete records of the journal at path, passing each point to
 * take (which returns < 0 when out of memory). A missing journal is fine
 * (*found = 0); a torn tail ends the read silently. 0, or -1 with a
 * one-line message (unreadable, not a journal, another build's points or
 * schema). */
int ab_journal_load(const char *path, int (*take)(void *ctx, ab_point *p), void *ctx, int *found, char *err,
                    size_t errlen);
#endif
