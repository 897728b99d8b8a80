/* tensors.h — raw tensors of a sweep for `run --save-tensors` (see tensors.c). */
#ifndef AB_TENSORS_H
#define AB_TENSORS_H
#include <stddef.h>
#include "attnbench.h"
#include "harness/engine/metrics.h"
#include "kernels/kernels.h"

/* OUT.h5.tensors (created if missing). */
int ab_tensors_dir(const char *out_path, char *dir, size_t n);
/* DIR/NAME.h5: q, k, v, scored_rows, ref_out. */
int ab_tensors_write_problem(const char *dir, const char *name, const ab_problem *pb, const ab_refset *ref,
                             char *err, size_t errlen);
/* DIR/KEY.h5: out, the layout arrays, and the name of its problem file. */
int ab_tensors_write_point(const char *dir, const char *key, const char *problem, const ab_problem *pb,
                           const ab_layout *l, const float *out, char *err, size_t errlen);
#endif
