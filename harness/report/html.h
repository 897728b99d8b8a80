/* html.h — DIR/index.html: the static results page `attnbench plot` writes
 * after the figures (html.c). */
#ifndef AB_REPORT_H
#define AB_REPORT_H

#include <stddef.h>

/* Write DIR/index.html for the results file `path`, whose export (TSV) and
 * figures are already in DIR. gallery_note says what became of the mask
 * gallery. 0 on success, -1 with a one-line message. */
int ab_report_write(const char *path, const char *dir, const char *gallery_note, char *err, size_t errlen);

/* One line of DIR/masks.txt (written by export): a base mask of the file. */
typedef struct ab_report_mask {
    char spec[128], slug[128], notok[160]; /* notok: "timeout:2,crashed:1" or "-" */
    long n_points, n_ok, seed;             /* seed: of the mask's first point */
    int max_n;                             /* its largest sequence length */
    double mask_density;                   /* allowed pairs / N^2 at max_n */
} ab_report_mask;
#define AB_REPORT_MAX_MASKS 64

/* Read DIR/masks.txt into m[0..return), figure order (the first is the
 * primary mask); 0 when the file is absent or empty. */
int ab_report_read_masks(const char *dir, ab_report_mask *m, int cap);
#endif
