/* flash.c — dense exact attention on the CPU, tiled with an online softmax
 * as in FlashAttention (Dao et al., NeurIPS 2022) and FlashAttention-2
 * (Dao, 2023): for each query tile, stream key tiles keeping a running max m,
 * running sum l and an unnormalised output acc; finally acc / l. The base
 * mask (causal by default) works at chunk granularity: each query tile
 * streams only the key range its rows' spans cover, chunks no row sees are
 * skipped, chunks every row sees run unmasked and only partial chunks
 * (the diagonal under causal) are masked per element.
 * OpenMP over (head, query tile), heaviest tiles first with a dynamic
 * schedule (causal rows are uneven). fp32 storage and math; the vectorised
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

_Static_assert(AB_FLASH_BQ_BIG <= AB_TILE_Q, "a flash query tile is one work item");
_Static_assert(AB_FLASH_BK <= AB_TILE_KMAX, "a flash key chunk fits the tile");

int ab_kernel_flash_isa(const ab_problem *pb, float *out /* (heads, seq_len, head_dim) */, int isa)
{
    int rc = ab_tile_check_problem(pb, out);
    if (rc) return rc;
    if (!ab_cpu_isa_supported(isa)) return AB_EUNSUPPORTED;
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    const ab_mask mask = ab_shape_mask(&pb->s);
    const float scale = pb->s.scale;
    if (N == 0) return AB_OK;
    const int bq = (size_t)N * d * 8 > AB_FLASH_KV_BIG ? AB_FLASH_BQ_BIG : AB_FLASH_BQ;
    const int nt = (N + bq - 1) / bq;
    const int64_t items = (int64_t)H * nt;
    int failed = 0;

#pragma omp parallel
    {
        ab_tile t;
        const int ok = ab_tile_alloc(&t, d, bq, AB_FLASH_BK, isa) == AB_OK;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int64_t it = 0; it < items; it++) {
            int h, qt, i0, nq;
            if (!ok || !ab_tile_item(it, H, nt, 1, bq, N, &h, &qt, &i0, &nq)) continue;
            const size_t hoff = (size_t)h * N * d;
            const float *qh = pb->q + hoff; /* (seq_len, head_dim) */
            const float *kh = pb->k + hoff; /* (seq_len, head_dim) */
            const float *vh = pb->v + hoff; /* (seq_len, head_dim) */
            ab_tile_begin(&t, qh + (size_t)i0 * d, i0, nq, scale, &mask);
            for (int j0 = t.minlo; j0 < t.maxhi; j0 += AB_FLASH_BK) {
                const int nk = t.maxhi - j0 < AB_FLASH_BK ? t.maxhi - j0 : AB_FLASH_BK;
                ab_tile_contig(&t, kh, vh, j0, nk);
            }
            ab_tile_end(&t, out + hoff + (size_t)i0 * d);
        }
        if (ok) ab_tile_free(&t);
    }
    return failed ? AB_ENOMEM : AB_OK;
}

int ab_cpu_flash(const ab_problem *pb, float *out /* (heads, seq_len, head_dim) */)
{
    return ab_kernel_flash_isa(pb, out, ab_cpu_isa_pick());
}
