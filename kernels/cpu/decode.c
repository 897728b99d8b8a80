/* decode.c — attention for one decode step (include/attnbench.h, "decode";
 * docs/decode.md): one query per (layer, head) row against a KV cache of
 * len keys, over the keys a finalised decode layout keeps.
 *
 * Decode reads every kept key and value once and does 4d FLOPs with them:
 * it is bound by memory bandwidth, and with few rows (one query per head)
 * one thread per row leaves cores idle. The work is therefore cut along the
 * keys and the pieces merged by the log-sum-exp rule of FlashAttention's
 * online softmax (Dao et al., arXiv 2205.14135):
 *   m = max(m1, m2); l = l1 e^(m1-m) + l2 e^(m2-m); acc likewise; o = acc / l.
 * Three ways to cut (ab_kernel_decode's strategy):
 *   HEADS  one unit per thread, no cut (FlashAttention-2's grid: idle
 *          cores when there are fewer units than threads);
 *   SPLITK flash-decoding (Dao, Haziza, Massa, Sizov, "Flash-Decoding for
 *          long-context inference", 2023): each unit's keys in `splits`
 *          equal chunks, then a reduction per unit;
 *   LEAN   Lean Attention (Sanovar et al., arXiv 2405.10480): every unit's
 *          key tiles laid end to end and the whole list cut into one equal
 *          contiguous range per thread (stream-K); a range may end inside
 *          one unit and begin the next; the partials of a unit are merged
 *          afterwards in key order (the "host" step), so the result does not
 *          depend on timing.
 * A unit is a group of rows that read the same keys: with grouped KV heads
 * (GQA) and a DENSE layout, the heads/kv_heads query heads of one KV head
 * share one pass over its keys (each key read once for the group); a sparse
 * layout may keep other keys per head, so there a unit is a run of rows of
 * one group that keep identical key lists (a static pattern such as a
 * window, or a selection shared by the group), one row when they differ.
 * The inner step, per tile of up to AB_DEC_TILE keys: the logits of every
 * row of the unit (dot products), the tile's exp through the kernels' vector
 * exp, then the value update.
 *
 * Speed (issue "Decode kernels on the CPU, near the memory limit"): a step
 * reads 2 N d 4 bytes per KV head and does 4 N d FLOPs per query head, so a
 * dense step should run at the memory bandwidth. On x86 CPUs with AVX-512
 * or AVX2 + FMA (the ISA of kernels/cpu/simd.h, ab_cpu_isa_pick;
 * AB_CPU_ISA=portable forces the plain path, AB_CPU_ISA=avx2 the AVX2 one)
 * run_segment takes the vector path, one tile driver feeding
 * seg_tile_avx512 or seg_tile_avx2 (described for AVX-512; AVX2 below):
 *  - the tile's key and value row addresses are resolved once (pages and
 *    token lists included), so the loops make no call per key;
 *  - logits: eight keys in flight, eight independent 16-wide FMA chains
 *    over d sharing each query vector, one horizontal reduce per key;
 *  - values: a 128-column block of a row's accumulator lives in eight zmm
 *    registers for the whole tile (rescaled by the online-softmax factor
 *    once per tile, stored once), each value row streamed in with one FMA
 *    per 16 floats (software-pipelined by the out-of-order core: eight
 *    independent chains);
 *  - d need not be a multiple of 16: full vectors are plain loads (a mask
 *    per register measured 1.7x slower), the last d % 16 columns one masked
 *    register (lanes past d are never read); d > 128 takes several blocks;
 *  - GQA: all rows of a unit compute their logits on the tile before any
 *    value update, so the tile's keys, then its values, are read from
 *    memory once and reused from L1 by the group (64 keys x d = 128: 32 KiB);
 *    when the group is a multiple of 4 rows, four rows go together
 *    (logits4x4: 4 rows x 4 keys, 16 FMA chains, 8 loads per 16 FMAs;
 *    vblock4: 4 rows x 64 columns of accumulators, each value vector loaded
 *    once for the four rows), 1.35x faster on L2-resident data than one row
 *    at a time: a group reads 1/G of the bytes per FLOP, so it is the one
 *    case where the FMA units, not memory, set the pace;
 *  - prefetch: a tile whose keys are one contiguous run (dense, or
 *    consecutive pages) is left to the hardware stream prefetcher, which
 *    measured as good as software prefetch here; otherwise (scattered
 *    pages, token lists) the next tile's key and value rows are prefetched
 *    while this tile computes;
 *  - threads: LEAN (the default) gives every thread one contiguous range of
 *    the flattened tile list, so with H = 1 both cores stream half of the
 *    cache each; the pieces and their merge order depend only on the shape
 *    and the thread count, never on timing (results are bitwise repeatable).
 * AVX2 + FMA (seg_tile_avx2; 8-wide vectors, 16 ymm registers), the same
 * plan: logits of eight keys in flight, their eight accumulators reduced at
 * once by an hadd tree (hadd x4, hadd x2, one 128-bit permute and add) into
 * one vector of eight logits; values in 64-column blocks (8 ymm); the last
 * d % 8 columns by maskload / maskstore (masked lanes do not fault); GQA
 * rows two at a time (logits2x4: 2 rows x 4 keys, 8 chains; vblock2_avx2:
 * 2 rows x 32 columns; 1.2x faster than one row at a time on L2-resident
 * data), with the few keys (value columns) in flight as the outer loop and
 * the rows inner, so the group reads them from L1; and, unlike AVX-512,
 * software prefetch AB_DEC_PFD rows ahead for every layout, contiguous runs
 * included (1.2x on the AVX2 machine, an AMD EPYC of family 17h).
 * Other CPUs keep the plain path below (dot / axpy per key, vectorised by
 * the compiler through target_clones). bench/decode_bench.c measures both
 * the STREAM triad bandwidth and the achieved GB/s of every strategy.
 * Deviation from the papers: fp32 throughout, one query per head (no
 * batching of queries), CPU threads where the papers use GPU thread blocks;
 * Lean Attention's tile is AB_DEC_TILE keys. */
#include "kernels/kernels.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/simd.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define AB_DEC_X86 1
#else
#define AB_DEC_X86 0
#endif

#define AB_DEC_TILE   64 /* keys per inner step; also LEAN's unit of work */
#define AB_DEC_MAXG   16 /* query heads per unit (GQA group) handled at once */
#define AB_DEC_MAXPAR 64 /* partial segments per thread at most (LEAN) */

/* The kept keys of one row, in key order, as an ordinal space [0, count):
 * ordinal u is key key_at(u). DENSE: all len keys; BLOCK and MIXED: the
 * kept pages (only the last page of the cache may be short, and it sorts
 * last), then MIXED's tokens; TOKEN: the list. */
typedef struct rowkeys {
    int kind; /* ab_layout_kind */
    int len, bk;
    const int32_t *blk; /* kept pages */
    int nblk;
    int64_t blk_keys; /* keys in the kept pages */
    const int32_t *tok;
    int ntok;
    int64_t count;
} rowkeys;

static void rowkeys_of(rowkeys *r, const ab_layout *l, int row, int len)
{
    memset(r, 0, sizeof *r);
    r->len = len;
    if (!l || l->kind == AB_LAYOUT_DENSE) {
        r->kind = AB_LAYOUT_DENSE;
        r->count = len;
        return;
    }
    r->kind = l->kind;
    r->bk = l->block_k;
    if (l->blk_ptr && (l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_MIXED)) {
        r->blk = l->blk_idx + l->blk_ptr[row];
        r->nblk = (int)(l->blk_ptr[row + 1] - l->blk_ptr[row]);
        r->blk_keys = (int64_t)r->nblk * r->bk;
        if (r->nblk > 0) {
            const int64_t end = (int64_t)(r->blk[r->nblk - 1] + 1) * r->bk;
            if (end > len) r->blk_keys -= end - len;
        }
    }
    if (l->tok_ptr && (l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED)) {
        r->tok = l->tok_idx + l->tok_ptr[row];
        r->ntok = (int)(l->tok_ptr[row + 1] - l->tok_ptr[row]);
    }
    r->count = r->blk_keys + r->ntok;
}

/* Keys of ordinals [u, u + n) into idx (n <= AB_DEC_TILE); returns the
 * length of the leading run of consecutive keys (a run is read in place). */
static int rowkeys_fill(const rowkeys *r, int64_t u, int n, int32_t *idx)
{
    for (int t = 0; t < n; t++) {
        const int64_t o = u + t;
        if (r->kind == AB_LAYOUT_DENSE)
            idx[t] = (int32_t)o;
        else if (o < r->blk_keys)
            idx[t] = r->blk[o / r->bk] * r->bk + (int32_t)(o % r->bk);
        else
            idx[t] = r->tok[o - r->blk_keys];
    }
    int run = 1;
    while (run < n && idx[run] == idx[0] + run) run++;
    return run;
}

/* Online-softmax state of g rows over one segment of keys. */
typedef struct part {
    float m[AB_DEC_MAXG], l[AB_DEC_MAXG];
    float *acc; /* (g, d) */
} part;

/* Row a's online-softmax step over a tile's n logits s (exponentiated in
 * place, shifted by the new running max, by the ISA's expsum, an
 * ab_exp_max_sum: that max is at least every logit): updates
 * m and l and returns alpha, the factor that rescales the row's
 * accumulator before the tile's values are added. */
static float online_step(part *pt, int a, float *s, int n, double (*expsum)(float *, int, float))
{
    float mx = -INFINITY;
    for (int t = 0; t < n; t++) mx = s[t] > mx ? s[t] : mx;
    const float m_new = mx > pt->m[a] ? mx : pt->m[a];
    const float alpha = pt->m[a] == -INFINITY ? 0.0f : expf(pt->m[a] - m_new);
    const double sum = expsum(s, n, m_new);
    pt->l[a] = pt->l[a] * alpha + (float)sum;
    pt->m[a] = m_new;
    return alpha;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) static float dot(const float *a, const float *b,
                                                                              int d)
{
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < d; c++) s += a[c] * b[c];
    return s;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) static void axpy_scale(float *acc, float alpha,
                                                                                    const float *v, float p,
                                                                                    int d)
{
#pragma omp simd
    for (int c = 0; c < d; c++) acc[c] = acc[c] * alpha + p * v[c];
}

__attribute__((target_clones("avx512f", "avx2", "default"))) static void axpy(float *acc, const float *v,
                                                                              float p, int d)
{
#pragma omp simd
    for (int c = 0; c < d; c++) acc[c] += p * v[c];
}

/* The AVX-512 inner step (the fast path): the tile's key rows are known up
 * front (kp[t], vp[t]), the logits of eight keys are in flight at once
 * (eight 16-wide FMA chains over d, one horizontal reduce per key), and the
 * value update keeps a 128-column block of the accumulator in eight zmm
 * registers across all keys of the tile (rescaled once per tile), so the
 * value rows stream through with one FMA per 16 floats and no call per key.
 * d need not be a multiple of 16: full vectors are plain loads, the last d % 16 columns a masked load
 * (masked-off lanes are never read). The next tile's rows are prefetched
 * when the layout is not one contiguous run (pages, tokens); a contiguous
 * run is left to the hardware prefetcher. */
#if AB_DEC_X86
/* nb (1..8, a constant after inlining) full vectors of columns [o, o + 16 nb)
 * of one row's accumulator, in registers across the tile's n keys. Plain
 * loads: masked ones with a mask per register measured 1.7x slower. */
__attribute__((target("avx512f"), always_inline)) static inline void vblock(float *acc,
                                                                            const float *const *vp,
                                                                            const float *s, int n, __m512 al,
                                                                            int o, const int nb)
{
    __m512 r[8];
    for (int j = 0; j < nb; j++) r[j] = _mm512_mul_ps(al, _mm512_loadu_ps(acc + o + 16 * j));
    for (int t = 0; t < n; t++) {
        const __m512 p = _mm512_set1_ps(s[t]);
        const float *vr = vp[t] + o;
        for (int j = 0; j < nb; j++) r[j] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vr + 16 * j), r[j]);
    }
    for (int j = 0; j < nb; j++) _mm512_storeu_ps(acc + o + 16 * j, r[j]);
}

/* GQA, four rows at a time (the rows of one KV head read the same keys):
 * logits of rows a..a+3 against keys t..t+3, 16 FMA chains; per 16 columns
 * four query and four key loads feed 16 FMAs (one row at a time: 9 loads
 * per 8). */
__attribute__((target("avx512f"), always_inline)) static inline void logits4x4(const float *q, int d, int nf,
                                                                               int rem, __mmask16 tail,
                                                                               const float *const *kp,
                                                                               float scale,
                                                                               float (*s)[AB_DEC_TILE], int t)
{
    __m512 c[4][4];
    for (int r = 0; r < 4; r++)
        for (int e = 0; e < 4; e++) c[r][e] = _mm512_setzero_ps();
    for (int j = 0; j <= nf; j++) {
        if (j == nf && !rem) break;
        const __mmask16 m = j < nf ? (__mmask16)0xFFFFu : tail;
        __m512 x[4], k[4];
        for (int r = 0; r < 4; r++) x[r] = _mm512_maskz_loadu_ps(m, q + (size_t)r * d + 16 * j);
        for (int e = 0; e < 4; e++) k[e] = _mm512_maskz_loadu_ps(m, kp[t + e] + 16 * j);
        for (int r = 0; r < 4; r++)
            for (int e = 0; e < 4; e++) c[r][e] = _mm512_fmadd_ps(x[r], k[e], c[r][e]);
    }
    for (int r = 0; r < 4; r++)
        for (int e = 0; e < 4; e++) s[r][t + e] = scale * _mm512_reduce_add_ps(c[r][e]);
}

/* Values of rows a..a+3: nb (1..4, constant after inlining) vectors of
 * columns from o, 4 x nb accumulators in registers across the tile; per key
 * nb value loads and four broadcasts feed 4 nb FMAs. m: the load mask
 * (all ones but for the d % 16 tail). */
__attribute__((target("avx512f"), always_inline)) static inline void vblock4(float *acc, int d,
                                                                             const float *const *vp,
                                                                             float (*s)[AB_DEC_TILE], int n,
                                                                             const float *alpha, int o,
                                                                             const int nb, __mmask16 m)
{
    __m512 r[4][4];
    for (int a = 0; a < 4; a++)
        for (int j = 0; j < nb; j++)
            r[a][j] = _mm512_mul_ps(_mm512_set1_ps(alpha[a]),
                                    _mm512_maskz_loadu_ps(m, acc + (size_t)a * d + o + 16 * j));
    for (int t = 0; t < n; t++) {
        __m512 v[4];
        for (int j = 0; j < nb; j++) v[j] = _mm512_maskz_loadu_ps(m, vp[t] + o + 16 * j);
        for (int a = 0; a < 4; a++) {
            const __m512 p = _mm512_set1_ps(s[a][t]);
            for (int j = 0; j < nb; j++) r[a][j] = _mm512_fmadd_ps(p, v[j], r[a][j]);
        }
    }
    for (int a = 0; a < 4; a++)
        for (int j = 0; j < nb; j++) _mm512_mask_storeu_ps(acc + (size_t)a * d + o + 16 * j, m, r[a][j]);
}

__attribute__((target("avx512f"))) static void seg_tile_avx512(const float *q, int g, const float *const *kp,
                                                               const float *const *vp, int n, int d,
                                                               float scale, part *pt, int np)
{
    (void)np;
    const int nf = d / 16, rem = d % 16, of = 16 * nf; /* full vectors; the masked tail at of */
    const __mmask16 tail = (__mmask16)((1u << rem) - 1u);
    float sg[AB_DEC_MAXG][AB_DEC_TILE];
    /* logits of every row first, then the values of every row: the tile's
     * keys (then values) stay in L1 while the g rows of a GQA group reuse them */
    const int g4 = g % 4 == 0 ? g : 0; /* rows done four at a time (GQA) */
    for (int a = 0; a < g4; a += 4) {
        int t = 0;
        for (; t + 4 <= n; t += 4) logits4x4(q + (size_t)a * d, d, nf, rem, tail, kp, scale, sg + a, t);
        for (int r = a; r < a + 4; r++) /* the last n % 4 keys */
            for (int u = t; u < n; u++) {
                __m512 c0 = _mm512_setzero_ps();
                for (int j = 0; j <= nf; j++) {
                    if (j == nf && !rem) break;
                    const __mmask16 m = j < nf ? (__mmask16)0xFFFFu : tail;
                    c0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + (size_t)r * d + 16 * j),
                                         _mm512_maskz_loadu_ps(m, kp[u] + 16 * j), c0);
                }
                sg[r][u] = scale * _mm512_reduce_add_ps(c0);
            }
    }
    for (int a = g4; a < g; a++) {
        float *s = sg[a];
        const float *qa = q + (size_t)a * d;
        /* logits, eight keys at a time: eight independent FMA chains */
        int t = 0;
        for (; t + 8 <= n; t += 8) {
            __m512 c[8];
            for (int e = 0; e < 8; e++) c[e] = _mm512_setzero_ps();
            for (int j = 0; j < nf; j++) {
                const __m512 x = _mm512_loadu_ps(qa + 16 * j);
                for (int e = 0; e < 8; e++)
                    c[e] = _mm512_fmadd_ps(x, _mm512_loadu_ps(kp[t + e] + 16 * j), c[e]);
            }
            if (rem) {
                const __m512 x = _mm512_maskz_loadu_ps(tail, qa + of);
                for (int e = 0; e < 8; e++)
                    c[e] = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(tail, kp[t + e] + of), c[e]);
            }
            for (int e = 0; e < 8; e++) s[t + e] = scale * _mm512_reduce_add_ps(c[e]);
        }
        for (; t < n; t++) {
            __m512 c0 = _mm512_setzero_ps();
            for (int j = 0; j < nf; j++)
                c0 = _mm512_fmadd_ps(_mm512_loadu_ps(qa + 16 * j), _mm512_loadu_ps(kp[t] + 16 * j), c0);
            if (rem)
                c0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, qa + of),
                                     _mm512_maskz_loadu_ps(tail, kp[t] + of), c0);
            s[t] = scale * _mm512_reduce_add_ps(c0);
        }
    }
    float alphas[AB_DEC_MAXG];
    for (int a = 0; a < g; a++) alphas[a] = online_step(pt, a, sg[a], n, ab_exp_max_sum_avx512);
    for (int a = 0; a < g4; a += 4) {
        float *acc = pt->acc + (size_t)a * d;
        int j = 0;
        for (; j + 4 <= nf; j += 4) vblock4(acc, d, vp, sg + a, n, alphas + a, 16 * j, 4, (__mmask16)0xFFFFu);
        for (; j < nf; j++) vblock4(acc, d, vp, sg + a, n, alphas + a, 16 * j, 1, (__mmask16)0xFFFFu);
        if (rem) vblock4(acc, d, vp, sg + a, n, alphas + a, of, 1, tail);
    }
    for (int a = g4; a < g; a++) {
        float *s = sg[a];
        /* values: up to 128 columns (8 vectors) of the accumulator in registers */
        float *acc = pt->acc + (size_t)a * d;
        const __m512 al = _mm512_set1_ps(alphas[a]);
        for (int j0 = 0; j0 < nf; j0 += 8) {
            switch (nf - j0 < 8 ? nf - j0 : 8) {
            case 1: vblock(acc, vp, s, n, al, 16 * j0, 1); break;
            case 2: vblock(acc, vp, s, n, al, 16 * j0, 2); break;
            case 3: vblock(acc, vp, s, n, al, 16 * j0, 3); break;
            case 4: vblock(acc, vp, s, n, al, 16 * j0, 4); break;
            case 5: vblock(acc, vp, s, n, al, 16 * j0, 5); break;
            case 6: vblock(acc, vp, s, n, al, 16 * j0, 6); break;
            case 7: vblock(acc, vp, s, n, al, 16 * j0, 7); break;
            default: vblock(acc, vp, s, n, al, 16 * j0, 8); break;
            }
        }
        if (rem) { /* the last d % 16 columns: one masked register */
            __m512 r = _mm512_mul_ps(al, _mm512_maskz_loadu_ps(tail, acc + of));
            for (int t = 0; t < n; t++)
                r = _mm512_fmadd_ps(_mm512_set1_ps(s[t]), _mm512_maskz_loadu_ps(tail, vp[t] + of), r);
            _mm512_mask_storeu_ps(acc + of, tail, r);
        }
    }
}

/* The AVX2 + FMA inner step: the plan of seg_tile_avx512 with 8-wide
 * vectors and 16 ymm registers. Logits: eight keys in flight, their eight
 * accumulators reduced together by an hadd tree into one vector of eight
 * logits; values: 64 columns (8 ymm) of a row's accumulator per pass. The
 * last d % 8 columns are masked loads and stores (_mm256_maskload_ps does
 * not fault on masked-off lanes: nothing past d is read). GQA rows go two
 * at a time. The rows AB_DEC_PFD keys ahead (into the next tile: kp / vp
 * hold np >= n rows) are prefetched while the tile computes, keys during
 * the logits and values during the first row's value pass, whatever the
 * layout. Measured on the AVX2 machine (EPYC, family 17h, one thread, N =
 * 64K-256K, best of 10): dense one head 8.1 -> 9.5 GB/s over leaving the
 * contiguous run to the hardware prefetcher (a bare read of two streams
 * reaches 10.4 GB/s, 11.9 with software prefetch), GQA 8/1 20 -> 17 ms;
 * prefetching the whole next tile up front (AVX-512's way) gained nothing;
 * a distance of 16 to 64 keys measured the same, T0 the same as NTA. */
#define AB_DEC_PFD 16

/* The eight horizontal sums of c[0..7], in order, as one vector: two
 * rounds of hadd leave each 128-bit lane's sums, one permute pairs the
 * lanes. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 hsum8x8(const __m256 *c)
{
    const __m256 h01 = _mm256_hadd_ps(c[0], c[1]), h23 = _mm256_hadd_ps(c[2], c[3]);
    const __m256 h45 = _mm256_hadd_ps(c[4], c[5]), h67 = _mm256_hadd_ps(c[6], c[7]);
    const __m256 lo = _mm256_hadd_ps(h01, h23), hi = _mm256_hadd_ps(h45, h67);
    return _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31));
}

__attribute__((target("avx2,fma"), always_inline)) static inline float hsum8(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* A vector loaded once and used by several FMAs: kept in a register (GCC
 * otherwise folds the load into each FMA, one load per use). */
#define AB_DEC_KEEP(v) __asm__("" : "+x"(v))

/* One key's logit for row qa (the keys past the last group of eight). */
__attribute__((target("avx2,fma"), always_inline)) static inline float dot8(const float *qa, const float *k,
                                                                            int nf, int rem, __m256i tail)
{
    __m256 c0 = _mm256_setzero_ps();
    for (int j = 0; j < nf; j++)
        c0 = _mm256_fmadd_ps(_mm256_loadu_ps(qa + 8 * j), _mm256_loadu_ps(k + 8 * j), c0);
    if (rem)
        c0 = _mm256_fmadd_ps(_mm256_maskload_ps(qa + 8 * nf, tail), _mm256_maskload_ps(k + 8 * nf, tail), c0);
    return hsum8(c0);
}

/* Logits of row qa against keys t..t+7: eight FMA chains over d sharing
 * each query load; one hadd tree, one scaled store of eight logits. */
__attribute__((target("avx2,fma"), always_inline)) static inline void logits1x8(const float *qa, int nf,
                                                                                int rem, __m256i tail,
                                                                                const float *const *kp,
                                                                                __m256 sc, float *s, int t)
{
    __m256 c[8];
    for (int e = 0; e < 8; e++) c[e] = _mm256_setzero_ps();
    for (int j = 0; j < nf; j++) {
        const __m256 x = _mm256_loadu_ps(qa + 8 * j);
        for (int e = 0; e < 8; e++) c[e] = _mm256_fmadd_ps(x, _mm256_loadu_ps(kp[t + e] + 8 * j), c[e]);
    }
    if (rem) {
        const __m256 x = _mm256_maskload_ps(qa + 8 * nf, tail);
        for (int e = 0; e < 8; e++)
            c[e] = _mm256_fmadd_ps(x, _mm256_maskload_ps(kp[t + e] + 8 * nf, tail), c[e]);
    }
    _mm256_storeu_ps(s + t, _mm256_mul_ps(sc, hsum8x8(c)));
}

/* One 8-column step of logits2x4: rows x0, x1, keys k0..k3. */
__attribute__((target("avx2,fma"), always_inline)) static inline void step2x4(__m256 *c, __m256 x0, __m256 x1,
                                                                              const __m256 *k)
{
    for (int e = 0; e < 4; e++) {
        c[e] = _mm256_fmadd_ps(x0, k[e], c[e]);
        c[4 + e] = _mm256_fmadd_ps(x1, k[e], c[4 + e]);
    }
}

/* GQA, two rows at a time: rows qa, qa + d against keys t..t+3, eight FMA
 * chains; per 8 columns two query and four key loads feed 8 FMAs (one row
 * at a time: 9 loads per 8). The tree yields row 0's four logits, then
 * row 1's. */
__attribute__((target("avx2,fma"), always_inline)) static inline void logits2x4(const float *qa, int d,
                                                                                int nf, int rem, __m256i tail,
                                                                                const float *const *kp,
                                                                                __m256 sc, float *s0,
                                                                                float *s1, int t)
{
    __m256 c[8], k[4];
    for (int e = 0; e < 8; e++) c[e] = _mm256_setzero_ps();
    for (int j = 0; j < nf; j++) {
        for (int e = 0; e < 4; e++) {
            k[e] = _mm256_loadu_ps(kp[t + e] + 8 * j);
            AB_DEC_KEEP(k[e]);
        }
        step2x4(c, _mm256_loadu_ps(qa + 8 * j), _mm256_loadu_ps(qa + d + 8 * j), k);
    }
    if (rem) {
        for (int e = 0; e < 4; e++) k[e] = _mm256_maskload_ps(kp[t + e] + 8 * nf, tail);
        step2x4(c, _mm256_maskload_ps(qa + 8 * nf, tail), _mm256_maskload_ps(qa + d + 8 * nf, tail), k);
    }
    const __m256 r = _mm256_mul_ps(sc, hsum8x8(c));
    _mm_storeu_ps(s0 + t, _mm256_castps256_ps128(r));
    _mm_storeu_ps(s1 + t, _mm256_extractf128_ps(r, 1));
}

/* Load columns [o, o + 8) of row x: the masked tail when masked (a
 * constant after inlining). */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 ld8(const float *x, int masked,
                                                                            __m256i m)
{
    return masked ? _mm256_maskload_ps(x, m) : _mm256_loadu_ps(x);
}

__attribute__((target("avx2,fma"), always_inline)) static inline void st8(float *x, __m256 v, int masked,
                                                                          __m256i m)
{
    if (masked)
        _mm256_maskstore_ps(x, m, v);
    else
        _mm256_storeu_ps(x, v);
}

/* nb (1..8, a constant after inlining) vectors of columns [o, o + 8 nb) of
 * one row's accumulator, in registers across the tile's n keys: per key one
 * broadcast and one FMA per 8 floats. masked (a constant): the d % 8 tail,
 * nb = 1. np > 0: prefetch columns [o, o + 8 nb) of the value rows
 * AB_DEC_PFD keys ahead, up to row np. */
__attribute__((target("avx2,fma"), always_inline)) static inline void vblock_avx2(
    float *acc, const float *const *vp, const float *s, int n, __m256 al, int o, const int nb,
    const int masked, __m256i m, int np)
{
    __m256 r[8];
    for (int j = 0; j < nb; j++) r[j] = _mm256_mul_ps(al, ld8(acc + o + 8 * j, masked, m));
    for (int t = 0; t < n; t++) {
        if (t + AB_DEC_PFD < np)
            for (int c = 0; c < 8 * nb; c += 16)
                _mm_prefetch((const char *)(vp[t + AB_DEC_PFD] + o + c), _MM_HINT_T0);
        const __m256 p = _mm256_broadcast_ss(s + t);
        const float *vr = vp[t] + o;
        for (int j = 0; j < nb; j++) r[j] = _mm256_fmadd_ps(p, ld8(vr + 8 * j, masked, m), r[j]);
    }
    for (int j = 0; j < nb; j++) st8(acc + o + 8 * j, r[j], masked, m);
}

/* Values of rows a, a + 1 (acc, acc + d): nb (1..4, constant) vectors of
 * columns from o, 2 x nb accumulators; per key nb value loads and two
 * broadcasts feed 2 nb FMAs. np: as vblock_avx2. */
__attribute__((target("avx2,fma"), always_inline)) static inline void vblock2_avx2(
    float *acc, int d, const float *const *vp, const float *s0, const float *s1, int n, __m256 al0,
    __m256 al1, int o, const int nb, const int masked, __m256i m, int np)
{
    __m256 r0[4], r1[4];
    for (int j = 0; j < nb; j++) {
        r0[j] = _mm256_mul_ps(al0, ld8(acc + o + 8 * j, masked, m));
        r1[j] = _mm256_mul_ps(al1, ld8(acc + d + o + 8 * j, masked, m));
    }
    for (int t = 0; t < n; t++) {
        if (t + AB_DEC_PFD < np)
            for (int c = 0; c < 8 * nb; c += 16)
                _mm_prefetch((const char *)(vp[t + AB_DEC_PFD] + o + c), _MM_HINT_T0);
        const __m256 p0 = _mm256_broadcast_ss(s0 + t), p1 = _mm256_broadcast_ss(s1 + t);
        const float *vr = vp[t] + o;
        for (int j = 0; j < nb; j++) {
            __m256 v = ld8(vr + 8 * j, masked, m);
            AB_DEC_KEEP(v);
            r0[j] = _mm256_fmadd_ps(p0, v, r0[j]);
            r1[j] = _mm256_fmadd_ps(p1, v, r1[j]);
        }
    }
    for (int j = 0; j < nb; j++) {
        st8(acc + o + 8 * j, r0[j], masked, m);
        st8(acc + d + o + 8 * j, r1[j], masked, m);
    }
}

/* The values of rows a, a + 1 at columns from 8 j, nv (1..4) full vectors. */
__attribute__((target("avx2,fma"), always_inline)) static inline void vpair(float *x, int d,
                                                                            const float *const *vp,
                                                                            const float *s0, const float *s1,
                                                                            int n, __m256 al0, __m256 al1,
                                                                            int j, int nv, __m256i m, int np)
{
    switch (nv) {
    case 1: vblock2_avx2(x, d, vp, s0, s1, n, al0, al1, 8 * j, 1, 0, m, np); break;
    case 2: vblock2_avx2(x, d, vp, s0, s1, n, al0, al1, 8 * j, 2, 0, m, np); break;
    case 3: vblock2_avx2(x, d, vp, s0, s1, n, al0, al1, 8 * j, 3, 0, m, np); break;
    default: vblock2_avx2(x, d, vp, s0, s1, n, al0, al1, 8 * j, 4, 0, m, np); break;
    }
}

/* The values of one row at columns from 8 j, nv (1..8) full vectors. */
__attribute__((target("avx2,fma"), always_inline)) static inline void vone(float *x, const float *const *vp,
                                                                           const float *s, int n, __m256 al,
                                                                           int j, int nv, __m256i m, int np)
{
    switch (nv) {
    case 1: vblock_avx2(x, vp, s, n, al, 8 * j, 1, 0, m, np); break;
    case 2: vblock_avx2(x, vp, s, n, al, 8 * j, 2, 0, m, np); break;
    case 3: vblock_avx2(x, vp, s, n, al, 8 * j, 3, 0, m, np); break;
    case 4: vblock_avx2(x, vp, s, n, al, 8 * j, 4, 0, m, np); break;
    case 5: vblock_avx2(x, vp, s, n, al, 8 * j, 5, 0, m, np); break;
    case 6: vblock_avx2(x, vp, s, n, al, 8 * j, 6, 0, m, np); break;
    case 7: vblock_avx2(x, vp, s, n, al, 8 * j, 7, 0, m, np); break;
    default: vblock_avx2(x, vp, s, n, al, 8 * j, 8, 0, m, np); break;
    }
}

__attribute__((target("avx2,fma"))) static void seg_tile_avx2(const float *q, int g, const float *const *kp,
                                                              const float *const *vp, int n, int d,
                                                              float scale, part *pt, int np)
{
    const int nf = d / 8, rem = d % 8, of = 8 * nf; /* full vectors; the masked tail at of */
    const __m256i tail =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 sc = _mm256_set1_ps(scale);
    float sg[AB_DEC_MAXG][AB_DEC_TILE];
    /* logits of every row first, then the values of every row; within each,
     * the keys (value columns) in flight are the outer loop and the rows the
     * inner one, so a GQA group reads them from L1. Rows two at a time
     * (2 x 4 keys; 2 x 32 value columns): 1.2x faster than one at a time on
     * L2-resident GQA data; an odd group's last row goes alone. */
    const int g2 = g - g % 2;
    int t = 0;
    for (; t + 8 <= n; t += 8) {
        for (int e = t + AB_DEC_PFD; e < t + 8 + AB_DEC_PFD && e < np; e++)
            for (int c = 0; c < d; c += 16) _mm_prefetch((const char *)(kp[e] + c), _MM_HINT_T0);
        for (int a = 0; a < g2; a += 2) {
            logits2x4(q + (size_t)a * d, d, nf, rem, tail, kp, sc, sg[a], sg[a + 1], t);
            logits2x4(q + (size_t)a * d, d, nf, rem, tail, kp, sc, sg[a], sg[a + 1], t + 4);
        }
        if (g2 < g) logits1x8(q + (size_t)g2 * d, nf, rem, tail, kp, sc, sg[g2], t);
    }
    for (; t < n; t++) /* the last n % 8 keys, one at a time */
        for (int a = 0; a < g; a++) sg[a][t] = scale * dot8(q + (size_t)a * d, kp[t], nf, rem, tail);
    __m256 al[AB_DEC_MAXG];
    for (int a = 0; a < g; a++) al[a] = _mm256_set1_ps(online_step(pt, a, sg[a], n, ab_exp_max_sum_avx2));
    /* values: one block of columns at a time for every row; the first row
     * (pair) of a block prefetches the value rows ahead */
    float *acc = pt->acc;
    for (int j = 0; j < nf; j += 4)
        for (int a = 0; a < g2; a += 2)
            vpair(acc + (size_t)a * d, d, vp, sg[a], sg[a + 1], n, al[a], al[a + 1], j,
                  nf - j < 4 ? nf - j : 4, tail, a == 0 ? np : 0);
    if (rem)
        for (int a = 0; a < g2; a += 2)
            vblock2_avx2(acc + (size_t)a * d, d, vp, sg[a], sg[a + 1], n, al[a], al[a + 1], of, 1, 1, tail,
                         a == 0 ? np : 0);
    if (g2 < g) {
        float *x = acc + (size_t)g2 * d;
        for (int j = 0; j < nf; j += 8)
            vone(x, vp, sg[g2], n, al[g2], j, nf - j < 8 ? nf - j : 8, tail, g2 ? 0 : np);
        if (rem) vblock_avx2(x, vp, sg[g2], n, al[g2], of, 1, 1, tail, g2 ? 0 : np);
    }
}

/* The tile step of a vector ISA: the same driver (run_segment) feeds either. */
typedef void (*seg_tile_fn)(const float *q, int g, const float *const *kp, const float *const *vp, int n,
                            int d, float scale, part *pt, int np);
#endif

#if AB_DEC_X86
/* The key and value row addresses of ordinals [u, u + n) of r into kp, vp
 * (idx: scratch of n); returns rowkeys_fill's contiguous run. */
static int tile_rows(const rowkeys *r, int64_t u, int n, int32_t *idx, const float *kh, const float *vh,
                     int d, const float **kp, const float **vp)
{
    const int run = rowkeys_fill(r, u, n, idx);
    for (int t = 0; t < n; t++) {
        kp[t] = kh + (size_t)idx[t] * d;
        vp[t] = vh + (size_t)idx[t] * d;
    }
    return run;
}
#endif

/* Fold keys of ordinals [u0, u1) of r into the g rows' state: queries q
 * (g, d), keys and values of one KV head (kh, vh: rows of d floats). */
static void run_segment(const rowkeys *r, int64_t u0, int64_t u1, const float *q, int g, const float *kh,
                        const float *vh, int d, float scale, part *pt, int isa)
{
#if AB_DEC_X86
    const seg_tile_fn tile = isa == AB_ISA_AVX512 ? seg_tile_avx512
                             : isa == AB_ISA_AVX2 ? seg_tile_avx2
                                                  : NULL;
    if (tile) {
        /* the rows of this tile, then of the next (seg_tile_avx2 prefetches
         * AB_DEC_PFD rows ahead, into the next tile) */
        const float *kp[2 * AB_DEC_TILE], *vp[2 * AB_DEC_TILE];
        int32_t idx[AB_DEC_TILE];
        int n = (int)(u1 - u0 < AB_DEC_TILE ? u1 - u0 : AB_DEC_TILE), run = 0;
        if (u1 > u0) run = tile_rows(r, u0, n, idx, kh, vh, d, kp, vp);
        for (int64_t u = u0; u < u1; u += AB_DEC_TILE) {
            const int64_t un = u + AB_DEC_TILE;
            int nn = 0, nrun = 0;
            if (un < u1) {
                nn = (int)(u1 - un < AB_DEC_TILE ? u1 - un : AB_DEC_TILE);
                nrun = tile_rows(r, un, nn, idx, kh, vh, d, kp + n, vp + n);
                /* AVX-512: the next tile prefetched here when it is not one run */
                if (isa == AB_ISA_AVX512 && (nrun < nn || run < n))
                    for (int t = n; t < n + nn; t++)
                        for (int c = 0; c < d; c += 16) {
                            _mm_prefetch((const char *)(kp[t] + c), _MM_HINT_T0);
                            _mm_prefetch((const char *)(vp[t] + c), _MM_HINT_T0);
                        }
            }
            tile(q, g, kp, vp, n, d, scale, pt, n + nn);
            memmove(kp, kp + n, sizeof *kp * (size_t)nn);
            memmove(vp, vp + n, sizeof *vp * (size_t)nn);
            n = nn;
            run = nrun;
        }
        return;
    }
#else
    (void)isa;
#endif
    float s[AB_DEC_TILE];
    int32_t idx[AB_DEC_TILE];
    for (int64_t u = u0; u < u1; u += AB_DEC_TILE) {
        const int n = (int)(u1 - u < AB_DEC_TILE ? u1 - u : AB_DEC_TILE);
        rowkeys_fill(r, u, n, idx);
        for (int a = 0; a < g; a++) {
            const float *qa = q + (size_t)a * d;
            for (int t = 0; t < n; t++) s[t] = scale * dot(qa, kh + (size_t)idx[t] * d, d);
            const float alpha = online_step(pt, a, s, n, ab_cpu_exp_max_sum);
            float *acc = pt->acc + (size_t)a * d;
            axpy_scale(acc, alpha, vh + (size_t)idx[0] * d, s[0], d);
            for (int t = 1; t < n; t++) axpy(acc, vh + (size_t)idx[t] * d, s[t], d);
        }
    }
}

/* b into a (both over the same g rows): the log-sum-exp merge. */
static void merge_part(part *a, const part *b, int g, int d)
{
    for (int r = 0; r < g; r++) {
        if (b->m[r] == -INFINITY) continue;
        const float m = a->m[r] > b->m[r] ? a->m[r] : b->m[r];
        const float ea = a->m[r] == -INFINITY ? 0.0f : expf(a->m[r] - m), eb = expf(b->m[r] - m);
        a->l[r] = a->l[r] * ea + b->l[r] * eb;
        a->m[r] = m;
        float *x = a->acc + (size_t)r * d;
        const float *y = b->acc + (size_t)r * d;
        for (int c = 0; c < d; c++) x[c] = x[c] * ea + y[c] * eb;
    }
}

/* One unit: g rows starting at row0 that read the same keys. */
typedef struct unit {
    int row0, g;
    int64_t kvh; /* KV head index over layers: layer * kv_heads + kv head */
    rowkeys keys;
} unit;

/* A piece of work: ordinals [u0, u1) of unit `unit`, its partial in slot. */
typedef struct piece {
    int unit, owner; /* owner: LEAN's thread */
    int64_t u0, u1;
} piece;

static void part_init(part *p, float *acc, int g, int d)
{
    for (int a = 0; a < g; a++) {
        p->m[a] = -INFINITY;
        p->l[a] = 0;
    }
    p->acc = acc;
    memset(acc, 0, sizeof(float) * (size_t)g * d);
}

/* Rows a and b of a finalised decode layout keep the same keys (the same
 * page list and the same token list). */
static int same_keys(const ab_layout *l, int a, int b)
{
    if (l->blk_ptr) {
        const int64_t na = l->blk_ptr[a + 1] - l->blk_ptr[a], nb = l->blk_ptr[b + 1] - l->blk_ptr[b];
        if (na != nb || memcmp(l->blk_idx + l->blk_ptr[a], l->blk_idx + l->blk_ptr[b], sizeof(int32_t) * na))
            return 0;
    }
    if (l->tok_ptr) {
        const int64_t na = l->tok_ptr[a + 1] - l->tok_ptr[a], nb = l->tok_ptr[b + 1] - l->tok_ptr[b];
        if (na != nb || memcmp(l->tok_idx + l->tok_ptr[a], l->tok_idx + l->tok_ptr[b], sizeof(int32_t) * na))
            return 0;
    }
    return 1;
}

int ab_cpu_decode(const ab_decode *dp, const ab_layout *l, float *out, int strategy, int splits)
{
    if (!dp || !out || dp->layers < 1 || dp->heads < 1 || dp->kv_heads < 1 || dp->heads % dp->kv_heads ||
        dp->head_dim < 1 || dp->len < 1 || dp->cap < dp->len)
        return AB_EINVAL;
    if (l && l->kind == AB_LAYOUT_CUSTOM) return AB_EINVAL;
    if (l && (l->heads != dp->layers * dp->heads || l->n_qblocks != 1)) return AB_EINVAL;
    const int H = dp->heads, G = dp->heads / dp->kv_heads, d = dp->head_dim, rows = dp->layers * H;
    const int dense = !l || l->kind == AB_LAYOUT_DENSE;
    int gsz = 1; /* dense: the largest divisor of G up to AB_DEC_MAXG */
    for (int x = dense && G > 1 ? AB_DEC_MAXG : 1; x > 1; x--)
        if (G % x == 0) {
            gsz = x;
            break;
        }
    const int T = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
    unit *u = malloc(sizeof *u * (size_t)rows);
    if (!u) return AB_ENOMEM;
    /* Units: a dense layout cuts each GQA group into units of gsz rows; a
     * sparse one joins consecutive rows of a group that keep the same keys
     * (a static pattern, a group-shared selection), up to AB_DEC_MAXG, so
     * their keys are read once. A unit never spans two KV heads. */
    int64_t total = 0;
    int nu = 0, gmax = 1;
    for (int row0 = 0; row0 < rows;) {
        const int layer = row0 / H, h = row0 % H, gend = row0 - h % G + G; /* end of the group */
        int g = gsz;
        if (!dense)
            while (g < AB_DEC_MAXG && row0 + g < gend && same_keys(l, row0, row0 + g)) g++;
        u[nu].row0 = row0;
        u[nu].g = g;
        u[nu].kvh = (int64_t)layer * dp->kv_heads + h / G;
        rowkeys_of(&u[nu].keys, l, row0, dp->len);
        total += (u[nu].keys.count + AB_DEC_TILE - 1) / AB_DEC_TILE;
        gmax = g > gmax ? g : gmax;
        row0 += g;
        nu++;
    }
    /* the pieces, in unit and key order */
    if (strategy == AB_DECODE_AUTO) strategy = AB_DECODE_LEAN;
    int per = 1;
    if (strategy == AB_DECODE_SPLITK) per = splits > 0 ? splits : (T + nu - 1) / nu;
    const int64_t cap_p = strategy == AB_DECODE_LEAN ? (int64_t)nu + T : (int64_t)nu * per;
    piece *pc = malloc(sizeof *pc * (size_t)cap_p);
    int64_t np = 0;
    if (!pc) {
        free(u);
        return AB_ENOMEM;
    }
    if (strategy == AB_DECODE_LEAN) {
        /* tile w of the flattened list belongs to thread w * T / total */
        int64_t w = 0;
        for (int i = 0; i < nu; i++) {
            const int64_t tiles = (u[i].keys.count + AB_DEC_TILE - 1) / AB_DEC_TILE;
            int64_t t0 = 0;
            while (t0 < tiles) {
                const int64_t owner = (w + t0) * T / (total > 0 ? total : 1);
                int64_t end_w = ((owner + 1) * total + T - 1) / T; /* first tile of the next thread */
                int64_t t1 = end_w - w;
                if (t1 <= t0) t1 = t0 + 1;
                if (t1 > tiles) t1 = tiles;
                int64_t a = t0 * AB_DEC_TILE, b = t1 * AB_DEC_TILE;
                if (b > u[i].keys.count) b = u[i].keys.count;
                pc[np++] = (piece){ i, (int)owner, a, b };
                t0 = t1;
            }
            if (tiles == 0) pc[np++] = (piece){ i, (int)(w * T / (total > 0 ? total : 1) % T), 0, 0 };
            w += tiles;
        }
    } else {
        for (int i = 0; i < nu; i++) {
            const int64_t c = u[i].keys.count;
            const int k = strategy == AB_DECODE_SPLITK ? per : 1;
            for (int s = 0; s < k; s++) {
                /* chunk bounds on tile edges, so every strategy runs the same tiles */
                const int64_t tiles = (c + AB_DEC_TILE - 1) / AB_DEC_TILE;
                int64_t a = tiles * s / k * AB_DEC_TILE, b = tiles * (s + 1) / k * AB_DEC_TILE;
                if (b > c) b = c;
                if (a > c) a = c;
                if (s == 0 || b > a) pc[np++] = (piece){ i, 0, a, b };
            }
        }
    }
    part *pt = malloc(sizeof *pt * (size_t)np);
    float *acc = malloc(sizeof(float) * (size_t)np * gmax * d);
    if (!pt || !acc) {
        free(pt);
        free(acc);
        free(pc);
        free(u);
        return AB_ENOMEM;
    }
    const size_t kvs = (size_t)dp->cap * d;
    const int lean = strategy == AB_DECODE_LEAN, isa = ab_cpu_isa_pick();
#pragma omp parallel num_threads(T) if (np > 1)
    {
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
        /* LEAN: a thread runs the pieces it owns (equal work by construction);
         * HEADS and SPLITK: pieces dealt round-robin (equal size within a unit) */
        for (int64_t i = 0; i < np; i++) {
            if (lean ? pc[i].owner % nt != tid : i % nt != tid) continue;
            const unit *un = &u[pc[i].unit];
            part_init(&pt[i], acc + (size_t)i * gmax * d, un->g, d);
            run_segment(&un->keys, pc[i].u0, pc[i].u1, dp->q + (size_t)un->row0 * d, un->g,
                        dp->k + (size_t)un->kvh * kvs, dp->v + (size_t)un->kvh * kvs, d, dp->scale, &pt[i],
                        isa);
        }
    }
    /* merge each unit's pieces in key order, then normalise */
    int64_t i = 0;
    while (i < np) {
        int64_t j = i + 1;
        const unit *un = &u[pc[i].unit];
        while (j < np && pc[j].unit == pc[i].unit) merge_part(&pt[i], &pt[j++], un->g, d);
        for (int a = 0; a < un->g; a++) {
            float *o = out + (size_t)(un->row0 + a) * d;
            const float inv = pt[i].l[a] > 0 ? 1.0f / pt[i].l[a] : 0.0f;
            for (int c = 0; c < d; c++) o[c] = pt[i].acc[(size_t)a * d + c] * inv;
        }
        i = j;
    }
    free(pt);
    free(acc);
    free(pc);
    free(u);
    return AB_OK;
}

int ab_ref_decode_row(const ab_decode *dp, int row, const ab_layout *l, double *out, double *rmax,
                      double *rsum)
{
    const int H = dp->heads, d = dp->head_dim, layer = row / H, h = row % H;
    const int64_t kvh = (int64_t)layer * dp->kv_heads + h / (H / dp->kv_heads);
    const float *q = dp->q + (size_t)row * d, *k = dp->k + (size_t)kvh * dp->cap * d,
                *v = dp->v + (size_t)kvh * dp->cap * d;
    rowkeys r;
    rowkeys_of(&r, l, row, dp->len);
    double m = -INFINITY, s = 0;
    for (int c = 0; c < d; c++) out[c] = 0;
    int32_t idx[AB_DEC_TILE];
    for (int64_t u = 0; u < r.count; u += AB_DEC_TILE) { /* max first: then one exp per key */
        const int n = (int)(r.count - u < AB_DEC_TILE ? r.count - u : AB_DEC_TILE);
        rowkeys_fill(&r, u, n, idx);
        for (int t = 0; t < n; t++) {
            double x = 0;
            for (int c = 0; c < d; c++) x += (double)q[c] * k[(size_t)idx[t] * d + c];
            x *= dp->scale;
            m = x > m ? x : m;
        }
    }
    for (int64_t u = 0; u < r.count; u += AB_DEC_TILE) {
        const int n = (int)(r.count - u < AB_DEC_TILE ? r.count - u : AB_DEC_TILE);
        rowkeys_fill(&r, u, n, idx);
        for (int t = 0; t < n; t++) {
            double x = 0;
            for (int c = 0; c < d; c++) x += (double)q[c] * k[(size_t)idx[t] * d + c];
            const double p = exp(x * dp->scale - m);
            s += p;
            for (int c = 0; c < d; c++) out[c] += p * v[(size_t)idx[t] * d + c];
        }
    }
    for (int c = 0; c < d; c++) out[c] = s > 0 ? out[c] / s : 0;
    if (rmax) *rmax = m;
    if (rsum) *rsum = s;
    return AB_OK;
}
