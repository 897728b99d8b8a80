/* attn.cu — tiled attention on tensor cores: dense `flash`, `blocksparse`
 * over a block CSR and `gather` over token lists, one kernel with one inner
 * step. FlashAttention-2 (Dao 2023, arXiv 2307.08691): one CTA per (head,
 * 64-row query tile), each of its 4 warps owns 16 query rows; key/value
 * tiles of 64 columns are staged in shared memory; S = Q Kᵀ and O += P V
 * on tensor cores with WMMA 16x16x16 (fp16 or bf16 in, fp32 accumulate);
 * the online softmax (running max m, running sum l, rescaled O) in fp32.
 *
 * The key tiles a CTA visits depend on the variant:
 *   dense        every tile up to the diagonal (causal tiles skipped);
 *   blocksparse  the tiles inside the key blocks its query block lists
 *                (layout.block_k may differ from the 64-column tile);
 *   gather       the listed key tokens, packed 64 at a time (MIXED: the
 *                listed blocks first, then the tokens, one softmax state).
 * A tile is described by a list of 64 key indices (kidx, -1 = padding), so
 * contiguous and gathered tiles share the loader, the mask and the math.
 * The causal mask is applied per element; rows that keep no valid key get
 * a zero output (as the CPU kernels do).
 *
 * Readable over fast: shared-memory accumulators, no cp.async pipelining
 * and no warp specialisation, so it is slower than FlashAttention-2.
 */
#include <mma.h>

#include "kernels/cuda/ab_cuda_impl.h"

using namespace nvcuda;

namespace
{

constexpr int BM = AB_CUDA_TILE_Q; /* query rows per CTA */
constexpr int BN = AB_CUDA_TILE_K; /* key columns per tile */
constexpr int WARPS = BM / 16;
constexpr int THREADS = WARPS * 32;

enum { MODE_DENSE = 0, MODE_BLOCK = 1, MODE_TOKEN = 2, MODE_MIXED = 3 };

template <typename T> struct attn_args {
    const T *q, *k, *v; /* (heads, N, D) */
    T *o;               /* (heads, N, D) */
    int N, causal, mode;
    float scale_log2;                      /* scale · log2(e): softmax in base 2 */
    int block_q, block_k, n_qblocks, nsub; /* CTA x = (query block, sub-tile) */
    const int64_t *blk_ptr;
    const int32_t *blk_idx; /* block CSR */
    const int64_t *tok_ptr;
    const int32_t *tok_idx; /* token CSR */
};

/* Shared-memory layout for head dim D; leading dimensions padded against
 * bank conflicts (WMMA needs multiples of 16 bytes; every region and
 * 16-row fragment starts on a 32-byte boundary). */
template <int D> struct smem {
    static constexpr int LDH = D + 8;  /* halves per Q/K/V row */
    static constexpr int LDS = BN + 4; /* floats per S row */
    static constexpr int LDP = BN + 8; /* halves per P row */
    static constexpr int LDO = D + 4;  /* floats per O row */
    static constexpr size_t Q = 0;
    static constexpr size_t K = Q + (size_t)BM * LDH * 2;
    static constexpr size_t V = K + (size_t)BN * LDH * 2;
    static constexpr size_t S = V + (size_t)BN * LDH * 2;
    static constexpr size_t P = S + (size_t)BM * LDS * 4;
    static constexpr size_t O = P + (size_t)BM * LDP * 2;
    static constexpr size_t KIDX = O + (size_t)BM * LDO * 4;
    static constexpr size_t BYTES = KIDX + (size_t)BN * 4;
};

/* Per-CTA state the tile step needs. */
template <typename T, int D> struct cta {
    T *qs, *ks, *vs, *ps; /* (BM, LDH) (BN, LDH) (BN, LDH) (BM, LDP) */
    float *ss, *os;       /* (BM, LDS) (BM, LDO) */
    int *kidx;            /* (BN) key index of each tile column, -1 padding */
    int warp, lane, row;  /* row: this lane's query row in the tile (2 lanes/row) */
    int row_abs, row_ok;  /* absolute query index; row < rows in this tile */
    float m, l;           /* running max (base-2 logits) and sum of this row */
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qf[D / 16];
};

/* 16-byte copy of 8 storage elements. */
__device__ __forceinline__ void copy16(void *dst, const void *src)
{
    *(uint4 *)dst = __ldg((const uint4 *)src);
}

/* Load the tile rows listed in kidx (K and V). */
template <typename T, int D> __device__ __forceinline__ void load_kv(cta<T, D> &c, const T *kh, const T *vh)
{
    constexpr int VEC = D / 8; /* 16-byte vectors per row */
    for (int e = threadIdx.x; e < BN * VEC; e += THREADS) {
        const int col = e / VEC, part = e % VEC;
        const int key = c.kidx[col];
        T *kd = c.ks + col * smem<D>::LDH + part * 8;
        T *vd = c.vs + col * smem<D>::LDH + part * 8;
        if (key >= 0) {
            copy16(kd, kh + (size_t)key * D + part * 8);
            copy16(vd, vh + (size_t)key * D + part * 8);
        } else {
            *(uint4 *)kd = make_uint4(0, 0, 0, 0);
            *(uint4 *)vd = make_uint4(0, 0, 0, 0);
        }
    }
}

/* One key tile: columns are keys kidx[0..nk) = contiguous j0.. (idx NULL) or
 * idx[0..nk). Every thread of the CTA calls it. */
template <typename T, int D>
__device__ __forceinline__ void tile_step(cta<T, D> &c, const attn_args<T> &a, const T *kh, const T *vh,
                                          int j0, const int32_t *idx, int nk)
{
    using L = smem<D>;
    __syncthreads(); /* every warp is done with the previous K, V and kidx */
    const int t = (int)threadIdx.x;
    if (t < BN) c.kidx[t] = t < nk ? (idx ? idx[t] : j0 + t) : -1;
    __syncthreads();
    load_kv(c, kh, vh);
    __syncthreads();

    /* S (16 x BN) of this warp = Q_w Kᵀ */
    for (int n = 0; n < BN / 16; n++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> sf;
        wmma::fill_fragment(sf, 0.0f);
        for (int kk = 0; kk < D / 16; kk++) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kf;
            wmma::load_matrix_sync(kf, c.ks + n * 16 * L::LDH + kk * 16,
                                   L::LDH); /* Kᵀ: col-major view of K */
            wmma::mma_sync(sf, c.qf[kk], kf, sf);
        }
        wmma::store_matrix_sync(c.ss + c.warp * 16 * L::LDS + n * 16, sf, L::LDS, wmma::mem_row_major);
    }
    __syncwarp();

    /* Online softmax: lanes 2r and 2r+1 share row r of the warp, 32 columns each. */
    const int side = c.lane & 1;
    float *srow = c.ss + c.row * L::LDS + side * (BN / 2);
    T *prow = c.ps + c.row * L::LDP + side * (BN / 2);
    float x[BN / 2];
    float mx = -INFINITY;
    for (int j = 0; j < BN / 2; j++) {
        const int key = c.kidx[side * (BN / 2) + j];
        const bool ok = c.row_ok && key >= 0 && (!a.causal || key <= c.row_abs);
        x[j] = ok ? srow[j] * a.scale_log2 : -INFINITY;
        mx = fmaxf(mx, x[j]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(c.m, mx);
    /* m_new = -inf: nothing valid so far; keep everything at zero */
    const float ref = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = exp2f(c.m - ref); /* c.m = -inf gives 0 */
    float sum = 0.0f;
    for (int j = 0; j < BN / 2; j++) {
        const float p = exp2f(x[j] - ref); /* -inf gives 0 */
        sum += p;
        prow[j] = ab_conv<T>::from_f(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    c.l = c.l * alpha + sum;
    c.m = m_new;
    float *orow = c.os + c.row * L::LDO + side * (D / 2);
    for (int j = 0; j < D / 2; j++) orow[j] *= alpha;
    __syncwarp();

    /* O_w (16 x D) += P_w (16 x BN) V (BN x D) */
    for (int n = 0; n < D / 16; n++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> of;
        float *optr = c.os + c.warp * 16 * L::LDO + n * 16;
        wmma::load_matrix_sync(of, optr, L::LDO, wmma::mem_row_major);
        for (int kk = 0; kk < BN / 16; kk++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pf;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vf;
            wmma::load_matrix_sync(pf, c.ps + c.warp * 16 * L::LDP + kk * 16, L::LDP);
            wmma::load_matrix_sync(vf, c.vs + kk * 16 * L::LDH + n * 16, L::LDH);
            wmma::mma_sync(of, pf, vf, of);
        }
        wmma::store_matrix_sync(optr, of, L::LDO, wmma::mem_row_major);
    }
    __syncwarp();
}

/* First position in idx[lo, hi) whose value is > v (idx sorted ascending). */
__device__ int64_t upper_bound(const int32_t *idx, int64_t lo, int64_t hi, int64_t v)
{
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (idx[mid] <= v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

template <typename T, int D> __global__ void __launch_bounds__(THREADS) attn_kernel(const attn_args<T> a)
{
    using L = smem<D>;
    extern __shared__ __align__(128) unsigned char sm[];
    const int h = blockIdx.y;
    /* heaviest (last) query blocks first: better balance under the causal mask */
    const int qb = a.n_qblocks - 1 - (int)(blockIdx.x / a.nsub);
    const int sub = (int)(blockIdx.x % a.nsub);
    const int qend = min(a.N, (qb + 1) * a.block_q);
    const int r0 = qb * a.block_q + sub * BM;
    const int nq = min(BM, qend - r0);
    if (nq <= 0) return;

    cta<T, D> c;
    c.qs = (T *)(sm + L::Q);
    c.ks = (T *)(sm + L::K);
    c.vs = (T *)(sm + L::V);
    c.ss = (float *)(sm + L::S);
    c.ps = (T *)(sm + L::P);
    c.os = (float *)(sm + L::O);
    c.kidx = (int *)(sm + L::KIDX);
    c.warp = threadIdx.x / 32;
    c.lane = threadIdx.x % 32;
    c.row = c.warp * 16 + c.lane / 2;
    c.row_abs = r0 + c.row;
    c.row_ok = c.row < nq;
    c.m = -INFINITY;
    c.l = 0.0f;

    const size_t hoff = (size_t)h * a.N * D;
    const T *qh = a.q + hoff, *kh = a.k + hoff, *vh = a.v + hoff;

    /* Q tile (zero rows past the end) and O = 0 */
    constexpr int VEC = D / 8;
    for (int e = threadIdx.x; e < BM * VEC; e += THREADS) {
        const int r = e / VEC, part = e % VEC;
        T *dst = c.qs + r * L::LDH + part * 8;
        if (r < nq)
            copy16(dst, qh + (size_t)(r0 + r) * D + part * 8);
        else
            *(uint4 *)dst = make_uint4(0, 0, 0, 0);
    }
    for (int e = threadIdx.x; e < BM * L::LDO; e += THREADS) c.os[e] = 0.0f;
    __syncthreads();
    for (int kk = 0; kk < D / 16; kk++)
        wmma::load_matrix_sync(c.qf[kk], c.qs + c.warp * 16 * L::LDH + kk * 16, L::LDH);

    /* keys any row of this tile may see under the causal mask: [0, kcut) */
    const int kcut = a.causal ? r0 + nq : a.N;
    const int64_t lrow = (int64_t)h * a.n_qblocks + qb; /* layout row */
    if (a.mode == MODE_DENSE) {
        for (int j0 = 0; j0 < kcut; j0 += BN) tile_step<T, D>(c, a, kh, vh, j0, nullptr, min(BN, kcut - j0));
    }
    if (a.mode == MODE_BLOCK || a.mode == MODE_MIXED) {
        for (int64_t p = a.blk_ptr[lrow]; p < a.blk_ptr[lrow + 1]; p++) {
            const int ks = a.blk_idx[p] * a.block_k;
            const int ke = min(min(a.N, ks + a.block_k), kcut);
            for (int j0 = ks; j0 < ke; j0 += BN) tile_step<T, D>(c, a, kh, vh, j0, nullptr, min(BN, ke - j0));
        }
    }
    if (a.mode == MODE_TOKEN || a.mode == MODE_MIXED) {
        const int64_t t0 = a.tok_ptr[lrow];
        const int64_t t1 =
            a.causal ? upper_bound(a.tok_idx, t0, a.tok_ptr[lrow + 1], kcut - 1) : a.tok_ptr[lrow + 1];
        for (int64_t p = t0; p < t1; p += BN)
            tile_step<T, D>(c, a, kh, vh, 0, a.tok_idx + p, (int)min((int64_t)BN, t1 - p));
    }
    __syncthreads();

    /* O / l -> output; lanes 2r, 2r+1 write half a row each */
    if (c.row_ok) {
        const int side = c.lane & 1;
        const float inv = c.l > 0.0f ? 1.0f / c.l : 0.0f;
        const float *orow = c.os + c.row * L::LDO + side * (D / 2);
        T *dst = a.o + hoff + (size_t)c.row_abs * D + side * (D / 2);
        for (int j = 0; j < D / 2; j++) dst[j] = ab_conv<T>::from_f(orow[j] * inv);
    }
}

template <typename T, int D> int launch(ab_cuda *g, int mode)
{
    attn_args<T> a;
    a.q = (const T *)g->q;
    a.k = (const T *)g->k;
    a.v = (const T *)g->v;
    a.o = (T *)g->o;
    a.N = g->s.seq_len;
    a.causal = g->s.causal != 0;
    a.mode = mode;
    a.scale_log2 = g->s.scale * 1.4426950408889634f;
    if (mode == MODE_DENSE) {
        a.block_q = BM;
        a.block_k = BN;
        a.n_qblocks = (a.N + BM - 1) / BM;
    } else {
        a.block_q = g->block_q;
        a.block_k = g->block_k;
        a.n_qblocks = g->n_qblocks;
    }
    a.nsub = (a.block_q + BM - 1) / BM;
    a.blk_ptr = g->blk_ptr;
    a.blk_idx = g->blk_idx;
    a.tok_ptr = g->tok_ptr;
    a.tok_idx = g->tok_idx;
    const size_t bytes = smem<D>::BYTES;
    AB_CU(g,
          cudaFuncSetAttribute(attn_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    const dim3 grid((unsigned)((int64_t)a.n_qblocks * a.nsub), (unsigned)g->s.heads);
    attn_kernel<T, D><<<grid, THREADS, bytes, g->stream>>>(a);
    AB_CU_LAUNCH(g, "attn_kernel");
    return AB_OK;
}

int run(ab_cuda *g, int mode)
{
    if (mode != MODE_DENSE) {
        const bool need_blk = mode == MODE_BLOCK || mode == MODE_MIXED;
        const bool need_tok = mode == MODE_TOKEN || mode == MODE_MIXED;
        if ((need_blk && !g->blk_ptr) || (need_tok && !g->tok_ptr) || g->block_q < 1 || g->block_k < 1) {
            snprintf(g->err, sizeof g->err, "no layout of the right kind uploaded");
            return AB_EINVAL;
        }
    }
    const int d = g->s.head_dim;
    if (g->dt == AB_CUDA_FP16) {
        if (d == 64) return launch<__half, 64>(g, mode);
        if (d == 128) return launch<__half, 128>(g, mode);
    } else {
        if (d == 64) return launch<__nv_bfloat16, 64>(g, mode);
        if (d == 128) return launch<__nv_bfloat16, 128>(g, mode);
    }
    snprintf(g->err, sizeof g->err, "head_dim %d is not supported on the GPU (64, 128)", d);
    return AB_EUNSUPPORTED;
}

} /* namespace */

extern "C" int ab_cuda_flash(ab_cuda *g) { return run(g, MODE_DENSE); }

extern "C" int ab_cuda_blocksparse(ab_cuda *g) { return run(g, MODE_BLOCK); }

extern "C" int ab_cuda_gather(ab_cuda *g)
{
    return run(g, g->lay_kind == AB_LAYOUT_MIXED ? MODE_MIXED : MODE_TOKEN);
}

extern "C" int ab_cuda_run_layout(ab_cuda *g, ab_layout_kind kind)
{
    switch (kind) {
    case AB_LAYOUT_DENSE: return ab_cuda_flash(g);
    case AB_LAYOUT_BLOCK: return ab_cuda_blocksparse(g);
    case AB_LAYOUT_TOKEN:
    case AB_LAYOUT_MIXED: return ab_cuda_gather(g);
    case AB_LAYOUT_CUSTOM: break;
    }
    snprintf(g->err, sizeof g->err, "CUSTOM layouts have no GPU kernel");
    return AB_EUNSUPPORTED;
}
