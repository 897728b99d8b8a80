/* mask.c — queries on base masks (include/attnbench.h, "base masks"): the
 * per-element predicate, the row span and the empty / partial / full block
 * classifier the kernels use to skip, run unmasked, or test elements.
 * The mask plugins themselves are in masks/; parsing a spec and binding it
 * to a length is harness work (runtime/maskspec.c). */
#include <string.h>

#include "runtime/registry.h" /* ab_mask_pairs */

extern const ab_mask_def ab_mask_causal, ab_mask_full;

ab_mask ab_shape_mask(const ab_shape *s)
{
    ab_mask m;
    if (s && s->mask) return *s->mask;
    memset(&m, 0, sizeof m);
    m.def = s && s->causal ? &ab_mask_causal : &ab_mask_full;
    m.seq_len = s && s->seq_len > 0 ? s->seq_len : 0;
    strcpy(m.spec, m.def->name);
    return m;
}

int ab_mask_allows(const ab_mask *m, int i, int j)
{
    if (i < 0 || j < 0 || i >= m->seq_len || j >= m->seq_len) return 0;
    return m->def->allows(m, i, j) != 0;
}

void ab_mask_span(const ab_mask *m, int i, int *lo, int *hi)
{
    int a = 0, b = 0;
    if (i >= 0 && i < m->seq_len) m->def->span(m, i, &a, &b);
    a = a < 0 ? 0 : a;
    b = b > m->seq_len ? m->seq_len : b;
    *lo = a;
    *hi = b > a ? b : a;
}

int64_t ab_mask_row_count(const ab_mask *m, int i, int k0, int k1)
{
    int lo, hi;
    ab_mask_span(m, i, &lo, &hi);
    const int a = lo > k0 ? lo : k0, b = hi < k1 ? hi : k1;
    if (b <= a) return 0;
    if (m->def->interval) return b - a;
    int64_t n = 0;
    for (int j = a; j < b; j++) n += m->def->allows(m, i, j) != 0;
    return n;
}

int ab_mask_block(const ab_mask *m, int q0, int q1, int k0, int k1)
{
    q0 = q0 < 0 ? 0 : q0;
    k0 = k0 < 0 ? 0 : k0;
    q1 = q1 > m->seq_len ? m->seq_len : q1;
    k1 = k1 > m->seq_len ? m->seq_len : k1;
    if (q0 >= q1 || k0 >= k1) return AB_BLOCK_EMPTY;
    if (m->def->block) return m->def->block(m, q0, q1, k0, k1);
    int full = 1, any = 0;
    for (int i = q0; i < q1 && (full || !any); i++) {
        const int64_t c = ab_mask_row_count(m, i, k0, k1);
        any |= c > 0;
        full &= c == k1 - k0;
    }
    return full ? AB_BLOCK_FULL : any ? AB_BLOCK_PARTIAL : AB_BLOCK_EMPTY;
}

int64_t ab_mask_pairs(const ab_mask *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->seq_len; i++) n += ab_mask_row_count(m, i, 0, m->seq_len);
    return n;
}
