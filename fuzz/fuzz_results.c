/* fuzz_results.c — libFuzzer target for the results loaders
 * (harness/store/store.c: ab_results_read over an HDF5 results file and its
 * crash journal). The first input byte chooses what the rest is:
 *   even: the bytes of OUT.h5 (HDF5 image; the reader's own checks and
 *         then libhdf5's parser),
 *   odd:  the bytes of OUT.h5.journal with no OUT.h5 (the journal parser:
 *         header, checksummed records, torn tails).
 * Every input must end in success or a one-line error, never a crash or a
 * leak. Build and run: make fuzz (mk/fuzz.mk). */
#include "harness/store/point.h"
#include "harness/store/store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put(const char *path, const uint8_t *d, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(d, 1, n, f) != n) abort();
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[64];
    static char h5[96], jr[112];
    if (!dir[0]) {
        /* /dev/shm: the per-input files never touch a disk */
        snprintf(dir, sizeof dir, "/dev/shm/ab_fuzz_results_%d", (int)getpid());
        if (mkdir(dir, 0700) && access(dir, W_OK)) snprintf(dir, sizeof dir, "/tmp");
        snprintf(h5, sizeof h5, "%s/r.h5", dir);
        snprintf(jr, sizeof jr, "%s/r.h5.journal", dir);
    }
    if (size < 1) return 0;
    unlink(h5);
    unlink(jr);
    if (data[0] & 1)
        put(jr, data + 1, size - 1);
    else
        put(h5, data + 1, size - 1);
    ab_point *p = NULL;
    size_t n = 0;
    ab_env env;
    memset(&env, 0, sizeof env);
    char err[512];
    if (ab_results_read(h5, &p, &n, &env, err, sizeof err) == 0) {
        /* touch every string: they must be NUL-terminated */
        size_t t = 0;
        for (size_t i = 0; i < n; i++) t += strlen(p[i].key) + strlen(p[i].status) + strlen(p[i].message);
        for (int i = 0; i < env.n; i++) t += strlen(env.name[i]) + (env.value[i] ? strlen(env.value[i]) : 0);
        if (t == (size_t)-1) abort();
    }
    free(p);
    ab_env_free(&env);
    return 0;
}
