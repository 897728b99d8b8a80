/* sysinfo.h — capture the run environment (machine, libraries, compiler,
 * commit, config, command line) into the root attributes of a results file. */
#ifndef AB_SYSINFO_H
#define AB_SYSINFO_H
#include "harness/store/point.h"
#include "harness/engine/config.h"

void ab_env_capture(ab_env *e, const ab_config *c, int argc, char **argv, int threads);
/* Threads the sweep uses when the config says 0: online cores. */
int ab_default_threads(void);
/* STREAM triad bandwidth in GB/s at `threads` threads over 3 arrays of mib
 * MiB (sysinfo.c); recorded as stream_triad_gbs when the sweep decodes or
 * [timing] measure_bandwidth = 1. */
double ab_stream_triad_gbs(int threads, int mib);
/* How the sweep binds threads (harness/engine/measure.c), for the results file. */
const char *ab_binding_mode(void);
/* How the timing children allocate (measure.c, ab_malloc_keep). */
const char *ab_malloc_mode(void);
#endif
