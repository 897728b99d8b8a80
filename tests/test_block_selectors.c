/* test_block_selectors.c — sanity properties of the dynamic block-level
 * selectors (xattention, minference_block, flexprefill, seer_proxy,
 * quest_prefill, anchor, anchor_small, pbs, cca) beyond tests/test_methods.c's check
 * against the restricted fp64 reference:
 *  - on the needle task with a strong needle, at moderate density, the
 *    selectors keep the needle key for the query rows that must retrieve it;
 *  - density never falls as the density knob rises (xattention: with tau),
 *    and the knob's maximum keeps everything and equals dense;
 *  - cca (CUSTOM, its own run) matches a naive fp64 implementation of the
 *    same pooled computation, and approaches dense as the window grows.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"
#include "runtime/layout.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"
#include "kernels/kernels.h"

static const char *const selectors[] = {
    "xattention", "minference_block", "flexprefill", "seer_proxy", "quest_prefill",
    "anchor",     "anchor_small",     "pbs",         "cca"
};
#define N_SELECTORS ((int)(sizeof selectors / sizeof selectors[0]))

/* ---- problems ------------------------------------------------------------ */

typedef struct tproblem {
    ab_problem pb;
    float *q, *k, *v; /* (heads, seq_len, head_dim) each */
    ab_answer ans;    /* needle problems only */
} tproblem;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return ((splitmix64(s) >> 11) + 0.5) * 0x1.0p-53; }

static double gauss(uint64_t *s)
{
    return sqrt(-2.0 * log(uniform01(s))) * cos(6.283185307179586 * uniform01(s));
}

static void problem_alloc(tproblem *t, int heads, int n, int d, int causal, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    const size_t cnt = (size_t)heads * n * d;
    t->q = malloc(cnt * sizeof *t->q);
    t->k = malloc(cnt * sizeof *t->k);
    t->v = malloc(cnt * sizeof *t->v);
    cr_assert(t->q && t->k && t->v);
    t->pb.s = (ab_shape){
        .heads = heads, .seq_len = n, .head_dim = d, .causal = causal, .scale = 1.0f / sqrtf((float)d)
    };
    t->pb.q = t->q;
    t->pb.k = t->k;
    t->pb.v = t->v;
    t->pb.seed = seed;
    t->pb.threads = 1;
}

static void problem_random(tproblem *t, int heads, int n, int d, int causal, uint64_t seed)
{
    problem_alloc(t, heads, n, d, causal, seed);
    uint64_t s = seed;
    for (size_t i = 0; i < (size_t)heads * n * d; i++) {
        t->q[i] = (float)gauss(&s);
        t->k[i] = (float)gauss(&s);
        t->v[i] = (float)gauss(&s);
    }
}

/* The needle task (haystack + one planted key) with `margin` nats. */
static void problem_needle(tproblem *t, int heads, int n, int d, double depth, double margin, int rows,
                           uint64_t seed)
{
    const ab_task *task = ab_task_find("needle");
    if (!task) cr_skip_test("needle task not registered");
    problem_alloc(t, heads, n, d, 1, seed);
    ab_params p;
    memset(&p, 0, sizeof p);
    while (p.n < AB_TASK_MAX_PARAMS && task->params[p.n].name) {
        p.v[p.n] = task->params[p.n].def;
        if (strcmp(task->params[p.n].name, "margin") == 0) p.v[p.n] = margin;
        if (strcmp(task->params[p.n].name, "query_rows") == 0 && rows > 0) p.v[p.n] = rows;
        p.n++;
    }
    char err[256] = "";
    ab_task_input in = { .p = &p, .str = NULL, .s = t->pb.s, .seed = seed, .depth = depth };
    cr_assert_eq(ab_task_generate(task, &in, t->q, t->k, t->v, &t->ans, err, sizeof err), AB_OK, "needle: %s",
                 err);
    cr_assert(t->ans.n > 0);
}

static void problem_free(tproblem *t)
{
    free(t->q);
    free(t->k);
    free(t->v);
    ab_answer_free(&t->ans);
}

/* ---- calling a method ---------------------------------------------------- */

static const ab_method *need_method(const char *name)
{
    const ab_method *m = ab_method_find(name);
    cr_assert(m, "method %s not registered", name);
    return m;
}

/* Params of m other than the knob: defaults, except flexprefill's
 * min_budget (the authors' 1024 tokens, meant for 128K contexts, alone
 * keeps most of a 2K-token problem) set to one 64-block, and anchor's
 * groups (the authors' 16 sub-blocks of 128 queries: dense up to N = 4096)
 * scaled down to 4 sub-blocks of 32 (groups of 128 queries). The official
 * geometry has its own test (anchor_official_geometry). */
static void test_params(const ab_method *m, ab_params *p)
{
    memset(p, 0, sizeof *p);
    while (p->n < AB_MAX_PARAMS && m->params[p->n].name) {
        const char *pn = m->params[p->n].name;
        p->v[p->n] = m->params[p->n].def;
        if (strcmp(m->name, "flexprefill") == 0 && strcmp(pn, "min_budget") == 0) p->v[p->n] = 64;
        if (strcmp(m->name, "anchor") == 0 && strcmp(pn, "block") == 0) p->v[p->n] = 32;
        if (strcmp(m->name, "anchor") == 0 && strcmp(pn, "group") == 0) p->v[p->n] = 4;
        p->n++;
    }
}

/* select (and optionally run) with test_params and the knob at `knob`;
 * the layout is left finalised for the caller to read and free. */
static int method_do(const ab_method *m, const ab_problem *pb, int block, double knob, ab_layout *l,
                     float *out)
{
    ab_params p;
    test_params(m, &p);
    if (m->density_knob.param >= 0 && !isnan(knob)) {
        const ab_param *a = &m->params[m->density_knob.param];
        p.v[m->density_knob.param] = fmin(a->max, fmax(a->min, a->is_int ? round(knob) : knob));
    }
    ab_layout_init(l, &pb->s, block, block);
    ab_instance in;
    int rc = ab_instance_create(&in, m, &p, &pb->s);
    if (rc == AB_OK) rc = ab_instance_select(&in, pb, l);
    if (rc == AB_OK) rc = ab_layout_finalize(l);
    if (rc == AB_OK) {
        char err[256];
        rc = ab_layout_validate(l, err, sizeof err);
        cr_expect_eq(rc, AB_OK, "%s: invalid layout: %s", m->name, err);
    }
    if (rc == AB_OK && out) rc = ab_instance_run(&in, pb, l, out);
    if (rc != AB_OK) cr_log_error("%s: %s", m->name, ab_instance_error(&in));
    ab_instance_destroy(&in);
    return rc;
}

static double density_at(const ab_method *m, const ab_problem *pb, int block, double knob)
{
    ab_layout l;
    cr_assert_eq(method_do(m, pb, block, knob, &l, NULL), AB_OK, "%s knob %g", m->name, knob);
    const double d = ab_layout_density(&l);
    ab_layout_free(&l);
    return d;
}

/* Bisection on the knob (as the harness calibrates) towards `target`. */
static double knob_for(const ab_method *m, const ab_problem *pb, int block, double target)
{
    const ab_param *a = &m->params[m->density_knob.param];
    const int lg = m->density_knob.log_scale && a->min > 0;
    double lo = lg ? log(a->min) : a->min, hi = lg ? log(a->max) : a->max, best = NAN, err = INFINITY;
    for (int it = 0; it < 30; it++) {
        const double mid = 0.5 * (lo + hi), kv = lg ? exp(mid) : mid;
        const double dd = density_at(m, pb, block, kv);
        if (fabs(dd - target) < err) {
            err = fabs(dd - target);
            best = kv;
        }
        if (fabs(dd - target) <= 0.02 * target) break;
        if ((dd < target) == (m->density_knob.increasing != 0))
            lo = mid;
        else
            hi = mid;
    }
    return best;
}

static double rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = (double)a[i] - b[i];
        num += e * e;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- needle -------------------------------------------------------------- */

/* A strong needle (margin 10 nats, read by the last 16 rows) at N = 2048 and
 * density ~0.3. Selectors that score keys (or pages) against the query
 * block — quest_prefill (page bounds), anchor and anchor_small (stripes) — or read the last
 * queries' exact attention — flexprefill — must keep the needle key for every
 * answer row. Selectors that mean-pool the keys of a block (minference_block,
 * seer_proxy, pbs's permuted blocks) or average 8 logits per antidiagonal
 * cell (xattention) dilute a single key 1/64 or 1/8 and only log their
 * result: missing it is their documented weakness, not a bug (the needle and
 * joint_recall figures show it). cca pools keys and is not a layout. */
Test(block_selectors, strong_needle_is_kept)
{
    static const char *const must[] = { "quest_prefill", "anchor", "anchor_small", "flexprefill" };
    const int heads = 2, n = 2048, d = 64, block = 64;
    tproblem t;
    problem_needle(&t, heads, n, d, 0.4, 10.0, 0, 7);
    for (int s = 0; s < N_SELECTORS; s++) {
        const ab_method *m = need_method(selectors[s]);
        if (strcmp(m->name, "cca") == 0) continue;
        int strict = 0;
        for (int i = 0; i < 4; i++) strict |= strcmp(m->name, must[i]) == 0;
        const double kv = knob_for(m, &t.pb, block, 0.3);
        ab_layout l;
        cr_assert_eq(method_do(m, &t.pb, block, kv, &l, NULL), AB_OK);
        int kept = 0;
        for (int a = 0; a < t.ans.n; a++)
            kept += ab_layout_contains(&l, t.ans.head[a], t.ans.row[a], t.ans.key_pos[a]);
        const double dens = ab_layout_density(&l);
        cr_log_info("%s: knob %g density %.3f needle kept in %d/%d rows%s", m->name, kv, dens, kept, t.ans.n,
                    strict ? "" : " (not asserted)");
        cr_expect(dens > 0.2 && dens < 0.4, "%s: density %.3f not near 0.3", m->name, dens);
        if (strict)
            cr_expect(kept == t.ans.n, "%s: needle key kept in only %d/%d answer rows at density %.3f",
                      m->name, kept, t.ans.n, dens);
        ab_layout_free(&l);
    }
    problem_free(&t);
}

/* A vertical line (a few keys every query attends, MInference's "vertical"
 * pattern, here 8 nats over a background of logit spread 1/4) is what block
 * pooling and antidiagonal scoring do catch: every block selector keeps the
 * vertical keys for at least 85% of the query blocks at density ~0.3.
 * flexprefill is only logged: as in the authors' get_active_blocks its
 * vertical budget is (keys needed to cover gamma) / 128 + 1 columns, with
 * column 0 forced among them, so 3 dominant keys buy a single column unless
 * min_budget adds more (the authors' 1024 tokens do at 128K). */
Test(block_selectors, vertical_line_is_kept)
{
    const int heads = 2, n = 2048, d = 64, block = 64, nvert = 3;
    tproblem t;
    problem_random(&t, heads, n, d, 1, 77);
    for (size_t i = 0; i < (size_t)heads * n * d; i++) { /* background logit noise std 1/4 */
        t.q[i] *= 0.5f;
        t.k[i] *= 0.5f;
    }
    uint64_t s = 5;
    int vpos[2][3];
    for (int h = 0; h < heads; h++) {
        float u[64];
        double nu = 0;
        for (int c = 0; c < d; c++) {
            u[c] = (float)gauss(&s);
            nu += (double)u[c] * u[c];
        }
        /* logit boost 8 nats: q.k * scale = lam^2 * |u|^2 / sqrt(d) */
        const float lam = (float)sqrt(8.0 * sqrt((double)d) / nu);
        for (int i = 0; i < n; i++)
            for (int c = 0; c < d; c++) t.q[((size_t)h * n + i) * d + c] += lam * u[c];
        for (int x = 0; x < nvert; x++) {
            vpos[h][x] = 200 + 600 * x + (int)(uniform01(&s) * 100);
            for (int c = 0; c < d; c++) t.k[((size_t)h * n + vpos[h][x]) * d + c] += lam * u[c];
        }
    }
    for (int si = 0; si < N_SELECTORS; si++) {
        const ab_method *m = need_method(selectors[si]);
        if (strcmp(m->name, "cca") == 0) continue;
        const double kv = knob_for(m, &t.pb, block, 0.3);
        ab_layout l;
        cr_assert_eq(method_do(m, &t.pb, block, kv, &l, NULL), AB_OK);
        int kept = 0, total = 0;
        for (int h = 0; h < heads; h++)
            for (int x = 0; x < nvert; x++)
                for (int i = vpos[h][x] + block; i < n; i += block) {
                    kept += ab_layout_contains(&l, h, i, vpos[h][x]);
                    total++;
                }
        cr_log_info("%s: density %.3f vertical keys kept for %d/%d query blocks", m->name,
                    ab_layout_density(&l), kept, total);
        if (strcmp(m->name, "flexprefill") != 0)
            cr_expect(kept >= 0.85 * total, "%s: vertical keys kept for only %d/%d query blocks", m->name,
                      kept, total);
        ab_layout_free(&l);
    }
    problem_free(&t);
}

/* ---- knobs --------------------------------------------------------------- */

Test(block_selectors, xattention_density_rises_with_tau)
{
    const ab_method *m = need_method("xattention");
    tproblem t;
    problem_needle(&t, 2, 1024, 64, 0.5, 3.0, 0, 11);
    double prev = -1;
    for (int i = 0; i <= 10; i++) {
        const double tau = 0.1 * i, dd = density_at(m, &t.pb, 64, tau);
        cr_log_info("xattention tau %.1f: density %.4f", tau, dd);
        cr_expect(dd >= prev, "density fell from %.4f to %.4f at tau %.1f", prev, dd, tau);
        prev = dd;
    }
    cr_expect(prev == 1.0, "tau = 1 keeps density %.4f, want 1", prev);
    cr_expect(density_at(m, &t.pb, 64, 0.3) < 0.5, "tau = 0.3 keeps more than half");
    problem_free(&t);
}

/* Density is non-decreasing along the knob's range (in its direction). */
Test(block_selectors, density_monotone_in_knob)
{
    tproblem t;
    problem_needle(&t, 2, 1024, 64, 0.5, 3.0, 0, 5);
    for (int s = 0; s < N_SELECTORS; s++) {
        const ab_method *m = need_method(selectors[s]);
        const ab_param *a = &m->params[m->density_knob.param];
        const int lg = m->density_knob.log_scale && a->min > 0;
        double prev = -1;
        for (int i = 0; i <= 12; i++) {
            const double f = m->density_knob.increasing ? i / 12.0 : 1.0 - i / 12.0;
            const double kv =
                lg ? exp(log(a->min) + f * (log(a->max) - log(a->min))) : a->min + f * (a->max - a->min);
            const double dd = density_at(m, &t.pb, 64, kv);
            cr_expect(dd >= prev - 1e-12, "%s: density fell from %.4f to %.4f at knob %g", m->name, prev, dd,
                      kv);
            prev = dd;
        }
        cr_expect(prev == 1.0, "%s: the knob's end keeps density %.4f, want 1", m->name, prev);
    }
    problem_free(&t);
}

/* At the knob's maximum every selector keeps everything and equals dense
 * (causal and not, N not a multiple of the block). */
Test(block_selectors, knob_max_equals_dense)
{
    const ab_method *dense = need_method("dense");
    for (int causal = 0; causal <= 1; causal++) {
        tproblem t;
        const int heads = 2, n = 300, d = 32;
        problem_random(&t, heads, n, d, causal, 40 + (uint64_t)causal);
        const size_t cnt = (size_t)heads * n * d;
        float *od = malloc(cnt * sizeof *od), *om = malloc(cnt * sizeof *om);
        cr_assert(od && om);
        ab_layout l;
        cr_assert_eq(method_do(dense, &t.pb, 64, NAN, &l, od), AB_OK);
        ab_layout_free(&l);
        for (int s = 0; s < N_SELECTORS; s++) {
            const ab_method *m = need_method(selectors[s]);
            const ab_param *a = &m->params[m->density_knob.param];
            const double full = m->density_knob.increasing ? a->max : a->min;
            cr_assert_eq(method_do(m, &t.pb, 64, full, &l, om), AB_OK, "%s", m->name);
            cr_expect(ab_layout_density(&l) == 1.0, "%s causal=%d: density %.17g at knob %g", m->name, causal,
                      ab_layout_density(&l), full);
            const double e = rel_l2(om, od, cnt);
            cr_expect(e <= 1e-5, "%s causal=%d: differs from dense by %.3g", m->name, causal, e);
            ab_layout_free(&l);
        }
        free(od);
        free(om);
        problem_free(&t);
    }
}

/* ---- anchor's official geometry ------------------------------------------- */

/* anchor with its default params (the authors' groups of 16 x 128 queries)
 * and theta, 64 x 64 blocks: the finalised layout. */
static void anchor_official(const ab_problem *pb, double theta, ab_layout *l)
{
    const ab_method *m = need_method("anchor");
    ab_params p;
    memset(&p, 0, sizeof p);
    while (p.n < AB_MAX_PARAMS && m->params[p.n].name) {
        p.v[p.n] = strcmp(m->params[p.n].name, "theta") == 0 ? theta : m->params[p.n].def;
        p.n++;
    }
    ab_layout_init(l, &pb->s, 64, 64);
    ab_instance in;
    cr_assert_eq(ab_instance_create(&in, m, &p, &pb->s), AB_OK);
    cr_assert_eq(ab_instance_select(&in, pb, l), AB_OK, "%s", ab_instance_error(&in));
    cr_assert_eq(ab_layout_finalize(l), AB_OK);
    ab_instance_destroy(&in);
}

/* In the official geometry the first group's keys [0, 2048) and the query's
 * own group are attended densely, so at N <= 4096 (causal) everything is
 * dense. At N = 6144 the third group's 32 query blocks keep key blocks
 * [0, 32) and their own group up to the diagonal, and one stripe list,
 * the same for all of them, inside the middle region [2048, 4096); the
 * first two groups are dense; the list grows with theta, from none to the
 * whole middle region. (Random Q, K: the pooled logits are near 0 and the
 * mean row maximum near 3.3, so the list fills between theta 3 and 3.5.) */
Test(block_selectors, anchor_official_geometry)
{
    tproblem t;
    ab_layout l;
    problem_random(&t, 1, 4096, 32, 1, 91);
    anchor_official(&t.pb, 0.0, &l);
    cr_expect_eq(l.kind, AB_LAYOUT_DENSE, "N = 4096: layout %s, want dense", ab_layout_kind_name(l.kind));
    ab_layout_free(&l);
    problem_free(&t);

    const int n = 6144, nqb = n / 64;
    problem_random(&t, 1, n, 32, 1, 92);
    static const double thetas[] = { 0, 3.1, 3.2, 3.3, 3.4, 3.45, 1e4 };
    int64_t prev = -1, between = 0;
    for (int ti = 0; ti < 7; ti++) {
        anchor_official(&t.pb, thetas[ti], &l);
        cr_assert(l.kind == AB_LAYOUT_MIXED || l.kind == AB_LAYOUT_BLOCK, "theta %g: layout %s", thetas[ti],
                  ab_layout_kind_name(l.kind));
        static const int64_t none[1] = { 0 };
        const int64_t *tp = l.tok_ptr ? l.tok_ptr : none, *bp = l.blk_ptr;
        const int64_t t0 = l.tok_ptr ? tp[64] : 0, nt = l.tok_ptr ? tp[65] - t0 : 0;
        for (int qb = 0; qb < nqb; qb++) {
            int expect_blocks = qb + 1;
            if (qb >= 64) expect_blocks = 32 + (qb - 64 + 1);
            cr_expect_eq(bp[qb + 1] - bp[qb], expect_blocks, "theta %g qb %d: %lld key blocks, want %d",
                         thetas[ti], qb, (long long)(bp[qb + 1] - bp[qb]), expect_blocks);
            for (int64_t e = bp[qb]; e < bp[qb + 1]; e++) {
                const int b = l.blk_idx[e];
                cr_expect(b <= qb && (qb < 64 || b < 32 || b >= 64), "theta %g qb %d: key block %d",
                          thetas[ti], qb, b);
            }
            if (!l.tok_ptr) continue;
            if (qb < 64) {
                cr_expect_eq(tp[qb + 1], tp[qb], "theta %g qb %d: tokens in a dense group", thetas[ti], qb);
                continue;
            }
            cr_expect_eq(tp[qb + 1] - tp[qb], nt, "theta %g qb %d: %lld stripes, block 64 has %lld",
                         thetas[ti], qb, (long long)(tp[qb + 1] - tp[qb]), (long long)nt);
            for (int64_t e = 0; e < nt && e < tp[qb + 1] - tp[qb]; e++)
                cr_expect_eq(l.tok_idx[tp[qb] + e], l.tok_idx[t0 + e], "theta %g qb %d: stripe lists differ",
                             thetas[ti], qb);
        }
        for (int64_t e = t0; e < t0 + nt; e++)
            cr_expect(l.tok_idx[e] >= 2048 && l.tok_idx[e] < 4096, "stripe %d outside the middle region",
                      l.tok_idx[e]);
        cr_log_info("anchor N=%d theta %g: %lld stripes, density %.4f", n, thetas[ti], (long long)nt,
                    ab_layout_density(&l));
        cr_expect(nt >= prev, "theta %g: stripes fell from %lld to %lld", thetas[ti], (long long)prev,
                  (long long)nt);
        between += nt > 0 && nt < 2048;
        prev = nt;
        if (ti == 0) cr_expect_eq(nt, 0, "theta 0 keeps %lld stripes of random keys", (long long)nt);
        if (ti == 6)
            cr_expect(ab_layout_density(&l) == 1.0, "theta 1e4: density %.6f", ab_layout_density(&l));
        ab_layout_free(&l);
    }
    cr_expect(between > 0, "no theta selected part of the middle region");
    problem_free(&t);
}

/* ---- cca ----------------------------------------------------------------- */

/* Naive fp64 CCA for one head: cores from each group's last query, then per
 * row one softmax over the cores of the groups outside the row's
 * group-aligned raw window and the raw keys inside it (see methods/cca.c). */
static void cca_naive(const ab_problem *pb, int h, int w, int g, double *out /* (n, d) */)
{
    const int n = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal, ng = (n + g - 1) / g;
    const float *q = pb->q + (size_t)h * n * d, *k = pb->k + (size_t)h * n * d,
                *v = pb->v + (size_t)h * n * d;
    double *ck = calloc((size_t)ng * d, sizeof *ck), *cv = calloc((size_t)ng * d, sizeof *cv);
    double *lg = malloc((size_t)(n + ng) * sizeof *lg);
    double *vv = malloc((size_t)(n + ng) * d * sizeof *vv);
    cr_assert(ck && cv && lg && vv);
    for (int c = 0; c < ng; c++) {
        const int j0 = c * g, j1 = j0 + g < n ? j0 + g : n, t = j1 - 1;
        double mx = -INFINITY, sum = 0;
        for (int j = j0; j < j1; j++) {
            double s = 0;
            for (int e = 0; e < d; e++) s += (double)q[(size_t)t * d + e] * k[(size_t)j * d + e];
            lg[j - j0] = s * pb->s.scale;
            mx = fmax(mx, lg[j - j0]);
        }
        for (int j = j0; j < j1; j++) sum += exp(lg[j - j0] - mx);
        for (int j = j0; j < j1; j++) {
            const double wj = exp(lg[j - j0] - mx) / sum;
            for (int e = 0; e < d; e++) {
                ck[(size_t)c * d + e] += wj * k[(size_t)j * d + e];
                cv[(size_t)c * d + e] += wj * v[(size_t)j * d + e];
            }
        }
    }
    for (int i = 0; i < n; i++) {
        const int a = i - w + 1 > 0 ? i - w + 1 : 0, lo = a / g * g;
        int hi = i + 1;
        if (!causal) {
            const long eg = ((long)i + w + g - 1) / g * g;
            hi = eg < n ? (int)eg : n;
        }
        int m = 0;
        for (int c = 0; c < ng; c++) {
            if (!((c + 1) * g <= lo || c * g >= hi)) continue;
            if (causal && c * g >= hi) continue;
            double s = 0;
            for (int e = 0; e < d; e++) s += (double)q[(size_t)i * d + e] * ck[(size_t)c * d + e];
            lg[m] = s * pb->s.scale;
            memcpy(vv + (size_t)m * d, cv + (size_t)c * d, (size_t)d * sizeof *vv);
            m++;
        }
        for (int j = lo; j < hi; j++) {
            double s = 0;
            for (int e = 0; e < d; e++) s += (double)q[(size_t)i * d + e] * k[(size_t)j * d + e];
            lg[m] = s * pb->s.scale;
            for (int e = 0; e < d; e++) vv[(size_t)m * d + e] = v[(size_t)j * d + e];
            m++;
        }
        double mx = -INFINITY, sum = 0;
        for (int t = 0; t < m; t++) mx = fmax(mx, lg[t]);
        for (int e = 0; e < d; e++) out[(size_t)i * d + e] = 0;
        for (int t = 0; t < m; t++) {
            const double p = exp(lg[t] - mx);
            sum += p;
            for (int e = 0; e < d; e++) out[(size_t)i * d + e] += p * vv[(size_t)t * d + e];
        }
        for (int e = 0; e < d; e++) out[(size_t)i * d + e] /= sum;
    }
    free(ck);
    free(cv);
    free(lg);
    free(vv);
}

static int cca_param_index(const ab_method *m, const char *name)
{
    for (int i = 0; m->params[i].name; i++)
        if (strcmp(m->params[i].name, name) == 0) return i;
    cr_assert_fail("cca has no param %s", name);
    return -1;
}

Test(block_selectors, cca_matches_naive_reference)
{
    const ab_method *m = need_method("cca");
    const int pw = cca_param_index(m, "window"), pg = cca_param_index(m, "group");
    static const int windows[] = { 1, 37, 100 };
    static const int groups[] = { 1, 8, 16 };
    for (int causal = 0; causal <= 1; causal++)
        for (int wi = 0; wi < 3; wi++)
            for (int gi = 0; gi < 3; gi++) {
                tproblem t;
                const int heads = 2, n = 301, d = 32;
                problem_random(&t, heads, n, d, causal, 100 + (uint64_t)(wi * 3 + gi));
                ab_params p = { .n = 2 };
                p.v[pw] = windows[wi];
                p.v[pg] = groups[gi];
                const size_t cnt = (size_t)heads * n * d;
                float *out = malloc(cnt * sizeof *out);
                double *ref = malloc((size_t)n * d * sizeof *ref);
                cr_assert(out && ref);
                ab_layout l;
                ab_layout_init(&l, &t.pb.s, 64, 64);
                ab_instance in;
                cr_assert_eq(ab_instance_create(&in, m, &p, &t.pb.s), AB_OK);
                cr_assert_eq(ab_instance_select(&in, &t.pb, &l), AB_OK);
                cr_assert_eq(ab_layout_finalize(&l), AB_OK);
                cr_assert_eq(ab_instance_run(&in, &t.pb, &l, out), AB_OK);
                const double dens = ab_layout_density(&l);
                cr_expect(dens > 0 && dens <= 1, "density %g", dens);
                for (int h = 0; h < heads; h++) {
                    cca_naive(&t.pb, h, windows[wi], groups[gi], ref);
                    double num = 0, den = 0;
                    for (size_t i = 0; i < (size_t)n * d; i++) {
                        const double e = out[(size_t)h * n * d + i] - ref[i];
                        num += e * e;
                        den += ref[i] * ref[i];
                    }
                    cr_expect(sqrt(num / den) <= 1e-5, "cca causal=%d w=%d g=%d head %d: rel err %.3g",
                              causal, windows[wi], groups[gi], h, sqrt(num / den));
                }
                ab_instance_destroy(&in);
                ab_layout_free(&l);
                free(out);
                free(ref);
                problem_free(&t);
            }
}

/* The error against dense falls as the window grows and is ~0 at N. */
Test(block_selectors, cca_approaches_dense_as_window_grows)
{
    const ab_method *m = need_method("cca"), *dense = need_method("dense");
    tproblem t;
    const int heads = 2, n = 1024, d = 64;
    problem_needle(&t, heads, n, d, 0.5, 3.0, 0, 3);
    const size_t cnt = (size_t)heads * n * d;
    float *od = malloc(cnt * sizeof *od), *om = malloc(cnt * sizeof *om);
    cr_assert(od && om);
    ab_layout l;
    cr_assert_eq(method_do(dense, &t.pb, 64, NAN, &l, od), AB_OK);
    ab_layout_free(&l);
    static const int windows[] = { 16, 64, 256, 1024 };
    double prev_e = INFINITY, prev_d = 0;
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(method_do(m, &t.pb, 64, windows[i], &l, om), AB_OK);
        const double e = rel_l2(om, od, cnt), dd = ab_layout_density(&l);
        cr_log_info("cca window %d: density %.4f rel err vs dense %.4g", windows[i], dd, e);
        cr_expect(e < prev_e, "error did not fall: %.4g -> %.4g at window %d", prev_e, e, windows[i]);
        cr_expect(dd > prev_d, "density did not rise at window %d", windows[i]);
        prev_e = e;
        prev_d = dd;
        ab_layout_free(&l);
    }
    cr_expect(prev_e <= 1e-5, "window = N differs from dense by %.3g", prev_e);
    cr_expect(prev_d == 1.0, "window = N: density %.17g", prev_d);
    free(od);
    free(om);
    problem_free(&t);
}
