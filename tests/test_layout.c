/* test_layout.c — Criterion tests of the ab_layout implementation
 * (runtime/layout.c): builder errors, finalisation (sort, dedup, kinds,
 * MIXED token pruning), validation of hand-corrupted CSR, membership, the
 * exact kept-pair arithmetic against a brute-force O(N^2) count, the bulk
 * adds and concurrent adds from OpenMP threads. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "runtime/layout.h"

/* ---- deterministic RNG (splitmix64) ------------------------------------- */
static uint64_t lt_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double lt_unif(uint64_t *s) { return (double)(lt_next(s) >> 11) * 0x1.0p-53; }
static int lt_int(uint64_t *s, int n) { return (int)(lt_next(s) % (uint64_t)n); }

static ab_shape lt_shape(int heads, int n, int causal)
{
    ab_shape s = { heads, n, 16, causal, 0.25f, NULL, 0, 1, AB_PREFILL };
    return s;
}

/* ---- init, set_blocks ---------------------------------------------------- */

Test(layout, init_and_set_blocks)
{
    ab_layout l;
    ab_shape s = lt_shape(2, 130, 1);
    ab_layout_init(&l, &s, 64, 16);
    cr_assert_eq(l.heads, 2);
    cr_assert_eq(l.seq_len, 130);
    cr_assert_eq(l.causal, 1);
    cr_assert_eq(l.n_qblocks, 3);
    cr_assert_eq(l.n_kblocks, 9);
    cr_assert_eq(ab_layout_set_blocks(&l, 32, 128), AB_OK);
    cr_assert_eq(l.block_q, 32);
    cr_assert_eq(l.block_k, 128);
    cr_assert_eq(l.n_qblocks, 5);
    cr_assert_eq(l.n_kblocks, 2);
    cr_assert_eq(ab_layout_set_blocks(&l, 0, 16), AB_EINVAL);
    cr_assert_eq(ab_layout_set_blocks(&l, 16, -1), AB_EINVAL);
    cr_assert_eq(l.block_q, 32, "a failed set_blocks changes nothing");
    ab_layout_free(&l);
}

Test(layout, set_blocks_after_add_is_rejected)
{
    ab_layout l;
    ab_shape s = lt_shape(1, 100, 0);
    ab_layout_init(&l, &s, 16, 16);
    cr_assert_eq(ab_layout_add_block(&l, 0, 1, 2), AB_OK);
    cr_assert_eq(ab_layout_set_blocks(&l, 32, 32), AB_EINVAL);
    cr_assert_eq(l.block_q, 16);
    ab_layout_free(&l);

    ab_layout_init(&l, &s, 16, 16);
    cr_assert_eq(ab_layout_add_token(&l, 0, 1, 5), AB_OK);
    cr_assert_eq(ab_layout_set_blocks(&l, 32, 32), AB_EINVAL);
    ab_layout_free(&l);
}

Test(layout, builder_rejects_out_of_range)
{
    ab_layout l;
    ab_shape s = lt_shape(2, 65, 1);
    ab_layout_init(&l, &s, 32, 16); /* 3 query blocks, 5 key blocks */
    cr_assert_eq(ab_layout_add_block(&l, -1, 0, 0), AB_EINVAL);
    cr_assert_eq(ab_layout_add_block(&l, 2, 0, 0), AB_EINVAL);
    cr_assert_eq(ab_layout_add_block(&l, 0, -1, 0), AB_EINVAL);
    cr_assert_eq(ab_layout_add_block(&l, 0, 3, 0), AB_EINVAL);
    cr_assert_eq(ab_layout_add_block(&l, 0, 0, -1), AB_EINVAL);
    cr_assert_eq(ab_layout_add_block(&l, 0, 0, 5), AB_EINVAL);
    cr_assert_eq(ab_layout_add_block_range(&l, 0, 0, -1, 2), AB_EINVAL);
    cr_assert_eq(ab_layout_add_block_range(&l, 0, 0, 0, 6), AB_EINVAL);
    cr_assert_eq(ab_layout_add_block_range(&l, 0, 0, 3, 2), AB_EINVAL);
    cr_assert_eq(ab_layout_add_block_range(&l, 2, 0, 0, 1), AB_EINVAL);
    cr_assert_eq(ab_layout_add_token(&l, 0, 0, -1), AB_EINVAL);
    cr_assert_eq(ab_layout_add_token(&l, 0, 0, 65), AB_EINVAL);
    cr_assert_eq(ab_layout_add_token(&l, 0, 3, 0), AB_EINVAL);
    cr_assert_eq(ab_layout_add_token(&l, 2, 0, 0), AB_EINVAL);
    cr_assert_eq(ab_layout_add_block(NULL, 0, 0, 0), AB_EINVAL);
    /* only failed calls: still untouched */
    cr_assert_eq(ab_layout_finalize(&l), AB_EINVAL);
    /* the edges are in range */
    cr_assert_eq(ab_layout_add_block(&l, 1, 2, 4), AB_OK);
    cr_assert_eq(ab_layout_add_block_range(&l, 1, 2, 0, 5), AB_OK);
    cr_assert_eq(ab_layout_add_token(&l, 1, 2, 64), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(l.kind, AB_LAYOUT_MIXED);
    cr_assert_eq(ab_layout_validate(&l, NULL, 0), AB_OK);
    ab_layout_free(&l);
}

Test(layout, dense_custom_and_entries_do_not_mix)
{
    ab_layout l;
    ab_shape s = lt_shape(1, 64, 0);
    ab_layout_init(&l, &s, 16, 16);
    cr_assert_eq(ab_layout_dense(&l), AB_OK);
    cr_assert_eq(ab_layout_dense(&l), AB_OK, "dense twice is harmless");
    cr_assert_eq(ab_layout_add_block(&l, 0, 0, 0), AB_EINVAL);
    cr_assert_eq(ab_layout_add_token(&l, 0, 0, 0), AB_EINVAL);
    cr_assert_eq(ab_layout_custom(&l, 0.5), AB_EINVAL);
    ab_layout_free(&l);

    ab_layout_init(&l, &s, 16, 16);
    cr_assert_eq(ab_layout_add_token(&l, 0, 0, 3), AB_OK);
    cr_assert_eq(ab_layout_dense(&l), AB_EINVAL);
    cr_assert_eq(ab_layout_custom(&l, 0.5), AB_EINVAL);
    ab_layout_free(&l);

    ab_layout_init(&l, &s, 16, 16);
    cr_assert_eq(ab_layout_custom(&l, 1.5), AB_EINVAL);
    cr_assert_eq(ab_layout_custom(&l, -0.1), AB_EINVAL);
    cr_assert_eq(ab_layout_custom(&l, NAN), AB_EINVAL);
    cr_assert_eq(ab_layout_custom(&l, 0.3), AB_OK);
    cr_assert_eq(ab_layout_add_block(&l, 0, 0, 0), AB_EINVAL);
    cr_assert_eq(ab_layout_dense(&l), AB_EINVAL);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(l.kind, AB_LAYOUT_CUSTOM);
    cr_assert_float_eq(ab_layout_density(&l), 0.3, 1e-15);
    cr_assert_eq(ab_layout_contains(&l, 0, 5, 3), 0);
    cr_assert_eq(ab_layout_validate(&l, NULL, 0), AB_OK);
    ab_layout_free(&l);
}

Test(layout, untouched_and_empty)
{
    ab_layout l;
    ab_shape s = lt_shape(2, 50, 1);
    ab_layout_init(&l, &s, 16, 16);
    cr_assert_eq(ab_layout_finalize(&l), AB_EINVAL, "no call at all is an error");
    ab_layout_free(&l);

    ab_layout_init(&l, &s, 16, 16);
    cr_assert_eq(ab_layout_set_blocks(&l, 8, 8), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(l.kind, AB_LAYOUT_BLOCK, "a touched layout with no entry keeps nothing");
    cr_assert_eq(ab_layout_validate(&l, NULL, 0), AB_OK);
    cr_assert_eq(ab_layout_kept_pairs(&l), 0);
    cr_assert_eq(ab_layout_valid_pairs(&l), 2 * 50 * 51 / 2);
    cr_assert_float_eq(ab_layout_density(&l), 0.0, 0.0);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK, "finalize twice is harmless");
    ab_layout_free(&l);
}

Test(layout, finalize_sorts_and_dedups)
{
    ab_layout l;
    ab_shape s = lt_shape(2, 100, 0);
    ab_layout_init(&l, &s, 32, 16); /* 4 query blocks, 7 key blocks */
    cr_assert_eq(ab_layout_add_block(&l, 1, 3, 6), AB_OK);
    cr_assert_eq(ab_layout_add_block(&l, 0, 2, 5), AB_OK);
    cr_assert_eq(ab_layout_add_block(&l, 1, 3, 0), AB_OK);
    cr_assert_eq(ab_layout_add_block(&l, 0, 2, 1), AB_OK);
    cr_assert_eq(ab_layout_add_block(&l, 0, 2, 5), AB_OK);
    cr_assert_eq(ab_layout_add_block_range(&l, 1, 3, 0, 3), AB_OK);
    cr_assert_eq(ab_layout_add_block(&l, 0, 0, 0), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(l.kind, AB_LAYOUT_BLOCK);
    cr_assert_null(l.tok_ptr);
    const int64_t ptr[9] = { 0, 1, 1, 3, 3, 3, 3, 3, 7 };
    const int32_t idx[7] = { 0, 1, 5, 0, 1, 2, 6 };
    for (int r = 0; r < 9; r++)
        cr_assert_eq(l.blk_ptr[r], ptr[r], "blk_ptr[%d] = %lld", r, (long long)l.blk_ptr[r]);
    for (int e = 0; e < 7; e++) cr_assert_eq(l.blk_idx[e], idx[e], "blk_idx[%d] = %d", e, l.blk_idx[e]);
    cr_assert_eq(ab_layout_validate(&l, NULL, 0), AB_OK);
    cr_assert_str_eq(ab_layout_kind_name(l.kind), "block");
    ab_layout_free(&l);

    ab_layout_init(&l, &s, 32, 16);
    cr_assert_eq(ab_layout_add_token(&l, 0, 1, 99), AB_OK);
    cr_assert_eq(ab_layout_add_token(&l, 0, 1, 3), AB_OK);
    cr_assert_eq(ab_layout_add_token(&l, 0, 1, 99), AB_OK);
    cr_assert_eq(ab_layout_add_token(&l, 0, 1, 40), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(l.kind, AB_LAYOUT_TOKEN);
    cr_assert_null(l.blk_ptr);
    cr_assert_eq(l.tok_ptr[1], 0);
    cr_assert_eq(l.tok_ptr[2], 3);
    cr_assert_eq(l.tok_ptr[8], 3);
    cr_assert_eq(l.tok_idx[0], 3);
    cr_assert_eq(l.tok_idx[1], 40);
    cr_assert_eq(l.tok_idx[2], 99);
    ab_layout_free(&l);
}

Test(layout, mixed_drops_tokens_inside_kept_blocks)
{
    ab_layout l;
    ab_shape s = lt_shape(1, 64, 0);
    ab_layout_init(&l, &s, 16, 16);
    cr_assert_eq(ab_layout_add_token(&l, 0, 1, 17), AB_OK); /* in block 1: dropped */
    cr_assert_eq(ab_layout_add_token(&l, 0, 1, 40), AB_OK); /* block 2: kept */
    cr_assert_eq(ab_layout_add_token(&l, 0, 2, 17), AB_OK); /* other row: kept */
    cr_assert_eq(ab_layout_add_block(&l, 0, 1, 1), AB_OK);
    cr_assert_eq(ab_layout_add_token(&l, 0, 1, 31), AB_OK); /* in block 1: dropped */
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(l.kind, AB_LAYOUT_MIXED);
    cr_assert_str_eq(ab_layout_kind_name(l.kind), "mixed");
    cr_assert_eq(l.tok_ptr[4], 2);
    cr_assert_eq(l.tok_ptr[1], 0);
    cr_assert_eq(l.tok_ptr[2], 1);
    cr_assert_eq(l.tok_idx[0], 40);
    cr_assert_eq(l.tok_idx[1], 17);
    cr_assert_eq(ab_layout_validate(&l, NULL, 0), AB_OK);
    cr_assert_eq(ab_layout_kept_pairs(&l), 16 * 16 + 16 + 16);
    cr_assert(ab_layout_contains(&l, 0, 20, 17));
    cr_assert(ab_layout_contains(&l, 0, 20, 40));
    cr_assert(!ab_layout_contains(&l, 0, 20, 41));
    cr_assert(ab_layout_contains(&l, 0, 33, 17));
    cr_assert(!ab_layout_contains(&l, 0, 33, 18));
    ab_layout_free(&l);
}

Test(layout, dense_layout_and_names)
{
    ab_layout l;
    ab_shape s = lt_shape(3, 77, 1);
    ab_layout_init(&l, &s, 64, 64);
    cr_assert_eq(ab_layout_dense(&l), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(l.kind, AB_LAYOUT_DENSE);
    cr_assert_eq(ab_layout_kept_pairs(&l), 3 * 77 * 78 / 2);
    cr_assert_eq(ab_layout_valid_pairs(&l), 3 * 77 * 78 / 2);
    cr_assert_float_eq(ab_layout_density(&l), 1.0, 0.0);
    cr_assert_eq(ab_layout_contains(&l, 2, 10, 10), 1);
    cr_assert_eq(ab_layout_contains(&l, 2, 10, 11), 0, "causal");
    cr_assert_eq(ab_layout_contains(&l, 3, 10, 1), 0, "head out of range");
    cr_assert_eq(ab_layout_contains(&l, 0, 77, 1), 0, "row out of range");
    cr_assert_eq(ab_layout_validate(&l, NULL, 0), AB_OK);
    ab_layout_free(&l);
    cr_assert_str_eq(ab_layout_kind_name(AB_LAYOUT_DENSE), "dense");
    cr_assert_str_eq(ab_layout_kind_name(AB_LAYOUT_BLOCK), "block");
    cr_assert_str_eq(ab_layout_kind_name(AB_LAYOUT_TOKEN), "token");
    cr_assert_str_eq(ab_layout_kind_name(AB_LAYOUT_MIXED), "mixed");
    cr_assert_str_eq(ab_layout_kind_name(AB_LAYOUT_CUSTOM), "custom");
}

Test(layout, free_is_idempotent)
{
    ab_layout z;
    memset(&z, 0, sizeof z);
    ab_layout_free(&z);
    ab_layout_free(&z);
    ab_layout_free(NULL);
    ab_layout l;
    ab_shape s = lt_shape(1, 40, 0);
    ab_layout_init(&l, &s, 8, 8);
    cr_assert_eq(ab_layout_add_block(&l, 0, 0, 0), AB_OK);
    ab_layout_free(&l); /* before finalize: builder state only */
    ab_layout_free(&l);
    ab_layout_init(&l, &s, 8, 8);
    cr_assert_eq(ab_layout_add_token(&l, 0, 0, 0), AB_OK);
    cr_assert_eq(ab_layout_add_block(&l, 0, 1, 1), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    ab_layout_free(&l);
    cr_assert_null(l.blk_ptr);
    cr_assert_null(l.tok_idx);
    cr_assert_null(l.priv);
    ab_layout_free(&l);
}

/* ---- random layouts against a brute-force membership model -------------- */

typedef struct lt_model {
    int heads, n;
    unsigned char *m; /* (heads, n, n): 1 if the builder listed (i, j), mask ignored */
} lt_model;

enum { LT_BLOCK = 0, LT_TOKEN, LT_MIXED };

/* Build a random finalised layout and the model of what it lists. */
static void lt_random(uint64_t *rng, ab_layout *l, lt_model *md, int heads, int n, int causal, int bq, int bk,
                      int kind, double p)
{
    ab_shape s = lt_shape(heads, n, causal);
    ab_layout_init(l, &s, 64, 64);
    cr_assert_eq(ab_layout_set_blocks(l, bq, bk), AB_OK);
    md->heads = heads;
    md->n = n;
    md->m = calloc((size_t)heads * n * n, 1);
    cr_assert_not_null(md->m);
    const int nqb = l->n_qblocks, nkb = l->n_kblocks;
    /* several passes in random order, with duplicates */
    for (int pass = 0; pass < 2; pass++) {
        for (int e = 0; e < heads * nqb * (nkb + 4); e++) {
            int h = lt_int(rng, heads), qb = lt_int(rng, nqb);
            if (lt_unif(rng) > p) continue;
            int use_blk = kind == LT_BLOCK || (kind == LT_MIXED && lt_unif(rng) < 0.4);
            int q0 = qb * bq, q1 = q0 + bq < n ? q0 + bq : n;
            if (use_blk) {
                int kb = lt_int(rng, nkb);
                if (lt_unif(rng) < 0.2) {
                    int kb1 = kb + 1 + lt_int(rng, nkb - kb);
                    cr_assert_eq(ab_layout_add_block_range(l, h, qb, kb, kb1), AB_OK);
                    for (int b = kb; b < kb1; b++)
                        for (int i = q0; i < q1; i++)
                            for (int j = b * bk; j < (b + 1) * bk && j < n; j++)
                                md->m[((size_t)h * n + i) * n + j] = 1;
                } else {
                    cr_assert_eq(ab_layout_add_block(l, h, qb, kb), AB_OK);
                    for (int i = q0; i < q1; i++)
                        for (int j = kb * bk; j < (kb + 1) * bk && j < n; j++)
                            md->m[((size_t)h * n + i) * n + j] = 1;
                }
            } else {
                int j = lt_int(rng, n);
                cr_assert_eq(ab_layout_add_token(l, h, qb, j), AB_OK);
                for (int i = q0; i < q1; i++) md->m[((size_t)h * n + i) * n + j] = 1;
            }
        }
    }
    cr_assert_eq(ab_layout_finalize(l), AB_OK);
}

Test(layout, kept_pairs_match_brute_force)
{
    static const int ns[] = { 1, 5, 17, 63, 64, 65, 100, 130 };
    static const int bs[] = { 1, 3, 8, 16, 64, 100 };
    static const double ps[] = { 0.0, 0.05, 0.3, 1.0 };
    uint64_t rng = 12345;
    int checked = 0;
    for (int trial = 0; trial < 240; trial++) {
        int n = ns[trial % 8];
        int causal = (trial / 8) % 2;
        int kind = (trial / 16) % 3;
        int bq = bs[lt_int(&rng, 6)], bk = bs[lt_int(&rng, 6)];
        int heads = 1 + lt_int(&rng, 2);
        double p = ps[lt_int(&rng, 4)];
        ab_layout l;
        lt_model md;
        lt_random(&rng, &l, &md, heads, n, causal, bq, bk, kind, p);
        char err[256];
        cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_OK, "%s", err);
        int64_t brute = 0;
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) {
                    int want = md.m[((size_t)h * n + i) * n + j] && (!causal || j <= i);
                    brute += want;
                    cr_assert_eq(ab_layout_contains(&l, h, i, j), want,
                                 "contains(h=%d,i=%d,j=%d) N=%d bq=%d bk=%d kind=%d causal=%d", h, i, j, n,
                                 bq, bk, kind, causal);
                }
        int64_t valid = (int64_t)heads * (causal ? (int64_t)n * (n + 1) / 2 : (int64_t)n * n);
        cr_assert_eq(ab_layout_valid_pairs(&l), valid);
        cr_assert_eq(ab_layout_kept_pairs(&l), brute,
                     "kept %lld != brute %lld: N=%d bq=%d bk=%d kind=%d causal=%d",
                     (long long)ab_layout_kept_pairs(&l), (long long)brute, n, bq, bk, kind, causal);
        cr_assert_float_eq(ab_layout_density(&l), (double)brute / (double)valid, 1e-12);
        checked++;
        free(md.m);
        ab_layout_free(&l);
    }
    cr_assert_eq(checked, 240);
}

Test(layout, kept_pairs_is_exact_at_long_context)
{
    /* causal lower-triangle of blocks at N = 65537 (partial last block):
     * every valid pair kept; O(entries) so this is instant */
    const int n = 65537, b = 512;
    ab_layout l;
    ab_shape s = lt_shape(2, n, 1);
    ab_layout_init(&l, &s, b, b);
    for (int h = 0; h < 2; h++)
        for (int qb = 0; qb < l.n_qblocks; qb++)
            cr_assert_eq(ab_layout_add_block_range(&l, h, qb, 0, qb + 1), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    int64_t valid = 2 * ((int64_t)n * (n + 1) / 2);
    cr_assert_eq(ab_layout_valid_pairs(&l), valid);
    cr_assert_eq(ab_layout_kept_pairs(&l), valid);
    cr_assert_float_eq(ab_layout_density(&l), 1.0, 0.0);
    ab_layout_free(&l);

    /* only the diagonal blocks: each full block keeps b(b+1)/2, the last
     * block (1 row) keeps 1 */
    ab_layout_init(&l, &s, b, b);
    for (int qb = 0; qb < l.n_qblocks; qb++) cr_assert_eq(ab_layout_add_block(&l, 0, qb, qb), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(ab_layout_kept_pairs(&l), (int64_t)(n / b) * b * (b + 1) / 2 + 1);
    ab_layout_free(&l);
}

/* ---- validation of hand-corrupted layouts -------------------------------- */

static void lt_small_block(ab_layout *l, int kind)
{
    ab_shape s = lt_shape(1, 64, 0);
    ab_layout_init(l, &s, 16, 8); /* 4 query blocks, 8 key blocks */
    for (int qb = 0; qb < 4; qb++) {
        if (kind != LT_TOKEN) cr_assert_eq(ab_layout_add_block_range(l, 0, qb, 1, 4), AB_OK);
        if (kind != LT_BLOCK) {
            cr_assert_eq(ab_layout_add_token(l, 0, qb, 50), AB_OK);
            cr_assert_eq(ab_layout_add_token(l, 0, qb, 60), AB_OK);
        }
    }
    cr_assert_eq(ab_layout_finalize(l), AB_OK);
    cr_assert_eq(ab_layout_validate(l, NULL, 0), AB_OK);
}

Test(layout, validate_catches_corruption)
{
    ab_layout l;
    char err[256];

    lt_small_block(&l, LT_BLOCK);
    int32_t t = l.blk_idx[0];
    l.blk_idx[0] = l.blk_idx[1];
    l.blk_idx[1] = t; /* unsorted */
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    cr_assert_neq(err[0], '\0', "a message is given");
    l.blk_idx[1] = l.blk_idx[0]; /* duplicate */
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    l.blk_idx[0] = 1;
    l.blk_idx[1] = 2;
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_OK);
    l.blk_idx[2] = 8; /* out of range */
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    l.blk_idx[2] = -1;
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    l.blk_idx[2] = 3;
    l.blk_ptr[2] = 2; /* row pointer decreases */
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    l.blk_ptr[2] = 6;
    l.blk_ptr[0] = 1;
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    l.blk_ptr[0] = 0;
    l.n_qblocks = 5;
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL, "block count mismatch");
    l.n_qblocks = 4;
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_OK);
    ab_layout_free(&l);

    lt_small_block(&l, LT_TOKEN);
    l.tok_idx[1] = 64; /* out of range */
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    l.tok_idx[1] = 10; /* unsorted */
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    l.tok_idx[1] = 60;
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_OK);
    ab_layout_free(&l);

    lt_small_block(&l, LT_MIXED);
    cr_assert_eq(l.kind, AB_LAYOUT_MIXED);
    l.tok_idx[0] = 9; /* inside kept block 1 */
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    ab_layout_free(&l);

    lt_small_block(&l, LT_BLOCK);
    l.kind = AB_LAYOUT_TOKEN; /* claims tokens but has none */
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    l.kind = AB_LAYOUT_CUSTOM;
    l.custom_density = 1.5;
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    l.custom_density = 0.5;
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_OK);
    l.kind = (ab_layout_kind)42;
    cr_assert_eq(ab_layout_validate(&l, err, sizeof err), AB_EINVAL);
    l.kind = AB_LAYOUT_BLOCK;
    ab_layout_free(&l);
    cr_assert_eq(ab_layout_validate(NULL, err, sizeof err), AB_EINVAL);
}

/* ---- bulk and concurrent adds ------------------------------------------- */

Test(layout, bulk_adds_validate_like_single_adds)
{
    ab_layout l;
    ab_shape s = lt_shape(2, 65, 1);
    ab_layout_init(&l, &s, 32, 16); /* 3 query blocks, 5 key blocks */
    const int32_t ok_blk[] = { 4, 0, 2, 2 }, ok_tok[] = { 64, 0, 7, 7 };
    const int32_t bad_blk[][2] = { { 0, -1 }, { 5, 1 } }, bad_tok[][2] = { { 3, -1 }, { 65, 2 } };
    cr_assert_eq(ab_layout_add_blocks(&l, -1, 0, ok_blk, 4), AB_EINVAL);
    cr_assert_eq(ab_layout_add_blocks(&l, 2, 0, ok_blk, 4), AB_EINVAL);
    cr_assert_eq(ab_layout_add_blocks(&l, 0, -1, ok_blk, 4), AB_EINVAL);
    cr_assert_eq(ab_layout_add_blocks(&l, 0, 3, ok_blk, 4), AB_EINVAL);
    cr_assert_eq(ab_layout_add_tokens(&l, 2, 0, ok_tok, 4), AB_EINVAL);
    cr_assert_eq(ab_layout_add_tokens(&l, 0, 3, ok_tok, 4), AB_EINVAL);
    for (int t = 0; t < 2; t++) {
        cr_assert_eq(ab_layout_add_blocks(&l, 0, 0, bad_blk[t], 2), AB_EINVAL);
        cr_assert_eq(ab_layout_add_tokens(&l, 0, 0, bad_tok[t], 2), AB_EINVAL);
    }
    cr_assert_eq(ab_layout_add_blocks(&l, 0, 0, ok_blk, -1), AB_EINVAL);
    cr_assert_eq(ab_layout_add_tokens(&l, 0, 0, NULL, 1), AB_EINVAL);
    cr_assert_eq(ab_layout_add_blocks(NULL, 0, 0, ok_blk, 1), AB_EINVAL);
    cr_assert_eq(ab_layout_add_tokens(NULL, 0, 0, ok_tok, 1), AB_EINVAL);
    /* n == 0: the row is still checked, nothing is added or touched */
    cr_assert_eq(ab_layout_add_blocks(&l, 0, 3, NULL, 0), AB_EINVAL);
    cr_assert_eq(ab_layout_add_tokens(&l, 0, 0, NULL, 0), AB_OK);
    cr_assert_eq(ab_layout_add_blocks(&l, 1, 2, ok_blk, 0), AB_OK);
    /* all or nothing: the failed calls above added no entry */
    cr_assert_eq(ab_layout_finalize(&l), AB_EINVAL, "only failed or empty calls: untouched");
    /* the edges are in range */
    cr_assert_eq(ab_layout_add_blocks(&l, 1, 2, ok_blk, 4), AB_OK);
    cr_assert_eq(ab_layout_add_tokens(&l, 1, 2, ok_tok, 4), AB_OK);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(l.kind, AB_LAYOUT_MIXED);
    cr_assert_eq(ab_layout_validate(&l, NULL, 0), AB_OK);
    const int64_t r = 1 * 3 + 2;
    cr_assert_eq(l.blk_ptr[r + 1] - l.blk_ptr[r], 3, "4, 0, 2, 2 -> 0 2 4");
    cr_assert_eq(l.blk_idx[l.blk_ptr[r]], 0);
    cr_assert_eq(l.blk_idx[l.blk_ptr[r] + 2], 4);
    /* tokens 0, 7, 64 lie in kept blocks 0, 0, 4: all dropped */
    cr_assert_eq(l.tok_ptr[r + 1] - l.tok_ptr[r], 0);
    cr_assert_eq(ab_layout_add_blocks(&l, 0, 0, ok_blk, 1), AB_EINVAL, "after finalize");
    ab_layout_free(&l);

    ab_layout_init(&l, &s, 32, 16);
    cr_assert_eq(ab_layout_dense(&l), AB_OK);
    cr_assert_eq(ab_layout_add_blocks(&l, 0, 0, ok_blk, 1), AB_EINVAL);
    cr_assert_eq(ab_layout_add_tokens(&l, 0, 0, ok_tok, 1), AB_EINVAL);
    ab_layout_free(&l);
}

/* The entries of row r of a random layout: blocks and tokens, with repeats. */
static int lt_row_entries(int r, int nkb, int n, int32_t *blk, int *nb, int32_t *tok)
{
    uint64_t g = 0xABCDull + (uint64_t)r * 7919u;
    *nb = lt_int(&g, 6);
    for (int t = 0; t < *nb; t++) blk[t] = lt_int(&g, nkb);
    const int nt = lt_int(&g, 120);
    for (int t = 0; t < nt; t++) tok[t] = lt_int(&g, n);
    return nt;
}

static int lt_same_csr(const int64_t *pa, const int32_t *ia, const int64_t *pb, const int32_t *ib,
                       int64_t rows)
{
    if (!pa || !pb) return pa == pb;
    return !memcmp(pa, pb, (size_t)(rows + 1) * sizeof *pa) && !memcmp(ia, ib, (size_t)pa[rows] * sizeof *ia);
}

Test(layout, concurrent_adds_match_sequential)
{
    ab_shape s = lt_shape(3, 4001, 1);
    ab_layout seq, par;
    ab_layout_init(&seq, &s, 2, 32); /* 6003 rows, ~370K entries */
    const int nqb = seq.n_qblocks, nkb = seq.n_kblocks, rows = 3 * nqb;
    int32_t blk[8], tok[128];
    int nb;
    /* sequential: single adds, rows in order */
    for (int r = 0; r < rows; r++) {
        const int nt = lt_row_entries(r, nkb, s.seq_len, blk, &nb, tok);
        for (int t = 0; t < nb; t++) cr_assert_eq(ab_layout_add_block(&seq, r / nqb, r % nqb, blk[t]), AB_OK);
        for (int t = 0; t < nt; t++) cr_assert_eq(ab_layout_add_token(&seq, r / nqb, r % nqb, tok[t]), AB_OK);
    }
    cr_assert_eq(ab_layout_finalize(&seq), AB_OK);
    cr_assert_eq(seq.kind, AB_LAYOUT_MIXED);

    for (int trial = 0; trial < 8; trial++) {
        /* concurrent, from a fresh layout (the threads race on the first
         * call too): bulk adds on even trials' even rows, single adds
         * elsewhere, rows in a thread-dependent order */
        ab_layout_init(&par, &s, 2, 32);
        int fails = 0, nthreads = 0;
#pragma omp parallel num_threads(4) reduction(+ : fails)
        {
#pragma omp single
            nthreads = omp_get_num_threads();
            int32_t b[8], k[128];
            int n;
#pragma omp for schedule(dynamic, 1)
            for (int x = 0; x < rows; x++) {
                const int r = trial & 1 ? rows - 1 - x : x;
                const int h = r / nqb, qb = r % nqb;
                const int nt = lt_row_entries(r, nkb, s.seq_len, b, &n, k);
                if ((trial + r) % 2 == 0) {
                    fails += ab_layout_add_tokens(&par, h, qb, k, nt) != AB_OK;
                    fails += ab_layout_add_blocks(&par, h, qb, b, n) != AB_OK;
                } else {
                    for (int t = nt - 1; t >= 0; t--)
                        fails += ab_layout_add_token(&par, h, qb, k[t]) != AB_OK;
                    for (int t = 0; t < n; t++)
                        fails += ab_layout_add_block_range(&par, h, qb, b[t], b[t] + 1) != AB_OK;
                }
            }
        }
        cr_assert_geq(nthreads, 2, "the test needs 2+ threads");
        cr_assert_eq(fails, 0);
        cr_assert_eq(ab_layout_finalize(&par), AB_OK);
        cr_assert_eq(par.kind, seq.kind);
        cr_assert(lt_same_csr(seq.blk_ptr, seq.blk_idx, par.blk_ptr, par.blk_idx, rows),
                  "trial %d: blocks differ", trial);
        cr_assert(lt_same_csr(seq.tok_ptr, seq.tok_idx, par.tok_ptr, par.tok_idx, rows),
                  "trial %d: tokens differ", trial);
        ab_layout_free(&par);
    }
    ab_layout_free(&seq);
}

Test(layout, concurrent_dense_and_custom_calls_agree)
{
    ab_shape s = lt_shape(2, 100, 0);
    ab_layout l;
    ab_layout_init(&l, &s, 16, 16);
    int fails = 0;
#pragma omp parallel num_threads(4) reduction(+ : fails)
    fails += ab_layout_dense(&l) != AB_OK;
    cr_assert_eq(fails, 0);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(l.kind, AB_LAYOUT_DENSE);
    ab_layout_free(&l);

    /* racing dense against entries: exactly one mode wins, never both */
    ab_layout_init(&l, &s, 16, 16);
    int ok_dense = 0, ok_add = 0;
#pragma omp parallel num_threads(4) reduction(+ : ok_dense, ok_add)
    {
        if (omp_get_thread_num() % 2)
            ok_dense += ab_layout_dense(&l) == AB_OK;
        else
            ok_add += ab_layout_add_block(&l, 0, 0, 0) == AB_OK;
    }
    cr_assert((ok_dense > 0) != (ok_add > 0), "dense %d, adds %d", ok_dense, ok_add);
    cr_assert_eq(ab_layout_finalize(&l), AB_OK);
    cr_assert_eq(l.kind, ok_dense ? AB_LAYOUT_DENSE : AB_LAYOUT_BLOCK);
    ab_layout_free(&l);
}

/* Finalize's fast path: every row added in one bulk call (here from
 * threads, rows in any order; runs sorted, unsorted, with duplicates, or
 * empty) gives the same CSR as the general path, forced by adding each
 * row in two calls. */
Test(layout, one_call_per_row_matches_split_rows)
{
    ab_shape s = lt_shape(2, 3000, 0);
    ab_layout one, two;
    ab_layout_init(&one, &s, 16, 16); /* 376 rows */
    ab_layout_init(&two, &s, 16, 16);
    const int rows = 2 * one.n_qblocks, nqb = one.n_qblocks;
    int32_t *tok = malloc((size_t)rows * 600 * sizeof *tok);
    int *cnt = malloc((size_t)rows * sizeof *cnt);
    cr_assert(tok && cnt);
    uint64_t seed = 77;
    for (int r = 0; r < rows; r++) {
        int32_t *t = tok + (size_t)r * 600;
        const int kind = r % 4; /* 0: empty, 1: sorted, 2: shuffled, 3: duplicates */
        cnt[r] = kind == 0 ? 0 : 1 + lt_int(&seed, 599);
        for (int e = 0; e < cnt[r]; e++) t[e] = kind == 3 ? lt_int(&seed, 40) : lt_int(&seed, s.seq_len);
        if (kind == 1) /* sorted and unique */
            for (int e = 0; e < cnt[r]; e++) t[e] = e * 5;
    }
    int fails = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(4) reduction(+ : fails)
    for (int x = 0; x < rows; x++) {
        const int r = (x * 7) % rows; /* rows out of order */
        const int32_t *t = tok + (size_t)r * 600;
        if (cnt[r]) fails += ab_layout_add_tokens(&one, r / nqb, r % nqb, t, cnt[r]) != AB_OK;
    }
    for (int r = 0; r < rows; r++) {
        const int32_t *t = tok + (size_t)r * 600;
        const int h = cnt[r] / 2;
        if (h) fails += ab_layout_add_tokens(&two, r / nqb, r % nqb, t, h) != AB_OK;
        if (cnt[r] - h) fails += ab_layout_add_tokens(&two, r / nqb, r % nqb, t + h, cnt[r] - h) != AB_OK;
    }
    cr_assert_eq(fails, 0);
    cr_assert_eq(ab_layout_finalize(&one), AB_OK);
    cr_assert_eq(ab_layout_finalize(&two), AB_OK);
    cr_assert_eq(one.kind, AB_LAYOUT_TOKEN);
    cr_assert(lt_same_csr(one.tok_ptr, one.tok_idx, two.tok_ptr, two.tok_idx, rows), "tokens differ");
    cr_assert_eq(ab_layout_validate(&one, NULL, 0), AB_OK);
    cr_assert_eq(one.tok_ptr[1], 0, "row 0 is empty");
    ab_layout_free(&one);
    ab_layout_free(&two);
    free(tok);
    free(cnt);
}

/* The builder keeps 4 bytes an entry while every row comes in one append
 * and switches to a row per entry when some row comes twice, rebuilding
 * the rows of the entries so far from its bookkeeping. Here the switch
 * happens while other threads are writing long rows they claimed before
 * it (entries are written after the lock is released), and later appends
 * then grow both arrays: the result must equal the sequential one. */
Test(layout, repeat_row_amid_concurrent_bulk_adds)
{
    ab_shape s = lt_shape(2, 8192, 1);
    const int per = 700; /* tokens per bulk append */
    for (int trial = 0; trial < 4; trial++) {
        ab_layout seq, par;
        ab_layout_init(&seq, &s, 64, 64); /* 256 rows */
        ab_layout_init(&par, &s, 64, 64);
        const int nqb = seq.n_qblocks, rows = 2 * nqb, again = 40 + 50 * trial; /* the repeated row */
        int32_t *k = malloc((size_t)(rows + 1) * per * sizeof *k);
        cr_assert(k);
        for (int r = 0; r <= rows; r++)
            for (int t = 0; t < per; t++) k[(size_t)r * per + t] = (int32_t)((r * 131 + t * 11) % s.seq_len);
        /* sequential: every row once, then row `again` a second time */
        for (int r = 0; r < rows; r++)
            cr_assert_eq(ab_layout_add_tokens(&seq, r / nqb, r % nqb, k + (size_t)r * per, per), AB_OK);
        cr_assert_eq(ab_layout_add_tokens(&seq, again / nqb, again % nqb, k + (size_t)rows * per, per),
                     AB_OK);
        int fails = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(4) reduction(+ : fails)
        for (int x = 0; x <= rows; x++) {
            /* the repeat comes about a third of the way in */
            const int r = x < rows / 3 ? x : x == rows / 3 ? rows : x - 1;
            const int row = r == rows ? again : r;
            fails += ab_layout_add_tokens(&par, row / nqb, row % nqb, k + (size_t)r * per, per) != AB_OK;
        }
        cr_assert_eq(fails, 0);
        cr_assert_eq(ab_layout_finalize(&seq), AB_OK);
        cr_assert_eq(ab_layout_finalize(&par), AB_OK);
        cr_assert_eq(par.kind, AB_LAYOUT_TOKEN);
        cr_assert(lt_same_csr(seq.tok_ptr, seq.tok_idx, par.tok_ptr, par.tok_idx, rows),
                  "trial %d: tokens differ", trial);
        cr_assert_eq(ab_layout_validate(&par, NULL, 0), AB_OK);
        ab_layout_free(&seq);
        ab_layout_free(&par);
        free(k);
    }
}
