"""common.py — helpers the re-derivations share: the harness's fractional
budget, block pooling, the diagonal block, the point's params, exact
causal attention probabilities (the oracles)."""
import math

import numpy as np


def dither(k, row):
    """The harness's fractional budget (methods/keep.h): row gets floor(k)
    plus one when the golden-ratio sequence of its index is below frac(k)."""
    u = math.fmod((row + 1) * 0.6180339887498949, 1.0)
    return int(math.floor(k)) + (1 if u < k - math.floor(k) else 0)


def pool(x, blk, f=lambda b: b.mean(0)):
    """f over each block of blk rows of x (n, d), in float64: (n_blocks, d)."""
    return np.stack([f(x[j:j + blk].astype(np.float64)) for j in range(0, x.shape[0], blk)])


def diag_block(qb, bq, bk, n):
    return (min((qb + 1) * bq, n) - 1) // bk


def params_of(point):
    """The point's method params, "name=value,..." (as recorded)."""
    out = {}
    for kv in point["params"].decode().split(","):
        if "=" in kv:
            name, value = kv.split("=", 1)
            out[name.strip()] = float(value)
    return out


def causal_probs(qh, kh):
    """Exact causal softmax attention of one head in float64: (n, n), row i
    over keys j <= i, scale 1/sqrt(d)."""
    qh, kh = qh.astype(np.float64), kh.astype(np.float64)
    s = qh @ kh.T / math.sqrt(qh.shape[1])
    s[np.triu(np.ones(s.shape, bool), 1)] = -np.inf
    p = np.exp(s - s.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)

