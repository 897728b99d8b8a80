/* joint_recall.c — the `joint_recall` task (docs/spec/TASKS.md §3), the joint
 * recall task of the HAX paper ("Overcoming Long-Context Limitations of
 * State-Space Models via Context-Dependent Sparse Attention", 2025) at the
 * Q/K/V level. Associative recall asks for the value of a key; joint recall
 * asks for the value of a key *in a given context*.
 *
 * The prefix [0, N - R) is cut into C equal contexts; every key of context c
 * carries lambda u_c. P key directions e_1..e_P each occur once in every
 * context at a seeded position, occurrence (p, c) carrying lambda e_p and its
 * own value code y_{p,c} (distinct over the contexts of a key and over the
 * keys of a context). The
 * directions are P + C orthonormal vectors of the free band (a seeded
 * rotation per head), so a query q_r = a_r (e_p* + u_c*) gives, on top of
 * the haystack, J_r to the joint match (p*, c*) and J_r / 2 both to the same
 * key in other contexts and to every other token of context c*. J_r solves
 *     J_r + hay_r(j*) = margin + ln(Z0 + S e^{J_r/2})
 * (Z0: haystack partition of the keys that get no boost; S: of those that
 * get J_r/2), a quadratic in e^{J_r/2}: the joint match is `margin` nats
 * above everything else, including the boosted context. Multi-query: the
 * last R rows ask R distinct (p, c) pairs (seeded per head). Accuracy = rows
 * decoding y_{p*,c*}. `depth` is not used (the pairs are spread over the
 * whole prefix).
 *
 * Why it defeats block mean-pooling: every block of context c* has its mean
 * logit raised by J/2, the block holding the joint match only by another
 * J / (2 block_k); a pooled score under a tight budget keeps some blocks of
 * c* and drops the joint one, while exact token top-k finds it.
 *
 * Base masks (datasets/gen/plant.h): the contexts cut the keys every valid query
 * row may see (the prefix [0, N - R) under causal or full; the window of a
 * sliding mask, the last document's part before the queries, ...), so
 * every asked pair is visible; Z0 and S run over each row's own visible
 * keys. Query rows that share no range of contexts * keys keys are no
 * valid trial; none left: AB_EUNSUPPORTED.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/gen/haystack.h"
#include "datasets/gen/plant.h"
#include "datasets/gen/rng.h"
#include "attnbench.h"

enum { /* the task's own params, after the haystack's */
       P_MARGIN = AB_HAYSTACK_NPARAMS,
       P_NCODES,
       P_FLOOR,
       P_ROWS,
       P_CONTEXTS,
       P_KEYS,
       P_COUNT
};

enum { PURPOSE_DIR = AB_PURPOSE_TASK, PURPOSE_POS, PURPOSE_CODE, PURPOSE_PAIR };

static int jr_check_in(const ab_task_input *in, ab_haystack_cfg *cfg)
{
    const ab_params *p = in->p;
    if (!p || p->n < P_COUNT) {
        ab_set_error(in, "joint_recall: expected %d parameters", P_COUNT);
        return AB_EINVAL;
    }
    int rc = ab_haystack_cfg_from_params(p, 0, cfg);
    if (rc != AB_OK) return rc;
    const int Cd = (int)lround(p->v[P_NCODES]);
    const int R = (int)lround(p->v[P_ROWS]);
    const int C = (int)lround(p->v[P_CONTEXTS]);
    const int P = (int)lround(p->v[P_KEYS]);
    const int N = in->s.seq_len;
    if (C < 1 || P < 1 || R < 1 || Cd < C || Cd < P || Cd < 2) {
        ab_set_error(in,
                     "joint_recall: needs contexts >= 1, keys >= 1, query_rows >= 1 and "
                     "n_codes >= max(2, contexts, keys) (n_codes = %d)",
                     Cd);
        return AB_EINVAL;
    }
    if (R > P * C) {
        ab_set_error(in,
                     "joint_recall: query_rows = %d asks more distinct (key, context) "
                     "pairs than keys * contexts = %d",
                     R, P * C);
        return AB_EINVAL;
    }
    if (N - R < C * P) {
        ab_set_error(in, "joint_recall: needs N >= query_rows + contexts * keys = %d (N = %d)", R + C * P, N);
        return AB_EINVAL;
    }
    cfg->free_dims = P + C;
    char why[200] = "";
    rc = ab_haystack_check(cfg, &in->s, why, sizeof why);
    if (rc != AB_OK) {
        ab_set_error(in, "joint_recall: %s (the key band needs keys + contexts = %d dims)",
                     why[0] ? why : "bad haystack knobs", P + C);
        return rc;
    }
    return AB_OK;
}

static int jr_check(const ab_task_input *in)
{
    ab_haystack_cfg cfg;
    return jr_check_in(in, &cfg);
}

/* Start of context c of C over a prefix of M tokens. */
static int ctx_lo(int c, int C, int M) { return (int)((int64_t)c * M / C); }

static int jr_generate(const ab_task_input *in, float *q, float *k, float *v, ab_answer *ans)
{
    if (!in || !q || !k || !v || !ans) return AB_EINVAL;
    memset(ans, 0, sizeof *ans);
    ab_haystack_cfg cfg;
    int rc = jr_check_in(in, &cfg);
    if (rc != AB_OK) return rc;
    const ab_params *p = in->p;
    const ab_shape *s = &in->s;
    const double margin = p->v[P_MARGIN];
    const int Cd = (int)lround(p->v[P_NCODES]);
    const int R = (int)lround(p->v[P_ROWS]);
    const int C = (int)lround(p->v[P_CONTEXTS]);
    const int P = (int)lround(p->v[P_KEYS]);
    const int nb = P + C;
    const int H = s->heads, N = s->seq_len, d = s->head_dim;
    const ab_rng r = { .seed = in->seed, .stream = ab_rng_stream_id("joint_recall") };
    ab_mask mk;
    rc = ab_plant_mask(in, "joint_recall", &mk);
    if (rc != AB_OK) return rc;
    rc = ab_haystack_generate(&cfg, s, r, q, k, v);
    if (rc != AB_OK) {
        ab_set_error(in, "joint_recall: haystack generation failed");
        return rc;
    }
    /* the contexts cut wk[0, M): the keys the valid query rows [ra, ra + nv)
     * all see (wk[i] = i, M = N - R under causal or full) */
    ab_plant_window win;
    if (ab_plant_window_find(&mk, N - R, N, C * P, &win) != AB_OK) return AB_ENOMEM;
    if (win.n == 0)
        return ab_plant_no_window(in, "joint_recall", &mk, N - R, N, C * P, "contexts * keys occurrences");
    const int M = win.n, ra = win.a, nv = win.b - win.a, t0 = ra - (N - R);
    const int *wk = win.keys; /* [M] */
    rc = ab_plant_answer_alloc(ans, r, H * nv, 0, Cd, d, p->v[P_FLOOR]);
    if (rc != AB_OK) {
        ab_plant_window_free(&win);
        return rc;
    }

    double *dir = malloc((size_t)nb * (size_t)d * sizeof(double)); /* [P+C][d]: e_p, u_c */
    int *pos = malloc((size_t)P * (size_t)C * sizeof(int));        /* [P][C] */
    int *code = malloc((size_t)P * (size_t)C * sizeof(int));       /* [P][C] */
    int *pairs = malloc((size_t)P * (size_t)C * sizeof(int));      /* [P*C] shuffled p*C + c */
    int *perm = malloc((size_t)Cd * sizeof(int));                  /* [n_codes] */
    double *half = malloc((size_t)R * sizeof(double));             /* [R] J_r / 2 */
    int *ctx = malloc((size_t)N * sizeof(int));                    /* [N] context of a key, -1: none */
    if (!dir || !pos || !code || !pairs || !perm || !half || !ctx) {
        free(dir);
        free(pos);
        free(code);
        free(pairs);
        free(perm);
        free(half);
        free(ctx);
        ab_plant_window_free(&win);
        ab_answer_free(ans);
        return AB_ENOMEM;
    }
    for (int j = 0; j < N; j++) ctx[j] = -1;
    for (int c = 0; c < C; c++)
        for (int i = ctx_lo(c, C, M); i < ctx_lo(c + 1, C, M); i++) ctx[wk[i]] = c;
    const double sd = sqrt((double)d);
    const double em = exp(margin);
    const int b0 = d - nb;

    for (int h = 0; h < H; h++) {
        const uint32_t hu = (uint32_t)h;
        /* occurrence positions: P distinct positions inside each context */
        for (int c = 0; c < C; c++) {
            const int lo = ctx_lo(c, C, M), len = ctx_lo(c + 1, C, M) - lo;
            for (int a = 0; a < P; a++) {
                for (uint32_t att = 0;; att++) {
                    int x = wk[lo + (int)ab_rng_below(r, hu, (uint32_t)(a * C + c) + att * 65536u,
                                                      PURPOSE_POS, len)];
                    int dup = 0;
                    for (int b = 0; b < a; b++) dup |= pos[b * C + c] == x;
                    if (!dup) {
                        pos[a * C + c] = x;
                        break;
                    }
                }
            }
        }
        /* codes: y_{p,c} = sigma((p + c) mod n_codes) for a seeded permutation
         * sigma: distinct over the contexts of a key and over the keys of a
         * context, so without the joint match no boosted token holds its code */
        for (int t = 0; t < Cd; t++) perm[t] = t;
        for (int t = 0; t < Cd - 1; t++) {
            int u = t + (int)ab_rng_below(r, hu, (uint32_t)t, PURPOSE_CODE, Cd - t);
            int tmp = perm[t];
            perm[t] = perm[u];
            perm[u] = tmp;
        }
        for (int a = 0; a < P; a++)
            for (int c = 0; c < C; c++) code[a * C + c] = perm[(a + c) % Cd];
        /* the asked pairs: a seeded partial Fisher-Yates shuffle */
        for (int t = 0; t < P * C; t++) pairs[t] = t;
        for (int t = 0; t < R; t++) {
            int u = t + (int)ab_rng_below(r, hu, (uint32_t)t, PURPOSE_PAIR, P * C - t);
            int tmp = pairs[t];
            pairs[t] = pairs[u];
            pairs[u] = tmp;
        }

        const float *kh = k + (size_t)h * N * d; /* (seq_len, head_dim) */
        /* J_r / 2 per valid query row from the haystack logits (before
         * planting), over the keys the row may see: [j0, j1), filtered by
         * allows() for a non-interval mask */
#pragma omp parallel for schedule(static)
        for (int t = t0; t < t0 + nv; t++) {
            const int ps = pairs[t] / C, cs = pairs[t] % C;
            const int row = N - R + t, js = pos[ps * C + cs];
            const float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            const int all = mk.def->interval;
            int j0, j1;
            ab_mask_span(&mk, row, &j0, &j1);
            const double isd = 1.0 / sd;
            /* one pass: Zall (all but j*), Zc (context c* but j*), Zk (p* elsewhere) */
            double mx = -INFINITY;
            for (int j = j0; j < j1; j++) {
                if (!all && !ab_mask_allows(&mk, row, j)) continue;
                double x = ab_plant_dot(qr, kh + (size_t)j * d, d) * isd;
                if (j != js && x > mx) mx = x;
            }
            double zall = 0.0, zc = 0.0, zk = 0.0;
            for (int j = j0; j < j1; j++) {
                if (j == js || (!all && !ab_mask_allows(&mk, row, j))) continue;
                double w = exp(ab_plant_dot(qr, kh + (size_t)j * d, d) * isd - mx);
                zall += w;
                if (ctx[j] == cs) zc += w;
            }
            for (int c = 0; c < C; c++)
                if (c != cs) zk += exp(ab_plant_dot(qr, kh + (size_t)pos[ps * C + c] * d, d) * isd - mx);
            const double S = zc + zk;
            double z0 = zall - S;
            if (z0 < 0.0) z0 = 0.0;
            /* e^{hay} x^2 = e^m (Z0 + S x) with x = e^{J/2}; scaling hay,
             * Z0 and S by e^{-mx} leaves the root unchanged */
            const double hay = ab_plant_dot(qr, kh + (size_t)js * d, d) * isd - mx;
            const double A = exp(hay), B = em * S, Cc = em * z0;
            const double xs = (B + sqrt(B * B + 4.0 * A * Cc)) / (2.0 * A);
            double hj = log(xs);
            if (!(hj >= 0.0)) hj = 0.0;
            half[t] = hj;
        }
        double hmean = 0.0;
        for (int t = t0; t < t0 + nv; t++) hmean += half[t] / nv;
        const double lambda = sqrt(hmean * sd > sd ? hmean * sd : sd);

        ab_plant_orthonormal(r, hu, 0, PURPOSE_DIR, d, b0, nb, nb, dir);
        /* every prefix key carries its context direction */
        for (int c = 0; c < C; c++) {
            const double *u = dir + (size_t)(P + c) * d; /* [d] */
            for (int i = ctx_lo(c, C, M); i < ctx_lo(c + 1, C, M); i++) {
                float *kj = k + ((size_t)h * N + wk[i]) * d; /* [d] */
                for (int m = b0; m < d; m++) kj[m] = (float)((double)kj[m] + lambda * u[m]);
            }
        }
        /* the occurrences: key direction and value code */
        for (int a = 0; a < P; a++) {
            const double *e = dir + (size_t)a * d; /* [d] */
            for (int c = 0; c < C; c++) {
                const int j = pos[a * C + c];
                float *kj = k + ((size_t)h * N + j) * d; /* [d] */
                for (int m = b0; m < d; m++) kj[m] = (float)((double)kj[m] + lambda * e[m]);
                memcpy(v + ((size_t)h * N + j) * d, ans->codebook + (size_t)code[a * C + c] * d,
                       (size_t)d * sizeof(float));
            }
        }
        /* the queries */
        for (int t = t0; t < t0 + nv; t++) {
            const int ps = pairs[t] / C, cs = pairs[t] % C, row = N - R + t;
            const double *e = dir + (size_t)ps * d, *u = dir + (size_t)(P + cs) * d;
            const double a_r = half[t] * sd / lambda;
            float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            for (int m = b0; m < d; m++) qr[m] = (float)((double)qr[m] + a_r * (e[m] + u[m]));
            const int a = h * nv + t - t0;
            ans->head[a] = h;
            ans->row[a] = row;
            ans->code[a] = code[ps * C + cs];
            ans->key_pos[a] = pos[ps * C + cs];
        }
    }
    free(dir);
    free(pos);
    free(code);
    free(pairs);
    free(perm);
    free(half);
    free(ctx);
    ab_plant_window_free(&win);
    return AB_OK;
}

const ab_task joint_recall_task = {
    .abi = AB_ABI_VERSION,
    .name = "joint_recall",
    .summary = "the value of a key in a given context: C contexts x P keys, R rows ask "
               "R (key, context) pairs (HAX joint recall)",
    .params = {
        AB_HAYSTACK_PARAMS,
        {"margin", 3.0, 0.0, 30.0, 0, "joint match's logit above everything else (nats)"},
        {"n_codes", 16, 2, 4096, 1, "codebook size (>= contexts, >= keys)"},
        {"decode_floor", 0.25, 0.0, 1.0, 0, "min winning projection / |code|^2"},
        {"query_rows", 16, 1, 4096, 1, "query rows R (the last R rows), distinct pairs"},
        {"contexts", 8, 1, 1024, 1, "contexts C (equal segments of the prefix)"},
        {"keys", 4, 1, 1024, 1, "key directions P, each once per context"},
        {NULL, 0, 0, 0, 0, NULL},
    },
    .generate = jr_generate,
    .check = jr_check,
};

AB_REGISTER_TASK(joint_recall_task)
