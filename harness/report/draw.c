/* draw.c — `attnbench mask` (harness/cli/mask.c parses its command line):
 * draw which (query, key) pairs a method keeps,
 * like the pattern figures of MInference (Jiang et al. 2024, arXiv
 * 2407.02490, Fig. 2) and XAttention (Xu et al. 2025, arXiv 2503.16428).
 *
 *   attnbench mask METHOD [-n N] [--mask SPEC] [--density D | --param k=v ...] [--head H] -o FILE.png
 *   attnbench mask --gallery [-n N] [--mask SPEC] [--density D] -o DIR
 *
 * The problem is the needle task's haystack (seeded, 8 heads, d = 64) under
 * a base mask (--mask, default causal; bound to N and the seed as the sweep
 * binds it), so dynamic selectors see sinks, vertical and slash lines. With
 * --density the method's knob is calibrated by bisection (as the sweep does,
 * select() only) to the target density, measured over the pairs the base
 * mask allows. One head's layout is drawn as a matrix of cells (query blocks
 * down, key blocks across; cell = 64 tokens, larger for N > 16K so at most
 * 256 cells a side): the shade is the fraction of the cell's allowed pairs
 * kept (dark = kept); cells the base mask forbids entirely are light grey.
 * Allowed pairs come from the mask's row spans and ab_mask_row_count, so
 * every mask (document, sliding, prefix, chunked...) is drawn as it is.
 * `attnbench mask dense --mask SPEC` draws the base mask alone. The cell matrix (FILE.dat) and the gnuplot script (FILE.gp)
 * are written beside the PNG, so `gnuplot FILE.gp` redraws it.
 * --gallery draws every registered CPU prefill method on the same haystack
 * at the same density into DIR/mask_METHOD.png and one multiplot grid
 * DIR/mask_gallery.png.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/report/draw.h"
#include "runtime/errors.h"
#include "runtime/layout.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"
#include "kernels/kernels.h"

#define MASK_MAX_CELLS 256

typedef struct mask_opts {
    int n, heads, d, head, block;
    uint64_t seed;
    double density;   /* NaN: no calibration */
    const char *spec; /* the base mask as given */
    ab_mask bm;       /* bound to n and seed */
} mask_opts;

/* One drawn layout. */
typedef struct mask_img {
    int cells, cell; /* cells per side, tokens per cell */
    double *val;     /* (cells, cells): kept fraction, -1 forbidden by the base mask */
    double density;  /* the layout's density (all heads) */
    double knob;     /* NaN: none */
    char kind[16];
} mask_img;

/* ---- problem ---------------------------------------------------------------- */

/* The needle task's Q, K, V at o->seed into buf[0..2] and its held-out draw
 * (ab_problem.heldout, seed ab_heldout_seed) into buf[3..5]; pb->heldout
 * points at *held. buf[] must be NULL on entry; the caller frees it. */
static int make_problem(const mask_opts *o, float *buf[6], ab_problem *pb, ab_problem *held)
{
    const ab_task *t = ab_task_find("needle");
    const size_t cnt = (size_t)o->heads * o->n * o->d;
    for (int i = 0; i < 6; i++)
        if (!(buf[i] = malloc(cnt * sizeof(float)))) {
            ab_errorf("mask: out of memory for Q, K, V");
            return 1;
        }
    const ab_shape s = { o->heads, o->n, o->d, o->bm.def->causal, 1.0f / sqrtf((float)o->d),
                         &o->bm,   0,    1,    AB_PREFILL };
    if (!t) {
        ab_errorf("mask: the needle task is not registered");
        return 1;
    }
    ab_params tp;
    ab_params_defaults(t->params, AB_TASK_MAX_PARAMS, &tp);
    const uint64_t seeds[2] = { o->seed, ab_heldout_seed(o->seed) };
    for (int r = 0; r < 2; r++) {
        ab_answer ans;
        memset(&ans, 0, sizeof ans);
        char why[200] = "";
        ab_task_input in = { .p = &tp, .str = NULL, .s = s, .seed = seeds[r], .depth = 0.5 };
        const int rc =
            ab_task_generate(t, &in, buf[3 * r], buf[3 * r + 1], buf[3 * r + 2], &ans, why, sizeof why);
        ab_answer_free(&ans);
        if (rc) {
            ab_errorf("mask: needle task: %s", why[0] ? why : ab_strerror(rc));
            return 1;
        }
    }
    *held = (ab_problem){ s, buf[3], buf[4], buf[5], seeds[1], 0, NULL, 0, NULL, NULL, NULL };
    *pb = (ab_problem){ s, buf[0], buf[1], buf[2], seeds[0], 0, held, 0, NULL, NULL, NULL };
    return 0;
}

/* ---- select with a knob value -------------------------------------------------- */

/* Select and finalize into l (initialised; the caller frees it). */
static int select_layout(const ab_method *m, const ab_params *base, double knob, const ab_problem *pb,
                         int block, ab_layout *l, char *msg, size_t ml)
{
    ab_params p = *base;
    const int kp = m->density_knob.param;
    if (kp >= 0 && !isnan(knob)) p.v[kp] = m->params[kp].is_int ? round(knob) : knob;
    ab_layout_init(l, &pb->s, block, block);
    ab_instance in;
    int rc = ab_instance_create(&in, m, &p, &pb->s);
    if (rc == AB_OK) rc = ab_instance_select(&in, pb, l);
    if (rc == AB_OK) rc = ab_layout_finalize(l);
    if (rc) snprintf(msg, ml, "%s", *ab_instance_error(&in) ? ab_instance_error(&in) : ab_strerror(rc));
    ab_instance_destroy(&in);
    return rc;
}

static double eval_density(const ab_method *m, const ab_params *base, double knob, const ab_problem *pb,
                           int block, char *msg, size_t ml, int *rc)
{
    ab_layout l;
    *rc = select_layout(m, base, knob, pb, block, &l, msg, ml);
    const double d = *rc ? NAN : ab_layout_density(&l);
    ab_layout_free(&l);
    return d;
}

/* Bisection on the knob for the target density (within 2%, else nearest). */
static int calibrate(const ab_method *m, const ab_params *base, const ab_problem *pb, int block,
                     double target, double *knob, char *msg, size_t ml)
{
    const ab_param *a = &m->params[m->density_knob.param];
    const int lg = m->density_knob.log_scale && a->min > 0, inc = m->density_knob.increasing;
    double lo = a->min, hi = a->max;
    int rc;
    const double dlo = eval_density(m, base, lo, pb, block, msg, ml, &rc);
    if (rc) return rc;
    const double dhi = eval_density(m, base, hi, pb, block, msg, ml, &rc);
    if (rc) return rc;
    double best = fabs(dlo - target) < fabs(dhi - target) ? lo : hi;
    double bestd = fabs(dlo - target) < fabs(dhi - target) ? dlo : dhi;
    for (int it = 0; it < 40 && fabs(bestd - target) > 0.02 * target; it++) {
        double mid = lg ? sqrt(lo * hi) : 0.5 * (lo + hi);
        if (a->is_int) {
            if (hi - lo <= 1) break;
            mid = round(mid);
            if (mid <= lo) mid = lo + 1;
            if (mid >= hi) mid = hi - 1;
        }
        const double dv = eval_density(m, base, mid, pb, block, msg, ml, &rc);
        if (rc) return rc;
        if (fabs(dv - target) < fabs(bestd - target)) {
            best = mid;
            bestd = dv;
        }
        if ((dv < target) == (inc != 0))
            lo = mid;
        else
            hi = mid;
    }
    *knob = best;
    return AB_OK;
}

/* ---- drawing ------------------------------------------------------------------ */

/* Add the pairs of query row i over keys [j0, j1) that the base mask allows
 * to acc (cells, cells), cell by cell. */
static void add_allowed(const mask_img *im, double *acc, const ab_mask *bm, int i, int j0, int j1)
{
    for (int j = j0; j < j1;) {
        const int c = j / im->cell, end = (c + 1) * im->cell < j1 ? (c + 1) * im->cell : j1;
        acc[(size_t)(i / im->cell) * im->cells + c] += (double)ab_mask_row_count(bm, i, j, end);
        j = end;
    }
}

/* Fill im from head h of a finalised layout under base mask bm. */
static int draw_layout(const ab_layout *l, const ab_mask *bm, int h, mask_img *im)
{
    const int N = l->seq_len;
    im->cell = 64;
    while ((N + im->cell - 1) / im->cell > MASK_MAX_CELLS) im->cell *= 2;
    im->cells = (N + im->cell - 1) / im->cell;
    const int C = im->cells;
    im->val = calloc((size_t)C * C, sizeof *im->val);
    double *kept = calloc((size_t)C * C, sizeof *kept);   /* (cells, cells) */
    double *valid = calloc((size_t)C * C, sizeof *valid); /* (cells, cells) */
    if (!im->val || !kept || !valid) {
        free(kept);
        free(valid);
        return AB_ENOMEM;
    }
    snprintf(im->kind, sizeof im->kind, "%s", ab_layout_kind_name(l->kind));
    im->density = ab_layout_density(l);
    for (int qb = 0; qb < l->n_qblocks; qb++) {
        const int r0 = qb * l->block_q, r1 = (qb + 1) * l->block_q < N ? (qb + 1) * l->block_q : N;
        const int64_t row = (int64_t)h * l->n_qblocks + qb;
        for (int i = r0; i < r1; i++) {
            int lo, hi; /* the allowed keys of row i lie in [lo, hi) */
            ab_mask_span(bm, i, &lo, &hi);
            add_allowed(im, valid, bm, i, lo, hi);
            if (l->kind == AB_LAYOUT_DENSE) {
                add_allowed(im, kept, bm, i, lo, hi);
                continue;
            }
            if (l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_MIXED)
                for (int64_t e = l->blk_ptr[row]; e < l->blk_ptr[row + 1]; e++) {
                    int j0 = l->blk_idx[e] * l->block_k, j1 = j0 + l->block_k;
                    j0 = j0 > lo ? j0 : lo;
                    j1 = j1 < hi ? j1 : hi;
                    if (j0 < j1) add_allowed(im, kept, bm, i, j0, j1);
                }
            if (l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED)
                for (int64_t e = l->tok_ptr[row]; e < l->tok_ptr[row + 1]; e++)
                    if (ab_mask_allows(bm, i, l->tok_idx[e]))
                        kept[(size_t)(i / im->cell) * C + l->tok_idx[e] / im->cell] += 1;
        }
    }
    for (size_t a = 0; a < (size_t)C * C; a++) im->val[a] = valid[a] > 0 ? kept[a] / valid[a] : -1.0;
    free(kept);
    free(valid);
    return AB_OK;
}

static int write_dat(const char *path, const mask_img *im)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        ab_errorf("mask: cannot write %s: %s", path, strerror(errno));
        return 1;
    }
    for (int a = 0; a < im->cells; a++) {
        for (int b = 0; b < im->cells; b++)
            fprintf(f, "%s%.4g", b ? " " : "", im->val[(size_t)a * im->cells + b]);
        fputc('\n', f);
    }
    return fclose(f) ? 1 : 0;
}

/* The gnuplot commands drawing one panel from DAT (no terminal, no output). */
static void gp_panel(FILE *f, const char *dat, const char *title, const mask_img *im)
{
    fprintf(f, "set title \"%s\" noenhanced\n", title);
    fprintf(f, "set xrange [-0.5:%d.5]; set yrange [%d.5:-0.5]\n", im->cells - 1, im->cells - 1);
    fprintf(f, "set xlabel 'key block (%d tokens)'; set ylabel 'query block'\n", im->cell);
    fprintf(f, "plot '%s' matrix with image notitle\n", dat);
}

static void gp_style(FILE *f)
{
    fputs("set palette defined (-1 '#d9d9d9', -0.001 '#d9d9d9', 0 'white', 0.25 '#9ecae1', 1 '#08306b')\n"
          "set cbrange [-1:1]; unset colorbox; set size ratio -1; set tics out nomirror scale 0.5\n"
          "set xtics 0,16; set ytics 0,16\n",
          f);
}

static int run_gnuplot(const char *script)
{
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        fprintf(stderr, "attnbench: mask: cannot run gnuplot: %s\n", strerror(errno));
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void panel_title(char *t, size_t n, const ab_method *m, const mask_img *im, const mask_opts *o)
{
    char kn[64] = "";
    if (!isnan(im->knob))
        snprintf(kn, sizeof kn, ", %s=%.4g", m->params[m->density_knob.param].name, im->knob);
    snprintf(t, n, "%s: density %.3f%s (%s, head %d, N=%d)\\nbase mask %s: allows %.1f%% of the N^2 pairs",
             m->name, im->density, kn, im->kind, o->head, o->n, o->bm.spec, 100.0 * ab_mask_fraction(&o->bm));
}

/* Select (calibrated) and draw one method into im. */
static int mask_method(const ab_method *m, const ab_params *base, const ab_problem *pb, const mask_opts *o,
                       mask_img *im)
{
    char msg[256] = "";
    memset(im, 0, sizeof *im);
    im->knob = m->density_knob.param >= 0 ? base->v[m->density_knob.param] : NAN;
    int rc = AB_OK;
    if (!isnan(o->density) && m->density_knob.param >= 0)
        rc = calibrate(m, base, pb, o->block, o->density, &im->knob, msg, sizeof msg);
    ab_layout l;
    memset(&l, 0, sizeof l);
    if (rc == AB_OK) rc = select_layout(m, base, im->knob, pb, o->block, &l, msg, sizeof msg);
    if (rc == AB_OK && l.kind == AB_LAYOUT_CUSTOM) {
        snprintf(msg, sizeof msg, "custom layout: no key set to draw");
        rc = AB_EUNSUPPORTED;
    }
    if (rc == AB_OK) rc = draw_layout(&l, &o->bm, o->head, im);
    ab_layout_free(&l);
    if (rc == AB_EUNSUPPORTED)
        fprintf(stderr, "attnbench: mask: %s skipped: %s\n", m->name, msg[0] ? msg : "unsupported");
    else if (rc)
        ab_errorf("mask: %s: %s", m->name, msg[0] ? msg : ab_strerror(rc));
    return rc;
}

/* PATH without a trailing ".png". */
static void stem(char *out, size_t n, const char *path)
{
    snprintf(out, n, "%s", path);
    const size_t len = strlen(out);
    if (len > 4 && !strcmp(out + len - 4, ".png")) out[len - 4] = 0;
}

static int draw_one(const char *png, const ab_method *m, const mask_img *im, const mask_opts *o)
{
    char st[4096], dat[4200], gp[4200], title[512];
    stem(st, sizeof st, png);
    snprintf(dat, sizeof dat, "%s.dat", st);
    snprintf(gp, sizeof gp, "%s.gp", st);
    if (write_dat(dat, im)) return 1;
    FILE *f = fopen(gp, "w");
    if (!f) {
        ab_errorf("mask: cannot write %s: %s", gp, strerror(errno));
        return 1;
    }
    panel_title(title, sizeof title, m, im, o);
    fprintf(f, "# drawn by attnbench mask; redraw with: gnuplot %s\n", gp);
    fprintf(f, "set terminal pngcairo size 720,760 font 'Helvetica,12'\nset output '%s'\n", png);
    gp_style(f);
    gp_panel(f, dat, title, im);
    fclose(f);
    const int rc = run_gnuplot(gp);
    if (rc) {
        ab_errorf("mask: gnuplot %s failed (%d)", gp, rc);
        return 1;
    }
    printf("%s: density %.4f -> %s\n", m->name, im->density, png);
    return 0;
}

/* Every registered CPU prefill method into DIR/mask_METHOD.png and one grid
 * DIR/mask_gallery.png; the exit status (0, 1 a method or gnuplot failed). */
static int draw_gallery(const mask_opts *o, const ab_problem *pb, const char *outp)
{
    char gp[4200], panels[1 << 15] = "";
    int drawn = 0, cells = 0, status = 0;
    for (int i = 0; i < ab_method_count; i++) {
        const ab_method *mi = ab_method_at(i);
        if (!(mi->devices & AB_CPU) || !(mi->phases & AB_PREFILL)) continue;
        ab_params base;
        ab_params_defaults(mi->params, AB_MAX_PARAMS, &base);
        mask_img im;
        const int mrc = mask_method(mi, &base, pb, o, &im);
        if (mrc != AB_OK) { /* a custom layout has nothing to draw: skipped, not failed */
            if (mrc != AB_EUNSUPPORTED) status = 1;
            free(im.val);
            continue;
        }
        char png[4200], dat[4200], title[512];
        snprintf(png, sizeof png, "%s/mask_%s.png", outp, mi->name);
        if (draw_one(png, mi, &im, o)) status = 1;
        snprintf(dat, sizeof dat, "%s/mask_%s.dat", outp, mi->name);
        panel_title(title, sizeof title, mi, &im, o);
        char line[8600];
        snprintf(line, sizeof line,
                 "set title \"%s\\ndensity %.3f\" noenhanced\nplot '%s' matrix with image notitle\n",
                 mi->name, im.density, dat);
        if (strlen(panels) + strlen(line) < sizeof panels) strcat(panels, line);
        cells = im.cells;
        drawn++;
        free(im.val);
    }
    if (!drawn) return status;
    const int cols = (int)ceil(sqrt((double)drawn)), rows = (drawn + cols - 1) / cols;
    snprintf(gp, sizeof gp, "%s/mask_gallery.gp", outp);
    FILE *f = fopen(gp, "w");
    if (!f) {
        ab_errorf("mask: cannot write %s", gp);
        return 1;
    }
    fprintf(f, "# drawn by attnbench mask --gallery; redraw with: gnuplot %s\n", gp);
    fprintf(f, "set terminal pngcairo size %d,%d font 'Helvetica,10'\nset output '%s/mask_gallery.png'\n",
            300 * cols, 330 * rows + 40, outp);
    gp_style(f);
    fprintf(f, "unset xtics; unset ytics; unset xlabel; unset ylabel\n");
    fprintf(f, "set xrange [-0.5:%d.5]; set yrange [%d.5:-0.5]\n", cells - 1, cells - 1);
    fprintf(
        f,
        "set multiplot layout %d,%d title \"attnbench layouts: needle haystack, N=%d, head %d, base mask %s, "
        "target density %.3g (dark = kept, grey = not allowed by the mask)\" noenhanced\n",
        rows, cols, o->n, o->head, o->bm.spec, o->density);
    fputs(panels, f);
    fputs("unset multiplot\n", f);
    fclose(f);
    const int rc = run_gnuplot(gp);
    if (rc) {
        ab_errorf("mask: gnuplot %s failed (%d)", gp, rc);
        return 1;
    }
    printf("gallery: %d methods -> %s/mask_gallery.png\n", drawn, outp);
    return status;
}

/* The method's defaults with the --param k=v settings; -1 after an error message. */
static int method_params(const ab_method *m, const char *const *params, int nparams, ab_params *base)
{
    ab_params_defaults(m->params, AB_MAX_PARAMS, base);
    for (int p = 0; p < nparams; p++) {
        char name[64];
        const char *eq = strchr(params[p], '=');
        if (!eq) {
            ab_errorf("mask: --param wants k=v, got '%s'", params[p]);
            return -1;
        }
        snprintf(name, sizeof name, "%.*s", (int)(eq - params[p]), params[p]);
        const int r = ab_params_set(m->params, AB_MAX_PARAMS, base, name, atof(eq + 1));
        if (r) {
            ab_errorf("mask: %s: %s '%s'", m->name, r == -1 ? "unknown parameter" : "value out of range for",
                      name);
            return -1;
        }
    }
    return 0;
}

int ab_draw(const ab_draw_opts *d)
{
    mask_opts o = { .n = d->n,
                    .heads = d->heads,
                    .d = 64,
                    .head = d->head,
                    .block = 64,
                    .seed = d->seed,
                    .density = d->density,
                    .spec = d->spec };
    const ab_method *m = d->method ? ab_method_find(d->method) : NULL;
    if (d->method && !m) {
        ab_errorf("mask: unknown method '%s' (attnbench list methods)", d->method);
        return 2;
    }
    if (m && m->block_q > 0) o.block = m->block_q; /* the method's native block */
    ab_params base;
    if (m && method_params(m, d->params, d->nparams, &base) != 0) return 2;

    char why[256] = "";
    if (ab_mask_make(&o.bm, o.spec, o.n, o.seed, why, sizeof why) != AB_OK) {
        ab_errorf("mask: --mask '%s': %s", o.spec, why[0] ? why : "cannot be used");
        return 2;
    }
    float *qkv[6] = { NULL, NULL, NULL, NULL, NULL, NULL }; /* the draw's Q, K, V, the held-out draw's */
    ab_problem pb, held;
    int status = 0;
    if (make_problem(&o, qkv, &pb, &held))
        status = 1;
    else if (m) {
        mask_img im;
        if (mask_method(m, &base, &pb, &o, &im) == AB_OK)
            status = draw_one(d->out, m, &im, &o);
        else
            status = 1;
        free(im.val);
    } else if (mkdir(d->out, 0777) && errno != EEXIST) {
        ab_errorf("mask: cannot create %s: %s", d->out, strerror(errno));
        status = 2;
    } else
        status = draw_gallery(&o, &pb, d->out);
    for (int i = 0; i < 6; i++) free(qkv[i]);
    ab_mask_free(&o.bm);
    return status;
}
