"""quest_prefill.py — re-derivation of `quest_prefill` (see ../rederive.py for the contract)."""
import numpy as np

from common import diag_block, dither, params_of

METHOD = "quest_prefill"
UNITS = "key"


def derive(q, k, point, bq, bk):
    """Quest (Tang et al. 2024, arXiv 2406.10774; mit-han-lab/Quest) applied
    per query block — our labelled prefill adaptation of a decode method.

    Quest's criticality estimate (evaluation/quest_attention.py; the CUDA
    estimate op quest/ops/csrc/estimate.cu, whose kernel is
    compute_max_possible in kernels/include/decode/decode_attn.cuh): the keys
    are cut into pages of `page` consecutive tokens (16 in the paper), each
    page keeps the channel-wise min and max of its keys, and a query q bounds
    its logit on the page by U = sum_c max(q_c min_c, q_c max_c). The decode
    controller (quest/utils/controller.py) always keeps the current (last)
    page and spends the rest of the page budget on the top pages by U.

    Prefill adaptation (methods/quest_prefill.c, docs/spec/METHODS.md 5.1):
    the query is the query block's mean query; the current page's role is
    played by the key block (of the layout's block_k) holding the block's
    last row, always kept; the candidates are the pages that begin before
    that block; token_budget / page pages beyond it (the fractional part
    dithered over query blocks, common.dither), the best U first, ties to
    the lower page. Kept keys are clipped to the causal mask at the block's
    last row (the harness compares that)."""
    H, N, d = q.shape
    prm = params_of(point)
    P = int(prm.get("page", 16))
    pages = float(point["knob_value"]) / P
    npg = (N + P - 1) // P
    nqb = (N + bq - 1) // bq
    out = []
    for h in range(H):
        kh = k[h].astype(np.float64)
        mn = np.stack([kh[p * P:(p + 1) * P].min(0) for p in range(npg)])
        mx = np.stack([kh[p * P:(p + 1) * P].max(0) for p in range(npg)])
        rows = []
        for i in range(nqb):
            r0, r1 = i * bq, min(N, (i + 1) * bq)
            qm = q[h, r0:r1].astype(np.float64).mean(0)
            u = np.maximum(mn * qm, mx * qm).sum(1)
            d0 = diag_block(i, bq, bk, N) * bk
            cands = [p for p in range(npg) if p * P < d0]
            cands.sort(key=lambda p: (-u[p], p))
            n = min(len(cands), dither(pages, i))
            keys = set(range(d0, min(N, d0 + bk)))
            for p in cands[:n]:
                keys.update(range(p * P, min(N, (p + 1) * P)))
            rows.append({j for j in keys if j < r1})
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    """The key block holding the query block's last row (Quest's current
    page), clipped to the causal mask."""
    d0 = diag_block(qb, bq, bk, n) * bk
    return set(range(d0, min(n, (qb + 1) * bq)))
