/* dense_blas.c — `dense_blas`: the "textbook" dense baseline. Per head and
 * per block of query rows: S = Q_blk Kᵀ·scale with OpenBLAS SGEMM over the
 * key columns the base mask lets any row of the block see (the union of the
 * rows' spans), explicit masking (ab_mask_span, and ab_mask_allows for masks
 * whose span is not exact), fp32 softmax per row with max subtraction,
 * O = P V with SGEMM, then divide by the row sums. Any base mask works; a
 * row the mask gives no key yields zeros (as the fp64 reference does).
 * Memory is O(threads · row_block · N), never N × N.
 * Same result as `dense` (FlashAttention, arXiv 2205.14135) computed the
 * way attention is written in the paper (Vaswani et al. 2017), so the
 * suite shows what tiling and online softmax buy over BLAS.
 */
#include "attnbench.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>

int openblas_get_num_threads(void);
void openblas_set_num_threads(int n);

typedef struct dense_blas_state {
    int row_block;  /* query rows per SGEMM */
    int rows;       /* rows the buffers hold: min(row_block, seq_len) */
    int seq_len;    /* N the buffers were sized for */
    int teams;      /* threads the buffers are sized for */
    float *s;       /* per thread (rows, seq_len): scores, then unnormalised P */
    float *inv_sum; /* per thread (rows): 1 / row sum of P */
} dense_blas_state;

static int dense_blas_init(void *state, const ab_params *p, const ab_shape *s)
{
    dense_blas_state *st = state;
    if (p->n < 1 || !(p->v[0] >= 1 && p->v[0] <= (1 << 16))) {
        ab_set_error(state, "dense_blas: row_block must be in [1, 65536]");
        return AB_EINVAL;
    }
    if (s->seq_len < 1 || s->head_dim < 1 || s->heads < 1) {
        ab_set_error(state, "dense_blas: empty shape");
        return AB_EINVAL;
    }
    st->row_block = (int)p->v[0];
    st->seq_len = s->seq_len;
    st->rows = st->row_block < s->seq_len ? st->row_block : s->seq_len;
    /* Allocated here so run(), which the harness times, does no malloc:
     * one buffer per thread (the harness sets the thread count first). */
    st->teams = omp_get_max_threads();
    st->s = malloc((size_t)st->teams * st->rows * (size_t)st->seq_len * sizeof *st->s);
    st->inv_sum = malloc((size_t)st->teams * st->rows * sizeof *st->inv_sum);
    if (!st->s || !st->inv_sum) {
        ab_set_error(state, "dense_blas: %d x %d score buffer", st->rows, st->seq_len);
        return AB_ENOMEM; /* fini() frees what was allocated */
    }
    return AB_OK;
}

static int dense_blas_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const int rc = ab_layout_dense(l);
    return rc == AB_OK ? ab_layout_set_cost(l, 0, 0) : rc; /* nothing to select */
}

/* Masked softmax of rows [0, nr) of s (nr, kc) in place, unnormalised:
 * s holds key columns [k0, k0 + kc) of query rows [r0, r0 + nr); entries the
 * base mask forbids are set to 0; inv_sum[i] = 1 / sum (0 for a row with no
 * allowed key, whose output is then 0). */
static void softmax_rows(float *s, float *inv_sum, int nr, int kc, int r0, int k0, const ab_mask *mask)
{
    for (int i = 0; i < nr; i++) {
        float *row = s + (size_t)i * kc; /* (kc) */
        int lo, hi;                      /* allowed keys of this row lie in [lo, hi) */
        ab_mask_span(mask, r0 + i, &lo, &hi);
        lo = lo - k0 > 0 ? lo - k0 : 0;
        hi = hi - k0 < kc ? hi - k0 : kc;
        if (!mask->def->interval) /* inexact span: test each element */
            for (int j = lo; j < hi; j++)
                if (!ab_mask_allows(mask, r0 + i, k0 + j)) row[j] = -INFINITY;
        float m = lo < hi ? row[lo] : -INFINITY; /* a NaN logit stays NaN */
        for (int j = lo + 1; j < hi; j++) m = row[j] > m ? row[j] : m;
        double sum = 0; /* fp32 values, fp64 sum: exact enough at any N */
        for (int j = 0; j < lo; j++) row[j] = 0.0f;
        if (m == -INFINITY) { /* no allowed key: zeros */
            for (int j = lo; j < kc; j++) row[j] = 0.0f;
            inv_sum[i] = 0.0f;
            continue;
        }
        sum = ab_exp_max_sum(row + lo, hi - lo, m); /* a forbidden -inf becomes 0 */
        for (int j = hi; j < kc; j++) row[j] = 0.0f;
        inv_sum[i] = (float)(1.0 / sum);
    }
}

/* One block of query rows [r0, r0 + nr) of one head, on the calling thread. */
static void block_rows(const ab_problem *pb, const ab_mask *mask, int h, int r0, int nr, float *sbuf,
                       float *inv_sum, float *out)
{
    const int N = pb->s.seq_len, d = pb->s.head_dim;
    const size_t hoff = (size_t)h * N * d;
    const float *k = pb->k + hoff;                  /* (N, d) */
    const float *v = pb->v + hoff;                  /* (N, d) */
    const float *q = pb->q + hoff + (size_t)r0 * d; /* (nr, d) */
    float *o = out + hoff + (size_t)r0 * d;         /* (nr, d) */
    /* key columns [k0, k1) any row here may see: the union of spans */
    int k0 = N, k1 = 0;
    for (int i = r0; i < r0 + nr; i++) {
        int lo, hi;
        ab_mask_span(mask, i, &lo, &hi);
        if (lo < hi) {
            k0 = lo < k0 ? lo : k0;
            k1 = hi > k1 ? hi : k1;
        }
    }
    if (k0 >= k1) { /* the mask gives these rows no key */
        for (size_t x = 0; x < (size_t)nr * d; x++) o[x] = 0.0f;
        return;
    }
    const int kc = k1 - k0;
    /* S (nr, kc) = scale · Q_blk K[k0:k1]ᵀ */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, kc, d, pb->s.scale, q, d, k + (size_t)k0 * d, d,
                0.0f, sbuf, kc);
    softmax_rows(sbuf, inv_sum, nr, kc, r0, k0, mask);
    /* O (nr, d) = P V[k0:k1] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, d, kc, 1.0f, sbuf, kc, v + (size_t)k0 * d, d,
                0.0f, o, d);
    for (int i = 0; i < nr; i++)
        for (int c = 0; c < d; c++) o[(size_t)i * d + c] *= inv_sum[i];
}

/* OpenMP threads take (head, row block) tasks, each running sequential
 * SGEMMs: OpenBLAS's own thread pool would otherwise spin (sched_yield)
 * against the OpenMP threads of the softmax between the two GEMMs, which
 * cost 3x on a 2-core machine. Blocks are handed out last first (causal:
 * the longest rows) for balance. */
static int dense_blas_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    dense_blas_state *st = state;
    const int H = pb->s.heads, N = pb->s.seq_len;
    const ab_mask mask = ab_shape_mask(&pb->s);
    if (N != st->seq_len) {
        ab_set_error(state, "dense_blas: run with N=%d, init saw N=%d", N, st->seq_len);
        return AB_EINVAL;
    }
    const int nb = (N + st->rows - 1) / st->rows, tasks = H * nb;
    const int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel num_threads(st->teams)
    {
        const int t = omp_get_thread_num();
        float *sbuf = st->s + (size_t)t * st->rows * st->seq_len;
        float *inv = st->inv_sum + (size_t)t * st->rows;
#pragma omp for schedule(dynamic, 1)
        for (int x = 0; x < tasks; x++) {
            const int h = x % H, b = nb - 1 - x / H, r0 = b * st->rows;
            const int nr = N - r0 < st->rows ? N - r0 : st->rows;
            block_rows(pb, &mask, h, r0, nr, sbuf, inv, out);
        }
    }
    openblas_set_num_threads(blas_threads);
    return AB_OK;
}

static void dense_blas_fini(void *state)
{
    dense_blas_state *st = state;
    free(st->s);
    free(st->inv_sum);
    st->s = NULL;
    st->inv_sum = NULL;
}

const ab_method ab_dense_blas = {
    .abi = AB_ABI_VERSION,
    .family = "dense",
    .name = "dense_blas",
    .summary = "textbook dense attention: row-blocked OpenBLAS SGEMM + fp32 softmax",
    .reference = "Vaswani et al. 2017 (arXiv 1706.03762), computed with BLAS SGEMM",
    .devices = AB_CPU | AB_GPU,
    .phases = AB_PREFILL,
    .params = {
        { .name = "row_block", .def = 256, .min = 1, .max = 1 << 16, .is_int = 1,
          .help = "query rows per SGEMM (score buffer is row_block x N floats)" },
        { .name = NULL },
    },
    .density_knob = { .param = -1 },
    .state_size = sizeof(dense_blas_state),
    .init = dense_blas_init,
    .select = dense_blas_select,
    .run = dense_blas_run,
    .fini = dense_blas_fini,
};
AB_REGISTER(ab_dense_blas)
