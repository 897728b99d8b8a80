"""fixed.py — re-derivation of `fixed` (see ../rederive.py for the contract)."""
from common import dither, params_of  # noqa: F401

METHOD = "fixed"
UNITS = "key"


def _own(qb, bq, n, L):
    """A(1) of the query block: its own length-l block, up to its last row."""
    r0, last = qb * bq, min(n, (qb + 1) * bq) - 1
    return set(range(r0 // L * L, last + 1))


def derive(q, k, point, bq, bk):
    """Sparse Transformer "fixed" (Child et al. 2019, arXiv 1904.10509, §4.3;
    docs/spec/METHODS.md 2.3): row i keeps A(1) = {j : floor(j/l) =
    floor(i/l)} and A(2) = {j : j mod l in {t, ..., t + c - 1}}, t = l - c,
    causal (j <= i), merged. "Multiple heads attend to distinct subblocks of
    length c within the block of size l" (§4.3): head h's subblock starts at
    t_h = (l - (h + 1) c) mod l (head 0 the paper's t), wrapping inside the
    block. c is the density knob, dithered over query blocks and capped at
    l; l = the `block` param. A query block lies inside one l-block (the C
    uses query blocks of gcd(l, block_q) rows), so its rows share A(1) up to
    the block's last row and A(2) of the earlier l-blocks."""
    H, N, _ = q.shape
    L = int(params_of(point).get("block", 128))
    nqb = (N + bq - 1) // bq
    out = []
    for h in range(H):
        rows = []
        for i in range(nqb):
            c = min(L, dither(float(point["knob_value"]), i))
            t = (L - (h + 1) * c % L) % L
            keys = _own(i, bq, N, L)
            for b in range(i * bq // L):  # the earlier l-blocks
                keys |= {b * L + (t + m) % L for m in range(c)}
            rows.append(keys)
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    """A(1): the own l-block up to the query block's last row."""
    return _own(qb, bq, n, int(params_of(point).get("block", 128)))
