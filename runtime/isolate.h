/* isolate.h — run a function in a forked child and read its answer back
 * through a pipe before a deadline, so that a crash, a hang or a runaway
 * allocation there cannot take the caller down (the sweep's points, the
 * HDF5 reader of the store, the GPU probe).
 *
 * The child runs fn(arg, fd): it writes its answer to fd (ab_write_all)
 * and _exit(0)s when fn returns. The parent reads the answer with
 * ab_child_read (any number of pieces, one deadline for all of them),
 * then ab_child_reap closes the pipe, SIGKILLs the child if a read ran
 * past the deadline or was stopped, and collects its status. ab_isolate
 * does all three for an answer of one known size.
 */
#ifndef AB_RUNTIME_ISOLATE_H
#define AB_RUNTIME_ISOLATE_H

#include <signal.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

typedef void (*ab_child_fn)(void *arg, int fd);

enum {
    AB_ISO_PDEATHSIG = 1,   /* the child gets SIGKILL when its parent dies */
    AB_ISO_DFL_SIGNALS = 2, /* SIGINT and SIGTERM back to their default in the child */
};

typedef struct ab_isolate_opts {
    double timeout_s;                  /* from the fork to the end of the last read */
    const volatile sig_atomic_t *stop; /* nonzero: give up and kill the child (NULL: never) */
    unsigned flags;                    /* AB_ISO_* */
} ab_isolate_opts;

/* Results of ab_child_read and ab_isolate. */
enum { AB_CHILD_ERROR = -1, AB_CHILD_TIMEOUT = -2, AB_CHILD_STOPPED = -3 };

typedef struct ab_child {
    pid_t pid;
    int fd;             /* the read end of the pipe */
    double deadline_ms; /* monotonic */
    const volatile sig_atomic_t *stop;
    int ended;          /* AB_CHILD_TIMEOUT or AB_CHILD_STOPPED once a read gave up */
    const char *failed; /* after a failed start: "pipe" or "fork" */
} ab_child;

/* Fork fn(arg, fd) into a child; the deadline starts now. 0, or -1 with
 * errno and ch->failed naming the call that failed. */
int ab_child_start(ab_child *ch, ab_child_fn fn, void *arg, const ab_isolate_opts *o);
/* Read exactly len bytes of the child's answer: 1 read, 0 the stream
 * ended first (the child exited or failed to read), AB_CHILD_TIMEOUT past
 * the deadline, AB_CHILD_STOPPED *stop was set. */
int ab_child_read(ab_child *ch, void *buf, size_t len);
/* Close the pipe, SIGKILL the child if a read gave up, wait for it:
 * wait status and resource usage (either may be NULL). */
void ab_child_reap(ab_child *ch, int *wstatus, struct rusage *ru);

/* Start fn, read len bytes into buf, reap. 1 got them, 0 no answer (see
 * *wstatus), AB_CHILD_TIMEOUT or AB_CHILD_STOPPED (the child was killed),
 * AB_CHILD_ERROR pipe or fork failed (errno). */
int ab_isolate(ab_child_fn fn, void *arg, void *buf, size_t len, const ab_isolate_opts *o, int *wstatus,
               struct rusage *ru);

/* For the child: write all of buf to fd (short writes and EINTR retried).
 * 0, or -1 (errno). */
int ab_write_all(int fd, const void *buf, size_t len);
#endif
