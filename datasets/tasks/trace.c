/* trace.c — the `trace` task (docs/spec/TASKS.md §3, §6): real Q, K, V of one
 * attention layer loaded from an HDF5 trace file (datasets/gen/trace.h), e.g.
 * the shipped datasets/traces/minilm_l6.h5 captured from all-MiniLM-L6-v2
 * (Wang et al. 2020, arXiv:2002.10957) by scripts/make_trace.py.
 *
 * `[task.trace] file = PATH` (relative paths resolve against the current
 * directory) and `layer = L` pick /layer_L. The run uses the first seq_len
 * tokens and the first `heads` query heads; head_dim must equal the trace's
 * d. check() validates the file's structure and the requested shapes before
 * any work (exit 2 on failure); generate() loads, converts float16, expands
 * grouped K/V heads and rejects NaN/Inf. Seed and depth are not used. There
 * is no planted answer (n = 0): a point is scored by mass recall, top-k
 * recall and output error only. The data do not depend on the base mask
 * (in->s.mask only decides what the kernels and the reference attend to):
 * a causal trace under a non-causal mask is still just data.
 */
#include <math.h>
#include <string.h>

#include "attnbench.h"
#include "datasets/gen/trace.h"

enum { P_LAYER, P_COUNT };
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

static int trace_generate(const ab_task_input *in, float *q, float *k, float *v, ab_answer *ans)
{
    if (!in || !q || !k || !v || !ans || !in->p || in->p->n < P_COUNT) return AB_EINVAL;
    memset(ans, 0, sizeof *ans); /* no planted answer */
    char why[400] = "";
    int rc = ab_trace_load(trace_file(in), (int)lround(in->p->v[P_LAYER]), &in->s, q, k, v, why, sizeof why);
    if (rc != AB_OK) ab_set_error(in, "%s", why);
    return rc;
}

const ab_task trace_task = {
    .abi = AB_ABI_VERSION,
    .name = "trace",
    .summary = "real Q/K/V of one layer from an HDF5 trace file (scored by recall and "
               "output error)",
    .params = {
        {"layer", 0, 0, 1000000, 1, "layer L: reads /layer_L/{q,k,v}"},
        {NULL, 0, 0, 0, 0, NULL},
    },
    .string_params = {"file", NULL},
    .generate = trace_generate,
    .check = trace_check,
};

AB_REGISTER_TASK(trace_task)
