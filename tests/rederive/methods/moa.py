"""moa.py — re-derivation of `moa` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import diag_block, params_of

METHOD = "moa"
UNITS = "block"
HELDOUT = True  # derive() sees the held-out draw the method profiles, never the scored input


def pattern(qb, k, sb, bq, bk, n):
    """MoA's prefill pattern for query block qb at span k (thu-nics/MoA,
    MoA/kernels/block_sparse_attention_prefill.py, the moa prefill kernel:
    sink blocks 0 .. num_sink-1 clipped to the diagonal, and the num_local
    blocks ending at the diagonal). With block_q != block_k the band runs
    from the block of the query block's first row, k - 1 blocks back, to the
    block of its last row (the harness's diagonal)."""
    kfirst, klast = qb * bq // bk, diag_block(qb, bq, bk, n)
    return set(range(max(0, kfirst - k + 1), klast + 1)) | set(range(min(sb, klast + 1)))


def derive(q, k, point, bq, bk):
    """MoA (Fu et al. 2024, arXiv 2406.14909; thu-nics/MoA), the proxy of
    docs/spec/METHODS.md 2.8, re-derived from the HELD-OUT draw (q, k here
    are the problem's heldout_q, heldout_k).

    Profile (MoA scores a head's candidate pattern by the attention it keeps,
    matrix_reserve_score in MoA/attention/sparse_mask.py; the proxy uses the
    attention itself, no gradient): for R = min(sample_rows, N) rows
    i_r = floor((2r + 1) N / 2R), the causal softmax row in float64;
    M_h(k) = mean over the rows of the row's probability inside pattern(k).
    Allocation: at a common level c each head takes the smallest k with
    M_h(k) >= c; the level is the highest of the attained values M_h(k)
    whose mean density (kept causal pairs / causal pairs, per head, then
    averaged) does not exceed the budget; if none, every head takes k = 1.
    Sinks: sink_tokens (the paper's 64) rounded up to whole key blocks (the
    official kernel keeps sink_size // 64 blocks of 64)."""
    H, N, d = q.shape
    prm = params_of(point)
    budget = float(point["knob_value"])
    sb = -(-int(prm.get("sink_tokens", 64)) // bk)
    R = min(int(prm.get("sample_rows", 64)), N)
    nqb, nkb = -(-N // bq), -(-N // bk)
    K = nkb
    rows = [(2 * r + 1) * N // (2 * R) for r in range(R)]

    # keep[qb][k]: boolean key mask of pattern(qb, k)
    keys_of = {}

    def key_mask(qb, kk):
        if (qb, kk) not in keys_of:
            m = np.zeros(N, bool)
            for b in pattern(qb, kk, sb, bq, bk, N):
                m[b * bk:min(N, (b + 1) * bk)] = True
            keys_of[qb, kk] = m
        return keys_of[qb, kk]

    # M[h, k]: the held-out draw's locality profile
    M = np.zeros((H, K + 1))
    for h in range(H):
        qh, kh = q[h].astype(np.float64), k[h].astype(np.float64)
        for i in rows:
            s = kh[:i + 1] @ qh[i] / math.sqrt(d)
            p = np.exp(s - s.max())
            p /= p.sum()
            for kk in range(1, K + 1):
                M[h, kk] += 1.0 - p[~key_mask(i // bq, kk)[:i + 1]].sum()
        M[h] /= R

    # one head's density at span k under the causal mask
    valid = N * (N + 1) / 2
    dens = {}

    def density(kk):
        if kk not in dens:
            kept = 0
            for qb in range(nqb):
                m = key_mask(qb, kk)
                cum = np.cumsum(m)  # cum[i] = kept keys <= i
                kept += int(cum[qb * bq:min(N, (qb + 1) * bq)].sum())
            dens[kk] = kept / valid
        return dens[kk]

    def spans(c):
        return [next((kk for kk in range(1, K + 1) if M[h, kk] >= c), K) for h in range(H)]

    best = [1] * H
    for c in sorted(set(M[:, 1:].ravel().tolist())):
        sp = spans(c)
        if sum(density(kk) for kk in sp) / H <= budget:
            best = sp
    return [[pattern(qb, best[h], sb, bq, bk, N) for qb in range(nqb)] for h in range(H)]


def forced(qb, bq, bk, n, point):
    """The sink blocks (clipped to the diagonal) and the diagonal band: the
    pattern at the smallest span, which every head keeps."""
    sb = -(-int(params_of(point).get("sink_tokens", 64)) // bk)
    return pattern(qb, 1, sb, bq, bk, n)
