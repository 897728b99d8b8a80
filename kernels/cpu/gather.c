/* gather.c — attention over TOKEN and MIXED layouts: per (head, query
 * block) the listed key/value rows are packed into a contiguous tile
 * (gather) and fed to the shared online-softmax inner loop (tile.h). MIXED:
 * the kept blocks first, then the token list, in one softmax state.
 * The layout must be finalised and valid (ab_layout_validate): indices are
 * not range-checked here, and MIXED token lists must avoid the kept blocks.
 * OpenMP over (head, query block, sub-tile), dynamic schedule; the inner
 * loop is the vectorised chunk step of simd_*.c (ISA picked at run time).
 * Also the kernel dispatch by layout kind (ab_cpu_layout). */
#if defined(__AVX512BW__)
#include <immintrin.h>
#endif
#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"
#include "kernels/kernels.h"

/* ---- one-row (small) query blocks: grouped tiles -------------------------
 * Layouts whose rows differ row by row (strided, dilated: block_q = 1) would
 * run one query row per tile (15 of 16 vector lanes idle, a tile begin/end
 * per row). Instead g = AB_GROUP_ROWS / block_q consecutive query blocks of
 * one head share a tile, and each key is sent where it is cheapest:
 *  - key blocks (MIXED) in the union of the group's rows, and key tokens
 *    kept by many of the group's rows, run as tile chunks with an element
 *    map (row r sees key j iff r's query block lists j and the base mask
 *    allows it), so shared windows cost what a block does;
 *  - tokens kept by few rows of the group (a row's private lattice) update
 *    that row's softmax state alone (ab_row_update): no lanes wasted.
 * Both update the same online-softmax state, so the result equals the
 * per-row kernel up to float rounding. With one-row blocks whose rows share
 * keys only at a period p > 1 (a dilated window), a tile takes every p-th
 * row instead (ab_group_period): one residue class, whose windows overlap.
 */
#define AB_GROUP_ROWS   64 /* rows per grouped tile */
#define AB_GROUP_SMALL  16 /* block_q below this: grouped path */
#define AB_ROW_PREFETCH 8  /* keys ahead in a row update */

typedef struct ab_group_scratch {
    uint64_t *own;   /* (seq_len): bit b = query block qb0 + b lists the token */
    uint64_t *bown;  /* (n_kblocks): the same for key blocks */
    int32_t *touch;  /* (seq_len): tokens with own != 0 */
    int32_t *btouch; /* (n_kblocks): blocks with bown != 0 */
    int32_t *sh;     /* (2 seq_len): shared tokens of the group, sorted; then a block's private ones */
    float *sbuf;     /* (AB_TILE_K): logits of a row update */
    float qrow[AB_MAX_HEAD_DIM];
} ab_group_scratch;

static int cmp_i32(const void *a, const void *b)
{
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The tile rows (bit r) whose query block is in the owner bits o (bit b:
 * query block qb0 + b), rows of bq each. */
static inline uint64_t ab_group_rows(uint64_t o, int bq, int nq)
{
    if (bq == 1) return o;
    /* each owner's bq rows at once (row by row, with a division per row,
     * this was a fifth of sea_proxy's run at block_q 4, 2026-12-06) */
    const uint64_t blk = bq >= 64 ? ~0ull : (1ull << bq) - 1;
    uint64_t m = 0;
    for (; o; o &= o - 1) {
        const int b = __builtin_ctzll(o);
        if ((int64_t)b * bq < 64) m |= blk << (b * bq);
    }
    return nq >= 64 ? m : m & ((1ull << nq) - 1);
}

/* The tile rows the base mask lets see key j. Spans non-decreasing in the
 * row (t->mono: causal, sliding window, full): the rows [ra, rb) with
 * shi > j and slo <= j, by binary search; otherwise row by row. */
static inline uint64_t ab_group_allowed(const ab_tile *t, int mono, int j)
{
    const int nq = t->nq;
    if (mono) {
        int a = 0, b = nq; /* first row with shi > j */
        while (a < b) {
            const int mid = (a + b) / 2;
            if (t->shi[mid] > j)
                b = mid;
            else
                a = mid + 1;
        }
        int c = a, e = nq; /* first row with slo > j */
        while (c < e) {
            const int mid = (c + e) / 2;
            if (t->slo[mid] > j)
                e = mid;
            else
                c = mid + 1;
        }
        if (c <= a) return 0;
        const uint64_t hi = c >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << c) - 1);
        return hi & ~(((uint64_t)1 << a) - 1);
    }
    uint64_t m = 0;
    for (int r = 0; r < nq; r++) {
        const int ok = t->interval ? (t->slo[r] <= j && j < t->shi[r])
                                   : ab_mask_allows(t->mask, ab_tile_row(t, r), j) != 0;
        m |= (uint64_t)ok << r;
    }
    return m;
}

/* em column of one key from its row mask (padding lanes 1): the first
 * min(ld, 64) bytes from m (a tile of fewer than 64 padded rows has a
 * shorter column: a whole 64-byte store ran past the last one). */
static inline void ab_group_em_col(const ab_tile *t, unsigned char *e, uint64_t m)
{
#if defined(__AVX512BW__)
    const __mmask64 w = t->ld >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << t->ld) - 1);
    _mm512_mask_storeu_epi8((void *)e, w, _mm512_maskz_mov_epi8((__mmask64)m, _mm512_set1_epi8(1)));
#else
    for (int r = 0; r < (t->ld < 64 ? t->ld : 64); r++) e[r] = (unsigned char)((m >> r) & 1u);
#endif
    for (int r = t->nq; r < t->ld; r++) e[r] = 1;
}

/* Element map of the gathered chunk idx[0, nk): row r sees key idx[c] iff
 * its query block lists it (own) and the base mask allows it. Returns 0
 * (nothing seen), 1 (every row sees every key: no mask needed) or 2 (em). */
static int ab_group_em(ab_tile *t, int mono, const int32_t *idx, const uint64_t *own, int nk, int bq)
{
    const uint64_t full = t->nq >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << t->nq) - 1);
    uint64_t any = 0, all = full;
    for (int c = 0; c < nk; c++) {
        const int j = idx[c];
        const uint64_t m = ab_group_rows(own[j], bq, t->nq) & ab_group_allowed(t, mono, j);
        any |= m;
        all &= m;
        ab_group_em_col(t, t->em + (size_t)c * t->ld, m);
    }
    return !any ? 0 : all == full ? 1 : 2;
}

/* Row r of the tile attends to the keys idx[0, n) (its own, allowed by the
 * base mask): the online-softmax update of that row alone. */
static void ab_row_update(ab_tile *t, ab_group_scratch *g, int r, const float *k, const float *v,
                          const int32_t *idx, int n)
{
    const int d = t->d;
    float *restrict q = g->qrow;
    for (int x = 0; x < d; x++) q[x] = t->qt[(size_t)x * t->ld + r];
    float *restrict acc = t->acc + (size_t)r * t->dp;
    for (int c0 = 0; c0 < n; c0 += AB_TILE_K) {
        const int nk = n - c0 < AB_TILE_K ? n - c0 : AB_TILE_K;
        float *restrict s = g->sbuf;
        float mx = t->m[r];
        for (int c = 0; c < nk; c++) {
            const float *restrict kr = k + (size_t)idx[c0 + c] * d;
            if (c0 + c + AB_ROW_PREFETCH < n) { /* a private list is scattered (lattice): fetch ahead */
                const size_t o = (size_t)idx[c0 + c + AB_ROW_PREFETCH] * d;
                for (int x = 0; x < d; x += 16) {
                    __builtin_prefetch(k + o + x);
                    __builtin_prefetch(v + o + x);
                }
            }
            float part[16] = { 0 }; /* 16 independent partial sums: vectorised */
            int x = 0;
            for (; x + 16 <= d; x += 16)
                for (int u = 0; u < 16; u++) part[u] += q[x + u] * kr[x + u];
            float a = 0.0f;
            for (; x < d; x++) a += q[x] * kr[x];
            for (int u = 0; u < 16; u++) a += part[u];
            s[c] = a;
            mx = a > mx ? a : mx;
        }
        const float alpha = expf(t->m[r] - mx); /* 0 when m was -inf */
        float sum = 0.0f;
        for (int x = 0; x < d; x++) acc[x] *= alpha;
        for (int c = 0; c < nk; c++) {
            const float p = expf(s[c] - mx);
            const float *restrict vr = v + (size_t)idx[c0 + c] * d;
            sum += p;
            for (int x = 0; x < d; x++) acc[x] += p * vr[x];
        }
        t->l[r] = t->l[r] * alpha + sum;
        t->m[r] = mx;
    }
}

/* Contiguous chunk [j0, j0 + nk) of a key block that only the query
 * blocks in o list: rows outside o see nothing, the others what the base
 * mask allows (per-row ranges for interval masks, else an element map). */
static void ab_group_block_chunk(ab_tile *t, const float *kh, const float *vh, int j0, int nk, uint64_t o,
                                 int bq)
{
    const uint64_t rows = ab_group_rows(o, bq, t->nq);
    int any = 0;
    if (t->interval) {
        for (int r = 0; r < t->nq; r++) {
            int a = 0, b = 0;
            if ((rows >> r) & 1u) {
                a = t->slo[r] - j0;
                b = t->shi[r] - j0;
                a = a < 0 ? 0 : a > nk ? nk : a;
                b = b < a ? a : b > nk ? nk : b;
            }
            t->lo[r] = a;
            t->lim[r] = b;
            any |= b > a;
        }
        if (!any) return;
        ab_tile_pad_lanes(t, nk);
        t->chunk(t, kh + (size_t)j0 * t->d, vh + (size_t)j0 * t->d, nk, 1);
        return;
    }
    for (int c = 0; c < nk; c++) {
        unsigned char *e = t->em + (size_t)c * t->ld;
        for (int r = 0; r < t->nq; r++) {
            e[r] = (unsigned char)(((rows >> r) & 1u) && ab_mask_allows(t->mask, ab_tile_row(t, r), j0 + c));
            any |= e[r];
        }
        for (int r = t->nq; r < t->ld; r++) e[r] = 1;
    }
    if (any) t->chunk(t, kh + (size_t)j0 * t->d, vh + (size_t)j0 * t->d, nk, 2);
}

/* One grouped tile: the g query blocks qb0, qb0 + qs, ..., qb0 + (g - 1) qs
 * of head h (qs = 1: rows [i0, i0 + nq); qs > 1 only with one-row blocks,
 * tile row b = query block qb0 + b qs). */
static void ab_group_tile(ab_tile *t, ab_group_scratch *gs, const ab_layout *l, int h, int qb0, int g, int qs,
                          const float *kh, const float *vh)
{
    const int bq = l->block_q, bk = l->block_k, N = l->seq_len;
    const int64_t r0 = (int64_t)h * l->n_qblocks + qb0;
    int mono = t->interval;
    for (int r = 1; mono && r < t->nq; r++) mono = t->slo[r] >= t->slo[r - 1] && t->shi[r] >= t->shi[r - 1];
    /* key blocks: union over the group, by owner bits */
    if (l->kind == AB_LAYOUT_MIXED) {
        int nb = 0;
        for (int b = 0; b < g; b++)
            for (int64_t e = l->blk_ptr[r0 + (int64_t)b * qs]; e < l->blk_ptr[r0 + (int64_t)b * qs + 1];
                 e++) {
                const int kb = l->blk_idx[e];
                if (!gs->bown[kb]) gs->btouch[nb++] = kb;
                gs->bown[kb] |= (uint64_t)1 << b;
            }
        qsort(gs->btouch, (size_t)nb, sizeof(int32_t), cmp_i32);
        const uint64_t all = g == 64 ? ~(uint64_t)0 : (((uint64_t)1 << g) - 1);
        for (int e = 0; e < nb; e++) {
            const int kb = gs->btouch[e];
            const uint64_t o = gs->bown[kb];
            gs->bown[kb] = 0;
            int k0 = kb * bk, k1 = k0 + bk < N ? k0 + bk : N;
            if (k0 < t->minlo) k0 = t->minlo;
            if (k1 > t->maxhi) k1 = t->maxhi;
            for (int j0 = k0; j0 < k1; j0 += t->tk) {
                const int nk = k1 - j0 < t->tk ? k1 - j0 : t->tk;
                if (o == all) {
                    ab_tile_contig(t, kh, vh, j0, nk);
                } else {
                    ab_group_block_chunk(t, kh, vh, j0, nk, o, bq);
                }
            }
        }
    }
    /* tokens: owner bits, then shared ones as tile chunks, the rest per row */
    int nt = 0, jlo = N, jhi = -1;
    for (int b = 0; b < g; b++)
        for (int64_t e = l->tok_ptr[r0 + (int64_t)b * qs]; e < l->tok_ptr[r0 + (int64_t)b * qs + 1]; e++) {
            const int j = l->tok_idx[e];
            if (!gs->own[j]) gs->touch[nt++] = j;
            gs->own[j] |= (uint64_t)1 << b;
            jlo = j < jlo ? j : jlo;
            jhi = j > jhi ? j : jhi;
        }
    int ns = 0;
    const int thresh = (t->nq + 8 * bq - 1) / (8 * bq) > 2 ? (t->nq + 8 * bq - 1) / (8 * bq) : 2;
    if (nt > 0 && jhi - jlo < 8 * nt) { /* the shared ones in key order by a scan of own (a sort
                                          * of touch was 5 % of sea_proxy's run, 2026-12-06) */
        for (int j = jlo; j <= jhi; j++) {
            gs->sh[ns] = j;
            ns += __builtin_popcountll(gs->own[j]) >= thresh;
        }
    } else {
        for (int e = 0; e < nt; e++) {
            const int j = gs->touch[e];
            if (__builtin_popcountll(gs->own[j]) >= thresh) gs->sh[ns++] = j;
        }
        qsort(gs->sh, (size_t)ns, sizeof(int32_t), cmp_i32);
    }
    if (ns > 0) {
        for (int c0 = 0; c0 < ns; c0 += AB_TILE_K) {
            const int nk = ns - c0 < AB_TILE_K ? ns - c0 : AB_TILE_K;
            const int32_t *idx = gs->sh + c0;
            const int how = ab_group_em(t, mono, idx, gs->own, nk, bq);
            if (how == 0) continue;
            if (c0 + nk < ns)
                ab_tile_prefetch_rows(kh, vh, idx + nk,
                                      ns - (c0 + nk) < AB_TILE_K ? ns - (c0 + nk) : AB_TILE_K, t->d);
            ab_tile_gather_rows(t->kp, t->vp, kh, vh, idx, nk, t->d);
            t->chunk(t, t->kp, t->vp, nk, how == 1 ? 0 : 2);
        }
    }
    /* private tokens, row by row (a row's list is sorted; keep its order):
     * each block's private list once, then each of its rows takes the part
     * its span allows (under an interval mask a run of it: two searches) */
    for (int b = 0; b < g; b++) {
        const int64_t rb = r0 + (int64_t)b * qs;
        int np = 0;
        int32_t *blist = gs->sh; /* reuse: the shared list is done */
        for (int64_t e = l->tok_ptr[rb]; e < l->tok_ptr[rb + 1]; e++) {
            const int j = l->tok_idx[e];
            blist[np] = j;
            np += __builtin_popcountll(gs->own[j]) < thresh;
        }
        if (np == 0) continue;
        for (int r = b * bq; r < (b + 1) * bq && r < t->nq; r++) {
            if (t->interval) {
                const int a = ab_tile_lower(blist, np, t->slo[r]), z = ab_tile_lower(blist, np, t->shi[r]);
                if (z > a) ab_row_update(t, gs, r, kh, vh, blist + a, z - a);
                continue;
            }
            const int i = ab_tile_row(t, r);
            int32_t *row = blist + np; /* after the block's list */
            int n = 0;
            for (int x = 0; x < np; x++) {
                row[n] = blist[x];
                n += ab_mask_allows(t->mask, i, blist[x]) != 0;
            }
            if (n) ab_row_update(t, gs, r, kh, vh, row, n);
        }
    }
    for (int e = 0; e < nt; e++) gs->own[gs->touch[e]] = 0;
}

/* Keys rows a and b of a finalised layout both list (sorted token lists;
 * MIXED: plus the shared key blocks, counted in keys). */
static int64_t ab_rows_shared(const ab_layout *l, int64_t a, int64_t b)
{
    int64_t n = 0;
    for (int blk = 0; blk < 2; blk++) {
        const int64_t *ptr = blk ? l->blk_ptr : l->tok_ptr;
        const int32_t *idx = blk ? l->blk_idx : l->tok_idx;
        if (!ptr) continue;
        int64_t x = ptr[a], y = ptr[b];
        const int64_t xe = ptr[a + 1], ye = ptr[b + 1];
        int64_t c = 0;
        while (x < xe && y < ye) {
            if (idx[x] < idx[y])
                x++;
            else if (idx[x] > idx[y])
                y++;
            else
                c++, x++, y++;
        }
        n += blk ? c * l->block_k : c;
    }
    return n;
}

/* Row-periodic layouts with one-row query blocks (a dilated window: row i
 * keeps i, i - r, i - 2r, ...): rows i and i + p share keys only when r
 * divides p, so a tile of 64 consecutive rows would hold r classes of 64 / r
 * rows that share nothing, each key a private update of few rows. The
 * period of head h is the p in [1, AB_GROUP_PMAX] for which rows i and
 * i + p share the most keys at three sample rows (ties: the smaller p);
 * 1 when none shares any. Its tiles then take every p-th row. */
#define AB_GROUP_PMAX 8
static int ab_group_period(const ab_layout *l, int h)
{
    const int nqb = l->n_qblocks;
    if (l->block_q != 1 || nqb < 8 * AB_GROUP_PMAX) return 1;
    int64_t best = 0;
    int bp = 1;
    for (int p = 1; p <= AB_GROUP_PMAX; p++) {
        int64_t sh = 0;
        for (int s = 1; s <= 3; s++) {
            const int64_t i = (int64_t)h * nqb + (int64_t)nqb * s / 4;
            sh += ab_rows_shared(l, i, i + p);
        }
        if (sh > best) {
            best = sh;
            bp = p;
        }
    }
    return bp;
}

/* One grouped tile of the driver: head h, query blocks qb0 + b qs, b < g. */
typedef struct ab_group_item {
    int h, qb0, g, qs;
} ab_group_item;

/* Heaviest first under causal: the later rows first (stable by head). */
static int ab_group_item_cmp(const void *pa, const void *pb)
{
    const ab_group_item *a = pa, *b = pb;
    if (a->qb0 != b->qb0) return b->qb0 - a->qb0;
    return a->h - b->h;
}

static int ab_kernel_gather_grouped(const ab_problem *pb, const ab_layout *l, float *out, int isa)
{
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    const ab_mask mask = ab_shape_mask(&pb->s);
    const float scale = pb->s.scale;
    const int bq = l->block_q, nqb = l->n_qblocks;
    const int g = AB_GROUP_ROWS / bq; /* query blocks per tile */
    /* the tiles: per head, spans of g p blocks cut into p classes */
    int *per = malloc((size_t)H * sizeof *per);
    if (!per) return AB_ENOMEM;
    int64_t items = 0;
    for (int h = 0; h < H; h++) {
        per[h] = ab_group_period(l, h);
        const int span = g * per[h];
        items += (int64_t)((nqb + span - 1) / span) * per[h];
    }
    ab_group_item *it_list = malloc((size_t)(items ? items : 1) * sizeof *it_list);
    if (!it_list) {
        free(per);
        return AB_ENOMEM;
    }
    int64_t ni = 0;
    for (int h = 0; h < H; h++) {
        const int p = per[h], span = g * p;
        for (int s0 = 0; s0 < nqb; s0 += span) {
            const int end = nqb - s0 < span ? nqb : s0 + span;
            for (int c = 0; c < p && s0 + c < end; c++)
                it_list[ni++] = (ab_group_item){ h, s0 + c, (end - (s0 + c) + p - 1) / p, p };
        }
    }
    free(per);
    qsort(it_list, (size_t)ni, sizeof *it_list, ab_group_item_cmp);
    int failed = 0;

#pragma omp parallel
    {
        ab_tile t;
        ab_group_scratch *gs = calloc(1, sizeof(*gs));
        const int tile_ok = ab_tile_alloc(&t, d, g * bq, AB_TILE_K, isa) == AB_OK;
        int ok = gs && tile_ok;
        if (gs) {
            gs->own = calloc((size_t)N, sizeof(uint64_t));
            gs->bown = calloc((size_t)l->n_kblocks + 1, sizeof(uint64_t));
            gs->touch = malloc((size_t)N * sizeof(int32_t));
            gs->btouch = malloc(((size_t)l->n_kblocks + 1) * sizeof(int32_t));
            /* the shared list; later a block's private list and a row of it */
            gs->sh = malloc(2 * (size_t)N * sizeof(int32_t));
            gs->sbuf = malloc(AB_TILE_K * sizeof(float));
            ok = ok && gs->own && gs->bown && gs->touch && gs->btouch && gs->sh && gs->sbuf;
        }
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int64_t it = 0; it < ni; it++) {
            if (!ok) continue;
            const ab_group_item *w = &it_list[it];
            const int i0 = w->qb0 * bq;
            /* qs > 1 only with one-row blocks: g rows; else the blocks' rows */
            const int nq = w->qs > 1 ? w->g : (int)((int64_t)(w->qb0 + w->g) * bq < N ? w->g * bq : N - i0);
            const size_t hoff = (size_t)w->h * N * d;
            ab_tile_begin_rs(&t, pb->q + hoff + (size_t)i0 * d, i0, nq, w->qs, scale, &mask);
            ab_group_tile(&t, gs, l, w->h, w->qb0, w->g, w->qs, pb->k + hoff, pb->v + hoff);
            ab_tile_end(&t, out + hoff + (size_t)i0 * d);
        }
        if (gs) {
            free(gs->own);
            free(gs->bown);
            free(gs->touch);
            free(gs->btouch);
            free(gs->sh);
            free(gs->sbuf);
            free(gs);
        }
        if (tile_ok) ab_tile_free(&t);
    }
    free(it_list);
    return failed ? AB_ENOMEM : AB_OK;
}

int ab_kernel_gather_isa(const ab_problem *pb, const ab_layout *l,
                         float *out /* (heads, seq_len, head_dim) */, int isa)
{
    int rc = ab_tile_check_problem(pb, out);
    if (rc) return rc;
    if (!ab_cpu_isa_supported(isa)) return AB_EUNSUPPORTED;
    if (ab_tile_check_layout(pb, l) || !l->tok_ptr ||
        (l->kind != AB_LAYOUT_TOKEN && l->kind != AB_LAYOUT_MIXED) ||
        (l->kind == AB_LAYOUT_MIXED && !l->blk_ptr))
        return AB_EINVAL;
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    const ab_mask mask = ab_shape_mask(&pb->s);
    const float scale = pb->s.scale;
    if (N == 0) return AB_OK;
    if (l->block_q < AB_GROUP_SMALL) return ab_kernel_gather_grouped(pb, l, out, isa);
    const int mixed = l->kind == AB_LAYOUT_MIXED;
    const int bq = l->block_q, nqb = l->n_qblocks;
    const int nsub = (bq + AB_TILE_Q - 1) / AB_TILE_Q;
    const int tq = bq < AB_TILE_Q ? bq : AB_TILE_Q;
    const int64_t items = (int64_t)H * nqb * nsub;
    int failed = 0;

#pragma omp parallel
    {
        ab_tile t;
        const int ok = ab_tile_alloc(&t, d, tq, AB_TILE_K, isa) == AB_OK;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int64_t it = 0; it < items; it++) {
            int h, qb, i0, nq;
            if (!ok || !ab_tile_item(it, H, nqb, nsub, bq, N, &h, &qb, &i0, &nq)) continue;
            const size_t hoff = (size_t)h * N * d;
            const float *qt = pb->q + hoff + (size_t)i0 * d; /* (nq, head_dim) */
            const float *kh = pb->k + hoff;                  /* (seq_len, head_dim) */
            const float *vh = pb->v + hoff;                  /* (seq_len, head_dim) */
            const int64_t r = (int64_t)h * nqb + qb;
            if (!mixed) { /* the first chunk's rows, while the tile's queries load */
                const int64_t f0 = l->tok_ptr[r], f1 = l->tok_ptr[r + 1];
                ab_tile_prefetch_rows(kh, vh, l->tok_idx + f0, f1 - f0 < t.tk ? (int)(f1 - f0) : t.tk, d);
            }
            ab_tile_begin(&t, qt, i0, nq, scale, &mask);
            int64_t t0 = l->tok_ptr[r], t1 = l->tok_ptr[r + 1];
            ab_tile_token_range(&t, l->tok_idx, &t0, &t1); /* keys some row may see */
            if (mixed) { /* the blocks; the first tokens fetched during the last */
                const int64_t p0 = l->blk_ptr[r], p1 = l->blk_ptr[r + 1];
                ab_tile_blocks(&t, kh, vh, l->blk_idx + p0, p1 - p0, l->block_k, N, l->tok_idx + t0,
                               t1 - t0 < t.tk ? (int)(t1 - t0) : t.tk);
            }
            ab_tile_tokens(&t, kh, vh, l->tok_idx, t0, t1);
            ab_tile_end(&t, out + hoff + (size_t)i0 * d);
        }
        if (ok) ab_tile_free(&t);
    }
    return failed ? AB_ENOMEM : AB_OK;
}

int ab_kernel_gather(const ab_problem *pb, const ab_layout *l, float *out /* (heads, seq_len, head_dim) */)
{
    return ab_kernel_gather_isa(pb, l, out, ab_cpu_isa_pick());
}

int ab_cpu_layout(const ab_problem *pb, const ab_layout *l, float *out /* (heads, seq_len, head_dim) */)
{
    if (!l) return AB_EINVAL;
    if (pb && pb->q16) return ab_cpu_layout_bf16(pb, l, out); /* bf16 inputs (ABI 9): kernels/cpu/flash.c */
    switch (l->kind) {
    case AB_LAYOUT_DENSE:
        if (pb && (l->heads != pb->s.heads || l->seq_len != pb->s.seq_len ||
                   (l->causal != 0) != (pb->s.causal != 0) || l->mask != pb->s.mask))
            return AB_EINVAL;
        return ab_cpu_flash(pb, out);
    case AB_LAYOUT_BLOCK: return ab_kernel_blocksparse(pb, l, out);
    case AB_LAYOUT_TOKEN:
    case AB_LAYOUT_MIXED: return ab_kernel_gather(pb, l, out);
    case AB_LAYOUT_CUSTOM: return AB_EINVAL; /* the method runs itself */
    }
    return AB_EINVAL;
}

const char *ab_kernel_name(const ab_layout *l)
{
    if (!l) return "custom";
    switch (l->kind) {
    case AB_LAYOUT_DENSE: return "flash";
    case AB_LAYOUT_BLOCK: return "blocksparse";
    case AB_LAYOUT_TOKEN:
    case AB_LAYOUT_MIXED: return "gather";
    case AB_LAYOUT_CUSTOM: return "custom";
    }
    return "custom";
}
