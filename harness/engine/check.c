/* check.c — the conformance check behind `attnbench check` (check.h; the
 * verb is harness/cli/check.c): every method × device × base mask × a small
 * grid of shapes (N including 1 and odd lengths, d, block size, knob
 * values), in the spirit of ggml's test-backend-ops: the method runs through
 * the harness's checked wrappers (runtime/plugin.h) and is compared with the
 * exact fp64 reference restricted to its own layout under the same base mask
 * (ab_ref_rows, relative L2 error <= 1e-5 per head). Also checked per
 * configuration: the layout is structurally valid (ab_layout_validate: CSR
 * monotone, sorted, unique, in range), no kept pair the base mask forbids
 * counts (ab_layout_contains against ab_mask_allows), the density is in
 * [0, 1] and equals a brute-force count of kept allowed pairs over allowed
 * pairs. A CUSTOM layout has no key set to compare with; instead its
 * output must stay the same on the rows the mask hides a perturbed key range
 * ([N/4, N/2), then [3N/4, N)) from. Once per method: the registry's own
 * checks (ABI, name, knob index) and that the density knob moves density,
 * monotonically (warnings only: a knob may move density only at larger N).
 * The base masks come from the mask registry, one representative spec each
 * (the table below; a mask missing from it is checked under its bare name,
 * or "name:4" / "name:0.5" when the bare name does not parse), so a new
 * file in masks/ is checked with no new code. --quick: causal, full and
 * document only.
 * Problems come from the needle task's haystack (random Gaussian Q, K, V
 * when the shape is too small for it); a method that reads a held-out draw
 * (ab_method.heldout) also gets the same generator at ab_heldout_seed(seed). GPU rows say "skip": this command
 * checks the CPU path; GPU points run in `run` (harness/engine/gpu.c) and the CUDA
 * kernels are checked against the fp64 reference by `make test-gpu`.
 */
#include "harness/engine/check.h"
#include "runtime/layout.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/errors.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"
#include "kernels/kernels.h"

/* ---- problems ------------------------------------------------------------ */

typedef struct cproblem {
    ab_problem pb;       /* pb.s.mask points at mask below, pb.heldout at held: never copy a cproblem */
    ab_problem held;     /* the held-out draw (ab_problem.heldout), the same generator at another seed */
    ab_mask mask;        /* the bound base mask */
    float *q, *k, *v;    /* (heads, seq_len, head_dim) each */
    float *hq, *hk, *hv; /* the held-out draw's */
    int from_task;       /* 1: needle haystack, 0: Gaussian */
} cproblem;

static double gauss(uint64_t *s)
{
    const double u1 = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53,
                 u2 = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void problem_free(cproblem *c)
{
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->hq);
    free(c->hk);
    free(c->hv);
    c->q = c->k = c->v = c->hq = c->hk = c->hv = NULL;
    ab_mask_free(&c->mask);
}

/* Q, K, V of shape s at seed: the needle haystack, or Gaussian when the
 * shape is too small for it (*from_task says which). */
static void draw_qkv(const ab_shape *s, uint64_t seed, float *q, float *k, float *v, int *from_task)
{
    const size_t cnt = (size_t)s->heads * s->seq_len * s->head_dim;
    const ab_task *t = ab_task_find("needle");
    *from_task = 0;
    if (t) {
        ab_params tp;
        ab_params_defaults(t->params, AB_TASK_MAX_PARAMS, &tp);
        ab_answer ans;
        memset(&ans, 0, sizeof ans);
        char tw[200] = "";
        ab_task_input in = { .p = &tp, .str = NULL, .s = *s, .seed = seed, .depth = 0.5 };
        *from_task = ab_task_generate(t, &in, q, k, v, &ans, tw, sizeof tw) == AB_OK;
        ab_answer_free(&ans);
    }
    if (!*from_task) {
        uint64_t st = seed;
        for (size_t i = 0; i < cnt; i++) {
            q[i] = (float)gauss(&st);
            k[i] = (float)gauss(&st);
            v[i] = (float)gauss(&st);
        }
    }
}

/* A problem of shape (heads, n, d) under the base mask `spec` bound to n and
 * seed (s.mask and s.causal set from it), with its held-out draw when the
 * method m reads one (as the sweep does: grid.c). AB_EINVAL with why[] when
 * the spec cannot be bound at this length (e.g. document:3 at N = 1). */
static int problem_make(cproblem *c, const ab_method *m, int heads, int n, int d, const char *spec,
                        uint64_t seed, char *why, size_t wl)
{
    memset(c, 0, sizeof *c);
    int rc = ab_mask_make(&c->mask, spec, n, seed, why, wl);
    if (rc != AB_OK) return rc;
    const size_t cnt = (size_t)heads * n * d;
    float **arr[6] = { &c->q, &c->k, &c->v, &c->hq, &c->hk, &c->hv };
    for (int i = 0; i < (m->heldout ? 6 : 3); i++)
        if (!(*arr[i] = malloc((cnt ? cnt : 1) * sizeof(float)))) {
            problem_free(c);
            snprintf(why, wl, "out of memory");
            return AB_ENOMEM;
        }
    const ab_shape s = {
        heads, n, d, c->mask.def->causal, 1.0f / sqrtf((float)d), &c->mask, 0, 1, AB_PREFILL
    };
    draw_qkv(&s, seed, c->q, c->k, c->v, &c->from_task);
    c->pb = (ab_problem){ s, c->q, c->k, c->v, seed, 1, NULL, 0, NULL, NULL, NULL };
    if (m->heldout) {
        const uint64_t hseed = ab_heldout_seed(seed);
        int held_task;
        draw_qkv(&s, hseed, c->hq, c->hk, c->hv, &held_task);
        c->held = (ab_problem){ s, c->hq, c->hk, c->hv, hseed, 1, NULL, 0, NULL, NULL, NULL };
        c->pb.heldout = &c->held;
    }
    return AB_OK;
}

/* ---- the base masks checked ---------------------------------------------------- */

/* One representative spec per registered mask, small enough for the check's
 * lengths to show every block class (empty, partial, full) at blocks of 32
 * and 64; quick: part of `check --quick`. */
static const struct {
    const char *name, *spec;
    int quick;
} mask_table[] = {
    { "causal", "causal", 1 },      { "full", "full", 1 },         { "document", "document:3", 1 },
    { "sliding", "sliding:37", 0 }, { "prefix", "prefix:0.3", 0 }, { "chunked", "chunked:50", 0 },
};
#define MASK_TABLE_N ((int)(sizeof mask_table / sizeof mask_table[0]))

int ab_check_mask_specs(int quick, char specs[][AB_MASK_SPEC], int cap, char *err, size_t errlen)
{
    int n = 0;
    if (errlen) err[0] = 0;
    /* the table's order first (causal, full, ...), then registered masks it lacks */
    for (int t = 0; t < MASK_TABLE_N && n < cap; t++)
        if ((!quick || mask_table[t].quick) && ab_mask_find(mask_table[t].name))
            snprintf(specs[n++], AB_MASK_SPEC, "%s", mask_table[t].spec);
    if (quick) return n;
    for (int i = 0; i < ab_mask_count && n < cap; i++) {
        const char *name = ab_mask_at(i)->name;
        int known = 0;
        for (int t = 0; t < MASK_TABLE_N; t++) known |= !strcmp(mask_table[t].name, name);
        if (known) continue;
        static const char *const tails[] = { "", ":4", ":0.5" };
        int ok = 0;
        for (int k = 0; k < 3 && !ok; k++) {
            char spec[AB_MASK_SPEC];
            char why[200];
            snprintf(spec, sizeof spec, "%.60s%s", name, tails[k]);
            if (ab_mask_check_spec(spec, why, sizeof why) == 0) {
                snprintf(specs[n++], AB_MASK_SPEC, "%s", spec);
                ok = 1;
            }
        }
        if (!ok) {
            snprintf(err, errlen,
                     "mask '%s': neither '%s', '%s:4' nor '%s:0.5' parses; give it a spec in "
                     "harness/cli/check.c's mask_table",
                     name, name, name, name);
            return -1;
        }
    }
    return n;
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
    if (rc == AB_OK) {
        stage = "select";
        rc = ab_instance_select(in, pb, l);
    }
    if (rc == AB_OK) {
        stage = "finalize";
        rc = ab_layout_finalize(l);
    }
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

/* For layouts with no key set (CUSTOM): the values and keys of [j0, j1)
 * are perturbed and run() repeated; the rows the base mask hides all of
 * them from must come out the same (relative L2 change <= AB_CHECK_TOL per
 * row), or the method reads keys the mask forbids. Returns PASS or FAIL. */
static int leak_range(ab_instance *in, const ab_problem *pb, const ab_layout *l, const float *out, int j0,
                      int j1, char *msg, size_t ml)
{
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    if (j1 <= j0) return AB_CHECK_PASS;
    const ab_mask mk = ab_shape_mask(&pb->s);
    const size_t cnt = (size_t)H * N * d;
    float *k = malloc(cnt * sizeof *k), *v = malloc(cnt * sizeof *v), *o2 = malloc(cnt * sizeof *o2);
    int verdict = AB_CHECK_PASS;
    if (!k || !v || !o2) {
        say(msg, ml, "out of memory");
        verdict = AB_CHECK_FAIL;
        goto out;
    }
    memcpy(k, pb->k, cnt * sizeof *k);
    memcpy(v, pb->v, cnt * sizeof *v);
    for (int h = 0; h < H; h++)
        for (size_t x = ((size_t)h * N + j0) * d; x < ((size_t)h * N + j1) * d; x++) {
            k[x] = -k[x] + 0.5f;
            v[x] += 4.0f;
        }
    ab_problem p2 = *pb;
    p2.k = k;
    p2.v = v;
    const int rc = ab_instance_run(in, &p2, l, o2);
    if (rc != AB_OK) {
        const char *ie = ab_instance_error(in);
        say(msg, ml, "run on perturbed keys returned %d (%s)%s%s", rc, ab_strerror(rc), *ie ? ": " : "", ie);
        verdict = AB_CHECK_FAIL;
        goto out;
    }
    int changed = 0, first = -1;
    double worst = 0;
    for (int h = 0; h < H; h++)
        for (int i = 0; i < N; i++) {
            if (ab_mask_row_count(&mk, i, j0, j1) > 0) continue; /* may see them */
            const float *a = out + ((size_t)h * N + i) * d, *b = o2 + ((size_t)h * N + i) * d;
            double num = 0, den = 0;
            for (int c = 0; c < d; c++) {
                num += ((double)a[c] - b[c]) * ((double)a[c] - b[c]);
                den += (double)a[c] * a[c];
            }
            const double e = den > 0 ? sqrt(num / den) : sqrt(num);
            if (!(e <= AB_CHECK_TOL)) {
                changed++;
                worst = isnan(e) || e > worst ? e : worst;
                if (first < 0) first = i;
            }
        }
    if (changed) {
        say(msg, ml,
            "%d rows (first: row %d) changed by up to %.3g when keys [%d, %d), which the base mask %s hides "
            "from them, were perturbed: the method reads keys the mask forbids",
            changed, first, worst, j0, j1, mk.spec);
        verdict = AB_CHECK_FAIL;
    }
out:
    free(k);
    free(v);
    free(o2);
    return verdict;
}

/* leak_range over keys [N/4, N/2) and [3N/4, N). */
static int leak_check(ab_instance *in, const ab_problem *pb, const ab_layout *l, const float *out, char *msg,
                      size_t ml)
{
    const int N = pb->s.seq_len;
    const int v = leak_range(in, pb, l, out, N / 4, N / 2, msg, ml);
    return v != AB_CHECK_PASS ? v : leak_range(in, pb, l, out, 3 * N / 4, N, msg, ml);
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
    if (rc == AB_EUNSUPPORTED) {
        verdict = AB_CHECK_SKIP;
        goto done;
    }
    if (rc != AB_OK) {
        say(msg, ml, "%s", e);
        verdict = AB_CHECK_FAIL;
        goto done;
    }
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
        /* brute force: every (h, i, j), against the reported density; a pair
         * the base mask forbids must never count as kept */
        const ab_mask mk = ab_shape_mask(&pb->s);
        int64_t kept = 0, valid = 0, forbidden = 0;
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) {
                    const int c = ab_layout_contains(&l, h, i, j);
                    if (!ab_mask_allows(&mk, i, j)) {
                        forbidden += c;
                        continue;
                    }
                    valid++;
                    kept += c;
                }
        const double bf = valid ? (double)kept / (double)valid : 0.0;
        if (forbidden) {
            say(msg, ml, "%lld kept pairs that the base mask %s forbids", (long long)forbidden, mk.spec);
            verdict = AB_CHECK_FAIL;
            goto done;
        }
        if (fabs(bf - dens) > 1e-12 || kept != ab_layout_kept_pairs(&l) ||
            valid != ab_layout_valid_pairs(&l)) {
            say(msg, ml, "reported density %.15g, brute-force count %.15g (%lld/%lld pairs)", dens, bf,
                (long long)kept, (long long)valid);
            verdict = AB_CHECK_FAIL;
            goto done;
        }
    }
    const size_t cnt = (size_t)H * N * d;
    out = malloc((cnt ? cnt : 1) * sizeof *out);
    if (!out) {
        say(msg, ml, "out of memory");
        verdict = AB_CHECK_FAIL;
        goto done;
    }
    for (size_t i = 0; i < cnt; i++) out[i] = NAN;
    rc = ab_instance_run(&in, pb, &l, out);
    if (rc == AB_EUNSUPPORTED) {
        verdict = AB_CHECK_SKIP;
        goto done;
    }
    if (rc != AB_OK) {
        const char *ie = ab_instance_error(&in);
        say(msg, ml, "run returned %d (%s)%s%s", rc, ab_strerror(rc), *ie ? ": " : "", ie);
        verdict = AB_CHECK_FAIL;
        goto done;
    }
    /* a custom layout has no key set to restrict the reference to: its
     * output is compared with nothing here (its own tests must cover it),
     * but it must not depend on keys the base mask hides */
    if (l.kind == AB_LAYOUT_CUSTOM && (rc = leak_check(&in, pb, &l, out, msg, ml)) != AB_CHECK_PASS) {
        verdict = rc;
        goto done;
    }
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
                say(msg, ml,
                    "head %d: relative L2 error %.3g > %g against the fp64 reference on its %s layout", h,
                    err, AB_CHECK_TOL, ab_layout_kind_name(l.kind));
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
        if (rc != AB_OK) {
            say(msg, ml, "knob %s=%g: %s", m->params[m->density_knob.param].name, knob_at(m, t / 6.0), e);
            return AB_CHECK_FAIL;
        }
        if (isnan(first)) first = dv;
        last = dv;
        if (!isnan(prev) && (inc ? dv < prev - 1e-9 : dv > prev + 1e-9)) r->inversions++;
        prev = dv;
    }
    r->dens_lo = inc ? first : last;
    r->dens_hi = inc ? last : first;
    if (!isnan(first) && first == last) {
        say(msg, ml,
            "ok; warning: the density knob %s does not move density at N = 512 (%.4g over its whole range)",
            m->params[m->density_knob.param].name, first);
        r->inversions = -1;
    }
    return AB_CHECK_PASS;
}

/* Append spec to a comma-separated list (truncated quietly when full). */
static void list_add(char *list, size_t cap, const char *spec)
{
    const size_t len = strlen(list);
    if (len < cap) snprintf(list + len, cap - len, "%s%s", len ? ", " : "", spec);
}

/* The knob's effect on density (knob_sweep) on a causal N = 512 problem,
 * with its verdict or warning in report. */
static int check_knob(const ab_method *m, ab_check_result *r, char *report, size_t n)
{
    cproblem c;
    char err[256], msg[320] = "";
    if (problem_make(&c, m, 2, 512, 64, "causal", 4242, err, sizeof err)) {
        say(report, n, "knob sweep: %s", err);
        return AB_CHECK_FAIL;
    }
    const int verdict = knob_sweep(m, &c.pb, r, msg, sizeof msg);
    problem_free(&c);
    if (verdict == AB_CHECK_FAIL || r->inversions < 0)
        say(report, n, "%s", msg);
    else if (r->inversions > 0)
        say(report, n, "ok; warning: density not monotone in %s (%d inversions over 7 values)",
            m->params[m->density_knob.param].name, r->inversions);
    return verdict;
}

/* ---- decode (docs/decode.md) ----------------------------------------------
 * A decode method on small stacks: a cache of Gaussian keys with a few heavy
 * positions shared by every layer and KV head (so selectors have something to
 * find), S steps each appending one key: prepare(), then per step dselect ->
 * finalize -> validate -> drun, every row against the fp64 reference over
 * the keys its layout keeps (ab_ref_decode_row), at the default knob and a
 * quarter of the way up its range. Shapes: (L, H, kv, d, N, S). */
static int check_decode_one(const ab_method *m, const int *sh, double knob, ab_check_result *r, char *msg,
                            size_t ml)
{
    const int L = sh[0], H = sh[1], kv = sh[2], d = sh[3], N = sh[4], S = sh[5], cap = N + S;
    const int lay = m->layered, rows = L * H;
    const size_t nk = (size_t)L * kv * cap * d, nq = (size_t)S * rows * d;
    float *k = malloc(nk * 4), *v = malloc(nk * 4), *q = malloc(nq * 4), *out = malloc((size_t)rows * d * 4);
    double *ref = malloc(sizeof(double) * (size_t)d);
    int verdict = AB_CHECK_PASS;
    ab_instance in;
    memset(&in, 0, sizeof in);
    if (!k || !v || !q || !out || !ref) {
        say(msg, ml, "out of memory");
        verdict = AB_CHECK_FAIL;
        goto out;
    }
    uint64_t st = 0xdec0deull + (uint64_t)N;
    for (size_t i = 0; i < nk; i++) {
        k[i] = (float)gauss(&st);
        v[i] = (float)gauss(&st);
    }
    for (size_t i = 0; i < nq; i++) q[i] = (float)gauss(&st) + 0.5f;
    for (int t = 0; t < 5; t++) {
        const int pos = (int)(ab_splitmix64(&st) % (uint64_t)N);
        for (int h = 0; h < L * kv; h++)
            for (int c = 0; c < d; c++) k[((size_t)h * cap + pos) * d + c] += 1.5f;
    }
    ab_params prm;
    knob_params(m, knob, &prm);
    ab_shape s = { 0 };
    s.heads = lay ? H : rows;
    s.kv_heads = lay ? kv : L * kv;
    s.layers = lay ? L : 1;
    s.seq_len = cap;
    s.head_dim = d;
    s.causal = 1;
    s.scale = 1.0f / sqrtf((float)d);
    s.phase = AB_DECODE;
    ab_decode dp = { s.layers, s.heads, s.kv_heads, d, s.scale, N, cap, 0, q, k, v, 7, 1 };
    int rc = ab_instance_create(&in, m, &prm, &s);
    if (rc == AB_OK) rc = ab_instance_prepare(&in, &dp);
    for (int t = 0; t < S && rc == AB_OK && verdict == AB_CHECK_PASS; t++) {
        dp.len = N + t + 1;
        dp.step = t;
        dp.q = q + (size_t)t * rows * d;
        ab_layout l;
        ab_layout_init_decode(&l, &dp, m->block_k);
        rc = ab_instance_dselect(&in, &dp, &l);
        if (rc == AB_OK) rc = ab_layout_finalize(&l);
        char verr[200];
        if (rc == AB_OK && ab_layout_validate(&l, verr, sizeof verr)) {
            say(msg, ml, "step %d: invalid layout: %s", t, verr);
            verdict = AB_CHECK_FAIL;
        }
        if (rc == AB_OK && verdict == AB_CHECK_PASS) rc = ab_instance_drun(&in, &dp, &l, out);
        for (int row = 0; rc == AB_OK && verdict == AB_CHECK_PASS && l.kind != AB_LAYOUT_CUSTOM && row < rows;
             row++) {
            ab_ref_decode_row(&dp, row, &l, ref, NULL, NULL);
            double e2 = 0, n2 = 0;
            for (int c = 0; c < d; c++) {
                const double x = out[(size_t)row * d + c] - ref[c];
                e2 += x * x;
                n2 += ref[c] * ref[c];
            }
            const double e = sqrt(e2) / (sqrt(n2) > 1e-30 ? sqrt(n2) : 1e-30);
            if (!(e <= 1e-4)) {
                say(msg, ml, "step %d row %d: relative error %.3g against fp64 on its layout", t, row, e);
                verdict = AB_CHECK_FAIL;
            }
            if (e > r->worst_err) r->worst_err = e;
        }
        if (rc == AB_OK) note_kind(r, l.kind);
        ab_layout_free(&l);
    }
    if (rc == AB_EUNSUPPORTED) {
        verdict = AB_CHECK_SKIP;
        r->unsupported++;
    } else if (rc != AB_OK) {
        say(msg, ml, "%s", *ab_instance_error(&in) ? ab_instance_error(&in) : ab_strerror(rc));
        verdict = AB_CHECK_FAIL;
    } else
        r->configs++;
out:
    if (in.state) ab_instance_destroy(&in);
    free(k);
    free(v);
    free(q);
    free(out);
    free(ref);
    return verdict;
}

static int check_decode(const ab_method *m, int quick, ab_check_result *r, char *report, size_t n)
{
    static const int shapes[][6] = { { 1, 2, 1, 64, 300, 3 },
                                     { 4, 4, 2, 64, 1000, 3 },
                                     { 1, 8, 8, 128, 2049, 2 } };
    double knobs[2] = { NAN, NAN };
    int nknobs = 1;
    if (m->density_knob.param >= 0) {
        knobs[0] = m->params[m->density_knob.param].def;
        knobs[nknobs++] = knob_at(m, 0.25);
    }
    char msg[320] = "";
    for (int a = 0; a < (quick ? 2 : 3); a++)
        for (int ki = 0; ki < nknobs; ki++)
            if (check_decode_one(m, shapes[a], knobs[ki], r, msg, sizeof msg) == AB_CHECK_FAIL) {
                say(report, n, "decode L=%d H=%d kv=%d d=%d N=%d: %s", shapes[a][0], shapes[a][1],
                    shapes[a][2], shapes[a][3], shapes[a][4], msg);
                return AB_CHECK_FAIL;
            }
    return AB_CHECK_PASS;
}

int ab_check_method_masks(const ab_method *m, int quick, const char *const *specs, int nspecs,
                          ab_check_result *res, char *report, size_t n)
{
    ab_check_result r0;
    ab_check_result *r = res ? res : &r0;
    memset(r, 0, sizeof *r);
    r->dens_lo = r->dens_hi = NAN;
    say(report, n, "ok");
    char err[256];
    if (ab_registry_check(&m, 1, err, sizeof err)) {
        say(report, n, "registry check: %s", err);
        return AB_CHECK_FAIL;
    }
    if (!(m->devices & AB_CPU)) {
        say(report, n, "skipped: not a CPU method");
        return AB_CHECK_SKIP;
    }
    if (m->phases & AB_DECODE) { /* the decode entry points first: a prefill method goes on below */
        const int dv = check_decode(m, quick, r, report, n);
        if (dv == AB_CHECK_FAIL || !(m->phases & AB_PREFILL)) return dv;
    }
    char defaults[AB_CHECK_MAX_MASKS][AB_MASK_SPEC];
    const char *dspecs[AB_CHECK_MAX_MASKS];
    if (!specs) {
        nspecs = ab_check_mask_specs(quick, defaults, AB_CHECK_MAX_MASKS, err, sizeof err);
        if (nspecs < 0) {
            say(report, n, "%s", err);
            return AB_CHECK_FAIL;
        }
        for (int i = 0; i < nspecs; i++) dspecs[i] = defaults[i];
        specs = dspecs;
    }
    if (nspecs <= 0) {
        say(report, n, "no base mask to check under");
        return AB_CHECK_FAIL;
    }
    static const int lens_q[] = { 1, 77, 256 }, lens_f[] = { 1, 100, 257, 512 };
    static const int dims[] = { 16, 64 };
    /* 64 (the default), 32 (full check), and the method's native block */
    int blocks[3] = { 64, 32, 0 }, nblocks = quick ? 1 : 2;
    if (m->block_q > 0 && m->block_q != 64 && m->block_q != 32) blocks[nblocks++] = m->block_q;
    const int *lens = quick ? lens_q : lens_f;
    const int nlens = quick ? 3 : 4, heads = quick ? 2 : 3;
    double knobs[3] = { NAN, NAN, NAN };
    int nknobs = 1;
    if (m->density_knob.param >= 0) {
        knobs[0] = m->params[m->density_knob.param].def;
        knobs[nknobs++] = knob_at(m, 0.25);
        if (!quick) knobs[nknobs++] = knob_at(m, 0.75);
    }
    char msg[320] = "";
    char unbound[256] = ""; /* the last reason a mask could not be bound */
    int verdict = AB_CHECK_PASS;
    for (int mi = 0; mi < nspecs && verdict != AB_CHECK_FAIL; mi++) {
        int bound = 0, ran = 0, declined = 0;
        for (int a = 0; a < nlens && verdict != AB_CHECK_FAIL; a++)
            for (int b = 0; b < 2 && verdict != AB_CHECK_FAIL; b++) {
                cproblem c;
                const int N = lens[a], d = dims[b];
                const uint64_t seed = 1000u + 17u * (unsigned)(a * 4 + b * 2) + 7919u * (unsigned)mi;
                const int rc = problem_make(&c, m, heads, N, d, specs[mi], seed, unbound, sizeof unbound);
                if (rc == AB_EINVAL) {
                    r->mask_skips++;
                    continue;
                } /* the spec does not fit this N */
                if (rc != AB_OK) {
                    say(report, n, "out of memory");
                    return AB_CHECK_FAIL;
                }
                bound++;
                for (int bi = 0; bi < nblocks && verdict != AB_CHECK_FAIL; bi++)
                    for (int ki = 0; ki < nknobs && verdict != AB_CHECK_FAIL; ki++) {
                        const int v = check_config(m, &c.pb, blocks[bi], knobs[ki], r, msg, sizeof msg);
                        if (v == AB_CHECK_SKIP)
                            r->unsupported++, declined++;
                        else
                            r->configs++, ran++;
                        if (v == AB_CHECK_FAIL) {
                            verdict = AB_CHECK_FAIL;
                            say(report, n, "N=%d d=%d mask=%s block=%d %s=%g: %s", N, d, specs[mi],
                                blocks[bi],
                                m->density_knob.param >= 0 ? m->params[m->density_knob.param].name : "knob",
                                isnan(knobs[ki]) ? 0.0 : knobs[ki], msg);
                        }
                    }
                problem_free(&c);
            }
        if (verdict == AB_CHECK_FAIL) break;
        if (!bound) {
            say(report, n, "base mask '%s' could not be bound at any checked length: %s", specs[mi], unbound);
            return AB_CHECK_FAIL;
        }
        r->masks++;
        if (!ran && declined) list_add(r->masks_unsupported, sizeof r->masks_unsupported, specs[mi]);
    }
    if (verdict == AB_CHECK_PASS && r->configs == 0) {
        /* declining everything is a failure when plain causal or full was
         * among the masks; under only other masks it is an honest skip */
        int plain = 0;
        for (int mi = 0; mi < nspecs; mi++)
            plain |= !strcmp(specs[mi], "causal") || !strcmp(specs[mi], "full");
        if (!plain) {
            say(report, n, "skipped: unsupported under every mask checked (%s)", r->masks_unsupported);
            return AB_CHECK_SKIP;
        }
        say(report, n, "every configuration was unsupported");
        return AB_CHECK_FAIL;
    }
    if (verdict == AB_CHECK_PASS && m->density_knob.param >= 0) verdict = check_knob(m, r, report, n);
    if (verdict == AB_CHECK_PASS && r->masks_unsupported[0] && report && n) {
        const size_t len = strlen(report);
        snprintf(report + len, n - len, "; unsupported (declined) under %s", r->masks_unsupported);
    }
    return verdict;
}

int ab_check_method(const ab_method *m, int quick, ab_check_result *res, char *report, size_t n)
{
    return ab_check_method_masks(m, quick, NULL, 0, res, report, n);
}
