/* grid.h — the config expanded into the sweep's plan: its problems (bases:
 * task, shape, base mask, seed, depth) and its points (jobs: method, device,
 * target density on one problem), every grid of the config in order, each
 * problem and point once, with point keys, calibration families and their
 * chains; optionally one shard of it. */
#ifndef AB_GRID_H
#define AB_GRID_H
#include <stddef.h>
#include <stdint.h>
#include "attnbench.h"
#include "harness/engine/config.h"

typedef struct base_pt {
    const ab_task *task;
    ab_params tparams;
    const char *tstr[AB_TASK_MAX_STRINGS]; /* string params (point into the config) */
    int n, heads, d;
    const char *mask;    /* base mask spec (points into the config) */
    int causal;          /* the mask's def->causal */
    double mask_density; /* allowed pairs / N^2 of the mask bound to (n, seed) */
    int64_t seed;
    double depth;
    int timed;   /* 0: the points are scored only ([timing] timed_tasks / timed_depths) */
    int heldout; /* 1: a method of its points reads a held-out draw (ab_method.heldout) */
    /* the phase axis (docs/decode.md) */
    int phase;         /* AB_PREFILL or AB_DECODE */
    int kv_heads;      /* KV heads (== heads: no grouping) */
    int batch, steps;  /* decode: sequences folded into heads; steps (prefill: 1, 0) */
    int layers;        /* decode: layers of the stack (prefill: 1) */
    double layer_corr; /* decode: Q/K correlation between adjacent layers */
} base_pt;

/* The rows a problem generates: N (prefill) or N + steps (decode). */
static inline int ab_base_rows(const base_pt *b) { return b->phase == AB_DECODE ? b->n + b->steps : b->n; }
/* The suffix the phase axis adds to problem hashes and point keys ("" for
 * a prefill problem without grouped heads: older files keep their keys). */
void ab_base_phase_tag(const base_pt *b, char *buf, size_t n);

typedef struct job {
    int base;
    const ab_method *m;
    ab_params params;
    unsigned device;
    unsigned dtype;       /* AB_FP32 or AB_BF16 (CPU); AB_FP32 on the GPU: its fp16 */
    double target;        /* NaN: native (knob fixed) */
    int block_q, block_k; /* the layout's preset blocks (ab_config_blocks) */
    char key[24];
    uint64_t fam;  /* hash of the key without N and depth: the calibration family */
    int family;    /* the family's number, in order of first appearance (job_chain) */
    char pred[24]; /* key of the family's point just before this one ("": none) */
} job;

/* What the command line narrows; each left 0 keeps the config's choice. */
typedef struct ab_plan_opts {
    char methods[AB_CFG_LIST][AB_CFG_NAME];
    int n_methods;        /* 0: each grid's methods, else all */
    unsigned devices;     /* AB_CPU | AB_GPU; 0: [sweep] devices */
    int shard_i, shard_n; /* shard_n > 1: every shard_n-th calibration family from shard_i */
} ab_plan_opts;

/* The sweep's problems, in run order, and its points (each job's base
 * indexes bases). */
typedef struct ab_plan {
    base_pt *bases;
    int nb;
    job *jobs;
    int nj;
} ab_plan;

/* Expand the config's grids (threads is part of every point's key). 0, or
 * -1 with "FILE: where: why" in err (a base mask that cannot be bound). */
int ab_plan_build(const ab_config *c, const ab_plan_opts *o, int threads, ab_plan *p, char *err,
                  size_t errlen);
void ab_plan_free(ab_plan *p);

/* A method's parameters: its defaults with the config's overrides (the
 * first value of each list). */
void ab_method_params(const ab_config *c, const ab_method *m, ab_params *p);
/* 64-bit FNV-1a of a string (point keys, seeds derived from names). */
uint64_t ab_fnv1a(const char *s);
#endif
