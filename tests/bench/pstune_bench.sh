#!/usr/bin/env bash
# tests/bench/pstune_bench.sh: the pstune benchmark (issue 14). For every
# sampler and seed, one pstune search over the Fashion-MNIST MLP space
# (tools/pstune/examples/mlp_space.yaml: learning rate, two layer sizes, batch
# size, optimizer) with the same budget of trials, each on a fresh
# memory-only shard cluster; then pstune_bench_table.py (next to this script)
# writes the best validation accuracy against trials as a table and a plot,
# with each search's best configuration retrained and scored on the test set,
# against the default configuration trained for the same time.
#
#   tests/bench/pstune_bench.sh                                # the full benchmark
#   tests/bench/pstune_bench.sh --samplers gp,tpe --seeds 1 --trials 10
#   tests/bench/pstune_bench.sh --trials 40 -- --pruner median # more pstune flags
#
# Options (defaults in brackets):
#   --samplers LIST   pstune samplers: random tpe gp cmaes nsga2 [random,tpe,gp,nsga2]
#   --seeds LIST      seeds, one search each [1,2,3]
#   --trials N        trials per search (the budget) [20]
#   --max_seconds S   each trial's training time (pstune --max_seconds) [30]
#   --retrain_seconds S  the final retraining's time (pstune
#                     --retrain_seconds), also the default configuration's [90]
#   --parallel G      trials at once [2]
#   --workers W       training workers per trial (pstune --workers) and for
#                     the baseline [2]
#   --baseline_flags F  ps-worker flags of the baseline (the default
#                     configuration), besides --seed, --max_seconds and
#                     --eval_interval_s ['--data_path
#                     /usr/share/datasets/fashion-mnist --epochs 1000']
#   --no_baseline     skip the baseline (the table then draws --baseline 0.88)
#   --shards_count S  ps-server shards per cluster [1]
#   --space FILE      [tools/pstune/examples/mlp_space.yaml]
#   --out DIR         results [tests/bench/results/pstune]
#   --bin DIR         pskit binaries (ps-server) [build/bin]
#   --pstune CMD      the pstune command [build/bin/pstune if built, else
#                     python3 -m pstune with PYTHONPATH=tools/pstune]
#   --run_timeout_s S a search still running after S seconds is stopped and
#                     counted as failed (resumed by the next invocation) [7200]
#   --report_only     only rewrite the table and plot from DIR/runs
#   -- ARGS           passed to every pstune run as they are
#
# One search: S ps-server processes on 127.0.0.1:0 (memory only), then
#   pstune --space FILE --trials N --parallel G --shards A,B --sampler X
#          --seed K --study bench-X-sK --out DIR/runs/X_sK --max_seconds M
#          --retrain_seconds R [ARGS]
# with its output in DIR/runs/X_sK/pstune.log and its wall time in wall_s.
# pstune keeps the study in DIR/runs/X_sK/study.db, so an interrupted
# benchmark resumes where it stopped (a search that finished has a `done`
# file and is skipped). Each run directory keeps the settings it ran with
# (`settings`); resuming with other settings (trials, times, workers, pstune
# arguments) is refused: give another --out. The baseline, once per seed:
# ps-worker's default configuration (784-256-128-10, adam, lr 0.001, batch
# 64) trained like the final retraining (psrun, S memory-only shards, W
# workers, R seconds, all training data, the test set scored at the end) into
# DIR/runs/default_sK/ (psrun.log, test_accuracy). The table (bench.md, bench.csv) and the plot
# (bench.png) cover every search in DIR/runs. Everything runs under `nice`.
# Exit 0 when every search succeeded, 1 when one failed, 2 for bad arguments.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
bin=$here/build/bin
samplers=random,tpe,gp,nsga2
seeds=1,2,3
trials=20
max_seconds=30
retrain_seconds=90
parallel=2
workers=2
baseline_flags='--data_path /usr/share/datasets/fashion-mnist --epochs 1000'
baseline=1
shards_count=1
space=$here/tools/pstune/examples/mlp_space.yaml
out=$here/tests/bench/results/pstune
pstune_cmd=''
run_timeout_s=7200
report_only=0
extra=()
usage="pstune_bench: --samplers LIST --seeds LIST --trials N --max_seconds S --retrain_seconds R --parallel G --workers W --baseline_flags F --no_baseline --shards_count S --space FILE --out DIR --bin DIR --pstune CMD --run_timeout_s S --report_only [-- PSTUNE ARGS]"
while [ $# -gt 0 ]; do
  case "$1" in
    --samplers) samplers=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --trials) trials=$2; shift 2 ;;
    --max_seconds) max_seconds=$2; shift 2 ;;
    --retrain_seconds) retrain_seconds=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --baseline_flags) baseline_flags=$2; shift 2 ;;
    --no_baseline) baseline=0; shift ;;
    --shards_count) shards_count=$2; shift 2 ;;
    --space) space=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --pstune) pstune_cmd=$2; shift 2 ;;
    --run_timeout_s) run_timeout_s=$2; shift 2 ;;
    --report_only) report_only=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$usage" >&2; echo "pstune_bench: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
table=$(dirname "$0")/pstune_bench_table.py
py=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1

IFS=, read -r -a slist <<< "$samplers"
IFS=, read -r -a seedlist <<< "$seeds"
for s in "${slist[@]}"; do
  case "$s" in
    random | tpe | gp | cmaes | nsga2) ;;
    *) echo "pstune_bench: unknown sampler '$s' (random tpe gp cmaes nsga2)" >&2; exit 2 ;;
  esac
done
for k in "${seedlist[@]}"; do
  [[ "$k" =~ ^[0-9]+$ ]] || { echo "pstune_bench: --seeds wants integers, got '$k'" >&2; exit 2; }
done
for v in trials parallel workers shards_count run_timeout_s; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "pstune_bench: --$v wants a positive integer, got '${!v}'" >&2; exit 2; }
done
for v in max_seconds retrain_seconds; do
  [[ "${!v}" =~ ^[0-9]+(\.[0-9]+)?$ && ! "${!v}" =~ ^0+(\.0+)?$ ]] ||
    { echo "pstune_bench: --$v wants seconds > 0, got '${!v}'" >&2; exit 2; }
done
# What a run directory's results depend on; a resumed run must match.
settings="trials=$trials max_seconds=$max_seconds retrain_seconds=$retrain_seconds parallel=$parallel workers=$workers shards=$shards_count space=$space pstune_args=${extra[*]+${extra[*]}}"
baseline_settings="retrain_seconds=$retrain_seconds workers=$workers shards=$shards_count flags=$baseline_flags"

# Refuses a run directory made with other settings (dir, expected); records
# them in a new one.
same_settings() {
  local dir=$1 want=$2
  mkdir -p "$dir"
  if [ -f "$dir/settings" ]; then
    if [ "$(cat "$dir/settings")" != "$want" ]; then
      echo "pstune_bench: $dir was run with other settings:" >&2
      echo "  then: $(cat "$dir/settings")" >&2
      echo "  now:  $want" >&2
      echo "  give another --out (or remove $dir to run it again)" >&2
      return 1
    fi
  else
    echo "$want" > "$dir/settings"
  fi
}

if [ "$report_only" = 0 ]; then
  [ -x "$bin/ps-server" ] || { echo "pstune_bench: $bin/ps-server not found: build it (cmake --build build --target ps-server ps-worker) or give --bin" >&2; exit 2; }
  [ -f "$space" ] || { echo "pstune_bench: no space file at $space: give --space FILE" >&2; exit 2; }
  if [ -z "$pstune_cmd" ]; then
    if [ -x "$bin/pstune" ]; then
      pstune_cmd=$bin/pstune
    elif [ -f "$here/tools/pstune/pstune/__main__.py" ]; then
      export PYTHONPATH="$here/tools/pstune${PYTHONPATH:+:$PYTHONPATH}"
      pstune_cmd="$py -m pstune"
    else
      echo "pstune_bench: pstune not found ($bin/pstune, tools/pstune/pstune/__main__.py): build it or give --pstune CMD" >&2
      exit 2
    fi
  fi
fi
mkdir -p "$out/runs"

tmp=$(mktemp -d /tmp/pstune-bench.XXXXXX)
pids=()
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' INT TERM  # so that the EXIT trap stops the processes

# Starts shards_count memory-only shards; sets addrs (A,B,...).
start_cluster() {
  local i
  pids=()
  for ((i = 0; i < shards_count; i++)); do
    : > "$tmp/shard$i.log"
    nice "$bin/ps-server" --listen 127.0.0.1:0 --shard_index "$i" --num_shards "$shards_count" \
      --log_level warn > "$tmp/shard$i.log" 2>&1 &
    pids+=($!)
  done
  addrs=''
  for ((i = 0; i < shards_count; i++)); do
    local a=''
    for _ in $(seq 300); do
      a=$(sed -n 's/^ps-server listening on //p' "$tmp/shard$i.log")
      [ -n "$a" ] && break
      kill -0 "${pids[$i]}" 2> /dev/null || break
      sleep 0.1
    done
    if [ -z "$a" ]; then
      echo "pstune_bench: shard $i did not start:" >&2
      cat "$tmp/shard$i.log" >&2
      return 1
    fi
    addrs=${addrs:+$addrs,}$a
  done
}

stop_cluster() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
  pids=()
}

# One search: sampler, seed -> $out/runs/<sampler>_s<seed>/. Returns 1 on failure.
run_one() {
  local sampler=$1 seed=$2 dir=$3 rc=0 t0 t1
  same_settings "$dir" "$settings" || return 1
  start_cluster || return 1
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086  # pstune_cmd may be "python3 -m pstune"
  nice timeout "$run_timeout_s" $pstune_cmd --space "$space" --trials "$trials" \
    --parallel "$parallel" --workers "$workers" --shards "$addrs" --sampler "$sampler" --seed "$seed" \
    --study "bench-$sampler-s$seed" --out "$dir" --max_seconds "$max_seconds" \
    --retrain_seconds "$retrain_seconds" ${extra[@]+"${extra[@]}"} \
    >> "$dir/pstune.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  stop_cluster
  # The wall time adds up over resumed attempts.
  awk -v a="$t0" -v b="$t1" -v f="$dir/wall_s" 'BEGIN {
    prev = 0; if ((getline line < f) > 0) prev = line; print prev + b - a > f }'
  if [ "$rc" != 0 ]; then
    echo "pstune_bench: $(basename "$dir"): pstune exited $rc; the last lines of $dir/pstune.log:" >&2
    tail -5 "$dir/pstune.log" >&2
    return 1
  fi
  [ -f "$dir/trials.csv" ] || { echo "pstune_bench: $(basename "$dir"): pstune wrote no trials.csv" >&2; return 1; }
  touch "$dir/done"
}

# The default configuration, trained like the final retraining -> $dir/test_accuracy.
run_default() {
  local seed=$1 dir=$2 rc=0 acc flags
  same_settings "$dir" "$baseline_settings" || return 1
  read -r -a flags <<< "$baseline_flags"
  # Memory-only shards, as the searches' (no checkpoints).
  nice timeout "$run_timeout_s" "$bin/psrun" --servers "$shards_count" --workers "$workers" \
    --evaluator --metrics_port_base 0 --status_interval_s 0 \
    --server_args '--log_level warn --checkpoint_interval_s 0' -- \
    ${flags[@]+"${flags[@]}"} --seed "$seed" \
    --max_seconds "$retrain_seconds" --eval_interval_s "$retrain_seconds" \
    > "$dir/psrun.log" 2>&1 || rc=$?
  acc=$(sed -n 's/^ *accuracy: final \([0-9.]*\),.*/\1/p' "$dir/psrun.log" | tail -1)
  if [ "$rc" != 0 ] || [ -z "$acc" ]; then
    echo "pstune_bench: $(basename "$dir"): psrun exited $rc without a final accuracy; the last lines of $dir/psrun.log:" >&2
    tail -5 "$dir/psrun.log" >&2
    return 1
  fi
  echo "$acc" > "$dir/test_accuracy"
  echo "  default configuration, seed $seed: test accuracy $acc after $retrain_seconds s"
}

failed=0
if [ "$report_only" = 0 ]; then
  if [ "$baseline" = 1 ] && [ ! -x "$bin/psrun" ]; then
    echo "pstune_bench: $bin/psrun not found: build it, give --bin or --no_baseline" >&2
    exit 2
  fi
  total=$(( ${#slist[@]} * ${#seedlist[@]} ))
  n=0
  for sampler in "${slist[@]}"; do
    for seed in "${seedlist[@]}"; do
      n=$((n + 1))
      name=${sampler}_s$seed
      dir=$out/runs/$name
      if [ -f "$dir/done" ]; then
        if same_settings "$dir" "$settings"; then
          echo "[$n/$total] $name: done before, skipped"
        else
          failed=1
        fi
        continue
      fi
      echo "[$n/$total] $name: $trials trials, $parallel at once ..."
      if run_one "$sampler" "$seed" "$dir"; then
        # The best so far, from the run's own table.
        sed -n 's/^Best: /  best: /p' "$dir/trials.md" 2> /dev/null || true
      else
        failed=1
        echo "[$n/$total] $name: FAILED"
      fi
    done
  done
  for seed in "${seedlist[@]}"; do
    [ "$baseline" = 1 ] || break
    dir=$out/runs/default_s$seed
    if [ -f "$dir/test_accuracy" ]; then
      if same_settings "$dir" "$baseline_settings"; then
        echo "default configuration, seed $seed: done before, skipped"
      else
        failed=1
      fi
    elif ! run_default "$seed" "$dir"; then
      failed=1
      echo "default configuration, seed $seed: FAILED"
    fi
  done
fi
"$py" "$table" --report "$out" || failed=1
exit "$failed"
