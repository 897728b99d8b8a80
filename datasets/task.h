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

#define AB_TASK_MAX_STRINGS 4

/* What generate() is asked for. */
typedef struct ab_task_input {
    const ab_params *p;     /* numeric params, in the order of ab_task.params */
    const char *const *str; /* [AB_TASK_MAX_STRINGS] values of ab_task.string_params,
                               NULL where unset; the pointer itself may be NULL */
    ab_shape s;             /* requested shape (heads, seq_len, head_dim, causal, scale)
                               and s.mask, the point's base mask bound to seq_len
                               (NULL: plain causal / full by s.causal) */
    uint64_t seed;
    double depth;           /* [0, 1] */
    char *err;              /* room for a one-line reason on failure (may be NULL) */
    size_t errlen;
} ab_task_input;

typedef struct ab_task {
    int abi;                 /* AB_ABI_VERSION */
    const char *name;
    const char *summary;
    ab_param params[AB_TASK_MAX_PARAMS]; /* NULL name terminates */
    /* Optional string-valued config keys (e.g. "file"), NULL-terminated. */
    const char *string_params[AB_TASK_MAX_STRINGS + 1];
    /* Fill q, k, v (heads, seq_len, head_dim) for in->seed and in->depth,
     * and the answer (may be left empty: n = 0, e.g. for traces).
     * Deterministic: a pure function of the input. On failure return AB_E*
     * and say why with ab_task_errorf(in, ...). A planted key must be
     * visible to its query rows under in->s.mask (datasets/plant.h); when
     * the mask leaves no valid trial, return AB_EUNSUPPORTED. */
    int (*generate)(const ab_task_input *in, float *q, float *k, float *v, ab_answer *ans);
    /* Optional, cheap: validate an input before any work (e.g. that a trace
     * file exists, is well-formed and fits the requested shape). Called for
     * every shape of the grid while the config is checked; a failure stops
     * the run with exit 2 and the reason from ab_task_errorf. */
    int (*check)(const ab_task_input *in);
} ab_task;

/* Write a one-line reason into in->err (if any). */
void ab_task_errorf(const ab_task_input *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define AB_REGISTER_TASK(sym) const ab_task *const ab_task_registered_##sym = &(sym);

/* Free the arrays of an answer (safe on a zeroed answer). */
void ab_answer_free(ab_answer *a);
/* Decode every answered row from out (heads, seq_len, head_dim) and count
 * correct groups. Returns AB_OK. */
int ab_answer_score(const ab_answer *a, const float *out, int seq_len,
                    int *n_correct, int *n_total);
#endif
