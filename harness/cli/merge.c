/* merge.c — `attnbench merge A.h5 B.h5 ... -o ALL.h5`: join the result files
 * of a sharded sweep (`run --shard I/N`, one file per Slurm array task; see
 * scripts/slurm_sweep.sh and docs/scaling.md) into one, by point key.
 *
 * Each input is read with ab_results_read, so a shard whose run was killed
 * contributes its journaled points too. A key seen again with an identical
 * row (every /points field and every raw sample, NaN equal to NaN) is kept
 * once; a key seen again with a different row is a conflict: one message
 * per conflict, the first row kept, and exit 1 (the file is still written).
 * The root attributes of the output are those of the first input plus
 * merged_from / merged_points; every input's own attributes are kept under
 * /shards/shard_I (with its file name in merge_source). Inputs that ran a
 * different config or commit get a warning: their points are not
 * comparable as one sweep.
 *
 * Exit: 0 merged, 1 merged with conflicts, 2 usage or unreadable input
 * (nothing written). */
#include "harness/cli/cli.h"
#include "harness/store/point.h"
#include "harness/store/store.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AB_MERGE_MAX_INPUTS 4096

static void usage_merge(FILE *f)
{
    fprintf(f,
            "usage: attnbench merge A.h5 B.h5 ... -o ALL.h5 [-q]\n"
            "Merge result files (e.g. the shards of `run --shard I/N`) by point key.\n"
            "A point found in several inputs with identical rows is kept once; with\n"
            "different rows it is reported and the first input's row is kept (exit 1).\n"
            "Every input's environment is kept under /shards/shard_I.\n\n"
            "  -o, --out FILE   merged results file (replaced atomically)\n"
            "  -q, --quiet      no summary line\n"
            "  -h, --help       this text\n\n"
            "Exit: 0 merged, 1 merged but rows conflicted, 2 usage or unreadable input\n"
            "(nothing written).\n");
}

/* Open-addressing index over the merged points' keys: slot = index + 1. */
typedef struct kindex {
    size_t *slot;
    size_t nslot;
} kindex;

static uint64_t hash_key(const char *k)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(((ab_point *)0)->key) && k[i]; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Returns the slot for key: either holding its index + 1, or empty. */
static size_t *kindex_slot(const kindex *ix, const ab_point *v, const char *key)
{
    size_t mask = ix->nslot - 1;
    for (size_t h = (size_t)hash_key(key) & mask;; h = (h + 1) & mask)
        if (!ix->slot[h] || !strcmp(v[ix->slot[h] - 1].key, key)) return &ix->slot[h];
}

static int same_double(double a, double b)
{
    return a == b || (isnan(a) && isnan(b));
}

/* 0 if the rows are identical; else 1 with the first differing field named. */
static int row_diff(const ab_point *a, const ab_point *b, char *why, size_t wl)
{
#define S(f) if (strcmp(a->f, b->f)) { snprintf(why, wl, "%s: '%s' vs '%s'", #f, a->f, b->f); return 1; }
#define I(f) if (a->f != b->f) { snprintf(why, wl, "%s: %lld vs %lld", #f, (long long)a->f, (long long)b->f); return 1; }
#define D(f) if (!same_double(a->f, b->f)) { snprintf(why, wl, "%s: %.17g vs %.17g", #f, a->f, b->f); return 1; }
    S(method) S(params) S(device) S(dtype) S(task) S(kernel) S(layout)
    I(seq_len) I(heads) I(head_dim) I(causal) S(mask) D(mask_density) I(threads) I(seed)
    D(depth) D(target_density) D(knob_value) D(achieved_density)
    D(select_ms) D(run_ms) D(total_ms) D(min_ms) D(p10_ms) D(p90_ms) D(cv)
    I(n_samples)
    D(dense_gflops) D(recall_mass) D(recall_topk) D(rel_l2_err) D(max_abs_err)
    D(accuracy) D(acc_ci_lo) D(acc_ci_hi)
    I(acc_trials)
    I(rows_scored)
    S(status) S(message)
    I(rounds) I(calls) D(total_lo_ms) D(total_hi_ms) D(dense_pair_ms) D(rel_dense) D(rel_lo) D(rel_hi)
    D(foreign_pct) D(steal_pct) D(load1) D(fma_gflops) D(shared_pct) D(point_s) S(timing)
#undef S
#undef I
#undef D
    for (int i = 0; i < a->n_samples && i < AB_MAX_SAMPLES; i++)
        if (!same_double(a->sample_select_ms[i], b->sample_select_ms[i]) ||
            !same_double(a->sample_run_ms[i], b->sample_run_ms[i]) ||
            !same_double(a->sample_dense_ms[i], b->sample_dense_ms[i]) || a->sample_round[i] != b->sample_round[i] ||
            a->sample_calls[i] != b->sample_calls[i]) {
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
            fprintf(stderr, "attnbench: merge: warning: %s and %s differ in %s: are they shards of one sweep?\n", f0,
                    fi, keys[k]);
    }
}

int ab_cmd_merge(int argc, char **argv)
{
    const char *out = NULL;
    int quiet = 0;
    const char **in = calloc((size_t)argc + 1, sizeof *in);
    int nin = 0;
    if (!in) { ab_errorf("merge: out of memory"); return 2; }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_merge(stdout); free(in); return 0; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            if (i + 1 >= argc) { ab_errorf("merge: option %s needs a value", a); free(in); return 2; }
            out = argv[++i];
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = 1;
        else if (a[0] == '-' && a[1]) { ab_errorf("merge: unknown option '%s' (see: attnbench merge --help)", a); free(in); return 2; }
        else in[nin++] = a;
    }
    if (!out) { ab_errorf("merge: no output file given (-o ALL.h5); see: attnbench merge --help"); free(in); return 2; }
    if (nin == 0) { ab_errorf("merge: no input files given; see: attnbench merge --help"); free(in); return 2; }
    if (nin > AB_MERGE_MAX_INPUTS) { ab_errorf("merge: %d inputs, at most %d", nin, AB_MERGE_MAX_INPUTS); free(in); return 2; }

    double t0 = (double)clock() / CLOCKS_PER_SEC;
    ab_env *envs = calloc((size_t)nin, sizeof *envs);
    ab_point *all = NULL;
    size_t n = 0, cap = 0, dups = 0, conflicts = 0, total_in = 0;
    kindex ix = { NULL, 0 };
    int rc = 2;
    char err[1024];
    if (!envs) { ab_errorf("merge: out of memory"); goto done; }
    for (int f = 0; f < nin; f++) {
        ab_point *p = NULL;
        size_t np = 0;
        if (ab_results_read(in[f], &p, &np, &envs[f], err, sizeof err)) {
            ab_errorf("merge: %s", err);
            goto done;
        }
        total_in += np;
        if (f) warn_env_mismatch(&envs[0], &envs[f], in[0], in[f], quiet);
        ab_env_set(&envs[f], "merge_source", in[f]);
        if (n + np > cap) {
            size_t nc = cap ? cap : 1024;
            while (nc < n + np) nc *= 2;
            ab_point *na = realloc(all, nc * sizeof *na);
            if (!na) { free(p); ab_errorf("merge: out of memory for %zu points", n + np); goto done; }
            all = na;
            cap = nc;
        }
        if (2 * (n + np) > ix.nslot) {
            size_t ns = ix.nslot ? ix.nslot : 2048;
            while (2 * (n + np) > ns) ns *= 2;
            free(ix.slot);
            ix.slot = calloc(ns, sizeof *ix.slot);
            ix.nslot = ns;
            if (!ix.slot) { free(p); ab_errorf("merge: out of memory"); goto done; }
            for (size_t i = 0; i < n; i++) *kindex_slot(&ix, all, all[i].key) = i + 1;
        }
        for (size_t i = 0; i < np; i++) {
            size_t *sl = kindex_slot(&ix, all, p[i].key);
            if (!*sl) {
                all[n] = p[i];
                *sl = ++n;
                continue;
            }
            const ab_point *kept = &all[*sl - 1];
            char why[600];
            if (!row_diff(kept, &p[i], why, sizeof why)) { dups++; continue; }
            conflicts++;
            fprintf(stderr, "attnbench: merge: conflict: point %s (%s %s N=%d mask=%s) differs in %s from an earlier input (%s); keeping the earlier row\n",
                    p[i].key, p[i].method, p[i].task, p[i].seq_len, p[i].mask, in[f], why);
        }
        free(p);
    }
    /* the root: the first input's environment, plus where the points came from */
    ab_env root;
    memset(&root, 0, sizeof root);
    for (int i = 0; i < envs[0].n; i++)
        if (strcmp(envs[0].name[i], "merge_source")) ab_env_set(&root, envs[0].name[i], envs[0].value[i]);
    {
        size_t len = 1;
        for (int f = 0; f < nin; f++) len += strlen(in[f]) + 1;
        char *list = malloc(len), num[32];
        if (list) {
            list[0] = 0;
            for (int f = 0; f < nin; f++) { strcat(list, in[f]); if (f + 1 < nin) strcat(list, " "); }
            ab_env_set(&root, "merged_from", list);
            free(list);
        }
        snprintf(num, sizeof num, "%zu", n);
        ab_env_set(&root, "merged_points", num);
    }
    int wr = ab_results_write(out, all, n, &root, envs, nin, err, sizeof err);
    ab_env_free(&root);
    if (wr) { ab_errorf("merge: %s", err); goto done; }
    if (!quiet)
        fprintf(stderr, "attnbench: merged %d files, %zu points read, %zu unique (%zu identical duplicates, %zu conflicts) in %.2f s CPU -> %s\n",
                nin, total_in, n, dups, conflicts, (double)clock() / CLOCKS_PER_SEC - t0, out);
    rc = conflicts ? 1 : 0;
done:
    if (envs)
        for (int f = 0; f < nin; f++) ab_env_free(&envs[f]);
    free(envs);
    free(ix.slot);
    free(all);
    free(in);
    return rc;
}
