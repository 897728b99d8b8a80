/* s2attn.c — `s2attn`: the heterogeneous context sharding of S2-Attention
 * (Lin et al. 2024, "S2-Attention: Hardware-Aware Context Sharding Among
 * Attention Heads", arXiv 2407.17678; the DKernel library,
 * linxihui/dkernel, also the block-sparse attention of Phi-3-small).
 * Head h keeps, per query block,
 *   - the vertical stripes: key blocks kb with (kb + h*step + o) mod s == 0,
 *     step = max(1, floor(s / H)), o = head_sliding_offset (DKernel's
 *     get_sparse_attn_mask in dkernel/utils.py, absolute positions, the
 *     causal default; o = 0 by default there, so head 0 keeps block 0;
 *     Phi-3-small's copy of the kernel uses o = 1) — each head reads a
 *     different shard of the context and, when H >= s, the union over heads
 *     covers all of it;
 *   - a shared local window of `local_blocks` key blocks ending at the
 *     diagonal block (non-causal: local_blocks - 1 on each side).
 * Executed by the shared block-sparse kernel. DKernel's defaults are
 * local_blocks = 4 / vert_stride = 4 and Phi-3-small uses 16 / 8 with
 * 64-token blocks; the default here is 1 local block so that low target
 * densities stay reachable at short N (16 local blocks alone are 12.5% at
 * 16K). Set s2attn.local_blocks in a config to reproduce them.
 *
 * Density knob: the vertical stride s, real-valued: block kb is a stripe of
 * head h when (x - 1, x] holds a multiple of s, x = kb + h*step + o, which
 * for an integer s is DKernel's rule (x mod s == 0) and for a real s keeps
 * an evenly spread 1/s of the blocks; density falls as s grows (s = 1:
 * dense).
 */
#include "attnbench.h"

#include <math.h>

typedef struct s2_state {
    double stride;    /* s (>= 1) */
    int local_blocks; /* shared local window in key blocks (>= 1) */
    int offset;       /* o: DKernel's head_sliding_offset */
} s2_state;

enum { P_STRIDE = 0, P_LOCAL, P_OFFSET, P_COUNT };

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

static int s2_init(void *state, const ab_params *p, const ab_shape *s)
{
    s2_state *st = state;
    if (p->n < P_COUNT) {
        ab_set_error(state, "s2attn: expected %d params, got %d", P_COUNT, p->n);
        return AB_EINVAL;
    }
    if (!(p->v[P_STRIDE] >= 1 && p->v[P_STRIDE] <= (1 << 20)) ||
        !(p->v[P_LOCAL] >= 1 && p->v[P_LOCAL] <= (1 << 20)) ||
        !(p->v[P_OFFSET] >= 0 && p->v[P_OFFSET] <= (1 << 20))) {
        ab_set_error(state, "s2attn: vert_stride in [1, 2^20], local_blocks in [1, 2^20] and "
                            "head_sliding_offset in [0, 2^20] required");
        return AB_EINVAL;
    }
    st->stride = p->v[P_STRIDE];
    st->local_blocks = (int)p->v[P_LOCAL];
    st->offset = (int)p->v[P_OFFSET];
    return AB_OK;
}

/* 1 if key block kb is a stripe of the head whose shift is off
 * (h * step + o): (x - 1, x] holds a multiple of s, x = kb + off. */
static int is_stripe(double s, double off, int kb)
{
    const double x = kb + off;
    return floor(x / s) > floor((x - 1) / s);
}

static int s2_select(void *state, const ab_problem *pb, ab_layout *l)
{
    const s2_state *st = state;
    const int n = l->seq_len, bq = l->block_q, bk = l->block_k, nkb = l->n_kblocks;
    const double s = st->stride, step = fmax(1.0, floor(s / l->heads));
    int rc = AB_OK;
    for (int qb = 0; qb < l->n_qblocks; qb++) {
        const int kfirst = (qb * bq) / bk, klast = (imin(n, (qb + 1) * bq) - 1) / bk;
        const int lo = imax(0, kfirst - st->local_blocks + 1);
        const int hi = l->causal ? klast : imin(nkb - 1, klast + st->local_blocks - 1);
        const int kmax = l->causal ? klast : nkb - 1;
        for (int h = 0; h < l->heads; h++) {
            const double off = h * step + st->offset;
            if ((rc = ab_layout_add_block_range(l, h, qb, lo, hi + 1))) return rc;
            for (int kb = 0; kb <= kmax; kb++)
                if ((kb < lo || kb > hi) && is_stripe(s, off, kb) && (rc = ab_layout_add_block(l, h, qb, kb)))
                    return rc;
        }
    }
    return rc == AB_OK ? ab_layout_set_cost(l, 0, 0) : rc; /* static: no selection work */
}

const ab_method ab_s2attn = {
    .abi = AB_ABI_VERSION,
    .family = "static",
    .name = "s2attn",
    .summary = "S2-Attention, untrained pattern (the paper trains with it): head h keeps key blocks = -(h*step+o) mod s (heads shard the context; DKernel) + shared local blocks",
    .reference = "S2-Attention (Lin et al. 2024, arXiv 2407.17678); DKernel",
    .devices = AB_CPU | AB_GPU, /* CPU select(); the shared kernels on either device */
    .phases = AB_PREFILL,
    .dtypes = AB_FP32 | AB_BF16, /* bf16: the shared layout kernels (ABI 9) */
    .params = {
        [P_STRIDE] = { .name = "vert_stride", .def = 8, .min = 1, .max = 1 << 20, .is_int = 0,
                       .help = "s: each head keeps 1/s of the key blocks (real-valued; 1 = dense)" },
        [P_LOCAL] = { .name = "local_blocks", .def = 1, .min = 1, .max = 1 << 20, .is_int = 1,
                      .help = "shared local window in key blocks, incl. the diagonal (DKernel 4, Phi-3-small 16)" },
        [P_OFFSET] = { .name = "head_sliding_offset", .def = 0, .min = 0, .max = 1 << 20, .is_int = 1,
                       .help = "o: head h keeps blocks kb with (kb + h*step + o) mod s == 0 (DKernel 0, Phi-3-small 1)" },
        [P_COUNT] = { .name = NULL },
    },
    .density_knob = { .param = P_STRIDE, .increasing = 0, .log_scale = 1 },
    .state_size = sizeof(s2_state),
    .init = s2_init,
    .select = s2_select,
    .run = NULL,
    .fini = NULL,
};
AB_REGISTER(ab_s2attn)
