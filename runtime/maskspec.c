/* maskspec.c — base masks from their specs: lookup in the generated mask
 * registry, parse ("name" or "name:arg") and bind to a sequence length and
 * seed, through checked calls of the plugin's parse() and bind(). The
 * plugins are in masks/, the queries in runtime/mask.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/handle.h"
#include "runtime/registry.h"

const ab_mask_def *ab_mask_find(const char *name)
{
    for (int i = 0; i < ab_mask_count; i++)
        if (strcmp(ab_mask_at(i)->name, name) == 0) return ab_mask_at(i);
    return NULL;
}

void ab_mask_free(ab_mask *m)
{
    if (!m) return;
    free(m->aux);
    free(m->aux2);
    m->aux = m->aux2 = NULL;
    m->naux = m->naux2 = 0;
}

/* The mask a plugin's parse() / bind() sees lives right after an error header. */
typedef struct mask_call {
    ab_handle h;
    ab_mask m;
} mask_call;
_Static_assert(AB_HANDLE_FOLLOWS(mask_call, m), "ab_mask must follow the error header");

/* m->def->bind(m) when bind, else m->def->parse(m, arg), on a copy of *m
 * that is copied back; the plugin's message (or "") goes to err. */
static int mask_call_plugin(ab_mask *m, int bind, const char *arg, char *err, size_t errlen)
{
    mask_call c;
    ab_handle_open(&c.h);
    c.m = *m;
    int rc = bind ? m->def->bind(&c.m) : m->def->parse(&c.m, arg);
    rc = ab_handle_checked(&c.h, rc, bind ? "bind()" : "parse()");
    *m = c.m;
    if (errlen) snprintf(err, errlen, "%s", c.h.msg);
    ab_handle_close(&c.h);
    return rc;
}

/* Parse only: the def and args, no length. */
static int mask_parse(ab_mask *m, const char *spec, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (!spec || !*spec) {
        snprintf(err, errlen, "empty mask spec");
        return AB_EINVAL;
    }
    if (strlen(spec) >= sizeof m->spec) {
        snprintf(err, errlen, "mask spec longer than %d characters", (int)sizeof m->spec - 1);
        return AB_EINVAL;
    }
    strcpy(m->spec, spec);
    char name[AB_MASK_SPEC];
    const char *colon = strchr(spec, ':');
    size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    memcpy(name, spec, len);
    name[len] = 0;
    m->def = ab_mask_find(name);
    if (!m->def) {
        char known[512] = "";
        for (int i = 0; i < ab_mask_count; i++) {
            strncat(known, i ? ", " : "", sizeof known - strlen(known) - 1);
            strncat(known, ab_mask_at(i)->name, sizeof known - strlen(known) - 1);
        }
        snprintf(err, errlen, "unknown mask '%s' (known: %s)", name, known);
        return AB_EINVAL;
    }
    const char *arg = colon ? colon + 1 : NULL;
    if (!m->def->parse) {
        if (arg) {
            snprintf(err, errlen, "mask '%s' takes no argument (syntax: %s)", name, m->def->syntax);
            return AB_EINVAL;
        }
        return AB_OK;
    }
    int rc = mask_call_plugin(m, 0, arg, err, errlen);
    if (rc) {
        if (rc == AB_EINVAL && !*err) snprintf(err, errlen, "bad '%s' (syntax: %s)", spec, m->def->syntax);
        ab_mask_free(m);
    }
    return rc;
}

int ab_mask_check_spec(const char *spec, char *err, size_t errlen)
{
    ab_mask m;
    if (errlen) err[0] = 0;
    int rc = mask_parse(&m, spec, err, errlen);
    ab_mask_free(&m);
    return rc ? -1 : 0;
}

int ab_mask_make(ab_mask *m, const char *spec, int seq_len, uint64_t seed, char *err, size_t errlen)
{
    if (errlen) err[0] = 0;
    int rc = mask_parse(m, spec, err, errlen);
    if (rc) return rc;
    if (seq_len < 0) {
        snprintf(err, errlen, "negative sequence length");
        ab_mask_free(m);
        return AB_EINVAL;
    }
    m->seq_len = seq_len;
    m->seed = seed;
    if (m->def->bind && (rc = mask_call_plugin(m, 1, NULL, err, errlen)) != AB_OK) {
        if (!*err) snprintf(err, errlen, "mask '%s' cannot be used at N = %d", spec, seq_len);
        ab_mask_free(m);
        return rc;
    }
    return AB_OK;
}

double ab_mask_fraction(const ab_mask *m)
{
    if (!m || m->seq_len <= 0) return 0.0;
    return (double)ab_mask_pairs(m) / ((double)m->seq_len * (double)m->seq_len);
}
