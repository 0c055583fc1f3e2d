#!/usr/bin/env bash
# Push/pull throughput of local pskit clusters next to the loopback TCP
# ceiling, and how throughput and memory scale with the model, measured in
# interleaved rounds on this machine (README "Performance").
#
#   tests/bench/pushpull_vs_iperf.sh [ROUNDS] [SECONDS] [OUT_DIR]
#
# Each round runs, back to back:
#   1. iperf3, one stream, 5 s: the loopback ceiling of one TCP connection;
#   2. ps-bench --op pushpull for SECONDS on three configurations:
#      1 shard + 1 client at 16 MiB, 1 shard + 1 client at 64 MiB,
#      2 shards + 2 clients at 64 MiB (the shards of 1. and 2. stay up);
#   3. 2 shards + 1 client at 64 MiB, 256 MiB and 1 GiB, each on freshly
#      started shards, with the peak resident memory (VmHWM) of each shard and
#      of the ps-bench process (GNU time's maximum RSS).
# The last lines give, per configuration, the medians over the rounds, the
# ratio to iperf3's median, p50 and p99; the 1 GiB / 64 MiB throughput ratio;
# and memory against what the processes hold: a shard holds model/2 of
# values (SGD keeps no slots), the client its gradient and weight arrays
# (2 x model). With OUT_DIR every measurement is also written to
# OUT_DIR/pushpull.csv. Needs build/bin (scripts/build.sh), iperf3 and GNU
# time. Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
seconds=${2:-10}
out=${3:-}
source scripts/lib/cluster.sh
for tool in iperf3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install iperf3 time)" >&2; exit 2; }
done
[ -x "$bin/ps-bench" ] || { echo "no $bin/ps-bench: build first (scripts/build.sh)" >&2; exit 2; }

csv=$tmp/rows.csv
echo "round,config,shards,clients,model_mib,gb_per_s,p50_ms,p99_ms,client_rss_mib,shard_rss_mib" >"$csv"

# bench ROUND CONFIG NSHARDS CLIENTS MIB SHARDS [SHARD_PIDS...]: one ps-bench
# run; appends a CSV row (memory columns only when shard pids are given).
bench() {
  local r=$1 config=$2 ns=$3 nc=$4 mib=$5 addrs=$6
  shift 6
  local f=$tmp/bench.txt
  /usr/bin/time -f "maxrss %M" -o "$tmp/time.txt" \
    "$bin/ps-bench" --shards "$addrs" --op pushpull --model_mib "$mib" \
    --clients "$nc" --seconds "$seconds" >"$f"
  local gbps p50 p99 crss="" srss=""
  gbps=$(awk '/throughput:/ {print $2}' "$f")
  p50=$(awk '/latency per op:/ {print $5}' "$f")
  p99=$(awk '/latency per op:/ {print $8}' "$f")
  if [ $# -gt 0 ]; then
    crss=$(awk '/maxrss/ {printf "%.0f", $2 / 1024}' "$tmp/time.txt")
    local p
    for p in "$@"; do
      srss="$srss${srss:+ }$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$p/status")"
    done
  fi
  echo "$r,$config,$ns,$nc,$mib,$gbps,$p50,$p99,$crss,$srss" >>"$csv"
  printf "round %s  %-22s %6.3f GB/s  p50 %7.1f ms  p99 %7.1f ms%s\n" "$r" "$config" \
    "$gbps" "$p50" "$p99" "${crss:+  client RSS $crss MiB, shards RSS $srss MiB}"
}

# stop_last N: stops the last N processes started (shards of one cluster).
stop_last() {
  local n=$1 i
  for ((i = 0; i < n; i++)); do
    local p=${pids[-1]}
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset 'pids[-1]'
  done
}

start_shards 1
one=$shards
start_shards 2
two=$shards
echo "clusters: 1 shard at $one; 2 shards at $two; $rounds round(s) of $seconds s"

for r in $(seq "$rounds"); do
  port=$(free_port)
  iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  ipid=$!
  sleep 0.5  # let it listen (a connect probe would use up its one test)
  gbit=$(iperf3 -c 127.0.0.1 -p "$port" -t 5 -f g | awk '/receiver/ {print $(NF-2)}')
  wait "$ipid" 2>/dev/null || true
  gbps=$(awk -v g="$gbit" 'BEGIN {printf "%.3f", g / 8}')
  echo "$r,iperf3,,,,$gbps,,,," >>"$csv"
  echo "round $r  iperf3 one stream       $gbps GB/s"
  bench "$r" "1s1c-16MiB" 1 1 16 "$one"
  bench "$r" "1s1c-64MiB" 1 1 64 "$one"
  bench "$r" "2s2c-64MiB" 2 2 64 "$two"
  for mib in 64 256 1024; do
    start_shards 2
    bench "$r" "2s1c-${mib}MiB" 2 1 "$mib" "$shards" "${pids[-2]}" "${pids[-1]}"
    stop_last 2
  done
done

[ -n "$out" ] && { mkdir -p "$out"; cp "$csv" "$out/pushpull.csv"; }

echo
echo "medians over $rounds round(s):"
awk -F, '
  function median(key, col,   n, i, j, t, v) {
    n = 0
    for (i = 1; i <= rows; i++) if (cfg[i] == key && val[i, col] != "") v[++n] = val[i, col] + 0
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    if (n == 0) return ""
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  function maxof(key, col,   i, m) {
    m = 0
    for (i = 1; i <= rows; i++) if (cfg[i] == key && val[i, col] + 0 > m) m = val[i, col] + 0
    return m
  }
  NR > 1 {
    rows++; cfg[rows] = $2; mib[$2] = $5
    for (c = 6; c <= 10; c++) val[rows, c] = $c
  }
  END {
    ip = median("iperf3", 6)
    printf "  iperf3 one stream: %.3f GB/s\n", ip
    n = split("1s1c-16MiB 1s1c-64MiB 2s2c-64MiB", wire, " ")
    for (k = 1; k <= n; k++) {
      g = median(wire[k], 6)
      printf "  %-12s pushpull %.3f GB/s = %.2f x iperf3   p50 %.1f ms  p99 %.1f ms (p99/p50 %.2f)\n",
        wire[k], g, g / ip, median(wire[k], 7), median(wire[k], 8), median(wire[k], 8) / median(wire[k], 7)
    }
    n = split("2s1c-64MiB 2s1c-256MiB 2s1c-1024MiB", scale, " ")
    for (k = 1; k <= n; k++) {
      key = scale[k]; m = mib[key]
      g = median(key, 6)
      if (k == 1) g64 = g
      split("", s)
      worst = 0
      for (i = 1; i <= rows; i++) if (cfg[i] == key) {
        ns = split(val[i, 10], s, " ")
        for (j = 1; j <= ns; j++) if (s[j] + 0 > worst) worst = s[j] + 0
      }
      crss = maxof(key, 9)
      printf "  %-12s pushpull %.3f GB/s (%.2f of 64 MiB)  p50 %.1f ms  p99 %.1f ms\n",
        key, g, g / g64, median(key, 7), median(key, 8)
      printf "  %-12s peak RSS: shard %d MiB = %.2f x its %d MiB of values; client %d MiB = %.2f x its %d MiB of arrays\n",
        "", worst, worst / (m / 2), m / 2, crss, crss / (2 * m), 2 * m
    }
  }' "$csv"
