/* task_needle.c — the `needle` task (TASKS.md §3): one planted key in the
 * synthetic haystack, retrieved by the last R query rows. The Q/K/V-level
 * analogue of needle-in-a-haystack (Kamradt 2023) and RULER's single needle
 * (Hsieh et al. 2024, arXiv:2404.06654).
 *
 * The needle sits at p = floor(depth * (N - R - 1)). Per head a random unit
 * direction e in the free band (the last needle_dims dims, capped at
 * max(2, d/8), zero in the
 * haystack): k_p += lambda e, and query row r gets q_r += lambda_r e with
 * lambda_r chosen so that the planted logit q_r.k_p/sqrt(d) is exactly
 * `margin` nats above the log-partition of the rest of row r (the haystack's
 * own part of q_r.k_p is measured and made up for). TASKS.md's estimate of
 * that log-partition, ln N + tau^2/2, counts only the noise band; with the
 * default sinks/local/slash/topic knobs the true value is several nats
 * higher (about 12.5 at N = 512 against 6.7), so the exact log-sum-exp of the
 * row's haystack logits is used (never less than ln N + tau^2/2). Dense
 * attention then puts 1/(1 + e^-margin) of every query row's mass on the
 * needle, at every length. The needle's value is its answer code y (a
 * codebook of n_codes random unit vectors scaled by sqrt(d), shared by heads).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/haystack.h"
#include "datasets/rng.h"
#include "datasets/task.h"

enum { /* indices of the needle's own params, after the haystack's */
    P_MARGIN = AB_HAYSTACK_NPARAMS,
    P_NCODES,
    P_FLOOR,
    P_ROWS,
    P_DIMS,
    P_COUNT
};

enum { PURPOSE_NEEDLE_DIR = AB_PURPOSE_TASK, PURPOSE_NEEDLE_CODE };

static int needle_generate(const ab_task_input *in, float *q, float *k, float *v,
                           ab_answer *ans)
{
    if (!in || !q || !k || !v || !ans)
        return AB_EINVAL;
    const ab_params *p = in->p;
    const ab_shape *s = &in->s;
    const uint64_t seed = in->seed;
    const double depth = in->depth;
    if (!p || p->n < P_COUNT) {
        ab_task_errorf(in, "needle: expected %d parameters", P_COUNT);
        return AB_EINVAL;
    }
    memset(ans, 0, sizeof *ans);
    ab_haystack_cfg cfg;
    int rc = ab_haystack_cfg_from_params(p, 0, &cfg);
    if (rc != AB_OK)
        return rc;
    const double margin = p->v[P_MARGIN];
    const int C = (int)lround(p->v[P_NCODES]);
    const double floor_frac = p->v[P_FLOOR];
    const int R = (int)lround(p->v[P_ROWS]);
    const int nb_param = (int)lround(p->v[P_DIMS]);
    const int H = s->heads, N = s->seq_len, d = s->head_dim;
    if (C < 1 || R < 1 || nb_param < 1 || N < R + 1 || !(depth >= 0.0 && depth <= 1.0)) {
        ab_task_errorf(in, "needle: needs N >= query_rows + 1 = %d (N = %d) and depth in [0, 1]", R + 1, N);
        return AB_EINVAL;
    }

    /* Small head dims: cap the band at max(2, d/8) so the haystack keeps
     * enough noise dimensions (a 1-dim noise band gives heavy-tailed logits
     * that concentrate mass on single keys; decoding without the needle
     * then sometimes clears decode_floor). d = 64 keeps the default 8. */
    const int nb_cap = d / 8 > 2 ? d / 8 : 2;
    const int nb = nb_param < nb_cap ? nb_param : nb_cap;
    cfg.free_dims = nb;
    const ab_rng r = {.seed = seed, .stream = ab_rng_stream_id("needle")};
    char why[200] = "";
    rc = ab_haystack_check(&cfg, s, why, sizeof why);
    if (rc == AB_OK) rc = ab_haystack_generate(&cfg, s, r, q, k, v);
    if (rc != AB_OK) {
        ab_task_errorf(in, "needle: %s", why[0] ? why : "haystack generation failed");
        return rc;
    }

    const int n = H * R;
    ans->head = malloc((size_t)n * sizeof(int));    /* [n] */
    ans->row = malloc((size_t)n * sizeof(int));     /* [n] */
    ans->code = malloc((size_t)n * sizeof(int));    /* [n] */
    ans->key_pos = malloc((size_t)n * sizeof(int)); /* [n] */
    ans->codebook = malloc((size_t)C * (size_t)d * sizeof(float)); /* [C][d] */
    double *e = malloc((size_t)d * sizeof(double)); /* [d] scratch */
    double *tgt = malloc(2 * (size_t)R * sizeof(double)); /* [2][R] */
    if (!ans->head || !ans->row || !ans->code || !ans->key_pos ||
        !ans->codebook || !e || !tgt) {
        free(e);
        free(tgt);
        ab_answer_free(ans);
        return AB_ENOMEM;
    }
    ans->n = n;
    ans->group = NULL;
    ans->n_groups = n;
    ans->n_codes = C;
    ans->head_dim = d;
    ans->decode_floor = floor_frac;

    /* Codebook: random unit vectors scaled by sqrt(d), shared by all heads. */
    const double sd = sqrt((double)d);
    for (int c = 0; c < C; c++) {
        ab_rng_unit_band(r, AB_RNG_ALL_HEADS, (uint32_t)c, AB_PURPOSE_CODEBOOK,
                         d, 0, d, e);
        for (int m = 0; m < d; m++)
            ans->codebook[(size_t)c * d + m] = (float)(sd * e[m]);
    }

    /* Planted logits: margin above each query row's haystack log-partition. */
    const double floor_lz = log((double)N) + 0.5 * cfg.temperature * cfg.temperature;
    const int pos = (int)floor(depth * (double)(N - R - 1));
    const int b0 = d - nb; /* the free band */

    for (int h = 0; h < H; h++) {
        ab_rng_unit_band(r, (uint32_t)h, 0, PURPOSE_NEEDLE_DIR, d, b0, nb, e);
        const int y = (int)ab_rng_below(r, (uint32_t)h, 0, PURPOSE_NEEDLE_CODE, C);
        float *kp = k + ((size_t)h * N + pos) * d; /* [d] */
        float *vp = v + ((size_t)h * N + pos) * d; /* [d] */
        /* target dot products T[t] = (margin + lnZ_t) sqrt(d) and the
         * haystack's part hay[t] of q_r.k_p (the band of q_r is still zero) */
        double *T = tgt, *hay = tgt + R;
#pragma omp parallel for schedule(static)
        for (int t = 0; t < R; t++) {
            const int row = N - R + t;
            const float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            const int last = s->causal ? row : N - 1;
            double mx = -INFINITY, sum = 0.0; /* online log-sum-exp */
            for (int j = 0; j <= last; j++) {
                const float *kj = k + ((size_t)h * N + j) * d; /* [d] */
                double dot = 0.0;
                for (int m = 0; m < d; m++)
                    dot += (double)qr[m] * kj[m];
                if (j == pos) {
                    hay[t] = dot;
                    continue;
                }
                double x = dot / sd;
                if (x > mx) {
                    sum = sum * exp(mx - x) + 1.0;
                    mx = x;
                } else {
                    sum += exp(x - mx);
                }
            }
            double lz = sum > 0.0 ? mx + log(sum) : floor_lz;
            if (lz < floor_lz)
                lz = floor_lz;
            T[t] = (margin + lz) * sd;
        }
        double tmean = 0.0;
        for (int t = 0; t < R; t++)
            tmean += T[t] / R;
        const double lambda = sqrt(tmean > sd ? tmean : sd);

        for (int m = b0; m < d; m++)
            kp[m] = (float)((double)kp[m] + lambda * e[m]);
        memcpy(vp, ans->codebook + (size_t)y * d, (size_t)d * sizeof(float));
        for (int t = 0; t < R; t++) {
            const int row = N - R + t;
            float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            double lam_r = (T[t] - hay[t]) / lambda;
            if (lam_r < 0.0)
                lam_r = 0.0;
            for (int m = b0; m < d; m++)
                qr[m] = (float)((double)qr[m] + lam_r * e[m]);
            const int a = h * R + t;
            ans->head[a] = h;
            ans->row[a] = row;
            ans->code[a] = y;
            ans->key_pos[a] = pos;
        }
    }
    free(tgt);
    free(e);
    return AB_OK;
}

const ab_task needle_task = {
    .abi = AB_ABI_VERSION,
    .name = "needle",
    .summary = "single planted key at a depth, retrieved by the last R rows "
               "(needle-in-a-haystack, RULER)",
    .params = {
        AB_HAYSTACK_PARAMS,
        {"margin", 3.0, 0.0, 30.0, 0, "planted logit above the row's log-partition (nats)"},
        {"n_codes", 16, 2, 4096, 1, "codebook size C"},
        {"decode_floor", 0.25, 0.0, 1.0, 0, "min winning projection / |code|^2"},
        {"query_rows", 16, 1, 4096, 1, "query rows R (the last R rows)"},
        {"needle_dims", 8, 1, 256, 1, "needle key band width (capped at max(2, d/8))"},
        {NULL, 0, 0, 0, 0, NULL},
    },
    .generate = needle_generate,
};

AB_REGISTER_TASK(needle_task)
