#!/usr/bin/env bash
# tests/bench/staleness_study.sh: what each staleness rule buys. Trains the
# Fashion-MNIST MLP (784,256,128,10) with W worker processes against one
# fresh memory-only shard for every rule, seed and W, then scores the final
# model and writes a CSV, a markdown table and a PNG plot (accuracy against
# workers per rule) with staleness_study_report.py next to this script.
#
#   tests/bench/staleness_study.sh                          # the full study
#   tests/bench/staleness_study.sh --workers 1,16 --rules none,gem --seeds 1
#
# Options (defaults in brackets):
#   --workers LIST    worker processes per run [1,2,4,8,16]
#   --rules LIST      none inverse dcasgd-c dcasgd-a gem (compensations),
#                     ssp:S sync sync:B (consistencies), easgd (reference)
#                     [none,inverse,dcasgd-c,dcasgd-a,gem,ssp:2,sync,sync:1,easgd]
#   --seeds N         seeds 1..N (shuffling order; the initial model is the
#                     same for every seed) [3]
#   --epochs E        passes over each rank's slice: the total is E x 60000
#                     samples at every W [2]
#   --batch_size B [32]  --lr LR [0.005]  --momentum M [0.9]
#   --out DIR         results [tests/bench/results/staleness]
#   --data_path DIR   [/usr/share/datasets/fashion-mnist]
#   --bin DIR         pskit binaries [build/bin]
#   --run_timeout_s S a worker still running after S seconds fails its run
#                     (a held call that never returns must not stop the
#                     study) [1800]
#   --report_only     only rewrite the CSV, table and plot from DIR/runs
#
# Every run downpours gradients to a shard that applies momentum SGD at the
# same rate for every W (the 1-worker rate); easgd runs local momentum SGD
# with the same rate and momentum and the default tau and alpha. One run:
#   1. ps-server on 127.0.0.1:0 with metrics; W ps-worker --rank j --world W;
#      wall time = launch of the first worker to exit of the last (data
#      loading included), samples = the sum of the workers' summaries;
#   2. once every worker has exited, one `ps-worker --role evaluator
#      --max_seconds 0.001` pulls the final model and scores it on the whole
#      test set (10000 images) exactly once: the final test accuracy;
#   3. the shard's pskit_server_staleness_updates histogram (/metrics) gives
#      the median staleness (interpolated within its bucket) and the mean.
# sync:B with B >= W is skipped (no round could ever be applied).
# Resumable: a run whose DIR/runs/<rule>_w<W>_s<seed>.json exists is
# skipped; the CSV, table and plot cover every run in DIR/runs, so give a
# subset its own --out. One progress line per run. Everything runs under
# `nice`.
# Exit 0 when every run succeeded, 1 when one failed, 2 for bad arguments.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
bin=$here/build/bin
workers=1,2,4,8,16
rules=none,inverse,dcasgd-c,dcasgd-a,gem,ssp:2,sync,sync:1,easgd
seeds=3
epochs=2
batch_size=32
lr=0.005
momentum=0.9
out=$here/tests/bench/results/staleness
data_path=/usr/share/datasets/fashion-mnist
report_only=0
run_timeout_s=1800
usage="staleness_study: --workers LIST --rules LIST --seeds N --epochs E --batch_size B --lr LR --momentum M --out DIR --data_path DIR --bin DIR --run_timeout_s S --report_only"
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --rules) rules=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --batch_size) batch_size=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --momentum) momentum=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --data_path) data_path=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --report_only) report_only=1; shift ;;
    --run_timeout_s) run_timeout_s=$2; shift 2 ;;
    -h | --help) sed -n '2,45p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "$usage" >&2; echo "staleness_study: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
report=$(dirname "$0")/staleness_study_report.py
py=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1
mkdir -p "$out/runs"

# The flags that choose a rule.
rule_flags() {
  case "$1" in
    none | inverse | dcasgd-c | dcasgd-a | gem) echo "--compensation $1" ;;
    ssp:[0-9]* | sync | sync:[0-9]*) echo "--consistency $1" ;;
    easgd) echo "--algorithm easgd --local_lr $lr --local_momentum $momentum" ;;
    *) return 1 ;;
  esac
}
IFS=, read -r -a wlist <<< "$workers"
IFS=, read -r -a rlist <<< "$rules"
for r in "${rlist[@]}"; do
  rule_flags "$r" > /dev/null || { echo "staleness_study: unknown rule '$r' (none inverse dcasgd-c dcasgd-a gem ssp:S sync sync:B easgd)" >&2; exit 2; }
done
for w in "${wlist[@]}"; do
  [[ "$w" =~ ^[1-9][0-9]*$ ]] || { echo "staleness_study: --workers wants positive integers, got '$w'" >&2; exit 2; }
done
[[ "$seeds" =~ ^[1-9][0-9]*$ ]] || { echo "staleness_study: --seeds wants a count >= 1, got '$seeds'" >&2; exit 2; }
if [ "$report_only" = 0 ]; then
  for b in ps-server ps-worker; do
    [ -x "$bin/$b" ] || { echo "staleness_study: $bin/$b not found: build it (cmake --build build --target ps-server ps-worker) or give --bin" >&2; exit 2; }
  done
  [ -d "$data_path" ] || { echo "staleness_study: no data at $data_path (Debian: apt-get install fashion-mnist, or give --data_path)" >&2; exit 2; }
fi

tmp=$(mktemp -d /tmp/staleness-study.XXXXXX)
pids=()
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' INT TERM  # so that the EXIT trap stops the processes

# Starts the shard; sets addr and metrics_url.
start_shard() {
  : > "$tmp/shard.log"
  nice "$bin/ps-server" --listen 127.0.0.1:0 --metrics_port 0 --metrics_host 127.0.0.1 \
    --log_level warn > "$tmp/shard.log" 2>&1 &
  shard=$!
  pids=("$shard")
  addr='' metrics_url=''
  for _ in $(seq 300); do
    addr=$(sed -n 's/^ps-server listening on //p' "$tmp/shard.log")
    metrics_url=$(sed -n 's/^ps-server metrics on //p' "$tmp/shard.log")
    [ -n "$addr" ] && [ -n "$metrics_url" ] && return 0
    kill -0 "$shard" 2> /dev/null || break
    sleep 0.1
  done
  echo "staleness_study: the shard did not start:" >&2
  cat "$tmp/shard.log" >&2
  return 1
}

stop_shard() {
  kill "$shard" 2> /dev/null || true
  wait "$shard" 2> /dev/null || true
  pids=()
}

# One run: rule, W, seed -> $out/runs/<name>.json. Returns 1 on failure.
run_one() {
  local rule=$1 w=$2 seed=$3 name=$4
  local -a common
  # shellcheck disable=SC2207  # rule_flags' words are meant to split
  common=(--data_path "$data_path" --layers "784,256,128,10" --optimizer momentum
          --momentum "$momentum" --lr "$lr" --batch_size "$batch_size"
          --epochs "$epochs" --seed "$seed" --threads 1 --log_interval_s 3600
          $(rule_flags "$rule"))
  start_shard || return 1
  local t0 t1 j fail=0
  t0=$(date +%s.%N)
  local -a wp=()
  for ((j = 0; j < w; j++)); do
    nice timeout "$run_timeout_s" "$bin/ps-worker" --shards "$addr" --rank "$j" --world "$w" "${common[@]}" \
      > "$tmp/worker$j.log" 2>&1 &
    wp+=($!)
    pids+=($!)
  done
  for ((j = 0; j < w; j++)); do
    wait "${wp[$j]}" && continue
    # A non-finite gradient (the shard refuses it, the worker exits 1) is
    # the run diverging: a result, scored like any other (the shard keeps
    # its last finite model). Anything else is a failure.
    grep -q 'is nan\|is inf\|NaN and Inf' "$tmp/worker$j.log" && continue
    fail=1
    echo "staleness_study: $name: worker $j failed:" >&2
    tail -5 "$tmp/worker$j.log" >&2
  done
  t1=$(date +%s.%N)
  if [ "$fail" = 0 ]; then
    nice timeout 300 "$bin/ps-worker" --role evaluator --shards "$addr" --max_seconds 0.001 \
      --eval_interval_s 1 "${common[@]}" > "$tmp/eval.log" 2>&1 ||
      { fail=1; echo "staleness_study: $name: the evaluator failed:" >&2; tail -5 "$tmp/eval.log" >&2; }
  fi
  if [ "$fail" = 0 ]; then
    curl -sf "$metrics_url" > "$tmp/metrics.txt" ||
      { fail=1; echo "staleness_study: $name: cannot read $metrics_url" >&2; }
  fi
  stop_shard
  [ "$fail" = 0 ] || return 1
  cat "$tmp"/worker*.log > "$tmp/workers.log"
  "$py" "$report" --parse --rule "$rule" --workers "$w" --seed "$seed" \
    --epochs "$epochs" --batch_size "$batch_size" --lr "$lr" --momentum "$momentum" \
    --wall_s "$(awk "BEGIN { print $t1 - $t0 }")" --workers_log "$tmp/workers.log" \
    --eval_log "$tmp/eval.log" --metrics "$tmp/metrics.txt" \
    > "$out/runs/$name.json.tmp" || return 1
  mv "$out/runs/$name.json.tmp" "$out/runs/$name.json"
  rm -f "$tmp"/worker*.log
}

failed=0
if [ "$report_only" = 0 ]; then
  total=$(( ${#rlist[@]} * ${#wlist[@]} * seeds ))
  n=0
  for rule in "${rlist[@]}"; do
    for w in "${wlist[@]}"; do
      for ((seed = 1; seed <= seeds; seed++)); do
        n=$((n + 1))
        name="$(echo "$rule" | tr -d :)_w${w}_s${seed}"
        if [[ "$rule" =~ ^sync:([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge "$w" ]; then
          echo "[$n/$total] $name: skipped, $rule needs more than ${BASH_REMATCH[1]} workers"
          continue
        fi
        if [ -f "$out/runs/$name.json" ]; then
          echo "[$n/$total] $name: done before, skipped"
          continue
        fi
        if run_one "$rule" "$w" "$seed" "$name"; then
          "$py" "$report" --line "$out/runs/$name.json" | sed "s|^|[$n/$total] |"
        else
          failed=1
          echo "[$n/$total] $name: FAILED"
        fi
      done
    done
  done
fi
"$py" "$report" --report "$out"
exit "$failed"
