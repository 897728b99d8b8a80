/* handle.c — the error header in front of every pointer a plugin entry point
 * gets (runtime/handle.h) and ab_set_error, the one error API of the ABI. */
#include "runtime/handle.h"
#include "attnbench.h"

#include <stdarg.h>
#include <stdio.h>

#define AB_HANDLE_MAGIC 0x61626872u /* "abhr" */

void ab_handle_open(ab_handle *h)
{
    h->msg[0] = 0;
    h->magic = AB_HANDLE_MAGIC;
}

void ab_handle_close(ab_handle *h) { h->magic = 0; }

int ab_handle_checked(ab_handle *h, int rc, const char *what)
{
    if (rc > AB_OK || rc < AB_EINTERNAL) {
        snprintf(h->msg, sizeof h->msg, "%s returned %d, not an AB_E* code", what, rc);
        return AB_EINTERNAL;
    }
    return rc;
}

void ab_set_error(const void *handle, const char *fmt, ...)
{
    if (!handle) return;
    ab_handle *h = ab_handle_of(handle);
    va_list ap;
    va_start(ap, fmt);
    if (h->magic == AB_HANDLE_MAGIC) {
        vsnprintf(h->msg, sizeof h->msg, fmt, ap);
    } else { /* not the first pointer of a running entry point: say it anyway */
        fputs("attnbench: ab_set_error on a pointer that is no plugin handle: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
}
