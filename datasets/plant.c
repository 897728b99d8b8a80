/* plant.c — helpers shared by the planted-answer tasks (TASKS.md §3); see
 * plant.h. RULER (Hsieh et al. 2024, arXiv:2404.06654) style retrieval
 * tasks at the Q/K/V level.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/plant.h"

double ab_plant_dot(const float *a, const float *b, int d)
{
    double s = 0.0;
    for (int m = 0; m < d; m++)
        s += (double)a[m] * b[m];
    return s;
}

double ab_plant_lse(const float *qr, const float *kh, int d, int j0, int j1,
                    const unsigned char *skip)
{
    const double isd = 1.0 / sqrt((double)d);
    double mx = -INFINITY, sum = 0.0; /* online log-sum-exp */
    for (int j = j0; j < j1; j++) {
        if (skip && skip[j])
            continue;
        const double x = ab_plant_dot(qr, kh + (size_t)j * d, d) * isd;
        if (x > mx) {
            sum = sum * exp(mx - x) + 1.0;
            mx = x;
        } else {
            sum += exp(x - mx);
        }
    }
    return sum > 0.0 ? mx + log(sum) : -INFINITY;
}

int ab_plant_orthonormal(ab_rng r, uint32_t head, uint32_t row0,
                         uint32_t purpose, int d, int b0, int nb, int n,
                         double *out)
{
    if (n < 0 || nb < n || b0 < 0 || b0 + nb > d || !out)
        return AB_EINVAL;
    for (int i = 0; i < n; i++) {
        double *e = out + (size_t)i * d; /* [d] */
        /* a fresh draw in the rare case the residual is degenerate */
        for (uint32_t attempt = 0;; attempt++) {
            ab_rng_unit_band(r, head, row0 + (uint32_t)i + attempt * 65536u,
                             purpose, d, b0, nb, e);
            for (int j = 0; j < i; j++) {
                const double *f = out + (size_t)j * d; /* [d] */
                double dp = 0.0;
                for (int m = b0; m < b0 + nb; m++)
                    dp += e[m] * f[m];
                for (int m = b0; m < b0 + nb; m++)
                    e[m] -= dp * f[m];
            }
            double nn = 0.0;
            for (int m = b0; m < b0 + nb; m++)
                nn += e[m] * e[m];
            if (nn > 1e-6) {
                const double inv = 1.0 / sqrt(nn);
                for (int m = b0; m < b0 + nb; m++)
                    e[m] *= inv;
                break;
            }
        }
    }
    return AB_OK;
}

int ab_plant_answer_alloc(ab_answer *a, ab_rng r, int n, int with_group, int C,
                          int d, double decode_floor)
{
    memset(a, 0, sizeof *a);
    a->head = malloc((size_t)n * sizeof(int));    /* [n] */
    a->row = malloc((size_t)n * sizeof(int));     /* [n] */
    a->code = malloc((size_t)n * sizeof(int));    /* [n] */
    a->key_pos = malloc((size_t)n * sizeof(int)); /* [n] */
    if (with_group)
        a->group = malloc((size_t)n * sizeof(int)); /* [n] */
    a->codebook = malloc((size_t)C * (size_t)d * sizeof(float)); /* [C][d] */
    double *e = malloc((size_t)d * sizeof(double)); /* [d] */
    if (!a->head || !a->row || !a->code || !a->key_pos || !a->codebook || !e ||
        (with_group && !a->group)) {
        free(e);
        ab_answer_free(a);
        return AB_ENOMEM;
    }
    a->n = n;
    a->n_groups = n;
    a->n_codes = C;
    a->head_dim = d;
    a->decode_floor = decode_floor;
    const double sd = sqrt((double)d);
    for (int c = 0; c < C; c++) {
        ab_rng_unit_band(r, AB_RNG_ALL_HEADS, (uint32_t)c, AB_PURPOSE_CODEBOOK,
                         d, 0, d, e);
        for (int m = 0; m < d; m++)
            a->codebook[(size_t)c * d + m] = (float)(sd * e[m]);
    }
    free(e);
    return AB_OK;
}

double ab_plant_lz_floor(int n, double temperature)
{
    return log((double)n) + 0.5 * temperature * temperature;
}
