/* dense_blas.c — `dense_blas`: the "textbook" dense baseline. Per head and
 * per block of query rows: S = Q_blk Kᵀ·scale with OpenBLAS SGEMM, causal
 * mask, fp32 softmax per row with max subtraction, O = P V with SGEMM, then
 * divide by the row sums. Memory is O(row_block · N), never N × N.
 * Same result as `dense` (FlashAttention, arXiv 2205.14135) computed the
 * way attention is written in the paper (Vaswani et al. 2017), so the
 * suite shows what tiling and online softmax buy over BLAS.
 */
#include "attnbench.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

typedef struct dense_blas_state {
    int row_block;   /* query rows per SGEMM */
    int rows;        /* rows the buffers hold: min(row_block, seq_len) */
    int seq_len;     /* N the buffers were sized for */
    float *s;        /* (rows, seq_len) scores, then unnormalised P */
    float *inv_sum;  /* (rows) 1 / row sum of P */
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
    /* Allocated here so run(), which the harness times, does no malloc. */
    st->s = malloc((size_t)st->rows * (size_t)st->seq_len * sizeof *st->s);
    st->inv_sum = malloc((size_t)st->rows * sizeof *st->inv_sum);
    if (!st->s || !st->inv_sum) {
        ab_set_error(state, "dense_blas: %d x %d score buffer", st->rows, st->seq_len);
        return AB_ENOMEM; /* fini() frees what was allocated */
    }
    return AB_OK;
}

static int dense_blas_select(void *state, const ab_problem *pb, ab_layout *l)
{
    return ab_layout_dense(l);
}

/* Softmax of rows [0, nr) of s (nr, kc) in place, unnormalised: row i keeps
 * its first nvalid(i) columns, the rest set to 0; inv_sum[i] = 1 / sum. */
static void softmax_rows(float *s, float *inv_sum, int nr, int kc, int r0, int causal)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < nr; i++) {
        float *row = s + (size_t)i * kc; /* (kc) */
        const int nv = causal ? r0 + i + 1 : kc;
        float m = row[0];
        for (int j = 1; j < nv; j++) m = row[j] > m ? row[j] : m;
        double sum = 0; /* fp32 values, fp64 sum: exact enough at any N */
        for (int j = 0; j < nv; j++) {
            row[j] = expf(row[j] - m);
            sum += row[j];
        }
        for (int j = nv; j < kc; j++) row[j] = 0.0f;
        inv_sum[i] = (float)(1.0 / sum);
    }
}

static int dense_blas_run(void *state, const ab_problem *pb, const ab_layout *l, float *out)
{
    dense_blas_state *st = state;
    const int H = pb->s.heads, N = pb->s.seq_len, d = pb->s.head_dim, causal = pb->s.causal;
    if (N != st->seq_len) {
        ab_set_error(state, "dense_blas: run with N=%d, init saw N=%d", N, st->seq_len);
        return AB_EINVAL;
    }
    for (int h = 0; h < H; h++) {
        const size_t hoff = (size_t)h * N * d;
        const float *k = pb->k + hoff; /* (N, d) */
        const float *v = pb->v + hoff; /* (N, d) */
        for (int r0 = 0; r0 < N; r0 += st->rows) {
            const int nr = N - r0 < st->rows ? N - r0 : st->rows;
            const int kc = causal ? r0 + nr : N; /* key columns any row here sees */
            const float *q = pb->q + hoff + (size_t)r0 * d; /* (nr, d) */
            float *o = out + hoff + (size_t)r0 * d;         /* (nr, d) */
            /* S (nr, kc) = scale · Q_blk K[0:kc]ᵀ */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, kc, d, pb->s.scale,
                        q, d, k, d, 0.0f, st->s, kc);
            softmax_rows(st->s, st->inv_sum, nr, kc, r0, causal);
            /* O (nr, d) = P V[0:kc] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, d, kc, 1.0f,
                        st->s, kc, v, d, 0.0f, o, d);
            for (int i = 0; i < nr; i++)
                for (int c = 0; c < d; c++) o[(size_t)i * d + c] *= st->inv_sum[i];
        }
    }
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
