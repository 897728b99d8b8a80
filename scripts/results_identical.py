#!/usr/bin/python3
"""results_identical.py A.h5 B.h5 — are two results files the same point for
point, apart from the fields a clock or the machine's load decides?

Used to check that a refactor changed no result: run the same config before
and after and compare. Points are matched by key; every other field of
/points must be equal bit for bit (NaN equals NaN), except the timing fields
listed in TIME. Exit 0 identical, 1 differences (listed), 2 usage."""
import sys
import numpy as np
import h5py

TIME = {"select_ms", "run_ms", "total_ms", "min_ms", "p10_ms", "p90_ms", "cv",
        "n_samples", "dense_gflops", "rounds", "calls", "total_lo_ms", "total_hi_ms",
        "dense_pair_ms", "rel_dense", "rel_lo", "rel_hi", "foreign_pct", "steal_pct",
        "load1", "fma_gflops", "shared_pct", "point_s", "timing"}


def points(path):
    with h5py.File(path, "r") as f:
        p = f["points"][()]
    return {bytes(r["key"]): r for r in p}, p.dtype.names


def same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b, equal_nan=np.asarray(a).dtype.kind == "f")
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    a, names = points(sys.argv[1])
    b, _ = points(sys.argv[2])
    bad = 0
    for k in sorted(set(a) ^ set(b)):
        print("only in %s: %s" % (sys.argv[1] if k in a else sys.argv[2], k.decode()))
        bad += 1
    fields = [n for n in names if n not in TIME]
    diff = {}
    for k in sorted(set(a) & set(b)):
        for n in fields:
            if not same(a[k][n], b[k][n]):
                diff.setdefault(n, []).append((k, a[k][n], b[k][n]))
    for n, rows in diff.items():
        bad += len(rows)
        print("%s differs at %d points, e.g. %s: %r vs %r" % (n, len(rows), rows[0][0].decode(), rows[0][1], rows[0][2]))
    print("%d common points, %d fields compared (%d timing fields skipped): %s"
          % (len(set(a) & set(b)), len(fields), len(names) - len(fields), "identical" if not bad else "%d differences" % bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
