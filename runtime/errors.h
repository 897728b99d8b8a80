/* errors.h — the one-line error format of the attnbench binary
 * ("attnbench: " + message, to stderr), used by every layer above the
 * plugins. Plugins report errors through ab_set_error (include/attnbench.h). */
#ifndef AB_RUNTIME_ERRORS_H
#define AB_RUNTIME_ERRORS_H

/* Print "attnbench: " + message + newline to stderr. */
void ab_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
