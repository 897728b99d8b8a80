/* report.h — DIR/index.html: the static results page `attnbench plot` writes
 * after the figures (report.c). */
#ifndef AB_REPORT_H
#define AB_REPORT_H

#include <stddef.h>

/* Write DIR/index.html for the results file `path`, whose export (TSV) and
 * figures are already in DIR. gallery_note says what became of the mask
 * gallery. 0 on success, -1 with a one-line message. */
int ab_report_write(const char *path, const char *dir, const char *gallery_note, char *err,
                    size_t errlen);
#endif
