/* tasks_bench.c — cost of the data side of one point (docs/spec/TASKS.md §5): time to
 * generate a task's Q, K, V with its planted answer and to build the fp64
 * reference on the scored rows (harness/engine/metrics.h ab_refset_build), against
 * one dense attention pass (the flash kernel) on the same problem.
 *
 *   build/bench/tasks_bench [--n N] [--heads H] [--d D] [--tasks a,b] [--no-dense]
 *
 * Defaults: N = 32768, H = 8, d = 64, the four planted tasks, score_rows =
 * 256, exact_max_n = 8192, topk = 64 (the harness defaults).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attnbench.h"
#include "harness/engine/metrics.h"
#include "runtime/kernels.h"
#include "runtime/plugin.h"

extern const ab_task needle_task, multikey_task, passkey_task, joint_recall_task;

typedef struct bump {
    char *base;
    size_t size, used;
} bump;

static void *bump_alloc(void *ctx, size_t bytes)
{
    bump *b = ctx;
    size_t off = (b->used + 63) & ~(size_t)63;
    if (off + bytes > b->size) return NULL;
    b->used = off + bytes;
    return b->base + off;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    int N = 32768, H = 8, d = 64, dense = 1;
    const char *tasks = "needle,multikey,passkey,joint_recall";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--n") && i + 1 < argc)
            N = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--heads") && i + 1 < argc)
            H = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--d") && i + 1 < argc)
            d = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tasks") && i + 1 < argc)
            tasks = argv[++i];
        else if (!strcmp(argv[i], "--no-dense"))
            dense = 0;
        else {
            fprintf(stderr, "usage: %s [--n N] [--heads H] [--d D] [--tasks a,b] [--no-dense]\n", argv[0]);
            return 2;
        }
    }
    const ab_task *all[] = { &needle_task, &multikey_task, &passkey_task, &joint_recall_task };
    const size_t n = (size_t)H * N * d;
    float *q = malloc(n * sizeof(float));        /* (heads, N, d) */
    float *k = malloc(n * sizeof(float));        /* (heads, N, d) */
    float *v = malloc(n * sizeof(float));        /* (heads, N, d) */
    float *out = malloc(n * sizeof(float));      /* (heads, N, d) */
    int *rows = malloc((size_t)N * sizeof(int)); /* [N] */
    const int topk = 64, score_rows = 256, exact_max_n = 8192;
    bump b = { 0 };
    b.size = (size_t)H * ((size_t)score_rows + 64) * ((size_t)d * 8 + 16 + (size_t)topk * 4) + (size_t)N * 4 +
             (1u << 20);
    b.base = malloc(b.size);
    if (!q || !k || !v || !out || !rows || !b.base) {
        fprintf(stderr, "tasks_bench: out of memory\n");
        return 1;
    }
    printf("# N=%d heads=%d d=%d threads=%d score_rows=%d topk=%d\n", N, H, d, omp_get_max_threads(),
           score_rows, topk);
    printf("%-13s %9s %9s %9s %7s\n", "task", "gen_s", "ref_s", "rows", "answers");
    const ab_shape s = { H, N, d, 1, (float)(1.0 / sqrt((double)d)), NULL, 0, 1, AB_PREFILL };
    double last_data = 0.0;
    for (size_t t = 0; t < sizeof all / sizeof all[0]; t++) {
        if (!strstr(tasks, all[t]->name)) continue;
        ab_params p;
        p.n = 0;
        while (p.n < AB_TASK_MAX_PARAMS && all[t]->params[p.n].name) {
            p.v[p.n] = all[t]->params[p.n].def;
            p.n++;
        }
        char err[256] = "";
        ab_task_input in = { .p = &p, .s = s, .seed = 1, .depth = 0.5 };
        ab_answer ans;
        double t0 = now_s();
        int rc = ab_task_generate(all[t], &in, q, k, v, &ans, err, sizeof err);
        double t1 = now_s();
        if (rc) {
            fprintf(stderr, "%s: %s\n", all[t]->name, err);
            return 1;
        }
        int nr = ab_choose_rows(N, exact_max_n, ans.row, ans.n, score_rows, 1, rows);
        ab_problem pb = { s, q, k, v, 1, omp_get_max_threads(), NULL, 0 };
        ab_refset ref;
        b.used = 0;
        rc = ab_refset_build(&ref, &pb, rows, nr, topk, bump_alloc, &b);
        double t2 = now_s();
        if (rc) {
            fprintf(stderr, "%s: reference failed (%d)\n", all[t]->name, rc);
            return 1;
        }
        printf("%-13s %9.3f %9.3f %9d %7d\n", all[t]->name, t1 - t0, t2 - t1, nr, ans.n);
        fflush(stdout);
        last_data = t2 - t0;
        ab_answer_free(&ans);
    }
    if (dense) {
        ab_problem pb = { s, q, k, v, 1, omp_get_max_threads(), NULL, 0 };
        double t0 = now_s();
        int rc = ab_kernel_flash(&pb, out);
        double t1 = now_s();
        printf("dense flash   %9.3f s (rc %d); last task's generate + reference / dense = %.3f\n", t1 - t0,
               rc, last_data / (t1 - t0));
    }
    free(q);
    free(k);
    free(v);
    free(out);
    free(rows);
    free(b.base);
    return 0;
}
