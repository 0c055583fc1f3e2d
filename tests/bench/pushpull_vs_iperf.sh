#!/usr/bin/env bash
# Push/pull throughput of a local 2-shard cluster next to the loopback TCP
# ceiling, measured back to back on this machine.
#
#   tests/bench/pushpull_vs_iperf.sh [ROUNDS] [SECONDS]
#
# Each round runs iperf3 (one stream, 5 s) and then
# ps-bench --op pushpull --model_mib 64 --clients 2 --seconds SECONDS against
# 2 ps-server processes on 127.0.0.1; the last lines give the medians and
# their ratio. Needs build/bin (scripts/build.sh) and iperf3. Every process
# it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-1}
seconds=${2:-20}
source scripts/lib/cluster.sh
start_shards 2
echo "cluster: 2 ps-server shards at $shards"

for r in $(seq "$rounds"); do
  port=$(free_port)
  iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  ipid=$!
  sleep 0.5  # let it listen (a connect probe would use up its one test)
  gbit=$(iperf3 -c 127.0.0.1 -p "$port" -t 5 -f g | awk '/receiver/ {print $(NF-2)}')
  wait "$ipid" 2>/dev/null || true
  echo "$gbit" | awk '{printf "round %s: iperf3 %.3f GB/s\n", r, $1 / 8}' r="$r" \
    | tee -a "$tmp/iperf.txt"
  "$bin/ps-bench" --shards "$shards" --op pushpull --model_mib 64 --clients 2 \
    --seconds "$seconds" | tee "$tmp/bench$r.txt"
  awk '/throughput:/ {print $2}' "$tmp/bench$r.txt" >>"$tmp/ps.txt"
done

awk '{print $4}' "$tmp/iperf.txt" | sort -g >"$tmp/ip.sorted"
sort -g "$tmp/ps.txt" >"$tmp/ps.sorted"
median() { awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}' "$1"; }
ip=$(median "$tmp/ip.sorted")
ps=$(median "$tmp/ps.sorted")
awk -v ps="$ps" -v ip="$ip" -v n="$rounds" 'BEGIN {
  printf "median of %d round(s): ps-bench pushpull %.3f GB/s, loopback TCP (iperf3) %.3f GB/s, ratio %.2f\n", n, ps, ip, ps / ip }'
