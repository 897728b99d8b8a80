"""seer_proxy.py — re-derivation of `seer_proxy` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import diag_block, dither, params_of, pool  # noqa: F401

METHOD = "seer_proxy"
UNITS = "block"


def derive(q, k, point, bq, bk):
    """SeerAttention's gate (Gao et al. 2024, arXiv 2410.13276; AttnGate in
    microsoft/SeerAttention) with identity weights, the training-free proxy of
    docs/spec/METHODS.md §3.4: pooled query = mean of Q over the query block;
    pooled key = max, min and mean of K over the key block, one weight each
    (identity gate: q̄ · (k̄max + k̄min + k̄mean)); row-softmax over the
    causal key blocks (monotone: the ranking of the logits); always keep
    key block 0 and the diagonal block, then the best-scoring others up to
    k blocks per query block (k fractional: dithered). Returns per head a
    list over query blocks of kept key-block sets."""
    H, N, d = q.shape
    knob = float(point["knob_value"])
    nqb, nkb = (N + bq - 1) // bq, (N + bk - 1) // bk
    out = []
    for h in range(H):
        kf = pool(k[h], bk, lambda b: b.max(0) + b.min(0) + b.mean(0))
        logits = pool(q[h], bq) @ kf.T / math.sqrt(d)
        rows = []
        for i in range(nqb):
            dg = diag_block(i, bq, bk, N)
            budget = min(dither(knob, i), min(math.ceil(knob), nkb))
            kept = {0, dg}
            order = sorted(range(dg + 1), key=lambda j: (-logits[i, j], j))
            for j in order:
                if len(kept) >= budget:
                    break
                kept.add(j)
            rows.append(kept)
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    return {0, diag_block(qb, bq, bk, n)}

