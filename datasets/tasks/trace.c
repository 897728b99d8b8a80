/* trace.c — the `trace` task (docs/traces.md, docs/tasks.md): real Q, K, V of
 * one attention layer loaded from an HDF5 trace file (datasets/gen/trace.h),
 * e.g. the shipped datasets/traces/minilm_l6.h5 captured from
 * all-MiniLM-L6-v2 (Wang et al. 2020, arXiv:2002.10957) by
 * scripts/make_trace.py, or a user's own model exported by
 * scripts/export_trace.py.
 *
 * `[task.trace] file = PATH` (relative paths resolve against the current
 * directory) and `layer = L` pick /layer_L; `layer = 0, 8, 15` sweeps the
 * layers (a list-valued task parameter is an axis). The run uses the first
 * seq_len tokens (so seq_lens sweep prefixes) and the first `heads` query
 * heads; head_dim must equal the trace's d. check() validates the file's
 * structure and the requested shapes before any work (exit 2 on failure);
 * generate() loads, converts float16 / bfloat16, maps grouped K/V heads and
 * rejects NaN/Inf. Seed and depth are not used. The data do not depend on
 * the base mask (in->s.mask only decides what the kernels and the reference
 * attend to): a causal trace under a non-causal mask is still just data.
 *
 * Answers: a trace without a needle has none (scored by mass recall, top-k
 * recall and output error). An answer-bearing trace (root attributes
 * needle_start/_end, question_start/_end) whose question rows lie inside
 * the prefix carries mass answers: each (head, question row) whose exact
 * attention puts at least `needle_mass` of its mass on the needle's tokens
 * is a trial, right when the method's kept keys hold at least `mass_share`
 * of that needle mass (metrics.c). Heads that do not look at the needle are
 * not trials: they retrieve nothing a method could lose.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"
#include "datasets/gen/trace.h"

enum { P_LAYER, P_NEEDLE_MASS, P_MASS_SHARE, P_COUNT };
enum { S_FILE };

static const char *trace_file(const ab_task_input *in) { return in->str ? in->str[S_FILE] : NULL; }

static int trace_check(const ab_task_input *in)
{
    if (!in || !in->p || in->p->n < P_COUNT) return AB_EINVAL;
    char why[400] = "";
    int rc = ab_trace_check(trace_file(in), (int)lround(in->p->v[P_LAYER]), &in->s, NULL, why, sizeof why);
    if (rc != AB_OK) ab_set_error(in, "%s", why);
    return rc;
}

/* The mass answers of an answer-bearing trace (see the header). */
static int trace_answers(const ab_task_input *in, const ab_trace_meta *m, const float *q, const float *k,
                         ab_answer *ans)
{
    const int H = in->s.heads, N = in->s.seq_len, d = in->s.head_dim;
    const int R = m->question_end - m->question_start;
    ans->head = malloc(sizeof(int) * (size_t)H * R); /* [H * R] */
    ans->row = malloc(sizeof(int) * (size_t)H * R);  /* [H * R] */
    double *lg = malloc(sizeof(double) * (size_t)N); /* [N] */
    if (!ans->head || !ans->row || !lg) {
        free(lg);
        ab_answer_free(ans);
        return AB_ENOMEM;
    }
    const ab_mask mask = ab_shape_mask(&in->s);
    for (int h = 0; h < H; h++)
        for (int i = m->question_start; i < m->question_end; i++) {
            const float *qi = q + ((size_t)h * N + i) * d;
            double mx = -INFINITY, z = 0, zs = 0;
            for (int j = 0; j < N; j++) {
                lg[j] = -INFINITY;
                if (!ab_mask_allows(&mask, i, j)) continue;
                const float *kj = k + ((size_t)h * N + j) * d;
                double x = 0;
                for (int c = 0; c < d; c++) x += (double)qi[c] * kj[c];
                lg[j] = x * in->s.scale;
                if (lg[j] > mx) mx = lg[j];
            }
            for (int j = 0; j < N && mx > -INFINITY; j++) {
                const double e = exp(lg[j] - mx);
                z += e;
                if (j >= m->needle_start && j < m->needle_end) zs += e;
            }
            if (z > 0 && zs >= in->p->v[P_NEEDLE_MASS] * z) {
                ans->head[ans->n] = h;
                ans->row[ans->n] = i;
                ans->n++;
            }
        }
    free(lg);
    ans->n_groups = ans->n;
    ans->head_dim = d;
    ans->span_lo = m->needle_start;
    ans->span_hi = m->needle_end;
    ans->mass_share = in->p->v[P_MASS_SHARE];
    if (ans->n == 0) { /* no head looks at the needle: nothing to score */
        free(ans->head);
        free(ans->row);
        ans->head = ans->row = NULL;
        ans->span_lo = ans->span_hi = 0;
    }
    return AB_OK;
}

static int trace_generate(const ab_task_input *in, float *q, float *k, float *v, ab_answer *ans)
{
    if (!in || !q || !k || !v || !ans || !in->p || in->p->n < P_COUNT) return AB_EINVAL;
    memset(ans, 0, sizeof *ans);
    char why[400] = "";
    int rc = ab_trace_load(trace_file(in), (int)lround(in->p->v[P_LAYER]), &in->s, q, k, v, why, sizeof why);
    ab_trace_meta m;
    if (rc == AB_OK) rc = ab_trace_meta_read(trace_file(in), &m, why, sizeof why);
    if (rc != AB_OK) {
        ab_set_error(in, "%s", why);
        return rc;
    }
    if (m.needle_end > m.needle_start && m.question_end <= in->s.seq_len)
        rc = trace_answers(in, &m, q, k, ans);
    if (rc != AB_OK) ab_set_error(in, "out of memory building the trace's answers");
    return rc;
}

const ab_task trace_task = {
    .abi = AB_ABI_VERSION,
    .name = "trace",
    .summary = "real Q/K/V of one layer from an HDF5 trace file (scored by recall and output error; "
               "answer-bearing traces also by needle accuracy)",
    .params = {
        {"layer", 0, 0, 1000000, 1, "layer L: reads /layer_L/{q,k,v} (a list sweeps layers)"},
        {"needle_mass", 0.1, 0, 1, 0,
         "answer-bearing traces: a (head, question row) is a trial when the needle holds this share of its "
         "attention"},
        {"mass_share", 0.5, 0, 1, 0, "a trial is right when the kept keys hold this share of the needle's mass"},
        {NULL, 0, 0, 0, 0, NULL},
    },
    .string_params = {"file", NULL},
    .generate = trace_generate,
    .check = trace_check,
};

AB_REGISTER_TASK(trace_task)
