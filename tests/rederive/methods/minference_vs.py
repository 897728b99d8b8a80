"""minference_vs.py — re-derivation of `minference_vs` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import diag_block, dither, params_of, pool  # noqa: F401

METHOD = "minference_vs"
UNITS = "key"


def _budgets(point, n):
    """(n_v, n_s, last_q, sinks, local): the knob scales the authors'
    vertical_size / slash_size (1000 / 6096 at scale 1); both clamped as in
    vertical_and_slash_kernel: min(N, max(vertical_size, 30)),
    min(N, max(slash_size, 50))."""
    prm = params_of(point)
    s = float(point["knob_value"])
    nv = min(n, max(30, int(math.floor(s * prm.get("n_vertical", 1000) + 0.5))))
    ns = min(n, max(50, int(math.floor(s * prm.get("n_slash", 6096) + 0.5))))
    return nv, ns, int(prm.get("last_q", 64)), int(prm.get("sink_verticals", 30)), int(prm.get("local_slashes", 100))


def _ranges(offs, end_m, m):
    """convert_vertical_slash_indexes_kernel (microsoft/MInference,
    csrc/vertical_slash_index.cu) for one query block ending at end_m (the
    unclipped end; BLOCK_SIZE_M = m): offsets in descending order, those
    >= end_m skipped; an offset o stands for the m keys ending at
    max(end_m - o, m); a range whose end lies more than m past the current
    range's end starts a new range; one whose end lies past the current end
    (by at most m) extends the current range by exactly m. Returns the list
    of [start, end) ranges."""
    out = []
    cur = None
    for o in offs:
        if o >= end_m:
            continue
        e = max(end_m - o, m)
        if cur is None:
            cur = [e - m, e]
        elif e > cur[1] + m:
            out.append(cur)
            cur = [e - m, e]
        elif e > cur[1]:
            cur[1] += m
    if cur is not None:
        out.append(cur)
    return out


def derive(q, k, point, bq, bk):
    """MInference vertical-slash (Jiang et al. 2024, arXiv 2407.02490,
    Sec. 3 / Alg. 2; microsoft/MInference, minference/modules/
    minference_forward.py vertical_and_slash_kernel, minference/ops/
    pit_sparse_flash_attention_v2.py vertical_slash_sparse_attention,
    csrc/vertical_slash_index.cu):
    - the last min(64, N) queries . K / sqrt(d), causal inside the last
      64 x 64 corner, softmax per row (float32 there, float64 here);
    - vertical = column sums, the first 30 columns +inf, top vertical_size;
    - slash = sums along each diagonal offset o = i - j (o in [0, N)), the
      100 offsets nearest the diagonal +inf, top slash_size; equal scores
      (only the +inf ones in practice) go to the smaller offset (torch.topk
      leaves their order open);
    - index conversion per query block of BLOCK_SIZE_M rows: the kernel's
      ranges (see _ranges), each stored as BLOCK_SIZE_N-wide key tiles from
      its start; a kept column outside every range and before the last
      range's end is a column index (those at or after it are dropped);
    - the kernel masks per element (causal). Compared as keys per query
      block up to its last row. BLOCK_SIZE_M / _N (64 / 64 in the authors'
      code) are the layout's bq / bk here."""
    H, N, d = q.shape
    nv, ns, last_q, sinks, local = _budgets(point, N)
    L = min(last_q, N)
    nqb = -(-N // bq)
    out = []
    for h in range(H):
        qh, kh = q[h].astype(np.float64), k[h].astype(np.float64)
        a = qh[N - L:] @ kh.T / math.sqrt(d)
        rows_abs = np.arange(N - L, N)[:, None]
        a[np.arange(N)[None, :] > rows_abs] = -np.inf
        a = np.exp(a - a.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        vert = a.sum(0)
        vert[:sinks] = np.inf
        slash = np.zeros(N)  # by offset o
        for r in range(L):
            i = N - L + r
            slash[:i + 1] += a[r, i::-1]  # o = 0..i: key i - o
        slash[:local] = np.inf
        vtop = sorted(sorted(range(N), key=lambda j: (-vert[j], j))[:nv])
        stop = sorted(sorted(range(N), key=lambda o: (-slash[o], o))[:ns], reverse=True)
        rows = []
        for qb in range(nqb):
            end_m = (qb + 1) * bq
            last = min(end_m, N) - 1
            rng = _ranges(stop, end_m, bq)
            keys = set()
            for s0, e0 in rng:
                for t in range(s0, e0, bk):
                    keys.update(range(t, t + bk))
            lim = rng[-1][1] if rng else 0
            keys.update(j for j in vtop if j < lim)
            rows.append({j for j in keys if 0 <= j <= last})
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    """The first 30 columns and the 100 diagonals nearest i = j are set to
    +inf, so kept whenever the budgets hold them all (n_v >= 30 always;
    n_s >= 100 for the diagonals: below that the official top-k picks among
    tied +inf entries in no stated order, and nothing is claimed); the
    columns also need offset 0 among the kept diagonals (the kernel drops
    columns after the last range), which holds when n_s >= 100."""
    nv, ns, last_q, sinks, local = _budgets(point, n)
    if ns < min(local, n):
        return set()
    last = min((qb + 1) * bq, n) - 1
    keys = set(range(min(sinks, nv, last + 1)))
    for i in range(qb * bq, last + 1):
        keys.update(i - o for o in range(min(local, i + 1)))
    return keys
