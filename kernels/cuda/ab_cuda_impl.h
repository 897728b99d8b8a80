/* ab_cuda_impl.h — internals shared by the kernels/cuda .cu files (C++
 * only): the session struct, error helpers and dtype conversions. The
 * public interface is ab_cuda.h. */
#ifndef AB_CUDA_IMPL_H
#define AB_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "kernels/cuda/ab_cuda.h"

struct ab_cuda {
    ab_shape s;
    ab_cuda_dtype dt;
    cudaStream_t stream;
    cudaEvent_t ev0, ev1;
    void *q, *k, *v, *o; /* (heads, seq_len, head_dim) in the storage dtype */
    float *stage;        /* (heads, seq_len, head_dim) fp32 staging for up/download */
    /* the current layout on the device */
    int lay_kind; /* ab_layout_kind, or -1 when none */
    int block_q, block_k, n_qblocks, n_kblocks;
    int64_t *blk_ptr;                                          /* [heads*n_qblocks + 1] */
    int32_t *blk_idx;                                          /* [cap_blk_idx] */
    int64_t *tok_ptr;                                          /* [heads*n_qblocks + 1] */
    int32_t *tok_idx;                                          /* [cap_tok_idx] */
    size_t cap_blk_ptr, cap_blk_idx, cap_tok_ptr, cap_tok_idx; /* elements */
    /* cuBLAS baseline */
    cublasHandle_t blas;
    int blas_rows; /* query rows per block of the baseline */
    float *S;      /* (heads, blas_rows, seq_len) scores */
    void *P;       /* (heads, blas_rows, seq_len) probabilities, storage dtype */
    char err[256];
};

/* Element size of the storage dtype. */
static inline size_t ab_cuda_esize(ab_cuda_dtype dt) { return dt == AB_CUDA_BF16 ? 2 : 2; }

/* Record a CUDA error in the session; returns the matching AB_E* code. */
static inline int ab_cuda_fail(ab_cuda *g, cudaError_t e, const char *what, const char *file, int line)
{
    if (g) snprintf(g->err, sizeof g->err, "%s: %s (%s:%d)", what, cudaGetErrorString(e), file, line);
    return e == cudaErrorMemoryAllocation ? AB_ENOMEM : AB_EINTERNAL;
}

/* Evaluate a CUDA runtime call; on failure record it and return. */
#define AB_CU(g, call)                                                                        \
    do {                                                                                      \
        cudaError_t ab_e_ = (call);                                                           \
        if (ab_e_ != cudaSuccess) return ab_cuda_fail((g), ab_e_, #call, __FILE__, __LINE__); \
    } while (0)

/* Check the launch of the kernel just enqueued. */
#define AB_CU_LAUNCH(g, name) AB_CU((g), cudaGetLastError())

/* fp32 <-> storage type, on the device. */
template <typename T> struct ab_conv;
template <> struct ab_conv<__half> {
    static __device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
    static __device__ __forceinline__ __half from_f(float x) { return __float2half_rn(x); }
};
template <> struct ab_conv<__nv_bfloat16> {
    static __device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ __forceinline__ __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }
};

/* Grow a device buffer to hold at least n elements of size es (contents
 * are not kept). */
int ab_cuda_grow(ab_cuda *g, void **buf, size_t *cap, size_t n, size_t es);

#endif
