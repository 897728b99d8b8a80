/* test_registry.c — the start-up checks of the plugin registry: an ABI
 * mismatch (methods, tasks, masks), a duplicate name, a bad name, a knob out
 * of range and an unterminated parameter list are each refused with a clear
 * message; the generated registry itself passes; param helpers round and
 * range-check; ab_set_error reaches the caller of a method and of a task. */
#include <criterion/criterion.h>
#include <string.h>

#include "runtime/plugin.h"
#include "runtime/registry.h"

static int sel_none(void *st, const ab_problem *pb, ab_layout *l) { return ab_layout_dense(l); }

static ab_method make(const char *name)
{
    ab_method m = { .abi = AB_ABI_VERSION,
                    .family = "static",
                    .name = name,
                    .summary = "t",
                    .devices = AB_CPU,
                    .phases = AB_PREFILL,
                    .params = { { "k", 2, 1, 8, 1, "" } },
                    .density_knob = { 0, 1, 1 },
                    .select = sel_none };
    return m;
}

static void expect_refused(const ab_method *const *list, int n, const char *needle)
{
    char err[512] = "";
    cr_expect_eq(ab_registry_check(list, n, err, sizeof err), -1, "accepted (want: %s)", needle);
    cr_expect(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
}

Test(registry, generated_registry_is_valid)
{
    const ab_method *ms[256];
    cr_assert(ab_method_count > 0 && ab_method_count < 256);
    for (int i = 0; i < ab_method_count; i++) ms[i] = ab_method_at(i);
    char err[512] = "";
    cr_expect_eq(ab_registry_check(ms, ab_method_count, err, sizeof err), 0, "%s", err);
    cr_expect_not_null(ab_method_find("dense"));
    cr_expect_not_null(ab_method_find("window"));
    cr_expect_null(ab_method_find("no_such_method"));
    cr_expect_not_null(ab_task_find("needle"));
}

Test(registry, abi_mismatch_is_refused)
{
    ab_method a = make("alpha");
    a.abi = AB_ABI_VERSION + 1;
    const ab_method *l[] = { &a };
    expect_refused(l, 1, "ABI");
}

Test(registry, dtypes_must_be_known)
{
    ab_method a = make("alpha"), b = make("beta");
    a.dtypes = 4u; /* no such input type */
    b.dtypes = AB_FP32 | AB_BF16;
    const ab_method *la[] = { &a }, *lb[] = { &b };
    expect_refused(la, 1, "dtypes");
    char err[256] = "";
    cr_expect_eq(ab_registry_check(lb, 1, err, sizeof err), 0, "%s", err);
}

Test(registry, family_must_be_known)
{
    ab_method a = make("alpha"), b = make("beta"), c = make("gamma");
    a.family = NULL;
    b.family = "sparse"; /* not a family */
    c.approx_tol = -0.5;
    const ab_method *la[] = { &a }, *lb[] = { &b }, *lc[] = { &c };
    expect_refused(la, 1, "family");
    expect_refused(lb, 1, "family 'sparse'");
    expect_refused(lc, 1, "approx_tol");
    cr_expect_eq(ab_family_index("dense"), 0);
    cr_expect_eq(ab_family_index("linear"), 6);
    cr_expect_eq(ab_family_index("line"), -1);
    cr_expect_eq(ab_family_index("static block"), -1);
}

static int gen_ok(const ab_task_input *in, float *q, float *k, float *v, ab_answer *a) { return AB_OK; }
static int allows_all(const ab_mask *m, int i, int j) { return 1; }
static void span_all(const ab_mask *m, int i, int *lo, int *hi)
{
    *lo = 0;
    *hi = m->seq_len;
}

Test(registry, abi_mismatch_is_refused_for_tasks_and_masks)
{
    ab_task t = { .abi = AB_ABI_VERSION, .name = "tsk", .summary = "t", .generate = gen_ok };
    ab_mask_def d = { .abi = AB_ABI_VERSION, .name = "msk", .allows = allows_all, .span = span_all };
    const ab_task *tl[] = { &t };
    const ab_mask_def *dl[] = { &d };
    char err[512] = "";
    cr_expect_eq(ab_task_registry_check(tl, 1, err, sizeof err), 0, "%s", err);
    cr_expect_eq(ab_mask_registry_check(dl, 1, err, sizeof err), 0, "%s", err);
    for (int v = AB_ABI_VERSION - 1; v <= AB_ABI_VERSION + 1; v += 2) {
        t.abi = d.abi = v;
        err[0] = 0;
        cr_expect_eq(ab_task_registry_check(tl, 1, err, sizeof err), -1, "task ABI %d accepted", v);
        cr_expect(strstr(err, "task 'tsk'") && strstr(err, "ABI"), "%s", err);
        err[0] = 0;
        cr_expect_eq(ab_mask_registry_check(dl, 1, err, sizeof err), -1, "mask ABI %d accepted", v);
        cr_expect(strstr(err, "mask 'msk'") && strstr(err, "ABI"), "%s", err);
    }
}

Test(registry, duplicate_name_is_refused)
{
    ab_method a = make("alpha"), b = make("alpha");
    const ab_method *l[] = { &a, &b };
    expect_refused(l, 2, "two methods are named 'alpha'");
}

Test(registry, bad_definitions_are_refused)
{
    ab_method a = make("Bad-Name");
    const ab_method *l1[] = { &a };
    expect_refused(l1, 1, "not [a-z0-9_]");
    ab_method b = make("beta");
    b.density_knob.param = 3;
    const ab_method *l2[] = { &b };
    expect_refused(l2, 1, "density knob");
    ab_method c = make("gamma");
    c.params[0].def = 100;
    const ab_method *l3[] = { &c };
    expect_refused(l3, 1, "outside");
    ab_method d = make("delta");
    for (int i = 0; i < AB_MAX_PARAMS; i++) d.params[i] = (ab_param){ "p", 1, 0, 2, 0, "" };
    const ab_method *l4[] = { &d };
    expect_refused(l4, 1, "NULL-terminated");
    ab_method e = make("eps");
    e.select = NULL;
    const ab_method *l5[] = { &e };
    expect_refused(l5, 1, "no select");
}

Test(registry, params_helpers)
{
    ab_method a = make("alpha");
    ab_params p;
    ab_params_defaults(a.params, AB_MAX_PARAMS, &p);
    cr_expect_eq(p.n, 1);
    cr_expect_eq(p.v[0], 2);
    cr_expect_eq(ab_params_set(a.params, AB_MAX_PARAMS, &p, "k", 3.4), 0);
    cr_expect_eq(p.v[0], 3); /* is_int rounds */
    cr_expect_eq(ab_params_set(a.params, AB_MAX_PARAMS, &p, "k", 9), -2);
    cr_expect_eq(ab_params_set(a.params, AB_MAX_PARAMS, &p, "nope", 1), -1);
    char buf[64];
    ab_params_format(a.params, AB_MAX_PARAMS, &p, buf, sizeof buf);
    cr_expect_str_eq(buf, "k=3");
}

/* A method's error message reaches the harness through the hidden header. */
static int init_fail(void *st, const ab_params *p, const ab_shape *s)
{
    ab_set_error(st, "window %d too small", 7);
    return AB_EINVAL;
}

Test(registry, set_error_reaches_the_instance)
{
    ab_method a = make("alpha");
    a.init = init_fail;
    a.state_size = 0;
    ab_params p;
    ab_params_defaults(a.params, AB_MAX_PARAMS, &p);
    ab_shape s = { 1, 16, 16, 1, 0.25f, NULL, 0, 1, AB_PREFILL };
    ab_instance in;
    cr_expect_eq(ab_instance_create(&in, &a, &p, &s), AB_EINVAL);
    cr_expect_str_eq(ab_instance_error(&in), "window 7 too small");
    ab_instance_destroy(&in);
}

/* A task's message reaches the caller of the checked wrappers the same way;
 * a return value outside AB_E* becomes AB_EINTERNAL with its own message. */
static int gen_fail(const ab_task_input *in, float *q, float *k, float *v, ab_answer *a)
{
    ab_set_error(in, "depth %.2f refused", in->depth);
    return AB_EINVAL;
}

static int check_bad_code(const ab_task_input *in) { return 7; }

Test(registry, set_error_reaches_the_caller_of_a_task)
{
    ab_task t = { .abi = AB_ABI_VERSION, .name = "tsk", .generate = gen_fail, .check = check_bad_code };
    ab_task_input in = { .depth = 0.25 };
    char err[64] = "stale";
    cr_expect_eq(ab_task_generate(&t, &in, NULL, NULL, NULL, NULL, err, sizeof err), AB_EINVAL);
    cr_expect_str_eq(err, "depth 0.25 refused");
    cr_expect_eq(ab_task_check(&t, &in, err, sizeof err), AB_EINTERNAL);
    cr_expect_str_eq(err, "check() returned 7, not an AB_E* code");
    t.check = NULL;
    cr_expect_eq(ab_task_check(&t, &in, err, sizeof err), AB_OK);
    cr_expect_str_eq(err, "");
}
