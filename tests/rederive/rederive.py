#!/usr/bin/python3
"""rederive.py RESULTS.h5 — re-derive each dynamic selector's layout from the
saved Q and K (`attnbench run --save-tensors`) with an independent NumPy
implementation written from the method's definition (the paper, the official
code and docs/spec/METHODS.md, cited per method below), and compare it with
the layout the C method built.

Per point: agreement = 1 - |C xor ref| / |C or ref| over all (head, query
block, key block) cells; it must be >= 0.99 (near-ties of scores computed in
float32 by the C code and float64 here may flip a block or two). Blocks the
definition forces (key block 0, the diagonal) must be present in every row of
the C layout, without exception. Only causal points are re-derived.

Exit 0 all pass, 1 a point fails (listed), 2 usage / nothing to check.
Needs Debian's python3-numpy and python3-h5py (scripts/deps.sh)."""
import math
import sys

try:
    import h5py
    import numpy as np
except ImportError as e:  # a missing dependency is a failure, not a skip
    print("rederive: %s (scripts/deps.sh installs python3-numpy and python3-h5py)" % e, file=sys.stderr)
    sys.exit(1)

MIN_AGREEMENT = 0.99


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


def seer_proxy(q, k, point, bq, bk):
    """SeerAttention's gate (Gao et al. 2024, arXiv 2410.13276; AttnGate in
    microsoft/SeerAttention) with identity weights, the training-free proxy of
    docs/spec/METHODS.md §3.4: pooled query = mean of Q over the query block;
    pooled key = max, min and mean of K over the key block, one weight each
    (identity gate: q̄ · (k̄max + k̄min + k̄mean)); row-softmax over the
    causal key blocks (monotone: the ranking of the logits); always keep
    key block 0 and the diagonal block, then the best-scoring others up to
    k blocks per query block (k fractional: dithered). Returns per head a
    list over query blocks of kept key-block sets."""
    H, N, d = q.shape
    knob = float(point["knob_value"])
    nqb, nkb = (N + bq - 1) // bq, (N + bk - 1) // bk
    out = []
    for h in range(H):
        kf = pool(k[h], bk, lambda b: b.max(0) + b.min(0) + b.mean(0))
        logits = pool(q[h], bq) @ kf.T / math.sqrt(d)
        rows = []
        for i in range(nqb):
            dg = diag_block(i, bq, bk, N)
            budget = min(dither(knob, i), min(math.ceil(knob), nkb))
            kept = {0, dg}
            order = sorted(range(dg + 1), key=lambda j: (-logits[i, j], j))
            for j in order:
                if len(kept) >= budget:
                    break
                kept.add(j)
            rows.append(kept)
        out.append(rows)
    return out


def params_of(point):
    """The point's method params, "name=value,..." (as recorded)."""
    out = {}
    for kv in point["params"].decode().split(","):
        if "=" in kv:
            name, value = kv.split("=", 1)
            out[name.strip()] = float(value)
    return out


def xattention(q, k, point, bq, bk):
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


def minference_block(q, k, point, bq, bk):
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


def pbs_keys(q, k, point, bq, bk):
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


# method -> (re-derivation, forced blocks per row: f(qb, bq, bk, N) -> set)
METHODS = {
    "pbs": (pbs_keys, None),
    "seer_proxy": (seer_proxy, lambda qb, bq, bk, n: {0, diag_block(qb, bq, bk, n)}),
    "minference_block": (minference_block, lambda qb, bq, bk, n: set()),
    "xattention": (xattention, lambda qb, bq, bk, n: {0, diag_block(qb, bq, bk, n)}),
}


def c_layout(g, heads, nqb, n, bq):
    """Kept key blocks per (head, query block) of a BLOCK layout, or kept key
    tokens (clipped to the causal mask) of a TOKEN layout."""
    kind = "blk" if "blk_ptr" in g else "tok"
    ptr = g[kind + "_ptr"][()]
    idx = g[kind + "_idx"][()] if kind + "_idx" in g else np.zeros(0, np.int32)
    out = [[set(idx[ptr[h * nqb + i]:ptr[h * nqb + i + 1]].tolist()) for i in range(nqb)] for h in range(heads)]
    if kind == "tok":
        out = [[{j for j in row if j <= min(n, (i + 1) * bq) - 1} for i, row in enumerate(rows)] for rows in out]
    return out


def check_point(f, p):
    key = p["key"].decode()
    g = f["tensors"][key]
    prob = f["tensors"][g.attrs["problem"].decode()]
    q, k = prob["q"][()], prob["k"][()]
    H, N, _ = q.shape
    bq, bk = int(g.attrs["block_q"]), int(g.attrs["block_k"])
    nqb = (N + bq - 1) // bq
    derive, forced = METHODS[p["method"].decode()]
    ref = derive(q, k, p, bq, bk)
    got = c_layout(g, H, nqb, N, bq)
    inter = union = missing = 0
    for h in range(H):
        for i in range(nqb):
            a, b = got[h][i], ref[h][i]
            inter += len(a & b)
            union += len(a | b)
            if forced:
                missing += len(forced(i, bq, bk, N) - a)
    agree = inter / union if union else 1.0
    return agree, missing


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    bad = checked = 0
    with h5py.File(sys.argv[1], "r") as f:
        for p in f["points"][()]:
            m = p["method"].decode()
            if m not in METHODS or p["status"] != b"ok" or p["mask"] not in (b"causal", b""):
                continue
            agree, missing = check_point(f, p)
            checked += 1
            ok = agree >= MIN_AGREEMENT and missing == 0
            bad += not ok
            print("%-4s %-16s %-8s N=%-5d seed=%d target=%.2f knob=%.4g: agreement %.4f, forced blocks missing %d"
                  % ("ok" if ok else "FAIL", m, p["task"].decode(), p["seq_len"], p["seed"],
                     p["target_density"], p["knob_value"], agree, missing))
    if not checked:
        print("rederive: no point to check in %s" % sys.argv[1], file=sys.stderr)
        return 2
    print("rederive: %d points, %d failed" % (checked, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
