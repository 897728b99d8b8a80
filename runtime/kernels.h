/* kernels.h — the dense CPU kernel for the harness, tests and benchmarks
 * (runtime/kernels.c forwards it to kernels/cpu). No plugin calls it, so it
 * is not part of the ABI; the kernel a method may call is ab_kernel_layout
 * (include/attnbench.h). */
#ifndef AB_RUNTIME_KERNELS_H
#define AB_RUNTIME_KERNELS_H

#include "attnbench.h"

/* Exact dense attention under the shape's base mask (flash-style tiles,
 * fp32): out is (heads, seq_len, head_dim). AB_OK or AB_E*. */
int ab_kernel_flash(const ab_problem *pb, float *out);
#endif
