/* needle.c — the `needle` task (docs/spec/TASKS.md §3): one planted key in the
 * synthetic haystack, retrieved by the last R query rows. The Q/K/V-level
 * analogue of needle-in-a-haystack (Kamradt 2023) and RULER's single needle
 * (Hsieh et al. 2024, arXiv:2404.06654).
 *
 * The needle sits at depth in the keys the query rows may see under the
 * base mask (datasets/gen/plant.h, ab_plant_window): p = floor(depth * (N - R
 * - 1)) under causal or full; a query row that cannot see it is no valid
 * trial and is left out of the answer. Per head a random unit
 * direction e in the free band (the last needle_dims dims, capped at
 * max(2, d/8), zero in the
 * haystack): k_p += lambda e, and query row r gets q_r += lambda_r e with
 * lambda_r chosen so that the planted logit q_r.k_p/sqrt(d) is exactly
 * `margin` nats above the log-partition of the rest of row r (the haystack's
 * own part of q_r.k_p is measured and made up for). docs/spec/TASKS.md's estimate of
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

#include "datasets/gen/haystack.h"
#include "datasets/gen/plant.h"
#include "datasets/gen/rng.h"
#include "attnbench.h"

enum { /* indices of the needle's own params, after the haystack's */
       P_MARGIN = AB_HAYSTACK_NPARAMS,
       P_NCODES,
       P_FLOOR,
       P_ROWS,
       P_DIMS,
       P_COUNT
};

enum { PURPOSE_NEEDLE_DIR = AB_PURPOSE_TASK, PURPOSE_NEEDLE_CODE };

static int needle_generate(const ab_task_input *in, float *q, float *k, float *v, ab_answer *ans)
{
    if (!in || !q || !k || !v || !ans) return AB_EINVAL;
    const ab_params *p = in->p;
    const ab_shape *s = &in->s;
    const uint64_t seed = in->seed;
    const double depth = in->depth;
    if (!p || p->n < P_COUNT) {
        ab_set_error(in, "needle: expected %d parameters", P_COUNT);
        return AB_EINVAL;
    }
    memset(ans, 0, sizeof *ans);
    ab_haystack_cfg cfg;
    int rc = ab_haystack_cfg_from_params(p, 0, &cfg);
    if (rc != AB_OK) return rc;
    const double margin = p->v[P_MARGIN];
    const int C = (int)lround(p->v[P_NCODES]);
    const double floor_frac = p->v[P_FLOOR];
    const int R = (int)lround(p->v[P_ROWS]);
    const int nb_param = (int)lround(p->v[P_DIMS]);
    const int H = s->heads, N = s->seq_len, d = s->head_dim;
    if (C < 1 || R < 1 || nb_param < 1 || N < R + 1 || !(depth >= 0.0 && depth <= 1.0)) {
        ab_set_error(in, "needle: needs N >= query_rows + 1 = %d (N = %d) and depth in [0, 1]", R + 1, N);
        return AB_EINVAL;
    }

    /* Small head dims: cap the band at max(2, d/8) so the haystack keeps
     * enough noise dimensions (a 1-dim noise band gives heavy-tailed logits
     * that concentrate mass on single keys; decoding without the needle
     * then sometimes clears decode_floor). d = 64 keeps the default 8. */
    const int nb_cap = d / 8 > 2 ? d / 8 : 2;
    const int nb = nb_param < nb_cap ? nb_param : nb_cap;
    cfg.free_dims = nb;
    const ab_rng r = { .seed = seed, .stream = ab_rng_stream_id("needle") };
    ab_mask mk;
    rc = ab_plant_mask(in, "needle", &mk);
    if (rc != AB_OK) return rc;
    char why[200] = "";
    rc = ab_haystack_check(&cfg, s, why, sizeof why);
    if (rc == AB_OK) rc = ab_haystack_generate(&cfg, s, r, q, k, v);
    if (rc != AB_OK) {
        ab_set_error(in, "needle: %s", why[0] ? why : "haystack generation failed");
        return rc;
    }

    /* where the needle may sit: the keys the valid query rows [ra, rb) see */
    ab_plant_window w;
    if (ab_plant_window_find(&mk, N - R, N, 1, &w) != AB_OK) return AB_ENOMEM;
    if (w.n == 0) return ab_plant_no_window(in, "needle", &mk, N - R, N, 1, "the needle");
    const int ra = w.a, nv = w.b - w.a; /* valid rows ra + t, t < nv */
    const int pos = w.keys[(int)floor(depth * (double)(w.n - 1))];
    ab_plant_window_free(&w);

    const int n = H * nv;
    ans->head = malloc((size_t)n * sizeof(int));                   /* [n] */
    ans->row = malloc((size_t)n * sizeof(int));                    /* [n] */
    ans->code = malloc((size_t)n * sizeof(int));                   /* [n] */
    ans->key_pos = malloc((size_t)n * sizeof(int));                /* [n] */
    ans->codebook = malloc((size_t)C * (size_t)d * sizeof(float)); /* [C][d] */
    double *e = malloc((size_t)d * sizeof(double));                /* [d] scratch */
    double *tgt = malloc(2 * (size_t)nv * sizeof(double));         /* [2][nv] */
    if (!ans->head || !ans->row || !ans->code || !ans->key_pos || !ans->codebook || !e || !tgt) {
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
        ab_rng_unit_band(r, AB_RNG_ALL_HEADS, (uint32_t)c, AB_PURPOSE_CODEBOOK, d, 0, d, e);
        for (int m = 0; m < d; m++) ans->codebook[(size_t)c * d + m] = (float)(sd * e[m]);
    }

    /* Planted logits: margin above each query row's haystack log-partition
     * over the keys it may see. */
    const double floor_lz = ab_plant_lz_floor(ab_plant_context(&mk, ra, ra + nv), cfg.temperature);
    const int b0 = d - nb; /* the free band */

    for (int h = 0; h < H; h++) {
        ab_rng_unit_band(r, (uint32_t)h, 0, PURPOSE_NEEDLE_DIR, d, b0, nb, e);
        const int y = (int)ab_rng_below(r, (uint32_t)h, 0, PURPOSE_NEEDLE_CODE, C);
        float *kp = k + ((size_t)h * N + pos) * d; /* [d] */
        float *vp = v + ((size_t)h * N + pos) * d; /* [d] */
        /* target dot products T[t] = (margin + lnZ_t) sqrt(d) and the
         * haystack's part hay[t] of q_r.k_p (the band of q_r is still zero) */
        double *T = tgt, *hay = tgt + nv;
#pragma omp parallel for schedule(static)
        for (int t = 0; t < nv; t++) {
            const int row = ra + t;
            const float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            int j0, j1;
            ab_mask_span(&mk, row, &j0, &j1);
            double mx = -INFINITY, sum = 0.0; /* online log-sum-exp */
            for (int j = j0; j < j1; j++) {
                if (!mk.def->interval && !ab_mask_allows(&mk, row, j)) continue;
                const float *kj = k + ((size_t)h * N + j) * d; /* [d] */
                double dot = 0.0;
                for (int m = 0; m < d; m++) dot += (double)qr[m] * kj[m];
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
            if (lz < floor_lz) lz = floor_lz;
            T[t] = (margin + lz) * sd;
        }
        double tmean = 0.0;
        for (int t = 0; t < nv; t++) tmean += T[t] / nv;
        const double lambda = sqrt(tmean > sd ? tmean : sd);

        for (int m = b0; m < d; m++) kp[m] = (float)((double)kp[m] + lambda * e[m]);
        memcpy(vp, ans->codebook + (size_t)y * d, (size_t)d * sizeof(float));
        for (int t = 0; t < nv; t++) {
            const int row = ra + t;
            float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            double lam_r = (T[t] - hay[t]) / lambda;
            if (lam_r < 0.0) lam_r = 0.0;
            for (int m = b0; m < d; m++) qr[m] = (float)((double)qr[m] + lam_r * e[m]);
            const int a = h * nv + t;
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
