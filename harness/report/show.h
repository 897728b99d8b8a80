/* show.h — the summary table of `attnbench show` (show.c); the command line
 * is harness/cli/show.c. */
#ifndef AB_SHOW_H
#define AB_SHOW_H

enum { AB_SHOW_TEXT, AB_SHOW_TSV, AB_SHOW_MD };

typedef struct ab_show_opts {
    const char *path;   /* the results file */
    const char *sort;   /* a column name, "-NAME" descending; NULL: group order */
    const char *filter; /* key=value[,key=value...]; NULL: every point */
    int format;         /* AB_SHOW_TEXT, AB_SHOW_TSV or AB_SHOW_MD */
} ab_show_opts;

/* Print the run's environment and the table to stdout. 0, or 2 after an
 * error message (unknown --sort column or --filter key, unreadable file). */
int ab_show(const ab_show_opts *o);
#endif
