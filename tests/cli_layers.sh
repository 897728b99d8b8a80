#!/usr/bin/env bash
# cli_layers.sh — scripts/check_layers.sh catches what it is there for: an
# upward include and an ABI function defined outside runtime/, and passes a
# clean tree (run by make test-cli; make test-layers checks the real tree).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
mkdir -p "$t"/include "$t"/kernels "$t"/runtime "$t"/methods "$t"/harness/engine "$t"/harness/cli
cp "$here/include/attnbench.h" "$t/include/"
printf '#include "attnbench.h"\nint ab_cpu_x(void);\n' > "$t/kernels/k.c"
printf '#include "attnbench.h"\n#include "methods/h.h"\n' > "$t/methods/m.c"
: > "$t/methods/h.h"
printf '#include "harness/engine/e.h"\n#include "runtime/r.h"\n' > "$t/harness/cli/c.c"
printf 'void ab_set_error(void *state, const char *fmt, ...) {}\n' > "$t/runtime/r.c"
sh "$here/scripts/check_layers.sh" "$t" > /dev/null || { echo "FAIL: a clean tree was rejected"; exit 1; }
printf '#include "harness/engine/e.h"\n' >> "$t/kernels/k.c"
if sh "$here/scripts/check_layers.sh" "$t" 2> "$t/err" > /dev/null; then echo "FAIL: upward include passed"; exit 1; fi
grep -q 'kernels/k.c:3: includes harness/engine/e.h' "$t/err" || { echo "FAIL: message: $(cat "$t/err")"; exit 1; }
sed -i '$d' "$t/kernels/k.c"
printf 'int ab_layout_dense(ab_layout *l) { return 0; }\n' >> "$t/methods/m.c"
if sh "$here/scripts/check_layers.sh" "$t" 2> "$t/err" > /dev/null; then echo "FAIL: ABI definition in methods/ passed"; exit 1; fi
grep -q 'methods/m.c:3:.*ab_layout_dense outside runtime' "$t/err" || { echo "FAIL: message: $(cat "$t/err")"; exit 1; }
echo "check_layers: clean tree passes, upward include and ABI definition outside runtime/ are caught"
