#!/usr/bin/env bash
# tests/bench/load_test.sh: the load test. 256 concurrent clients (ps-bench
# --clients: one thread and one Client, with its own channels, each) push
# and pull (PushPull) for 60 s against 2 fresh memory-only shards, then
# checks and reports:
#   - zero errors (ps-bench exits 0 and counts none);
#   - every update accounted for: the chunk updates the shards acked to the
#     clients (ps-bench, warm-up included) equal the growth of the shards'
#     updates_applied (psctl status) over the run;
#   - the shards' resident memory (VmRSS) before the load (model declared)
#     and after each round (--rounds, default 2: a second round that does
#     not raise it further tells an allocator's high-water mark from a leak);
#   - p50/p99 latency per PushPull (ps-bench).
#
#   tests/bench/load_test.sh                       # 256 clients, 60 s
#   tests/bench/load_test.sh --clients 32 --seconds 10 --rounds 1
#
# Runs its processes under `nice` (the hosts are shared). Exit 0 when the
# checks pass, 1 when one fails, 2 for bad arguments.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
bin=$here/build/bin
clients=256
seconds=60
model_mib=1
tensor_mib=0.25
rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) clients=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --model_mib) model_mib=$2; shift 2 ;;
    --tensor_mib) tensor_mib=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "load_test: unknown argument '$1' (--clients N --seconds S --rounds R --model_mib M --tensor_mib T --bin DIR)" >&2; exit 2 ;;
  esac
done
for b in ps-server ps-bench psctl; do
  [ -x "$bin/$b" ] || { echo "load_test: $bin/$b not found: build it (cmake --build build --target $b) or pass --bin" >&2; exit 2; }
done

dir=$(mktemp -d /tmp/pskit-load-test.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
say() { echo "load_test: $*"; }

# 256 clients hold 512+ connections to each shard: more than the default
# 1024 descriptors allow with gRPC's own.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for i in 0 1; do
  nice -n 10 "$bin/ps-server" --listen 127.0.0.1:0 --shard_index "$i" --num_shards 2 \
    --metrics_port -1 --log_level warn --address_file "$dir/addr-$i" >"$dir/shard$i.log" 2>&1 &
  pids+=("$!")
done
for _ in $(seq 1 120); do
  [ -s "$dir/addr-0" ] && [ -s "$dir/addr-1" ] && break
  sleep 0.5
done
[ -s "$dir/addr-0" ] && [ -s "$dir/addr-1" ] || { say "the shards did not start"; cat "$dir"/shard*.log; exit 1; }
shards="$(cat "$dir/addr-0"),$(cat "$dir/addr-1")"

field() { echo "$json" | grep -o "\"$1\":[0-9.]*" | cut -d: -f2; }
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
updates() {
  "$bin/psctl" --shards "$shards" --json status |
    grep -o '"updates_applied": *[0-9]*' | grep -o '[0-9]*$' | awk '{ s += $1 } END { print s + 0 }'
}

# Declare the model first (a 1-second, 1-client run), so "before" is a
# shard holding the model, not an empty one.
nice -n 10 "$bin/ps-bench" --shards "$shards" --op pull --clients 1 --seconds 1 --warmup_s 0 \
  --model_mib "$model_mib" --tensor_mib "$tensor_mib" >/dev/null
rss_before=("$(rss_mib "${pids[0]}")" "$(rss_mib "${pids[1]}")")
say "$clients clients, PushPull of a ${model_mib} MiB model (${tensor_mib} MiB tensors), $rounds rounds of ${seconds}s against $shards"
say "shard RSS before: ${rss_before[0]} MiB, ${rss_before[1]} MiB"
failed=0
for ((r = 1; r <= rounds; r++)); do
  before_updates=$(updates)
  rc=0
  nice -n 10 "$bin/ps-bench" --shards "$shards" --op pushpull --clients "$clients" --seconds "$seconds" \
    --model_mib "$model_mib" --tensor_mib "$tensor_mib" --timeout_s 120 --json >"$dir/bench.json" 2>"$dir/bench.err" || rc=$?
  after_updates=$(updates)
  cat "$dir/bench.err"
  json=$(cat "$dir/bench.json")
  acked=$(field acked_updates)
  errors=$(field errors)
  applied=$((after_updates - before_updates))
  if [ "$rc" = 0 ] && [ "${errors:-1}" = 0 ]; then say "round $r: PASS: zero errors"; else say "round $r: FAIL: ps-bench exit $rc, errors ${errors:-?}"; failed=1; fi
  if [ -n "$acked" ] && [ "$acked" = "$applied" ]; then
    say "round $r: PASS: every update accounted for: $acked chunk updates acked, $applied applied on the shards"
  else
    say "round $r: FAIL: ${acked:-?} chunk updates acked, $applied applied on the shards"
    failed=1
  fi
  say "round $r: ops $(field ops) in ${seconds}s ($(field ops_per_s) ops/s, $(field gb_per_s) GB/s push+pull); latency p50 $(field p50_ms) ms, p99 $(field p99_ms) ms, max $(field max_ms) ms"
  say "round $r: shard RSS after: $(rss_mib "${pids[0]}") MiB, $(rss_mib "${pids[1]}") MiB"
done
exit "$failed"
