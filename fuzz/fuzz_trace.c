/* fuzz_trace.c — libFuzzer target for the trace reader
 * (datasets/gen/trace.c: ab_trace_meta_read, ab_trace_check,
 * ab_trace_load, what `attnbench trace-info` and the trace task call). The
 * input describes a trace file (fuzz/trace_case.h), which is written as
 * well-formed HDF5 and read back: every call must return, with a one-line
 * error naming the file or finite values. Build and run: make fuzz
 * (mk/fuzz.mk). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz/trace_case.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[96];
    if (!path[0]) {
        char dir[64];
        snprintf(dir, sizeof dir, "/dev/shm/ab_fuzz_trace_%d", (int)getpid());
        if (mkdir(dir, 0700) && access(dir, W_OK)) snprintf(dir, sizeof dir, "/tmp");
        snprintf(path, sizeof path, "%s/t.h5", dir);
    }
    char why[800];
    if (fuzz_trace_case(data, size, path, why, sizeof why)) {
        fprintf(stderr, "fuzz_trace: %s\n", why);
        abort();
    }
    return 0;
}
