/* test_methods.c — every registered method against the exact reference.
 *
 * Driven by the generated registry (ab_method_count / ab_method_at), so a new
 * file in methods/ is tested with no new test code: for each method, over a
 * table of shapes, block sizes and knob values, init → select → finalize →
 * validate → run (its own run() or ab_kernel_layout), then every row of every
 * head is compared with ab_ref_rows restricted to the layout (fp64).
 * The same under the non-trivial base masks (document, sliding window,
 * prefix-LM, chunked) at a smaller grid, and at full coverage every method
 * that reaches density 1 keeps exactly the pairs the mask allows under
 * every mask.
 * Plus method-specific properties of window / oracle_topk_block / dense:
 * full coverage equals dense, oracle mass recall >= window's, the oracles
 * choose only keys the mask allows, determinism.
 *
 * Methods are created and run through the checked wrappers of
 * runtime/plugin.c (ab_instance_*), as the sweep runs them.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/engine/metrics.h"
#include "runtime/layout.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"
#include "runtime/kernels.h"
#include "kernels/kernels.h"

#define REL_TOL 1e-5

/* ---- problems ------------------------------------------------------------ */

typedef struct tproblem {
    ab_problem pb;       /* pb.s.mask: &mask when made with a spec, else NULL; pb.heldout: &held */
    ab_problem held;     /* the held-out draw (ab_problem.heldout): the same generator at another seed */
    ab_mask mask;        /* the bound base mask (problem_make_mask) */
    float *q, *k, *v;    /* (heads, seq_len, head_dim) each */
    float *hq, *hk, *hv; /* the held-out draw's */
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
    memset(&t->mask, 0, sizeof t->mask);
    const size_t cnt = (size_t)heads * n * d;
    float **arr[6] = { &t->q, &t->k, &t->v, &t->hq, &t->hk, &t->hv };
    for (int i = 0; i < 6; i++) {
        *arr[i] = malloc(cnt * sizeof(float));
        cr_assert(*arr[i]);
    }
    for (int r = 0; r < 2; r++) { /* the draw, then the held-out draw */
        uint64_t s = r ? ab_heldout_seed(seed) : seed;
        float *q = r ? t->hq : t->q, *k = r ? t->hk : t->k, *v = r ? t->hv : t->v;
        for (size_t i = 0; i < cnt; i++) {
            q[i] = (float)gauss(&s);
            k[i] = (float)gauss(&s);
            v[i] = (float)gauss(&s);
        }
    }
    memset(&t->pb, 0, sizeof t->pb);
    t->pb.s = (ab_shape){
        .heads = heads, .seq_len = n, .head_dim = d, .causal = causal, .scale = 1.0f / sqrtf((float)d)
    };
    t->pb.q = t->q;
    t->pb.k = t->k;
    t->pb.v = t->v;
    t->pb.seed = seed;
    t->pb.threads = 1;
    t->held = t->pb;
    t->held.q = t->hq;
    t->held.k = t->hk;
    t->held.v = t->hv;
    t->held.seed = ab_heldout_seed(seed);
    t->pb.heldout = &t->held;
}

/* The same under the base mask `spec` bound to n and seed (s.mask and
 * s.causal from it). The tproblem must not move afterwards. */
static void problem_make_mask(tproblem *t, int heads, int n, int d, const char *spec, uint64_t seed)
{
    ab_mask m;
    char err[256];
    cr_assert_eq(ab_mask_make(&m, spec, n, seed, err, sizeof err), AB_OK, "mask %s at N=%d: %s", spec, n,
                 err);
    problem_make(t, heads, n, d, m.def->causal, seed);
    t->mask = m;
    t->pb.s.mask = t->held.s.mask = &t->mask;
}

static void problem_free(tproblem *t)
{
    free(t->q);
    free(t->k);
    free(t->v);
    free(t->hq);
    free(t->hk);
    free(t->hv);
    ab_mask_free(&t->mask);
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
static int method_run_in(const ab_method *m, const ab_problem *pb, int block, double knob, ab_layout *l,
                         float *out, const char **stage, char *err, size_t errlen, ab_instance *keep)
{
    ab_params p;
    method_params(m, knob, &p);
    ab_layout_init(l, &pb->s, block, block);
    err[0] = 0;
    /* Through the harness's instance wrappers: the same calls, checks and
     * error buffer as a sweep (runtime/plugin.h). */
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
    if (keep && rc == AB_OK)
        *keep = in; /* the caller destroys it */
    else
        ab_instance_destroy(&in);
    return rc;
}

static int method_run(const ab_method *m, const ab_problem *pb, int block, double knob, ab_layout *l,
                      float *out, const char **stage, char *err, size_t errlen)
{
    return method_run_in(m, pb, block, knob, l, out, stage, err, errlen, NULL);
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
                        const int rc =
                            method_run(m, &t.pb, blocks[bi], knobs[ki], &l, out, &stage, err, sizeof err);
                        if (rc == AB_EUNSUPPORTED) {
                            unsupported++;
                            ab_layout_free(&l);
                            continue;
                        }
                        cr_expect_eq(rc, AB_OK, "%s N=%d d=%d causal=%d block=%d knob=%g: %s returned %d %s",
                                     m->name, n, d, causal, blocks[bi], knobs[ki], stage, rc, err);
                        if (rc == AB_OK) {
                            /* ABI 5: select() states its work (docs/selectors.md) */
                            cr_expect(isfinite(l.select_flops) && l.select_flops >= 0 &&
                                          isfinite(l.select_bytes) && l.select_bytes >= 0,
                                      "%s N=%d d=%d causal=%d block=%d knob=%g: select() stated no cost "
                                      "(ab_layout_set_cost): flops %g bytes %g",
                                      m->name, n, d, causal, blocks[bi], knobs[ki], l.select_flops,
                                      l.select_bytes);
                            const double dens = ab_layout_density(&l);
                            cr_expect(dens >= 0.0 && dens <= 1.0,
                                      "%s N=%d d=%d causal=%d block=%d knob=%g: density %g", m->name, n, d,
                                      causal, blocks[bi], knobs[ki], dens);
                            if (l.kind != AB_LAYOUT_CUSTOM)
                                for (int h = 0; h < heads; h++) {
                                    const double e = head_rel_err(&t.pb, &l, out, h);
                                    cr_expect(e <= REL_TOL,
                                              "%s N=%d d=%d causal=%d block=%d knob=%g head %d: rel L2 error "
                                              "%.3g > %g (layout %s)",
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

/* Every method that takes bf16 inputs (ab_method.dtypes, ABI 9) on a bf16
 * problem: Q, K, V rounded to bf16, the copies in q16, k16, v16 and the
 * widened values in q, k, v; the output matches the fp64 reference of the
 * rounded values on the method's own layout within 8e-3 relative L2 (the
 * AMX path rounds P to bf16; widened, it is exact), causal, full and a
 * document mask, head_dim 32 (amx) and 16 (widened). */
ParameterizedTestParameters(methods, bf16_against_reference) { return method_indices(); }

ParameterizedTest(int *mi, methods, bf16_against_reference)
{
    const ab_method *m = ab_method_at(*mi);
    if (!(ab_method_dtypes(m) & AB_BF16) || !(m->phases & AB_PREFILL))
        cr_skip_test("%s: takes no bf16 inputs", m->name);
    static const char *const specs[] = { "causal", "full", "document:3" };
    static const int lens[] = { 100, 300 };
    static const int dims[] = { 32, 16 };
    double knobs[3];
    const int nknobs = knob_values(m, knobs);
    int checked = 0;
    for (int a = 0; a < 2; a++)
        for (int si = 0; si < 3; si++) {
            tproblem t;
            const int n = lens[a], d = dims[(a + si) % 2], heads = 2;
            problem_make_mask(&t, heads, n, d, specs[si], 3000u + 7u * (unsigned)(a * 3 + si));
            const size_t cnt = (size_t)heads * n * d;
            uint16_t *h16 = malloc(3 * cnt * sizeof *h16);
            float *out = malloc(cnt * sizeof *out);
            cr_assert(h16 && out);
            float *src[3] = { t.q, t.k, t.v };
            for (int w = 0; w < 3; w++)
                for (size_t i = 0; i < cnt; i++) {
                    h16[w * cnt + i] = ab_bf16_from_float(src[w][i]);
                    src[w][i] = ab_bf16_to_float(h16[w * cnt + i]);
                }
            t.pb.q16 = h16;
            t.pb.k16 = h16 + cnt;
            t.pb.v16 = h16 + 2 * cnt;
            for (int ki = 0; ki < nknobs; ki++) {
                ab_layout l;
                const char *stage;
                char err[256];
                for (size_t i = 0; i < cnt; i++) out[i] = NAN;
                const int rc = method_run(m, &t.pb, 32, knobs[ki], &l, out, &stage, err, sizeof err);
                cr_expect_eq(rc, AB_OK, "%s N=%d d=%d %s knob=%g: %s returned %d %s (layout %s)", m->name, n,
                             d, specs[si], knobs[ki], stage, rc, err, ab_layout_kind_name(l.kind));
                if (rc == AB_OK) {
                    for (int h = 0; h < heads; h++) {
                        const double e = head_rel_err(&t.pb, &l, out, h);
                        cr_expect(e <= 8e-3, "%s N=%d d=%d %s knob=%g head %d: rel L2 error %.3g (layout %s)",
                                  m->name, n, d, specs[si], knobs[ki], h, e, ab_layout_kind_name(l.kind));
                    }
                    checked++;
                }
                ab_layout_free(&l);
            }
            free(out);
            free(h16);
            problem_free(&t);
        }
    cr_log_info("%s: %d bf16 configurations checked", m->name, checked);
    cr_expect(checked > 0, "%s: no configuration ran", m->name);
}

/* Every method under the non-trivial base masks: the output matches the
 * fp64 reference restricted to its layout and the mask, and the reported
 * density equals kept allowed pairs over allowed pairs (a smaller grid than
 * against_reference: the masks, not the shapes, are what is new here). */
static const char *const test_masks[] = { "document:3", "document:6:longtail", "sliding:37", "prefix:0.3",
                                          "chunked:50" };
#define N_TEST_MASKS ((int)(sizeof test_masks / sizeof test_masks[0]))

ParameterizedTestParameters(methods, under_masks) { return method_indices(); }

ParameterizedTest(int *mi, methods, under_masks)
{
    const ab_method *m = ab_method_at(*mi);
    if (!(m->devices & AB_CPU) || !(m->phases & AB_PREFILL))
        cr_skip_test("%s: not a CPU prefill method", m->name);
    static const int lens[] = { 100, 257 };
    double knobs[3];
    int nknobs = knob_values(m, knobs);
    nknobs = nknobs > 2 ? 2 : nknobs; /* the default and 1/4 of the range */
    int checked = 0, unsupported = 0;
    for (int mk = 0; mk < N_TEST_MASKS; mk++)
        for (int a = 0; a < 2; a++) {
            tproblem t;
            const int n = lens[a], d = 32, heads = 2;
            problem_make_mask(&t, heads, n, d, test_masks[mk], 500u + 31u * (unsigned)(mk * 2 + a));
            float *out = malloc((size_t)heads * n * d * sizeof *out);
            cr_assert(out);
            for (int ki = 0; ki < nknobs; ki++) {
                ab_layout l;
                const char *stage;
                char err[256];
                for (size_t i = 0; i < (size_t)heads * n * d; i++) out[i] = NAN;
                const int block = a ? 32 : 64;
                const int rc = method_run(m, &t.pb, block, knobs[ki], &l, out, &stage, err, sizeof err);
                if (rc == AB_EUNSUPPORTED) {
                    unsupported++;
                    ab_layout_free(&l);
                    continue;
                }
                cr_expect_eq(rc, AB_OK, "%s mask=%s N=%d knob=%g: %s returned %d %s", m->name, test_masks[mk],
                             n, knobs[ki], stage, rc, err);
                if (rc == AB_OK && l.kind != AB_LAYOUT_CUSTOM) {
                    /* brute force: kept allowed pairs over allowed pairs */
                    int64_t kept = 0, allowed = 0, forbidden = 0;
                    for (int h = 0; h < heads; h++)
                        for (int i = 0; i < n; i++)
                            for (int j = 0; j < n; j++) {
                                const int c = ab_layout_contains(&l, h, i, j);
                                if (ab_mask_allows(&t.mask, i, j))
                                    allowed++, kept += c;
                                else
                                    forbidden += c;
                            }
                    cr_expect_eq(forbidden, 0, "%s mask=%s N=%d: %lld kept pairs the mask forbids", m->name,
                                 test_masks[mk], n, (long long)forbidden);
                    cr_expect_eq(allowed, heads * ab_mask_pairs(&t.mask));
                    cr_expect(ab_layout_density(&l) == (double)kept / (double)allowed,
                              "%s mask=%s N=%d knob=%g: density %.17g, brute force %lld/%lld", m->name,
                              test_masks[mk], n, knobs[ki], ab_layout_density(&l), (long long)kept,
                              (long long)allowed);
                    for (int h = 0; h < heads; h++) {
                        const double e = head_rel_err(&t.pb, &l, out, h);
                        cr_expect(e <= REL_TOL,
                                  "%s mask=%s N=%d knob=%g head %d: rel L2 error %.3g > %g (layout %s)",
                                  m->name, test_masks[mk], n, knobs[ki], h, e, REL_TOL,
                                  ab_layout_kind_name(l.kind));
                    }
                }
                if (rc == AB_OK) checked++;
                ab_layout_free(&l);
            }
            free(out);
            problem_free(&t);
        }
    cr_log_info("%s: %d configurations under masks checked, %d unsupported", m->name, checked, unsupported);
    cr_expect(checked + unsupported > 0, "%s: no configuration ran under any mask", m->name);
}

/* A base mask whose row spans are not exact (interval = 0), so every
 * consumer must test elements with allows(): causal, minus the keys at
 * distance 1 mod 3 from the query, minus key 5 for odd rows. None of the
 * shipped masks is like this; a future one (dilated, random) may be. */
static int gaps_allows(const ab_mask *m, int i, int j)
{
    (void)m;
    return j <= i && (i - j) % 3 != 1 && !(j == 5 && i % 2);
}
static void gaps_span(const ab_mask *m, int i, int *lo, int *hi)
{
    (void)m;
    *lo = 0;
    *hi = i + 1;
}
static const ab_mask_def gaps_def = {
    .abi = AB_ABI_VERSION,
    .name = "test_gaps",
    .syntax = "test_gaps",
    .summary = "test fixture",
    .causal = 1,
    .interval = 0,
    .allows = gaps_allows,
    .span = gaps_span,
};

ParameterizedTestParameters(methods, non_interval_mask) { return method_indices(); }

ParameterizedTest(int *mi, methods, non_interval_mask)
{
    const ab_method *m = ab_method_at(*mi);
    if (!(m->devices & AB_CPU) || !(m->phases & AB_PREFILL))
        cr_skip_test("%s: not a CPU prefill method", m->name);
    const int heads = 2, n = 150, d = 16;
    tproblem t;
    problem_make(&t, heads, n, d, 1, 4321);
    t.mask.def = &gaps_def;
    t.mask.seq_len = n;
    strcpy(t.mask.spec, "test_gaps");
    t.pb.s.mask = t.held.s.mask = &t.mask;
    float *out = malloc((size_t)heads * n * d * sizeof *out);
    cr_assert(out);
    double knobs[3];
    const int nknobs = knob_values(m, knobs) > 1 ? 2 : 1;
    for (int ki = 0; ki < nknobs; ki++) {
        ab_layout l;
        const char *stage;
        char err[256];
        for (size_t i = 0; i < (size_t)heads * n * d; i++) out[i] = NAN;
        const int rc = method_run(m, &t.pb, 32, knobs[ki], &l, out, &stage, err, sizeof err);
        if (rc == AB_EUNSUPPORTED) {
            ab_layout_free(&l);
            continue;
        }
        cr_expect_eq(rc, AB_OK, "%s knob=%g: %s returned %d %s", m->name, knobs[ki], stage, rc, err);
        if (rc == AB_OK && l.kind != AB_LAYOUT_CUSTOM) {
            int64_t kept = 0, allowed = 0;
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < n; j++)
                        if (gaps_allows(&t.mask, i, j))
                            allowed++, kept += ab_layout_contains(&l, h, i, j);
                        else
                            cr_expect(!ab_layout_contains(&l, h, i, j), "%s: keeps masked pair (%d, %d)",
                                      m->name, i, j);
            cr_expect(ab_layout_density(&l) == (double)kept / (double)allowed,
                      "%s knob=%g: density %.17g, brute %lld/%lld", m->name, knobs[ki], ab_layout_density(&l),
                      (long long)kept, (long long)allowed);
            for (int h = 0; h < heads; h++) {
                const double e = head_rel_err(&t.pb, &l, out, h);
                cr_expect(e <= REL_TOL, "%s knob=%g head %d: rel L2 error %.3g > %g (layout %s)", m->name,
                          knobs[ki], h, e, REL_TOL, ab_layout_kind_name(l.kind));
            }
        }
        ab_layout_free(&l);
    }
    free(out);
    t.mask.def = NULL;
    problem_free(&t);
}

/* At full coverage (dense, or the density knob at its density-maximising
 * end) a method that keeps everything under plain causal and full keeps
 * exactly the pairs every other base mask allows: density 1, kept pairs =
 * heads x the mask's allowed pairs (its fraction of N^2), the same output as
 * dense under that mask. */
ParameterizedTestParameters(methods, full_coverage_under_masks) { return method_indices(); }

ParameterizedTest(int *mi, methods, full_coverage_under_masks)
{
    const ab_method *m = ab_method_at(*mi);
    const ab_method *dense = method_by_name("dense");
    if (!(m->devices & AB_CPU) || !(m->phases & AB_PREFILL))
        cr_skip_test("%s: not a CPU prefill method", m->name);
    if (!dense) cr_skip_test("no dense method registered");
    double full = NAN;
    if (m->density_knob.param >= 0) {
        const ab_param *a = &m->params[m->density_knob.param];
        full = m->density_knob.increasing ? a->max : a->min;
    }
    static const char *const masks[] = { "causal",     "full",       "document:3", "document:6:longtail",
                                         "sliding:37", "prefix:0.3", "chunked:50" };
    const int heads = 2, n = 200, d = 16;
    int baseline = 1, checked = 0;
    for (int mk = 0; mk < 7; mk++) {
        tproblem t;
        problem_make_mask(&t, heads, n, d, masks[mk], 77u + (uint64_t)mk);
        const size_t cnt = (size_t)heads * n * d;
        float *od = malloc(cnt * sizeof *od), *om = malloc(cnt * sizeof *om);
        cr_assert(od && om);
        ab_layout l;
        const char *stage;
        char err[256];
        cr_assert_eq(method_run(dense, &t.pb, 64, NAN, &l, od, &stage, err, sizeof err), AB_OK,
                     "dense: %s %s", stage, err);
        ab_layout_free(&l);
        const int rc = method_run(m, &t.pb, 64, full, &l, om, &stage, err, sizeof err);
        if (rc == AB_EUNSUPPORTED) {
            cr_expect(mk >= 2, "%s declines the plain %s mask", m->name, masks[mk]);
        } else {
            cr_expect_eq(rc, AB_OK, "%s mask=%s: %s returned %d %s", m->name, masks[mk], stage, rc, err);
            const double dens = rc == AB_OK ? ab_layout_density(&l) : NAN;
            /* not a full-coverage method, or an approximation (a CUSTOM layout
             * with a stated error bound: its density counts work, not keys) */
            if (mk < 2 && (dens != 1.0 || (l.kind == AB_LAYOUT_CUSTOM && m->approx_tol > REL_TOL)))
                baseline = 0;
            if (rc == AB_OK && baseline) {
                cr_expect(dens == 1.0, "%s mask=%s at knob %g: density %.17g, but 1 under causal and full",
                          m->name, masks[mk], full, dens);
                if (l.kind != AB_LAYOUT_CUSTOM) {
                    const double frac = (double)ab_layout_kept_pairs(&l) / ((double)heads * n * n);
                    cr_expect(
                        ab_layout_kept_pairs(&l) == heads * ab_mask_pairs(&t.mask) &&
                            fabs(frac - ab_mask_fraction(&t.mask)) < 1e-15,
                        "%s mask=%s: kept pairs %lld (%.6f of N^2), the mask allows %lld per head (%.6f)",
                        m->name, masks[mk], (long long)ab_layout_kept_pairs(&l), frac,
                        (long long)ab_mask_pairs(&t.mask), ab_mask_fraction(&t.mask));
                }
                const double e = out_rel_diff(om, od, heads, (size_t)n * d);
                cr_expect(e <= REL_TOL, "%s mask=%s at knob %g: differs from dense by %.3g", m->name,
                          masks[mk], full, e);
                checked++;
            }
        }
        ab_layout_free(&l);
        free(od);
        free(om);
        problem_free(&t);
    }
    cr_log_info("%s: full coverage %s (%d masks)", m->name, baseline ? "checked" : "not reached", checked);
}

/* ABI 6: a CUSTOM-layout method approximates softmax attention; at its
 * default params its output stays within the relative L2 error it states
 * (ab_method.approx_tol) of the exact fp64 attention under the base mask, on
 * fixed-seed Gaussian problems (N = 512, d = 64, causal and not, 2 heads).
 * Methods with an exact layout state no bound (0). */
ParameterizedTestParameters(methods, approximation_bounded) { return method_indices(); }

ParameterizedTest(int *mi, methods, approximation_bounded)
{
    const ab_method *m = ab_method_at(*mi);
    if (!(m->devices & AB_CPU) || !(m->phases & AB_PREFILL))
        cr_skip_test("%s: not a CPU prefill method", m->name);
    const int heads = 2, n = 512, d = 64;
    double worst = 0;
    int custom = 0;
    for (int causal = 0; causal <= 1; causal++) {
        tproblem t;
        problem_make(&t, heads, n, d, causal, 4242u + (uint64_t)causal);
        float *out = malloc((size_t)heads * n * d * sizeof *out);
        cr_assert(out);
        ab_layout l;
        const char *stage;
        char err[256];
        const int rc = method_run(m, &t.pb, 64, NAN, &l, out, &stage, err, sizeof err);
        if (rc == AB_OK && l.kind == AB_LAYOUT_CUSTOM) {
            custom = 1;
            cr_expect(m->approx_tol > 0, "%s: a CUSTOM layout must state approx_tol (ABI 6)", m->name);
            for (int h = 0; h < heads; h++) {
                const double e = head_rel_err(&t.pb, NULL, out, h);
                worst = e > worst || isnan(e) ? e : worst;
                cr_expect(e <= m->approx_tol,
                          "%s causal=%d head %d: rel L2 error %.4g against exact attention > stated bound %g",
                          m->name, causal, h, e, m->approx_tol);
            }
        } else if (rc == AB_OK) {
            cr_expect(m->approx_tol == 0, "%s: exact %s layout but approx_tol %g (CUSTOM only)", m->name,
                      ab_layout_kind_name(l.kind), m->approx_tol);
        } else {
            cr_expect_eq(rc, AB_EUNSUPPORTED, "%s causal=%d: %s returned %d %s", m->name, causal, stage, rc,
                         err);
        }
        ab_layout_free(&l);
        free(out);
        problem_free(&t);
    }
    if (custom) cr_log_info("%s: worst rel L2 error %.4g (stated bound %g)", m->name, worst, m->approx_tol);
}

/* ABI 6: the implied weights of a CUSTOM method (ab_method.weights) are
 * non-negative, zero on keys the base mask hides, and reproduce run()'s
 * output: out[i] = sum_j w[j] v[j] / sum_j w[j] for every row of every head
 * (fp32 rounding), under causal, full and a document mask. */
ParameterizedTestParameters(methods, implied_weights) { return method_indices(); }

ParameterizedTest(int *mi, methods, implied_weights)
{
    const ab_method *m = ab_method_at(*mi);
    if (!m->weights) cr_skip_test("%s: no weights()", m->name);
    static const char *const masks[] = { "causal", "full", "document:3" };
    const int heads = 2, n = 257, d = 32;
    int checked = 0;
    for (int mk = 0; mk < 3; mk++) {
        tproblem t;
        problem_make_mask(&t, heads, n, d, masks[mk], 99u + (uint64_t)mk);
        float *out = malloc((size_t)heads * n * d * sizeof *out);
        double *w = malloc((size_t)n * sizeof *w), *o = malloc((size_t)d * sizeof *o);
        cr_assert(out && w && o);
        ab_layout l;
        ab_instance in;
        const char *stage;
        char err[256];
        const int rc = method_run_in(m, &t.pb, 64, NAN, &l, out, &stage, err, sizeof err, &in);
        if (rc == AB_OK && l.kind == AB_LAYOUT_CUSTOM) {
            for (int h = 0; h < heads; h++) {
                double num = 0, den = 0;
                int bad = 0;
                for (int i = 0; i < n && !bad; i++) {
                    const int wr = ab_instance_weights(&in, &t.pb, &l, h, i, w);
                    cr_assert_eq(wr, AB_OK, "%s mask=%s: weights(%d, %d) returned %d", m->name, masks[mk], h,
                                 i, wr);
                    double sw = 0;
                    for (int c = 0; c < d; c++) o[c] = 0;
                    for (int j = 0; j < n; j++) {
                        if (!(w[j] >= 0 && isfinite(w[j]))) {
                            cr_expect(0, "%s mask=%s: w[%d][%d] = %g", m->name, masks[mk], i, j, w[j]);
                            bad = 1;
                            break;
                        }
                        if (w[j] > 0 && !ab_mask_allows(&t.mask, i, j)) {
                            cr_expect(0, "%s mask=%s: row %d weighs key %d, which the mask hides", m->name,
                                      masks[mk], i, j);
                            bad = 1;
                            break;
                        }
                        sw += w[j];
                        const float *vj = t.pb.v + ((size_t)h * n + j) * d;
                        for (int c = 0; c < d; c++) o[c] += w[j] * vj[c];
                    }
                    if (bad) break;
                    cr_expect(sw > 0, "%s mask=%s: row %d has no weight", m->name, masks[mk], i);
                    const float *oi = out + ((size_t)h * n + i) * d;
                    for (int c = 0; c < d; c++) {
                        const double e = oi[c] - o[c] / sw;
                        num += e * e;
                        den += (o[c] / sw) * (o[c] / sw);
                    }
                }
                const double e = den > 0 ? sqrt(num / den) : sqrt(num);
                cr_expect(e <= 1e-4, "%s mask=%s head %d: run() and its weights disagree by %.3g (rel L2)",
                          m->name, masks[mk], h, e);
            }
            checked++;
        } else if (rc != AB_EUNSUPPORTED) {
            cr_expect_eq(rc, AB_OK, "%s mask=%s: %s returned %d %s", m->name, masks[mk], stage, rc, err);
            cr_expect(rc != AB_OK, "%s has weights() but its layout is %s, not custom", m->name,
                      ab_layout_kind_name(l.kind));
        }
        if (rc == AB_OK) ab_instance_destroy(&in);
        ab_layout_free(&l);
        free(out);
        free(w);
        free(o);
        problem_free(&t);
    }
    cr_expect(checked > 0, "%s: weights() never checked", m->name);
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
        cr_assert(memcmp(l[0].blk_ptr, l[1].blk_ptr, (nrows + 1) * sizeof(int64_t)) == 0,
                  "%s: blk_ptr differs", m->name);
        cr_expect(memcmp(l[0].blk_idx, l[1].blk_idx, (size_t)l[0].blk_ptr[nrows] * sizeof(int32_t)) == 0,
                  "%s: blk_idx differs", m->name);
    }
    if (l[0].kind == l[1].kind && (l[0].kind == AB_LAYOUT_TOKEN || l[0].kind == AB_LAYOUT_MIXED)) {
        cr_assert(memcmp(l[0].tok_ptr, l[1].tok_ptr, (nrows + 1) * sizeof(int64_t)) == 0,
                  "%s: tok_ptr differs", m->name);
        cr_expect(memcmp(l[0].tok_idx, l[1].tok_idx, (size_t)l[0].tok_ptr[nrows] * sizeof(int32_t)) == 0,
                  "%s: tok_idx differs", m->name);
    }
    cr_expect(memcmp(out[0], out[1], cnt * sizeof(float)) == 0, "%s: outputs differ between two runs",
              m->name);
    for (int r = 0; r < 2; r++) {
        ab_layout_free(&l[r]);
        free(out[r]);
    }
    problem_free(&t);
}

/* A timed call (pb->timed = 1: nothing but run() reads the layout, so a
 * method may skip the entries its run() does not need) computes the same
 * output, bit for bit, as the scored call, causal and not. */
ParameterizedTestParameters(methods, timed_call_computes_the_same) { return method_indices(); }

ParameterizedTest(int *mi, methods, timed_call_computes_the_same)
{
    const ab_method *m = ab_method_at(*mi);
    if (!(m->devices & AB_CPU) || !(m->phases & AB_PREFILL))
        cr_skip_test("%s: not a CPU prefill method", m->name);
    const int heads = 2, n = 257, d = 64;
    const size_t cnt = (size_t)heads * n * d;
    for (int causal = 0; causal < 2; causal++) {
        tproblem t;
        problem_make(&t, heads, n, d, causal, 43);
        float *out[2] = { calloc(cnt, sizeof(float)), calloc(cnt, sizeof(float)) };
        cr_assert(out[0] && out[1]);
        int ran = 1;
        for (int r = 0; r < 2 && ran; r++) {
            ab_layout l;
            const char *stage;
            char err[256];
            t.pb.timed = r;
            const int rc = method_run(m, &t.pb, 64, NAN, &l, out[r], &stage, err, sizeof err);
            ab_layout_free(&l);
            if (rc == AB_EUNSUPPORTED) {
                ran = 0;
                break;
            }
            cr_assert_eq(rc, AB_OK, "%s: %s returned %d %s (timed = %d)", m->name, stage, rc, err, r);
        }
        if (ran)
            cr_expect(memcmp(out[0], out[1], cnt * sizeof(float)) == 0,
                      "%s: a timed call's output differs from the scored call's (causal %d)", m->name,
                      causal);
        free(out[0]);
        free(out[1]);
        problem_free(&t);
    }
}

/* A method that keeps what select() computed for run() (reformer's sort,
 * scatterbrain's codes) must recognise the problem it was computed for:
 * select(A), select(B), run(A) gives what select(A), run(A) gives. */
ParameterizedTestParameters(methods, run_ignores_state_of_another_problem) { return method_indices(); }

ParameterizedTest(int *mi, methods, run_ignores_state_of_another_problem)
{
    const ab_method *m = ab_method_at(*mi);
    if (!(m->devices & AB_CPU) || !(m->phases & AB_PREFILL))
        cr_skip_test("%s: not a CPU prefill method", m->name);
    const int heads = 2, n = 257, d = 64;
    const size_t cnt = (size_t)heads * n * d;
    tproblem a, b;
    problem_make(&a, heads, n, d, 1, 43);
    problem_make(&b, heads, n, d, 1, 44);
    float *ref = calloc(cnt, sizeof(float)), *got = calloc(cnt, sizeof(float));
    cr_assert(ref && got);
    ab_layout l;
    const char *stage;
    char err[256];
    int rc = method_run(m, &a.pb, 64, NAN, &l, ref, &stage, err, sizeof err);
    ab_layout_free(&l);
    if (rc != AB_EUNSUPPORTED) {
        cr_assert_eq(rc, AB_OK, "%s: %s returned %d %s", m->name, stage, rc, err);
        ab_params p;
        method_params(m, NAN, &p);
        ab_instance in;
        ab_layout la, lb;
        ab_layout_init(&la, &a.pb.s, 64, 64);
        ab_layout_init(&lb, &b.pb.s, 64, 64);
        cr_assert_eq(ab_instance_create(&in, m, &p, &a.pb.s), AB_OK, "%s: init", m->name);
        cr_assert_eq(ab_instance_select(&in, &a.pb, &la), AB_OK, "%s: select A", m->name);
        cr_assert_eq(ab_layout_finalize(&la), AB_OK, "%s: finalize A", m->name);
        cr_assert_eq(ab_instance_select(&in, &b.pb, &lb), AB_OK, "%s: select B", m->name);
        cr_assert_eq(ab_instance_run(&in, &a.pb, &la, got), AB_OK, "%s: run A: %s", m->name,
                     ab_instance_error(&in));
        /* the same key sets (routing falls back to the layout kernel on a
         * problem it did not route: the same keys in another order) */
        double num = 0.0, den = 0.0;
        for (size_t x = 0; x < cnt; x++) {
            num += ((double)got[x] - ref[x]) * ((double)got[x] - ref[x]);
            den += (double)ref[x] * ref[x];
        }
        cr_expect(num <= REL_TOL * REL_TOL * den,
                  "%s: run() of problem A after select() of problem B differs from run() after select() of A "
                  "(relative L2 %.3g)",
                  m->name, den > 0 ? sqrt(num / den) : sqrt(num));
        ab_instance_destroy(&in);
        ab_layout_free(&la);
        ab_layout_free(&lb);
    }
    free(ref);
    free(got);
    problem_free(&a);
    problem_free(&b);
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
        cr_assert_eq(method_run(dense, &t.pb, 64, NAN, &l, od, &stage, err, sizeof err), AB_OK,
                     "dense: %s %s", stage, err);
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
                cr_expect(e <= REL_TOL, "%s causal=%d at knob %g: differs from dense by %.3g", m->name,
                          causal, full, e);
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
    cr_assert_eq(method_run(win, &t.pb, block, 256, &lw, out, &stage, err, sizeof err), AB_OK,
                 "window: %s %s", stage, err);
    const double dw = ab_layout_density(&lw), rw = mass_recall(&t.pb, &lw);
    ab_layout_free(&lw);

    double dor = 0, ror = -1;
    int k;
    for (k = n / block; k >= 1; k--) {
        ab_layout lo;
        cr_assert_eq(method_run(orc, &t.pb, block, k, &lo, out, &stage, err, sizeof err), AB_OK,
                     "oracle: %s %s", stage, err);
        dor = ab_layout_density(&lo);
        if (dor <= dw) ror = mass_recall(&t.pb, &lo);
        ab_layout_free(&lo);
        if (dor <= dw) break;
    }
    cr_log_info("window: density %.4f recall %.4f; oracle topk=%d: density %.4f recall %.4f", dw, rw, k, dor,
                ror);
    cr_assert(k >= 1, "oracle never reached the window's density %.4f", dw);
    cr_expect(ror >= rw, "oracle recall %.4f < window recall %.4f (densities %.4f vs %.4f)", ror, rw, dor,
              dw);
    cr_expect(rw < 0.95, "test problem too easy: window recall %.4f", rw);
    free(out);
    problem_free(&t);
}

/* The oracles are upper bounds under every base mask: they choose only among
 * keys the mask lets some row of the query block see, so an integer budget
 * k keeps min(k, candidates) entries per row and none is wasted on a block
 * or key the mask empties (document masks make most blocks empty). */
Test(methods, oracles_choose_allowed_keys)
{
    const ab_method *ob = method_by_name("oracle_topk_block"), *ot = method_by_name("oracle_topk_token");
    if (!ob || !ot) cr_skip_test("oracle_topk_block or oracle_topk_token not registered");
    static const char *const masks[] = { "document:5", "sliding:37", "prefix:0.3", "chunked:50" };
    const int heads = 2, n = 300, d = 16;
    for (int mk = 0; mk < 4; mk++) {
        tproblem t;
        problem_make_mask(&t, heads, n, d, masks[mk], 9u + (uint64_t)mk);
        float *out = malloc((size_t)heads * n * d * sizeof *out);
        cr_assert(out);
        for (int which = 0; which < 2; which++) {
            const ab_method *m = which ? ot : ob;
            const int budget = which ? 20 : 2;
            ab_layout l;
            const char *stage;
            char err[256];
            cr_assert_eq(method_run(m, &t.pb, 32, budget, &l, out, &stage, err, sizeof err), AB_OK,
                         "%s: %s %s", m->name, stage, err);
            for (int h = 0; h < heads; h++)
                for (int qb = 0; qb < l.n_qblocks; qb++) {
                    const int r0 = qb * l.block_q, r1 = r0 + l.block_q < n ? r0 + l.block_q : n;
                    const size_t row = (size_t)h * l.n_qblocks + qb;
                    int cand = 0, kept = 0, wasted = 0;
                    if (!which) { /* key blocks */
                        for (int kb = 0; kb < l.n_kblocks; kb++)
                            cand += ab_mask_block(&t.mask, r0, r1, kb * l.block_k, (kb + 1) * l.block_k) !=
                                    AB_BLOCK_EMPTY;
                        for (int64_t e = l.blk_ptr[row]; e < l.blk_ptr[row + 1]; e++, kept++) {
                            const int kb = l.blk_idx[e];
                            wasted += ab_mask_block(&t.mask, r0, r1, kb * l.block_k, (kb + 1) * l.block_k) ==
                                      AB_BLOCK_EMPTY;
                        }
                    } else { /* key tokens */
                        for (int j = 0; j < n; j++)
                            cand += ab_mask_block(&t.mask, r0, r1, j, j + 1) != AB_BLOCK_EMPTY;
                        for (int64_t e = l.tok_ptr[row]; e < l.tok_ptr[row + 1]; e++, kept++) {
                            const int j = l.tok_idx[e];
                            wasted += ab_mask_block(&t.mask, r0, r1, j, j + 1) == AB_BLOCK_EMPTY;
                        }
                    }
                    cr_expect_eq(wasted, 0,
                                 "%s mask=%s head %d qblock %d: %d of %d kept entries the mask empties",
                                 m->name, masks[mk], h, qb, wasted, kept);
                    cr_expect_eq(kept, budget < cand ? budget : cand,
                                 "%s mask=%s head %d qblock %d: %d kept, budget %d, %d candidates", m->name,
                                 masks[mk], h, qb, kept, budget, cand);
                }
            ab_layout_free(&l);
        }
        free(out);
        problem_free(&t);
    }
}

/* ---- quality metrics under a base mask (harness/engine/metrics.c) ---------------- */

/* Allocations of a refset, freed together. */
typedef struct arena {
    void *p[8];
    int n;
} arena;

static void *arena_alloc(void *ctx, size_t bytes)
{
    arena *a = ctx;
    cr_assert(a->n < 8);
    return a->p[a->n++] = malloc(bytes ? bytes : 1);
}

/* Mass and top-k recall range over the keys the base mask allows (the
 * shipped masks and the non-interval test_gaps fixture above): the dense
 * top-k of a row holds only allowed keys, a layout that keeps every block
 * scores 1 (its kept keys in other documents count for nothing), one that
 * keeps only key block 0 scores 0 on rows of later documents, and the mass
 * recall equals the brute-force ratio of ab_ref_rows sums. */
Test(metrics, recall_over_allowed_keys)
{
    static const char *const masks[] = { "document:4", "sliding:37", "prefix:0.3", "chunked:50",
                                         "causal",     "full",       "test_gaps" };
    const int heads = 2, n = 300, d = 16, topk = 8;
    for (int mk = 0; mk < 7; mk++) {
        tproblem t;
        if (mk < 6) {
            problem_make_mask(&t, heads, n, d, masks[mk], 31u + (uint64_t)mk);
        } else { /* the non-interval fixture mask */
            problem_make(&t, heads, n, d, 1, 31u + (uint64_t)mk);
            t.mask.def = &gaps_def;
            t.mask.seq_len = n;
            t.pb.s.mask = t.held.s.mask = &t.mask;
        }
        int rows[300];
        for (int i = 0; i < n; i++) rows[i] = i;
        arena a = { .n = 0 };
        ab_refset r;
        cr_assert_eq(ab_refset_build(&r, &t.pb, rows, n, topk, arena_alloc, &a), AB_OK);
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < n; i++) {
                const int32_t *tk = r.topk_idx + ((size_t)h * n + i) * topk;
                const int64_t allowed = ab_mask_row_count(&t.mask, i, 0, n);
                int cnt = 0;
                for (int c = 0; c < topk; c++)
                    if (tk[c] >= 0) {
                        cnt++;
                        cr_expect(ab_mask_allows(&t.mask, i, tk[c]), "%s row %d: top-k key %d is masked",
                                  masks[mk], i, tk[c]);
                    }
                cr_expect_eq(cnt, allowed < topk ? allowed : topk, "%s row %d: %d top-k keys, %lld allowed",
                             masks[mk], i, cnt, (long long)allowed);
            }
        float *out = malloc((size_t)heads * n * d * sizeof *out);
        cr_assert(out);
        cr_assert_eq(ab_kernel_flash(&t.pb, out), AB_OK);
        for (int variant = 0; variant < 2; variant++) {
            /* 0: every key block (all rows); 1: key block 0 only */
            ab_layout l;
            ab_layout_init(&l, &t.pb.s, 64, 64);
            for (int h = 0; h < heads; h++)
                for (int qb = 0; qb < l.n_qblocks; qb++)
                    cr_assert_eq(variant ? ab_layout_add_block(&l, h, qb, 0)
                                         : ab_layout_add_block_range(&l, h, qb, 0, l.n_kblocks),
                                 AB_OK);
            cr_assert_eq(ab_layout_finalize(&l), AB_OK);
            ab_scores sc;
            cr_assert_eq(ab_score(&r, &t.pb, &l, out, &sc), AB_OK);
            const double want = mass_recall(&t.pb, &l);
            cr_expect(fabs(sc.recall_mass - want) < 1e-9,
                      "%s variant %d: mass recall %.12f, brute force %.12f", masks[mk], variant,
                      sc.recall_mass, want);
            if (!variant) {
                cr_expect(fabs(sc.recall_mass - 1.0) < 1e-9 && sc.recall_topk == 1.0,
                          "%s: full coverage scores mass %.12f top-k %.12f", masks[mk], sc.recall_mass,
                          sc.recall_topk);
            } else {
                /* brute-force top-k recall: the share of each row's top-k in key block 0 */
                double tot = 0;
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < n; i++) {
                        const int32_t *tk = r.topk_idx + ((size_t)h * n + i) * topk;
                        int hit = 0, cnt = 0;
                        for (int c = 0; c < topk; c++)
                            if (tk[c] >= 0) cnt++, hit += tk[c] < 64;
                        tot += cnt ? (double)hit / cnt : 1.0;
                    }
                cr_expect(fabs(sc.recall_topk - tot / (heads * n)) < 1e-12,
                          "%s: top-k recall %.12f, brute force %.12f", masks[mk], sc.recall_topk,
                          tot / (heads * n));
            }
            ab_layout_free(&l);
        }
        free(out);
        for (int i = 0; i < a.n; i++) free(a.p[i]);
        problem_free(&t);
    }
}
