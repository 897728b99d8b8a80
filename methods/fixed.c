/* fixed.c — `fixed`: the fixed pattern of the Sparse Transformer (Child et
 * al. 2019, "Generating Long Sequences with Sparse Transformers",
 * arXiv 1904.10509; openai/sparse_attention). With block length l and c
 * summary cells, row i keeps
 *   A(1): the keys of its own length-l block, floor(j / l) == floor(i / l),
 *   A(2): the c "summary" positions of every block: j mod l in
 *         [t, t + c), t = l - c for head 0,
 * merged into one pattern. Child et al. found "having multiple heads attend
 * to distinct subblocks of length c within the block of size l was
 * preferable": head h uses t_h = (l - (h + 1) c) mod l (wrapping inside the
 * block). Causal: summary cells of earlier blocks (those of the own block are
 * in A(1)); non-causal: of every block.
 *
 * Density knob: c, fractional (a non-integer c is dithered over query blocks)
 * and monotone: density rises with the number of summary cells per block,
 * from A(1) alone (c -> 0) to everything (c = l). l stays fixed (default
 * 128, the paper's l ∈ {128, 256} with c ∈ {8, 16, 32}); with both free
 * the density is not monotone in either.
 *
 * Granularity: A(1) and A(2) depend only on the query's l-block, so query
 * blocks of gcd(l, block_q) rows make the per-query-block token lists exact.
 * Spans are listed as whole key blocks plus edge tokens (MIXED layout),
 * collected per row and added in bulk (one builder call per row and kind).
 */
#include "attnbench.h"
#include "methods/keep.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct fixed_state {
    int len;        /* l: block length in tokens */
    double summary; /* c: summary cells per block (fractional: dithered) */
} fixed_state;

enum { P_SUMMARY = 0, P_LEN, P_COUNT };

static int imin(int a, int b) { return a < b ? a : b; }

static int gcd(int a, int b)
{
    while (b) {
        const int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static int fixed_init(void *state, const ab_params *p, const ab_shape *s)
{
    fixed_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "fixed: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_SUMMARY] >= 0 && p->v[P_SUMMARY] <= (1 << 20))) {
        ab_set_error(state, "fixed: summary=%g outside [0, 2^20]", p->v[P_SUMMARY]);
        return AB_EINVAL;
    }
    if (!(p->v[P_LEN] >= 1 && p->v[P_LEN] <= (1 << 20))) {
        ab_set_error(state, "fixed: block=%g outside [1, 2^20]", p->v[P_LEN]);
        return AB_EINVAL;
    }
    st->summary = p->v[P_SUMMARY];
    st->len = (int)p->v[P_LEN];
    return AB_OK;
}

static int fixed_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const fixed_state *st = state;
    const int n = l->seq_len, L = st->len;
    int rc = ab_layout_set_blocks(l, gcd(L, l->block_q), l->block_k);
    if (rc != AB_OK) return rc;
    const int bq = l->block_q, bk = l->block_k, nlb = (n + L - 1) / L; /* length-l blocks */
    /* one row's entries: every span lies in [0, n) and spans are disjoint,
     * so at most n tokens and n_kblocks blocks */
    int32_t *blk = malloc(((size_t)l->n_kblocks + 1) * sizeof(int32_t));
    int32_t *tok = malloc(((size_t)n + 1) * sizeof(int32_t));
    if (!blk || !tok) {
        free(blk);
        free(tok);
        return AB_ENOMEM;
    }
    for (int qb = 0; qb < l->n_qblocks && rc == AB_OK; qb++) {
        const int r0 = qb * bq, r1 = imin(n, (qb + 1) * bq);
        const int lb = r0 / L; /* the query block lies inside l-block lb */
        const int c = imin(L, mc_dither(st->summary, qb));
        for (int h = 0; h < l->heads && rc == AB_OK; h++) {
            int nb = 0, nt = 0;
            /* A(1): own l-block (causal: up to the last row; the mask does the rest) */
            mc_span_collect(lb * L, l->causal ? r1 : (lb + 1) * L, bk, n, blk, &nb, tok, &nt);
            if (c > 0) {
                const int t = ((L - (int)(((int64_t)(h + 1) * c) % L)) % L); /* first cell of head h */
                for (int b = 0; b < (l->causal ? lb : nlb); b++) {
                    if (b == lb) continue;
                    const int base = b * L;
                    if (t + c <= L) {
                        mc_span_collect(base + t, base + t + c, bk, n, blk, &nb, tok, &nt);
                    } else { /* wraps inside the block */
                        mc_span_collect(base + t, base + L, bk, n, blk, &nb, tok, &nt);
                        mc_span_collect(base, base + t + c - L, bk, n, blk, &nb, tok, &nt);
                    }
                }
            }
            rc = mc_flush_row(l, h, qb, blk, nb, tok, nt);
        }
    }
    free(blk);
    free(tok);
    if (rc) return rc;
    return ab_layout_set_cost(l, 0, 0); /* a static pattern: no selection work */
}

const ab_method ab_fixed = {
    .abi = AB_ABI_VERSION,
    .family = "static",
    .name = "fixed",
    .summary = "Sparse Transformer fixed: own length-l block + c summary cells of every block (distinct per head)",
    .reference = "Sparse Transformer (Child et al. 2019, arXiv 1904.10509)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_SUMMARY] = { .name = "summary", .def = 8, .min = 0.01, .max = 1 << 16, .is_int = 0,
                        .help = "c: summary cells per length-l block (fractional: dithered; capped at l)" },
        [P_LEN] = { .name = "block", .def = 128, .min = 1, .max = 1 << 20, .is_int = 1,
                    .help = "l: block length in tokens" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_SUMMARY, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(fixed_state),
    .init = fixed_init,
    .select = fixed_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_fixed)
