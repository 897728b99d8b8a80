/* compare.h — latency and speedup ratios B/A of two results files
 * (compare.c); the command line is harness/cli/compare.c. */
#ifndef AB_COMPARE_H
#define AB_COMPARE_H

typedef struct ab_compare_opts {
    const char *files[2]; /* A, B */
    const char *tsv;      /* one row per matched point into this file; NULL: none */
    const char *metric;   /* what fail_above tests: "speedup", "latency" or "both" */
    double fail_above;    /* the gate on the median |log ratio|; NaN: none */
    double noise;         /* a smaller |log ratio| is never 'changed' */
    int all;              /* list every matched point, not only the changed */
    int quiet;            /* the summary only */
} ab_compare_opts;

/* Print the comparison. 0 compared (and under the gate), 1 the gate failed,
 * 2 after an error message (unreadable file, no timed point in common). */
int ab_compare(const ab_compare_opts *o);
#endif
