"""landmark_proxy.py — re-derivation of `landmark_proxy` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import diag_block, dither, params_of, pool

METHOD = "landmark_proxy"
UNITS = "block"


def derive(q, k, point, bq, bk):
    """Landmark Attention's retrieval (Mohtashami & Jaggi 2023, arXiv
    2305.16300; epfml/landmark-attention) as the training-free proxy defines
    it: the landmark of a key block is the mean of its keys (the paper trains
    a landmark token); a query block ranks the landmarks by the mean over its
    rows of the per-token logits q . landmark / sqrt(d); it keeps the `local`
    blocks ending at its diagonal block, then the best k other causal blocks
    (k fractional: dithered; ties to the lower index)."""
    H, N, d = q.shape
    k_ret = float(point["knob_value"])
    local = int(params_of(point).get("local", 2))
    nqb = (N + bq - 1) // bq
    out = []
    for h in range(H):
        lmk = pool(k[h], bk)
        # mean over the block's rows of the per-token logits
        qh = q[h].astype(np.float64)
        logits = np.stack([(qh[i * bq:(i + 1) * bq] @ lmk.T).mean(0) for i in range(nqb)]) / math.sqrt(d)
        rows = []
        for i in range(nqb):
            dg = diag_block(i, bq, bk, N)
            kept = {dg - t for t in range(local) if dg - t >= 0}
            rest = sorted((j for j in range(dg + 1) if j not in kept), key=lambda j: (-logits[i, j], j))
            kept |= set(rest[:dither(k_ret, i)])
            rows.append(kept)
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    dg = diag_block(qb, bq, bk, n)
    local = int(params_of(point).get("local", 2))
    return {dg - t for t in range(local) if dg - t >= 0}
