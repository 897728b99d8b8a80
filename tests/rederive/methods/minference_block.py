"""minference_block.py — re-derivation of `minference_block` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import diag_block, dither, params_of, pool  # noqa: F401

METHOD = "minference_block"
UNITS = "block"


def derive(q, k, point, bq, bk):
    """MInference's block-sparse pattern (Jiang et al. 2024, arXiv 2407.02490;
    microsoft/MInference, minference/ops/block_sparse_flash_attention.py,
    _build_block_index): Q and K mean-pooled over 64-blocks, pooled logits
    q̄ · k̄ with key blocks starting after the query block's start masked
    out, torch.topk of each row (no block forced), top_k clipped to the
    number of key blocks. Masked (future) blocks that topk returns for early
    rows keep nothing, so only the causal ones are compared. k fractional:
    dithered (the harness's density knob)."""
    H, N, d = q.shape
    knob = float(point["knob_value"])
    nqb, nkb = (N + bq - 1) // bq, (N + bk - 1) // bk
    out = []
    for h in range(H):
        logits = pool(q[h], bq) @ pool(k[h], bk).T
        rows = []
        for i in range(nqb):
            dg = diag_block(i, bq, bk, N)
            top = min(dither(knob, i), min(math.ceil(knob), nkb))
            order = sorted(range(dg + 1), key=lambda j: (-logits[i, j], j))
            rows.append(set(order[:top]))
        out.append(rows)
    return out
