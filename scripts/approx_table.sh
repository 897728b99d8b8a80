#!/bin/sh
# approx_table.sh RESULTS.h5|points.tsv — the matched-cost table of
# docs/approx.md: per method, N and target density (1: a method without
# a knob, run at its own cost), its family and layout, the achieved
# density (for a custom layout: its score FLOPs over dense), the speedup over
# dense (median of the timed points' paired speedups), the attention-mass
# recall (effective recall for custom layouts, marked *) and the accuracy on
# each task, medians over seeds and depths. Status-ok points only; a method
# with none at an N prints nothing there.
set -eu
f=${1:-results/approx.h5}
case "$f" in
*.h5)
    bin=${AB_BIN:-build/attnbench}
    d=$(mktemp -d)
    trap 'rm -rf "$d"' EXIT
    "$bin" export "$f" -d "$d" >/dev/null || { echo "approx_table: cannot export $f" >&2; exit 2; }
    f=$d/points.tsv
    ;;
esac
[ -r "$f" ] || { echo "approx_table: cannot read $f" >&2; exit 2; }
awk -F'\t' '
function med(key, n, i, j, t, a) {
    n = cnt[key]; if (n == 0) return "nan"
    for (i = 1; i <= n; i++) a[i] = val[key, i]
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(key, x) { if (x == "" || x == "nan" || x == "NaN" || x == "-nan") return; val[key, ++cnt[key]] = x + 0 }
function show(x, fmt) { return x == "nan" ? "-" : sprintf(fmt, x) }
NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
$c["status"] != "ok" { next }
{
    m = $c["method"]; n = $c["seq_len"]; t = $c["task"]; k = m SUBSEP n SUBSEP $c["target_density"]
    if (!(k in seen)) { seen[k] = 1; rows[++nr] = k; fam[k] = $c["family"]; lay[k] = $c["layout"] }
    if (!(t in tseen)) { tseen[t] = 1; tasks[++nt] = t }
    add(k SUBSEP "dens", $c["achieved_density"])
    add(k SUBSEP "rec", $c["recall_mass"])
    add(k SUBSEP "sp", $c["speedup"])
    add(k SUBSEP "acc" SUBSEP t, $c["accuracy"])
}
END {
    printf "%-18s %-8s %-7s %6s %7s %8s %8s %8s", "method", "family", "layout", "N", "target", "density", "speedup", "recall"
    for (i = 1; i <= nt; i++) printf " %12s", "acc:" tasks[i]
    printf "\n"
    for (r = 1; r <= nr; r++) {
        k = rows[r]; split(k, p, SUBSEP)
        printf "%-18s %-8s %-7s %6d %7s %8s %8s %8s", p[1], fam[k] == "" ? "-" : fam[k], lay[k], p[2], p[3],
            show(med(k SUBSEP "dens"), "%.3f"), show(med(k SUBSEP "sp"), "%.2fx"),
            show(med(k SUBSEP "rec"), "%.3f") (lay[k] == "custom" ? "*" : " ")
        for (i = 1; i <= nt; i++) printf " %12s", show(med(k SUBSEP "acc" SUBSEP tasks[i]), "%.2f")
        printf "\n"
    }
    print "* custom layout: effective recall (exact attention mass on the keys its implied weights rank highest, as many as its density allows)"
}' "$f"
