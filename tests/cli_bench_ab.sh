#!/usr/bin/env bash
# cli_bench_ab.sh — `make bench-ab` (bench/method_ab.c, mk/bench.mk): one
# method built from git HEAD and from the work tree, alternated in one
# process. Against itself (window, unchanged since HEAD in a clean clone) the
# layouts and run() outputs compare equal and the ratio line is printed;
# a method that does not exist, or a revision that does not, exits 2 with a
# message. Skipped outside a git work tree (bench-ab reads HEAD's methods/).
# Run by `make test` (tests/cli_*.sh).
set -u
fail() { echo "FAIL: $*"; exit 1; }
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "cli_bench_ab: not a git work tree: skipped"
    exit 0
fi
MK="make --no-print-directory -s"
out=$($MK bench-ab AB_METHOD=window AB_ARGS='select 512 1 64 3' 2>&1) || fail "select: exit $?: $out"
echo "$out" | grep -q 'layouts: [0-9a-f]* [0-9a-f]* (equal)' || fail "select: no equal layouts: $out"
echo "$out" | grep -q 'window select() N=512 H=1 d=64 causal, 3 pairs: .*new/old median [0-9.]*, p10' ||
    fail "select: no ratio line: $out"
out=$($MK bench-ab AB_METHOD=window AB_ARGS='run 512 1 64 2 - full' 2>&1) || fail "run: exit $?: $out"
echo "$out" | grep -q 'outputs: equal' || fail "run: outputs not equal: $out"
echo "$out" | grep -q 'window run() N=512 H=1 d=64 full, 2 pairs' || fail "run: no ratio line: $out"
out=$($MK bench-ab AB_METHOD=no_such_method 2>&1)
[ $? -eq 2 ] && echo "$out" | grep -q 'AB_METHOD must name a file of methods/' || fail "bad method: $out"
out=$($MK bench-ab AB_METHOD=window AB_REV=no-such-rev 2>&1)
[ $? -eq 2 ] && echo "$out" | grep -q 'cannot read methods/ at revision no-such-rev' || fail "bad revision: $out"
out=$($MK bench-ab AB_METHOD=window AB_ARGS='sel 512 1 64 3' 2>&1)
[ $? -ne 0 ] && echo "$out" | grep -q 'usage: ' || fail "bad mode: $out"
echo "cli_bench_ab: ok"
