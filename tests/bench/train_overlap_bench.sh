#!/bin/bash
# tests/bench/train_overlap_bench.sh: the README's Fashion-MNIST comparison
# for downpour's overlap, in interleaved rounds: `ps-worker --algorithm
# local`, 1 shard + 2 downpour workers + evaluator (psrun) with each of the
# given ps-worker flag sets, and PyTorch in one process. Prints one line per
# run (time to the target, samples/s per worker) and the load average.
#
#   tests/bench/train_overlap_bench.sh ROUNDS [VARIANT ...]
#   e.g. tests/bench/train_overlap_bench.sh 5 --overlap=true --overlap=false
#
# WORKERS=N (default 2) sets the cluster's training workers. A VARIANT is
# one ps-worker flag string (quote several: '--overlap=true
# --n_push 2'). Needs build/bin/{psrun,ps-server,ps-worker}, Debian's
# python3-torch and /usr/share/datasets/fashion-mnist.
set -u
rounds=${1:-3}
workers=${WORKERS:-2}
shift || true
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(--overlap=true --overlap=false)
data=/usr/share/datasets/fashion-mnist
bin=build/bin
export OPENBLAS_NUM_THREADS=1
common=(--dataset idx --data_path "$data" --layers 784,256,128,10 --optimizer adam
        --lr 0.001 --batch_size 64 --target_accuracy 0.88 --eval_interval_s 0.5
        --epochs 50 --max_seconds 120 --log_level warn)
load() { cut -d' ' -f1 /proc/loadavg; }

for r in $(seq 1 "$rounds"); do
  l=$(load)
  out=$("$bin/ps-worker" --algorithm local "${common[@]}" 2>&1)
  t=$(sed -n 's/.*reached after \([0-9.]*\) s.*/\1/p' <<<"$out")
  sps=$(sed -n 's/.*samples in [0-9.]* s, \([0-9]*\) samples\/s.*/\1/p' <<<"$out")
  echo "round $r local: to88 ${t:-none} s, samples/s/worker $sps, load $l"
  for v in "${variants[@]}"; do
    l=$(load)
    # shellcheck disable=SC2086
    out=$("$bin/psrun" --servers 1 --workers "$workers" --evaluator --status_interval_s 0 \
          --metrics_port_base 0 --server_args "--log_level warn" -- \
          "${common[@]}" --algorithm downpour $v 2>&1)
    t=$(sed -n 's/.*evaluator summary:.*target reached after \([0-9.]*\) s.*/\1/p' <<<"$out")
    sps=$(sed -n 's/.*worker summary:.*samples in [0-9.]* s, \([0-9]*\) samples\/s.*/\1/p' <<<"$out" | tr '\n' ' ')
    echo "round $r downpour $v: to88 ${t:-none} s, samples/s/worker $sps, load $l"
  done
  l=$(load)
  out=$(/usr/bin/python3 tests/bench/torch_fashion_mnist.py --threads 1 \
        --eval_interval_s 0.5 2>&1)
  echo "round $r torch: $(tail -1 <<<"$out"), load $l"
done
