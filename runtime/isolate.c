/* isolate.c — a function in a forked child, its answer through a pipe
 * before a deadline (isolate.h). */
#include "runtime/isolate.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

int ab_child_start(ab_child *ch, ab_child_fn fn, void *arg, const ab_isolate_opts *o)
{
    int fds[2];
    memset(ch, 0, sizeof *ch);
    ch->pid = -1;
    ch->fd = -1;
    ch->stop = o->stop;
    if (pipe2(fds, O_CLOEXEC)) {
        ch->failed = "pipe";
        return -1;
    }
    fflush(stdout); /* or the child's exit would print the parent's buffers again */
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        errno = e;
        ch->failed = "fork";
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        if (o->flags & AB_ISO_PDEATHSIG) prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (o->flags & AB_ISO_DFL_SIGNALS) {
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
        }
        fn(arg, fds[1]);
        _exit(0);
    }
    close(fds[1]);
    ch->pid = pid;
    ch->fd = fds[0];
    ch->deadline_ms = mono_ms() + o->timeout_s * 1e3;
    return 0;
}

int ab_child_read(ab_child *ch, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        if (ch->stop && *ch->stop) return ch->ended = AB_CHILD_STOPPED;
        double left = ch->deadline_ms - mono_ms();
        if (left <= 0) return ch->ended = AB_CHILD_TIMEOUT;
        /* short polls, so that *stop is seen within 0.2 s */
        struct pollfd pf = { ch->fd, POLLIN, 0 };
        if (poll(&pf, 1, left > 200 ? 200 : (int)left + 1) <= 0) continue;
        ssize_t r = read(ch->fd, (char *)buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        got += (size_t)r;
    }
    return 1;
}

void ab_child_reap(ab_child *ch, int *wstatus, struct rusage *ru)
{
    int ws = 0;
    if (ch->fd >= 0) close(ch->fd);
    ch->fd = -1;
    if (ch->ended) kill(ch->pid, SIGKILL);
    if (ru) memset(ru, 0, sizeof *ru);
    while (wait4(ch->pid, &ws, 0, ru) < 0 && errno == EINTR) {}
    if (wstatus) *wstatus = ws;
}

int ab_isolate(ab_child_fn fn, void *arg, void *buf, size_t len, const ab_isolate_opts *o, int *wstatus,
               struct rusage *ru)
{
    ab_child ch;
    if (ab_child_start(&ch, fn, arg, o) < 0) return AB_CHILD_ERROR;
    int r = ab_child_read(&ch, buf, len);
    ab_child_reap(&ch, wstatus, ru);
    return r;
}

int ab_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}
