/* task.c — decoding and scoring of planted answers (docs/spec/TASKS.md §3, "Values
 * and decoding"), shared by every synthetic task (RULER-style retrieval
 * accuracy, Hsieh et al. 2024, arXiv:2404.06654), and the checked calls of
 * a task's generate() and check() (runtime/plugin.h).
 *
 * A query row's output o_r decodes as y^ = argmax_c <o_r, code_c>; it is
 * correct only if y^ is the expected code and the winning projection is at
 * least decode_floor * |code_y^|^2, so a method that dropped the planted key
 * fails instead of guessing right 1/C of the time. A group (e.g. the digits
 * of a passkey) is correct only if all its rows are.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/handle.h"
#include "runtime/plugin.h"

void ab_answer_free(ab_answer *a)
{
    if (!a) return;
    free(a->head);
    free(a->row);
    free(a->code);
    free(a->key_pos);
    free(a->group);
    free(a->codebook);
    memset(a, 0, sizeof *a);
}

/* 1 if row `i` of the answer decodes correctly from out. */
static int decode_ok(const ab_answer *a, const float *o /* [head_dim] */, int expected)
{
    const int d = a->head_dim;
    int best = -1;
    double best_proj = 0.0, best_norm2 = 0.0;
    for (int c = 0; c < a->n_codes; c++) {
        const float *code = a->codebook + (size_t)c * d; /* [head_dim] */
        double proj = 0.0, norm2 = 0.0;
        for (int m = 0; m < d; m++) {
            proj += (double)o[m] * code[m];
            norm2 += (double)code[m] * code[m];
        }
        if (best < 0 ? proj == proj : proj > best_proj) { /* NaN never wins */
            best = c;
            best_proj = proj;
            best_norm2 = norm2;
        }
    }
    return best >= 0 && best == expected && best_proj >= a->decode_floor * best_norm2;
}

int ab_answer_score(const ab_answer *a, const float *out, int seq_len, int *n_correct, int *n_total)
{
    if (!a || !n_correct || !n_total) return AB_EINVAL;
    *n_correct = 0;
    *n_total = 0;
    if (a->n <= 0 || a->span_hi > a->span_lo) return AB_OK; /* mass answers need the layout (metrics.c) */
    if (!out || !a->head || !a->row || !a->code || !a->codebook || a->head_dim <= 0 || a->n_codes <= 0 ||
        seq_len <= 0)
        return AB_EINVAL;
    const int n_groups = a->group ? a->n_groups : a->n;
    if (n_groups <= 0) return AB_EINVAL;
    for (int i = 0; i < a->n; i++) {
        if (a->row[i] < 0 || a->row[i] >= seq_len || a->head[i] < 0 ||
            (a->group && (a->group[i] < 0 || a->group[i] >= n_groups)))
            return AB_EINVAL;
    }
    /* group_ok[g]: 1 until one of its rows fails */
    unsigned char *group_ok = malloc((size_t)n_groups); /* [n_groups] */
    unsigned char *seen = calloc((size_t)n_groups, 1);  /* [n_groups] */
    if (!group_ok || !seen) {
        free(group_ok);
        free(seen);
        return AB_ENOMEM;
    }
    memset(group_ok, 1, (size_t)n_groups);
    for (int i = 0; i < a->n; i++) {
        int g = a->group ? a->group[i] : i;
        const float *o =
            out + ((size_t)a->head[i] * (size_t)seq_len + (size_t)a->row[i]) * (size_t)a->head_dim;
        seen[g] = 1;
        if (!decode_ok(a, o, a->code[i])) group_ok[g] = 0;
    }
    int correct = 0, total = 0;
    for (int g = 0; g < n_groups; g++) {
        if (!seen[g]) continue; /* a group id with no rows counts for nothing */
        total++;
        correct += group_ok[g];
    }
    free(group_ok);
    free(seen);
    *n_correct = correct;
    *n_total = total;
    return AB_OK;
}

/* The task input a task sees lives right after an error header. */
typedef struct task_call {
    ab_handle h;
    ab_task_input in;
} task_call;
_Static_assert(AB_HANDLE_FOLLOWS(task_call, in), "ab_task_input must follow the error header");

static int task_done(task_call *c, int rc, const char *what, char *err, size_t errlen)
{
    rc = ab_handle_checked(&c->h, rc, what);
    if (err && errlen) snprintf(err, errlen, "%s", c->h.msg);
    ab_handle_close(&c->h);
    return rc;
}

int ab_task_generate(const ab_task *t, const ab_task_input *in, float *q, float *k, float *v, ab_answer *ans,
                     char *err, size_t errlen)
{
    task_call c;
    ab_handle_open(&c.h);
    c.in = *in;
    return task_done(&c, t->generate(&c.in, q, k, v, ans), "generate()", err, errlen);
}

int ab_task_check(const ab_task *t, const ab_task_input *in, char *err, size_t errlen)
{
    task_call c;
    ab_handle_open(&c.h);
    c.in = *in;
    return task_done(&c, t->check ? t->check(&c.in) : AB_OK, "check()", err, errlen);
}
