/* strided.c — `strided`: the strided pattern of the Sparse Transformer
 * (Child et al. 2019, "Generating Long Sequences with Sparse Transformers",
 * arXiv 1904.10509; openai/sparse_attention). Row i keeps
 *   A(1): the local window, keys j with i - l < j <= i, and
 *   A(2): every key with (i - j) mod s == 0 (the "stride" heads),
 * both heads' sets merged into one pattern (the paper's "merged" variant,
 * attention over A(1) ∪ A(2)). Non-causal: the window and the strided keys
 * extend on both sides.
 *
 * Child et al. use l = s ≈ sqrt(N). With l tied to s, density
 * (l / row length + 1 / s) is not monotone in the one knob (l = 1 keeps every
 * key), so the stride is fixed by `stride` (0 = round(sqrt(N)), the paper's
 * choice) and the density knob is the window l, fractional (dithered over
 * rows) and monotone.
 *
 * Granularity: the strided keys differ from row to row (residue i mod s), so
 * the layout uses query blocks of ONE row (ab_layout_set_blocks(l, 1, bk));
 * with larger query blocks the union over a block's rows would keep block_q
 * residues instead of one. The window is listed as whole key blocks plus
 * ragged-edge tokens (MIXED layout, exact per row). Memory: O(N (l / block_k
 * + block_k + N / s)) entries per head.
 *
 * run() computes the pattern, not the layout (ab_kernel_periodic,
 * kernels/cpu/periodic.c): the windows as 64-row tiles over contiguous
 * keys, the strided keys as each residue class's rows against the class's
 * keys. Timed calls (ABI 8) build no rows; scored calls build them for the
 * metrics and the check, which compares run() with the fp64 reference on
 * them.
 */
#include "attnbench.h"
#include "methods/keep.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct strided_state {
    double window; /* local window l in tokens (fractional: dithered) */
    int stride;    /* s; 0 = round(sqrt(N)) */
} strided_state;

enum { P_WINDOW = 0, P_STRIDE, P_COUNT };

static int imax(int a, int b) { return a > b ? a : b; }

static int strided_init(void *state, const ab_params *p, const ab_shape *s)
{
    strided_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "strided: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_WINDOW] >= 1 && p->v[P_WINDOW] <= (1 << 24))) {
        ab_set_error(state, "strided: window=%g outside [1, 2^24]", p->v[P_WINDOW]);
        return AB_EINVAL;
    }
    if (!(p->v[P_STRIDE] >= 0 && p->v[P_STRIDE] <= (1 << 24))) {
        ab_set_error(state, "strided: stride=%g outside [0, 2^24]", p->v[P_STRIDE]);
        return AB_EINVAL;
    }
    st->window = p->v[P_WINDOW];
    st->stride = (int)p->v[P_STRIDE];
    return AB_OK;
}

/* The stride for length n. */
static int strided_s(const strided_state *st, int n)
{
    return st->stride > 0 ? st->stride : imax(1, (int)lround(sqrt((double)n)));
}

static int strided_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const strided_state *st = state;
    const int n = l->seq_len;
    const int s = strided_s(st, n);
    int rc = ab_layout_set_blocks(l, 1, l->block_k); /* one query row per layout row */
    if (rc != AB_OK) return rc;
    if (pb->timed) return ab_layout_set_cost(l, 0, 0); /* run() reads no rows */
    int32_t *blk, *tok;
    if ((rc = mc_row_bufs(l, &blk, &tok))) return rc;
    for (int i = 0; i < n && rc == AB_OK; i++) {
        const int w = imax(1, mc_dither(st->window, i));
        const int lo = i - w + 1, hi = l->causal ? i + 1 : i + w; /* window [lo, hi) */
        int nb = 0, nt = 0;                                       /* the row is the same for every head */
        mc_span_collect(lo, hi, l->block_k, n, blk, &nb, tok, &nt);
        for (int j = i - s; j >= 0; j -= s) /* strided keys outside the window */
            if (j < lo) tok[nt++] = j;
        if (!l->causal)
            for (int j = i + s; j < n; j += s)
                if (j >= hi) tok[nt++] = j;
        for (int h = 0; h < l->heads && rc == AB_OK; h++) rc = mc_flush_row(l, h, i, blk, nb, tok, nt);
    }
    free(blk);
    free(tok);
    if (rc) return rc;
    return ab_layout_set_cost(l, 0, 0); /* a static pattern: no selection work */
}

/* run(): row i keeps the window W = [i - w + 1, i] (non-causal: up to
 * i + w - 1) and its residue class mod s, the class's keys outside W being
 * the strided ones (causal: those before i). */
typedef struct strided_ctx {
    const strided_state *st;
    int n, causal;
} strided_ctx;

static void strided_row(const void *ctx, int h, int i, ab_periodic_row *r)
{
    const strided_ctx *c = ctx;
    (void)h;
    const int w = imax(1, mc_dither(c->st->window, i));
    r->wlo = i - w + 1;
    r->whi = c->causal ? i + 1 : (int)(i + (int64_t)w < c->n ? i + w : c->n);
    r->slo = 0;
    r->shi = c->causal ? i + 1 : c->n;
}

static int strided_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    (void)l;
    const strided_ctx c = { state, pb->s.seq_len, pb->s.causal };
    int *period = malloc((size_t)(pb->s.heads > 0 ? pb->s.heads : 1) * sizeof *period);
    if (!period) return AB_ENOMEM;
    for (int h = 0; h < pb->s.heads; h++) period[h] = strided_s(state, pb->s.seq_len);
    const ab_periodic sp = { &c, strided_row, period };
    const int rc = ab_kernel_periodic(pb, &sp, out);
    free(period);
    return rc;
}

const ab_method ab_strided = {
    .abi = AB_ABI_VERSION,
    .family = "static",
    .name = "strided",
    .summary = "Sparse Transformer strided: local window l + every key at distance = 0 mod s (per row, mixed layout)",
    .reference = "Sparse Transformer (Child et al. 2019, arXiv 1904.10509)",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_WINDOW] = { .name = "window", .def = 128, .min = 1, .max = 1 << 24, .is_int = 0,
                       .help = "local window l, tokens (fractional: dithered over rows)" },
        [P_STRIDE] = { .name = "stride", .def = 0, .min = 0, .max = 1 << 24, .is_int = 1,
                       .help = "stride s of the strided keys; 0 = round(sqrt(N)) (Child et al.)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_WINDOW, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(strided_state),
    .init = strided_init,
    .select = strided_select,
    .run = strided_run,
    .fini = NULL,
};
AB_REGISTER(ab_strided)
