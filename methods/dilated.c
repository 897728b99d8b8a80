/* dilated.c — `dilated`: the dilated sliding window of Longformer (Beltagy
 * et al. 2020, "Longformer: The Long-Document Transformer",
 * arXiv 2004.05150; allenai/longformer). Head h has dilation
 * δ_h = 1 + (h mod max_dilation): row i keeps the w keys i - kδ_h,
 * k = 0 .. w-1 (causal), or w keys centred on i (i + kδ_h, |k| <= w/2,
 * non-causal; w counts the keys: Longformer's one-sided window w' keeps
 * k = 0 .. w' in its autoregressive mode, i.e. w = w' + 1), so heads with δ = 1 attend the local context and the others
 * reach δ times further with the same budget ("different dilation
 * configurations per head improves performance", §3.1). Optional global
 * tokens (Longformer's task-specific global attention): the first G keys
 * are kept by every row and rows i < G keep every key.
 *
 * Granularity: a dilated window differs from row to row (residue i mod δ),
 * so the layout uses query blocks of ONE row; with larger query blocks the
 * union over a block would fill in the gaps. δ = 1 heads list their window
 * as whole key blocks plus edge tokens, dilated heads as tokens (MIXED or
 * TOKEN layout, exact per row). Memory: O(H N w) entries, like the kept
 * pairs themselves (about 2 GB of builder entries at N = 16K, 8 heads,
 * density 10%).
 *
 * Density knob: w, fractional (dithered over rows), monotone.
 *
 * run() computes the pattern, not the layout (ab_kernel_periodic,
 * kernels/cpu/periodic.c): a δ = 1 head's windows as 64-row tiles over
 * contiguous keys, a dilated head's as each residue class mod δ's rows
 * against the class's keys (a sliding window in the class), the global
 * keys as the window part beside them. Timed
 * calls (ABI 8) build no rows; scored calls build them for the metrics and
 * the check, which compares run() with the fp64 reference on them.
 */
#include "attnbench.h"
#include "methods/keep.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct dilated_state {
    double window;    /* w: keys per row (fractional: dithered) */
    int max_dilation; /* heads cycle through dilations 1 .. max_dilation */
    int global;       /* G leading global tokens */
} dilated_state;

enum { P_WINDOW = 0, P_DIL, P_GLOBAL, P_COUNT };

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* Head h's dilation. */
static int dilated_delta(const dilated_state *st, int h) { return 1 + h % st->max_dilation; }

static int dilated_init(void *state, const ab_params *p, const ab_shape *s)
{
    dilated_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "dilated: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_WINDOW] >= 1 && p->v[P_WINDOW] <= (1 << 24)) || !(p->v[P_DIL] >= 1 && p->v[P_DIL] <= 4096) ||
        !(p->v[P_GLOBAL] >= 0 && p->v[P_GLOBAL] <= (1 << 24))) {
        ab_set_error(state,
                     "dilated: window in [1, 2^24], max_dilation in [1, 4096], global in [0, 2^24] required");
        return AB_EINVAL;
    }
    st->window = p->v[P_WINDOW];
    st->max_dilation = (int)p->v[P_DIL];
    st->global = (int)p->v[P_GLOBAL];
    return AB_OK;
}

static int dilated_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const dilated_state *st = state;
    const int n = l->seq_len, G = imin(st->global, n), bk = l->block_k;
    int rc = ab_layout_set_blocks(l, 1, l->block_k); /* one query row per layout row */
    if (rc != AB_OK) return rc;
    if (pb->timed) return ab_layout_set_cost(l, 0, 0); /* run() reads no rows */
    int32_t *blk, *tok;
    if ((rc = mc_row_bufs(l, &blk, &tok))) return rc;
    for (int i = 0; i < n && rc == AB_OK; i++) {
        const int w = imax(1, mc_dither(st->window, i));
        const int left = l->causal ? w - 1 : (w - 1) - (w - 1) / 2; /* steps back */
        const int right = l->causal ? 0 : (w - 1) / 2;              /* steps forward */
        for (int h = 0; h < l->heads && rc == AB_OK; h++) {
            const int dl = dilated_delta(st, h);
            int nb = 0, nt = 0;
            if (i < G) { /* a global row keeps every key */
                mc_span_collect(0, l->causal ? i + 1 : n, bk, n, blk, &nb, tok, &nt);
            } else {
                if (G > 0) mc_span_collect(0, G, bk, n, blk, &nb, tok, &nt);
                if (dl == 1) {
                    mc_span_collect(i - left, i + right + 1, bk, n, blk, &nb, tok, &nt);
                } else {
                    const int j0 = i - imin(left, i / dl) * dl; /* lowest key i - k dl >= 0 */
                    const int j1 = (int)(i + (int64_t)imin(right, (n - 1 - i) / dl) * dl);
                    for (int j = j0; j <= j1; j += dl)
                        if (j >= G) tok[nt++] = j;
                }
            }
            rc = mc_flush_row(l, h, i, blk, nb, tok, nt);
        }
    }
    free(blk);
    free(tok);
    if (rc) return rc;
    return ab_layout_set_cost(l, 0, 0); /* a static pattern: no selection work */
}

/* run(): rows i < G keep W = every key; the others keep W = the G global
 * keys and S = their dilated window, i - left δ .. i + right δ in i's class
 * mod δ (a δ = 1 head without global keys: W = the window, S empty). */
typedef struct dilated_ctx {
    const dilated_state *st;
    int n, causal;
} dilated_ctx;

static void dilated_row(const void *ctx, int h, int i, ab_periodic_row *r)
{
    const dilated_ctx *c = ctx;
    const int n = c->n, G = imin(c->st->global, n), dl = dilated_delta(c->st, h);
    const int w = imax(1, mc_dither(c->st->window, i));
    const int left = c->causal ? w - 1 : (w - 1) - (w - 1) / 2, right = c->causal ? 0 : (w - 1) / 2;
    const int64_t lo = i - (int64_t)left * dl, hi = i + (int64_t)right * dl + 1;
    const int clo = (int)(lo > 0 ? lo : 0), chi = (int)(hi < n ? hi : n);
    r->slo = r->shi = 0;
    if (i < G) {
        r->wlo = 0;
        r->whi = c->causal ? i + 1 : n;
    } else if (dl == 1 && G == 0) {
        r->wlo = clo;
        r->whi = chi;
    } else {
        r->wlo = 0;
        r->whi = G;
        r->slo = clo;
        r->shi = chi;
    }
}

static int dilated_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    (void)l;
    const dilated_state *st = state;
    const dilated_ctx c = { st, pb->s.seq_len, pb->s.causal };
    int *period = malloc((size_t)(pb->s.heads > 0 ? pb->s.heads : 1) * sizeof *period);
    if (!period) return AB_ENOMEM;
    for (int h = 0; h < pb->s.heads; h++) {
        const int dl = dilated_delta(st, h);
        period[h] = dl > 1 ? dl : st->global > 0 ? 1 : 0;
    }
    const ab_periodic sp = { &c, dilated_row, period };
    const int rc = ab_kernel_periodic(pb, &sp, out);
    free(period);
    return rc;
}

const ab_method ab_dilated = {
    .abi = AB_ABI_VERSION,
    .family = "static",
    .name = "dilated",
    .summary = "Longformer dilated sliding window: w keys at stride 1 + (h mod max_dilation) per head, + G global tokens",
    .reference = "Longformer (Beltagy et al. 2020, arXiv 2004.05150)",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_WINDOW] = { .name = "window", .def = 256, .min = 1, .max = 1 << 24, .is_int = 0,
                       .help = "w: keys per row (fractional: dithered over rows)" },
        [P_DIL] = { .name = "max_dilation", .def = 4, .min = 1, .max = 4096, .is_int = 1,
                    .help = "head h uses dilation 1 + (h mod max_dilation); 1 = plain sliding window" },
        [P_GLOBAL] = { .name = "global", .def = 0, .min = 0, .max = 1 << 24, .is_int = 1,
                       .help = "G: leading global tokens (kept by all rows; they keep all keys)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_WINDOW, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(dilated_state),
    .init = dilated_init,
    .select = dilated_select,
    .run = dilated_run,
    .fini = NULL,
};
AB_REGISTER(ab_dilated)
