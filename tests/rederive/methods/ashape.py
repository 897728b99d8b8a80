"""ashape.py — re-derivation of `ashape` (see ../rederive.py for the contract)."""
import math

from common import diag_block, dither, params_of  # noqa: F401

METHOD = "ashape"
UNITS = "key"


def _keys(qb, bq, bk, n, point):
    """StreamingLLM (Xiao et al. 2023, arXiv 2309.17453; mit-han-lab/
    streaming-llm, StartRecentKVCache: start_size sinks + recent_size): row i
    keeps key j iff j < S (attention sinks, 4 by default) or i - j < w
    (docs/spec/METHODS.md 2.2). A layout lists keys per query block, so the
    block keeps the union over its rows: [0, S) and [r0 - w + 1, last]
    (clipped causally at its last row). The window w is the density knob,
    dithered over query blocks (the harness's fractional budget), >= 1.
    block_granular = 1: MInference's A-shape in blocks (arXiv 2407.02490;
    Block-Sparse-Attention's streaming mask): ceil(S / bk) sink blocks and
    the ceil(w / bk) key blocks ending at the diagonal."""
    prm = params_of(point)
    S = int(prm.get("sinks", 4))
    w = max(1, dither(float(point["knob_value"]), qb))
    r0, last = qb * bq, min(n, (qb + 1) * bq) - 1
    if int(prm.get("block_granular", 0)):
        wb, sb = math.ceil(w / bk), math.ceil(S / bk)
        dg = diag_block(qb, bq, bk, n)
        blocks = set(range(max(0, r0 // bk - wb + 1), dg + 1)) | set(range(sb))
        keys = {j for b in blocks for j in range(b * bk, min(n, (b + 1) * bk))}
    else:
        keys = set(range(min(S, n))) | set(range(max(0, r0 - w + 1), last + 1))
    return {j for j in keys if j <= last}


def derive(q, k, point, bq, bk):
    H, N, _ = q.shape
    nqb = (N + bq - 1) // bq
    return [[_keys(i, bq, bk, N, point) for i in range(nqb)] for _ in range(H)]


def forced(qb, bq, bk, n, point):
    """The sink tokens and the query block's own keys (the diagonal; w >= 1)."""
    S = int(params_of(point).get("sinks", 4))
    last = min(n, (qb + 1) * bq) - 1
    return set(range(min(S, last + 1))) | set(range(qb * bq, last + 1))
