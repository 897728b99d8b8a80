/* haystack.c — the synthetic background Q, K, V of every task (docs/spec/TASKS.md §2).
 *
 * Each component lives in its own band of dimensions, so the logits are a sum
 * of closed forms (scale 1/sqrt(d)):
 *   noise    q, k ~ N(0, sigma^2) over n dims: s ~ N(0, tau^2) with
 *            sigma^2 = tau sqrt(d) / sqrt(n)
 *   local    a (cos w_m t, sin w_m t), m < M, in q_i and k_i (RoPE, Su et al.):
 *            s = a^2/sqrt(d) sum_m cos(w_m (i-j)); peak local_logit at i = j
 *            with a^2 = local_logit sqrt(d) / M
 *   slash    q_i = a (code(i-o1) + code(i-o2)), k_j = a code(j): peaks of
 *            slash_logit on the lines j = i - o (MInference's slash pattern)
 *   sinks    k_j = beta for j < S, q_i = beta: s += beta^2/sqrt(d) = sink_logit
 *            (StreamingLLM's attention sinks)
 *   vertical the same on a seeded set of keys (MInference's vertical pattern)
 *   topics   q_i, k_i += gamma u_t(i): s += topic_logit within a segment,
 *            topic_logit * cos(u_t, u_t') across segments
 * Every element belongs to exactly one component and is computed in double
 * and rounded once to float; each row is a pure function of (seed, head,
 * row), so any thread count gives the same bits.
 */
#include "datasets/gen/haystack.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void say(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

void ab_haystack_cfg_default(ab_haystack_cfg *c)
{
    static const ab_param defs[AB_HAYSTACK_NPARAMS] = { AB_HAYSTACK_PARAMS };
    ab_params p = { .n = AB_HAYSTACK_NPARAMS };
    for (int i = 0; i < AB_HAYSTACK_NPARAMS; i++) p.v[i] = defs[i].def;
    ab_haystack_cfg_from_params(&p, 0, c);
}

int ab_haystack_cfg_from_params(const ab_params *p, int first, ab_haystack_cfg *c)
{
    if (!p || !c || first < 0 || p->n < first + AB_HAYSTACK_NPARAMS) return AB_EINVAL;
    const double *v = p->v + first;
    memset(c, 0, sizeof *c);
    c->temperature = v[0];
    c->local_logit = v[1];
    c->local_base = v[2];
    c->sinks = (int)lround(v[3]);
    c->sink_logit = v[4];
    c->vertical_per_1k = v[5];
    c->vertical_logit = v[6];
    c->slash_offset1 = (int)lround(v[7]);
    c->slash_offset2 = (int)lround(v[8]);
    c->slash_logit = v[9];
    c->topic_len = v[10];
    c->topic_logit = v[11];
    c->free_dims = 0;
    return AB_OK;
}

int ab_haystack_bands_for(int d, int free_dims, ab_haystack_bands *b, char *why, size_t whylen)
{
    if (d < 16) {
        say(why, whylen,
            "haystack: head_dim %d < 16 is unsupported (the bands sinks 1, "
            "vertical 1, local, slash, topics and noise need at least 16)",
            d);
        return AB_EUNSUPPORTED;
    }
    if (free_dims < 0 || free_dims > d) {
        say(why, whylen, "haystack: free band %d outside [0, head_dim %d]", free_dims, d);
        return AB_EINVAL;
    }
    /* d = 64: 1/1/16/16/8/22 — the rotary bands are d/4 (even), topics d/8. */
    int n_rot = 2 * (d / 8), n_top = d / 8;
    int n_noise = d - 2 - 2 * n_rot - n_top - free_dims;
    while (n_noise < 1) { /* small d: shrink rotary bands, then topics */
        if (n_rot > 2) {
            n_rot -= 2;
            n_noise += 4;
        } else if (n_top > 1) {
            n_top -= 1;
            n_noise += 1;
        } else {
            say(why, whylen,
                "haystack: head_dim %d cannot hold a free band of %d dims: the "
                "haystack needs at least 8 (sink 1, vertical 1, local 2, slash "
                "2, topics 1, noise 1); use head_dim >= %d or a narrower band",
                d, free_dims, free_dims + 8);
            return AB_EUNSUPPORTED;
        }
    }
    b->d = d;
    b->sink = 0;
    b->vertical = 1;
    b->local0 = 2;
    b->n_local = n_rot;
    b->slash0 = b->local0 + n_rot;
    b->n_slash = n_rot;
    b->topic0 = b->slash0 + n_rot;
    b->n_topic = n_top;
    b->noise0 = b->topic0 + n_top;
    b->n_noise = n_noise;
    b->free0 = b->noise0 + n_noise;
    b->n_free = free_dims;
    return AB_OK;
}

int ab_haystack_check(const ab_haystack_cfg *c, const ab_shape *s, char *why, size_t whylen)
{
    if (!c || !s) {
        say(why, whylen, "haystack: NULL config or shape");
        return AB_EINVAL;
    }
    if (s->heads < 1 || s->seq_len < 1) {
        say(why, whylen, "haystack: bad shape heads=%d seq_len=%d", s->heads, s->seq_len);
        return AB_EINVAL;
    }
    struct {
        const char *name;
        double v, lo, hi;
    } k[] = {
        { "temperature", c->temperature, 0, 1e3 },
        { "local_logit", c->local_logit, 0, 1e3 },
        { "local_base", c->local_base, 1.0000001, 1e300 },
        { "sinks", c->sinks, 0, 2147483647.0 },
        { "sink_logit", c->sink_logit, 0, 1e3 },
        { "vertical_per_1k", c->vertical_per_1k, 0, 1000 },
        { "vertical_logit", c->vertical_logit, 0, 1e3 },
        { "slash_offset1", c->slash_offset1, 0, 2147483647.0 },
        { "slash_offset2", c->slash_offset2, 0, 2147483647.0 },
        { "slash_logit", c->slash_logit, 0, 1e3 },
        { "topic_len", c->topic_len, 1, 1e300 },
        { "topic_logit", c->topic_logit, 0, 1e3 },
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        if (!(k[i].v >= k[i].lo && k[i].v <= k[i].hi)) {
            say(why, whylen, "haystack: %s = %g outside [%g, %g]", k[i].name, k[i].v, k[i].lo, k[i].hi);
            return AB_EINVAL;
        }
    }
    if (s->head_dim > 4096) {
        say(why, whylen, "haystack: head_dim %d > 4096 is unsupported", s->head_dim);
        return AB_EUNSUPPORTED;
    }
    ab_haystack_bands b;
    return ab_haystack_bands_for(s->head_dim, c->free_dims, &b, why, whylen);
}

/* Everything a row needs, computed once per call. */
typedef struct hay_ctx {
    ab_haystack_bands b;
    ab_rng r;
    int d;
    double sigma;     /* noise std */
    double a_local;   /* rotary amplitude of the local code */
    double a_slash;   /* rotary amplitude of the slash code */
    double beta_sink; /* sink dim value in k (and the constant in q) */
    double beta_vert;
    double gamma;      /* topic amplitude */
    double omega[512]; /* w_m = b^(-m/M), M = n_local/2 <= 512 (d <= 4096) */
    double vert_rate;  /* probability that a key is vertical */
    int sinks, o1, o2;
} hay_ctx;

static int ctx_init(hay_ctx *x, const ab_haystack_cfg *c, const ab_shape *s, ab_rng r)
{
    int rc = ab_haystack_check(c, s, NULL, 0);
    if (rc != AB_OK) return rc;
    ab_haystack_bands_for(s->head_dim, c->free_dims, &x->b, NULL, 0);
    const double sd = sqrt((double)s->head_dim);
    x->r = r;
    x->d = s->head_dim;
    x->sigma = x->b.n_noise > 0 ? sqrt(c->temperature * sd / sqrt((double)x->b.n_noise)) : 0.0;
    x->a_local = sqrt(c->local_logit * sd / (x->b.n_local / 2));
    x->a_slash = sqrt(c->slash_logit * sd / (x->b.n_slash / 2));
    x->beta_sink = sqrt(c->sink_logit * sd);
    x->beta_vert = sqrt(c->vertical_logit * sd);
    x->gamma = sqrt(c->topic_logit * sd);
    const int M = x->b.n_local / 2;
    for (int m = 0; m < M; m++) x->omega[m] = exp(-(double)m / M * log(c->local_base));
    x->vert_rate = c->vertical_per_1k / 1000.0;
    x->sinks = c->sinks;
    x->o1 = c->slash_offset1;
    x->o2 = c->slash_offset2;
    return AB_OK;
}

/* Add a * (cos w_m t, sin w_m t), m < n/2, to out[0..n). */
static void rotary_add(double *out, int n, double a, double t, const double *omega)
{
    for (int m = 0; m < n / 2; m++) {
        out[2 * m] += a * cos(omega[m] * t);
        out[2 * m + 1] += a * sin(omega[m] * t);
    }
}

static int is_vertical(const hay_ctx *x, int head, int j)
{
    if (x->vert_rate <= 0.0) return 0;
    double u[4];
    ab_rng_uniform4(x->r, (uint32_t)head, (uint32_t)j, AB_PURPOSE_VERTICAL, 0, u);
    return u[0] < x->vert_rate;
}

/* One row i of one head: q, k, v [d]; topic = segment index of i. */
static void gen_row(const hay_ctx *x, int h, int i, int topic, float *q, float *k, float *v)
{
    const ab_haystack_bands *b = &x->b;
    const int d = x->d;
    double qd[d], kd[d]; /* VLAs: one row, d <= 4096 (checked) */
    for (int m = 0; m < d; m++) qd[m] = kd[m] = 0.0;

    /* sinks and vertical: one dimension each, constant in q. */
    qd[b->sink] = x->beta_sink;
    if (i < x->sinks) kd[b->sink] = x->beta_sink;
    qd[b->vertical] = x->beta_vert;
    if (is_vertical(x, h, i)) kd[b->vertical] = x->beta_vert;

    /* local and slash rotary codes */
    rotary_add(qd + b->local0, b->n_local, x->a_local, (double)i, x->omega);
    rotary_add(kd + b->local0, b->n_local, x->a_local, (double)i, x->omega);
    if (x->o1 > 0) rotary_add(qd + b->slash0, b->n_slash, x->a_slash, (double)i - x->o1, x->omega);
    if (x->o2 > 0) rotary_add(qd + b->slash0, b->n_slash, x->a_slash, (double)i - x->o2, x->omega);
    if (x->o1 > 0 || x->o2 > 0) rotary_add(kd + b->slash0, b->n_slash, x->a_slash, (double)i, x->omega);

    /* topic direction of this row's segment (per head) */
    if (b->n_topic > 0 && x->gamma > 0.0) {
        double u[d];
        ab_rng_unit_band(x->r, (uint32_t)h, (uint32_t)topic, AB_PURPOSE_TOPIC_DIR, d, b->topic0, b->n_topic,
                         u);
        for (int m = b->topic0; m < b->topic0 + b->n_topic; m++) {
            qd[m] += x->gamma * u[m];
            kd[m] += x->gamma * u[m];
        }
    }

    /* noise */
    if (b->n_noise > 0 && x->sigma > 0.0) {
        ab_rng_normals(x->r, (uint32_t)h, (uint32_t)i, AB_PURPOSE_NOISE_Q, b->n_noise, qd + b->noise0);
        ab_rng_normals(x->r, (uint32_t)h, (uint32_t)i, AB_PURPOSE_NOISE_K, b->n_noise, kd + b->noise0);
        for (int m = b->noise0; m < b->noise0 + b->n_noise; m++) {
            qd[m] *= x->sigma;
            kd[m] *= x->sigma;
        }
    }

    for (int m = 0; m < d; m++) {
        q[m] = (float)qd[m];
        k[m] = (float)kd[m];
    }
    ab_rng_normals_f(x->r, (uint32_t)h, (uint32_t)i, AB_PURPOSE_VALUE, d, 1.0, v);
}

static int topic_starts_at(ab_rng r, double p_cut, int i)
{
    if (i == 0) return 0;
    double u[4];
    ab_rng_uniform4(r, AB_RNG_ALL_HEADS, (uint32_t)i, AB_PURPOSE_TOPIC_CUT, 0, u);
    return u[0] < p_cut;
}

int ab_haystack_topics(const ab_haystack_cfg *c, ab_rng r, int n, int *topic)
{
    /* A segment starts at each i > 0 independently with probability 1/L:
     * segment lengths are geometric with mean L; each start is a pure
     * function of (seed, i), so a prefix scan gives the segment index. */
    double p_cut = c->topic_len > 1.0 ? 1.0 / c->topic_len : 1.0;
    int t = 0;
    for (int i = 0; i < n; i++) {
        t += topic_starts_at(r, p_cut, i);
        topic[i] = t;
    }
    return n > 0 ? t + 1 : 0;
}

int ab_haystack_is_vertical(const ab_haystack_cfg *c, ab_rng r, int head, int j)
{
    hay_ctx x = { .r = r, .vert_rate = c->vertical_per_1k / 1000.0 };
    return is_vertical(&x, head, j);
}

int ab_haystack_generate(const ab_haystack_cfg *c, const ab_shape *s, ab_rng r, float *q, float *k, float *v)
{
    if (!q || !k || !v) return AB_EINVAL;
    hay_ctx x;
    int rc = ctx_init(&x, c, s, r);
    if (rc != AB_OK) return rc;
    const int H = s->heads, N = s->seq_len, d = s->head_dim;
    int *topic = malloc((size_t)N * sizeof *topic); /* [N] */
    if (!topic) return AB_ENOMEM;
    ab_haystack_topics(c, r, N, topic);
    const int64_t rows = (int64_t)H * N;
#pragma omp parallel for schedule(static)
    for (int64_t hi = 0; hi < rows; hi++) {
        int h = (int)(hi / N), i = (int)(hi % N);
        size_t off = (size_t)hi * (size_t)d;
        gen_row(&x, h, i, topic[i], q + off, k + off, v + off);
    }
    free(topic);
    return AB_OK;
}

int ab_haystack_row(const ab_haystack_cfg *c, const ab_shape *s, ab_rng r, int head, int row, float *q_row,
                    float *k_row, float *v_row)
{
    hay_ctx x;
    int rc = ctx_init(&x, c, s, r);
    if (rc != AB_OK) return rc;
    if (head < 0 || head >= s->heads || row < 0 || row >= s->seq_len) return AB_EINVAL;
    double p_cut = c->topic_len > 1.0 ? 1.0 / c->topic_len : 1.0;
    int t = 0;
    for (int i = 1; i <= row; i++) t += topic_starts_at(r, p_cut, i);
    gen_row(&x, head, row, t, q_row, k_row, v_row);
    return AB_OK;
}
