"""chunkllm_proxy.py — re-derivation of `chunkllm_proxy` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import diag_block, dither, params_of

METHOD = "chunkllm_proxy"
UNITS = "block"


def derive(q, k, point, bq, bk):
    """ChunkLLM's chunk selection (Ouyang et al. 2025, arXiv 2510.02361) as
    the training-free proxy defines it: chunks = fixed key blocks; a chunk
    is represented by the key of its last (boundary) token; a query chunk
    selects once, with the query of the boundary token before it (row
    qb * bq - 1, row 0 for the first), by q . k / sqrt(d); it keeps the first
    `sink` chunks, the `local` chunks ending at its own, then the best k
    other causal chunks (k fractional: dithered; ties to the lower index)."""
    H, N, d = q.shape
    par = params_of(point)
    k_sel = float(point["knob_value"])
    local, sink = int(par.get("local", 1)), int(par.get("sink", 1))
    nqb, nkb = (N + bq - 1) // bq, (N + bk - 1) // bk
    qrows = [min(max(i * bq - 1, 0), N - 1) for i in range(nqb)]
    krows = [min((j + 1) * bk, N) - 1 for j in range(nkb)]
    out = []
    for h in range(H):
        qh, kh = q[h].astype(np.float64), k[h].astype(np.float64)
        logits = qh[qrows] @ kh[krows].T / math.sqrt(d)
        rows = []
        for i in range(nqb):
            dg = diag_block(i, bq, bk, N)
            kept = {dg - t for t in range(local) if dg - t >= 0} | set(range(min(sink, dg + 1)))
            rest = sorted((j for j in range(dg + 1) if j not in kept), key=lambda j: (-logits[i, j], j))
            kept |= set(rest[:dither(k_sel, i)])
            rows.append(kept)
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    par = params_of(point)
    dg = diag_block(qb, bq, bk, n)
    return {dg - t for t in range(int(par.get("local", 1))) if dg - t >= 0} | set(
        range(min(int(par.get("sink", 1)), dg + 1)))
