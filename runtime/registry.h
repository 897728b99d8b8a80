/* registry.h — the generated tables of methods and tasks (build/gen/registry.c
 * is written by the Makefile from the AB_REGISTER / AB_REGISTER_TASK lines
 * it finds in methods/ and datasets/). */
#ifndef AB_REGISTRY_H
#define AB_REGISTRY_H

#include <stddef.h>
#include "attnbench.h"

extern const ab_method *const *const ab_method_refs[]; /* generated */
extern const int ab_method_count;
extern const ab_task *const *const ab_task_refs[]; /* generated */
extern const int ab_task_count;
extern const ab_mask_def *const *const ab_mask_refs[]; /* generated */
extern const int ab_mask_count;
#define ab_method_at(i) (*ab_method_refs[(i)])
#define ab_mask_at(i)   (*ab_mask_refs[(i)])
#define ab_task_at(i)   (*ab_task_refs[(i)])

/* Check both generated tables (exit(2) with a message on failure). */
void ab_registry_init(void);
/* Start-up check of a method table: ABI version, unique valid names, param
 * lists terminated, knob index in range. Returns 0 or -1 with err set. */
int ab_registry_check(const ab_method *const *m, int n, char *err, size_t errlen);
/* Position of a family name in AB_FAMILIES (legend order), -1 when unknown. */
int ab_family_index(const char *family);
int ab_task_registry_check(const ab_task *const *t, int n, char *err, size_t errlen);
const ab_method *ab_method_find(const char *name);
/* The input types a method takes (ab_method.dtypes; 0 there means fp32). */
static inline unsigned ab_method_dtypes(const ab_method *m) { return m->dtypes ? m->dtypes : AB_FP32; }
const ab_task *ab_task_find(const char *name);
int ab_mask_registry_check(const ab_mask_def *const *m, int n, char *err, size_t errlen);
const ab_mask_def *ab_mask_find(const char *name);

/* Base masks from specs (runtime/maskspec.c). */
/* Check a spec ("name" or "name:arg") without a length. 0, or -1 with err. */
int ab_mask_check_spec(const char *spec, char *err, size_t errlen);
/* Parse spec and bind it to seq_len and seed into *m (zeroed first).
 * Returns AB_OK, or an AB_E* code with err set (the plugin's message from
 * ab_set_error, or a default); free with ab_mask_free (include/attnbench.h). */
int ab_mask_make(ab_mask *m, const char *spec, int seq_len, uint64_t seed, char *err, size_t errlen);
/* Allowed pairs of one head, over all N x N (runtime/mask.c). */
int64_t ab_mask_pairs(const ab_mask *m);
/* Allowed pairs of one head over N^2 (the "mask density"). */
double ab_mask_fraction(const ab_mask *m);
/* Number of params of a plugin's NULL-terminated list. */
int ab_param_count(const ab_param *p, int cap);
#endif
