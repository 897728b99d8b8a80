/* attnbench.h — the plugin ABI: the only header a method author needs.
 *
 * A method is one C file in methods/ that fills one `ab_method` and ends with
 * AB_REGISTER(symbol). The Makefile finds the AB_REGISTER lines and generates
 * the registry, so adding a file adds a method. The harness calls a method
 * through wrappers that check every return value; a method never times or
 * scores itself.
 *
 * Tensor layout everywhere: fp32, row-major, (heads, seq_len, head_dim).
 * Ownership: the harness owns Q, K, V, `out` and the layout; a method owns
 * only what it allocates inside its own state and frees it in fini().
 */
#ifndef ATTNBENCH_H
#define ATTNBENCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI 3: one error rule, ab_set_error(handle) for methods, masks, tasks.
 * ABI 4: a method declares its native block (ab_method.block_q/_k), and
 * held-out draws (ab_problem.heldout, ab_method.heldout).
 * ABI 5: select() states its work (ab_layout_set_cost; ab_layout.select_flops
 * and select_bytes), so each point records its selector's cost.
 * ABI 6: a method names its family (ab_method.family, the figures' colour),
 * and a CUSTOM-layout method states its error bound (approx_tol) and may
 * expose its implied attention weights (weights(): effective recall).
 * ABI 7: the decode phase (ab_decode, prepare/dselect/drun, ab_kernel_decode)
 * and grouped KV heads (ab_shape.kv_heads), see "decode" below.
 * ABI 8: ab_problem.timed: in a timed call select() may skip the layout
 * entries that only the harness's metrics read (a method with its own run()).
 * ABI 9: the dtype axis: a method lists the input types it takes
 * (ab_method.dtypes), and a bf16 problem carries bf16 copies of Q, K, V
 * (ab_problem.q16, k16, v16). */
#define AB_ABI_VERSION 9
#define AB_MAX_PARAMS  8  /* per method */
#define AB_MAX_VALUES  24 /* capacity of ab_params (tasks have more knobs) */

/* ---- error codes: every entry point returns AB_OK or one of these ------ */
enum {
    AB_OK = 0,
    AB_EINVAL = -1,       /* bad parameter or shape */
    AB_ENOMEM = -2,       /* allocation failed (recorded as status "oom") */
    AB_EUNSUPPORTED = -3, /* this shape/device is not supported: "unsupported" */
    AB_EINTERNAL = -4     /* anything else: "error" */
};

/* The one error rule of all three plugin kinds: an entry point that fails
 * returns an AB_E* code and may say why with ab_set_error(handle, ...),
 * where handle is the first pointer it was given: a method's state (valid
 * even when state_size is 0), a mask's ab_mask * in parse() and bind(), a
 * task's const ab_task_input *. The runtime keeps the message in front of
 * that pointer; any other pointer is refused (the message goes to stderr).
 * A code outside AB_E* becomes AB_EINTERNAL. */
void ab_set_error(const void *handle, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- capability flags -------------------------------------------------- */
#define AB_CPU     1u
#define AB_GPU     2u
#define AB_PREFILL 1u
#define AB_DECODE  2u
/* input types (ab_method.dtypes; [sweep] dtypes): fp32, or bfloat16 (the
 * upper 16 bits of a binary32; logits, softmax and output stay fp32) */
#define AB_FP32 1u
#define AB_BF16 2u

/* ---- parameters -------------------------------------------------------- */
typedef struct ab_param {
    const char *name; /* NULL terminates the list */
    double def, min, max;
    int is_int; /* value rounded to an integer before init() */
    const char *help;
} ab_param;

/* Values of a plugin's params, in the order of its params array. */
typedef struct ab_params {
    int n;
    double v[AB_MAX_VALUES];
} ab_params;

/* Which param moves density. param < 0: the method has no density knob
 * (dense, custom-with-fixed-cost); it then runs once per point. */
typedef struct ab_knob {
    int param;      /* index into ab_method.params, or -1 */
    int increasing; /* 1: density rises with the value; 0: falls */
    int log_scale;  /* bisection in log space (value range must be > 0) */
} ab_knob;

/* ---- problem ----------------------------------------------------------- */
struct ab_mask;

typedef struct ab_shape {
    int heads;    /* H */
    int seq_len;  /* N (queries = keys: prefill) */
    int head_dim; /* d */
    int causal;   /* 1: the base mask allows only keys j <= i (causal,
                     sliding, document); 0: some query sees later keys */
    float scale;  /* logit scale, 1/sqrt(d) by default */
    /* The base mask every method's layout is intersected with (see "base
     * masks" below). NULL: plain causal when causal = 1, else full. */
    const struct ab_mask *mask;
    /* ABI 7. Prefill: always 0 (a GQA problem reaches a prefill method with
     * its KV heads repeated to `heads`, as the reference implementations'
     * repeat_kv does). Decode init(): the KV heads of the cache (query head h
     * reads KV head h / (heads / kv_heads)), and seq_len is the cache's
     * capacity (the length after the last step). */
    int kv_heads;
    int layers; /* decode init(): the layer stack (1 unless ab_method.layered); prefill: 0 or 1 */
    int phase;  /* AB_DECODE: decode entry points follow init(); else (AB_PREFILL or 0) prefill */
} ab_shape;

typedef struct ab_problem {
    ab_shape s;
    const float *q; /* (heads, seq_len, head_dim) */
    const float *k; /* (heads, seq_len, head_dim) */
    const float *v; /* (heads, seq_len, head_dim) */
    uint64_t seed;  /* for seeded selectors (random blocks, hashing) */
    int threads;    /* OpenMP threads the harness set; informational */
    /* A held-out draw: the same task, shape, base mask and depth generated
     * with seed ab_heldout_seed(seed), so never the scored input. It is the
     * calibration data of a method that its authors profile offline (MoA):
     * same distribution, another sample. Given only to methods that set
     * ab_method.heldout, else NULL; NULL too when the task ignores its seed
     * (a trace: no other draw exists). Its own heldout is NULL. */
    const struct ab_problem *heldout;
    /* ABI 8. 1 in the harness's timed calls: then nothing but this method's
     * own run() reads the layout select() returns (no density, scoring or
     * check: those use an untimed call with timed = 0). A method whose run()
     * does not read the layout's entries (it works from its state, as
     * reformer's bucketed run does) may then skip adding them: it sets the
     * blocks and states its cost as always, and leaves the rows empty. Its
     * run() must compute the same output either way (tested for every
     * method: tests/test_methods.c, timed_call_computes_the_same). A zeroed
     * problem has timed = 0: the whole layout. */
    int timed;
    /* ABI 9. A bf16 problem (the sweep's dtypes axis): the inputs rounded to
     * bf16 (nearest even), as uint16_t in the layout of q, k, v; q, k, v then
     * hold the same values widened to fp32, so a selector reads them as in
     * any problem. NULL in an fp32 problem. Only a method that lists AB_BF16
     * in ab_method.dtypes is given one; the shared layout kernel
     * (ab_kernel_layout) runs it for every kind but CUSTOM, and answers
     * AB_EUNSUPPORTED for TOKEN or MIXED layouts with block_q < 16. */
    const uint16_t *q16, *k16, *v16;
} ab_problem;

/* ---- layouts: the contract between selectors and kernels --------------- */
typedef enum ab_layout_kind {
    AB_LAYOUT_DENSE = 0, /* everything (causal respected) */
    AB_LAYOUT_BLOCK,     /* per head, CSR over query blocks of kept key blocks */
    AB_LAYOUT_TOKEN,     /* per head, per query block, sorted key token list */
    AB_LAYOUT_MIXED,     /* blocks plus tokens (tokens outside kept blocks) */
    AB_LAYOUT_CUSTOM     /* the method runs itself; reports its own density */
} ab_layout_kind;

/* Rows of the CSR arrays are r = h * n_qblocks + qb, with query block qb
 * covering query rows [qb*block_q, min(N, (qb+1)*block_q)). Entries of a
 * row are sorted ascending and unique. The base mask (causal by default) is
 * always applied on top by the kernels: listing a key the mask forbids is
 * allowed and keeps nothing. Density counts only kept pairs the base mask
 * allows, over all pairs it allows.
 *
 * Methods build layouts only with the ab_layout_* functions below; the
 * harness finalises (sorts, dedups, builds CSR) after select() returns. */
typedef struct ab_layout {
    ab_layout_kind kind;
    int heads, seq_len, causal;
    int block_q, block_k; /* preset by the harness; a method may change
                                  them with ab_layout_set_blocks() first */
    int n_qblocks, n_kblocks;
    /* BLOCK and MIXED: */
    int64_t *blk_ptr; /* [heads*n_qblocks + 1] */
    int32_t *blk_idx; /* key block indices */
    /* TOKEN and MIXED: */
    int64_t *tok_ptr; /* [heads*n_qblocks + 1] */
    int32_t *tok_idx; /* key token indices */
    /* CUSTOM: the method's score FLOPs over dense score FLOPs, in [0, 1] */
    double custom_density;
    const struct ab_mask *mask; /* the shape's base mask (NULL: by causal) */
    void *priv;                 /* builder state; harness only */
    /* What this select() computed, as its author counts it (ab_layout_set_cost):
     * FLOPs (a multiply-add is 2, a compare, exp or max 1; a sort of n items
     * n log2 n) and bytes it had to read and write at least. NaN: not stated. */
    double select_flops, select_bytes;
} ab_layout;

/* Builder API for select(). Each returns AB_OK or AB_ENOMEM/AB_EINVAL.
 * Thread-safe: every call takes one lock (cheap when uncontended), so a
 * method may add entries from inside its OpenMP loops, e.g. one bulk call
 * per row. Entries may come in any order and repeat: finalisation sorts
 * and dedups each row, so the result does not depend on thread timing.
 * Call ab_layout_set_blocks() before adding entries, not concurrently with
 * adds. With block_q != block_k, the "diagonal" key block of query block qb
 * is the one holding its last row: ((qb+1)*block_q - 1) / block_k. */
int ab_layout_set_blocks(ab_layout *l, int block_q, int block_k);
int ab_layout_dense(ab_layout *l);
int ab_layout_custom(ab_layout *l, double density);
int ab_layout_add_block(ab_layout *l, int head, int qblock, int kblock);
/* Add the key blocks [kb0, kb1) to one row. */
int ab_layout_add_block_range(ab_layout *l, int head, int qblock, int kb0, int kb1);
int ab_layout_add_token(ab_layout *l, int head, int qblock, int key);
/* Bulk adds to one row (head, qblock), one lock per call: kblocks[0, n) are
 * key blocks in [0, n_kblocks), keys[0, n) key tokens in [0, seq_len), in
 * any order. All or nothing: one index out of range adds none (AB_EINVAL).
 * n == 0 checks the row and adds nothing. */
int ab_layout_add_blocks(ab_layout *l, int head, int qblock, const int32_t *kblocks, int n);
int ab_layout_add_tokens(ab_layout *l, int head, int qblock, const int32_t *keys, int n);
/* State the work this select() did (see ab_layout.select_flops): call it
 * once, from one thread, typically at the end of select(); a later call
 * replaces the figures. A static pattern states 0, 0. The harness records
 * them per point and reports the selector against this bound (docs/selectors.md).
 * AB_EINVAL for negative or non-finite figures. */
int ab_layout_set_cost(ab_layout *l, double flops, double bytes);

/* ---- base masks ----------------------------------------------------------
 * The mask a workload puts under every method: causal, full, sliding window,
 * prefix-LM, packed documents, chunked (block-causal) prefill. Each is one
 * file in masks/ filling an ab_mask_def and ending with
 * AB_REGISTER_MASK(symbol). A mask is described by a per-element predicate
 * allows(i, j) plus a row span (the allowed keys of row i lie in [lo, hi))
 * and a block classifier (empty / partial / full) derived from them, so the
 * kernels skip empty blocks, run full blocks without per-element tests and
 * test elements only in partial blocks. When `interval` is set the span is
 * exact (row i allows exactly [lo, hi)) and partial blocks cost one compare
 * per element; otherwise partial blocks call allows() per element.
 *
 * A spec is "name" or "name:arg" (e.g. "sliding:4096"). parse() checks the
 * argument once (config time, no length yet); bind() fixes it for one
 * sequence length and seed (e.g. draws document lengths) and may fail. */
enum { AB_BLOCK_EMPTY = 0, AB_BLOCK_PARTIAL = 1, AB_BLOCK_FULL = 2 };
#define AB_MASK_ARGS 4
#define AB_MASK_SPEC 96

typedef struct ab_mask ab_mask;

typedef struct ab_mask_def {
    int abi;             /* AB_ABI_VERSION */
    const char *name;    /* [a-z0-9_]+: the spec's head */
    const char *syntax;  /* e.g. "sliding:W" */
    const char *summary; /* one line for `attnbench list masks` */
    int causal;          /* 1: allows only j <= i */
    int interval;        /* 1: span() is exact */
    /* arg: the text after "name:", NULL when the spec has none. Fill
     * m->arg / m->aux; on error return AB_EINVAL (or AB_ENOMEM) and say why
     * with ab_set_error(m, ...). */
    int (*parse)(ab_mask *m, const char *arg);
    /* Optional: fix the mask for m->seq_len and m->seed (set by the caller);
     * errors as in parse(). */
    int (*bind)(ab_mask *m);
    int (*allows)(const ab_mask *m, int i, int j);
    /* The allowed keys of row i lie in [*lo, *hi) (0 <= lo <= hi <= N). */
    void (*span)(const ab_mask *m, int i, int *lo, int *hi);
    /* Optional exact classifier of rows [q0, q1) x keys [k0, k1): AB_BLOCK_*.
     * NULL: derived from span() (interval masks) or allows(). */
    int (*block)(const ab_mask *m, int q0, int q1, int k0, int k1);
} ab_mask_def;

struct ab_mask {
    const ab_mask_def *def;
    int seq_len;              /* bound length (0 before binding) */
    uint64_t seed;            /* bound seed (document lengths) */
    double arg[AB_MASK_ARGS]; /* parsed numbers */
    int32_t *aux;             /* plugin arrays (malloc), freed by ab_mask_free */
    int64_t naux;
    int32_t *aux2;
    int64_t naux2;
    char spec[AB_MASK_SPEC]; /* the spec as written */
};

#define AB_REGISTER_MASK(sym) const ab_mask_def *const ab_mask_registered_##sym = &(sym);

/* Free aux and aux2 (malloc'd by parse() or bind()) and zero their counts. */
void ab_mask_free(ab_mask *m);
/* The mask of a shape, by value: a shallow copy of *s->mask, or the
 * built-in causal / full mask bound to s->seq_len when s->mask is NULL. */
ab_mask ab_shape_mask(const ab_shape *s);
/* 1 if query i may see key j (0 <= i, j < seq_len). */
int ab_mask_allows(const ab_mask *m, int i, int j);
/* Keys of row i lie in [*lo, *hi); exact for interval masks. */
void ab_mask_span(const ab_mask *m, int i, int *lo, int *hi);
/* Class of rows [q0, q1) x keys [k0, k1): AB_BLOCK_EMPTY/PARTIAL/FULL.
 * (The CPU kernels, which may include only this header, call it too.) */
int ab_mask_block(const ab_mask *m, int q0, int q1, int k0, int k1);
/* Allowed keys of row i within [k0, k1). */
int64_t ab_mask_row_count(const ab_mask *m, int i, int k0, int k1);

/* ---- decode ---------------------------------------------------------------
 * A decode point (docs/decode.md): a cache of N keys, then S steps; step s
 * appends one key per KV head and asks one query per head, which sees every
 * key of the cache, its own included (len = N + s + 1). A decode layout has
 * one row per (layer, head) query, r = layer * heads + head, query block 0
 * spanning all rows (block_q = len); block_k is the page size (Quest: 16).
 * Tensors: q (layers, heads, head_dim); k, v (layers, kv_heads, cap,
 * head_dim) with rows [0, len) valid; out (layers, heads, head_dim). A
 * batch of B sequences is folded into heads (B*H query heads, B*kv_heads KV
 * heads): head h of any sequence still reads KV head h / (heads/kv_heads). */
typedef struct ab_decode {
    int layers;     /* L (1 for a method that is not ab_method.layered) */
    int heads;      /* query heads per layer */
    int kv_heads;   /* KV heads per layer; divides heads */
    int head_dim;   /* d */
    float scale;    /* logit scale */
    int len;        /* keys in the cache now, this step's own included */
    int cap;        /* rows per KV head in k and v (>= len): their stride */
    int step;       /* 0: the first step after prepare(); s: s keys appended since */
    const float *q; /* (layers, heads, head_dim) this step's queries */
    const float *k; /* (layers, kv_heads, cap, head_dim) */
    const float *v; /* (layers, kv_heads, cap, head_dim) */
    uint64_t seed;
    int threads;
} ab_decode;

/* The KV head query head h (of one layer) reads. */
static inline int ab_kv_head(const ab_decode *dp, int h) { return h / (dp->heads / dp->kv_heads); }

/* The decode kernel for a finalised decode layout (DENSE, BLOCK, TOKEN or
 * MIXED): out (layers, heads, head_dim). strategy: how the keys are split
 * over threads (docs/decode.md); splits: chunks per row for SPLITK (0: as
 * many as make every thread busy). Exact softmax over the kept keys, fp32
 * with partials merged by the log-sum-exp rule. */
enum {
    AB_DECODE_AUTO = 0,   /* the kernel's choice (LEAN) */
    AB_DECODE_HEADS = 1,  /* one row per thread, no split (FlashAttention-2 style) */
    AB_DECODE_SPLITK = 2, /* flash-decoding: each row's keys in `splits` chunks */
    AB_DECODE_LEAN = 3    /* Lean Attention: all (row, tile) work split evenly (stream-K) */
};
int ab_kernel_decode(const ab_decode *dp, const ab_layout *l, float *out, int strategy, int splits);

/* ---- the method -------------------------------------------------------- */
typedef struct ab_method {
    int abi;               /* AB_ABI_VERSION; a mismatch stops the program */
    const char *name;      /* unique, [a-z0-9_]+ */
    const char *summary;   /* one line for `attnbench list` */
    const char *reference; /* paper / arXiv id */
    unsigned devices;      /* AB_CPU | AB_GPU */
    unsigned phases;       /* AB_PREFILL | AB_DECODE */
    unsigned dtypes;       /* ABI 9: AB_FP32 | AB_BF16, the CPU inputs it takes; 0 = AB_FP32 */
    /* Native block geometry: the block size the method's authors define it
     * on (XAttention, FlexPrefill: 128). The harness presets the layout with
     * it unless the config overrides it ([method.NAME] or [sweep] block_q /
     * block_k); 0 = the harness default (64); block_k 0 = block_q. */
    int block_q, block_k;
    /* 1: select() reads pb->heldout (the harness then generates it: memory
     * and time for a second draw) */
    int heldout;
    ab_param params[AB_MAX_PARAMS]; /* terminated by a NULL name */
    ab_knob density_knob;
    size_t state_size; /* bytes the harness allocates (zeroed) */
    /* All four take the state pointer; init/select/run return AB_OK or AB_E*.
     * init (optional) sees the same shape select/run later see in pb->s, so
     * it may allocate by shape; fini runs even when init failed, so it must
     * cope with a partly initialised (zeroed) state. */
    int (*init)(void *state, const ab_params *p, const ab_shape *s);
    /* Decide what to compute: fill `out` through the builder API. */
    int (*select)(void *state, const ab_problem *pb, ab_layout *out);
    /* Optional: compute out (heads, seq_len, head_dim) itself. NULL: the
     * shared kernel for the layout's kind runs it. Must be deterministic. */
    int (*run)(void *state, const ab_problem *pb, const ab_layout *l, float *out);
    void (*fini)(void *state); /* optional */
    /* ABI 6. The family the figures colour the method by: one of "dense",
     * "static", "block", "token", "hashing" (LSH buckets, clusters),
     * "lowrank" (feature maps, pooled or summary keys) or "linear" (a
     * recurrence instead of softmax). Required. */
    const char *family;
    /* CUSTOM layouts only (run() approximates softmax attention): the
     * relative L2 error against the exact fp64 attention under the base mask
     * that run() stays within at its default params, on the registry test's
     * fixed-seed problems (tests/test_methods.c: approximation_bounded;
     * N = 512, d = 64, causal and not). Required (> 0) for a CUSTOM method;
     * 0 otherwise. */
    double approx_tol;
    /* Optional, CUSTOM layouts: the weights run() implicitly gives the keys
     * of query `row` of head `head`: w[0, seq_len) >= 0, zero on keys the base
     * mask hides, such that run()'s output row equals sum_j w[j] v[j] /
     * sum_j w[j] (tested). Called after run() with the same problem and
     * layout, concurrently from several threads: read the state only. The
     * harness ranks keys by w to score "effective recall" (docs/metrics:
     * the exact attention mass on the keys w ranks highest, as many as the
     * reported density allows). */
    int (*weights)(void *state, const ab_problem *pb, const ab_layout *l, int head, int row, double *w);
    /* ABI 7, decode (phases & AB_DECODE; see "decode" below). dselect() is
     * required for decode, and select() for prefill; a method may have both. */
    int layered; /* 1: decode calls see the layer stack (ab_decode.layers = L,
                    TidalDecode, DELTA); 0: layers are folded into heads */
    /* Optional: build state from the cache of dp->len keys before the first
     * step (Quest's page bounds: work a server does while prefilling). Timed
     * apart from the steps (prepare_ms). */
    int (*prepare)(void *state, const ab_decode *dp);
    /* One decode step: choose the keys each query (row = layer*heads + head,
     * query block 0) reads, through the builder API; keys [dp->len - appended,
     * dp->len) are new since the last call (dp->step). Timed per step. */
    int (*dselect)(void *state, const ab_decode *dp, ab_layout *out);
    /* Optional: compute out (layers, heads, head_dim) itself. NULL: the shared
     * decode kernel (ab_kernel_decode, AB_DECODE_AUTO). */
    int (*drun)(void *state, const ab_decode *dp, const ab_layout *l, float *out);
} ab_method;

/* The families of ab_method.family, in legend order. */
#define AB_FAMILIES "dense static block token hashing lowrank linear"

/* End a method file with AB_REGISTER(symbol_of_your_ab_method). */
#define AB_REGISTER(sym) const ab_method *const ab_registered_##sym = &(sym);

/* ---- helpers a method may call ----------------------------------------- */
/* The shared CPU kernel for a finalised layout's kind (kernels/cpu): out is
 * (heads, seq_len, head_dim). */
int ab_kernel_layout(const ab_problem *pb, const ab_layout *l, float *out);
/* Exact attention over a row-periodic pattern, from the pattern itself
 * (no layout; kernels/cpu/periodic.c): head h has a period p_h >= 0 and row
 * i keeps the keys of W = [wlo, whi) and those of S = { j in [slo, shi) :
 * j = i mod p_h } outside W (S empty when p_h = 0), both as row() states
 * them for (h, i), clipped to [0, N) and to the base mask. The strided and
 * dilated patterns of Sparse Transformer and Longformer. out is (heads,
 * seq_len, head_dim); a row that keeps nothing is 0. AB_OK, AB_EINVAL,
 * AB_EUNSUPPORTED (head_dim) or AB_ENOMEM. */
typedef struct ab_periodic_row {
    int wlo, whi; /* W; empty when wlo >= whi */
    int slo, shi; /* S's span before taking the class and removing W */
} ab_periodic_row;
typedef struct ab_periodic {
    const void *ctx; /* passed to row() */
    void (*row)(const void *ctx, int h, int i, ab_periodic_row *r);
    const int *period; /* [heads]: p_h >= 0 */
} ab_periodic;
int ab_kernel_periodic(const ab_problem *pb, const ab_periodic *pat, float *out);
/* The attention tile: the kernels' online-softmax inner loop (the flash
 * chunk step, vectorised for the CPU) over keys a method lays out itself,
 * e.g. pooled core tokens beside a raw window (kernels/cpu/tileapi.c). One
 * tile per thread, of at most `rows` (<= 128) query rows of head_dim (<=
 * 512); NULL when out of memory or out of range. begin() starts nq <= rows
 * query rows, row r at q + r * ldq, logits scale * q.k. keys() folds in nk
 * keys (rows of k and v, row stride head_dim): row r sees keys [lo[r],
 * hi[r]) of them (lo NULL: from 0; hi NULL: to nk); keys of later calls
 * simply follow. end() writes row r, the softmax-weighted sum of the values
 * it saw (0 if none), at out + r * ldo, and, when lse is not NULL, its
 * log-sum-exp of the logits (-inf if none), to merge with other parts. */
typedef struct ab_attn_tile ab_attn_tile;
ab_attn_tile *ab_attn_tile_new(int head_dim, int rows);
void ab_attn_tile_free(ab_attn_tile *t);
void ab_attn_tile_begin(ab_attn_tile *t, const float *q, size_t ldq, int nq, float scale);
void ab_attn_tile_keys(ab_attn_tile *t, const float *k, const float *v, int nk, const int *lo, const int *hi);
/* keys() with any pattern: row r sees key c when allow[c * lda + r] != 0
 * (key-major: one row of flags per key; allow NULL: every key). */
void ab_attn_tile_keys_map(ab_attn_tile *t, const float *k, const float *v, int nk,
                           const unsigned char *allow, size_t lda);
void ab_attn_tile_end(const ab_attn_tile *t, float *out, size_t ldo, float *lse);
/* x[i] = exp(x[i] - shift) in place for i < n (a -inf input gives 0);
 * returns the sum. A vector exp on the CPU's widest ISA
 * (AVX-512 and AVX2: our inline exp, <= 1.24 ULP, the same bits on
 * both; elsewhere libm's expf). */
double ab_exp_shift_sum(float *x, int n, float shift);
/* ab_exp_shift_sum(x, n, mx) for mx >= every x[i] (a row's max: no
 * argument is positive), the same values and sum bit for bit; on AVX2 the
 * exp then scales by one power of two instead of two (the kernels'
 * softmax pass). An x[i] above mx + 88.37 (a result near FLT_MAX) may
 * come out inf. */
double ab_exp_max_sum(float *x, int n, float mx);
/* The same x[i] as ab_exp_shift_sum, bit for bit, without the sum (for
 * callers that do not need it: on short rows the sum is most of the cost). */
void ab_exp_shift(float *x, int n, float shift);

/* ---- tasks ----------------------------------------------------------------
 * Synthetic tasks generate one attention layer's Q, K, V with a planted
 * answer (docs/tasks.md). A task is one file in datasets/tasks/ that fills
 * one ab_task and ends with AB_REGISTER_TASK(symbol); the Makefile generates
 * the task registry. The answer never reaches a method: only the task and
 * the scorer see it. */
#define AB_TASK_MAX_PARAMS AB_MAX_VALUES

/* What a task planted: query rows that must retrieve a code. */
typedef struct ab_answer {
    int n;        /* number of (head, row) queries carrying an answer */
    int *head;    /* [n] */
    int *row;     /* [n] query row index */
    int *code;    /* [n] expected code index into the codebook */
    int *key_pos; /* [n] position of the planted key it must retrieve */
    int *group;   /* [n] trial group: a group counts as correct only if all
                         its rows are (passkey). NULL: each query is a group */
    int n_groups; /* number of groups (== n when group is NULL) */
    int n_codes;
    int head_dim;
    float *codebook;     /* [n_codes][head_dim] */
    double decode_floor; /* winning projection must be >= floor * |code|^2 */
    /* Mass answers (answer-bearing traces, docs/traces.md): when span_hi >
     * span_lo, query (head, row) is right when the keys the method keeps
     * hold at least mass_share of the exact attention mass the row puts on
     * keys [span_lo, span_hi) (the needle's tokens). code, key_pos and the
     * codebook are unused (NULL). Zero in every other answer. */
    int span_lo, span_hi;
    double mass_share;
} ab_answer;

#define AB_TASK_MAX_STRINGS 4

/* What generate() is asked for. */
typedef struct ab_task_input {
    const ab_params *p;     /* numeric params, in the order of ab_task.params */
    const char *const *str; /* [AB_TASK_MAX_STRINGS] values of ab_task.string_params,
                               NULL where unset; the pointer itself may be NULL */
    ab_shape s;             /* requested shape (heads, seq_len, head_dim, causal, scale)
                               and s.mask, the point's base mask bound to seq_len
                               (NULL: plain causal / full by s.causal) */
    uint64_t seed;
    double depth; /* [0, 1] */
} ab_task_input;

typedef struct ab_task {
    int abi; /* AB_ABI_VERSION */
    const char *name;
    const char *summary;
    ab_param params[AB_TASK_MAX_PARAMS]; /* NULL name terminates */
    /* Optional string-valued config keys (e.g. "file"), NULL-terminated. */
    const char *string_params[AB_TASK_MAX_STRINGS + 1];
    /* Fill q, k, v (heads, seq_len, head_dim) for in->seed and in->depth,
     * and the answer (may be left empty: n = 0, e.g. for traces).
     * Deterministic: a pure function of the input. On failure return AB_E*
     * and say why with ab_set_error(in, ...). A planted key must be
     * visible to its query rows under in->s.mask (datasets/gen/plant.h); when
     * the mask leaves no valid trial, return AB_EUNSUPPORTED. */
    int (*generate)(const ab_task_input *in, float *q, float *k, float *v, ab_answer *ans);
    /* Optional, cheap: validate an input before any work (e.g. that a trace
     * file exists, is well-formed and fits the requested shape). Called for
     * every shape of the grid while the config is checked; a failure stops
     * the run with exit 2 and the reason given to ab_set_error(in, ...). */
    int (*check)(const ab_task_input *in);
} ab_task;

#define AB_REGISTER_TASK(sym) const ab_task *const ab_task_registered_##sym = &(sym);

/* Free the arrays of an answer (safe on a zeroed answer). */
void ab_answer_free(ab_answer *a);

/* ---- helpers a plugin may call ------------------------------------------
 * SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
 * generators", OOPSLA 2014): a Weyl sequence with step 0x9e3779b97f4a7c15
 * (the golden ratio) through a 64-bit bijective mix (Stafford's Mix13).
 * A small, well-mixed seeded stream; not for cryptography. */
/* The finaliser: a well-mixed 64-bit hash of z (a bijection). */
static inline uint64_t ab_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The step: advance *state by the golden step and return its mix. */
static inline uint64_t ab_splitmix64(uint64_t *state) { return ab_mix64(*state += 0x9e3779b97f4a7c15ull); }

/* The seed of a problem's held-out draw (ab_problem.heldout): a mix of the
 * scored seed, so it is never a seed a grid lists by hand (1, 2, ...). */
static inline uint64_t ab_heldout_seed(uint64_t seed)
{
    return ab_mix64(seed ^ 0x68656c646f7574ull); /* "heldout" */
}

#ifdef __cplusplus
}
#endif
#endif /* ATTNBENCH_H */
