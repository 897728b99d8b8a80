/* timing.h — monotonic clock and the summary statistics of repeated timings
 * (median, min, p10, p90, coefficient of variation), STREAM/Google
 * Benchmark style: every raw sample is kept by the caller. */
#ifndef AB_TIMING_H
#define AB_TIMING_H

typedef struct ab_stats {
    double median, min, max, p10, p90, mean, cv;
    int n;
} ab_stats;

#include <stdint.h>

double ab_now_ms(void);
/* Quantiles by linear interpolation between order statistics. */
void ab_stats_compute(const double *x, int n, ab_stats *s);
/* Median of x[0..n) (NaN when n = 0); x is not modified. */
double ab_median(const double *x, int n);

/* Percentile interval (level, e.g. 0.95) of the median of x by a
 * hierarchical bootstrap: each of `reps` resamples draws the groups (the
 * rounds, i.e. child processes) with replacement, then samples with
 * replacement inside each drawn group, and takes the pooled median. So the
 * interval covers the spread between processes and over time, not only
 * within one process. group[i] in [0, 64). Deterministic for a seed. With
 * one group it is the plain bootstrap of the median. NaN when n = 0. */
void ab_median_ci(const double *x, const int *group, int n, double level, int reps, uint64_t seed, double *lo,
                  double *hi);

/* CPU time of the whole machine (from /proc/stat) and of this process
 * (getrusage, all threads), in seconds, to tell how much of the machine
 * other processes and the hypervisor took while we measured. */
typedef struct ab_cpuload {
    double total_s; /* all CPUs, every state */
    double busy_s;  /* all CPUs: user nice system irq softirq */
    double steal_s; /* all CPUs: stolen by the hypervisor */
    double self_s;  /* this process: user + system */
    int ok;         /* /proc/stat was readable */
} ab_cpuload;
void ab_cpuload_read(ab_cpuload *c);
/* Between a and b: seconds other processes ran (busy minus ours, >= 0),
 * seconds stolen, and the machine's total CPU seconds. 0 when unknown. */
void ab_cpuload_diff(const ab_cpuload *a, const ab_cpuload *b, double *foreign_s, double *steal_s,
                     double *total_s);
/* The 1-minute load average, NaN when unknown. */
double ab_loadavg1(void);
/* A machine-speed index: fp32 FMA GFLOP/s of the calling thread on a
 * register-resident loop for about `ms` milliseconds (independent chains on
 * the widest ISA). On a VM whose host changes the clock between runs,
 * latencies move with it while this index tells by how much. */
double ab_fma_probe(double ms);
/* The same probe on `threads` OpenMP threads at once; returns the slowest
 * thread's GFLOP/s. On a VM whose host sometimes runs two vCPUs on the two
 * hardware threads of one core, each thread then gets about half of the
 * 1-thread rate: that is how a timing round sees that its threads shared
 * a core (docs/timing.md). */
double ab_fma_probe_team(int threads, double ms);
#endif
