#!/usr/bin/env bash
# Test 4 of scripts/test-deploy.sh: deploy/slurm/pskit.sbatch on a real
# single-node SLURM cluster (set up by scripts/deploy/setup-slurm.sh). Run as
# root from anywhere:
#
#   bash scripts/deploy/test-slurm.sh
#
# 1. A small Fashion-MNIST job (2 shards, 2 workers, evaluator target 0.85)
#    submitted with `sbatch --wait`: exit 0, state COMPLETED, the evaluator's
#    verdict in the job's output, one psctl shutdown checkpoint on both shards and
#    loadable by a fresh ps-server, the rendezvous directory removed.
# 1b. The same job with an unreachable target (0.99) and a 10 s time limit:
#    the evaluator ends it without the target (ps-worker exits 3; an older
#    one exits 0 and says "not reached"): the script exits 3 (state FAILED,
#    exit code 3), yet the shards were stopped as after a success (SIGTERM,
#    the shutdown checkpoint), not as after a failed step.
# 2. The same job with an unreachable target: once both workers train, one
#    ps-server is SIGKILLed; the job must end FAILED (exit 1), long before its
#    10-minute limit, naming the shard step, with no ps-server or ps-worker of
#    the job left running.
# 3. deploy/slurm/pskit-hetjob.sbatch on two nodes: a throw-away second
#    cluster on this host (its own slurmctld and two slurmd, `slurmd -N n1`
#    and `-N n2`, on their own ports), n2 with a stand-in GPU (a gres.conf
#    entry on /dev/null) so the script's unchanged `--gres=gpu:1` is
#    scheduled; the workers run `--backend cpu` (no CUDA here). The job must
#    reach its target with the shards on n1 and the workers on n2.
# Before these, shellcheck and `sbatch --test-only` check the hetjob script.
# Binaries: PSKIT_BIN if set, else build/bin, built here if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

say() { echo "test-slurm: $*"; }
# Whether job output $1 shows the end of a job as deploy/slurm/pskit-common.sh
# makes it: psctl shutdown's one checkpoint id on every shard (the shards'
# own SIGTERM then add none: nothing changed since).
one_checkpoint() {
  grep -q "shut down: checkpoint shutdown-[0-9]* is on every shard" "$1"
}
fail() {
  echo "test-slurm: FAIL: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root: it installs and starts SLURM"

bin=${PSKIT_BIN:-$repo/build/bin}
if [ ! -x "$bin/ps-server" ] || [ ! -x "$bin/ps-worker" ]; then
  [ -z "${PSKIT_BIN:-}" ] || fail "PSKIT_BIN=$PSKIT_BIN holds no ps-server/ps-worker"
  say "building ps-server and ps-worker into build/"
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$repo")}"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPSKIT_WITH_CUDA=OFF >/dev/null
  nice cmake --build build -j2 --target ps-server ps-worker >/dev/null
fi
"$bin/ps-server" --help 2>&1 | grep -q -- '--address_file' ||
  fail "$bin/ps-server has no --address_file flag: rebuild it from this tree"

data=/usr/share/datasets/fashion-mnist
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
  say "installing dataset-fashion-mnist"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q dataset-fashion-mnist >/dev/null
fi

bash scripts/deploy/setup-slurm.sh

# The submit directory stands in for the cluster's shared file system: the
# rendezvous and checkpoint directories go under it.
work=$(mktemp -d /tmp/pskit-test-slurm.XXXXXX)
jobs=()
cluster2_pids=()
cleanup() {
  local rc=$? j p
  unset SLURM_CONF # part 3 points it at the test cluster
  for j in "${jobs[@]}"; do scancel "$j" 2>/dev/null || true; done
  # Daemons of the test cluster whose pid file was not read yet.
  for p in $(pgrep -f -- "-f $work/cluster2/slurm.conf" || true); do cluster2_pids+=("$p"); done
  if [ ${#cluster2_pids[@]} -gt 0 ]; then
    for j in $(SLURM_CONF=$work/cluster2/slurm.conf squeue -h -o %A 2>/dev/null); do
      SLURM_CONF=$work/cluster2/slurm.conf scancel "$j" 2>/dev/null || true
    done
    for p in "${cluster2_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${cluster2_pids[@]}"; do
      for _ in $(seq 50); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.2
      done
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# Field $2 (JobState, ExitCode, ...) of job $1, from slurmctld (no
# accounting database: finished jobs stay visible for MinJobAge).
job_field() {
  scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# Pids of ps-server / ps-worker processes that belong to job $1 (their
# environment holds SLURM_JOB_ID; containers of other tests do not match).
# One pgrep per name: pgrep refuses a pattern longer than 15 characters (the
# kernel's process name length) and then matches nothing.
job_processes() {
  local p
  for p in $(pgrep -x ps-server || true) $(pgrep -x ps-worker || true); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_JOB_ID=$1" && echo "$p"
  done
  return 0
}

# The batch scripts find the repository (pskit-common.sh, build/bin) from
# their submitted path: PSKIT_HOME is not set, PSKIT_BIN only if given.
common_env=(PSKIT_SHARDS=2 PSKIT_WORKERS=2 PSKIT_DATA="$data"
  PSKIT_SERVER_ARGS="--log_level info" PSKIT_STOP_GRACE_S=30)
[ -z "${PSKIT_BIN:-}" ] || common_env+=(PSKIT_BIN="$PSKIT_BIN")
unset PSKIT_HOME
# --overcommit: 5 tasks on this host's 2 CPUs.
sbatch_args=(--parsable --overcommit --ntasks=5 --time=10)

# --- 0. what cannot run on one node: the heterogeneous job ---------------------
# Shellcheck follows both batch scripts into the pskit-common.sh they share;
# `sbatch --test-only` makes slurmctld parse every #SBATCH line of both
# components (the GPU request swapped for --overcommit: this cluster has no
# GPU GRES) without submitting anything.
command -v shellcheck >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q shellcheck >/dev/null
shellcheck -x deploy/slurm/pskit.sbatch deploy/slurm/pskit-hetjob.sbatch deploy/slurm/pskit-common.sh ||
  fail "shellcheck found problems in deploy/slurm/"
sed -E 's/^(#SBATCH .*)--gres=gpu:[0-9]+/\1--overcommit/' deploy/slurm/pskit-hetjob.sbatch >"$work/hetjob.sbatch"
grep -q '^#SBATCH hetjob' "$work/hetjob.sbatch" || fail "pskit-hetjob.sbatch has no '#SBATCH hetjob' line"
hetjob=$(cd "$work" && sbatch --test-only "$work/hetjob.sbatch" 2>&1) ||
  fail "sbatch --test-only rejects pskit-hetjob.sbatch: $hetjob"
say "hetjob variant: shellcheck clean; sbatch --test-only: ${hetjob#sbatch: }"

# --- 1. a job that reaches its target ---------------------------------------
say "job 1: 2 shards, 2 workers, evaluator target 0.85 (sbatch --wait)"
start=$SECONDS
rc=0
job1=$(cd "$work" && env "${common_env[@]}" PSKIT_TARGET=0.85 PSKIT_MAX_SECONDS=300 \
  PSKIT_STATE_DIR="$work/state1" \
  sbatch "${sbatch_args[@]}" --wait --job-name=pskit-test-ok --output="$work/job1.out" \
  "$repo/deploy/slurm/pskit.sbatch") || rc=$?
jobs+=("$job1")
out1=$work/job1.out
state=$(job_field "$job1" JobState)
say "job 1 ($job1): sbatch exit $rc, state $state, exit code $(job_field "$job1" ExitCode), run time $(job_field "$job1" RunTime) ($((SECONDS - start)) s until sbatch --wait returned)"
if [ "$rc" -ne 0 ] || [ "$state" != COMPLETED ]; then
  tail -n 40 "$out1" >&2 || true
  fail "job 1 should end COMPLETED with exit 0"
fi
verdict=$(grep -m 1 '^pskit: the evaluator ended the job:' "$out1") ||
  fail "job 1's output has no evaluator verdict"
[[ "$verdict" == *"target reached"* ]] || fail "job 1's verdict is not 'target reached': $verdict"
say "${verdict#pskit: }"
grep -q 'rank 1 of 2 (SLURM)' "$out1" || fail "no worker took its rank from SLURM"
one_checkpoint "$out1" || fail "job 1's output lacks psctl shutdown's 'checkpoint shutdown-... is on every shard'"
[ ! -e "$work/.pskit-rendezvous/$job1" ] || fail "job 1 left its rendezvous directory"
# A fresh shard on each data directory restores the shutdown checkpoint.
for i in 0 1; do
  "$bin/ps-server" --listen 127.0.0.1:0 --shard_index "$i" --num_shards 2 \
    --data_dir "$work/state1/shard-$i" >"$work/restore-$i.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    grep -q 'listening on' "$work/restore-$i.log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || fail "shard $i did not start and stop cleanly on its data directory: $(cat "$work/restore-$i.log")"
  grep -q "loaded checkpoint 'shutdown-" "$work/restore-$i.log" ||
    fail "shard $i did not load the shutdown checkpoint: $(cat "$work/restore-$i.log")"
done
say "job 1: one shutdown checkpoint on both shards (psctl shutdown), and a fresh ps-server loads each"

# --- 1b. the target not reached ----------------------------------------------
say "job 1b: target 0.99 within 10 s (sbatch --wait): the verdict 'not reached'"
rc=0
job1b=$(cd "$work" && env "${common_env[@]}" PSKIT_TARGET=0.99 PSKIT_MAX_SECONDS=10 \
  PSKIT_STATE_DIR="$work/state1b" \
  sbatch "${sbatch_args[@]}" --wait --job-name=pskit-test-short --output="$work/job1b.out" \
  "$repo/deploy/slurm/pskit.sbatch") || rc=$?
jobs+=("$job1b")
out1b=$work/job1b.out
state=$(job_field "$job1b" JobState)
code=$(job_field "$job1b" ExitCode)
say "job 1b ($job1b): sbatch exit $rc, state $state, exit code $code"
if [ "$rc" -ne 3 ] || [ "$state" != FAILED ] || [ "$code" != 3:0 ]; then
  tail -n 40 "$out1b" >&2 || true
  fail "job 1b should end FAILED with exit code 3 (target not reached)"
fi
grep -q 'pskit: the evaluator ended the job:.*target not reached' "$out1b" ||
  { tail -n 40 "$out1b" >&2; fail "job 1b's output has no 'not reached' verdict"; }
grep -q 'step failed' "$out1b" && { tail -n 40 "$out1b" >&2; fail "job 1b treated the evaluator's verdict as a failed step"; }
one_checkpoint "$out1b" || { tail -n 40 "$out1b" >&2; fail "job 1b's output lacks psctl shutdown's one checkpoint on every shard"; }
say "job 1b: exit 3, one shutdown checkpoint on both shards, then SIGTERM"

# --- 2. a shard killed mid-job -----------------------------------------------
say "job 2: the same with target 0.99; SIGKILL one ps-server once both workers train"
job2=$(cd "$work" && env "${common_env[@]}" PSKIT_TARGET=0.99 PSKIT_MAX_SECONDS=600 \
  PSKIT_STATE_DIR="$work/state2" \
  sbatch "${sbatch_args[@]}" --job-name=pskit-test-kill --output="$work/job2.out" \
  "$repo/deploy/slurm/pskit.sbatch")
jobs+=("$job2")
out2=$work/job2.out
for _ in $(seq 240); do
  [ "$(grep -c 'rank [01] of 2 (SLURM)' "$out2" 2>/dev/null)" = 2 ] && break
  case "$(job_field "$job2" JobState)" in PENDING | RUNNING | CONFIGURING) ;; *) break ;; esac
  sleep 0.5
done
[ "$(grep -c 'rank [01] of 2 (SLURM)' "$out2" 2>/dev/null)" = 2 ] ||
  { tail -n 40 "$out2" >&2 || true; fail "job 2's workers did not start within 120 s"; }
victim=""
for p in $(job_processes "$job2"); do
  if [ "$(cat "/proc/$p/comm")" = ps-server ] &&
    tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- '--shard_index 0 '; then
    victim=$p
  fi
done
[ -n "$victim" ] || fail "job 2's shard 0 process not found"
kill -KILL "$victim"
killed_at=$SECONDS
say "killed shard 0 (pid $victim) of job $job2"
state=""
for _ in $(seq 240); do
  state=$(job_field "$job2" JobState)
  case "$state" in PENDING | RUNNING | CONFIGURING | COMPLETING) ;; *) break ;; esac
  sleep 0.5
done
took=$((SECONDS - killed_at))
say "job 2 ($job2): state $state, exit code $(job_field "$job2" ExitCode), ${took} s after the kill (time limit 600 s)"
if [ "$state" != FAILED ]; then
  tail -n 40 "$out2" >&2 || true
  fail "job 2 should end FAILED within 120 s of the kill, is '$state'"
fi
grep -q 'pskit: the shards step failed' "$out2" || fail "job 2's output does not say the shard step failed"
left=$(job_processes "$job2")
[ -z "$left" ] || fail "job 2 left processes behind: $left"
[ ! -e "$work/.pskit-rendezvous/$job2" ] || fail "job 2 left its rendezvous directory"
say "job 2: ended FAILED, the shard step named, no ps-server or ps-worker left"

# --- 3. the heterogeneous job on two nodes -------------------------------------
# The second cluster's settings are setup-slurm.sh's, plus: its own ports,
# state and logs under $work; two nodes on this host (slurmd -N says which
# one a daemon is), each in its own partition; bf_interval=2 because only
# the backfill scheduler starts heterogeneous jobs (every 30 s by default).
c2=$work/cluster2
ports=(6917 6921 6922)
for p in "${ports[@]}"; do
  if ss -ltnH "sport = :$p" | grep -q .; then
    fail "port $p is taken; the two-node test cluster needs ports ${ports[*]}"
  fi
done
mkdir -p "$c2/state" "$c2/log"
host=$(hostname -s)
cpus=$(nproc)
{
  echo "# Two-node test cluster of scripts/deploy/test-slurm.sh (removed at its end)."
  echo "ClusterName=pskit-test2"
  echo "SlurmctldHost=$host"
  echo "SlurmctldPort=${ports[0]}"
  echo "SlurmUser=$(id -un)"
  echo "SlurmdUser=$(id -un)"
  echo "AuthType=auth/munge"
  echo "CredType=cred/munge"
  echo "MpiDefault=none"
  echo "ProctrackType=proctrack/linuxproc"
  echo "TaskPlugin=task/none"
  echo "JobAcctGatherType=jobacct_gather/none"
  echo "AccountingStorageType=accounting_storage/none"
  echo "SchedulerType=sched/backfill"
  echo "SchedulerParameters=bf_interval=2"
  echo "SelectType=select/cons_tres"
  echo "SelectTypeParameters=CR_Core"
  echo "GresTypes=gpu"
  echo "ReturnToService=2"
  echo "MinJobAge=600"
  echo "StateSaveLocation=$c2/state"
  echo "SlurmdSpoolDir=$c2/spool-%n"
  echo "SlurmctldPidFile=$c2/slurmctld.pid"
  echo "SlurmdPidFile=$c2/slurmd-%n.pid"
  echo "SlurmctldLogFile=$c2/log/slurmctld.log"
  echo "SlurmdLogFile=$c2/log/slurmd-%n.log"
  echo "NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[1]} CPUs=$cpus RealMemory=1000"
  echo "NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=${ports[2]} CPUs=$cpus RealMemory=1000 Gres=gpu:1"
  echo "PartitionName=cpu Nodes=n1 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
  echo "PartitionName=gpu Nodes=n2 MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
} >"$c2/slurm.conf"
echo 'NodeName=n2 Name=gpu Count=1 File=/dev/null' >"$c2/gres.conf"
export SLURM_CONF=$c2/slurm.conf
# The daemons fork into the background and write their pid file after.
started() {
  local pidfile=$1
  for _ in $(seq 50); do
    [ -s "$pidfile" ] && break
    sleep 0.1
  done
  [ -s "$pidfile" ] || fail "$pidfile was not written; see $c2/log/"
  cluster2_pids+=("$(cat "$pidfile")")
}
/usr/sbin/slurmctld -f "$SLURM_CONF" ||
  fail "the test cluster's slurmctld did not start: $(tail -n 5 "$c2/log/slurmctld.log")"
started "$c2/slurmctld.pid"
for n in n1 n2; do
  /usr/sbin/slurmd -f "$SLURM_CONF" -N "$n" ||
    fail "slurmd -N $n did not start: $(tail -n 5 "$c2/log/slurmd-$n.log")"
  started "$c2/slurmd-$n.pid"
done
for _ in $(seq 100); do
  [ "$(sinfo -h -N -o '%T' 2>/dev/null | sort -u)" = idle ] && break
  sleep 0.3
done
[ "$(sinfo -h -N -o '%T' | sort -u)" = idle ] || fail "the two test nodes are not idle: $(sinfo -N)"
for pn in cpu:n1 gpu:n2; do
  timeout 120 srun --partition="${pn%:*}" --nodelist="${pn#*:}" --ntasks=1 --time=1 true ||
    fail "node ${pn#*:} of the test cluster ran no job step in 120 s; see $c2/log/"
done
say "two-node test cluster up: $(sinfo -h -N -o '%N %T %G' | paste -sd ' ')"
# Partitions as on a real cluster: `cpu` (n1) for component 0, `gpu` (n2)
# for component 1. With both nodes in one partition this slurmctld planned
# both components on n2 and left the job PENDING (Resources) for over 10
# minutes. Options before the ':' are component 0's (the batch script's
# output among them), after it component 1's; --overcommit for each: 3
# tasks on a node with 2 CPUs.
start=$SECONDS
rc=0
job3=$(cd "$work" && env "${common_env[@]}" PSKIT_TARGET=0.85 PSKIT_MAX_SECONDS=300 \
  PSKIT_STATE_DIR="$work/state3" \
  PSKIT_WORKER_ARGS="--dataset idx --data_path $data --layers 784,256,128,10 --algorithm easgd --tau 8 --epochs 50 --backend cpu" \
  sbatch --parsable --wait --time=10 --output="$work/job3.out" --partition=cpu --overcommit \
  : --partition=gpu --overcommit \
  "$repo/deploy/slurm/pskit-hetjob.sbatch") || rc=$?
out3=$work/job3.out
state=$(job_field "$job3" JobState)
say "hetjob ($job3): sbatch exit $rc, state $state, run time $(job_field "$job3" RunTime) ($((SECONDS - start)) s from submission, scheduling included)"
if [ "$rc" -ne 0 ] || [ "$state" != COMPLETED ]; then
  tail -n 40 "$out3" >&2 || true
  fail "the heterogeneous job should end COMPLETED with exit 0"
fi
nodes=$(scontrol show job -o "$job3" | tr ' ' '\n' | sed -n 's/^NodeList=//p' | paste -sd ' ')
[ "$nodes" = "n1 n2" ] || fail "the components ran on '$nodes', expected n1 (shards) and n2 (workers)"
verdict=$(grep -m 1 '^pskit: the evaluator ended the job:' "$out3") || fail "the hetjob's output has no verdict"
[[ "$verdict" == *"target reached"* ]] || fail "the hetjob's verdict is not 'target reached': $verdict"
one_checkpoint "$out3" || fail "the hetjob's output lacks psctl shutdown's one checkpoint on every shard"
say "hetjob: shards on n1, workers and evaluator on n2 (gres gpu:1), target reached, one shutdown checkpoint on both shards"
say "PASS"
