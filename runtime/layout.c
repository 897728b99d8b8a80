/* layout.c — the ab_layout implementation: the builder a method's select()
 * fills, finalisation into per-row CSR (sorted, unique), structural
 * validation, membership queries and the exact density arithmetic
 * (kept pairs the base mask allows over all pairs it allows; closed form
 * for blocks the mask allows fully or not at all, a per-row count for the
 * partial ones).
 *
 * Rows of the CSR arrays are r = h * n_qblocks + qb. Builder entries live in
 * l->priv until ab_layout_finalize() turns them into blk_ptr/blk_idx and
 * tok_ptr/tok_idx.
 *
 * The builder calls are thread-safe: l->priv is published once with a
 * compare-and-swap, and every call holds the state's mutex (one lock per
 * call, also for the bulk adds) while it claims its entries; it writes
 * them after releasing it (lb_append_unlock). Finalisation sorts every row by index and
 * drops duplicates, so the finalised arrays do not depend on the order in
 * which threads added their entries. Finalize, validate, free and the
 * queries are not thread-safe: the harness calls them on one thread. */
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "runtime/errors.h"
#include "runtime/layout.h"
#include "runtime/registry.h" /* ab_mask_pairs */

enum { LB_NONE = 0, LB_ENTRIES, LB_DENSE, LB_CUSTOM };

/* The entries as two arrays: idx[e] (key block or key token) and row[e]
 * (h * n_qblocks + qb). While every row has come in one append (a method
 * adding each row in one bulk call) the rows are implied by run[] and row
 * is NULL: 4 bytes an entry, not 8 (at N = 64K a token layout's few million
 * entries then stay below glibc's 32 MiB mapping threshold, so the memory
 * is reused from call to call instead of faulted in afresh). */
typedef struct lb_list {
    int32_t *idx; /* [cap] */
    int32_t *row; /* [cap] once multi, else NULL */
    size_t n, cap;
    /* While every row has come in one append: run[r] = 1 + the row's first
     * entry, 0 if none yet (its entries are the next runlen[r]). NULL once
     * some row came twice (multi: row[] filled in from run[] and kept from
     * then on), or before the first append. Finalize then skips the
     * counting sort by row. */
    size_t *run;
    size_t *runlen;
    int multi;
    int unsorted; /* some append was not strictly ascending (needs sort or dedup);
                     set atomically, outside the lock */
    int inflight; /* appends that claimed their entries under the lock and are
                     writing them outside it; idx and row are not moved
                     while > 0 */
} lb_list;

typedef struct lb_state {
    pthread_mutex_t mu; /* held by every builder call: guards the fields
                           below and the layout's block geometry */
    int touched;        /* some builder call succeeded */
    int mode;           /* LB_* */
    int finalized;
    lb_list blk, tok;
} lb_state;

static int ceil_div(int n, int b)
{
    if (n <= 0 || b <= 0) return 0;
    return (int)(((int64_t)n + b - 1) / b);
}

static int64_t i64_min(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t i64_max(int64_t a, int64_t b) { return a > b ? a : b; }

/* Builder state, allocated on first use and published with a
 * compare-and-swap, so threads racing on the first call agree on one state.
 * NULL only on allocation failure. */
static lb_state *lb_get(ab_layout *l)
{
    void *cur = __atomic_load_n(&l->priv, __ATOMIC_ACQUIRE);
    if (cur) return (lb_state *)cur;
    lb_state *st = calloc(1, sizeof(lb_state));
    if (!st) return NULL;
    if (pthread_mutex_init(&st->mu, NULL)) {
        free(st);
        return NULL;
    }
    if (__atomic_compare_exchange_n(&l->priv, &cur, (void *)st, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return st;
    pthread_mutex_destroy(&st->mu); /* another thread won: use its state */
    free(st);
    return (lb_state *)cur;
}

/* The state of l, locked. NULL (nothing locked) on allocation failure. */
static lb_state *lb_lock(ab_layout *l)
{
    lb_state *st = lb_get(l);
    if (st) pthread_mutex_lock(&st->mu);
    return st;
}

static void lb_unlock(lb_state *st) { pthread_mutex_unlock(&st->mu); }

static void lb_list_free(lb_list *li)
{
    free(li->idx);
    free(li->row);
    free(li->run);
    li->idx = li->row = NULL;
    li->run = li->runlen = NULL;
    li->n = li->cap = 0;
    li->multi = li->unsorted = 0;
}

/* row[] for the entries so far, from run[] (which it replaces): the list
 * becomes multi. Lock held, capacity reserved. */
static int lb_to_multi(lb_list *li, int64_t rows)
{
    int32_t *rw = malloc((li->cap ? li->cap : 1) * sizeof *rw);
    if (!rw) return AB_ENOMEM;
    for (int64_t r = 0; li->run && r < rows; r++)
        if (li->run[r])
            for (size_t e = li->run[r] - 1, t = 0; t < li->runlen[r]; t++) rw[e + t] = (int32_t)r;
    free(li->run);
    li->run = li->runlen = NULL;
    li->row = rw;
    li->multi = 1;
    return AB_OK;
}

/* Note that row `row` of `rows` gets the next n entries (lb_append_unlock). */
static int lb_note_run(lb_list *li, int64_t rows, int32_t row, size_t n)
{
    if (li->multi) return AB_OK;
    if (!li->run) {
        li->run = calloc(2 * (size_t)rows, sizeof(size_t));
        if (!li->run) return lb_to_multi(li, rows); /* no bookkeeping: rows kept per entry */
        li->runlen = li->run + rows;
    }
    if (li->run[row]) return lb_to_multi(li, rows);
    li->run[row] = li->n + 1;
    li->runlen[row] = n;
    return AB_OK;
}

static int lb_reserve(lb_list *li, size_t extra)
{
    if (extra > SIZE_MAX / sizeof(int32_t) - li->n) return AB_ENOMEM;
    size_t need = li->n + extra;
    if (need <= li->cap) return AB_OK;
    size_t cap = li->cap ? li->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / (2 * sizeof(int32_t)) ? need : cap * 2;
    /* the lock is held, so no new claims: wait out the writes in flight */
    while (__atomic_load_n(&li->inflight, __ATOMIC_ACQUIRE)) sched_yield();
    int32_t *x = realloc(li->idx, cap * sizeof *x);
    if (!x) return AB_ENOMEM;
    li->idx = x; /* cap grows only once both arrays have */
    if (li->row) {
        if (!(x = realloc(li->row, cap * sizeof *x))) return AB_ENOMEM;
        li->row = x;
    }
    li->cap = cap;
    return AB_OK;
}

/* Rows must be addressable with int32. */
static int rows_ok(const ab_layout *l)
{
    return l->heads > 0 && l->seq_len >= 0 && l->block_q > 0 && l->block_k > 0 &&
           (int64_t)l->heads * l->n_qblocks <= INT32_MAX;
}

/* Common preamble of the entry-adding functions: lock the state and check
 * that entries may be added to row (head, qblock). On AB_OK the caller holds
 * the lock and must lb_unlock(*out); on an error nothing is held. */
static int lb_begin_entries(ab_layout *l, int head, int qblock, lb_state **out)
{
    if (!l) return AB_EINVAL;
    lb_state *st = lb_lock(l);
    if (!st) return AB_ENOMEM;
    if (!rows_ok(l) || st->finalized || st->mode == LB_DENSE || st->mode == LB_CUSTOM || head < 0 ||
        head >= l->heads || qblock < 0 || qblock >= l->n_qblocks) {
        lb_unlock(st);
        return AB_EINVAL;
    }
    *out = st;
    return AB_OK;
}

/* 1 when idx[0, n) is strictly ascending. Counted in blocks of 256
 * without an early exit inside a block, so the compares run in vector
 * lanes (a loop that leaves at the first descent runs one entry a time). */
static int lb_ascending(const int32_t *idx, size_t n)
{
    for (size_t a = 1; a < n; a += 256) {
        const size_t b = n - a < 256 ? n : a + 256;
        int bad = 0;
        for (size_t t = a; t < b; t++) bad |= idx[t] <= idx[t - 1];
        if (bad) return 0;
    }
    return 1;
}

/* 1 when every idx[0, n) is in [0, range): by the extremes, so the loop
 * is a vector min/max reduction. */
static int lb_in_range(const int32_t *idx, size_t n, int32_t range)
{
    int32_t lo = 0, hi = 0;
    if (n) lo = hi = idx[0];
    for (size_t t = 1; t < n; t++) {
        lo = idx[t] < lo ? idx[t] : lo;
        hi = idx[t] > hi ? idx[t] : hi;
    }
    return n == 0 || (lo >= 0 && hi < range);
}

/* Append n entries of one row to li (validated, lock held) and release
 * the lock. idx NULL: the run first, first + 1, ... The entries are claimed
 * under the lock and written after it is released, so threads adding long
 * rows do not queue behind each other's copies (with two threads adding
 * rows of thousands of tokens, the wake-ups of a lock held through the copy
 * cost more than the copy); li->inflight keeps lb_reserve from moving the
 * array while a write is under way. */
static int lb_append_unlock(lb_state *st, lb_list *li, int64_t rows, int32_t row, const int32_t *idx,
                            int32_t first, size_t n)
{
    if (lb_reserve(li, n)) {
        lb_unlock(st);
        return AB_ENOMEM;
    }
    if (lb_note_run(li, rows, row, n)) {
        lb_unlock(st);
        return AB_ENOMEM;
    }
    int32_t *e = li->idx + li->n, *er = li->row ? li->row + li->n : NULL;
    li->n += n;
    st->mode = LB_ENTRIES;
    st->touched = 1;
    __atomic_add_fetch(&li->inflight, 1, __ATOMIC_RELAXED);
    lb_unlock(st);
    if (idx)
        memcpy(e, idx, n * sizeof *e);
    else
        for (size_t t = 0; t < n; t++) e[t] = first + (int32_t)t;
    if (er)
        for (size_t t = 0; t < n; t++) er[t] = row;
    if (idx && !__atomic_load_n(&li->unsorted, __ATOMIC_RELAXED) && !lb_ascending(idx, n))
        __atomic_store_n(&li->unsorted, 1, __ATOMIC_RELAXED); /* while the caller's array is in cache */
    __atomic_sub_fetch(&li->inflight, 1, __ATOMIC_RELEASE);
    return AB_OK;
}

/* ---- lifecycle ---------------------------------------------------------- */

void ab_layout_init(ab_layout *l, const ab_shape *s, int block_q, int block_k)
{
    if (!l) return;
    memset(l, 0, sizeof(*l));
    l->kind = AB_LAYOUT_BLOCK;
    if (s) {
        l->heads = s->heads;
        l->seq_len = s->seq_len;
        l->causal = s->causal ? 1 : 0;
        l->mask = s->mask;
    }
    l->block_q = block_q;
    l->block_k = block_k;
    l->select_flops = l->select_bytes = NAN;
    l->n_qblocks = ceil_div(l->seq_len, block_q);
    l->n_kblocks = ceil_div(l->seq_len, block_k);
}

void ab_layout_init_decode(ab_layout *l, const ab_decode *dp, int block_k)
{
    ab_shape s = { 0 };
    s.heads = dp->layers * dp->heads;
    s.seq_len = dp->len;
    s.causal = 0; /* the step's query sees every key of the cache */
    ab_layout_init(l, &s, dp->len > 0 ? dp->len : 1, block_k > 0 ? block_k : 16);
}

/* Frees the finalised CSR arrays (all four, whichever exist). */
static void lb_free_csr(ab_layout *l)
{
    free(l->blk_ptr);
    free(l->blk_idx);
    free(l->tok_ptr);
    free(l->tok_idx);
    l->blk_ptr = l->tok_ptr = NULL;
    l->blk_idx = l->tok_idx = NULL;
}

void ab_layout_free(ab_layout *l)
{
    if (!l) return;
    lb_free_csr(l);
    lb_state *st = (lb_state *)l->priv;
    if (st) {
        lb_list_free(&st->blk);
        lb_list_free(&st->tok);
        pthread_mutex_destroy(&st->mu);
        free(st);
        l->priv = NULL;
    }
}

/* ---- builder -------------------------------------------------------------- */

int ab_layout_set_blocks(ab_layout *l, int block_q, int block_k)
{
    if (!l || block_q <= 0 || block_k <= 0) return AB_EINVAL;
    lb_state *st = lb_lock(l);
    if (!st) return AB_ENOMEM;
    int rc = AB_EINVAL;
    if (!st->finalized && st->blk.n == 0 && st->tok.n == 0) {
        l->block_q = block_q;
        l->block_k = block_k;
        l->n_qblocks = ceil_div(l->seq_len, block_q);
        l->n_kblocks = ceil_div(l->seq_len, block_k);
        st->touched = 1;
        rc = AB_OK;
    }
    lb_unlock(st);
    return rc;
}

int ab_layout_set_cost(ab_layout *l, double flops, double bytes)
{
    if (!l || !(flops >= 0.0 && flops < INFINITY) || !(bytes >= 0.0 && bytes < INFINITY)) return AB_EINVAL;
    l->select_flops = flops;
    l->select_bytes = bytes;
    return AB_OK;
}

int ab_layout_dense(ab_layout *l)
{
    if (!l) return AB_EINVAL;
    lb_state *st = lb_lock(l);
    if (!st) return AB_ENOMEM;
    int rc = AB_EINVAL;
    if (!st->finalized && (st->mode == LB_NONE || st->mode == LB_DENSE)) {
        st->mode = LB_DENSE;
        st->touched = 1;
        rc = AB_OK;
    }
    lb_unlock(st);
    return rc;
}

int ab_layout_custom(ab_layout *l, double density)
{
    if (!l || !(density >= 0.0 && density <= 1.0)) /* also rejects NaN */
        return AB_EINVAL;
    lb_state *st = lb_lock(l);
    if (!st) return AB_ENOMEM;
    int rc = AB_EINVAL;
    if (!st->finalized && (st->mode == LB_NONE || st->mode == LB_CUSTOM)) {
        st->mode = LB_CUSTOM;
        st->touched = 1;
        l->custom_density = density;
        rc = AB_OK;
    }
    lb_unlock(st);
    return rc;
}

int ab_layout_add_block_range(ab_layout *l, int head, int qblock, int kb0, int kb1)
{
    lb_state *st;
    int rc = lb_begin_entries(l, head, qblock, &st);
    if (rc) return rc;
    if (kb0 < 0 || kb1 > l->n_kblocks || kb0 > kb1)
        rc = AB_EINVAL;
    else
        return lb_append_unlock(st, &st->blk, (int64_t)l->heads * l->n_qblocks,
                                (int32_t)((int64_t)head * l->n_qblocks + qblock), NULL, kb0,
                                (size_t)(kb1 - kb0));
    lb_unlock(st);
    return rc;
}

int ab_layout_add_block(ab_layout *l, int head, int qblock, int kblock)
{
    if (kblock < 0 || kblock == INT_MAX) return AB_EINVAL;
    return ab_layout_add_block_range(l, head, qblock, kblock, kblock + 1);
}

int ab_layout_add_token(ab_layout *l, int head, int qblock, int key)
{
    lb_state *st;
    int rc = lb_begin_entries(l, head, qblock, &st);
    if (rc) return rc;
    if (key < 0 || key >= l->seq_len)
        rc = AB_EINVAL;
    else
        return lb_append_unlock(st, &st->tok, (int64_t)l->heads * l->n_qblocks,
                                (int32_t)((int64_t)head * l->n_qblocks + qblock), NULL, key, 1);
    lb_unlock(st);
    return rc;
}

/* Bulk add of n indices in [0, range) to one row of li (blocks or tokens):
 * all or nothing; n == 0 checks the row and leaves the layout untouched. */
static int add_many(ab_layout *l, int tokens, int head, int qblock, const int32_t *idx, int n)
{
    if (n < 0 || (n > 0 && !idx)) return AB_EINVAL;
    /* checked before the lock: the other threads' appends need not wait */
    if (l && !lb_in_range(idx, (size_t)n, tokens ? l->seq_len : l->n_kblocks)) return AB_EINVAL;
    lb_state *st;
    int rc = lb_begin_entries(l, head, qblock, &st);
    if (rc) return rc;
    if (n > 0)
        return lb_append_unlock(st, tokens ? &st->tok : &st->blk, (int64_t)l->heads * l->n_qblocks,
                                (int32_t)((int64_t)head * l->n_qblocks + qblock), idx, 0, (size_t)n);
    lb_unlock(st);
    return rc;
}

int ab_layout_add_blocks(ab_layout *l, int head, int qblock, const int32_t *kblocks, int n)
{
    return add_many(l, 0, head, qblock, kblocks, n);
}

int ab_layout_add_tokens(ab_layout *l, int head, int qblock, const int32_t *keys, int n)
{
    return add_many(l, 1, head, qblock, keys, n);
}

/* ---- finalisation --------------------------------------------------------- */

/* Sort e[0, m) (non-negative), using t[0, m) as scratch: insertion sort
 * for short runs, else an LSD radix sort on 8-bit digits that skips the
 * digits every entry shares. */
static void lb_sort_run(int32_t *e, int32_t *t, size_t m)
{
    if (m <= 48) {
        for (size_t a = 1; a < m; a++) {
            const int32_t x = e[a];
            size_t b = a;
            for (; b > 0 && e[b - 1] > x; b--) e[b] = e[b - 1];
            e[b] = x;
        }
        return;
    }
    uint32_t all_or = 0, all_and = ~0u;
    for (size_t a = 0; a < m; a++) {
        all_or |= (uint32_t)e[a];
        all_and &= (uint32_t)e[a];
    }
    int32_t *src = e, *dst = t;
    for (int sh = 0; sh < 32; sh += 8) {
        if ((((all_or ^ all_and) >> sh) & 0xffu) == 0) continue; /* same digit everywhere */
        size_t cnt[257] = { 0 };
        for (size_t a = 0; a < m; a++) cnt[(((uint32_t)src[a] >> sh) & 0xffu) + 1]++;
        for (int c = 0; c < 256; c++) cnt[c + 1] += cnt[c];
        for (size_t a = 0; a < m; a++) dst[cnt[((uint32_t)src[a] >> sh) & 0xffu]++] = src[a];
        int32_t *x = src;
        src = dst;
        dst = x;
    }
    if (src != e) memcpy(e, src, m * sizeof *e);
}

/* Sort e[0, m) unless it already is ascending, drop repeats in place;
 * returns the count kept. t: m scratch (NULL only if it is sorted). */
static size_t lb_sort_dedup(int32_t *e, int32_t *t, size_t m)
{
    int sorted = 1;
    for (size_t a = 1; a < m && sorted; a++) sorted = e[a] >= e[a - 1];
    if (!sorted) lb_sort_run(e, t, m);
    size_t k = 0;
    for (size_t a = 0; a < m; a++)
        if (a == 0 || e[a] != e[k - 1]) e[k++] = e[a];
    return k;
}

/* build_csr when every row came in one append (li->run): each row's run
 * is sorted (unless it already is) and deduplicated where it lies, then
 * the runs are packed in row order. One pass over the entries and the
 * packing, instead of the counting sort's count, scatter and pack. */
static int build_csr_runs(lb_list *li, int64_t rows, int64_t **ptr_out, int32_t **idx_out)
{
    const size_t n = li->n;
    int64_t *ptr = calloc((size_t)rows + 1, sizeof(int64_t));
    int32_t *tmp = NULL; /* sort scratch, only if some row needs it */
    if (!ptr) return AB_ENOMEM;
    int unsorted = 0;
    if (!li->unsorted) { /* every run strictly ascending: nothing to sort or drop */
        for (int64_t r = 0; r < rows; r++) ptr[r + 1] = li->run[r] ? (int64_t)li->runlen[r] : 0;
        goto pack;
    }
#pragma omp parallel for schedule(dynamic, 64) reduction(| : unsorted) if (n > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *e = li->idx + (li->run[r] ? li->run[r] - 1 : 0);
        const size_t m = li->run[r] ? li->runlen[r] : 0;
        for (size_t a = 1; a < m; a++)
            if (e[a] < e[a - 1]) {
                unsorted = 1;
                break;
            }
    }
    if (unsorted && !(tmp = malloc(n * sizeof *tmp))) {
        free(ptr);
        return AB_ENOMEM;
    }
#pragma omp parallel for schedule(dynamic, 64) if (n > 65536)
    for (int64_t r = 0; r < rows; r++) {
        if (!li->run[r]) continue;
        const size_t e0 = li->run[r] - 1;
        ptr[r + 1] = (int64_t)lb_sort_dedup(li->idx + e0, tmp ? tmp + e0 : NULL, li->runlen[r]);
    }
    free(tmp);
pack:
    for (int64_t r = 0; r < rows; r++) ptr[r + 1] += ptr[r];
    int32_t *idx = malloc(((size_t)ptr[rows] ? (size_t)ptr[rows] : 1) * sizeof(int32_t));
    if (!idx) {
        free(ptr);
        return AB_ENOMEM;
    }
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t r = 0; r < rows; r++)
        if (ptr[r + 1] > ptr[r])
            memcpy(idx + ptr[r], li->idx + li->run[r] - 1, (size_t)(ptr[r + 1] - ptr[r]) * sizeof *idx);
    lb_list_free(li);
    *ptr_out = ptr;
    *idx_out = idx;
    return AB_OK;
}

/* Sort li by (row, idx), drop duplicates and build the CSR arrays
 * (build_csr_runs when every row came in one append). Otherwise one
 * stable counting sort by row; then, in parallel over rows, each row's run
 * is sorted by idx unless it already is (the common case: a method adds a
 * row's entries in one sorted bulk call) and deduplicated in place; then
 * the runs are packed. Two linear passes over the entries plus cache-local
 * work per row, rather than scatters over every key index. */
static int build_csr(lb_list *li, int64_t rows, int64_t **ptr_out, int32_t **idx_out)
{
    if (li->run && !li->multi) return build_csr_runs(li, rows, ptr_out, idx_out);
    size_t n = li->n;
    const int nt = n > 65536 ? omp_get_max_threads() : 1;
    int64_t *ptr = calloc((size_t)rows + 1, sizeof(int64_t));
    int32_t *tmp = malloc((n ? n : 1) * sizeof *tmp);
    size_t *cnt = calloc((size_t)rows + 1, sizeof(size_t));
    size_t *tc = calloc((size_t)nt * ((size_t)rows + 1), sizeof(size_t)); /* tc[t][r]: slice t, row r */
    /* the packed indices go into li->idx's memory (below); a list that
     * never got an entry has none, so it gets one slot */
    int32_t *spare = li->idx ? NULL : malloc(sizeof(int32_t));
    if (!ptr || !tmp || !cnt || !tc || (!li->idx && !spare) || (n && !li->row)) {
        free(ptr);
        free(tmp);
        free(cnt);
        free(tc);
        free(spare);
        return AB_ENOMEM;
    }
    /* by row (stable), li->idx -> tmp; afterwards row r is tmp[cnt[r - 1], cnt[r]).
     * In parallel: thread t counts and then scatters the t-th slice of the
     * entries, its entries of row r going after those of slices < t. */
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), got = omp_get_num_threads();
        const size_t a = n * (size_t)t / (size_t)got, b = n * (size_t)(t + 1) / (size_t)got;
        size_t *c = tc + (size_t)t * ((size_t)rows + 1);
        for (size_t e = a; e < b; e++) c[li->row[e]]++;
#pragma omp barrier
#pragma omp single
        { /* slice t's first place in row r; cnt[r] = the row's end */
            size_t run = 0;
            for (int64_t r = 0; r < rows; r++) {
                for (int u = 0; u < got; u++) {
                    size_t *x = tc + (size_t)u * ((size_t)rows + 1) + r;
                    const size_t k = *x;
                    *x = run;
                    run += k;
                }
                cnt[r] = run;
            }
        }
        for (size_t e = a; e < b; e++) tmp[c[li->row[e]]++] = li->idx[e];
    }
    free(tc);
    /* per row: sort (li->idx, free now, is the scratch), dedup in place; ptr[r + 1] = kept */
#pragma omp parallel for schedule(dynamic, 64) if (n > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const size_t e0 = r > 0 ? cnt[r - 1] : 0;
        ptr[r + 1] = (int64_t)lb_sort_dedup(tmp + e0, li->idx + e0, cnt[r] - e0);
    }
    for (int64_t r = 0; r < rows; r++) ptr[r + 1] += ptr[r];
    /* the packed indices go into li->idx's memory (sorting is done, and a
     * fresh array of 10^8 entries costs as much in page faults as the
     * pass): row r's kept entries move down from tmp, never past its own */
    int32_t *idx = li->idx ? li->idx : spare;
    li->idx = NULL;
    li->n = li->cap = 0;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const size_t e0 = r > 0 ? cnt[r - 1] : 0;
        if (ptr[r + 1] > ptr[r]) memcpy(idx + ptr[r], tmp + e0, (size_t)(ptr[r + 1] - ptr[r]) * sizeof *idx);
    }
    free(tmp);
    free(cnt);
    int32_t *shrunk = realloc(idx, ((size_t)ptr[rows] ? (size_t)ptr[rows] : 1) * sizeof(int32_t));
    *ptr_out = ptr;
    *idx_out = shrunk ? shrunk : idx;
    return AB_OK;
}

/* The first position in a[lo, hi) (sorted) holding v or more; hi if none. */
static int64_t lower_i32(const int32_t *a, int64_t lo, int64_t hi, int64_t v)
{
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Binary search for v in a[lo, hi) (sorted). */
static int has_i32(const int32_t *a, int64_t lo, int64_t hi, int32_t v)
{
    const int64_t p = lower_i32(a, lo, hi, v);
    return p < hi && a[p] == v;
}

/* MIXED: drop tokens that lie inside a kept block of the same row. The
 * rows in parallel (each row's survivors compacted at its start: a merge
 * walk over its sorted blocks and tokens), then packed into a new array,
 * unless no row dropped any (a method that adds no covered token, such as
 * minference_vs: the arrays stand as they are, no copy). */
static int drop_covered_tokens(ab_layout *l, int64_t rows)
{
    const int64_t n = l->tok_ptr[rows];
    int64_t *kept = malloc((size_t)(rows + 1) * sizeof *kept);
    if (!kept) return AB_ENOMEM;
#pragma omp parallel for schedule(dynamic, 64) if (n > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t t0 = l->tok_ptr[r], t1 = l->tok_ptr[r + 1], b1 = l->blk_ptr[r + 1];
        int32_t *tk = l->tok_idx;
        int64_t b = l->blk_ptr[r], w = t0;
        if (b == b1) { /* no block covers anything: the row's tokens stay */
            kept[r] = t1 - t0;
            continue;
        }
        /* block x holds keys [x bk, (x + 1) bk): compared by products,
         * not by a division per token (an idiv each: most of finalize for
         * minference_vs's 386K tokens at N = 16K) */
        const int64_t bk = l->block_k;
        /* first whether any token lies in a block at all: a binary search
         * of the row's sorted tokens per block, far fewer steps than the
         * walk below over every token when the blocks are few (most rows
         * of most methods drop nothing) */
        int any = 0;
        for (int64_t x = b; x < b1 && !any; x++) {
            const int64_t lo = (int64_t)l->blk_idx[x] * bk, a = lower_i32(tk, t0, t1, lo);
            any = a < t1 && tk[a] < lo + bk;
        }
        if (!any) {
            kept[r] = t1 - t0;
            continue;
        }
        for (int64_t t = t0; t < t1; t++) {
            const int32_t j = tk[t];
            while (b < b1 && ((int64_t)l->blk_idx[b] + 1) * bk <= j) b++; /* blocks ending at or before j */
            if (b == b1 || (int64_t)l->blk_idx[b] * bk > j) tk[w++] = j;  /* no block holds j */
        }
        kept[r] = w - t0;
    }
    int64_t w = 0;
    for (int64_t r = 0; r < rows; r++) { /* kept[r] becomes the row's new start */
        const int64_t k = kept[r];
        kept[r] = w;
        w += k;
    }
    kept[rows] = w;
    if (w == n) { /* nothing dropped: every row's tokens where they were */
        free(kept);
        return AB_OK;
    }
    int32_t *out = malloc((size_t)(n ? n : 1) * sizeof *out);
    if (!out) {
        free(kept);
        return AB_ENOMEM;
    }
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t r = 0; r < rows; r++)
        if (kept[r + 1] > kept[r])
            memcpy(out + kept[r], l->tok_idx + l->tok_ptr[r], (size_t)(kept[r + 1] - kept[r]) * sizeof *out);
    memcpy(l->tok_ptr, kept, (size_t)(rows + 1) * sizeof *kept);
    free(kept);
    free(l->tok_idx);
    l->tok_idx = out;
    return AB_OK;
}

int ab_layout_finalize(ab_layout *l)
{
    if (!l) return AB_EINVAL;
    lb_state *st = (lb_state *)l->priv;
    if (!st || !st->touched) return AB_EINVAL;
    if (st->finalized) return AB_OK;
    if (st->mode == LB_DENSE) {
        l->kind = AB_LAYOUT_DENSE;
    } else if (st->mode == LB_CUSTOM) {
        l->kind = AB_LAYOUT_CUSTOM;
    } else {
        if (!rows_ok(l)) return AB_EINVAL;
        int64_t rows = (int64_t)l->heads * l->n_qblocks;
        int has_blk = st->blk.n > 0, has_tok = st->tok.n > 0;
        ab_layout_kind kind = has_blk && has_tok ? AB_LAYOUT_MIXED
                              : has_tok          ? AB_LAYOUT_TOKEN
                                                 : AB_LAYOUT_BLOCK;
        lb_free_csr(l);
        /* (MIXED stays MIXED even if no token survives the drop) */
        if ((kind != AB_LAYOUT_TOKEN && build_csr(&st->blk, rows, &l->blk_ptr, &l->blk_idx)) ||
            (kind != AB_LAYOUT_BLOCK && build_csr(&st->tok, rows, &l->tok_ptr, &l->tok_idx)) ||
            (kind == AB_LAYOUT_MIXED && drop_covered_tokens(l, rows))) {
            lb_free_csr(l);
            return AB_ENOMEM;
        }
        l->kind = kind;
    }
    lb_list_free(&st->blk);
    lb_list_free(&st->tok);
    st->finalized = 1;
    return AB_OK;
}

/* ---- validation ------------------------------------------------------------ */

static int check_csr(const int64_t *ptr, const int32_t *idx, int64_t rows, int range, const char *what,
                     char *err, size_t errlen)
{
    if (!ptr) return ab_fail(err, errlen, AB_EINVAL, "%s: missing CSR row pointer", what);
    if (ptr[0] != 0)
        return ab_fail(err, errlen, AB_EINVAL, "%s: row pointer starts at %lld", what, (long long)ptr[0]);
    for (int64_t r = 0; r < rows; r++)
        if (ptr[r + 1] < ptr[r])
            return ab_fail(err, errlen, AB_EINVAL, "%s: row pointer decreases at row %lld", what,
                           (long long)r);
    if (ptr[rows] > 0 && !idx) return ab_fail(err, errlen, AB_EINVAL, "%s: missing index array", what);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t e = ptr[r]; e < ptr[r + 1]; e++) {
            if (idx[e] < 0 || idx[e] >= range)
                return ab_fail(err, errlen, AB_EINVAL, "%s: row %lld: index %d out of range [0, %d)", what,
                               (long long)r, (int)idx[e], range);
            if (e > ptr[r] && idx[e] <= idx[e - 1])
                return ab_fail(err, errlen, AB_EINVAL,
                               "%s: row %lld: entries not sorted and unique (%d after %d)", what,
                               (long long)r, (int)idx[e], (int)idx[e - 1]);
        }
    }
    return AB_OK;
}

int ab_layout_validate(const ab_layout *l, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!l) return ab_fail(err, errlen, AB_EINVAL, "no layout");
    if ((int)l->kind < AB_LAYOUT_DENSE || (int)l->kind > AB_LAYOUT_CUSTOM)
        return ab_fail(err, errlen, AB_EINVAL, "unknown layout kind %d", (int)l->kind);
    if (l->heads <= 0 || l->seq_len < 0)
        return ab_fail(err, errlen, AB_EINVAL, "bad shape: heads %d, seq_len %d", l->heads, l->seq_len);
    if (l->kind == AB_LAYOUT_CUSTOM) {
        if (!(l->custom_density >= 0.0 && l->custom_density <= 1.0))
            return ab_fail(err, errlen, AB_EINVAL, "custom density %g not in [0, 1]", l->custom_density);
        return AB_OK;
    }
    if (l->kind == AB_LAYOUT_DENSE) return AB_OK;
    if (l->block_q <= 0 || l->block_k <= 0)
        return ab_fail(err, errlen, AB_EINVAL, "bad block sizes %d x %d", l->block_q, l->block_k);
    if (l->n_qblocks != ceil_div(l->seq_len, l->block_q) || l->n_kblocks != ceil_div(l->seq_len, l->block_k))
        return ab_fail(err, errlen, AB_EINVAL, "block counts %d x %d do not match the shape", l->n_qblocks,
                       l->n_kblocks);
    int64_t rows = (int64_t)l->heads * l->n_qblocks;
    int rc;
    if (l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_MIXED) {
        rc = check_csr(l->blk_ptr, l->blk_idx, rows, l->n_kblocks, "blocks", err, errlen);
        if (rc) return rc;
    }
    if (l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED) {
        rc = check_csr(l->tok_ptr, l->tok_idx, rows, l->seq_len, "tokens", err, errlen);
        if (rc) return rc;
    }
    if (l->kind == AB_LAYOUT_MIXED) {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t t = l->tok_ptr[r]; t < l->tok_ptr[r + 1]; t++)
                if (has_i32(l->blk_idx, l->blk_ptr[r], l->blk_ptr[r + 1], l->tok_idx[t] / l->block_k))
                    return ab_fail(err, errlen, AB_EINVAL, "row %lld: token %d inside a kept block",
                                   (long long)r, (int)l->tok_idx[t]);
    }
    return AB_OK;
}

/* ---- queries --------------------------------------------------------------- */

int ab_layout_contains(const ab_layout *l, int head, int i, int j)
{
    if (!l || head < 0 || head >= l->heads || i < 0 || i >= l->seq_len || j < 0 || j >= l->seq_len) return 0;
    const ab_shape sh = { .heads = l->heads, .seq_len = l->seq_len, .causal = l->causal, .mask = l->mask };
    const ab_mask m = ab_shape_mask(&sh);
    if (!ab_mask_allows(&m, i, j)) return 0;
    if (l->kind == AB_LAYOUT_DENSE) return 1;
    if (l->kind == AB_LAYOUT_CUSTOM || l->block_q <= 0 || l->block_k <= 0) return 0;
    int64_t r = (int64_t)head * l->n_qblocks + i / l->block_q;
    if ((l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_MIXED) && l->blk_ptr &&
        has_i32(l->blk_idx, l->blk_ptr[r], l->blk_ptr[r + 1], j / l->block_k))
        return 1;
    if ((l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED) && l->tok_ptr &&
        has_i32(l->tok_idx, l->tok_ptr[r], l->tok_ptr[r + 1], j))
        return 1;
    return 0;
}

static ab_mask layout_mask(const ab_layout *l)
{
    const ab_shape sh = { .heads = l->heads, .seq_len = l->seq_len, .causal = l->causal, .mask = l->mask };
    return ab_shape_mask(&sh);
}

int64_t ab_layout_valid_pairs(const ab_layout *l)
{
    if (!l || l->heads <= 0 || l->seq_len <= 0) return 0;
    const ab_mask m = layout_mask(l);
    return (int64_t)l->heads * ab_mask_pairs(&m);
}

/* The spans of query rows [q0, q1) under a mask, with their extremes. */
typedef struct qspan {
    int q0, q1;
    int32_t *lo, *hi; /* [q1 - q0] */
    int minlo, maxlo, minhi, maxhi;
} qspan;

static void qspan_fill(qspan *g, const ab_mask *m, int q0, int q1)
{
    g->q0 = q0;
    g->q1 = q1;
    g->minlo = g->minhi = INT_MAX;
    g->maxlo = g->maxhi = 0;
    for (int i = q0; i < q1; i++) {
        int a, b;
        ab_mask_span(m, i, &a, &b);
        g->lo[i - q0] = a;
        g->hi[i - q0] = b;
        g->minlo = a < g->minlo ? a : g->minlo;
        g->maxlo = a > g->maxlo ? a : g->maxlo;
        g->minhi = b < g->minhi ? b : g->minhi;
        g->maxhi = b > g->maxhi ? b : g->maxhi;
    }
}

/* Allowed pairs in the rows of g x keys [k0, k1). */
static int64_t qspan_rect(const qspan *g, const ab_mask *m, int64_t k0, int64_t k1)
{
    if (k1 <= g->minlo || k0 >= g->maxhi) return 0;
    if (m->def->interval && g->maxlo <= k0 && g->minhi >= k1) return (int64_t)(g->q1 - g->q0) * (k1 - k0);
    int64_t s = 0;
    for (int i = g->q0; i < g->q1; i++) {
        if (m->def->interval) {
            const int64_t a = i64_max(k0, g->lo[i - g->q0]), b = i64_min(k1, g->hi[i - g->q0]);
            s += b > a ? b - a : 0;
        } else {
            s += ab_mask_row_count(m, i, (int)k0, (int)k1);
        }
    }
    return s;
}

/* Rows of g that may see key j. */
static int64_t qspan_col(const qspan *g, const ab_mask *m, int j)
{
    if (j < g->minlo || j >= g->maxhi) return 0;
    if (m->def->interval && g->maxlo <= j && j < g->minhi) return g->q1 - g->q0;
    int64_t s = 0;
    for (int i = g->q0; i < g->q1; i++)
        s += m->def->interval ? (g->lo[i - g->q0] <= j && j < g->hi[i - g->q0]) : ab_mask_allows(m, i, j);
    return s;
}

int64_t ab_layout_kept_pairs(const ab_layout *l)
{
    if (!l) return 0;
    int64_t valid = ab_layout_valid_pairs(l);
    if (l->kind == AB_LAYOUT_DENSE) return valid;
    if (l->kind == AB_LAYOUT_CUSTOM) {
        double d = l->custom_density;
        if (!(d >= 0.0)) return 0;
        return d >= 1.0 ? valid : (int64_t)llround(d * (double)valid);
    }
    if (l->block_q <= 0 || l->block_k <= 0) return 0;
    const ab_mask m = layout_mask(l);
    int64_t n = l->seq_len, bq = l->block_q, bk = l->block_k, total = 0;
    int use_blk = (l->kind == AB_LAYOUT_BLOCK || l->kind == AB_LAYOUT_MIXED) && l->blk_ptr;
    int use_tok = (l->kind == AB_LAYOUT_TOKEN || l->kind == AB_LAYOUT_MIXED) && l->tok_ptr;
    qspan g;
    g.lo = malloc((size_t)bq * 2 * sizeof(int32_t)); /* [bq] lo, then [bq] hi */
    if (!g.lo) return -1;
    g.hi = g.lo + bq;
    for (int qb = 0; qb < l->n_qblocks; qb++) {
        /* spans do not depend on the head: one pass per query block */
        const int64_t q0 = qb * bq, q1 = i64_min(n, q0 + bq);
        qspan_fill(&g, &m, (int)q0, (int)q1);
        for (int h = 0; h < l->heads; h++) {
            int64_t r = (int64_t)h * l->n_qblocks + qb;
            if (use_blk) {
                for (int64_t e = l->blk_ptr[r]; e < l->blk_ptr[r + 1]; e++) {
                    int64_t k0 = l->blk_idx[e] * bk, k1 = i64_min(n, k0 + bk);
                    total += qspan_rect(&g, &m, k0, k1);
                }
            }
            if (use_tok) {
                for (int64_t e = l->tok_ptr[r]; e < l->tok_ptr[r + 1]; e++)
                    total += qspan_col(&g, &m, l->tok_idx[e]);
            }
        }
    }
    free(g.lo);
    return total;
}

double ab_layout_density(const ab_layout *l)
{
    if (!l) return 0.0;
    if (l->kind == AB_LAYOUT_DENSE) return 1.0;
    if (l->kind == AB_LAYOUT_CUSTOM) return l->custom_density;
    int64_t valid = ab_layout_valid_pairs(l);
    return valid > 0 ? (double)ab_layout_kept_pairs(l) / (double)valid : 0.0;
}

const char *ab_layout_kind_name(ab_layout_kind k)
{
    switch (k) {
    case AB_LAYOUT_DENSE: return "dense";
    case AB_LAYOUT_BLOCK: return "block";
    case AB_LAYOUT_TOKEN: return "token";
    case AB_LAYOUT_MIXED: return "mixed";
    case AB_LAYOUT_CUSTOM: return "custom";
    }
    return "unknown";
}
