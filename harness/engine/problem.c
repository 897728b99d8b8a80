/* problem.c — one problem in a shared arena (problem.h): sizing, mapping,
 * and the data child that generates it and builds its reference. */
#include "harness/engine/problem.h"
#include "harness/engine/measure.h"
#include "harness/engine/tensors.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"

#include <ctype.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void *arena_alloc(void *ctx, size_t bytes)
{
    arena_hdr *a = ctx;
    size_t off = (a->used + 63) & ~(size_t)63;
    if (off + bytes > a->size) return NULL;
    a->used = off + bytes;
    return (char *)a + off;
}

static size_t arena_size(const base_pt *b, const ab_config *c)
{
    if (b->phase == AB_DECODE) { /* K, V at the KV heads, the steps' queries, the reference rows */
        const size_t rows = (size_t)b->n + b->steps, qh = (size_t)b->layers * b->batch * b->heads;
        const size_t kv = (size_t)b->layers * b->batch * b->kv_heads * rows * b->d * 4;
        const size_t ref =
            qh * b->steps * ((size_t)b->d * 8 + 16 + (size_t)c->topk * 4) + (size_t)b->steps * 4;
        const size_t ans = qh * rows * 6 * 4 + ((size_t)1 << 22);
        return sizeof(arena_hdr) + 2 * kv + qh * b->steps * b->d * 4 + ref + ans + ((size_t)1 << 20);
    }
    size_t t = (size_t)b->heads * b->n * b->d;
    size_t rows = (size_t)b->n;
    size_t ref = (size_t)b->heads * rows * ((size_t)b->d * 8 + 16 + (size_t)c->topk * 4) + rows * 4;
    size_t ans = (size_t)b->heads * rows * 6 * 4 + ((size_t)1 << 22);
    return sizeof(arena_hdr) + (b->heldout ? 6 : 3) * t * 4 + ref + ans + ((size_t)1 << 20);
}

static int copy_ints(arena_hdr *a, int **dst, const int *src, int n)
{
    if (!src) {
        *dst = NULL;
        return 0;
    }
    *dst = arena_alloc(a, sizeof(int) * (size_t)(n ? n : 1));
    if (!*dst) return -1;
    memcpy(*dst, src, sizeof(int) * (size_t)n);
    return 0;
}

static void data_problem(arena_hdr *a, const base_pt *b, const ab_config *c, int threads,
                         const char *save_dir, const char *problem, ab_shape s)
{
    ab_answer ans;
    memset(&ans, 0, sizeof ans);
    char why[200] = "";
    ab_task_input in = {
        .p = &b->tparams, .str = b->tstr, .s = s, .seed = (uint64_t)b->seed, .depth = b->depth
    };
    int rc = ab_task_generate(b->task, &in, a->q, a->k, a->v, &ans, why, sizeof why);
    if (rc) {
        a->status = rc;
        snprintf(a->msg, sizeof a->msg, "task %s: %s", b->task->name, why[0] ? why : ab_strerror(rc));
        ab_answer_free(&ans);
        return;
    }
    if (a->hq) { /* the held-out draw: the same task at another seed; its answer is not needed */
        ab_answer hans;
        memset(&hans, 0, sizeof hans);
        ab_task_input hin = in;
        hin.seed = a->hseed = ab_heldout_seed((uint64_t)b->seed);
        rc = ab_task_generate(b->task, &hin, a->hq, a->hk, a->hv, &hans, why, sizeof why);
        ab_answer_free(&hans);
        if (rc) {
            a->status = rc;
            snprintf(a->msg, sizeof a->msg, "task %s (held-out draw): %s", b->task->name,
                     why[0] ? why : ab_strerror(rc));
            ab_answer_free(&ans);
            return;
        }
        const size_t t = sizeof(float) * (size_t)s.heads * s.seq_len * s.head_dim;
        if (!memcmp(a->hq, a->q, t) && !memcmp(a->hk, a->k, t)) /* the task ignores its seed (a trace) */
            a->hq = a->hk = a->hv = NULL;
    }
    a->ans = ans;
    if (copy_ints(a, &a->ans.head, ans.head, ans.n) || copy_ints(a, &a->ans.row, ans.row, ans.n) ||
        copy_ints(a, &a->ans.code, ans.code, ans.n) || copy_ints(a, &a->ans.key_pos, ans.key_pos, ans.n) ||
        copy_ints(a, &a->ans.group, ans.group, ans.n)) {
        a->status = AB_ENOMEM;
        snprintf(a->msg, sizeof a->msg, "arena too small for the answer");
        ab_answer_free(&ans);
        return;
    }
    a->ans.codebook = NULL;
    if (ans.codebook) {
        size_t cb = sizeof(float) * (size_t)ans.n_codes * ans.head_dim;
        a->ans.codebook = arena_alloc(a, cb);
        if (!a->ans.codebook) {
            a->status = AB_ENOMEM;
            ab_answer_free(&ans);
            return;
        }
        memcpy(a->ans.codebook, ans.codebook, cb);
    }
    int *rows = malloc(sizeof(int) * (size_t)b->n);
    if (!rows) {
        a->status = AB_ENOMEM;
        ab_answer_free(&ans);
        return;
    }
    int nr = ab_choose_rows(b->n, c->exact_max_n, ans.row, ans.n, c->score_rows, (uint64_t)b->seed, rows);
    ab_answer_free(&ans);
    ab_problem hpb, pb = { s, a->q, a->k, a->v, (uint64_t)b->seed, threads, NULL, 0, NULL, NULL, NULL };
    pb.heldout = ab_arena_heldout(a, s, threads, &hpb); /* saved with the tensors */
    rc = nr < 0 ? AB_ENOMEM : ab_refset_build(&a->ref, &pb, rows, nr, c->topk, arena_alloc, a);
    free(rows);
    if (rc) {
        a->status = rc;
        snprintf(a->msg, sizeof a->msg, "reference: %s", ab_strerror(rc));
        return;
    }
    if (save_dir && ab_tensors_write_problem(save_dir, problem, &pb, &a->ref, a->msg, sizeof a->msg))
        a->status = AB_EINTERNAL;
}

/* ---- grouped KV heads and the decode stack (docs/decode.md) ---------------
 * The task generates B * kv_heads heads (one per KV head of each sequence);
 * a query head of group g is a correlated copy of the group's query,
 * sqrt(1 - tau^2) q_g + tau sigma z (tau = AB_GQA_TAU, sigma the row's RMS,
 * z seeded per head and row), so every head of a group retrieves what its
 * KV head holds, with its own noise; the answers are replicated per head.
 * Decode stacks L layers: layer l's cache is layer l-1's with each of the
 * first N keys left in place with probability rho = layer_corr and the
 * others shuffled among themselves (a key and its value move together); the
 * answers' keys and the steps' own keys never move, and every layer asks the
 * steps' queries of layer 0. So a key heavy for a query in one layer is at
 * the same position in the next with probability rho: position persistence
 * is the knob layer_corr. Each layer holds the same set of keys, so every
 * row's log-partition, and dense attention's answer, is the same in every
 * layer. (A first version mixed fresh draws of the task, rho x layer l-1 +
 * sqrt(1 - rho^2) x draw l; the planted query then met haystacks it was not
 * planted against, and dense decode lost half the needles by layer 8.) */
#define AB_GQA_TAU 0.3

/* the replicated head index of (layer, sequence b, KV head k, member i) */
static int rep_head(const base_pt *b, int layer, int hg, int i)
{
    const int G = b->heads / b->kv_heads, bb = hg / b->kv_heads, k = hg % b->kv_heads;
    return (layer * b->batch + bb) * b->heads + k * G + i;
}

/* The RMS of a head's queries over its T rows: the noise scale of its
 * group's copies (a row's own norm would scale the noise with a planted
 * query's spike and drown the answer). */
static double head_rms(const float *q, int T, int d)
{
    double ss = 0;
    for (size_t i = 0; i < (size_t)T * d; i++) ss += (double)q[i] * q[i];
    return sqrt(ss / ((double)T * d));
}

/* q_out (d) = the copy of q_g for member i of its group at row `row` */
static void gqa_copy(const float *qg, float *out, int d, int G, double sig, uint64_t seed, int head, int row)
{
    if (G == 1) {
        memcpy(out, qg, sizeof(float) * (size_t)d);
        return;
    }
    const double a = sqrt(1.0 - AB_GQA_TAU * AB_GQA_TAU);
    uint64_t st = ab_mix64(seed ^ ab_mix64(((uint64_t)head << 32) ^ (uint64_t)row ^ 0x677161ull));
    for (int c = 0; c < d; c += 2) { /* Box-Muller pairs */
        const double u = ((ab_splitmix64(&st) >> 11) + 0.5) * 0x1.0p-53,
                     w = ((ab_splitmix64(&st) >> 11) + 0.5) * 0x1.0p-53;
        const double r = sqrt(-2.0 * log(u));
        out[c] = (float)(a * qg[c] + AB_GQA_TAU * sig * r * cos(6.283185307179586 * w));
        if (c + 1 < d)
            out[c + 1] = (float)(a * qg[c + 1] + AB_GQA_TAU * sig * r * sin(6.283185307179586 * w));
    }
}

static void data_grouped(arena_hdr *a, const base_pt *b, const ab_config *c, int threads, ab_shape s)
{
    const int dec = b->phase == AB_DECODE, T = ab_base_rows(b), d = b->d, L = b->layers;
    const int G = b->heads / b->kv_heads, hg_n = b->batch * b->kv_heads;
    const size_t per = (size_t)hg_n * T * d; /* one layer's K (or V) */
    const size_t qh = (size_t)L * b->batch * b->heads;
    float *gq = malloc(per * 4), *gk = dec ? NULL : malloc(per * 4), *gv = dec ? NULL : malloc(per * 4);
    int *rows = NULL, *pos = NULL;
    unsigned char *keep = NULL;                          /* decode stacks: the answers' keys, never moved */
    double *sig = malloc(sizeof(double) * (size_t)hg_n); /* per KV head: its queries' RMS */
    ab_answer ans0, all;
    memset(&ans0, 0, sizeof ans0);
    memset(&all, 0, sizeof all);
    char why[200] = "";
    if (!gq || (!dec && (!gk || !gv)) || !sig) {
        a->status = AB_ENOMEM;
        snprintf(a->msg, sizeof a->msg, "cannot allocate the task's draw (%zu bytes)", 3 * per * 4);
        goto out;
    }
    s.heads = hg_n;
    s.seq_len = T;
    { /* the task's draw at the KV heads (decode: K and V straight into layer 0) */
        ab_task_input in = {
            .p = &b->tparams, .str = b->tstr, .s = s, .seed = (uint64_t)b->seed, .depth = b->depth
        };
        int rc = ab_task_generate(b->task, &in, gq, dec ? a->k : gk, dec ? a->v : gv, &ans0, why, sizeof why);
        if (rc) {
            a->status = rc;
            snprintf(a->msg, sizeof a->msg, "task %s: %s", b->task->name, why[0] ? why : ab_strerror(rc));
            goto out;
        }
    }
    for (int g = 0; g < hg_n; g++) sig[g] = head_rms(gq + (size_t)g * T * d, T, d);
    if (!dec) { /* prefill: K, V repeated to every head of a group, Q copies */
        for (int h = 0; h < b->heads; h++) {
            const int g = h / G;
            memcpy(a->k + (size_t)h * T * d, gk + (size_t)g * T * d, (size_t)T * d * 4);
            memcpy(a->v + (size_t)h * T * d, gv + (size_t)g * T * d, (size_t)T * d * 4);
            for (int r = 0; r < T; r++)
                gqa_copy(gq + ((size_t)g * T + r) * d, a->q + ((size_t)h * T + r) * d, d, G, sig[g],
                         (uint64_t)b->seed, h, r);
        }
    } else {
        if (L > 1) { /* the answers' keys (KV head, position) */
            keep = calloc((size_t)hg_n * T, 1);
            pos = malloc(sizeof(int) * 2 * (size_t)b->n);
            if (!keep || !pos) {
                a->status = AB_ENOMEM;
                goto out;
            }
            for (int e = 0; e < ans0.n; e++) keep[(size_t)ans0.head[e] * T + ans0.key_pos[e]] = 1;
        }
        for (int l = 1; l < L; l++) {
            /* layer l's cache: layer l-1's with each key of the first N left in
             * place with probability rho, the others shuffled among themselves
             * (K and V move together; the answers' keys and the steps' keys stay) */
            uint64_t st =
                ab_mix64((uint64_t)b->seed ^ ((uint64_t)l * 0x9e3779b97f4a7c15ull) ^ 0x6c61796572ull);
            for (int g = 0; g < hg_n; g++) {
                const size_t src = ((size_t)(l - 1) * hg_n + g) * T * d, dst = ((size_t)l * hg_n + g) * T * d;
                memcpy(a->k + dst, a->k + src, (size_t)T * d * 4);
                memcpy(a->v + dst, a->v + src, (size_t)T * d * 4);
                int m = 0; /* pos[0, m): the moving positions, ascending; pos[n, n + m): a shuffle of them */
                for (int j = 0; j < b->n; j++)
                    if (!keep[(size_t)g * T + j] &&
                        ((ab_splitmix64(&st) >> 11) + 0.5) * 0x1.0p-53 >= b->layer_corr)
                        pos[m++] = j;
                int *sh = pos + b->n;
                memcpy(sh, pos, sizeof(int) * (size_t)m);
                for (int i = m - 1; i > 0; i--) { /* Fisher-Yates */
                    const int r = (int)(ab_splitmix64(&st) % (uint64_t)(i + 1)), t = sh[r];
                    sh[r] = sh[i];
                    sh[i] = t;
                }
                for (int t = 0; t < m; t++) {
                    memcpy(a->k + dst + (size_t)pos[t] * d, a->k + src + (size_t)sh[t] * d, (size_t)d * 4);
                    memcpy(a->v + dst + (size_t)pos[t] * d, a->v + src + (size_t)sh[t] * d, (size_t)d * 4);
                }
            }
        }
        for (int l = 0; l < L;
             l++) /* the steps' queries: (step, layer, seq, head, d), the same in every layer */
            for (int st = 0; st < b->steps; st++)
                for (int hg = 0; hg < hg_n; hg++)
                    for (int i = 0; i < G; i++) {
                        const int h = rep_head(b, l, hg, i);
                        gqa_copy(gq + ((size_t)hg * T + b->n + st) * d, a->q + ((size_t)st * qh + h) * d, d,
                                 G, sig[hg], (uint64_t)b->seed, h, b->n + st);
                    }
    }
    { /* the answers, replicated per layer and group member; decode keeps the steps' rows, as steps */
        const int reps = (dec ? L : 1) * G, ng = ans0.group ? ans0.n_groups : ans0.n;
        int n = 0;
        all = ans0;
        all.head = malloc(sizeof(int) * (size_t)(ans0.n * reps + 1));
        all.row = malloc(sizeof(int) * (size_t)(ans0.n * reps + 1));
        all.code = malloc(sizeof(int) * (size_t)(ans0.n * reps + 1));
        all.key_pos = malloc(sizeof(int) * (size_t)(ans0.n * reps + 1));
        all.group = malloc(sizeof(int) * (size_t)(ans0.n * reps + 1));
        if (!all.head || !all.row || !all.code || !all.key_pos || !all.group) {
            a->status = AB_ENOMEM;
            goto out;
        }
        for (int l = 0; l < (dec ? L : 1); l++)
            for (int i = 0; i < G; i++)
                for (int e = 0; e < ans0.n; e++) {
                    if (dec && ans0.row[e] < b->n) continue;
                    all.head[n] = rep_head(b, l, ans0.head[e], i);
                    all.row[n] = dec ? ans0.row[e] - b->n : ans0.row[e];
                    all.code[n] = ans0.code[e];
                    all.key_pos[n] = ans0.key_pos[e];
                    all.group[n] = (ans0.group ? ans0.group[e] : e) + (l * G + i) * ng;
                    n++;
                }
        all.n = n;
        all.n_groups = ng * reps;
    }
    a->ans = all;
    if (copy_ints(a, &a->ans.head, all.head, all.n) || copy_ints(a, &a->ans.row, all.row, all.n) ||
        copy_ints(a, &a->ans.code, all.code, all.n) || copy_ints(a, &a->ans.key_pos, all.key_pos, all.n) ||
        copy_ints(a, &a->ans.group, all.group, all.n)) {
        a->status = AB_ENOMEM;
        snprintf(a->msg, sizeof a->msg, "arena too small for the answer");
        goto out;
    }
    a->ans.codebook = NULL;
    if (ans0.codebook) {
        size_t cb = sizeof(float) * (size_t)ans0.n_codes * ans0.head_dim;
        if (!(a->ans.codebook = arena_alloc(a, cb))) {
            a->status = AB_ENOMEM;
            goto out;
        }
        memcpy(a->ans.codebook, ans0.codebook, cb);
    }
    int rc;
    if (dec) {
        ab_decode dp = { .layers = 1,
                         .heads = (int)qh,
                         .kv_heads = L * hg_n,
                         .head_dim = d,
                         .scale = 1.0f / sqrtf((float)d),
                         .cap = T,
                         .q = a->q,
                         .k = a->k,
                         .v = a->v,
                         .seed = (uint64_t)b->seed,
                         .threads = threads };
        rc = ab_refset_build_decode(&a->ref, &dp, b->n, b->steps, c->topk, arena_alloc, a);
    } else {
        rows = malloc(sizeof(int) * (size_t)T);
        const int nr = rows ? ab_choose_rows(T, c->exact_max_n, a->ans.row, a->ans.n, c->score_rows,
                                             (uint64_t)b->seed, rows)
                            : -1;
        s.heads = b->heads;
        ab_problem pb = { s, a->q, a->k, a->v, (uint64_t)b->seed, threads, NULL, 0, NULL, NULL, NULL };
        rc = nr < 0 ? AB_ENOMEM : ab_refset_build(&a->ref, &pb, rows, nr, c->topk, arena_alloc, a);
    }
    if (rc) {
        a->status = rc;
        snprintf(a->msg, sizeof a->msg, "reference: %s", ab_strerror(rc));
    }
out:
    free(sig);
    free(keep);
    free(rows);
    free(all.head);
    free(all.row);
    free(all.code);
    free(all.key_pos);
    free(all.group);
    ab_answer_free(&ans0);
    free(gq);
    free(gk);
    free(gv);
    free(pos);
}

/* In the data child: generate and build the reference. */
void data_child(arena_hdr *a, const base_pt *b, const ab_config *c, int threads, const char *save_dir,
                const char *problem)
{
    omp_set_num_threads(threads);
    ab_bind_threads(threads);
    size_t t = (size_t)b->heads * b->n * b->d;
    if (b->phase == AB_DECODE) {
        const size_t rows = (size_t)b->n + b->steps;
        t = (size_t)b->layers * b->batch * b->kv_heads * rows * b->d;
        a->q = arena_alloc(a, (size_t)b->steps * b->layers * b->batch * b->heads * b->d * 4);
    } else
        a->q = arena_alloc(a, t * 4);
    a->k = arena_alloc(a, t * 4);
    a->v = arena_alloc(a, t * 4);
    if (b->heldout) {
        a->hq = arena_alloc(a, t * 4);
        a->hk = arena_alloc(a, t * 4);
        a->hv = arena_alloc(a, t * 4);
    }
    if (!a->q || !a->k || !a->v || (b->heldout && (!a->hq || !a->hk || !a->hv))) {
        a->status = AB_ENOMEM;
        snprintf(a->msg, sizeof a->msg, "arena too small");
        return;
    }
    ab_mask mk; /* this process's own copy of the base mask, bound to (N, data seed) */
    int mrc = ab_mask_make(&mk, b->mask, ab_base_rows(b), (uint64_t)b->seed, a->msg, sizeof a->msg);
    if (mrc) {
        a->status = mrc;
        ab_mask_free(&mk);
        return;
    }
    ab_shape s = { b->heads, b->n, b->d, mk.def->causal, 1.0f / sqrtf((float)b->d), &mk, 0, 1, AB_PREFILL };
    if (b->phase == AB_DECODE || b->kv_heads != b->heads)
        data_grouped(a, b, c, threads, s);
    else
        data_problem(a, b, c, threads, save_dir, problem, s);
    ab_mask_free(&mk);
}

const ab_problem *ab_arena_heldout(const arena_hdr *a, ab_shape s, int threads, ab_problem *out)
{
    if (!a->hq) return NULL;
    *out = (ab_problem){ s, a->hq, a->hk, a->hv, a->hseed, threads, NULL, 0, NULL, NULL, NULL };
    return out;
}

arena_hdr *ab_arena_map(const base_pt *b, const ab_config *c, size_t *size)
{
    *size = arena_size(b, c);
    arena_hdr *a = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) return NULL;
    memset(a, 0, sizeof *a);
    a->size = *size;
    a->used = sizeof *a;
    return a;
}

void ab_arena_unmap(arena_hdr *a, size_t size)
{
    if (a) munmap(a, size);
}

void ab_problem_name(const base_pt *b, char *buf, size_t n)
{
    char mslug[AB_MASK_SPEC]; /* the mask spec as a file-name-safe word */
    snprintf(mslug, sizeof mslug, "%s", b->mask);
    for (char *ch = mslug; *ch; ch++)
        if (!isalnum((unsigned char)*ch) && *ch != '.' && *ch != '-') *ch = '_';
    snprintf(buf, n, "problem_%s_N%d_H%d_d%d_%s_s%lld_z%.4g", b->task->name, b->n, b->heads, b->d, mslug,
             (long long)b->seed, b->depth);
}
