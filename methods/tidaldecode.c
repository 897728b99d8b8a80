/* tidaldecode.c — `tidaldecode`: position persistent sparse attention for
 * decoding (TidalDecode: Yang, Zhang, Chen, Li and Jia, "TidalDecode: Fast
 * and Accurate LLM Decoding with Position Persistent Sparse Attention",
 * arXiv 2410.05076; official code github.com/DerrickYLJ/TidalDecode, read:
 * src/tidal_build/modify_llama.py, tidal/models/TDAttention.py,
 * tidal/utils/controller.py and the qk_product output of
 * kernels/include/decode/decode_attn.cuh).
 *
 * The method, per decode step, over the layer stack (ab_method.layered):
 *   - layers [0, dense_layers) run full attention (default 2, as the
 *     paper's sparse_layer_start = 2);
 *   - the token selection layer s = dense_layers runs full attention and
 *     keeps, per query head, the k - 1 cache positions of largest logit
 *     q.k (the top-k of the softmax, which is monotone in the logit) among
 *     all but the newest key, plus the newest key: the official budget
 *     counts the newest key (TDAttention: top-(td_token_budget - 1) over
 *     kv_indices_without_last, the last page always read);
 *   - every later layer attends, per head, only to the positions its head
 *     selected (position persistence: the same positions in another layer's
 *     cache, read through that layer's own K and V);
 *   - the re-selection layer r (`reselect_layer`; the paper's correction
 *     layer, 13 of 32 for Llama-3-8B; here by default the middle of the
 *     stack, round(L/2)) again runs full attention and selects anew from its
 *     own scores for the layers after it. 0 = no re-selection; a value not in
 *     (s, L) means none either.
 * Selection layers run dense (they computed full scores). The budget k may
 * be fractional: each (selection layer, head) keeps floor(k) or floor(k)+1
 * keys by the golden-ratio dither of methods/keep.h, so density moves
 * smoothly with k.
 *
 * GQA. The official code selects per query head, not per KV head: the HF
 * path repeats K per query head (repeat_kv) before top-k over the last axis,
 * and the CUDA path writes qk_product per qo head ([num_qo_heads, kv_len])
 * and runs topk on it per qo head, the sparse decode kernel then fetching
 * per-qo-head key pointers. That is the default here (gqa_share = 0).
 * gqa_share = 1 is our variant: one list per KV head for its whole query
 * group, ranked by the sum over the group of the softmax probabilities
 * (a key's summed attention mass; logits of different heads are not on one
 * scale, probabilities are), so a group reads one key set.
 *
 * In this harness one dselect() sees every layer's query of the step at
 * once (the generator correlates layers' Q and K: "position persistence"),
 * so "select at layer s, reuse in later layers" is computed directly from
 * layer s's scores; a real implementation selects while running the model
 * layer by layer, with the selection scores coming out of layer s's own
 * full-attention kernel. Here dselect() computes those logits itself and
 * states that work (ab_layout_set_cost): 2d FLOPs per (selection layer,
 * head, key), the top-k about 2 per candidate.
 *
 * Layout: per (layer, head) row, dense rows as the whole key-block range
 * and sparse rows as token lists (a MIXED layout; the shared decode kernel
 * runs it). When the stack has no layer after the selection layer (L <=
 * dense_layers + 1, e.g. L = 1), every layer is a full-attention layer by
 * the method's own definition: the layout is DENSE and k has no effect (a
 * sweep then reports the point as not calibratable, honestly: TidalDecode
 * needs a layer stack). We do not turn layer 0 into a self-selecting
 * oracle.
 *
 * Deviations: the paper's KV-cache correction (re-computing the K/V of
 * tokens decoded sparsely) does not apply: the harness's cache is given.
 * The default re-selection layer is round(L/2) (the paper tunes it per
 * model). gqa_share = 1 is not in the paper. Selection ties break to the
 * lower position (torch.topk leaves them unspecified).
 */
#include "attnbench.h"
#include "methods/keep.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { P_K = 0, P_DENSE, P_RESEL, P_SHARE, P_COUNT };

#define TD_MAX_SEL 2 /* the selection layer and the re-selection layer */

typedef struct td_state {
    double k;         /* keys per (selection layer, head), the newest included */
    int dense_layers; /* leading full-attention layers */
    int L, H, kvh;    /* the stack init() saw */
    int cap;          /* the cache's capacity */
    int share;        /* 1: one list per KV group (our variant) */
    int nsel;         /* selection layers (0: the whole stack is dense) */
    int sel_layer[TD_MAX_SEL];
    int kcap;       /* room per list: min(cap, ceil(k) + 1) */
    int32_t *lists; /* [nsel * H * kcap] selected positions */
    int *nlist;     /* [nsel * H] their counts */
} td_state;

typedef struct td_item {
    float s;
    int32_t j;
} td_item;

/* a ranks before b: larger score, then lower position (a total order) */
#define TD_BEFORE(a, b) ((a).s > (b).s || ((a).s == (b).s && (a).j < (b).j))
MC_DEFINE_SELECT_TOP(td_select_top, td_item, TD_BEFORE)

static int td_init(void *state, const ab_params *p, const ab_shape *s)
{
    td_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "tidaldecode: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    const double k = p->v[P_K], dl = p->v[P_DENSE], rs = p->v[P_RESEL], sh = p->v[P_SHARE];
    if (!(k >= 1 && k <= (1 << 24))) {
        ab_set_error(state, "tidaldecode: k=%g outside [1, 2^24]", k);
        return AB_EINVAL;
    }
    if (!(dl >= 0 && dl <= 4096) || !(rs >= -1 && rs <= 4096) || !(sh == 0 || sh == 1)) {
        ab_set_error(state, "tidaldecode: dense_layers in [0, 4096], reselect_layer in [-1, 4096], "
                            "gqa_share 0 or 1 required");
        return AB_EINVAL;
    }
    if (s->phase != AB_DECODE) {
        ab_set_error(state, "tidaldecode: a decode method (phase AB_DECODE)");
        return AB_EUNSUPPORTED;
    }
    st->k = k;
    st->dense_layers = (int)dl;
    st->share = (int)sh;
    st->L = s->layers > 0 ? s->layers : 1;
    st->H = s->heads;
    st->kvh = s->kv_heads > 0 ? s->kv_heads : s->heads;
    st->cap = s->seq_len;
    if (st->H < 1 || st->kvh < 1 || st->H % st->kvh || s->seq_len < 1) {
        ab_set_error(state, "tidaldecode: bad shape (heads %d, kv_heads %d, capacity %d)", s->heads,
                     s->kv_heads, s->seq_len);
        return AB_EINVAL;
    }
    /* the selection layers */
    st->nsel = 0;
    if (st->dense_layers < st->L) st->sel_layer[st->nsel++] = st->dense_layers;
    const int r = rs < 0 ? (st->L + 1) / 2 : (int)rs; /* round(L/2), halves up */
    if (st->nsel == 1 && r > st->dense_layers && r < st->L) st->sel_layer[st->nsel++] = r;
    if (st->nsel == 1 && st->dense_layers + 1 >= st->L) st->nsel = 0; /* nothing after it: all dense */
    const double kc = ceil(k) + 1;
    st->kcap = kc < s->seq_len ? (int)kc : s->seq_len;
    if (st->nsel > 0) {
        st->lists = malloc(sizeof(int32_t) * (size_t)st->nsel * st->H * st->kcap);
        st->nlist = calloc((size_t)st->nsel * st->H, sizeof(int));
        if (!st->lists || !st->nlist) {
            ab_set_error(state, "tidaldecode: out of memory");
            return AB_ENOMEM;
        }
    }
    return AB_OK;
}

static void td_fini(void *state)
{
    td_state *st = state;
    free(st->lists);
    free(st->nlist);
    st->lists = NULL;
    st->nlist = NULL;
}

/* z[j] = scale * q . k_j for j < n (k rows of d floats) */
static void td_logits(const float *q, const float *k, int n, int d, float scale, float *z)
{
    for (int j = 0; j < n; j++) {
        const float *kj = k + (size_t)j * d;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < d; c++) s += q[c] * kj[c];
        z[j] = scale * s;
    }
}

/* The index of the selection layer whose list `layer` reads, or -1 when the
 * layer runs dense (before the first selection layer, or a selection layer). */
static int td_source(const td_state *st, int layer)
{
    int src = -1;
    for (int i = 0; i < st->nsel; i++) {
        if (layer == st->sel_layer[i]) return -1;
        if (layer > st->sel_layer[i]) src = i;
    }
    return src;
}

static int td_dselect(void *state, const ab_decode *dp, ab_layout *l)
{
    td_state *st = state;
    if (dp->layers != st->L || dp->heads != st->H || dp->kv_heads != st->kvh || dp->len < 1 ||
        dp->len > dp->cap || dp->len > st->cap) {
        ab_set_error(state, "tidaldecode: step shape (L %d, H %d, kv %d, len %d) is not the one init() saw",
                     dp->layers, dp->heads, dp->kv_heads, dp->len);
        return AB_EINVAL;
    }
    if (st->nsel == 0) { /* every layer is a full-attention layer */
        const int rc = ab_layout_dense(l);
        return rc == AB_OK ? ab_layout_set_cost(l, 0, 0) : rc;
    }
    const int n = dp->len, d = dp->head_dim, H = st->H, G = H / st->kvh;
    const int per = st->share ? st->kvh : H; /* lists computed per selection layer */
    const int tasks = st->nsel * per;
    const size_t kvs = (size_t)dp->cap * d;
    int rc = AB_OK;
#pragma omp parallel
    {
        float *z = malloc(sizeof(float) * (size_t)n);
        float *acc = st->share ? malloc(sizeof(float) * (size_t)n) : NULL;
        td_item *it = malloc(sizeof(td_item) * (size_t)n);
        const int ok = z && it && (acc || !st->share);
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < tasks; t++) {
            if (!ok) continue;
            const int i = t / per, g = t % per, layer = st->sel_layer[i];
            int kd = mc_dither(st->k, t); /* this list's budget, the newest key included */
            kd = kd < 1 ? 1 : kd;
            const int m = kd - 1 < n - 1 ? kd - 1 : n - 1; /* picked among keys [0, n - 1) */
            if (!st->share) {
                const int kv = ab_kv_head(dp, g);
                td_logits(dp->q + ((size_t)layer * H + g) * d, dp->k + ((size_t)layer * st->kvh + kv) * kvs,
                          n - 1, d, dp->scale, z);
                for (int j = 0; j < n - 1; j++) it[j] = (td_item){ z[j], j };
            } else {
                /* the group's summed softmax probabilities over all n keys */
                for (int j = 0; j < n; j++) acc[j] = 0;
                for (int a = 0; a < G; a++) {
                    const int h = g * G + a;
                    td_logits(dp->q + ((size_t)layer * H + h) * d,
                              dp->k + ((size_t)layer * st->kvh + g) * kvs, n, d, dp->scale, z);
                    float mx = -INFINITY;
                    for (int j = 0; j < n; j++) mx = z[j] > mx ? z[j] : mx;
                    const double sum = ab_exp_max_sum(z, n, mx);
                    const float inv = sum > 0 ? (float)(1.0 / sum) : 0.0f;
                    for (int j = 0; j < n; j++) acc[j] += z[j] * inv;
                }
                for (int j = 0; j < n - 1; j++) it[j] = (td_item){ acc[j], j };
            }
            td_select_top(it, n - 1, m);
            const int slot = i * H + (st->share ? g * G : g);
            int32_t *out = st->lists + (size_t)slot * st->kcap;
            for (int u = 0; u < m; u++) out[u] = it[u].j;
            out[m] = n - 1; /* always the newest key */
            st->nlist[slot] = m + 1;
            for (int a = 1; st->share && a < G; a++) { /* the group's other heads read the same list */
                memcpy(out + (size_t)a * st->kcap, out, sizeof(int32_t) * (size_t)(m + 1));
                st->nlist[slot + a] = m + 1;
            }
        }
        free(z);
        free(acc);
        free(it);
    }
    if (rc != AB_OK) {
        ab_set_error(state, "tidaldecode: out of memory");
        return rc;
    }
    /* one row per (layer, head): dense rows as every key block, the others
     * as the list their head's selection layer chose */
    const int rows = st->L * H;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const int layer = r / H, h = r % H, src = td_source(st, layer);
        const int e = src < 0 ? ab_layout_add_block_range(l, r, 0, 0, l->n_kblocks)
                              : ab_layout_add_tokens(l, r, 0, st->lists + ((size_t)src * H + h) * st->kcap,
                                                     st->nlist[src * H + h]);
        if (e != AB_OK) {
#pragma omp atomic write
            rc = e;
        }
    }
    if (rc != AB_OK) return rc;
    /* logits 2d per (selection layer, scored head, key), a linear top-k ~2
     * per candidate; gqa_share adds max, exp, sum and the accumulate (~4 per
     * key and head). Bytes: Q of the scored heads and K of the selection
     * layers once, each logit written and read back. */
    const double pairs = (double)st->nsel * H * n;
    const double flops = (2.0 * d + (st->share ? 4.0 : 0.0)) * pairs + 2.0 * st->nsel * per * n;
    const double bytes = 4.0 * st->nsel * ((double)H * d + (double)st->kvh * n * d) + 8.0 * pairs;
    return ab_layout_set_cost(l, flops, bytes);
}

const ab_method ab_tidaldecode = {
    .abi = AB_ABI_VERSION,
    .family = "token",
    .name = "tidaldecode",
    .summary = "decode: dense first layers, top-k positions chosen at a selection layer (and a re-selection "
               "layer) reused by every later layer",
    .reference = "TidalDecode (Yang et al. 2024, arXiv 2410.05076; github.com/DerrickYLJ/TidalDecode)",
    .devices = AB_CPU,
    .phases = AB_DECODE,
    .params = {
        [P_K] = { .name = "k", .def = 256, .min = 1, .max = 1 << 24, .is_int = 0,
                  .help = "keys per head kept by the sparse layers, the newest included (fractional: dithered)" },
        [P_DENSE] = { .name = "dense_layers", .def = 2, .min = 0, .max = 4096, .is_int = 1,
                      .help = "leading full-attention layers; the next layer selects" },
        [P_RESEL] = { .name = "reselect_layer", .def = -1, .min = -1, .max = 4096, .is_int = 1,
                      .help = "layer that selects anew (-1: round(L/2); 0 or not after the selection layer: none)" },
        [P_SHARE] = { .name = "gqa_share", .def = 0, .min = 0, .max = 1, .is_int = 1,
                      .help = "0: a list per query head (official); 1: one per KV group by summed probabilities" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_K, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(td_state),
    .init = td_init,
    .fini = td_fini,
    .layered = 1,
    .dselect = td_dselect,
};
AB_REGISTER(ab_tidaldecode)
