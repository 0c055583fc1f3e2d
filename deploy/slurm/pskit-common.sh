# shellcheck shell=bash
# The logic both SLURM batch scripts share (pskit.sbatch: one allocation;
# pskit-hetjob.sbatch: a heterogeneous job), sourced by them, never run by
# itself. It starts three job steps in the allocation and supervises them:
#
#   1. the shards: one `srun --kill-on-bad-exit=1` step of PSKIT_SHARDS
#      ps-server tasks; task i is shard i (SLURM_PROCID) and writes its
#      HOST:PORT atomically to $PSKIT_RENDEZVOUS/shard-i (--address_file);
#   2. once every shard file exists (at most PSKIT_RENDEZVOUS_TIMEOUT_S), the
#      workers: one step of PSKIT_WORKERS ps-worker tasks, ranks from
#      SLURM_PROCID / SLURM_NTASKS, --kill-on-bad-exit=1 as well;
#   3. the evaluator: one ps-worker --role evaluator task.
#
# The evaluator ends the job. Its verdict is its exit status: 0 = the target
# was reached (or none was set), 3 = the job ended without reaching it (older
# ps-worker builds exit 0 then too: its summary line says "not reached").
# Either way the workers are given PSKIT_STOP_GRACE_S to leave, then
# `psctl shutdown` takes one checkpoint id (shutdown-<unix ms>) on every
# shard, then the shard step gets SIGTERM (scancel --signal=TERM, nothing
# stronger): a shard with no update since writes no final checkpoint of its
# own, so that id is the newest in every PSKIT_STATE_DIR/shard-i (a resumed
# job loads one whole-cluster checkpoint), each exits 0, and the allocation
# ends. Near the time limit SLURM sends the batch shell SIGUSR1
# (`#SBATCH --signal=B:USR1@120` in the scripts): the same shutdown
# checkpoint is taken before the job fails, while the shards still run. The script's exit status is 0 when the evaluator
# reached PSKIT_TARGET (or no target was set), 3 when it ended the job
# without reaching it. The evaluator's step also runs with
# --kill-on-bad-exit=1, but it has one task: its exit 3 ends only its own
# step, and srun exits with its task's status, so 3 arrives here as the
# verdict, not as a failure.
# Any other failed step (a shard killed: --kill-on-bad-exit ends its step at
# once) ends the job with status 1 at once: surviving shards get SIGTERM (they
# still checkpoint), workers and the evaluator SIGKILL, and anything left
# SIGKILL after PSKIT_STOP_GRACE_S.
#
# The calling script sets, before `pskit_main`:
#   PSKIT_HOME           the repository (for the default PSKIT_BIN)
#   PSKIT_SHARD_SRUN     array of extra srun options for the shard step
#   PSKIT_WORKER_SRUN    ... for the workers' step
#   PSKIT_EVAL_SRUN      ... for the evaluator's step
#
# Variables a user sets (sbatch passes the submitting shell's environment):
#   PSKIT_BIN            directory of ps-server and ps-worker on the nodes;
#                        default $PSKIT_HOME/build/bin
#   PSKIT_SHARDS         shards (default 2)
#   PSKIT_WORKERS        training workers (default 2)
#   PSKIT_DATA           Fashion-MNIST IDX files, readable on every node
#                        (default /usr/share/datasets/fashion-mnist)
#   PSKIT_TARGET         test accuracy that ends the job (default 0.88;
#                        0 = none, then --max_seconds or --patience must)
#   PSKIT_MAX_SECONDS    the workers' and evaluator's time limit (default 600)
#   PSKIT_WORKER_ARGS    the model and algorithm, given to workers and the
#                        evaluator (default: idx data, 784,256,128,10, EASGD
#                        tau 8, 50 epochs)
#   PSKIT_SERVER_ARGS    extra ps-server flags (default --log_level warn)
#   PSKIT_GPUS_PER_NODE  0: CPU workers (default); N: the workers' step
#                        asks --gres=gpu:N (per node: the workers on a node
#                        share them) and ps-worker --backend cuda; the shard
#                        and evaluator steps get --gres=none. The allocation
#                        must hold the GPUs: sbatch --gres=gpu:N
#   PSKIT_RENDEZVOUS     shared directory of the shard address files
#                        (default $SLURM_SUBMIT_DIR/.pskit-rendezvous/JOBID;
#                        removed at the end)
#   PSKIT_STATE_DIR      shared directory of the shards' checkpoints, one
#                        shard-i directory each (default
#                        $SLURM_SUBMIT_DIR/pskit-state/JOBID: every job
#                        starts fresh; a requeued job keeps its id and
#                        resumes). To resume an earlier job, set it to that
#                        job's directory: PSKIT_STATE_DIR=pskit-state/1234
#                        with the same PSKIT_SHARDS
#   PSKIT_RENDEZVOUS_TIMEOUT_S  how long workers wait for the shards (120)
#   PSKIT_STOP_GRACE_S   seconds steps get after SIGTERM (60)
#   PSKIT_SRUN_ARGS      extra srun options for every step, split on spaces

pskit_say() { echo "pskit: $*"; }

# Fails the job: says why on stderr and exits 1 (the EXIT trap stops the
# steps).
pskit_die() {
  echo "pskit: $*" >&2
  exit 1
}

pskit_defaults() {
  [ -n "${SLURM_JOB_ID:-}" ] || pskit_die "not in a SLURM job: submit with 'sbatch deploy/slurm/pskit.sbatch'"
  : "${PSKIT_BIN:=$PSKIT_HOME/build/bin}"
  : "${PSKIT_SHARDS:=2}"
  : "${PSKIT_WORKERS:=2}"
  : "${PSKIT_DATA:=/usr/share/datasets/fashion-mnist}"
  : "${PSKIT_TARGET:=0.88}"
  : "${PSKIT_MAX_SECONDS:=600}"
  : "${PSKIT_WORKER_ARGS:=--dataset idx --data_path $PSKIT_DATA --layers 784,256,128,10 --algorithm easgd --tau 8 --epochs 50}"
  : "${PSKIT_SERVER_ARGS:=--log_level warn}"
  : "${PSKIT_GPUS_PER_NODE:=0}"
  : "${PSKIT_RENDEZVOUS:=$SLURM_SUBMIT_DIR/.pskit-rendezvous/$SLURM_JOB_ID}"
  : "${PSKIT_STATE_DIR:=$SLURM_SUBMIT_DIR/pskit-state/$SLURM_JOB_ID}"
  : "${PSKIT_RENDEZVOUS_TIMEOUT_S:=120}"
  : "${PSKIT_STOP_GRACE_S:=60}"
  : "${PSKIT_SRUN_ARGS:=}"
  # The shard tasks read these in their own shell (srun passes the
  # environment on).
  export PSKIT_BIN PSKIT_RENDEZVOUS PSKIT_STATE_DIR PSKIT_SERVER_ARGS

  local v
  for v in PSKIT_SHARDS PSKIT_WORKERS PSKIT_GPUS_PER_NODE PSKIT_RENDEZVOUS_TIMEOUT_S PSKIT_STOP_GRACE_S; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || pskit_die "$v must be a whole number, got '${!v}'"
  done
  if [ "$PSKIT_SHARDS" -lt 1 ] || [ "$PSKIT_WORKERS" -lt 1 ]; then
    pskit_die "PSKIT_SHARDS and PSKIT_WORKERS must be at least 1"
  fi
  local b
  for b in ps-server ps-worker psctl; do
    [ -x "$PSKIT_BIN/$b" ] || pskit_die "$PSKIT_BIN/$b not found: build pskit (scripts/build.sh) or set PSKIT_BIN to the directory holding it"
  done
  if [[ " $PSKIT_WORKER_ARGS " == *" --data_path "* ]] && [ ! -d "$PSKIT_DATA" ]; then
    pskit_die "PSKIT_DATA=$PSKIT_DATA is not a directory: install dataset-fashion-mnist or set PSKIT_DATA"
  fi
}

# The step ids of this job whose name is $1 (squeue prints JOBID.STEP, or
# JOBID+COMPONENT.STEP in a heterogeneous job), one per line.
pskit_steps_named() {
  squeue -h -s -j "$SLURM_JOB_ID" -o '%i %j' 2>/dev/null | awk -v n="$1" '$2 == n { print $1 }'
}

# Sends signal $3 (default TERM) to the step named $1 whose srun is pid $2:
# through scancel (only that signal: slurmd sends nothing stronger later),
# else to the srun, which forwards it to its tasks.
pskit_signal_step() {
  local id sent=0 sig=${3:-TERM}
  for id in $(pskit_steps_named "$1"); do
    scancel --quiet --signal="$sig" "$id" && sent=1
  done
  [ "$sent" = 1 ] || kill -"$sig" "$2" 2>/dev/null || true
}

# Waits up to $1 seconds for the srun pids that follow; returns 1 if any is
# still running then.
pskit_wait_pids() {
  local deadline=$((SECONDS + $1)) p alive
  shift
  while :; do
    alive=0
    for p in "$@"; do
      kill -0 "$p" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.5
  done
}

# EXIT trap: stops what still runs and removes the rendezvous directory.
# Shards get SIGTERM (a surviving shard writes its final checkpoint), workers
# and the evaluator SIGKILL: they hold no state, and one blocked on a dead
# shard would take 10 s to give up. Whatever still runs after the grace
# period is killed (SLURM would also end the steps with the job).
pskit_cleanup() {
  local rc=$? name sig pids=()
  trap - EXIT
  for name in "${!PSKIT_STEP_PID[@]}"; do
    if kill -0 "${PSKIT_STEP_PID[$name]}" 2>/dev/null; then
      sig=KILL
      [ "$name" = shards ] && sig=TERM
      pskit_say "stopping the $name step (SIG$sig)"
      pskit_signal_step "pskit-$name" "${PSKIT_STEP_PID[$name]}" "$sig"
      pids+=("${PSKIT_STEP_PID[$name]}")
    fi
  done
  if [ ${#pids[@]} -gt 0 ] && ! pskit_wait_pids "$PSKIT_STOP_GRACE_S" "${pids[@]}"; then
    pskit_say "steps still running after ${PSKIT_STOP_GRACE_S}s; killing them"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    scancel --quiet --signal=KILL "$SLURM_JOB_ID" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  rm -rf "$PSKIT_RENDEZVOUS"
  exit "$rc"
}

# One checkpoint id on every shard at the end (psctl shutdown: drain, wait
# for the workers' leases, checkpoint shutdown-<unix ms>), so that the
# shards' SIGTERM that follows adds none of its own. A failure is reported;
# the shards' own final checkpoints then keep every update.
pskit_shutdown_checkpoint() {
  [ -n "${PSKIT_SHARD_LIST:-}" ] || return 0
  pskit_say "one checkpoint on every shard: psctl shutdown"
  "$PSKIT_BIN/psctl" --shards "$PSKIT_SHARD_LIST" --timeout_s "$PSKIT_STOP_GRACE_S" \
    shutdown --wait_s "$PSKIT_STOP_GRACE_S" ||
    pskit_say "psctl shutdown failed (above); each shard writes a final checkpoint of its own instead"
}

pskit_main() {
  # `wait -n -p` (the supervision below) came with bash 5.1.
  if [ "${BASH_VERSINFO[0]}" -lt 5 ] ||
    { [ "${BASH_VERSINFO[0]}" -eq 5 ] && [ "${BASH_VERSINFO[1]}" -lt 1 ]; }; then
    pskit_die "bash >= 5.1 is needed on the batch node (this is $BASH_VERSION): run the script with a newer bash"
  fi
  # The evaluator's pipeline (srun | tee) must report srun's status.
  set -o pipefail
  pskit_defaults
  declare -gA PSKIT_STEP_PID=()
  trap pskit_cleanup EXIT
  # scancel of the job or its time limit: SLURM signals every step itself
  # (shards checkpoint on SIGTERM); the script still cleans up and fails.
  trap 'pskit_die "got SIGTERM (scancel or the time limit)"' TERM
  # SIGUSR1 from `#SBATCH --signal=B:USR1@120`: the time limit is near; the
  # shards still run, so the whole cluster gets one checkpoint first.
  trap 'pskit_shutdown_checkpoint; pskit_die "the time limit is near (SIGUSR1); ending the job after a shutdown checkpoint"' USR1
  trap 'pskit_die "interrupted"' INT
  # A requeued job keeps its id: old address files would point at dead
  # shards.
  mkdir -p "$PSKIT_RENDEZVOUS" "$PSKIT_STATE_DIR"
  rm -f "$PSKIT_RENDEZVOUS"/shard-*

  local -a srun_all gpu_none=() worker_gpu=() worker_backend=()
  # --overlap: the three steps run at once on the same CPUs (and memory and
  # GRES); without it SLURM 22.05 gives each step its CPUs exclusively and
  # the workers' step waits for the shards' step to end, forever.
  read -r -a srun_all <<<"--overlap $PSKIT_SRUN_ARGS"
  if [ "$PSKIT_GPUS_PER_NODE" -gt 0 ]; then
    # A step gets all the job's GRES unless told otherwise: keep the GPUs
    # for the workers.
    gpu_none=(--gres=none)
    worker_gpu=("--gres=gpu:$PSKIT_GPUS_PER_NODE")
    # Before PSKIT_WORKER_ARGS, which may override it (the last flag wins).
    worker_backend=(--backend cuda)
  fi

  pskit_say "job $SLURM_JOB_ID: $PSKIT_SHARDS shards, $PSKIT_WORKERS workers, evaluator target ${PSKIT_TARGET}; rendezvous $PSKIT_RENDEZVOUS, checkpoints $PSKIT_STATE_DIR"
  local i
  for ((i = 0; i < PSKIT_SHARDS; i++)); do mkdir -p "$PSKIT_STATE_DIR/shard-$i"; done
  # The task's shell turns SLURM_PROCID into the shard's index and files;
  # exec so the srun's signals reach ps-server itself.
  # shellcheck disable=SC2016  # expanded by the task's shell, not here
  srun --job-name=pskit-shards --ntasks="$PSKIT_SHARDS" --kill-on-bad-exit=1 --label \
    "${srun_all[@]}" "${gpu_none[@]}" "${PSKIT_SHARD_SRUN[@]}" \
    bash -c 'exec "$PSKIT_BIN/ps-server" --listen 0.0.0.0:0 \
      --shard_index "$SLURM_PROCID" --num_shards "$SLURM_NTASKS" \
      --address_file "$PSKIT_RENDEZVOUS/shard-$SLURM_PROCID" \
      --data_dir "$PSKIT_STATE_DIR/shard-$SLURM_PROCID" $PSKIT_SERVER_ARGS' &
  PSKIT_STEP_PID[shards]=$!

  # Rendezvous: every shard's file, or the shard step's end, or the timeout.
  local deadline=$((SECONDS + PSKIT_RENDEZVOUS_TIMEOUT_S)) found
  while :; do
    found=0
    for ((i = 0; i < PSKIT_SHARDS; i++)); do
      [ -s "$PSKIT_RENDEZVOUS/shard-$i" ] && found=$((found + 1))
    done
    [ "$found" -eq "$PSKIT_SHARDS" ] && break
    kill -0 "${PSKIT_STEP_PID[shards]}" 2>/dev/null ||
      pskit_die "the shard step ended before every shard wrote its address ($found of $PSKIT_SHARDS in $PSKIT_RENDEZVOUS); see its output above"
    [ "$SECONDS" -lt "$deadline" ] ||
      pskit_die "only $found of $PSKIT_SHARDS shards wrote their address to $PSKIT_RENDEZVOUS in ${PSKIT_RENDEZVOUS_TIMEOUT_S}s (PSKIT_RENDEZVOUS_TIMEOUT_S); is it on a file system every node shares?"
    sleep 0.5
  done
  local shards="" addr
  for ((i = 0; i < PSKIT_SHARDS; i++)); do
    addr=$(<"$PSKIT_RENDEZVOUS/shard-$i")
    shards+="${shards:+,}$addr"
  done
  pskit_say "shards at $shards"
  PSKIT_SHARD_LIST=$shards

  local -a common=() target=()
  read -r -a common <<<"$PSKIT_WORKER_ARGS"
  [ "$PSKIT_TARGET" = 0 ] || target=(--target_accuracy "$PSKIT_TARGET")
  srun --job-name=pskit-workers --ntasks="$PSKIT_WORKERS" --kill-on-bad-exit=1 --label \
    "${srun_all[@]}" "${worker_gpu[@]}" "${PSKIT_WORKER_SRUN[@]}" \
    "$PSKIT_BIN/ps-worker" --shards "$shards" "${worker_backend[@]}" "${common[@]}" \
    --max_seconds "$PSKIT_MAX_SECONDS" &
  PSKIT_STEP_PID[workers]=$!
  # The evaluator's output is also kept in the rendezvous directory: its
  # summary line is printed with the verdict. A pipeline, so that $! is tee:
  # when wait returns for it, tee has written the file to its end, and with
  # pipefail the pipeline's status is srun's, not tee's.
  srun --job-name=pskit-evaluator --ntasks=1 --kill-on-bad-exit=1 \
    "${srun_all[@]}" "${gpu_none[@]}" "${PSKIT_EVAL_SRUN[@]}" \
    "$PSKIT_BIN/ps-worker" --role evaluator --shards "$shards" "${common[@]}" \
    "${target[@]}" --eval_interval_s 0.5 --max_seconds "$PSKIT_MAX_SECONDS" \
    2>&1 | tee "$PSKIT_RENDEZVOUS/evaluator.out" &
  PSKIT_STEP_PID[evaluator]=$!

  # Supervise: the first step to end decides, except workers that finish
  # their epochs before the evaluator's verdict.
  local done_pid rc name eval_rc=0
  while :; do
    done_pid=""
    rc=0
    wait -n -p done_pid "${PSKIT_STEP_PID[@]}" || rc=$?
    [ -n "$done_pid" ] || pskit_die "lost track of the steps (wait -n returned $rc)"
    for name in "${!PSKIT_STEP_PID[@]}"; do
      [ "${PSKIT_STEP_PID[$name]}" = "$done_pid" ] && break
    done
    unset "PSKIT_STEP_PID[$name]"
    # The evaluator's 3: the job ended without reaching the target. A
    # verdict: the shards are stopped as after a 0.
    if [ "$name" = evaluator ] && [ "$rc" -eq 3 ] && [ "$PSKIT_TARGET" != 0 ]; then
      eval_rc=3
      break
    fi
    if [ "$rc" -ne 0 ]; then
      pskit_die "the $name step failed (srun exit status $rc); ending the job"
    fi
    case "$name" in
      workers) pskit_say "the workers finished; waiting for the evaluator" ;;
      evaluator) break ;;
      *) pskit_die "the $name step ended before the evaluator's verdict; ending the job" ;;
    esac
  done

  local verdict
  verdict=$(grep -m 1 '^evaluator summary:' "$PSKIT_RENDEZVOUS/evaluator.out" || true)
  pskit_say "the evaluator ended the job: ${verdict:-no summary line}"
  if [ -n "${PSKIT_STEP_PID[workers]:-}" ] &&
    ! pskit_wait_pids "$PSKIT_STOP_GRACE_S" "${PSKIT_STEP_PID[workers]}"; then
    pskit_say "the workers did not leave within ${PSKIT_STOP_GRACE_S}s; stopping them"
    pskit_signal_step pskit-workers "${PSKIT_STEP_PID[workers]}"
  fi
  pskit_shutdown_checkpoint
  pskit_say "stopping the shards (SIGTERM)"
  pskit_signal_step pskit-shards "${PSKIT_STEP_PID[shards]}"
  rc=0
  wait "${PSKIT_STEP_PID[shards]}" || rc=$?
  unset "PSKIT_STEP_PID[shards]"
  [ "$rc" -eq 0 ] || pskit_die "the shards did not stop cleanly (srun exit status $rc): their final checkpoint may be missing"
  if [ -n "${PSKIT_STEP_PID[workers]:-}" ]; then
    rc=0
    wait "${PSKIT_STEP_PID[workers]}" || rc=$?
    unset "PSKIT_STEP_PID[workers]"
    [ "$rc" -eq 0 ] || pskit_die "the workers' step failed (srun exit status $rc)"
  fi
  pskit_say "final checkpoints in $PSKIT_STATE_DIR"
  # 3 from the evaluator, or (a ps-worker from before exit status 3) 0
  # with a summary that does not say "target reached".
  if [ "$PSKIT_TARGET" != 0 ] && { [ "$eval_rc" = 3 ] || [[ "$verdict" != *"target reached"* ]]; }; then
    echo "pskit: the evaluator ended the job without reaching the target $PSKIT_TARGET" >&2
    exit 3
  fi
  exit 0
}
