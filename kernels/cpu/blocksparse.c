/* blocksparse.c — block-sparse attention over a BLOCK layout (per-row CSR
 * of kept key blocks): the flash inner loop (tile.h) run only over the key
 * blocks listed for each query block, the base mask applied within (per
 * chunk: skipped, unmasked, or masked per element; see tile.h).
 * A query row that keeps no allowed key gets a zero output.
 * OpenMP over (head, query block, sub-tile of <= AB_TILE_Q rows), dynamic
 * schedule (rows keep uneven numbers of blocks). The inner loop is the
 * vectorised chunk step of simd_*.c (ISA picked at run time).
 * The layout must be finalised and valid (ab_layout_validate): indices are
 * not range-checked here. */
#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"
#include "kernels/kernels.h"

int ab_kernel_blocksparse_isa(const ab_problem *pb, const ab_layout *l,
                              float *out /* (heads, seq_len, head_dim) */, int isa)
{
    int rc = ab_tile_check_problem(pb, out);
    if (rc) return rc;
    if (!ab_cpu_isa_supported(isa)) return AB_EUNSUPPORTED;
    if (ab_tile_check_layout(pb, l) || l->kind != AB_LAYOUT_BLOCK || !l->blk_ptr) return AB_EINVAL;
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    const ab_mask mask = ab_shape_mask(&pb->s);
    const float scale = pb->s.scale;
    if (N == 0) return AB_OK;
    const int bq = l->block_q, nqb = l->n_qblocks;
    const int nsub = (bq + AB_TILE_Q - 1) / AB_TILE_Q;
    const int tq = bq < AB_TILE_Q ? bq : AB_TILE_Q;
    const int tk = l->block_k < AB_TILE_K ? l->block_k : AB_TILE_K; /* key chunk */
    const int64_t items = (int64_t)H * nqb * nsub;
    int failed = 0;

#pragma omp parallel
    {
        ab_tile t;
        const int ok = ab_tile_alloc(&t, d, tq, tk, isa) == AB_OK;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int64_t it = 0; it < items; it++) {
            int h, qb, i0, nq;
            if (!ok || !ab_tile_item(it, H, nqb, nsub, bq, N, &h, &qb, &i0, &nq)) continue;
            const size_t hoff = (size_t)h * N * d;
            const int64_t r = (int64_t)h * nqb + qb;
            const int64_t p0 = l->blk_ptr[r], p1 = l->blk_ptr[r + 1];
            ab_tile_begin(&t, pb->q + hoff + (size_t)i0 * d, i0, nq, scale, &mask);
            ab_tile_blocks(&t, pb->k + hoff, pb->v + hoff, l->blk_idx + p0, p1 - p0, l->block_k, N, NULL, 0);
            ab_tile_end(&t, out + hoff + (size_t)i0 * d);
        }
        if (ok) ab_tile_free(&t);
    }
    return failed ? AB_ENOMEM : AB_OK;
}

int ab_kernel_blocksparse(const ab_problem *pb, const ab_layout *l,
                          float *out /* (heads, seq_len, head_dim) */)
{
    return ab_kernel_blocksparse_isa(pb, l, out, ab_cpu_isa_pick());
}
