/* gather.c — attention over TOKEN and MIXED layouts: per (head, query
 * block) the listed key/value rows are packed into a contiguous tile
 * (gather) and fed to the shared online-softmax inner loop (tile.h). MIXED:
 * the kept blocks first, then the token list, in one softmax state.
 * The layout must be finalised and valid (ab_layout_validate): indices are
 * not range-checked here, and MIXED token lists must avoid the kept blocks.
 * OpenMP over (head, query block, sub-tile), dynamic schedule; the inner
 * loop is the vectorised chunk step of simd_*.c (ISA picked at run time).
 * Also the kernel dispatch by layout kind (ab_cpu_layout). */
#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"
#include "kernels/kernels.h"

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
            ab_tile_begin(&t, qt, i0, nq, scale, &mask);
            if (mixed) {
                const int64_t p0 = l->blk_ptr[r], p1 = l->blk_ptr[r + 1];
                ab_tile_blocks(&t, kh, vh, l->blk_idx + p0, p1 - p0, l->block_k, N);
            }
            int64_t t0 = l->tok_ptr[r], t1 = l->tok_ptr[r + 1];
            ab_tile_token_range(&t, l->tok_idx, &t0, &t1); /* keys some row may see */
            for (int64_t c0 = t0; c0 < t1; c0 += AB_TILE_K) {
                const int nk = (int)(t1 - c0 < AB_TILE_K ? t1 - c0 : AB_TILE_K);
                ab_tile_gather(&t, kh, vh, l->tok_idx + c0, nk);
            }
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
