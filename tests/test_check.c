/* test_check.c — `attnbench check` catches broken methods: ab_check_method
 * (harness/check.h) on deliberately broken ab_method fixtures defined here
 * (not registered), and on a correct one. Also the CLI runs. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness/check.h"
#include "harness/registry.h"

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
    return ab_kernel_flash(&p2, out);
}
static int dense_select(void *st, const ab_problem *pb, ab_layout *l) { return ab_layout_dense(l); }

/* Broken 4: select() says nothing (an untouched layout). */
static int empty_select(void *st, const ab_problem *pb, ab_layout *l) { return AB_OK; }

#define FIXTURE(sym, nm, sel, rn)                                                                              \
    static const ab_method sym = {                                                                             \
        .abi = AB_ABI_VERSION, .name = nm, .summary = "test fixture", .reference = "test",                      \
        .devices = AB_CPU, .phases = AB_PREFILL,                                                               \
        .params = { { .name = NULL } }, .density_knob = { .param = -1 },                                       \
        .select = sel, .run = rn,                                                                              \
    }
FIXTURE(good, "good_fixture", diag_select, NULL);
FIXTURE(drops_key, "drops_key", diag_select, drop_key_run);
FIXTURE(out_of_range, "out_of_range", out_of_range_select, NULL);
FIXTURE(noncausal, "noncausal", dense_select, noncausal_run);
FIXTURE(empty, "empty_select", empty_select, NULL);

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
    const char *expect[] = { "relative L2 error", "select returned", "relative L2 error", "finalize returned" };
    for (int i = 0; i < 4; i++) {
        char report[512];
        const int v = ab_check_method(broken[i], 1, NULL, report, sizeof report);
        cr_expect_eq(v, AB_CHECK_FAIL, "%s not caught: %s", broken[i]->name, report);
        cr_expect(strstr(report, expect[i]) != NULL, "%s: report '%s' lacks '%s'", broken[i]->name, report, expect[i]);
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
}
