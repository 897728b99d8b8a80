"""spark.py — re-derivation of `spark` (see ../rederive.py for the contract)."""
from statistics import NormalDist

import os

import numpy as np

from common import params_of  # noqa: F401

METHOD = "spark"
UNITS = "key"

# The base grid (inherited from [sweep]) plus the shipped MiniLM trace: on
# the synthetic tasks a row's own predictor score sits about 3 std above its
# mean and always clears theta, so the diagonal forced() names is only tested
# where it does not, on real Q/K (layer 0: the diagonal clears theta in only
# 25-50% of rows at k = 8..30). Causal base mask, as every re-derived point.
_TRACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "datasets", "traces",
                      "minilm_l6.h5")
INI = """
[sweep.spark]
methods = spark

[sweep.spark_trace]
methods   = spark
tasks     = trace
seq_lens  = 512
heads     = 4
head_dims = 32
densities = 0.1, 0.3
seeds     = 1

[task.trace]
file  = %s
layer = 0
""" % os.path.normpath(_TRACE)


def derive(q, k, point, bq, bk):
    """Spark attention (You et al. 2025, arXiv 2506.06644) as the
    training-free proxy of docs/spec/METHODS.md §3.10: the predictor is the
    first r = d/4 dimensions of q and k (the paper pretrains them for it), so
    row i's approximate scores are q_i[:r] . k_j[:r] over its n = i + 1
    causal keys. Statistical top-k keeps the scores above
    theta = mean + std * PhiInv(1 - k/n), std with 1/n (the operator as in
    Gemma3nTextMLP._gaussian_topk, huggingface transformers
    models/gemma3n/modeling_gemma3n.py: mean, std(unbiased=False),
    relu(x - cutoff)); k >= n keeps the whole row. The row's own key (the
    diagonal) is always kept. A positive scale of the scores moves theta
    with them, so none is applied. The C layout shares one key list per
    query block of bq rows: the reference is the union of the block's rows.
    Computed in float64; PhiInv is Python's statistics.NormalDist.inv_cdf.
    Returns per head a list over query blocks of kept key sets."""
    H, N, d = q.shape
    kk = float(point["knob_value"])
    r = max(1, d // 4)
    nqb = (N + bq - 1) // bq
    out = []
    for h in range(H):
        a = q[h, :, :r].astype(np.float64) @ k[h, :, :r].astype(np.float64).T  # (N, N)
        rows = []
        for i in range(nqb):
            kept = set()
            for g in range(i * bq, min(N, (i + 1) * bq)):
                n = g + 1
                if kk >= n:
                    kept.update(range(n))
                    continue
                x = a[g, :n]
                theta = x.mean() + x.std() * NormalDist().inv_cdf(1.0 - kk / n)
                kept.update(np.nonzero(x > theta)[0].tolist())
                kept.add(g)
            rows.append(kept)
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    """Every row's own key: the diagonal of each row of the query block."""
    return set(range(qb * bq, min(n, (qb + 1) * bq)))
