#!/usr/bin/env bash
# run_all.sh — one command from a clean clone to results and figures:
# dependency check (and install when root), build, sweep, figures.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
    cat <<'USAGE'
usage: ./run_all.sh [--quick | --full | --config FILE] [--gpu] [--resume] [--threads T] [--out NAME]

  --quick        configs/quick.ini (default): every method, the three tasks, N = 1K..8K,
                 causal + packed documents, a needle heatmap; about 4 minutes on 2 cores
  --full         configs/full.ini: the paper sweep (many hours on 2 cores; see
                 build/attnbench run -c configs/full.ini --dry-run for an estimate),
                 then the decode phase: configs/decode.ini (results/decode.h5 and
                 its own figures)
  --config FILE  any config
  --gpu          also run the GPU points (configs/gpu.ini unless --config is given)
  --resume       keep points already in the results file, run the rest
  --threads T    threads for kernels and BLAS (default: all cores)
  --out NAME     results/NAME.h5 and figures in results/NAME/ (default: the config's name)
  -h, --help     this text

Writes results/NAME.h5 (HDF5, machine/commit/config recorded inside) and
the figures under results/NAME/ (PNG + SVG), and prints where they are.
USAGE
}

config=configs/quick.ini
extra=""   # --full: the decode configs, run after the main one
resume=""
threads=""
name=""
gpu=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) config=configs/quick.ini ;;
        --full) config=configs/full.ini; extra="configs/decode.ini" ;;
        --config) shift; config="${1:?--config needs a file}" ;;
        --gpu) gpu=1 ;;
        --resume) resume=--resume ;;
        --threads) shift; threads="--threads ${1:?--threads needs a number}" ;;
        --out) shift; name="${1:?--out needs a name}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_all.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$gpu" = 1 ] && [ "$config" = configs/quick.ini ]; then config=configs/gpu.ini; fi
[ -f "$config" ] || { echo "run_all.sh: no config file '$config'" >&2; exit 2; }
[ -n "$name" ] || name=$(basename "$config" .ini)

echo "== 1/4 dependencies"
scripts/deps.sh
echo "== 2/4 build"
make -j"$(nproc)" >/dev/null
# one config: sweep into results/NAME.h5, figures into results/NAME/; its exit code
sweep_and_plot() {
    local cfg="$1" nm="$2" rc=0 devices=""
    echo "== 3/4 sweep ($cfg)"
    mkdir -p results
    [ "$gpu" = 1 ] && devices="--devices cpu,gpu"
    # shellcheck disable=SC2086
    build/attnbench run -c "$cfg" -o "results/$nm.h5" $resume $threads $devices || rc=$?
    if [ $rc -eq 2 ]; then echo "run_all.sh: the sweep did not start (see above)" >&2; exit 2; fi
    [ $rc -eq 1 ] && echo "run_all.sh: some points failed; they are recorded with their status"
    echo "== 4/4 figures"
    build/attnbench plot "results/$nm.h5" -d "results/$nm"
    echo
    echo "results: results/$nm.h5"
    echo "figures: results/$nm/"
    echo "summary: build/attnbench show results/$nm.h5"
    return $rc
}

rc=0
sweep_and_plot "$config" "$name" || rc=$?
for cfg in $extra; do
    r=0
    sweep_and_plot "$cfg" "$(basename "$cfg" .ini)" || r=$?
    [ $r -gt $rc ] && rc=$r
done
exit $rc
