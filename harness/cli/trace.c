/* trace.c — `attnbench trace-info T.h5` (what a trace file holds, validated)
 * and `attnbench trace-run T.h5 --layer L -o OUT.f32` (one method's output on
 * a trace layer, raw float32, for round trips against the model's own
 * attention). The format: docs/traces.md; the reader: datasets/gen/trace.c. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"
#include "datasets/gen/trace.h"
#include "harness/cli/cli.h"
#include "runtime/layout.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"

static void info_usage(FILE *f)
{
    fputs("usage: attnbench trace-info T.h5 [--quick]\n"
          "Print what an attnbench trace holds (model, tokens, layers, shapes, dtypes,\n"
          "GQA mapping, answer span) and validate it: structure, shapes, the K/V head map,\n"
          "the answer span, and (unless --quick) that every stored value is finite.\n"
          "Ends with the config lines that sweep it (configs/trace.ini).\n"
          "Exit: 0 valid, 2 a bad or unreadable file (one line naming file and dataset).\n",
          f);
}

static void run_usage(FILE *f)
{
    fputs("usage: attnbench trace-run T.h5 --layer L -o OUT.f32 [--method NAME] [--tokens N]\n"
          "                           [--heads H] [--mask causal|full] [--param k=v ...]\n"
          "Run one method (default dense) on a trace layer and write its output as raw\n"
          "little-endian float32 [H, N, d] (row-major): the first N tokens (default all)\n"
          "and the first H query heads (default all), K/V heads mapped as the trace says,\n"
          "the logits scaled by the layer's `scale`. --mask defaults to the layer's\n"
          "`causal` attribute (causal when absent). Used by tests/trace_roundtrip.py to\n"
          "compare attnbench's dense attention with the model's own.\n"
          "Exit: 0 written, 1 the method failed, 2 usage error or bad trace (nothing written).\n",
          f);
}

static const char *dtype_name(const ab_trace_info *i)
{
    return i->bf16 ? "bfloat16" : i->elem_bytes == 2 ? "float16" : "float32";
}

int ab_cmd_trace_info(int argc, char **argv)
{
    const char *path = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            info_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (argv[i][0] == '-' || path) {
            ab_errorf("trace-info: unexpected argument '%s'", argv[i]);
            info_usage(stderr);
            return 2;
        } else
            path = argv[i];
    }
    if (!path) {
        info_usage(stderr);
        return 2;
    }
    char err[512] = "";
    ab_trace_meta *m = calloc(1, sizeof *m);
    if (!m) return 2;
    if (ab_trace_meta_read(path, m, err, sizeof err) != AB_OK) {
        ab_errorf("trace-info: %s", err);
        free(m);
        return 2;
    }
    printf("trace %s: attnbench-trace version %d\n", path, m->version);
    printf("  source: %s%s%s%s\n", m->source[0] ? m->source : "(not recorded)", m->model_type[0] ? " (" : "",
           m->model_type, m->model_type[0] ? ")" : "");
    printf("  weights: %s\n", m->synthetic == 0   ? "a real model"
                              : m->synthetic == 1 ? "synthetic (random weights or generated data)"
                                                  : "(not recorded)");
    if (m->config_sha256[0]) printf("  config sha256: %s\n", m->config_sha256);
    if (m->n_tokens >= 0)
        printf("  tokens: %lld%s%s\n", m->n_tokens, m->prompt_sha256[0] ? ", prompt sha256 " : "",
               m->prompt_sha256);
    int rc = 0, H0 = 0, d0 = 0;
    long long N0 = -1;
    char layers[1024] = "";
    for (int li = 0; li < m->n_layers && rc == 0; li++) {
        const int L = m->layers[li];
        ab_trace_info in;
        if (ab_trace_check(path, L, NULL, &in, err, sizeof err) != AB_OK) {
            ab_errorf("trace-info: %s", err);
            rc = 2;
            break;
        }
        if (m->n_tokens >= 0 && in.n != m->n_tokens) {
            ab_errorf("trace-info: trace %s: /layer_%d has N = %d tokens but the trace says %lld", path, L,
                      in.n, m->n_tokens);
            rc = 2;
            break;
        }
        printf("  layer %d: q [%d, %d, %d], k/v [%d, %d, %d] %s; %s; causal %d, scale %.6g, rope %s\n", L,
               in.heads, in.n, in.d, in.kv_heads, in.n, in.d, dtype_name(&in),
               in.has_kv_map             ? "kv_map given"
               : in.kv_heads == in.heads ? "one K/V head per query head"
                                         : "query head h reads K/V head h / (H / H_kv)",
               in.causal, in.scale,
               in.rope_applied < 0 ? "not recorded"
               : in.rope_applied   ? "applied"
                                   : "none");
        if (!quick) {
            ab_shape s = { .heads = in.heads, .seq_len = in.n, .head_dim = in.d, .causal = 1 };
            s.scale = (float)in.scale; /* load exactly as stored */
            const size_t t = (size_t)in.heads * in.n * in.d;
            float *q = malloc(t * sizeof *q), *k = malloc(t * sizeof *k), *v = malloc(t * sizeof *v);
            int lr = q && k && v ? ab_trace_load(path, L, &s, q, k, v, err, sizeof err) : AB_ENOMEM;
            if (lr == AB_ENOMEM && !err[0]) snprintf(err, sizeof err, "out of memory loading /layer_%d", L);
            free(q);
            free(k);
            free(v);
            if (lr != AB_OK) {
                ab_errorf("trace-info: %s", err);
                rc = 2;
                break;
            }
        }
        if (li == 0) {
            H0 = in.heads;
            d0 = in.d;
            N0 = in.n;
        } else if (in.heads < H0)
            H0 = in.heads;
        size_t o = strlen(layers);
        snprintf(layers + o, sizeof layers - o, "%s%d", li ? ", " : "", L);
    }
    if (rc == 0 && m->needle_end > m->needle_start) {
        if (m->question_end > N0) {
            ab_errorf("trace-info: trace %s: question rows end at %d, past the %lld stored tokens", path,
                      m->question_end, N0);
            rc = 2;
        } else
            printf("  needle: tokens [%d, %d), question rows [%d, %d)%s%s%s\n", m->needle_start,
                   m->needle_end, m->question_start, m->question_end, m->passkey[0] ? ", passkey \"" : "",
                   m->passkey, m->passkey[0] ? "\"" : "");
    }
    if (rc == 0) {
        printf("ok: %d layer%s%s\n", m->n_layers, m->n_layers == 1 ? "" : "s",
               quick ? " (structure checked; values not scanned: --quick)" : ", every value finite");
        printf("sweep it (configs/trace.ini):\n"
               "  [sweep]  tasks = trace; seq_lens = <prefixes <= %lld>; heads = %d; head_dims = %d\n"
               "  [task.trace]  file = %s\n"
               "                layer = %s\n",
               N0, H0, d0, path, layers);
    }
    free(m);
    return rc;
}

int ab_cmd_trace_run(int argc, char **argv)
{
    const char *path = NULL, *out = NULL, *method = "dense", *mask = NULL;
    const char *params[AB_MAX_PARAMS];
    int np = 0, layer = -1, tokens = 0, heads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int more = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            run_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--layer") && more)
            layer = atoi(argv[++i]);
        else if (!strcmp(a, "--tokens") && more)
            tokens = atoi(argv[++i]);
        else if (!strcmp(a, "--heads") && more)
            heads = atoi(argv[++i]);
        else if (!strcmp(a, "--method") && more)
            method = argv[++i];
        else if (!strcmp(a, "--mask") && more)
            mask = argv[++i];
        else if (!strcmp(a, "--param") && more && np < AB_MAX_PARAMS)
            params[np++] = argv[++i];
        else if (!strcmp(a, "-o") && more)
            out = argv[++i];
        else if (a[0] != '-' && !path)
            path = a;
        else {
            ab_errorf("trace-run: unexpected argument '%s'", a);
            run_usage(stderr);
            return 2;
        }
    }
    if (!path || !out || layer < 0) {
        ab_errorf("trace-run: need T.h5, --layer L and -o OUT.f32");
        run_usage(stderr);
        return 2;
    }
    if (mask && strcmp(mask, "causal") && strcmp(mask, "full")) {
        ab_errorf("trace-run: --mask '%s': want causal or full", mask);
        return 2;
    }
    const ab_method *m = ab_method_find(method);
    if (!m) {
        ab_errorf("trace-run: unknown method '%s' (see: attnbench list methods)", method);
        return 2;
    }
    ab_params prm;
    ab_params_defaults(m->params, AB_MAX_PARAMS, &prm);
    for (int i = 0; i < np; i++) {
        char name[64];
        const char *eq = strchr(params[i], '=');
        char *end = NULL;
        double v = eq ? strtod(eq + 1, &end) : NAN;
        if (!eq || (size_t)(eq - params[i]) >= sizeof name || end == eq + 1 || *end) {
            ab_errorf("trace-run: --param '%s': want name=number", params[i]);
            return 2;
        }
        snprintf(name, sizeof name, "%.*s", (int)(eq - params[i]), params[i]);
        if (ab_params_set(m->params, AB_MAX_PARAMS, &prm, name, v) != AB_OK) {
            ab_errorf("trace-run: --param %s: method %s has no such parameter", name, method);
            return 2;
        }
    }
    char err[512] = "";
    ab_trace_info ti;
    if (ab_trace_check(path, layer, NULL, &ti, err, sizeof err) != AB_OK) {
        ab_errorf("trace-run: %s", err);
        return 2;
    }
    if (tokens < 0 || tokens > ti.n || heads < 0 || heads > ti.heads) {
        ab_errorf(
            "trace-run: trace %s: /layer_%d has %d tokens and %d heads; --tokens %d --heads %d do not fit",
            path, layer, ti.n, ti.heads, tokens, heads);
        return 2;
    }
    ab_shape s = { .heads = heads ? heads : ti.heads, .seq_len = tokens ? tokens : ti.n, .head_dim = ti.d };
    s.causal = mask ? !strcmp(mask, "causal") : ti.causal != 0;
    s.scale = 1.0f / sqrtf((float)s.head_dim);
    const size_t t = (size_t)s.heads * s.seq_len * s.head_dim;
    float *q = malloc(t * sizeof *q), *k = malloc(t * sizeof *k), *v = malloc(t * sizeof *v);
    float *o = malloc(t * sizeof *o);
    int rc = 2;
    ab_instance in;
    ab_layout l;
    int made = 0;
    if (!q || !k || !v || !o) {
        ab_errorf("trace-run: out of memory for [%d, %d, %d]", s.heads, s.seq_len, s.head_dim);
        goto done;
    }
    if (ab_trace_load(path, layer, &s, q, k, v, err, sizeof err) != AB_OK) {
        ab_errorf("trace-run: %s", err);
        goto done;
    }
    ab_problem pb = { s, q, k, v, 1, 0, NULL, 0, NULL, NULL, NULL };
    ab_layout_init(&l, &s, 64, 64);
    made = 1;
    int r = ab_instance_create(&in, m, &prm, &s);
    if (r == AB_OK) r = ab_instance_select(&in, &pb, &l);
    if (r == AB_OK) r = ab_layout_finalize(&l);
    if (r == AB_OK) r = ab_instance_run(&in, &pb, &l, o);
    if (r != AB_OK) {
        const char *e = ab_instance_error(&in);
        ab_errorf("trace-run: %s on %s /layer_%d: %s%s%s", method, path, layer, ab_strerror(r),
                  *e ? ": " : "", e);
        rc = 1;
        goto done;
    }
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(o, sizeof *o, t, f) != t || fclose(f) != 0) {
        ab_errorf("trace-run: writing %s: %s", out, strerror(errno));
        rc = 1;
        goto done;
    }
    printf("trace-run: %s on %s /layer_%d: [%d, %d, %d] float32 -> %s\n", method, path, layer, s.heads,
           s.seq_len, s.head_dim, out);
    rc = 0;
done:
    if (made) {
        ab_instance_destroy(&in);
        ab_layout_free(&l);
    }
    free(q);
    free(k);
    free(v);
    free(o);
    return rc;
}
