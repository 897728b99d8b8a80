/* test_isolate.c — runtime/isolate.c: a child's answer comes back whole
 * (also in pieces, and larger than a pipe buffer); a child that exits or
 * dies without one is reported with its status; a hung child is killed at
 * its deadline or when the stop flag is set. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/isolate.h"
#include "harness/engine/timing.h"

typedef struct answer {
    int a;
    double b;
    char s[100];
} answer;

static void answers(void *arg, int fd)
{
    answer x = { *(int *)arg, 2.5, "from the child" };
    if (ab_write_all(fd, &x, sizeof x)) _exit(3);
}

static void exits_7(void *arg, int fd) { _exit(7); }
static void dies(void *arg, int fd) { raise(SIGUSR1); }
static void hangs(void *arg, int fd)
{
    for (;;) pause();
}

static void streams(void *arg, int fd)
{
    size_t n = *(size_t *)arg;
    uint32_t *v = malloc(n * sizeof *v);
    if (!v) _exit(4);
    for (size_t i = 0; i < n; i++) v[i] = (uint32_t)(i * 2654435761u);
    if (ab_write_all(fd, &n, sizeof n) || ab_write_all(fd, v, n * sizeof *v)) _exit(3);
    free(v);
}

Test(isolate, answer_comes_back_and_the_child_exits_0)
{
    int in = 42, ws = -1;
    answer x;
    struct rusage ru;
    const ab_isolate_opts o = { 10, NULL, AB_ISO_DFL_SIGNALS };
    cr_assert_eq(ab_isolate(answers, &in, &x, sizeof x, &o, &ws, &ru), 1);
    cr_expect_eq(x.a, 42);
    cr_expect_eq(x.b, 2.5);
    cr_expect_str_eq(x.s, "from the child");
    cr_expect(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "status %#x", ws);
}

Test(isolate, no_answer_gives_the_exit_status_or_the_signal)
{
    int ws = -1;
    answer x;
    const ab_isolate_opts o = { 10, NULL, 0 };
    cr_expect_eq(ab_isolate(exits_7, NULL, &x, sizeof x, &o, &ws, NULL), 0);
    cr_expect(WIFEXITED(ws) && WEXITSTATUS(ws) == 7, "status %#x", ws);
    cr_expect_eq(ab_isolate(dies, NULL, &x, sizeof x, &o, &ws, NULL), 0);
    cr_expect(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGUSR1, "status %#x", ws);
}

Test(isolate, a_hung_child_is_killed_at_its_deadline)
{
    int ws = -1;
    answer x;
    const ab_isolate_opts o = { 0.3, NULL, 0 };
    double t0 = ab_now_ms();
    cr_expect_eq(ab_isolate(hangs, NULL, &x, sizeof x, &o, &ws, NULL), AB_CHILD_TIMEOUT);
    double ms = ab_now_ms() - t0;
    cr_expect(ms >= 250 && ms < 5000, "took %.0f ms", ms);
    cr_expect(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "status %#x", ws);
}

Test(isolate, the_stop_flag_kills_the_child)
{
    static volatile sig_atomic_t stop = 1;
    int ws = -1;
    answer x;
    const ab_isolate_opts o = { 60, &stop, 0 };
    double t0 = ab_now_ms();
    cr_expect_eq(ab_isolate(hangs, NULL, &x, sizeof x, &o, &ws, NULL), AB_CHILD_STOPPED);
    cr_expect(ab_now_ms() - t0 < 5000);
    cr_expect(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "status %#x", ws);
}

Test(isolate, a_stream_larger_than_a_pipe_reads_in_pieces)
{
    size_t n = 1 << 20, got = 0;
    ab_child ch;
    const ab_isolate_opts o = { 60, NULL, AB_ISO_PDEATHSIG };
    cr_assert_eq(ab_child_start(&ch, streams, &n, &o), 0);
    cr_assert_eq(ab_child_read(&ch, &got, sizeof got), 1);
    cr_assert_eq(got, n);
    uint32_t *v = malloc(n * sizeof *v);
    cr_assert_not_null(v);
    int ok = 1;
    for (size_t i = 0; i < n; i += 4096) {
        cr_assert_eq(ab_child_read(&ch, v + i, 4096 * sizeof *v), 1);
        for (size_t k = i; k < i + 4096; k++) ok &= v[k] == (uint32_t)(k * 2654435761u);
    }
    cr_expect(ok, "the stream came back changed");
    cr_expect_eq(ab_child_read(&ch, v, 1), 0, "read past the end of the answer");
    int ws = -1;
    ab_child_reap(&ch, &ws, NULL);
    cr_expect(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "status %#x", ws);
    free(v);
}
