"""s2attn.py — re-derivation of `s2attn` (see ../rederive.py for the contract)."""
import math

from common import diag_block, params_of  # noqa: F401

METHOD = "s2attn"
UNITS = "block"


def _local(qb, bq, bk, n, point):
    nl = int(params_of(point).get("local_blocks", 1))
    return set(range(max(0, qb * bq // bk - nl + 1), diag_block(qb, bq, bk, n) + 1))


def derive(q, k, point, bq, bk):
    """S2-Attention (Lin et al. 2024, arXiv 2407.17678; linxihui/dkernel,
    dkernel/utils.py get_sparse_attn_mask, absolute vertical positions, the
    causal default; docs/spec/METHODS.md 2.6): head h keeps key block J <= I
    iff I - J < local_blocks or (J + h*step + o) mod s == 0, step =
    max(1, int(s / H)), o = head_sliding_offset (DKernel default 0). The
    stride s is the density knob and real-valued here: J is a stripe when
    (x - 1, x] holds a multiple of s, x = J + h*step + o (for an integer s
    exactly x mod s == 0), as the C documents."""
    H, N, _ = q.shape
    prm = params_of(point)
    s = float(point["knob_value"])
    o = int(prm.get("head_sliding_offset", 0))
    step = max(1.0, math.floor(s / H))
    nqb = (N + bq - 1) // bq
    out = []
    for h in range(H):
        off = h * step + o
        stripe = [math.floor((j + off) / s) > math.floor((j + off - 1) / s) for j in range((N + bk - 1) // bk)]
        out.append([_local(i, bq, bk, N, point) | {j for j in range(diag_block(i, bq, bk, N) + 1) if stripe[j]}
                    for i in range(nqb)])
    return out


def forced(qb, bq, bk, n, point):
    """The local band (the diagonal included)."""
    return _local(qb, bq, bk, n, point)
