/* ab_cuda.h — the CUDA backend's C interface (kernels/cuda, C linkage).
 *
 * Kernels: FlashAttention-2 style tiled attention (Dao 2023, arXiv
 * 2307.08691) with tensor cores (mma.sync m16n8k16, fp16/bf16 in, fp32
 * accumulate) in three variants sharing one inner step — dense `flash`,
 * `blocksparse` over the layout's block CSR and `gather` over its token
 * lists (MIXED: blocks then tokens) — plus the textbook cuBLAS baseline
 * (S = QKᵀ, softmax kernel, O = PV; Vaswani et al. 2017) and device-side
 * selectors for methods whose select() is cheap to port.
 *
 * A session (ab_cuda) holds one problem shape on the current device: Q, K,
 * V and the output in the storage dtype, the uploaded layout, a cuBLAS
 * handle and its workspace, and two CUDA events. Everything is enqueued on
 * the session's stream; ab_cuda_timer_* bracket work with events.
 *
 * Built without CUDA, kernels/gpu_none.c provides the same functions:
 * ab_cuda_device_count() returns 0 with the reason and everything else
 * AB_EUNSUPPORTED.
 *
 * Fork safety: the CUDA runtime must not be initialised in a process that
 * later forks children which use CUDA. Only call these in the process that
 * does the GPU work (a sweep point's child, a test process); the harness's
 * ab_gpu_count() probes in a short-lived child instead (harness/engine/gpu.c).
 */
#ifndef AB_CUDA_H
#define AB_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "attnbench.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ab_cuda_dtype { AB_CUDA_FP16 = 0, AB_CUDA_BF16 = 1 } ab_cuda_dtype;

/* Query rows per CTA and key columns per tile of the attention kernels. */
#define AB_CUDA_TILE_Q 64
#define AB_CUDA_TILE_K 64

/* ---- devices ------------------------------------------------------------- */
typedef struct ab_cuda_info {
    char name[128];
    int cc_major, cc_minor;
    int sm_count;
    int driver_version;          /* CUDA driver API version, e.g. 12040 */
    int runtime_version;         /* CUDA runtime version */
    int cublas_version;          /* cublasGetVersion, e.g. 120403 */
    int clock_mhz;               /* SM clock (cudaDevAttrClockRate) */
    int mem_clock_mhz;           /* memory clock (cudaDevAttrMemoryClockRate) */
    int mem_bus_bits;            /* memory bus width */
    size_t total_mem;            /* bytes */
    size_t smem_per_block_optin; /* bytes of shared memory a CTA may opt into */
} ab_cuda_info;

/* Usable devices in *this* process (initialises the runtime). 0 with a
 * reason in why when none. */
int ab_cuda_device_count(char *why, size_t whylen);
int ab_cuda_device_info(int dev, ab_cuda_info *info, char *why, size_t whylen);
/* 1 when built with CUDA (this file's .cu objects are linked), else 0. */
int ab_cuda_built(void);

/* ---- a session ----------------------------------------------------------- */
typedef struct ab_cuda ab_cuda;

/* Open a session on device 0 for shape s with storage dtype dt. Fails with
 * AB_EUNSUPPORTED (head_dim not 64 or 128, no device), AB_ENOMEM (device
 * memory) or AB_EINTERNAL; err says why. */
int ab_cuda_open(ab_cuda **g, const ab_shape *s, ab_cuda_dtype dt, char *err, size_t errlen);
void ab_cuda_close(ab_cuda *g);
/* The last error message of this session ("" if none). */
const char *ab_cuda_error(const ab_cuda *g);

/* fp32 host (heads, seq_len, head_dim) -> device storage dtype. */
int ab_cuda_upload_qkv(ab_cuda *g, const float *q, const float *k, const float *v);
/* Device output (storage dtype) -> fp32 host (heads, seq_len, head_dim). */
int ab_cuda_download_out(ab_cuda *g, float *out);
/* Copy a finalised BLOCK, TOKEN or MIXED layout's CSR arrays to the device
 * (buffers grow as needed and are reused). Synchronous. */
int ab_cuda_upload_layout(ab_cuda *g, const ab_layout *l);

/* ---- kernels (enqueued on the session's stream) ------------------------- */
/* Dense attention, causal tiles skipped. */
int ab_cuda_flash(ab_cuda *g);
/* Over the uploaded BLOCK layout (or the block part of a MIXED one). */
int ab_cuda_blocksparse(ab_cuda *g);
/* Over the uploaded TOKEN or MIXED layout. */
int ab_cuda_gather(ab_cuda *g);
/* Dispatch on the uploaded layout's kind (DENSE needs no upload: flash). */
int ab_cuda_run_layout(ab_cuda *g, ab_layout_kind kind);
/* cuBLAS baseline, row-blocked so scores take O(rows · N) memory. */
int ab_cuda_dense_cublas(ab_cuda *g);

/* ---- device-side selection ---------------------------------------------- */
/* Build the `window` method's block layout on the device (same blocks as
 * methods/window.c) and make it the session's layout. */
int ab_cuda_select_window(ab_cuda *g, int block_q, int block_k, int window, int sink_blocks);
/* `oracle_topk_block` on the device: exact block masses from the real
 * scores (fp32), top-k per query block with the same fractional-budget
 * dithering as methods/oracle_topk_block.c. */
int ab_cuda_select_oracle_topk(ab_cuda *g, int block_q, int block_k, double topk);
/* Copy the session's device-built BLOCK layout back into l (an initialised,
 * empty layout with the same block sizes), through the builder API; the
 * caller finalises it. */
int ab_cuda_download_layout(ab_cuda *g, ab_layout *l);

/* ---- timing (CUDA events on the session's stream) ----------------------- */
int ab_cuda_timer_start(ab_cuda *g);
/* Records the stop event, waits for it, returns the elapsed ms. */
int ab_cuda_timer_stop(ab_cuda *g, double *ms);
/* Wait for all work of the session; reports asynchronous kernel errors. */
int ab_cuda_sync(ab_cuda *g);

#ifdef __cplusplus
}
#endif
#endif /* AB_CUDA_H */
