/* html.c — DIR/index.html, the results page of `attnbench plot`.
 *
 * A static page (no scripts, no fonts or anything else from the network, one
 * inline style sheet) that shows every figure drawn into DIR with a caption,
 * the run's environment (the results file's root attributes, the config
 * text), the count of points left out for a non-ok status and a per-method
 * summary table (DIR/summary.tsv from the export). With several base masks
 * (masks.txt) the page has a table of the masks, each figure shows the
 * primary mask large and the other masks' copies (NAME--SLUG.png) beside
 * it, the per-method table gains a mask column, and the dense-vs-mask
 * figure and the base-mask pictures of the gallery appear. Images are referenced by
 * relative name, so the folder can be copied off a cluster and opened on a
 * laptop. The figures are those of the README ("Figures"), in the style of
 * sparse-attention evaluations (e.g. MInference, arXiv 2407.02490).
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness/report/aggregate.h"
#include "harness/report/export.h"
#include "harness/store/point.h"
#include "harness/report/html.h"
#include "harness/store/store.h"

#define RPATH 4400

/* The method colours of plots/common.gp (palette), in the same order: a
 * method's swatch here matches its lines in the figures. */
static const char *const PALETTE[] = { "#000000", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                       "#56B4E9", "#8C564B", "#7F7F7F", "#B8860B", "#1B3B6F", "#A6192E" };

/* HTML-escape s (at most cap bytes) into f. */
static void esc(FILE *f, const char *s, size_t cap)
{
    for (size_t i = 0; i < cap && s[i]; i++) {
        switch (s[i]) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(s[i], f);
        }
    }
}
#define ESC(f, s) esc((f), (s), (size_t)-1)

/* Width in pixels from a PNG's IHDR; 0 when not a readable PNG. */
static unsigned png_width(const char *dir, const char *name)
{
    char p[RPATH];
    unsigned char h[24];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) return 0;
    size_t got = fread(h, 1, sizeof h, f);
    fclose(f);
    if (got < 24 || memcmp(h, "\x89PNG", 4) != 0) return 0;
    return (unsigned)h[16] << 24 | (unsigned)h[17] << 16 | (unsigned)h[18] << 8 | h[19];
}

static int exists_in(const char *dir, const char *name)
{
    char p[RPATH];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

/* The "# skip: REASON" of DIR/NAME.tsv into out ("" when none). */
static void skip_of(const char *dir, const char *name, char *out, size_t len)
{
    char p[RPATH];
    snprintf(p, sizeof p, "%s/%s.tsv", dir, name);
    ab_export_header(p, "# skip: ", out, len);
}

/* ---- base masks (masks.txt) ---------------------------------------------- */

int ab_report_read_masks(const char *dir, ab_report_mask *m, int cap)
{
    char path[RPATH], line[1024];
    snprintf(path, sizeof path, "%s/masks.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        line[strcspn(line, "\r\n")] = '\0';
        char *fl[10];
        int nf = 0;
        for (char *s = line; nf < 10;) {
            fl[nf++] = s;
            char *t = strchr(s, '\t');
            if (!t) break;
            *t = '\0';
            s = t + 1;
        }
        if (nf < 9) continue;
        ab_report_mask *x = &m[n++];
        snprintf(x->spec, sizeof x->spec, "%s", fl[1]);
        snprintf(x->slug, sizeof x->slug, "%s", fl[2]);
        x->n_points = atol(fl[3]);
        x->n_ok = atol(fl[4]);
        snprintf(x->notok, sizeof x->notok, "%s", fl[5]);
        x->seed = atol(fl[6]);
        x->max_n = atoi(fl[7]);
        x->mask_density = strtod(fl[8], NULL);
    }
    fclose(f);
    return n;
}

/* "a:1,b:2" as "a 1, b 2" ("–" for "-"). */
static void counts_cell(FILE *f, const char *list)
{
    if (strcmp(list, "-") == 0) {
        fputs("&ndash;", f);
        return;
    }
    for (const char *s = list; *s; s++) {
        if (*s == ':')
            fputc(' ', f);
        else if (*s == ',')
            fputs(", ", f);
        else
            esc(f, s, 1);
    }
}

/* The table of base masks; each links to its picture in the gallery. */
static void mask_table(FILE *f, const char *dir, const ab_report_mask *m, int nm)
{
    fputs("<table class=sum>\n<thead><tr><th>base mask</th><th>points ok</th><th>not ok</th>"
          "<th>largest N</th><th>allowed pairs at that N</th><th>figures</th></tr></thead>\n"
          "<tbody>\n",
          f);
    for (int k = 0; k < nm; k++) {
        char pic[300];
        snprintf(pic, sizeof pic, "mask_gallery/base_%.200s.png", m[k].slug);
        fputs("<tr><td><code>", f);
        ESC(f, m[k].spec);
        fputs("</code>", f);
        if (k == 0 && nm > 1) fputs(" (primary)", f);
        fprintf(f, "</td><td class=n>%ld / %ld</td><td>", m[k].n_ok, m[k].n_points);
        counts_cell(f, m[k].notok);
        fputs("</td>", f);
        if (m[k].max_n > 0)
            fprintf(f, "<td class=n>%d</td>", m[k].max_n);
        else
            fputs("<td class=n>&ndash;</td>", f);
        if (isnan(m[k].mask_density))
            fputs("<td class=n>&ndash;</td>", f);
        else
            fprintf(f, "<td class=n>%.2f%%</td>", 100.0 * m[k].mask_density);
        fputs("<td>", f);
        if (exists_in(dir, pic)) {
            fprintf(f, "<a href=\"%s\">picture</a>", pic);
            if (nm > 1) fputs(", ", f);
        }
        if (nm > 1) { /* its latency figure, the first of its copies */
            fputs("<a href=\"#latency_vs_n", f);
            if (k > 0) {
                fputs("--", f);
                ESC(f, m[k].slug);
            }
            fputs("\">its figures</a>", f);
        }
        fputs("</td></tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

/* ---- the per-method table (summary.tsv) ------------------------------- */

#define SUM_COLS     25 /* columns of summary.tsv; the first 19 are the older layout's */
#define SUM_COLS_OLD 19

/* Split at tabs in place; the field count. */
static int split_tabs(char *line, char **f, int max)
{
    int n = 0;
    char *s = line;
    while (n < max) {
        f[n++] = s;
        char *t = strchr(s, '\t');
        if (!t) break;
        *t = '\0';
        s = t + 1;
    }
    return n;
}

/* A number cell: fmt applied to v, "–" for NaN or unparsable. */
static void num_cell(FILE *f, const char *s, const char *fmt, double scale)
{
    char *end;
    double v = strtod(s, &end);
    fputs("<td class=n>", f);
    if (end == s || *end || isnan(v))
        fputs("&ndash;", f);
    else
        fprintf(f, fmt, v * scale);
    fputs("</td>", f);
}

/* The value of s, NaN when it is not a number. */
static double num_of(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    return (end == s || *end) ? NAN : v;
}

/* The latency cell: the median, its 95% interval as the cell's tooltip. */
static void latency_cell(FILE *f, const char *ms, const char *lo, const char *hi)
{
    double v = num_of(ms), l = num_of(lo), h = num_of(hi);
    if (isnan(v)) {
        fputs("<td class=n>&ndash;</td>", f);
        return;
    }
    if (!isnan(l) && !isnan(h))
        fprintf(f, "<td class=n title=\"95%% interval %.4g&ndash;%.4g ms\">%.4g</td>", l, h, v);
    else
        fprintf(f, "<td class=n>%.4g</td>", v);
}

/* The speedup cell: the paired ratio with its 95% interval, or the ratio of
 * separate medians marked with a dagger (no interval). */
static void speedup_cell(FILE *f, const char *sp, const char *lo, const char *hi, int paired)
{
    double v = num_of(sp), l = num_of(lo), h = num_of(hi);
    if (isnan(v)) {
        fputs("<td class=n>&ndash;</td>", f);
        return;
    }
    fprintf(f, "<td class=n>%.2f&times;", v);
    if (paired && !isnan(l) && !isnan(h))
        fprintf(f, " <span class=ci>[%.2f, %.2f]</span>", l, h);
    else if (!paired)
        fputs("<sup>&dagger;</sup>", f);
    fputs("</td>", f);
}

/* Writes the table; sets *has_blas when a dense_blas row has ok points.
 * With several base masks, a mask column after the device. */
static void summary_table(FILE *f, const char *dir, int multi_mask, int *has_blas)
{
    char p[RPATH];
    snprintf(p, sizeof p, "%s/summary.tsv", dir);
    FILE *in = fopen(p, "r");
    if (!in) {
        fputs("<p class=note>No summary.tsv in this folder.</p>\n", f);
        return;
    }
    fputs("<table class=sum>\n<thead><tr><th>method</th><th>device</th>", f);
    if (multi_mask) fputs("<th>base mask</th>", f);
    fputs("<th>layout / kernel</th>"
          "<th>points ok</th><th>not ok</th><th>N</th><th>target density</th>"
          "<th>achieved density</th><th>latency (ms)</th><th>speedup over dense</th>"
          "<th>mass recall</th><th>top-k recall</th><th>accuracy</th><th>select share</th>"
          "</tr></thead>\n<tbody>\n",
          f);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) > 0) {
        if (line[0] == '#' || line[0] == '\n') continue;
        line[strcspn(line, "\r\n")] = '\0';
        char *c[SUM_COLS + 2];
        int nf = split_tabs(line, c, SUM_COLS + 1);
        if (nf != SUM_COLS && nf != SUM_COLS_OLD) continue;
        int timing = nf == SUM_COLS; /* speedup interval, paired, latency interval */
        int idx = atoi(c[17]);
        const char *col = PALETTE[(idx > 0 ? idx - 1 : 0) % (int)(sizeof PALETTE / sizeof PALETTE[0])];
        if (strcmp(c[0], "dense_blas") == 0 && atoi(c[5]) > 0) *has_blas = 1;
        fprintf(f, "<tr><td><span class=sw style=\"background:%s\"></span>", col);
        ESC(f, c[0]);
        fputs("</td><td>", f);
        ESC(f, c[1]);
        if (multi_mask) {
            fputs("</td><td><code>", f);
            ESC(f, c[18]);
            fputs("</code>", f);
        }
        fputs("</td><td>", f);
        ESC(f, c[2]);
        fputs(" / ", f);
        ESC(f, c[3]);
        fprintf(f, "</td><td class=n>%s / %s</td><td>", c[5], c[4]);
        counts_cell(f, c[6]);
        fputs("</td>", f);
        if (atoi(c[7]) > 0)
            fprintf(f, "<td class=n>%s</td>", c[7]);
        else
            fputs("<td class=n>&ndash;</td>", f);
        char *end;
        double tgt = strtod(c[8], &end);
        if (end != c[8] && !isnan(tgt))
            fprintf(f, "<td class=n>%.3g%%</td>", 100.0 * tgt);
        else if (atoi(c[7]) > 0) {
            fputs("<td class=n>native", f);
            double knob = strtod(c[9], &end);
            if (end != c[9] && !isnan(knob)) fprintf(f, " (knob %g)", knob);
            fputs("</td>", f);
        } else
            fputs("<td class=n>&ndash;</td>", f);
        num_cell(f, c[10], "%.3g%%", 100.0);
        latency_cell(f, c[11], timing ? c[22] : "nan", timing ? c[23] : "nan");
        speedup_cell(f, c[12], timing ? c[19] : "nan", timing ? c[20] : "nan", timing && !strcmp(c[21], "1"));
        num_cell(f, c[13], "%.3f", 1.0);
        num_cell(f, c[14], "%.3f", 1.0);
        num_cell(f, c[15], "%.3f", 1.0);
        num_cell(f, c[16], "%.1f%%", 100.0);
        fputs("</tr>\n", f);
    }
    free(line);
    fclose(in);
    fputs("</tbody></table>\n", f);
}

/* ---- figures ----------------------------------------------------------- */

typedef struct fig {
    const char *name;
    const char *title;
    const char *caption; /* HTML */
    int across;          /* one figure across base masks (no per-mask copies) */
} fig;

static const fig FIGS[] = {
    { "latency_vs_n", "Latency vs sequence length",
      "Latency per attention call (all heads) vs sequence length N, log-log. One line per "
      "method at its setting closest to 10% density (methods without a knob at 100%); the "
      "median of the timed repeats, then the median over seeds, tasks and depths; bars: the "
      "95% interval of the median (hierarchical bootstrap over rounds, i.e. child processes, "
      "and samples; p10&ndash;p90 of the repeats for files written before the timing "
      "protocol). Points without a timing (untimed, scored only) are left out and counted in "
      "the footnote with the timing flags of the points drawn. <b>dense</b> (the shared "
      "tiled online-softmax kernel) and "
      "<b>dense_blas</b> (row-blocked OpenBLAS SGEMM + softmax) are the exact references, "
      "drawn thicker; dense_blas stands in for an SGEMM roofline, which the results file "
      "does not measure. Points of the primary device only (see CPU vs GPU).",
      0 },
    { "speedup_vs_density", "Speedup over dense vs density",
      "Speedup over <b>dense</b> (select() included), vs the achieved density (share of the "
      "(query, key) pairs the base mask allows that are computed, log scale), one panel per "
      "sequence length: the median over its samples of the method's time / the time of dense "
      "measured in the same child process on adjacent calls (the paired ratio), inverted; "
      "bars: its 95% interval (bootstrap over rounds). Points without a paired ratio (files "
      "written before the timing protocol, unpaired points) fall back to latency of dense / "
      "latency of the method on the same workload (task, N, heads, head dim, base mask, seed, "
      "depth) and have no bar. Above the dashed line the method is faster than dense.",
      0 },
    { "breakeven", "Break-even map: where each method beats dense",
      "Speedup over <b>dense</b> on the same workload, select() included, per method (rows) "
      "and per sequence length and target density (columns, grouped by N): red slower, green "
      "faster, on a log scale centred at 1 (clamped to 1/8&ndash;8), the value printed in the "
      "cell (the median over tasks, seeds and depths of the paired ratio, or of dense latency "
      "/ latency where there is none). Marker: &#9650; the 95% interval (bootstrap over "
      "rounds) lies above 1 (significantly faster), &#9660; below 1 (significantly slower), "
      "&#9675; it holds 1, or there is no interval. A grey cell has no timed status-ok point; "
      "its label says why (<code>calib.</code>: no knob value reached the target density, "
      "<code>unsup.</code>: unsupported, <code>untimed</code>: scored only, a failure status; "
      "blank: not run there). Points of the primary device only.",
      0 },
    { "recall_vs_density", "Attention recall vs density",
      "Left: attention-mass recall, the share of each scored row's exact softmax mass that "
      "falls on the computed keys. Right: top-k recall, the share of each row's exact top-k "
      "keys (k = <code>[metrics] topk</code>) that are computed. Means over scored rows, "
      "medians over seeds, tasks and depths, at the largest N (a method that stops short "
      "shows its N in the key).",
      0 },
    { "accuracy_vs_density", "Task accuracy vs density",
      "Accuracy on the synthetic retrieval tasks (share of scored query rows whose output "
      "retrieves the planted answer) vs achieved density, one panel per task at its largest "
      "N. Pooled over seeds and depths (answers summed); bars are Wilson 95% score "
      "intervals on the pooled count.",
      0 },
    { "accuracy_vs_latency", "Accuracy vs latency, Pareto fronts",
      "Each point is one setting (density) of a method at the task's largest N: median "
      "latency per call against pooled accuracy. The line joins the method's Pareto-optimal "
      "settings: no other setting of that method is both at least as fast and at least as "
      "accurate. Up and to the left is better.",
      0 },
    { "needle_heatmap", "Needle heatmaps",
      "Needle-in-a-haystack accuracy by sequence length (x) and needle depth (y, 0 = the "
      "start of the context, 1 = the end), one panel per method at its setting closest to "
      "10% density (the panel title gives the achieved density). The number in each cell is "
      "the accuracy; a grey cell has no status-ok point (not measured, or e.g. calib_failed).",
      0 },
    { "overhead_share", "Selector overhead",
      "Share of each call spent in <code>select()</code> (deciding what to compute) out of "
      "select + run, vs sequence length, at each method's setting closest to 10% density; "
      "median over seeds, tasks and depths. Methods that score the whole attention matrix "
      "to select (oracles, estimators) show a large share by design.",
      0 },
    { "selectors", "Selectors against their bound",
      "Per method, the time <code>select()</code> takes over the paired dense call (filled), "
      "the work the method states for it over dense attention's FLOPs (open: the arithmetic "
      "bound, <code>ab_layout_set_cost</code>; docs/selectors.md) and the time <code>run()</code> "
      "takes over dense (grey cross), at the setting closest to 10% density, one point per "
      "sequence length; where the run measured its STREAM bandwidth (<code>[timing] "
      "measure_bandwidth = 1</code>), the time the bytes it states take at that bandwidth "
      "(open triangle). A filled point within 2x of the higher open mark is a selector at its "
      "bound; static patterns state 0 and show no bound.",
      0 },
    { "decode_latency", "Decode: latency per step vs cache length",
      "Decode phase (docs/decode.md): the latency of one decode step (one query per head against "
      "the KV cache; select() included, prepare() not) vs the cache length N, log-log, each "
      "method at its setting closest to 1/16 of the cache (methods without a knob: all of it). "
      "The dashed black line is the memory-bandwidth limit of dense decode: the whole K and V "
      "cache read once at the STREAM triad bandwidth measured when the file was written "
      "(<code>stream_triad_gbs</code> in meta.txt). Bars: 95% interval of the median.",
      1 },
    { "decode_speedup", "Decode: speedup vs fraction of the cache read",
      "Speedup over dense decode (the paired ratio, select() included) vs the fraction of the "
      "K and V cache read per step: per KV head, the union of the keys its query heads keep, "
      "plus the bytes select() states it moves (Quest's page bounds), every timed point (all cache lengths "
      "and stacks). The dotted line "
      "is the bandwidth ideal, 1 / fraction read: a method on it is limited by memory alone. "
      "Under GQA a method that selects per query head reads the union of its group's keys, "
      "so its fraction read exceeds its density.",
      1 },
    { "decode_accuracy", "Decode: accuracy vs budget",
      "Task accuracy at the decode queries (the query that must retrieve the needle or "
      "passkey is a decode step's query) vs the share of the cache kept, every point with "
      "answers; Wilson 95% intervals; grey crosses: dense decode on the same problems.",
      1 },
    { "decode_layers", "Decode: recall per layer",
      "On a layer stack (<code>[sweep] layers</code>, Q and K correlated across layers by "
      "<code>layer_corr</code>): the attention-mass recall of each layer, for the methods that "
      "select in one layer and reuse the positions in later ones (TidalDecode, DELTA) and any "
      "other method run on the stack.",
      1 },
    { "trace_heads", "Real traces: recall spread over heads",
      "On a real attention trace (<code>tasks = trace</code>; docs/traces.md): the attention-mass "
      "recall of every stored (layer, head) at each method's longest prefix with every layer measured, vs "
      "the "
      "achieved density. The line is the median over heads, the band the middle half (25th to "
      "75th percentile), the bars the worst and best head: real heads differ, and a method that "
      "keeps most of the mass on average can still starve a few heads.",
      1 },
    { "cpu_vs_gpu", "CPU vs GPU latency",
      "Latency per call vs N on each device, log-log: a method keeps its colour; solid "
      "lines and filled points are the CPU, dashed lines and open points the GPU; each "
      "method at its setting closest to 10% density.",
      0 },
    { "dense_vs_mask", "Dense attention per base mask",
      "Latency of <b>dense</b> (the exact tiled kernel) under each base mask divided by its "
      "latency under <b>causal</b> on the same workload (task, N, heads, head dim, seed, "
      "depth; median over them), one colour per sequence length; the black bar is the ideal, "
      "the ratio of the (query, key) pairs the mask allows to those causal allows. On the bar, "
      "time is proportional to the allowed pairs; above it, the mask costs more than its work "
      "(partial blocks tested element by element, blocks that cannot be skipped). For a "
      "<code>document</code> mask, 1 / ratio is the speedup block skipping gives over causal. "
      "Points of the primary device only.",
      1 },
};

/* Which of NAME.png / .svg / .pdf exist in dir (bits 1, 2, 4). */
static int fig_files(const char *dir, const char *name)
{
    char p[400];
    int have = 0;
    static const char *const ext[] = { "png", "svg", "pdf" };
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%.380s.%s", name, ext[k]);
        if (exists_in(dir, p)) have |= 1 << k;
    }
    return have;
}

/* "Files: PNG SVG PDF data (TSV)" links of one drawn figure. */
static void file_links(FILE *f, const char *name, int have)
{
    fputs(" Files:", f);
    if (have & 1) fprintf(f, " <a href=\"%s.png\">PNG</a>", name);
    if (have & 2) fprintf(f, " <a href=\"%s.svg\">SVG</a>", name);
    if (have & 4) fprintf(f, " <a href=\"%s.pdf\">PDF</a>", name);
    fprintf(f, " <a href=\"%s.tsv\">data (TSV)</a>.", name);
}

/* The image of a drawn figure (PNG when there is one, linked to the SVG);
 * scale: 2 = half its pixels (every figure at the same scale, so fonts match
 * between one-panel and multi-panel figures), 0 = as wide as its box. */
static void fig_img(FILE *f, const char *dir, const char *name, int have, const char *alt, int scale)
{
    if (!(have & 3)) return;
    char png[400];
    snprintf(png, sizeof png, "%.390s.png", name);
    unsigned w = (have & 1) && scale ? png_width(dir, png) : 0;
    char style[64] = "";
    if (w > 0) snprintf(style, sizeof style, " style=\"width:%upx\"", w / (unsigned)scale);
    fprintf(f, "<a href=\"%s.%s\"><img%s src=\"%s.%s\" alt=\"", name, (have & 2) ? "svg" : "png", style, name,
            (have & 1) ? "png" : "svg");
    ESC(f, alt);
    fputs("\"></a>", f);
}

/* One figure: the primary mask's (or the one across masks) large, then, when
 * the file holds several base masks, each other mask's copy NAME--SLUG. */
static void figure(FILE *f, const char *dir, const fig *g, int *num, int has_blas, const ab_report_mask *m,
                   int nm)
{
    int have = fig_files(dir, g->name);
    if (g->across && !have && nm < 2) return; /* nothing to compare across */
    fprintf(f, "<section id=\"%s\">\n<h3>", g->name);
    if (have) fprintf(f, "Figure %d. ", ++*num);
    ESC(f, g->title);
    fputs("</h3>\n", f);
    if (!have) {
        char why[400];
        skip_of(dir, g->name, why, sizeof why);
        fputs("<p class=note>Not drawn", f);
        if (!g->across && nm > 1) {
            fputs(" under the primary mask <code>", f);
            ESC(f, m[0].spec);
            fputs("</code>", f);
        }
        fputs(": ", f);
        if (why[0])
            ESC(f, why);
        else
            fputs("no status-ok points with the values this figure needs", f);
        fputs(".</p>\n", f);
    } else {
        fputs("<figure>", f);
        fig_img(f, dir, g->name, have, g->title, 2);
        fputs("\n<figcaption>", f);
        fputs(g->caption, f);
        if (strcmp(g->name, "latency_vs_n") == 0 && !has_blas)
            fputs(" <i>This sweep has no status-ok dense_blas points, so the BLAS reference "
                  "is missing.</i>",
                  f);
        if (!g->across && nm > 0 && (nm > 1 || strcmp(m[0].spec, "causal") != 0)) {
            fputs(" <b>Base mask: <code>", f);
            ESC(f, m[0].spec);
            fputs("</code></b>", f);
            fputs(nm > 1 ? " (the primary mask; the other masks follow)." : ".", f);
        }
        file_links(f, g->name, have);
        fputs("</figcaption></figure>\n", f);
    }
    if (!g->across && nm > 1) {
        fputs("<div class=permask>\n", f);
        for (int k = 1; k < nm; k++) {
            char vname[400];
            snprintf(vname, sizeof vname, "%.200s--%.190s", g->name, m[k].slug);
            int hv = fig_files(dir, vname);
            fputs("<figure id=\"", f);
            ESC(f, vname);
            fputs("\">", f);
            if (hv) {
                char alt[400];
                snprintf(alt, sizeof alt, "%s, mask %s", g->title, m[k].spec);
                fig_img(f, dir, vname, hv, alt, 0);
            }
            fputs("\n<figcaption>Base mask <code>", f);
            ESC(f, m[k].spec);
            fputs("</code>", f);
            if (hv) {
                fputs(".", f);
                file_links(f, vname, hv);
            } else {
                char why[400];
                skip_of(dir, vname, why, sizeof why);
                fputs(": not drawn: ", f);
                if (why[0])
                    ESC(f, why);
                else
                    fputs("no status-ok points with the values this figure needs", f);
                fputs(".", f);
            }
            fputs("</figcaption></figure>\n", f);
        }
        fputs("</div>\n", f);
    }
    fputs("</section>\n", f);
}

/* The method gallery's images (not the base masks' base_SLUG.png). */
static int img_filter(const struct dirent *d)
{
    size_t l = strlen(d->d_name);
    return d->d_name[0] != '.' && l > 4 && strncmp(d->d_name, "base_", 5) != 0 &&
           (strcmp(d->d_name + l - 4, ".png") == 0 || strcmp(d->d_name + l - 4, ".svg") == 0);
}

/* The base masks alone (mask_gallery/base_SLUG.png, drawn by plot). */
static void base_masks(FILE *f, const char *dir, const ab_report_mask *m, int nm)
{
    int any = 0;
    for (int k = 0; k < nm; k++) {
        char pic[300];
        snprintf(pic, sizeof pic, "mask_gallery/base_%.200s.png", m[k].slug);
        if (!exists_in(dir, pic)) continue;
        if (!any++)
            fputs("<p>The base masks of this file alone (the dense layout under each, head 0, at "
                  "the mask's largest N up to 64k and its first point's seed, so document "
                  "lengths are the sweep's): dark = allowed, grey = forbidden.</p>\n"
                  "<div class=permask>\n",
                  f);
        fprintf(f, "<figure id=\"base_");
        ESC(f, m[k].slug);
        fprintf(f, "\"><a href=\"%s\"><img src=\"%s\" alt=\"base mask ", pic, pic);
        ESC(f, m[k].spec);
        fputs("\"></a>\n<figcaption><code>", f);
        ESC(f, m[k].spec);
        fputs("</code>", f);
        if (!isnan(m[k].mask_density))
            fprintf(f, ": allows %.2f%% of the N&sup2; pairs at N = %d", 100.0 * m[k].mask_density,
                    m[k].max_n);
        fputs(".</figcaption></figure>\n", f);
    }
    if (any) fputs("</div>\n<p>Every registered method under the primary mask:</p>\n", f);
}

static void gallery(FILE *f, const char *dir, const char *note, int *num, const ab_report_mask *masks,
                    int n_masks)
{
    char gdir[RPATH];
    snprintf(gdir, sizeof gdir, "%s/mask_gallery", dir);
    struct dirent **ents = NULL;
    int ne = (note && strncmp(note, "not drawn", 9) == 0) ? -1 : scandir(gdir, &ents, img_filter, alphasort);
    fputs("<section id=\"mask_gallery\">\n<h3>", f);
    int pngs = 0;
    for (int e = 0; e < ne; e++) {
        size_t l = strlen(ents[e]->d_name);
        pngs += strcmp(ents[e]->d_name + l - 4, ".png") == 0;
    }
    if (ne > 0) fprintf(f, "Figure %d. ", ++*num);
    fputs("Mask gallery</h3>\n", f);
    if (ne > 0) base_masks(f, dir, masks, n_masks);
    if (ne <= 0) {
        fputs("<p class=note>", f);
        if (note && note[0]) {
            char cap[600];
            snprintf(cap, sizeof cap, "%s", note);
            cap[0] = (char)(cap[0] == 'n' ? 'N' : cap[0]);
            ESC(f, cap);
        } else
            fputs("Not drawn: no images in mask_gallery/", f);
        fputs(".</p>\n</section>\n", f);
        if (ents) free(ents);
        return;
    }
    /* one combined picture (mask_gallery.png) when the command drew it, with
     * the per-method images linked; else every image */
    int combined = 0;
    for (int e = 0; e < ne; e++) combined |= strcmp(ents[e]->d_name, "mask_gallery.png") == 0;
    fputs("<figure class=gallery>", f);
    for (int e = 0; e < ne; e++) {
        const char *nm = ents[e]->d_name;
        size_t l = strlen(nm);
        int is_png = strcmp(nm + l - 4, ".png") == 0;
        if (pngs > 0 && !is_png) continue; /* show PNGs when there are */
        if (combined && strcmp(nm, "mask_gallery.png") != 0) continue;
        fputs("<a href=\"mask_gallery/", f);
        ESC(f, nm);
        fputs("\"><img src=\"mask_gallery/", f);
        ESC(f, nm);
        fprintf(f, "\" alt=\"mask gallery\"%s></a>", combined ? " class=wide" : "");
    }
    fputs("\n<figcaption>Which (query block, key block) pairs each method computes: query "
          "blocks down, key blocks across, dark = computed. These are every registered "
          "method, not only those in the results file; ",
          f);
    if (note) ESC(f, note);
    fputs(".", f);
    if (combined) {
        fputs(" One method per image:", f);
        int k = 0;
        for (int e = 0; e < ne; e++) {
            const char *nm = ents[e]->d_name;
            size_t l = strlen(nm);
            if (strcmp(nm + l - 4, ".png") != 0 || strcmp(nm, "mask_gallery.png") == 0) continue;
            fputs(k++ ? ", " : " ", f);
            fputs("<a href=\"mask_gallery/", f);
            ESC(f, nm);
            fputs("\">", f);
            char label[256];
            int pre = (strncmp(nm, "mask_", 5) == 0 && l > 9) ? 5 : 0;
            snprintf(label, sizeof label, "%.*s", (int)(l - 4 - (size_t)pre), nm + pre);
            ESC(f, label);
            fputs("</a>", f);
        }
        fputs(".", f);
    }
    fputs("</figcaption></figure>\n</section>\n", f);
    for (int e = 0; e < ne; e++) free(ents[e]);
    free(ents);
}

/* ---- the page ------------------------------------------------------------ */

static const char *const CSS =
    "body{font:15px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;"
    "max-width:1180px;margin:24px auto;padding:0 16px}"
    "h1{font-size:1.6em;margin:0 0 4px}h2{margin-top:1.8em;border-bottom:1px solid #ddd}"
    "h3{margin:1.4em 0 .4em}"
    "table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}"
    "th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    "table.env td:first-child{font-weight:600;white-space:nowrap}"
    "table.sum{font-size:13px}table.sum td:first-child{white-space:nowrap}"
    ".sw{display:inline-block;width:.9em;height:.9em;margin-right:6px;vertical-align:-1px;"
    "border-radius:2px}"
    "pre{background:#f7f7f7;border:1px solid #e2e2e2;padding:8px;overflow:auto;font-size:12.5px}"
    "figure{margin:0}figure img{max-width:100%;height:auto;border:1px solid #eee}"
    "figure.gallery img{max-width:32%;margin:0 1% 1% 0}figure.gallery img.wide{max-width:100%}"
    "figcaption{font-size:14px;color:#333;margin:.3em 0 1em;max-width:60em}"
    ".ci{color:#666;font-size:.9em}"
    ".permask{display:flex;flex-wrap:wrap;gap:10px}.permask figure{width:32%;min-width:260px}"
    ".permask figure img{width:100%}.permask figcaption{font-size:13px}"
    ".note{color:#8a5a00;background:#fff7e6;border:1px solid #f0d9a8;padding:4px 8px}"
    ".meta{color:#555}code{font-size:.92em}";

/* The count of points and of those left out, by status. */
static void points_line(FILE *f, const ab_point *pts, size_t n)
{
    ab_tally t = { 0 };
    for (size_t i = 0; i < n; i++) ab_tally_add(&t, pts[i].status);
    fprintf(f, "<p>%zu points: %zu status ok", n, n - t.total);
    if (t.total) {
        fputs(", left out of every figure and table value: ", f);
        for (size_t k = 0; k < t.n; k++) { /* statuses in name order */
            fprintf(f, "%s%zu <code>", k ? ", " : "", t.count[k]);
            esc(f, t.status[k], 16);
            fputs("</code>", f);
        }
        fputs(" (see <a href=\"points.tsv\">points.tsv</a> for their messages)", f);
    }
    fputs(".</p>\n", f);
}

/* The environment: the file's root attributes (the usual ones first), then
 * the config text. */
static void env_section(FILE *f, const ab_env *env, const char *base)
{
    fputs("<h2 id=\"environment\">Environment</h2>\n<p>The root attributes of ", f);
    ESC(f, base);
    fputs(".</p>\n<table class=env>\n", f);
    static const char *const first[][2] = { { "host", "host" },
                                            { "cpu_model", "CPU" },
                                            { "threads", "threads" },
                                            { "git_sha", "commit" },
                                            { "created_utc", "created (UTC)" },
                                            { "compiler", "compiler" },
                                            { "openblas_version", "OpenBLAS" },
                                            { "openblas_coretype", "OpenBLAS core" },
                                            { "hdf5_version", "HDF5" } };
    for (size_t k = 0; k < sizeof first / sizeof first[0]; k++) {
        const char *v = ab_env_get(env, first[k][0]);
        fputs("<tr><td>", f);
        ESC(f, first[k][1]);
        fputs("</td><td>", f);
        if (v)
            ESC(f, v);
        else
            fputs("<i>not recorded</i>", f);
        fputs("</td></tr>\n", f);
    }
    for (int i = 0; i < env->n; i++) {
        int shown = strcmp(env->name[i], "config_text") == 0;
        for (size_t k = 0; k < sizeof first / sizeof first[0] && !shown; k++)
            shown = strcmp(env->name[i], first[k][0]) == 0;
        if (shown || !env->value[i]) continue;
        fputs("<tr><td>", f);
        esc(f, env->name[i], sizeof env->name[i]);
        fputs("</td><td>", f);
        ESC(f, env->value[i]);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n<h3>Config</h3>\n<pre>", f);
    const char *cfg = ab_env_get(env, "config_text");
    if (cfg)
        ESC(f, cfg);
    else
        fputs("(no config_text attribute)", f);
    fputs("</pre>\n", f);
}

int ab_report_write(const char *path, const char *dir, const char *gallery_note, char *err, size_t errlen)
{
    ab_point *pts = NULL;
    size_t n = 0;
    ab_env env;
    memset(&env, 0, sizeof env);
    if (ab_results_read(path, &pts, &n, &env, err, errlen) != 0) return -1;

    char out[RPATH], tmp[RPATH + 8];
    snprintf(out, sizeof out, "%s/index.html", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write '%.300s': %s", tmp, strerror(errno));
        free(pts);
        ab_env_free(&env);
        return -1;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>attnbench: ",
          f);
    ESC(f, base);
    fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>attnbench results: ", CSS);
    ESC(f, base);
    fputs("</h1>\n<p class=meta>", f);
    const char *host = ab_env_get(&env, "host"), *sha = ab_env_get(&env, "git_sha");
    const char *when = ab_env_get(&env, "created_utc");
    fputs("host ", f);
    ESC(f, host ? host : "?");
    fputs(" &middot; commit ", f);
    ESC(f, sha ? sha : "?");
    fputs(" &middot; created ", f);
    ESC(f, when ? when : "?");
    fputs("</p>\n", f);

    points_line(f, pts, n);
    ab_report_mask masks[AB_REPORT_MAX_MASKS];
    int nm = ab_report_read_masks(dir, masks, AB_REPORT_MAX_MASKS);
    fputs("<p>Contents: <a href=\"#methods\">methods</a> &middot; <a href=\"#masks\">base "
          "masks</a> &middot; <a href=\"#figures\">figures</a> &middot; <a "
          "href=\"#environment\">environment</a></p>\n",
          f);

    fputs("<h2 id=\"methods\">Methods</h2>\n<p>One row per method", f);
    fputs(nm > 1 ? ", device and base mask" : " and device", f);
    fputs(", at the setting closest to 10% density and the method's largest N there (medians "
          "over seeds, tasks and depths; accuracy pooled). Latency and speedup come from the "
          "points with a timing (untimed points are scored only; hover a latency for its 95% "
          "interval); the speedup over dense is the paired ratio measured against dense in the "
          "same process, with its 95% interval (bootstrap over rounds) in brackets, or, marked "
          "&dagger;, dense latency / latency from separate runs where there is no paired "
          "measurement. The swatch is the method's colour in every figure. Data: <a "
          "href=\"summary.tsv\">summary.tsv</a>.</p>\n",
          f);
    int has_blas = 0;
    summary_table(f, dir, nm > 1, &has_blas);

    fputs("<h2 id=\"masks\">Base masks</h2>\n<p>The base mask is the attention mask of the "
          "workload (causal, full, sliding window, prefix-LM, packed documents, chunked "
          "prefill); every method's layout is intersected with it, and density counts only "
          "the pairs it allows. ",
          f);
    if (nm > 1)
        fputs("No figure mixes masks: each is drawn under the primary mask (first row) and, "
              "beside it, under each other mask. ",
              f);
    fputs("Data: <a href=\"masks.txt\">masks.txt</a>.</p>\n", f);
    if (nm > 0)
        mask_table(f, dir, masks, nm);
    else
        fputs("<p class=note>No masks.txt in this folder.</p>\n", f);

    fputs("<h2 id=\"figures\">Figures</h2>\n<p>Every figure is drawn from the results file "
          "alone, status-ok points only; each carries a footnote with the file, host, CPU/GPU, "
          "threads, commit and the count of points left out. Click a figure for its SVG.</p>\n",
          f);
    int num = 0;
    for (size_t k = 0; k < sizeof FIGS / sizeof FIGS[0]; k++)
        figure(f, dir, &FIGS[k], &num, has_blas, masks, nm);
    gallery(f, dir, gallery_note, &num, masks, nm);

    env_section(f, &env, base);
    fputs("<p class=meta>Written by <code>attnbench plot</code>. Regenerate with "
          "<code>attnbench plot ",
          f);
    ESC(f, base);
    fputs(" -d DIR</code>.</p>\n</body>\n</html>\n", f);

    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    free(pts);
    ab_env_free(&env);
    if (bad || rename(tmp, out) != 0) {
        snprintf(err, errlen, "cannot write '%.300s'", out);
        unlink(tmp);
        return -1;
    }
    return 0;
}
