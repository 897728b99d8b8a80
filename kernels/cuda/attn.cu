/* attn.cu — tiled attention on tensor cores: dense `flash`, `blocksparse`
 * over a block CSR and `gather` over token lists, one kernel with one inner
 * step. FlashAttention-2 (Dao 2023, arXiv 2307.08691): one CTA per (head,
 * 64-row query tile), each of its 4 warps owns 16 query rows; key/value
 * tiles of 64 rows are staged in shared memory with cp.async, double
 * buffered (the next tile loads while this one is computed); S = Q Kᵀ and
 * O += P V are mma.sync m16n8k16 instructions (fp16 or bf16 in, fp32
 * accumulate) with operands fetched by ldmatrix, and S, P and O stay in
 * registers: the S accumulator's fragment is the A operand of P V (the
 * layout identity FlashAttention-2 relies on). The online softmax (running
 * max, per-thread partial sums, rescaled O) is fp32 in base 2.
 *
 * The key tiles a CTA visits depend on the variant:
 *   dense        every tile up to the diagonal (causal tiles skipped);
 *   blocksparse  the tiles inside the key blocks its query block lists
 *                (layout.block_k may differ from the 64-column tile);
 *   gather       the listed key tokens, packed 64 at a time (MIXED: the
 *                listed blocks first, then the tokens, one softmax state).
 * A tile is (first key, count) for contiguous keys or (position, count) in
 * the token list; every tile column records its key index (-1 = padding)
 * in shared memory, so contiguous and gathered tiles share the loader, the
 * mask and the math. The causal mask is applied per element; rows that keep
 * no valid key get a zero output (as the CPU kernels do).
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16; g = lane / 4, t = lane % 4):
 *   A (16x16, row): a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
 *   B (16x8, col):  b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g)
 *   C (16x8, f32):  c0 c1 (g, 2t..2t+1)  c2 c3 (g+8, 2t..2t+1)
 * K rows in shared memory are B's columns (ldmatrix); V rows are B's rows
 * (ldmatrix.trans). No warp specialisation and no Hopper wgmma/TMA: an
 * sm_80 design that runs on sm_90.
 */
#include "kernels/cuda/ab_cuda_impl.h"

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

/* Shared memory for head dim D: Q, two K and two V buffers, each row padded
 * by 16 bytes (rows stay 16-byte aligned and the 8 rows an ldmatrix reads
 * fall in distinct banks), and the key index of each buffer's columns. */
template <int D> struct smem {
    static constexpr int LD = D + 8; /* elements per row */
    static constexpr size_t TILE = (size_t)BN * LD * 2;
    static constexpr size_t Q = 0;
    static constexpr size_t K = Q + (size_t)BM * LD * 2; /* K[2] */
    static constexpr size_t V = K + 2 * TILE;            /* V[2] */
    static constexpr size_t KIDX = V + 2 * TILE;         /* int[2][BN] */
    static constexpr size_t BYTES = KIDX + 2 * BN * sizeof(int);
};

/* ---- PTX wrappers ------------------------------------------------------- */

__device__ __forceinline__ uint32_t saddr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* 16 bytes global -> shared, asynchronous; zero-filled when !ok (src is
 * then not read). */
__device__ __forceinline__ void cp16(void *dst, const void *src, bool ok)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr(dst)), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/* Wait until at most N committed groups of this thread are in flight. */
template <int N> __device__ __forceinline__ void cp_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* Four 8x8 b16 matrices; lane l gives the row address of matrix l / 8,
 * row l % 8. */
__device__ __forceinline__ void ldsm4(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr(p))
                 : "memory");
}
__device__ __forceinline__ void ldsm4_t(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr(p))
                 : "memory");
}

/* c += A B for one m16n8k16 step, and two floats packed as the A operand's
 * storage pair (low half = lower column). */
template <typename T> struct mma16;
template <> struct mma16<__half> {
    static __device__ __forceinline__ void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
    {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi)
    {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};
template <> struct mma16<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
    {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi)
    {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};

/* ---- key tiles ---------------------------------------------------------- */

/* One key tile: contiguous keys [j0, j0 + nk) (DENSE, BLOCK; ke = end of
 * the current block's keys) or token-list positions [p, p + nk) (TOKEN).
 * phase < 0: no tile. Every thread computes the same sequence. */
struct tile {
    int phase;
    int64_t p;
    int j0, nk, ke;
};

/* Where this CTA's tiles come from. */
struct tile_src {
    int kcut;       /* keys any row of the tile may see: [0, kcut) */
    int mixed;      /* tokens follow the blocks */
    int64_t b1;     /* end of this row's block entries */
    int64_t t0, t1; /* this row's token positions */
};

__device__ __forceinline__ tile no_tile() { return tile{ -1, 0, 0, 0, 0 }; }

__device__ __forceinline__ tile token_from(const tile_src &s, int64_t p)
{
    return p < s.t1 ? tile{ MODE_TOKEN, p, 0, (int)min((int64_t)BN, s.t1 - p), 0 } : no_tile();
}

/* The first non-empty block at or after entry p (then the tokens when MIXED). */
template <typename T> __device__ tile block_from(const attn_args<T> &a, const tile_src &s, int64_t p)
{
    for (; p < s.b1; p++) {
        const int ks = a.blk_idx[p] * a.block_k;
        const int ke = min(min(a.N, ks + a.block_k), s.kcut);
        if (ks < ke) return tile{ MODE_BLOCK, p, ks, min(BN, ke - ks), ke };
    }
    return s.mixed ? token_from(s, s.t0) : no_tile();
}

template <typename T> __device__ tile next_tile(const attn_args<T> &a, const tile_src &s, const tile &c)
{
    if (c.phase == MODE_DENSE) {
        const int j0 = c.j0 + BN;
        return j0 < s.kcut ? tile{ MODE_DENSE, 0, j0, min(BN, s.kcut - j0), s.kcut } : no_tile();
    }
    if (c.phase == MODE_BLOCK) {
        const int j0 = c.j0 + BN;
        return j0 < c.ke ? tile{ MODE_BLOCK, c.p, j0, min(BN, c.ke - j0), c.ke } : block_from(a, s, c.p + 1);
    }
    return token_from(s, c.p + BN);
}

/* Start cp.async copies of tile c's K and V rows into one buffer and record
 * its key indices. */
template <typename T, int D>
__device__ __forceinline__ void load_tile(const attn_args<T> &a, const tile &c, const T *kh, const T *vh,
                                          T *ks, T *vs, int *kidx)
{
    constexpr int VEC = D / 8; /* 16-byte vectors per row */
    constexpr int LD = smem<D>::LD;
    for (int e = threadIdx.x; e < BN * VEC; e += THREADS) {
        const int col = e / VEC, part = e % VEC;
        const int key = col < c.nk ? (c.phase == MODE_TOKEN ? a.tok_idx[c.p + col] : c.j0 + col) : -1;
        if (part == 0) kidx[col] = key;
        const size_t off = (size_t)(key >= 0 ? key : 0) * D + part * 8;
        cp16(ks + col * LD + part * 8, kh + off, key >= 0);
        cp16(vs + col * LD + part * 8, vh + off, key >= 0);
    }
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
    constexpr int LD = L::LD;
    extern __shared__ __align__(128) unsigned char sm[];
    const int h = blockIdx.y;
    /* heaviest (last) query blocks first: better balance under the causal mask */
    const int qb = a.n_qblocks - 1 - (int)(blockIdx.x / a.nsub);
    const int sub = (int)(blockIdx.x % a.nsub);
    const int qend = min(a.N, (qb + 1) * a.block_q);
    const int r0 = qb * a.block_q + sub * BM;
    const int nq = min(BM, qend - r0);
    if (nq <= 0) return;

    T *qs = (T *)(sm + L::Q);
    T *ks0 = (T *)(sm + L::K);
    T *vs0 = (T *)(sm + L::V);
    int *kidx0 = (int *)(sm + L::KIDX);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;

    const size_t hoff = (size_t)h * a.N * D;
    const T *qh = a.q + hoff, *kh = a.k + hoff, *vh = a.v + hoff;

    /* Q tile (zero rows past the end) */
    constexpr int VEC = D / 8;
    for (int e = threadIdx.x; e < BM * VEC; e += THREADS) {
        const int r = e / VEC, part = e % VEC;
        cp16(qs + r * LD + part * 8, qh + (size_t)(r0 + (r < nq ? r : 0)) * D + part * 8, r < nq);
    }
    cp_commit();

    tile_src src;
    src.kcut = a.causal ? r0 + nq : a.N; /* keys any row of this tile may see */
    src.mixed = a.mode == MODE_MIXED;
    const int64_t lrow = (int64_t)h * a.n_qblocks + qb; /* layout row */
    src.b1 = (a.mode == MODE_BLOCK || a.mode == MODE_MIXED) ? a.blk_ptr[lrow + 1] : 0;
    src.t0 = src.t1 = 0;
    if (a.mode == MODE_TOKEN || a.mode == MODE_MIXED) {
        src.t0 = a.tok_ptr[lrow];
        src.t1 = a.causal ? upper_bound(a.tok_idx, src.t0, a.tok_ptr[lrow + 1], src.kcut - 1)
                          : a.tok_ptr[lrow + 1];
    }
    tile cur;
    if (a.mode == MODE_DENSE)
        cur = src.kcut > 0 ? tile{ MODE_DENSE, 0, 0, min(BN, src.kcut), src.kcut } : no_tile();
    else if (a.mode == MODE_TOKEN)
        cur = token_from(src, src.t0);
    else
        cur = block_from(a, src, a.blk_ptr[lrow]);
    if (cur.phase >= 0) load_tile<T, D>(a, cur, kh, vh, ks0, vs0, kidx0);
    cp_commit();
    cp_wait<1>(); /* the Q group */
    __syncthreads();

    /* this warp's Q rows as A fragments, for the whole kernel */
    uint32_t qf[D / 16][4];
    for (int kk = 0; kk < D / 16; kk++)
        ldsm4(qf[kk], qs + (warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * LD + kk * 16 + (lane / 16) * 8);

    /* this thread's rows: g and g + 8 of the warp's 16 */
    const int row_a = r0 + warp * 16 + g, row_b = row_a + 8;
    const bool ok_a = warp * 16 + g < nq, ok_b = warp * 16 + g + 8 < nq;
    float o[D / 8][4];
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f; /* l: this thread's columns only */

    for (int it = 0; cur.phase >= 0; it++) {
        const int b = it & 1;
        const tile nxt = next_tile(a, src, cur);
        if (nxt.phase >= 0)
            load_tile<T, D>(a, nxt, kh, vh, ks0 + (b ^ 1) * BN * LD, vs0 + (b ^ 1) * BN * LD,
                            kidx0 + (b ^ 1) * BN);
        cp_commit();
        cp_wait<1>(); /* this tile's group */
        __syncthreads();
        const T *ks = ks0 + b * BN * LD, *vs = vs0 + b * BN * LD;
        const int *kidx = kidx0 + b * BN;

        /* S (16 x BN) = Q_w Kᵀ */
        float s[BN / 8][4];
        for (int j = 0; j < BN / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        for (int kk = 0; kk < D / 16; kk++)
            for (int np = 0; np < BN / 16; np++) {
                uint32_t f[4];
                ldsm4(f, ks + (np * 16 + (lane / 16) * 8 + (lane % 8)) * LD + kk * 16 + ((lane / 8) % 2) * 8);
                mma16<T>::run(s[2 * np], qf[kk], f[0], f[1]);
                mma16<T>::run(s[2 * np + 1], qf[kk], f[2], f[3]);
            }

        /* mask, online softmax (base 2); a quad of lanes shares a row. A
         * full contiguous tile wholly below the diagonal of a full query
         * tile needs no mask (the same for the whole CTA). */
        const bool full =
            cur.phase != MODE_TOKEN && cur.nk == BN && nq == BM && (!a.causal || cur.j0 + BN - 1 <= r0);
        float mx_a = -INFINITY, mx_b = -INFINITY;
        for (int j = 0; j < BN / 8; j++)
            for (int e = 0; e < 2; e++) {
                bool va = true, vb = true;
                if (!full) {
                    const int key = kidx[j * 8 + 2 * t4 + e];
                    va = ok_a && key >= 0 && (!a.causal || key <= row_a);
                    vb = ok_b && key >= 0 && (!a.causal || key <= row_b);
                }
                s[j][e] = va ? s[j][e] * a.scale_log2 : -INFINITY;
                s[j][2 + e] = vb ? s[j][2 + e] * a.scale_log2 : -INFINITY;
                mx_a = fmaxf(mx_a, s[j][e]);
                mx_b = fmaxf(mx_b, s[j][2 + e]);
            }
        for (int off = 1; off < 4; off <<= 1) {
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, off));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, off));
        }
        const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        /* -inf: nothing valid so far; everything stays zero */
        const float ref_a = mn_a == -INFINITY ? 0.0f : mn_a, ref_b = mn_b == -INFINITY ? 0.0f : mn_b;
        const float al_a = exp2f(m_a - ref_a), al_b = exp2f(m_b - ref_b); /* m = -inf gives 0 */
        m_a = mn_a;
        m_b = mn_b;
        float sum_a = 0.0f, sum_b = 0.0f;
        for (int j = 0; j < BN / 8; j++)
            for (int e = 0; e < 2; e++) {
                s[j][e] = exp2f(s[j][e] - ref_a); /* -inf gives 0 */
                s[j][2 + e] = exp2f(s[j][2 + e] - ref_b);
                sum_a += s[j][e];
                sum_b += s[j][2 + e];
            }
        l_a = l_a * al_a + sum_a;
        l_b = l_b * al_b + sum_b;
        for (int n = 0; n < D / 8; n++) {
            o[n][0] *= al_a;
            o[n][1] *= al_a;
            o[n][2] *= al_b;
            o[n][3] *= al_b;
        }

        /* O_w (16 x D) += P_w (16 x BN) V (BN x D); P's A fragments are S's */
        for (int kk = 0; kk < BN / 16; kk++) {
            const uint32_t p[4] = { mma16<T>::pack(s[2 * kk][0], s[2 * kk][1]),
                                    mma16<T>::pack(s[2 * kk][2], s[2 * kk][3]),
                                    mma16<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    mma16<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]) };
            for (int np = 0; np < D / 16; np++) {
                uint32_t f[4];
                ldsm4_t(f,
                        vs + (kk * 16 + ((lane / 8) % 2) * 8 + (lane % 8)) * LD + np * 16 + (lane / 16) * 8);
                mma16<T>::run(o[2 * np], p, f[0], f[1]);
                mma16<T>::run(o[2 * np + 1], p, f[2], f[3]);
            }
        }
        __syncthreads(); /* every warp is done with this buffer before it is refilled */
        cur = nxt;
    }

    /* O / l -> output; the row sum is spread over the quad */
    for (int off = 1; off < 4; off <<= 1) {
        l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
        l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
    }
    const float inv_a = l_a > 0.0f ? 1.0f / l_a : 0.0f, inv_b = l_b > 0.0f ? 1.0f / l_b : 0.0f;
    T *oa = a.o + hoff + (size_t)row_a * D, *ob = a.o + hoff + (size_t)row_b * D;
    for (int n = 0; n < D / 8; n++) {
        const int col = n * 8 + 2 * t4;
        if (ok_a) *reinterpret_cast<uint32_t *>(oa + col) = mma16<T>::pack(o[n][0] * inv_a, o[n][1] * inv_a);
        if (ok_b) *reinterpret_cast<uint32_t *>(ob + col) = mma16<T>::pack(o[n][2] * inv_b, o[n][3] * inv_b);
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
