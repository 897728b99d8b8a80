/* quest.c — `quest`: Quest's query-aware page selection for decode (Tang,
 * Zhao, Zhu, Xiao, Kasikci, Han, "Quest: Query-Aware Sparsity for Efficient
 * Long-Context LLM Inference", ICML 2024, arXiv 2406.10774; official code
 * mit-han-lab/Quest, of which quest/utils/controller.py (the page budget of
 * the CUDA path) and evaluation/quest_attention.py (the accuracy path:
 * bound, floor of 3 pages, dense first two layers) were read).
 *
 * The KV cache of each KV head is cut into pages of `page` keys (16). Each
 * page stores the channel-wise minimum and maximum of its keys. For this
 * step's query q, the largest logit any key of page p can reach is bounded by
 *   U(p) = sum_c max(q_c * min_c(p), q_c * max_c(p)),
 * and the query attends, exactly, to the pages with the largest bounds:
 *   - the page budget K = max(3, ceil(budget / page)) pages (`budget` in
 *     tokens, 1024 by default: 64 pages; the floor of 3 pages is the
 *     evaluation code's max(3, token_budget // chunk_size));
 *   - K counts the page holding the newest key (the cache's last page),
 *     which is always kept ("page budget including the last page",
 *     quest/utils/controller.py), so the top-(K - 1) of the other pages by U
 *     are chosen among all pages but the last;
 *   - K >= pages in the cache: every page (nothing is estimated).
 * Layout BLOCK, block_k = page (the decode layout's block_q = len is left
 * alone); the shared decode kernel runs the kept pages.
 *
 * State, incremental as in Quest: prepare() builds min/max for the first
 * dp->len keys (what a server computes while prefilling; timed apart);
 * every dselect() first folds the keys appended since into the pages they
 * land in (an update of one page per new key and KV head, timed with the
 * step). The metadata lives per KV head in blocks of QB = 64 pages, each
 * block (d, QB) contiguous (32 KiB at d = 128), so the bound pass streams a
 * block with its pages in the vector lanes (methods/vecf.h); the bounds of
 * every (KV head, block) are computed in parallel, so one head uses every
 * thread (the G query heads of a GQA group take turns on a block while it
 * is in cache, so the metadata is read from memory once per KV head), then
 * the top pages per row. (Per-channel (d, pages) arrays read d strided rows
 * per page block and ran 5% slower at 128K.) Measured at N = 128K, 8 heads,
 * d = 128, cold, float bounds on an AVX-512 Xeon: bounds 2.7 ms for 32 MiB
 * (the sign choice between the min and max arrays defeats the prefetcher:
 * about half the triad bandwidth), the top pages 0.6 ms, the attention over
 * 1/16 of the cache 4.5 ms.
 *
 * Bounds in bfloat16 (`bits` = 16, the default): each page's minimum is
 * stored rounded down and its maximum rounded up to bfloat16, so they still
 * bracket every key of the page and U(p) stays an upper bound (looser by
 * at most 2^-8 relative per channel); a row's bound pass then reads 2d
 * bytes per page, 1/64 of the page's K and V at fp32, instead of 4d (1/32).
 * At a 1/16 budget the step reads 0.0625 + 0.0156 of the cache rather than
 * 0.0625 + 0.0313 (Quest's own kernel reads both arrays in fp16 beside an
 * fp16 cache: 1/16 of it). `bits` = 32 keeps float bounds.
 *
 * The bound pass uses max(q_c a, q_c b) = q_c * (q_c >= 0 ? b : a) for
 * a <= b: per channel one of the two arrays is read, one multiply-add per
 * (page, channel); the evaluation code computes the bound the same way
 * (|q| against the page max of sign(q)-flipped keys). The selection is a quickselect (no full sort) with
 * ties to the lower page and a NaN bound ranked last.
 *
 * Stated cost per step (ab_layout_set_cost), with P = pages before the last,
 * R = query rows, A = keys appended, KV = KV heads (over layers):
 *   FLOPs: 2 d P R (bounds) + 2 P R (quickselect) + 2 d A KV (min and max);
 *   bytes, with e = bits / 8 bytes per bound and G = R / KV query heads per
 *   KV head: e d P KV min(G, 2) (per channel the array the sign of q_c
 *   picks; a group's rows may pick both; Quest's kernel reads both) +
 *   4 d R (queries) + 4 P R (bounds) + 4 d A KV (new keys) + 2 e d KV per
 *   touched page (its min and max rewritten).
 * Memory: 2 e d ceil(cap / page) bytes per KV head: 1/16 of K at page 16
 * and bits 16 (1/8 at bits 32).
 *
 * Deviations from the paper and the official code:
 *  - Quest keeps the first two layers dense; a non-layered decode problem
 *    has no layer index (layers are folded into heads), so every row is
 *    selected alike. A layered harness would need `layered = 1` and a
 *    per-layer rule; not done here.
 *  - GQA: each query head bounds the pages of the KV head it reads
 *    (ab_kv_head) with its own query and keeps its own pages, as the
 *    evaluation code does after repeat_kv (the CUDA path is MHA only).
 *  - The page count is ceil(budget / page), and the last page is forced and
 *    counted (the CUDA path's controller); the evaluation code takes
 *    floor(budget / page) pages by bound among all pages, the last
 *    included, without forcing it. The floor of 3 pages is the evaluation
 *    code's (the CUDA path has none).
 *  - bfloat16 bounds rounded outward by default (above; `bits` = 32 for
 *    float) on whatever fp32 keys the problem has (the paper's keys and
 *    bounds are post-RoPE fp16); ties go to the lower page (torch.topk:
 *    unspecified).
 */
#include "attnbench.h"
#include "methods/keep.h"
#include "methods/vecf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct quest_state {
    double budget; /* tokens per row, the last page included */
    int page;      /* keys per page */
    int rows;      /* query rows: layers * heads */
    int kvh;       /* KV heads over layers: layers * kv_heads */
    int d, cap;
    int pmax;   /* pages of a full cache */
    int pblk;   /* blocks of QB pages: ceil(pmax / QB) */
    int have;   /* keys folded into the metadata */
    int bits;   /* 16: bfloat16 bounds rounded outward; 32: float */
    void *mn;   /* (kvh, pblk, d, QB) channel minimum per page, QB pages in a row */
    void *mx;   /* (kvh, pblk, d, QB) channel maximum per page */
    float *tmp; /* (kvh, 2, d) one page's running min and max (update) */
    float *u;   /* (rows, pblk * QB) bounds of the last step */
} quest_state;

/* Pages per metadata block: a block holds the d channels of QB pages
 * contiguously (d * QB floats, 32 KiB at d = 128), so a bound pass streams
 * each block once instead of d strided rows. */
#define QB 64

/* The metadata index of (KV head g, channel c, page p). */
static inline size_t qidx(const quest_state *st, int g, int c, int p)
{
    return (((size_t)g * st->pblk + (size_t)(p / QB)) * st->d + (size_t)c) * QB + (size_t)(p % QB);
}

enum { P_BUDGET = 0, P_PAGE, P_BITS, P_COUNT };

/* bfloat16 with directed rounding: the bf16 value nearest x on the side
 * `up` asks for (up: the least bf16 >= x; else the greatest <= x). A bf16 is
 * the top half of a float's bits, so truncation rounds toward zero; one more
 * unit in the last place moves away from zero, which is up for a positive x
 * and down for a negative one. A page's minimum rounded down and maximum
 * rounded up still bracket every key of the page, so U(p) stays an upper
 * bound; the rounding is monotone, so folding keys in one at a time or all
 * at once stores the same bits. */
static inline uint16_t bf16_dir(float x, int up)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint16_t h = (uint16_t)(u >> 16);
    if ((u & 0xFFFFu) && (int)(u >> 31) != up) h++;
    return h;
}

static inline float bf16_f32(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* One bound of the metadata (arr: st->mn or st->mx) at index i, as a float;
 * and the store, rounded outward (down for mn, up for mx) in bfloat16. */
static inline float meta_get(const quest_state *st, const void *arr, size_t i)
{
    return st->bits == 16 ? bf16_f32(((const uint16_t *)arr)[i]) : ((const float *)arr)[i];
}

static inline void meta_put(const quest_state *st, void *arr, size_t i, float x)
{
    if (st->bits == 16)
        ((uint16_t *)arr)[i] = bf16_dir(x, arr == st->mx);
    else
        ((float *)arr)[i] = x;
}

/* a candidate page and its bound */
typedef struct qcand {
    float u;
    int32_t p;
} qcand;

/* a ranks before b: larger bound, then lower page (a total order) */
static inline int qc_before(qcand a, qcand b) { return a.u > b.u || (a.u == b.u && a.p < b.p); }
MC_DEFINE_SELECT_TOP(quest_top, qcand, qc_before)

static int quest_init(void *state, const ab_params *p, const ab_shape *s)
{
    quest_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "quest: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_BUDGET] >= 1 && p->v[P_BUDGET] <= (1 << 24))) {
        ab_set_error(state, "quest: budget=%g outside [1, 2^24]", p->v[P_BUDGET]);
        return AB_EINVAL;
    }
    if (!(p->v[P_PAGE] >= 1 && p->v[P_PAGE] <= 4096)) {
        ab_set_error(state, "quest: page=%g outside [1, 4096]", p->v[P_PAGE]);
        return AB_EINVAL;
    }
    const int layers = s->layers > 0 ? s->layers : 1;
    if (s->phase != AB_DECODE || s->kv_heads < 1 || s->heads < 1 || s->heads % s->kv_heads ||
        s->head_dim < 1 || s->seq_len < 1) {
        ab_set_error(state, "quest: decode only (heads %d, kv_heads %d, head_dim %d, capacity %d)", s->heads,
                     s->kv_heads, s->head_dim, s->seq_len);
        return AB_EINVAL;
    }
    if (p->v[P_BITS] != 16 && p->v[P_BITS] != 32) {
        ab_set_error(state, "quest: bits=%g: page bounds are stored in 16 (bfloat16) or 32 (float) bits",
                     p->v[P_BITS]);
        return AB_EINVAL;
    }
    st->budget = p->v[P_BUDGET];
    st->page = (int)p->v[P_PAGE];
    st->bits = (int)p->v[P_BITS];
    st->rows = layers * s->heads;
    st->kvh = layers * s->kv_heads;
    st->d = s->head_dim;
    st->cap = s->seq_len;
    st->pmax = (s->seq_len + st->page - 1) / st->page;
    st->pblk = (st->pmax + QB - 1) / QB;
    st->have = 0;
    const size_t n = (size_t)st->kvh * st->d * st->pblk * QB;
    const size_t es = st->bits / 8;
    st->mn = calloc(n, es); /* zeroed: a block's unused pages are computed, never read */
    st->mx = calloc(n, es);
    st->tmp = malloc((size_t)st->kvh * 2 * st->d * sizeof *st->tmp);
    st->u = malloc((size_t)st->rows * st->pblk * QB * sizeof *st->u);
    if (!st->mn || !st->mx || !st->tmp || !st->u) {
        ab_set_error(state, "quest: out of memory for page metadata (%zu values)", 2 * n);
        return AB_ENOMEM;
    }
    return AB_OK;
}

static void quest_fini(void *state)
{
    quest_state *st = state;
    free(st->mn);
    free(st->mx);
    free(st->tmp);
    free(st->u);
    st->mn = st->mx = st->tmp = st->u = NULL;
}

/* The decode view must match the shape init() allocated for. */
static int quest_check(quest_state *st, const ab_decode *dp)
{
    if (dp->layers * dp->heads != st->rows || dp->layers * dp->kv_heads != st->kvh || dp->head_dim != st->d ||
        dp->len < 1 || dp->len > st->cap || dp->cap < dp->len) {
        ab_set_error(
            st,
            "quest: decode view (rows %d, KV heads %d, d %d, len %d) does not match init (%d, %d, %d, "
            "capacity %d)",
            dp->layers * dp->heads, dp->layers * dp->kv_heads, dp->head_dim, dp->len, st->rows, st->kvh,
            st->d, st->cap);
        return AB_EINVAL;
    }
    return AB_OK;
}

/* Fold keys [from, to) of every KV head into their pages' min and max, one
 * page at a time: the page's running min/max in a contiguous scratch of 2d
 * floats (its old values when the page already holds keys), the keys folded
 * in channel order (vectorised), then one write of d values per array. */
static void quest_update(quest_state *st, const ab_decode *dp, int from, int to)
{
    const int d = st->d, P = st->page;
    const double work = (double)(to - from) * st->kvh * d;
#pragma omp parallel for schedule(static) if (work > 65536.0)
    for (int g = 0; g < st->kvh; g++) {
        const float *k = dp->k + (size_t)g * dp->cap * d;
        void *mn = st->mn, *mx = st->mx;
        float *a = st->tmp + (size_t)g * 2 * d, *b = a + d;
        for (int j0 = from; j0 < to;) {
            const int p = j0 / P, j1 = (p + 1) * P < to ? (p + 1) * P : to;
            int j = j0;
            if (j0 % P == 0) { /* the page opens here */
                memcpy(a, k + (size_t)j0 * d, sizeof(float) * d);
                memcpy(b, k + (size_t)j0 * d, sizeof(float) * d);
                j++;
            } else {
                for (int c = 0; c < d; c++) {
                    a[c] = meta_get(st, mn, qidx(st, g, c, p));
                    b[c] = meta_get(st, mx, qidx(st, g, c, p));
                }
            }
            for (; j < j1; j++) {
                const float *kj = k + (size_t)j * d;
#pragma omp simd
                for (int c = 0; c < d; c++) {
                    a[c] = kj[c] < a[c] ? kj[c] : a[c];
                    b[c] = kj[c] > b[c] ? kj[c] : b[c];
                }
            }
            for (int c = 0; c < d; c++) {
                meta_put(st, mn, qidx(st, g, c, p), a[c]);
                meta_put(st, mx, qidx(st, g, c, p), b[c]);
            }
            j0 = j1;
        }
    }
}

/* Bring the metadata to dp->len keys; returns the keys appended (for the
 * cost) and the pages they touched. A shorter cache than before is a new
 * sequence: rebuild. */
static void quest_sync(quest_state *st, const ab_decode *dp, int *appended, int *touched)
{
    if (dp->len < st->have) st->have = 0;
    const int from = st->have, to = dp->len;
    *appended = to - from;
    *touched = to > from ? (to - 1) / st->page - from / st->page + 1 : 0;
    if (to > from) quest_update(st, dp, from, to);
    st->have = to;
}

static int quest_prepare(void *state, const ab_decode *dp)
{
    quest_state *st = state;
    const int rc = quest_check(st, dp);
    if (rc != AB_OK) return rc;
    int a, t;
    st->have = 0;
    quest_sync(st, dp, &a, &t);
    return AB_OK;
}

/* U(p) for the QB pages of block blk of KV head g and query q, into u[0,
 * QB): per channel one multiply-add with the array the sign of q_c picks,
 * the block's pages in the lanes (QB / VW accumulators, every page of the
 * block at once, so a channel's QB bounds are read as one contiguous run);
 * the block is d * QB contiguous values per array. Which array a channel
 * reads depends on the sign of q_c, a pattern the hardware prefetcher
 * cannot follow, so the run PF channels ahead is prefetched in software. */
#define QNA (QB / VW) /* accumulators */
#define QPF 8         /* channels prefetched ahead */
static void quest_bounds(const quest_state *st, int g, int blk, const float *q, float *u)
{
    const int d = st->d;
    const size_t base = qidx(st, g, 0, blk * QB);
    vf a[QNA];
    for (int i = 0; i < QNA; i++) a[i] = v_splat(0.0f);
    if (st->bits == 16) {
        const uint16_t *mn = (const uint16_t *)st->mn + base, *mx = (const uint16_t *)st->mx + base;
        for (int c = 0; c < d; c++) {
            if (c + QPF < d) {
                const uint16_t *pf = (q[c + QPF] >= 0.0f ? mx : mn) + (size_t)(c + QPF) * QB;
                for (int o = 0; o < QB; o += 32) __builtin_prefetch(pf + o);
            }
            const uint16_t *src = (q[c] >= 0.0f ? mx : mn) + (size_t)c * QB;
            const vf qc = v_splat(q[c]);
            for (int i = 0; i < QNA; i++) a[i] = v_fma(qc, v_load_bf16(src + i * VW), a[i]);
        }
    } else {
        const float *mn = (const float *)st->mn + base, *mx = (const float *)st->mx + base;
        for (int c = 0; c < d; c++) {
            if (c + QPF < d) {
                const float *pf = (q[c + QPF] >= 0.0f ? mx : mn) + (size_t)(c + QPF) * QB;
                for (int o = 0; o < QB; o += 16) __builtin_prefetch(pf + o);
            }
            const float *src = (q[c] >= 0.0f ? mx : mn) + (size_t)c * QB;
            const vf qc = v_splat(q[c]);
            for (int i = 0; i < QNA; i++) a[i] = v_fma(qc, v_load(src + i * VW), a[i]);
        }
    }
    for (int i = 0; i < QNA; i++) v_store(u + i * VW, a[i]);
}

static int quest_dselect(void *state, const ab_decode *dp, ab_layout *l)
{
    quest_state *st = state;
    int rc = quest_check(st, dp);
    if (rc != AB_OK) return rc;
    if (l->heads != st->rows) {
        ab_set_error(state, "quest: layout has %d rows, expected %d", l->heads, st->rows);
        return AB_EINVAL;
    }
    int appended, touched;
    quest_sync(st, dp, &appended, &touched);
    rc = ab_layout_set_blocks(l, l->block_q, st->page);
    if (rc != AB_OK) return rc;

    const int d = st->d, H = dp->heads, rows = st->rows;
    const int np = (dp->len + st->page - 1) / st->page, last = np - 1;
    double K = ceil(st->budget / st->page);
    K = K < 3 ? 3 : K;
    const double update_flops = 2.0 * d * appended * st->kvh;
    const double es = st->bits / 8; /* bytes per stored bound */
    const double update_bytes = 4.0 * d * appended * st->kvh + 2.0 * es * d * st->kvh * touched;
    if (K >= np) { /* the budget covers the cache: every page, no estimate */
        for (int r = 0; r < rows && rc == AB_OK; r++) rc = ab_layout_add_block_range(l, r, 0, 0, np);
        return rc != AB_OK ? rc : ab_layout_set_cost(l, update_flops, update_bytes);
    }
    const int keep = (int)K - 1; /* pages chosen among the `last` pages before the last */
    const int nb = (last + QB - 1) / QB, ustride = st->pblk * QB;
    const int G = H / dp->kv_heads; /* query heads per KV head: rows g * G .. g * G + G - 1 */
    /* 1. bounds, every (KV head, block) in parallel, so a single head still
     * uses every thread; the G query heads of a KV head go over the block
     * one after the other while it is in cache (read from memory once) */
#pragma omp parallel for collapse(2) schedule(static) if ((double)rows * last * d > 32768.0)
    for (int g = 0; g < st->kvh; g++)
        for (int blk = 0; blk < nb; blk++)
            for (int r = g * G; r < (g + 1) * G; r++)
                quest_bounds(st, g, blk, dp->q + (size_t)r * d,
                             st->u + (size_t)r * ustride + (size_t)blk * QB);
                /* 2. the top pages per row */
#pragma omp parallel if ((double)rows * last > 8192.0)
    {
        qcand *cand = malloc((size_t)last * sizeof *cand);
        int32_t *pages = malloc(((size_t)keep + 1) * sizeof *pages);
        int ok = cand && pages;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            if (!ok) continue;
            const float *u = st->u + (size_t)r * ustride;
            for (int p = 0; p < last; p++) cand[p] = (qcand){ isnan(u[p]) ? -INFINITY : u[p], p };
            quest_top(cand, last, keep);
            for (int t = 0; t < keep; t++) pages[t] = cand[t].p;
            pages[keep] = last; /* the newest key's page: always kept */
            const int ra = ab_layout_add_blocks(l, r, 0, pages, keep + 1);
            if (ra != AB_OK) {
                ok = 0;
#pragma omp atomic write
                rc = ra;
            }
        }
        free(cand);
        free(pages);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "quest: out of memory");
    if (rc != AB_OK) return rc;
    const double PR = (double)last * rows, PKV = (double)last * st->kvh * (G < 2 ? G : 2);
    return ab_layout_set_cost(l, 2.0 * d * PR + 2.0 * PR + update_flops,
                              es * d * PKV + 4.0 * d * rows + 4.0 * PR + update_bytes);
}

const ab_method ab_quest = {
    .abi = AB_ABI_VERSION,
    .family = "block",
    .name = "quest",
    .summary = "Quest decode: per-page key min/max bound U = sum max(q*min, q*max), top pages within a token budget + the last page",
    .reference = "Quest (Tang et al. 2024, arXiv 2406.10774; mit-han-lab/Quest)",
    .devices = AB_CPU,
    .phases = AB_DECODE,
    .params = {
        [P_BUDGET] = { .name = "budget", .def = 1024, .min = 16, .max = 1 << 20, .is_int = 0,
                       .help = "tokens per query head, the last page included: max(3, ceil(budget/page)) pages" },
        [P_PAGE] = { .name = "page", .def = 16, .min = 1, .max = 4096, .is_int = 1,
                     .help = "keys per page (Quest: 16)" },
        [P_BITS] = { .name = "bits", .def = 16, .min = 16, .max = 32, .is_int = 1,
                     .help = "bits per stored page bound: 16 (bfloat16, min rounded down, max up) or 32 (float)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_BUDGET, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(quest_state),
    .init = quest_init,
    .fini = quest_fini,
    .prepare = quest_prepare,
    .dselect = quest_dselect,
};
AB_REGISTER(ab_quest)
