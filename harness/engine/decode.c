/* decode.c — a decode point's calls (decode.h, docs/decode.md).
 *
 * The arena of a decode problem holds K and V of the whole stack at the KV
 * heads, (L, B*kv, N + S, d), and the steps' queries (S, L, B*H, d). Step s
 * shows a method the cache's first N + s + 1 keys (its own key included) and
 * the step's queries; the layer stack is folded into heads (L*B*H query
 * heads over L*B*kv KV heads: the same bytes) unless the method is
 * `layered`. The reference of each step's rows was built with the problem
 * (ab_refset_build_decode). */
#include "harness/engine/decode.h"
#include "harness/engine/metrics.h"
#include "harness/engine/timing.h"
#include "runtime/layout.h"
#include "kernels/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int qheads(const base_pt *b) { return b->layers * b->batch * b->heads; }

/* The view of step s (len = N + s + 1; s = -1: the cache before the first
 * step, for prepare()). */
static ab_decode view(const ab_dec_ctx *x, int layered, int s)
{
    const base_pt *b = x->b;
    ab_decode dp = { 0 };
    dp.layers = layered ? b->layers : 1;
    dp.heads = (layered ? 1 : b->layers) * b->batch * b->heads;
    dp.kv_heads = (layered ? 1 : b->layers) * b->batch * b->kv_heads;
    dp.head_dim = b->d;
    dp.scale = 1.0f / sqrtf((float)b->d);
    dp.cap = b->n + b->steps;
    dp.len = b->n + s + 1;
    dp.step = s < 0 ? 0 : s;
    dp.q = x->a->q + (size_t)(s < 0 ? 0 : s) * qheads(b) * b->d;
    dp.k = x->a->k;
    dp.v = x->a->v;
    dp.seed = (uint64_t)b->seed;
    dp.threads = x->threads;
    return dp;
}

ab_shape ab_dec_shape(const ab_dec_ctx *x, const ab_method *m)
{
    const ab_decode dp = view(x, m->layered, 0);
    ab_shape s = { 0 };
    s.heads = dp.heads;
    s.kv_heads = dp.kv_heads;
    s.layers = dp.layers;
    s.seq_len = dp.cap;
    s.head_dim = dp.head_dim;
    s.causal = 1;
    s.scale = dp.scale;
    s.phase = AB_DECODE;
    return s;
}

size_t ab_dec_out_floats(const ab_dec_ctx *x) { return (size_t)x->b->steps * qheads(x->b) * x->b->d; }

/* prepare() on the cache before the first step */
static int dec_prepare(const ab_dec_ctx *x, ab_instance *in, double *prep)
{
    const ab_decode d0 = view(x, in->m->layered, -1);
    const double t0 = ab_now_ms();
    const int rc = ab_instance_prepare(in, &d0);
    if (prep) *prep += ab_now_ms() - t0;
    return rc;
}

/* One step's layout: dselect, finalize. */
static int dec_select(const ab_dec_ctx *x, ab_instance *in, const ab_decode *dp, ab_layout *l)
{
    ab_layout_free(l);
    ab_layout_init_decode(l, dp, x->block_k);
    int rc = ab_instance_dselect(in, dp, l);
    if (rc == AB_OK) rc = ab_layout_finalize(l);
    return rc;
}

/* ---- cold steps ------------------------------------------------------------
 * One decode step of a model reads one layer's cache; the next step of that
 * layer comes after every other layer's, so in a real model the cache is
 * never in the CPU's caches when a step starts. A benchmark that runs one
 * layer's steps back to back would serve a small working set (a sparse
 * method's pages) from the last-level cache (105 MiB here) and flatter it
 * against dense, whose whole cache does not fit. So before every timed step
 * a buffer of twice the LLC is streamed through (untimed): every step
 * starts cold. [timing] decode_cold = 0 turns it off. */
size_t ab_dec_flush_bytes(void)
{
    size_t llc = 0;
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (f) {
        char unit = 0;
        unsigned long v = 0;
        if (fscanf(f, "%lu%c", &v, &unit) >= 1)
            llc = (size_t)v * (unit == 'K' ? 1024 : unit == 'M' ? 1048576 : 1);
        fclose(f);
    }
    size_t n = 2 * llc;
    if (n < ((size_t)64 << 20)) n = (size_t)64 << 20;
    if (n > ((size_t)1 << 30)) n = (size_t)1 << 30;
    return n;
}

static void evict(void)
{
    static float *buf;
    static size_t n;
    if (!buf) {
        n = ab_dec_flush_bytes() / sizeof(float);
        buf = malloc(n * sizeof(float));
        if (!buf) return;
        for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
    }
    float acc = 0;
    for (size_t i = 0; i < n; i += 16) acc += buf[i]; /* one read per cache line */
    volatile float sink = acc;
    (void)sink;
}

int ab_dec_call(const ab_dec_ctx *x, ab_instance *in, float *out, double *sel, double *run, double *prep)
{
    const base_pt *b = x->b;
    int rc = dec_prepare(x, in, prep);
    ab_layout l;
    memset(&l, 0, sizeof l);
    double ts = 0, tr = 0;
    for (int s = 0; s < b->steps && rc == AB_OK; s++) {
        const ab_decode dp = view(x, in->m->layered, s);
        if (x->cold) evict();
        const double t0 = ab_now_ms();
        rc = dec_select(x, in, &dp, &l);
        const double t1 = ab_now_ms();
        if (rc == AB_OK) rc = ab_instance_drun(in, &dp, &l, out + (size_t)s * qheads(b) * b->d);
        tr += ab_now_ms() - t1;
        ts += t1 - t0;
    }
    ab_layout_free(&l);
    *sel += ts / b->steps;
    *run += tr / b->steps;
    return rc;
}

int ab_dec_density(const ab_dec_ctx *x, ab_instance *in, double *density)
{
    const base_pt *b = x->b;
    int rc = dec_prepare(x, in, NULL);
    ab_layout l;
    memset(&l, 0, sizeof l);
    double sum = 0;
    for (int s = 0; s < b->steps && rc == AB_OK; s++) {
        const ab_decode dp = view(x, in->m->layered, s);
        rc = dec_select(x, in, &dp, &l);
        if (rc == AB_OK) sum += ab_layout_density(&l);
    }
    ab_layout_free(&l);
    *density = sum / b->steps;
    return rc;
}

/* Distinct keys the rows [r0, r0 + g) keep (one KV head's query heads):
 * what the attention must read of that KV head. stamp: len ints, marks. */
static int64_t group_keys(const ab_layout *l, int r0, int g, int len, int32_t *stamp, int32_t mark)
{
    if (l->kind == AB_LAYOUT_DENSE) return len;
    int64_t n = 0;
    for (int r = r0; r < r0 + g; r++) {
        if (l->blk_ptr)
            for (int64_t e = l->blk_ptr[r]; e < l->blk_ptr[r + 1]; e++) {
                const int j1 = (l->blk_idx[e] + 1) * l->block_k;
                for (int j = l->blk_idx[e] * l->block_k; j < j1 && j < len; j++)
                    if (stamp[j] != mark) {
                        stamp[j] = mark;
                        n++;
                    }
            }
        if (l->tok_ptr)
            for (int64_t e = l->tok_ptr[r]; e < l->tok_ptr[r + 1]; e++)
                if (stamp[l->tok_idx[e]] != mark) {
                    stamp[l->tok_idx[e]] = mark;
                    n++;
                }
    }
    return n;
}

int ab_dec_scored_call(const ab_dec_ctx *x, ab_instance *in, float *out, ab_point *p)
{
    const base_pt *b = x->b;
    const ab_refset *ref = &x->a->ref;
    const int QH = qheads(b), d = b->d, S = b->steps, G = b->heads / b->kv_heads, L = b->layers;
    const int custom_ok = 1;
    double prep = 0;
    int rc = dec_prepare(x, in, &prep);
    ab_layout l;
    memset(&l, 0, sizeof l);
    int32_t *stamp = calloc((size_t)b->n + S, sizeof *stamp);
    double *ro = malloc(sizeof(double) * (size_t)d);
    double *lrec = calloc((size_t)L, sizeof *lrec);
    float *tr = malloc(sizeof(float) * ab_dec_out_floats(x));
    if (!stamp || !ro || !lrec || !tr) rc = AB_ENOMEM;
    double dens = 0, mass = 0, topk = 0, rel = 0, mabs = 0, kvb = 0, cab = 0, sfl = 0, sby = 0;
    int nscored = 0, nonfinite = 0, have_recall = 1, have_cost = 1;
    int32_t mark = 0;
    char kind[8] = "";
    for (int s = 0; s < S && rc == AB_OK; s++) {
        const ab_decode dp = view(x, in->m->layered, s);
        rc = dec_select(x, in, &dp, &l);
        if (rc != AB_OK) break;
        char verr[200];
        if (ab_layout_validate(&l, verr, sizeof verr)) {
            ab_point_set_status(p, "error", "invalid layout at step %d: %s", s, verr);
            rc = AB_EINTERNAL;
            break;
        }
        float *o = out + (size_t)s * QH * d;
        rc = ab_instance_drun(in, &dp, &l, o);
        if (rc != AB_OK) break;
        snprintf(kind, sizeof kind, "%s", ab_layout_kind_name(l.kind));
        dens += ab_layout_density(&l);
        if (isfinite(l.select_flops) && isfinite(l.select_bytes)) {
            sfl += l.select_flops;
            sby += l.select_bytes;
        } else
            have_cost = 0;
        if (l.kind == AB_LAYOUT_CUSTOM) have_recall = 0;
        const ab_decode fd = view(x, 0, s); /* folded: row r reads KV head r / G */
        for (int kh = 0; kh < fd.kv_heads; kh++) {
            const int64_t nk =
                l.kind == AB_LAYOUT_CUSTOM ? fd.len : group_keys(&l, kh * G, G, fd.len, stamp, ++mark);
            kvb += 2.0 * nk * d * sizeof(float);
            cab += 2.0 * fd.len * d * sizeof(float);
        }
        for (int r = 0; r < QH; r++) {
            const size_t oi = (size_t)r * S + s;
            const double *rf = ref->out + oi * d;
            double e2 = 0, n2 = 0;
            for (int c = 0; c < d; c++) {
                const double df = o[(size_t)r * d + c] - rf[c];
                if (!isfinite(o[(size_t)r * d + c])) nonfinite = 1;
                e2 += df * df;
                n2 += rf[c] * rf[c];
                mabs = fabs(df) > mabs ? fabs(df) : mabs;
            }
            rel += sqrt(e2) / (sqrt(n2) > 1e-30 ? sqrt(n2) : 1e-30);
            if (have_recall && custom_ok) {
                double m_l, s_l;
                ab_ref_decode_row(&fd, r, &l, ro, &m_l, &s_l);
                const double ms = s_l > 0 ? s_l * exp(m_l - ref->rmax[oi]) / ref->rsum[oi] : 0;
                mass += ms;
                lrec[r / (QH / L)] += ms;
                int hit = 0, cnt = 0;
                for (int t = 0; t < ref->topk; t++) {
                    const int32_t j = ref->topk_idx[oi * ref->topk + t];
                    if (j < 0) continue;
                    cnt++;
                    hit += ab_layout_contains(&l, r, 0, j);
                }
                topk += cnt ? (double)hit / cnt : 0;
            }
            nscored++;
        }
    }
    if (rc == AB_OK && !nonfinite) {
        p->prepare_ms = prep;
        p->achieved_density = dens / S;
        p->select_flops = have_cost ? sfl / S : NAN;
        p->select_bytes = have_cost ? sby / S : NAN;
        p->kv_bytes = kvb / S;
        p->cache_bytes = cab / S;
        snprintf(p->layout, sizeof p->layout, "%s", kind);
        p->block_q = 0;
        p->block_k = !strcmp(kind, "block") || !strcmp(kind, "mixed") ? l.block_k : 0;
        p->recall_mass = have_recall ? mass / nscored : NAN;
        p->recall_topk = have_recall ? topk / nscored : NAN;
        p->rel_l2_err = rel / nscored;
        p->max_abs_err = mabs;
        p->rows_scored = nscored;
        if (have_recall && L > 1) {
            for (int k = 0; k < L; k++) lrec[k] /= (double)S * (QH / L);
            ab_point_put_list(p->layer_recall, sizeof p->layer_recall, lrec, L, 4);
        }
        /* accuracy: the answers' rows are steps; out transposed to (head, step, d) */
        for (int s = 0; s < S; s++)
            for (int r = 0; r < QH; r++)
                memcpy(tr + ((size_t)r * S + s) * d, out + ((size_t)s * QH + r) * d,
                       sizeof(float) * (size_t)d);
        if (x->a->ans.n > 0)
            ab_accuracy(&x->a->ans, tr, S, &p->accuracy, &p->acc_ci_lo, &p->acc_ci_hi, &p->acc_trials);
    }
    ab_layout_free(&l);
    free(stamp);
    free(ro);
    free(lrec);
    free(tr);
    if (rc == AB_OK && nonfinite) return 1;
    return rc;
}
