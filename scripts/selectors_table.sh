#!/bin/sh
# selectors_table.sh FILE — print selectors.tsv (attnbench export) as the
# speed table of docs/selectors.md: per method and N, select / dense, the
# stated bound, efficiency (bound / select: >= 0.5 is within 2x of the
# bound), run / dense, speedup over dense, selection GFLOP/s, and the
# roofline: the stated bytes' time at the run's STREAM bandwidth over dense
# (bytes), the larger of the two bounds over select (roof_eff; "-" without
# a measured bandwidth).
f=${1:-results/bench/methods/selectors.tsv}
[ -r "$f" ] || { echo "selectors_table: cannot read $f" >&2; exit 2; }
grep '^# device\|^# note\|^# bandwidth' "$f"
awk -F'\t' '
function num(x) { return (x == "" || x == "nan" || x == "NaN") ? "-" : x }
function g3(x) { return x == "-" ? x : sprintf("%.3g", x) }
BEGIN { printf "%-18s %7s %9s %9s %9s %7s %8s %8s %9s %9s %8s\n", "method", "N", "density", "sel/dns", "bound", "effic", "run/dns", "speedup", "selGF/s", "bytes", "roof_eff" }
/^#/ || NF < 15 { next }
{ printf "%-18s %7d %9.3g %9.3g %9.3g %7.3g %8.3g %8.3g %9.3g %9s %8s\n", $14, $1, $8, $2, $5, $6, $3, $4, $7, g3(num($16)), g3(num($18)) }' "$f"
