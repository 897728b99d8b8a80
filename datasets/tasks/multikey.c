/* multikey.c — the `multikey` task (docs/spec/TASKS.md §3): RULER's multi-key
 * needle (Hsieh et al. 2024, arXiv:2404.06654) at the Q/K/V level. One true
 * needle plus D distractor needles at other depths; the distractors' key
 * directions are correlated rho with the true one and carry their own codes.
 *
 * Per head, in the free band (the last needle_dims dims, capped at
 * max(2, d/8) like the needle task): a random unit direction e and, per
 * distractor i, e_i = rho e + sqrt(1 - rho^2) f_i with f_i a unit vector
 * orthogonal to e. The true needle at p = floor(depth * (N - R - 1)) gets
 * k_p += lambda e; distractor i at a seeded position p_i != p gets
 * k_{p_i} += lambda e_i; the last R query rows get q_r += lambda_r e with
 * lambda_r set as in the needle task: the needle's logit is `margin` nats
 * above the log-partition of the rest of row r (the haystack, never below
 * ln N + tau^2/2, plus the distractors, whose planted logit is rho times the
 * needle's: a fixed point, solved by iteration). Only the true key reaches
 * the full margin. Values: the needle's value is code y, distractor i's a code
 * y_i != y. Accuracy = rows decoding y. A coarse selector that keeps a
 * distractor's block but not the needle's decodes neither (distractors hold
 * a few percent of the mass) or, with a high rho, the wrong code.
 *
 * Base masks (datasets/gen/plant.h): the needle and the distractors lie in the
 * keys every valid query row may see (the formulas above are under causal
 * or full; depth is the needle's relative position in that range, the
 * distractors are drawn from it, and each row's log-partition runs over
 * its own visible keys). Query rows that share no such range are no valid
 * trial; none left: AB_EUNSUPPORTED.
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
       P_DIMS,
       P_DISTRACT,
       P_RHO,
       P_COUNT
};

enum { PURPOSE_DIR = AB_PURPOSE_TASK, PURPOSE_CODE, PURPOSE_DPOS, PURPOSE_DCODE };

/* Validate the input; on success fill the derived sizes. */
static int mk_check_in(const ab_task_input *in, ab_haystack_cfg *cfg, int *nb_out)
{
    const ab_params *p = in->p;
    if (!p || p->n < P_COUNT) {
        ab_set_error(in, "multikey: expected %d parameters", P_COUNT);
        return AB_EINVAL;
    }
    int rc = ab_haystack_cfg_from_params(p, 0, cfg);
    if (rc != AB_OK) return rc;
    const int C = (int)lround(p->v[P_NCODES]);
    const int R = (int)lround(p->v[P_ROWS]);
    const int D = (int)lround(p->v[P_DISTRACT]);
    const int nb_param = (int)lround(p->v[P_DIMS]);
    const double rho = p->v[P_RHO];
    const int N = in->s.seq_len, d = in->s.head_dim;
    if (C < 2 || R < 1 || D < 0 || nb_param < 2 || !(rho >= 0.0 && rho < 1.0)) {
        ab_set_error(in, "multikey: needs n_codes >= 2, query_rows >= 1, distractors >= 0, "
                         "needle_dims >= 2 and rho in [0, 1)");
        return AB_EINVAL;
    }
    if (N < R + D + 2 || !(in->depth >= 0.0 && in->depth <= 1.0)) {
        ab_set_error(in,
                     "multikey: needs N >= query_rows + distractors + 2 = %d (N = %d) "
                     "and depth in [0, 1]",
                     R + D + 2, N);
        return AB_EINVAL;
    }
    const int nb_cap = d / 8 > 2 ? d / 8 : 2;
    cfg->free_dims = nb_param < nb_cap ? nb_param : nb_cap;
    *nb_out = cfg->free_dims;
    char why[200] = "";
    rc = ab_haystack_check(cfg, &in->s, why, sizeof why);
    if (rc != AB_OK) {
        ab_set_error(in, "multikey: %s", why[0] ? why : "bad haystack knobs");
        return rc;
    }
    return AB_OK;
}

static int mk_check(const ab_task_input *in)
{
    ab_haystack_cfg cfg;
    int nb;
    return mk_check_in(in, &cfg, &nb);
}

static int mk_generate(const ab_task_input *in, float *q, float *k, float *v, ab_answer *ans)
{
    if (!in || !q || !k || !v || !ans) return AB_EINVAL;
    memset(ans, 0, sizeof *ans);
    ab_haystack_cfg cfg;
    int nb;
    int rc = mk_check_in(in, &cfg, &nb);
    if (rc != AB_OK) return rc;
    const ab_params *p = in->p;
    const ab_shape *s = &in->s;
    const double margin = p->v[P_MARGIN];
    const int C = (int)lround(p->v[P_NCODES]);
    const int R = (int)lround(p->v[P_ROWS]);
    const int D = (int)lround(p->v[P_DISTRACT]);
    const double rho = p->v[P_RHO];
    const int H = s->heads, N = s->seq_len, d = s->head_dim;
    const ab_rng r = { .seed = in->seed, .stream = ab_rng_stream_id("multikey") };
    ab_mask mk;
    rc = ab_plant_mask(in, "multikey", &mk);
    if (rc != AB_OK) return rc;
    rc = ab_haystack_generate(&cfg, s, r, q, k, v);
    if (rc != AB_OK) {
        ab_set_error(in, "multikey: haystack generation failed");
        return rc;
    }
    /* the needle and the distractors lie in the keys the valid query rows
     * [ra, ra + nv) all see: wk[0, nk) */
    ab_plant_window w;
    if (ab_plant_window_find(&mk, N - R, N, D + 1, &w) != AB_OK) return AB_ENOMEM;
    if (w.n == 0)
        return ab_plant_no_window(in, "multikey", &mk, N - R, N, D + 1, "the needle and its distractors");
    const int ra = w.a, nv = w.b - w.a, nk = w.n;
    const int *wk = w.keys; /* [nk] */
    rc = ab_plant_answer_alloc(ans, r, H * nv, 0, C, d, p->v[P_FLOOR]);
    if (rc != AB_OK) {
        ab_plant_window_free(&w);
        return rc;
    }

    double *dir = malloc(2 * (size_t)d * sizeof(double));  /* [2][d]: e, f */
    double *tgt = malloc(2 * (size_t)nv * sizeof(double)); /* [2][nv] */
    int *dpos = malloc((size_t)(D + 1) * sizeof(int));     /* [D+1] */
    unsigned char *skip = calloc((size_t)N, 1);            /* [N] */
    if (!dir || !tgt || !dpos || !skip) {
        free(dir);
        free(tgt);
        free(dpos);
        free(skip);
        ab_plant_window_free(&w);
        ab_answer_free(ans);
        return AB_ENOMEM;
    }
    const double sd = sqrt((double)d);
    const double floor_lz = ab_plant_lz_floor(ab_plant_context(&mk, ra, ra + nv), cfg.temperature);
    const int pos = wk[(int)floor(in->depth * (double)(nk - 1))];
    const int b0 = d - nb;

    for (int h = 0; h < H; h++) {
        /* positions: dpos[0] the needle, dpos[1..D] distinct distractors */
        dpos[0] = pos;
        for (int i = 1; i <= D; i++) {
            for (uint32_t att = 0;; att++) {
                int c = wk[ab_rng_below(r, (uint32_t)h, (uint32_t)i + att * 4096u, PURPOSE_DPOS, nk)];
                int dup = 0;
                for (int j = 0; j < i; j++) dup |= dpos[j] == c;
                if (!dup) {
                    dpos[i] = c;
                    break;
                }
            }
        }
        const int y = (int)ab_rng_below(r, (uint32_t)h, 0, PURPOSE_CODE, C);
        for (int i = 0; i <= D; i++) skip[dpos[i]] = 1;

        const float *kh = k + (size_t)h * N * d; /* (seq_len, head_dim) */
        double *T = tgt, *hay = tgt + nv;
#pragma omp parallel for schedule(static)
        for (int t = 0; t < nv; t++) {
            const int row = ra + t;
            const float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            double lz = ab_plant_lse_row(qr, kh, d, &mk, row, skip);
            if (!(lz >= floor_lz)) lz = floor_lz;
            hay[t] = ab_plant_dot(qr, kh + (size_t)pos * d, d);
            /* planted logit J: J + hay_p = margin + ln(Z + sum_i e^{rho J + hay_i}),
             * the distractors included; a contraction (rho < 1), iterated */
            const double hp = hay[t] / sd;
            double J = margin + lz - hp;
            for (int it = 0; it < 200; it++) {
                double mx = lz, terms[2] = { 0.0, 0.0 };
                for (int i = 1; i <= D; i++) {
                    double x = rho * J + ab_plant_dot(qr, kh + (size_t)dpos[i] * d, d) / sd;
                    if (x > mx) mx = x;
                }
                terms[0] = exp(lz - mx);
                for (int i = 1; i <= D; i++)
                    terms[1] += exp(rho * J + ab_plant_dot(qr, kh + (size_t)dpos[i] * d, d) / sd - mx);
                const double Jn = margin + mx + log(terms[0] + terms[1]) - hp;
                const int done = fabs(Jn - J) < 1e-12 * (1.0 + fabs(J));
                J = Jn;
                if (done) break;
            }
            T[t] = (J + hp) * sd; /* the full dot product q_r.k_p wanted */
        }
        double tmean = 0.0;
        for (int t = 0; t < nv; t++) tmean += T[t] / nv;
        const double lambda = sqrt(tmean > sd ? tmean : sd);

        /* e (row 0) and the needle */
        ab_plant_orthonormal(r, (uint32_t)h, 0, PURPOSE_DIR, d, b0, nb, 1, dir);
        const double *e = dir;
        float *kp = k + ((size_t)h * N + pos) * d; /* [d] */
        for (int m = b0; m < d; m++) kp[m] = (float)((double)kp[m] + lambda * e[m]);
        memcpy(v + ((size_t)h * N + pos) * d, ans->codebook + (size_t)y * d, (size_t)d * sizeof(float));
        /* distractors: e_i = rho e + sqrt(1 - rho^2) f_i, f_i orthogonal to e */
        const double c2 = sqrt(1.0 - rho * rho);
        for (int i = 1; i <= D; i++) {
            double *f = dir + d;
            ab_rng_unit_band(r, (uint32_t)h, (uint32_t)i, PURPOSE_DIR, d, b0, nb, f);
            double dp = 0.0, nn = 0.0;
            for (int m = b0; m < d; m++) dp += f[m] * e[m];
            for (int m = b0; m < d; m++) {
                f[m] -= dp * e[m];
                nn += f[m] * f[m];
            }
            const double inv = nn > 1e-12 ? 1.0 / sqrt(nn) : 0.0;
            const int yi = (y + 1 + (int)ab_rng_below(r, (uint32_t)h, (uint32_t)i, PURPOSE_DCODE, C - 1)) % C;
            float *kd = k + ((size_t)h * N + dpos[i]) * d; /* [d] */
            for (int m = b0; m < d; m++)
                kd[m] = (float)((double)kd[m] + lambda * (rho * e[m] + c2 * f[m] * inv));
            memcpy(v + ((size_t)h * N + dpos[i]) * d, ans->codebook + (size_t)yi * d,
                   (size_t)d * sizeof(float));
        }
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
        for (int i = 0; i <= D; i++) skip[dpos[i]] = 0;
    }
    free(dir);
    free(tgt);
    free(dpos);
    free(skip);
    ab_plant_window_free(&w);
    return AB_OK;
}

const ab_task multikey_task = {
    .abi = AB_ABI_VERSION,
    .name = "multikey",
    .summary = "true needle + D correlated distractor needles with their own "
               "codes (RULER multi-key)",
    .params = {
        AB_HAYSTACK_PARAMS,
        {"margin", 3.0, 0.0, 30.0, 0, "true key's logit above the row's log-partition (nats)"},
        {"n_codes", 16, 2, 4096, 1, "codebook size C"},
        {"decode_floor", 0.25, 0.0, 1.0, 0, "min winning projection / |code|^2"},
        {"query_rows", 16, 1, 4096, 1, "query rows R (the last R rows)"},
        {"needle_dims", 8, 2, 256, 1, "key band width (capped at max(2, d/8))"},
        {"distractors", 3, 0, 1024, 1, "distractor needles D"},
        {"rho", 0.6, 0.0, 0.99, 0, "correlation of a distractor's key direction with the true one"},
        {NULL, 0, 0, 0, 0, NULL},
    },
    .generate = mk_generate,
    .check = mk_check,
};

AB_REGISTER_TASK(multikey_task)
