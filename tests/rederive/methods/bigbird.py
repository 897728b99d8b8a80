"""bigbird.py — re-derivation of `bigbird` (see ../rederive.py for the contract)."""
from common import diag_block, dither, params_of  # noqa: F401

METHOD = "bigbird"
UNITS = "block"
M64 = (1 << 64) - 1


def _splitmix64(state):
    """SplitMix64 (Steele, Lea and Flood, OOPSLA 2014), the generator
    include/attnbench.h documents: add the golden step, then Stafford's Mix13.
    Returns (state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def _fixed(qb, bq, bk, n, point):
    """The blocks BigBird keeps before the random draw, and whether the query
    block is a global row. BigBird (Zaheer et al. 2020, arXiv 2007.14062,
    §2 and App. D; google-research/bigbird, bigbird/core/attention.py, the
    ITC block layout): window of w = 3 blocks centred on the query block,
    g = 2 global blocks (first and last) that every block sees and whose rows
    see everything. Causal use (docs/spec/METHODS.md 2.4; the official
    decoder runs full attention): blocks after the diagonal are dropped."""
    prm = params_of(point)
    w, g = int(prm.get("window", 3)), int(prm.get("global", 2))
    gfirst, glast = (g + 1) // 2, g // 2
    nqb, nkb = (n + bq - 1) // bq, (n + bk - 1) // bk
    dg = diag_block(qb, bq, bk, n)
    if qb < gfirst or qb >= nqb - glast:
        return set(range(dg + 1)), True
    kept = set(range(max(0, qb * bq // bk - (w - 1) // 2), dg + 1))
    kept |= set(range(min(gfirst, nkb))) | set(range(max(0, nkb - glast), nkb))
    return {j for j in kept if j <= dg}, False


def derive(q, k, point, bq, bk):
    """Plus r random blocks per (head, query block) among the causal blocks not
    already kept (bigbird_block_rand_mask draws outside the window and the
    globals), r the density knob dithered over query blocks. The draw uses
    the C's documented seeded generator (methods/bigbird.c: a partial
    Fisher-Yates over the ascending candidates, swap partner t + x_t mod
    (n_cand - t), x_t from SplitMix64 seeded by the point's seed, head and
    query block), the official np.random.permutation being unreproducible."""
    H, N, _ = q.shape
    seed = int(point["seed"]) & M64
    r = float(point["knob_value"])
    nqb = (N + bq - 1) // bq
    out = []
    for h in range(H):
        rows = []
        for i in range(nqb):
            kept, dense = _fixed(i, bq, bk, N, point)
            if not dense:
                cand = [j for j in range(diag_block(i, bq, bk, N) + 1) if j not in kept]
                st = seed ^ (0xB16B1D << 40) ^ ((h * 0x9E3779B97F4A7C15) & M64) ^ ((i * 0xC2B2AE3D27D4EB4F) & M64)
                for t in range(min(dither(r, i), len(cand))):
                    st, x = _splitmix64(st)
                    u = t + x % (len(cand) - t)
                    cand[t], cand[u] = cand[u], cand[t]
                    kept = kept | {cand[t]}
            rows.append(kept)
        out.append(rows)
    return out


def forced(qb, bq, bk, n, point):
    """The window, the first global block(s) and the global rows."""
    return _fixed(qb, bq, bk, n, point)[0]
