/* task_passkey.c — the `passkey` task (TASKS.md §3): a multi-token secret
 * retrieved digit by digit, after the passkey retrieval test of Landmark
 * Attention (Mohtashami & Jaggi 2023, arXiv:2305.16300) and LAWCAT.
 *
 * A secret of L digits sits at consecutive positions p .. p+L-1 with
 * p = floor(depth * (N - 2L)); the last L rows are the queries, row r_l
 * asking for digit l. Per head, in the free band (width
 * max(L + 1, min(needle_dims, max(2, d/8)))), L + 1 orthonormal directions:
 * the shared passkey direction e and one per digit position f_l. Key p+l
 * gets (lambda/sqrt2)(e + f_l) and query r_l gets (lambda_l/sqrt2)(e + f_l),
 * so the asked digit's planted logit is J = lambda lambda_l / sqrt(d) while
 * the other digits get J / 2; J is set, as in the needle task, `margin` nats
 * above the log-partition of the rest of the row (the haystack, never below
 * ln N + tau^2/2, plus the other digits: a fixed point, iterated). Values: a 10-code digit codebook;
 * key p+l's value is the code of digit l (seeded per head). Each head is one
 * trial: an answer group, correct only if all L digits decode correctly. With
 * `per_digit = 1` the answer has no groups and accuracy is per digit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/haystack.h"
#include "datasets/plant.h"
#include "datasets/rng.h"
#include "datasets/task.h"

enum { /* the task's own params, after the haystack's */
    P_MARGIN = AB_HAYSTACK_NPARAMS,
    P_FLOOR,
    P_DIGITS,
    P_DIMS,
    P_PERDIGIT,
    P_COUNT
};

enum { PURPOSE_DIR = AB_PURPOSE_TASK, PURPOSE_DIGIT };

#define PK_CODES 10

static int pk_check_in(const ab_task_input *in, ab_haystack_cfg *cfg)
{
    const ab_params *p = in->p;
    if (!p || p->n < P_COUNT) {
        ab_task_errorf(in, "passkey: expected %d parameters", P_COUNT);
        return AB_EINVAL;
    }
    int rc = ab_haystack_cfg_from_params(p, 0, cfg);
    if (rc != AB_OK)
        return rc;
    const int L = (int)lround(p->v[P_DIGITS]);
    const int nb_param = (int)lround(p->v[P_DIMS]);
    const int N = in->s.seq_len, d = in->s.head_dim;
    if (L < 1 || nb_param < 1) {
        ab_task_errorf(in, "passkey: needs digits >= 1 and needle_dims >= 1");
        return AB_EINVAL;
    }
    if (N < 2 * L + 1 || !(in->depth >= 0.0 && in->depth <= 1.0)) {
        ab_task_errorf(in, "passkey: needs N >= 2 * digits + 1 = %d (N = %d) and depth in [0, 1]",
                       2 * L + 1, N);
        return AB_EINVAL;
    }
    const int nb_cap = d / 8 > 2 ? d / 8 : 2;
    int nb = nb_param < nb_cap ? nb_param : nb_cap;
    if (nb < L + 1)
        nb = L + 1;
    cfg->free_dims = nb;
    char why[200] = "";
    rc = ab_haystack_check(cfg, &in->s, why, sizeof why);
    if (rc != AB_OK) {
        ab_task_errorf(in, "passkey: %s (the key band needs digits + 1 = %d dims)",
                       why[0] ? why : "bad haystack knobs", L + 1);
        return rc;
    }
    return AB_OK;
}

static int pk_check(const ab_task_input *in)
{
    ab_haystack_cfg cfg;
    return pk_check_in(in, &cfg);
}

static int pk_generate(const ab_task_input *in, float *q, float *k, float *v,
                       ab_answer *ans)
{
    if (!in || !q || !k || !v || !ans)
        return AB_EINVAL;
    memset(ans, 0, sizeof *ans);
    ab_haystack_cfg cfg;
    int rc = pk_check_in(in, &cfg);
    if (rc != AB_OK)
        return rc;
    const ab_params *p = in->p;
    const ab_shape *s = &in->s;
    const double margin = p->v[P_MARGIN];
    const int L = (int)lround(p->v[P_DIGITS]);
    const int per_digit = lround(p->v[P_PERDIGIT]) != 0;
    const int nb = cfg.free_dims;
    const int H = s->heads, N = s->seq_len, d = s->head_dim;
    const ab_rng r = {.seed = in->seed, .stream = ab_rng_stream_id("passkey")};
    rc = ab_haystack_generate(&cfg, s, r, q, k, v);
    if (rc != AB_OK) {
        ab_task_errorf(in, "passkey: haystack generation failed");
        return rc;
    }
    rc = ab_plant_answer_alloc(ans, r, H * L, !per_digit, PK_CODES, d, p->v[P_FLOOR]);
    if (rc != AB_OK)
        return rc;
    if (!per_digit)
        ans->n_groups = H;

    double *dir = malloc((size_t)(L + 1) * (size_t)d * sizeof(double)); /* [L+1][d]: e, f_0.. */
    double *tgt = malloc(2 * (size_t)L * sizeof(double));               /* [2][L] */
    unsigned char *skip = calloc((size_t)N, 1);                         /* [N] */
    if (!dir || !tgt || !skip) {
        free(dir);
        free(tgt);
        free(skip);
        ab_answer_free(ans);
        return AB_ENOMEM;
    }
    const double sd = sqrt((double)d);
    const double floor_lz = ab_plant_lz_floor(N, cfg.temperature);
    const int pos = (int)floor(in->depth * (double)(N - 2 * L));
    const int b0 = d - nb;
    for (int l = 0; l < L; l++)
        skip[pos + l] = 1;

    for (int h = 0; h < H; h++) {
        const float *kh = k + (size_t)h * N * d; /* (seq_len, head_dim) */
        double *T = tgt, *hay = tgt + L;
#pragma omp parallel for schedule(static)
        for (int l = 0; l < L; l++) {
            const int row = N - L + l;
            const float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            const int last = s->causal ? row : N - 1;
            double lz = ab_plant_lse(qr, kh, d, 0, last + 1, skip);
            if (!(lz >= floor_lz))
                lz = floor_lz;
            hay[l] = ab_plant_dot(qr, kh + (size_t)(pos + l) * d, d);
            /* planted logit J of the asked digit: J + hay_l = margin +
             * ln(Z + sum_{m != l} e^{J/2 + hay_m}), the other digits (half
             * the planted logit) included; a contraction, iterated */
            const double hp = hay[l] / sd;
            double J = margin + lz - hp;
            for (int it = 0; it < 200; it++) {
                double mx = lz, acc = 0.0;
                for (int o = 0; o < L; o++)
                    if (o != l) {
                        double x = 0.5 * J + ab_plant_dot(qr, kh + (size_t)(pos + o) * d, d) / sd;
                        if (x > mx)
                            mx = x;
                    }
                acc = exp(lz - mx);
                for (int o = 0; o < L; o++)
                    if (o != l)
                        acc += exp(0.5 * J + ab_plant_dot(qr, kh + (size_t)(pos + o) * d, d) / sd - mx);
                const double Jn = margin + mx + log(acc) - hp;
                const int done = fabs(Jn - J) < 1e-12 * (1.0 + fabs(J));
                J = Jn;
                if (done)
                    break;
            }
            T[l] = (J + hp) * sd; /* the full dot product q_l.k_{p+l} wanted */
        }
        double tmean = 0.0;
        for (int l = 0; l < L; l++)
            tmean += T[l] / L;
        const double lambda = sqrt(tmean > sd ? tmean : sd);
        ab_plant_orthonormal(r, (uint32_t)h, 0, PURPOSE_DIR, d, b0, nb, L + 1, dir);
        const double *e = dir;
        const double is2 = 1.0 / sqrt(2.0);
        for (int l = 0; l < L; l++) {
            const double *f = dir + (size_t)(l + 1) * d; /* [d] */
            const int digit = (int)ab_rng_below(r, (uint32_t)h, (uint32_t)l, PURPOSE_DIGIT, PK_CODES);
            float *kp = k + ((size_t)h * N + pos + l) * d; /* [d] */
            for (int m = b0; m < d; m++)
                kp[m] = (float)((double)kp[m] + lambda * is2 * (e[m] + f[m]));
            memcpy(v + ((size_t)h * N + pos + l) * d, ans->codebook + (size_t)digit * d,
                   (size_t)d * sizeof(float));
            const int row = N - L + l;
            float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            double lam_r = (T[l] - hay[l]) / lambda;
            if (lam_r < 0.0)
                lam_r = 0.0;
            for (int m = b0; m < d; m++)
                qr[m] = (float)((double)qr[m] + lam_r * is2 * (e[m] + f[m]));
            const int a = h * L + l;
            ans->head[a] = h;
            ans->row[a] = row;
            ans->code[a] = digit;
            ans->key_pos[a] = pos + l;
            if (!per_digit)
                ans->group[a] = h;
        }
    }
    free(dir);
    free(tgt);
    free(skip);
    return AB_OK;
}

const ab_task passkey_task = {
    .abi = AB_ABI_VERSION,
    .name = "passkey",
    .summary = "L-digit secret at consecutive positions, one query row per digit; "
               "a trial is correct only if all digits are (Landmark/LAWCAT passkey)",
    .params = {
        AB_HAYSTACK_PARAMS,
        {"margin", 3.0, 0.0, 30.0, 0, "asked digit's logit above the row's log-partition (nats)"},
        {"decode_floor", 0.25, 0.0, 1.0, 0, "min winning projection / |code|^2"},
        {"digits", 5, 1, 1024, 1, "secret length L (query rows = the last L rows)"},
        {"needle_dims", 8, 1, 256, 1, "key band width (capped at max(2, d/8), at least L + 1)"},
        {"per_digit", 0, 0, 1, 1, "1: score each digit alone (no all-digits groups)"},
        {NULL, 0, 0, 0, 0, NULL},
    },
    .generate = pk_generate,
    .check = pk_check,
};

AB_REGISTER_TASK(passkey_task)
