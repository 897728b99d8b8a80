/* document.c — packed sequences: the sequence holds several documents back
 * to back and each query sees only the earlier keys of its own document,
 * causal within documents (the "document masking" of packed pre-training:
 * Krell et al., "Efficient Sequence Packing without Cross-contamination",
 * 2021; Llama 3, 2024; the FlexAttention document mask_mod).
 *
 * Spec:
 *   document:K          K documents, lengths from uniform spacings (a
 *                       seeded Dirichlet(1) split of N)
 *   document:K:equal    K documents of (nearly) equal length
 *   document:K:uniform  as document:K
 *   document:K:longtail K documents with log-normal (sigma 1.5) weights,
 *                       a few long documents and many short ones, as in
 *                       packed pre-training data
 *   document:L1+L2+...  explicit lengths, which must sum to N
 * Every document has at least one token. Seeded by the point's data seed.
 *
 * Data: aux[N] = document of each token, aux2[K + 1] = document starts.
 * Explicit lengths are kept in aux2 between parse and bind. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attnbench.h"
#include "masks/spec.h"

enum { DOC_EQUAL = 0, DOC_UNIFORM = 1, DOC_EXPLICIT = 2, DOC_LONGTAIL = 3 };
#define DOC_MAX (1 << 24)

static int doc_parse(ab_mask *m, const char *arg)
{
    if (!arg || !*arg) {
        ab_set_error(m, "document needs a count (document:8, document:8:longtail) or "
                        "lengths summing to N (document:4096+4096+8192)");
        return AB_EINVAL;
    }
    if (strchr(arg, '+')) {
        int64_t n = 1;
        for (const char *c = arg; *c; c++) n += *c == '+';
        free(m->aux2);
        m->aux2 = malloc((size_t)n * sizeof(int32_t)); /* [n] lengths */
        if (!m->aux2) return AB_ENOMEM;
        m->naux2 = 0;
        const char *p = arg;
        for (;;) {
            const char *e = strchr(p, '+');
            char tok[32];
            size_t len = e ? (size_t)(e - p) : strlen(p);
            long long v;
            if (len == 0 || len >= sizeof tok) {
                ab_set_error(m, "document lengths: empty or too long entry in '%s'", arg);
                return AB_EINVAL;
            }
            memcpy(tok, p, len);
            tok[len] = 0;
            if (ab_spec_int(tok, 1, 1LL << 30, &v)) {
                ab_set_error(m, "document lengths must be integers >= 1, got '%s' in '%s'", tok, arg);
                return AB_EINVAL;
            }
            m->aux2[m->naux2++] = (int32_t)v;
            if (!e) break;
            p = e + 1;
        }
        m->arg[0] = (double)m->naux2;
        m->arg[1] = DOC_EXPLICIT;
        return AB_OK;
    }
    char num[32];
    const char *colon = strchr(arg, ':');
    size_t len = colon ? (size_t)(colon - arg) : strlen(arg);
    long long k;
    if (len >= sizeof num) {
        ab_set_error(m, "document count too long in '%s'", arg);
        return AB_EINVAL;
    }
    memcpy(num, arg, len);
    num[len] = 0;
    if (ab_spec_int(num, 1, DOC_MAX, &k)) {
        ab_set_error(m, "document count must be an integer in [1, %d], got '%s'", DOC_MAX, num);
        return AB_EINVAL;
    }
    int mode = DOC_UNIFORM;
    if (colon) {
        const char *d = colon + 1;
        if (!strcmp(d, "equal"))
            mode = DOC_EQUAL;
        else if (!strcmp(d, "uniform"))
            mode = DOC_UNIFORM;
        else if (!strcmp(d, "longtail"))
            mode = DOC_LONGTAIL;
        else {
            ab_set_error(m,
                         "unknown document length distribution '%s' "
                         "(equal, uniform, longtail)",
                         d);
            return AB_EINVAL;
        }
    }
    m->arg[0] = (double)k;
    m->arg[1] = mode;
    return AB_OK;
}

/* A uniform draw in (0, 1] from the seeded splitmix64 stream s. */
static double doc_unit(uint64_t *s) { return ((double)(ab_splitmix64(s) >> 11) + 1.0) / 9007199254740992.0; }

typedef struct doc_rem {
    double r; /* fractional part left by flooring */
    int i;
} doc_rem;

static int doc_rem_cmp(const void *a, const void *b)
{
    const doc_rem *x = a, *y = b;
    if (x->r != y->r) return x->r < y->r ? 1 : -1; /* largest remainder first */
    return (x->i > y->i) - (x->i < y->i);
}

/* K lengths >= 1 summing to N, proportional to w[] (largest remainders,
 * O(K log K)). Returns AB_OK or AB_ENOMEM. */
static int doc_split(int32_t *len, const double *w, int k, int n)
{
    double tot = 0.0;
    for (int i = 0; i < k; i++) tot += w[i];
    const int64_t spare = (int64_t)n - k;
    doc_rem *rem = malloc((size_t)k * sizeof(doc_rem)); /* [k] */
    if (!rem) return AB_ENOMEM;
    int64_t used = 0;
    for (int i = 0; i < k; i++) {
        const double x = w[i] / tot * (double)spare;
        int64_t a = (int64_t)floor(x);
        a = a < 0 ? 0 : a > spare ? spare : a;
        len[i] = (int32_t)(1 + a);
        used += a;
        rem[i].r = x - (double)a;
        rem[i].i = i;
    }
    qsort(rem, (size_t)k, sizeof(doc_rem), doc_rem_cmp);
    /* hand out what flooring left, one token each, largest remainder first */
    for (int64_t t = 0; used < spare; t++, used++) len[rem[t % k].i]++;
    for (; used > spare; used--) /* rounding overshoot (cannot happen with exact floors) */
        for (int i = 0; i < k; i++)
            if (len[i] > 1) {
                len[i]--;
                break;
            }
    free(rem);
    return AB_OK;
}

static int doc_bind(ab_mask *m)
{
    const int n = m->seq_len, mode = (int)m->arg[1];
    const int k = (int)m->arg[0];
    int32_t *len = NULL; /* [k] */
    if (mode == DOC_EXPLICIT) {
        int64_t sum = 0;
        for (int64_t i = 0; i < m->naux2; i++) sum += m->aux2[i];
        if (sum != n) {
            ab_set_error(m, "document lengths sum to %lld, not N = %d", (long long)sum, n);
            return AB_EINVAL;
        }
        len = m->aux2; /* reused in place below */
        m->aux2 = NULL;
    } else {
        if (k > n) {
            ab_set_error(m, "%d documents do not fit in N = %d tokens", k, n);
            return AB_EINVAL;
        }
        len = malloc((size_t)k * sizeof(int32_t));
        double *w = malloc((size_t)k * sizeof(double)); /* [k] */
        if (!len || !w) {
            free(len);
            free(w);
            return AB_ENOMEM;
        }
        uint64_t st = m->seed ^ 0x646f63756d656e74ull; /* "document" */
        for (int i = 0; i < k; i++) {
            if (mode == DOC_EQUAL) {
                w[i] = 1.0;
            } else if (mode == DOC_UNIFORM) {
                w[i] = -log(doc_unit(&st)); /* exponential spacings: Dirichlet(1) */
            } else {                        /* log-normal, Box-Muller */
                const double u1 = doc_unit(&st), u2 = doc_unit(&st);
                w[i] = exp(1.5 * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
            }
        }
        const int rc = doc_split(len, w, k, n);
        free(w);
        if (rc) {
            free(len);
            return rc;
        }
    }
    free(m->aux);
    free(m->aux2);
    m->aux = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t)); /* [N] document of token */
    m->aux2 = malloc((size_t)(k + 1) * sizeof(int32_t));        /* [K + 1] starts */
    if (!m->aux || !m->aux2) {
        free(len);
        return AB_ENOMEM;
    }
    m->naux = n;
    m->naux2 = k + 1;
    int pos = 0;
    for (int d = 0; d < k; d++) {
        m->aux2[d] = pos;
        for (int t = 0; t < len[d]; t++) m->aux[pos++] = d;
    }
    m->aux2[k] = pos;
    free(len);
    return AB_OK;
}

static int doc_allows(const ab_mask *m, int i, int j) { return j <= i && m->aux[i] == m->aux[j]; }

static void doc_span(const ab_mask *m, int i, int *lo, int *hi)
{
    *lo = m->aux2[m->aux[i]];
    *hi = i + 1;
}

/* Rows [q0, q1) x keys [k0, k1) (clipped, non-empty) in O(1): row i sees
 * [start(i), i], start(i) its document's first token, which never falls as
 * i grows. Full iff the last row's document starts by k0 and the first row
 * reaches k1 - 1; some key seen iff the first row i >= k0 of the block has
 * start(i) < k1 (later rows start no earlier). */
static int doc_block(const ab_mask *m, int q0, int q1, int k0, int k1)
{
    const int a = q0 > k0 ? q0 : k0;
    if (a >= q1 || m->aux2[m->aux[a]] >= k1) return AB_BLOCK_EMPTY;
    return m->aux2[m->aux[q1 - 1]] <= k0 && k1 <= q0 + 1 ? AB_BLOCK_FULL : AB_BLOCK_PARTIAL;
}
const ab_mask_def ab_mask_document = {
    .abi = AB_ABI_VERSION,
    .name = "document",
    .syntax = "document:K[:equal|uniform|longtail] | document:L1+L2+...",
    .summary = "packed documents, causal within each: K seeded lengths or an explicit list",
    .causal = 1,
    .interval = 1,
    .parse = doc_parse,
    .bind = doc_bind,
    .allows = doc_allows,
    .span = doc_span,
    .block = doc_block,
};
AB_REGISTER_MASK(ab_mask_document)
