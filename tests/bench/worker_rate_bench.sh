#!/bin/bash
# tests/bench/worker_rate_bench.sh: a downpour worker's training rate against
# `ps-worker --algorithm local`'s, and where the machine's CPU goes, in
# interleaved rounds: local alone, then 1 shard + 2 downpour workers (psrun,
# no evaluator) with each of the given ps-worker flag sets, every run for the
# same time. Prints one line per run (samples/s and CPU seconds of each
# worker, the share of all cores busy) and the medians, as a ratio to local's
# samples/s.
#
#   tests/bench/worker_rate_bench.sh ROUNDS SECONDS [VARIANT ...]
#   e.g. tests/bench/worker_rate_bench.sh 3 20 '--n_push 8 --n_fetch 8 --local_update'
#
# A VARIANT is one ps-worker flag string (quote several). The default is
# '--n_push 8 --n_fetch 8 --local_update' with and without --overlap. CPU
# seconds come from the workers' own summaries (the process's CPU time while
# it trained); "busy" from /proc/stat over the run, every process included
# (time the hypervisor stole counts as not busy).
# Needs build/bin/{psrun,ps-server,ps-worker} and
# /usr/share/datasets/fashion-mnist. Run it on a quiet machine.
set -u
usage() { echo "usage: $0 ROUNDS SECONDS [VARIANT ...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
rounds=$1 secs=$2
shift 2
[[ $rounds =~ ^[1-9][0-9]*$ && $secs =~ ^[1-9][0-9]*$ ]] || usage
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=('--n_push 8 --n_fetch 8 --local_update --overlap=true'
                                       '--n_push 8 --n_fetch 8 --local_update --overlap=false')
data=/usr/share/datasets/fashion-mnist
bin=build/bin
for b in psrun ps-server ps-worker; do
  [ -x "$bin/$b" ] || { echo "$0: $bin/$b is missing: build first" >&2; exit 2; }
done
export OPENBLAS_NUM_THREADS=1
common=(--dataset idx --data_path "$data" --layers "784,256,128,10" --optimizer adam
        --lr 0.001 --batch_size 64 --epochs 1000 --max_seconds "$secs"
        --eval_interval_s 100000 --log_level warn)  # local: no scoring during the run
# Jiffies busy (user, nice, system, irq, softirq) and in all (those, idle,
# iowait and steal: guest time is already in user) since boot, every core.
cpu_ticks() { awk '/^cpu /{b=$2+$3+$4+$7+$8; print b, b+$5+$6+$9}' /proc/stat; }
busy_since() {  # "BUSY ALL" at the start -> percent of all cores busy since
  local now; now=$(cpu_ticks)
  awk -v a="$1" -v b="$now" 'BEGIN{split(a,x," "); split(b,y," ");
    printf "%.0f", 100*(y[1]-x[1])/(y[2]-x[2])}'
}
summaries() {  # worker summaries -> "SPS CPU" per line
  sed -n 's/.*worker summary:.*samples in [0-9.]* s, \([0-9]*\) samples\/s, cpu \([0-9.]*\) s.*/\1 \2/p'
}
median() { sort -n | awk '{v[NR]=$1} END{if (NR==0) print "none"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq 1 "$rounds"); do
  t0=$(cpu_ticks)
  out=$("$bin/ps-worker" --algorithm local "${common[@]}" 2>&1)
  busy=$(busy_since "$t0")
  read -r sps cpu <<<"$(summaries <<<"$out")"
  [ -n "${sps:-}" ] || { echo "local failed:"; tail -5 <<<"$out"; exit 1; }
  echo "$sps" >> "$tmp/local"
  echo "round $r local: $sps samples/s, cpu $cpu s, busy $busy%"
  for i in "${!variants[@]}"; do
    v=${variants[$i]}
    t0=$(cpu_ticks)
    # shellcheck disable=SC2086
    out=$("$bin/psrun" --servers 1 --workers 2 --status_interval_s 0 \
          --metrics_port_base 0 --server_args "--log_level warn --checkpoint_interval_s 0" -- \
          "${common[@]}" --algorithm downpour $v 2>&1)
    busy=$(busy_since "$t0")
    lines=$(summaries <<<"$out")
    [ -n "$lines" ] || { echo "downpour $v failed:"; tail -5 <<<"$out"; exit 1; }
    awk '{print $1}' <<<"$lines" >> "$tmp/v$i"
    echo "round $r downpour $v: samples/s per worker $(awk '{printf "%s ", $1}' <<<"$lines")," \
         "cpu per worker $(awk '{printf "%s ", $2}' <<<"$lines")s, busy $busy%"
  done
done
lm=$(median < "$tmp/local")
echo
echo "| setup | samples/s per worker (median over both workers of $rounds rounds) | of local's |"
echo "|---|---|---|"
echo "| \`--algorithm local\` | $lm | 1.00 |"
for i in "${!variants[@]}"; do
  m=$(median < "$tmp/v$i")
  echo "| downpour \`${variants[$i]}\` | $m | $(awk -v a="$m" -v b="$lm" 'BEGIN{printf "%.2f", a/b}') |"
done
