/* flash.c — dense exact attention on the CPU, tiled with an online softmax
 * as in FlashAttention (Dao et al., NeurIPS 2022) and FlashAttention-2
 * (Dao, 2023): for each query tile, stream key tiles keeping a running max m,
 * running sum l and an unnormalised output acc; finally acc / l. The base
 * mask (causal by default) works at chunk granularity: each query tile
 * streams only the key range its rows' spans cover, chunks no row sees are
 * skipped, chunks every row sees run unmasked and only partial chunks
 * (the diagonal under causal) are masked per element.
 * OpenMP over (head, query tile), heaviest tiles first with a dynamic
 * schedule (causal rows are uneven). fp32 storage and math (bf16 storage:
 * ab_cpu_flash_bf16 below, and ab_cpu_layout_bf16 over a BLOCK, TOKEN or
 * MIXED layout; docs/kernels.md); the vectorised
 * inner loop (AVX-512 / AVX2 / portable, picked at run time) is in
 * simd_*.c, the tile state in tile.h. */
#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"
#include "kernels/kernels.h"

/* Query rows per tile: 64, or 128 once one head's K and V (N d 8 bytes)
 * exceed 4 MiB, twice the L2 of one core here: every query tile streams
 * the head's keys and values, so taller tiles halve that traffic when it
 * comes from L3 (measured with make bench: +11-17% at N = 16K, d = 64 and
 * 128; -10% at N = 4K, d = 128, two threads, hence the threshold). */
#define AB_FLASH_BQ     64
#define AB_FLASH_BQ_BIG 128
#define AB_FLASH_KV_BIG ((size_t)4 << 20)
#define AB_FLASH_BK     64 /* key columns per chunk */
#ifndef AB_FLASH_BK_AMX
#define AB_FLASH_BK_AMX 256 /* the AMX chunk: acc^T's tiles are loaded and stored once per chunk */
#endif

_Static_assert(AB_FLASH_BQ_BIG <= AB_TILE_Q, "a flash query tile is one work item");
_Static_assert(AB_FLASH_BK <= AB_TILE_KMAX && AB_FLASH_BK_AMX <= AB_TILE_KMAX,
               "a flash key chunk fits the tile");

/* Where a query tile's inputs come from: bf16 rows by one of the paths of
 * kernels.h (widened to fp32 in kp, vp for the fp32 chunk step, or fed to
 * the AVX-512 BF16 one or to the AMX one, which holds acc transposed), or
 * fp32 rows. */
enum {
    SRC_BF16_WIDEN = AB_BF16_WIDEN,
    SRC_BF16_NATIVE = AB_BF16_AVX512,
    SRC_BF16_AMX = AB_BF16_AMX,
    SRC_F32
};

/* V^T of every head, bf16, (heads, d, ldv) with ldv = N rounded up to 32
 * plus 64 zero columns: the AMX chunk reads 32-key steps past a chunk's
 * end. NULL if out of memory. */
static uint16_t *transpose_v(const ab_shape *s, const uint16_t *v, int *ldv)
{
    const int H = s->heads, N = s->seq_len, d = s->head_dim;
    const int l = (N + 31) / 32 * 32 + 64;
    uint16_t *vt = aligned_alloc(64, ((size_t)H * d * l * sizeof(uint16_t) + 63) & ~(size_t)63);
    if (!vt) return NULL;
#pragma omp parallel for schedule(static)
    for (int h = 0; h < H; h++) {
        const uint16_t *vh = v + (size_t)h * N * d;
        uint16_t *th = vt + (size_t)h * d * l;
        for (int x = 0; x < d; x++) memset(th + (size_t)x * l + N, 0, (size_t)(l - N) * sizeof(uint16_t));
        for (int j0 = 0; j0 < N; j0 += 16) /* 16 keys at a time: rows stay in L1 */
            for (int x = 0; x < d; x++)
                for (int j = j0; j < N && j < j0 + 16; j++) th[(size_t)x * l + j] = vh[(size_t)j * d + x];
    }
    *ldv = l;
    return vt;
}

/* Write the AMX tile's rows: out row r = acc^T[., r] / l[r]. */
static void end_transposed(const ab_tile *t, float *out)
{
    const int d = t->d, ld = t->ld;
    for (int r = 0; r < t->nq; r++) {
        float *restrict o = out + (size_t)r * d;
        const float lr = t->l[r];
        if (lr > 0.0f) {
            const float inv = 1.0f / lr;
            for (int x = 0; x < d; x++) o[x] = t->acc[(size_t)x * ld + r] * inv;
        } else {
            memset(o, 0, (size_t)d * sizeof(float));
        }
    }
}

/* Query tile from bf16 rows q (row i0 of the head): qt = scale * q^T in fp32
 * (widen), or the unscaled bf16 pairs of ab_chunk_bf16_avx512 (native). */
static void begin_bf16(ab_tile *t, const uint16_t *q, int i0, int nq, float scale, const ab_mask *m, int src)
{
    const int d = t->d, ld = t->ld;
    ab_tile_begin_spans(t, i0, nq, 1, m);
    if (src == SRC_BF16_AMX) memset(t->acc, 0, (size_t)d * ld * sizeof(float)); /* acc^T: d x ld */
    if (src != SRC_BF16_WIDEN) {
        uint16_t *qt = (uint16_t *)t->qt;
        for (int p = 0; p < d / 2; p++) {
            uint16_t *row = qt + (size_t)p * ld * 2;
            for (int r = 0; r < nq; r++) {
                row[2 * r] = q[(size_t)r * d + 2 * p];
                row[2 * r + 1] = q[(size_t)r * d + 2 * p + 1];
            }
            memset(row + 2 * nq, 0, (size_t)(ld - nq) * 2 * sizeof(uint16_t));
        }
        return;
    }
    for (int x = 0; x < d; x++) {
        float *restrict row = t->qt + (size_t)x * ld;
        for (int r = 0; r < nq; r++) row[r] = scale * ab_bf16_to_float(q[(size_t)r * d + x]);
        for (int r = nq; r < ld; r++) row[r] = 0.0f;
    }
}

/* Key chunk [j0, j0 + nk) of bf16 rows k, v (the head's; n of them);
 * vt, ldv: the head's V^T (AMX only). */
static void chunk_bf16(ab_tile *t, const uint16_t *k, const uint16_t *v, const uint16_t *vt, int ldv, int n,
                       int j0, int nk, float scale, int src)
{
    const int masked = ab_tile_contig_mask(t, &j0, &nk);
    if (masked < 0) return;
    const size_t d = (size_t)t->d, off = (size_t)j0 * d;
    if (src == SRC_BF16_NATIVE) {
        ab_chunk_bf16_avx512(t, k + off, v + off, nk, masked, scale);
        return;
    }
    if (src == SRC_BF16_AMX) {
        const int rows = (nk + 15) / 16 * 16; /* the tile unit reads 16-key groups */
        const uint16_t *kk = k + off;
        if (j0 + rows > n) { /* past the last key: a zero-padded copy (kp holds tk * d floats) */
            uint16_t *kp = (uint16_t *)t->kp;
            memcpy(kp, kk, (size_t)nk * d * sizeof(uint16_t));
            memset(kp + (size_t)nk * d, 0, (size_t)(rows - nk) * d * sizeof(uint16_t));
            kk = kp;
        }
        ab_chunk_bf16_amx(t, kk, vt + j0, ldv, nk, masked, scale);
        return;
    }
    for (size_t e = 0; e < (size_t)nk * d; e++) {
        t->kp[e] = ab_bf16_to_float(k[off + e]);
        t->vp[e] = ab_bf16_to_float(v[off + e]);
    }
    t->chunk(t, t->kp, t->vp, nk, masked);
}

/* Gathered key chunk: the keys idx[0, nk) (sorted; nk <= the tile's tk)
 * of bf16 rows k, v (the head's), packed for the path: widened to fp32 in
 * kp, vp (widen); as bf16 rows, K then V, in kp (avx512); K rows in kp zero-padded
 * to 16 and V^T in vp, d x (nk rounded up to 32) with zero columns after nk
 * (amx: it reads whole 32-key steps, and P's zeros must not meet NaN). */
static void gather_bf16(ab_tile *t, const uint16_t *k, const uint16_t *v, const int32_t *idx, int nk,
                        float scale, int src)
{
    const int masked = ab_tile_gather_mask(t, idx, nk);
    if (masked < 0) return;
    const size_t d = (size_t)t->d;
    if (src == SRC_BF16_WIDEN) {
        for (int c = 0; c < nk; c++)
            for (size_t x = 0; x < d; x++) {
                t->kp[c * d + x] = ab_bf16_to_float(k[(size_t)idx[c] * d + x]);
                t->vp[c * d + x] = ab_bf16_to_float(v[(size_t)idx[c] * d + x]);
            }
        t->chunk(t, t->kp, t->vp, nk, masked);
        return;
    }
    uint16_t *kb = (uint16_t *)t->kp, *vb = (uint16_t *)t->vp;
    if (src == SRC_BF16_NATIVE) { /* V rows after K's in kp (2 tk d halves): the step interleaves V into vp */
        vb = kb + (size_t)t->tk * d;
        for (int c = 0; c < nk; c++) {
            memcpy(kb + c * d, k + (size_t)idx[c] * d, d * sizeof *kb);
            memcpy(vb + c * d, v + (size_t)idx[c] * d, d * sizeof *vb);
        }
        ab_chunk_bf16_avx512(t, kb, vb, nk, masked, scale);
        return;
    }
    const int rows = (nk + 15) / 16 * 16, ldv = (nk + 31) / 32 * 32;
    for (int c = 0; c < nk; c++) memcpy(kb + c * d, k + (size_t)idx[c] * d, d * sizeof *kb);
    memset(kb + (size_t)nk * d, 0, (size_t)(rows - nk) * d * sizeof *kb);
    for (size_t x = 0; x < d; x++) memset(vb + x * ldv + nk, 0, (size_t)(ldv - nk) * sizeof *vb);
    for (int c = 0; c < nk; c++) {
        const uint16_t *vr = v + (size_t)idx[c] * d;
        for (size_t x = 0; x < d; x++) vb[x * ldv + c] = vr[x];
    }
    ab_chunk_bf16_amx(t, kb, vb, ldv, nk, masked, scale);
}

/* The key chunks of one query tile in [j0, j1), at most bk keys each. */
static void tile_range(ab_tile *t, const void *kh, const void *vh, const uint16_t *vt, int ldv, int n, int j0,
                       int j1, int bk, float scale, int src)
{
    if (j0 < t->minlo) j0 = t->minlo; /* keys no row of the tile sees */
    if (j1 > t->maxhi) j1 = t->maxhi;
    for (; j0 < j1; j0 += bk) {
        const int nk = j1 - j0 < bk ? j1 - j0 : bk;
        if (src == SRC_F32)
            ab_tile_contig(t, (const float *)kh, (const float *)vh, j0, nk);
        else
            chunk_bf16(t, (const uint16_t *)kh, (const uint16_t *)vh, vt, ldv, n, j0, nk, scale, src);
    }
}

/* The exact kernel over any source (q, k, v: float or uint16_t rows): dense
 * (l NULL: every key of the rows' spans) or over a finalised layout: BLOCK
 * (each query block's kept key blocks, runs of consecutive blocks taken as
 * one key range so a chunk may span several blocks), TOKEN (the listed keys
 * gathered in chunks, bf16 sources only) or MIXED (its blocks, then its
 * tokens, in one softmax state). */
static int flash_run(const ab_shape *s, const void *q, const void *k, const void *v, int src,
                     const ab_layout *l, float *out /* (heads, seq_len, head_dim) */, int isa)
{
    const int H = s->heads, N = s->seq_len, d = s->head_dim;
    const ab_mask mask = ab_shape_mask(s);
    const float scale = s->scale;
    if (N == 0) return AB_OK;
    /* work items: (head, query tile) for dense, (head, query block,
     * sub-tile of <= AB_TILE_Q rows) for a layout */
    const int bq = l                                                            ? l->block_q
                   : src == SRC_BF16_AMX || (size_t)N * d * 8 > AB_FLASH_KV_BIG ? AB_FLASH_BQ_BIG
                                                                                : AB_FLASH_BQ;
    const int nt = l ? l->n_qblocks : (N + bq - 1) / bq, nsub = l ? (bq + AB_TILE_Q - 1) / AB_TILE_Q : 1;
    const int tq = bq < AB_TILE_Q ? bq : AB_TILE_Q;
    const int64_t items = (int64_t)H * nt * nsub;
    const size_t esz = src == SRC_F32 ? sizeof(float) : sizeof(uint16_t);
    int failed = 0, ldv = 0;
    uint16_t *vt = NULL;
    if (src == SRC_BF16_AMX && !(vt = transpose_v(s, v, &ldv))) return AB_ENOMEM;

#pragma omp parallel
    {
        ab_tile t;
        const int bk = src == SRC_BF16_AMX ? AB_FLASH_BK_AMX : AB_FLASH_BK;
        /* amx holds acc^T (d x ld, ld = tq rounded up to 16) in acc (tq x d) */
        const int ok = ab_tile_alloc(&t, d, src == SRC_BF16_AMX ? (tq + 15) / 16 * 16 : tq, bk, isa) == AB_OK;
        if (src == SRC_BF16_AMX) ab_amx_begin();
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int64_t it = 0; it < items; it++) {
            int h, qt, i0, nq;
            if (!ok || !ab_tile_item(it, H, nt, nsub, bq, N, &h, &qt, &i0, &nq)) continue;
            const size_t hoff = (size_t)h * N * d; /* (seq_len, head_dim) per head */
            const char *qh = (const char *)q + hoff * esz, *kh = (const char *)k + hoff * esz;
            const char *vh = (const char *)v + hoff * esz;
            const uint16_t *vth = vt ? vt + (size_t)h * d * ldv : NULL;
            if (src == SRC_F32)
                ab_tile_begin(&t, (const float *)qh + (size_t)i0 * d, i0, nq, scale, &mask);
            else
                begin_bf16(&t, (const uint16_t *)qh + (size_t)i0 * d, i0, nq, scale, &mask, src);
            if (!l) {
                tile_range(&t, kh, vh, vth, ldv, N, t.minlo, t.maxhi, bk, scale, src);
            } else {
                const int64_t r = (int64_t)h * nt + qt;
                const int64_t p1 = l->kind != AB_LAYOUT_TOKEN ? l->blk_ptr[r + 1] : 0;
                for (int64_t e = l->kind != AB_LAYOUT_TOKEN ? l->blk_ptr[r] : 0; e < p1; e++) {
                    const int64_t b0 = l->blk_idx[e];
                    while (e + 1 < p1 && l->blk_idx[e + 1] == l->blk_idx[e] + 1) e++;
                    const int64_t k0 = b0 * l->block_k, k1 = ((int64_t)l->blk_idx[e] + 1) * l->block_k;
                    if (k0 >= t.maxhi) break; /* sorted: no row sees this run or a later one */
                    tile_range(&t, kh, vh, vth, ldv, N, (int)k0, (int)(k1 < N ? k1 : N), bk, scale, src);
                }
                if (l->kind != AB_LAYOUT_BLOCK) {
                    int64_t t0 = l->tok_ptr[r], t1 = l->tok_ptr[r + 1];
                    ab_tile_token_range(&t, l->tok_idx, &t0, &t1); /* keys some row may see */
                    for (int64_t c = t0, e; c < t1; c = e) { /* runs in place, the rest gathered (tile.h) */
                        const int32_t *tok = l->tok_idx;
                        if (ab_tile_token_piece(tok, c, t1, &e)) {
                            tile_range(&t, kh, vh, vth, ldv, N, tok[c], tok[e - 1] + 1, bk, scale, src);
                            continue;
                        }
                        for (int64_t j = c; j < e; j += bk)
                            gather_bf16(&t, (const uint16_t *)kh, (const uint16_t *)vh, tok + j,
                                        (int)(e - j < bk ? e - j : bk), scale, src);
                    }
                }
            }
            if (src == SRC_BF16_AMX)
                end_transposed(&t, out + hoff + (size_t)i0 * d);
            else
                ab_tile_end(&t, out + hoff + (size_t)i0 * d);
        }
        if (src == SRC_BF16_AMX) ab_amx_end();
        if (ok) ab_tile_free(&t);
    }
    free(vt);
    return failed ? AB_ENOMEM : AB_OK;
}

int ab_kernel_flash_isa(const ab_problem *pb, float *out /* (heads, seq_len, head_dim) */, int isa)
{
    int rc = ab_tile_check_problem(pb, out);
    if (rc) return rc;
    if (!ab_cpu_isa_supported(isa)) return AB_EUNSUPPORTED;
    return flash_run(&pb->s, pb->q, pb->k, pb->v, SRC_F32, NULL, out, isa);
}

int ab_cpu_flash(const ab_problem *pb, float *out /* (heads, seq_len, head_dim) */)
{
    return ab_kernel_flash_isa(pb, out, ab_cpu_isa_pick());
}

/* The conditions of each path: avx512 needs head_dim even (pairs along
 * it) and >= 16 (the pair buffers reuse the tile's fp32 arrays); amx needs
 * head_dim % 32 == 0 (one tile row) and scale > 0 (its softmax takes the
 * max of the unscaled logits). */
int ab_cpu_bf16_path_ok(int path, int d, float scale)
{
    switch (path) {
    case AB_BF16_WIDEN: return 1;
    case AB_BF16_AVX512: return ab_cpu_bf16_supported() && d % 2 == 0 && d >= 16;
    case AB_BF16_AMX: return ab_cpu_amx_supported() && d % 32 == 0 && scale > 0;
    }
    return 0;
}

/* bf16 inputs by path, dense (l NULL) or over a finalised layout. */
static int bf16_run(const ab_shape *s, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                    const ab_layout *l, float *out, int isa, int path)
{
    if (!s || !q || !k || !v || !out || s->heads <= 0 || s->seq_len < 0 || s->head_dim <= 0) return AB_EINVAL;
    if (path < AB_BF16_WIDEN || path > AB_BF16_AMX) return AB_EINVAL;
    if (s->head_dim > AB_MAX_HEAD_DIM) return AB_EUNSUPPORTED;
    if (path == AB_BF16_WIDEN) {
        if (!ab_cpu_isa_supported(isa)) return AB_EUNSUPPORTED;
    } else {
        if (!ab_cpu_bf16_path_ok(path, s->head_dim, s->scale)) return AB_EUNSUPPORTED;
        isa = AB_ISA_AVX512;
    }
    return flash_run(s, q, k, v, path, l, out, isa);
}

int ab_kernel_flash_bf16_isa(const ab_shape *s, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                             float *out, int isa, int path)
{
    return bf16_run(s, q, k, v, NULL, out, isa, path);
}

int ab_kernel_layout_bf16_isa(const ab_problem *pb, const ab_layout *l, float *out, int isa, int path)
{
    if (!pb || !pb->q16 || !pb->k16 || !pb->v16 || ab_tile_check_layout(pb, l)) return AB_EINVAL;
    if (l->kind == AB_LAYOUT_DENSE) return bf16_run(&pb->s, pb->q16, pb->k16, pb->v16, NULL, out, isa, path);
    const int blocks = l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_MIXED,
              tokens = l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED;
    if (!(blocks || tokens) || (blocks && !l->blk_ptr) || (tokens && !l->tok_ptr))
        return AB_EINVAL; /* CUSTOM: the method runs itself */
    /* one-row query blocks (strided, dilated): the fp32 gather kernel's
     * grouped tiles have no bf16 form */
    if (tokens && l->block_q < AB_BF16_MIN_BLOCK_Q) return AB_EUNSUPPORTED;
    return bf16_run(&pb->s, pb->q16, pb->k16, pb->v16, l, out, isa, path);
}

/* The path ab_cpu_flash_bf16 takes for head_dim d: AMX where the CPU and
 * OS allow it (d % 32 == 0), else widened. The AVX-512 BF16 pair products
 * only on request: here (Xeon with AMX and AVX-512 BF16, 2026-12-04)
 * vdpbf16ps issues at half the rate of vfmadd231ps, so it does as many
 * multiply-adds per cycle as fp32 FMA, and packing P and V makes that path
 * 0.7x of the widened one (docs/kernels.md "bf16"). AB_BF16=widen|avx512|amx
 * asks for one (an unavailable one falls back to widen); AB_CPU_ISA below
 * avx512 keeps both bf16 paths off. */
int ab_cpu_bf16_path(int d)
{
    const char *e = getenv("AB_BF16");
    int want = AB_BF16_AMX;
    if (e && !strcmp(e, "widen")) want = AB_BF16_WIDEN;
    if (e && !strcmp(e, "avx512")) want = AB_BF16_AVX512;
    return ab_cpu_isa_pick() == AB_ISA_AVX512 && ab_cpu_bf16_path_ok(want, d, 1.0f) ? want : AB_BF16_WIDEN;
}

const char *ab_cpu_bf16_path_name(int path)
{
    return path == AB_BF16_AMX ? "amx" : path == AB_BF16_AVX512 ? "avx512-bf16" : "widen";
}

/* The dispatcher's path for shape s (amx needs scale > 0: else widened). */
static int bf16_pick(const ab_shape *s)
{
    const int path = ab_cpu_bf16_path(s->head_dim);
    return ab_cpu_bf16_path_ok(path, s->head_dim, s->scale) ? path : AB_BF16_WIDEN;
}

int ab_cpu_flash_bf16(const ab_shape *s, const uint16_t *q, const uint16_t *k, const uint16_t *v, float *out)
{
    if (!s) return AB_EINVAL;
    return ab_kernel_flash_bf16_isa(s, q, k, v, out, ab_cpu_isa_pick(), bf16_pick(s));
}

int ab_cpu_layout_bf16(const ab_problem *pb, const ab_layout *l, float *out)
{
    if (!pb) return AB_EINVAL;
    return ab_kernel_layout_bf16_isa(pb, l, out, ab_cpu_isa_pick(), bf16_pick(&pb->s));
}
