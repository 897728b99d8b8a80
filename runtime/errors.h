/* errors.h — the one-line error format of the attnbench binary
 * ("attnbench: " + message, to stderr), used by every layer above the
 * plugins. Plugins report errors through ab_set_error (include/attnbench.h). */
#ifndef AB_RUNTIME_ERRORS_H
#define AB_RUNTIME_ERRORS_H

#include <stddef.h>

/* Print "attnbench: " + message + newline to stderr. */
void ab_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Format a one-line message (line breaks become spaces) into err, when err
 * and errlen are set, and return rc: `return ab_fail(err, errlen, -1, ...)`. */
int ab_fail(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
#endif
