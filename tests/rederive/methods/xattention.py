"""xattention.py — re-derivation of `xattention` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import diag_block, dither, params_of, pool  # noqa: F401

METHOD = "xattention"
UNITS = "block"


def derive(q, k, point, bq, bk):
    """XAttention (Xu et al. 2025, arXiv 2503.16428; mit-han-lab/x-attention,
    xattn/src/Xattention.py). xattn_estimate: with stride S the keys are
    reshaped by concatenating k[t::S] for t = 0..S-1 and the queries, in the
    "inverse" select mode, by concatenating q[S-1-t::S]; reduced logits are
    their product / sqrt(d) / S, causal on the reduced grid (rk <= rq),
    softmaxed per reduced row and summed over the (block/S) x (block/S)
    cells of each block. find_blocks_chunked (prefill, causal): key block 0
    and the diagonal block are forced and their mass counts first; the other
    blocks, in descending score, are kept while the cumulative mass before
    them is below tau times the row total."""
    H, N, d = q.shape
    prm = params_of(point)
    tau = float(point["knob_value"])
    S = int(prm.get("stride", 8))
    keep_first = int(prm.get("keep_first", 1)) != 0
    assert N % bq == 0 and N % bk == 0 and bq % S == 0 and bk % S == 0, "re-derived on whole blocks only"
    nqb, nkb, R = N // bq, N // bk, N // S
    out = []
    for h in range(H):
        qh, kh = q[h].astype(np.float64), k[h].astype(np.float64)
        rk = np.concatenate([kh[t::S] for t in range(S)], axis=1)          # (R, S d)
        rq = np.concatenate([qh[S - 1 - t::S] for t in range(S)], axis=1)  # (R, S d)
        a = rq @ rk.T / math.sqrt(d) / S
        a[np.triu(np.ones((R, R), bool), 1)] = -np.inf
        a = np.exp(a - a.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        blocks = a.reshape(nqb, bq // S, nkb, bk // S).sum(axis=(1, 3))  # (nqb, nkb)
        rows = []
        for i in range(nqb):
            dg = diag_block(i, bq, bk, N)
            total = blocks[i].sum()
            if tau >= 1.0:
                rows.append(set(range(dg + 1)))
                continue
            forced = {dg} | ({0} if keep_first else set())
            cum = sum(blocks[i, j] for j in forced)
            kept = set(forced)
            for j in sorted(set(range(dg + 1)) - forced, key=lambda j: (-blocks[i, j], j)):
                if cum >= tau * total:
                    break
                kept.add(j)
                cum += blocks[i, j]
            rows.append(kept)
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    return {0, diag_block(qb, bq, bk, n)} if int(params_of(point).get("keep_first", 1)) else {diag_block(qb, bq, bk, n)}

