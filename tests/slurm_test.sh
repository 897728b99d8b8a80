#!/usr/bin/env bash
# slurm_test.sh — issue 9's real Slurm test (`make test-slurm`): on this
# machine, as root, install Debian's slurm-wlm and munge if missing, start
# munged, slurmctld and slurmd on localhost from a generated minimal
# slurm.conf (own ports, state and spool in a temporary directory), submit a
# small sweep through scripts/slurm_sweep.sh as a 4-way array job plus its
# dependent merge job, wait (bounded), and check that the merged file holds
# exactly the points of a single-process run, each once, with the same
# statuses and quality numbers (tests/kill_check_h5py.py with h5py, from
# PyPI into $H5PY_VENV if needed). Stops the daemons it started and removes
# everything it created, also on failure.
# Usage: AB_BIN=build/attnbench bash tests/slurm_test.sh
set -u
AB=${AB_BIN:-build/attnbench}
AB=$(cd "$(dirname "$AB")" && pwd)/$(basename "$AB")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
H5PY_VENV=${H5PY_VENV:-$ROOT/build/venv-h5py}
WAIT_S=${SLURM_TEST_WAIT_S:-300}
say() { echo "slurm_test: $*"; }
die() { say "FAIL: $*"; exit 1; }
[ "$(id -u)" = 0 ] || { say "skipped: needs root (installs packages, starts slurmctld/slurmd/munged)"; exit 0; }
[ -x "$AB" ] || die "no attnbench binary at $AB"

# ---- packages ----------------------------------------------------------------
need=""
for p in slurm-wlm munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
    say "installing$need"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq $need || { apt-get update -qq && apt-get install -y -qq $need; }; } >/dev/null ||
        die "apt-get install$need failed"
fi

dir=$(mktemp -d /tmp/ab_slurm_XXXXXX)
chmod 755 "$dir"
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    for p in $pids; do for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; kill -9 "$p" 2>/dev/null; done
    rm -rf "$dir"
}
trap cleanup EXIT

# ---- munge -----------------------------------------------------------------------
# Our own munged on our own socket, with a key of its own: nothing shared
# with a munged that may already run here.
mkdir -p "$dir/munge"
chmod 700 "$dir/munge"
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
chmod 400 "$dir/munge/munge.key"
MSOCK=$dir/munge/munge.socket
munged --foreground --force --key-file="$dir/munge/munge.key" --socket="$MSOCK" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/seed" \
    >"$dir/munge/munged.out" 2>&1 &
pids="$pids $!"
for _ in $(seq 50); do [ -S "$MSOCK" ] && break; sleep 0.1; done
[ -S "$MSOCK" ] || { cat "$dir/munge/munged.log" 2>/dev/null; die "munged did not start"; }

# ---- slurm.conf -------------------------------------------------------------------
mkdir -p "$dir/state" "$dir/spool"
export SLURM_CONF=$dir/slurm.conf
cat > "$SLURM_CONF" <<EOF
ClusterName=abtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$MSOCK
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
NodeName=localhost NodeHostname=localhost CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -i -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1 &
pids="$pids $!"
slurmd -D -f "$SLURM_CONF" -N localhost >"$dir/slurmd.out" 2>&1 &
pids="$pids $!"
ok=""
for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)'; then ok=1; break; fi
    sleep 1
done
[ -n "$ok" ] || { tail -20 "$dir/slurmctld.log" "$dir/slurmd.log" "$dir"/*.out 2>/dev/null; die "the node did not come up"; }
say "slurmctld + slurmd up: $(sinfo -h -o '%P %D %T %c CPUs' | head -1)"

# ---- the sweep -------------------------------------------------------------------
cat > "$dir/sweep.ini" <<'EOF'
; slurm_test.sh: 2 lengths x 2 seeds x (dense + window x 2 + oracle x 2) = 20 points
[sweep]
tasks = needle
methods = dense, window, oracle_topk_block
seq_lens = 256, 512
heads = 2
head_dims = 32
seeds = 1, 2
densities = 0.25, 0.5
block_q = 32
block_k = 32
threads = 1
[timing]
warmup = 0
min_repeats = 2
max_repeats = 5
min_time_s = 0.02
max_time_s = 1
EOF
"$AB" run -c "$dir/sweep.ini" -o "$dir/single.h5" -q || die "the single-process run failed"
mkdir -p "$dir/out"
# the job's files are written by slurmd's job steps: make the tree reachable
"$ROOT/scripts/slurm_sweep.sh" "$dir/sweep.ini" -n 4 -o "$dir/out/sweep.h5" -b "$AB" -t 00:10:00 \
    >"$dir/submit.txt" 2>&1 || { cat "$dir/submit.txt"; die "slurm_sweep.sh failed"; }
cat "$dir/submit.txt"
read -r array_id merge_id < "$dir/out/sweep.h5.logs/jobids"
t0=$(date +%s)
while squeue -h -j "$array_id,$merge_id" 2>/dev/null | grep -q .; do
    [ $(( $(date +%s) - t0 )) -lt "$WAIT_S" ] || { squeue; scancel "$array_id" "$merge_id"; die "jobs still queued after $WAIT_S s"; }
    sleep 1
done
say "array + merge jobs finished in $(( $(date +%s) - t0 )) s"
for i in 0 1 2 3; do
    state=$(scontrol show job "${array_id}_$i" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -1)
    [ "$state" = COMPLETED ] || { cat "$dir/out/sweep.h5.logs/shard_$i.log"; die "shard $i ended $state"; }
    [ -s "$dir/out/sweep.shard$i.h5" ] || die "shard $i wrote no file"
done
mstate=$(scontrol show job "$merge_id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -1)
[ "$mstate" = COMPLETED ] || { cat "$dir/out/sweep.h5.logs/merge.log"; die "the merge job ended $mstate"; }
cat "$dir/out/sweep.h5.logs/merge.log"
hosts=$(grep -h '^shard' "$dir"/out/sweep.h5.logs/shard_*.log | wc -l)
[ "$hosts" = 4 ] || die "expected 4 shard tasks to have run, saw $hosts"

# ---- merged == single-process run ---------------------------------------------
h5dump -H "$dir/out/sweep.h5" >/dev/null || die "h5dump cannot read the merged file"
h5dump -A "$dir/out/sweep.h5" | grep -q 'GROUP "shard_3"' || die "the merged file lacks /shards/shard_3"
if python3 -c 'import h5py' 2>/dev/null; then py=python3; else
    [ -x "$H5PY_VENV/bin/python" ] || python3 -m venv "$H5PY_VENV" || die "cannot create $H5PY_VENV"
    "$H5PY_VENV/bin/python" -c 'import h5py' 2>/dev/null || "$H5PY_VENV/bin/pip" install -q h5py || die "cannot install h5py"
    py=$H5PY_VENV/bin/python
fi
"$py" "$ROOT/tests/kill_check_h5py.py" "$dir/out/sweep.h5" "$dir/single.h5" || die "merged file differs from the single-process run"
say "ok: 4-way array + dependent merge equals the single-process run point for point"
