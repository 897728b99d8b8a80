/* layout.h — the runtime side of layouts (runtime/layout.c): the lifecycle
 * the harness drives around a method's select() and the exact pair counts.
 * The builder functions a method calls are in include/attnbench.h. */
#ifndef AB_RUNTIME_LAYOUT_H
#define AB_RUNTIME_LAYOUT_H

#include "attnbench.h"

/* ---- layout lifecycle (runtime/layout.c) --------------------------- */
/* Prepare an empty layout for shape s with the given default block sizes. */
void ab_layout_init(ab_layout *l, const ab_shape *s, int block_q, int block_k);
/* Prepare an empty decode layout for one step (include/attnbench.h,
 * "decode"): one row per (layer, head), query block 0 spanning all of them
 * (block_q = len, full mask over the len keys), key blocks of block_k
 * (0: 16, Quest's page). Its density is kept keys / len, averaged. */
void ab_layout_init_decode(ab_layout *l, const ab_decode *dp, int block_k);
/* After select(): sort, dedup and build the CSR arrays; set kind.
 * An untouched layout (no call at all) is an error (AB_EINVAL). */
int ab_layout_finalize(ab_layout *l);
/* Check structure: CSR monotone, indices in range and sorted/unique, token
 * lists disjoint from kept blocks in MIXED, custom density in [0,1]. */
int ab_layout_validate(const ab_layout *l, char *err, size_t errlen);
void ab_layout_free(ab_layout *l);
/* Kept causally valid pairs (exact, O(entries)), and all valid pairs. */
int64_t ab_layout_kept_pairs(const ab_layout *l);
int64_t ab_layout_valid_pairs(const ab_layout *l);
const char *ab_layout_kind_name(ab_layout_kind k);

/* ---- reads (valid after ab_layout_finalize) -------------------------- */
/* 1 if query row i of head h keeps key j (base mask included). */
int ab_layout_contains(const ab_layout *l, int head, int i, int j);
/* Kept allowed pairs / all pairs the base mask allows (CUSTOM: reported). */
double ab_layout_density(const ab_layout *l);
#endif
