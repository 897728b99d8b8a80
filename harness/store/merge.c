/* merge.c — join the result files of a sharded sweep (`run --shard I/N`,
 * one file per Slurm array task; scripts/slurm_sweep.sh, docs/scaling.md)
 * into one, by point key (merge.h). The verb is harness/cli/merge.c.
 *
 * Each input is read with ab_results_read, so a shard whose run was killed
 * contributes its journaled points too. A key seen again with an identical
 * row (every /points field and every raw sample, NaN equal to NaN) is kept
 * once; a key seen again with a different row is a conflict: one message
 * per conflict, the first row kept. The root attributes of the output are
 * those of the first input plus merged_from / merged_points; every input's
 * own attributes are kept under /shards/shard_I (with its file name in
 * merge_source). Inputs that ran a different config or commit get a
 * warning: their points are not comparable as one sweep. */
#include "harness/store/merge.h"
#include "harness/store/pset.h"
#include "harness/store/store.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int same_double(double a, double b) { return a == b || (isnan(a) && isnan(b)); }

/* 0 if the rows are identical; else 1 with the first differing field named. */
static int row_diff(const ab_point *a, const ab_point *b, char *why, size_t wl)
{
#define S(f)                                                   \
    if (strcmp(a->f, b->f)) {                                  \
        snprintf(why, wl, "%s: '%s' vs '%s'", #f, a->f, b->f); \
        return 1;                                              \
    }
#define I(f)                                                                         \
    if (a->f != b->f) {                                                              \
        snprintf(why, wl, "%s: %lld vs %lld", #f, (long long)a->f, (long long)b->f); \
        return 1;                                                                    \
    }
#define D(f)                                                     \
    if (!same_double(a->f, b->f)) {                              \
        snprintf(why, wl, "%s: %.17g vs %.17g", #f, a->f, b->f); \
        return 1;                                                \
    }
    S(method)
    S(params)
    S(device)
    S(dtype)
    S(task)
    S(kernel)
    S(layout)
    S(family)
    I(block_q) I(block_k) I(seq_len) I(heads) I(head_dim) I(causal) S(mask) D(mask_density) I(threads) I(seed)
        D(depth) D(target_density) D(knob_value) D(achieved_density) D(select_flops) D(select_bytes) D(
            select_ms) D(run_ms) D(total_ms) D(min_ms) D(p10_ms) D(p90_ms) D(cv) I(n_samples) D(dense_gflops)
            D(recall_mass) D(recall_topk) D(rel_l2_err) D(max_abs_err) D(accuracy) D(acc_ci_lo) D(acc_ci_hi)
                I(acc_trials) I(rows_scored) S(status) S(message) I(rounds) I(calls) D(total_lo_ms)
                    D(total_hi_ms) D(dense_pair_ms) D(rel_dense) D(rel_lo) D(rel_hi) D(foreign_pct)
                        D(steal_pct) D(load1) D(fma_gflops) D(shared_pct) D(point_s) S(timing)
#undef S
#undef I
#undef D
                            for (int i = 0; i < a->n_samples && i < AB_MAX_SAMPLES;
                                 i++) if (!same_double(a->sample_select_ms[i], b->sample_select_ms[i]) ||
                                          !same_double(a->sample_run_ms[i], b->sample_run_ms[i]) ||
                                          !same_double(a->sample_dense_ms[i], b->sample_dense_ms[i]) ||
                                          a->sample_round[i] != b->sample_round[i] ||
                                          a->sample_calls[i] != b->sample_calls[i])
    {
        snprintf(why, wl, "raw sample %d", i);
        return 1;
    }
    return 0;
}

/* Warn once per attribute whose value differs from the first input's. */
static void warn_env_mismatch(const ab_env *first, const ab_env *e, const char *f0, const char *fi, int quiet)
{
    static const char *const keys[] = { "config_text", "git_sha", "schema_version" };
    for (size_t k = 0; k < sizeof keys / sizeof keys[0] && !quiet; k++) {
        const char *a = ab_env_get(first, keys[k]), *b = ab_env_get(e, keys[k]);
        if (a && b && strcmp(a, b))
            fprintf(stderr,
                    "attnbench: merge: warning: %s and %s differ in %s: are they shards of one sweep?\n", f0,
                    fi, keys[k]);
    }
}

/* The root attributes: the first input's, plus where the points came from. */
static void merged_root(ab_env *root, const ab_env *first, const char *const *in, int nin, size_t n)
{
    memset(root, 0, sizeof *root);
    for (int i = 0; i < first->n; i++)
        if (strcmp(first->name[i], "merge_source")) ab_env_set(root, first->name[i], first->value[i]);
    size_t len = 1;
    for (int f = 0; f < nin; f++) len += strlen(in[f]) + 1;
    char *list = malloc(len), num[32];
    if (list) {
        list[0] = 0;
        for (int f = 0; f < nin; f++) {
            strcat(list, in[f]);
            if (f + 1 < nin) strcat(list, " ");
        }
        ab_env_set(root, "merged_from", list);
        free(list);
    }
    snprintf(num, sizeof num, "%zu", n);
    ab_env_set(root, "merged_points", num);
}

/* Add one input's points to the set: new keys appended, identical rows
 * counted, differing rows reported. 0, or -1 out of memory. */
static int merge_points(ab_pset *set, const ab_point *p, size_t np, const char *file, ab_merge_stats *st)
{
    if (ab_pset_reserve(set, np)) return -1;
    for (size_t i = 0; i < np; i++) {
        const size_t k = ab_pset_find(set, p[i].key);
        if (k == SIZE_MAX) {
            ab_pset_put(set, &p[i]); /* cannot fail after the reserve */
            continue;
        }
        char why[600];
        if (!row_diff(&set->v[k], &p[i], why, sizeof why)) {
            st->dups++;
            continue;
        }
        st->conflicts++;
        fprintf(stderr,
                "attnbench: merge: conflict: point %s (%s %s N=%d mask=%s) differs in %s from an earlier "
                "input (%s); keeping the earlier row\n",
                p[i].key, p[i].method, p[i].task, p[i].seq_len, p[i].mask, file, why);
    }
    return 0;
}

int ab_results_merge(const char *const *in, int nin, const char *out, int quiet, ab_merge_stats *st,
                     char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    ab_env *envs = calloc((size_t)nin, sizeof *envs);
    ab_pset set = { 0 };
    int rc = -1;
    if (!envs) {
        snprintf(err, errlen, "merge: out of memory");
        return -1;
    }
    for (int f = 0; f < nin; f++) {
        ab_point *p = NULL;
        size_t np = 0;
        char why[1024];
        if (ab_results_read(in[f], &p, &np, &envs[f], why, sizeof why)) {
            snprintf(err, errlen, "merge: %s", why);
            goto done;
        }
        st->read += np;
        if (f) warn_env_mismatch(&envs[0], &envs[f], in[0], in[f], quiet);
        ab_env_set(&envs[f], "merge_source", in[f]);
        const int mrc = merge_points(&set, p, np, in[f], st);
        free(p);
        if (mrc) {
            snprintf(err, errlen, "merge: out of memory for %zu points", set.n + np);
            goto done;
        }
    }
    st->unique = set.n;
    ab_env root;
    merged_root(&root, &envs[0], in, nin, set.n);
    char why[1024];
    const int wr = ab_results_write(out, set.v, set.n, &root, envs, nin, why, sizeof why);
    ab_env_free(&root);
    if (wr) {
        snprintf(err, errlen, "merge: %s", why);
        goto done;
    }
    rc = 0;
done:
    for (int f = 0; f < nin; f++) ab_env_free(&envs[f]);
    free(envs);
    ab_pset_free(&set);
    return rc;
}
