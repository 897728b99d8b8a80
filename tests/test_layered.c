/* test_layered.c — the layer-reuse decode methods (ab_method.layered:
 * methods/tidaldecode.c, methods/delta.c) on crafted layer stacks:
 *  - rows of the layers before and at a selection layer are dense;
 *  - later layers read the positions their selection layer chose: heavy keys
 *    planted at the same positions across layers are in them, the lists
 *    repeat from layer to layer, a re-selection layer changes them;
 *  - per-row budgets are as designed (k keys with the newest one; DELTA's
 *    top pages plus the recency window, one set for all heads of a layer);
 *  - the selection matches a re-derivation in double precision (TidalDecode:
 *    per-head top logits; DELTA: pages by the head-summed page max of the
 *    softmax probabilities);
 *  - a stack too short to have a sparse layer decodes dense;
 *  - the decode kernel's output on these layouts matches the fp64 reference
 *    over the same keys (tests/test_decode.c runs L = 3, where both methods
 *    are still all dense with their defaults).
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "runtime/layout.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"

static double gauss(uint64_t *s)
{
    const double u = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53,
                 w = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * w);
}

/* A stack: L layers, H query heads, kv KV heads, d, capacity cap; S steps of
 * queries (S, L, H, d). */
typedef struct stack {
    int L, H, kv, d, cap, S;
    float *q, *k, *v;
} stack;

static void stack_make(stack *p, int L, int H, int kv, int d, int cap, int S, uint64_t seed)
{
    *p = (stack){ L, H, kv, d, cap, S, NULL, NULL, NULL };
    const size_t nq = (size_t)S * L * H * d, nk = (size_t)L * kv * cap * d;
    p->q = malloc(nq * sizeof(float));
    p->k = malloc(nk * sizeof(float));
    p->v = malloc(nk * sizeof(float));
    cr_assert(p->q && p->k && p->v);
    uint64_t s = seed;
    for (size_t i = 0; i < nk; i++) {
        p->k[i] = (float)gauss(&s);
        p->v[i] = (float)gauss(&s);
    }
    /* every query leans along the all-ones direction, so keys pushed along
     * it ("heavy") draw attention in every head */
    for (size_t i = 0; i < nq; i++) p->q[i] = (float)gauss(&s) + 0.5f;
}

/* Push the key at `pos` along all-ones in layers [l0, l1), every KV head. */
static void plant(stack *p, int l0, int l1, int pos, float amount)
{
    for (int l = l0; l < l1; l++)
        for (int h = 0; h < p->kv; h++)
            for (int c = 0; c < p->d; c++)
                p->k[(((size_t)l * p->kv + h) * p->cap + pos) * p->d + c] += amount;
}

static void stack_free(stack *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
}

static ab_decode view(const stack *p, int s, int len)
{
    ab_decode dp = { 0 };
    dp.layers = p->L;
    dp.heads = p->H;
    dp.kv_heads = p->kv;
    dp.head_dim = p->d;
    dp.scale = 1.0f / sqrtf((float)p->d);
    dp.len = len;
    dp.cap = p->cap;
    dp.step = s;
    dp.q = p->q + (size_t)s * p->L * p->H * p->d;
    dp.k = p->k;
    dp.v = p->v;
    dp.seed = 7;
    dp.threads = 2;
    return dp;
}

/* A method instance over stack p with its defaults and the given
 * "name=value" overrides (NULL-terminated). */
static void make_instance(ab_instance *in, const char *method, const stack *p, const char *const *set)
{
    const ab_method *m = ab_method_find(method);
    cr_assert(m, "method %s is not registered", method);
    cr_assert(m->layered && (m->phases & AB_DECODE));
    ab_params prm;
    ab_params_defaults(m->params, AB_MAX_PARAMS, &prm);
    for (int i = 0; set && set[i]; i++) {
        char name[64];
        double v;
        cr_assert_eq(sscanf(set[i], "%63[^=]=%lf", name, &v), 2);
        cr_assert_eq(ab_params_set(m->params, AB_MAX_PARAMS, &prm, name, v), 0, "%s: %s", method, set[i]);
    }
    ab_shape s = { 0 };
    s.heads = p->H;
    s.kv_heads = p->kv;
    s.layers = p->L;
    s.seq_len = p->cap;
    s.head_dim = p->d;
    s.causal = 1;
    s.scale = 1.0f / sqrtf((float)p->d);
    s.phase = AB_DECODE;
    cr_assert_eq(ab_instance_create(in, m, &prm, &s), AB_OK, "%s init: %s", method, ab_instance_error(in));
}

/* dselect -> finalize -> validate into l */
static void step_layout(ab_instance *in, const ab_decode *dp, ab_layout *l)
{
    ab_layout_init_decode(l, dp, in->m->block_k);
    cr_assert_eq(ab_instance_dselect(in, dp, l), AB_OK, "%s dselect: %s", in->m->name, ab_instance_error(in));
    cr_assert(isfinite(l->select_flops) && isfinite(l->select_bytes), "%s states no cost", in->m->name);
    cr_assert_eq(ab_layout_finalize(l), AB_OK);
    char err[200];
    cr_assert_eq(ab_layout_validate(l, err, sizeof err), AB_OK, "%s: %s", in->m->name, err);
}

/* The keys row r keeps: mark[j] = 1; returns their count. */
static int row_keys(const ab_layout *l, int r, int len, char *mark)
{
    memset(mark, 0, (size_t)len);
    if (l->kind == AB_LAYOUT_DENSE) {
        memset(mark, 1, (size_t)len);
        return len;
    }
    if (l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_MIXED)
        for (int64_t t = l->blk_ptr[r]; t < l->blk_ptr[r + 1]; t++)
            for (int j = l->blk_idx[t] * l->block_k; j < (l->blk_idx[t] + 1) * l->block_k && j < len; j++)
                mark[j] = 1;
    if (l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED)
        for (int64_t t = l->tok_ptr[r]; t < l->tok_ptr[r + 1]; t++) mark[l->tok_idx[t]] = 1;
    int c = 0;
    for (int j = 0; j < len; j++) c += mark[j];
    return c;
}

/* The decode kernel on l against the fp64 reference over l's keys. */
static void expect_kernel_matches(const ab_decode *dp, const ab_layout *l, const char *what)
{
    const int rows = dp->layers * dp->heads, d = dp->head_dim;
    float *out = malloc(sizeof(float) * (size_t)rows * d);
    double *ref = malloc(sizeof(double) * (size_t)d);
    cr_assert(out && ref);
    cr_assert_eq(ab_kernel_decode(dp, l, out, AB_DECODE_AUTO, 0), AB_OK);
    for (int r = 0; r < rows; r++) {
        ab_ref_decode_row(dp, r, l, ref, NULL, NULL);
        double e = 0, nn = 0;
        for (int c = 0; c < d; c++) {
            e += (out[(size_t)r * d + c] - ref[c]) * (out[(size_t)r * d + c] - ref[c]);
            nn += ref[c] * ref[c];
        }
        cr_expect(sqrt(e) <= 2e-5 * (sqrt(nn) > 1e-12 ? sqrt(nn) : 1e-12), "%s row %d: rel err %.3g", what, r,
                  sqrt(e / nn));
    }
    free(out);
    free(ref);
}

/* double-precision logits of (layer, head) over keys [0, n) */
static void logits64(const ab_decode *dp, int layer, int h, int n, double *z)
{
    const int d = dp->head_dim;
    const float *q = dp->q + ((size_t)layer * dp->heads + h) * d;
    const float *k = dp->k + ((size_t)layer * dp->kv_heads + ab_kv_head(dp, h)) * dp->cap * d;
    for (int j = 0; j < n; j++) {
        double s = 0;
        for (int c = 0; c < d; c++) s += (double)q[c] * k[(size_t)j * d + c];
        z[j] = s * dp->scale;
    }
}

/* the m-th largest of x[0, n) (1-based), by sorting a copy */
static int cmp_desc(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}
static double kth_largest(const double *x, int n, int m, double *tmp)
{
    memcpy(tmp, x, sizeof(double) * (size_t)n);
    qsort(tmp, (size_t)n, sizeof(double), cmp_desc);
    return tmp[m - 1];
}

/* ---- TidalDecode -------------------------------------------------------- */

Test(layered, tidaldecode_dense_then_persistent_positions)
{
    const int L = 6, H = 4, kv = 2, d = 32, n = 600, S = 3, K = 40;
    stack p;
    stack_make(&p, L, H, kv, d, n + S, S, 11);
    const int heavy[] = { 17, 123, 250, 251, 400, 577 };
    for (int t = 0; t < 6; t++) plant(&p, 0, L, heavy[t], 3.0f);
    ab_instance in;
    const char *set[] = { "k=40", "reselect_layer=0", NULL };
    make_instance(&in, "tidaldecode", &p, set);
    char *mark = malloc((size_t)n + S), *first = malloc((size_t)n + S);
    cr_assert(mark && first);
    for (int s = 0; s < S; s++) {
        const int len = n + s + 1;
        ab_decode dp = view(&p, s, len);
        ab_layout l;
        step_layout(&in, &dp, &l);
        cr_expect_eq(l.kind, AB_LAYOUT_MIXED, "dense rows as blocks, sparse rows as tokens");
        for (int h = 0; h < H; h++)
            for (int layer = 0; layer < L; layer++) {
                const int r = layer * H + h, c = row_keys(&l, r, len, mark);
                if (layer <= 2) { /* dense layers 0, 1 and the selection layer 2 */
                    cr_expect_eq(c, len, "step %d layer %d head %d: %d of %d keys, want dense", s, layer, h,
                                 c, len);
                    continue;
                }
                cr_expect_eq(c, K, "step %d layer %d head %d: %d keys, want k = %d", s, layer, h, c, K);
                cr_expect(mark[len - 1], "step %d layer %d head %d: the newest key is missing", s, layer, h);
                for (int t = 0; t < 6; t++)
                    cr_expect(mark[heavy[t]], "step %d layer %d head %d: heavy key %d not reused", s, layer,
                              h, heavy[t]);
                if (layer == 3)
                    memcpy(first, mark, (size_t)len);
                else
                    cr_expect(memcmp(first, mark, (size_t)len) == 0,
                              "step %d head %d: layer %d differs from layer 3", s, h, layer);
            }
        /* per-layer density as designed: 3 dense layers, 3 of K keys */
        const double want = (3.0 * len + 3.0 * K) / (6.0 * len);
        cr_expect(fabs(ab_layout_density(&l) - want) < 1e-12, "density %.6f, want %.6f",
                  ab_layout_density(&l), want);
        expect_kernel_matches(&dp, &l, "tidaldecode");
        ab_layout_free(&l);
    }
    free(mark);
    free(first);
    ab_instance_destroy(&in);
    stack_free(&p);
}

/* Per head, the selection is the top k - 1 logits of the selection layer
 * (among all but the newest key) plus the newest key: re-derived in double. */
Test(layered, tidaldecode_selection_is_the_per_head_top_k)
{
    const int L = 4, H = 4, kv = 2, d = 16, n = 300, K = 25;
    stack p;
    stack_make(&p, L, H, kv, d, n, 1, 5);
    ab_instance in;
    const char *set[] = { "k=25", NULL };
    make_instance(&in, "tidaldecode", &p, set);
    ab_decode dp = view(&p, 0, n);
    ab_layout l;
    step_layout(&in, &dp, &l);
    double *z = malloc(sizeof(double) * n), *tmp = malloc(sizeof(double) * n);
    char *mark = malloc(n);
    cr_assert(z && tmp && mark);
    for (int h = 0; h < H; h++) {
        logits64(&dp, 2, h, n - 1, z);
        const double th = kth_largest(z, n - 1, K - 1, tmp), next = kth_largest(z, n - 1, K, tmp);
        cr_expect_eq(row_keys(&l, 3 * H + h, n, mark), K);
        if (th - next < 1e-5) continue; /* a near tie: fp32 may order it either way */
        for (int j = 0; j < n - 1; j++)
            cr_expect_eq(mark[j], z[j] >= th, "head %d key %d: logit %.6f, threshold %.6f", h, j, z[j], th);
    }
    free(z);
    free(tmp);
    free(mark);
    ab_layout_free(&l);
    ab_instance_destroy(&in);
    stack_free(&p);
}

Test(layered, tidaldecode_reselection_layer_selects_anew)
{
    const int L = 6, H = 2, kv = 1, d = 32, n = 500;
    stack p;
    stack_make(&p, L, H, kv, d, n, 1, 21);
    const int a[] = { 10, 90, 300 }, b[] = { 50, 200, 420 };
    for (int t = 0; t < 3; t++) {
        plant(&p, 0, 4, a[t], 3.0f); /* heavy up to layer 3 */
        plant(&p, 4, L, b[t], 3.0f); /* heavy from layer 4 on */
    }
    ab_instance in;
    const char *set[] = { "k=20", "reselect_layer=4", NULL };
    make_instance(&in, "tidaldecode", &p, set);
    ab_decode dp = view(&p, 0, n);
    ab_layout l;
    step_layout(&in, &dp, &l);
    char *mark = malloc(n);
    cr_assert(mark);
    for (int h = 0; h < H; h++) {
        cr_expect_eq(row_keys(&l, 4 * H + h, n, mark), n, "the re-selection layer runs dense");
        row_keys(&l, 3 * H + h, n, mark); /* chosen at layer 2 */
        int nb = 0;
        for (int t = 0; t < 3; t++) {
            cr_expect(mark[a[t]], "head %d layer 3: key %d (heavy at layer 2) missing", h, a[t]);
            nb += mark[b[t]];
        }
        cr_expect(nb < 3, "head %d layer 3 holds the later layers' heavy keys", h);
        for (int layer = 5; layer < L; layer++) {
            row_keys(&l, layer * H + h, n, mark); /* chosen at layer 4 */
            for (int t = 0; t < 3; t++)
                cr_expect(mark[b[t]], "head %d layer %d: key %d (heavy at layer 4) missing", h, layer, b[t]);
        }
    }
    free(mark);
    ab_layout_free(&l);
    ab_instance_destroy(&in);
    stack_free(&p);
}

/* The default re-selection layer is round(L/2): L = 8, layers 0-2 and 4
 * dense, 3 and 5-7 sparse. */
Test(layered, tidaldecode_default_reselection_in_the_middle)
{
    const int L = 8, H = 2, kv = 2, d = 16, n = 200;
    stack p;
    stack_make(&p, L, H, kv, d, n, 1, 3);
    ab_instance in;
    const char *set[] = { "k=10", NULL };
    make_instance(&in, "tidaldecode", &p, set);
    ab_decode dp = view(&p, 0, n);
    ab_layout l;
    step_layout(&in, &dp, &l);
    char *mark = malloc(n);
    cr_assert(mark);
    const int dense[] = { 1, 1, 1, 0, 1, 0, 0, 0 };
    for (int layer = 0; layer < L; layer++)
        for (int h = 0; h < H; h++)
            cr_expect_eq(row_keys(&l, layer * H + h, n, mark), dense[layer] ? n : 10, "layer %d head %d",
                         layer, h);
    free(mark);
    ab_layout_free(&l);
    ab_instance_destroy(&in);
    stack_free(&p);
}

/* gqa_share = 1: the heads of a KV group read one list; 0 (official): each
 * head its own. */
Test(layered, tidaldecode_gqa_share)
{
    const int L = 4, H = 4, kv = 2, d = 16, n = 256;
    stack p;
    stack_make(&p, L, H, kv, d, n, 1, 9);
    char *m0 = malloc(n), *m1 = malloc(n);
    cr_assert(m0 && m1);
    for (int share = 0; share <= 1; share++) {
        ab_instance in;
        const char *set[] = { "k=30", share ? "gqa_share=1" : "gqa_share=0", NULL };
        make_instance(&in, "tidaldecode", &p, set);
        ab_decode dp = view(&p, 0, n);
        ab_layout l;
        step_layout(&in, &dp, &l);
        int differ = 0;
        for (int g = 0; g < kv; g++) {
            row_keys(&l, 3 * H + 2 * g, n, m0);
            row_keys(&l, 3 * H + 2 * g + 1, n, m1);
            differ += memcmp(m0, m1, n) != 0;
        }
        if (share)
            cr_expect_eq(differ, 0, "gqa_share=1: heads of a group read different keys");
        else
            cr_expect_gt(differ, 0, "gqa_share=0: random heads of a group chose the same keys");
        ab_layout_free(&l);
        ab_instance_destroy(&in);
    }
    free(m0);
    free(m1);
    stack_free(&p);
}

/* No layer after the selection layer: the whole stack is dense (L = 1, and
 * L = 3 with the default 2 dense layers); L = 4 is not. */
Test(layered, short_stacks_decode_dense)
{
    const char *methods[] = { "tidaldecode", "delta" };
    const int Ls[] = { 1, 3, 4 };
    for (int mi = 0; mi < 2; mi++)
        for (int li = 0; li < 3; li++) {
            stack p;
            stack_make(&p, Ls[li], 2, 1, 16, 300, 1, 4);
            ab_instance in;
            const char *set[] = { "k=8", NULL };
            make_instance(&in, methods[mi], &p, set);
            ab_decode dp = view(&p, 0, 300);
            ab_layout l;
            step_layout(&in, &dp, &l);
            if (Ls[li] < 4)
                cr_expect_eq(l.kind, AB_LAYOUT_DENSE, "%s L=%d: %s", methods[mi], Ls[li],
                             ab_layout_kind_name(l.kind));
            else
                cr_expect(ab_layout_density(&l) < 1, "%s L=4: density %g", methods[mi],
                          ab_layout_density(&l));
            ab_layout_free(&l);
            ab_instance_destroy(&in);
            stack_free(&p);
        }
}

/* ---- DELTA --------------------------------------------------------------- */

Test(layered, delta_delta_layers_pages_and_recency_window)
{
    /* 7 layers: dense 0, 1; Δ-layers 2 and 5 (period 3); sparse 3, 4 and 6.
     * len 1000: 63 pages of 16, the last one 8 keys. k = 160: 10 pages by
     * score; recent = 64: the last 4 pages. */
    const int L = 7, H = 4, kv = 2, d = 32, n = 1000, bk = 16;
    stack p;
    stack_make(&p, L, H, kv, d, n, 1, 31);
    const int heavy[] = { 5, 300, 301, 640, 900 }; /* pages 0, 18, 40, 56 */
    for (int t = 0; t < 5; t++) plant(&p, 0, L, heavy[t], 3.0f);
    ab_instance in;
    const char *set[] = { "k=160", "recent=64", "period=3", NULL };
    make_instance(&in, "delta", &p, set);
    ab_decode dp = view(&p, 0, n);
    ab_layout l;
    step_layout(&in, &dp, &l);
    cr_expect_eq(l.kind, AB_LAYOUT_BLOCK);
    cr_expect_eq(l.block_k, bk, "the page is the native key block");
    char *mark = malloc(n), *ref = malloc(n);
    cr_assert(mark && ref);
    for (int layer = 0; layer < L; layer++)
        for (int h = 0; h < H; h++) {
            const int r = layer * H + h, c = row_keys(&l, r, n, mark);
            if (layer < 3 || layer == 5) {
                cr_expect_eq(c, n, "layer %d head %d: %d keys, want dense", layer, h, c);
                continue;
            }
            /* 10 full pages by score, then pages 59-62 (3 full and 8 keys) */
            cr_expect_eq(c, 10 * bk + 3 * bk + 8, "layer %d head %d: %d keys", layer, h, c);
            for (int j = 59 * bk; j < n; j++)
                cr_expect(mark[j], "layer %d: recency window key %d missing", layer, j);
            for (int t = 0; t < 5; t++)
                cr_expect(mark[heavy[t]], "layer %d head %d: heavy key %d's page not chosen", layer, h,
                          heavy[t]);
            /* one set for all heads of the layer, and layer 4 reads layer 3's */
            if (layer == 3 && h == 0) memcpy(ref, mark, n);
            if (layer == 3 || layer == 4)
                cr_expect(memcmp(ref, mark, n) == 0, "layer %d head %d reads another set than layer 3 head 0",
                          layer, h);
        }
    const double want = (4.0 * n + 3.0 * (13 * bk + 8)) / (7.0 * n);
    cr_expect(fabs(ab_layout_density(&l) - want) < 1e-12, "density %.6f, want %.6f", ab_layout_density(&l),
              want);
    expect_kernel_matches(&dp, &l, "delta");
    free(mark);
    free(ref);
    ab_layout_free(&l);
    ab_instance_destroy(&in);
    stack_free(&p);
}

/* The pages a Δ-layer chooses are those of largest sum over all heads of the
 * page max of the head's softmax probabilities, re-derived in double. */
Test(layered, delta_pages_by_head_summed_page_max)
{
    const int L = 4, H = 4, kv = 2, d = 16, n = 333, bk = 16, nb = (n + bk - 1) / bk, win = 2, m = 6;
    stack p;
    stack_make(&p, L, H, kv, d, n, 1, 8);
    ab_instance in;
    const char *set[] = { "k=96", "recent=32", NULL }; /* 6 pages by score, the last 2 pages */
    make_instance(&in, "delta", &p, set);
    ab_decode dp = view(&p, 0, n);
    ab_layout l;
    step_layout(&in, &dp, &l);
    double *z = malloc(sizeof(double) * n), *score = calloc(nb, sizeof(double)),
           *tmp = malloc(sizeof(double) * nb);
    char *mark = malloc(n);
    cr_assert(z && score && tmp && mark);
    for (int h = 0; h < H; h++) {
        logits64(&dp, 2, h, n, z);
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < n; j++) mx = z[j] > mx ? z[j] : mx;
        for (int j = 0; j < n; j++) sum += exp(z[j] - mx);
        for (int b = 0; b < nb; b++) {
            double pm = 0;
            for (int j = b * bk; j < (b + 1) * bk && j < n; j++) pm = fmax(pm, exp(z[j] - mx) / sum);
            score[b] += pm;
        }
    }
    const int pre = nb - win;
    const double th = kth_largest(score, pre, m, tmp), next = kth_largest(score, pre, m + 1, tmp);
    cr_assert(th - next > 1e-6 * th, "a near tie in the crafted draw: pick another seed");
    for (int h = 0; h < H; h++) {
        cr_expect_eq(row_keys(&l, 3 * H + h, n, mark), (m + win - 1) * bk + (n - (nb - 1) * bk));
        for (int b = 0; b < pre; b++)
            cr_expect_eq(mark[b * bk], score[b] >= th, "head %d page %d: score %.6g, threshold %.6g", h, b,
                         score[b], th);
    }
    free(z);
    free(score);
    free(tmp);
    free(mark);
    ab_layout_free(&l);
    ab_instance_destroy(&in);
    stack_free(&p);
}

/* The cache not longer than the budget: every page kept (official "take all"). */
Test(layered, delta_small_cache_keeps_everything)
{
    stack p;
    stack_make(&p, 4, 2, 1, 16, 100, 1, 2);
    ab_instance in;
    make_instance(&in, "delta", &p, NULL); /* k = 896 tokens > 100 */
    ab_decode dp = view(&p, 0, 100);
    ab_layout l;
    step_layout(&in, &dp, &l);
    cr_expect(fabs(ab_layout_density(&l) - 1.0) < 1e-12, "density %g", ab_layout_density(&l));
    ab_layout_free(&l);
    ab_instance_destroy(&in);
    stack_free(&p);
}
