"""strided.py — re-derivation of `strided` (see ../rederive.py for the contract)."""
import math

from common import dither, params_of  # noqa: F401

METHOD = "strided"
UNITS = "key"


def _stride(point, n):
    s = int(params_of(point).get("stride", 0))
    return s if s > 0 else max(1, int(math.floor(math.sqrt(n) + 0.5)))


def _row(i, w, s):
    """Sparse Transformer "strided" (Child et al. 2019, arXiv 1904.10509,
    §4.3; openai/sparse_attention, attention.py get_attn_mask 'local' and
    'strided'; docs/spec/METHODS.md 2.3): A(1) = {j : i - l < j <= i},
    A(2) = {j <= i : (i - j) mod s = 0}, merged."""
    return set(range(max(0, i - w + 1), i + 1)) | set(range(i, -1, -s))


def derive(q, k, point, bq, bk):
    """The paper ties l = s ~ sqrt(N); here s is the `stride` param (0:
    round(sqrt(N)), the paper's choice) and l the density knob, dithered over
    rows (>= 1). The pattern differs from row to row (residue i mod s), so the
    C lays it out one query row per layout row; a query block keeps the union
    of its rows, clipped at its last row (the same thing for block_q = 1)."""
    H, N, _ = q.shape
    s, knob = _stride(point, N), float(point["knob_value"])
    nqb = (N + bq - 1) // bq
    rows = [set().union(*(_row(i, max(1, dither(knob, i)), s) for i in range(b * bq, min(N, (b + 1) * bq))))
            for b in range(nqb)]
    return [rows for _ in range(H)]


def forced(qb, bq, bk, n, point):
    """A(2) of each row (the diagonal key included): fixed by s, not the knob."""
    s = _stride(point, n)
    return set().union(*(_row(i, 1, s) for i in range(qb * bq, min(n, (qb + 1) * bq))))
