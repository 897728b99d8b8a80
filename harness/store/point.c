/* point.c — the run environment (name -> string, written as root attributes of
 * the results file) and the point status helpers declared in point.h. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"
#include "harness/store/point.h"

/* Every status a point can end with; all of them are final for --resume. */
static const char *const known_statuses[] = {
    "ok", "calib_failed", "unsupported", "error", "crashed", "timeout", "oom", "nan",
};

int ab_status_is_final(const char *status)
{
    if (!status) return 0;
    for (size_t i = 0; i < sizeof known_statuses / sizeof *known_statuses; i++)
        if (strcmp(status, known_statuses[i]) == 0) return 1;
    return 0;
}

int ab_status_is_ok(const char *status) { return status && strcmp(status, "ok") == 0; }

/* Names longer than the slot are truncated; a NULL value counts as "".
 * An existing name is replaced in place (order kept). When the table is full
 * (AB_ENV_MAX entries) or the copy cannot be allocated, the entry is dropped:
 * the environment is descriptive and never worth stopping a run for. */
void ab_env_set(ab_env *e, const char *name, const char *value)
{
    if (!e || !name || !name[0]) return;
    if (!value) value = "";
    char key[sizeof e->name[0]];
    snprintf(key, sizeof key, "%s", name);

    char *copy = strdup(value);
    if (!copy) return;
    for (int i = 0; i < e->n; i++) {
        if (strcmp(e->name[i], key) == 0) {
            free(e->value[i]);
            e->value[i] = copy;
            return;
        }
    }
    if (e->n < 0 || e->n >= AB_ENV_MAX) {
        free(copy);
        return;
    }
    memcpy(e->name[e->n], key, sizeof key);
    e->value[e->n] = copy;
    e->n++;
}

const char *ab_env_get(const ab_env *e, const char *name)
{
    if (!e || !name) return NULL;
    char key[sizeof e->name[0]];
    snprintf(key, sizeof key, "%s", name);
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->name[i], key) == 0) return e->value[i];
    return NULL;
}

void ab_env_free(ab_env *e)
{
    if (!e) return;
    for (int i = 0; i < e->n && i < AB_ENV_MAX; i++) {
        free(e->value[i]);
        e->value[i] = NULL;
    }
    e->n = 0;
}

void ab_point_set_status(ab_point *p, const char *status, const char *fmt, ...)
{
    snprintf(p->status, sizeof p->status, "%s", status);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->message, sizeof p->message, fmt, ap);
    va_end(ap);
}

const char *ab_status_of_code(int rc)
{
    return rc == AB_ENOMEM ? "oom" : rc == AB_EUNSUPPORTED ? "unsupported" : "error";
}

const char *ab_point_mask(const ab_point *p) { return p->mask[0] ? p->mask : p->causal ? "causal" : "full"; }

static int num_cmp(double a, double b)
{
    if (isnan(a) || isnan(b)) return isnan(a) - isnan(b); /* NaN last */
    return (a > b) - (a < b);
}

static int is_bf16(const ab_point *p) { return !strncmp(p->dtype, "bf16", sizeof p->dtype); }

int ab_point_is_baseline(const ab_point *p)
{
    return !strncmp(p->method, "dense", sizeof p->method) && !is_bf16(p);
}

static int dtype_rank(const char *t) { return !strncmp(t, "fp32", 8) ? 0 : !strncmp(t, "fp16", 8) ? 1 : 2; }

int ab_dtype_cmp(const char *x, const char *y)
{
    const int a = dtype_rank(x), b = dtype_rank(y);
    return a != b ? a - b : strncmp(x, y, 8);
}

void ab_point_series_name(const ab_point *p, int multi_dev, char *buf, size_t n)
{
    snprintf(buf, n, "%.*s%s%.*s%s", (int)strnlen(p->method, sizeof p->method), p->method,
             multi_dev ? "@" : "", multi_dev ? (int)strnlen(p->device, sizeof p->device) : 0, p->device,
             is_bf16(p) ? ":bf16" : "");
}

int ab_point_work_cmp(const ab_point *x, const ab_point *y, int flags)
{
    int o = strncmp(x->task, y->task, sizeof x->task);
    if (o) return o;
    o = strncmp(x->device, y->device, sizeof x->device);
    if (o) return o;
    if (flags & AB_WORK_BASELINE)
        o = strncmp(is_bf16(x) ? "fp32" : x->dtype, is_bf16(y) ? "fp32" : y->dtype, sizeof x->dtype);
    else
        o = strncmp(x->dtype, y->dtype, sizeof x->dtype);
    if (o) return o;
    if (ab_point_is_decode(x) != ab_point_is_decode(y)) return ab_point_is_decode(x) ? 1 : -1;
    if (x->seq_len != y->seq_len) return x->seq_len > y->seq_len ? 1 : -1;
    if (x->heads != y->heads) return x->heads > y->heads ? 1 : -1;
    {
        const int32_t a[4] = { x->kv_heads, x->batch, x->steps, x->layers },
                      b[4] = { y->kv_heads, y->batch, y->steps, y->layers };
        for (int i = 0; i < 4; i++)
            if (a[i] != b[i]) return a[i] > b[i] ? 1 : -1;
        o = num_cmp(x->layer_corr, y->layer_corr);
        if (o) return o;
    }
    if (x->head_dim != y->head_dim) return x->head_dim > y->head_dim ? 1 : -1;
    if (flags & AB_WORK_MASK) {
        if (x->causal != y->causal) return x->causal > y->causal ? 1 : -1;
        o = strncmp(ab_point_mask(x), ab_point_mask(y), AB_MASK_SPEC);
        if (o) return o;
    }
    if (x->seed != y->seed) return x->seed > y->seed ? 1 : -1;
    return num_cmp(x->depth, y->depth);
}

int ab_point_is_decode(const ab_point *p) { return !strncmp(p->phase, "decode", sizeof p->phase); }

int ab_point_has_flag(const ab_point *p, const char *flag)
{
    size_t fl = strlen(flag);
    const char *s = p->timing, *end = p->timing + strnlen(p->timing, sizeof p->timing);
    while (s < end) {
        const char *c = memchr(s, ',', (size_t)(end - s));
        size_t l = c ? (size_t)(c - s) : (size_t)(end - s);
        if (l == fl && strncmp(s, flag, fl) == 0) return 1;
        s += l + 1;
    }
    return 0;
}

int ab_point_timed(const ab_point *p)
{
    return ab_status_is_ok(p->status) && isfinite(p->total_ms) && p->total_ms > 0 &&
           !ab_point_has_flag(p, "untimed");
}

int ab_point_paired_speedup(const ab_point *p, double *speedup, double *lo, double *hi)
{
    *speedup = *lo = *hi = NAN;
    if (!ab_point_timed(p) || !isfinite(p->rel_dense) || !(p->rel_dense > 0)) return 0;
    *speedup = 1.0 / p->rel_dense;
    if (isfinite(p->rel_hi) && p->rel_hi > 0) *lo = 1.0 / p->rel_hi;
    if (isfinite(p->rel_lo) && p->rel_lo > 0) *hi = 1.0 / p->rel_lo;
    return 1;
}

void ab_point_put_list(char *buf, size_t n, const double *v, int count, int decimals)
{
    size_t off = 0;
    buf[0] = 0;
    for (int k = 0; k < count && off + 8 < n; k++)
        off += (size_t)snprintf(buf + off, n - off, "%s%.*f", k ? "," : "", decimals, v[k]);
}

size_t ab_point_get_list(const char *s, double *v, size_t cap)
{
    size_t nv = 0;
    while (*s && nv < cap) {
        char *end;
        const double r = strtod(s, &end);
        if (end == s) break;
        v[nv++] = r;
        s = *end == ',' ? end + 1 : end;
    }
    return nv;
}
