/* problem.c — one problem in a shared arena (problem.h): sizing, mapping,
 * and the data child that generates it and builds its reference. */
#include "harness/engine/problem.h"
#include "harness/engine/measure.h"
#include "harness/engine/tensors.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"

#include <ctype.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void *arena_alloc(void *ctx, size_t bytes)
{
    arena_hdr *a = ctx;
    size_t off = (a->used + 63) & ~(size_t)63;
    if (off + bytes > a->size) return NULL;
    a->used = off + bytes;
    return (char *)a + off;
}

static size_t arena_size(const base_pt *b, const ab_config *c)
{
    size_t t = (size_t)b->heads * b->n * b->d;
    size_t rows = (size_t)b->n;
    size_t ref = (size_t)b->heads * rows * ((size_t)b->d * 8 + 16 + (size_t)c->topk * 4) + rows * 4;
    size_t ans = (size_t)b->heads * rows * 6 * 4 + ((size_t)1 << 22);
    return sizeof(arena_hdr) + (b->heldout ? 6 : 3) * t * 4 + ref + ans + ((size_t)1 << 20);
}

static int copy_ints(arena_hdr *a, int **dst, const int *src, int n)
{
    if (!src) {
        *dst = NULL;
        return 0;
    }
    *dst = arena_alloc(a, sizeof(int) * (size_t)(n ? n : 1));
    if (!*dst) return -1;
    memcpy(*dst, src, sizeof(int) * (size_t)n);
    return 0;
}

static void data_problem(arena_hdr *a, const base_pt *b, const ab_config *c, int threads,
                         const char *save_dir, const char *problem, ab_shape s)
{
    ab_answer ans;
    memset(&ans, 0, sizeof ans);
    char why[200] = "";
    ab_task_input in = {
        .p = &b->tparams, .str = b->tstr, .s = s, .seed = (uint64_t)b->seed, .depth = b->depth
    };
    int rc = ab_task_generate(b->task, &in, a->q, a->k, a->v, &ans, why, sizeof why);
    if (rc) {
        a->status = rc;
        snprintf(a->msg, sizeof a->msg, "task %s: %s", b->task->name, why[0] ? why : ab_strerror(rc));
        ab_answer_free(&ans);
        return;
    }
    if (a->hq) { /* the held-out draw: the same task at another seed; its answer is not needed */
        ab_answer hans;
        memset(&hans, 0, sizeof hans);
        ab_task_input hin = in;
        hin.seed = a->hseed = ab_heldout_seed((uint64_t)b->seed);
        rc = ab_task_generate(b->task, &hin, a->hq, a->hk, a->hv, &hans, why, sizeof why);
        ab_answer_free(&hans);
        if (rc) {
            a->status = rc;
            snprintf(a->msg, sizeof a->msg, "task %s (held-out draw): %s", b->task->name,
                     why[0] ? why : ab_strerror(rc));
            ab_answer_free(&ans);
            return;
        }
        const size_t t = sizeof(float) * (size_t)s.heads * s.seq_len * s.head_dim;
        if (!memcmp(a->hq, a->q, t) && !memcmp(a->hk, a->k, t)) /* the task ignores its seed (a trace) */
            a->hq = a->hk = a->hv = NULL;
    }
    a->ans = ans;
    if (copy_ints(a, &a->ans.head, ans.head, ans.n) || copy_ints(a, &a->ans.row, ans.row, ans.n) ||
        copy_ints(a, &a->ans.code, ans.code, ans.n) || copy_ints(a, &a->ans.key_pos, ans.key_pos, ans.n) ||
        copy_ints(a, &a->ans.group, ans.group, ans.n)) {
        a->status = AB_ENOMEM;
        snprintf(a->msg, sizeof a->msg, "arena too small for the answer");
        ab_answer_free(&ans);
        return;
    }
    a->ans.codebook = NULL;
    if (ans.codebook) {
        size_t cb = sizeof(float) * (size_t)ans.n_codes * ans.head_dim;
        a->ans.codebook = arena_alloc(a, cb);
        if (!a->ans.codebook) {
            a->status = AB_ENOMEM;
            ab_answer_free(&ans);
            return;
        }
        memcpy(a->ans.codebook, ans.codebook, cb);
    }
    int *rows = malloc(sizeof(int) * (size_t)b->n);
    if (!rows) {
        a->status = AB_ENOMEM;
        ab_answer_free(&ans);
        return;
    }
    int nr = ab_choose_rows(b->n, c->exact_max_n, ans.row, ans.n, c->score_rows, (uint64_t)b->seed, rows);
    ab_answer_free(&ans);
    ab_problem hpb, pb = { s, a->q, a->k, a->v, (uint64_t)b->seed, threads, NULL };
    pb.heldout = ab_arena_heldout(a, s, threads, &hpb); /* saved with the tensors */
    rc = nr < 0 ? AB_ENOMEM : ab_refset_build(&a->ref, &pb, rows, nr, c->topk, arena_alloc, a);
    free(rows);
    if (rc) {
        a->status = rc;
        snprintf(a->msg, sizeof a->msg, "reference: %s", ab_strerror(rc));
        return;
    }
    if (save_dir && ab_tensors_write_problem(save_dir, problem, &pb, &a->ref, a->msg, sizeof a->msg))
        a->status = AB_EINTERNAL;
}

/* In the data child: generate and build the reference. */
void data_child(arena_hdr *a, const base_pt *b, const ab_config *c, int threads, const char *save_dir,
                const char *problem)
{
    omp_set_num_threads(threads);
    ab_bind_threads(threads);
    size_t t = (size_t)b->heads * b->n * b->d;
    a->q = arena_alloc(a, t * 4);
    a->k = arena_alloc(a, t * 4);
    a->v = arena_alloc(a, t * 4);
    if (b->heldout) {
        a->hq = arena_alloc(a, t * 4);
        a->hk = arena_alloc(a, t * 4);
        a->hv = arena_alloc(a, t * 4);
    }
    if (!a->q || !a->k || !a->v || (b->heldout && (!a->hq || !a->hk || !a->hv))) {
        a->status = AB_ENOMEM;
        snprintf(a->msg, sizeof a->msg, "arena too small");
        return;
    }
    ab_mask mk; /* this process's own copy of the base mask, bound to (N, data seed) */
    int mrc = ab_mask_make(&mk, b->mask, b->n, (uint64_t)b->seed, a->msg, sizeof a->msg);
    if (mrc) {
        a->status = mrc;
        ab_mask_free(&mk);
        return;
    }
    ab_shape s = { b->heads, b->n, b->d, mk.def->causal, 1.0f / sqrtf((float)b->d), &mk, 0, 1, AB_PREFILL };
    data_problem(a, b, c, threads, save_dir, problem, s);
    ab_mask_free(&mk);
}

const ab_problem *ab_arena_heldout(const arena_hdr *a, ab_shape s, int threads, ab_problem *out)
{
    if (!a->hq) return NULL;
    *out = (ab_problem){ s, a->hq, a->hk, a->hv, a->hseed, threads, NULL };
    return out;
}

arena_hdr *ab_arena_map(const base_pt *b, const ab_config *c, size_t *size)
{
    *size = arena_size(b, c);
    arena_hdr *a = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) return NULL;
    memset(a, 0, sizeof *a);
    a->size = *size;
    a->used = sizeof *a;
    return a;
}

void ab_arena_unmap(arena_hdr *a, size_t size)
{
    if (a) munmap(a, size);
}

void ab_problem_name(const base_pt *b, char *buf, size_t n)
{
    char mslug[AB_MASK_SPEC]; /* the mask spec as a file-name-safe word */
    snprintf(mslug, sizeof mslug, "%s", b->mask);
    for (char *ch = mslug; *ch; ch++)
        if (!isalnum((unsigned char)*ch) && *ch != '.' && *ch != '-') *ch = '_';
    snprintf(buf, n, "problem_%s_N%d_H%d_d%d_%s_s%lld_z%.4g", b->task->name, b->n, b->heads, b->d, mslug,
             (long long)b->seed, b->depth);
}
