/* reformer.c — `reformer`: LSH attention of the Reformer (Kitaev, Kaiser,
 * Levskaya 2020, "Reformer: The Efficient Transformer", arXiv 2001.04451;
 * official code google/trax, trax/layers/research/efficient_attention.py
 * (LSHSelfAttention: hash_vecs, sort by bucket and position, look_adjacent),
 * and HF transformers models/reformer/modeling_reformer.py
 * (LSHSelfAttention: _hash_vectors, _get_sorted_bucket_idx_and_undo_sorted_bucket_idx,
 * _look_adjacent). Training-free: the paper's algorithm on the given Q, K.
 *
 * Per head and hash round r (n_rounds rounds, independent seeded rotations):
 *  - angular LSH: a Gaussian random rotation R_r (d x b/2); a vector x goes
 *    to bucket argmax([xR_r ; -xR_r]) over the b = n_buckets directions.
 *    Queries and keys are hashed with the SAME R_r. The paper normalises x
 *    first; the argmax does not change under a positive scale, so we skip
 *    it. Odd b > 1: ceil(b/2) rotation columns, the argmax over the first b
 *    of the 2 ceil(b/2) directions (the paper and HF take b even).
 *  - sort and chunk (our adaptation to distinct Q and K; the paper shares
 *    them, so each position is one item): the N queries and the N keys are
 *    merged into one sequence of 2N items sorted by (bucket, position,
 *    key before query), cut into chunks of 2c consecutive items (c = chunk,
 *    in positions: a chunk holds about c queries and c keys, as the paper's
 *    chunk of c shared-QK positions). A query attends the keys of its own
 *    chunk and of the previous one (wrapping around from the first chunk to
 *    the last of the same round; trax's and HF's look_adjacent run over the
 *    rounds' sorted sequences concatenated, so there a round's first chunk
 *    sees the previous round's last one). So queries attend the keys
 *    that collide with them (same bucket, neighbouring positions in the
 *    sort), and the cost stays chunk-bounded: at most 4c keys per query and
 *    round whatever the bucket sizes. As in the official code (attend across
 *    buckets), chunk neighbours in other buckets are not masked out.
 *  - chunk c: the param `chunk`, or when it is 0 (default) the paper's
 *    m = 2N / n_buckets (a chunk twice the mean bucket size; trax's
 *    hash_vectors default n_buckets = 2 N / chunk_len is the same relation),
 *    c = ceil(2N / n_buckets).
 *    So n_buckets = 1 gives one chunk: dense attention.
 * The row's key set is the union over rounds, each key counted once (the
 * paper's duplicate correction, here exact: a pair already attended in an
 * earlier round is masked, not down-weighted by log counts; the current
 * trax code combines the rounds by their logsumexp without it), intersected
 * with the base mask (causal by original position, documents, windows...).
 * "No attention to self" (the paper: a token attends itself only when it has
 * no other target) is `no_self` (default 0): it exists because with shared
 * QK a token's own key dominates its logits; with distinct Q and K it does
 * not, and dropping the diagonal would only lose mass. With no_self = 1 the
 * rule is applied exactly (row i drops key i iff the row keeps another key).
 *
 * Layout: TOKEN with query blocks of one row, each row's exact key union,
 * so mass recall and the fp64 check are exact; run() computes it bucketed
 * (methods/bucket.h: per (head, chunk) gathered tiles, bs_gemm logits, the
 * masks, online softmax across rounds, P.V by bs_gemm_nn), the same set in
 * the same softmax. The sort in select() is handed to run() in the state
 * (checked against a fingerprint of the problem: shape, seed and a checksum
 * of Q and K; recomputed when it differs). With one or two chunks (every
 * query then sees every key) and no_self = 0 select() states a DENSE layout
 * (the same keys, without N^2 token entries). In a timed call
 * (pb->timed) with no_self = 0 the rows are not built at all: run() reads
 * only the sort, and the authors' code never lists a row's keys; the rows
 * are the metrics' exact view of the key sets, built in the untimed
 * scored call (same output: tests/test_methods.c).
 *
 * Knob: n_buckets (density falls as it rises, log scale; chunk = 0). Causal
 * density is about 6.5 / n_buckets with 2 rounds, nearly independent of N
 * (measured at N = 4K on the needle haystack: 0.20, 0.10, 0.049, 0.023 at
 * n_buckets 32, 64, 128, 256; 0.061 at 128 on Gaussian Q, K at 4K and 16K).
 * With a fixed `chunk` the density is ~ rounds * 1.5c / (N/2) whatever
 * n_buckets, and n_buckets then does not move it monotonically: sweep with
 * chunk = 0. Defaults: n_rounds 2 (the paper trains with 1 to 8; 2 is its
 * cheaper setting), n_buckets 64.
 * Cost (ab_layout_set_cost), per head and round: hashing 2 * 2N * d * b/2
 * (Q and K projected) + 2N * b compares (argmax) + 2N log2 2N (the sort, as
 * counted; done here as a counting sort), plus, with no_self = 1 only (run()
 * then reads the rows, so every call builds them), one compare per candidate
 * key visited building the unions; bytes 8 N d (Q and K in fp32) + 16 N per
 * round (the permutations written). Linear in N at fixed chunk.
 * Deviations from the paper: distinct Q and K (above); no normalisation
 * (argmax invariant); exact duplicate masking instead of log-count
 * correction (same result as the paper's intent: each key once); no_self off
 * by default; odd bucket counts allowed; untrained (the paper trains with it).
 */
#include "attnbench.h"
#include "methods/block_score.h"
#include "methods/bucket.h"
#include "methods/lsh.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { P_BUCKETS = 0, P_ROUNDS, P_CHUNK, P_NOSELF, P_COUNT };

#define RF_MAX_BUCKETS 4096

/* The sort of one select(): every head's rounds. */
typedef struct rf_sort {
    int heads, n, d, rounds, nch;
    uint64_t seed, sum;     /* fingerprint: seed and checksum of Q, K */
    int32_t *qperm, *kperm; /* (heads, rounds, N) */
    int32_t *qptr, *kptr;   /* (heads, rounds, nch + 1) */
    bk_round *r;            /* (heads, rounds) */
} rf_sort;

typedef struct reformer_state {
    int buckets, rounds, chunk, noself;
    rf_sort cache; /* select()'s sort, for run() */
} reformer_state;

static void rf_sort_free(rf_sort *s)
{
    free(s->qperm);
    free(s->kperm);
    free(s->qptr);
    free(s->kptr);
    free(s->r);
    memset(s, 0, sizeof *s);
}

static int reformer_init(void *state, const ab_params *p, const ab_shape *s)
{
    reformer_state *st = state;
    (void)s;
    if (p->n < P_COUNT) {
        ab_set_error(state, "reformer: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_BUCKETS] >= 1 && p->v[P_BUCKETS] <= RF_MAX_BUCKETS) ||
        !(p->v[P_ROUNDS] >= 1 && p->v[P_ROUNDS] <= 16) ||
        !(p->v[P_CHUNK] >= 0 && p->v[P_CHUNK] <= (1 << 24)) ||
        !(p->v[P_NOSELF] == 0 || p->v[P_NOSELF] == 1)) {
        ab_set_error(state,
                     "reformer: n_buckets must be in [1, %d], n_rounds in [1, 16], chunk in [0, 2^24], "
                     "no_self 0 or 1",
                     RF_MAX_BUCKETS);
        return AB_EINVAL;
    }
    st->buckets = (int)p->v[P_BUCKETS];
    st->rounds = (int)p->v[P_ROUNDS];
    st->chunk = (int)p->v[P_CHUNK];
    st->noself = (int)p->v[P_NOSELF];
    return AB_OK;
}

/* Chunk length c in positions for sequence length n. */
static int rf_chunk(const reformer_state *st, int n)
{
    if (st->chunk > 0) return st->chunk;
    const long c = (2L * n + st->buckets - 1) / st->buckets;
    return c > 0 ? (int)c : 1;
}

/* One standard normal draw from the splitmix64 stream *s (Box-Muller). */
static double rf_gauss(uint64_t *s)
{
    const double u1 = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = ((ab_splitmix64(s) >> 11) + 0.5) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* The sort of head h, all rounds, into s (allocated by the caller); the
 * head's bk_sum_head of Q and K into *hsum. */
static int rf_sort_head(const reformer_state *st, const ab_problem *pb, rf_sort *s, int h, uint64_t *hsum)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim, nb = st->buckets, b2 = (nb + 1) / 2, R = st->rounds;
    const int c2 = 2 * rf_chunk(st, N) > 0 ? 2 * rf_chunk(st, N) : 1; /* items per chunk */
    float *rot = malloc((size_t)R * b2 * d * sizeof *rot); /* every round's rotation, round after round */
    float *pj = malloc(lsh_scratch_floats(R * b2) * sizeof *pj);
    float *bt = malloc((size_t)(d > BS_KC ? d : BS_KC) * BS_PANEL * sizeof *bt);
    int32_t *cq = malloc((size_t)R * N * sizeof *cq), *ck = malloc((size_t)R * N * sizeof *ck); /* (R, N) */
    int32_t *cnt = malloc((size_t)(nb + 1) * sizeof *cnt);
    int32_t *items = malloc((size_t)2 * N * sizeof *items);
    int rc = rot && pj && bt && cq && ck && cnt && items ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) { /* the codes of all rounds in one pass over Q and one over K (lsh_codes_rounds) */
        for (int r = 0; r < R; r++) {
            uint64_t sd =
                ab_mix64(pb->seed ^ ab_mix64(0x5245464f524d4552ull + ((uint64_t)h << 20) + (uint64_t)r));
            for (size_t t = 0; t < (size_t)b2 * d; t++) rot[(size_t)r * b2 * d + t] = (float)rf_gauss(&sd);
        }
        *hsum = bk_codes_qk(pb->q + (size_t)h * N * d, pb->k + (size_t)h * N * d, N, d, rot, R, b2, nb, pj,
                            lsh_scratch_floats(R * b2), bt, cq, ck);
    }
    for (int r = 0; rc == AB_OK && r < R; r++) {
        const size_t x = (size_t)h * R + r;
        const int32_t *bq = cq + (size_t)r * N, *bk = ck + (size_t)r * N;
        /* counting sort of the 2N items (2 pos + 0 key / + 1 query) by bucket,
         * stable in (position, key first) order */
        for (int b = 0; b <= nb; b++) cnt[b] = 0;
        for (int i = 0; i < N; i++) {
            cnt[bk[i] + 1]++;
            cnt[bq[i] + 1]++;
        }
        for (int b = 0; b < nb; b++) cnt[b + 1] += cnt[b];
        for (int i = 0; i < N; i++) {
            items[cnt[bk[i]]++] = 2 * i;
            items[cnt[bq[i]]++] = 2 * i + 1;
        }
        int32_t *qp = s->qperm + x * N, *kp = s->kperm + x * N;
        int32_t *qo = s->qptr + x * (s->nch + 1), *ko = s->kptr + x * (s->nch + 1);
        int nq = 0, nk = 0, gch = 0, gnext = 0;
        for (int g = 0; g < 2 * N; g++) {
            if (g == gnext) { /* chunk gch starts (g = gch c2) */
                qo[gch] = nq;
                ko[gch++] = nk;
                gnext += c2;
            }
            if (items[g] & 1)
                qp[nq++] = items[g] >> 1;
            else
                kp[nk++] = items[g] >> 1;
        }
        qo[s->nch] = nq;
        ko[s->nch] = nk;
        s->r[x] = (bk_round){ .nchunks = s->nch, .qperm = qp, .qptr = qo, .kperm = kp, .kptr = ko };
    }
    free(rot);
    free(pj);
    free(bt);
    free(cq);
    free(ck);
    free(cnt);
    free(items);
    return rc;
}

/* The sort of every head into s (freed first). */
static int rf_sort_make(const reformer_state *st, const ab_problem *pb, rf_sort *s)
{
    const int H = pb->s.heads, N = pb->s.seq_len, R = st->rounds, c = rf_chunk(st, N);
    rf_sort_free(s);
    s->heads = H;
    s->n = N;
    s->d = pb->s.head_dim;
    s->rounds = R;
    s->nch = N > 0 ? (int)((N + (long)c - 1) / c) : 1;
    s->seed = pb->seed;
    s->sum = 0; /* set below from the heads' sums: bk_checksum's value */
    const size_t hr = (size_t)H * R;
    uint64_t *hs = malloc((size_t)(H > 0 ? H : 1) * sizeof *hs);
    s->qperm = malloc((hr * N + 1) * sizeof *s->qperm);
    s->kperm = malloc((hr * N + 1) * sizeof *s->kperm);
    s->qptr = malloc(hr * (s->nch + 1) * sizeof *s->qptr);
    s->kptr = malloc(hr * (s->nch + 1) * sizeof *s->kptr);
    s->r = malloc((hr > 0 ? hr : 1) * sizeof *s->r);
    int rc = s->qperm && s->kperm && s->qptr && s->kptr && s->r && hs ? AB_OK : AB_ENOMEM;
    if (rc == AB_OK) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int h = 0; h < H; h++) {
            const int e = rf_sort_head(st, pb, s, h, hs + h);
            if (e != AB_OK) {
#pragma omp atomic write
                rc = e;
            }
        }
    }
    if (rc == AB_OK) s->sum = bk_sum_heads(hs, H);
    free(hs);
    if (rc != AB_OK) rf_sort_free(s);
    return rc;
}

static int rf_sort_matches(const reformer_state *st, const rf_sort *s, const ab_problem *pb)
{
    return s->r && s->heads == pb->s.heads && s->n == pb->s.seq_len && s->d == pb->s.head_dim &&
           s->rounds == st->rounds && s->seed == pb->seed && s->sum != 0 && s->sum == bk_checksum(pb);
}

/* Row i's key union of head h (base mask applied, no_self rule) into keys;
 * returns the count; *visits += candidates looked at. stamp: (N) scratch,
 * -1 initially and left holding i; qcix: (rounds, N) query chunk by position. */
static int rf_row(const reformer_state *st, const rf_sort *s, const ab_mask *m, int h, int i,
                  const int32_t *qcix, int32_t *stamp, int32_t *keys, double *visits)
{
    const int N = s->n, R = s->rounds, nch = s->nch, nlook = bk_nlook(1, nch);
    int lo = 0, hi = N, n = 0, self = 0;
    if (m->def->interval) ab_mask_span(m, i, &lo, &hi);
    for (int r = 0; r < R; r++) {
        const bk_round *b = &s->r[(size_t)h * R + r];
        const int t = qcix[(size_t)r * N + i];
        for (int lb = 0; lb < nlook; lb++) {
            const int kc = ((t - lb) % nch + nch) % nch;
            *visits += b->kptr[kc + 1] - b->kptr[kc];
            for (int32_t x = b->kptr[kc]; x < b->kptr[kc + 1]; x++) {
                const int j = b->kperm[x];
                if (stamp[j] == i) continue;
                stamp[j] = i;
                if (m->def->interval ? (j >= lo && j < hi) : ab_mask_allows(m, i, j)) {
                    keys[n++] = j;
                    self |= j == i;
                }
            }
        }
    }
    if (st->noself && self && n > 1) { /* Reformer: no self when others exist */
        int w = 0;
        for (int a = 0; a < n; a++)
            if (keys[a] != i) keys[w++] = keys[a];
        n = w;
    }
    return n;
}

static int reformer_select(void *state, const ab_problem *pb, ab_layout *l)
{
    reformer_state *st = state;
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim, R = st->rounds, nb = st->buckets;
    int rc = ab_layout_set_blocks(l, 1, l->block_k); /* one query row per layout row */
    if (rc == AB_OK) rc = rf_sort_make(st, pb, &st->cache);
    if (rc == AB_ENOMEM) ab_set_error(state, "reformer: out of memory");
    if (rc != AB_OK) return rc;
    const rf_sort *s = &st->cache;
    double visits = 0.0;
    if (bk_nlook(1, s->nch) == s->nch && !st->noself) {
        rc = ab_layout_dense(l); /* one or two chunks: every key of every row */
    } else if (pb->timed && !st->noself) {
        /* a timed call: run() works from the sort alone, and the rows (the
         * metrics' view of the same key sets) are not built */
    } else {
        const ab_mask m = ab_shape_mask(&pb->s);
#pragma omp parallel
        {
            int32_t *qcix = malloc((size_t)R * N * sizeof *qcix);
            int32_t *stamp = malloc((size_t)N * sizeof *stamp);
            int32_t *keys = malloc((size_t)N * sizeof *keys);
            double vis = 0.0;
            int ok = qcix && stamp && keys;
            if (!ok) {
#pragma omp atomic write
                rc = AB_ENOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int h = 0; h < H; h++) {
                if (!ok) continue;
                for (int r = 0; r < R; r++) {
                    const bk_round *b = &s->r[(size_t)h * R + r];
                    bk_chunk_index(b->qperm, b->qptr, b->nchunks, qcix + (size_t)r * N);
                }
                for (int j = 0; j < N; j++) stamp[j] = -1;
                for (int i = 0; ok && i < N; i++) {
                    const int n = rf_row(st, s, &m, h, i, qcix, stamp, keys, &vis);
                    const int e = ab_layout_add_tokens(l, h, i, keys, n);
                    if (e != AB_OK) {
                        ok = 0;
#pragma omp atomic write
                        rc = e;
                    }
                }
            }
#pragma omp atomic
            visits += vis;
            free(qcix);
            free(stamp);
            free(keys);
        }
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "reformer: out of memory");
    if (rc != AB_OK) return rc;
    /* cost: see the header comment */
    const double b2 = nb > 1 ? (nb + 1) / 2 : 0, n2 = 2.0 * N;
    const double flops =
        (double)H * R * (2.0 * n2 * d * b2 + (nb > 1 ? n2 * nb : 0.0) + (n2 > 1 ? n2 * log2(n2) : 0.0)) +
        (st->noself ? visits : 0.0);
    const double bytes = (double)H * (8.0 * N * d + 16.0 * N * R);
    return ab_layout_set_cost(l, flops, bytes);
}

/* 1 if key i is in the sorted list a[0, n). */
static int rf_has(const int32_t *a, int64_t n, int i)
{
    const int lo = bk_lower(a, (int)n, i); /* a row's keys: n <= N */
    return lo < n && a[lo] == i;
}

static int reformer_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    reformer_state *st = state;
    const int H = pb->s.heads, N = pb->s.seq_len;
    if (!(l->kind == AB_LAYOUT_DENSE ||
          ((l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_BLOCK) && l->block_q == 1))) {
        ab_set_error(state, "reformer: run() expects its own token layout (block_q 1)");
        return AB_EINVAL;
    }
    rf_sort local = { 0 };
    const rf_sort *s = &st->cache;
    int rc = AB_OK;
    if (!rf_sort_matches(st, s, pb)) { /* not the problem select() sorted */
        rc = rf_sort_make(st, pb, &local);
        s = &local;
    }
    uint8_t *noself = NULL;
    if (rc == AB_OK && st->noself && l->kind == AB_LAYOUT_TOKEN) {
        /* the rows select() dropped their own key from */
        noself = malloc((size_t)H * N * sizeof *noself);
        if (!noself) rc = AB_ENOMEM;
        for (int x = 0; rc == AB_OK && x < H * N; x++)
            noself[x] = !rf_has(l->tok_idx + l->tok_ptr[x], l->tok_ptr[x + 1] - l->tok_ptr[x], x % N);
    }
    if (rc == AB_OK) {
        const bk_spec sp = { .rounds = s->rounds, .look_back = 1, .r = s->r, .noself = noself };
        rc = bk_attend(pb, &sp, out);
    }
    if (rc == AB_ENOMEM) ab_set_error(state, "reformer: out of memory");
    free(noself);
    rf_sort_free(&local);
    return rc;
}

static void reformer_fini(void *state)
{
    reformer_state *st = state;
    rf_sort_free(&st->cache);
}

const ab_method ab_reformer = {
    .abi = AB_ABI_VERSION,
    .family = "hashing",
    .name = "reformer",
    .summary = "Reformer LSH attention, untrained: angular-LSH buckets of Q and K (shared rotations), sorted and chunked, "
               "each chunk attends itself and the previous one, union over rounds (token, bucketed run)",
    .reference = "Reformer (Kitaev, Kaiser, Levskaya 2020, arXiv 2001.04451; google/trax efficient_attention.py)",
    .devices = AB_CPU,
    .phases = AB_PREFILL,
    .params = {
        [P_BUCKETS] = { .name = "n_buckets", .def = 64, .min = 1, .max = RF_MAX_BUCKETS, .is_int = 1,
                        .help = "hash buckets per round (chunk = 0: chunk = ceil(2N / n_buckets)); 1 = dense" },
        [P_ROUNDS] = { .name = "n_rounds", .def = 2, .min = 1, .max = 16, .is_int = 1,
                       .help = "independent hash rounds (the row keeps the union)" },
        [P_CHUNK] = { .name = "chunk", .def = 0, .min = 0, .max = 1 << 24, .is_int = 1,
                      .help = "chunk length in positions (c queries + c keys); 0 = the paper's 2N / n_buckets" },
        [P_NOSELF] = { .name = "no_self", .def = 0, .min = 0, .max = 1, .is_int = 1,
                       .help = "1: a row drops its own position when it keeps another key (shared-QK rule)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_BUCKETS, .increasing = 0, .log_scale = 1 },
    .state_size = sizeof(reformer_state),
    .init = reformer_init,
    .select = reformer_select,
    .run = reformer_run,
    .fini = reformer_fini,
};
AB_REGISTER(ab_reformer)
