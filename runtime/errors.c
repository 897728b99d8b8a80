/* errors.c — the one-line error format every subcommand uses, and one-line
 * messages into a caller's buffer (errors.h). */
#include "runtime/errors.h"

#include <stdarg.h>
#include <stdio.h>

void ab_errorf(const char *fmt, ...)
{
    va_list ap;
    fputs("attnbench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int ab_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        for (char *c = err; *c; c++) /* one line, always */
            if (*c == '\n' || *c == '\r') *c = ' ';
    }
    return rc;
}
