#!/usr/bin/env bash
# tests/bench/pstune_bench.sh: the pstune benchmark (issue 14). For every
# sampler and seed, one pstune search over the Fashion-MNIST MLP space
# (tools/pstune/examples/mlp_space.yaml: learning rate, two layer sizes, batch
# size, optimizer) with the same budget of trials, each on a fresh
# memory-only shard cluster; then pstune_bench_table.py (next to this script)
# writes the best validation accuracy against trials as a table and a plot,
# with each search's best configuration retrained and scored on the test set.
#
#   tests/bench/pstune_bench.sh                                # the full benchmark
#   tests/bench/pstune_bench.sh --samplers gp,tpe --seeds 1 --trials 10
#   tests/bench/pstune_bench.sh --trials 40 -- --pruner median # more pstune flags
#
# Options (defaults in brackets):
#   --samplers LIST   pstune samplers: random tpe gp cmaes nsga2 [random,tpe,gp,nsga2]
#   --seeds LIST      seeds, one search each [1,2,3]
#   --trials N        trials per search (the budget) [30]
#   --parallel G      trials at once [2]
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
#          --seed K --study bench-X-sK --out DIR/runs/X_sK [ARGS]
# with its output in DIR/runs/X_sK/pstune.log and its wall time in wall_s.
# pstune keeps the study in DIR/runs/X_sK/study.db, so an interrupted
# benchmark resumes where it stopped (a search that finished has a `done`
# file and is skipped). The table (bench.md, bench.csv) and the plot
# (bench.png) cover every search in DIR/runs. Everything runs under `nice`.
# Exit 0 when every search succeeded, 1 when one failed, 2 for bad arguments.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
bin=$here/build/bin
samplers=random,tpe,gp,nsga2
seeds=1,2,3
trials=30
parallel=2
shards_count=1
space=$here/tools/pstune/examples/mlp_space.yaml
out=$here/tests/bench/results/pstune
pstune_cmd=''
run_timeout_s=7200
report_only=0
extra=()
usage="pstune_bench: --samplers LIST --seeds LIST --trials N --parallel G --shards_count S --space FILE --out DIR --bin DIR --pstune CMD --run_timeout_s S --report_only [-- PSTUNE ARGS]"
while [ $# -gt 0 ]; do
  case "$1" in
    --samplers) samplers=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --trials) trials=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
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
for v in trials parallel shards_count run_timeout_s; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "pstune_bench: --$v wants a positive integer, got '${!v}'" >&2; exit 2; }
done

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
  mkdir -p "$dir"
  start_cluster || return 1
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086  # pstune_cmd may be "python3 -m pstune"
  nice timeout "$run_timeout_s" $pstune_cmd --space "$space" --trials "$trials" \
    --parallel "$parallel" --shards "$addrs" --sampler "$sampler" --seed "$seed" \
    --study "bench-$sampler-s$seed" --out "$dir" ${extra[@]+"${extra[@]}"} \
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

failed=0
if [ "$report_only" = 0 ]; then
  total=$(( ${#slist[@]} * ${#seedlist[@]} ))
  n=0
  for sampler in "${slist[@]}"; do
    for seed in "${seedlist[@]}"; do
      n=$((n + 1))
      name=${sampler}_s$seed
      dir=$out/runs/$name
      if [ -f "$dir/done" ]; then
        echo "[$n/$total] $name: done before, skipped"
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
fi
"$py" "$table" --report "$out" || failed=1
exit "$failed"
