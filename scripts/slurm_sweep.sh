#!/usr/bin/env bash
# slurm_sweep.sh — run an attnbench sweep as a Slurm array job: one task per
# shard (`attnbench run --shard I/N`, each writing its own file), then a merge
# job that starts only when every shard finished (--dependency=afterok).
#
#   scripts/slurm_sweep.sh CONFIG [-n SHARDS] [-o OUT.h5] [-b ATTNBENCH]
#                          [-c CPUS_PER_TASK] [-g GPUS_PER_TASK] [-t TIME]
#                          [-p PARTITION] [-- EXTRA SBATCH ARGS...]
#
#   -n SHARDS   array size (default 4); shard I runs every SHARDS-th point
#   -o OUT.h5   merged result (default results/sweep.h5); shard I writes
#               OUT.shardI.h5 beside it (OUT without .h5), logs go to
#               OUT.logs/
#   -b BIN      the attnbench binary (default build/attnbench)
#   -c CPUS     --cpus-per-task (default 1; set [sweep] threads to match)
#   -g GPUS     --gpus-per-task (default 0); Slurm sets CUDA_VISIBLE_DEVICES
#   -t TIME     --time per shard (default 04:00:00)
#   -p PART     --partition
# Each shard task runs with --resume, so a requeued or re-submitted shard
# keeps what it already measured. A shard task fails (and the merge does not
# run) only if its sweep did not finish: killed at the time limit, or its
# results could not be written; points that crashed, timed out or ran out
# of memory are recorded and do not fail the task. Re-running this script
# with the same arguments resumes every shard and merges again.
# Prints the two job ids (also in OUT.logs/jobids). See README "Running on
# a cluster" and docs/scaling.md.
set -euo pipefail
usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[ $# -ge 1 ] || usage 2
case "$1" in -h|--help) usage 0 ;; esac
CONFIG=$1; shift
SHARDS=4 OUT=results/sweep.h5 BIN=build/attnbench CPUS=1 GPUS=0 TIME=04:00:00 PART=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n) SHARDS=$2; shift 2 ;;
        -o) OUT=$2; shift 2 ;;
        -b) BIN=$2; shift 2 ;;
        -c) CPUS=$2; shift 2 ;;
        -g) GPUS=$2; shift 2 ;;
        -t) TIME=$2; shift 2 ;;
        -p) PART=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) usage 0 ;;
        *) echo "slurm_sweep.sh: unknown option '$1'" >&2; usage 2 ;;
    esac
done
case "$SHARDS" in ''|*[!0-9]*|0) echo "slurm_sweep.sh: -n needs a positive integer" >&2; exit 2 ;; esac
[ -r "$CONFIG" ] || { echo "slurm_sweep.sh: cannot read config $CONFIG" >&2; exit 2; }
command -v sbatch >/dev/null || { echo "slurm_sweep.sh: sbatch not found (is this a Slurm login node?)" >&2; exit 2; }
abspath() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd)" "$(basename "$1")"); }
mkdir -p "$(dirname "$OUT")"
CONFIG=$(abspath "$CONFIG") OUT=$(abspath "$OUT") BIN=$(abspath "$BIN")
[ -x "$BIN" ] || { echo "slurm_sweep.sh: $BIN is not executable (build it first: make)" >&2; exit 2; }
# Validate the config once here, so a typo fails now and not in N jobs.
"$BIN" run -c "$CONFIG" --dry-run --no-estimate >/dev/null || exit 2
BASE=${OUT%.h5}
LOGS=$OUT.logs
mkdir -p "$LOGS"
last=$((SHARDS - 1))
common=(--parsable --cpus-per-task="$CPUS" --time="$TIME")
[ -n "$PART" ] && common+=(--partition="$PART")
gpu=()
[ "$GPUS" != 0 ] && gpu=(--gpus-per-task="$GPUS")

# One array task = one shard. The point key includes the thread count, so
# every shard must use the same threads ([sweep] threads or --threads).
shard_script=$(cat <<SHARD
#!/usr/bin/env bash
set -u
I=\$SLURM_ARRAY_TASK_ID
echo "shard \$I/$SHARDS on \$(hostname) (job \$SLURM_JOB_ID, CUDA_VISIBLE_DEVICES=\${CUDA_VISIBLE_DEVICES:-none})"
err=\$(mktemp)
"$BIN" run -c "$CONFIG" --shard "\$I/$SHARDS" -o "$BASE.shard\$I.h5" --resume 2>"\$err"
rc=\$?
cat "\$err" >&2
# exit 1 also means "some points failed (recorded)": that shard is complete
if [ \$rc = 1 ] && tail -n 1 "\$err" | grep -q ' points done ('; then rc=0; fi
rm -f "\$err"
exit \$rc
SHARD
)
array_id=$(printf '%s\n' "$shard_script" | sbatch "${common[@]}" "${gpu[@]}" "$@" --job-name=attnbench-shards \
    --array="0-$last" --output="$LOGS/shard_%a.log" --open-mode=append --requeue)
array_id=${array_id%%;*}
inputs=""
for i in $(seq 0 "$last"); do inputs="$inputs '$BASE.shard$i.h5'"; done
merge_script=$(printf '#!/usr/bin/env bash\nexec %s merge%s -o %s\n' "'$BIN'" "$inputs" "'$OUT'")
merge_id=$(printf '%s\n' "$merge_script" | sbatch "${common[@]}" "$@" --job-name=attnbench-merge \
    --dependency=afterok:"$array_id" --kill-on-invalid-dep=yes --output="$LOGS/merge.log")
merge_id=${merge_id%%;*}
echo "submitted: shards job $array_id (array 0-$last), merge job $merge_id -> $OUT"
echo "follow: squeue -j $array_id,$merge_id   logs: $LOGS/"
echo "$array_id $merge_id" > "$LOGS/jobids"
