/* bucket.h — bucketed (sorted, chunked) exact softmax attention, the shared
 * inner loop of the hashing / clustering methods (reformer; a routing-style
 * method whose clusters' sorted members attend each other fits the same
 * interface). Header-only (static inline), not a method: it registers nothing.
 *
 * Input, per head and round: a permutation of the query positions and one of
 * the key positions, each cut into the same number of chunks (chunk t of the
 * queries: qperm[qptr[t], qptr[t+1]); of the keys: kperm[kptr[t], kptr[t+1])).
 * Query chunk t attends the key chunks t, t-1, ..., t-look_back, taken
 * modulo the chunk count (Reformer's look-one-back, wrapping around as the
 * official implementations do; look_back 0: each chunk attends only its own
 * keys, as a cluster does). A (query i, key j) pair of round r counts when
 *   - the base mask allows it (ab_shape_mask: causal by original position,
 *     documents, windows, ...),
 *   - it was not a pair of an earlier round r' < r (the union over rounds
 *     counts each key once: Reformer's duplicate correction, done exactly by
 *     masking instead of subtracting log counts), and
 *   - not (noself[i] and j == i) (Reformer's "no attention to self").
 * The output row is the exact softmax over the union of the row's counted
 * pairs over all rounds (zero when the row has none), so it equals the fp64
 * reference restricted to that key set up to float rounding.
 *
 * Kernel: rounds in order; inside a round OpenMP over (head, chunk) (a query
 * sits in one chunk per round, so no two threads touch one output row). Per
 * chunk the candidate keys are sorted by position (a radix sort) and
 * gathered once with their values, and the queries sorted by position too;
 * then tiles of BK_QT queries run on the attention tile of the ABI
 * (ab_attn_tile: the kernels' vectorised chunk step) over the run of keys
 * their mask spans can reach (under a causal mask a tile of early queries
 * stops before the later keys: about half the chunk's pairs are never
 * computed; the sort by bucket had spread every tile's reach over the
 * whole chunk), the pairs that count (the three rules above) marked in an
 * element map (ab_attn_tile_keys_map, which skips a 64-key step no row
 * sees), and the tile's rows, normalised, merged into the output rows by
 * their log-sum-exps (methods/lse.h), round after round. Each row's keys
 * come in a fixed order (round, position), so the result does not depend
 * on the thread count. Memory: O(heads * N) besides the output, plus per
 * thread one query tile and the keys one query chunk attends.
 */
#ifndef AB_METHODS_BUCKET_H
#define AB_METHODS_BUCKET_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/lse.h"
#include "methods/lsh.h"

#define BK_QT 64 /* query rows per attention tile */

/* One round of one head. */
typedef struct bk_round {
    int nchunks;          /* >= 1 */
    const int32_t *qperm; /* [N] query positions, chunk by chunk */
    const int32_t *qptr;  /* [nchunks + 1] */
    const int32_t *kperm; /* [N] key positions, chunk by chunk */
    const int32_t *kptr;  /* [nchunks + 1] */
} bk_round;

typedef struct bk_spec {
    int rounds;            /* per head, >= 1 */
    int look_back;         /* >= 0 */
    const bk_round *r;     /* [heads * rounds]: head h, round r at h * rounds + r */
    const uint8_t *noself; /* [heads * N] or NULL: 1 = the row skips its own position */
} bk_spec;

/* Distinct key chunks a query chunk of a round with nch chunks attends. */
static inline int bk_nlook(int look_back, int nch) { return (look_back < nch - 1 ? look_back : nch - 1) + 1; }

/* 1 when key chunk kc is among those query chunk qc attends. */
static inline int bk_attends(int qc, int kc, int nch, int nlook)
{
    return ((qc - kc) % nch + nch) % nch < nlook;
}

/* Chunk index of every position: cidx[perm[ptr[t] .. ptr[t+1])] = t. */
static inline void bk_chunk_index(const int32_t *perm, const int32_t *ptr, int nch, int32_t *cidx)
{
    for (int t = 0; t < nch; t++)
        for (int32_t x = ptr[t]; x < ptr[t + 1]; x++) cidx[perm[x]] = t;
}

/* A checksum of the bits of Q and K: the fingerprint with which a method's
 * run() recognises the problem its select() left state for. Per head four
 * independent multiply-xor lanes over 64-bit words (so it is not one long
 * dependency chain): the head's Q, then its K, word by word, the last
 * n % 8 floats of each one at a time; heads combined in head order. A
 * select() that reads Q and K anyway (lsh_codes_rounds' `seen`) adds each
 * chunk while it is in cache (bk_sum_add) and gets the same fingerprint as
 * bk_checksum. */
typedef struct bk_sum {
    uint64_t lane[4];
} bk_sum;

static inline void bk_sum_init(bk_sum *s)
{
    const uint64_t init[4] = { 0x9e3779b97f4a7c15ull, 0x243f6a8885a308d3ull, 0x13198a2e03707344ull,
                               0xa4093822299f31d0ull };
    memcpy(s->lane, init, sizeof init);
}

/* Floats [i0, i1) of an array x of n floats; i0 a multiple of 8, i1 too
 * unless it is n. Chunks added in order give the whole array's sum. */
static inline void bk_sum_add(bk_sum *s, const float *x, size_t i0, size_t i1, size_t n)
{
    size_t i = i0;
    for (; i + 8 <= i1; i += 8)
        for (int u = 0; u < 4; u++) {
            uint64_t w;
            memcpy(&w, x + i + 2 * u, 8);
            s->lane[u] = (s->lane[u] ^ w) * 0x100000001b3ull;
        }
    if (i1 == n)
        for (; i < n; i++) {
            uint32_t w;
            memcpy(&w, x + i, 4);
            s->lane[0] = (s->lane[0] ^ w) * 0x100000001b3ull;
        }
}

static inline uint64_t bk_sum_head(const bk_sum *s)
{
    return ab_mix64(s->lane[0] ^ ab_mix64(s->lane[1] ^ ab_mix64(s->lane[2] ^ ab_mix64(s->lane[3]))));
}

/* The fingerprint of H heads' bk_sum_head values (odd: 0 is never one). */
static inline uint64_t bk_sum_heads(const uint64_t *hs, int H)
{
    uint64_t z = 0x5245464f524d4552ull;
    for (int h = 0; h < H; h++) z = ab_mix64(z ^ hs[h]);
    return z | 1u;
}

/* lsh_codes_rounds' `seen` for a bk_sum: ctx a bk_sum_ctx. */
typedef struct bk_sum_ctx {
    bk_sum *s;
    const float *x; /* the array */
    size_t n;       /* its floats */
} bk_sum_ctx;

static inline void bk_sum_seen(void *ctx, size_t i0, size_t i1)
{
    const bk_sum_ctx *c = ctx;
    bk_sum_add(c->s, c->x, i0, i1, c->n);
}

/* The LSH codes of one head's n rows of q and of k in R rounds into cq
 * and ck ((R, n) each; lsh_codes_rounds with rot, b2, nb, P of pmax
 * floats, bt), and the head's share of bk_checksum (bk_sum_head of q then
 * k), added chunk by chunk as the hashing reads them. */
static inline uint64_t bk_codes_qk(const float *q, const float *k, int n, int d, const float *rot, int R,
                                   int b2, int nb, float *P, size_t pmax, float *bt, int32_t *cq, int32_t *ck)
{
    bk_sum cs;
    bk_sum_init(&cs);
    bk_sum_ctx xq = { &cs, q, (size_t)n * d }, xk = { &cs, k, (size_t)n * d };
    lsh_codes_rounds(q, n, d, rot, R, b2, nb, P, pmax, bt, cq, bk_sum_seen, &xq);
    lsh_codes_rounds(k, n, d, rot, R, b2, nb, P, pmax, bt, ck, bk_sum_seen, &xk);
    return bk_sum_head(&cs);
}

static inline uint64_t bk_checksum(const ab_problem *pb)
{
    const int H = pb->s.heads;
    const size_t per = (size_t)pb->s.seq_len * pb->s.head_dim; /* floats per head */
    uint64_t *hs = malloc((size_t)(H > 0 ? H : 1) * sizeof *hs);
    if (!hs) return 0; /* 0: never a valid fingerprint (the result is odd) */
#pragma omp parallel for schedule(static)
    for (int h = 0; h < H; h++) {
        bk_sum s;
        bk_sum_init(&s);
        bk_sum_add(&s, pb->q + (size_t)h * per, 0, per, per);
        bk_sum_add(&s, pb->k + (size_t)h * per, 0, per, per);
        hs[h] = bk_sum_head(&s);
    }
    const uint64_t z = bk_sum_heads(hs, H);
    free(hs);
    return z;
}

/* a[0, n) (distinct positions in [0, N)) in ascending order: LSD radix
 * sort by 8-bit digits, tmp (n) scratch. */
static inline void bk_sort_pos(int32_t *a, int n, int32_t *tmp, int N)
{
    int32_t *src = a, *dst = tmp;
    for (int sh = 0; sh < 31 && (N - 1) >> sh; sh += 8) {
        int cnt[257] = { 0 };
        for (int x = 0; x < n; x++) cnt[((src[x] >> sh) & 255) + 1]++;
        for (int b = 0; b < 256; b++) cnt[b + 1] += cnt[b];
        for (int x = 0; x < n; x++) dst[cnt[(src[x] >> sh) & 255]++] = src[x];
        int32_t *w = src;
        src = dst;
        dst = w;
    }
    if (src != a) memcpy(a, src, (size_t)n * sizeof *a);
}

/* The first index of the ascending a[0, n) whose value is >= v. */
static inline int bk_lower(const int32_t *a, int n, int v)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (a[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Copies rows idx[0, n) of x (d floats each) into xg, and the same rows
 * of y into yg when y is given. They are random rows of one head's Q, K or
 * V, mostly beyond L2: each is prefetched BK_PF rows ahead of its copy,
 * and the usual head sizes copy with a constant size (vector moves; a
 * memcpy call per 256-byte row was a tenth of reformer's run()). */
#define BK_PF 8
static inline void bk_gather_rows(float *xg, const float *x, const int32_t *idx, int n, int d, float *yg,
                                  const float *y)
{
#define BK_GATHER(D)                                                                                \
    for (int c = 0; c < n; c++) {                                                                   \
        if (c + BK_PF < n)                                                                          \
            for (int e = 0; e < (D); e += 16) {                                                     \
                __builtin_prefetch(x + (size_t)idx[c + BK_PF] * (D) + e);                           \
                if (y) __builtin_prefetch(y + (size_t)idx[c + BK_PF] * (D) + e);                    \
            }                                                                                       \
        memcpy(xg + (size_t)c * (D), x + (size_t)idx[c] * (D), (size_t)(D) * sizeof(float));        \
        if (y) memcpy(yg + (size_t)c * (D), y + (size_t)idx[c] * (D), (size_t)(D) * sizeof(float)); \
    }
    switch (d) {
    case 64: BK_GATHER(64) break;
    case 128: BK_GATHER(128) break;
    default: BK_GATHER(d) break;
    }
#undef BK_GATHER
}

/* out (heads, N, d) = the bucketed attention of sp over pb. AB_OK, AB_ENOMEM
 * or AB_EINVAL (a malformed spec). */
static inline int bk_attend(const ab_problem *pb, const bk_spec *sp, float *out)
{
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim, R = sp->rounds;
    const float scale = pb->s.scale;
    if (N <= 0 || H <= 0) return AB_OK;
    if (R < 1 || sp->look_back < 0) return AB_EINVAL;
    int maxch = 1;
    for (int x = 0; x < H * R; x++) {
        const bk_round *b = &sp->r[x];
        if (b->nchunks < 1 || b->qptr[0] != 0 || b->kptr[0] != 0 || b->qptr[b->nchunks] != N ||
            b->kptr[b->nchunks] != N)
            return AB_EINVAL;
        maxch = b->nchunks > maxch ? b->nchunks : maxch;
        for (int t = 0; t < b->nchunks; t++) {
            if (b->qptr[t + 1] < b->qptr[t] || b->kptr[t + 1] < b->kptr[t]) return AB_EINVAL;
        }
    }
    const ab_mask mask = ab_shape_mask(&pb->s);
    const int interval = mask.def->interval;
    int32_t *qc = malloc((size_t)H * R * N * sizeof *qc); /* (heads, rounds, N) query chunk by position */
    int32_t *kc = malloc((size_t)H * R * N * sizeof *kc); /* (heads, rounds, N) key chunk by position */
    float *lse = malloc((size_t)H * N * sizeof *lse);     /* (heads, N) log-sum-exp so far */
    int rc = qc && kc && lse ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) {
        for (int x = 0; x < H * R; x++) {
            const bk_round *b = &sp->r[x];
            bk_chunk_index(b->qperm, b->qptr, b->nchunks, qc + (size_t)x * N);
            bk_chunk_index(b->kperm, b->kptr, b->nchunks, kc + (size_t)x * N);
        }
        for (size_t x = 0; x < (size_t)H * N; x++) lse[x] = -INFINITY;
        memset(out, 0, (size_t)H * N * d * sizeof *out);
    }
    int maxk = 1, maxq = 1; /* keys a query chunk attends in one round, queries in a chunk, at most */
    for (int x = 0; x < H * R; x++) {
        const bk_round *b = &sp->r[x];
        const int nlook = bk_nlook(sp->look_back, b->nchunks);
        for (int t = 0; t < b->nchunks; t++) {
            maxq = b->qptr[t + 1] - b->qptr[t] > maxq ? b->qptr[t + 1] - b->qptr[t] : maxq;
            int64_t nk = 0;
            for (int lb = 0; lb < nlook; lb++) {
                const int kcix = ((t - lb) % b->nchunks + b->nchunks) % b->nchunks;
                nk += b->kptr[kcix + 1] - b->kptr[kcix];
            }
            maxk = nk > maxk ? (int)nk : maxk;
        }
    }
    for (int r = 0; rc == AB_OK && r < R; r++) {
#pragma omp parallel
        {
            ab_attn_tile *at = ab_attn_tile_new(d, BK_QT);
            float *qg = malloc((size_t)BK_QT * d * sizeof *qg);  /* a query tile */
            float *kg = malloc((size_t)maxk * d * sizeof *kg);   /* the chunk's keys */
            float *vg = malloc((size_t)maxk * d * sizeof *vg);   /* and values */
            float *o2 = malloc((size_t)BK_QT * d * sizeof *o2);  /* the round's rows */
            unsigned char *allow = malloc((size_t)maxk * BK_QT); /* pairs that count, key-major */
            int32_t *kp = malloc((size_t)maxk * sizeof *kp);
            int32_t *kr =
                malloc((size_t)(R > 1 ? R - 1 : 1) * maxk * sizeof *kr); /* earlier rounds' key chunks */
            int32_t *qs = malloc((size_t)maxq * sizeof *qs);             /* the chunk's queries by position */
            int32_t *tmp = malloc((size_t)(maxk > maxq ? maxk : maxq) * sizeof *tmp);
            float l2[BK_QT];
            int lo[BK_QT], hi[BK_QT], qv[BK_QT], lr[BK_QT], hr[BK_QT];
            const int ok = at && qg && kg && vg && o2 && allow && kp && kr && qs && tmp;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int x = 0; x < H * maxch; x++) {
                const int h = x / maxch, t = x % maxch;
                const bk_round *b = &sp->r[(size_t)h * R + r];
                if (!ok || t >= b->nchunks) continue;
                const int nch = b->nchunks, nlook = bk_nlook(sp->look_back, nch);
                const int nq = b->qptr[t + 1] - b->qptr[t];
                if (nq == 0) continue;
                memcpy(qs, b->qperm + b->qptr[t], (size_t)nq * sizeof *qs);
                bk_sort_pos(qs, nq, tmp, N);
                const float *Q = pb->q + (size_t)h * N * d, *K = pb->k + (size_t)h * N * d,
                            *V = pb->v + (size_t)h * N * d;
                float *O = out + (size_t)h * N * d, *L = lse + (size_t)h * N;
                const uint8_t *ns = sp->noself ? sp->noself + (size_t)h * N : NULL;
                /* the keys of chunks t - nlook + 1, ..., t (mod nch), gathered
                 * once for every query tile, in position order, as are the
                 * queries: a tile of queries then sees the keys its spans
                 * allow as one run, and the key tiles past its last query
                 * (causal) are not computed */
                int nk = 0;
                for (int lb = nlook - 1; lb >= 0; lb--) {
                    const int kcix = ((t - lb) % nch + nch) % nch;
                    for (int32_t e = b->kptr[kcix]; e < b->kptr[kcix + 1]; e++) kp[nk++] = b->kperm[e];
                }
                bk_sort_pos(kp, nk, tmp, N);
                bk_gather_rows(kg, K, kp, nk, d, vg, V);
                for (int c = 0; c < nk; c++)
                    for (int rp = 0; rp < r; rp++)
                        kr[(size_t)rp * maxk + c] = kc[((size_t)h * R + rp) * N + kp[c]];
                for (int a0 = 0; a0 < nq; a0 += BK_QT) {
                    const int na = nq - a0 < BK_QT ? nq - a0 : BK_QT;
                    int tlo = N, thi = 0;
                    bk_gather_rows(qg, Q, qs + a0, na, d, NULL, NULL);
                    if (r > 0) /* the output rows this tile merges into: random rows, read after it */
                        for (int a = 0; a < na; a++)
                            for (int e = 0; e < d; e += 16)
                                __builtin_prefetch(O + (size_t)qs[a0 + a] * d + e, 1);
                    for (int a = 0; a < na; a++) {
                        if (interval) {
                            ab_mask_span(&mask, qs[a0 + a], &lo[a], &hi[a]);
                            tlo = lo[a] < tlo ? lo[a] : tlo;
                            thi = hi[a] > thi ? hi[a] : thi;
                        }
                    }
                    /* the keys any row of the tile may see: [c0, c1) of kp */
                    int c0 = 0, c1 = nk;
                    if (interval) {
                        c0 = bk_lower(kp, nk, tlo);
                        c1 = bk_lower(kp, nk, thi);
                        if (c1 <= c0) c1 = c0;
                    }
                    /* the first round under an interval mask: row a sees the
                     * keys in [lo[a], hi[a]), which sorted by position are one
                     * run of kp, so the tile takes per-row ranges and no map
                     * (the map's pairs, the same logits masked, the same bits) */
                    const int ranges = interval && r == 0 && !ns;
                    for (int a = 0; ranges && a < na; a++) {
                        lr[a] = bk_lower(kp + c0, c1 - c0, lo[a]);
                        hr[a] = bk_lower(kp + c0, c1 - c0, hi[a]);
                        hr[a] = hr[a] < lr[a] ? lr[a] : hr[a];
                    }
                    /* else the pairs that count: the base mask, no self (noself),
                     * and not a pair of an earlier round, whose key chunk was
                     * among those the query's chunk attended (bk_attends, the
                     * chunk distance without a division: both in [0, nch)) */
                    for (int c = c0; !ranges && c < c1; c++) {
                        unsigned char *al = allow + (size_t)c * BK_QT;
                        const int j = kp[c];
                        if (interval)
                            for (int a = 0; a < na; a++) al[a] = j >= lo[a] && j < hi[a];
                        else
                            for (int a = 0; a < na; a++) al[a] = ab_mask_allows(&mask, qs[a0 + a], j) != 0;
                        if (ns)
                            for (int a = 0; a < na; a++) al[a] &= !(ns[qs[a0 + a]] && j == qs[a0 + a]);
                    }
                    for (int rp = 0; rp < r; rp++) {
                        const int nc2 = sp->r[(size_t)h * R + rp].nchunks;
                        const int nl2 = bk_nlook(sp->look_back, nc2);
                        for (int a = 0; a < na; a++) qv[a] = qc[((size_t)h * R + rp) * N + qs[a0 + a]];
                        for (int c = c0; c < c1; c++) {
                            unsigned char *al = allow + (size_t)c * BK_QT;
                            const int kq = kr[(size_t)rp * maxk + c];
                            for (int a = 0; a < na; a++) {
                                int dd = qv[a] - kq;
                                dd += dd < 0 ? nc2 : 0;
                                al[a] &= dd >= nl2;
                            }
                        }
                    }
                    ab_attn_tile_begin(at, qg, d, na, scale);
                    if (ranges)
                        ab_attn_tile_keys(at, kg + (size_t)c0 * d, vg + (size_t)c0 * d, c1 - c0, lr, hr);
                    else
                        ab_attn_tile_keys_map(at, kg + (size_t)c0 * d, vg + (size_t)c0 * d, c1 - c0,
                                              allow + (size_t)c0 * BK_QT, BK_QT);
                    ab_attn_tile_end(at, o2, d, l2);
                    for (int a = 0; a < na; a++) { /* a query sits in one chunk per round */
                        const int i = qs[a0 + a];
                        lse_merge(O + (size_t)i * d, &L[i], o2 + (size_t)a * d, l2[a], 0.0f, d);
                    }
                }
            }
            ab_attn_tile_free(at);
            free(qg);
            free(kg);
            free(vg);
            free(o2);
            free(allow);
            free(kp);
            free(kr);
            free(qs);
            free(tmp);
        }
    }
    free(qc);
    free(kc);
    free(lse);
    return rc;
}

#endif
