/* method_ab.c — one method's select() (or run()) from two builds, old and
 * new, alternated in one process (`make bench-ab`, mk/bench.mk).
 *
 * This host's speed moves by 10-30 % within minutes, so two runs of the
 * suite cannot show a change of a few percent in one method. Here both
 * builds time the same problem (random normal Q, K, V) call after call,
 * the order swapped every pair; the ratio new / old is taken per pair and
 * its median and p10 / p90 reported, with the layouts (select) or the
 * outputs (run) of the two builds compared bit for bit first. The method
 * structs come in as AB_OLD and AB_NEW (the make rule compiles the method's
 * source twice with its registration symbols renamed). The child's malloc
 * settings are the harness's (ab_malloc_keep): freed memory is reused, so
 * the calls do not page-fault their arrays in afresh.
 *
 * usage: method_ab [select|run] N H D PAIRS [KNOB] [causal|full] */
#include "attnbench.h"
#include "datasets/gen/rng.h"
#include "harness/engine/measure.h"
#include "harness/engine/timing.h"
#include "runtime/layout.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const ab_method AB_OLD, AB_NEW;

/* FNV-1a over the layout's block and token lists (finalised) */
static uint64_t layout_hash(const ab_layout *l)
{
    uint64_t h = 1469598103934665603ull;
    const int64_t nr = (int64_t)l->heads * l->n_qblocks;
    for (int pass = 0; pass < 2; pass++) {
        const int64_t *ptr = pass ? l->tok_ptr : l->blk_ptr;
        const int32_t *idx = pass ? l->tok_idx : l->blk_idx;
        if (!ptr) continue;
        for (int64_t e = 0; e < ptr[nr]; e++) h = (h ^ (uint32_t)idx[e]) * 1099511628211ull;
        for (int64_t e = 0; e <= nr; e++) h = (h ^ (uint64_t)ptr[e]) * 1099511628211ull;
    }
    return h;
}

typedef struct side {
    const ab_method *m;
    void *state;
    ab_layout l;
    int have_l;
} side;

static int side_init(side *s, const ab_method *m, const ab_problem *pb, const char *knob)
{
    memset(s, 0, sizeof *s);
    s->m = m;
    ab_params p = { 0 };
    while (m->params[p.n].name) {
        p.v[p.n] = m->params[p.n].def;
        p.n++;
    }
    if (knob && m->density_knob.param >= 0) p.v[m->density_knob.param] = atof(knob);
    s->state = calloc(1, m->state_size ? m->state_size : 1);
    if (!s->state || (m->init && m->init(s->state, &p, &pb->s) != AB_OK)) {
        fprintf(stderr, "method_ab: %s: init failed\n", m->name);
        return -1;
    }
    return 0;
}

/* one select() into a fresh layout (kept in s->l when keep); its seconds */
static double side_select(side *s, const ab_problem *pb, int keep)
{
    const int bq = s->m->block_q ? s->m->block_q : 64, bk = s->m->block_k ? s->m->block_k : bq;
    ab_layout l;
    ab_layout_init(&l, &pb->s, bq, bk);
    const double t0 = 1e-3 * ab_now_ms();
    const int rc = s->m->select(s->state, pb, &l);
    const double t = 1e-3 * ab_now_ms() - t0;
    if (rc != AB_OK) {
        fprintf(stderr, "method_ab: %s: select() returned %d\n", s->m->name, rc);
        exit(1);
    }
    if (keep) {
        ab_layout_finalize(&l);
        s->l = l;
        s->have_l = 1;
    } else {
        ab_layout_free(&l);
    }
    return t;
}

static double side_run(side *s, const ab_problem *pb, float *out)
{
    const double t0 = 1e-3 * ab_now_ms();
    const int rc = s->m->run ? s->m->run(s->state, pb, &s->l, out) : ab_kernel_layout(pb, &s->l, out);
    const double t = 1e-3 * ab_now_ms() - t0;
    if (rc != AB_OK) {
        fprintf(stderr, "method_ab: %s: run() returned %d\n", s->m->name, rc);
        exit(1);
    }
    return t;
}

int main(int argc, char **argv)
{
    if (argc < 6 || (strcmp(argv[1], "select") && strcmp(argv[1], "run"))) {
        fprintf(stderr, "usage: %s select|run N H D PAIRS [KNOB] [causal|full]\n", argv[0]);
        return 2;
    }
    const int run = !strcmp(argv[1], "run"), N = atoi(argv[2]), H = atoi(argv[3]), d = atoi(argv[4]),
              pairs = atoi(argv[5]);
    const char *knob = argc > 6 && strcmp(argv[6], "-") ? argv[6] : NULL;
    const int causal = !(argc > 7 && !strcmp(argv[7], "full"));
    if (N < 1 || H < 1 || d < 1 || pairs < 1) {
        fprintf(stderr, "method_ab: N, H, D and PAIRS must be positive\n");
        return 2;
    }
    ab_malloc_keep();
    const size_t e = (size_t)H * N * d;
    float *q = malloc(e * sizeof *q), *k = malloc(e * sizeof *k), *v = malloc(e * sizeof *v);
    float *out[2] = { malloc(e * sizeof(float)), malloc(e * sizeof(float)) };
    double *r = malloc((size_t)pairs * 3 * sizeof *r);
    if (!q || !k || !v || !out[0] || !out[1] || !r) {
        fprintf(stderr, "method_ab: out of memory\n");
        return 1;
    }
    /* standard normal Q and V from the tasks' counter-based generator
     * (datasets/gen/rng.h), K half Q plus a fixed ripple (some structure
     * for the selectors to find) */
    const ab_rng rng = { 0x5eed, ab_rng_stream_id("method_ab") };
    for (int h = 0; h < H; h++)
        for (int i = 0; i < N; i++) {
            const size_t o = ((size_t)h * N + i) * d;
            ab_rng_normals_f(rng, (uint32_t)h, (uint32_t)i, AB_PURPOSE_NOISE_Q, d, 1.0, q + o);
            ab_rng_normals_f(rng, (uint32_t)h, (uint32_t)i, AB_PURPOSE_VALUE, d, 1.0, v + o);
            for (int c = 0; c < d; c++) k[o + c] = 0.5f * q[o + c] + 0.3f * (float)sin((double)(o + c));
        }
    ab_problem pb;
    memset(&pb, 0, sizeof pb);
    pb.s.heads = H;
    pb.s.seq_len = N;
    pb.s.head_dim = d;
    pb.s.causal = causal;
    pb.s.scale = 1.0f / sqrtf((float)d);
    pb.q = q;
    pb.k = k;
    pb.v = v;
    pb.threads = omp_get_max_threads();
    pb.seed = 1;
    side sd[2];
    if (side_init(&sd[0], &AB_OLD, &pb, knob) || side_init(&sd[1], &AB_NEW, &pb, knob)) return 1;

    /* the untimed (scored) call: layouts compared; run() then uses them */
    pb.timed = 0;
    for (int w = 0; w < 2; w++) side_select(&sd[w], &pb, 1);
    const uint64_t h0 = layout_hash(&sd[0].l), h1 = layout_hash(&sd[1].l);
    printf("layouts: %016llx %016llx (%s)\n", (unsigned long long)h0, (unsigned long long)h1,
           h0 == h1 ? "equal" : "DIFFER");
    int same = h0 == h1;
    pb.timed = 1;
    if (run) {
        for (int w = 0; w < 2; w++) side_run(&sd[w], &pb, out[w]);
        const int eq = !memcmp(out[0], out[1], e * sizeof(float));
        printf("outputs: %s\n", eq ? "equal" : "DIFFER");
        same &= eq;
    }
    const int tty = isatty(2);
    double *rat = r, *ta = r + pairs, *tb = r + 2 * (size_t)pairs;
    for (int i = 0; i < pairs; i++) {
        double t[2];
        for (int u = 0; u < 2; u++) {
            const int w = (i & 1) ? 1 - u : u; /* the order swapped every pair */
            t[w] = run ? side_run(&sd[w], &pb, out[w]) : side_select(&sd[w], &pb, 0);
        }
        rat[i] = t[1] / t[0];
        ta[i] = t[0];
        tb[i] = t[1];
        if (tty) fprintf(stderr, "\rpair %d/%d", i + 1, pairs);
    }
    if (tty) fprintf(stderr, "\n");
    ab_stats sr, sa, sb; /* quantiles as the harness takes them */
    ab_stats_compute(rat, pairs, &sr);
    ab_stats_compute(ta, pairs, &sa);
    ab_stats_compute(tb, pairs, &sb);
    printf("%s %s N=%d H=%d d=%d %s, %d pairs: old %.3f ms, new %.3f ms (medians); new/old median %.3f, p10 "
           "%.3f, p90 %.3f\n",
           AB_NEW.name, run ? "run()" : "select()", N, H, d, causal ? "causal" : "full", pairs,
           1e3 * sa.median, 1e3 * sb.median, sr.median, sr.p10, sr.p90);
    for (int w = 0; w < 2; w++) {
        if (sd[w].have_l) ab_layout_free(&sd[w].l);
        if (sd[w].m->fini) sd[w].m->fini(sd[w].state);
        free(sd[w].state);
    }
    free(q);
    free(k);
    free(v);
    free(out[0]);
    free(out[1]);
    free(r);
    return same ? 0 : 3;
}
