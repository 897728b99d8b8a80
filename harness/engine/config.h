/* config.h — the sweep configuration (INI, parsed with inih) and its
 * validation. Every key is checked; the first problem stops the run before
 * any work, naming the file, line and key. */
#ifndef AB_CONFIG_H
#define AB_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include "attnbench.h"

#define AB_CFG_LIST      64
#define AB_CFG_NAME      32
#define AB_CFG_OVERRIDES 64
#define AB_MAX_MASKS     16 /* base masks in one sweep ([sweep] masks) */
#define AB_DEFAULT_BLOCK 64 /* block of a method that declares none */

typedef struct ab_override {
    char plugin[AB_CFG_NAME]; /* method or task name */
    char param[AB_CFG_NAME];
    int n;
    double v[AB_CFG_LIST]; /* a list is allowed (native densities) */
    int is_str;            /* a task's string param (e.g. file): value in str */
    char str[512];
    int line;
} ab_override;

/* A [sweep.NAME] block: one more grid of the sweep, whose points are added
 * to [sweep]'s (a point in both runs once). Each axis it does not set is
 * [sweep]'s. So a config can time some lengths and score others, give a
 * task its own lengths and depths, or run a second base mask on a subset. */
#define AB_MAX_BLOCKS 16
typedef struct ab_sweep_block {
    char name[AB_CFG_NAME];
    int line;
    int n_tasks;
    char tasks[AB_CFG_LIST][AB_CFG_NAME]; /* 0: inherit */
    int methods_set, n_methods;
    char methods[AB_CFG_LIST][AB_CFG_NAME]; /* set and 0: all */
    int n_lens;
    int seq_lens[AB_CFG_LIST];
    int lens_line;
    int n_heads;
    int heads[AB_CFG_LIST];
    int n_dims;
    int head_dims[AB_CFG_LIST];
    int n_masks;
    char masks[AB_MAX_MASKS][AB_MASK_SPEC];
    int masks_line;
    int n_seeds;
    int64_t seeds[AB_CFG_LIST];
    int n_depths;
    double depths[AB_CFG_LIST];
    int n_dens;
    double densities[AB_CFG_LIST];
    unsigned phases; /* 0: inherit */
    int n_kv;
    int kv_heads[AB_CFG_LIST];
    int kv_line;
    int layers; /* 0: inherit */
    int corr_set;
    double layer_corr;
} ab_sweep_block;

/* One grid as the sweep sees it: [sweep] (g = 0) or block g - 1 with the
 * axes it inherits (pointers into the config). */
typedef struct ab_grid {
    const char *name; /* "sweep" or the block's NAME */
    int n_tasks;
    const char (*tasks)[AB_CFG_NAME];
    int n_methods;
    const char (*methods)[AB_CFG_NAME]; /* 0: all */
    int n_lens;
    const int *seq_lens;
    int n_heads;
    const int *heads;
    int n_dims;
    const int *head_dims;
    int n_masks;
    const char (*masks)[AB_MASK_SPEC];
    int n_seeds;
    const int64_t *seeds;
    int n_depths;
    const double *depths;
    int n_dens;
    const double *densities;
    unsigned phases; /* the phase axis (docs/decode.md) */
    int n_kv;
    const int *kv_heads;
    int kv_line;
    int layers;
    double layer_corr;
    int lens_line, masks_line;            /* where those lists were set (0: default) */
    char lens_where[80], masks_where[80]; /* "[sweep] key 'seq_lens'", "[sweep.X] key 'masks'" */
} ab_grid;

typedef struct ab_config {
    char path[512];
    char *text; /* the file's bytes, stored in the results */
    /* [sweep] */
    int n_tasks;
    char tasks[AB_CFG_LIST][AB_CFG_NAME];
    int n_methods;
    char methods[AB_CFG_LIST][AB_CFG_NAME]; /* 0: all */
    int n_lens;
    int seq_lens[AB_CFG_LIST];
    int n_heads;
    int heads[AB_CFG_LIST];
    int n_dims;
    int head_dims[AB_CFG_LIST];
    /* base masks, specs as written ("causal", "sliding:4096", "document:8");
     * `causal = 0,1` is the old spelling of masks = full, causal */
    int n_masks;
    char masks[AB_MAX_MASKS][AB_MASK_SPEC];
    int masks_line;    /* line of the masks (or causal) key; 0: default */
    char masks_key[8]; /* "masks" or "causal": the key that set them */
    int n_seeds;
    int64_t seeds[AB_CFG_LIST];
    int n_depths;
    double depths[AB_CFG_LIST];
    int n_dens;
    double densities[AB_CFG_LIST];
    int native;           /* densities = native */
    unsigned devices;     /* AB_CPU | AB_GPU */
    unsigned dtypes;      /* AB_FP32 | AB_BF16: the CPU points' input types (default AB_FP32) */
    int block_q, block_k; /* 0: each method's native block (ab_config_blocks) */
    int threads;          /* 0 = all online cores */
    int lens_line;
    /* the phase axis and its shape (docs/decode.md); [sweep] only */
    unsigned phases; /* AB_PREFILL | AB_DECODE (default AB_PREFILL) */
    int n_kv;
    int kv_heads[AB_CFG_LIST]; /* 0: = heads (no grouping) */
    int kv_line;               /* line of kv_heads (0: default) */
    int batch;                 /* decode: sequences per step, folded into heads (1) */
    int steps;                 /* decode: steps per point, the cache growing by one key each (16) */
    int layers;                /* decode: layers of the generated stack (1) */
    double layer_corr;         /* decode: correlation of a layer's Q/K with the layer before (0.9) */
    int n_blocks;
    ab_sweep_block blocks[AB_MAX_BLOCKS];
    /* [timing] (docs/timing.md); warmup..max_time_s are per round */
    int warmup, min_repeats, max_repeats;
    double min_time_s, max_time_s, point_timeout_s;
    double point_mem_gb;     /* address-space limit of a point's child; <0: 80% of RAM, 0: none */
    int rounds;              /* child processes each point is timed in, interleaved */
    int shared_core_check;   /* drop sample pairs measured while the point's threads shared a core */
    int decode_cold;         /* decode: evict the caches before every step (docs/decode.md) */
    int measure_bandwidth;   /* STREAM triad at the start: selectors.tsv's bytes bound (decode: always) */
    int paired;              /* time dense alongside (same child, alternating): speedups are paired ratios */
    double min_sample_ms;    /* batch calls until one sample lasts this long */
    double interference_pct; /* other processes' share of the CPU above which a point is flagged */
    int timed_none;          /* [timing] timed_tasks = none: every point scored only */
    int n_timed_tasks;
    char timed_tasks[AB_CFG_LIST][AB_CFG_NAME]; /* 0: every task is timed */
    int n_timed_depths;
    double timed_depths[AB_CFG_LIST]; /* 0: every depth is timed */
    /* [metrics] */
    int score_rows, exact_max_n, topk;
    /* [calibration] */
    double tolerance;
    int max_iters;
    /* [method.NAME] / [task.NAME] */
    int n_mo;
    ab_override mo[AB_CFG_OVERRIDES];
    int n_to;
    ab_override to[AB_CFG_OVERRIDES];
} ab_config;

/* Grids of the sweep: [sweep] and each [sweep.NAME] block. */
int ab_config_ngrids(const ab_config *c);
/* A task's parameter lists: a list-valued numeric parameter of [task.NAME]
 * (e.g. the trace's `layer = 0, 8, 15`) makes the task an axis of variants,
 * the product of the lists' lengths. ab_config_task_params fills p with the
 * defaults and the config's values of variant v (the first parameter's
 * list turns fastest) and str (may be NULL) with the string parameters. */
int ab_config_task_variants(const ab_config *c, const ab_task *t);
void ab_config_task_params(const ab_config *c, const ab_task *t, int v, ab_params *p, const char **str);
void ab_config_grid(const ab_config *c, int g, ab_grid *out);
/* 1 when points of this task and depth are timed, 0 when only scored. */
int ab_config_timed(const ab_config *c, const char *task, double depth);

/* Fill defaults. */
void ab_config_defaults(ab_config *c);
/* Load and validate. On error returns -1 with "FILE:LINE: key 'K': why" in err. */
int ab_config_load(ab_config *c, const char *path, char *err, size_t errlen);
void ab_config_free(ab_config *c);
/* Parse a comma-separated list of names; 0 or -1 with err. */
int ab_parse_name_list(const char *s, char out[][AB_CFG_NAME], int cap, int *n, char *err, size_t errlen);
/* Validate cross-field constraints that need the registry and memory
 * (called after CLI overrides). */
int ab_config_check(const ab_config *c, char *err, size_t errlen);
/* The block geometry method m runs on under this config: [method.NAME]
 * block_q / block_k, else [sweep]'s, else the method's native, else 64. */
void ab_config_blocks(const ab_config *c, const ab_method *m, int *bq, int *bk);
/* Bytes a decode problem of this shape needs at most (config.c). */
double ab_decode_bytes(const ab_config *c, int layers, int heads, int n, int d);
/* Bytes one point of this shape needs at most (Q, K, V, outputs, layout). */
double ab_point_bytes(int heads, int n, int d);
#endif
