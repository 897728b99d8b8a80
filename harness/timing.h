/* timing.h — monotonic clock and the summary statistics of repeated timings
 * (median, min, p10, p90, coefficient of variation), STREAM/Google
 * Benchmark style: every raw sample is kept by the caller. */
#ifndef AB_TIMING_H
#define AB_TIMING_H

typedef struct ab_stats {
    double median, min, max, p10, p90, mean, cv;
    int n;
} ab_stats;

double ab_now_ms(void);
/* Quantiles by linear interpolation between order statistics. */
void ab_stats_compute(const double *x, int n, ab_stats *s);
#endif
