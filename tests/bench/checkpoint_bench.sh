#!/usr/bin/env bash
# Checkpoints of a 1 GiB model over 2 shards: what a checkpoint costs the
# push/pull path, how long it takes, and how long a restarted shard needs to
# load it.
#
#   tests/bench/checkpoint_bench.sh [SECONDS]
#
# 1. ps-bench --op pushpull on a 1024 MiB model, 64 MiB per op, 1 client,
#    SECONDS without checkpoints, then SECONDS with checkpoints back to back.
# 2. SIGTERM both shards (each writes a final checkpoint), start them again
#    and time each until it serves (its log says how long the load took).
# Needs build/bin (scripts/build.sh). Every process it starts is stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-20}
source scripts/lib/cluster.sh

start_durable() {  # $1: run label; times each shard until it serves
  addrs=()
  for i in 0 1; do
    local out="$tmp/$1.s$i.out" err="$tmp/$1.s$i.err" t0
    t0=$(date +%s.%N)
    "$bin/ps-server" --listen 127.0.0.1:0 --shard_index $i --num_shards 2 \
      --data_dir "$tmp/data$i" --checkpoint_interval_s 0 --keep_checkpoints 2 \
      >"$out" 2>"$err" &
    pids+=($!)
    while ! grep -q 'listening on' "$out" 2>/dev/null; do
      kill -0 "${pids[-1]}" 2>/dev/null || { cat "$err"; exit 1; }
      sleep 0.05
    done
    awk -v t0="$t0" -v t1="$(date +%s.%N)" -v i="$i" \
      'BEGIN {printf "shard %d serving %.2f s after start\n", i, t1 - t0}'
    grep -o 'loaded checkpoint.*' "$err" || true
    addrs+=("$(awk '/listening on/ {print $4}' "$out")")
  done
  shards=$(IFS=,; echo "${addrs[*]}")
}

start_durable first
bench=("$bin/ps-bench" --shards "$shards" --op pushpull --model_mib 1024 \
       --op_mib 64 --clients 1 --seconds "$seconds")
echo "== without checkpoints"
"${bench[@]}"
echo "== with checkpoints back to back"
"${bench[@]}" --checkpoint_every_s 0.001
grep -h 'checkpoint .* written' "$tmp"/first.s*.err | tail -2

echo "== restart: SIGTERM (final checkpoint), then load"
for p in "${pids[@]}"; do kill -TERM "$p"; done
wait
pids=()
grep -h "checkpoint 'final" "$tmp"/first.s*.err
start_durable second
