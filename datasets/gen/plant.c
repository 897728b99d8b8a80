/* plant.c — helpers shared by the planted-answer tasks (docs/spec/TASKS.md §3); see
 * plant.h. RULER (Hsieh et al. 2024, arXiv:2404.06654) style retrieval
 * tasks at the Q/K/V level.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/gen/plant.h"

double ab_plant_dot(const float *a, const float *b, int d)
{
    double s = 0.0;
    for (int m = 0; m < d; m++) s += (double)a[m] * b[m];
    return s;
}

/* Online log-sum-exp of row qr's scaled logits over keys [j0, j1) of kh,
 * leaving out skip[j] and, when m is not NULL, keys m forbids row `row`. */
static double lse_keys(const float *qr, const float *kh, int d, int j0, int j1, const unsigned char *skip,
                       const ab_mask *m, int row)
{
    const double isd = 1.0 / sqrt((double)d);
    double mx = -INFINITY, sum = 0.0; /* online log-sum-exp */
    for (int j = j0; j < j1; j++) {
        if ((skip && skip[j]) || (m && !ab_mask_allows(m, row, j))) continue;
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

double ab_plant_lse(const float *qr, const float *kh, int d, int j0, int j1, const unsigned char *skip)
{
    return lse_keys(qr, kh, d, j0, j1, skip, NULL, 0);
}

int ab_plant_orthonormal(ab_rng r, uint32_t head, uint32_t row0, uint32_t purpose, int d, int b0, int nb,
                         int n, double *out)
{
    if (n < 0 || nb < n || b0 < 0 || b0 + nb > d || !out) return AB_EINVAL;
    for (int i = 0; i < n; i++) {
        double *e = out + (size_t)i * d; /* [d] */
        /* a fresh draw in the rare case the residual is degenerate */
        for (uint32_t attempt = 0;; attempt++) {
            ab_rng_unit_band(r, head, row0 + (uint32_t)i + attempt * 65536u, purpose, d, b0, nb, e);
            for (int j = 0; j < i; j++) {
                const double *f = out + (size_t)j * d; /* [d] */
                double dp = 0.0;
                for (int m = b0; m < b0 + nb; m++) dp += e[m] * f[m];
                for (int m = b0; m < b0 + nb; m++) e[m] -= dp * f[m];
            }
            double nn = 0.0;
            for (int m = b0; m < b0 + nb; m++) nn += e[m] * e[m];
            if (nn > 1e-6) {
                const double inv = 1.0 / sqrt(nn);
                for (int m = b0; m < b0 + nb; m++) e[m] *= inv;
                break;
            }
        }
    }
    return AB_OK;
}

int ab_plant_answer_alloc(ab_answer *a, ab_rng r, int n, int with_group, int C, int d, double decode_floor)
{
    memset(a, 0, sizeof *a);
    a->head = malloc((size_t)n * sizeof(int));                   /* [n] */
    a->row = malloc((size_t)n * sizeof(int));                    /* [n] */
    a->code = malloc((size_t)n * sizeof(int));                   /* [n] */
    a->key_pos = malloc((size_t)n * sizeof(int));                /* [n] */
    if (with_group) a->group = malloc((size_t)n * sizeof(int));  /* [n] */
    a->codebook = malloc((size_t)C * (size_t)d * sizeof(float)); /* [C][d] */
    double *e = malloc((size_t)d * sizeof(double));              /* [d] */
    if (!a->head || !a->row || !a->code || !a->key_pos || !a->codebook || !e || (with_group && !a->group)) {
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
        ab_rng_unit_band(r, AB_RNG_ALL_HEADS, (uint32_t)c, AB_PURPOSE_CODEBOOK, d, 0, d, e);
        for (int m = 0; m < d; m++) a->codebook[(size_t)c * d + m] = (float)(sd * e[m]);
    }
    free(e);
    return AB_OK;
}

double ab_plant_lz_floor(int n, double temperature)
{
    return log((double)n) + 0.5 * temperature * temperature;
}

/* ---- base masks ---------------------------------------------------------- */

int ab_plant_mask(const ab_task_input *in, const char *task, ab_mask *m)
{
    *m = ab_shape_mask(&in->s);
    if (!m->def || m->seq_len != in->s.seq_len) {
        ab_set_error(in, "%s: base mask %s is bound to N = %d, the shape has N = %d", task,
                     m->def ? m->spec : "(none)", m->seq_len, in->s.seq_len);
        return AB_EINVAL;
    }
    return AB_OK;
}

void ab_plant_window_free(ab_plant_window *w)
{
    if (!w) return;
    free(w->keys);
    memset(w, 0, sizeof *w);
}

/* Keys of [lo, hi) outside the query rows [q0, q1). */
static int64_t outside(int lo, int hi, int q0, int q1)
{
    int64_t n = 0;
    const int e = hi < q0 ? hi : q0, s = lo > q1 ? lo : q1;
    if (e > lo) n += e - lo;
    if (hi > s) n += hi - s;
    return n;
}

int ab_plant_window_find(const ab_mask *m, int q0, int q1, int need, ab_plant_window *w)
{
    memset(w, 0, sizeof *w);
    w->a = w->b = q1;
    const int R = q1 - q0;
    if (R <= 0 || need < 1) return AB_OK;
    int *lo = malloc((size_t)R * 2 * sizeof(int)); /* [2][R]: row spans */
    if (!lo) return AB_ENOMEM;
    int *hi = lo + R;
    for (int t = 0; t < R; t++) ab_mask_span(m, q0 + t, &lo[t], &hi[t]);
    /* the longest run, the latest on ties: runs grow until the common keys
     * drop below need (adding a row only shrinks them) */
    int best_a = 0, best_len = 0, best_lo = 0, best_hi = 0;
    for (int a = 0; a < R && R - a >= best_len; a++) {
        int l = lo[a], h = hi[a];
        for (int b = a; b < R; b++) {
            l = lo[b] > l ? lo[b] : l;
            h = hi[b] < h ? hi[b] : h;
            if (outside(l, h, q0, q1) < need) break;
            if (b - a + 1 >= best_len) {
                best_a = a;
                best_len = b - a + 1;
                best_lo = l;
                best_hi = h;
            }
        }
    }
    free(lo);
    if (best_len == 0) return AB_OK;
    const int64_t cap = outside(best_lo, best_hi, q0, q1);
    w->keys = malloc((size_t)cap * sizeof(int)); /* [cap] */
    if (!w->keys) return AB_ENOMEM;
    const int ra = q0 + best_a, rb = ra + best_len;
    int n = 0;
    for (int j = best_lo; j < best_hi; j++) {
        if (j >= q0 && j < q1) continue;
        int ok = 1;
        if (!m->def->interval)
            for (int i = ra; i < rb && ok; i++) ok = ab_mask_allows(m, i, j);
        if (ok) w->keys[n++] = j;
    }
    if (n < need) {
        ab_plant_window_free(w);
        w->a = w->b = q1;
        return AB_OK;
    }
    w->a = ra;
    w->b = rb;
    w->n = n;
    return AB_OK;
}

int ab_plant_context(const ab_mask *m, int a, int b)
{
    int64_t best = 0;
    for (int i = a; i < b; i++) {
        const int64_t c = ab_mask_row_count(m, i, 0, m->seq_len);
        best = c > best ? c : best;
    }
    return (int)best;
}

double ab_plant_lse_row(const float *qr, const float *kh, int d, const ab_mask *m, int row,
                        const unsigned char *skip)
{
    int lo, hi;
    ab_mask_span(m, row, &lo, &hi);
    return lse_keys(qr, kh, d, lo, hi, skip, m->def->interval ? NULL : m, row);
}

int ab_plant_no_window(const ab_task_input *in, const char *task, const ab_mask *m, int q0, int q1, int need,
                       const char *what)
{
    ab_set_error(in,
                 "%s: under mask %s no run of the query rows [%d, %d) sees %d common "
                 "key%s outside those rows (%s): no valid trial",
                 task, m->spec, q0, q1, need, need == 1 ? "" : "s", what);
    return AB_EUNSUPPORTED;
}
