/* plugin.h — the harness side of the plugin ABI: a method instance with its
 * state and error buffer, checked wrappers around every entry point
 * (SQLite-VFS style: the core never calls a plugin function directly; masks
 * are parsed and bound through runtime/registry.h), and answer scoring. */
#ifndef AB_PLUGIN_H
#define AB_PLUGIN_H

#include "attnbench.h"

typedef struct ab_instance {
    const ab_method *m;
    void *state; /* what the method sees; an error header precedes it */
    ab_params params;
    ab_shape shape;
} ab_instance;

/* Fill p with the method's defaults. */
void ab_params_defaults(const ab_param *list, int cap, ab_params *p);
/* Set one param by name (rounded if is_int, range-checked).
 * Returns 0, -1 unknown name, -2 out of range. */
int ab_params_set(const ab_param *list, int cap, ab_params *p, const char *name, double v);
/* "name=value,..." */
void ab_params_format(const ab_param *list, int cap, const ab_params *p, char *buf, size_t n);

/* Create an instance: allocate state, call init. On failure returns the
 * AB_E* code; ab_instance_error() says why. */
int ab_instance_create(ab_instance *in, const ab_method *m, const ab_params *p, const ab_shape *s);
int ab_instance_select(ab_instance *in, const ab_problem *pb, ab_layout *l);
int ab_instance_run(ab_instance *in, const ab_problem *pb, const ab_layout *l, float *out);
/* A CUSTOM method's implied weights of (head, row) into w[seq_len] (ABI 6,
 * ab_method.weights); AB_EUNSUPPORTED when it has none. Thread-safe when the
 * method's weights() is (it must be: it reads its state only). */
int ab_instance_weights(const ab_instance *in, const ab_problem *pb, const ab_layout *l, int head, int row,
                        double *w);
/* Decode (ABI 7): prepare() (AB_OK when the method has none), dselect() and
 * drun() (NULL: ab_kernel_decode with AB_DECODE_AUTO). */
int ab_instance_prepare(ab_instance *in, const ab_decode *dp);
int ab_instance_dselect(ab_instance *in, const ab_decode *dp, ab_layout *l);
int ab_instance_drun(ab_instance *in, const ab_decode *dp, const ab_layout *l, float *out);
void ab_instance_destroy(ab_instance *in);
/* The last message set with ab_set_error, or a description of the code. */
const char *ab_instance_error(const ab_instance *in);
void ab_instance_clear_error(ab_instance *in);
const char *ab_strerror(int code);

/* ---- tasks (runtime/task.c) ---------------------------------------------- */
/* Call t->generate / t->check (AB_OK when it has none) on a copy of *in the
 * task may pass to ab_set_error. The task's message (or "") goes to err.
 * Returns AB_OK or an AB_E* code; any other code becomes AB_EINTERNAL. */
int ab_task_generate(const ab_task *t, const ab_task_input *in, float *q, float *k, float *v, ab_answer *ans,
                     char *err, size_t errlen);
int ab_task_check(const ab_task *t, const ab_task_input *in, char *err, size_t errlen);
/* Decode every answered row from out (heads, seq_len, head_dim) and count
 * correct groups. Returns AB_OK, or AB_EINVAL / AB_ENOMEM. */
int ab_answer_score(const ab_answer *a, const float *out, int seq_len, int *n_correct, int *n_total);
#endif
