/* gpu.cu — CUDA device discovery and information, the ab_cuda session
 * (device tensors, layout upload/download, fp32 <-> fp16/bf16 conversion)
 * and CUDA-event timing; C linkage (kernels/cuda/ab_cuda.h).
 * The attention kernels are in attn.cu, the cuBLAS baseline in cublas.cu,
 * device-side selectors in select.cu. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/ab_cuda_impl.h"

extern "C" {
#include "kernels/kernels.h"
}

extern "C" int ab_cuda_built(void) { return 1; }

extern "C" int ab_cuda_device_count(char *why, size_t whylen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        if (why && whylen)
            snprintf(why, whylen, "no usable CUDA device: %s",
                     e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
        return 0;
    }
    return n;
}

extern "C" int ab_cuda_device_info(int dev, ab_cuda_info *info, char *why, size_t whylen)
{
    memset(info, 0, sizeof *info);
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, dev);
    if (e != cudaSuccess) {
        if (why && whylen)
            snprintf(why, whylen, "cudaGetDeviceProperties(%d): %s", dev, cudaGetErrorString(e));
        return AB_EUNSUPPORTED;
    }
    snprintf(info->name, sizeof info->name, "%.127s", p.name);
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->sm_count = p.multiProcessorCount;
    info->total_mem = p.totalGlobalMem;
    info->smem_per_block_optin = p.sharedMemPerBlockOptin;
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrClockRate, dev) == cudaSuccess) info->clock_mhz = v / 1000;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMemoryClockRate, dev) == cudaSuccess)
        info->mem_clock_mhz = v / 1000;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrGlobalMemoryBusWidth, dev) == cudaSuccess)
        info->mem_bus_bits = v;
    cudaDriverGetVersion(&info->driver_version);
    cudaRuntimeGetVersion(&info->runtime_version);
    cublasHandle_t h;
    if (cublasCreate(&h) == CUBLAS_STATUS_SUCCESS) {
        cublasGetVersion(h, &info->cublas_version);
        cublasDestroy(h);
    }
    return AB_OK;
}

/* ---- session ------------------------------------------------------------- */

int ab_cuda_grow(ab_cuda *g, void **buf, size_t *cap, size_t n, size_t es)
{
    if (n <= *cap && *buf) return AB_OK;
    if (*buf) cudaFree(*buf);
    *buf = NULL;
    *cap = 0;
    size_t want = n ? n : 1;
    AB_CU(g, cudaMalloc(buf, want * es));
    *cap = want;
    return AB_OK;
}

extern "C" int ab_cuda_open(ab_cuda **out, const ab_shape *s, ab_cuda_dtype dt, char *err, size_t errlen)
{
    *out = NULL;
    char why[200];
    if (ab_cuda_device_count(why, sizeof why) == 0) {
        snprintf(err, errlen, "%s", why);
        return AB_EUNSUPPORTED;
    }
    if (s->head_dim != 64 && s->head_dim != 128) {
        snprintf(err, errlen, "GPU kernels support head_dim 64 and 128, not %d", s->head_dim);
        return AB_EUNSUPPORTED;
    }
    if (s->heads < 1 || s->seq_len < 1 || s->heads > 65535) {
        snprintf(err, errlen, "GPU kernels: bad shape heads=%d seq_len=%d", s->heads, s->seq_len);
        return AB_EINVAL;
    }
    ab_cuda_info info;
    if (ab_cuda_device_info(0, &info, why, sizeof why) == AB_OK && info.cc_major < 8) {
        snprintf(err, errlen,
                 "%s has compute capability %d.%d; the kernels need 8.0 or newer (bf16 mma.sync)", info.name,
                 info.cc_major, info.cc_minor);
        return AB_EUNSUPPORTED;
    }
    ab_cuda *g = (ab_cuda *)calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of host memory");
        return AB_ENOMEM;
    }
    g->s = *s;
    g->dt = dt;
    g->lay_kind = -1;
    const size_t t = (size_t)s->heads * s->seq_len * s->head_dim;
    const size_t es = ab_cuda_esize(dt);
    int rc = AB_OK;
#define OPEN_CU(call)                                                                   \
    do {                                                                                \
        if (rc == AB_OK) {                                                              \
            cudaError_t e_ = (call);                                                    \
            if (e_ != cudaSuccess) rc = ab_cuda_fail(g, e_, #call, __FILE__, __LINE__); \
        }                                                                               \
    } while (0)
    OPEN_CU(cudaSetDevice(0));
    OPEN_CU(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking));
    OPEN_CU(cudaEventCreate(&g->ev0));
    OPEN_CU(cudaEventCreate(&g->ev1));
    OPEN_CU(cudaMalloc(&g->q, t * es));
    OPEN_CU(cudaMalloc(&g->k, t * es));
    OPEN_CU(cudaMalloc(&g->v, t * es));
    OPEN_CU(cudaMalloc(&g->o, t * es));
    OPEN_CU(cudaMalloc((void **)&g->stage, t * sizeof(float)));
#undef OPEN_CU
    if (rc == AB_OK && cublasCreate(&g->blas) != CUBLAS_STATUS_SUCCESS) {
        snprintf(g->err, sizeof g->err, "cublasCreate failed");
        g->blas = NULL;
        rc = AB_EINTERNAL;
    }
    if (rc == AB_OK && cublasSetStream(g->blas, g->stream) != CUBLAS_STATUS_SUCCESS) {
        snprintf(g->err, sizeof g->err, "cublasSetStream failed");
        rc = AB_EINTERNAL;
    }
    if (rc != AB_OK) {
        snprintf(err, errlen, "%s", g->err);
        ab_cuda_close(g);
        return rc;
    }
    *out = g;
    return AB_OK;
}

extern "C" void ab_cuda_close(ab_cuda *g)
{
    if (!g) return;
    if (g->stream) cudaStreamSynchronize(g->stream);
    if (g->blas) cublasDestroy(g->blas);
    cudaFree(g->S);
    cudaFree(g->P);
    cudaFree(g->blk_ptr);
    cudaFree(g->blk_idx);
    cudaFree(g->tok_ptr);
    cudaFree(g->tok_idx);
    cudaFree(g->stage);
    cudaFree(g->q);
    cudaFree(g->k);
    cudaFree(g->v);
    cudaFree(g->o);
    if (g->ev0) cudaEventDestroy(g->ev0);
    if (g->ev1) cudaEventDestroy(g->ev1);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g);
}

extern "C" const char *ab_cuda_error(const ab_cuda *g) { return g ? g->err : "no session"; }

/* ---- conversion ------------------------------------------------------------ */

template <typename T> __global__ void f32_to_t(const float *__restrict__ x, T *__restrict__ y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = ab_conv<T>::from_f(x[i]);
}

template <typename T> __global__ void t_to_f32(const T *__restrict__ x, float *__restrict__ y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = ab_conv<T>::to_f(x[i]);
}

static int convert_in(ab_cuda *g, const float *host, void *dev)
{
    const size_t t = (size_t)g->s.heads * g->s.seq_len * g->s.head_dim;
    AB_CU(g, cudaMemcpyAsync(g->stage, host, t * sizeof(float), cudaMemcpyHostToDevice, g->stream));
    const int grid = (int)((t + 255) / 256 < 65536 ? (t + 255) / 256 : 65536);
    if (g->dt == AB_CUDA_FP16)
        f32_to_t<__half><<<grid, 256, 0, g->stream>>>(g->stage, (__half *)dev, t);
    else
        f32_to_t<__nv_bfloat16><<<grid, 256, 0, g->stream>>>(g->stage, (__nv_bfloat16 *)dev, t);
    AB_CU_LAUNCH(g, "f32_to_t");
    return AB_OK;
}

extern "C" int ab_cuda_upload_qkv(ab_cuda *g, const float *q, const float *k, const float *v)
{
    int rc;
    if ((rc = convert_in(g, q, g->q)) || (rc = convert_in(g, k, g->k)) || (rc = convert_in(g, v, g->v)))
        return rc;
    AB_CU(g, cudaStreamSynchronize(g->stream));
    return AB_OK;
}

extern "C" int ab_cuda_download_out(ab_cuda *g, float *out)
{
    const size_t t = (size_t)g->s.heads * g->s.seq_len * g->s.head_dim;
    const int grid = (int)((t + 255) / 256 < 65536 ? (t + 255) / 256 : 65536);
    if (g->dt == AB_CUDA_FP16)
        t_to_f32<__half><<<grid, 256, 0, g->stream>>>((const __half *)g->o, g->stage, t);
    else
        t_to_f32<__nv_bfloat16><<<grid, 256, 0, g->stream>>>((const __nv_bfloat16 *)g->o, g->stage, t);
    AB_CU_LAUNCH(g, "t_to_f32");
    AB_CU(g, cudaMemcpyAsync(out, g->stage, t * sizeof(float), cudaMemcpyDeviceToHost, g->stream));
    AB_CU(g, cudaStreamSynchronize(g->stream));
    return AB_OK;
}

/* ---- layouts ----------------------------------------------------------------- */

extern "C" int ab_cuda_upload_layout(ab_cuda *g, const ab_layout *l)
{
    if (!l || l->heads != g->s.heads || l->seq_len != g->s.seq_len) {
        snprintf(g->err, sizeof g->err, "layout shape does not match the session");
        return AB_EINVAL;
    }
    if (l->kind == AB_LAYOUT_CUSTOM) {
        snprintf(g->err, sizeof g->err,
                 "CUSTOM layouts have no GPU kernel (the method runs itself on the CPU)");
        return AB_EUNSUPPORTED;
    }
    g->lay_kind = l->kind;
    g->block_q = l->block_q;
    g->block_k = l->block_k;
    g->n_qblocks = l->n_qblocks;
    g->n_kblocks = l->n_kblocks;
    if (l->kind == AB_LAYOUT_DENSE) return AB_OK;
    const size_t rows = (size_t)l->heads * l->n_qblocks;
    int rc;
    if (l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_MIXED) {
        const size_t n = (size_t)l->blk_ptr[rows];
        if ((rc = ab_cuda_grow(g, (void **)&g->blk_ptr, &g->cap_blk_ptr, rows + 1, sizeof(int64_t))) ||
            (rc = ab_cuda_grow(g, (void **)&g->blk_idx, &g->cap_blk_idx, n, sizeof(int32_t))))
            return rc;
        AB_CU(g, cudaMemcpyAsync(g->blk_ptr, l->blk_ptr, (rows + 1) * sizeof(int64_t), cudaMemcpyHostToDevice,
                                 g->stream));
        if (n)
            AB_CU(g, cudaMemcpyAsync(g->blk_idx, l->blk_idx, n * sizeof(int32_t), cudaMemcpyHostToDevice,
                                     g->stream));
    }
    if (l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED) {
        const size_t n = (size_t)l->tok_ptr[rows];
        if ((rc = ab_cuda_grow(g, (void **)&g->tok_ptr, &g->cap_tok_ptr, rows + 1, sizeof(int64_t))) ||
            (rc = ab_cuda_grow(g, (void **)&g->tok_idx, &g->cap_tok_idx, n, sizeof(int32_t))))
            return rc;
        AB_CU(g, cudaMemcpyAsync(g->tok_ptr, l->tok_ptr, (rows + 1) * sizeof(int64_t), cudaMemcpyHostToDevice,
                                 g->stream));
        if (n)
            AB_CU(g, cudaMemcpyAsync(g->tok_idx, l->tok_idx, n * sizeof(int32_t), cudaMemcpyHostToDevice,
                                     g->stream));
    }
    AB_CU(g, cudaStreamSynchronize(g->stream));
    return AB_OK;
}

extern "C" int ab_cuda_download_layout(ab_cuda *g, ab_layout *l)
{
    if (g->lay_kind != AB_LAYOUT_BLOCK || !g->blk_ptr) {
        snprintf(g->err, sizeof g->err, "no device-built block layout to download");
        return AB_EINVAL;
    }
    if (l->block_q != g->block_q || l->block_k != g->block_k) {
        int rc = ab_layout_set_blocks(l, g->block_q, g->block_k);
        if (rc) return rc;
    }
    const size_t rows = (size_t)g->s.heads * g->n_qblocks;
    int64_t *ptr = (int64_t *)malloc((rows + 1) * sizeof *ptr); /* [rows + 1] */
    if (!ptr) return AB_ENOMEM;
    /* on the session's stream: it is non-blocking, so a plain cudaMemcpy
     * (legacy default stream) would not wait for the selector's kernels */
    cudaError_t e =
        cudaMemcpyAsync(ptr, g->blk_ptr, (rows + 1) * sizeof *ptr, cudaMemcpyDeviceToHost, g->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(g->stream);
    if (e != cudaSuccess) {
        free(ptr);
        return ab_cuda_fail(g, e, "download block pointers", __FILE__, __LINE__);
    }
    const size_t n = (size_t)ptr[rows];
    int32_t *idx = (int32_t *)malloc((n ? n : 1) * sizeof *idx); /* [n] */
    if (!idx) {
        free(ptr);
        return AB_ENOMEM;
    }
    e = n ? cudaMemcpyAsync(idx, g->blk_idx, n * sizeof *idx, cudaMemcpyDeviceToHost, g->stream)
          : cudaSuccess;
    if (e == cudaSuccess) e = cudaStreamSynchronize(g->stream);
    int rc = e == cudaSuccess ? AB_OK : ab_cuda_fail(g, e, "download block indices", __FILE__, __LINE__);
    for (size_t r = 0; rc == AB_OK && r < rows; r++)
        for (int64_t p = ptr[r]; rc == AB_OK && p < ptr[r + 1]; p++)
            rc = ab_layout_add_block(l, (int)(r / g->n_qblocks), (int)(r % g->n_qblocks), idx[p]);
    /* a layout that keeps nothing still has to be "touched" to finalise */
    if (rc == AB_OK && n == 0) rc = ab_layout_add_block_range(l, 0, 0, 0, 0);
    free(idx);
    free(ptr);
    return rc;
}

/* ---- timing ------------------------------------------------------------------ */

extern "C" int ab_cuda_timer_start(ab_cuda *g)
{
    AB_CU(g, cudaEventRecord(g->ev0, g->stream));
    return AB_OK;
}

extern "C" int ab_cuda_timer_stop(ab_cuda *g, double *ms)
{
    float f = 0;
    AB_CU(g, cudaEventRecord(g->ev1, g->stream));
    AB_CU(g, cudaEventSynchronize(g->ev1));
    AB_CU(g, cudaEventElapsedTime(&f, g->ev0, g->ev1));
    *ms = f;
    return AB_OK;
}

extern "C" int ab_cuda_sync(ab_cuda *g)
{
    AB_CU(g, cudaStreamSynchronize(g->stream));
    AB_CU(g, cudaGetLastError());
    return AB_OK;
}
