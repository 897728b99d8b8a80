/* errors.c — the one-line error format every subcommand uses (errors.h). */
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
