#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains on a local
# cluster: 2 shards, 2 workers (downpour, Adam) and an evaluator that ends the
# job at 88% test accuracy on Fashion-MNIST (Debian's dataset-fashion-mnist;
# the synthetic teacher set, to 90%, where it is not installed). Every
# process's output is streamed with a prefix; all are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh

data=/usr/share/datasets/fashion-mnist
if [ -f "$data/train-images-idx3-ubyte.gz" ] || [ -f "$data/train-images-idx3-ubyte" ]; then
  dataflags=(--dataset idx --data_path "$data" --layers 784,256,128,10)
  target=0.88
else
  echo "Fashion-MNIST is not installed; training on the synthetic set"
  dataflags=(--dataset synthetic --layers 32,256,128,10)
  target=0.90
fi

source scripts/lib/cluster.sh
start_shards 2 --log_level warn
echo "cluster: 2 shards at $shards; 2 workers + evaluator, target accuracy $target"

start=$(date +%s.%N)
for r in 0 1; do
  "$bin/ps-worker" --shards "$shards" --rank $r --world 2 "${dataflags[@]}" \
    --epochs 50 --max_seconds 600 \
    > >(sed -u "s/^/[worker$r] /") 2>&1 &
  pids+=($!)
done
"$bin/ps-worker" --role evaluator --shards "$shards" "${dataflags[@]}" \
  --target_accuracy "$target" --eval_interval_s 1 --max_seconds 600 \
  > >(sed -u "s/^/[evaluator] /") 2>&1
for p in "${pids[@]:2}"; do wait "$p" || { echo "a worker failed"; exit 1; }; done
awk -v t0="$start" -v t1="$(date +%s.%N)" 'BEGIN {printf "job done in %.1f s\n", t1 - t0}'
