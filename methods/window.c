/* window.c — `window`: sliding window plus attention-sink blocks, the
 * "A-shape" pattern of StreamingLLM (Xiao et al. 2023, arXiv 2309.17453) at
 * the block granularity MInference uses for it (Jiang et al. 2024,
 * arXiv 2407.02490).
 *
 * On the harness's block grid, query block qb keeps
 *   - the local band: the w key blocks ending at the diagonal block, where
 *     w = ceil(window / block_k) (non-causal: w - 1 blocks on each side), and
 *   - the first sink_blocks key blocks (the "attention sinks").
 * The shared block-sparse kernel executes the layout (run = NULL).
 *
 * Decode (dselect): the step's query keeps, on the decode layout's page grid
 * (block_k, the page: 16 unless configured), the w = ceil(window / block_k)
 * pages ending at the page of the newest key (so the newest `window` keys
 * and up to a page more) and the first sink_blocks pages (sink_blocks *
 * block_k first keys): the prefill band seen from the last row, whole
 * pages, BLOCK layout. The newest key's page is always kept (w >= 1).
 * Deviation: the decode page is the decode layout's block_k, not the
 * prefill key block, so the sinks are sink_blocks pages of the cache.
 *
 * THIS FILE IS THE TEMPLATE FOR NEW METHODS. To add one: copy it to
 * methods/mine.c, rename the symbols, change the params and select().
 * The Makefile finds the AB_REGISTER line at the end; the harness then times
 * it, measures its density, calibrates its knob, and tests/test_methods.c
 * checks it against the exact reference, with no other file to edit.
 */
#include "attnbench.h"

/* Per-instance state. The harness allocates state_size zeroed bytes, passes
 * the same pointer to every entry point and frees it after fini(). Keep here
 * the params (copied by init) and whatever select() hands on to run(). */
typedef struct window_state {
    int window;      /* local band in tokens */
    int sink_blocks; /* leading key blocks always kept */
} window_state;

/* Positions of our params in window.params[] and in ab_params.v[]. */
enum { P_WINDOW = 0, P_SINK = 1, P_COUNT = 2 };

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* init: copy the params into the state and check them. The harness has
 * already rounded is_int params and range-checked values set by the user;
 * a method still checks whatever it relies on. No heavy work here. */
static int window_init(void *state, const ab_params *p, const ab_shape *s)
{
    window_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "window: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    double w = p->v[P_WINDOW], sink = p->v[P_SINK];
    if (!(w >= 1 && w <= (1 << 20))) {
        ab_set_error(state, "window: window=%g outside [1, 2^20]", w);
        return AB_EINVAL;
    }
    if (!(sink >= 0 && sink <= 64)) {
        ab_set_error(state, "window: sink_blocks=%g outside [0, 64]", sink);
        return AB_EINVAL;
    }
    st->window = (int)w;
    st->sink_blocks = (int)sink;
    return AB_OK;
}

/* select: say which (query block, key block) pairs to compute, only through
 * the ab_layout_* builder calls. The harness preset block_q/block_k and
 * n_qblocks/n_kblocks in l; it sorts, dedups (overlaps are fine) and applies
 * the causal mask after we return. */
static int window_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const window_state *st = state;
    const int n = l->seq_len, bq = l->block_q, bk = l->block_k;
    const int w = (st->window + bk - 1) / bk; /* band width in key blocks, >= 1 */

    for (int qb = 0; qb < l->n_qblocks; qb++) {
        /* Key blocks holding this query block's first and last rows: with
         * block_q == block_k both equal qb (the diagonal block). */
        const int kfirst = (qb * bq) / bk;
        const int klast = (imin(n, (qb + 1) * bq) - 1) / bk;
        const int lo = imax(0, kfirst - w + 1);
        const int hi = l->causal ? klast : imin(l->n_kblocks - 1, klast + w - 1);
        /* Causal: no sink beyond the diagonal (it would keep nothing). */
        const int sinks = imin(st->sink_blocks, l->causal ? hi + 1 : l->n_kblocks);
        for (int h = 0; h < l->heads; h++) {
            int rc = ab_layout_add_block_range(l, h, qb, lo, hi + 1);
            if (rc == AB_OK && sinks > 0) rc = ab_layout_add_block_range(l, h, qb, 0, sinks);
            if (rc != AB_OK) return rc; /* AB_ENOMEM: the harness records "oom" */
        }
    }
    return ab_layout_set_cost(l, 0, 0); /* a static pattern: no selection work */
}

/* dselect (decode): one row per (layer, head), all alike: the pages
 * [last - w + 1, last] and [0, sink_blocks). Nothing read: cost 0. */
static int window_dselect(void *state, const ab_decode *dp, ab_layout *l)
{
    const window_state *st = state;
    const int bk = l->block_k, np = l->n_kblocks, last = np - 1;
    const int w = (st->window + bk - 1) / bk;
    const int lo = imax(0, last - w + 1), sinks = imin(st->sink_blocks, np);
    for (int r = 0; r < l->heads; r++) {
        int rc = ab_layout_add_block_range(l, r, 0, lo, last + 1);
        if (rc == AB_OK && sinks > 0) rc = ab_layout_add_block_range(l, r, 0, 0, sinks);
        if (rc != AB_OK) return rc;
    }
    return ab_layout_set_cost(l, 0, 0);
}

const ab_method ab_window = {
    .abi = AB_ABI_VERSION,   /* checked at start-up against the harness */
    .family = "static", /* figure colour: dense static block token hashing lowrank linear */
    .name = "window",        /* unique, [a-z0-9_]+: used in configs and HDF5 */
    .summary = "sliding window + sink blocks (A-shape / StreamingLLM), block granularity; decode: the newest window keys + sink pages",
    .reference = "StreamingLLM (Xiao et al. 2023, arXiv 2309.17453); MInference A-shape (arXiv 2407.02490)",
    .devices = AB_CPU | AB_GPU, /* where run() (or the shared kernel) can execute */
    .phases = AB_PREFILL | AB_DECODE, /* prefill (N queries) and/or decode */
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    /* Settable from configs as window.window=...; NULL name terminates. */
    .params = {
        [P_WINDOW] = { .name = "window", .def = 1024, .min = 1, .max = 1 << 20, .is_int = 1,
                       .help = "local band in tokens (rounded up to whole key blocks)" },
        [P_SINK] = { .name = "sink_blocks", .def = 1, .min = 0, .max = 64, .is_int = 1,
                     .help = "leading key blocks always kept (attention sinks)" },
        [P_COUNT] = { .name = NULL },
    },
    /* The param the harness bisects to hit a target density: a wider window
     * keeps more; log-scale bisection since useful values span decades. */
    .density_knob = { .param = P_WINDOW, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(window_state),
    .init = window_init,
    .select = window_select,
    .run = NULL,  /* NULL: ab_kernel_layout runs the layout (block-sparse) */
    .fini = NULL, /* nothing allocated, nothing to free */
    .dselect = window_dselect, /* decode: the band seen from the newest key, in pages */
};
AB_REGISTER(ab_window)
