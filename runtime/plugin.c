/* plugin.c — method instances, checked calls into methods and the registry
 * checks run at start-up.
 *
 * The state a method sees is preceded by a hidden header holding its error
 * message (runtime/handle.h), so ab_set_error(state, ...) needs no global
 * state; masks and tasks get the same header (maskspec.c, task.c). */
#include "runtime/plugin.h"
#include "runtime/handle.h"
#include "runtime/registry.h"
#include "kernels/kernels.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ab_strerror(int code)
{
    switch (code) {
    case AB_OK: return "ok";
    case AB_EINVAL: return "invalid argument";
    case AB_ENOMEM: return "out of memory";
    case AB_EUNSUPPORTED: return "unsupported";
    case AB_EINTERNAL: return "internal error";
    default: return "unknown error code";
    }
}

int ab_param_count(const ab_param *p, int cap)
{
    int n = 0;
    while (n < cap && p[n].name) n++;
    return n;
}

void ab_params_defaults(const ab_param *list, int cap, ab_params *p)
{
    memset(p, 0, sizeof *p);
    p->n = ab_param_count(list, cap);
    for (int i = 0; i < p->n; i++) p->v[i] = list[i].def;
}

int ab_params_set(const ab_param *list, int cap, ab_params *p, const char *name, double v)
{
    int n = ab_param_count(list, cap);
    for (int i = 0; i < n; i++) {
        if (strcmp(list[i].name, name) != 0) continue;
        if (list[i].is_int) v = round(v);
        if (!(v >= list[i].min && v <= list[i].max)) return -2;
        p->v[i] = v;
        return 0;
    }
    return -1;
}

void ab_params_format(const ab_param *list, int cap, const ab_params *p, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = 0;
    int cnt = ab_param_count(list, cap);
    for (int i = 0; i < cnt && off < n; i++) {
        int w = snprintf(buf + off, n - off, "%s%s=%.6g", i ? "," : "", list[i].name, p->v[i]);
        if (w < 0) break;
        off += (size_t)w;
    }
}

int ab_instance_create(ab_instance *in, const ab_method *m, const ab_params *p, const ab_shape *s)
{
    memset(in, 0, sizeof *in);
    in->m = m;
    in->params = *p;
    in->shape = *s;
    ab_handle *h = calloc(1, sizeof *h + m->state_size + 1);
    if (!h) return AB_ENOMEM;
    ab_handle_open(h);
    in->state = ab_handle_ptr(h);
    if (!m->init) return AB_OK;
    return ab_handle_checked(h, m->init(in->state, &in->params, s), "init()");
}

static int checked(ab_instance *in, int rc, const char *what)
{
    return ab_handle_checked(ab_handle_of(in->state), rc, what);
}

int ab_instance_select(ab_instance *in, const ab_problem *pb, ab_layout *l)
{
    if (!in->m->select) {
        ab_set_error(in->state, "method has no select()");
        return AB_EINTERNAL;
    }
    return checked(in, in->m->select(in->state, pb, l), "select()");
}

int ab_instance_run(ab_instance *in, const ab_problem *pb, const ab_layout *l, float *out)
{
    if (in->m->run) return checked(in, in->m->run(in->state, pb, l, out), "run()");
    if (l->kind == AB_LAYOUT_CUSTOM) {
        ab_set_error(in->state, "custom layout but the method has no run()");
        return AB_EINTERNAL;
    }
    return ab_kernel_layout(pb, l, out);
}

int ab_instance_weights(const ab_instance *in, const ab_problem *pb, const ab_layout *l, int head, int row,
                        double *w)
{
    if (!in->m->weights || l->kind != AB_LAYOUT_CUSTOM) return AB_EUNSUPPORTED;
    if (head < 0 || head >= pb->s.heads || row < 0 || row >= pb->s.seq_len) return AB_EINVAL;
    /* no error message through the handle: called from many threads at once */
    const int rc = in->m->weights(in->state, pb, l, head, row, w);
    return rc <= 0 && rc >= AB_EINTERNAL ? rc : AB_EINTERNAL;
}

int ab_instance_prepare(ab_instance *in, const ab_decode *dp)
{
    if (!in->m->prepare) return AB_OK;
    return checked(in, in->m->prepare(in->state, dp), "prepare()");
}

int ab_instance_dselect(ab_instance *in, const ab_decode *dp, ab_layout *l)
{
    if (!in->m->dselect) {
        ab_set_error(in->state, "method has no dselect(): it does not decode");
        return AB_EUNSUPPORTED;
    }
    return checked(in, in->m->dselect(in->state, dp, l), "dselect()");
}

int ab_instance_drun(ab_instance *in, const ab_decode *dp, const ab_layout *l, float *out)
{
    if (in->m->drun) return checked(in, in->m->drun(in->state, dp, l, out), "drun()");
    if (l->kind == AB_LAYOUT_CUSTOM) {
        ab_set_error(in->state, "custom decode layout but the method has no drun()");
        return AB_EINTERNAL;
    }
    return ab_kernel_decode(dp, l, out, AB_DECODE_AUTO, 0);
}

void ab_instance_destroy(ab_instance *in)
{
    if (!in->state) return;
    if (in->m->fini) in->m->fini(in->state);
    ab_handle *h = ab_handle_of(in->state);
    ab_handle_close(h);
    free(h);
    in->state = NULL;
}

const char *ab_instance_error(const ab_instance *in)
{
    if (!in->state) return "";
    return ab_handle_of(in->state)->msg;
}

void ab_instance_clear_error(ab_instance *in)
{
    if (in->state) ab_handle_of(in->state)->msg[0] = 0;
}

/* ---- registry checks --------------------------------------------------- */
int ab_family_index(const char *family)
{
    if (!family || !*family) return -1;
    const size_t n = strlen(family);
    const char *p = AB_FAMILIES;
    for (int i = 0; *p; i++) {
        const char *e = strchr(p, ' ');
        const size_t w = e ? (size_t)(e - p) : strlen(p);
        if (w == n && !strncmp(p, family, n)) return i;
        if (!e) break;
        p = e + 1;
    }
    return -1;
}

static int valid_name(const char *s)
{
    if (!s || !*s || strlen(s) >= 32) return 0;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_')) return 0;
    return 1;
}

int ab_registry_check(const ab_method *const *m, int n, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        const ab_method *a = m[i];
        if (!a) {
            snprintf(err, errlen, "method table entry %d is NULL", i);
            return -1;
        }
        if (a->abi != AB_ABI_VERSION) {
            snprintf(err, errlen,
                     "method '%s' was built for plugin ABI %d, this attnbench has ABI %d: rebuild it against "
                     "include/attnbench.h",
                     a->name ? a->name : "?", a->abi, AB_ABI_VERSION);
            return -1;
        }
        if (!valid_name(a->name)) {
            snprintf(err, errlen, "method name '%s' is not [a-z0-9_]{1,31}", a->name ? a->name : "(null)");
            return -1;
        }
        if (!(a->phases & (AB_PREFILL | AB_DECODE)) || (a->phases & ~(AB_PREFILL | AB_DECODE))) {
            snprintf(err, errlen, "method '%s': phases must be AB_PREFILL and/or AB_DECODE", a->name);
            return -1;
        }
        if (a->dtypes & ~(AB_FP32 | AB_BF16)) {
            snprintf(err, errlen, "method '%s': dtypes must be AB_FP32 and/or AB_BF16 (0: AB_FP32)", a->name);
            return -1;
        }
        if ((a->phases & AB_PREFILL) && !a->select) {
            snprintf(err, errlen, "method '%s' has no select() (required for AB_PREFILL)", a->name);
            return -1;
        }
        if (!(a->phases & AB_DECODE) != !a->dselect) {
            snprintf(err, errlen,
                     "method '%s': AB_DECODE in phases needs dselect(), and dselect() needs AB_DECODE",
                     a->name);
            return -1;
        }
        if (!(a->phases & AB_DECODE) && (a->prepare || a->drun || a->layered)) {
            snprintf(err, errlen,
                     "method '%s': prepare(), drun() and layered are decode entries: add AB_DECODE", a->name);
            return -1;
        }
        if (ab_family_index(a->family) < 0) {
            snprintf(err, errlen, "method '%s': family '%s' is not one of: %s", a->name,
                     a->family ? a->family : "(null)", AB_FAMILIES);
            return -1;
        }
        if (!(a->approx_tol >= 0.0 && a->approx_tol < 1e300)) {
            snprintf(err, errlen, "method '%s': approx_tol %g must be finite and >= 0", a->name,
                     a->approx_tol);
            return -1;
        }
        int np = 0;
        while (np < AB_MAX_PARAMS && a->params[np].name) {
            const ab_param *p = &a->params[np];
            if (!(p->min <= p->def && p->def <= p->max)) {
                snprintf(err, errlen, "method '%s': param '%s' default %g outside [%g, %g]", a->name, p->name,
                         p->def, p->min, p->max);
                return -1;
            }
            np++;
        }
        if (np == AB_MAX_PARAMS) {
            snprintf(err, errlen, "method '%s': params list is not NULL-terminated (at most %d params)",
                     a->name, AB_MAX_PARAMS - 1);
            return -1;
        }
        if (a->density_knob.param >= np) {
            snprintf(err, errlen, "method '%s': density knob index %d but only %d params", a->name,
                     a->density_knob.param, np);
            return -1;
        }
        if (a->density_knob.param >= 0 && a->density_knob.log_scale &&
            a->params[a->density_knob.param].min <= 0) {
            snprintf(err, errlen, "method '%s': log-scale knob '%s' needs min > 0", a->name,
                     a->params[a->density_knob.param].name);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(m[j]->name, a->name) == 0) {
                snprintf(err, errlen, "two methods are named '%s': names must be unique", a->name);
                return -1;
            }
    }
    return 0;
}

int ab_task_registry_check(const ab_task *const *t, int n, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        const ab_task *a = t[i];
        if (a->abi != AB_ABI_VERSION) {
            snprintf(err, errlen, "task '%s' was built for ABI %d, this attnbench has ABI %d",
                     a->name ? a->name : "?", a->abi, AB_ABI_VERSION);
            return -1;
        }
        if (!valid_name(a->name) || !a->generate) {
            snprintf(err, errlen, "task '%s' has an invalid name or no generate()",
                     a->name ? a->name : "(null)");
            return -1;
        }
        if (ab_param_count(a->params, AB_TASK_MAX_PARAMS) == AB_TASK_MAX_PARAMS) {
            snprintf(err, errlen, "task '%s': params list is not NULL-terminated", a->name);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(t[j]->name, a->name) == 0) {
                snprintf(err, errlen, "two tasks are named '%s'", a->name);
                return -1;
            }
    }
    return 0;
}

int ab_mask_registry_check(const ab_mask_def *const *m, int n, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        const ab_mask_def *a = m[i];
        if (a->abi != AB_ABI_VERSION) {
            snprintf(err, errlen, "mask '%s' was built for ABI %d, this attnbench has ABI %d",
                     a->name ? a->name : "?", a->abi, AB_ABI_VERSION);
            return -1;
        }
        if (!valid_name(a->name) || !a->allows || !a->span) {
            snprintf(err, errlen, "mask '%s' has an invalid name or lacks allows()/span()",
                     a->name ? a->name : "(null)");
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(m[j]->name, a->name) == 0) {
                snprintf(err, errlen, "two masks are named '%s'", a->name);
                return -1;
            }
    }
    return 0;
}

void ab_registry_init(void)
{
    char err[512];
    const ab_method *ms[ab_method_count + 1];
    const ab_task *ts[ab_task_count + 1];
    for (int i = 0; i < ab_method_count; i++) ms[i] = ab_method_at(i);
    for (int i = 0; i < ab_task_count; i++) ts[i] = ab_task_at(i);
    const ab_mask_def *mk[ab_mask_count + 1];
    for (int i = 0; i < ab_mask_count; i++) mk[i] = ab_mask_at(i);
    if (ab_registry_check(ms, ab_method_count, err, sizeof err) != 0 ||
        ab_task_registry_check(ts, ab_task_count, err, sizeof err) != 0 ||
        ab_mask_registry_check(mk, ab_mask_count, err, sizeof err) != 0) {
        fprintf(stderr, "attnbench: registry error: %s\n", err);
        exit(2);
    }
}

const ab_method *ab_method_find(const char *name)
{
    for (int i = 0; i < ab_method_count; i++)
        if (strcmp(ab_method_at(i)->name, name) == 0) return ab_method_at(i);
    return NULL;
}

const ab_task *ab_task_find(const char *name)
{
    for (int i = 0; i < ab_task_count; i++)
        if (strcmp(ab_task_at(i)->name, name) == 0) return ab_task_at(i);
    return NULL;
}
