# scripts/lib/cluster.sh: helpers for scripts that run a local cluster.
# Source it; it sets `tmp` (a scratch directory) and `pids`, and stops every
# process in `pids` and removes `tmp` on exit.
#
#   source scripts/lib/cluster.sh
#   start_shards 2 --data_dir ...   # sets `shards` (comma-separated addresses)
bin=${bin:-build/bin}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# start_shards N [ps-server flags...]: starts N shards on 127.0.0.1 (free
# ports), waits until each serves, and sets `shards`. "{i}" in a flag is
# replaced by the shard's index. Shard i logs to $tmp/s<i>.err.
start_shards() {
  local n=$1 i addr
  shift
  local addrs=()
  for ((i = 0; i < n; i++)); do
    "$bin/ps-server" --listen 127.0.0.1:0 --shard_index $i --num_shards "$n" \
      "${@//\{i\}/$i}" >"$tmp/s$i.out" 2>"$tmp/s$i.err" &
    pids+=($!)
  done
  for ((i = 0; i < n; i++)); do
    for _ in $(seq 200); do
      grep -q 'listening on' "$tmp/s$i.out" 2>/dev/null && break
      sleep 0.05
    done
    addr=$(awk '/listening on/ {print $4}' "$tmp/s$i.out")
    if [ -z "$addr" ]; then
      echo "shard $i did not start:" >&2
      cat "$tmp/s$i.err" >&2
      return 1
    fi
    addrs+=("$addr")
  done
  shards=$(IFS=,; echo "${addrs[*]}")
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local p
  for p in $(shuf -i 20000-60000 -n 50); do
    # A refused connection means nothing listens there.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port found" >&2
  return 1
}
