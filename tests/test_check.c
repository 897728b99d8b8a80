/* test_check.c — `attnbench check` catches broken methods: ab_check_method
 * (harness/engine/check.h) on deliberately broken ab_method fixtures defined here
 * (not registered), including mask-blind ones that are right under causal
 * and full but ignore any other base mask, and on a correct one. Also the
 * default base-mask list and the CLI. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness/engine/check.h"
#include "runtime/kernels.h"
#include "runtime/registry.h"

/* A correct fixture: the diagonal block and key block 0. */
static int diag_select(void *st, const ab_problem *pb, ab_layout *l)
{
    for (int h = 0; h < l->heads; h++)
        for (int qb = 0; qb < l->n_qblocks; qb++) {
            const int kb = (qb * l->block_q) / l->block_k;
            if (ab_layout_add_block(l, h, qb, kb) || ab_layout_add_block(l, h, qb, 0)) return AB_ENOMEM;
        }
    return AB_OK;
}

/* Broken 1: its run() gets key 0 wrong (the shared kernel on a copy of V
 * whose row 0 is shifted), as a kernel that drops or misreads a key would. */
static int drop_key_run(void *st, const ab_problem *pb, const ab_layout *l, float *out)
{
    const size_t per = (size_t)pb->s.seq_len * pb->s.head_dim, cnt = per * pb->s.heads;
    float *v = malloc((cnt ? cnt : 1) * sizeof *v);
    if (!v) return AB_ENOMEM;
    memcpy(v, pb->v, cnt * sizeof *v);
    for (int h = 0; h < pb->s.heads; h++)
        for (int c = 0; c < pb->s.head_dim; c++) v[h * per + c] += 1.0f; /* key 0's value is wrong */
    ab_problem p2 = *pb;
    p2.v = v;
    const int rc = ab_kernel_layout(&p2, l, out);
    free(v);
    return rc;
}

/* Broken 2: a key block beyond the range (the builder refuses it). */
static int out_of_range_select(void *st, const ab_problem *pb, ab_layout *l)
{
    int rc = diag_select(st, pb, l);
    return rc ? rc : ab_layout_add_block(l, 0, 0, l->n_kblocks);
}

/* Broken 3: ignores the causal mask in its own run (dense non-causal). */
static int noncausal_run(void *st, const ab_problem *pb, const ab_layout *l, float *out)
{
    ab_problem p2 = *pb;
    p2.s.causal = 0;
    p2.s.mask = NULL; /* plain full */
    return ab_kernel_flash(&p2, out);
}

/* Broken 5: mask-blind. Its run() executes the layout under plain causal or
 * full (by s.causal) whatever the base mask: right under causal and full,
 * wrong under document, sliding, prefix, chunked. */
static int maskblind_run(void *st, const ab_problem *pb, const ab_layout *l, float *out)
{
    ab_problem p2 = *pb;
    ab_layout l2 = *l; /* a shallow copy the kernel only reads */
    p2.s.mask = NULL;
    l2.mask = NULL;
    return ab_kernel_layout(&p2, &l2, out);
}

/* Broken 6: the same as a CUSTOM layout (nothing to compare its output
 * with: check must catch it by perturbing keys the mask hides). */
static int custom_select(void *st, const ab_problem *pb, ab_layout *l) { return ab_layout_custom(l, 1.0); }
static int maskblind_flash_run(void *st, const ab_problem *pb, const ab_layout *l, float *out)
{
    ab_problem p2 = *pb;
    p2.s.mask = NULL;
    return ab_kernel_flash(&p2, out);
}
static int dense_select(void *st, const ab_problem *pb, ab_layout *l) { return ab_layout_dense(l); }

/* Broken 4: select() says nothing (an untouched layout). */
static int empty_select(void *st, const ab_problem *pb, ab_layout *l) { return AB_OK; }

#define FIXTURE(sym, nm, sel, rn)        \
    static const ab_method sym = {       \
        .abi = AB_ABI_VERSION,           \
        .family = "static",              \
        .name = nm,                      \
        .summary = "test fixture",       \
        .reference = "test",             \
        .devices = AB_CPU,               \
        .phases = AB_PREFILL,            \
        .params = { { .name = NULL } },  \
        .density_knob = { .param = -1 }, \
        .select = sel,                   \
        .run = rn,                       \
    }
FIXTURE(good, "good_fixture", diag_select, NULL);
FIXTURE(drops_key, "drops_key", diag_select, drop_key_run);
FIXTURE(out_of_range, "out_of_range", out_of_range_select, NULL);
FIXTURE(noncausal, "noncausal", dense_select, noncausal_run);
FIXTURE(empty, "empty_select", empty_select, NULL);
FIXTURE(maskblind, "maskblind", diag_select, maskblind_run);
FIXTURE(maskblind_custom, "maskblind_custom", custom_select, maskblind_flash_run);

Test(check, correct_fixture_passes)
{
    char report[512];
    ab_check_result r;
    cr_assert_eq(ab_check_method(&good, 1, &r, report, sizeof report), AB_CHECK_PASS, "%s", report);
    cr_expect_gt(r.configs, 0);
    cr_expect_leq(r.worst_err, AB_CHECK_TOL);
    cr_expect(strstr(r.layouts, "block") != NULL, "layouts: %s", r.layouts);
}

Test(check, broken_fixtures_fail)
{
    const ab_method *broken[] = { &drops_key, &out_of_range, &noncausal, &empty };
    const char *expect[] = { "relative L2 error", "select returned", "relative L2 error",
                             "finalize returned" };
    for (int i = 0; i < 4; i++) {
        char report[512];
        const int v = ab_check_method(broken[i], 1, NULL, report, sizeof report);
        cr_expect_eq(v, AB_CHECK_FAIL, "%s not caught: %s", broken[i]->name, report);
        cr_expect(strstr(report, expect[i]) != NULL, "%s: report '%s' lacks '%s'", broken[i]->name, report,
                  expect[i]);
    }
}

/* The mask-blind fixtures pass under plain causal and full, and fail under
 * document (part of --quick) and every other non-trivial mask. */
Test(check, mask_blind_fixtures_fail)
{
    const ab_method *blind[] = { &maskblind, &maskblind_custom };
    const char *expect[] = { "relative L2 error", "reads keys the mask forbids" };
    const char *plain[] = { "causal", "full" };
    const char *masks[] = { "document:3", "sliding:37", "prefix:0.3", "chunked:50" };
    for (int i = 0; i < 2; i++) {
        char report[640];
        ab_check_result r;
        cr_expect_eq(ab_check_method_masks(blind[i], 1, plain, 2, &r, report, sizeof report), AB_CHECK_PASS,
                     "%s under causal and full: %s", blind[i]->name, report);
        cr_expect_eq(r.masks, 2);
        const int v = ab_check_method(blind[i], 1, NULL, report, sizeof report);
        cr_expect_eq(v, AB_CHECK_FAIL, "%s not caught by --quick: %s", blind[i]->name, report);
        cr_expect(strstr(report, expect[i]) && strstr(report, "mask=document:3"), "%s: report '%s'",
                  blind[i]->name, report);
        for (int k = 0; k < 4; k++) {
            cr_expect_eq(ab_check_method_masks(blind[i], 1, &masks[k], 1, NULL, report, sizeof report),
                         AB_CHECK_FAIL, "%s not caught under %s: %s", blind[i]->name, masks[k], report);
            cr_expect(strstr(report, expect[i]) != NULL, "%s under %s: report '%s'", blind[i]->name, masks[k],
                      report);
        }
    }
}

/* The default masks: quick = causal, full, document:3; the full list one
 * spec per registered mask, each of which binds at the check's lengths. */
Test(check, default_mask_specs)
{
    char specs[AB_CHECK_MAX_MASKS][AB_MASK_SPEC], err[256];
    const int nq = ab_check_mask_specs(1, specs, AB_CHECK_MAX_MASKS, err, sizeof err);
    cr_assert_eq(nq, 3, "%s", err);
    cr_expect_str_eq(specs[0], "causal");
    cr_expect_str_eq(specs[1], "full");
    cr_expect_str_eq(specs[2], "document:3");
    const int nf = ab_check_mask_specs(0, specs, AB_CHECK_MAX_MASKS, err, sizeof err);
    cr_assert_eq(nf, ab_mask_count, "%d specs for %d registered masks: %s", nf, ab_mask_count, err);
    for (int i = 0; i < ab_mask_count; i++) {
        const char *name = ab_mask_at(i)->name;
        int found = 0;
        for (int k = 0; k < nf; k++) {
            const size_t len = strlen(name);
            found |= !strncmp(specs[k], name, len) && (specs[k][len] == 0 || specs[k][len] == ':');
        }
        cr_expect(found, "registered mask %s has no spec in the check", name);
    }
    for (int k = 0; k < nf; k++) {
        ab_mask m;
        cr_expect_eq(ab_mask_make(&m, specs[k], 257, 1, err, sizeof err), AB_OK, "%s at N=257: %s", specs[k],
                     err);
        ab_mask_free(&m);
    }
    /* the correct fixture passes under all of them, and cca, which declines
     * the masks it cannot honour, is a pass with them named */
    char report[640];
    ab_check_result r;
    cr_expect_eq(ab_check_method(&good, 0, &r, report, sizeof report), AB_CHECK_PASS, "%s", report);
    cr_expect_eq(r.masks, nf);
    const ab_method *cca = ab_method_find("cca");
    if (cca) {
        const char *doc[] = { "causal", "document:3" };
        cr_expect_eq(ab_check_method_masks(cca, 1, doc, 2, &r, report, sizeof report), AB_CHECK_PASS, "%s",
                     report);
        cr_expect(strstr(r.masks_unsupported, "document:3") && strstr(report, "unsupported"), "%s", report);
        /* declining every mask checked is a skip when none is plain */
        cr_expect_eq(ab_check_method_masks(cca, 1, doc + 1, 1, &r, report, sizeof report), AB_CHECK_SKIP,
                     "%s", report);
    }
}

Test(check, bad_abi_fails)
{
    ab_method m = good;
    m.abi = AB_ABI_VERSION + 1;
    char report[512];
    cr_expect_eq(ab_check_method(&m, 1, NULL, report, sizeof report), AB_CHECK_FAIL);
    cr_expect(strstr(report, "ABI") != NULL, "%s", report);
}

Test(check, cli_quick_on_window)
{
    const char *bin = getenv("AB_BIN");
    if (!bin) cr_skip_test("AB_BIN not set");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s check --quick --methods window,dense >/dev/null 2>&1", bin);
    cr_expect_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s check --methods no_such_method >/dev/null 2>&1", bin);
    const int st = system(cmd);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 2, "unknown method: status %d", st);
    snprintf(cmd, sizeof cmd,
             "%s check --quick --methods dense,oracle_topk_token --masks sliding:37,document:4:longtail "
             ">/dev/null 2>&1",
             bin);
    cr_expect_eq(system(cmd), 0, "check under --masks");
    static const char *const bad[] = { "sliding:-1", "no_such_mask", "document:", "causal,,full" };
    for (int i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "%s check --quick --methods dense --masks '%s' >/dev/null 2>&1", bin,
                 bad[i]);
        const int sb = system(cmd);
        cr_expect(WIFEXITED(sb) && WEXITSTATUS(sb) == 2, "--masks %s: status %d, want exit 2", bad[i], sb);
    }
}
