/* check.c — `attnbench check`: every method × device × a small grid of
 * shapes (N including 1 and odd lengths, d, causal, block size, knob
 * values), in the spirit of ggml's test-backend-ops: the method runs through
 * the harness's checked wrappers (harness/plugin.h) and is compared with the
 * exact fp64 reference restricted to its own layout (ab_ref_rows, relative
 * L2 error <= 1e-5 per head). Also checked per configuration: the layout is
 * structurally valid (ab_layout_validate: CSR monotone, sorted, unique, in
 * range), no pair beyond the diagonal counts under a causal mask, the density
 * is in [0, 1] and equals a brute-force count over every (head, i, j); and
 * once per method: the registry's own checks (ABI, name, knob index) and
 * that the density knob moves density, monotonically (warnings only: a knob
 * may move density only at larger N).
 * Problems come from the needle task's haystack (random Gaussian Q, K, V
 * when the shape is too small for it). GPU: "skipped" until GPU execution
 * exists (and always without a GPU).
 */
#include "harness/check.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/cli.h"
#include "harness/plugin.h"
#include "harness/registry.h"
#include "kernels/kernels.h"

/* ---- problems ------------------------------------------------------------ */

typedef struct cproblem {
    ab_problem pb;
    float *q, *k, *v; /* (heads, seq_len, head_dim) each */
    int from_task;    /* 1: needle haystack, 0: Gaussian */
} cproblem;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double gauss(uint64_t *s)
{
    const double u1 = ((splitmix64(s) >> 11) + 0.5) * 0x1.0p-53, u2 = ((splitmix64(s) >> 11) + 0.5) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void problem_free(cproblem *c)
{
    free(c->q);
    free(c->k);
    free(c->v);
    c->q = c->k = c->v = NULL;
}

static int problem_make(cproblem *c, int heads, int n, int d, int causal, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    const size_t cnt = (size_t)heads * n * d;
    c->q = malloc((cnt ? cnt : 1) * sizeof *c->q);
    c->k = malloc((cnt ? cnt : 1) * sizeof *c->k);
    c->v = malloc((cnt ? cnt : 1) * sizeof *c->v);
    if (!c->q || !c->k || !c->v) { problem_free(c); return AB_ENOMEM; }
    const ab_shape s = { heads, n, d, causal, 1.0f / sqrtf((float)d), NULL };
    const ab_task *t = ab_task_find("needle");
    if (t) {
        ab_params tp;
        ab_params_defaults(t->params, AB_TASK_MAX_PARAMS, &tp);
        ab_answer ans;
        memset(&ans, 0, sizeof ans);
        char why[200] = "";
        ab_task_input in = { .p = &tp, .str = NULL, .s = s, .seed = seed, .depth = 0.5, .err = why, .errlen = sizeof why };
        c->from_task = t->generate(&in, c->q, c->k, c->v, &ans) == AB_OK;
        ab_answer_free(&ans);
    }
    if (!c->from_task) {
        uint64_t st = seed;
        for (size_t i = 0; i < cnt; i++) {
            c->q[i] = (float)gauss(&st);
            c->k[i] = (float)gauss(&st);
            c->v[i] = (float)gauss(&st);
        }
    }
    c->pb = (ab_problem){ s, c->q, c->k, c->v, seed, 1 };
    return AB_OK;
}

/* ---- one configuration ------------------------------------------------------ */

static void say(char *report, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *report, size_t n, const char *fmt, ...)
{
    if (!report || !n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(report, n, fmt, ap);
    va_end(ap);
}

/* Defaults, with the knob at v (NaN: default). */
static void knob_params(const ab_method *m, double v, ab_params *p)
{
    ab_params_defaults(m->params, AB_MAX_PARAMS, p);
    const int kp = m->density_knob.param;
    if (kp >= 0 && !isnan(v)) {
        const ab_param *a = &m->params[kp];
        v = fmin(a->max, fmax(a->min, v));
        p->v[kp] = a->is_int ? round(v) : v;
    }
}

/* Knob value at fraction f of its range (log space for log-scale knobs). */
static double knob_at(const ab_method *m, double f)
{
    const ab_param *a = &m->params[m->density_knob.param];
    if (m->density_knob.log_scale && a->min > 0) return exp(log(a->min) + f * (log(a->max) - log(a->min)));
    return a->min + f * (a->max - a->min);
}

/* Instance, select, finalize. The layout is always initialised; the caller
 * frees it. Returns AB_OK or the code, with where/why in msg. */
static int do_select(const ab_method *m, const ab_problem *pb, int block, double knob, ab_instance *in,
                     ab_layout *l, char *msg, size_t ml)
{
    ab_params p;
    knob_params(m, knob, &p);
    ab_layout_init(l, &pb->s, block, block);
    int rc = ab_instance_create(in, m, &p, &pb->s);
    const char *stage = "init";
    if (rc == AB_OK) { stage = "select"; rc = ab_instance_select(in, pb, l); }
    if (rc == AB_OK) { stage = "finalize"; rc = ab_layout_finalize(l); }
    if (rc != AB_OK) {
        const char *e = ab_instance_error(in);
        say(msg, ml, "%s returned %d (%s)%s%s", stage, rc, ab_strerror(rc), *e ? ": " : "", e);
    }
    return rc;
}

/* Relative L2 error of head h of out against the reference restricted to l. */
static int head_err(const ab_problem *pb, const ab_layout *l, const float *out, int h, double *err)
{
    const int n = pb->s.seq_len, d = pb->s.head_dim;
    int *rows = malloc((size_t)n * sizeof *rows);
    double *ref = malloc((size_t)n * d * sizeof *ref); /* (n, head_dim) */
    int rc = rows && ref ? AB_OK : AB_ENOMEM;
    for (int i = 0; rc == AB_OK && i < n; i++) rows[i] = i;
    if (rc == AB_OK) rc = ab_ref_rows(pb, h, rows, n, l, ref, NULL, NULL);
    if (rc == AB_OK) {
        const float *o = out + (size_t)h * n * d; /* (n, head_dim) */
        double num = 0, den = 0;
        for (size_t i = 0; i < (size_t)n * d; i++) {
            const double e = (double)o[i] - ref[i];
            num += isnan(e) ? INFINITY : e * e;
            den += ref[i] * ref[i];
        }
        *err = den > 0 ? sqrt(num / den) : sqrt(num);
    }
    free(rows);
    free(ref);
    return rc;
}

static void note_kind(ab_check_result *r, ab_layout_kind k)
{
    const char *name = ab_layout_kind_name(k);
    if (strstr(r->layouts, name)) return;
    const size_t len = strlen(r->layouts);
    snprintf(r->layouts + len, sizeof r->layouts - len, "%s%s", len ? "," : "", name);
}

/* One configuration. Returns PASS, FAIL (msg) or SKIP (unsupported). */
static int check_config(const ab_method *m, const ab_problem *pb, int block, double knob, ab_check_result *r,
                        char *msg, size_t ml)
{
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    ab_instance in;
    ab_layout l;
    char e[256] = "";
    int verdict = AB_CHECK_PASS;
    float *out = NULL;
    int rc = do_select(m, pb, block, knob, &in, &l, e, sizeof e);
    if (rc == AB_EUNSUPPORTED) { verdict = AB_CHECK_SKIP; goto done; }
    if (rc != AB_OK) { say(msg, ml, "%s", e); verdict = AB_CHECK_FAIL; goto done; }
    note_kind(r, l.kind);
    if (ab_layout_validate(&l, e, sizeof e) != AB_OK) {
        say(msg, ml, "invalid %s layout: %s", ab_layout_kind_name(l.kind), e);
        verdict = AB_CHECK_FAIL;
        goto done;
    }
    const double dens = ab_layout_density(&l);
    if (!(dens >= 0.0 && dens <= 1.0)) {
        say(msg, ml, "density %g outside [0, 1]", dens);
        verdict = AB_CHECK_FAIL;
        goto done;
    }
    if (l.kind != AB_LAYOUT_CUSTOM && N <= 512) {
        /* brute force: every (h, i, j), against the reported density */
        int64_t kept = 0, valid = 0, future = 0;
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) {
                    const int c = ab_layout_contains(&l, h, i, j);
                    if (pb->s.causal && j > i) { future += c; continue; }
                    valid++;
                    kept += c;
                }
        const double bf = valid ? (double)kept / (double)valid : 0.0;
        if (future) {
            say(msg, ml, "%lld kept pairs beyond the diagonal under a causal mask", (long long)future);
            verdict = AB_CHECK_FAIL;
            goto done;
        }
        if (fabs(bf - dens) > 1e-12 || kept != ab_layout_kept_pairs(&l) || valid != ab_layout_valid_pairs(&l)) {
            say(msg, ml, "reported density %.15g, brute-force count %.15g (%lld/%lld pairs)", dens, bf,
                (long long)kept, (long long)valid);
            verdict = AB_CHECK_FAIL;
            goto done;
        }
    }
    const size_t cnt = (size_t)H * N * d;
    out = malloc((cnt ? cnt : 1) * sizeof *out);
    if (!out) { say(msg, ml, "out of memory"); verdict = AB_CHECK_FAIL; goto done; }
    for (size_t i = 0; i < cnt; i++) out[i] = NAN;
    rc = ab_instance_run(&in, pb, &l, out);
    if (rc == AB_EUNSUPPORTED) { verdict = AB_CHECK_SKIP; goto done; }
    if (rc != AB_OK) {
        const char *ie = ab_instance_error(&in);
        say(msg, ml, "run returned %d (%s)%s%s", rc, ab_strerror(rc), *ie ? ": " : "", ie);
        verdict = AB_CHECK_FAIL;
        goto done;
    }
    /* a custom layout has no key set to restrict the reference to: it is
     * compared with nothing here (its own tests must cover it) */
    if (l.kind != AB_LAYOUT_CUSTOM)
        for (int h = 0; h < H; h++) {
            double err = 0;
            if ((rc = head_err(pb, &l, out, h, &err))) {
                say(msg, ml, "reference failed: %s", ab_strerror(rc));
                verdict = AB_CHECK_FAIL;
                goto done;
            }
            if (err > r->worst_err || isnan(err)) r->worst_err = isnan(err) ? INFINITY : err;
            if (!(err <= AB_CHECK_TOL)) {
                say(msg, ml, "head %d: relative L2 error %.3g > %g against the fp64 reference on its %s layout", h, err,
                    AB_CHECK_TOL, ab_layout_kind_name(l.kind));
                verdict = AB_CHECK_FAIL;
                goto done;
            }
        }
done:
    free(out);
    ab_layout_free(&l);
    ab_instance_destroy(&in);
    return verdict;
}

/* Density at 7 knob values over the knob's range (N = 512, causal). */
static int knob_sweep(const ab_method *m, const ab_problem *pb, ab_check_result *r, char *msg, size_t ml)
{
    double prev = NAN, first = NAN, last = NAN;
    const int inc = m->density_knob.increasing;
    for (int t = 0; t <= 6; t++) {
        ab_instance in;
        ab_layout l;
        char e[256] = "";
        const int rc = do_select(m, pb, 64, knob_at(m, t / 6.0), &in, &l, e, sizeof e);
        const double dv = rc == AB_OK ? ab_layout_density(&l) : NAN;
        ab_layout_free(&l);
        ab_instance_destroy(&in);
        if (rc == AB_EUNSUPPORTED) continue;
        if (rc != AB_OK) { say(msg, ml, "knob %s=%g: %s", m->params[m->density_knob.param].name, knob_at(m, t / 6.0), e); return AB_CHECK_FAIL; }
        if (isnan(first)) first = dv;
        last = dv;
        if (!isnan(prev) && (inc ? dv < prev - 1e-9 : dv > prev + 1e-9)) r->inversions++;
        prev = dv;
    }
    r->dens_lo = inc ? first : last;
    r->dens_hi = inc ? last : first;
    if (!isnan(first) && first == last) {
        say(msg, ml, "ok; warning: the density knob %s does not move density at N = 512 (%.4g over its whole range)",
            m->params[m->density_knob.param].name, first);
        r->inversions = -1;
    }
    return AB_CHECK_PASS;
}

int ab_check_method(const ab_method *m, int quick, ab_check_result *res, char *report, size_t n)
{
    ab_check_result r0;
    ab_check_result *r = res ? res : &r0;
    memset(r, 0, sizeof *r);
    r->dens_lo = r->dens_hi = NAN;
    say(report, n, "ok");
    char err[256];
    if (ab_registry_check(&m, 1, err, sizeof err)) { say(report, n, "registry check: %s", err); return AB_CHECK_FAIL; }
    if (!(m->devices & AB_CPU) || !(m->phases & AB_PREFILL)) {
        say(report, n, "skipped: not a CPU prefill method");
        return AB_CHECK_SKIP;
    }
    static const int lens_q[] = { 1, 77, 256 }, lens_f[] = { 1, 100, 257, 512 };
    static const int dims[] = { 16, 64 }, blocks[] = { 64, 32 };
    const int *lens = quick ? lens_q : lens_f;
    const int nlens = quick ? 3 : 4, nblocks = quick ? 1 : 2, heads = quick ? 2 : 3;
    double knobs[3] = { NAN, NAN, NAN };
    int nknobs = 1;
    if (m->density_knob.param >= 0) {
        knobs[0] = m->params[m->density_knob.param].def;
        knobs[nknobs++] = knob_at(m, 0.25);
        if (!quick) knobs[nknobs++] = knob_at(m, 0.75);
    }
    char msg[320] = "";
    int verdict = AB_CHECK_PASS;
    for (int a = 0; a < nlens && verdict != AB_CHECK_FAIL; a++)
        for (int b = 0; b < 2 && verdict != AB_CHECK_FAIL; b++)
            for (int causal = 0; causal <= 1 && verdict != AB_CHECK_FAIL; causal++) {
                cproblem c;
                const int N = lens[a], d = dims[b];
                if (problem_make(&c, heads, N, d, causal, 1000u + 17u * (unsigned)(a * 4 + b * 2 + causal))) {
                    say(report, n, "out of memory");
                    return AB_CHECK_FAIL;
                }
                for (int bi = 0; bi < nblocks && verdict != AB_CHECK_FAIL; bi++)
                    for (int ki = 0; ki < nknobs && verdict != AB_CHECK_FAIL; ki++) {
                        const int v = check_config(m, &c.pb, blocks[bi], knobs[ki], r, msg, sizeof msg);
                        if (v == AB_CHECK_SKIP) r->unsupported++;
                        else r->configs++;
                        if (v == AB_CHECK_FAIL) {
                            verdict = AB_CHECK_FAIL;
                            say(report, n, "N=%d d=%d causal=%d block=%d %s=%g: %s", N, d, causal, blocks[bi],
                                m->density_knob.param >= 0 ? m->params[m->density_knob.param].name : "knob",
                                isnan(knobs[ki]) ? 0.0 : knobs[ki], msg);
                        }
                    }
                problem_free(&c);
            }
    if (verdict == AB_CHECK_PASS && r->configs == 0) {
        say(report, n, "every configuration was unsupported");
        return AB_CHECK_FAIL;
    }
    if (verdict == AB_CHECK_PASS && m->density_knob.param >= 0) {
        cproblem c;
        if (problem_make(&c, 2, 512, 64, 1, 4242)) { say(report, n, "out of memory"); return AB_CHECK_FAIL; }
        verdict = knob_sweep(m, &c.pb, r, msg, sizeof msg);
        problem_free(&c);
        if (verdict == AB_CHECK_FAIL || r->inversions < 0) say(report, n, "%s", msg);
        else if (r->inversions > 0)
            say(report, n, "ok; warning: density not monotone in %s (%d inversions over 7 values)",
                m->params[m->density_knob.param].name, r->inversions);
    }
    return verdict;
}

/* ---- the command ------------------------------------------------------------ */

static int listed(const char *list, const char *name)
{
    const size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *c = strchr(p, ',');
        const size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        p = c ? c + 1 : NULL;
    }
    return 0;
}

int ab_cmd_check(int argc, char **argv)
{
    const char *methods = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: attnbench check [--methods a,b] [--quick]\n"
                   "Check every registered method (or the listed ones) on each device over a grid of\n"
                   "shapes (N = 1, 100, 257, 512; d = 16, 64; causal and not; blocks 64 and 32; three\n"
                   "knob values; --quick: N = 1, 77, 256, block 64, two knob values): the layout is\n"
                   "valid, its density equals a brute-force count, and the output matches the fp64\n"
                   "reference restricted to the layout within %g relative L2 error per head.\n"
                   "Exit: 0 all pass, 1 some method fails, 2 usage error.\n", AB_CHECK_TOL);
            return 0;
        } else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--methods") && i + 1 < argc) methods = argv[++i];
        else if (!strncmp(argv[i], "--methods=", 10)) methods = argv[i] + 10;
        else { ab_errorf("check: unknown argument '%s' (see attnbench check --help)", argv[i]); return 2; }
    }
    if (methods) /* every listed name must exist */
        for (const char *p = methods; *p;) {
            const char *c = strchr(p, ',');
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(c ? c - p : (ptrdiff_t)strlen(p)), p);
            if (!ab_method_find(name)) { ab_errorf("check: unknown method '%s' (attnbench list methods)", name); return 2; }
            p = c ? c + 1 : p + strlen(p);
        }
    char gpu_why[256] = "";
    const int gpus = ab_gpu_count(gpu_why, sizeof gpu_why);
    printf("attnbench check%s: tolerance %g relative L2 vs the fp64 reference on each method's layout\n\n",
           quick ? " --quick" : "", AB_CHECK_TOL);
    printf("%-20s %-6s %-6s %7s %10s  %-18s %-17s %s\n", "method", "device", "result", "configs", "worst_err",
           "density lo..hi", "layouts", "detail");
    int failed = 0, passed = 0;
    for (int i = 0; i < ab_method_count; i++) {
        const ab_method *m = ab_method_at(i);
        if (methods && !listed(methods, m->name)) continue;
        ab_check_result r;
        char report[512];
        const int v = ab_check_method(m, quick, &r, report, sizeof report);
        char dr[32] = "-";
        if (!isnan(r.dens_lo)) snprintf(dr, sizeof dr, "%.3f..%.3f", r.dens_lo, r.dens_hi);
        printf("%-20s %-6s %-6s %7d %10.2e  %-18s %-17s %s\n", m->name, "cpu",
               v == AB_CHECK_PASS ? "pass" : v == AB_CHECK_FAIL ? "FAIL" : "skip", r.configs, r.worst_err, dr,
               r.layouts[0] ? r.layouts : "-", report);
        fflush(stdout);
        failed += v == AB_CHECK_FAIL;
        passed += v == AB_CHECK_PASS;
        printf("%-20s %-6s %-6s %7s %10s  %-18s %-17s skipped: %s%s%s%s\n", m->name, "gpu", "skip", "-", "-", "-", "-",
               gpus == 0 ? "no GPU" : !(m->devices & AB_GPU) ? "method has no GPU implementation"
                                                               : "GPU execution is not implemented yet in this attnbench",
               gpus == 0 && gpu_why[0] ? " (" : "", gpus == 0 ? gpu_why : "", gpus == 0 && gpu_why[0] ? ")" : "");
    }
    printf("\n%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
