/* keep.h — how many keys to keep and which, shared by method files: the golden-ratio
 * dithered fractional budget (the scheme of oracle_topk_block.c), a key
 * span written as whole key blocks plus edge tokens (the fixed patterns of
 * Child et al. 2019, arXiv 1904.10509, Longformer, StreamingLLM), a
 * splitmix64 hash for seeded choices, and a typed quickselect
 * (MC_DEFINE_SELECT_TOP). Header-only (static inline), not
 * a method: it registers nothing. methods/block_score.h includes it.
 */
#ifndef AB_METHODS_KEEP_H
#define AB_METHODS_KEEP_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "attnbench.h"

/* A fractional budget k spread over rows: row `row` gets floor(k) plus one
 * with probability frac(k), by the golden-ratio sequence of the row index,
 * so the mean over rows is k and density moves smoothly with k. */
static inline int mc_dither(double k, int row)
{
    const double u = fmod((row + 1) * 0.6180339887498949, 1.0);
    const double f = floor(k);
    return (int)f + (u < k - f);
}

/* Keys [a, b) (clipped to [0, seq_len)) of row (h, qb): the key blocks it
 * covers whole as blocks, the ragged edges as tokens. Any failure of the
 * builder is reported as AB_ENOMEM. */
static inline int mc_add_span(ab_layout *l, int h, int qb, int a, int b)
{
    const int bk = l->block_k;
    a = a > 0 ? a : 0;
    b = b < l->seq_len ? b : l->seq_len;
    if (a >= b) return AB_OK;
    const int kb0 = (a + bk - 1) / bk; /* first whole block */
    const int kb1 = b / bk;            /* one past the last whole block */
    if (kb0 >= kb1) {
        for (int j = a; j < b; j++)
            if (ab_layout_add_token(l, h, qb, j)) return AB_ENOMEM;
        return AB_OK;
    }
    for (int j = a; j < kb0 * bk; j++)
        if (ab_layout_add_token(l, h, qb, j)) return AB_ENOMEM;
    if (ab_layout_add_block_range(l, h, qb, kb0, kb1)) return AB_ENOMEM;
    for (int j = kb1 * bk; j < b; j++)
        if (ab_layout_add_token(l, h, qb, j)) return AB_ENOMEM;
    return AB_OK;
}

/* Append the keys [a, b) (clipped to [0, n)) to one row's entry lists, as
 * mc_add_span does but collected for one bulk add per row (mc_flush_row)
 * instead of one locked builder call per token: the key blocks of size bk
 * the span covers whole go to blk[*nb ...], the ragged edges to tok[*nt ...]. */
static inline void mc_span_collect(int a, int b, int bk, int n, int32_t *blk, int *nb, int32_t *tok, int *nt)
{
    a = a > 0 ? a : 0;
    b = b < n ? b : n;
    if (a >= b) return;
    const int kb0 = (a + bk - 1) / bk, kb1 = b / bk; /* whole blocks [kb0, kb1) */
    if (kb0 >= kb1) {
        for (int j = a; j < b; j++) tok[(*nt)++] = j;
        return;
    }
    for (int j = a; j < kb0 * bk; j++) tok[(*nt)++] = j;
    for (int kb = kb0; kb < kb1; kb++) blk[(*nb)++] = kb;
    for (int j = kb1 * bk; j < b; j++) tok[(*nt)++] = j;
}

/* One row's entry buffers for mc_span_collect: room for 2 n_kblocks blocks
 * and 2 seq_len tokens (a row's spans may overlap; the builder drops the
 * duplicates). AB_OK or AB_ENOMEM (both NULL). */
static inline int mc_row_bufs(const ab_layout *l, int32_t **blk, int32_t **tok)
{
    *blk = malloc((2 * (size_t)l->n_kblocks + 1) * sizeof(int32_t));
    *tok = malloc((2 * (size_t)l->seq_len + 1) * sizeof(int32_t));
    if (*blk && *tok) return AB_OK;
    free(*blk);
    free(*tok);
    *blk = *tok = NULL;
    return AB_ENOMEM;
}

/* Add one row's collected entries: two bulk builder calls. */
static inline int mc_flush_row(ab_layout *l, int h, int qb, const int32_t *blk, int nb, const int32_t *tok,
                               int nt)
{
    const int rc = ab_layout_add_blocks(l, h, qb, blk, nb);
    return rc ? rc : ab_layout_add_tokens(l, h, qb, tok, nt);
}

/* A well-mixed 64-bit hash of z: one splitmix64 step from state z
 * (include/attnbench.h). */
static inline uint64_t mc_mix64(uint64_t z) { return ab_splitmix64(&z); }

/* Append the set bits of bm[0, nw) in ascending order to keys (as bit
 * positions) and clear them; returns the new count. A row's keys marked in
 * a bit set come out sorted and once each, so the layout builder has
 * nothing to sort or deduplicate (hax, hip, pbs). */
static inline int mc_take_bits(uint64_t *bm, int nw, int32_t *keys, int n)
{
    for (int w = 0; w < nw; w++) {
        uint64_t x = bm[w];
        if (!x) continue;
        bm[w] = 0;
        for (; x; x &= x - 1) keys[n++] = w * 64 + __builtin_ctzll(x);
    }
    return n;
}

/* Set the bits [a, b) of bm (a <= b): the partial words at the ends, whole
 * words between. */
static inline void mc_set_bits(uint64_t *bm, int a, int b)
{
    if (a >= b) return;
    const int wa = a >> 6, wb = (b - 1) >> 6;
    const uint64_t lo = ~0ull << (a & 63), hi = ~0ull >> (63 - ((b - 1) & 63));
    if (wa == wb) {
        bm[wa] |= lo & hi;
        return;
    }
    bm[wa] |= lo;
    for (int w = wa + 1; w < wb; w++) bm[w] = ~0ull;
    bm[wb] |= hi;
}

/* MC_DEFINE_SELECT_TOP(name, type, before): defines
 *   static void name(type *x, int n, int k)
 * which reorders x[0, n) so that its first k entries are the k best by
 * before(a, b) ("a ranks before b", a total order, so the chosen set is
 * unique), unordered: quickselect with a median-of-three pivot. */
#define MC_DEFINE_SELECT_TOP(name, type, before) \
    static void name(type *x, int n, int k)      \
    {                                            \
        int lo = 0, hi = n - 1;                  \
        while (lo < hi && k > lo && k <= hi) {   \
            const int mid = lo + (hi - lo) / 2;  \
            type t;                              \
            if (before(x[mid], x[lo])) {         \
                t = x[mid];                      \
                x[mid] = x[lo];                  \
                x[lo] = t;                       \
            }                                    \
            if (before(x[hi], x[lo])) {          \
                t = x[hi];                       \
                x[hi] = x[lo];                   \
                x[lo] = t;                       \
            }                                    \
            if (before(x[hi], x[mid])) {         \
                t = x[hi];                       \
                x[hi] = x[mid];                  \
                x[mid] = t;                      \
            }                                    \
            const type pv = x[mid];              \
            int i = lo, j = hi;                  \
            while (i <= j) {                     \
                while (before(x[i], pv)) i++;    \
                while (before(pv, x[j])) j--;    \
                if (i <= j) {                    \
                    t = x[i];                    \
                    x[i] = x[j];                 \
                    x[j] = t;                    \
                    i++;                         \
                    j--;                         \
                }                                \
            }                                    \
            if (k <= j + 1)                      \
                hi = j;                          \
            else if (k >= i + 1)                 \
                lo = i;                          \
            else                                 \
                return;                          \
        }                                        \
    }

/* OpenBLAS called from inside an OpenMP parallel region (one SGEMM per
 * head or group, each thread its own): the pthread OpenBLAS would start
 * its own threads for every call, as many as the harness set for the
 * point, so 2 threads x 2 calls shared 2 cores and waited in sched_yield
 * (pbs's select() took 28 ms instead of 17 at N = 16K, 2 threads). Begin
 * before the region (one BLAS thread per call), end after it with the
 * value begin returned. */
int openblas_get_num_threads(void);
void openblas_set_num_threads(int n);
static inline int mc_blas_serial_begin(void)
{
    const int n = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return n;
}
static inline void mc_blas_serial_end(int n) { openblas_set_num_threads(n); }

#endif
