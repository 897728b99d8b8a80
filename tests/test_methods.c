/* test_methods.c — every registered method against the exact reference.
 *
 * Driven by the generated registry (ab_method_count / ab_method_at), so a new
 * file in methods/ is tested with no new test code: for each method, over a
 * table of shapes, block sizes and knob values, init → select → finalize →
 * validate → run (its own run() or ab_kernel_layout), then every row of every
 * head is compared with ab_ref_rows restricted to the layout (fp64).
 * Plus method-specific properties of window / oracle_topk_block / dense:
 * full coverage equals dense, oracle mass recall >= window's, determinism.
 *
 * Only registry.h and kernels.h are used: methods are called directly, not
 * through harness/plugin.c.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/plugin.h"
#include "harness/registry.h"
#include "kernels/kernels.h"

#define REL_TOL 1e-5

/* ---- problems ------------------------------------------------------------ */

typedef struct tproblem {
    ab_problem pb;
    float *q, *k, *v; /* (heads, seq_len, head_dim) each */
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

static void problem_make(tproblem *t, int heads, int n, int d, int causal, uint64_t seed)
{
    const size_t cnt = (size_t)heads * n * d;
    t->q = malloc(cnt * sizeof *t->q);
    t->k = malloc(cnt * sizeof *t->k);
    t->v = malloc(cnt * sizeof *t->v);
    cr_assert(t->q && t->k && t->v);
    uint64_t s = seed;
    for (size_t i = 0; i < cnt; i++) {
        t->q[i] = (float)gauss(&s);
        t->k[i] = (float)gauss(&s);
        t->v[i] = (float)gauss(&s);
    }
    memset(&t->pb, 0, sizeof t->pb);
    t->pb.s = (ab_shape){ .heads = heads, .seq_len = n, .head_dim = d, .causal = causal,
                          .scale = 1.0f / sqrtf((float)d) };
    t->pb.q = t->q;
    t->pb.k = t->k;
    t->pb.v = t->v;
    t->pb.seed = seed;
    t->pb.threads = 1;
}

static void problem_free(tproblem *t)
{
    free(t->q);
    free(t->k);
    free(t->v);
}

/* ---- calling a method ---------------------------------------------------- */

static const ab_method *method_by_name(const char *name)
{
    for (int i = 0; i < ab_method_count; i++)
        if (strcmp(ab_method_at(i)->name, name) == 0) return ab_method_at(i);
    return NULL;
}

/* Defaults, with the density knob set to `knob` unless it is NaN. */
static void method_params(const ab_method *m, double knob, ab_params *p)
{
    memset(p, 0, sizeof *p);
    while (p->n < AB_MAX_PARAMS && m->params[p->n].name) {
        p->v[p->n] = m->params[p->n].def;
        p->n++;
    }
    const int kp = m->density_knob.param;
    if (kp >= 0 && !isnan(knob)) {
        const ab_param *a = &m->params[kp];
        if (a->is_int) knob = round(knob);
        p->v[kp] = fmin(a->max, fmax(a->min, knob));
    }
}

/* Up to 3 knob values: the default and the points at 1/4 and 3/4 of the
 * range (in log space for log-scale knobs). No knob: one NaN. */
static int knob_values(const ab_method *m, double vals[3])
{
    vals[0] = NAN;
    if (m->density_knob.param < 0) return 1;
    const ab_param *a = &m->params[m->density_knob.param];
    vals[0] = a->def;
    int n = 1;
    static const double frac[2] = { 0.25, 0.75 };
    for (int f = 0; f < 2; f++) {
        double v;
        if (m->density_knob.log_scale && a->min > 0)
            v = exp(log(a->min) + frac[f] * (log(a->max) - log(a->min)));
        else
            v = a->min + frac[f] * (a->max - a->min);
        if (a->is_int) v = round(v);
        if (isfinite(v)) vals[n++] = v;
    }
    return n;
}

/* init → layout → select → finalize → validate → run → fini. The layout is
 * left for the caller to read and ab_layout_free (always initialised).
 * Returns AB_OK or the failing code with `stage` naming the step. */
static int method_run(const ab_method *m, const ab_problem *pb, int block, double knob,
                      ab_layout *l, float *out, const char **stage, char *err, size_t errlen)
{
    ab_params p;
    method_params(m, knob, &p);
    ab_layout_init(l, &pb->s, block, block);
    err[0] = 0;
    /* Through the harness's instance wrappers: the same calls, checks and
     * error buffer as a sweep (harness/plugin.h). */
    ab_instance in;
    *stage = "init";
    int rc = ab_instance_create(&in, m, &p, &pb->s);
    if (rc == AB_OK) {
        *stage = "select";
        rc = ab_instance_select(&in, pb, l);
    }
    if (rc == AB_OK) {
        *stage = "finalize";
        rc = ab_layout_finalize(l);
    }
    if (rc == AB_OK) {
        *stage = "validate";
        rc = ab_layout_validate(l, err, errlen);
    }
    if (rc == AB_OK) {
        *stage = "run";
        rc = ab_instance_run(&in, pb, l, out);
    }
    if (rc != AB_OK && !err[0]) snprintf(err, errlen, "%s", ab_instance_error(&in));
    ab_instance_destroy(&in);
    return rc;
}

/* Relative L2 error of head h of out against the fp64 reference restricted
 * to layout l (NULL: dense). */
static double head_rel_err(const ab_problem *pb, const ab_layout *l, const float *out, int h)
{
    const int n = pb->s.seq_len, d = pb->s.head_dim;
    int *rows = malloc((size_t)n * sizeof *rows);
    double *ref = malloc((size_t)n * d * sizeof *ref); /* (n, d) */
    cr_assert(rows && ref);
    for (int i = 0; i < n; i++) rows[i] = i;
    cr_assert_eq(ab_ref_rows(pb, h, rows, n, l, ref, NULL, NULL), AB_OK);
    const float *o = out + (size_t)h * n * d; /* (n, d) */
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)n * d; i++) {
        const double e = (double)o[i] - ref[i];
        num += e * e;
        den += ref[i] * ref[i];
    }
    free(rows);
    free(ref);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Relative L2 distance between two outputs, worst head. */
static double out_rel_diff(const float *a, const float *b, int heads, size_t per_head)
{
    double worst = 0;
    for (int h = 0; h < heads; h++) {
        double num = 0, den = 0;
        for (size_t i = 0; i < per_head; i++) {
            const double e = (double)a[h * per_head + i] - b[h * per_head + i];
            num += e * e;
            den += (double)b[h * per_head + i] * b[h * per_head + i];
        }
        const double r = den > 0 ? sqrt(num / den) : sqrt(num);
        worst = r > worst ? r : worst;
    }
    return worst;
}

/* ---- the registry-driven test -------------------------------------------- */

static void free_param_array(struct criterion_test_params *crp) { cr_free(crp->params); }

static struct criterion_test_params method_indices(void)
{
    const int n = ab_method_count;
    int *idx = cr_malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++) idx[i] = i;
    return cr_make_param_array(int, idx, (size_t)n, free_param_array);
}

ParameterizedTestParameters(methods, against_reference) { return method_indices(); }

ParameterizedTest(int *mi, methods, against_reference)
{
    const ab_method *m = ab_method_at(*mi);
    if (!(m->devices & AB_CPU) || !(m->phases & AB_PREFILL))
        cr_skip_test("%s: not a CPU prefill method", m->name);
    static const int lens[] = { 1, 100, 257, 512 };
    static const int dims[] = { 16, 64 };
    static const int blocks[] = { 64, 32 };
    double knobs[3];
    const int nknobs = knob_values(m, knobs);
    int checked = 0, unsupported = 0;

    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 2; b++)
            for (int causal = 0; causal <= 1; causal++) {
                tproblem t;
                const int n = lens[a], d = dims[b], heads = 2;
                problem_make(&t, heads, n, d, causal, 1000u + 17u * (unsigned)(a * 4 + b * 2 + causal));
                float *out = malloc((size_t)heads * n * d * sizeof *out);
                cr_assert(out);
                for (int bi = 0; bi < 2; bi++)
                    for (int ki = 0; ki < nknobs; ki++) {
                        ab_layout l;
                        const char *stage;
                        char err[256];
                        for (size_t i = 0; i < (size_t)heads * n * d; i++) out[i] = NAN;
                        const int rc = method_run(m, &t.pb, blocks[bi], knobs[ki], &l, out, &stage, err, sizeof err);
                        if (rc == AB_EUNSUPPORTED) {
                            unsupported++;
                            ab_layout_free(&l);
                            continue;
                        }
                        cr_expect_eq(rc, AB_OK, "%s N=%d d=%d causal=%d block=%d knob=%g: %s returned %d %s",
                                     m->name, n, d, causal, blocks[bi], knobs[ki], stage, rc, err);
                        if (rc == AB_OK) {
                            const double dens = ab_layout_density(&l);
                            cr_expect(dens >= 0.0 && dens <= 1.0, "%s N=%d d=%d causal=%d block=%d knob=%g: density %g",
                                      m->name, n, d, causal, blocks[bi], knobs[ki], dens);
                            if (l.kind != AB_LAYOUT_CUSTOM)
                                for (int h = 0; h < heads; h++) {
                                    const double e = head_rel_err(&t.pb, &l, out, h);
                                    cr_expect(e <= REL_TOL,
                                              "%s N=%d d=%d causal=%d block=%d knob=%g head %d: rel L2 error %.3g > %g (layout %s)",
                                              m->name, n, d, causal, blocks[bi], knobs[ki], h, e, REL_TOL,
                                              ab_layout_kind_name(l.kind));
                                }
                            checked++;
                        }
                        ab_layout_free(&l);
                    }
                free(out);
                problem_free(&t);
            }
    cr_log_info("%s: %d configurations checked, %d unsupported", m->name, checked, unsupported);
    cr_expect(checked > 0, "%s: no configuration ran", m->name);
}

/* Two complete runs give bit-identical layouts and outputs. */
ParameterizedTestParameters(methods, deterministic) { return method_indices(); }

ParameterizedTest(int *mi, methods, deterministic)
{
    const ab_method *m = ab_method_at(*mi);
    if (!(m->devices & AB_CPU) || !(m->phases & AB_PREFILL))
        cr_skip_test("%s: not a CPU prefill method", m->name);
    tproblem t;
    const int heads = 2, n = 257, d = 64;
    problem_make(&t, heads, n, d, 1, 42);
    const size_t cnt = (size_t)heads * n * d;
    float *out[2] = { calloc(cnt, sizeof(float)), calloc(cnt, sizeof(float)) };
    ab_layout l[2];
    cr_assert(out[0] && out[1]);
    for (int r = 0; r < 2; r++) {
        const char *stage;
        char err[256];
        const int rc = method_run(m, &t.pb, 64, NAN, &l[r], out[r], &stage, err, sizeof err);
        if (rc == AB_EUNSUPPORTED) cr_skip_test("%s: unsupported shape", m->name);
        cr_assert_eq(rc, AB_OK, "%s: %s returned %d %s", m->name, stage, rc, err);
    }
    cr_expect_eq(l[0].kind, l[1].kind);
    cr_expect(ab_layout_density(&l[0]) == ab_layout_density(&l[1]), "%s: density differs", m->name);
    const size_t nrows = (size_t)l[0].heads * l[0].n_qblocks;
    if (l[0].kind == l[1].kind && (l[0].kind == AB_LAYOUT_BLOCK || l[0].kind == AB_LAYOUT_MIXED)) {
        cr_assert(memcmp(l[0].blk_ptr, l[1].blk_ptr, (nrows + 1) * sizeof(int64_t)) == 0, "%s: blk_ptr differs", m->name);
        cr_expect(memcmp(l[0].blk_idx, l[1].blk_idx, (size_t)l[0].blk_ptr[nrows] * sizeof(int32_t)) == 0,
                  "%s: blk_idx differs", m->name);
    }
    if (l[0].kind == l[1].kind && (l[0].kind == AB_LAYOUT_TOKEN || l[0].kind == AB_LAYOUT_MIXED)) {
        cr_assert(memcmp(l[0].tok_ptr, l[1].tok_ptr, (nrows + 1) * sizeof(int64_t)) == 0, "%s: tok_ptr differs", m->name);
        cr_expect(memcmp(l[0].tok_idx, l[1].tok_idx, (size_t)l[0].tok_ptr[nrows] * sizeof(int32_t)) == 0,
                  "%s: tok_idx differs", m->name);
    }
    cr_expect(memcmp(out[0], out[1], cnt * sizeof(float)) == 0, "%s: outputs differ between two runs", m->name);
    for (int r = 0; r < 2; r++) {
        ab_layout_free(&l[r]);
        free(out[r]);
    }
    problem_free(&t);
}

/* ---- method-specific properties ------------------------------------------ */

/* At the knob's maximum, window and oracle_topk_block keep everything: density
 * 1 and the same output as dense. */
Test(methods, full_coverage_equals_dense)
{
    static const char *const names[] = { "window", "oracle_topk_block" };
    const ab_method *dense = method_by_name("dense");
    if (!dense) cr_skip_test("no dense method registered");
    for (int causal = 0; causal <= 1; causal++) {
        tproblem t;
        const int heads = 2, n = 300, d = 32;
        problem_make(&t, heads, n, d, causal, 7 + (uint64_t)causal);
        const size_t cnt = (size_t)heads * n * d;
        float *od = malloc(cnt * sizeof *od), *om = malloc(cnt * sizeof *om);
        cr_assert(od && om);
        ab_layout l;
        const char *stage;
        char err[256];
        cr_assert_eq(method_run(dense, &t.pb, 64, NAN, &l, od, &stage, err, sizeof err), AB_OK, "dense: %s %s", stage, err);
        ab_layout_free(&l);
        for (int i = 0; i < 2; i++) {
            const ab_method *m = method_by_name(names[i]);
            if (!m) continue;
            const double full = m->params[m->density_knob.param].max;
            const int rc = method_run(m, &t.pb, 64, full, &l, om, &stage, err, sizeof err);
            cr_expect_eq(rc, AB_OK, "%s: %s returned %d %s", m->name, stage, rc, err);
            if (rc == AB_OK) {
                cr_expect(ab_layout_density(&l) == 1.0, "%s causal=%d at knob %g: density %.17g, want 1",
                          m->name, causal, full, ab_layout_density(&l));
                const double e = out_rel_diff(om, od, heads, (size_t)n * d);
                cr_expect(e <= REL_TOL, "%s causal=%d at knob %g: differs from dense by %.3g", m->name, causal, full, e);
            }
            ab_layout_free(&l);
        }
        free(od);
        free(om);
        problem_free(&t);
    }
}

/* Mean over rows and heads of the dense softmax mass the layout keeps, from
 * ab_ref_rows' row max and row sum with and without the layout. */
static double mass_recall(const ab_problem *pb, const ab_layout *l)
{
    const int n = pb->s.seq_len, d = pb->s.head_dim;
    int *rows = malloc((size_t)n * sizeof *rows);
    double *o = malloc((size_t)n * d * sizeof *o); /* (n, d), unused */
    double *mx[2], *sm[2];
    for (int k = 0; k < 2; k++) {
        mx[k] = malloc((size_t)n * sizeof(double));
        sm[k] = malloc((size_t)n * sizeof(double));
        cr_assert(mx[k] && sm[k]);
    }
    cr_assert(rows && o);
    for (int i = 0; i < n; i++) rows[i] = i;
    double total = 0;
    for (int h = 0; h < pb->s.heads; h++) {
        cr_assert_eq(ab_ref_rows(pb, h, rows, n, NULL, o, mx[0], sm[0]), AB_OK);
        cr_assert_eq(ab_ref_rows(pb, h, rows, n, l, o, mx[1], sm[1]), AB_OK);
        for (int i = 0; i < n; i++)
            if (sm[1][i] > 0) total += sm[1][i] * exp(mx[1][i] - mx[0][i]) / sm[0][i];
    }
    for (int k = 0; k < 2; k++) {
        free(mx[k]);
        free(sm[k]);
    }
    free(rows);
    free(o);
    return total / ((double)n * pb->s.heads);
}

/* A few keys per head carry large logits for every query (they share a
 * direction u with all queries). The window misses the distant ones; the
 * oracle, at equal or lower density, must keep at least as much mass. */
Test(methods, oracle_recall_at_least_window)
{
    const ab_method *win = method_by_name("window"), *orc = method_by_name("oracle_topk_block");
    if (!win || !orc) cr_skip_test("window or oracle_topk_block not registered");
    const int heads = 2, n = 1024, d = 64, block = 64, heavy = 6;
    tproblem t;
    problem_make(&t, heads, n, d, 1, 2024);
    uint64_t s = 99;
    for (int h = 0; h < heads; h++) {
        float u[64];
        for (int c = 0; c < d; c++) u[c] = (float)gauss(&s);
        for (int i = 0; i < n; i++)
            for (int c = 0; c < d; c++) t.q[((size_t)h * n + i) * d + c] += u[c];
        for (int x = 0; x < heavy; x++) {
            const int j = (int)(uniform01(&s) * n);
            for (int c = 0; c < d; c++) t.k[((size_t)h * n + j) * d + c] += u[c];
        }
    }
    const size_t cnt = (size_t)heads * n * d;
    float *out = malloc(cnt * sizeof *out);
    cr_assert(out);
    const char *stage;
    char err[256];

    ab_layout lw;
    cr_assert_eq(method_run(win, &t.pb, block, 256, &lw, out, &stage, err, sizeof err), AB_OK, "window: %s %s", stage, err);
    const double dw = ab_layout_density(&lw), rw = mass_recall(&t.pb, &lw);
    ab_layout_free(&lw);

    double dor = 0, ror = -1;
    int k;
    for (k = n / block; k >= 1; k--) {
        ab_layout lo;
        cr_assert_eq(method_run(orc, &t.pb, block, k, &lo, out, &stage, err, sizeof err), AB_OK, "oracle: %s %s", stage, err);
        dor = ab_layout_density(&lo);
        if (dor <= dw) ror = mass_recall(&t.pb, &lo);
        ab_layout_free(&lo);
        if (dor <= dw) break;
    }
    cr_log_info("window: density %.4f recall %.4f; oracle topk=%d: density %.4f recall %.4f", dw, rw, k, dor, ror);
    cr_assert(k >= 1, "oracle never reached the window's density %.4f", dw);
    cr_expect(ror >= rw, "oracle recall %.4f < window recall %.4f (densities %.4f vs %.4f)", ror, rw, dor, dw);
    cr_expect(rw < 0.95, "test problem too easy: window recall %.4f", rw);
    free(out);
    problem_free(&t);
}
