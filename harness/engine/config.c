/* config.c — INI configuration: defaults, parsing (inih, with line numbers
 * from a counting reader), strict validation of every key and value.
 *
 * Errors read "FILE:LINE: [section] key 'K': why" and stop the run before
 * anything is written. */
#include "harness/engine/config.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"

#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ab_config_defaults(ab_config *c)
{
    memset(c, 0, sizeof *c);
    c->n_tasks = 1;
    strcpy(c->tasks[0], "needle");
    c->n_lens = 1;
    c->seq_lens[0] = 1024;
    c->n_heads = 1;
    c->heads[0] = 4;
    c->n_dims = 1;
    c->head_dims[0] = 64;
    c->n_masks = 1;
    strcpy(c->masks[0], "causal");
    c->n_seeds = 1;
    c->seeds[0] = 1;
    c->n_depths = 1;
    c->depths[0] = 0.5;
    c->n_dens = 3;
    c->densities[0] = 0.1;
    c->densities[1] = 0.2;
    c->densities[2] = 0.4;
    c->devices = AB_CPU;
    c->dtypes = AB_FP32;
    c->block_q = 0; /* 0: each method's native block (ab_config_blocks) */
    c->block_k = 0;
    c->threads = 0;
    c->phases = AB_PREFILL;
    c->n_kv = 1;
    c->kv_heads[0] = 0;
    c->batch = 1;
    c->steps = 16;
    c->layers = 1;
    c->layer_corr = 0.9;
    c->warmup = 1;
    c->min_repeats = 3;
    c->max_repeats = 50;
    c->min_time_s = 0.2;
    c->max_time_s = 5.0;
    c->point_timeout_s = 300;
    c->point_mem_gb = -1;
    c->rounds = 3;
    c->paired = 1;
    c->min_sample_ms = 10;
    c->interference_pct = 10;
    c->shared_core_check = 1;
    c->decode_cold = 1;
    c->score_rows = 256;
    c->exact_max_n = 8192;
    c->topk = 64;
    c->tolerance = 0.10;
    c->max_iters = 30;
}

void ab_config_free(ab_config *c)
{
    free(c->text);
    c->text = NULL;
}

/* ---- value parsing ----------------------------------------------------- */
static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* strtok_r merges adjacent separators, so "2,,4", ",2" and "2," would pass
 * as lists without an empty element: catch them first. */
static int has_empty_element(const char *s)
{
    if (!strchr(s, ',')) return 0;
    for (const char *p = s;; p++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int blank = 1;
        for (size_t i = 0; i < len; i++)
            if (!isspace((unsigned char)p[i])) blank = 0;
        if (blank) return 1;
        if (!e) return 0;
        p = e;
    }
}

/* The items of a comma list, trimmed, each handed to take(ctx, item, i, ...),
 * which stores it or says why not; *n counts the items taken. Refused: a
 * value of 2048 characters or more (the message toolong), an empty item, an
 * empty list. "why" gets the reason on failure. */
typedef int (*item_fn)(void *ctx, const char *item, int i, char *why, size_t wl);
static int each_item(const char *val, const char *toolong, item_fn take, void *ctx, int *n, char *why,
                     size_t wl)
{
    char buf[2048];
    if (strlen(val) >= sizeof buf) {
        snprintf(why, wl, "%s", toolong);
        return -1;
    }
    if (has_empty_element(val)) {
        snprintf(why, wl, "empty list element");
        return -1;
    }
    strcpy(buf, val);
    *n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *t = trim(tok);
        if (!*t) {
            snprintf(why, wl, "empty list element");
            return -1;
        }
        if (take(ctx, t, *n, why, wl)) return -1;
        (*n)++;
    }
    if (*n == 0) {
        snprintf(why, wl, "empty list");
        return -1;
    }
    return 0;
}

typedef struct num_out {
    double *v;
    int cap;
} num_out;

static int take_num(void *ctx, const char *t, int i, char *why, size_t wl)
{
    num_out *o = ctx;
    if (i >= o->cap) {
        snprintf(why, wl, "more than %d values", o->cap);
        return -1;
    }
    if (parse_double(t, &o->v[i])) {
        snprintf(why, wl, "'%s' is not a finite number", t);
        return -1;
    }
    return 0;
}

/* Split a comma list into numbers. "why" gets the reason on failure. */
static int parse_num_list(const char *val, double *out, int cap, int *n, char *why, size_t wl)
{
    num_out o = { out, cap };
    return each_item(val, "value too long", take_num, &o, n, why, wl);
}

static int parse_int_list(const char *val, int *out, int cap, int *n, long lo, long hi, char *why, size_t wl)
{
    double tmp[AB_CFG_LIST];
    if (parse_num_list(val, tmp, cap < AB_CFG_LIST ? cap : AB_CFG_LIST, n, why, wl)) return -1;
    for (int i = 0; i < *n; i++) {
        if (tmp[i] != floor(tmp[i])) {
            snprintf(why, wl, "'%g' is not an integer", tmp[i]);
            return -1;
        }
        if (tmp[i] < lo || tmp[i] > hi) {
            snprintf(why, wl, "%g is outside [%ld, %ld]", tmp[i], lo, hi);
            return -1;
        }
        out[i] = (int)tmp[i];
    }
    return 0;
}

typedef struct name_out {
    char (*v)[AB_CFG_NAME];
    int cap;
} name_out;

static int take_name(void *ctx, const char *t, int i, char *why, size_t wl)
{
    name_out *o = ctx;
    if (strlen(t) >= AB_CFG_NAME) {
        snprintf(why, wl, "name '%s' too long", t);
        return -1;
    }
    if (i >= o->cap) {
        snprintf(why, wl, "more than %d names", o->cap);
        return -1;
    }
    for (int k = 0; k < i; k++)
        if (!strcmp(o->v[k], t)) {
            snprintf(why, wl, "'%s' listed twice", t);
            return -1;
        }
    strcpy(o->v[i], t);
    return 0;
}

int ab_parse_name_list(const char *s, char out[][AB_CFG_NAME], int cap, int *n, char *err, size_t errlen)
{
    name_out o = { out, cap };
    return each_item(s, "list too long", take_name, &o, n, err, errlen);
}

static int take_mask(void *ctx, const char *t, int i, char *why, size_t wl)
{
    char(*out)[AB_MASK_SPEC] = ctx;
    if (strlen(t) >= AB_MASK_SPEC) {
        snprintf(why, wl, "mask spec '%.40s...' longer than %d characters", t, AB_MASK_SPEC - 1);
        return -1;
    }
    if (i >= AB_MAX_MASKS) {
        snprintf(why, wl, "more than %d masks", AB_MAX_MASKS);
        return -1;
    }
    for (int k = 0; k < i; k++)
        if (!strcmp(out[k], t)) {
            snprintf(why, wl, "'%s' listed twice", t);
            return -1;
        }
    char e[300];
    if (ab_mask_check_spec(t, e, sizeof e)) {
        snprintf(why, wl, "'%s': %s (see: attnbench list masks)", t, e);
        return -1;
    }
    strcpy(out[i], t);
    return 0;
}

/* A comma list of base-mask specs ("causal, sliding:4096, document:8"):
 * each is checked by its plugin (no length yet: ab_mask_check_spec); the
 * lengths of the sweep are checked once all keys are read (check_masks). */
static int parse_mask_list(const char *val, char out[][AB_MASK_SPEC], int *n, char *why, size_t wl)
{
    return each_item(val, "value too long", take_mask, out, n, why, wl);
}

/* ---- the handler ------------------------------------------------------- */
typedef struct parse_ctx {
    ab_config *c;
    const char *text; /* cursor for the reader */
    int line;         /* current line (the reader counts) */
    int err_line;
    char err[1024];
    char seen[256][72]; /* section.key pairs already set */
    int n_seen;
    char cur[64]; /* the section being read, and those already closed */
    char done[64][64];
    int done_line[64], n_done, cur_line;
    int indented;                    /* the current line starts with blank: inih's continuation */
    int long_line, max_line;         /* first line longer than inih's buffer (0: none), its size */
    char pend_sec[64], pend_key[64]; /* the key being read (pend_line 0: none) and its value so far */
    int pend_line;
    char acc[8192];
} parse_ctx;

static char *reader(char *str, int num, void *stream)
{
    parse_ctx *p = stream;
    if (!*p->text) return NULL;
    int i = 0;
    p->line++;
    p->indented = *p->text == ' ' || *p->text == '\t';
    while (i < num - 1 && p->text[0]) {
        char ch = *p->text++;
        str[i++] = ch;
        if (ch == '\n') break;
    }
    if (i == num - 1 && str[i - 1] != '\n' && *p->text) { /* inih would read the rest as a new line */
        if (!p->long_line) p->long_line = p->line, p->max_line = num - 1;
        while (*p->text && *p->text != '\n') p->text++;
        if (*p->text) p->text++;
    }
    str[i] = 0;
    return str;
}

/* Each section's keys: 0, or -1 with the reason in why (wl bytes). */
#define FAIL(...)                       \
    do {                                \
        snprintf(why, wl, __VA_ARGS__); \
        return -1;                      \
    } while (0)

/* `key = all` (blank around it allowed); tmp bytes of the value compared. */
static int is_word(const char *value, const char *word, size_t tmp)
{
    char buf[2048];
    snprintf(buf, tmp < sizeof buf ? tmp : sizeof buf, "%s", value);
    return !strcmp(trim(buf), word);
}

/* The grid axes [sweep] and its [sweep.NAME] blocks share. */
typedef struct grid_axes {
    char (*tasks)[AB_CFG_NAME];
    int *n_tasks;
    char (*methods)[AB_CFG_NAME];
    int *n_methods, *methods_set; /* methods_set: NULL in [sweep] */
    int *seq_lens, *n_lens, *lens_line;
    int *heads, *n_heads;
    int *head_dims, *n_dims;
    int64_t *seeds;
    int *n_seeds;
    double *depths;
    int *n_depths;
} grid_axes;

/* One key of the axes: 1 set, 0 not an axis key, -1 bad. */
static int grid_axis(const grid_axes *g, int line, const char *name, const char *value, char *why, size_t wl)
{
    if (!strcmp(name, "tasks")) {
        if (ab_parse_name_list(value, g->tasks, AB_CFG_LIST, g->n_tasks, why, wl)) return -1;
        for (int i = 0; i < *g->n_tasks; i++)
            if (!ab_task_find(g->tasks[i]))
                FAIL("unknown task '%s' (see: attnbench list tasks)", g->tasks[i]);
    } else if (!strcmp(name, "methods")) {
        if (g->methods_set) *g->methods_set = 1;
        if (is_word(value, "all", 2048)) {
            *g->n_methods = 0;
            return 1;
        }
        if (ab_parse_name_list(value, g->methods, AB_CFG_LIST, g->n_methods, why, wl)) return -1;
        for (int i = 0; i < *g->n_methods; i++)
            if (!ab_method_find(g->methods[i]))
                FAIL("unknown method '%s' (see: attnbench list methods)", g->methods[i]);
    } else if (!strcmp(name, "seq_lens")) {
        if (parse_int_list(value, g->seq_lens, AB_CFG_LIST, g->n_lens, 1, 1 << 24, why, wl)) return -1;
        *g->lens_line = line;
    } else if (!strcmp(name, "heads")) {
        if (parse_int_list(value, g->heads, AB_CFG_LIST, g->n_heads, 1, 1024, why, wl)) return -1;
    } else if (!strcmp(name, "head_dims")) {
        if (parse_int_list(value, g->head_dims, AB_CFG_LIST, g->n_dims, 16, 512, why, wl)) return -1;
    } else if (!strcmp(name, "seeds")) {
        double t[AB_CFG_LIST];
        if (parse_num_list(value, t, AB_CFG_LIST, g->n_seeds, why, wl)) return -1;
        for (int i = 0; i < *g->n_seeds; i++) {
            if (t[i] != floor(t[i]) || t[i] < 0 || t[i] > 9.0e15)
                FAIL("seed %g is not an integer in [0, 9e15]", t[i]);
            g->seeds[i] = (int64_t)t[i];
        }
    } else if (!strcmp(name, "depths")) {
        if (parse_num_list(value, g->depths, AB_CFG_LIST, g->n_depths, why, wl)) return -1;
        for (int i = 0; i < *g->n_depths; i++)
            if (g->depths[i] < 0 || g->depths[i] > 1) FAIL("depth %g is outside [0, 1]", g->depths[i]);
    } else
        return 0;
    return 1;
}

/* [sweep] masks, or causal: 1 / 0 / 0,1, the old spelling of masks =
 * causal / full / full, causal. */
static int sweep_masks(parse_ctx *p, const char *name, const char *value, char *why, size_t wl)
{
    ab_config *c = p->c;
    if (c->masks_line)
        FAIL("give either masks or causal (the old spelling: causal = 1 is masks = causal, 0 is full), not "
             "both (%s is set at line %d)",
             c->masks_key, c->masks_line);
    if (name[0] == 'c') {
        int v[2], n;
        if (parse_int_list(value, v, 2, &n, 0, 1, why, wl)) return -1;
        if (n == 2 && v[0] == v[1]) FAIL("'%d' listed twice", v[0]);
        for (int i = 0; i < n; i++) strcpy(c->masks[i], v[i] ? "causal" : "full");
        c->n_masks = n;
    } else if (parse_mask_list(value, c->masks, &c->n_masks, why, wl))
        return -1;
    c->masks_line = p->line;
    snprintf(c->masks_key, sizeof c->masks_key, "%s", name);
    return 0;
}

/* The phase-axis keys [sweep] and a [sweep.NAME] block share: phases,
 * kv_heads, layers. */
static int phase_axis(int line, const char *name, const char *value, unsigned *phases, int *kv, int *n_kv,
                      int *kv_line, int *layers, char *why, size_t wl)
{
    if (!strcmp(name, "phases")) {
        char names[4][AB_CFG_NAME];
        int n;
        if (ab_parse_name_list(value, names, 4, &n, why, wl)) return -1;
        *phases = 0;
        for (int i = 0; i < n; i++) {
            const unsigned ph = !strcmp(names[i], "prefill")  ? AB_PREFILL
                                : !strcmp(names[i], "decode") ? AB_DECODE
                                                              : 0;
            if (!ph) FAIL("unknown phase '%s' (prefill, decode)", names[i]);
            if (*phases & ph) FAIL("'%s' listed twice", names[i]);
            *phases |= ph;
        }
    } else if (!strcmp(name, "kv_heads")) {
        if (parse_int_list(value, kv, AB_CFG_LIST, n_kv, 0, 1024, why, wl)) return -1;
        *kv_line = line;
    } else {
        int n;
        if (parse_int_list(value, layers, 1, &n, 1, 64, why, wl)) return -1;
    }
    return 0;
}

static int parse_corr(const char *value, double *out, char *why, size_t wl)
{
    double v;
    int n;
    if (parse_num_list(value, &v, 1, &n, why, wl)) return -1;
    if (!(v >= 0 && v <= 1)) FAIL("%g is outside [0, 1]", v);
    *out = v;
    return 0;
}

static int sec_sweep(parse_ctx *p, const char *name, const char *value, char *why, size_t wl)
{
    ab_config *c = p->c;
    const grid_axes g = { c->tasks,   &c->n_tasks,   c->methods, &c->n_methods, NULL,         c->seq_lens,
                          &c->n_lens, &c->lens_line, c->heads,   &c->n_heads,   c->head_dims, &c->n_dims,
                          c->seeds,   &c->n_seeds,   c->depths,  &c->n_depths };
    int rc = grid_axis(&g, p->line, name, value, why, wl);
    if (rc) return rc < 0 ? -1 : 0;
    if (!strcmp(name, "masks") || !strcmp(name, "causal")) return sweep_masks(p, name, value, why, wl);
    if (!strcmp(name, "densities")) {
        if (is_word(value, "native", 64)) {
            c->native = 1;
            c->n_dens = 0;
            return 0;
        }
        c->native = 0;
        if (parse_num_list(value, c->densities, AB_CFG_LIST, &c->n_dens, why, wl)) return -1;
        for (int i = 0; i < c->n_dens; i++)
            if (!(c->densities[i] > 0 && c->densities[i] <= 1))
                FAIL("density %g is outside (0, 1] (or write 'native')", c->densities[i]);
    } else if (!strcmp(name, "devices")) {
        char names[4][AB_CFG_NAME];
        int n;
        if (ab_parse_name_list(value, names, 4, &n, why, wl)) return -1;
        c->devices = 0;
        for (int i = 0; i < n; i++) {
            if (!strcmp(names[i], "cpu"))
                c->devices |= AB_CPU;
            else if (!strcmp(names[i], "gpu"))
                c->devices |= AB_GPU;
            else
                FAIL("unknown device '%s' (cpu, gpu)", names[i]);
        }
    } else if (!strcmp(name, "dtypes")) {
        char names[4][AB_CFG_NAME];
        int n;
        if (ab_parse_name_list(value, names, 4, &n, why, wl)) return -1;
        c->dtypes = 0;
        for (int i = 0; i < n; i++) {
            const unsigned t = !strcmp(names[i], "fp32") ? AB_FP32 : !strcmp(names[i], "bf16") ? AB_BF16 : 0;
            if (!t) FAIL("unknown dtype '%s' (fp32, bf16)", names[i]);
            if (c->dtypes & t) FAIL("'%s' listed twice", names[i]);
            c->dtypes |= t;
        }
    } else if (!strcmp(name, "block_q") || !strcmp(name, "block_k")) {
        int v, n;
        if (parse_int_list(value, &v, 1, &n, 1, 4096, why, wl)) return -1;
        if (name[6] == 'q')
            c->block_q = v;
        else
            c->block_k = v;
    } else if (!strcmp(name, "threads")) {
        int n;
        if (parse_int_list(value, &c->threads, 1, &n, 0, 4096, why, wl)) return -1;
    } else if (!strcmp(name, "phases") || !strcmp(name, "kv_heads") || !strcmp(name, "layers")) {
        if (phase_axis(p->line, name, value, &c->phases, c->kv_heads, &c->n_kv, &c->kv_line, &c->layers, why,
                       wl))
            return -1;
    } else if (!strcmp(name, "batch") || !strcmp(name, "steps")) {
        int v, n;
        if (parse_int_list(value, &v, 1, &n, 1, 4096, why, wl)) return -1;
        *(name[0] == 'b' ? &c->batch : &c->steps) = v;
    } else if (!strcmp(name, "layer_corr")) {
        if (parse_corr(value, &c->layer_corr, why, wl)) return -1;
    } else
        FAIL("unknown key (sweep keys: tasks methods seq_lens heads head_dims masks causal seeds depths "
             "densities devices dtypes block_q block_k threads phases kv_heads batch steps layers "
             "layer_corr)");
    return 0;
}

/* [sweep.NAME]: the block, made at its first key. */
static int sec_block(parse_ctx *p, const char *bn, const char *name, const char *value, char *why, size_t wl)
{
    ab_config *c = p->c;
    ab_sweep_block *bk = NULL;
    for (int i = 0; i < c->n_blocks; i++)
        if (!strcmp(c->blocks[i].name, bn)) bk = &c->blocks[i];
    if (!bk) {
        if (!*bn || strlen(bn) >= AB_CFG_NAME)
            FAIL("a block needs a name of 1 to %d characters: [sweep.NAME]", AB_CFG_NAME - 1);
        if (c->n_blocks >= AB_MAX_BLOCKS) FAIL("more than %d [sweep.NAME] blocks", AB_MAX_BLOCKS);
        bk = &c->blocks[c->n_blocks++];
        memset(bk, 0, sizeof *bk);
        snprintf(bk->name, sizeof bk->name, "%s", bn);
        bk->line = p->line;
    }
    const grid_axes g = { bk->tasks,        &bk->n_tasks, bk->methods,   &bk->n_methods,
                          &bk->methods_set, bk->seq_lens, &bk->n_lens,   &bk->lens_line,
                          bk->heads,        &bk->n_heads, bk->head_dims, &bk->n_dims,
                          bk->seeds,        &bk->n_seeds, bk->depths,    &bk->n_depths };
    int rc = grid_axis(&g, p->line, name, value, why, wl);
    if (rc) return rc < 0 ? -1 : 0;
    if (!strcmp(name, "masks")) {
        if (parse_mask_list(value, bk->masks, &bk->n_masks, why, wl)) return -1;
        bk->masks_line = p->line;
    } else if (!strcmp(name, "densities")) {
        if (parse_num_list(value, bk->densities, AB_CFG_LIST, &bk->n_dens, why, wl)) return -1;
        for (int i = 0; i < bk->n_dens; i++)
            if (!(bk->densities[i] > 0 && bk->densities[i] <= 1))
                FAIL("density %g is outside (0, 1] ('native' is set once, in [sweep])", bk->densities[i]);
    } else if (!strcmp(name, "phases") || !strcmp(name, "kv_heads") || !strcmp(name, "layers")) {
        if (phase_axis(p->line, name, value, &bk->phases, bk->kv_heads, &bk->n_kv, &bk->kv_line, &bk->layers,
                       why, wl))
            return -1;
    } else if (!strcmp(name, "layer_corr")) {
        if (parse_corr(value, &bk->layer_corr, why, wl)) return -1;
        bk->corr_set = 1;
    } else
        FAIL("unknown key (a [sweep.NAME] block sets grid axes only: tasks methods seq_lens heads head_dims "
             "masks seeds depths densities phases kv_heads layers layer_corr; devices, dtypes, block sizes, "
             "threads, batch and steps are set once in [sweep])");
    return 0;
}

/* A key of one number: its range and where it goes. */
typedef struct num_key {
    const char *name;
    double lo, hi;
    char lo_open, hi_open, whole; /* (lo, ...; ..., hi); whole numbers only */
    char is_int;                  /* the field is an int, else a double */
    size_t off;                   /* offsetof(ab_config, field) */
    const char *why;              /* when out of range */
} num_key;

#define NK_INT(key, lo, hi, whole, why)                             \
    {                                                               \
#key, lo, hi, 0, 0, whole, 1, offsetof(ab_config, key), why \
    }
#define NK_DBL(key, lo, hi, lo_open, hi_open, why)                          \
    {                                                                       \
#key, lo, hi, lo_open, hi_open, 0, 0, offsetof(ab_config, key), why \
    }
static const num_key timing_keys[] = {
    NK_INT(warmup, 0, 1000, 1, "must be an integer in [0, 1000]"),
    NK_INT(min_repeats, 1, 100000, 1, "must be an integer >= 1"),
    NK_INT(max_repeats, 1, 1e6, 1, "must be an integer >= 1"),
    NK_DBL(min_time_s, 0, 3600, 0, 0, "must be in [0, 3600]"),
    NK_DBL(max_time_s, 0, 36000, 1, 0, "must be in (0, 36000]"),
    NK_DBL(point_timeout_s, 0, 864000, 1, 0, "must be in (0, 864000]"),
    NK_DBL(point_mem_gb, 0, 1e6, 0, 0, "must be in [0, 1e6] GB (0: no limit)"),
    NK_INT(rounds, 1, 16, 1, "must be an integer in [1, 16]"),
    NK_INT(shared_core_check, 0, 1, 1, "must be 0 or 1"),
    NK_INT(decode_cold, 0, 1, 1, "must be 0 or 1"),
    NK_INT(measure_bandwidth, 0, 1, 1, "must be 0 or 1"),
    NK_INT(paired, 0, 1, 1, "must be 0 or 1"),
    NK_DBL(min_sample_ms, 0, 60000, 0, 0, "must be in [0, 60000] ms"),
    NK_DBL(interference_pct, 0, 100, 1, 0, "must be in (0, 100]"),
    { NULL, 0, 0, 0, 0, 0, 0, 0, NULL },
};
static const num_key calibration_keys[] = {
    NK_DBL(tolerance, 0, 1, 1, 1, "must be in (0, 1)"),
    NK_INT(max_iters, 1, 200, 1, "must be an integer in [1, 200]"),
    { NULL, 0, 0, 0, 0, 0, 0, 0, NULL },
};
#undef NK_INT
#undef NK_DBL

/* A one-number key of the table: the value is read first (a bad value is
 * reported before an unknown key); 1 set, 0 not in the table, -1 bad. */
static int num_key_set(const num_key *t, ab_config *c, const char *name, const char *value, char *why,
                       size_t wl)
{
    double v;
    int n;
    if (parse_num_list(value, &v, 1, &n, why, wl)) return -1;
    for (; t->name; t++) {
        if (strcmp(t->name, name)) continue;
        if ((t->whole && v != floor(v)) || (t->lo_open ? v <= t->lo : v < t->lo) ||
            (t->hi_open ? v >= t->hi : v > t->hi))
            FAIL("%s", t->why);
        if (t->is_int)
            *(int *)((char *)c + t->off) = (int)v;
        else
            *(double *)((char *)c + t->off) = v;
        return 1;
    }
    return 0;
}

static int sec_timing(parse_ctx *p, const char *name, const char *value, char *why, size_t wl)
{
    ab_config *c = p->c;
    if (!strcmp(name, "timed_tasks")) {
        c->timed_none = 0;
        if (is_word(value, "all", 64)) {
            c->n_timed_tasks = 0;
            return 0;
        }
        if (is_word(value, "none", 64)) { /* every point scored only */
            c->n_timed_tasks = 0;
            c->timed_none = 1;
            return 0;
        }
        if (ab_parse_name_list(value, c->timed_tasks, AB_CFG_LIST, &c->n_timed_tasks, why, wl)) return -1;
        for (int i = 0; i < c->n_timed_tasks; i++)
            if (!ab_task_find(c->timed_tasks[i]))
                FAIL("unknown task '%s' (see: attnbench list tasks)", c->timed_tasks[i]);
        return 0;
    }
    if (!strcmp(name, "timed_depths")) {
        if (is_word(value, "all", 64)) {
            c->n_timed_depths = 0;
            return 0;
        }
        if (parse_num_list(value, c->timed_depths, AB_CFG_LIST, &c->n_timed_depths, why, wl)) return -1;
        for (int i = 0; i < c->n_timed_depths; i++)
            if (c->timed_depths[i] < 0 || c->timed_depths[i] > 1)
                FAIL("depth %g is outside [0, 1]", c->timed_depths[i]);
        return 0;
    }
    int rc = num_key_set(timing_keys, c, name, value, why, wl);
    if (rc) return rc < 0 ? -1 : 0;
    FAIL("unknown key (timing keys: rounds paired min_sample_ms shared_core_check decode_cold "
         "measure_bandwidth warmup min_repeats "
         "max_repeats min_time_s max_time_s timed_tasks timed_depths interference_pct point_timeout_s "
         "point_mem_gb)");
}

static int sec_metrics(parse_ctx *p, const char *name, const char *value, char *why, size_t wl)
{
    ab_config *c = p->c;
    int v, n;
    if (!strcmp(name, "score_rows")) {
        if (parse_int_list(value, &v, 1, &n, 1, 1 << 20, why, wl)) return -1;
        c->score_rows = v;
    } else if (!strcmp(name, "exact_max_n")) {
        if (parse_int_list(value, &v, 1, &n, 0, 1 << 24, why, wl)) return -1;
        c->exact_max_n = v;
    } else if (!strcmp(name, "topk")) {
        if (parse_int_list(value, &v, 1, &n, 1, 1 << 20, why, wl)) return -1;
        c->topk = v;
    } else
        FAIL("unknown key (metrics keys: score_rows exact_max_n topk)");
    return 0;
}

static int sec_calibration(parse_ctx *p, const char *name, const char *value, char *why, size_t wl)
{
    int rc = num_key_set(calibration_keys, p->c, name, value, why, wl);
    if (rc) return rc < 0 ? -1 : 0;
    FAIL("unknown key (calibration keys: tolerance max_iters)");
}

/* A task's string-valued key (e.g. file = ...): 1 set, 0 not one, -1 bad. */
static int task_string(parse_ctx *p, const char *pname, const char *name, const char *value, char *why,
                       size_t wl)
{
    ab_config *c = p->c;
    const ab_task *t = ab_task_find(pname);
    for (int i = 0; i < AB_TASK_MAX_STRINGS && t->string_params[i]; i++) {
        if (strcmp(t->string_params[i], name)) continue;
        if (c->n_to >= AB_CFG_OVERRIDES) FAIL("too many overrides");
        ab_override *o = &c->to[c->n_to];
        memset(o, 0, sizeof *o);
        snprintf(o->plugin, sizeof o->plugin, "%s", pname);
        snprintf(o->param, sizeof o->param, "%s", name);
        char tmp[sizeof o->str + 1];
        snprintf(tmp, sizeof tmp, "%s", value);
        const char *tv = trim(tmp);
        if (!*tv) FAIL("empty value");
        if (strlen(tv) >= sizeof o->str) FAIL("value longer than %zu characters", sizeof o->str - 1);
        snprintf(o->str, sizeof o->str, "%s", tv);
        o->is_str = 1;
        o->line = p->line;
        c->n_to++;
        return 1;
    }
    return 0;
}

/* [method.NAME] / [task.NAME]: a parameter override. */
static int sec_plugin(parse_ctx *p, const char *section, const char *name, const char *value, char *why,
                      size_t wl)
{
    ab_config *c = p->c;
    int is_m = section[0] == 'm';
    const char *pname = section + (is_m ? 7 : 5);
    const ab_param *list;
    int cap;
    if (is_m) {
        const ab_method *m = ab_method_find(pname);
        if (!m) FAIL("unknown method '%s' in section name (see: attnbench list methods)", pname);
        list = m->params;
        cap = AB_MAX_PARAMS;
    } else {
        const ab_task *t = ab_task_find(pname);
        if (!t) FAIL("unknown task '%s' in section name (see: attnbench list tasks)", pname);
        list = t->params;
        cap = AB_TASK_MAX_PARAMS;
    }
    int np = ab_param_count(list, cap), idx = -1;
    for (int i = 0; i < np; i++)
        if (!strcmp(list[i].name, name)) idx = i;
    if (idx < 0 && !is_m) {
        int rc = task_string(p, pname, name, value, why, wl);
        if (rc) return rc < 0 ? -1 : 0;
    }
    if (idx < 0 && is_m && (!strcmp(name, "block_q") || !strcmp(name, "block_k"))) {
        /* the harness's block geometry for this method (ab_config_blocks) */
        if (c->n_mo >= AB_CFG_OVERRIDES) FAIL("too many overrides");
        ab_override *o = &c->mo[c->n_mo];
        memset(o, 0, sizeof *o);
        snprintf(o->plugin, sizeof o->plugin, "%s", pname);
        snprintf(o->param, sizeof o->param, "%s", name);
        o->line = p->line;
        int v;
        if (parse_int_list(value, &v, 1, &o->n, 1, 4096, why, wl)) return -1;
        o->v[0] = v;
        c->n_mo++;
        return 0;
    }
    if (idx < 0) {
        char names[256] = "";
        for (int i = 0; i < np; i++) {
            strncat(names, " ", sizeof names - strlen(names) - 1);
            strncat(names, list[i].name, sizeof names - strlen(names) - 1);
        }
        FAIL("unknown parameter of %s '%s' (its parameters:%s%s)", is_m ? "method" : "task", pname,
             np ? names : " none", is_m ? "; and the harness's block_q block_k" : "");
    }
    if ((is_m ? c->n_mo : c->n_to) >= AB_CFG_OVERRIDES) FAIL("too many overrides");
    ab_override *o = is_m ? &c->mo[c->n_mo] : &c->to[c->n_to];
    memset(o, 0, sizeof *o);
    snprintf(o->plugin, sizeof o->plugin, "%s", pname);
    snprintf(o->param, sizeof o->param, "%s", name);
    o->line = p->line;
    if (parse_num_list(value, o->v, AB_CFG_LIST, &o->n, why, wl)) return -1;
    for (int i = 0; i < o->n; i++) {
        double v = o->v[i];
        if (list[idx].is_int && v != floor(v)) FAIL("'%g' is not an integer", v);
        if (v < list[idx].min || v > list[idx].max)
            FAIL("%g is outside [%g, %g]", v, list[idx].min, list[idx].max);
    }
    if (is_m)
        c->n_mo++;
    else
        c->n_to++;
    return 0;
}

/* A key seen twice, or a section reopened after another: the reason. */
static int check_order(parse_ctx *p, const char *section, const char *name, char *why, size_t wl)
{
    char sk[72];
    snprintf(sk, sizeof sk, "%s.%s", section, name);
    for (int i = 0; i < p->n_seen; i++)
        if (!strcmp(p->seen[i], sk)) FAIL("set twice");
    if (strcmp(section, p->cur)) { /* a new section: it must not be one already closed */
        for (int i = 0; i < p->n_done; i++)
            if (!strcmp(p->done[i], section))
                FAIL("section [%s] appears a second time (first used at line %d)", section, p->done_line[i]);
        if (p->cur[0] && p->n_done < 64) {
            snprintf(p->done[p->n_done], 64, "%s", p->cur);
            p->done_line[p->n_done++] = p->cur_line;
        }
        snprintf(p->cur, sizeof p->cur, "%s", section);
        p->cur_line = p->line;
    }
    if (p->n_seen < 256) strcpy(p->seen[p->n_seen++], sk);
    return 0;
}

/* One key's whole value, as read from the config at p->line. */
static int dispatch(parse_ctx *p, const char *section, const char *name, const char *value)
{
    char why[512] = "";
    const size_t wl = sizeof why;
    int rc;
    if (check_order(p, section, name, why, wl))
        rc = -1;
    else if (!strcmp(section, "sweep"))
        rc = sec_sweep(p, name, value, why, wl);
    else if (!strncmp(section, "sweep.", 6))
        rc = sec_block(p, section + 6, name, value, why, wl);
    else if (!strcmp(section, "timing"))
        rc = sec_timing(p, name, value, why, wl);
    else if (!strcmp(section, "metrics"))
        rc = sec_metrics(p, name, value, why, wl);
    else if (!strcmp(section, "calibration"))
        rc = sec_calibration(p, name, value, why, wl);
    else if (!strncmp(section, "method.", 7) || !strncmp(section, "task.", 5))
        rc = sec_plugin(p, section, name, value, why, wl);
    else {
        snprintf(why, wl,
                 "unknown section [%s] (sections: sweep sweep.NAME timing metrics calibration method.NAME "
                 "task.NAME)",
                 section);
        rc = -1;
    }
    if (rc == 0) return 1;
    if (!p->err_line) {
        p->err_line = p->line;
        snprintf(p->err, sizeof p->err, "[%s] key '%s': %s", section, name, why);
    }
    return 0;
}

/* Hand the pending key (if any) to dispatch(), as of the line it began on. */
static int flush(parse_ctx *p)
{
    if (!p->pend_line) return 1;
    const int now = p->line;
    p->line = p->pend_line;
    p->pend_line = 0;
    int ok = dispatch(p, p->pend_sec, p->pend_key, p->acc);
    p->line = now;
    return ok;
}

/* inih's callback. A key is held until the next one (or the end) so that
 * indented lines after it, which inih hands over under the same name, extend
 * its value: a long list may span lines, joined by commas ("a,\n  b" and
 * "a\n  b" both read "a, b"). Errors name the key's first line. */
static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *p = user;
    if (p->pend_line && p->indented && !strcmp(section, p->pend_sec) && !strcmp(name, p->pend_key)) {
        size_t n = strlen(p->acc);
        while (n && (p->acc[n - 1] == ' ' || p->acc[n - 1] == '\t')) n--;
        const char *sep = n && p->acc[n - 1] == ',' ? " " : ", ";
        if (n + strlen(sep) + strlen(value) + 1 > sizeof p->acc) {
            if (!p->err_line) {
                p->err_line = p->pend_line;
                snprintf(p->err, sizeof p->err, "[%s] key '%s': value longer than %zu characters", section,
                         name, sizeof p->acc - 1);
            }
            return 0;
        }
        snprintf(p->acc + n, sizeof p->acc - n, "%s%s", sep, value);
        return 1;
    }
    if (!flush(p)) return 0;
    snprintf(p->pend_sec, sizeof p->pend_sec, "%s", section);
    snprintf(p->pend_key, sizeof p->pend_key, "%s", name);
    snprintf(p->acc, sizeof p->acc, "%s", value);
    p->pend_line = p->line;
    return 1;
}
#undef FAIL

int ab_config_ngrids(const ab_config *c) { return 1 + c->n_blocks; }

int ab_config_task_variants(const ab_config *c, const ab_task *t)
{
    int nv = 1;
    for (int i = 0; i < c->n_to; i++)
        if (!c->to[i].is_str && !strcmp(c->to[i].plugin, t->name) && c->to[i].n > 1) nv *= c->to[i].n;
    return nv;
}

void ab_config_task_params(const ab_config *c, const ab_task *t, int v, ab_params *p, const char **str)
{
    ab_params_defaults(t->params, AB_TASK_MAX_PARAMS, p);
    if (str)
        for (int k = 0; k < AB_TASK_MAX_STRINGS; k++) str[k] = NULL;
    for (int i = 0; i < c->n_to; i++) {
        const ab_override *o = &c->to[i];
        if (strcmp(o->plugin, t->name)) continue;
        if (o->is_str) {
            for (int k = 0; str && k < AB_TASK_MAX_STRINGS && t->string_params[k]; k++)
                if (!strcmp(t->string_params[k], o->param)) str[k] = o->str;
        } else if (o->n > 0) {
            ab_params_set(t->params, AB_TASK_MAX_PARAMS, p, o->param, o->v[v % o->n]);
            if (o->n > 1) v /= o->n;
        }
    }
}

void ab_config_grid(const ab_config *c, int g, ab_grid *o)
{
    memset(o, 0, sizeof *o);
    o->name = "sweep";
    o->n_tasks = c->n_tasks;
    o->tasks = (const char(*)[AB_CFG_NAME])c->tasks;
    o->n_methods = c->n_methods;
    o->methods = (const char(*)[AB_CFG_NAME])c->methods;
    o->n_lens = c->n_lens;
    o->seq_lens = c->seq_lens;
    o->lens_line = c->lens_line;
    o->n_heads = c->n_heads;
    o->heads = c->heads;
    o->n_dims = c->n_dims;
    o->head_dims = c->head_dims;
    o->n_masks = c->n_masks;
    o->masks = (const char(*)[AB_MASK_SPEC])c->masks;
    o->masks_line = c->masks_line;
    o->n_seeds = c->n_seeds;
    o->seeds = c->seeds;
    o->n_depths = c->n_depths;
    o->depths = c->depths;
    o->n_dens = c->n_dens;
    o->densities = c->densities;
    o->phases = c->phases;
    o->n_kv = c->n_kv;
    o->kv_heads = c->kv_heads;
    o->kv_line = c->kv_line;
    o->layers = c->layers;
    o->layer_corr = c->layer_corr;
    snprintf(o->lens_where, sizeof o->lens_where, "[sweep] key 'seq_lens'");
    snprintf(o->masks_where, sizeof o->masks_where, "[sweep] key '%s'",
             c->masks_key[0] == 'c' ? "causal" : "masks");
    if (g <= 0 || g > c->n_blocks) return;
    const ab_sweep_block *b = &c->blocks[g - 1];
    o->name = b->name;
    if (b->n_tasks) {
        o->n_tasks = b->n_tasks;
        o->tasks = (const char(*)[AB_CFG_NAME])b->tasks;
    }
    if (b->methods_set) {
        o->n_methods = b->n_methods;
        o->methods = (const char(*)[AB_CFG_NAME])b->methods;
    }
    if (b->n_lens) {
        o->n_lens = b->n_lens;
        o->seq_lens = b->seq_lens;
        o->lens_line = b->lens_line;
        snprintf(o->lens_where, sizeof o->lens_where, "[sweep.%s] key 'seq_lens'", b->name);
    }
    if (b->n_heads) {
        o->n_heads = b->n_heads;
        o->heads = b->heads;
    }
    if (b->n_dims) {
        o->n_dims = b->n_dims;
        o->head_dims = b->head_dims;
    }
    if (b->n_masks) {
        o->n_masks = b->n_masks;
        o->masks = (const char(*)[AB_MASK_SPEC])b->masks;
        o->masks_line = b->masks_line;
        snprintf(o->masks_where, sizeof o->masks_where, "[sweep.%s] key 'masks'", b->name);
    }
    if (b->n_seeds) {
        o->n_seeds = b->n_seeds;
        o->seeds = b->seeds;
    }
    if (b->phases) o->phases = b->phases;
    if (b->n_kv) {
        o->n_kv = b->n_kv;
        o->kv_heads = b->kv_heads;
        o->kv_line = b->kv_line;
    }
    if (b->layers) o->layers = b->layers;
    if (b->corr_set) o->layer_corr = b->layer_corr;
    if (b->n_depths) {
        o->n_depths = b->n_depths;
        o->depths = b->depths;
    }
    if (b->n_dens) {
        o->n_dens = b->n_dens;
        o->densities = b->densities;
    }
}

int ab_config_timed(const ab_config *c, const char *task, double depth)
{
    if (c->timed_none) return 0;
    int ok = c->n_timed_tasks == 0;
    for (int i = 0; i < c->n_timed_tasks; i++) ok |= !strcmp(c->timed_tasks[i], task);
    if (!ok) return 0;
    if (c->n_timed_depths == 0) return 1;
    for (int i = 0; i < c->n_timed_depths; i++)
        if (fabs(c->timed_depths[i] - depth) < 1e-9) return 1;
    return 0;
}

/* Bind every base mask to every length of each grid (with the first seed:
 * whether a mask fits N does not depend on the seed), so "document lengths
 * sum to 12288, not N = 16384" stops the run here, naming the key. */
static int check_masks(const ab_config *c, char *err, size_t errlen)
{
    for (int g = 0; g < ab_config_ngrids(c); g++) {
        ab_grid ax;
        ab_config_grid(c, g, &ax);
        for (int k = 0; k < ax.n_masks; k++)
            for (int a = 0; a < ax.n_lens; a++) {
                int seen = 0;
                for (int b = 0; b < a; b++) seen |= ax.seq_lens[b] == ax.seq_lens[a];
                if (seen) continue;
                ab_mask m;
                char why[400];
                int rc =
                    ab_mask_make(&m, ax.masks[k], ax.seq_lens[a], (uint64_t)ax.seeds[0], why, sizeof why);
                ab_mask_free(&m);
                if (rc == AB_OK) continue;
                if (ax.masks_line)
                    snprintf(err, errlen, "%s:%d: %s: mask '%s' at N = %d (seq_lens): %s", c->path,
                             ax.masks_line, ax.masks_where, ax.masks[k], ax.seq_lens[a], why);
                else
                    snprintf(err, errlen, "%s: %s: mask '%s' at N = %d (seq_lens): %s", c->path,
                             ax.masks_where, ax.masks[k], ax.seq_lens[a], why);
                return -1;
            }
    }
    return 0;
}

int ab_config_load(ab_config *c, const char *path, char *err, size_t errlen)
{
    ab_config_defaults(c);
    snprintf(c->path, sizeof c->path, "%s", path);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open config: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0) break;
        if (len + 1 >= cap) {
            if (cap > (1u << 24)) {
                free(buf);
                buf = NULL;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    int rerr = ferror(f);
    fclose(f);
    if (!buf || rerr) {
        free(buf);
        snprintf(err, errlen, "%s: cannot read config (unreadable, or larger than 16 MiB)", path);
        return -1;
    }
    buf[len] = 0;
    if (strlen(buf) != len) {
        free(buf);
        snprintf(err, errlen, "%s: not a text file (contains NUL bytes)", path);
        return -1;
    }
    c->text = buf;
    parse_ctx *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->c = c;
    p->text = buf;
    int rc = ini_parse_stream(reader, p, handler, p);
    if (!p->err_line && !flush(p) && rc == 0) rc = p->err_line;
    if (p->long_line && (rc == 0 || !p->err_line || p->err_line >= p->long_line) &&
        !(rc > 0 && rc < p->long_line)) {
        snprintf(err, errlen, "%s:%d: line longer than %d characters; continue a long list on indented lines",
                 path, p->long_line, p->max_line);
        free(p);
        return -1;
    }
    if (rc != 0) {
        if (p->err_line && !(rc > 0 && rc < p->err_line)) /* else inih's syntax error came first */
            snprintf(err, errlen, "%s:%d: %s", path, p->err_line, p->err);
        else
            snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)", path, rc);
        free(p);
        return -1;
    }
    free(p);
    if (c->min_repeats > c->max_repeats) {
        snprintf(err, errlen, "%s: [timing] key 'min_repeats': %d is larger than max_repeats %d", path,
                 c->min_repeats, c->max_repeats);
        return -1;
    }
    if (c->min_time_s > c->max_time_s) {
        snprintf(err, errlen, "%s: [timing] key 'min_time_s': larger than max_time_s", path);
        return -1;
    }
    for (int i = 0; i < c->n_blocks; i++)
        if (c->native && c->blocks[i].n_dens) {
            snprintf(err, errlen,
                     "%s:%d: [sweep.%s] key 'densities': [sweep] densities = native applies to every block",
                     path, c->blocks[i].line, c->blocks[i].name);
            return -1;
        }
    return check_masks(c, err, errlen);
}

static double mem_available_bytes(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    double kb = -1;
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
        fclose(f);
    }
    if (kb > 0) return kb * 1024.0;
    return (double)sysconf(_SC_AVPHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
}

double ab_point_bytes(int heads, int n, int d)
{
    /* Q, K, V shared + method output + scratch output + a token layout of
     * up to ~half the pairs per 64-row query block (bounded estimate). */
    double t = (double)heads * n * d * 4.0;
    return 5.0 * t + (double)heads * ((double)n / 64.0 + 1) * (double)n * 4.0 * 0.5;
}

/* Ask each task with a check() hook about every shape of the grid. */
static int check_tasks(const ab_config *c, char *err, size_t errlen)
{
    for (int g = 0; g < ab_config_ngrids(c); g++) {
        ab_grid ax;
        ab_config_grid(c, g, &ax);
        for (int ti = 0; ti < ax.n_tasks; ti++) {
            const ab_task *t = ab_task_find(ax.tasks[ti]);
            if (!t || !t->check) continue;
            ab_params p;
            const char *str[AB_TASK_MAX_STRINGS] = { 0 };
            int line = 0;
            for (int i = 0; i < c->n_to && !line; i++)
                if (!strcmp(c->to[i].plugin, t->name)) line = c->to[i].line;
            const int nv = ab_config_task_variants(c, t);
            for (int var = 0; var < nv; var++) {
                ab_config_task_params(c, t, var, &p, str);
                for (int a = 0; a < ax.n_lens; a++)
                    for (int f = 0; f < ax.n_masks; f++) {
                        ab_mask mk; /* bound as the sweep binds it (seeds[0]; checked by check_masks) */
                        char why[400] = "";
                        if (ab_mask_make(&mk, ax.masks[f], ax.seq_lens[a], (uint64_t)ax.seeds[0], why,
                                         sizeof why) != AB_OK) {
                            ab_mask_free(&mk);
                            snprintf(err, errlen, "%s: %s: mask '%s' at N = %d: %s", c->path, ax.masks_where,
                                     ax.masks[f], ax.seq_lens[a], why);
                            return -1;
                        }
                        for (int b = 0; b < ax.n_heads; b++)
                            for (int e = 0; e < ax.n_dims; e++) {
                                ab_task_input in = { .p = &p,
                                                     .str = str,
                                                     .s = { ax.heads[b], ax.seq_lens[a], ax.head_dims[e],
                                                            mk.def->causal, 0, &mk },
                                                     .seed = (uint64_t)ax.seeds[0],
                                                     .depth = 0 };
                                in.s.scale = 1.0f / sqrtf((float)in.s.head_dim);
                                if (ab_task_check(t, &in, why, sizeof why) != AB_OK) {
                                    if (line)
                                        snprintf(err, errlen, "%s:%d: [task.%s]: %s", c->path, line, t->name,
                                                 why[0] ? why : "invalid input");
                                    else
                                        snprintf(err, errlen, "%s: [task.%s]: %s", c->path, t->name,
                                                 why[0] ? why : "invalid input");
                                    ab_mask_free(&mk);
                                    return -1;
                                }
                            }
                        ab_mask_free(&mk);
                    }
            }
        }
    }
    return 0;
}

int ab_config_check(const ab_config *c, char *err, size_t errlen)
{
    if (check_tasks(c, err, errlen)) return -1;
    double avail = mem_available_bytes();
    for (int g = 0; g < ab_config_ngrids(c); g++) {
        ab_grid ax;
        ab_config_grid(c, g, &ax);
        for (int b = 0; b < ax.n_heads; b++)
            for (int k = 0; k < ax.n_kv; k++)
                if (ax.kv_heads[k] > 0 && (ax.kv_heads[k] > ax.heads[b] || ax.heads[b] % ax.kv_heads[k])) {
                    char sec[AB_CFG_NAME + 16];
                    snprintf(sec, sizeof sec, g ? "[sweep.%s]" : "[sweep]", ax.name);
                    snprintf(err, errlen, "%s:%d: %s key 'kv_heads': %d does not divide heads = %d", c->path,
                             ax.kv_line, sec, ax.kv_heads[k], ax.heads[b]);
                    return -1;
                }
        for (int a = 0; a < ax.n_lens; a++)
            for (int b = 0; b < ax.n_heads; b++)
                for (int e = 0; e < ax.n_dims; e++) {
                    double need = ab_point_bytes(ax.heads[b], ax.seq_lens[a], ax.head_dims[e]);
                    if (ax.phases & AB_DECODE) {
                        const double dn =
                            ab_decode_bytes(c, ax.layers, ax.heads[b], ax.seq_lens[a], ax.head_dims[e]);
                        need = (ax.phases & AB_PREFILL) && need > dn ? need : dn;
                    }
                    if (avail > 0 && need > 0.9 * avail) {
                        snprintf(err, errlen,
                                 "%s: %s: N=%d with %d heads, d=%d needs about %.1f GiB, more than the %.1f "
                                 "GiB available",
                                 c->path, ax.lens_where, ax.seq_lens[a], ax.heads[b], ax.head_dims[e],
                                 need / 1073741824.0, avail / 1073741824.0);
                        return -1;
                    }
                }
    }
    return 0;
}

/* A decode problem's memory: the generator's draw of every layer at the
 * KV heads (Q, K, V of N + steps rows; the worst kv_heads is all heads),
 * the stack's K, V (kept) and Q, and its reference rows. */
double ab_decode_bytes(const ab_config *c, int layers, int heads, int n, int d)
{
    const double t = (double)n + c->steps, hb = (double)heads * c->batch;
    return 4.0 * t * d * hb * (3.0 + 3.0 * layers) + 64.0 * c->steps * hb * layers * d;
}

/* The block geometry a method runs on: [method.NAME] block_q / block_k, else
 * [sweep] block_q / block_k, else the method's native block, else 64; a
 * level that sets block_q but not block_k sets both. A
 * method whose own parameter is named block_q (its row grouping) sets its
 * blocks itself; the override then is that parameter. */
void ab_config_blocks(const ab_config *c, const ab_method *m, int *bq, int *bk)
{
    /* each level: block_k unset there follows that level's block_q */
    int q = m->block_q > 0 ? m->block_q : AB_DEFAULT_BLOCK;
    int k = m->block_k > 0 ? m->block_k : q;
    if (c->block_q > 0 || c->block_k > 0) {
        if (c->block_q > 0) q = c->block_q;
        k = c->block_k > 0 ? c->block_k : q;
    }
    int oq = 0, ok = 0;
    for (int i = 0; i < c->n_mo; i++) {
        const ab_override *o = &c->mo[i];
        if (o->is_str || o->n < 1 || strcmp(o->plugin, m->name)) continue;
        if (!strcmp(o->param, "block_q")) oq = (int)o->v[0];
        if (!strcmp(o->param, "block_k")) ok = (int)o->v[0];
    }
    if (oq > 0 || ok > 0) {
        if (oq > 0) q = oq;
        k = ok > 0 ? ok : q;
    }
    *bq = q;
    *bk = k;
}
