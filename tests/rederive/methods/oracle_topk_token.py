"""oracle_topk_token.py — re-derivation of `oracle_topk_token` (see ../rederive.py for the contract)."""
import numpy as np

from common import causal_probs, dither  # noqa: F401

METHOD = "oracle_topk_token"
UNITS = "key"


def derive(q, k, point, bq, bk):
    """Token oracle (docs/spec/METHODS.md 3.13): exact causal softmax P in
    float64; per query block (the layout's block_q rows, 16 by default: the
    C's documented shared key list; block_q = 1 is the per-row top-k) the k
    keys with the largest summed probability over its rows, among the keys
    some row may see (j <= the block's last row), ties to the lower index.
    k is the density knob, dithered over query blocks."""
    H, N, _ = q.shape
    knob = float(point["knob_value"])
    nqb = (N + bq - 1) // bq
    out = []
    for h in range(H):
        p = causal_probs(q[h], k[h])
        m = np.pad(p, ((0, nqb * bq - N), (0, 0))).reshape(nqb, bq, N).sum(1)
        rows = []
        for i in range(nqb):
            cand = np.arange(min(N, (i + 1) * bq))
            order = cand[np.lexsort((cand, -m[i, cand]))]
            rows.append(set(order[:dither(knob, i)].tolist()))
        out.append(rows)
    return out
