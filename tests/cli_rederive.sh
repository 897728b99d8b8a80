#!/usr/bin/env bash
# cli_rederive.sh — the dynamic selectors against independent NumPy
# re-derivations of their definitions (tests/rederive/methods/*.py, driven by
# tests/rederive/rederive.py) on the Q/K that `run --save-tensors` saved (run
# by make test-cli). RD_METHODS=a,b limits the run to those methods;
# RD_QUICK=1 (set by make SAN=1 test) runs one length and one seed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${AB_BIN:-$here/build/attnbench}
py=/usr/bin/python3
[ -x "$py" ] || py=python3
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
"$py" "$here/tests/rederive/rederive.py" --config "$t/rederive.ini"
"$bin" run -c "$t/rederive.ini" ${RD_METHODS:+--methods "$RD_METHODS"} --save-tensors -o "$t/r.h5" -q
"$py" "$here/tests/rederive/rederive.py" "$t/r.h5"
