/* bigbird.c — `bigbird`: the block-sparse pattern of BigBird (Zaheer et al.
 * 2020, "Big Bird: Transformers for Longer Sequences", arXiv 2007.14062;
 * google-research/bigbird, "ITC" variant). Per head and query block:
 *   - window: w key blocks (default 3) centred on the query block
 *     (qb - 1 .. qb + 1, bigbird/core/attention.py); with a causal mask the
 *     blocks after the diagonal are dropped (docs/spec/METHODS.md 2.4: the
 *     official code is an encoder pattern; its decoder uses full attention),
 *     so w = 3 keeps qb - 1 and qb;
 *   - global: g blocks (default 2, BigBird's first and last block): every
 *     query block keeps the first ceil(g/2) and the last floor(g/2) key
 *     blocks, and those query blocks keep every key block ("global tokens
 *     attend everywhere"); with a causal mask the last block is only seen by
 *     the last query block;
 *   - random: r key blocks (default 3) drawn without replacement among the
 *     blocks not already kept (causal: at or before the diagonal), as
 *     bigbird_block_rand_mask draws from the blocks outside the window and
 *     the globals. The draw is seeded per head and query block: the
 *     candidates in ascending order are shuffled by a partial Fisher-Yates
 *     whose t-th swap partner is t + x_t mod (n_cand - t), x_t the t-th
 *     ab_splitmix64 output from the state seed ^ (0xB16B1D << 40) ^
 *     h * 0x9E3779B97F4A7C15 ^ qb * 0xC2B2AE3D27D4EB4F (mod 2^64).
 * Executed by the shared block-sparse kernel.
 *
 * Density knob: r, fractional. Each (head, query block) draws one random
 * permutation of its candidates (fixed by the seed, independent of r) and
 * keeps a prefix of it, floor(r) or floor(r) + 1 long (dithered over rows by a
 * golden-ratio sequence), so a larger r keeps a superset: density is monotone.
 */
#include "attnbench.h"
#include "methods/keep.h"

#include <stdint.h>
#include <stdlib.h>
#include <math.h>

typedef struct bigbird_state {
    int window;    /* w: local key blocks */
    int global;    /* g: global blocks */
    double random; /* r: random key blocks per query block (fractional) */
} bigbird_state;

enum { P_RANDOM = 0, P_WINDOW, P_GLOBAL, P_COUNT };

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

static int bigbird_init(void *state, const ab_params *p, const ab_shape *s)
{
    bigbird_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "bigbird: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_RANDOM] >= 0 && p->v[P_RANDOM] <= (1 << 20)) ||
        !(p->v[P_WINDOW] >= 1 && p->v[P_WINDOW] <= (1 << 20)) ||
        !(p->v[P_GLOBAL] >= 0 && p->v[P_GLOBAL] <= (1 << 20))) {
        ab_set_error(state,
                     "bigbird: random in [0, 2^20], window in [1, 2^20], global in [0, 2^20] required");
        return AB_EINVAL;
    }
    st->random = p->v[P_RANDOM];
    st->window = (int)p->v[P_WINDOW];
    st->global = (int)p->v[P_GLOBAL];
    return AB_OK;
}

static int bigbird_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const bigbird_state *st = state;
    const int n = l->seq_len, bq = l->block_q, bk = l->block_k, nqb = l->n_qblocks, nkb = l->n_kblocks;
    const int gfirst = (st->global + 1) / 2, glast = st->global / 2;
    unsigned char *kept = malloc((size_t)(nkb > 0 ? nkb : 1));          /* (n_kblocks) flags of one row */
    int32_t *cand = malloc((size_t)(nkb > 0 ? nkb : 1) * sizeof *cand); /* (n_kblocks) */
    int rc = kept && cand ? AB_OK : AB_ENOMEM;
    if (rc) ab_set_error(state, "bigbird: out of memory");

    for (int qb = 0; rc == AB_OK && qb < nqb; qb++) {
        const int r0 = qb * bq, r1 = imin(n, (qb + 1) * bq);
        const int kfirst = r0 / bk, klast = (r1 - 1) / bk; /* diagonal key blocks */
        const int kmax = l->causal ? klast : nkb - 1;      /* last candidate */
        /* global query blocks: the first gfirst and the last glast */
        const int gq = qb < gfirst || qb >= nqb - glast;
        const int lo = imax(0, kfirst - (st->window - 1) / 2);
        const int hi = l->causal ? klast : imin(nkb - 1, klast + st->window / 2); /* causal: J > I dropped */
        const int nr = mc_dither(st->random, qb);
        for (int h = 0; rc == AB_OK && h < l->heads; h++) {
            if (gq) {
                rc = ab_layout_add_block_range(l, h, qb, 0, kmax + 1);
                continue;
            }
            for (int kb = 0; kb < nkb; kb++) kept[kb] = 0;
            for (int kb = lo; kb <= hi; kb++) kept[kb] = 1;
            for (int kb = 0; kb < imin(gfirst, nkb); kb++) kept[kb] = 1;
            for (int kb = imax(0, nkb - glast); kb < nkb; kb++) kept[kb] = 1;
            int nc = 0;
            for (int kb = 0; kb <= kmax; kb++)
                if (!kept[kb]) cand[nc++] = kb;
            /* partial Fisher-Yates: the first min(nr, nc) of a seeded permutation */
            uint64_t s = pb->seed ^ (0xB16B1Dull << 40) ^ ((uint64_t)h * 0x9E3779B97F4A7C15ull) ^
                         ((uint64_t)qb * 0xC2B2AE3D27D4EB4Full);
            const int take = imin(nr, nc);
            for (int t = 0; t < take; t++) {
                const int u = t + (int)(ab_splitmix64(&s) % (uint64_t)(nc - t));
                const int32_t x = cand[t];
                cand[t] = cand[u];
                cand[u] = x;
                kept[cand[t]] = 1;
            }
            for (int kb = 0; rc == AB_OK && kb <= (l->causal ? kmax : nkb - 1); kb++)
                if (kept[kb]) rc = ab_layout_add_block(l, h, qb, kb);
        }
    }
    free(kept);
    free(cand);
    return rc == AB_OK ? ab_layout_set_cost(l, 0, 0) : rc; /* static: no selection work */
}

const ab_method ab_bigbird = {
    .abi = AB_ABI_VERSION,
    .family = "static",
    .name = "bigbird",
    .summary = "BigBird: window (3) + global (first/last, 2) + r seeded random key blocks per query block",
    .reference = "BigBird (Zaheer et al. 2020, arXiv 2007.14062)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_RANDOM] = { .name = "random", .def = 3, .min = 0, .max = 1 << 20, .is_int = 0,
                       .help = "r: random key blocks per query block (fractional: dithered over query blocks)" },
        [P_WINDOW] = { .name = "window", .def = 3, .min = 1, .max = 1 << 20, .is_int = 1,
                       .help = "w: local key blocks, centred (causal: those after the diagonal dropped)" },
        [P_GLOBAL] = { .name = "global", .def = 2, .min = 0, .max = 1 << 20, .is_int = 1,
                       .help = "g: global blocks, first ceil(g/2) and last floor(g/2)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_RANDOM, .increasing = 1, .log_scale = 0 },
    .state_size = sizeof(bigbird_state),
    .init = bigbird_init,
    .select = bigbird_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_bigbird)
