"""powerattn.py — re-derivation of `powerattn` (see ../rederive.py for the contract)."""
from common import diag_block, dither, params_of  # noqa: F401

METHOD = "powerattn"
UNITS = "block"


def _power(qb, bq, bk, n, point, local=True):
    """PowerAttention (Chen et al. 2025, arXiv 2503.03588, §3; docs/spec/
    METHODS.md 2.7): query block I keeps key block J <= I when I - J is 0 or
    a power of two (1, 2, 4, ...), so the receptive field doubles per layer;
    plus the leading sink_blocks key blocks and a local band I - J <
    local_blocks (the density knob, dithered over query blocks). I is the
    key block holding the query block's last row (the diagonal)."""
    prm = params_of(point)
    sinks = int(prm.get("sink_blocks", 1))
    loc = dither(float(point["knob_value"]), qb) if local else 0
    dg = diag_block(qb, bq, bk, n)
    keep = set(range(min(sinks, dg + 1))) | {j for j in range(dg + 1) if dg - j < loc}
    p = 1
    keep.add(dg)
    while p <= dg:
        keep.add(dg - p)
        p *= 2
    return keep


def derive(q, k, point, bq, bk):
    H, N, _ = q.shape
    nqb = (N + bq - 1) // bq
    return [[_power(i, bq, bk, N, point) for i in range(nqb)] for _ in range(H)]


def forced(qb, bq, bk, n, point):
    """The diagonal, the power-of-two distances and the sinks (knob-free)."""
    return _power(qb, bq, bk, n, point, local=False)
