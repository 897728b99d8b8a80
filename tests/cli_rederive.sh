#!/usr/bin/env bash
# cli_rederive.sh — the dynamic selectors against independent NumPy
# re-derivations of their definitions (tests/rederive/rederive.py) on the
# Q/K that `run --save-tensors` saved (run by make test-cli).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${AB_BIN:-$here/build/attnbench}
py=/usr/bin/python3
[ -x "$py" ] || py=python3
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
"$bin" run -c "$here/tests/rederive/rederive.ini" --save-tensors -o "$t/r.h5" -q
"$py" "$here/tests/rederive/rederive.py" "$t/r.h5"
