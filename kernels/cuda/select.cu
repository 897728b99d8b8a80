/* select.cu — device-side selectors: the block layouts of `window`
 * (StreamingLLM A-shape, Xiao et al. 2023, arXiv 2309.17453; same blocks
 * as methods/window.c) and `oracle_topk_block` (exact block masses, top-k
 * per query block; same budget dithering as methods/oracle_topk_block.c)
 * built directly as a block CSR on the device, so the GPU path does not
 * pay a host selection plus a host-to-device copy for them.
 *
 * Both work in three launches: per-row entry counts (closed form), an
 * exclusive scan into blk_ptr (one CTA), then a fill kernel. The total entry
 * count is read back (8 bytes) to size blk_idx.
 *
 * The oracle computes logits in fp32 on CUDA cores from the fp16/bf16
 * tensors; ties and near-ties may therefore rank differently from the CPU
 * selector (fp32 inputs, fp64 sums). Entries of a row come out in rank
 * order, not sorted by index (the kernels do not need sorted rows;
 * ab_cuda_download_layout() goes through the builder, which sorts). */
#include "kernels/cuda/ab_cuda_impl.h"

namespace
{

constexpr int SCAN_THREADS = 1024;

/* In-place inclusive scan of x[1..n] with x[0] = 0: turns counts into CSR
 * pointers. One CTA; each thread scans a contiguous chunk. */
__global__ void __launch_bounds__(SCAN_THREADS) scan_ptr(int64_t *x, int64_t n)
{
    __shared__ int64_t part[SCAN_THREADS];
    const int64_t chunk = (n + SCAN_THREADS - 1) / SCAN_THREADS;
    const int64_t b = 1 + threadIdx.x * chunk, e = min(n + 1, b + chunk);
    int64_t s = 0;
    for (int64_t i = b; i < e; i++) s += x[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int off = 1; off < SCAN_THREADS; off <<= 1) { /* Hillis-Steele over the chunk sums */
        const int64_t add = threadIdx.x >= off ? part[threadIdx.x - off] : 0;
        __syncthreads();
        part[threadIdx.x] += add;
        __syncthreads();
    }
    int64_t run = threadIdx.x ? part[threadIdx.x - 1] : 0;
    for (int64_t i = b; i < e; i++) {
        run += x[i];
        x[i] = run;
    }
    if (threadIdx.x == 0) x[0] = 0;
}

/* ---- window ------------------------------------------------------------- */

struct window_row {
    int lo, hi, sinks; /* band [lo, hi] and sinks [0, sinks), possibly overlapping */
};

__device__ window_row window_of(int qb, int N, int bq, int bk, int nkb, int w, int sink_blocks, int causal)
{
    window_row r;
    const int kfirst = (qb * bq) / bk;
    const int klast = (min(N, (qb + 1) * bq) - 1) / bk;
    r.lo = max(0, kfirst - w + 1);
    r.hi = causal ? klast : min(nkb - 1, klast + w - 1);
    r.sinks = min(sink_blocks, causal ? r.hi + 1 : nkb);
    return r;
}

__global__ void window_count(int64_t *ptr, int rows, int nqb, int N, int bq, int bk, int nkb, int w,
                             int sinks, int causal)
{
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const window_row x = window_of(r % nqb, N, bq, bk, nkb, w, sinks, causal);
    /* |[lo, hi]| + sinks below lo + sinks above hi */
    ptr[r + 1] = (x.hi - x.lo + 1) + min(x.sinks, x.lo) + max(0, x.sinks - x.hi - 1);
}

__global__ void window_fill(const int64_t *ptr, int32_t *idx, int rows, int nqb, int N, int bq, int bk,
                            int nkb, int w, int sinks, int causal)
{
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const window_row x = window_of(r % nqb, N, bq, bk, nkb, w, sinks, causal);
    int32_t *out = idx + ptr[r];
    for (int kb = 0; kb < min(x.sinks, x.lo); kb++) *out++ = kb;
    for (int kb = x.lo; kb <= x.hi; kb++) *out++ = kb;
    for (int kb = x.hi + 1; kb < x.sinks; kb++) *out++ = kb;
}

/* ---- oracle top-k -------------------------------------------------------- */

constexpr int OR_THREADS = 256;
constexpr int OR_ROWS = 16; /* query rows per pass */
constexpr int OR_KEYS = 64; /* key columns per tile */

/* Key blocks row (qb) keeps: floor(topk) plus one with probability
 * frac(topk), dithered by the golden-ratio sequence, capped by the
 * candidates (as methods/oracle_topk_block.c). */
__device__ int oracle_keep(int qb, int N, int bq, int bk, int nkb, int causal, double topk)
{
    const int kc = causal ? min(N, (qb + 1) * bq) : N;
    const int nc = (kc + bk - 1) / bk;
    const int keep = min((int)ceil(topk), nkb);
    const double u = fmod((qb + 1) * 0.6180339887498949, 1.0);
    const int kr = (int)floor(topk) + (u < topk - floor(topk));
    return min(nc, min(kr, keep));
}

__global__ void oracle_count(int64_t *ptr, int rows, int nqb, int N, int bq, int bk, int nkb, int causal,
                             double topk)
{
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r < rows) ptr[r + 1] = oracle_keep(r % nqb, N, bq, bk, nkb, causal, topk);
}

/* (mass, block) pairs compare by mass descending, then index ascending. */
__device__ __forceinline__ bool before(float ma, int ia, float mb, int ib)
{
    return ma > mb || (ma == mb && ia < ib);
}

/* One CTA per (query block, head). Shared: q (OR_ROWS, D), k (OR_KEYS, D+1),
 * s (OR_ROWS, OR_KEYS), row m/l (OR_ROWS), mass (npow2), order (npow2). */
template <typename T, int D>
__global__ void __launch_bounds__(OR_THREADS)
    oracle_blocks(const T *__restrict__ q, const T *__restrict__ k, const int64_t *ptr, int32_t *idx, int N,
                  int bq, int bk, int nqb, int causal, float scale_log2, int npow2)
{
    extern __shared__ __align__(16) unsigned char sm[];
    float *qs = (float *)sm;            /* (OR_ROWS, D) */
    float *ks = qs + OR_ROWS * D;       /* (OR_KEYS, D + 1) */
    float *ss = ks + OR_KEYS * (D + 1); /* (OR_ROWS, OR_KEYS) */
    float *rm = ss + OR_ROWS * OR_KEYS; /* (OR_ROWS) running max, base 2 */
    float *rl = rm + OR_ROWS;           /* (OR_ROWS) running sum */
    float *mass = rl + OR_ROWS;         /* (npow2) */
    int *order = (int *)(mass + npow2); /* (npow2) */
    const int qb = blockIdx.x, h = blockIdx.y;
    const int r0 = qb * bq, rend = min(N, r0 + bq);
    const int kc = causal ? rend : N, nc = (kc + bk - 1) / bk;
    const T *qh = q + (size_t)h * N * D, *kh = k + (size_t)h * N * D;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    for (int i = threadIdx.x; i < npow2; i += OR_THREADS) {
        mass[i] = i < nc ? 0.0f : -INFINITY;
        order[i] = i;
    }
    for (int c0 = r0; c0 < rend; c0 += OR_ROWS) {
        const int nr = min(OR_ROWS, rend - c0);
        __syncthreads();
        for (int e = threadIdx.x; e < OR_ROWS * D; e += OR_THREADS) {
            const int r = e / D;
            qs[e] = r < nr ? ab_conv<T>::to_f(qh[(size_t)(c0 + r) * D + e % D]) : 0.0f;
        }
        if (threadIdx.x < OR_ROWS) {
            rm[threadIdx.x] = -INFINITY;
            rl[threadIdx.x] = 0.0f;
        }
        const int kend = causal ? c0 + nr : N; /* keys these rows can see */
        /* pass 0: row max and sum; pass 1: each key block's share */
        for (int pass = 0; pass < 2; pass++) {
            for (int j0 = 0; j0 < kend; j0 += OR_KEYS) {
                const int nk = min(OR_KEYS, kend - j0);
                __syncthreads();
                for (int e = threadIdx.x; e < OR_KEYS * D; e += OR_THREADS) {
                    const int j = e / D, x = e % D;
                    ks[j * (D + 1) + x] = j < nk ? ab_conv<T>::to_f(kh[(size_t)(j0 + j) * D + x]) : 0.0f;
                }
                __syncthreads();
                { /* logits: thread (row, col) computes 4 columns col, col+16, ... */
                    const int r = threadIdx.x / 16, c = threadIdx.x % 16;
                    float acc[OR_KEYS / 16] = {};
                    for (int x = 0; x < D; x++) {
                        const float qv = qs[r * D + x];
                        for (int t = 0; t < OR_KEYS / 16; t++) acc[t] += qv * ks[(c + 16 * t) * (D + 1) + x];
                    }
                    for (int t = 0; t < OR_KEYS / 16; t++) {
                        const int j = j0 + c + 16 * t;
                        const bool ok = r < nr && j < j0 + nk && (!causal || j <= c0 + r);
                        ss[r * OR_KEYS + c + 16 * t] = ok ? acc[t] * scale_log2 : -INFINITY;
                    }
                }
                __syncthreads();
                /* warp w handles rows w and w + 8; lanes hold columns lane, lane + 32 */
                for (int r = warp; r < nr; r += OR_THREADS / 32) {
                    const float a = ss[r * OR_KEYS + lane], b = ss[r * OR_KEYS + lane + 32];
                    if (pass == 0) {
                        float mx = fmaxf(a, b);
                        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                        const float m_new = fmaxf(rm[r], mx);
                        const float ref = m_new == -INFINITY ? 0.0f : m_new;
                        float s = exp2f(a - ref) + exp2f(b - ref);
                        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                        __syncwarp();
                        if (lane == 0) {
                            rl[r] = rl[r] * exp2f(rm[r] - ref) + s;
                            rm[r] = m_new;
                        }
                        __syncwarp();
                    } else if (rl[r] > 0.0f) {
                        const float inv = 1.0f / rl[r], m = rm[r];
                        const float pa = exp2f(a - m) * inv, pb = exp2f(b - m) * inv;
                        const int ja = j0 + lane, jb = j0 + lane + 32;
                        if (bk % OR_KEYS == 0) { /* the whole tile lies in one key block */
                            float s = pa + pb;
                            for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                            if (lane == 0) atomicAdd(&mass[j0 / bk], s);
                        } else {
                            if (pa > 0.0f) atomicAdd(&mass[ja / bk], pa);
                            if (pb > 0.0f) atomicAdd(&mass[jb / bk], pb);
                        }
                    }
                }
            }
        }
    }
    __syncthreads();
    /* bitonic sort of (mass, index) over npow2 entries, best first */
    for (int size = 2; size <= npow2; size <<= 1)
        for (int stride = size / 2; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < npow2; i += OR_THREADS) {
                const int j = i ^ stride;
                if (j <= i) continue;
                const bool up = (i & size) == 0; /* this run sorts best-first */
                const float mi = mass[i], mj = mass[j];
                const int ii = order[i], ij = order[j];
                if (before(mj, ij, mi, ii) == up) {
                    mass[i] = mj;
                    mass[j] = mi;
                    order[i] = ij;
                    order[j] = ii;
                }
            }
            __syncthreads();
        }
    const int64_t row = (int64_t)h * nqb + qb;
    const int64_t p0 = ptr[row], n = ptr[row + 1] - p0;
    for (int t = threadIdx.x; t < n; t += OR_THREADS) idx[p0 + t] = order[t];
}

/* blk_ptr for rows + 1 entries (the count kernel fills [1, rows]). */
int prepare_csr(ab_cuda *g, int rows)
{
    return ab_cuda_grow(g, (void **)&g->blk_ptr, &g->cap_blk_ptr, (size_t)rows + 1, sizeof(int64_t));
}

/* Scan the counts into pointers, read the total, size blk_idx. */
int finish_csr(ab_cuda *g, int rows, int64_t *total)
{
    scan_ptr<<<1, SCAN_THREADS, 0, g->stream>>>(g->blk_ptr, rows);
    AB_CU_LAUNCH(g, "scan_ptr");
    AB_CU(g, cudaMemcpyAsync(total, g->blk_ptr + rows, sizeof *total, cudaMemcpyDeviceToHost, g->stream));
    AB_CU(g, cudaStreamSynchronize(g->stream));
    return ab_cuda_grow(g, (void **)&g->blk_idx, &g->cap_blk_idx, (size_t)*total, sizeof(int32_t));
}

void set_block_layout(ab_cuda *g, int bq, int bk)
{
    g->lay_kind = AB_LAYOUT_BLOCK;
    g->block_q = bq;
    g->block_k = bk;
    g->n_qblocks = (g->s.seq_len + bq - 1) / bq;
    g->n_kblocks = (g->s.seq_len + bk - 1) / bk;
}

template <typename T, int D> int launch_oracle(ab_cuda *g, int npow2, float scale_log2)
{
    const size_t bytes = sizeof(float) * ((size_t)OR_ROWS * D + (size_t)OR_KEYS * (D + 1) +
                                          OR_ROWS * OR_KEYS + 2 * OR_ROWS + npow2) +
                         sizeof(int) * (size_t)npow2;
    int dev = 0, optin = 0;
    AB_CU(g, cudaGetDevice(&dev));
    AB_CU(g, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (bytes > (size_t)optin) {
        snprintf(g->err, sizeof g->err,
                 "oracle selector: %d key blocks need %zu bytes of shared memory (> %d)", g->n_kblocks, bytes,
                 optin);
        return AB_EUNSUPPORTED;
    }
    AB_CU(g,
          cudaFuncSetAttribute(oracle_blocks<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    const dim3 grid((unsigned)g->n_qblocks, (unsigned)g->s.heads);
    oracle_blocks<T, D><<<grid, OR_THREADS, bytes, g->stream>>>(
        (const T *)g->q, (const T *)g->k, g->blk_ptr, g->blk_idx, g->s.seq_len, g->block_q, g->block_k,
        g->n_qblocks, g->s.causal != 0, scale_log2, npow2);
    AB_CU_LAUNCH(g, "oracle_blocks");
    return AB_OK;
}

} /* namespace */

extern "C" int ab_cuda_select_window(ab_cuda *g, int block_q, int block_k, int window, int sink_blocks)
{
    if (block_q < 1 || block_k < 1 || window < 1 || sink_blocks < 0) {
        snprintf(g->err, sizeof g->err, "window selector: bad parameters");
        return AB_EINVAL;
    }
    set_block_layout(g, block_q, block_k);
    const int rows = g->s.heads * g->n_qblocks, w = (window + block_k - 1) / block_k;
    int64_t total = 0;
    int rc = prepare_csr(g, rows);
    if (rc) return rc;
    const int nb = (rows + 255) / 256;
    window_count<<<nb, 256, 0, g->stream>>>(g->blk_ptr, rows, g->n_qblocks, g->s.seq_len, block_q, block_k,
                                            g->n_kblocks, w, sink_blocks, g->s.causal != 0);
    AB_CU_LAUNCH(g, "window_count");
    if ((rc = finish_csr(g, rows, &total))) return rc;
    window_fill<<<nb, 256, 0, g->stream>>>(g->blk_ptr, g->blk_idx, rows, g->n_qblocks, g->s.seq_len, block_q,
                                           block_k, g->n_kblocks, w, sink_blocks, g->s.causal != 0);
    AB_CU_LAUNCH(g, "window_fill");
    return AB_OK;
}

extern "C" int ab_cuda_select_oracle_topk(ab_cuda *g, int block_q, int block_k, double topk)
{
    if (block_q < 1 || block_k < 1 || !(topk >= 1)) {
        snprintf(g->err, sizeof g->err, "oracle selector: bad parameters");
        return AB_EINVAL;
    }
    set_block_layout(g, block_q, block_k);
    const int rows = g->s.heads * g->n_qblocks;
    int npow2 = 1;
    while (npow2 < g->n_kblocks) npow2 <<= 1;
    int64_t total = 0;
    int rc = prepare_csr(g, rows);
    if (rc) return rc;
    oracle_count<<<(rows + 255) / 256, 256, 0, g->stream>>>(
        g->blk_ptr, rows, g->n_qblocks, g->s.seq_len, block_q, block_k, g->n_kblocks, g->s.causal != 0, topk);
    AB_CU_LAUNCH(g, "oracle_count");
    if ((rc = finish_csr(g, rows, &total))) return rc;
    const float sl2 = g->s.scale * 1.4426950408889634f;
    const int d = g->s.head_dim;
    if (g->dt == AB_CUDA_FP16) {
        if (d == 64) return launch_oracle<__half, 64>(g, npow2, sl2);
        if (d == 128) return launch_oracle<__half, 128>(g, npow2, sl2);
    } else {
        if (d == 64) return launch_oracle<__nv_bfloat16, 64>(g, npow2, sl2);
        if (d == 128) return launch_oracle<__nv_bfloat16, 128>(g, npow2, sl2);
    }
    snprintf(g->err, sizeof g->err, "oracle selector: head_dim %d not supported", d);
    return AB_EUNSUPPORTED;
}
