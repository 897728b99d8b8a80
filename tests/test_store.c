/* test_store.c — Criterion tests of the results store (harness/store/store.c) and
 * the env/status helpers (harness/store/point.c): HDF5 round trip, resume, journal
 * recovery after crashes and SIGKILLs, torn journals, malformed inputs,
 * unwritable destinations, and h5dump compatibility. Every test works in its
 * own mkdtemp directory. */
#include <criterion/criterion.h>

#include <hdf5.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness/store/point.h"
#include "harness/store/store.h"

/* ---- helpers ------------------------------------------------------------ */

typedef struct tdir {
    char dir[64];
    char out[128]; /* DIR/out.h5 */
    char journal[160];
} tdir;

static void tdir_make(tdir *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/ab_store_XXXXXX");
    cr_assert_not_null(mkdtemp(t->dir), "mkdtemp: %s", strerror(errno));
    snprintf(t->out, sizeof t->out, "%s/out.h5", t->dir);
    snprintf(t->journal, sizeof t->journal, "%s.journal", t->out);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void tdir_remove(tdir *t)
{
    chmod(t->dir, 0700);
    nftw(t->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int count_entries(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f) {
        if (fscanf(f, "%d", &n) != 1) n = -1;
        pclose(f);
    }
    return n;
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* whole file into memory (free()); NULL if unreadable */
static unsigned char *slurp(const char *path, size_t *len)
{
    struct stat sb;
    if (stat(path, &sb) < 0 || !S_ISREG(sb.st_mode)) return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    long sz = (long)sb.st_size;
    unsigned char *b = malloc(sz > 0 ? (size_t)sz : 1);
    *len = b ? fread(b, 1, (size_t)sz, f) : 0;
    fclose(f);
    return b;
}

static void spit(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(buf, 1, len, f), len);
    fclose(f);
}

static void make_point(size_t i, ab_point *p)
{
    static const char *const statuses[] = {
        "ok", "calib_failed", "unsupported", "error", "crashed", "timeout", "oom", "nan",
    };
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%016llx", (unsigned long long)(0x9E3779B97F4A7C15ull * (i + 1)));
    snprintf(p->method, sizeof p->method, "method_%zu", i % 7);
    snprintf(p->params, sizeof p->params, "block=%zu,topk=%zu,thr=0.%zu", (size_t)16 << (i % 4), i, i % 10);
    snprintf(p->device, sizeof p->device, "%s", i % 2 ? "gpu" : "cpu");
    snprintf(p->dtype, sizeof p->dtype, "%s", i % 3 ? "fp16" : "fp32");
    snprintf(p->task, sizeof p->task, "task_%zu", i % 5);
    snprintf(p->kernel, sizeof p->kernel, "kern_%zu", i % 3);
    snprintf(p->layout, sizeof p->layout, "%s", i % 2 ? "block" : "token");
    p->seq_len = (int32_t)(1024 + i);
    p->heads = (int32_t)(i % 16 + 1);
    p->head_dim = 64;
    p->causal = (int32_t)(i % 2);
    static const char *const masks[] = { "full", "causal", "sliding:128", "document:8", "document:100+156" };
    snprintf(p->mask, sizeof p->mask, "%s", masks[i % 5]);
    p->mask_density = i % 5 == 0 ? 1.0 : 1.0 / (double)(i % 5 + 1);
    p->threads = (int32_t)(i % 8 + 1);
    p->seed = (int64_t)i * 1000003 - 5;
    p->depth = 0.25 * (double)(i % 5);
    p->target_density = i % 4 == 0 ? NAN : 1.0 / (double)(i + 2);
    p->knob_value = i % 3 == 0 ? NAN : 0.5 + (double)i;
    p->achieved_density = 0.1 + 1e-9 * (double)i;
    p->select_ms = 0.125 * (double)i;
    p->run_ms = 1.0 / 3.0 + (double)i;
    p->total_ms = p->select_ms + p->run_ms;
    p->min_ms = -0.0;
    p->p10_ms = INFINITY;
    p->p90_ms = -INFINITY;
    p->cv = 0.01 * (double)i;
    p->dense_gflops = 123.456 * (double)(i + 1);
    p->recall_mass = i % 5 == 0 ? NAN : 0.9;
    p->recall_topk = 0.8 + 1e-3 * (double)i;
    p->rel_l2_err = 1e-7 * (double)(i + 1);
    p->max_abs_err = 1e-300;
    p->accuracy = 0.5;
    p->acc_ci_lo = 0.4;
    p->acc_ci_hi = 0.6;
    p->acc_trials = 10 + (int)(i % 7);
    p->rows_scored = (int32_t)(i * 3);
    snprintf(p->status, sizeof p->status, "%s", statuses[i % 8]);
    if (i % 6 == 1) /* a message that fills its field */
        memset(p->message, 'a' + (int)(i % 26), sizeof p->message - 1);
    else
        snprintf(p->message, sizeof p->message, "point %zu: \"quoted\", tab\there", i);
    p->n_samples = i % 5 == 0 ? 0 : (i == 1 ? AB_MAX_SAMPLES : (int32_t)((i * 37) % AB_MAX_SAMPLES + 1));
    for (int k = 0; k < p->n_samples; k++) {
        p->sample_select_ms[k] = (double)i + 1e-3 * k;
        p->sample_run_ms[k] = k == 3 ? NAN : (double)i * 2 + 1e-4 * k;
        p->sample_dense_ms[k] = k % 4 == 1 ? NAN : (double)i * 7 + 1e-5 * k;
        p->sample_round[k] = k % 3;
        p->sample_calls[k] = 1 + (int)((i + k) % 9);
    }
    p->rounds = (int32_t)(i % 4);
    p->calls = (int32_t)(i % 11 + 1);
    p->total_lo_ms = p->total_ms * 0.9;
    p->total_hi_ms = i % 7 == 0 ? NAN : p->total_ms * 1.1;
    p->dense_pair_ms = 3.5 * (double)i;
    p->rel_dense = i % 3 ? 0.125 * (double)i : NAN;
    p->rel_lo = p->rel_dense * 0.95;
    p->rel_hi = p->rel_dense * 1.05;
    p->foreign_pct = 0.5 * (double)i;
    p->steal_pct = i % 2 ? 0.0 : NAN;
    p->load1 = 1.25;
    snprintf(p->timing, sizeof p->timing, "%s",
             i % 3 == 0   ? ""
             : i % 3 == 1 ? "interference,rounds_disagree"
                          : "untimed");
}

#define EQ_STR(f) cr_assert_str_eq(a->f, b->f, "point %zu: field " #f, idx)
#define EQ_INT(f) cr_assert_eq(a->f, b->f, "point %zu: field " #f, idx)
#define EQ_DBL(f) \
    cr_assert(memcmp(&a->f, &b->f, sizeof(double)) == 0, "point %zu: field " #f ": %a != %a", idx, a->f, b->f)

static void assert_point_eq(const ab_point *a, const ab_point *b, size_t idx)
{
    EQ_STR(key);
    EQ_STR(method);
    EQ_STR(params);
    EQ_STR(device);
    EQ_STR(dtype);
    EQ_STR(task);
    EQ_STR(kernel);
    EQ_STR(layout);
    EQ_INT(seq_len);
    EQ_INT(heads);
    EQ_INT(head_dim);
    EQ_INT(causal);
    EQ_INT(threads);
    EQ_STR(mask);
    EQ_DBL(mask_density);
    EQ_INT(seed);
    EQ_DBL(depth);
    EQ_DBL(target_density);
    EQ_DBL(knob_value);
    EQ_DBL(achieved_density);
    EQ_DBL(select_ms);
    EQ_DBL(run_ms);
    EQ_DBL(total_ms);
    EQ_DBL(min_ms);
    EQ_DBL(p10_ms);
    EQ_DBL(p90_ms);
    EQ_DBL(cv);
    EQ_INT(n_samples);
    EQ_DBL(dense_gflops);
    EQ_DBL(recall_mass);
    EQ_DBL(recall_topk);
    EQ_DBL(rel_l2_err);
    EQ_DBL(max_abs_err);
    EQ_DBL(accuracy);
    EQ_DBL(acc_ci_lo);
    EQ_DBL(acc_ci_hi);
    EQ_INT(acc_trials);
    EQ_INT(rows_scored);
    EQ_STR(status);
    EQ_STR(message);
    EQ_INT(rounds);
    EQ_INT(calls);
    EQ_DBL(total_lo_ms);
    EQ_DBL(total_hi_ms);
    EQ_DBL(dense_pair_ms);
    EQ_DBL(rel_dense);
    EQ_DBL(rel_lo);
    EQ_DBL(rel_hi);
    EQ_DBL(foreign_pct);
    EQ_DBL(steal_pct);
    EQ_DBL(load1);
    EQ_STR(timing);
    size_t ns = (size_t)a->n_samples;
    cr_assert(memcmp(a->sample_dense_ms, b->sample_dense_ms, ns * sizeof(double)) == 0,
              "point %zu: sample_dense_ms", idx);
    cr_assert(memcmp(a->sample_round, b->sample_round, ns * sizeof(int32_t)) == 0, "point %zu: sample_round",
              idx);
    cr_assert(memcmp(a->sample_calls, b->sample_calls, ns * sizeof(int32_t)) == 0, "point %zu: sample_calls",
              idx);
    cr_assert(memcmp(a->sample_select_ms, b->sample_select_ms, ns * sizeof(double)) == 0,
              "point %zu: sample_select_ms", idx);
    cr_assert(memcmp(a->sample_run_ms, b->sample_run_ms, ns * sizeof(double)) == 0,
              "point %zu: sample_run_ms", idx);
}

static void make_env(ab_env *e, const char *run)
{
    char big[6000];
    for (size_t i = 0; i + 1 < sizeof big; i++) big[i] = i % 61 == 60 ? '\n' : (char)('a' + i % 26);
    big[sizeof big - 1] = '\0';
    ab_env_set(e, "attnbench_version", "0.1.0");
    ab_env_set(e, "git_sha", "0123456789ab-dirty");
    ab_env_set(e, "command_line", "attnbench run -c sweep.ini -o out.h5 --resume");
    ab_env_set(e, "config_text", big);
    ab_env_set(e, "cpu_model", "Intel(R) Xeon(R) \xc2\xb5-arch");
    ab_env_set(e, "cuda_version", "");
    ab_env_set(e, "run", run);
}

static void assert_env_eq(const ab_env *a, const ab_env *b)
{
    cr_assert_eq(a->n, b->n, "env size %d != %d", a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        cr_assert_str_eq(a->name[i], b->name[i], "env entry %d", i);
        cr_assert_str_eq(a->value[i], b->value[i], "env %s", a->name[i]);
    }
}

/* write points [from, to) into an open store */
static void append_range(ab_store *st, size_t from, size_t to)
{
    char err[512];
    for (size_t i = from; i < to; i++) {
        ab_point p;
        make_point(i, &p);
        cr_assert_eq(ab_store_append(st, &p, err, sizeof err), 0, "append %zu: %s", i, err);
    }
}

/* a closed results file holding points [0, n) */
static void write_file(const tdir *t, size_t n)
{
    ab_env env = { 0 };
    ab_store *st = NULL;
    char err[512];
    make_env(&env, "first");
    cr_assert_eq(ab_store_open(t->out, &env, 0, &st, err, sizeof err), 0, "%s", err);
    append_range(st, 0, n);
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
}

/* read t->out; every point i in [0, n) must be present, equal, in order */
static void assert_file_has(const char *path, size_t n)
{
    ab_point *pts = NULL;
    size_t got = 0;
    char err[512] = "";
    cr_assert_eq(ab_results_read(path, &pts, &got, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(got, n, "%s: %zu points, expected %zu", path, got, n);
    for (size_t i = 0; i < n; i++) {
        ab_point p;
        make_point(i, &p);
        assert_point_eq(&pts[i], &p, i);
    }
    free(pts);
}

/* ---- env and status ----------------------------------------------------- */

Test(env, set_get_replace_free)
{
    ab_env e = { 0 };
    ab_env_set(&e, "a", "1");
    ab_env_set(&e, "b", NULL);
    ab_env_set(&e, "a", "2");
    cr_assert_eq(e.n, 2);
    cr_assert_str_eq(ab_env_get(&e, "a"), "2");
    cr_assert_str_eq(ab_env_get(&e, "b"), "");
    cr_assert_null(ab_env_get(&e, "c"));
    cr_assert_str_eq(e.name[0], "a", "replacement keeps the position");
    char name[16];
    for (int i = 0; i < AB_ENV_MAX + 5; i++) {
        snprintf(name, sizeof name, "k%d", i);
        ab_env_set(&e, name, "v");
    }
    cr_assert_eq(e.n, AB_ENV_MAX, "a full table drops new names");
    ab_env_free(&e);
    cr_assert_eq(e.n, 0);
    ab_env_free(&e);
}

Test(env, statuses)
{
    const char *fin[] = { "ok", "calib_failed", "unsupported", "error", "crashed", "timeout", "oom", "nan" };
    for (size_t i = 0; i < sizeof fin / sizeof *fin; i++) cr_assert(ab_status_is_final(fin[i]), "%s", fin[i]);
    cr_assert_not(ab_status_is_final("running"));
    cr_assert_not(ab_status_is_final(""));
    cr_assert_not(ab_status_is_final(NULL));
    cr_assert(ab_status_is_ok("ok"));
    cr_assert_not(ab_status_is_ok("oom"));
    cr_assert_not(ab_status_is_ok(NULL));
}

/* ---- round trip --------------------------------------------------------- */

Test(store, round_trip)
{
    tdir t;
    tdir_make(&t);
    const size_t n = 200; /* several /points chunks */
    ab_env env = { 0 }, env2 = { 0 };
    ab_store *st = NULL;
    char err[512] = "";
    make_env(&env, "first");
    cr_assert_eq(ab_store_open(t.out, &env, 0, &st, err, sizeof err), 0, "%s", err);
    cr_assert(exists(t.out), "OUT exists from the start");
    append_range(st, 0, n);
    /* a duplicate key: the later row wins, in place */
    ab_point dup;
    make_point(7, &dup);
    snprintf(dup.status, sizeof dup.status, "ok");
    snprintf(dup.message, sizeof dup.message, "second try");
    cr_assert_eq(ab_store_append(st, &dup, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ab_store_count(st), n);
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    cr_assert_not(exists(t.journal), "journal removed at close");

    ab_point *pts = NULL;
    size_t got = 0;
    cr_assert_eq(ab_results_read(t.out, &pts, &got, &env2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(got, n);
    for (size_t i = 0; i < n; i++) {
        ab_point p;
        make_point(i, &p);
        assert_point_eq(&pts[i], i == 7 ? &dup : &p, i);
        for (int k = pts[i].n_samples; k < AB_MAX_SAMPLES; k++)
            cr_assert(pts[i].sample_select_ms[k] == 0 && pts[i].sample_run_ms[k] == 0);
    }
    assert_env_eq(&env2, &env);
    free(pts);
    ab_env_free(&env);
    ab_env_free(&env2);
    tdir_remove(&t);
}

Test(store, file_layout_and_h5dump)
{
    tdir t;
    tdir_make(&t);
    write_file(&t, 70);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "h5dump -H '%s' > /dev/null 2>&1", t.out);
    int rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "h5dump -H failed (%d)", rc);
    snprintf(cmd, sizeof cmd, "h5dump -d /points -d /samples/%016llx '%s' > /dev/null 2>&1",
             (unsigned long long)(0x9E3779B97F4A7C15ull * 2), t.out);
    rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "h5dump -d failed (%d)", rc);

    /* /points: chunked, extendable, 70 rows, no sample arrays in the row */
    hid_t f = H5Fopen(t.out, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t d = H5Dopen2(f, "points", H5P_DEFAULT);
    hid_t sp = H5Dget_space(d), pl = H5Dget_create_plist(d), ty = H5Dget_type(d);
    hsize_t dims[1], maxd[1];
    cr_assert_eq(H5Sget_simple_extent_dims(sp, dims, maxd), 1);
    cr_assert_eq(dims[0], 70);
    cr_assert_eq(maxd[0], H5S_UNLIMITED);
    cr_assert_eq(H5Pget_layout(pl), H5D_CHUNKED);
    /* no per-sample array in the row: one would be AB_MAX_SAMPLES x 8 = 2048 bytes alone */
    cr_assert_lt(H5Tget_size(ty), 2048, "rows hold scalars and strings only (%zu bytes)", H5Tget_size(ty));
    cr_assert(H5Tget_member_index(ty, "achieved_density") >= 0);
    cr_assert(H5Tget_member_index(ty, "message") >= 0);
    cr_assert(H5Tget_member_index(ty, "mask") >= 0);
    cr_assert(H5Tget_member_index(ty, "mask_density") >= 0);
    cr_assert(H5Tget_member_index(ty, "rel_dense") >= 0);
    cr_assert(H5Tget_member_index(ty, "total_lo_ms") >= 0);
    cr_assert(H5Tget_member_index(ty, "timing") >= 0);
    H5Tclose(ty);
    H5Pclose(pl);
    H5Sclose(sp);
    H5Dclose(d);
    /* /samples/KEY of point 1: [AB_MAX_SAMPLES][5] round, calls, select, run, dense */
    char name[64];
    snprintf(name, sizeof name, "samples/%016llx", (unsigned long long)(0x9E3779B97F4A7C15ull * 2));
    d = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert(d >= 0);
    sp = H5Dget_space(d);
    hsize_t sd[2];
    cr_assert_eq(H5Sget_simple_extent_dims(sp, sd, NULL), 2);
    cr_assert_eq(sd[0], AB_MAX_SAMPLES);
    cr_assert_eq(sd[1], 5);
    H5Sclose(sp);
    H5Dclose(d);
    /* units */
    cr_assert(H5Aexists_by_name(f, "schema", "units", H5P_DEFAULT) > 0);
    cr_assert(H5Aexists(f, "schema_version") > 0);
    cr_assert(H5Aexists(f, "git_sha") > 0);
    H5Fclose(f);
    tdir_remove(&t);
}

/* A results file written before base masks: /points has no mask and
 * mask_density columns (and, as a file from any older schema may, lacks
 * other columns too: here only some of the old ones are written). It reads
 * as mask = causal ? "causal" : "full", mask_density = causal ? (N+1)/(2N)
 * : 1, a missing number as NaN; resume rewrites it with the new columns. */
typedef struct old_row {
    char key[24], method[32], task[32];
    int32_t seq_len, heads, causal, n_samples;
    double total_ms, achieved_density;
    char status[16];
} old_row;

static void make_old_schema_h5(const char *path)
{
    old_row rows[2];
    memset(rows, 0, sizeof rows);
    snprintf(rows[0].key, sizeof rows[0].key, "00000000000000aa");
    snprintf(rows[1].key, sizeof rows[1].key, "00000000000000bb");
    for (int i = 0; i < 2; i++) {
        snprintf(rows[i].method, sizeof rows[i].method, "dense");
        snprintf(rows[i].task, sizeof rows[i].task, "needle");
        snprintf(rows[i].status, sizeof rows[i].status, "ok");
        rows[i].heads = 2;
        rows[i].total_ms = 1.5 + i;
        rows[i].achieved_density = 1.0;
    }
    rows[0].seq_len = 1024;
    rows[0].causal = 1;
    rows[0].n_samples = 3; /* /samples/KEY in the layout before the timing protocol: [n][2] select, run */
    rows[1].seq_len = 512;
    rows[1].causal = 0;
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t s1 = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "schema_version", H5T_STD_I32LE, s1, H5P_DEFAULT, H5P_DEFAULT);
    int ver = AB_SCHEMA_VERSION;
    H5Awrite(a, H5T_NATIVE_INT, &ver);
    H5Aclose(a);
    H5Sclose(s1);
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(old_row));
#define STRF(fld)                                       \
    do {                                                \
        hid_t st = H5Tcopy(H5T_C_S1);                   \
        H5Tset_size(st, sizeof rows[0].fld);            \
        H5Tinsert(t, #fld, offsetof(old_row, fld), st); \
        H5Tclose(st);                                   \
    } while (0)
    STRF(key);
    STRF(method);
    STRF(task);
    STRF(status);
#undef STRF
    H5Tinsert(t, "seq_len", offsetof(old_row, seq_len), H5T_NATIVE_INT32);
    H5Tinsert(t, "heads", offsetof(old_row, heads), H5T_NATIVE_INT32);
    H5Tinsert(t, "causal", offsetof(old_row, causal), H5T_NATIVE_INT32);
    H5Tinsert(t, "n_samples", offsetof(old_row, n_samples), H5T_NATIVE_INT32);
    H5Tinsert(t, "total_ms", offsetof(old_row, total_ms), H5T_NATIVE_DOUBLE);
    H5Tinsert(t, "achieved_density", offsetof(old_row, achieved_density), H5T_NATIVE_DOUBLE);
    hsize_t dims[1] = { 2 };
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t d = H5Dcreate2(f, "points", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(d >= 0);
    cr_assert(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
    hid_t g = H5Gcreate2(f, "samples", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    double smp[3][2] = { { 0.5, 1.0 }, { 0.25, 2.0 }, { 0.125, 3.0 } };
    hsize_t sdims[2] = { 3, 2 };
    sp = H5Screate_simple(2, sdims, NULL);
    d = H5Dcreate2(g, "00000000000000aa", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(d >= 0 && H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, smp) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Gclose(g);
    H5Fclose(f);
}

static void assert_old_rows(const char *path)
{
    ab_point *pts = NULL;
    size_t n = 0;
    char err[512] = "";
    cr_assert_eq(ab_results_read(path, &pts, &n, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(pts[0].key, "00000000000000aa");
    cr_assert_str_eq(pts[0].mask, "causal");
    cr_assert_eq(pts[0].causal, 1);
    cr_assert_eq(pts[0].mask_density, 1025.0 / 2048.0, "causal N=1024: %.17g", pts[0].mask_density);
    cr_assert_str_eq(pts[1].mask, "full");
    cr_assert_eq(pts[1].mask_density, 1.0);
    cr_assert_eq(pts[1].seq_len, 512);
    cr_assert_eq(pts[1].total_ms, 2.5);
    cr_assert_str_eq(pts[1].status, "ok");
    cr_assert(isnan(pts[0].recall_mass) && isnan(pts[1].dense_gflops),
              "a number the file lacks reads as NaN");
    cr_assert(isnan(pts[0].rel_dense) && pts[0].rounds == 0 && !pts[0].timing[0],
              "no timing protocol fields");
    cr_assert_eq(pts[0].n_samples, 3);
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(pts[0].sample_select_ms[k], 0.5 / (1 << k), "old [n][2] samples: select of %d", k);
        cr_assert_eq(pts[0].sample_run_ms[k], 1.0 + k);
        cr_assert(isnan(pts[0].sample_dense_ms[k]) && pts[0].sample_round[k] == 0 &&
                  pts[0].sample_calls[k] == 1);
    }
    cr_assert_eq(pts[1].n_samples, 0);
    free(pts);
}

Test(store, old_schema_without_mask_columns_reads)
{
    tdir t;
    tdir_make(&t);
    make_old_schema_h5(t.out);
    assert_old_rows(t.out);
    /* resume keeps the old points and rewrites them with the mask columns */
    ab_store *st = NULL;
    char err[512];
    cr_assert_eq(ab_store_open(t.out, NULL, 1, &st, err, sizeof err), 0, "%s", err);
    cr_assert(ab_store_has(st, "00000000000000aa"));
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    hid_t f = H5Fopen(t.out, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "points", H5P_DEFAULT), ty = H5Dget_type(d);
    cr_assert(H5Tget_member_index(ty, "mask") >= 0 && H5Tget_member_index(ty, "mask_density") >= 0);
    H5Tclose(ty);
    H5Dclose(d);
    H5Fclose(f);
    assert_old_rows(t.out);
    tdir_remove(&t);
}

Test(store, empty_store_and_abandon)
{
    tdir t;
    tdir_make(&t);
    ab_env env = { 0 }, env2 = { 0 };
    ab_store *st = NULL;
    char err[512];
    make_env(&env, "x");
    cr_assert_eq(ab_store_open(t.out, &env, 0, &st, err, sizeof err), 0, "%s", err);
    ab_point *pts = NULL;
    size_t n = 1;
    cr_assert_eq(ab_results_read(t.out, &pts, &n, &env2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 0);
    assert_env_eq(&env2, &env);
    free(pts);
    append_range(st, 0, 3);
    ab_store_abandon(st); /* no final rewrite: the journal carries the points */
    cr_assert(exists(t.journal));
    assert_file_has(t.out, 3);
    ab_store_close(NULL, err, sizeof err);
    ab_env_free(&env);
    ab_env_free(&env2);
    tdir_remove(&t);
}

Test(store, invalid_key_and_forked_child_refused)
{
    tdir t;
    tdir_make(&t);
    ab_store *st = NULL;
    char err[512] = "";
    cr_assert_eq(ab_store_open(t.out, NULL, 0, &st, err, sizeof err), 0, "%s", err);
    ab_point p;
    make_point(0, &p);
    snprintf(p.key, sizeof p.key, "a/b");
    cr_assert_eq(ab_store_append(st, &p, err, sizeof err), -1);
    cr_assert(strstr(err, "invalid key"), "%s", err);
    p.key[0] = '\0';
    cr_assert_eq(ab_store_append(st, &p, err, sizeof err), -1);

    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        make_point(1, &p);
        int rc = ab_store_append(st, &p, err, sizeof err);
        ab_store_abandon(st);
        _exit(rc == -1 && strstr(err, "forked child") ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child append was not refused");
    append_range(st, 0, 2);
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    assert_file_has(t.out, 2);
    tdir_remove(&t);
}

/* ---- resume ------------------------------------------------------------- */

Test(store, resume_has)
{
    tdir t;
    tdir_make(&t);
    write_file(&t, 10);
    ab_env env = { 0 }, env2 = { 0 };
    ab_store *st = NULL;
    char err[512];
    make_env(&env, "second");
    cr_assert_eq(ab_store_open(t.out, &env, 1, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ab_store_count(st), 10);
    for (size_t i = 0; i < 10; i++) {
        ab_point p;
        make_point(i, &p);
        cr_assert(ab_store_has(st, p.key), "point %zu", i);
    }
    ab_point p;
    make_point(10, &p);
    cr_assert_not(ab_store_has(st, p.key));
    cr_assert_not(ab_store_has(st, "nonexistent"));
    append_range(st, 10, 12);
    cr_assert(ab_store_has(st, p.key));
    /* a point recorded with a non-final status does not count as done */
    make_point(12, &p);
    snprintf(p.status, sizeof p.status, "running");
    cr_assert_eq(ab_store_append(st, &p, err, sizeof err), 0, "%s", err);
    cr_assert_not(ab_store_has(st, p.key));
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);

    ab_point *pts = NULL;
    size_t n = 0;
    cr_assert_eq(ab_results_read(t.out, &pts, &n, &env2, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 13);
    for (size_t i = 0; i < 12; i++) {
        make_point(i, &p);
        assert_point_eq(&pts[i], &p, i);
    }
    cr_assert_str_eq(ab_env_get(&env2, "run"), "second", "the new run's env is written");
    free(pts);

    /* resume = 0 replaces the file at open */
    cr_assert_eq(ab_store_open(t.out, &env, 0, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ab_store_count(st), 0);
    make_point(0, &p);
    cr_assert_not(ab_store_has(st, p.key), "resume = 0 starts empty");
    assert_file_has(t.out, 0);
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    assert_file_has(t.out, 0);

    /* resume = 1 with nothing there starts empty */
    unlink(t.out);
    cr_assert_eq(ab_store_open(t.out, &env, 1, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ab_store_count(st), 0);
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    ab_env_free(&env);
    ab_env_free(&env2);
    tdir_remove(&t);
}

/* ---- crashes ------------------------------------------------------------ */

enum { END_EXIT, END_ABORT, END_SIGKILL };

/* child: resume OUT, append [from, to), then die without closing */
static void crash_child(const char *out, size_t from, size_t to, int how)
{
    char err[512];
    ab_store *st = NULL;
    if (ab_store_open(out, NULL, 1, &st, err, sizeof err) < 0) _exit(3);
    for (size_t i = from; i < to; i++) {
        ab_point p;
        make_point(i, &p);
        if (ab_store_append(st, &p, err, sizeof err) < 0) _exit(4);
    }
    if (how == END_ABORT) {
        signal(SIGABRT, SIG_DFL);
        abort();
    }
    if (how == END_SIGKILL) raise(SIGKILL);
    _exit(0);
}

Test(store, journal_recovery_after_crash)
{
    for (int how = END_EXIT; how <= END_SIGKILL; how++) {
        tdir t;
        tdir_make(&t);
        write_file(&t, 5);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) crash_child(t.out, 5, 12, how);
        int status;
        waitpid(pid, &status, 0);
        if (how == END_EXIT)
            cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: %d", status);
        else
            cr_assert(WIFSIGNALED(status), "child should have died by a signal");
        cr_assert(exists(t.journal), "the journal is left behind");

        /* OUT alone still opens (journal moved away for a moment) */
        char moved[200];
        snprintf(moved, sizeof moved, "%s.moved", t.journal);
        cr_assert_eq(rename(t.journal, moved), 0);
        ab_point *pts = NULL;
        size_t n = 0;
        char err[512] = "";
        cr_assert_eq(ab_results_read(t.out, &pts, &n, NULL, err, sizeof err), 0, "%s", err);
        cr_assert_geq(n, 5);
        free(pts);
        cr_assert_eq(rename(moved, t.journal), 0);

        /* OUT + journal: every appended point */
        assert_file_has(t.out, 12);

        /* resume picks them up; the points that were only in the journal are
         * written into OUT at open, so even an abandoned store keeps them */
        ab_store *st = NULL;
        cr_assert_eq(ab_store_open(t.out, NULL, 1, &st, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ab_store_count(st), 12);
        ab_store_abandon(st);
        unlink(t.journal);
        assert_file_has(t.out, 12);
        cr_assert_eq(ab_store_open(t.out, NULL, 1, &st, err, sizeof err), 0, "%s", err);
        cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
        cr_assert_not(exists(t.journal));
        assert_file_has(t.out, 12);
        tdir_remove(&t);
    }
}

/* A writer SIGKILLed at arbitrary moments (mid-journal, mid-rewrite): after
 * each kill OUT opens, every point the child reported done is there. */
Test(store, sigkill_midstream, .timeout = 180)
{
    tdir t;
    tdir_make(&t);
    size_t total = 0;
    const double delays[] = { 0.35, 0.7, 1.05,
                              1.3 }; /* after the first append; the rewrite comes once a second */
    for (size_t round = 0; round < sizeof delays / sizeof *delays; round++) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            char err[512];
            ab_store *st = NULL;
            if (ab_store_open(t.out, NULL, 1, &st, err, sizeof err) < 0) _exit(3);
            for (size_t i = ab_store_count(st);; i++) {
                ab_point p;
                make_point(i, &p);
                if (ab_store_append(st, &p, err, sizeof err) < 0) _exit(4);
                uint32_t done = (uint32_t)i;
                if (write(fds[1], &done, sizeof done) != (ssize_t)sizeof done) _exit(5);
            }
        }
        close(fds[1]);
        /* the delay counts from the first append, not from the fork: how
         * long the open takes (it loads and rewrites everything the earlier
         * rounds appended) depends on the build (ASan) and the machine */
        struct pollfd pf = { fds[0], POLLIN, 0 };
        const int first = poll(&pf, 1, 30000) == 1;
        struct timespec ts = { 0, 0 };
        ts.tv_sec = (time_t)delays[round];
        ts.tv_nsec = (long)((delays[round] - (double)ts.tv_sec) * 1e9);
        if (first) nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status), "child ended early: status %d", status);
        uint32_t last = 0, v;
        int any = 0;
        while (read(fds[0], &v, sizeof v) == (ssize_t)sizeof v) {
            last = v;
            any = 1;
        }
        close(fds[0]);
        cr_assert(first && any, "the child appended nothing within 30 s of its start");
        cr_assert_geq(last + 1, total);

        ab_point *pts = NULL;
        size_t n = 0;
        char err[512] = "";
        cr_assert_eq(ab_results_read(t.out, &pts, &n, NULL, err, sizeof err), 0, "%s", err);
        cr_assert(n == last + 1 || n == last + 2, "round %zu: %zu points, child reported %u", round, n,
                  last + 1);
        for (size_t i = 0; i < n; i++) {
            ab_point p;
            make_point(i, &p);
            assert_point_eq(&pts[i], &p, i);
        }
        free(pts);
        /* OUT alone (rewritten at open and then once a second) opens and
         * holds at least what the previous rounds left */
        char moved[200];
        snprintf(moved, sizeof moved, "%s.moved", t.journal);
        if (rename(t.journal, moved) == 0) {
            size_t n_out = 0;
            cr_assert_eq(ab_results_read(t.out, &pts, &n_out, NULL, err, sizeof err), 0, "%s", err);
            free(pts);
            cr_assert(n_out >= total && n_out <= n, "OUT alone: %zu points", n_out);
            cr_assert_eq(rename(moved, t.journal), 0);
        }
        total = n;
    }
    cr_log_info("sigkill_midstream: %zu points over 4 kills", total);
    /* a final resume + close leaves a clean file */
    ab_store *st = NULL;
    char err[512];
    cr_assert_eq(ab_store_open(t.out, NULL, 1, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ab_store_count(st), total);
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    assert_file_has(t.out, total);
    tdir_remove(&t);
}

/* ---- torn and damaged journals ------------------------------------------ */

Test(store, torn_journal_tail)
{
    tdir t;
    tdir_make(&t);
    const size_t k = 6;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) crash_child(t.out, 0, k, END_EXIT);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    size_t jlen = 0;
    unsigned char *j = slurp(t.journal, &jlen);
    cr_assert_not_null(j);
    const size_t hdr = 16, rec = 12 + sizeof(ab_point);
    cr_assert_eq(jlen, hdr + k * rec, "journal is header + %zu records", k);
    assert_file_has(t.out, k);

    /* a few bytes torn off the last record */
    cr_assert_eq(truncate(t.journal, (off_t)(jlen - 3)), 0);
    assert_file_has(t.out, k - 1);
    /* torn in the middle of a record's payload */
    cr_assert_eq(truncate(t.journal, (off_t)(hdr + 2 * rec + 100)), 0);
    assert_file_has(t.out, 2);
    /* torn inside a record's 8-byte head */
    cr_assert_eq(truncate(t.journal, (off_t)(hdr + 3 * rec + 5)), 0);
    assert_file_has(t.out, 2); /* (zero-filled extension is not a record) */
    /* torn inside the header: an empty journal */
    cr_assert_eq(truncate(t.journal, 10), 0);
    assert_file_has(t.out, 0);
    /* a corrupt byte in record 4: records 1..3 count */
    j[hdr + 3 * rec + 8 + 1000] ^= 0x40;
    spit(t.journal, j, jlen);
    assert_file_has(t.out, 3);
    j[hdr + 3 * rec + 8 + 1000] ^= 0x40;
    /* garbage after the last record */
    unsigned char *g = malloc(jlen + 77);
    cr_assert_not_null(g);
    memcpy(g, j, jlen);
    memset(g + jlen, 0xA5, 77);
    spit(t.journal, g, jlen + 77);
    assert_file_has(t.out, k);
    free(g);
    /* a missing OUT: the journal alone */
    spit(t.journal, j, jlen);
    cr_assert_eq(unlink(t.out), 0);
    assert_file_has(t.out, k);

    /* a journal from a build with another point layout: a clear error */
    j[8] ^= 0x01;
    spit(t.journal, j, jlen);
    ab_point *pts = NULL;
    size_t n = 0;
    char err[512] = "";
    cr_assert_eq(ab_results_read(t.out, &pts, &n, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, t.journal) && strstr(err, "byte points"), "%s", err);
    cr_assert_null(pts);
    /* ... and not a journal at all */
    memcpy(j, "NOTAJRNL", 8);
    spit(t.journal, j, jlen);
    cr_assert_eq(ab_results_read(t.out, &pts, &n, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "not an attnbench journal"), "%s", err);
    free(j);
    tdir_remove(&t);
}

/* ---- malformed inputs --------------------------------------------------- */

static void make_foreign_h5(const char *path, int schema_version)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0);
    hsize_t dims[1] = { 4 };
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t d = H5Dcreate2(f, "data", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int v[4] = { 1, 2, 3, 4 };
    H5Dwrite(d, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    if (schema_version) {
        hid_t s1 = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(f, "schema_version", H5T_NATIVE_INT, s1, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_INT, &schema_version);
        H5Aclose(a);
        H5Sclose(s1);
    }
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
}

/* path must fail to read with `expect` in the message, and ab_store_open with
 * resume must fail and leave the directory byte-for-byte as it was. */
static void assert_rejected(const tdir *t, const char *expect, int open_fails)
{
    size_t len0 = 0, len1 = 0;
    unsigned char *before = slurp(t->out, &len0);
    int entries = count_entries(t->dir);
    ab_point *pts = NULL;
    size_t n = 0;
    ab_env env = { 0 };
    char err[512] = "";
    cr_assert_eq(ab_results_read(t->out, &pts, &n, &env, err, sizeof err), -1, "%s accepted", expect);
    cr_assert(strstr(err, expect), "message \"%s\" lacks \"%s\"", err, expect);
    cr_assert(strstr(err, t->out), "message \"%s\" lacks the path", err);
    cr_assert_null(strchr(err, '\n'));
    cr_assert_null(pts);
    cr_assert_eq(env.n, 0);

    if (!open_fails) { /* resume with no file at all starts empty */
        free(before);
        return;
    }
    ab_store *st = (ab_store *)&n; /* must be reset to NULL */
    err[0] = '\0';
    cr_assert_eq(ab_store_open(t->out, NULL, 1, &st, err, sizeof err), -1, "%s: open accepted", expect);
    cr_assert_null(st);
    cr_assert(strstr(err, expect), "message \"%s\" lacks \"%s\"", err, expect);

    unsigned char *after = slurp(t->out, &len1);
    if (before) {
        cr_assert_not_null(after);
        cr_assert(len0 == len1 && memcmp(before, after, len0) == 0, "file modified");
    } else {
        cr_assert_null(after, "file created");
    }
    cr_assert_eq(count_entries(t->dir), entries, "files created in %s", t->dir);
    free(before);
    free(after);
}

Test(store, malformed_inputs)
{
    tdir t;
    tdir_make(&t);
    char err[512];

    /* missing */
    assert_rejected(&t, "No such file or directory", 0);
    /* empty */
    spit(t.out, "", 0);
    assert_rejected(&t, "is not an HDF5 file", 1);
    /* text and random garbage */
    spit(t.out, "key,method\n1,dense\n", 19);
    assert_rejected(&t, "is not an HDF5 file", 1);
    unsigned char junk[8192];
    unsigned s = 12345;
    for (size_t i = 0; i < sizeof junk; i++) {
        s = s * 1103515245u + 12345u;
        junk[i] = (unsigned char)(s >> 16);
    }
    spit(t.out, junk, sizeof junk);
    assert_rejected(&t, "is not an HDF5 file", 1);
    /* an HDF5 signature followed by garbage */
    memcpy(junk, "\x89HDF\r\n\x1a\n", 8);
    spit(t.out, junk, sizeof junk);
    assert_rejected(&t, "damaged HDF5 file", 1);
    /* a truncated results file */
    write_file(&t, 20);
    size_t len = 0;
    unsigned char *good = slurp(t.out, &len);
    cr_assert_not_null(good);
    spit(t.out, good, len / 2);
    assert_rejected(&t, "damaged HDF5 file", 1);
    /* somebody else's HDF5 file; another schema version */
    make_foreign_h5(t.out, 0);
    assert_rejected(&t, "is not an attnbench results file", 1);
    make_foreign_h5(t.out, 99);
    assert_rejected(&t, "has schema version 99, this attnbench reads 1", 1);
    /* a directory */
    cr_assert_eq(unlink(t.out), 0);
    cr_assert_eq(mkdir(t.out, 0755), 0);
    assert_rejected(&t, "Is a directory", 1);
    cr_assert_eq(rmdir(t.out), 0);

    /* resume = 0 replaces whatever was there */
    spit(t.out, junk, sizeof junk);
    ab_store *st = NULL;
    cr_assert_eq(ab_store_open(t.out, NULL, 0, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ab_store_close(st, err, sizeof err), 0, "%s", err);
    assert_file_has(t.out, 0);
    free(good);
    tdir_remove(&t);
}

/* ---- unwritable destinations -------------------------------------------- */

/* Run fn in a child; return its one-line message (static buffer of caller). */
typedef int (*child_fn)(const tdir *t, char *err, size_t errlen);

static int run_child(const tdir *t, child_fn fn, char *msg, size_t msglen)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        char err[512] = "";
        int rc = fn(t, err, sizeof err);
        ssize_t w = write(fds[1], err, strlen(err));
        (void)w;
        _exit(rc);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], msg, msglen - 1);
    msg[got > 0 ? got : 0] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status), "child crashed (status %d)", status);
    return WEXITSTATUS(status);
}

/* 0: open failed as it should (message in err); 1: it succeeded; 77: skip */
static int open_as_nobody(const tdir *t, char *err, size_t errlen)
{
    if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0)) return 77;
    if (access(t->dir, W_OK) == 0) return 77; /* still writable: nothing to test */
    ab_store *st = NULL;
    if (ab_store_open(t->out, NULL, 0, &st, err, errlen) == 0) {
        ab_store_abandon(st);
        return 1;
    }
    return 0;
}

Test(store, read_only_directory)
{
    tdir t;
    tdir_make(&t);
    write_file(&t, 3);
    size_t len0 = 0, len1 = 0;
    unsigned char *before = slurp(t.out, &len0);
    cr_assert_eq(chmod(t.dir, 0555), 0);
    char msg[512];
    int rc = run_child(&t, open_as_nobody, msg, sizeof msg);
    if (rc == 77) {
        free(before);
        tdir_remove(&t);
        cr_skip_test("cannot make the directory read-only for this user");
    }
    cr_assert_eq(rc, 0, "open in a read-only directory succeeded");
    cr_assert(strstr(msg, t.dir) && strstr(msg, "Permission denied"), "message: %s", msg);
    cr_assert_null(strchr(msg, '\n'));
    unsigned char *after = slurp(t.out, &len1);
    cr_assert(after && len0 == len1 && memcmp(before, after, len0) == 0, "OUT modified");
    assert_file_has(t.out, 3);
    free(before);
    free(after);
    tdir_remove(&t);
}

Test(store, missing_directory)
{
    ab_store *st = NULL;
    char err[512] = "";
    const char *path = "/nonexistent-attnbench-dir/sub/out.h5";
    cr_assert_eq(ab_store_open(path, NULL, 0, &st, err, sizeof err), -1);
    cr_assert_null(st);
    cr_assert(strstr(err, "/nonexistent-attnbench-dir/sub/out.h5") &&
                  strstr(err, "No such file or directory"),
              "%s", err);
}

/* "disk full": a file size limit makes write() fail with EFBIG */
static int open_with_fsize_limit(const tdir *t, char *err, size_t errlen)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = { 2048, RLIM_INFINITY };
    if (setrlimit(RLIMIT_FSIZE, &rl) < 0) return 77;
    ab_store *st = NULL;
    if (ab_store_open(t->out, NULL, 0, &st, err, errlen) == 0) {
        ab_store_abandon(st);
        return 1;
    }
    return 0;
}

/* append until the journal hits the limit, lift it, append again */
static int append_with_fsize_limit(const tdir *t, char *err, size_t errlen)
{
    signal(SIGXFSZ, SIG_IGN);
    ab_store *st = NULL;
    if (ab_store_open(t->out, NULL, 0, &st, err, errlen) < 0) return 2;
    struct rlimit rl = { (rlim_t)(16 + 2 * (12 + sizeof(ab_point)) + 100), RLIM_INFINITY };
    if (setrlimit(RLIMIT_FSIZE, &rl) < 0) return 77;
    ab_point p;
    for (size_t i = 0; i < 2; i++) {
        make_point(i, &p);
        if (ab_store_append(st, &p, err, errlen) < 0) return 3;
    }
    make_point(2, &p);
    if (ab_store_append(st, &p, err, errlen) == 0) return 4; /* should have failed */
    char keep[512];
    snprintf(keep, sizeof keep, "%s", err);
    rl.rlim_cur = RLIM_INFINITY;
    setrlimit(RLIMIT_FSIZE, &rl);
    make_point(3, &p);
    if (ab_store_append(st, &p, err, errlen) < 0) return 5;
    ab_store_abandon(st); /* leave the journal to be read */
    snprintf(err, errlen, "%s", keep);
    return 0;
}

Test(store, write_errors_are_reported)
{
    tdir t;
    tdir_make(&t);
    char msg[512];
    int rc = run_child(&t, open_with_fsize_limit, msg, sizeof msg);
    if (rc == 77) cr_skip_test("setrlimit failed");
    cr_assert_eq(rc, 0, "open under a 2 KiB file size limit succeeded");
    cr_assert(strstr(msg, t.out) && strstr(msg, "File too large"), "message: %s", msg);
    cr_assert_not(exists(t.out), "no OUT after a failed open");
    cr_assert_eq(count_entries(t.dir), 0, "leftover files");

    rc = run_child(&t, append_with_fsize_limit, msg, sizeof msg);
    cr_assert_eq(rc, 0, "append child: %d (%s)", rc, msg);
    cr_assert(strstr(msg, t.journal) && strstr(msg, "File too large"), "message: %s", msg);
    /* the failed record was rolled back, so the one after it is readable */
    ab_point *pts = NULL;
    size_t n = 0;
    char err[512];
    cr_assert_eq(ab_results_read(t.out, &pts, &n, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 3);
    ab_point p;
    make_point(0, &p);
    assert_point_eq(&pts[0], &p, 0);
    make_point(1, &p);
    assert_point_eq(&pts[1], &p, 1);
    make_point(3, &p);
    assert_point_eq(&pts[2], &p, 2);
    free(pts);
    tdir_remove(&t);
}
