/* spark.c — `spark`: statistical top-k token selection, after the
 * "statistical top-k" of Spark Transformer (You et al. 2025, "Spark
 * Transformer: Reactivating Sparsity in FFN and Attention"): instead of sorting a row's scores, fit their mean μ and
 * standard deviation σ and keep every entry above μ + z·σ (for Gaussian
 * scores that keeps a fraction 1 − Φ(z) in linear time; Spark sets
 * z = Φ⁻¹(1 − k/n) for a target k).
 *
 * Here, as docs/spec/METHODS.md describes it: per query row i, μ and σ of
 * the scaled logits are estimated from `samples` = 64 keys drawn (seeded by
 * pb->seed, head and row, with replacement) among the keys the row may see
 * (its base-mask span: [0, i] under causal, its document's keys under a
 * document mask); the row keeps every key of that span whose exact logit
 * exceeds μ + z·σ, plus the first
 * `sinks` keys and the `local` keys ending at the diagonal (always kept, as
 * Spark-style selectors do for sinks/recency). The layout holds one list per
 * query block, so rows are grouped in blocks of block_q = 16 and each block
 * keeps the union of its rows' sets (density is measured, so the union's
 * extra keys are counted). Knob z: density falls as z rises, continuously.
 * Deviation: Spark computes the scores it thresholds with a cheap low-rank
 * predictor inside a trained model; training-free, we threshold the exact
 * logits, so selection costs O(N² d) (reported as select time).
 * Memory: O(block_q · N) per thread.
 */
#include "attnbench.h"
#include "methods/block_score.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { P_Z = 0, P_SAMPLES, P_SINKS, P_LOCAL, P_BLOCKQ, P_COUNT };

typedef struct spark_state {
    double z;    /* threshold in standard deviations above the mean */
    int samples; /* keys sampled per row for mean/std */
    int sinks;   /* leading keys always kept */
    int local;   /* keys ending at the diagonal always kept */
    int block_q; /* query rows sharing one key list */
} spark_state;

static int spark_init(void *state, const ab_params *p, const ab_shape *s)
{
    spark_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "spark: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_Z] >= -16 && p->v[P_Z] <= 64)) {
        ab_set_error(state, "spark: z=%g outside [-16, 64]", p->v[P_Z]);
        return AB_EINVAL;
    }
    if (!(p->v[P_SAMPLES] >= 2 && p->v[P_SAMPLES] <= (1 << 20)) ||
        !(p->v[P_SINKS] >= 0 && p->v[P_SINKS] <= (1 << 20)) ||
        !(p->v[P_LOCAL] >= 0 && p->v[P_LOCAL] <= (1 << 20)) ||
        !(p->v[P_BLOCKQ] >= 1 && p->v[P_BLOCKQ] <= 4096)) {
        ab_set_error(state, "spark: samples/sinks/local/block_q out of range");
        return AB_EINVAL;
    }
    st->z = p->v[P_Z];
    st->samples = (int)p->v[P_SAMPLES];
    st->sinks = (int)p->v[P_SINKS];
    st->local = (int)p->v[P_LOCAL];
    st->block_q = (int)p->v[P_BLOCKQ];
    return AB_OK;
}

static int spark_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const spark_state *st = state;
    int rc = ab_layout_set_blocks(
        l, st->block_q < l->seq_len ? st->block_q : (l->seq_len > 0 ? l->seq_len : 1), l->block_k);
    if (rc != AB_OK) return rc;
    const int H = l->heads, N = l->seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    const int bq = l->block_q, nqb = l->n_qblocks, rows = H * nqb;
    const ab_mask mask = ab_shape_mask(&pb->s);

#pragma omp parallel
    {
        float *s = malloc((size_t)bq * N * sizeof *s);         /* (block_q, N) scaled logits */
        float *kt = malloc((size_t)d * BS_PANEL * sizeof *kt); /* (d, BS_PANEL) */
        unsigned char *keep = malloc((size_t)N);               /* (N) union mark */
        int32_t *keys = malloc((size_t)N * sizeof *keys);      /* (N) kept keys of one block */
        int ok = s && kt && keep && keys;
        if (!ok) {
#pragma omp atomic write
            rc = AB_ENOMEM;
        }
#pragma omp for schedule(dynamic, 4)
        for (int r = 0; r < rows; r++) {
            if (!ok) continue;
            const int h = r / nqb, qb = r % nqb;
            const int r0 = qb * bq, nr = N - r0 < bq ? N - r0 : bq;
            const int kc = causal ? r0 + nr : N;
            bs_logits(pb->q + ((size_t)h * N + r0) * d, nr, pb->k + (size_t)h * N * d, kc, d, pb->s.scale, s,
                      kt);
            memset(keep, 0, (size_t)kc);
            for (int i = 0; i < nr; i++) {
                const int gi = r0 + i, nv = causal ? gi + 1 : N;
                const float *srow = s + (size_t)i * kc;
                int sa, sb; /* the row's base-mask span [sa, sb), within [0, nv) */
                ab_mask_span(&mask, gi, &sa, &sb);
                sb = sb < nv ? sb : nv;
                if (sa < sb) {
                    /* mean and std of the logits from a seeded sample */
                    uint64_t key = mc_mix64(pb->seed ^ mc_mix64(((uint64_t)h << 32) | (uint32_t)gi));
                    double sum = 0.0, sq = 0.0;
                    for (int t = 0; t < st->samples; t++) {
                        key = mc_mix64(key);
                        const double x = srow[sa + (int)((key >> 11) % (uint64_t)(sb - sa))];
                        sum += x;
                        sq += x * x;
                    }
                    const double mu = sum / st->samples;
                    const double var = sq / st->samples - mu * mu;
                    const float thr = (float)(mu + st->z * sqrt(var > 0 ? var : 0));
                    for (int j = sa; j < sb; j++) keep[j] |= srow[j] > thr;
                }
                const int s1 = st->sinks < nv ? st->sinks : nv;
                for (int j = 0; j < s1; j++) keep[j] = 1;
                const int lo = gi - st->local + 1;
                const int hi = causal ? gi : gi + st->local - 1;
                for (int j = lo < 0 ? 0 : lo; j <= hi && j < nv; j++) keep[j] = 1;
            }
            int n = 0;
            for (int j = 0; j < kc; j++)
                if (keep[j]) keys[n++] = j;
            const int ra = ab_layout_add_tokens(l, h, qb, keys, n);
            if (ra != AB_OK) {
                ok = 0;
#pragma omp atomic write
                rc = ra;
            }
        }
        free(s);
        free(kt);
        free(keep);
        free(keys);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "spark: out of memory");
    return rc;
}

const ab_method ab_spark = {
    .abi = AB_ABI_VERSION,
    .name = "spark",
    .summary = "statistical top-k: per row keep logits > mean + z*std (sampled), + sinks/local; exact logits",
    .reference = "Spark Transformer statistical top-k (You et al. 2025, Spark Transformer: Reactivating Sparsity in FFN and Attention)",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_Z] = { .name = "z", .def = 2.0, .min = -4.0, .max = 12.0, .is_int = 0,
                  .help = "threshold mean + z*std of the row's logits (density falls with z)" },
        [P_SAMPLES] = { .name = "samples", .def = 64, .min = 2, .max = 1 << 20, .is_int = 1,
                        .help = "keys sampled per row to estimate mean and std" },
        [P_SINKS] = { .name = "sinks", .def = 4, .min = 0, .max = 1 << 20, .is_int = 1,
                      .help = "leading keys always kept" },
        [P_LOCAL] = { .name = "local", .def = 16, .min = 0, .max = 1 << 20, .is_int = 1,
                      .help = "keys ending at the diagonal always kept" },
        [P_BLOCKQ] = { .name = "block_q", .def = 16, .min = 1, .max = 4096, .is_int = 1,
                       .help = "query rows sharing one key list (union of their rows)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_Z, .increasing = 0, .log_scale = 0 },
    .state_size = sizeof(spark_state),
    .init = spark_init,
    .select = spark_select,
    .run = NULL, /* gather kernel */
    .fini = NULL,
};
AB_REGISTER(ab_spark)
