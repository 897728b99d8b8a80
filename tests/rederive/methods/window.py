"""window.py — re-derivation of `window` (see ../rederive.py for the contract)."""
import math

from common import diag_block, params_of  # noqa: F401

METHOD = "window"
UNITS = "block"


def _band(qb, bq, bk, n, point):
    """Sliding window at block granularity (docs/spec/METHODS.md 2.1: query
    block I keeps key blocks I - wb < J <= I, wb = ceil(w / B); the
    block form of MInference's A-shape, arXiv 2407.02490, and of
    Block-Sparse-Attention's streaming mask: J < sink_blocks or I - J <
    local_blocks), plus the leading sink_blocks key blocks (StreamingLLM's
    attention sinks, arXiv 2309.17453; the C's documented A-shape). For
    bq != bk the band ends at the key block holding the query block's last
    row and counts wb blocks back from the one holding its first row."""
    prm = params_of(point)
    w = int(round(prm.get("window", point["knob_value"])))
    sinks = int(prm.get("sink_blocks", 1))
    wb = max(1, math.ceil(w / bk))
    first, dg = qb * bq // bk, diag_block(qb, bq, bk, n)
    return set(range(max(0, first - wb + 1), dg + 1)) | set(range(min(sinks, dg + 1)))


def derive(q, k, point, bq, bk):
    H, N, _ = q.shape
    nqb = (N + bq - 1) // bq
    return [[_band(i, bq, bk, N, point) for i in range(nqb)] for _ in range(H)]


def forced(qb, bq, bk, n, point):
    """Everything: the band (the diagonal included) and the sinks."""
    return _band(qb, bq, bk, n, point)
