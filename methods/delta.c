/* delta.c — `delta`: DELTA, dynamic layer-aware token attention for decoding
 * (Entezari Zarch, Gao, Jiang and Annavaram, "DELTA: Dynamic Layer-Aware
 * Token Attention for Efficient Long-Context Reasoning", arXiv 2510.09883;
 * official code github.com/hoenza/DELTA, read: DELTA/Engine/DELTA/model.py
 * (which layers plan and which read the subset), page_score.py (the page
 * score), page_selector.py and page_selector_v2.py (the selection),
 * backend.py (page size 16) and run_reason_accuracy_8gpu.sh (defaults)).
 *
 * The layers of the stack fall in three groups, per decode step:
 *   - initial layers [0, dense_layers) run full attention (default 2; the
 *     official 28-layer default full-cache list is 0 1 2 14 22);
 *   - Δ-layers (selection layers), here dense_layers + t * period for t >= 0
 *     (default period 10: 2, 12, 22 on 28 layers, next to the official 2, 14,
 *     22), run full attention and choose the cache pages the following
 *     layers read: a page's score is the sum over ALL query heads of the
 *     layer of the largest softmax probability the head gives a key in the
 *     page (page_score.py: max over the page's tokens, then sum over heads;
 *     "unified head selection": one page set for the whole layer, all heads
 *     and KV heads);
 *   - the sparse layers up to the next Δ-layer attend only to the chosen
 *     pages: the last ceil(recent / page) pages of the cache (the "stable
 *     recency window", official L = 8 pages of 16 = 128 tokens; at least the
 *     page of the newest key) plus the top k / page pages of the rest by
 *     score. The full cache stays resident; only the attended set shrinks.
 * The page is the layout's key block (block_k, native 16 as the official
 * backend's page_size), so the layout is BLOCK: dense rows keep every key
 * block, sparse rows their pages (the shared decode kernel runs it).
 * k, the budget outside the recency window, is in tokens (official
 * subset_cache_size - L pages, 64 - 8 = 56 pages = 896 tokens); the page
 * count k / page may be fractional and is dithered over the Δ-layers by the
 * golden-ratio sequence of methods/keep.h. When the cache has no more pages
 * than the budget, every page is kept (the official "take all" rows).
 *
 * In this harness one dselect() sees every layer's query of the step at
 * once (the generator correlates the layers' Q and K: "position
 * persistence"), so "select at a Δ-layer, reuse in the next layers" is
 * computed directly from that layer's scores; a real implementation selects
 * while running the model layer by layer, the scores being dumped by the
 * Δ-layer's own full-attention kernel. dselect() computes them itself and
 * states that work (ab_layout_set_cost).
 *
 * When the stack has no layer after the first Δ-layer (L <= dense_layers +
 * 1, e.g. L = 1), every layer is a full-attention layer: the layout is
 * DENSE and k has no effect (DELTA needs a layer stack).
 *
 * Deviations: Δ-layers every `period` layers instead of a hand-picked list;
 * ties break to the lower page as the official v2 selector's position bias
 * does (-1e-7 per page), exactly rather than by a bias; the recency window
 * always holds the newest key's page even with recent = 0.
 */
#include "attnbench.h"
#include "methods/keep.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { P_K = 0, P_DENSE, P_PERIOD, P_RECENT, P_COUNT };

typedef struct delta_state {
    double k;           /* tokens chosen outside the recency window */
    int dense_layers;   /* leading full-attention layers */
    int period;         /* layers from one Δ-layer to the next */
    int recent;         /* recency window in tokens (whole pages) */
    int L, H, kvh, cap; /* the stack init() saw */
    int nsel;           /* Δ-layers followed by a sparse layer (0: all dense) */
} delta_state;

typedef struct delta_item {
    float s;
    int32_t b;
} delta_item;

/* a ranks before b: larger score, then lower page (a total order) */
#define DELTA_BEFORE(x, y) ((x).s > (y).s || ((x).s == (y).s && (x).b < (y).b))
MC_DEFINE_SELECT_TOP(delta_select_top, delta_item, DELTA_BEFORE)

static int delta_init(void *state, const ab_params *p, const ab_shape *s)
{
    delta_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "delta: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    const double k = p->v[P_K], dl = p->v[P_DENSE], per = p->v[P_PERIOD], rc = p->v[P_RECENT];
    if (!(k >= 1 && k <= (1 << 24))) {
        ab_set_error(state, "delta: k=%g outside [1, 2^24]", k);
        return AB_EINVAL;
    }
    if (!(dl >= 0 && dl <= 4096) || !(per >= 1 && per <= 4096) || !(rc >= 0 && rc <= (1 << 24))) {
        ab_set_error(state,
                     "delta: dense_layers in [0, 4096], period in [1, 4096], recent in [0, 2^24] required");
        return AB_EINVAL;
    }
    if (s->phase != AB_DECODE) {
        ab_set_error(state, "delta: a decode method (phase AB_DECODE)");
        return AB_EUNSUPPORTED;
    }
    st->k = k;
    st->dense_layers = (int)dl;
    st->period = (int)per;
    st->recent = (int)rc;
    st->L = s->layers > 0 ? s->layers : 1;
    st->H = s->heads;
    st->kvh = s->kv_heads > 0 ? s->kv_heads : s->heads;
    st->cap = s->seq_len;
    if (st->H < 1 || st->kvh < 1 || st->H % st->kvh || s->seq_len < 1) {
        ab_set_error(state, "delta: bad shape (heads %d, kv_heads %d, capacity %d)", s->heads, s->kv_heads,
                     s->seq_len);
        return AB_EINVAL;
    }
    /* Δ-layers that some later layer reads from */
    st->nsel = 0; /* (period 1: every layer from dense_layers on is a Δ-layer, all dense) */
    for (int x = st->dense_layers; st->period > 1 && x + 1 < st->L; x += st->period) st->nsel++;
    return AB_OK;
}

/* Whether `layer` runs full attention: an initial layer or a Δ-layer. */
static int delta_dense_layer(const delta_state *st, int layer)
{
    return layer < st->dense_layers || (layer - st->dense_layers) % st->period == 0;
}

static int delta_dselect(void *state, const ab_decode *dp, ab_layout *l)
{
    const delta_state *st = state;
    if (dp->layers != st->L || dp->heads != st->H || dp->kv_heads != st->kvh || dp->len < 1 ||
        dp->len > dp->cap || dp->len > st->cap) {
        ab_set_error(state, "delta: step shape (L %d, H %d, kv %d, len %d) is not the one init() saw",
                     dp->layers, dp->heads, dp->kv_heads, dp->len);
        return AB_EINVAL;
    }
    if (st->nsel == 0) { /* every layer is a full-attention layer */
        const int rc = ab_layout_dense(l);
        return rc == AB_OK ? ab_layout_set_cost(l, 0, 0) : rc;
    }
    const int n = dp->len, d = dp->head_dim, H = st->H, nsel = st->nsel;
    const int bk = l->block_k, nb = l->n_kblocks; /* pages: key blocks, the last one maybe short */
    int win = (int)((st->recent + (int64_t)bk - 1) / bk);
    win = win < 1 ? 1 : (win > nb ? nb : win); /* the recency window, in pages */
    const int pre = nb - win;                  /* pages ranked by score: [0, pre) */
    /* per (Δ-layer, head) the page maxima of its softmax probabilities */
    float *pm = malloc(sizeof(float) * (size_t)nsel * H * nb);
    int32_t *sel = malloc(sizeof(int32_t) * (size_t)nsel * nb);
    int *nsl = malloc(sizeof(int) * (size_t)nsel);
    if (!pm || !sel || !nsl) {
        free(pm);
        free(sel);
        free(nsl);
        ab_set_error(state, "delta: out of memory");
        return AB_ENOMEM;
    }
    const size_t kvs = (size_t)dp->cap * d;
    int rc = AB_OK;
#pragma omp parallel
    {
        float *z = malloc(sizeof(float) * (size_t)n);
        delta_item *it = malloc(sizeof(delta_item) * (size_t)(nb > 0 ? nb : 1));
        const int ok = z && it;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
        /* scores: softmax of each head of each Δ-layer over the whole cache */
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < nsel * H; t++) {
            if (!ok) continue;
            const int i = t / H, h = t % H, layer = st->dense_layers + i * st->period;
            const float *q = dp->q + ((size_t)layer * H + h) * d;
            const float *kh = dp->k + ((size_t)layer * st->kvh + ab_kv_head(dp, h)) * kvs;
            float mx = -INFINITY;
            for (int j = 0; j < n; j++) {
                const float *kj = kh + (size_t)j * d;
                float s = 0;
#pragma omp simd reduction(+ : s)
                for (int c = 0; c < d; c++) s += q[c] * kj[c];
                z[j] = dp->scale * s;
                mx = z[j] > mx ? z[j] : mx;
            }
            const double sum = ab_exp_max_sum(z, n, mx);
            const float inv = sum > 0 ? (float)(1.0 / sum) : 0.0f;
            float *row = pm + (size_t)t * nb;
            for (int b = 0; b < nb; b++) {
                const int j1 = (b + 1) * bk < n ? (b + 1) * bk : n;
                float m = 0;
                for (int j = b * bk; j < j1; j++) m = z[j] > m ? z[j] : m;
                row[b] = m * inv;
            }
        }
        /* selection: per Δ-layer, the heads' page maxima summed, top pages of
         * the prefix, then the recency window */
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < nsel; i++) {
            if (!ok) continue;
            for (int b = 0; b < pre; b++) {
                float s = 0;
                for (int h = 0; h < H; h++) s += pm[((size_t)i * H + h) * nb + b];
                it[b] = (delta_item){ s, b };
            }
            int m = mc_dither(st->k / bk, i);
            m = m < pre ? m : pre;
            delta_select_top(it, pre, m);
            int32_t *out = sel + (size_t)i * nb;
            for (int u = 0; u < m; u++) out[u] = it[u].b;
            for (int b = pre; b < nb; b++) out[m + b - pre] = b;
            nsl[i] = m + win;
        }
        free(z);
        free(it);
    }
    /* one row per (layer, head): dense layers every key block, a sparse
     * layer the pages of the last Δ-layer before it (the same for all heads) */
    const int rows = st->L * H;
    if (rc == AB_OK) {
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) {
            const int layer = r / H;
            int e;
            if (delta_dense_layer(st, layer))
                e = ab_layout_add_block_range(l, r, 0, 0, nb);
            else {
                const int i = (layer - st->dense_layers) / st->period;
                e = ab_layout_add_blocks(l, r, 0, sel + (size_t)i * nb, nsl[i]);
            }
            if (e != AB_OK) {
#pragma omp atomic write
                rc = e;
            }
        }
    }
    free(pm);
    free(sel);
    free(nsl);
    if (rc == AB_ENOMEM) ab_set_error(state, "delta: out of memory");
    if (rc != AB_OK) return rc;
    /* logits 2d per (Δ-layer, head, key), softmax max, exp, sum and the page
     * max ~4 per key, the head sum 1 per (head, page), a linear top-k ~2 per
     * page. Bytes: Q of the Δ-layers and their K once, each logit written and
     * read back, the page maxima. */
    const double pairs = (double)nsel * H * n;
    const double flops = (2.0 * d + 4.0) * pairs + (double)nsel * H * nb + 2.0 * nsel * pre;
    const double bytes =
        4.0 * nsel * ((double)H * d + (double)st->kvh * n * d) + 8.0 * pairs + 8.0 * (double)nsel * H * nb;
    return ab_layout_set_cost(l, flops, bytes);
}

const ab_method ab_delta = {
    .abi = AB_ABI_VERSION,
    .family = "token",
    .name = "delta",
    .summary = "decode: dense first layers, Δ-layers every `period` layers pick pages by head-summed attention "
               "for the layers after them, plus a recency window",
    .reference = "DELTA (Entezari Zarch et al. 2025, arXiv 2510.09883; github.com/hoenza/DELTA)",
    .devices = AB_CPU,
    .phases = AB_DECODE,
    .block_k = 16, /* the official page size */
    .params = {
        [P_K] = { .name = "k", .def = 896, .min = 1, .max = 1 << 24, .is_int = 0,
                  .help = "tokens (whole pages) chosen by score outside the recency window (fractional: dithered)" },
        [P_DENSE] = { .name = "dense_layers", .def = 2, .min = 0, .max = 4096, .is_int = 1,
                      .help = "leading full-attention layers; the next layer is the first Δ-layer" },
        [P_PERIOD] = { .name = "period", .def = 10, .min = 1, .max = 4096, .is_int = 1,
                       .help = "layers from one Δ-layer (full attention, selects) to the next" },
        [P_RECENT] = { .name = "recent", .def = 128, .min = 0, .max = 1 << 24, .is_int = 1,
                       .help = "recency window in tokens, rounded up to whole pages (at least the newest page)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_K, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(delta_state),
    .init = delta_init,
    .layered = 1,
    .dselect = delta_dselect,
};
AB_REGISTER(ab_delta)
