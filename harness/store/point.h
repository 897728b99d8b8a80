/* point.h — one measured point (one row of /points) and the run environment.
 *
 * A point is a plain fixed-size struct with no pointers, so the same bytes
 * travel from the isolated child to the parent over a pipe and into the
 * crash-safe journal. Strings are NUL-terminated and truncated to fit.
 */
#ifndef AB_POINT_H
#define AB_POINT_H

#include <stdint.h>
#include <stddef.h>

#include "attnbench.h" /* AB_MASK_SPEC */

#define AB_SCHEMA_VERSION 1
#define AB_MAX_SAMPLES    256

typedef struct ab_point {
    char key[24]; /* 16 hex digits: hash of everything defining it */
    char method[32];
    char params[160]; /* "name=value,..." of the method's params */
    char device[8];   /* "cpu" | "gpu" */
    char dtype[8];    /* "fp32" | "fp16" | "bf16" */
    char task[32];
    char kernel[16];          /* kernel that executed the layout */
    char layout[8];           /* dense | block | token | mixed | custom */
    char family[8];           /* the method's family (ABI 6, AB_FAMILIES); "": a file written before it */
    int32_t block_q, block_k; /* the layout's blocks (token: rows per key list); 0: dense,
                               * custom, unscored, or a file written before them */
    int32_t seq_len, heads, head_dim, causal, threads; /* causal: the mask's def->causal */
    char mask[AB_MASK_SPEC]; /* base mask spec as written: "causal", "full", "document:8" */
    double mask_density;     /* pairs the base mask allows / N^2 (ab_mask_fraction) */
    int64_t seed;
    double depth;
    double target_density; /* 1.0 for methods without a knob; NaN = native */
    double knob_value;     /* NaN when there is no knob */
    double achieved_density;
    double select_flops, select_bytes;  /* the selector's stated work (ab_layout_set_cost); NaN: not
                                        * stated, or a file written before it */
    double select_ms, run_ms, total_ms; /* medians */
    double min_ms, p10_ms, p90_ms, cv;  /* of total */
    int32_t n_samples;
    double dense_gflops; /* dense-equivalent GFLOP/s at total_ms */
    double recall_mass, recall_topk, rel_l2_err, max_abs_err;
    double accuracy, acc_ci_lo, acc_ci_hi;
    int32_t acc_trials; /* answers (or answer groups) behind accuracy; 0 = none */
    int32_t rows_scored;
    char status[16]; /* ok calib_failed unsupported error crashed timeout oom nan */
    char message[256];
    /* the timing protocol (docs/timing.md); NaN / 0 in files written before it */
    int32_t rounds;                  /* child processes the point was timed in (0: not timed) */
    int32_t calls;                   /* calls per timed sample (batching), largest over rounds */
    double total_lo_ms, total_hi_ms; /* 95% interval of total_ms (bootstrap over rounds and samples) */
    double dense_pair_ms;            /* median of the dense samples paired with this point's */
    double rel_dense;                /* median over paired samples of total / dense (same child,
                            * adjacent calls); 1/rel_dense is the speedup. NaN: unpaired */
    double rel_lo, rel_hi;           /* its 95% interval */
    double foreign_pct; /* CPU time other processes used while this point was timed, % of the machine */
    double steal_pct;   /* CPU time the hypervisor stole meanwhile, % of the machine */
    double load1;       /* largest 1-minute load average seen at the start of a round */
    double fma_gflops;  /* machine-speed index: 1-thread FMA GFLOP/s probed around each
                            * round, mean over rounds (ab_fma_probe); NaN untimed */
    double shared_pct;  /* % of sample pairs dropped because the point's threads shared
                            * one physical core (a T-thread FMA probe around every pair ran
                            * below 0.7x the child's best); NaN untimed or 1 thread */
    double point_s;     /* wall seconds of the point's child processes (calibration,
                            * scoring, every round): what the point cost to measure */
    /* the phase axis (docs/decode.md); "" / 0 / NaN in files written before it
     * (read as prefill with kv_heads = heads) */
    char phase[8];          /* "prefill" | "decode" */
    int32_t kv_heads;       /* KV heads (GQA; == heads: none) */
    int32_t batch;          /* decode: sequences per step (folded into heads) */
    int32_t steps;          /* decode: steps per call; the times are per step */
    int32_t layers;         /* decode: layers of the stack */
    double layer_corr;      /* decode: the stack's Q/K correlation between layers */
    double prepare_ms;      /* decode: median of prepare() (the selector's state from the cache) */
    double kv_bytes;        /* decode: K and V bytes the attention read per step, mean over steps
                           * (per KV head, the union of its query heads' kept keys) */
    double cache_bytes;     /* decode: bytes of the whole K and V cache, mean over steps */
    char layer_recall[512]; /* decode, layers > 1: mass recall per layer, "r0,r1,..." (64 layers) */
    char tparams[48];       /* "name=value,..." of the task's params where they differ from its
                             * defaults (a trace's layer); "" otherwise or in older files */
    char head_recall[384];  /* prefill: mass recall per head, "r0,r1,..." (first 64 heads;
                             * "" with one head, unscored, or in older files) */
    char timing[48];        /* flags: "" (clean), or a comma list of interference,
                            * unpaired, untimed (scored only), rounds_disagree, cores_shared */
    /* raw per-sample timings (stored under /samples/KEY): per call of the
     * sample's batch, in ms; dense: the paired dense sample (NaN unpaired) */
    double sample_select_ms[AB_MAX_SAMPLES];
    double sample_run_ms[AB_MAX_SAMPLES];
    double sample_dense_ms[AB_MAX_SAMPLES];
    int32_t sample_round[AB_MAX_SAMPLES];
    int32_t sample_calls[AB_MAX_SAMPLES];
} ab_point;

/* Statuses that count as final for --resume (all of them: a point is only
 * recorded once it has ended one way or another). */
int ab_status_is_final(const char *status);
int ab_status_is_ok(const char *status);
/* Set a point's status and its message (printf-style). */
void ab_point_set_status(ab_point *p, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The status an AB_E* code from a plugin or kernel stands for:
 * AB_ENOMEM "oom", AB_EUNSUPPORTED "unsupported", anything else "error". */
const char *ab_status_of_code(int rc);
/* The point's base mask spec ("causal" / "full" for rows written before
 * base masks, by their causal column). */
const char *ab_point_mask(const ab_point *p);
/* Order of points by workload: task, device, dtype, seq_len, heads,
 * head_dim, [causal and mask with AB_WORK_MASK], seed, depth. Export and
 * show match a dense point to a method's point with it (speedups), with
 * AB_WORK_BASELINE: a bf16 point's dtype compares as fp32 (its baseline is
 * fp32 dense, as in its paired ratio: docs/timing.md). */
#define AB_WORK_MASK     1
#define AB_WORK_BASELINE 2
int ab_point_work_cmp(const ab_point *x, const ab_point *y, int flags);
/* 1: the point is the speedups' baseline, method "dense" on its device's
 * own inputs (fp32 on the CPU; not dense on bf16, which is a point of the
 * dtype axis measured against it). */
int ab_point_is_baseline(const ab_point *p);
/* Order of dtypes (ab_point.dtype, at most 8 chars) in tables: fp32,
 * fp16, bf16, then by name. */
int ab_dtype_cmp(const char *x, const char *y);
/* A point's series label in tables and legends: its method, "@device" when
 * the file has several devices, ":bf16" on bf16 inputs (the dtype axis). */
void ab_point_series_name(const ab_point *p, int multi_dev, char *buf, size_t n);
/* 1 for a decode point (phase "decode"). */
int ab_point_is_decode(const ab_point *p);
/* 1 when the point's timing flags (the comma list in p->timing) hold flag
 * ("interference", "unpaired", "untimed", "rounds_disagree"). */
int ab_point_has_flag(const ab_point *p, const char *flag);
/* 1 when the point carries a timing: status ok, a finite total_ms > 0 and
 * not flagged untimed (scored only). Timing figures and tables use these
 * points only; accuracy and recall use every status-ok point. */
int ab_point_timed(const ab_point *p);
/* The paired speedup over dense of a timed point: 1 / rel_dense (the
 * median ratio to dense flash in the same child, adjacent calls), with its
 * 95% interval [1 / rel_hi, 1 / rel_lo] (NaN ends when unknown). Returns 1
 * when the point has a finite rel_dense > 0, else 0 (all three NaN): the
 * caller falls back to dense total_ms / total_ms on the matching workload. */
int ab_point_paired_speedup(const ab_point *p, double *speedup, double *lo, double *hi);

/* The comma lists of per-layer / per-head recall (layer_recall,
 * head_recall): v[0, count) written with `decimals` digits, as many as fit
 * in buf (n bytes); read back into v (at most cap values), returning the
 * count. */
void ab_point_put_list(char *buf, size_t n, const double *v, int count, int decimals);
size_t ab_point_get_list(const char *s, double *v, size_t cap);

/* Run environment: string attributes of the file's root group. */
#define AB_ENV_MAX 48
typedef struct ab_env {
    int n;
    char name[AB_ENV_MAX][32];
    char *value[AB_ENV_MAX]; /* malloc'd */
} ab_env;

void ab_env_set(ab_env *e, const char *name, const char *value);
const char *ab_env_get(const ab_env *e, const char *name);
void ab_env_free(ab_env *e);

#endif
