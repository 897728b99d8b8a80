/* passkey.c — the `passkey` task (docs/spec/TASKS.md §3): a multi-token secret
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
 *
 * Base masks (datasets/gen/plant.h): the L digits sit at L consecutive keys
 * (consecutive visible keys for a non-interval mask) that every valid query
 * row may see, p at depth in that range (p = floor(depth * (N - 2L)) under
 * causal or full). A trial needs all L digit rows, so unless every row sees
 * such a range the point is unsupported; with per_digit = 1 the rows that
 * share one are scored and the others left out.
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
        ab_set_error(in, "passkey: expected %d parameters", P_COUNT);
        return AB_EINVAL;
    }
    int rc = ab_haystack_cfg_from_params(p, 0, cfg);
    if (rc != AB_OK) return rc;
    const int L = (int)lround(p->v[P_DIGITS]);
    const int nb_param = (int)lround(p->v[P_DIMS]);
    const int N = in->s.seq_len, d = in->s.head_dim;
    if (L < 1 || nb_param < 1) {
        ab_set_error(in, "passkey: needs digits >= 1 and needle_dims >= 1");
        return AB_EINVAL;
    }
    if (N < 2 * L + 1 || !(in->depth >= 0.0 && in->depth <= 1.0)) {
        ab_set_error(in, "passkey: needs N >= 2 * digits + 1 = %d (N = %d) and depth in [0, 1]", 2 * L + 1,
                     N);
        return AB_EINVAL;
    }
    const int nb_cap = d / 8 > 2 ? d / 8 : 2;
    int nb = nb_param < nb_cap ? nb_param : nb_cap;
    if (nb < L + 1) nb = L + 1;
    cfg->free_dims = nb;
    char why[200] = "";
    rc = ab_haystack_check(cfg, &in->s, why, sizeof why);
    if (rc != AB_OK) {
        ab_set_error(in, "passkey: %s (the key band needs digits + 1 = %d dims)",
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

static int pk_generate(const ab_task_input *in, float *q, float *k, float *v, ab_answer *ans)
{
    if (!in || !q || !k || !v || !ans) return AB_EINVAL;
    memset(ans, 0, sizeof *ans);
    ab_haystack_cfg cfg;
    int rc = pk_check_in(in, &cfg);
    if (rc != AB_OK) return rc;
    const ab_params *p = in->p;
    const ab_shape *s = &in->s;
    const double margin = p->v[P_MARGIN];
    const int L = (int)lround(p->v[P_DIGITS]);
    const int per_digit = lround(p->v[P_PERDIGIT]) != 0;
    const int nb = cfg.free_dims;
    const int H = s->heads, N = s->seq_len, d = s->head_dim;
    const ab_rng r = { .seed = in->seed, .stream = ab_rng_stream_id("passkey") };
    ab_mask mk;
    rc = ab_plant_mask(in, "passkey", &mk);
    if (rc != AB_OK) return rc;
    rc = ab_haystack_generate(&cfg, s, r, q, k, v);
    if (rc != AB_OK) {
        ab_set_error(in, "passkey: haystack generation failed");
        return rc;
    }
    /* the digits lie in the keys the valid query rows [ra, ra + nv) all see */
    ab_plant_window w;
    if (ab_plant_window_find(&mk, N - L, N, L, &w) != AB_OK) return AB_ENOMEM;
    if (w.n == 0 || (!per_digit && w.b - w.a < L)) {
        const int nrun = w.b - w.a;
        ab_plant_window_free(&w);
        if (nrun == 0) return ab_plant_no_window(in, "passkey", &mk, N - L, N, L, "the digits");
        ab_set_error(in,
                     "passkey: under mask %s only %d of the %d digit rows see %d common "
                     "keys before them; a trial needs every digit (per_digit = 1 scores "
                     "the rows that do): no valid trial",
                     mk.spec, nrun, L, L);
        return AB_EUNSUPPORTED;
    }
    const int ra = w.a, nv = w.b - w.a, l0 = ra - (N - L); /* rows ask digits l0 .. */
    int *kpos = malloc((size_t)L * sizeof(int));           /* [L] digit positions */
    if (!kpos) {
        ab_plant_window_free(&w);
        return AB_ENOMEM;
    }
    {
        const int i0 = (int)floor(in->depth * (double)(w.n - L));
        for (int l = 0; l < L; l++) kpos[l] = w.keys[i0 + l];
    }
    ab_plant_window_free(&w);
    rc = ab_plant_answer_alloc(ans, r, H * nv, !per_digit, PK_CODES, d, p->v[P_FLOOR]);
    if (rc != AB_OK) {
        free(kpos);
        return rc;
    }
    if (!per_digit) ans->n_groups = H;

    double *dir = malloc((size_t)(L + 1) * (size_t)d * sizeof(double)); /* [L+1][d]: e, f_0.. */
    double *tgt = malloc(2 * (size_t)L * sizeof(double));               /* [2][L]: T, hay per valid row */
    unsigned char *skip = calloc((size_t)N, 1);                         /* [N] */
    if (!dir || !tgt || !skip) {
        free(dir);
        free(tgt);
        free(skip);
        free(kpos);
        ab_answer_free(ans);
        return AB_ENOMEM;
    }
    const double sd = sqrt((double)d);
    const double floor_lz = ab_plant_lz_floor(ab_plant_context(&mk, ra, ra + nv), cfg.temperature);
    const int b0 = d - nb;
    for (int l = 0; l < L; l++) skip[kpos[l]] = 1;

    for (int h = 0; h < H; h++) {
        const float *kh = k + (size_t)h * N * d; /* (seq_len, head_dim) */
        double *T = tgt, *hay = tgt + L;
#pragma omp parallel for schedule(static)
        for (int t = 0; t < nv; t++) {
            const int l = l0 + t, row = ra + t;              /* row N - L + l asks digit l */
            const float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            double lz = ab_plant_lse_row(qr, kh, d, &mk, row, skip);
            if (!(lz >= floor_lz)) lz = floor_lz;
            hay[t] = ab_plant_dot(qr, kh + (size_t)kpos[l] * d, d);
            /* planted logit J of the asked digit: J + hay_l = margin +
             * ln(Z + sum_{m != l} e^{J/2 + hay_m}), the other digits (half
             * the planted logit) included; a contraction, iterated */
            const double hp = hay[t] / sd;
            double J = margin + lz - hp;
            for (int it = 0; it < 200; it++) {
                double mx = lz, acc = 0.0;
                for (int o = 0; o < L; o++)
                    if (o != l) {
                        double x = 0.5 * J + ab_plant_dot(qr, kh + (size_t)kpos[o] * d, d) / sd;
                        if (x > mx) mx = x;
                    }
                acc = exp(lz - mx);
                for (int o = 0; o < L; o++)
                    if (o != l) acc += exp(0.5 * J + ab_plant_dot(qr, kh + (size_t)kpos[o] * d, d) / sd - mx);
                const double Jn = margin + mx + log(acc) - hp;
                const int done = fabs(Jn - J) < 1e-12 * (1.0 + fabs(J));
                J = Jn;
                if (done) break;
            }
            T[t] = (J + hp) * sd; /* the full dot product q_l.k_{p+l} wanted */
        }
        double tmean = 0.0;
        for (int t = 0; t < nv; t++) tmean += T[t] / nv;
        const double lambda = sqrt(tmean > sd ? tmean : sd);
        ab_plant_orthonormal(r, (uint32_t)h, 0, PURPOSE_DIR, d, b0, nb, L + 1, dir);
        const double *e = dir;
        const double is2 = 1.0 / sqrt(2.0);
        for (int l = 0; l < L; l++) {
            const double *f = dir + (size_t)(l + 1) * d; /* [d] */
            const int digit = (int)ab_rng_below(r, (uint32_t)h, (uint32_t)l, PURPOSE_DIGIT, PK_CODES);
            float *kp = k + ((size_t)h * N + kpos[l]) * d; /* [d] */
            for (int m = b0; m < d; m++) kp[m] = (float)((double)kp[m] + lambda * is2 * (e[m] + f[m]));
            memcpy(v + ((size_t)h * N + kpos[l]) * d, ans->codebook + (size_t)digit * d,
                   (size_t)d * sizeof(float));
            if (l < l0 || l >= l0 + nv) continue; /* row N - L + l is no valid trial: no query planted */
            const int t = l - l0, row = ra + t;
            float *qr = q + ((size_t)h * N + row) * d; /* [d] */
            double lam_r = (T[t] - hay[t]) / lambda;
            if (lam_r < 0.0) lam_r = 0.0;
            for (int m = b0; m < d; m++) qr[m] = (float)((double)qr[m] + lam_r * is2 * (e[m] + f[m]));
            const int a = h * nv + t;
            ans->head[a] = h;
            ans->row[a] = row;
            ans->code[a] = digit;
            ans->key_pos[a] = kpos[l];
            if (!per_digit) ans->group[a] = h;
        }
    }
    free(dir);
    free(tgt);
    free(skip);
    free(kpos);
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
