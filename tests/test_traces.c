/* test_traces.c — trace format version 2 (docs/traces.md): the K/V head map,
 * bfloat16 bits, root metadata and its validation; answer-bearing traces
 * scored end to end (`attnbench run`: dense finds the needle, a window that
 * misses it does not); a list of layers as a sweep axis with per-head recall;
 * `attnbench trace-info` and `trace-run` (dense output against an fp64
 * recomputation). Every trace here is written by the test with the HDF5 C
 * API: nothing depends on Python. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "attnbench.h"
#include "datasets/gen/trace.h"
#include "fuzz/trace_case.h" /* fz_attr_int, fz_attr_str */
#include "harness/store/point.h"
#include "harness/store/store.h"
#include "runtime/plugin.h"

extern const ab_task trace_task;

static const char *bin(void) { return getenv("AB_BIN") ? getenv("AB_BIN") : "build/attnbench"; }

/* ---- a small v2 trace writer ---------------------------------------------- */

typedef struct wlayer {
    int layer, H, Hkv, N, d;
    const float *q, *k, *v; /* [H, N, d], [Hkv, N, d] */
    const int *kv_map;      /* [H] or NULL */
    int bf16;               /* store bfloat16 bits (uint16 + dtype attribute) */
    int causal;
} wlayer;

typedef struct wtrace {
    int version;
    int n_layers;
    wlayer L[4];
    int span[4];       /* needle_start, needle_end, question_start, question_end; all 0: none */
    int n_tokens_attr; /* 0: not written */
} wtrace;

static void write_tensor(hid_t g, const char *name, int H, int N, int d, const float *x, int bf16)
{
    hsize_t dims[3] = { (hsize_t)H, (hsize_t)N, (hsize_t)d };
    const size_t n = (size_t)H * N * d;
    hid_t sp = H5Screate_simple(3, dims, NULL);
    hid_t ds;
    if (bf16) {
        uint16_t *b = malloc(n * sizeof *b);
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            b[i] = (uint16_t)(u >> 16); /* the test's values are exact in bfloat16 */
        }
        ds = H5Dcreate2(g, name, H5T_STD_U16LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(ds, H5T_NATIVE_USHORT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
        fz_attr_str(ds, "dtype", "bfloat16");
        free(b);
    } else {
        ds = H5Dcreate2(g, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    }
    cr_assert_geq(ds, 0);
    H5Dclose(ds);
    H5Sclose(sp);
}

static void write_v2(const char *path, const wtrace *t)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    fz_attr_str(f, "format", "attnbench-trace");
    fz_attr_int(f, "version", t->version ? t->version : 2);
    fz_attr_str(f, "source", "test_traces.c");
    fz_attr_int(f, "synthetic", 1);
    if (t->n_tokens_attr) fz_attr_int(f, "n_tokens", t->n_tokens_attr);
    if (t->span[1] > 0) {
        fz_attr_int(f, "needle_start", t->span[0]);
        fz_attr_int(f, "needle_end", t->span[1]);
        fz_attr_int(f, "question_start", t->span[2]);
        fz_attr_int(f, "question_end", t->span[3]);
        fz_attr_str(f, "passkey", "4242");
    }
    for (int l = 0; l < t->n_layers; l++) {
        const wlayer *w = &t->L[l];
        char gname[32];
        snprintf(gname, sizeof gname, "layer_%d", w->layer);
        hid_t g = H5Gcreate2(f, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        fz_attr_int(g, "causal", w->causal);
        fz_attr_int(g, "rope_applied", 1);
        write_tensor(g, "q", w->H, w->N, w->d, w->q, w->bf16);
        write_tensor(g, "k", w->Hkv, w->N, w->d, w->k, w->bf16);
        write_tensor(g, "v", w->Hkv, w->N, w->d, w->v, w->bf16);
        if (w->kv_map) {
            hsize_t n = (hsize_t)w->H;
            hid_t sp = H5Screate_simple(1, &n, NULL);
            hid_t ds = H5Dcreate2(g, "kv_map", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            H5Dwrite(ds, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w->kv_map);
            H5Dclose(ds);
            H5Sclose(sp);
        }
        H5Gclose(g);
    }
    H5Fclose(f);
}

/* value (h, i, m): small multiples of 1/64, exact in bfloat16 */
static float pattern(int h, int i, int m) { return (float)(((h * 5 + i * 7 + m * 3) % 17) - 8) / 64.0f; }

static float *tensor(int H, int N, int d, int salt)
{
    float *x = malloc(sizeof(float) * (size_t)H * N * d);
    for (int h = 0; h < H; h++)
        for (int i = 0; i < N; i++)
            for (int m = 0; m < d; m++) x[((size_t)h * N + i) * d + m] = pattern(h + salt, i, m);
    return x;
}

static int run_cmd(const char *cmd, char *out, size_t n)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the K/V head map and bfloat16 ---------------------------------------- */

Test(traces, kv_map_and_bfloat16_load_exactly)
{
    char dir[] = "/tmp/ab_traces_XXXXXX", path[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.h5", dir);
    const int H = 4, Hkv = 2, N = 24, d = 16;
    float *q = tensor(H, N, d, 0), *k = tensor(Hkv, N, d, 10), *v = tensor(Hkv, N, d, 20);
    const int map[4] = { 1, 0, 1, 0 }; /* not the h / group default */
    wtrace t = { .n_layers = 1, .L = { { 2, H, Hkv, N, d, q, k, v, map, 1, 1 } } };
    write_v2(path, &t);
    char err[400] = "";
    ab_trace_info info;
    ab_shape s = { H, N, d, 1, 0.25f, NULL, 0, 1, AB_PREFILL };
    cr_assert_eq(ab_trace_check(path, 2, &s, &info, err, sizeof err), AB_OK, "%s", err);
    cr_expect(info.bf16 && info.has_kv_map && info.elem_bytes == 2);
    const size_t n = (size_t)H * N * d;
    float *lq = malloc(n * 4), *lk = malloc(n * 4), *lv = malloc(n * 4);
    cr_assert_eq(ab_trace_load(path, 2, &s, lq, lk, lv, err, sizeof err), AB_OK, "%s", err);
    for (int h = 0; h < H; h++)
        for (int i = 0; i < N; i++)
            for (int m = 0; m < d; m++) {
                const size_t o = ((size_t)h * N + i) * d + m;
                cr_assert_eq(lq[o], q[o], "q[%d,%d,%d]", h, i, m);
                cr_assert_eq(lk[o], k[((size_t)map[h] * N + i) * d + m], "k[%d,%d,%d]: head map", h, i, m);
                cr_assert_eq(lv[o], v[((size_t)map[h] * N + i) * d + m], "v[%d,%d,%d]: head map", h, i, m);
            }
    ab_trace_meta *meta = malloc(sizeof *meta);
    cr_assert_eq(ab_trace_meta_read(path, meta, err, sizeof err), AB_OK, "%s", err);
    cr_expect_eq(meta->version, 2);
    cr_expect_eq(meta->n_layers, 1);
    cr_expect_eq(meta->layers[0], 2);
    cr_expect_eq(meta->synthetic, 1);
    cr_expect_eq(meta->needle_end, -1);
    free(meta);
    free(lq);
    free(lk);
    free(lv);
    free(q);
    free(k);
    free(v);
    unlink(path);
    rmdir(dir);
}

Test(traces, bad_version_2_files_name_the_problem)
{
    char dir[] = "/tmp/ab_traces_XXXXXX", path[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/b.h5", dir);
    const int H = 4, Hkv = 2, N = 32, d = 8;
    float *q = tensor(H, N, d, 0), *k = tensor(Hkv, N, d, 1), *v = tensor(Hkv, N, d, 2);
    const int far[4] = { 0, 1, 2, 0 }, neg[4] = { 0, -1, 0, 0 };
    struct {
        wtrace t;
        const char *expect;
    } cases[] = {
        { { .n_layers = 1, .L = { { 0, H, Hkv, N, d, q, k, v, far, 0, 1 } } },
          "kv_map[2] = 2 is not a K/V head" },
        { { .n_layers = 1, .L = { { 0, H, Hkv, N, d, q, k, v, neg, 0, 1 } } }, "kv_map[1] = -1" },
        { { .version = 3, .n_layers = 1, .L = { { 0, H, Hkv, N, d, q, k, v, NULL, 0, 1 } } },
          "format version 3, this reader knows 1 and 2" },
        { { .n_layers = 1, .L = { { 0, H, Hkv, N, d, q, k, v, NULL, 0, 1 } }, .span = { 10, 8, 20, 32 } },
          "answer span attributes inconsistent" },
        { { .n_layers = 1,
            .L = { { 0, H, Hkv, N, d, q, k, v, NULL, 0, 1 } },
            .span = { 4, 8, 20, 40 },
            .n_tokens_attr = 32 },
          "answer span attributes inconsistent" },
        { { .n_layers = 1, .L = { { 0, H, Hkv, N, d, q, k, v, NULL, 0, 1 } }, .n_tokens_attr = 30 },
          "has N = 32 tokens but the trace says 30" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_v2(path, &cases[i].t);
        char cmd[600], out[4096];
        snprintf(cmd, sizeof cmd, "'%s' trace-info '%s' 2>&1", bin(), path);
        const int rc = run_cmd(cmd, out, sizeof out);
        cr_expect_eq(rc, 2, "case %zu: exit %d: %s", i, rc, out);
        cr_expect(strstr(out, cases[i].expect) && strstr(out, path), "case %zu: '%s' lacks '%s'", i, out,
                  cases[i].expect);
    }
    /* an integer dataset without the bfloat16 tag */
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    fz_attr_str(f, "format", "attnbench-trace");
    hid_t g = H5Gcreate2(f, "layer_0", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[3] = { 1, 4, 4 };
    uint16_t z[16] = { 0 };
    hid_t sp = H5Screate_simple(3, dims, NULL);
    for (int x = 0; x < 3; x++) {
        hid_t ds = H5Dcreate2(g,
                              x == 0   ? "q"
                              : x == 1 ? "k"
                                       : "v",
                              H5T_STD_U16LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(ds, H5T_NATIVE_USHORT, H5S_ALL, H5S_ALL, H5P_DEFAULT, z);
        H5Dclose(ds);
    }
    H5Sclose(sp);
    H5Gclose(g);
    H5Fclose(f);
    char err[400] = "";
    cr_expect_neq(ab_trace_check(path, 0, NULL, NULL, err, sizeof err), AB_OK);
    cr_expect(strstr(err, "without dtype = \"bfloat16\""), "%s", err);
    free(q);
    free(k);
    free(v);
    unlink(path);
    rmdir(dir);
}

/* ---- answer-bearing traces, layer lists, per-head recall: end to end ------- */

/* A trace whose heads 0 and 1 retrieve a needle: keys [NS, NE) are a strong
 * direction u that the question rows [QS, N) of heads 0 and 1 point at;
 * heads 2 and 3 ask nothing. Two layers (0 and 1). */
enum { EH = 4, EN = 512, ED = 32, NS = 200, NE = 208, QS = 500 };

static void needle_layer(float *q, float *k, float *v, int salt)
{
    uint64_t st = 0x5eed + (uint64_t)salt;
    for (size_t i = 0; i < (size_t)EH * EN * ED; i++) {
        q[i] = (float)((double)(ab_splitmix64(&st) >> 11) / 9007199254740992.0 - 0.5);
        k[i] = (float)((double)(ab_splitmix64(&st) >> 11) / 9007199254740992.0 - 0.5);
        v[i] = (float)((double)(ab_splitmix64(&st) >> 11) / 9007199254740992.0 - 0.5);
    }
    for (int h = 0; h < EH; h++)
        for (int j = NS; j < NE; j++)
            for (int m = 0; m < ED; m++) k[((size_t)h * EN + j) * ED + m] = m % 2 ? 1.0f : -1.0f;
    for (int h = 0; h < 2; h++)
        for (int i = QS; i < EN; i++)
            for (int m = 0; m < ED; m++) q[((size_t)h * EN + i) * ED + m] = m % 2 ? 1.0f : -1.0f;
}

Test(traces, needle_layers_and_heads_end_to_end, .timeout = 300)
{
    char dir[] = "/tmp/ab_traces_XXXXXX", path[512], cmd[2048], out[8192];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/n.h5", dir);
    const size_t n = (size_t)EH * EN * ED;
    float *q0 = malloc(n * 4), *k0 = malloc(n * 4), *v0 = malloc(n * 4);
    float *q1 = malloc(n * 4), *k1 = malloc(n * 4), *v1 = malloc(n * 4);
    needle_layer(q0, k0, v0, 0);
    needle_layer(q1, k1, v1, 1);
    wtrace t = { .n_layers = 2,
                 .L = { { 0, EH, EH, EN, ED, q0, k0, v0, NULL, 0, 1 },
                        { 1, EH, EH, EN, ED, q1, k1, v1, NULL, 0, 1 } },
                 .span = { NS, NE, QS, EN },
                 .n_tokens_attr = EN };
    write_v2(path, &t);
    snprintf(cmd, sizeof cmd, "'%s' trace-info '%s' 2>&1", bin(), path);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "needle: tokens [200, 208), question rows [500, 512)") &&
                  strstr(out, "layer = 0, 1") && strstr(out, "every value finite"),
              "%s", out);
    char ini[600];
    snprintf(ini, sizeof ini, "%s/c.ini", dir);
    FILE *f = fopen(ini, "w");
    fprintf(f,
            "[sweep]\ntasks = trace\nmethods = dense, window, oracle_topk_token\nseq_lens = 384, 512\n"
            "heads = 4\nhead_dims = 32\ndensities = 0.2\nblock_q = 16\nblock_k = 16\nthreads = 1\n\n"
            "[timing]\ntimed_tasks = none\n\n[task.trace]\nfile = %s\nlayer = 0, 1\n",
            path);
    fclose(f);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' run -c c.ini -o r.h5 2>&1", dir, bin());
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 0, "%s", out);
    snprintf(path, sizeof path, "%s/r.h5", dir);
    ab_point *pts = NULL;
    size_t np = 0;
    ab_env env;
    char err[400];
    cr_assert_eq(ab_results_read(path, &pts, &np, &env, err, sizeof err), 0, "%s", err);
    cr_expect_eq(np, 12, "3 methods x 2 lengths x 2 layers: %zu points", np);
    int seen[2][3] = { { 0 } };
    for (size_t i = 0; i < np; i++) {
        const ab_point *p = &pts[i];
        cr_assert(ab_status_is_ok(p->status), "%s N=%d %s: %s %s", p->method, p->seq_len, p->tparams,
                  p->status, p->message);
        cr_expect(ab_point_has_flag(p, "untimed"), "timed_tasks = none: %s is timed", p->method);
        const int layer = strstr(p->tparams, "layer=1") ? 1 : 0;
        cr_expect(layer == 1 || !p->tparams[0], "tparams '%s'", p->tparams);
        int nh = 0;
        for (const char *c = p->head_recall; *c; c++) nh += *c == ',';
        cr_expect_eq(nh, 3, "%s: head_recall '%s' has not 4 heads", p->method, p->head_recall);
        if (p->seq_len == 384) { /* the question rows lie beyond the prefix: no answers */
            cr_expect_eq(p->acc_trials, 0, "%s N=384: %d trials", p->method, p->acc_trials);
            continue;
        }
        /* heads 0 and 1 ask at 12 rows each; heads 2 and 3 do not look at the needle */
        cr_expect_eq(p->acc_trials, 24, "%s layer %d: %d trials", p->method, layer, p->acc_trials);
        const int mi = !strcmp(p->method, "dense") ? 0 : !strcmp(p->method, "window") ? 1 : 2;
        seen[layer][mi]++;
        if (mi == 0 || mi == 2)
            cr_expect_eq(p->accuracy, 1.0, "%s layer %d: accuracy %g", p->method, layer, p->accuracy);
        else /* a window of ~10% of 512 keys ends far after the needle */
            cr_expect_eq(p->accuracy, 0.0, "window layer %d: accuracy %g", layer, p->accuracy);
    }
    for (int l = 0; l < 2; l++)
        for (int m = 0; m < 3; m++)
            cr_expect_eq(seen[l][m], 1, "layer %d method %d: %d points", l, m, seen[l][m]);
    /* the figure's data: every (layer, head) pooled */
    snprintf(cmd, sizeof cmd,
             "'%s' export '%s' -d '%s/x' >/dev/null 2>&1 && grep -c . '%s/x/trace_head_recall.tsv'", bin(),
             path, dir, dir);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 0, "%s", out);
    cr_expect_eq(atoi(out), 2 + 12 * 4, "trace_head_recall.tsv: %s lines", out);
    snprintf(cmd, sizeof cmd,
             "grep -P '^1\\t1\\t1\\t1\\t1\\t1\\tdense\\t1\\t512\\t8\\t2\\t1\\t48$' '%s/x/trace_heads.tsv'",
             dir);
    cr_expect_eq(run_cmd(cmd, out, sizeof out), 0, "dense row of trace_heads.tsv missing");
    free(pts);
    ab_env_free(&env);
    free(q0);
    free(k0);
    free(v0);
    free(q1);
    free(k1);
    free(v1);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) {}
}

/* ---- trace-run: attnbench's dense output against fp64 ---------------------- */

Test(traces, trace_run_dense_matches_fp64)
{
    char dir[] = "/tmp/ab_traces_XXXXXX", path[256], opath[256], cmd[1024], out[2048];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/r.h5", dir);
    snprintf(opath, sizeof opath, "%s/o.f32", dir);
    const int H = 4, Hkv = 2, N = 96, d = 16;
    float *q = tensor(H, N, d, 0), *k = tensor(Hkv, N, d, 3), *v = tensor(Hkv, N, d, 6);
    const int map[4] = { 0, 0, 1, 1 };
    wtrace t = { .n_layers = 1, .L = { { 5, H, Hkv, N, d, q, k, v, map, 0, 1 } } };
    write_v2(path, &t);
    snprintf(cmd, sizeof cmd, "'%s' trace-run '%s' --layer 5 -o '%s' 2>&1", bin(), path, opath);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 0, "%s", out);
    FILE *f = fopen(opath, "rb");
    cr_assert_not_null(f);
    float *o = malloc(sizeof(float) * (size_t)H * N * d);
    cr_assert_eq(fread(o, sizeof(float), (size_t)H * N * d, f), (size_t)H * N * d);
    cr_expect_eq(fgetc(f), EOF, "output longer than [H, N, d]");
    fclose(f);
    double worst = 0;
    for (int h = 0; h < H; h++)
        for (int i = 0; i < N; i++) {
            const float *qi = q + ((size_t)h * N + i) * d;
            double mx = -INFINITY, z = 0, acc[16] = { 0 };
            for (int j = 0; j <= i; j++) {
                double x = 0;
                for (int m = 0; m < d; m++) x += (double)qi[m] * k[((size_t)map[h] * N + j) * d + m];
                mx = fmax(mx, x / 4.0);
            }
            for (int j = 0; j <= i; j++) {
                double x = 0;
                for (int m = 0; m < d; m++) x += (double)qi[m] * k[((size_t)map[h] * N + j) * d + m];
                const double e = exp(x / 4.0 - mx);
                z += e;
                for (int m = 0; m < d; m++) acc[m] += e * v[((size_t)map[h] * N + j) * d + m];
            }
            for (int m = 0; m < d; m++)
                worst = fmax(worst, fabs(acc[m] / z - o[((size_t)h * N + i) * d + m]));
        }
    cr_expect(worst < 1e-5, "dense on the trace differs from fp64 by %g", worst);
    /* bad input: nothing written, exit 2 */
    unlink(opath);
    snprintf(cmd, sizeof cmd, "'%s' trace-run '%s' --layer 7 -o '%s' 2>&1", bin(), path, opath);
    cr_expect_eq(run_cmd(cmd, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "missing group /layer_7"), "%s", out);
    cr_expect(access(opath, F_OK) != 0, "a failed trace-run wrote its output");
    snprintf(cmd, sizeof cmd, "'%s' trace-run '%s' --layer 5 --method nosuch -o '%s' 2>&1", bin(), path,
             opath);
    cr_expect_eq(run_cmd(cmd, out, sizeof out), 2, "%s", out);
    free(o);
    free(q);
    free(k);
    free(v);
    unlink(path);
    rmdir(dir);
}
