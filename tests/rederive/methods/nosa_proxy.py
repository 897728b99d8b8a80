"""nosa_proxy.py — re-derivation of `nosa_proxy` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import diag_block, dither, params_of

METHOD = "nosa_proxy"
UNITS = "block"
NEEDS_V = True


def derive(q, k, point, bq, bk, v=None):
    """NOSA's block choice (Huang et al. 2025, arXiv 2510.13602; thunlp/NOSA
    benchmarks/Efficiency/proxy_modeling_nosa.py, compressed_attention) as the
    training-free proxy defines it, written from that code's structure: per
    query block a budget of topk blocks (dithered) = the first visible block +
    floor(topk * local_frac) blocks ending at the diagonal (at least one) +
    topk * qaware_frac (dithered) best by the query-aware score + the rest by
    the query-agnostic importance. Query-aware score of a key block: the max,
    over the windows of bk/2 keys at stride bk/4 that overlap it, of
    mean-query . window-mean-key / sqrt(d). Query-agnostic importance: the
    block mean of |v_j| (needs V: the module falls back to the query-aware
    order when V is not saved, which only the check of forced() then pins)."""
    H, N, d = q.shape
    par = params_of(point)
    topk = float(point["knob_value"])
    f_loc, f_qaw, init = par.get("local_frac", 0.25), par.get("qaware_frac", 0.25), int(par.get("init", 1))
    kern, stride = max(bk // 2, 1), max(bk // 4, 1)
    nqb, nkb = (N + bq - 1) // bq, (N + bk - 1) // bk
    starts = list(range(0, N, stride))
    out = []
    for h in range(H):
        qh, kh = q[h].astype(np.float64), k[h].astype(np.float64)
        pq = np.stack([qh[i:i + bq].mean(0) for i in range(0, N, bq)])
        ck = np.stack([kh[s:min(N, s + kern)].mean(0) for s in starts])
        lg = pq @ ck.T / math.sqrt(d)
        score = np.full((nqb, nkb), -np.inf)
        for kb in range(nkb):
            k0, k1 = kb * bk, min(N, (kb + 1) * bk)
            ws = [t for t, s in enumerate(starts) if s < k1 and s + kern > k0]
            score[:, kb] = lg[:, ws].max(1)
        if v is not None:
            vn = np.linalg.norm(v[h].astype(np.float64), axis=1)
            agn = np.array([vn[j:j + bk].mean() for j in range(0, N, bk)])
        else:
            agn = None
        rows = []
        for i in range(nqb):
            dg = diag_block(i, bq, bk, N)
            total = dither(topk, i)
            nloc = max(int(math.floor(topk * f_loc)), 1)
            kept = []
            for j in list(range(min(init, dg + 1))) + [dg - t for t in range(nloc) if dg - t >= 0]:
                if j not in kept:
                    kept.append(j)
            rest = [j for j in range(dg + 1) if j not in kept]
            nq = dither(topk * f_qaw, i)
            rest.sort(key=lambda j: (-score[i, j], j))
            kept += rest[:nq]
            rest = rest[nq:]
            if agn is not None:
                rest.sort(key=lambda j: (-agn[j], j))
            kept += rest[:max(total - len(kept), 0)]
            rows.append(set(kept))
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    par = params_of(point)
    topk = float(point["knob_value"])
    dg = diag_block(qb, bq, bk, n)
    nloc = max(int(math.floor(topk * par.get("local_frac", 0.25))), 1)
    return {0} | {dg - t for t in range(nloc) if dg - t >= 0}
