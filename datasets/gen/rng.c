/* rng.c — Philox4x32-10 counter-based generator for the synthetic tasks
 * (docs/spec/TASKS.md §1; Salmon et al., SC 2011, via the header-only Random123).
 * Uniforms, Box-Muller normals, unit vectors in a dimension band, and
 * Floyd's sampling without replacement. No state: pure functions of the
 * counter and key.
 */
#include "datasets/gen/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <Random123/philox.h>
#pragma GCC diagnostic pop

uint32_t ab_rng_stream_id(const char *name)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)name; p && *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}

void ab_rng_u32x4(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, uint32_t lane, uint32_t out[4])
{
    /* The stream id is multiplied by an odd constant before mixing so that
     * (seed high word, stream) pairs differing in a few low bits don't
     * collide trivially. */
    philox4x32_key_t key = { { (uint32_t)r.seed, (uint32_t)(r.seed >> 32) ^ (r.stream * 0x9E3779B9u) } };
    philox4x32_ctr_t ctr = { { head, row, purpose, lane } };
    philox4x32_ctr_t x = philox4x32(ctr, key);
    memcpy(out, x.v, 4 * sizeof(uint32_t));
}

/* (x + 0.5) / 2^32: strictly inside (0, 1), so log() is always finite. */
static double u01_open(uint32_t x) { return ((double)x + 0.5) * (1.0 / 4294967296.0); }

void ab_rng_uniform4(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, uint32_t lane, double u[4])
{
    uint32_t w[4];
    ab_rng_u32x4(r, head, row, purpose, lane, w);
    for (int i = 0; i < 4; i++) u[i] = u01_open(w[i]);
}

double ab_rng_uniform53(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, uint32_t lane)
{
    uint32_t w[4];
    ab_rng_u32x4(r, head, row, purpose, lane, w);
    uint64_t m = ((uint64_t)(w[0] >> 5) << 26) | (uint64_t)(w[1] >> 6);
    return (double)m * (1.0 / 9007199254740992.0); /* / 2^53 */
}

void ab_rng_normal4(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, uint32_t lane, double z[4])
{
    const double two_pi = 6.283185307179586476925286766559;
    double u[4];
    ab_rng_uniform4(r, head, row, purpose, lane, u);
    for (int i = 0; i < 4; i += 2) {
        double rad = sqrt(-2.0 * log(u[i]));
        double th = two_pi * u[i + 1];
        z[i] = rad * cos(th);
        z[i + 1] = rad * sin(th);
    }
}

void ab_rng_normals(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, int n, double *out)
{
    for (int m = 0; m < n; m += 4) {
        double z[4];
        ab_rng_normal4(r, head, row, purpose, (uint32_t)(m / 4), z);
        for (int i = 0; i < 4 && m + i < n; i++) out[m + i] = z[i];
    }
}

void ab_rng_normals_f(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, int n, double scale,
                      float *out)
{
    for (int m = 0; m < n; m += 4) {
        double z[4];
        ab_rng_normal4(r, head, row, purpose, (uint32_t)(m / 4), z);
        for (int i = 0; i < 4 && m + i < n; i++) out[m + i] = (float)(scale * z[i]);
    }
}

void ab_rng_unit_band(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, int dim, int b0, int nb,
                      double *out)
{
    for (int i = 0; i < dim; i++) out[i] = 0.0;
    if (nb <= 0) return;
    double *band = out + b0;
    ab_rng_normals(r, head, row, purpose, nb, band);
    double ss = 0.0;
    for (int i = 0; i < nb; i++) ss += band[i] * band[i];
    if (!(ss > 0.0)) { /* probability zero; keep the result a unit vector */
        band[0] = 1.0;
        return;
    }
    double inv = 1.0 / sqrt(ss);
    for (int i = 0; i < nb; i++) band[i] *= inv;
}

int64_t ab_rng_below(ab_rng r, uint32_t head, uint32_t row, uint32_t purpose, int64_t n)
{
    if (n <= 1) return 0;
    int64_t x = (int64_t)(ab_rng_uniform53(r, head, row, purpose, 0) * (double)n);
    return x < n ? x : n - 1;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int ab_rng_sample_rows(ab_rng r, uint32_t head, uint32_t purpose, int n, int k, int *out)
{
    if (n < 0 || k < 0 || k > n) return AB_EINVAL;
    if (k == 0) return AB_OK;
    if (k == n) {
        for (int i = 0; i < n; i++) out[i] = i;
        return AB_OK;
    }
    /* Open-addressing set of the chosen rows, load factor <= 1/2. */
    size_t cap = 16;
    while (cap < 2 * (size_t)k) cap <<= 1;
    int *set = malloc(cap * sizeof *set); /* [cap], -1 = empty */
    if (!set) return AB_ENOMEM;
    for (size_t i = 0; i < cap; i++) set[i] = -1;
    for (int t = 0; t < k; t++) {
        int j = n - k + t;
        int x = (int)ab_rng_below(r, head, (uint32_t)t, purpose, (int64_t)j + 1);
        /* Floyd: insert x unless already chosen, else insert j (never chosen). */
        for (int pass = 0; pass < 2; pass++) {
            size_t hsh = ((uint32_t)x * 2654435761u) & (cap - 1);
            while (set[hsh] != -1 && set[hsh] != x) hsh = (hsh + 1) & (cap - 1);
            if (set[hsh] == -1) {
                set[hsh] = x;
                break;
            }
            x = j;
        }
    }
    int m = 0;
    for (size_t i = 0; i < cap; i++)
        if (set[i] != -1) out[m++] = set[i];
    free(set);
    qsort(out, (size_t)m, sizeof *out, cmp_int);
    return AB_OK;
}
