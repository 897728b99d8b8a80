/* task.h — the dataset plugin interface: synthetic tasks that generate one
 * attention layer's Q, K, V with a planted answer (see ../shared/TASKS.md).
 *
 * A task is one file in datasets/ that fills one ab_task and ends with
 * AB_REGISTER_TASK(symbol); the Makefile generates the task registry.
 * The answer never reaches a method: only datasets/ and the scorer see it.
 */
#ifndef AB_TASK_H
#define AB_TASK_H

#include "attnbench.h"

#define AB_TASK_MAX_PARAMS AB_MAX_VALUES

/* What a task planted: query rows that must retrieve a code. */
typedef struct ab_answer {
    int n;            /* number of (head, row) queries carrying an answer */
    int *head;        /* [n] */
    int *row;         /* [n] query row index */
    int *code;        /* [n] expected code index into the codebook */
    int *key_pos;     /* [n] position of the planted key it must retrieve */
    int *group;       /* [n] trial group: a group counts as correct only if all
                         its rows are (passkey). NULL: each query is a group */
    int n_groups;     /* number of groups (== n when group is NULL) */
    int n_codes;
    int head_dim;
    float *codebook;  /* [n_codes][head_dim] */
    double decode_floor; /* winning projection must be >= floor * |code|^2 */
} ab_answer;

typedef struct ab_task {
    int abi;                 /* AB_ABI_VERSION */
    const char *name;
    const char *summary;
    ab_param params[AB_TASK_MAX_PARAMS]; /* NULL name terminates */
    /* Fill q, k, v (heads, seq_len, head_dim) for this seed and depth in
     * [0, 1], and the answer (may be left empty: n = 0, e.g. for traces).
     * Deterministic: a pure function of (params, shape, seed, depth). */
    int (*generate)(const ab_params *p, const ab_shape *s, uint64_t seed,
                    double depth, float *q, float *k, float *v, ab_answer *ans);
} ab_task;

#define AB_REGISTER_TASK(sym) const ab_task *const ab_task_registered_##sym = &(sym);

/* Free the arrays of an answer (safe on a zeroed answer). */
void ab_answer_free(ab_answer *a);
/* Decode every answered row from out (heads, seq_len, head_dim) and count
 * correct groups. Returns AB_OK. */
int ab_answer_score(const ab_answer *a, const float *out, int seq_len,
                    int *n_correct, int *n_total);
#endif
