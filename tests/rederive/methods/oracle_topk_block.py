"""oracle_topk_block.py — re-derivation of `oracle_topk_block` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import causal_probs, diag_block, dither  # noqa: F401

METHOD = "oracle_topk_block"
UNITS = "block"


def derive(q, k, point, bq, bk):
    """Block oracle (docs/spec/METHODS.md 3.13): exact causal softmax P in
    float64; block mass M[I][J] = sum of P over the query block's rows and
    the key block's keys; per query block the top-k causal key blocks by
    mass, ties to the lower index. k is the density knob, dithered over query
    blocks and capped at ceil(k) and the number of key blocks. No block is
    forced (the spec's "(diagonal kept)" is not applied: the C keeps the
    pure top-k so that it stays the optimum at its block count)."""
    H, N, _ = q.shape
    knob = float(point["knob_value"])
    nqb, nkb = (N + bq - 1) // bq, (N + bk - 1) // bk
    out = []
    for h in range(H):
        p = causal_probs(q[h], k[h])
        p = np.pad(p, ((0, nqb * bq - N), (0, nkb * bk - N)))
        m = p.reshape(nqb, bq, nkb, bk).sum(axis=(1, 3))
        rows = []
        for i in range(nqb):
            top = min(dither(knob, i), math.ceil(knob), nkb)
            cand = np.arange(diag_block(i, bq, bk, N) + 1)
            order = cand[np.lexsort((cand, -m[i, cand]))]
            rows.append(set(order[:top].tolist()))
        out.append(rows)
    return out
