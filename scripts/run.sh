#!/usr/bin/env bash
# The main job, until the worker lands: a local cluster of 2 shards on
# 127.0.0.1 (free ports), ps-bench pushing and pulling a 64 MiB model from 2
# clients for 20 s, and the loopback TCP ceiling (iperf3) to compare with.
# Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
bin=build/bin
seconds=${PSKIT_BENCH_SECONDS:-20}

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

addrs=()
for i in 0 1; do
  "$bin/ps-server" --listen 127.0.0.1:0 --shard_index $i --num_shards 2 \
    >"$tmp/s$i.out" 2>"$tmp/s$i.err" &
  pids+=($!)
done
for i in 0 1; do
  for _ in $(seq 100); do
    grep -q 'listening on' "$tmp/s$i.out" 2>/dev/null && break
    sleep 0.1
  done
  addr=$(awk '/listening on/ {print $4}' "$tmp/s$i.out")
  [ -n "$addr" ] || { echo "shard $i did not start:"; cat "$tmp/s$i.err"; exit 1; }
  addrs+=("$addr")
done
shards=$(IFS=,; echo "${addrs[*]}")
echo "cluster: 2 shards at $shards"
"$bin/ps-bench" --shards "$shards" --op pushpull --model_mib 64 --clients 2 \
  --seconds "$seconds" | tee "$tmp/bench.txt"

# The loopback ceiling, measured now on this machine.
port=5201
for p in $(seq 45201 45300); do
  # A refused connection means the port is free.
  if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then port=$p; break; fi
done
iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
iperf=$(iperf3 -c 127.0.0.1 -p "$port" -t 10 -f g | awk '/receiver/ {print $(NF-2)}')
ps=$(awk '/throughput:/ {print $2}' "$tmp/bench.txt")
awk -v ps="$ps" -v ip="$iperf" 'BEGIN {
  gb = ip / 8;
  printf "loopback TCP (iperf3, one stream): %.3f GB/s; ps-bench/iperf3 = %.2f\n", gb, ps / gb }'
