"""pbs.py — re-derivation of `pbs` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import diag_block, dither, params_of, pool  # noqa: F401

METHOD = "pbs"
UNITS = "key"


def derive(q, k, point, bq, bk):
    """PBS-Attn (Wang et al. 2025, arXiv 2510.21270; xinghaow99/pbs-attn,
    pbs_attn/src). last_block_attn_sorting: the last block of queries against
    the keys of the complete segments, softmax per row (no causal mask),
    averaged; keys sorted by it (descending) inside each complete segment,
    the remainder unpermuted. permuted_block_selection: pooled (mean,
    zero-padded) Q blocks . pooled permuted K blocks / sqrt(d); mask = causal
    (kb <= qb) and not the own segment; row softmax; select_blocks keeps the
    sorted prefix through the first block whose cumulative mass reaches the
    threshold (none if none does). Plus the own segment (segment_mask, the
    kernel applies causality) and the permuted block holding token 0
    (force_select_first_block). N <= segment: dense. Returns per head a list
    over query blocks of kept ORIGINAL key indices (a token layout)."""
    H, N, d = q.shape
    prm = params_of(point)
    tau = float(point["knob_value"])
    seg = int(math.ceil(prm.get("segment", 256) / bk) * bk)
    assert bq == bk and N % bk == 0, "re-derived on equal, whole blocks only"
    nb = N // bk
    out = []
    for h in range(H):
        qh, kh = q[h].astype(np.float64), k[h].astype(np.float64)
        if N <= seg:
            out.append([set(range(min(N, (i + 1) * bq))) for i in range(nb)])
            continue
        C = N // seg * seg
        a = qh[N - bq:] @ kh[:C].T / math.sqrt(d)
        a = np.exp(a - a.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        imp = a.mean(0)
        perm = list(range(N))
        for g0 in range(0, C, seg):
            perm[g0:g0 + seg] = sorted(range(g0, g0 + seg), key=lambda j: (-imp[j], j))
        perm = np.array(perm)
        pk = kh[perm].reshape(nb, bk, d).mean(1)
        pq = qh.reshape(nb, bq, d).mean(1)
        logits = pq @ pk.T / math.sqrt(d)
        first = int(np.where(perm == 0)[0][0]) // bk
        rows = []
        for i in range(nb):
            own = i * bq // seg
            cands = [j for j in range(i + 1) if j * bk // seg != own]
            kept_blocks = set()
            if cands:
                x = np.array([logits[i, j] for j in cands])
                x = np.exp(x - x.max())
                x /= x.sum()
                order = sorted(range(len(cands)), key=lambda t: (-x[t], cands[t]))
                cum = 0.0
                chosen = []
                for t in order:
                    cum += x[t]
                    chosen.append(cands[t])
                    if tau < 1.0 and cum >= tau:
                        break
                if tau >= 1.0 or cum >= tau:
                    kept_blocks = set(chosen)
            kept_blocks.add(first)
            keys = set()
            for b in kept_blocks:
                keys.update(perm[b * bk:(b + 1) * bk].tolist())
            keys.update(range(own * seg, min(N, (own + 1) * seg)))
            rows.append({j for j in keys if j <= min(N, (i + 1) * bq) - 1})  # the causal base mask
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    """Key 0 (in the forced permuted block) and the query's own segment,
    causal; everything at N <= segment."""
    seg = int(math.ceil(params_of(point).get("segment", 256) / bk) * bk)
    last = min(n, (qb + 1) * bq) - 1
    if n <= seg:
        return set(range(last + 1))
    own = qb * bq // seg
    return {0} | set(range(own * seg, min(n, (own + 1) * seg, last + 1)))
