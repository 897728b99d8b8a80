/* tile.h — the online-softmax tile state shared by the CPU kernels
 * (flash.c, blocksparse.c, gather.c). Internal; static inline only.
 *
 * One work item is a query tile of at most AB_TILE_Q rows of one head. Its
 * state is FlashAttention-2 style (Dao, 2023): running max m, running sum l
 * and the unnormalised output acc. Keys arrive in chunks of at most tk
 * columns, either contiguous (flash, blocksparse: read in place) or gathered
 * from an index list (gather: packed into kp/vp first). For every query row
 * the base mask (causal by default; see "base masks" in attnbench.h) is
 * applied per chunk at block granularity: a chunk no row of the tile may
 * see is skipped, a chunk every row sees fully runs unmasked, and only a
 * partial chunk tests elements. For interval masks (every built-in one) a
 * partial chunk gives each row a valid column range [lo[r], lim[r]) — a
 * contiguous chunk and a sorted token list both have that shape — so the
 * test is one compare per element; other masks fill an element map em[]
 * from the mask's predicate.
 *
 * Layout for SIMD: the query tile is stored transposed and pre-scaled,
 * qt = scale * Q^T (d, ld), so the logits come out transposed,
 * st = S^T (tk, ld), with the query rows along the vector lanes (ld = the
 * tile's row capacity rounded up to 16): the
 * row max, exp and row sum of the softmax are then plain lane-wise vector
 * operations, and the value update acc += P V broadcasts P^T entries. The
 * chunk step itself (ab_chunk_*, one per ISA) is in simd_*.c; tile sizes:
 * a 128-row tile with d = 128 keeps qt, st and acc (160 KiB) in L2 and one
 * key/value chunk (64 KiB) streaming through L1/L2; the layout kernels use
 * min(block_q, AB_TILE_Q) rows, flash 64 or 128 (flash.c). */
#ifndef AB_CPU_TILE_H
#define AB_CPU_TILE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"
#include "kernels/cpu/simd.h"

#define AB_TILE_Q          128 /* query rows per work item at most (= qt/st columns) */
#define AB_TILE_K          64  /* key columns per gathered chunk */
#define AB_TILE_KMAX       256 /* key columns per chunk at most */
#define AB_TILE_COPY_MIN_D 128 /* copy_kv from this head_dim (AVX2; ab_tile_contig) */
#define AB_MAX_HEAD_DIM    512 /* larger head_dim: AB_EUNSUPPORTED */

typedef struct ab_tile {
    int d, dp;  /* head_dim; acc row stride (d rounded up to 16) */
    int tq, tk; /* capacity: query rows, key columns per chunk */
    int ld;     /* row stride of qt, st, em: tq rounded up to 16 (a
                         64-row tile keeps 64-float rows: L1-sized) */
    int nq;     /* rows of the current query tile */
    int isa;    /* ab_cpu_isa of chunk */
    ab_chunk_fn chunk;
    ab_chunk_rows_fn chunk_rows; /* the chunk step on row lists (NULL: gathers copy into kp, vp) */
    int copy_kv;                 /* ab_tile_contig copies a chunk's rows into kp, vp first (AVX2) */
    float *buf;                  /* one aligned allocation holding the arrays below */
    float *qt;                   /* (d, ld): scale * Q^T; columns >= nq are 0 */
    float *kp;                   /* (tk, d): packed key chunk (gather) */
    float *vp;                   /* (tk, d): packed value chunk (gather) */
    const float **kr;            /* (tk): the gathered chunk's key rows (chunk_rows), then */
    const float **vr;            /* (tk): its value rows, */
    const float **pfk;           /* (tk): the next chunk's key rows, prefetched by chunk_rows, */
    const float **pfv;           /* (tk): and its value rows; */
    int pfn;                     /* how many (0: none) */
    float *st;                   /* (tk, ld): S^T logits, then probabilities */
    float *m;                    /* (AB_TILE_Q): running max of the scaled logits */
    float *l;                    /* (AB_TILE_Q): running sum of exp(logit - m) */
    float *alpha;                /* (AB_TILE_Q): rescale factor of the current chunk */
    float *acc;                  /* (tq, dp): unnormalised output */
    int32_t *lim;                /* (AB_TILE_Q): end of the valid columns of the chunk per row */
    int32_t *lo;                 /* (AB_TILE_Q): first valid column (masked == 1) */
    unsigned char *em;           /* (tk, ld): 1 = allowed (masked == 2) */
    /* the base mask over the current tile's rows */
    const ab_mask *mask;
    int i0;                         /* first query row of the tile */
    int rs;                         /* row stride: tile row r is query row i0 + r rs (ab_tile_row) */
    int interval;                   /* mask->def->interval */
    int32_t *slo, *shi;             /* (AB_TILE_Q): row spans [slo, shi), absolute keys */
    int minlo, maxlo, minhi, maxhi; /* over the tile's rows */
} ab_tile;

/* Check the problem's shape and pointers. */
static inline int ab_tile_check_problem(const ab_problem *pb, const float *out)
{
    if (!pb || !out || !pb->q || !pb->k || !pb->v) return AB_EINVAL;
    if (pb->s.heads <= 0 || pb->s.seq_len < 0 || pb->s.head_dim <= 0) return AB_EINVAL;
    if (pb->s.head_dim > AB_MAX_HEAD_DIM) return AB_EUNSUPPORTED;
    return AB_OK;
}

/* The chunk step of an ISA (NULL when out of range). */
static inline ab_chunk_fn ab_tile_chunk_fn(int isa)
{
    switch (isa) {
    case AB_ISA_PORTABLE: return ab_chunk_portable;
    case AB_ISA_AVX2: return ab_chunk_avx2;
    case AB_ISA_AVX512: return ab_chunk_avx512;
    }
    return NULL;
}

/* The chunk step on row lists of an ISA (NULL: none; gathers copy). */
static inline ab_chunk_rows_fn ab_tile_chunk_rows_fn(int isa)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    switch (isa) {
    case AB_ISA_AVX2: return ab_chunk_rows_avx2;
    case AB_ISA_AVX512: return ab_chunk_rows_avx512;
    }
#endif
    (void)isa;
    return NULL;
}

/* Per-thread scratch for query tiles of up to tq <= AB_TILE_Q rows and key
 * chunks of up to tk <= AB_TILE_KMAX columns, run by the given ISA.
 * Returns AB_OK, AB_EINVAL or AB_ENOMEM. */
static inline int ab_tile_alloc(ab_tile *t, int d, int tq, int tk, int isa)
{
    memset(t, 0, sizeof(*t));
    if (tq <= 0 || tq > AB_TILE_Q || tk <= 0 || tk > AB_TILE_KMAX || !ab_tile_chunk_fn(isa)) return AB_EINVAL;
        /* every array starts on a 64-byte boundary */
#define AB_TILE_PAD(n) ((((size_t)(n)) + 15) & ~(size_t)15)
    const size_t dp = AB_TILE_PAD(d);
    const size_t ld = AB_TILE_PAD(tq);
    size_t n_qt = (size_t)d * ld, n_kv = AB_TILE_PAD((size_t)tk * d);
    size_t n_st = (size_t)tk * ld, n_acc = (size_t)tq * dp;
#undef AB_TILE_PAD
    size_t total = n_qt + 2 * n_kv + n_st + 3 * AB_TILE_Q + n_acc;
    t->buf = aligned_alloc(64, total * sizeof(float));
    /* lim, lo, slo, shi (4 x AB_TILE_Q int32), then em (tk x ld bytes) */
    t->lim = malloc(4 * AB_TILE_Q * sizeof(int32_t) + (size_t)tk * ld);
    t->kr = malloc(4 * (size_t)tk * sizeof *t->kr); /* kr, vr, pfk, pfv */
    if (!t->buf || !t->lim || !t->kr) {
        free(t->buf);
        free(t->lim);
        free(t->kr);
        t->buf = NULL;
        t->lim = NULL;
        t->kr = NULL;
        return AB_ENOMEM;
    }
    t->d = d;
    t->dp = (int)dp;
    t->tq = tq;
    t->tk = tk;
    t->ld = (int)ld;
    t->isa = isa;
    t->chunk = ab_tile_chunk_fn(isa);
    t->chunk_rows = ab_tile_chunk_rows_fn(isa);
    t->copy_kv = isa == AB_ISA_AVX2 && d >= AB_TILE_COPY_MIN_D;
    t->vr = t->kr + tk;
    t->pfk = t->vr + tk;
    t->pfv = t->pfk + tk;
    t->pfn = 0;
    t->qt = t->buf;
    t->kp = t->qt + n_qt;
    t->vp = t->kp + n_kv;
    t->st = t->vp + n_kv;
    t->m = t->st + n_st;
    t->l = t->m + AB_TILE_Q;
    t->alpha = t->l + AB_TILE_Q;
    t->acc = t->alpha + AB_TILE_Q;
    t->lo = t->lim + AB_TILE_Q;
    t->slo = t->lo + AB_TILE_Q;
    t->shi = t->slo + AB_TILE_Q;
    t->em = (unsigned char *)(t->shi + AB_TILE_Q);
    return AB_OK;
}

static inline void ab_tile_free(ab_tile *t)
{
    free(t->buf);
    free(t->lim);
    free(t->kr);
    t->buf = NULL;
    t->lim = NULL;
    t->kr = NULL;
}

/* A fresh online softmax for nq rows: m = -inf, l = 0, acc = 0. */
static inline void ab_tile_reset(ab_tile *t, int nq)
{
    t->nq = nq;
    for (int r = 0; r < AB_TILE_Q; r++) {
        t->m[r] = -INFINITY;
        t->l[r] = 0.0f;
    }
    memset(t->acc, 0, (size_t)nq * t->dp * sizeof(float));
}

/* qt = scale * Q^T for the tile's nq rows, row r at q + r ldq; columns
 * from nq up to ld zero. */
static inline void ab_tile_load_q(ab_tile *t, const float *q, size_t ldq, float scale)
{
    for (int x = 0; x < t->d; x++) {
        float *restrict row = t->qt + (size_t)x * t->ld;
        for (int r = 0; r < t->nq; r++) row[r] = scale * q[(size_t)r * ldq + x];
        for (int r = t->nq; r < t->ld; r++) row[r] = 0.0f;
    }
}

/* The part of ab_tile_begin_rs that does not read q: spans, m, l, acc. */
static inline void ab_tile_begin_spans(ab_tile *t, int i0, int nq, int rs, const ab_mask *m)
{
    ab_tile_reset(t, nq);
    t->i0 = i0;
    t->rs = rs;
    t->mask = m;
    t->interval = m->def->interval != 0;
    t->minlo = t->minhi = INT32_MAX;
    t->maxlo = t->maxhi = 0;
    for (int r = 0; r < nq; r++) {
        int lo, hi;
        ab_mask_span(m, i0 + r * rs, &lo, &hi);
        t->slo[r] = lo;
        t->shi[r] = hi;
        t->minlo = lo < t->minlo ? lo : t->minlo;
        t->maxlo = lo > t->maxlo ? lo : t->maxlo;
        t->minhi = hi < t->minhi ? hi : t->minhi;
        t->maxhi = hi > t->maxhi ? hi : t->maxhi;
    }
}

/* Start a query tile of the nq <= tq rows i0, i0 + rs, ..., i0 + (nq - 1) rs
 * (rs = 1: the rows [i0, i0 + nq); rs > 1: one residue class of a
 * row-periodic layout, gather.c): q points at row i0 of the head's (N, d)
 * rows; qt = scale * q^T; the rows' spans under the base mask m (which must
 * outlive the tile's use). */
static inline void ab_tile_begin_rs(ab_tile *t, const float *q, int i0, int nq, int rs, float scale,
                                    const ab_mask *m)
{
    ab_tile_begin_spans(t, i0, nq, rs, m);
    ab_tile_load_q(t, q, (size_t)rs * t->d, scale);
}

/* Query row of tile row r. */
static inline int ab_tile_row(const ab_tile *t, int r) { return t->i0 + r * t->rs; }

static inline void ab_tile_begin(ab_tile *t, const float *q, int i0, int nq, float scale, const ab_mask *m)
{
    ab_tile_begin_rs(t, q, i0, nq, 1, scale, m);
}

/* Padding lanes (rows >= nq) of the per-row column ranges: unmasked. */
static inline void ab_tile_pad_lanes(ab_tile *t, int nk)
{
    for (int r = t->nq; r < AB_TILE_Q; r++) {
        t->lo[r] = 0;
        t->lim[r] = nk;
    }
}

/* Element map of a partial chunk for a non-interval mask: em[c][r] for the
 * keys key(c) = j0 + c (idx == NULL) or idx[c]. Returns the allowed count. */
static inline int64_t ab_tile_fill_em(ab_tile *t, int j0, const int32_t *idx, int nk)
{
    int64_t any = 0;
    for (int c = 0; c < nk; c++) {
        unsigned char *e = t->em + (size_t)c * t->ld;
        const int j = idx ? idx[c] : j0 + c;
        for (int r = 0; r < t->nq; r++) {
            e[r] = (unsigned char)(ab_mask_allows(t->mask, ab_tile_row(t, r), j) != 0);
            any += e[r];
        }
        for (int r = t->nq; r < t->ld; r++) e[r] = 1;
    }
    return any;
}

/* The base mask over the contiguous key chunk [*j0, *j0 + *nk): narrows it
 * to the columns some row of the tile can see and returns the chunk step's
 * `masked` argument (filling lo/lim or em), or -1 when no row sees any. */
static inline int ab_tile_contig_mask(ab_tile *t, int *j0p, int *nkp)
{
    int j0 = *j0p, j1 = j0 + *nkp;
    if (j0 < t->minlo) j0 = t->minlo; /* columns no row of the tile can see */
    if (j1 > t->maxhi) j1 = t->maxhi;
    if (j1 <= j0) return -1;
    const int nk = j1 - j0;
    *j0p = j0;
    *nkp = nk;
    int masked = 0;
    if (t->interval) {
        if (!(t->maxlo <= j0 && t->minhi >= j1)) { /* some row misses some column */
            masked = 1;
            for (int r = 0; r < t->nq; r++) {
                const int a = t->slo[r] - j0, b = t->shi[r] - j0;
                t->lo[r] = a < 0 ? 0 : a > nk ? nk : a;
                t->lim[r] = b < t->lo[r] ? t->lo[r] : b > nk ? nk : b;
            }
            ab_tile_pad_lanes(t, nk);
        }
    } else {
        /* rows [i0, last + 1) hold the tile's (every rs-th): their class bounds it */
        const int cls = ab_mask_block(t->mask, t->i0, ab_tile_row(t, t->nq - 1) + 1, j0, j1);
        if (cls == AB_BLOCK_EMPTY) return -1;
        if (cls == AB_BLOCK_PARTIAL) {
            masked = 2;
            ab_tile_fill_em(t, j0, NULL, nk);
        }
    }
    return masked;
}

/* Contiguous key chunk [j0, j0 + nk), nk <= tk, of one head for the
 * current tile. k, v: (seq_len, d) of the head. With copy_kv (AVX2) the
 * chunk's key and value rows are first copied into the tile's kp and vp,
 * and the step reads them there: on the Zen 3 where it was measured,
 * dense flash then ran at 0.77-0.92 of the time at d = 128 (4K and 16K,
 * causal and not, 1 and 2 threads; alternating builds, same output bits),
 * and at 0.93-1.06 at d = 64, hence from AB_TILE_COPY_MIN_D only. The bf16
 * path, which widens each chunk into kp and vp, had been ahead of fp32 at
 * d = 128. The copy is one sequential read
 * of 2 nk d floats; the step's passes then read rows that stay in the
 * tile's own buffers instead of six key rows at once, and the value rows,
 * from the caller's arrays. Why that is faster is not established
 * (docs/kernels.md, "Contiguous chunks copied into the tile").
 * Not measured on AVX-512, so not done there. */
static inline void ab_tile_contig(ab_tile *t, const float *k, const float *v, int j0, int nk)
{
    const int masked = ab_tile_contig_mask(t, &j0, &nk);
    if (masked >= 0) {
        const float *kc = k + (size_t)j0 * t->d, *vc = v + (size_t)j0 * t->d;
        if (t->copy_kv) { /* the chunk's rows into the tile's own kp, vp first (ab_tile_alloc) */
            memcpy(t->kp, kc, (size_t)nk * t->d * sizeof(float));
            memcpy(t->vp, vc, (size_t)nk * t->d * sizeof(float));
            kc = t->kp;
            vc = t->vp;
        }
        t->chunk(t, kc, vc, nk, masked);
    }
    t->pfn = 0; /* a prefetch list (ab_tile_set_next) serves this chunk only */
}

/* First position in idx[0, n) whose key is >= key (idx sorted). */
static inline int ab_tile_lower(const int32_t *idx, int n, int key)
{
    int a = 0, b = n;
    while (a < b) {
        const int mid = a + (b - a) / 2;
        if (idx[mid] < key)
            a = mid + 1;
        else
            b = mid;
    }
    return a;
}

/* Gathered key chunk: the nk <= tk keys idx[0..nk) (sorted ascending),
 * packed into kp and vp first. The caller has already dropped keys outside
 * [minlo, maxhi) (ab_tile_token_range). */
/* The base mask over the gathered keys idx[0..nk) (sorted): the chunk
 * step's `masked` argument (filling lo/lim or em), or -1 when no row sees
 * any of them. */
static inline int ab_tile_gather_mask(ab_tile *t, const int32_t *idx, int nk)
{
    if (nk <= 0) return -1;
    int masked = 0;
    if (t->interval) {
        if (!(idx[0] >= t->maxlo && idx[nk - 1] < t->minhi)) {
            masked = 1;
            int any = 0;
            for (int r = 0; r < t->nq; r++) {
                t->lo[r] = ab_tile_lower(idx, nk, t->slo[r]);
                t->lim[r] = ab_tile_lower(idx, nk, t->shi[r]);
                if (t->lim[r] < t->lo[r]) t->lim[r] = t->lo[r];
                any |= t->lim[r] > t->lo[r];
            }
            if (!any) return -1;
            ab_tile_pad_lanes(t, nk);
        }
    } else {
        const int64_t any = ab_tile_fill_em(t, 0, idx, nk);
        if (any == 0) return -1;
        masked = any == (int64_t)nk * t->nq ? 0 : 2;
    }
    return masked;
}

/* Copies the nk rows idx[] of k and v (d floats each) into kp and vp. The
 * usual head sizes get a copy of constant size, which the compiler inlines
 * as vector moves: a call to memcpy per 256-byte row was about a tenth of
 * the gather kernel's time at d = 64. */
static inline void ab_tile_gather_rows(float *kp, float *vp, const float *k, const float *v,
                                       const int32_t *idx, int nk, int d)
{
#define AB_GATHER_ROWS(D)                                                                    \
    for (int c = 0; c < nk; c++) {                                                           \
        memcpy(kp + (size_t)c * (D), k + (size_t)idx[c] * (D), (size_t)(D) * sizeof(float)); \
        memcpy(vp + (size_t)c * (D), v + (size_t)idx[c] * (D), (size_t)(D) * sizeof(float)); \
    }
    switch (d) {
    case 64: AB_GATHER_ROWS(64) break;
    case 128: AB_GATHER_ROWS(128) break;
    default: AB_GATHER_ROWS(d) break;
    }
#undef AB_GATHER_ROWS
}

/* Prefetches the n rows idx[] of k and v (d floats each) towards L2 in one
 * burst: a tile's first chunk, and the next chunk where no chunk step on
 * row lists spreads them (ab_tile_gather_next). The gather copies read
 * random rows of K and V from beyond L2 and had waited on each
 * (kernels_bench --only sparse at N = 16K on a Zen 4: gather time/flash at
 * 5 % 0.065-0.071 -> 0.057-0.059). */
static inline void ab_tile_prefetch_rows(const float *k, const float *v, const int32_t *idx, int n, int d)
{
    for (int x = 0; x < n; x++) {
        const float *pk = k + (size_t)idx[x] * d, *pv = v + (size_t)idx[x] * d;
        for (int b = 0; b < d; b += 16) {
            __builtin_prefetch(pk + b, 0, 2);
            __builtin_prefetch(pv + b, 0, 2);
        }
    }
}

/* The next chunk's rows for the chunk step to prefetch: the n rows from
 * key j0 (idx NULL) or the rows idx[0, n); n <= tk. */
static inline void ab_tile_set_next(ab_tile *t, const float *k, const float *v, int64_t j0,
                                    const int32_t *idx, int n)
{
    for (int c = 0; c < n; c++) {
        const int64_t j = idx ? idx[c] : j0 + c;
        t->pfk[c] = k + (size_t)j * t->d;
        t->pfv[c] = v + (size_t)j * t->d;
    }
    t->pfn = n;
}

/* The gathered chunk idx[0, nk) (sorted) of one head's k and v: read in
 * place where the ISA has a chunk step on row lists (the AVX2 step copies
 * the value rows into vp itself before its value pass: simd_body.h
 * F(pv_copy)), with the nn rows
 * nidx[] of the next chunk prefetched while it computes (nn may be 0);
 * else the rows copied into kp and vp first and the next ones prefetched
 * before. Reading in place saves the copy, 2 d floats per key; at N = 16K
 * the prefetches issued as one burst before the chunk waited on the line
 * fill buffers and took half the gather kernel's own time. */
static inline void ab_tile_gather_next(ab_tile *t, const float *k, const float *v, const int32_t *idx, int nk,
                                       const int32_t *nidx, int nn)
{
    const int d = t->d;
    const int masked = ab_tile_gather_mask(t, idx, nk);
    if (masked < 0 || !t->chunk_rows) { /* no chunk step to spread the next rows over */
        ab_tile_prefetch_rows(k, v, nidx, nn, d);
        if (masked >= 0) {
            ab_tile_gather_rows(t->kp, t->vp, k, v, idx, nk, d);
            t->chunk(t, t->kp, t->vp, nk, masked);
        }
        return;
    }
    for (int c = 0; c < nk; c++) {
        t->kr[c] = k + (size_t)idx[c] * d;
        t->vr[c] = v + (size_t)idx[c] * d;
    }
    ab_tile_set_next(t, k, v, 0, nidx, nn);
    t->chunk_rows(t, t->kr, t->vr, nk, masked);
    t->pfn = 0;
}

static inline void ab_tile_gather(ab_tile *t, const float *k, const float *v, const int32_t *idx, int nk)
{
    ab_tile_gather_next(t, k, v, idx, nk, NULL, 0);
}

/* Runs of at least this many consecutive keys in a token list are read in
 * place (ab_tile_contig) instead of gathered: a quest page, a pbs segment, a
 * diagonal block. */
#define AB_TILE_RUN 16

/* The next piece of the sorted token list tok[c, t1): a run of at least
 * AB_TILE_RUN consecutive keys (returns 1), or the keys before the next
 * such run (returns 0); *e: the piece's end. */
static inline int ab_tile_token_piece(const int32_t *tok, int64_t c, int64_t t1, int64_t *e)
{
    int64_t a = c;
    while (a < t1) {
        int64_t b = a + 1;
        while (b < t1 && tok[b] == tok[b - 1] + 1) b++;
        if (b - a >= AB_TILE_RUN) {
            *e = a == c ? b : a;
            return a == c;
        }
        a = b;
    }
    *e = t1;
    return 0;
}

/* The tokens tok[t0, t1) (sorted) of the current tile: runs of AB_TILE_RUN
 * or more consecutive keys in place, in chunks of at most tk; the keys
 * between runs gathered, in chunks of at most tk, in list order. Gathering
 * copies 2 d floats per key: with runs in place, run/dense at N = 16K went
 * 0.122 -> 0.115 for quest_prefill, 0.127 -> 0.111 for dhsa
 * (docs/selectors.md). */
static inline void ab_tile_tokens(ab_tile *t, const float *k, const float *v, const int32_t *tok, int64_t t0,
                                  int64_t t1)
{
    for (int64_t c = t0, e; c < t1; c = e) {
        const int run = ab_tile_token_piece(tok, c, t1, &e);
        for (int64_t j = c; j < e; j += t->tk) {
            const int nk = (int)(e - j < t->tk ? e - j : t->tk);
            /* the list's next tk keys, whichever piece they fall in */
            const int nn = t1 - (j + nk) < t->tk ? (int)(t1 - (j + nk)) : t->tk;
            if (run) {
                ab_tile_set_next(t, k, v, 0, tok + j + nk, nn);
                ab_tile_contig(t, k, v, tok[j], nk);
            } else {
                ab_tile_gather_next(t, k, v, tok + j, nk, tok + j + nk, nn);
            }
        }
    }
}

/* The part [*t0, *t1) of a sorted token list tok[] some row of the tile may
 * see: keys in [minlo, maxhi). */
static inline void ab_tile_token_range(const ab_tile *t, const int32_t *tok, int64_t *t0, int64_t *t1)
{
    int64_t a = *t0, b = *t1;
    while (a < b) { /* first key >= minlo */
        const int64_t mid = a + (b - a) / 2;
        if (tok[mid] < t->minlo)
            a = mid + 1;
        else
            b = mid;
    }
    int64_t e = a, f = *t1;
    while (e < f) { /* first key >= maxhi */
        const int64_t mid = e + (f - e) / 2;
        if (tok[mid] < t->maxhi)
            e = mid + 1;
        else
            f = mid;
    }
    *t0 = a;
    *t1 = e;
}

/* The kept key blocks blk[0..nblk) (sorted) of the current tile; block_k
 * may exceed tk: each block is streamed in chunks. While a block's last
 * chunk computes, the chunk step prefetches the next block's first rows
 * (or, after the last block, the rows then[0, nthen): a MIXED layout's
 * first tokens): the hardware prefetcher follows a block's own rows but
 * not the jump to the next (kernels_bench --only sparse, N = 16K:
 * blocksparse time 14-17 % lower at 5, 10 and 20 %, causal and not). */
static inline void ab_tile_blocks(ab_tile *t, const float *k, const float *v, const int32_t *blk,
                                  int64_t nblk, int block_k, int seq_len, const int32_t *then, int nthen)
{
    for (int64_t e = 0; e < nblk; e++) {
        const int64_t k0 = (int64_t)blk[e] * block_k;
        if (k0 >= t->maxhi) break; /* sorted: no row sees this block or any later one */
        const int k1 = (int)(k0 + block_k < seq_len ? k0 + block_k : seq_len);
        if (k1 <= t->minlo) continue;
        const int64_t kn = e + 1 < nblk ? (int64_t)blk[e + 1] * block_k : t->maxhi;
        int nn = 0;
        if (kn < t->maxhi) {
            nn = (int)(seq_len - kn < t->tk ? seq_len - kn : t->tk);
            nn = nn < block_k ? nn : block_k;
        }
        for (int j0 = (int)k0; j0 < k1; j0 += t->tk) {
            const int nk = k1 - j0 < t->tk ? k1 - j0 : t->tk;
            if (j0 + nk >= k1) {
                if (nn > 0)
                    ab_tile_set_next(t, k, v, kn, NULL, nn);
                else if (e + 1 >= nblk || kn >= t->maxhi)
                    ab_tile_set_next(t, k, v, 0, then, nthen < t->tk ? nthen : t->tk);
            }
            ab_tile_contig(t, k, v, j0, nk);
        }
    }
}

/* Write the tile's rows: row r at out + r ldo = acc / l, a row that kept
 * nothing 0; lse (NULL: not written): each row's log-sum-exp of its
 * logits, -inf when it kept nothing. */
static inline void ab_tile_end_ld(const ab_tile *t, float *out, size_t ldo, float *lse)
{
    const int d = t->d;
    for (int r = 0; r < t->nq; r++) {
        float *restrict o = out + (size_t)r * ldo;
        const float *restrict a = t->acc + (size_t)r * t->dp;
        const float lr = t->l[r];
        if (lr > 0.0f) {
            for (int x = 0; x < d; x++) o[x] = a[x] / lr;
        } else {
            memset(o, 0, (size_t)d * sizeof(float));
        }
        if (lse) lse[r] = lr > 0.0f ? t->m[r] + logf(lr) : -INFINITY;
    }
}

/* Write the tile's rows: out row r rs (out: row i0 of the head). */
static inline void ab_tile_end(const ab_tile *t, float *out)
{
    ab_tile_end_ld(t, out, (size_t)t->rs * t->d, NULL);
}

/* Work items of a layout kernel: (head, query block, sub-tile of at most
 * AB_TILE_Q rows). Item `it` is mapped heaviest-first for causal balance.
 * Returns 0 if the sub-tile is empty (partial last block). */
static inline int ab_tile_item(int64_t it, int heads, int n_qblocks, int nsub, int block_q, int seq_len,
                               int *h, int *qb, int *i0, int *nq)
{
    const int64_t rest = it / heads;
    *h = (int)(it % heads);
    *qb = n_qblocks - 1 - (int)(rest / nsub);
    const int64_t start = (int64_t)*qb * block_q + (rest % nsub) * (int64_t)AB_TILE_Q;
    int64_t end = (int64_t)*qb * block_q + block_q;
    if (end > seq_len) end = seq_len;
    if (start >= end) return 0;
    *i0 = (int)start;
    *nq = (int)(end - start < AB_TILE_Q ? end - start : AB_TILE_Q);
    return 1;
}

/* Shape checks shared by the layout kernels. */
static inline int ab_tile_check_layout(const ab_problem *pb, const ab_layout *l)
{
    if (!l || l->heads != pb->s.heads || l->seq_len != pb->s.seq_len ||
        (l->causal != 0) != (pb->s.causal != 0) || l->mask != pb->s.mask || l->block_q <= 0 ||
        l->block_k <= 0)
        return AB_EINVAL;
    if (l->n_qblocks != (int)(((int64_t)l->seq_len + l->block_q - 1) / l->block_q) ||
        l->n_kblocks != (int)(((int64_t)l->seq_len + l->block_k - 1) / l->block_k))
        return AB_EINVAL;
    return AB_OK;
}

#endif /* AB_CPU_TILE_H */
