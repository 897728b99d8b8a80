/* timing.c — CLOCK_MONOTONIC wall time and summary statistics of samples. */
#include "harness/timing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double ab_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(const double *sorted, int n, double q)
{
    double pos = q * (n - 1);
    int i = (int)floor(pos);
    if (i >= n - 1) return sorted[n - 1];
    double f = pos - i;
    return sorted[i] * (1 - f) + sorted[i + 1] * f;
}

void ab_stats_compute(const double *x, int n, ab_stats *s)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    if (n <= 0) {
        s->median = s->min = s->max = s->p10 = s->p90 = s->mean = s->cv = NAN;
        return;
    }
    double *t = malloc(sizeof(double) * (size_t)n);
    if (!t) { s->median = NAN; return; }
    memcpy(t, x, sizeof(double) * (size_t)n);
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++) sum += t[i];
    s->mean = sum / n;
    for (int i = 0; i < n; i++) sq += (t[i] - s->mean) * (t[i] - s->mean);
    s->cv = n > 1 && s->mean > 0 ? sqrt(sq / (n - 1)) / s->mean : 0;
    s->min = t[0];
    s->max = t[n - 1];
    s->median = quantile(t, n, 0.5);
    s->p10 = quantile(t, n, 0.1);
    s->p90 = quantile(t, n, 0.9);
    free(t);
}
