#!/usr/bin/env bash
# cli_disk_full.sh — issue 9: a full disk and a read-only output directory
# give a clear error and lose no completed point.
#   disk full: the sweep writes into a 96 KiB tmpfs (as root; otherwise the
#     same with RLIMIT_FSIZE, `ulimit -f`; AB_DISK_MODE=fsize forces that), runs out of space mid-sweep, must
#     exit 1 naming the cause and --resume; every point it reported done must
#     still be readable (OUT plus its journal); after the space is freed
#     (remount larger) `--resume` finishes the sweep with every point once.
#   read-only directory: `run -o` there exits 2 with the reason, and an
#     existing results file there is left as it was (with --resume too).
# Run by `make test` (tests/cli_*.sh); needs $AB_BIN.
set -u
AB=${AB_BIN:-build/attnbench}
AB=$(cd "$(dirname "$AB")" && pwd)/$(basename "$AB")
work=$(mktemp -d /tmp/ab_disk_XXXXXX)
mounted=""
cleanup() {
    for m in $mounted; do umount "$m" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
cat > "$work/c.ini" <<'EOF'
[sweep]
tasks = needle
methods = dense, window
seq_lens = 256
heads = 1
head_dims = 16
seeds = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20
densities = 0.5
block_q = 32
block_k = 32
threads = 1
[timing]
warmup = 0
min_repeats = 2
max_repeats = 2
min_time_s = 0
EOF
total=40
# points stored in FILE (OUT + leftover journal), via merge's summary line
count() { "$AB" merge "$1" -o "$work/count.h5" 2>&1 | sed -n 's/.* \([0-9]*\) points read.*/\1/p'; }

# ---- disk full --------------------------------------------------------------
mkdir -p "$work/full"
if [ "${AB_DISK_MODE:-}" != fsize ] && [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=96k tmpfs "$work/full" 2>/dev/null; then
    mounted="$work/full"
    mode=tmpfs
    "$AB" run -c "$work/c.ini" -o "$work/full/r.h5" 2>"$work/err1"
    rc=$?
    want="No space left on device"
else
    mode=fsize
    (trap '' XFSZ; ulimit -f 48; exec "$AB" run -c "$work/c.ini" -o "$work/full/r.h5") 2>"$work/err1"
    rc=$?
    want="File too large"
fi
echo "disk full ($mode): exit $rc"
[ "$rc" = 1 ] || { cat "$work/err1"; fail "want exit 1 on a full disk, got $rc"; }
grep -q "$want" "$work/err1" || { cat "$work/err1"; fail "no '$want' in the error"; }
grep -q "r.h5" "$work/err1" || fail "the error does not name the results file"
grep -q -- "--resume" "$work/err1" || fail "the error does not say to run again with --resume"
done1=$(grep -c -- '-> ' "$work/err1")
[ "$done1" -gt 0 ] && [ "$done1" -lt "$total" ] || fail "the disk filled at an unexpected point ($done1 of $total done)"
if [ "$mode" = tmpfs ]; then
    mount -o remount,size=64m "$work/full" || fail "cannot grow the tmpfs"
fi
stored=$(count "$work/full/r.h5")
echo "disk full: $done1 points reported done, $stored readable after the failure"
[ -n "$stored" ] && [ "$stored" -ge "$done1" ] || fail "completed points were lost ($stored readable, $done1 reported done)"
"$AB" run -c "$work/c.ini" -o "$work/full/r.h5" --resume 2>"$work/err2" || { cat "$work/err2"; fail "--resume after freeing space failed"; }
grep -q "($stored already stored)" "$work/err2" || { cat "$work/err2"; fail "--resume did not keep the $stored stored points"; }
final=$(count "$work/full/r.h5")
[ "$final" = "$total" ] || fail "after --resume: $final points, want $total"
[ ! -e "$work/full/r.h5.journal" ] || fail "a journal is left after a clean finish"

# ---- read-only output directory ---------------------------------------------
mkdir -p "$work/ro"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=1m tmpfs "$work/ro" 2>/dev/null; then
    mounted="$mounted $work/ro"
    cp "$work/full/r.h5" "$work/ro/r.h5"
    mount -o remount,ro "$work/ro" || fail "cannot remount read-only"
    sum=$(md5sum < "$work/ro/r.h5")
    "$AB" run -c "$work/c.ini" -o "$work/ro/new.h5" 2>"$work/err3"
    rc=$?
    [ "$rc" = 2 ] || fail "read-only dir, new file: want exit 2, got $rc"
    grep -q "Read-only file system" "$work/err3" && grep -q "new.h5" "$work/err3" || { cat "$work/err3"; fail "unclear read-only error"; }
    "$AB" run -c "$work/c.ini" -o "$work/ro/r.h5" --resume 2>"$work/err4"
    rc=$?
    [ "$rc" = 2 ] || fail "read-only dir, --resume: want exit 2, got $rc"
    grep -q "Read-only file system" "$work/err4" || { cat "$work/err4"; fail "unclear read-only error on --resume"; }
    [ "$(md5sum < "$work/ro/r.h5")" = "$sum" ] || fail "the results file in the read-only dir changed"
    [ "$(count "$work/ro/r.h5")" = "$total" ] || fail "the results in the read-only dir are not all readable"
    echo "read-only dir: exit 2 with '$(head -c 120 "$work/err3")'"
else
    echo "read-only dir: skipped (mounting a read-only tmpfs needs root; permissions do not stop root)"
fi
echo "cli_disk_full: ok"
