/* tileapi.c — the attention tile of the ABI (ab_attn_tile_*,
 * include/attnbench.h): the online-softmax chunk step every CPU kernel runs
 * (tile.h, simd_*.c; FlashAttention-2, Dao 2023), over key sets a method
 * lays out itself (pooled core tokens, a bucket's keys, a window), so a
 * method with its own run() gets the kernels' inner loop instead of
 * writing logits, exp and P V by hand. The state of a tile is the query
 * rows' running max, sum and unnormalised output; keys come in calls of
 * any count, each row seeing a column range of them. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/tile.h"
#include "kernels/kernels.h"

struct ab_attn_tile {
    ab_tile t;
};

ab_attn_tile *ab_attn_tile_new_isa(int head_dim, int rows, int isa)
{
    if (head_dim <= 0 || head_dim > AB_MAX_HEAD_DIM || rows <= 0 || rows > AB_TILE_Q ||
        !ab_cpu_isa_supported(isa))
        return NULL;
    ab_attn_tile *a = malloc(sizeof *a);
    if (!a) return NULL;
    if (ab_tile_alloc(&a->t, head_dim, rows, AB_TILE_K, isa) != AB_OK) {
        free(a);
        return NULL;
    }
    a->t.interval = 1; /* the chunk step reads column ranges only */
    return a;
}

ab_attn_tile *ab_cpu_attn_tile_new(int head_dim, int rows)
{
    return ab_attn_tile_new_isa(head_dim, rows, ab_cpu_isa_pick());
}

void ab_cpu_attn_tile_free(ab_attn_tile *a)
{
    if (!a) return;
    ab_tile_free(&a->t);
    free(a);
}

void ab_cpu_attn_tile_begin(ab_attn_tile *a, const float *q, size_t ldq, int nq, float scale)
{
    ab_tile *t = &a->t;
    t->i0 = 0;
    t->rs = 1;
    ab_tile_reset(t, nq < 0 ? 0 : nq > t->tq ? t->tq : nq);
    ab_tile_load_q(t, q, ldq, scale);
}

void ab_cpu_attn_tile_keys(ab_attn_tile *a, const float *k, const float *v, int nk, const int *lo,
                           const int *hi)
{
    ab_tile *t = &a->t;
    const int d = t->d;
    if (t->nq <= 0) return;
    for (int c0 = 0; c0 < nk; c0 += t->tk) {
        const int n = nk - c0 < t->tk ? nk - c0 : t->tk;
        int masked = 0;
        if (lo || hi) {
            int any = 0, all = 1;
            for (int r = 0; r < t->nq; r++) {
                int x = (lo ? lo[r] : 0) - c0, y = (hi ? hi[r] : nk) - c0;
                x = x < 0 ? 0 : x > n ? n : x;
                y = y < x ? x : y > n ? n : y;
                t->lo[r] = x;
                t->lim[r] = y;
                any |= y > x;
                all &= x == 0 && y == n;
            }
            if (!any) continue;
            if (!all) {
                masked = 1;
                ab_tile_pad_lanes(t, n);
            }
        }
        t->chunk(t, k + (size_t)c0 * d, v + (size_t)c0 * d, n, masked);
    }
}

void ab_cpu_attn_tile_keys_map(ab_attn_tile *a, const float *k, const float *v, int nk,
                               const unsigned char *allow, size_t lda)
{
    ab_tile *t = &a->t;
    const int d = t->d;
    if (t->nq <= 0) return;
    if (!allow) {
        ab_cpu_attn_tile_keys(a, k, v, nk, NULL, NULL);
        return;
    }
    const int nq = t->nq, ld = t->ld; /* (em's byte stores may alias *t) */
    for (int c0 = 0; c0 < nk; c0 += t->tk) {
        const int n = nk - c0 < t->tk ? nk - c0 : t->tk;
        int any = 0, all = 1;
        for (int c = 0; c < n; c++) {
            unsigned char *restrict e = t->em + (size_t)c * ld;
            const unsigned char *restrict ac = allow + (size_t)(c0 + c) * lda;
            int cnt = 0;
            for (int r = 0; r < nq; r++) { /* (restrict, nq local: vectorised) */
                const unsigned char f = ac[r] != 0;
                e[r] = f;
                cnt += f;
            }
            for (int r = nq; r < ld; r++) e[r] = 1;
            any |= cnt > 0;
            all &= cnt == nq;
        }
        if (any) t->chunk(t, k + (size_t)c0 * d, v + (size_t)c0 * d, n, all ? 0 : 2);
    }
}

void ab_cpu_attn_tile_end(const ab_attn_tile *a, float *out, size_t ldo, float *lse)
{
    ab_tile_end_ld(&a->t, out, ldo, lse);
}
