/* gpu.h — the harness side of the GPU backend (kernels/cuda/ab_cuda.h):
 * fork-safe device discovery for the parent, the GPU facts recorded in a
 * results file, and the measurement of one GPU point inside a sweep
 * child. */
#ifndef AB_HARNESS_GPU_H
#define AB_HARNESS_GPU_H

#include "attnbench.h"
#include "attnbench.h"
#include "harness/engine/config.h"
#include "harness/engine/metrics.h"
#include "runtime/plugin.h"
#include "harness/store/point.h"
#include "kernels/cuda/ab_cuda.h"

/* ab_gpu_count() (declared in kernels/kernels.h) lives in gpu.c: it asks a
 * short-lived child, so the calling process never initialises CUDA and its
 * later children can still use the GPU. */

/* GPU facts for the results file's root attributes: gpu_count, gpu_name,
 * gpu_info, driver, cuda_version, cuda_driver_version, cublas_version,
 * gpu_clock_mhz, gpu_mem_clock_mhz, gpu_memory_bytes. Probed in a child. */
void ab_gpu_env(ab_env *e);

/* How a GPU point selects: on the device (window, oracle_topk_block),
 * on the CPU with the layout copied to the device, or a fixed dense
 * layout run by cuBLAS (dense_blas). */
typedef enum ab_gpu_path { AB_GPU_SEL_DEVICE, AB_GPU_SEL_HOST, AB_GPU_CUBLAS } ab_gpu_path;
ab_gpu_path ab_gpu_path_of(const ab_method *m);

/* One select + run on the GPU with the timings of each stage:
 * *sel_ms the selection (CUDA events for device selectors; host clock for
 * CPU select() + finalize), *copy_ms the host-to-device layout copy (0 for
 * device selection), *run_ms the kernel (CUDA events). Host selection
 * leaves the finalised layout in l (initialised by the caller each call);
 * device selection leaves l untouched (see ab_gpu_layout_from_device). */
int ab_gpu_select_run(ab_cuda *g, ab_instance *in, const ab_problem *pb, int block_q, int block_k,
                      ab_layout *l, double *sel_ms, double *copy_ms, double *run_ms, char *err,
                      size_t errlen);
/* After device selection: the device layout as a finalised host layout
 * (l initialised by the caller with the config's block sizes). */
int ab_gpu_layout_from_device(ab_cuda *g, ab_layout *l, char *err, size_t errlen);
/* The kernel that ran: "gpu_flash", "gpu_blocksparse", "gpu_gather", "cublas". */
const char *ab_gpu_kernel_name(const ab_method *m, ab_layout_kind kind);

/* Everything one GPU point needs (the sweep fills it in its child). */
typedef struct ab_gpu_point_in {
    const ab_config *c;
    const ab_method *m;
    const ab_params *prm; /* calibrated params */
    const ab_problem *pb; /* host fp32 Q, K, V */
    const ab_refset *ref; /* fp64 reference on the scored rows */
    const ab_answer *ans; /* the task's answer (n == 0: none) */
    int block_q, block_k; /* the layout's preset blocks (the job's) */
} ab_gpu_point_in;

/* Measure one GPU point into p (ids already filled): upload, warm-up and
 * repeats timed with CUDA events, statistics as on the CPU, output
 * downloaded and scored against the fp64 reference. Sets p->status. */
void ab_gpu_measure(const ab_gpu_point_in *in, ab_point *p);

/* Number of usable CUDA devices (0 when built without CUDA or none found);
 * on 0, why[] says why. It probes in a short-lived child, so the caller
 * never initialises CUDA (children it forks later can still use the GPU). */
int ab_gpu_count(char *why, size_t whylen);
#endif
