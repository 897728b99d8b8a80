#!/usr/bin/env python3
"""kill_check_h5py.py RESUMED.h5 REFERENCE.h5 — the h5py half of `make
test-long` (issue 9): the file left by 50 stops + resumes opens with h5py,
every point key is there exactly once, and keys, statuses and quality
numbers equal those of the uninterrupted reference run."""
import math
import sys

import h5py


def rows(path):
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == 1, "schema_version"
        pts = f["points"][()]
    keys = [k.decode() for k in pts["key"]]
    assert len(keys) == len(set(keys)), f"{path}: a key is stored twice"
    return {k: pts[i] for i, k in enumerate(keys)}


def same(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


def main():
    got, ref = rows(sys.argv[1]), rows(sys.argv[2])
    assert set(got) == set(ref), f"key sets differ: {len(got)} vs {len(ref)}"
    for k, r in ref.items():
        g = got[k]
        assert g["status"] == r["status"], f"{k}: status"
        for fld in ("achieved_density", "knob_value", "recall_mass", "recall_topk", "accuracy", "rel_l2_err"):
            assert same(float(g[fld]), float(r[fld])), f"{k}: {fld} {g[fld]} vs {r[fld]}"
    print(f"h5py: {len(got)} points, each once; keys, statuses and quality numbers equal those of {sys.argv[2]}")


if __name__ == "__main__":
    main()
