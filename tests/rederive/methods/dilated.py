"""dilated.py — re-derivation of `dilated` (see ../rederive.py for the contract)."""
from common import dither, params_of  # noqa: F401

METHOD = "dilated"
UNITS = "key"


def _row(i, w, dl, G):
    """Longformer (Beltagy et al. 2020, arXiv 2004.05150, §3.1; allenai/
    longformer, diagonaled_mm_tvm with autoregressive=True; docs/spec/
    METHODS.md 2.5): causal dilated sliding window, row i keeps i - k*dl for
    k = 0 .. w - 1 (the C's `window` counts the keys per row: Longformer's
    one-sided w' keeps k = 0 .. w', so window = w' + 1). Global attention is
    symmetric (§3.1): the first G tokens are kept by every row, and rows
    i < G keep every key."""
    if i < G:
        return set(range(i + 1))
    return set(range(G)) | set(range(i, max(-1, i - w * dl), -dl))


def derive(q, k, point, bq, bk):
    """Dilations differ per head ("different dilation configurations per
    head", §3.1): head h uses 1 + (h mod max_dilation), the C's documented
    assignment. w is the density knob, dithered over rows (>= 1). Per query
    block the union of its rows (the C lays one row per layout row)."""
    H, N, _ = q.shape
    prm = params_of(point)
    md, G = int(prm.get("max_dilation", 4)), min(N, int(prm.get("global", 0)))
    knob = float(point["knob_value"])
    nqb = (N + bq - 1) // bq
    out = []
    for h in range(H):
        dl = 1 + h % md
        out.append([set().union(*(_row(i, max(1, dither(knob, i)), dl, G)
                                   for i in range(b * bq, min(N, (b + 1) * bq)))) for b in range(nqb)])
    return out


def forced(qb, bq, bk, n, point):
    """Each row's own key and the global tokens (global rows: everything)."""
    G = min(n, int(params_of(point).get("global", 0)))
    return set().union(*(_row(i, 1, 1, G) for i in range(qb * bq, min(n, (qb + 1) * bq))))
