/* handle.h — the error header the runtime puts in front of every pointer it
 * hands a plugin entry point (runtime-internal). A method's state, the
 * ab_mask of parse() / bind() and the ab_task_input of generate() / check()
 * each live right after one, so ab_set_error(handle, ...) finds the message
 * buffer with no global state; the magic word tells a handle from any other
 * pointer. The checked wrappers (runtime/plugin.c, maskspec.c, task.c) own
 * the header and hand the message back to their callers. */
#ifndef AB_RUNTIME_HANDLE_H
#define AB_RUNTIME_HANDLE_H

#include <stddef.h>
#include <stdint.h>

#define AB_HANDLE_MSG 512

typedef struct ab_handle {
    _Alignas(max_align_t) char msg[AB_HANDLE_MSG]; /* "" until ab_set_error */
    uint32_t magic;
} ab_handle;

/* sizeof(ab_handle) is a multiple of max_align_t's alignment, so in
 * struct { ab_handle h; T x; } the member x starts right after h. */
#define AB_HANDLE_FOLLOWS(type, member) (offsetof(type, member) == sizeof(ab_handle))

/* Empty message, magic set. */
void ab_handle_open(ab_handle *h);
/* Magic cleared: a stale pointer is no longer a handle. */
void ab_handle_close(ab_handle *h);
/* The pointer a plugin gets: the first byte after the header. */
static inline void *ab_handle_ptr(ab_handle *h) { return h + 1; }
/* The header of a pointer from ab_handle_ptr. */
static inline ab_handle *ab_handle_of(const void *p) { return (ab_handle *)(uintptr_t)p - 1; }
/* rc as an AB_E* code: one outside [AB_EINTERNAL, AB_OK] becomes AB_EINTERNAL
 * with the message "<what> returned <rc>, not an AB_E* code". */
int ab_handle_checked(ab_handle *h, int rc, const char *what);
#endif
