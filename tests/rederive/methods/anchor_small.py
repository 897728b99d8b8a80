"""anchor_small.py — re-derivation of `anchor_small` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import diag_block, params_of

METHOD = "anchor_small"
UNITS = "key"


def _regions(qb, bq, bk, n, point):
    """Key block 0 and the local_blocks key blocks ending at the diagonal."""
    diag = diag_block(qb, bq, bk, n)
    lo = max(0, diag - int(params_of(point).get("local_blocks", 1)) + 1)
    return [0] + list(range(lo, diag + 1))


def derive(q, k, point, bq, bk):
    """Our small-region variant of AnchorAttention (Zhang et al. 2025, arXiv
    2505.23520): the paper's keep rule with the harness's blocks as regions.
    Per query block: the anchor of each row is its largest logit over key
    block 0 and the local blocks (causal); the block's mean query and mean
    anchor decide every other visible key: kept when the pooled logit plus
    theta reaches the pooled anchor. Causal points only."""
    H, N, d = q.shape
    theta = float(point["knob_value"])
    nqb = (N + bq - 1) // bq
    scale = 1.0 / math.sqrt(d)
    out = []
    for h in range(H):
        qh, kh = q[h].astype(np.float64), k[h].astype(np.float64)
        rows = []
        for i in range(nqb):
            r0, r1 = i * bq, min(N, (i + 1) * bq)
            dense = sorted({j for b in _regions(i, bq, bk, N, point) for j in range(b * bk, min(N, (b + 1) * bk))})
            dense = np.array([j for j in dense if j < r1])
            logits = qh[r0:r1] @ kh[dense].T * scale
            logits[dense[None, :] > np.arange(r0, r1)[:, None]] = -np.inf
            abar = logits.max(axis=1).mean()
            others = np.setdiff1d(np.arange(r1), dense)
            est = qh[r0:r1].mean(0) @ kh[others].T * scale
            rows.append(set(dense.tolist()) | set(others[est + theta >= abar].tolist()))
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    last = min(n, (qb + 1) * bq) - 1
    return {j for b in _regions(qb, bq, bk, n, point) for j in range(b * bk, min(n, (b + 1) * bk)) if j <= last}
