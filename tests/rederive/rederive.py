#!/usr/bin/python3
"""rederive.py — re-derive each dynamic selector's layout from the saved Q
and K (`attnbench run --save-tensors`) with an independent NumPy
implementation written from the method's definition (the paper, the official
code and docs/spec/METHODS.md, cited per method), and compare it with the
layout the C method built.

  rederive.py RESULTS.h5        check every point of a method with a module
  rederive.py --config OUT.ini  write the config that produces those points:
                                rederive.ini, a [sweep.rdK] block per few
                                modules' methods, plus each module's INI text
  RD_METHODS=a,b                (environment) only these modules

One module per method in methods/NAME.py (common.py has shared helpers):
  METHOD   the registered method name
  UNITS    "block": compare kept key blocks (BLOCK layouts only);
           "key": compare kept key tokens per query block (any layout,
           expanded to keys and clipped to the causal mask at the block's
           last row)
  derive(q, k, point, bq, bk) -> per head, per query block, the set kept
  forced(qb, bq, bk, n, point) -> optional: the set (in UNITS) the
           definition always keeps; every one must be in the C layout
  INI      optional: extra config text ([method.NAME] params, or a
           [sweep.NAME] block of its own; a module with its own sweep block
           is left out of the base methods list)
  compare(got, ref, point) -> optional: (intersection, union) for one row,
           for methods whose rows are not plain sets
  HELDOUT  optional, True for a method that profiles a held-out draw
           (ab_method.heldout, e.g. moa): derive() is given the problem's
           heldout_q, heldout_k instead of the scored q, k, so the check
           also proves the layout depends on the held-out draw alone; the
           point fails when the problem has none or it equals the scored one

Per point: agreement = |C and ref| / |C or ref| over all rows; it must be
>= 0.99 (near-ties of scores computed in float32 by the C code and float64
here may flip a block or two). Forced entries missing: none allowed. Only
points on the causal mask are re-derived.

Exit 0 all pass, 1 a point fails (listed), 2 usage / nothing to check.
Needs Debian's python3-numpy and python3-h5py (scripts/deps.sh)."""
import glob
import importlib.util
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import h5py
    import numpy as np
except ImportError as e:  # a missing dependency is a failure, not a skip
    print("rederive: %s (scripts/deps.sh installs python3-numpy and python3-h5py)" % e, file=sys.stderr)
    sys.exit(1)

MIN_AGREEMENT = 0.99


def load_modules():
    mods = {}
    for path in sorted(glob.glob(os.path.join(HERE, "methods", "*.py"))):
        spec = importlib.util.spec_from_file_location("rederive_" + os.path.basename(path)[:-3], path)
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        for attr in ("METHOD", "UNITS", "derive"):
            if not hasattr(m, attr):
                raise SystemExit("rederive: %s lacks %s" % (path, attr))
        if m.UNITS not in ("block", "key"):
            raise SystemExit("rederive: %s: UNITS must be block or key" % path)
        mods[m.METHOD] = m
    return mods


def c_layout(g, heads, nqb, n, units):
    """Per (head, query block) of the C layout: kept key blocks (units
    "block", BLOCK layouts) or kept keys clipped to the causal mask at the
    block's last row (units "key": blocks expanded, plus tokens)."""
    bq, bk = int(g.attrs["block_q"]), int(g.attrs["block_k"])

    def rows(kind):
        if kind + "_ptr" not in g:
            return None
        ptr = g[kind + "_ptr"][()]
        idx = g[kind + "_idx"][()] if kind + "_idx" in g else np.zeros(0, np.int32)
        return [[idx[ptr[h * nqb + i]:ptr[h * nqb + i + 1]].tolist() for i in range(nqb)] for h in range(heads)]

    blk, tok = rows("blk"), rows("tok")
    kind = g.attrs["layout_kind"].decode() if "layout_kind" in g.attrs else ""
    if units == "block":
        if blk is None or tok is not None:
            raise SystemExit("rederive: units 'block' needs a block layout (got %s)" % kind)
        return [[set(r) for r in h] for h in blk]
    if kind == "dense":
        return [[set(range(min(n, (i + 1) * bq))) for i in range(nqb)] for _ in range(heads)]
    out = []
    for h in range(heads):
        hr = []
        for i in range(nqb):
            last = min(n, (i + 1) * bq) - 1
            keys = set()
            for b in (blk[h][i] if blk else []):
                keys.update(range(b * bk, min(last + 1, (b + 1) * bk)))
            t = tok[h][i] if tok else []
            keys.update(t if not t or max(t) <= last else [j for j in t if j <= last])
            hr.append(keys)
        out.append(hr)
    return out


def check_point(f, p, mod):
    g = f["tensors"][p["key"].decode()]
    prob = f["tensors"][g.attrs["problem"].decode()]
    q, k = prob["q"][()], prob["k"][()]
    if getattr(mod, "HELDOUT", False):
        if "heldout_q" not in prob or (np.array_equal(prob["heldout_q"][()], q)
                                       and np.array_equal(prob["heldout_k"][()], k)):
            print("rederive: %s: problem %s has no held-out draw distinct from the scored input"
                  % (mod.METHOD, g.attrs["problem"].decode()))
            return 0.0, 0
        q, k = prob["heldout_q"][()], prob["heldout_k"][()]
    H, N, _ = q.shape
    bq, bk = int(g.attrs["block_q"]), int(g.attrs["block_k"])
    nqb = (N + bq - 1) // bq
    if getattr(mod, "NEEDS_V", False):  # a selector that reads V (nosa_proxy's key-only score)
        ref = mod.derive(q, k, p, bq, bk, v=prob["v"][()])
    else:
        ref = mod.derive(q, k, p, bq, bk)
    got = c_layout(g, H, nqb, N, mod.UNITS)
    inter = union = missing = 0
    forced = getattr(mod, "forced", None)
    compare = getattr(mod, "compare", None)
    for h in range(H):
        for i in range(nqb):
            a, b = got[h][i], ref[h][i]
            if compare:
                x, y = compare(a, b, p)
            else:
                x = len(a & b)
                y = len(a) + len(b) - x
            inter += x
            union += y
            if forced:
                missing += len(forced(i, bq, bk, N, p) - a)
    return (inter / union if union else 1.0), missing


# RD_QUICK=1 (make SAN=1 test): a smaller grid, for the sanitizer build, whose
# value is running every selector under ASan/UBSan, not the agreement figures
# (the plain build checks the whole grid).
QUICK = os.environ.get("RD_QUICK") == "1"


def write_config(out, mods):
    base = open(os.path.join(HERE, "rederive.ini")).read()
    own = [m for m in mods.values() if "[sweep." in getattr(m, "INI", "")]
    names = [n for n, m in sorted(mods.items()) if m not in own]
    # The base [sweep] keeps its placeholder method (dense, checked by
    # nothing); the methods go into [sweep.rdK] blocks of a few names each
    # (one long list would pass the INI reader's line limit) that inherit the
    # base grid.
    text = base if base.endswith("\n") else base + "\n"
    if QUICK:  # RD_QUICK=1 (the sanitizer build): one length, one seed
        text = re.sub(r"(?m)^seq_lens = .*$", "seq_lens = 1024", text)
        text = re.sub(r"(?m)^seeds = .*$", "seeds = 1", text)
    for k in range(0, len(names), 6):
        text += "\n[sweep.rd%d]\nmethods = %s\n" % (k // 6 + 1, ", ".join(names[k:k + 6]))
    for n, m in sorted(mods.items()):
        if getattr(m, "INI", ""):
            text += "\n; from methods/%s.py\n%s\n" % (n, m.INI.strip())
    with open(out, "w") as fh:
        fh.write(text)
    return 0


def main():
    mods = load_modules()
    only = [m for m in os.environ.get("RD_METHODS", "").split(",") if m]
    if QUICK:  # the modules with a grid of their own (long inputs, traces) are left out
        mods = {n: m for n, m in mods.items() if "[sweep." not in getattr(m, "INI", "")}
    if only:  # RD_METHODS=a,b (cli_rederive.sh): those modules only
        mods = {n: m for n, m in mods.items() if n in only}
    if len(sys.argv) == 3 and sys.argv[1] == "--config":
        return write_config(sys.argv[2], mods)
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    bad = checked = 0
    seen = set()
    with h5py.File(sys.argv[1], "r") as f:
        for p in f["points"][()]:
            m = p["method"].decode()
            if m not in mods or p["status"] != b"ok" or p["mask"] not in (b"causal", b""):
                continue
            agree, missing = check_point(f, p, mods[m])
            checked += 1
            seen.add(m)
            ok = agree >= MIN_AGREEMENT and missing == 0
            bad += not ok
            print("%-4s %-16s %-8s N=%-5d seed=%d target=%.2f knob=%.4g: agreement %.4f, forced missing %d"
                  % ("ok" if ok else "FAIL", m, p["task"].decode(), p["seq_len"], p["seed"],
                     p["target_density"], p["knob_value"], agree, missing))
    for m in sorted(set(mods) - seen):  # a module whose method produced no point checks nothing
        print("FAIL %-16s no ok causal point to re-derive" % m)
        bad += 1
    if not checked:
        print("rederive: no point to check in %s" % sys.argv[1], file=sys.stderr)
        return 2
    print("rederive: %d points, %d methods, %d failed" % (checked, len(seen), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
