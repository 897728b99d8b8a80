"""hip.py — re-derivation of `hip` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import dither, params_of

METHOD = "hip"
UNITS = "key"


def _params(point):
    prm = params_of(point)
    return (int(prm.get("block_k", 2)), int(prm.get("stride_q", 2)), int(prm.get("sinks", 16)),
            int(prm.get("window", 32)))


def derive(q, k, point, bq, bk_layout):
    """HiP (Lee et al. 2024, arXiv 2406.09827; DeepAuto-AI/hip-attention),
    the mask estimation of HiP v1.1 (src/hip_attn/v1_1/
    attention2_draft_prefetch.py: HiPAttentionArgs defaults sample_method
    "center", branch_method "half"; kernels masking_iteration_draft_cuda_
    initialize, _dup_and_score(_calc_score), _partial_softmax, _argsort,
    _gather, and block_sparse_attention for what is attended).

    Per query block of bq rows [r0, r1), in key blocks of block_k tokens:
    - candidates: keys [sinks, r1 - window) (the sink tokens and the sliding
      window are attended anyway), B = ceil(len / block_k) blocks from key
      `sinks` on; m = mask_k / block_k branches (here k / block_k, dithered
      over query blocks, common.dither). B <= m: every candidate block.
    - initial branches (initialize): start(t) = floor(floor(B / m * t) /
      step) * step (B / m * t in float32), clipped to B, with step =
      ceil(2^floor(log2 B) / m); branch t = [start(t), start(t + 1)).
    - while the largest initial branch, halved once per round, exceeds 1:
      every branch [s, s + g) splits into [s, s + g // 2) and
      [s + g // 2, s + g) (empty children drop out); a child [c, c + n) is
      scored by its centre key block c + n // 2: the largest q_i . k_j over
      the block's keys j and the queries i = r0 + stride_q - 1 + t stride_q
      (every stride_q-th row), a pair counting only when j <= i - window
      (the causal sliding-window exclusion of the scoring kernel); the m
      best children survive (ties: lower start; the official argsort on
      bfloat16 sigmoids leaves ties unordered).
    - attended (block_sparse_attention): the surviving blocks' keys (row i
      uses those <= i - window), the sinks [0, sinks), the window
      (i - window, i]; per query block the union, clipped at r1.
    Returns per head, per query block, the set of kept keys."""
    H, N, d = q.shape
    bk, stride, sinks, window = _params(point)
    kk = float(point["knob_value"])
    nqb = (N + bq - 1) // bq
    out = []
    for h in range(H):
        qh, kh = q[h].astype(np.float64), k[h].astype(np.float64)
        rows = []
        for i in range(nqb):
            r0, r1 = i * bq, min(N, (i + 1) * bq)
            keys = set(range(min(sinks, r1))) | set(range(max(0, r0 - window + 1), r1))
            lo, hi = sinks, r1 - window
            B = max(0, -(-(hi - lo) // bk))
            m = dither(kk / bk, i)
            if 0 < B <= m:
                chosen = [(b, 1) for b in range(B)]
            elif B > 0 and m > 0:
                qi = [t for t in range(r0 + stride - 1, r1, stride)][:bq // stride]
                qs = qh[qi]

                def score(c, n):
                    j0 = lo + (c + n // 2) * bk
                    js = np.arange(j0, min(N, j0 + bk))
                    s = qs @ kh[js].T
                    ok = js[None, :] <= np.array(qi)[:, None] - window
                    return float(s[ok].max()) if ok.any() else -math.inf

                step = -(-(1 << int(math.floor(math.log2(B)))) // m)
                ratio = np.float32(B) / np.float32(m)
                st = [min(int(ratio * np.float32(t)) // step * step, B) for t in range(m + 1)]
                chosen = [(st[t], st[t + 1] - st[t]) for t in range(m) if st[t + 1] > st[t]]
                g = float(max(n for _, n in chosen))
                while g > 1:
                    kids = []
                    for s, n in chosen:
                        for c, cn in ((s, n // 2), (s + n // 2, n - n // 2)):
                            if cn > 0:
                                kids.append((-score(c, cn), c, cn))
                    kids.sort()
                    chosen = [(c, cn) for _, c, cn in kids[:m]]
                    g *= 0.5
            else:
                chosen = []
            for s, n in chosen:
                for b in range(s, s + n):
                    keys.update(range(lo + b * bk, min(N, lo + (b + 1) * bk)))
            rows.append({j for j in keys if j < r1})
        out.append(rows)
    return out


def forced(qb, bq, bk_layout, n, point):
    """The sink tokens and the sliding window of the block's rows
    ((i - window, i] for each row i), clipped to the causal mask."""
    _, _, sinks, window = _params(point)
    r0, r1 = qb * bq, min(n, (qb + 1) * bq)
    return set(range(min(sinks, r1))) | set(range(max(0, r0 - window + 1), r1))
