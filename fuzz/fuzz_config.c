/* fuzz_config.c — libFuzzer target for the INI config parser and validator
 * (harness/engine/config.c: ab_config_load + ab_config_check). The input bytes are
 * the config file; it is handed over through a memfd so no disk I/O happens.
 * Any crash, sanitizer report or leak is a bug: every malformed config must
 * end in a one-line error. Build and run: make fuzz (mk/fuzz.mk). */
#include "harness/engine/config.h"
#include "runtime/registry.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        ab_registry_init();
        init = 1;
    }
    int fd = memfd_create("ab_fuzz_config", MFD_CLOEXEC);
    if (fd < 0) return 0;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ab_config *c = malloc(sizeof *c);
    if (c) {
        char err[1024];
        if (ab_config_load(c, path, err, sizeof err) == 0) ab_config_check(c, err, sizeof err);
        ab_config_free(c);
        free(c);
    }
    close(fd);
    return 0;
}
