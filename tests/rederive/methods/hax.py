"""hax.py — re-derivation of `hax` (see ../rederive.py for the contract)."""
import math

import numpy as np

from common import dither, params_of  # noqa: F401

METHOD = "hax"
UNITS = "key"

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def splitmix64(state):
    """One SplitMix64 step (Steele, Lea and Flood, OOPSLA 2014; the
    generator include/attnbench.h documents): advance the state by the golden
    step, return (new state, its Stafford Mix13 finalisation)."""
    state = (state + GOLDEN) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def mix(z):
    """A well-mixed hash of z: the output of one SplitMix64 step from z."""
    return splitmix64(z)[1]


def hyperplanes(seed, head, d, bits):
    """The seeded Gaussian hyperplanes of one head, (d, bits) row-major with
    bits fastest: the stream starts at mix(seed ^ mix(0x4841580000000000 +
    head)) ("HAX" in the top bytes); each normal is Box-Muller's cosine
    branch from two uniforms ((x >> 11) + 0.5) 2^-53, x = mix(previous)."""
    s = mix((seed ^ mix(0x4841580000000000 + head)) & M64)
    out = np.empty(d * bits)
    for t in range(d * bits):
        s = mix(s)
        u1 = ((s >> 11) + 0.5) * 2.0 ** -53
        s = mix(s)
        u2 = ((s >> 11) + 0.5) * 2.0 ** -53
        out[t] = math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)
    return out.reshape(d, bits)


def buckets(x, H):
    """sign_bin_lsh of the official code (DeepGraphLearning/HAX,
    src/modeling_enhanced_mamba2.py): centre by the mean over the sequence,
    F.normalize(x) — on (batch, length, dim) its default dim=1 is the
    length, so each coordinate is divided by its L2 norm over the sequence —
    project on H, bucket = sum_t [proj_t > 0] 2^t."""
    x = x - x.mean(0)
    x = x / np.maximum(np.sqrt((x * x).sum(0)), 1e-12)
    bits = (x @ H > 0).astype(np.int64)
    return (bits << np.arange(H.shape[1])).sum(1)


def derive(q, k, point, bq, bk):
    """HAX (Zhan et al. 2025, arXiv 2507.00449), the training-free proxy of
    docs/spec/METHODS.md 4.2 on the official sign_bin_lsh+key_selection
    pattern: query i keeps (causal, keys j <= i)
      - LSH: the b most recent keys in its sign-bit bucket
        (lsh_sliding_window);
      - KS: the b keys of [0, i] with the highest importance (cumtopk; ties
        to the lower position), importance = column sum of the causal
        softmax of the last 64 queries (METHODS.md 4.2's stand-in for the
        learned scorer);
      - local (METHODS.md 4.2 (c)): the `window` keys before its query
        block and the block's own rows;
    b = keys / 2 (the official sparse_keys // 2), dithered per query block.
    A query block keeps the union over its rows. Returns per head a list over
    query blocks of kept key sets, clipped to the causal mask at the block's
    last row."""
    H_, N, d = q.shape
    prm = params_of(point)
    knob = float(point["knob_value"])
    bits, win = int(prm.get("bits", 8)), int(prm.get("window", 64))
    seed = int(point["seed"])
    nqb = (N + bq - 1) // bq
    out = []
    for h in range(H_):
        qh, kh = q[h].astype(np.float64), k[h].astype(np.float64)
        Hp = hyperplanes(seed, h, d, bits)
        hq, hk = buckets(qh, Hp), buckets(kh, Hp)
        members = {}  # bucket -> its key positions, ascending
        for j in range(N):
            members.setdefault(int(hk[j]), []).append(j)
        u = np.zeros(N)
        scale = 1.0 / math.sqrt(d)
        for i in range(max(0, N - 64), N):
            lg = kh[:i + 1] @ qh[i] * float(np.float32(scale))
            p = np.exp(lg - lg.max())
            u[:i + 1] += p / p.sum()
        order = sorted(range(N), key=lambda j: (-u[j], j))
        rows = []
        for qb in range(nqb):
            r0, r1 = qb * bq, min(N, (qb + 1) * bq)
            b = dither(knob / 2, qb)
            kept = set(range(max(0, r0 - win), r1))
            if b > 0:
                for i in range(r0, r1):
                    mates = [j for j in members.get(int(hq[i]), []) if j <= i]
                    kept.update(mates[-b:])
                    ks = [j for j in order if j <= i][:b]  # cumtopk at row i
                    kept.update(ks)
            rows.append(kept)
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    """The local window: the `window` keys before the query block and the
    block's own rows (so every row keeps its diagonal)."""
    win = int(params_of(point).get("window", 64))
    return set(range(max(0, qb * bq - win), min(n, (qb + 1) * bq)))
