#!/bin/sh
# gpu_bundle.sh — build the CUDA binaries here and pack them for a GPU
# machine that has the CUDA driver, runtime and cuBLAS (and PyTorch for the
# SDPA peer) but none of our Debian libraries (docs/gpu.md).
#
#   scripts/gpu_bundle.sh            -> build/gpu_bundle/{bin/, lib.tar.xz, run.sh}
#   CUDA_ARCH=90 scripts/gpu_bundle.sh   (one architecture: faster to build)
#
# On the GPU machine, from a checkout of the same commit:
#   build/gpu_bundle/run.sh test     the GPU tests, then memcheck over every kernel
#   build/gpu_bundle/run.sh bench    gpu_bench + PyTorch SDPA -> results/gpu_bench/
#   build/gpu_bundle/run.sh all      both
# The shared libraries that travel are those `ldd` lists, less glibc,
# libstdc++, libgcc and cuBLAS (the GPU machine's own are used).
set -eu
cd "$(dirname "$0")/.."
BUILD=build/cuda
OUTD=build/gpu_bundle
ARCH=${CUDA_ARCH:-80 90}
command -v nvcc >/dev/null || { echo "gpu_bundle: nvcc not found (CUDA toolkit)" >&2; exit 2; }
make -j"$(nproc)" CUDA=yes CUDA_ARCH="$ARCH" BUILD=$BUILD WERROR=1 \
    $BUILD/attnbench $BUILD/attnbench_tests $BUILD/bench/gpu_bench
rm -rf $OUTD
mkdir -p $OUTD/bin $OUTD/lib
cp $BUILD/attnbench $BUILD/attnbench_tests $BUILD/bench/gpu_bench $OUTD/bin/
ldd $OUTD/bin/* | awk '/=> \//{print $3}' | sort -u |
    grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s|libcublas|libcublasLt|ld-linux[^/]*)\.so' |
    while read -r f; do cp -L "$f" $OUTD/lib/; done
tar cJf $OUTD/lib.tar.xz -C $OUTD/lib .
rm -rf $OUTD/lib
cat >$OUTD/run.sh <<'EOF'
#!/bin/sh
# run.sh test|bench|all [OUTDIR] — from the repository root on the GPU machine.
set -u
B=$(cd "$(dirname "$0")" && pwd)
L=${TMPDIR:-/tmp}/attnbench_gpu_lib
mkdir -p "$L" && tar xJf "$B/lib.tar.xz" -C "$L" || exit 1
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export LD_LIBRARY_PATH="$L:$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AB_BIN="$B/bin/attnbench" OMP_WAIT_POLICY=passive
what=${1:-all}
out=${2:-results/gpu_bench}
"$B/bin/gpu_bench" --probe || exit 3
rc=0
if [ "$what" = test ] || [ "$what" = all ]; then
    "$B/bin/attnbench_tests" -j1 --filter 'gpu/*' || rc=1
    SAN=$(command -v compute-sanitizer || ls "$CUDA_HOME/bin/compute-sanitizer" 2>/dev/null || true)
    if [ -n "$SAN" ]; then
        for v in "--causal 1 --dtype fp16" "--causal 0 --dtype bf16"; do
            # shellcheck disable=SC2086
            "$SAN" --tool memcheck --error-exitcode 1 "$B/bin/gpu_bench" --n 1000,2048 --d 64,128 \
                --heads 2 --reps 1 --out "${TMPDIR:-/tmp}/gpu_memcheck" $v >/dev/null || rc=1
        done
        echo "run.sh: memcheck rc=$rc"
    fi
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    mkdir -p "$out"
    python3 bench/sdpa_gpu.py --out "$out/sdpa.tsv" || echo "run.sh: SDPA peer failed (skipped)"
    "$B/bin/gpu_bench" --sdpa "$out/sdpa.tsv" --out "$out" || rc=1
fi
exit $rc
EOF
chmod +x $OUTD/run.sh
echo "gpu_bundle: $(du -sh $OUTD | cut -f1) in $OUTD (carry it; run $OUTD/run.sh test|bench|all there)"
