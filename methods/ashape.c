/* ashape.c — `ashape`: the A-shape pattern of StreamingLLM (Xiao et al. 2023,
 * "Efficient Streaming Language Models with Attention Sinks",
 * arXiv 2309.17453; mit-han-lab/streaming-llm): S attention-sink tokens
 * (default 4, as in the paper) plus a window of the most recent w tokens.
 *
 * Two granularities:
 *   block_granular = 0 (default): the StreamingLLM pattern at token
 *     granularity. A layout lists keys per query block (rows
 *     [r0, r1)), so the window is that of the query block: keys
 *     [r0 - w + 1, r1 - 1] (non-causal: w - 1 more on the right) plus the
 *     first S tokens. Row i thus sees between w and w + block_q - 1 recent
 *     keys; the sinks are exactly S tokens. Whole key blocks inside the
 *     window are listed as blocks and only the ragged edge as tokens (MIXED
 *     layout), so the gather kernel copies as little as possible.
 *   block_granular = 1: MInference's A-shape (Jiang et al. 2024,
 *     arXiv 2407.02490): ceil(S / block_k) sink blocks and ceil(w / block_k)
 *     local key blocks ending at the diagonal block (BLOCK layout).
 *
 * Decode (dselect), StreamingLLM's KV policy (its cache keeps the start_size
 * sink tokens and the recent_size newest ones): each (layer, head) row of
 * the step keeps the newest w keys [len - w, len), the newest included, and
 * the first S keys not already in them; w is `window` dithered over the
 * rows (floor or ceil, golden-ratio sequence of the row index, >= 1).
 * block_granular = 0: tokens, whole pages of the decode layout as pages and
 * the ragged edges as tokens (MIXED); 1: the ceil(w / block_k) pages ending
 * at the newest key's page plus ceil(S / block_k) sink pages (BLOCK).
 * Deviation: StreamingLLM evicts the keys in between and re-numbers
 * positions inside its cache (rolling RoPE); here the cache is kept whole
 * and the layout only skips them, positions unchanged.
 *
 * Density knob: `window`, fractional: a non-integer window is dithered over
 * the query blocks (floor or ceil, by a golden-ratio sequence) so density
 * moves smoothly with it; it rises monotonically with the window.
 */
#include "attnbench.h"
#include "methods/keep.h"

#include <math.h>

typedef struct ashape_state {
    double window;      /* recent keys, tokens (may be fractional) */
    int sinks;          /* leading sink tokens */
    int block_granular; /* 0: tokens (StreamingLLM), 1: blocks (MInference) */
} ashape_state;

enum { P_WINDOW = 0, P_SINKS, P_BLOCK, P_COUNT };

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

static int ashape_init(void *state, const ab_params *p, const ab_shape *s)
{
    ashape_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "ashape: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_WINDOW] >= 1 && p->v[P_WINDOW] <= (1 << 24))) {
        ab_set_error(state, "ashape: window=%g outside [1, 2^24]", p->v[P_WINDOW]);
        return AB_EINVAL;
    }
    if (!(p->v[P_SINKS] >= 0 && p->v[P_SINKS] <= (1 << 20))) {
        ab_set_error(state, "ashape: sinks=%g outside [0, 2^20]", p->v[P_SINKS]);
        return AB_EINVAL;
    }
    st->window = p->v[P_WINDOW];
    st->sinks = (int)p->v[P_SINKS];
    st->block_granular = p->v[P_BLOCK] != 0;
    return AB_OK;
}

static int ashape_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const ashape_state *st = state;
    const int n = l->seq_len, bq = l->block_q, bk = l->block_k;
    for (int qb = 0; qb < l->n_qblocks; qb++) {
        const int r0 = qb * bq, r1 = imin(n, (qb + 1) * bq);
        /* this query block's window, >= 1 token (the diagonal) */
        const int w = imax(1, mc_dither(st->window, qb));
        for (int h = 0; h < l->heads; h++) {
            int rc;
            if (st->block_granular) {
                const int wb = (w + bk - 1) / bk, sb = (st->sinks + bk - 1) / bk;
                const int kfirst = r0 / bk, klast = (r1 - 1) / bk;
                const int lo = imax(0, kfirst - wb + 1);
                const int hi = l->causal ? klast : imin(l->n_kblocks - 1, klast + wb - 1);
                rc = ab_layout_add_block_range(l, h, qb, lo, hi + 1);
                if (rc == AB_OK && sb > 0)
                    rc = ab_layout_add_block_range(l, h, qb, 0, imin(sb, l->causal ? hi + 1 : l->n_kblocks));
            } else {
                const int lo = r0 - w + 1, hi = l->causal ? r1 : r1 + w - 1; /* [lo, hi) */
                rc = mc_add_span(l, h, qb, lo, hi);
                /* sinks: only those not already in the window */
                if (rc == AB_OK && st->sinks > 0) rc = mc_add_span(l, h, qb, 0, imin(st->sinks, imax(lo, 0)));
            }
            if (rc != AB_OK) return rc;
        }
    }
    return ab_layout_set_cost(l, 0, 0); /* a static pattern: no selection work */
}

/* dselect (decode): row r keeps its newest w keys and the first S keys. A
 * static pattern: nothing read, cost 0. */
static int ashape_dselect(void *state, const ab_decode *dp, ab_layout *l)
{
    const ashape_state *st = state;
    const int n = l->seq_len, bk = l->block_k, np = l->n_kblocks, last = np - 1;
    int32_t *blk = NULL, *tok = NULL;
    if (!st->block_granular && mc_row_bufs(l, &blk, &tok) != AB_OK) return AB_ENOMEM;
    int rc = AB_OK;
    for (int r = 0; r < l->heads && rc == AB_OK; r++) {
        const int w = imax(1, mc_dither(st->window, r));
        if (st->block_granular) {
            const int wb = (w + bk - 1) / bk, sb = imin(np, (st->sinks + bk - 1) / bk);
            rc = ab_layout_add_block_range(l, r, 0, imax(0, last - wb + 1), last + 1);
            if (rc == AB_OK && sb > 0) rc = ab_layout_add_block_range(l, r, 0, 0, sb);
        } else {
            const int lo = imax(0, n - w);
            int nb = 0, nt = 0;
            mc_span_collect(lo, n, bk, n, blk, &nb, tok, &nt);
            mc_span_collect(0, imin(st->sinks, lo), bk, n, blk, &nb, tok, &nt);
            rc = mc_flush_row(l, r, 0, blk, nb, tok, nt);
        }
    }
    free(blk);
    free(tok);
    return rc != AB_OK ? rc : ab_layout_set_cost(l, 0, 0);
}

const ab_method ab_ashape = {
    .abi = AB_ABI_VERSION,
    .family = "static",
    .name = "ashape",
    .summary = "A-shape: S sink tokens + recent window (StreamingLLM); block_granular=1: MInference's block A-shape; decode: sinks + the newest w keys",
    .reference = "StreamingLLM (Xiao et al. 2023, arXiv 2309.17453); MInference A-shape (arXiv 2407.02490)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL | AB_DECODE,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_WINDOW] = { .name = "window", .def = 1024, .min = 1, .max = 1 << 24, .is_int = 0,
                       .help = "recent keys per query block, tokens (fractional: dithered over query blocks)" },
        [P_SINKS] = { .name = "sinks", .def = 4, .min = 0, .max = 1 << 20, .is_int = 1,
                      .help = "attention-sink tokens at the start (StreamingLLM: 4)" },
        [P_BLOCK] = { .name = "block_granular", .def = 0, .min = 0, .max = 1, .is_int = 1,
                      .help = "1: whole key blocks (MInference A-shape), 0: tokens" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_WINDOW, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(ashape_state),
    .init = ashape_init,
    .select = ashape_select,
    .run = NULL,
    .fini = NULL,
    .dselect = ashape_dselect,
};
AB_REGISTER(ab_ashape)
