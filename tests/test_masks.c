/* test_masks.c — base masks (masks/, runtime/mask.c, runtime/maskspec.c):
 * spec parsing and its errors, the block classifier and pair counts against
 * brute force, document length distributions, and every registered mask
 * (plus a non-interval test mask that exercises the element-map path) x
 * flash / blocksparse / gather / mixed x every ISA this CPU has, against
 * the fp64 reference under the same mask. Iterates the mask registry, so a
 * new mask file is tested with no new test code. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/registry.h"
#include "runtime/layout.h"
#include "kernels/cpu/simd.h"
#include "runtime/kernels.h"
#include "kernels/kernels.h"

#define MT_TOL 1e-5

static uint64_t mt_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double mt_unif(uint64_t *s) { return ((double)(mt_next(s) >> 11) + 0.5) * 0x1.0p-53; }
static int mt_int(uint64_t *s, int n) { return (int)(mt_next(s) % (uint64_t)n); }

/* Specs exercised for every length below: each registered mask appears at
 * least once (checked), with arguments that make it differ from causal. */
static const char *const mt_specs[] = {
    "causal",     "full",       "sliding:37", "sliding:1",        "prefix:0.3",          "prefix:5",
    "chunked:50", "chunked:64", "document:3", "document:4:equal", "document:5:longtail", "document:1",
};
#define MT_NSPECS (sizeof mt_specs / sizeof mt_specs[0])

/* A test-only mask that is not an interval per row: causal, minus keys
 * with (i + j) % 3 == 1, plus the first 3 keys always. Exercises the
 * element-map path of the kernels (masked == 2) and the generic counts. */
static int odd_allows(const ab_mask *m, int i, int j)
{
    (void)m;
    return j < 3 || (j <= i && (i + j) % 3 != 1);
}
static void odd_span(const ab_mask *m, int i, int *lo, int *hi)
{
    (void)m;
    *lo = 0;
    *hi = i + 1 > 3 ? i + 1 : 3;
}
static const ab_mask_def mt_odd_def = {
    .abi = AB_ABI_VERSION,
    .name = "odd",
    .syntax = "odd",
    .summary = "test",
    .causal = 0,
    .interval = 0,
    .allows = odd_allows,
    .span = odd_span,
};

/* Bind spec (or the odd mask for "odd") to N. */
static void mt_mask(ab_mask *m, const char *spec, int n, uint64_t seed)
{
    char err[256];
    if (!strcmp(spec, "odd")) {
        memset(m, 0, sizeof *m);
        m->def = &mt_odd_def;
        m->seq_len = n;
        strcpy(m->spec, "odd");
        return;
    }
    cr_assert_eq(ab_mask_make(m, spec, n, seed, err, sizeof err), AB_OK, "%s at N=%d: %s", spec, n, err);
}

Test(masks, registry_has_the_six_base_masks)
{
    static const char *const want[] = { "causal", "full", "sliding", "prefix", "document", "chunked" };
    for (size_t i = 0; i < 6; i++) cr_assert_not_null(ab_mask_find(want[i]), "%s", want[i]);
    for (int i = 0; i < ab_mask_count; i++) {
        int seen = 0;
        for (size_t s = 0; s < MT_NSPECS; s++)
            seen |= !strncmp(mt_specs[s], ab_mask_at(i)->name, strlen(ab_mask_at(i)->name));
        cr_assert(seen, "mask '%s' is registered but not in mt_specs: add a spec for it",
                  ab_mask_at(i)->name);
    }
    const ab_mask_def *mk[64];
    char err[256];
    for (int i = 0; i < ab_mask_count && i < 64; i++) mk[i] = ab_mask_at(i);
    cr_assert_eq(ab_mask_registry_check(mk, ab_mask_count, err, sizeof err), 0, "%s", err);
}

Test(masks, bad_specs_are_rejected_with_a_reason)
{
    static const char *const bad[] = {
        "",
        "nosuch",
        "sliding",
        "sliding:-1",
        "sliding:0",
        "sliding:abc",
        "sliding:4x",
        "prefix",
        "prefix:1.5",
        "prefix:-0.1",
        "prefix:-3",
        "chunked:0",
        "chunked:",
        "document",
        "document:0",
        "document:8:weird",
        "document:1+0+3",
        "document:+4",
        "document:4++4",
        "causal:1",
        "full:x",
    };
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        cr_assert_neq(ab_mask_check_spec(bad[i], err, sizeof err), 0, "'%s' accepted", bad[i]);
        cr_assert_gt(strlen(err), 5, "'%s': no reason", bad[i]);
    }
    static const char *const good[] = { "causal",
                                        "full",
                                        "sliding:4096",
                                        "prefix:0.25",
                                        "prefix:0",
                                        "prefix:1.0",
                                        "prefix:100",
                                        "chunked:2048",
                                        "document:8",
                                        "document:8:longtail",
                                        "document:4096+4096+8192" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert_eq(ab_mask_check_spec(good[i], err, sizeof err), 0, "'%s': %s", good[i], err);
    /* length-dependent errors come at bind time */
    ab_mask m;
    cr_assert_neq(ab_mask_make(&m, "document:4096+4096+8192", 12288, 1, err, sizeof err), AB_OK);
    cr_assert(strstr(err, "16384") && strstr(err, "12288"), "%s", err);
    cr_assert_eq(ab_mask_make(&m, "document:4096+4096+8192", 16384, 1, err, sizeof err), AB_OK);
    ab_mask_free(&m);
    cr_assert_neq(ab_mask_make(&m, "document:9", 8, 1, err, sizeof err), AB_OK);
    cr_assert_neq(ab_mask_make(&m, "prefix:100", 64, 1, err, sizeof err), AB_OK);
    /* parse() and bind() say why with ab_set_error(m, ...): word for word */
    cr_assert_str_eq(err, "prefix of 100 tokens is longer than N = 64");
    cr_assert_neq(ab_mask_check_spec("sliding:0", err, sizeof err), 0);
    cr_assert_str_eq(err, "sliding needs a window W >= 1 tokens (sliding:W), got '0'");
}

Test(masks, document_lengths)
{
    char err[256];
    ab_mask a, b, c;
    for (int dist = 0; dist < 3; dist++) {
        const char *spec = dist == 0 ? "document:8:equal" : dist == 1 ? "document:8" : "document:8:longtail";
        cr_assert_eq(ab_mask_make(&a, spec, 16384, 7, err, sizeof err), AB_OK, "%s", err);
        cr_assert_eq(a.naux2, 9);
        cr_assert_eq(a.aux2[0], 0);
        cr_assert_eq(a.aux2[8], 16384);
        int mn = 1 << 30, mx = 0;
        for (int d = 0; d < 8; d++) {
            const int len = a.aux2[d + 1] - a.aux2[d];
            cr_assert_geq(len, 1);
            mn = len < mn ? len : mn;
            mx = len > mx ? len : mx;
        }
        if (dist == 0)
            cr_assert_eq(mx, mn, "equal lengths");
        else
            cr_assert_gt(mx, mn, "%s: seeded lengths differ", spec);
        /* same seed, same documents; another seed, others */
        cr_assert_eq(ab_mask_make(&b, spec, 16384, 7, err, sizeof err), AB_OK);
        cr_assert_eq(memcmp(a.aux2, b.aux2, 9 * sizeof(int32_t)), 0);
        cr_assert_eq(ab_mask_make(&c, spec, 16384, 8, err, sizeof err), AB_OK);
        if (dist) cr_assert_neq(memcmp(a.aux2, c.aux2, 9 * sizeof(int32_t)), 0);
        ab_mask_free(&a);
        ab_mask_free(&b);
        ab_mask_free(&c);
    }
    /* explicit list */
    cr_assert_eq(ab_mask_make(&a, "document:3+5+2", 10, 1, err, sizeof err), AB_OK);
    cr_assert(ab_mask_allows(&a, 7, 3) && !ab_mask_allows(&a, 8, 7) && ab_mask_allows(&a, 9, 8));
    cr_assert(!ab_mask_allows(&a, 2, 3) && !ab_mask_allows(&a, 3, 2));
    ab_mask_free(&a);
}

/* The predicate, spans, block classes, row counts and pair totals agree. */
Test(masks, spans_blocks_and_counts_match_brute_force)
{
    static const int ns[] = { 1, 7, 130, 257 };
    uint64_t rng = 99;
    for (size_t s = 0; s <= MT_NSPECS; s++) {
        const char *spec = s < MT_NSPECS ? mt_specs[s] : "odd";
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
            const int n = ns[a];
            ab_mask m;
            if (strstr(spec, "document:") && n < 5) continue;
            if (!strcmp(spec, "prefix:5") && n < 5) continue;
            mt_mask(&m, spec, n, 3);
            int64_t pairs = 0;
            for (int i = 0; i < n; i++) {
                int lo, hi;
                ab_mask_span(&m, i, &lo, &hi);
                for (int j = 0; j < n; j++) {
                    const int ok = ab_mask_allows(&m, i, j);
                    pairs += ok;
                    if (ok) cr_assert(j >= lo && j < hi, "%s N=%d: (%d,%d) outside span", spec, n, i, j);
                    if (m.def->interval && j >= lo && j < hi)
                        cr_assert(ok, "%s N=%d: span of an interval mask not exact", spec, n);
                    if (m.def->causal && j > i) cr_assert(!ok, "%s claims causal", spec);
                }
            }
            cr_assert_eq(ab_mask_pairs(&m), pairs, "%s N=%d", spec, n);
            for (int t = 0; t < 200; t++) {
                int q0 = mt_int(&rng, n), q1 = q0 + 1 + mt_int(&rng, n - q0);
                int k0 = mt_int(&rng, n), k1 = k0 + 1 + mt_int(&rng, n - k0);
                int64_t cnt = 0;
                for (int i = q0; i < q1; i++)
                    for (int j = k0; j < k1; j++) cnt += ab_mask_allows(&m, i, j);
                const int64_t area = (int64_t)(q1 - q0) * (k1 - k0);
                const int want = cnt == 0 ? AB_BLOCK_EMPTY : cnt == area ? AB_BLOCK_FULL : AB_BLOCK_PARTIAL;
                cr_assert_eq(ab_mask_block(&m, q0, q1, k0, k1), want, "%s N=%d [%d,%d)x[%d,%d)", spec, n, q0,
                             q1, k0, k1);
                int64_t rc = ab_mask_row_count(&m, q0, k0, k1), rb = 0;
                for (int j = k0; j < k1; j++) rb += ab_mask_allows(&m, q0, j);
                cr_assert_eq(rc, rb);
            }
            if (strcmp(spec, "odd")) ab_mask_free(&m);
        }
    }
}

/* ---- kernels under every mask ------------------------------------------- */

typedef struct mt_case {
    ab_problem pb;
    ab_mask mask;
    float *q, *k, *v, *out;
    double *ref, *rsum;
    size_t n;
} mt_case;

static void mt_make(mt_case *c, const char *spec, int heads, int n, int d, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    mt_mask(&c->mask, spec, n, seed);
    c->n = (size_t)heads * n * d;
    c->q = malloc(c->n * sizeof(float));
    c->k = malloc(c->n * sizeof(float));
    c->v = malloc(c->n * sizeof(float));
    c->out = malloc(c->n * sizeof(float));
    c->ref = malloc(c->n * sizeof(double));
    c->rsum = malloc((size_t)heads * n * sizeof(double));
    cr_assert(c->q && c->k && c->v && c->out && c->ref && c->rsum);
    uint64_t s = seed;
    for (size_t e = 0; e < c->n; e++) {
        c->q[e] = (float)(2.0 * mt_unif(&s) - 1.0) * 2.0f;
        c->k[e] = (float)(2.0 * mt_unif(&s) - 1.0) * 2.0f;
        c->v[e] = (float)(2.0 * mt_unif(&s) - 1.0);
    }
    c->pb.s = (ab_shape){ heads,    n, d, c->mask.def->causal, (float)(1.0 / sqrt((double)d)),
                          &c->mask, 0, 1, AB_PREFILL };
    c->pb.q = c->q;
    c->pb.k = c->k;
    c->pb.v = c->v;
    c->pb.seed = seed;
    c->pb.threads = 2;
}

static void mt_free(mt_case *c)
{
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->out);
    free(c->ref);
    free(c->rsum);
    if (strcmp(c->mask.spec, "odd")) ab_mask_free(&c->mask);
}

static void mt_ref(mt_case *c, const ab_layout *l)
{
    const int H = c->pb.s.heads, N = c->pb.s.seq_len, d = c->pb.s.head_dim;
    int *rows = malloc((size_t)N * sizeof(int));
    for (int i = 0; i < N; i++) rows[i] = i;
    for (int h = 0; h < H; h++)
        cr_assert_eq(
            ab_ref_rows(&c->pb, h, rows, N, l, c->ref + (size_t)h * N * d, NULL, c->rsum + (size_t)h * N),
            AB_OK);
    free(rows);
}

/* rel L2 of out vs ref; INFINITY on NaN or a non-zero row the ref leaves empty */
static double mt_err(const mt_case *c)
{
    const int d = c->pb.s.head_dim;
    double num = 0.0, den = 0.0;
    for (size_t e = 0; e < c->n; e++) {
        const double diff = (double)c->out[e] - c->ref[e];
        num += diff * diff;
        den += c->ref[e] * c->ref[e];
        if (isnan(c->out[e]) || (c->rsum[e / d] == 0.0 && c->out[e] != 0.0f)) return INFINITY;
    }
    return den == 0.0 ? (num == 0.0 ? 0.0 : INFINITY) : sqrt(num / den);
}

enum { MT_BLOCK, MT_TOKEN, MT_MIXED };

static void mt_layout(ab_layout *l, const ab_shape *s, int bq, int bk, int style, uint64_t seed)
{
    uint64_t rng = seed;
    ab_layout_init(l, s, 64, 64);
    cr_assert_eq(ab_layout_set_blocks(l, bq, bk), AB_OK);
    for (int h = 0; h < s->heads; h++)
        for (int qb = 0; qb < l->n_qblocks; qb++) {
            if (style != MT_TOKEN)
                for (int kb = 0; kb < l->n_kblocks; kb++)
                    if (mt_unif(&rng) < 0.4) cr_assert_eq(ab_layout_add_block(l, h, qb, kb), AB_OK);
            if (style != MT_BLOCK) {
                const int nt = mt_int(&rng, 120);
                for (int t = 0; t < nt; t++)
                    cr_assert_eq(ab_layout_add_token(l, h, qb, mt_int(&rng, s->seq_len)), AB_OK);
            }
        }
    if (style != MT_TOKEN) cr_assert_eq(ab_layout_add_block(l, 0, 0, 0), AB_OK);
    if (style != MT_BLOCK) cr_assert_eq(ab_layout_add_token(l, 0, 0, s->seq_len - 1), AB_OK);
    cr_assert_eq(ab_layout_finalize(l), AB_OK);
    char err[256];
    cr_assert_eq(ab_layout_validate(l, err, sizeof err), AB_OK, "%s", err);
}

/* Kept pairs and density against a brute-force count with contains(). */
static void mt_check_density(const ab_layout *l, const ab_mask *m, const char *spec)
{
    int64_t kept = 0, valid = 0;
    for (int h = 0; h < l->heads; h++)
        for (int i = 0; i < l->seq_len; i++)
            for (int j = 0; j < l->seq_len; j++) {
                valid += ab_mask_allows(m, i, j);
                kept += ab_layout_contains(l, h, i, j);
            }
    cr_assert_eq(ab_layout_valid_pairs(l), valid, "%s", spec);
    cr_assert_eq(ab_layout_kept_pairs(l), kept, "%s %s", spec, ab_layout_kind_name(l->kind));
}

Test(masks, kernels_match_reference_under_every_mask)
{
    static const int shapes[][2] = { { 257, 16 }, { 130, 64 }, { 200, 72 } };
    static const int blocks[][2] = { { 64, 64 }, { 16, 32 }, { 100, 7 } };
    for (size_t s = 0; s <= MT_NSPECS; s++) {
        const char *spec = s < MT_NSPECS ? mt_specs[s] : "odd";
        for (size_t a = 0; a < sizeof shapes / sizeof shapes[0]; a++) {
            mt_case c;
            mt_make(&c, spec, 2, shapes[a][0], shapes[a][1], 11 + s * 7 + a);
            /* dense */
            mt_ref(&c, NULL);
            for (int isa = 0; isa < AB_ISA_COUNT; isa++) {
                if (!ab_cpu_isa_supported(isa)) continue;
                memset(c.out, 0xff, c.n * sizeof(float)); /* NaN: every element written */
                cr_assert_eq(ab_kernel_flash_isa(&c.pb, c.out, isa), AB_OK);
                const double e = mt_err(&c);
                cr_assert_leq(e, MT_TOL, "flash %s %s N=%d d=%d: rel L2 %g", spec, ab_cpu_isa_name(isa),
                              shapes[a][0], shapes[a][1], e);
            }
            /* sparse layouts */
            for (int style = MT_BLOCK; style <= MT_MIXED; style++) {
                const int bi = (int)((a + style) % 3);
                ab_layout l;
                mt_layout(&l, &c.pb.s, blocks[bi][0], blocks[bi][1], style, 5 + style + a);
                mt_check_density(&l, &c.mask, spec);
                mt_ref(&c, &l);
                for (int isa = 0; isa < AB_ISA_COUNT; isa++) {
                    if (!ab_cpu_isa_supported(isa)) continue;
                    memset(c.out, 0xff, c.n * sizeof(float));
                    const int rc = style == MT_BLOCK ? ab_kernel_blocksparse_isa(&c.pb, &l, c.out, isa)
                                                     : ab_kernel_gather_isa(&c.pb, &l, c.out, isa);
                    cr_assert_eq(rc, AB_OK);
                    const double e = mt_err(&c);
                    cr_assert_leq(e, MT_TOL, "%s %s %s N=%d block %dx%d: rel L2 %g",
                                  ab_layout_kind_name(l.kind), spec, ab_cpu_isa_name(isa), shapes[a][0],
                                  blocks[bi][0], blocks[bi][1], e);
                }
                ab_layout_free(&l);
            }
            mt_free(&c);
        }
    }
}

/* A layout built for another mask is refused (the kernels check the pointer). */
Test(masks, kernels_refuse_a_layout_of_another_mask)
{
    mt_case c;
    mt_make(&c, "sliding:8", 1, 64, 16, 1);
    ab_shape other = c.pb.s;
    other.mask = NULL;
    ab_layout l;
    mt_layout(&l, &other, 16, 16, MT_BLOCK, 1);
    cr_assert_eq(ab_kernel_blocksparse(&c.pb, &l, c.out), AB_EINVAL);
    ab_layout_free(&l);
    mt_free(&c);
}

/* Long sequences switch flash to 128-row query tiles (flash.c: when one
 * head's K and V exceed 4 MiB); rows around tile edges against the
 * reference, under causal, full and a document mask. */
Test(masks, flash_tall_tiles_match_reference)
{
    static const char *const specs[] = { "causal", "full", "document:5", "sliding:300" };
    const int N = 4200, d = 128; /* N d 8 bytes > 4 MiB; N % 128 != 0 */
    static const int rows[] = { 0,   1,    63,   64,   127,  128,  129,  255,
                                256, 1000, 2047, 2048, 4095, 4096, 4150, 4199 };
    const int nr = (int)(sizeof rows / sizeof rows[0]);
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++) {
        mt_case c;
        mt_make(&c, specs[s], 1, N, d, 77 + s);
        memset(c.out, 0xff, c.n * sizeof(float));
        cr_assert_eq(ab_kernel_flash(&c.pb, c.out), AB_OK);
        double *ref = malloc((size_t)nr * d * sizeof(double)); /* (nr, d) */
        cr_assert_not_null(ref);
        cr_assert_eq(ab_ref_rows(&c.pb, 0, rows, nr, NULL, ref, NULL, NULL), AB_OK);
        double num = 0.0, den = 0.0;
        for (int a = 0; a < nr; a++)
            for (int x = 0; x < d; x++) {
                const double o = c.out[(size_t)rows[a] * d + x], r = ref[(size_t)a * d + x];
                cr_assert(!isnan(o), "%s row %d not written", specs[s], rows[a]);
                num += (o - r) * (o - r);
                den += r * r;
            }
        cr_assert_leq(sqrt(num / den), MT_TOL, "%s: rel L2 %g", specs[s], sqrt(num / den));
        free(ref);
        mt_free(&c);
    }
}
