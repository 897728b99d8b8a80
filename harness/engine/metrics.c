/* metrics.c — mass recall (MInference's "attention recall"), top-k recall,
 * output error against the fp64 reference, and the Wilson interval.
 * See docs/spec/TASKS.md §4. Rows are processed one at a time; nothing is N×N.
 * Every metric ranges over the keys the base mask allows (ab_shape_mask of
 * the problem's shape): the dense top-k is chosen among them and a kept key
 * the mask forbids counts for nothing. */
#include "harness/engine/metrics.h"
#include "harness/store/point.h"
#include "runtime/layout.h"
#include "runtime/plugin.h" /* ab_answer_score */
#include "datasets/gen/rng.h"
#include "kernels/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int ab_choose_rows(int n, int exact_max_n, const int *must, int n_must, int sample, uint64_t seed, int *rows)
{
    if (n <= exact_max_n) {
        for (int i = 0; i < n; i++) rows[i] = i;
        return n;
    }
    /* The task's rows, plus `sample` rows drawn without replacement by the
     * seeded counter-based generator (the same rows for any thread count). */
    unsigned char *used = calloc((size_t)n, 1);
    int want = sample < n ? sample : n;
    int *draw = malloc(sizeof(int) * (size_t)(want ? want : 1));
    ab_rng r = { seed, ab_rng_stream_id("scored_rows") };
    if (!used || !draw || ab_rng_sample_rows(r, 0, 0, n, want, draw) != AB_OK) {
        free(used);
        free(draw);
        return -1;
    }
    int cnt = 0;
    for (int i = 0; i < n_must; i++)
        if (must[i] >= 0 && must[i] < n && !used[must[i]]) {
            used[must[i]] = 1;
            rows[cnt++] = must[i];
        }
    for (int i = 0; i < want; i++)
        if (!used[draw[i]]) {
            used[draw[i]] = 1;
            rows[cnt++] = draw[i];
        }
    free(draw);
    free(used);
    qsort(rows, (size_t)cnt, sizeof *rows, cmp_int);
    return cnt;
}

/* Partial selection: move the k largest of v[0..n) (with their indices) to
 * the front, in any order. Quickselect, O(n) expected. */
static void select_topk(double *v, int32_t *ix, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        double pivot = v[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                double tv = v[i];
                v[i] = v[j];
                v[j] = tv;
                int32_t ti = ix[i];
                ix[i] = ix[j];
                ix[j] = ti;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
}

/* The top r->topk of nk candidate keys (logits lg, indices ix, reordered)
 * into dst[0, r->topk), -1 where there are fewer. */
static void store_topk(const ab_refset *r, double *lg, int32_t *ix, int nk, int32_t *dst)
{
    const int kk = r->topk < nk ? r->topk : nk;
    select_topk(lg, ix, nk, kk);
    for (int c = 0; c < r->topk; c++) dst[c] = c < kk ? ix[c] : -1;
}

/* The per-(head, row) arrays of r (heads, n_rows, d, topk set): 0, or -1
 * when the allocator is out of room. */
static int refset_arrays(ab_refset *r, ab_alloc_fn alloc, void *actx)
{
    const size_t hr = (size_t)r->heads * r->n_rows;
    r->out = alloc(actx, sizeof(double) * hr * r->d);
    r->rmax = alloc(actx, sizeof(double) * hr);
    r->rsum = alloc(actx, sizeof(double) * hr);
    r->topk_idx = alloc(actx, sizeof(int32_t) * hr * (size_t)r->topk);
    return r->out && r->rmax && r->rsum && r->topk_idx ? 0 : -1;
}

int ab_refset_build(ab_refset *r, const ab_problem *pb, const int *rows, int n_rows, int topk,
                    ab_alloc_fn alloc, void *actx)
{
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    memset(r, 0, sizeof *r);
    r->heads = H;
    r->d = d;
    r->n_rows = n_rows;
    r->topk = topk < N ? topk : N;
    r->rows = alloc(actx, sizeof(int) * (size_t)n_rows);
    if (!r->rows || refset_arrays(r, alloc, actx)) return AB_ENOMEM;
    memcpy(r->rows, rows, sizeof(int) * (size_t)n_rows);
    int rc = AB_OK;
    for (int h = 0; h < H && rc == AB_OK; h++)
        rc = ab_ref_rows(pb, h, rows, n_rows, NULL, r->out + (size_t)h * n_rows * d,
                         r->rmax + (size_t)h * n_rows, r->rsum + (size_t)h * n_rows);
    if (rc) return rc;
    const ab_mask mask = ab_shape_mask(&pb->s);
    int err = 0;
#pragma omp parallel
    {
        double *lg = malloc(sizeof(double) * (size_t)N);
        int32_t *ix = malloc(sizeof(int32_t) * (size_t)N);
        if (!lg || !ix) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < n_rows; t++) {
                if (!lg || !ix) continue;
                int i = rows[t];
                /* candidates: the keys the base mask lets row i see */
                int lo, hi, nk = 0;
                ab_mask_span(&mask, i, &lo, &hi);
                const float *q = pb->q + ((size_t)h * N + i) * d;
                for (int j = lo; j < hi; j++) {
                    if (!mask.def->interval && !ab_mask_allows(&mask, i, j)) continue;
                    const float *k = pb->k + ((size_t)h * N + j) * d;
                    double s = 0;
                    for (int c = 0; c < d; c++) s += (double)q[c] * (double)k[c];
                    lg[nk] = s * pb->s.scale;
                    ix[nk++] = j;
                }
                store_topk(r, lg, ix, nk, r->topk_idx + ((size_t)h * n_rows + t) * (size_t)r->topk);
            }
        free(lg);
        free(ix);
    }
    return err ? AB_ENOMEM : AB_OK;
}

int ab_refset_build_decode(ab_refset *r, const ab_decode *dp, int n, int steps, int topk, ab_alloc_fn alloc,
                           void *actx)
{
    const int H = dp->heads, d = dp->head_dim, N = n + steps;
    memset(r, 0, sizeof *r);
    r->heads = H;
    r->d = d;
    r->n_rows = steps;
    r->topk = topk < n + 1 ? topk : n + 1;
    r->rows = alloc(actx, sizeof(int) * (size_t)steps);
    if (!r->rows || refset_arrays(r, alloc, actx)) return AB_ENOMEM;
    for (int s = 0; s < steps; s++) r->rows[s] = n + s;
    int err = 0;
#pragma omp parallel
    {
        double *lg = malloc(sizeof(double) * (size_t)N);
        int32_t *ix = malloc(sizeof(int32_t) * (size_t)N);
        if (!lg || !ix) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int s = 0; s < steps; s++)
            for (int h = 0; h < H; h++) {
                if (!lg || !ix) continue;
                ab_decode v = *dp;
                v.len = n + s + 1;
                v.step = s;
                v.q = dp->q + (size_t)s * H * d;
                const size_t o = (size_t)h * steps + s;
                ab_ref_decode_row(&v, h, NULL, r->out + o * d, r->rmax + o, r->rsum + o);
                const float *q = v.q + (size_t)h * d, *k = dp->k + (size_t)ab_kv_head(dp, h) * dp->cap * d;
                for (int j = 0; j < v.len; j++) {
                    double x = 0;
                    for (int c = 0; c < d; c++) x += (double)q[c] * k[(size_t)j * d + c];
                    lg[j] = x * dp->scale;
                    ix[j] = j;
                }
                store_topk(r, lg, ix, v.len, r->topk_idx + o * (size_t)r->topk);
            }
        free(lg);
        free(ix);
    }
    return err ? AB_ENOMEM : AB_OK;
}

/* Sum over the keys row i of head h keeps, among those the base mask
 * allows, of exp(logit - m). */
static double kept_mass(const ab_problem *pb, const ab_layout *l, const ab_mask *mask, int h, int i, double m)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim;
    const float *q = pb->q + ((size_t)h * N + i) * d;
    int lo, hi; /* the mask's span of row i: keys outside it are never allowed */
    ab_mask_span(mask, i, &lo, &hi);
    const int exact = mask->def->interval; /* span exact: no per-key test */
    double acc = 0;
#define ADD_KEY(j)                                                           \
    do {                                                                     \
        const float *k_ = pb->k + ((size_t)h * N + (j)) * d;                 \
        double s_ = 0;                                                       \
        for (int c_ = 0; c_ < d; c_++) s_ += (double)q[c_] * (double)k_[c_]; \
        acc += exp(s_ * pb->s.scale - m);                                    \
    } while (0)
    size_t row = (size_t)h * l->n_qblocks + (size_t)(i / l->block_q);
    if (l->blk_ptr)
        for (int64_t e = l->blk_ptr[row]; e < l->blk_ptr[row + 1]; e++) {
            int j0 = l->blk_idx[e] * l->block_k, j1 = j0 + l->block_k; /* [j0, j1) */
            if (j0 < lo) j0 = lo;
            if (j1 > hi) j1 = hi;
            for (int j = j0; j < j1; j++)
                if (exact || ab_mask_allows(mask, i, j)) ADD_KEY(j);
        }
    if (l->tok_ptr)
        for (int64_t e = l->tok_ptr[row]; e < l->tok_ptr[row + 1]; e++) {
            const int j = l->tok_idx[e];
            if (j >= lo && j < hi && (exact || ab_mask_allows(mask, i, j))) ADD_KEY(j);
        }
#undef ADD_KEY
    return acc;
}

/* The k-th largest of a[0, n) (1 <= k <= n), by quickselect; a is permuted. */
static double kth_largest(double *a, int n, int k)
{
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        const double p = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > p) i++;
            while (a[j] < p) j--;
            if (i <= j) {
                const double t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return a[want];
    }
    return a[want];
}

/* Effective recall of a CUSTOM method (ABI 6) on row i of head h: rank the
 * allowed keys by the method's implied weights w, keep the top k =
 * max(1, round(density x allowed keys)) (ties in key order), and return the
 * exact attention mass on them (*mass) and the share of the dense top-k keys
 * among them (*topk). -1 when the method gives no weights. */
static int effective_recall(const ab_refset *r, const ab_problem *pb, const ab_layout *l,
                            const ab_instance *in, const ab_mask *mask, int h, int ri, double *mass,
                            double *topk)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, i = r->rows[ri];
    double *w = malloc((size_t)N * 2 * sizeof *w);
    unsigned char *keep = calloc((size_t)N, 1);
    if (!w || !keep || ab_instance_weights(in, pb, l, h, i, w) != AB_OK) {
        free(w);
        free(keep);
        return -1;
    }
    double *tmp = w + N;
    int lo, hi, na = 0;
    ab_mask_span(mask, i, &lo, &hi);
    for (int j = lo; j < hi; j++)
        if (ab_mask_allows(mask, i, j)) tmp[na++] = isfinite(w[j]) && w[j] > 0 ? w[j] : 0;
    double m_ = 0, z = r->rsum[(size_t)h * r->n_rows + ri], acc = 0;
    if (na > 0) {
        long k = lround(l->custom_density * na);
        k = k < 1 ? 1 : (k > na ? na : k);
        const double t = kth_largest(tmp, na, (int)k);
        long above = 0;
        for (int j = lo; j < hi; j++)
            if (ab_mask_allows(mask, i, j) && w[j] > t) above++;
        long ties = k - above; /* keys at the threshold, taken in key order */
        const float *q = pb->q + ((size_t)h * N + i) * d;
        m_ = r->rmax[(size_t)h * r->n_rows + ri];
        for (int j = lo; j < hi; j++) {
            if (!ab_mask_allows(mask, i, j)) continue;
            const double wj = isfinite(w[j]) && w[j] > 0 ? w[j] : 0;
            if (!(wj > t || (wj == t && ties > 0))) continue;
            if (!(wj > t)) ties--;
            keep[j] = 1;
            const float *kj = pb->k + ((size_t)h * N + j) * d;
            double s_ = 0;
            for (int c = 0; c < d; c++) s_ += (double)q[c] * (double)kj[c];
            acc += exp(s_ * pb->s.scale - m_);
        }
    }
    *mass = z > 0 ? acc / z : 0;
    const int32_t *tk = r->topk_idx + ((size_t)h * r->n_rows + ri) * (size_t)r->topk;
    int hit = 0, cnt = 0;
    for (int c = 0; c < r->topk; c++) {
        if (tk[c] < 0) continue;
        cnt++;
        hit += keep[tk[c]];
    }
    *topk = cnt ? (double)hit / cnt : 1.0;
    free(w);
    free(keep);
    return 0;
}

int ab_score(const ab_refset *r, const ab_problem *pb, const ab_layout *l, const float *out, ab_scores *s)
{
    return ab_score_in(r, pb, l, NULL, out, s);
}

/* One scored row's figures (ab_score_in). */
typedef struct row_score {
    double l2, mass, topk, max_abs;
    int nonfinite, no_weights;
} row_score;

static void score_row(const ab_refset *r, const ab_problem *pb, const ab_layout *l, const ab_instance *in,
                      const ab_mask *mask, const float *out, int t, row_score *x)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim;
    const int dense = l->kind == AB_LAYOUT_DENSE, custom = l->kind == AB_LAYOUT_CUSTOM;
    const int effective = custom && in && in->m->weights;
    const int h = t / r->n_rows, ri = t % r->n_rows, i = r->rows[ri];
    const double *o = r->out + ((size_t)h * r->n_rows + ri) * d;
    const float *oh = out + ((size_t)h * N + i) * d;
    double num = 0, den = 0;
    memset(x, 0, sizeof *x);
    for (int c = 0; c < d; c++) {
        if (!isfinite(oh[c])) x->nonfinite = 1;
        double e = (double)oh[c] - o[c];
        num += e * e;
        den += o[c] * o[c];
        if (fabs(e) > x->max_abs) x->max_abs = fabs(e);
    }
    x->l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    if (custom) {
        if (!(effective && effective_recall(r, pb, l, in, mask, h, ri, &x->mass, &x->topk) == 0))
            x->no_weights = 1;
        return;
    }
    double z = r->rsum[(size_t)h * r->n_rows + ri];
    if (dense)
        x->mass = 1.0;
    else if (z > 0)
        x->mass = kept_mass(pb, l, mask, h, i, r->rmax[(size_t)h * r->n_rows + ri]) / z;
    const int32_t *tk = r->topk_idx + ((size_t)h * r->n_rows + ri) * (size_t)r->topk;
    int hit = 0, cnt = 0;
    for (int c = 0; c < r->topk; c++) {
        if (tk[c] < 0) continue;
        cnt++;
        hit += dense ? 1 : ab_layout_contains(l, h, i, tk[c]);
    }
    x->topk = cnt ? (double)hit / cnt : 1.0;
}

/* The rows are scored in parallel into one record each and summed in row
 * order, so the figures do not depend on the thread count or schedule (an
 * OpenMP reduction adds in whatever order the threads finish). */
int ab_score_in(const ab_refset *r, const ab_problem *pb, const ab_layout *l, const ab_instance *in,
                const float *out, ab_scores *s)
{
    memset(s, 0, sizeof *s);
    const int custom = l->kind == AB_LAYOUT_CUSTOM;
    const int total = r->heads * r->n_rows;
    const ab_mask mask = ab_shape_mask(&pb->s);
    row_score *rs = malloc(sizeof *rs * (size_t)(total > 0 ? total : 1));
    if (rs) {
#pragma omp parallel for schedule(dynamic, 4)
        for (int t = 0; t < total; t++) score_row(r, pb, l, in, &mask, out, t, &rs[t]);
    }
    double sum_mass = 0, sum_topk = 0, sum_l2 = 0, max_abs = 0;
    double hm[AB_SCORE_HEADS] = { 0 }; /* per-head sums of mass recall */
    int nonfinite = 0, no_weights = 0;
    for (int t = 0; t < total; t++) {
        row_score one, *x = rs ? &rs[t] : &one;
        if (!rs) score_row(r, pb, l, in, &mask, out, t, &one); /* no memory for the records: serially */
        const int h = t / r->n_rows;
        sum_l2 += x->l2;
        max_abs = x->max_abs > max_abs ? x->max_abs : max_abs;
        nonfinite |= x->nonfinite;
        no_weights |= x->no_weights;
        if (x->no_weights) continue;
        sum_mass += x->mass;
        sum_topk += x->topk;
        if (h < AB_SCORE_HEADS) hm[h] += x->mass;
    }
    free(rs);
    s->rows = total;
    s->rel_l2 = total ? sum_l2 / total : NAN;
    s->max_abs = max_abs;
    s->nonfinite = nonfinite;
    s->recall_mass = (custom && no_weights) || !total ? NAN : sum_mass / total;
    s->recall_topk = (custom && no_weights) || !total ? NAN : sum_topk / total;
    s->effective = custom && !no_weights && total;
    for (int h = 0; h < AB_SCORE_HEADS; h++)
        s->head_mass[h] = h < r->heads && r->n_rows && !(custom && no_weights) ? hm[h] / r->n_rows : NAN;
    return AB_OK;
}

/* Accuracy of mass answers (ab_answer.span_hi > span_lo: an answer-bearing
 * trace): query (h, i) is right when the keys the layout keeps hold at
 * least mass_share of the exact mass row i puts on the span's allowed keys.
 * Dense keeps everything; a CUSTOM layout has no kept set (NaN). */
static void mass_accuracy(const ab_answer *a, const ab_problem *pb, const ab_layout *l, double *acc,
                          double *lo, double *hi, int32_t *trials)
{
    *acc = *lo = *hi = NAN;
    *trials = 0;
    if (l->kind == AB_LAYOUT_CUSTOM) return;
    const int N = pb->s.seq_len, d = pb->s.head_dim;
    const ab_mask mask = ab_shape_mask(&pb->s);
    int ok = 0, all = 0;
    for (int t = 0; t < a->n; t++) {
        const int h = a->head[t], i = a->row[t];
        if (h < 0 || h >= pb->s.heads || i < 0 || i >= N) continue;
        const float *q = pb->q + ((size_t)h * N + i) * d;
        const int j1 = a->span_hi < N ? a->span_hi : N;
        double m = -INFINITY;
        double *lg = malloc(sizeof(double) * (size_t)(j1 > a->span_lo ? j1 - a->span_lo : 1));
        if (!lg) continue;
        for (int j = a->span_lo; j < j1; j++) {
            lg[j - a->span_lo] = -INFINITY;
            if (!ab_mask_allows(&mask, i, j)) continue;
            const float *k = pb->k + ((size_t)h * N + j) * d;
            double x = 0;
            for (int c = 0; c < d; c++) x += (double)q[c] * k[c];
            lg[j - a->span_lo] = x * pb->s.scale;
            if (lg[j - a->span_lo] > m) m = lg[j - a->span_lo];
        }
        double all_m = 0, kept = 0;
        for (int j = a->span_lo; j < j1 && m > -INFINITY; j++) {
            const double e = exp(lg[j - a->span_lo] - m);
            all_m += e;
            if (l->kind == AB_LAYOUT_DENSE || ab_layout_contains(l, h, i, j)) kept += e;
        }
        free(lg);
        if (!(all_m > 0)) continue;
        all++;
        ok += kept >= a->mass_share * all_m;
    }
    *trials = all;
    if (all) *acc = (double)ok / all;
    ab_wilson(ok, all, lo, hi);
}

void ab_wilson(double k, double n, double *lo, double *hi)
{
    if (!(n > 0)) {
        *lo = NAN;
        *hi = NAN;
        return;
    }
    const double z = 1.959963984540054;
    double p = k / n, z2 = z * z;
    double den = 1 + z2 / n;
    double ctr = (p + z2 / (2.0 * n)) / den;
    double half = z * sqrt(p * (1 - p) / n + z2 / (4.0 * n * n)) / den;
    *lo = ctr - half < 0 ? 0 : ctr - half;
    *hi = ctr + half > 1 ? 1 : ctr + half;
}

void ab_accuracy(const ab_answer *ans, const float *out, int seq_len, double *acc, double *lo, double *hi,
                 int32_t *trials)
{
    int ok = 0, all = 0;
    ab_answer_score(ans, out, seq_len, &ok, &all);
    *acc = all ? (double)ok / all : NAN;
    ab_wilson(ok, all, lo, hi);
    *trials = all;
}

int ab_score_point(const ab_refset *r, const ab_problem *pb, const ab_layout *l, const ab_instance *in,
                   const float *out, const ab_answer *ans, ab_point *p)
{
    p->achieved_density = ab_layout_density(l);
    p->select_flops = l->select_flops;
    p->select_bytes = l->select_bytes;
    snprintf(p->layout, sizeof p->layout, "%s", ab_layout_kind_name(l->kind));
    /* the blocks the layout was built on (dense and custom have none) */
    const int blocky = l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED;
    p->block_q = blocky ? l->block_q : 0;
    p->block_k = blocky ? l->block_k : 0;
    ab_scores sc;
    ab_score_in(r, pb, l, in, out, &sc);
    p->recall_mass = sc.recall_mass;
    p->recall_topk = sc.recall_topk;
    p->rel_l2_err = sc.rel_l2;
    p->max_abs_err = sc.max_abs;
    p->rows_scored = sc.rows;
    if (ans && ans->n > 0 && ans->span_hi > ans->span_lo)
        mass_accuracy(ans, pb, l, &p->accuracy, &p->acc_ci_lo, &p->acc_ci_hi, &p->acc_trials);
    else if (ans && ans->n > 0)
        ab_accuracy(ans, out, pb->s.seq_len, &p->accuracy, &p->acc_ci_lo, &p->acc_ci_hi, &p->acc_trials);
    p->head_recall[0] = 0;
    if (r->heads > 1)
        ab_point_put_list(p->head_recall, sizeof p->head_recall, sc.head_mass,
                          r->heads < AB_SCORE_HEADS ? r->heads : AB_SCORE_HEADS, 3);
    return sc.nonfinite ? 1 : 0;
}
