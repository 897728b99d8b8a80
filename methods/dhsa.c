/* dhsa.c — `dhsa`: DHSA, Dynamic Hierarchical Sparse Attention (Xiong, Zou,
 * Fekri, Cho 2025, "Long-Context Modeling with Dynamic Hierarchical Sparse
 * Attention for On-Device LLMs", arXiv 2510.24606 v1; official code
 * xiongsiheng/DHSA, legacy/utils/helper.py: _obtain_dhsa_mask and
 * dhsa_sdpa, called from legacy/utils/gemma_model.py).
 *
 * Per head:
 *   1. Adaptive chunking of the keys: a boundary goes where neighbouring keys
 *      stop resembling each other. With c_j = cos(k_{j-1}, k_j), the
 *      threshold is the (N / chunk_len)-th smallest c_j; scanning left to
 *      right a chunk ends before j when it has >= min_chunk tokens and
 *      c_j <= threshold, or when it reaches max_chunk tokens. (DHSA predicts
 *      boundaries with a small trained network; this similarity-drop rule is
 *      the training-free proxy docs/spec/METHODS.md 3.8 describes.)
 *   2. Length-normalised representations ("avgpool_norm"): each key chunk's
 *      mean key times sqrt(chunk length); each query block's (the harness
 *      block_q rows, as the official code's fixed query blocks) mean query
 *      times sqrt(rows).
 *   3. Chunk scores q̂·k̂ · scale, upsampled to tokens (every key inherits
 *      its chunk's score). Candidates: the keys up to the block's last row
 *      (the chunk straddling it only up to that row).
 *   4. Budget N_b = k tokens per query block, as the official topk_tokens:
 *      the local window — the `window` most recent candidates, and at least
 *      the block's own rows so every row keeps its diagonal — then the best
 *      k - |local| other candidates by score: whole key chunks in descending
 *      score order, the last one cut (equal scores: lower positions first).
 *   5. Sink ("global") tokens: keys [0, sink) are always kept; as in
 *      dhsa_sdpa they take the places of the `sink` lowest-position
 *      selected keys (the local window is never displaced).
 * Official defaults (gemma_model.py calls dhsa_sdpa without overriding
 * them): local_tokens = 128, global_tokens = 128; budget 1024 (needle) or
 * 2048 (LongBench) with query blocks of 128. Not reproduced: the official
 * selection is shared by all heads of a layer (Q and K averaged over
 * heads; ours is per head), and its last instruction_tokens queries attend
 * densely (a prompt property, not of the pattern).
 * Non-causal base masks: every key is a candidate (the official code is
 * causal only). Knob k (fractional budgets dithered over query blocks by a
 * golden-ratio sequence). Cost O(N d + C d · N / block_q + C log C) per head
 * for C chunks.
 */
#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/vecf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

enum { P_K = 0, P_CHUNK, P_MIN, P_MAX, P_WINDOW, P_SINK, P_COUNT };

typedef struct dhsa_state {
    double k;      /* token budget N_b per query block (density knob) */
    int chunk_len; /* mean chunk length aimed at */
    int min_chunk; /* shortest chunk (except the last) */
    int max_chunk; /* longest chunk */
    int window;    /* local window: most recent keys always kept */
    int sink;      /* global tokens [0, sink) always kept */
} dhsa_state;

/* The k smallest similarities first (linear partial selection): the
 * threshold is the largest of them, the k-th smallest. */
#define DHSA_LESS(a, b) ((a) < (b))
MC_DEFINE_SELECT_TOP(select_smallest, float, DHSA_LESS)

static int dhsa_init(void *state, const ab_params *p, const ab_shape *s)
{
    dhsa_state *st = state;
    (void)s;
    if (p->n < P_COUNT || !(p->v[P_K] >= 1 && p->v[P_K] <= (1 << 24))) {
        ab_set_error(state, "dhsa: k must be in [1, 2^24]");
        return AB_EINVAL;
    }
    const double c = p->v[P_CHUNK], mn = p->v[P_MIN], mx = p->v[P_MAX];
    if (!(mn >= 1 && mn <= c && c <= mx && mx <= (1 << 20))) {
        ab_set_error(state, "dhsa: need 1 <= min_chunk <= chunk_len <= max_chunk <= 2^20");
        return AB_EINVAL;
    }
    if (!(p->v[P_WINDOW] >= 0 && p->v[P_WINDOW] <= (1 << 24) && p->v[P_SINK] >= 0 &&
          p->v[P_SINK] <= (1 << 24))) {
        ab_set_error(state, "dhsa: window and sink must be in [0, 2^24]");
        return AB_EINVAL;
    }
    st->k = p->v[P_K];
    st->chunk_len = (int)c;
    st->min_chunk = (int)mn;
    st->max_chunk = (int)mx;
    st->window = (int)p->v[P_WINDOW];
    st->sink = (int)p->v[P_SINK];
    return AB_OK;
}

#define DHSA_PF 4  /* groups of 16 keys prefetched ahead in chunk_bounds */
#define DHSA_G  32 /* chunk representatives per group in kcd (32 / VDR double vectors) */

/* Chunk boundaries of head h: start[0..nc] with start[nc] = N. Returns nc.
 * nd: (2 N) scratch. Also the summed queries of the
 * head's query blocks (bq rows each) into qsum (nqb, d): Q's rows stream
 * in the same pass as K's, two streams from memory side by side where one
 * pass each had waited on its own. par: split the passes over the
 * threads. */
static int chunk_bounds(const dhsa_state *st, const float *k, const float *q, int N, int d, int bq,
                        float *sim, float *tmp, double *nd, double *qsum, int32_t *start, int par)
{
    /* |k_j|^2 and k_{j-1} . k_j, each a chain over c in order (as one loop
     * per key had them), sixteen keys at a time in vector lanes
     * (bs_row_chains16). Key 0's norm is the same chain. A block's query
     * sum: the rows added in order, each column a double chain (as the
     * loop per block had it). */
    double *nrm = nd, *dot = nd + N;
    const int nqb = (N + bq - 1) / bq;
    nrm[0] = 0.0;
    for (int c = 0; c < d; c++) nrm[0] += (double)k[c] * k[c];
#pragma omp parallel for schedule(static) if (par)
    for (int qb = 0; qb < nqb; qb++) {
        const int r0 = qb * bq, r1 = r0 + bq < N ? r0 + bq : N;
        double *qs = qsum + (size_t)qb * d;
        for (int x = 0; x < d; x++) qs[x] = 0.0;
        for (int g0 = r0; g0 < r1; g0 += 16) {
            const int g1 = g0 + 16 < r1 ? g0 + 16 : r1;
            /* the rows DHSA_PF groups ahead: the streams from memory
             * overlap the transposes (the hardware prefetcher alone left
             * these loops waiting on half of their lines) */
            if (g0 + 16 * DHSA_PF + 16 <= N)
                for (size_t o = 0; o < (size_t)16 * d; o += 16) {
                    __builtin_prefetch(k + (size_t)(g0 + 16 * DHSA_PF) * d + o);
                    __builtin_prefetch(q + (size_t)(g0 + 16 * DHSA_PF) * d + o);
                }
            for (int i = g0; i < g1; i++)
                for (int x = 0; x < d; x++) qs[x] += q[(size_t)i * d + x];
            const int j0 = g0 > 1 ? g0 : 1;
            if (j0 < g1) bs_row_chains16(k + (size_t)j0 * d, d, g1 - j0, d, nrm + j0, dot + j0);
        }
    }
    for (int j = 1; j < N; j++) {
        const double den = sqrt(nrm[j - 1] * nrm[j]);
        sim[j] = den > 0 ? (float)(dot[j] / den) : 1.0f;
        if (isnan(sim[j])) sim[j] = 1.0f;
        tmp[j - 1] = sim[j];
    }
    float thr = -INFINITY;
    const int cuts = (N + st->chunk_len - 1) / st->chunk_len - 1; /* boundaries aimed at */
    if (cuts > 0 && N > 1) {
        const int kth = (cuts - 1 < N - 2 ? cuts - 1 : N - 2) + 1; /* the kth smallest, 1-based */
        select_smallest(tmp, N - 1, kth);
        thr = tmp[0];
        for (int j = 1; j < kth; j++) thr = tmp[j] > thr ? tmp[j] : thr;
    }
    int nc = 0;
    start[nc++] = 0;
    for (int j = 1; j < N; j++) {
        const int len = j - start[nc - 1];
        if ((len >= st->min_chunk && sim[j] <= thr) || len >= st->max_chunk) start[nc++] = j;
    }
    start[nc] = N;
    return nc;
}

/* The chunks a block keeps: in the total order (score descending, index
 * ascending) of sc[0, n) (index t = chunk t), chunks are taken whole until
 * m keys, the last one cut to its first keys; a chunk's keys are those
 * below lo. Sets taken[t] for the whole ones, *cut_t (-1: none) and its
 * *cut_n first keys; returns the keys taken (m, or fewer when the n chunks
 * hold fewer). A weighted radix selection: each pass, over the chunks still
 * undecided, sums their lengths per byte of the score key (the most
 * significant byte that differs first), keeps whole the chunks of the
 * bytes before the one where m is reached, and goes on inside that byte;
 * the chunks left share one key and go in index order. The order a full
 * sort gives, without sorting (the top-need selection and the sorts of the
 * chosen chunks and of their runs took half of each block's time).
 * key: n scratch, set: n scratch. */
static int dhsa_take(const bs_cand *sc, int n, const int32_t *start, int lo, int m, uint64_t *key,
                     int32_t *set, uint8_t *taken, int *cut_t, int *cut_n)
{
#define DHSA_LEN(t) ((start[(t) + 1] < lo ? start[(t) + 1] : lo) - start[t])
    uint64_t all_or = 0, all_and = ~0ull;
    int64_t total = 0;
    for (int t = 0; t < n; t++) {
        key[t] = bs_key_of(sc[t].score);
        all_or |= key[t];
        all_and &= key[t];
        set[t] = t;
        taken[t] = 0;
        total += DHSA_LEN(t);
    }
    *cut_t = -1;
    *cut_n = 0;
    if (total <= m) {
        memset(taken, 1, (size_t)n);
        return (int)total;
    }
    int ns = n;
    int64_t want = m; /* keys still to take from set[0, ns) */
    const uint64_t diff = all_or ^ all_and;
    for (int sh = 56; sh >= 0 && ns > 1; sh -= 8) {
        if (((diff >> sh) & 0xffu) == 0) continue; /* the same byte everywhere */
        int32_t w[256] = { 0 };
        for (int i = 0; i < ns; i++) w[(key[set[i]] >> sh) & 0xffu] += DHSA_LEN(set[i]);
        int b = 0;
        int64_t before = 0;
        while (before + w[b] < want) before += w[b++]; /* the set holds >= want keys */
        int o = 0;
        for (int i = 0; i < ns; i++) { /* in index order, as the set was */
            const int t = set[i], by = (int)((key[t] >> sh) & 0xffu);
            if (by < b)
                taken[t] = 1;
            else if (by == b)
                set[o++] = t;
        }
        ns = o;
        want -= before;
    }
    for (int i = 0; i < ns && want > 0; i++) { /* one key: index order */
        const int t = set[i], len = DHSA_LEN(t);
        if (len <= want) {
            taken[t] = 1;
            want -= len;
        } else {
            *cut_t = t;
            *cut_n = (int)want;
            want = 0;
        }
    }
#undef DHSA_LEN
    return m;
}

/* The chunks of one query block qb of head h into keys[] (ascending, no
 * repeats), then into l. kcd, start, qsum: the head's chunk
 * representatives (grouped, dhsa_head), boundaries and summed queries
 * (chunk_bounds); sc, set, taken, key (C each) and keys (3 N) are the
 * caller's scratch. Adds the block's FLOPs and bytes to bc[0], bc[1]. */
static int dhsa_block(const dhsa_state *st, const ab_problem *pb, ab_layout *l, int h, int qb,
                      const double *kcd, const int32_t *start, int nc, const double *qsum, bs_cand *sc,
                      int32_t *set, uint8_t *taken, uint64_t *key, int32_t *keys, double *bc)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal, bq = l->block_q;
    const int r0 = qb * bq, r1 = r0 + bq < N ? r0 + bq : N;
    const int e = causal ? r1 : N; /* candidates [0, e) */
    /* local window: the `window` most recent candidates, at least the
     * block's own rows */
    int lo = e - st->window < r0 ? e - st->window : r0;
    lo = lo > 0 ? lo : 0;
    const int budget = mc_dither(st->k, qb);
    int m = budget - (e - lo); /* selected besides the window */
    m = m < lo ? m : lo;       /* candidates outside it: [0, lo) */
    int nk = 0, next = 0;      /* keys emitted ascending: below next all are out */
    const int s1 = st->sink < e ? st->sink : e;
    for (int j = 0; j < s1; j++) keys[nk++] = j;
    next = s1;
    if (m > 0) {
        const double *qm = qsum + (size_t)qb * d;       /* the block's summed query (chunk_bounds) */
        const double w = 1.0 / sqrt((double)(r1 - r0)); /* mean · sqrt(rows) */
        int n = 0;                                      /* the chunks starting before lo */
        while (n < nc && start[n] < lo) n++;
        /* each lane the chain sum_x (qm[x] w) kc[t][x] in x order, as a
         * scalar loop per chunk had it; 32 chunks at a time in 32 / VDR double
         * vectors, whose chains wait on their adds in turn, reading one
         * group's DHSA_G x d block of kcd in order */
        for (int t0 = 0; t0 < n; t0 += DHSA_G) {
            vdr acc[DHSA_G / VDR];
            for (int g = 0; g < DHSA_G / VDR; g++) acc[g] = (vdr){ 0 };
            const double *kg = kcd + (size_t)t0 * d;
            for (int x = 0; x < d; x++) {
                const double qw = qm[x] * w;
                for (int g = 0; g < DHSA_G / VDR; g++)
                    acc[g] += qw * vdr_load(kg + (size_t)x * DHSA_G + VDR * g);
            }
            double av[DHSA_G];
            memcpy(av, acc, sizeof av);
            for (int u = 0; u < DHSA_G && t0 + u < n; u++) {
                const double a = av[u];
                sc[t0 + u] = (bs_cand){ isnan(a) ? -INFINITY : a * pb->s.scale, t0 + u };
            }
        }
        bc[0] += (double)(r1 - r0) * d + (2.0 * d + 1) * n + (n > 1 ? n * log2((double)n) : 0.0);
        bc[1] += 4.0 * (double)(r1 - r0) * d; /* its Q rows (the chunk representatives: once per head) */
        int cut_t, cut_n;
        const int got = dhsa_take(sc, n, start, lo, m, key, set, taken, &cut_t, &cut_n);
        /* the chosen chunks by position (disjoint runs below lo); the
         * sinks take the places of the lowest-position selected keys */
        int drop = st->sink < got ? st->sink : got;
        for (int t = 0; t < n; t++) {
            if (!taken[t] && t != cut_t) continue;
            int a = start[t];
            const int b = t == cut_t ? a + cut_n : (start[t + 1] < lo ? start[t + 1] : lo);
            const int skip = drop < b - a ? drop : b - a;
            a += skip;
            drop -= skip;
            for (int j = a > next ? a : next; j < b; j++) keys[nk++] = j;
            next = b > next ? b : next;
        }
    }
    for (int j = lo > next ? lo : next; j < e; j++) keys[nk++] = j;
    /* sinks, chunks (by position, disjoint, below lo), window: ascending, no
     * repeats, so the builder has nothing to sort */
    return ab_layout_add_tokens(l, h, qb, keys, nk);
}

/* Selection for head h, added to l one query block at a time. par: split
 * the head's own loops over the threads (fewer heads than threads). */
static int dhsa_head(const dhsa_state *st, const ab_problem *pb, ab_layout *l, int h, double *cost, int par)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, nqb = l->n_qblocks;
    const float *k = pb->k + (size_t)h * N * d;               /* (N, d) */
    float *sim = malloc((size_t)N * sizeof *sim);             /* (N) */
    float *tmp = malloc((size_t)N * sizeof *tmp);             /* (N) */
    double *nd = malloc((size_t)2 * N * sizeof *nd);          /* (2N) norms, dots */
    int32_t *start = malloc((size_t)(N + 1) * sizeof *start); /* (C + 1) */
    double *bc = calloc((size_t)2 * nqb, sizeof *bc);         /* (n_qblocks, 2) each block's cost */
    double *qsum = malloc((size_t)nqb * d * sizeof *qsum);    /* (n_qblocks, d) summed queries */
    double *kcd = NULL;
    int rc = (sim && tmp && nd && start && bc && qsum) ? AB_OK : AB_ENOMEM;
    int nc = 0;
    if (rc == AB_OK) {
        nc = chunk_bounds(st, k, pb->q + (size_t)h * N * d, N, d, l->block_q, sim, tmp, nd, qsum, start, par);
        /* kcd: the representatives in groups of DHSA_G chunks, each group
         * (d, DHSA_G) with the chunks in the lanes, as doubles (the scores
         * widen them); chunks past nc zero */
        kcd = calloc((size_t)(nc + DHSA_G - 1) / DHSA_G * DHSA_G * d, sizeof *kcd);
        if (!kcd) rc = AB_ENOMEM;
    }
    if (rc == AB_OK) {
#pragma omp parallel for schedule(static) if (par)
        for (int c = 0; c < nc; c++) { /* mean · sqrt(len) = sum / sqrt(len) */
            const int a = start[c], b = start[c + 1];
            const float w = 1.0f / sqrtf((float)(b - a));
            double *o = kcd + (size_t)(c / DHSA_G) * DHSA_G * d + c % DHSA_G;
            for (int x0 = 0; x0 < d; x0 += 64) { /* 64 columns' float sums in registers, rows in order */
                const int nx = d - x0 < 64 ? d - x0 : 64;
                v8f acc[8] = { { 0 } };
                if (nx == 64)
                    for (int j = a; j < b; j++)
                        for (int g = 0; g < 8; g++) {
                            v8f kv;
                            memcpy(&kv, k + (size_t)j * d + x0 + 8 * g, sizeof kv);
                            acc[g] += kv;
                        }
                else
                    for (int j = a; j < b; j++)
                        for (int x = 0; x < nx; x++) acc[x / 8][x % 8] += k[(size_t)j * d + x0 + x];
                for (int x = 0; x < nx; x++) o[(size_t)(x0 + x) * DHSA_G] = (double)(acc[x / 8][x % 8] * w);
            }
        }
#pragma omp parallel if (par)
        {
            bs_cand *sc = malloc((size_t)nc * sizeof *sc + 1);    /* (C) */
            int32_t *set = malloc((size_t)nc * sizeof *set + 1);  /* (C) dhsa_take's */
            uint8_t *taken = malloc((size_t)nc + 1);              /* (C) */
            uint64_t *key = malloc((size_t)nc * sizeof *key + 1); /* (C) dhsa_take's score keys */
            int32_t *keys = malloc((size_t)3 * N * sizeof *keys); /* (3N) one block's keys */
            int r = sc && set && taken && key && keys ? AB_OK : AB_ENOMEM;
#pragma omp for schedule(dynamic, 4)
            for (int qb = 0; qb < nqb; qb++)
                if (r == AB_OK)
                    r = dhsa_block(st, pb, l, h, qb, kcd, start, nc, qsum, sc, set, taken, key, keys,
                                   bc + 2 * qb);
            if (r != AB_OK) {
#pragma omp atomic write
                rc = r;
            }
            free(sc);
            free(set);
            free(taken);
            free(key);
            free(keys);
        }
    }
    for (int qb = 0; rc == AB_OK && qb < nqb; qb++) { /* in block order, whatever the threads */
        cost[0] += bc[2 * qb];
        cost[1] += bc[2 * qb + 1];
    }
    /* chunking: cosine of neighbouring keys 6d + 2 (three dot products, the
     * division), the k-th smallest by a linear selection (~2N), the
     * boundary scan N; representatives N d adds + C d scales */
    cost[0] += (6.0 * d + 2) * N + 2.0 * N + N + (double)N * d + (double)nc * d;
    /* bytes: K, the representatives written and read once, the boundaries */
    cost[1] += 4.0 * ((double)N * d + 2.0 * nc * d + N);
    free(sim);
    free(tmp);
    free(nd);
    free(start);
    free(bc);
    free(kcd);
    free(qsum);
    return rc;
}

/* dhsa_head as a bs_head_fn: the head's own cost, then added */
static int dhsa_one(void *ctx, int h, int par, double *fl, double *by)
{
    const bs_heads_ctx *c = ctx;
    double cost[2] = { 0.0, 0.0 };
    const int r = dhsa_head(c->st, c->pb, c->l, h, cost, par);
    *fl += cost[0];
    *by += cost[1];
    return r;
}

static int dhsa_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const dhsa_state *st = state;
    const int H = l->heads;
    double flops = 0.0, bytes = 0.0;
    /* the heads, or one head's own loops, over the threads (bs_run_heads) */
    bs_heads_ctx c = { st, pb, l };
    const int rc = bs_run_heads(H, dhsa_one, &c, &flops, &bytes);
    if (rc == AB_ENOMEM) ab_set_error(state, "dhsa: out of memory");
    return rc == AB_OK ? ab_layout_set_cost(l, flops, bytes) : rc;
}

const ab_method ab_dhsa = {
    .abi = AB_ABI_VERSION,
    .family = "token",
    .name = "dhsa",
    .summary = "DHSA: adaptive chunks at key-similarity drops, length-normalised chunk scores, top-N_b tokens + local window + sinks",
    .reference = "DHSA (Long-Context Modeling with Dynamic Hierarchical Sparse Attention, 2025, arXiv 2510.24606; xiongsiheng/DHSA)",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_K] = { .name = "k", .def = 1024, .min = 1, .max = 1 << 24, .is_int = 0,
                  .help = "token budget N_b per query block, local window included (fractional: dithered)" },
        [P_CHUNK] = { .name = "chunk_len", .def = 64, .min = 1, .max = 1 << 20, .is_int = 1,
                      .help = "mean chunk length aimed at (sets the similarity threshold)" },
        [P_MIN] = { .name = "min_chunk", .def = 16, .min = 1, .max = 1 << 20, .is_int = 1,
                    .help = "shortest chunk" },
        [P_MAX] = { .name = "max_chunk", .def = 256, .min = 1, .max = 1 << 20, .is_int = 1,
                    .help = "longest chunk" },
        [P_WINDOW] = { .name = "window", .def = 128, .min = 0, .max = 1 << 24, .is_int = 1,
                       .help = "local window: the most recent keys always kept (official local_tokens)" },
        [P_SINK] = { .name = "sink", .def = 128, .min = 0, .max = 1 << 24, .is_int = 1,
                     .help = "global tokens [0, sink) always kept (official global_tokens)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_K, .increasing = 1, .log_scale = 1 },
    .state_size = sizeof(dhsa_state),
    .init = dhsa_init,
    .select = dhsa_select,
    .run = NULL, /* gather kernel */
    .fini = NULL,
};
AB_REGISTER(ab_dhsa)
