/* test_gpu.c — the CUDA backend (kernels/cuda, harness/engine/gpu.c) against the
 * exact fp64 reference (ab_ref_rows), with fp16/bf16 tolerances.
 *
 * Every test that needs a device skips itself with the reason when
 * ab_gpu_count() finds none (CUDA=no builds, machines without a GPU); the
 * `no_device` tests run everywhere and check that the GPU path then says
 * "unsupported" with a reason instead of failing. The registry test runs
 * every method that declares AB_GPU through the same select + run + layout
 * calls as a sweep point (ab_gpu_select_run), so a method that opts into
 * the GPU is tested with no new test code. `make test-gpu` runs this suite
 * under compute-sanitizer. FlashAttention-2: Dao 2023, arXiv 2307.08691.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness/engine/gpu.h"
#include "runtime/layout.h"
#include "runtime/registry.h"
#include "kernels/kernels.h"

/* Relative L2 error per row against fp64 (inputs rounded to 16 bits). */
#define TOL_FP16 1e-2
#define TOL_BF16 4e-2

#define NEED_GPU()                                                                  \
    do {                                                                            \
        char why_[256] = "";                                                        \
        if (ab_gpu_count(why_, sizeof why_) == 0) cr_skip_test("no GPU: %s", why_); \
    } while (0)

typedef struct tprob {
    ab_problem pb;
    ab_problem held;     /* the held-out draw (ab_problem.heldout) profiling methods read */
    float *q, *k, *v;    /* (heads, seq_len, head_dim) each */
    float *hq, *hk, *hv; /* the held-out draw's */
} tprob;

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double gauss(uint64_t *s)
{
    double u = ((mix(s) >> 11) + 0.5) * 0x1.0p-53, w = ((mix(s) >> 11) + 0.5) * 0x1.0p-53;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * w);
}

static void tprob_make(tprob *t, int heads, int n, int d, int causal, uint64_t seed)
{
    const size_t cnt = (size_t)heads * n * d;
    t->q = malloc(cnt * sizeof *t->q);
    t->k = malloc(cnt * sizeof *t->k);
    t->v = malloc(cnt * sizeof *t->v);
    t->hq = malloc(cnt * sizeof *t->hq);
    t->hk = malloc(cnt * sizeof *t->hk);
    t->hv = malloc(cnt * sizeof *t->hv);
    cr_assert(t->q && t->k && t->v && t->hq && t->hk && t->hv);
    const uint64_t hseed = ab_heldout_seed(seed);
    uint64_t hs = hseed;
    for (size_t i = 0; i < cnt; i++) {
        t->q[i] = (float)gauss(&seed);
        t->k[i] = (float)gauss(&seed);
        t->v[i] = (float)gauss(&seed);
        t->hq[i] = (float)gauss(&hs);
        t->hk[i] = (float)gauss(&hs);
        t->hv[i] = (float)gauss(&hs);
    }
    memset(&t->pb, 0, sizeof t->pb);
    t->pb.s = (ab_shape){ heads, n, d, causal, 1.0f / sqrtf((float)d), NULL, 0, 1, AB_PREFILL };
    t->pb.q = t->q;
    t->pb.k = t->k;
    t->pb.v = t->v;
    t->pb.seed = seed;
    t->pb.threads = 1;
    t->held = t->pb;
    t->held.q = t->hq;
    t->held.k = t->hk;
    t->held.v = t->hv;
    t->held.seed = hseed;
    t->pb.heldout = &t->held;
}

static void tprob_free(tprob *t)
{
    free(t->q);
    free(t->k);
    free(t->v);
    free(t->hq);
    free(t->hk);
    free(t->hv);
}

/* Every row of every head of out against ab_ref_rows (restricted to l when
 * not NULL); rows that keep nothing must be zero. */
static void check_rows(const ab_problem *pb, const ab_layout *l, const float *out, double tol,
                       const char *what)
{
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim;
    int *rows = malloc(sizeof(int) * (size_t)N);
    double *ref = malloc(sizeof(double) * (size_t)N * d); /* (N, d) */
    cr_assert(rows && ref);
    for (int i = 0; i < N; i++) rows[i] = i;
    double worst = 0;
    int wi = -1, wh = -1;
    for (int h = 0; h < H; h++) {
        cr_assert_eq(ab_ref_rows(pb, h, rows, N, l, ref, NULL, NULL), AB_OK);
        for (int i = 0; i < N; i++) {
            const float *o = out + ((size_t)h * N + i) * d;
            const double *r = ref + (size_t)i * d;
            double num = 0, den = 0;
            for (int c = 0; c < d; c++) {
                cr_assert(isfinite(o[c]), "%s: non-finite output at head %d row %d", what, h, i);
                num += (o[c] - r[c]) * (o[c] - r[c]);
                den += r[c] * r[c];
            }
            const double e = den > 0 ? sqrt(num / den) : sqrt(num);
            if (e > worst) {
                worst = e;
                wi = i;
                wh = h;
            }
        }
    }
    free(rows);
    free(ref);
    cr_assert(worst <= tol, "%s: relative L2 error %.3g at head %d row %d > %.3g", what, worst, wh, wi, tol);
}

static ab_cuda *open_or_fail(const ab_problem *pb, ab_cuda_dtype dt)
{
    char err[256] = "";
    ab_cuda *g = NULL;
    int rc = ab_cuda_open(&g, &pb->s, dt, err, sizeof err);
    cr_assert_eq(rc, AB_OK, "ab_cuda_open: %s", err);
    cr_assert_eq(ab_cuda_upload_qkv(g, pb->q, pb->k, pb->v), AB_OK, "%s", ab_cuda_error(g));
    return g;
}

static void run_and_download(ab_cuda *g, int rc, float *out)
{
    cr_assert_eq(rc, AB_OK, "kernel: %s", ab_cuda_error(g));
    cr_assert_eq(ab_cuda_sync(g), AB_OK, "%s", ab_cuda_error(g));
    cr_assert_eq(ab_cuda_download_out(g, out), AB_OK, "%s", ab_cuda_error(g));
}

/* ---- runs everywhere ------------------------------------------------------- */

Test(gpu, no_device_reason_or_device)
{
    char why[256] = "";
    int n = ab_gpu_count(why, sizeof why);
    cr_assert(n >= 0);
    if (n == 0) cr_assert(why[0], "no GPU but no reason given");
    ab_env e;
    memset(&e, 0, sizeof e);
    ab_gpu_env(&e);
    cr_assert(ab_env_get(&e, "gpu_count") && ab_env_get(&e, "gpu_name") && ab_env_get(&e, "gpu_info"));
    cr_assert_eq(atoi(ab_env_get(&e, "gpu_count")), n);
    ab_env_free(&e);
}

Test(gpu, no_device_point_is_unsupported)
{
    char why[256] = "";
    if (ab_gpu_count(why, sizeof why) > 0) cr_skip_test("a GPU is present: nothing to check here");
    tprob t;
    tprob_make(&t, 1, 64, 64, 1, 1);
    ab_config *c = malloc(sizeof *c);
    cr_assert(c);
    ab_config_defaults(c);
    const ab_method *m = ab_method_find("dense");
    cr_assert(m);
    ab_params prm = { 0 };
    ab_gpu_point_in in = { c, m, &prm, &t.pb, NULL, NULL, 64, 64 };
    ab_point *p = calloc(1, sizeof *p);
    cr_assert(p);
    ab_gpu_measure(&in, p);
    cr_assert_str_eq(p->status, "unsupported");
    cr_assert(p->message[0], "unsupported without a reason");
    free(p);
    free(c);
    tprob_free(&t);
}

/* ---- need a GPU -------------------------------------------------------------- */

Test(gpu, flash_matches_reference)
{
    NEED_GPU();
    static const struct {
        int h, n, d, causal;
    } shapes[] = {
        { 2, 200, 64, 1 }, { 1, 333, 128, 0 }, { 2, 1024, 64, 1 }, { 1, 777, 128, 1 }, { 1, 1, 64, 1 },
    };
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int dt = 0; dt < 2; dt++) {
            tprob t;
            tprob_make(&t, shapes[si].h, shapes[si].n, shapes[si].d, shapes[si].causal, 100 + si);
            ab_cuda *g = open_or_fail(&t.pb, (ab_cuda_dtype)dt);
            float *out = malloc(sizeof(float) * (size_t)shapes[si].h * shapes[si].n * shapes[si].d);
            cr_assert(out);
            run_and_download(g, ab_cuda_flash(g), out);
            char what[96];
            snprintf(what, sizeof what, "flash %s N=%d d=%d causal=%d", dt ? "bf16" : "fp16", shapes[si].n,
                     shapes[si].d, shapes[si].causal);
            check_rows(&t.pb, NULL, out, dt ? TOL_BF16 : TOL_FP16, what);
            free(out);
            ab_cuda_close(g);
            tprob_free(&t);
        }
}

Test(gpu, cublas_matches_reference)
{
    NEED_GPU();
    for (int causal = 0; causal < 2; causal++)
        for (int dt = 0; dt < 2; dt++) {
            tprob t;
            tprob_make(&t, 2, 300, 128, causal, 7);
            ab_cuda *g = open_or_fail(&t.pb, (ab_cuda_dtype)dt);
            float *out = malloc(sizeof(float) * 2 * 300 * 128);
            cr_assert(out);
            run_and_download(g, ab_cuda_dense_cublas(g), out);
            check_rows(&t.pb, NULL, out, dt ? TOL_BF16 : TOL_FP16, causal ? "cublas causal" : "cublas");
            free(out);
            ab_cuda_close(g);
            tprob_free(&t);
        }
}

/* A random layout: each (head, query block) keeps the diagonal block and
 * about `keep` of the others; tokens (kind TOKEN/MIXED) a random fraction
 * of the keys outside the kept blocks. */
static void random_layout(ab_layout *l, const ab_shape *s, int bq, int bk, double keep, double tok,
                          uint64_t seed)
{
    ab_layout_init(l, s, bq, bk);
    for (int h = 0; h < s->heads; h++)
        for (int qb = 0; qb < l->n_qblocks; qb++) {
            const int diag = (((qb + 1) * bq < s->seq_len ? (qb + 1) * bq : s->seq_len) - 1) / bk;
            for (int kb = 0; kb < l->n_kblocks; kb++) {
                const double u = (mix(&seed) >> 11) * 0x1.0p-53;
                if (keep > 0 && (kb == diag || u < keep))
                    cr_assert_eq(ab_layout_add_block(l, h, qb, kb), AB_OK);
            }
            for (int j = 0; tok > 0 && j < s->seq_len; j++)
                if ((mix(&seed) >> 11) * 0x1.0p-53 < tok)
                    cr_assert_eq(ab_layout_add_token(l, h, qb, j), AB_OK);
        }
    cr_assert_eq(ab_layout_finalize(l), AB_OK);
    char err[200];
    cr_assert_eq(ab_layout_validate(l, err, sizeof err), 0, "%s", err);
}

Test(gpu, sparse_layouts_match_reference)
{
    NEED_GPU();
    static const struct {
        int n, d, causal, bq, bk;
        double keep, tok;
    } cases[] = {
        { 500, 64, 1, 64, 64, 0.3, 0 },       /* BLOCK */
        { 700, 128, 0, 128, 64, 0.2, 0 },     /* BLOCK, block_q != block_k */
        { 600, 64, 1, 32, 128, 0.25, 0 },     /* BLOCK, small query blocks */
        { 520, 64, 1, 64, 64, 0, 0.05 },      /* TOKEN */
        { 640, 128, 1, 128, 128, 0.2, 0.03 }, /* MIXED */
        { 300, 64, 0, 64, 64, 0, 0.2 },       /* TOKEN, non-causal */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++)
        for (int dt = 0; dt < 2; dt++) {
            tprob t;
            tprob_make(&t, 2, cases[ci].n, cases[ci].d, cases[ci].causal, 40 + ci);
            ab_layout l;
            random_layout(&l, &t.pb.s, cases[ci].bq, cases[ci].bk, cases[ci].keep, cases[ci].tok, 9 + ci);
            ab_cuda *g = open_or_fail(&t.pb, (ab_cuda_dtype)dt);
            cr_assert_eq(ab_cuda_upload_layout(g, &l), AB_OK, "%s", ab_cuda_error(g));
            float *out = malloc(sizeof(float) * 2 * (size_t)cases[ci].n * cases[ci].d);
            cr_assert(out);
            run_and_download(g, ab_cuda_run_layout(g, l.kind), out);
            char what[96];
            snprintf(what, sizeof what, "case %zu (%s, %s)", ci, ab_layout_kind_name(l.kind),
                     dt ? "bf16" : "fp16");
            check_rows(&t.pb, &l, out, dt ? TOL_BF16 : TOL_FP16, what);
            free(out);
            ab_cuda_close(g);
            ab_layout_free(&l);
            tprob_free(&t);
        }
}

/* Every method that declares AB_GPU, through the sweep's GPU calls. */
Test(gpu, registry_methods_match_reference)
{
    NEED_GPU();
    int tested = 0, unsupported = 0;
    for (int mi = 0; mi < ab_method_count; mi++) {
        const ab_method *m = ab_method_at(mi);
        if (!(m->devices & AB_GPU)) continue;
        for (int causal = 0; causal < 2; causal++) {
            tprob t;
            tprob_make(&t, 2, 640, 64, causal, 77 + mi);
            ab_params prm;
            ab_params_defaults(m->params, AB_MAX_PARAMS, &prm);
            ab_instance in;
            cr_assert_eq(ab_instance_create(&in, m, &prm, &t.pb.s), AB_OK, "%s: init: %s", m->name,
                         ab_instance_error(&in));
            ab_cuda *g = open_or_fail(&t.pb, AB_CUDA_FP16);
            ab_layout l;
            ab_layout_init(&l, &t.pb.s, 64, 64);
            double sm, cm, rm;
            char err[256] = "";
            int rc = ab_gpu_select_run(g, &in, &t.pb, 64, 64, &l, &sm, &cm, &rm, err, sizeof err);
            if (rc == AB_EUNSUPPORTED) { /* recorded `unsupported` in a sweep: nothing to compare */
                cr_log_info("%s causal=%d: unsupported: %s", m->name, causal, err);
                unsupported++;
            } else {
                cr_assert_eq(rc, AB_OK, "%s: %s", m->name, err);
                if (ab_gpu_path_of(m) == AB_GPU_SEL_DEVICE) {
                    ab_layout_free(&l);
                    ab_layout_init(&l, &t.pb.s, 64, 64);
                    cr_assert_eq(ab_gpu_layout_from_device(g, &l, err, sizeof err), AB_OK, "%s: %s", m->name,
                                 err);
                }
                float *out = malloc(sizeof(float) * 2 * 640 * 64);
                cr_assert(out);
                cr_assert_eq(ab_cuda_download_out(g, out), AB_OK);
                check_rows(&t.pb, l.kind == AB_LAYOUT_DENSE ? NULL : &l, out, TOL_FP16, m->name);
                cr_assert(sm >= 0 && cm >= 0 && rm > 0, "%s: timings %g %g %g", m->name, sm, cm, rm);
                free(out);
                tested++;
            }
            ab_layout_free(&l);
            ab_cuda_close(g);
            ab_instance_destroy(&in);
            tprob_free(&t);
        }
    }
    cr_log_info("registry: %d (method, mask) pairs matched the reference on the GPU, %d unsupported", tested,
                unsupported);
    cr_assert(tested > 0, "no method declares AB_GPU");
}

/* The device-built window layout keeps exactly the CPU selector's pairs. */
Test(gpu, window_device_layout_equals_cpu)
{
    NEED_GPU();
    const ab_method *m = ab_method_find("window");
    cr_assert(m);
    static const double windows[] = { 1, 100, 256, 1000 };
    for (int causal = 0; causal < 2; causal++)
        for (size_t wi = 0; wi < sizeof windows / sizeof *windows; wi++) {
            tprob t;
            tprob_make(&t, 2, 600, 64, causal, 5);
            ab_params prm;
            ab_params_defaults(m->params, AB_MAX_PARAMS, &prm);
            prm.v[0] = windows[wi];
            ab_instance in;
            cr_assert_eq(ab_instance_create(&in, m, &prm, &t.pb.s), AB_OK);
            ab_layout cpu, dev;
            ab_layout_init(&cpu, &t.pb.s, 64, 64);
            cr_assert_eq(ab_instance_select(&in, &t.pb, &cpu), AB_OK);
            cr_assert_eq(ab_layout_finalize(&cpu), AB_OK);
            ab_cuda *g = open_or_fail(&t.pb, AB_CUDA_FP16);
            cr_assert_eq(ab_cuda_select_window(g, 64, 64, (int)prm.v[0], (int)prm.v[1]), AB_OK, "%s",
                         ab_cuda_error(g));
            ab_layout_init(&dev, &t.pb.s, 64, 64);
            char err[256];
            cr_assert_eq(ab_gpu_layout_from_device(g, &dev, err, sizeof err), AB_OK, "%s", err);
            const int rows = 2 * cpu.n_qblocks;
            for (int r = 0; r <= rows; r++) cr_assert_eq(cpu.blk_ptr[r], dev.blk_ptr[r], "row pointer %d", r);
            for (int64_t p = 0; p < cpu.blk_ptr[rows]; p++) cr_assert_eq(cpu.blk_idx[p], dev.blk_idx[p]);
            ab_layout_free(&cpu);
            ab_layout_free(&dev);
            ab_cuda_close(g);
            ab_instance_destroy(&in);
            tprob_free(&t);
        }
}

/* The device oracle keeps as many blocks per row as the CPU oracle and
 * (fp32 vs fp64 ranking aside) nearly the same ones. */
Test(gpu, oracle_device_layout_close_to_cpu)
{
    NEED_GPU();
    const ab_method *m = ab_method_find("oracle_topk_block");
    cr_assert(m);
    tprob t;
    tprob_make(&t, 2, 1024, 64, 1, 11);
    ab_params prm;
    ab_params_defaults(m->params, AB_MAX_PARAMS, &prm);
    prm.v[0] = 3.5;
    ab_instance in;
    cr_assert_eq(ab_instance_create(&in, m, &prm, &t.pb.s), AB_OK);
    ab_layout cpu, dev;
    ab_layout_init(&cpu, &t.pb.s, 64, 64);
    cr_assert_eq(ab_instance_select(&in, &t.pb, &cpu), AB_OK);
    cr_assert_eq(ab_layout_finalize(&cpu), AB_OK);
    ab_cuda *g = open_or_fail(&t.pb, AB_CUDA_FP16);
    cr_assert_eq(ab_cuda_select_oracle_topk(g, 64, 64, prm.v[0]), AB_OK, "%s", ab_cuda_error(g));
    ab_layout_init(&dev, &t.pb.s, 64, 64);
    char err[256];
    cr_assert_eq(ab_gpu_layout_from_device(g, &dev, err, sizeof err), AB_OK, "%s", err);
    const int rows = 2 * cpu.n_qblocks;
    int64_t same = 0;
    for (int r = 0; r < rows; r++) {
        cr_assert_eq(cpu.blk_ptr[r + 1] - cpu.blk_ptr[r], dev.blk_ptr[r + 1] - dev.blk_ptr[r],
                     "row %d: %lld blocks on the CPU, %lld on the device", r,
                     (long long)(cpu.blk_ptr[r + 1] - cpu.blk_ptr[r]),
                     (long long)(dev.blk_ptr[r + 1] - dev.blk_ptr[r]));
        for (int64_t p = cpu.blk_ptr[r]; p < cpu.blk_ptr[r + 1]; p++)
            for (int64_t q = dev.blk_ptr[r]; q < dev.blk_ptr[r + 1]; q++)
                same += cpu.blk_idx[p] == dev.blk_idx[q];
    }
    cr_assert(same >= 0.95 * (double)cpu.blk_ptr[rows], "only %lld of %lld blocks agree", (long long)same,
              (long long)cpu.blk_ptr[rows]);
    ab_layout_free(&cpu);
    ab_layout_free(&dev);
    ab_cuda_close(g);
    ab_instance_destroy(&in);
    tprob_free(&t);
}

Test(gpu, unsupported_head_dim_says_so)
{
    NEED_GPU();
    ab_shape s = { 1, 128, 96, 1, 0.1f, NULL, 0, 1, AB_PREFILL };
    ab_cuda *g = NULL;
    char err[256] = "";
    cr_assert_eq(ab_cuda_open(&g, &s, AB_CUDA_FP16, err, sizeof err), AB_EUNSUPPORTED);
    cr_assert(g == NULL && err[0]);
}
