/* export.h — the results file as TSV, what `attnbench export` writes and
 * `attnbench plot` draws (export.c); the command line is
 * harness/cli/export.c. */
#ifndef AB_EXPORT_H
#define AB_EXPORT_H

#include <stddef.h>

typedef struct ab_export_opts {
    const char *path; /* the results file */
    const char *dir;  /* the output directory (created with its parents) */
} ab_export_opts;

/* Write every export file into o->dir. 0, or 2 with a one-line message in
 * err (unreadable results file, a file that cannot be written). */
int ab_export(const ab_export_opts *o, char *err, size_t errlen);

/* The text after `tag` ("# skip: ", "# note: ") in the header comment of an
 * export file at path, at most 300 bytes; "" when none or no file. */
void ab_export_header(const char *path, const char *tag, char *out, size_t len);
#endif
