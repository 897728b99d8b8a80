/* cublas.cu — `dense_cublas`: attention written the textbook way (Vaswani
 * et al. 2017, arXiv 1706.03762) on cuBLAS, the GPU analogue of
 * methods/dense_blas.c. Per block of R query rows, for all heads at once:
 *   S = Q_blk Kᵀ        cublasGemmStridedBatchedEx, fp16/bf16 in, fp32 out
 *   P = softmax(S·scale) one CTA per row, causal mask, fp32, P in fp16/bf16
 *   O_blk = P V         cublasGemmStridedBatchedEx, fp32 accumulate
 * Causal: a block only multiplies the keys [0, r0 + R) it can see. Scores
 * take heads · R · N · 6 bytes (R chosen to stay near 512 MiB), never N × N.
 *
 * cuBLAS is column-major; a row-major (rows, cols) matrix is its transpose
 * in column-major, so S (R x Nk, row-major) is computed as Sᵀ = K Q_blkᵀ. */
#include "kernels/cuda/ab_cuda_impl.h"

namespace
{

constexpr int SOFTMAX_THREADS = 256;

__device__ float block_reduce(float v, bool is_max, float *red /* [32] */)
{
    for (int o = 16; o > 0; o >>= 1) {
        const float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads(); /* red[] may still be read from the previous reduction */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    const int nw = blockDim.x / 32;
    v = lane < nw ? red[lane] : (is_max ? -INFINITY : 0.0f);
    for (int o = 16; o > 0; o >>= 1) {
        const float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    return v;
}

/* Row i = r0 + blockIdx.x of head blockIdx.y: P[j] = exp(s_j - max) / sum
 * over the valid keys j < nv, 0 for nv <= j < nk. */
template <typename T>
__global__ void softmax_rows(const float *__restrict__ S, T *__restrict__ P, int ld, size_t head_stride,
                             int r0, int nk, int causal, float scale_log2)
{
    __shared__ float red[32];
    const int i = r0 + blockIdx.x;
    const int nv = causal ? min(i + 1, nk) : nk;
    const float *s = S + blockIdx.y * head_stride + (size_t)blockIdx.x * ld; /* (nk) */
    T *p = P + blockIdx.y * head_stride + (size_t)blockIdx.x * ld;           /* (nk) */
    float m = -INFINITY;
    for (int j = threadIdx.x; j < nv; j += blockDim.x) m = fmaxf(m, s[j] * scale_log2);
    m = block_reduce(m, true, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < nv; j += blockDim.x) sum += exp2f(s[j] * scale_log2 - m);
    sum = block_reduce(sum, false, red);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int j = threadIdx.x; j < nk; j += blockDim.x)
        p[j] = ab_conv<T>::from_f(j < nv ? exp2f(s[j] * scale_log2 - m) * inv : 0.0f);
}

int blas_fail(ab_cuda *g, cublasStatus_t st, const char *what)
{
    snprintf(g->err, sizeof g->err, "%s: cuBLAS status %d", what, (int)st);
    return st == CUBLAS_STATUS_ALLOC_FAILED ? AB_ENOMEM : AB_EINTERNAL;
}

} /* namespace */

extern "C" int ab_cuda_dense_cublas(ab_cuda *g)
{
    const int H = g->s.heads, N = g->s.seq_len, D = g->s.head_dim, causal = g->s.causal != 0;
    const size_t es = ab_cuda_esize(g->dt);
    if (!g->S) { /* first call: size the row block and allocate the scores */
        const size_t budget = (size_t)512 << 20;
        size_t r = budget / ((size_t)H * N * (sizeof(float) + es));
        r = r < 64 ? 64 : r / 64 * 64;
        g->blas_rows = (int)(r < (size_t)N ? r : (size_t)N);
        const size_t n = (size_t)H * g->blas_rows * N;
        AB_CU(g, cudaMalloc((void **)&g->S, n * sizeof(float)));
        AB_CU(g, cudaMalloc(&g->P, n * es));
    }
    const int R = g->blas_rows;
    const size_t head_stride = (size_t)R * N; /* S and P per head */
    const cudaDataType_t dt = g->dt == AB_CUDA_FP16 ? CUDA_R_16F : CUDA_R_16BF;
    const float one = 1.0f, zero = 0.0f;
    const float scale_log2 = g->s.scale * 1.4426950408889634f;
    const long long qkv_stride = (long long)N * D;
    for (int r0 = 0; r0 < N; r0 += R) {
        const int rb = N - r0 < R ? N - r0 : R;
        const int nk = causal ? r0 + rb : N; /* keys this block can see */
        /* Sᵀ (nk x rb, ld nk) = K (nk x D) · Q_blkᵀ (D x rb) */
        cublasStatus_t st = cublasGemmStridedBatchedEx(
            g->blas, CUBLAS_OP_T, CUBLAS_OP_N, nk, rb, D, &one, g->k, dt, D, qkv_stride,
            (const char *)g->q + (size_t)r0 * D * es, dt, D, qkv_stride, &zero, g->S, CUDA_R_32F, nk,
            (long long)head_stride, H, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS) return blas_fail(g, st, "S = Q K^T");
        const dim3 grid((unsigned)rb, (unsigned)H);
        if (g->dt == AB_CUDA_FP16)
            softmax_rows<__half><<<grid, SOFTMAX_THREADS, 0, g->stream>>>(
                g->S, (__half *)g->P, nk, head_stride, r0, nk, causal, scale_log2);
        else
            softmax_rows<__nv_bfloat16><<<grid, SOFTMAX_THREADS, 0, g->stream>>>(
                g->S, (__nv_bfloat16 *)g->P, nk, head_stride, r0, nk, causal, scale_log2);
        AB_CU_LAUNCH(g, "softmax_rows");
        /* O_blkᵀ (D x rb, ld D) = Vᵀ (D x nk) · Pᵀ (nk x rb) */
        st = cublasGemmStridedBatchedEx(g->blas, CUBLAS_OP_N, CUBLAS_OP_N, D, rb, nk, &one, g->v, dt, D,
                                        qkv_stride, g->P, dt, nk, (long long)head_stride, &zero,
                                        (char *)g->o + (size_t)r0 * D * es, dt, D, qkv_stride, H,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS) return blas_fail(g, st, "O = P V");
    }
    return AB_OK;
}
