#!/bin/sh
# check_layers.sh — the layering of the source tree (docs/architecture.md),
# checked on every `make test`:
#  1. each folder includes only headers of its own layer or lower ones:
#       include/          the plugin ABI (nothing below it)
#       kernels/          include/
#       runtime/          include/ kernels/
#       methods/ masks/ datasets/   include/ and their own family's helpers
#                         (methods/*.h, masks/*.h, datasets/gen/)
#       harness/store/    include/ runtime/
#       harness/engine/   the above, plugins' generators, harness/store/
#       harness/report/   the above, harness/engine/
#       harness/cli/      everything
#     (tests/, bench/ and fuzz/ may include anything.)
#  2. only runtime/ defines the functions include/attnbench.h declares.
# Usage: check_layers.sh [ROOT] (default: this repository).
# Prints each violation as FILE:LINE: reason; exit 1 if any, else 0.
set -eu
cd "${1:-$(dirname "$0")/..}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
allowed() { # folder of the including file -> allowed include prefixes
    case "$1" in
    include/*) echo "include/" ;;
    kernels/*) echo "include/ kernels/" ;;
    runtime/*) echo "include/ kernels/ runtime/" ;;
    methods/*) echo "include/ methods/" ;;
    masks/*) echo "include/ masks/" ;;
    datasets/gen/*) echo "include/ datasets/gen/" ;;
    datasets/tasks/*) echo "include/ datasets/gen/" ;;
    harness/store/*) echo "include/ runtime/ harness/store/" ;;
    harness/engine/*) echo "include/ kernels/ runtime/ datasets/gen/ harness/store/ harness/engine/" ;;
    harness/report/*) echo "include/ kernels/ runtime/ datasets/gen/ harness/store/ harness/engine/ harness/report/" ;;
    harness/cli/*) echo "include/ kernels/ runtime/ datasets/gen/ harness/store/ harness/engine/ harness/report/ harness/cli/" ;;
    *) echo "*" ;;
    esac
}
files=$(find include kernels runtime methods masks datasets harness \( -name '*.[ch]' -o -name '*.cu' \) 2>/dev/null | sort)
for f in $files; do
    ok=$(allowed "$f")
    [ "$ok" = "*" ] && continue
    # quoted includes; "attnbench.h" is include/attnbench.h (-Iinclude)
    grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" | while IFS= read -r line; do
        n=${line%%:*}
        h=$(echo "$line" | sed 's/.*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/')
        case "$h" in */*) ;; *) [ -f "include/$h" ] && h="include/$h" || h="$(dirname "$f")/$h" ;; esac
        hit=0
        for p in $ok; do case "$h" in "$p"*) hit=1 ;; esac; done
        [ $hit = 1 ] || echo "$f:$n: includes $h (allowed: $ok)"
    done
done > "$out"
# 2. ABI functions: names declared (not static) in include/attnbench.h
abi=$(sed -n 's/^[a-z_][a-z0-9_ *]*[ *]\(ab_[a-z0-9_]*\)(.*/\1/p' include/attnbench.h | sort -u)
for fn in $abi; do
    grep -n "^[a-z_][a-zA-Z0-9_ *]*[ *]$fn(" $(echo "$files" | grep -E '\.(c|cu)$' | grep -v '^runtime/') 2>/dev/null |
        sed "s/\$/  <- defines the ABI function $fn outside runtime\//" >> "$out" || true
done
if [ -s "$out" ]; then
    cat "$out" >&2
    echo "check_layers: $(wc -l < "$out") violation(s) of the layering in docs/architecture.md" >&2
    exit 1
fi
echo "check_layers: $(echo "$files" | wc -l) files, $(echo "$abi" | wc -w) ABI functions: layering holds"
