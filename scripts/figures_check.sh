#!/bin/sh
# figures_check.sh — `make figures-check`: draw every figure and DIR/index.html
# from a results file, check the page is static (no scripts, nothing from the
# network, every referenced file present), render it in headless Chromium and
# save a screenshot to look at.
#
#   scripts/figures_check.sh BIN RESULTS OUTDIR
#
# RESULTS missing: a small realistic fixture is swept first with
# scripts/figures_fixture.ini (every registered method, 3 lengths, 4
# densities, needle depths 0, 0.5, 1; minutes on 2 cores). Chromium is the
# Debian package; it is installed only when missing and running as root, and
# the check is skipped (exit 0, with the reason) when it cannot be had.
# Writes OUTDIR/fig/ (figures, index.html) and OUTDIR/index_screenshot.png.
set -eu
BIN=${1:?usage: figures_check.sh BIN RESULTS OUTDIR}
RESULTS=${2:?usage: figures_check.sh BIN RESULTS OUTDIR}
OUT=${3:?usage: figures_check.sh BIN RESULTS OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [ ! -f "$RESULTS" ]; then
    echo "figures-check: $RESULTS not found; sweeping the fixture (scripts/figures_fixture.ini)"
    RESULTS="$OUT/fixture.h5"
    rc=0
    "$BIN" run -c "$HERE/figures_fixture.ini" -o "$RESULTS" >"$OUT/fixture_run.log" 2>&1 || rc=$?
    # 1 = some points failed (recorded): still a valid file to draw
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
        echo "figures-check: FAIL: the fixture sweep exited $rc (see $OUT/fixture_run.log)" >&2
        exit 1
    fi
fi

FIG="$OUT/fig"
rm -rf "$FIG"
"$BIN" plot "$RESULTS" -d "$FIG" >"$OUT/plot.log" 2>&1 || {
    echo "figures-check: FAIL: attnbench plot (see $OUT/plot.log)" >&2; cat "$OUT/plot.log" >&2; exit 1; }
PAGE="$FIG/index.html"
[ -s "$PAGE" ] || { echo "figures-check: FAIL: no $PAGE" >&2; exit 1; }

# static: no scripts, no remote references
if grep -qi '<script' "$PAGE"; then echo "figures-check: FAIL: index.html has a <script>" >&2; exit 1; fi
if grep -Eqi '(src|href)="(https?:)?//' "$PAGE"; then
    echo "figures-check: FAIL: index.html references the network" >&2; exit 1; fi
# every local reference exists (links inside the page, #..., excepted)
missing=0
for ref in $(grep -Eo '(src|href)="[^"#]+"' "$PAGE" | sed -E 's/^(src|href)="//; s/"$//' | sort -u); do
    [ -e "$FIG/$ref" ] || { echo "figures-check: FAIL: index.html references missing $ref" >&2; missing=1; }
done
[ "$missing" -eq 0 ] || exit 1
echo "figures-check: index.html is static; $(grep -c '<img ' "$PAGE") images, all files present"

CHROME=""
for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then CHROME=$(command -v "$c"); break; fi
done
if [ -z "$CHROME" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "figures-check: installing chromium (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >"$OUT/apt.log" 2>&1 || true
    command -v chromium >/dev/null 2>&1 && CHROME=$(command -v chromium)
fi
if [ -z "$CHROME" ]; then
    echo "figures-check: SKIPPED the browser render: chromium is not installed and cannot be" \
         "(not root, or apt-get failed); install it with: apt-get install chromium"
    exit 0
fi
SHOT="$OUT/index_screenshot.png"
rm -f "$SHOT"
# --no-sandbox: root in a container has no user namespaces
timeout 120 "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1280,${FIGCHECK_HEIGHT:-9000} --screenshot="$SHOT" "file://$PAGE" \
    >"$OUT/chromium.log" 2>&1 || true
if [ ! -s "$SHOT" ]; then
    echo "figures-check: FAIL: chromium wrote no screenshot (see $OUT/chromium.log)" >&2
    exit 1
fi
# the DOM as Chromium laid it out: every figure's <img> made it in
timeout 120 "$CHROME" --headless --no-sandbox --disable-gpu --dump-dom "file://$PAGE" \
    >"$OUT/index_dom.html" 2>>"$OUT/chromium.log" || true
n_src=$(grep -c '<img ' "$PAGE" || true)
n_dom=$(grep -o '<img ' "$OUT/index_dom.html" | wc -l)
if [ "$n_dom" -lt "$n_src" ]; then
    echo "figures-check: FAIL: Chromium's DOM has $n_dom of $n_src images" >&2
    exit 1
fi
echo "figures-check: rendered in $("$CHROME" --version 2>/dev/null | head -1): $SHOT"
