#!/usr/bin/env bash
# examples/python/run_fashion_mnist.sh: the CNN example in one command: two
# shards on 127.0.0.1, two Python workers and the evaluator
# (examples/python/train_fashion_mnist.py), until the evaluator's target test
# accuracy; everything it started is stopped on exit.
#
#   examples/python/run_fashion_mnist.sh [--target_accuracy 0.9] [train_fashion_mnist.py flags...]
#
# Environment: BUILD (default build: ps-server in $BUILD/bin, pskit in
# $BUILD/python), WORKERS (default 2), SHARDS (default 2). Exit status: the
# evaluator's (0 target reached, 3 not reached), or 1 if a worker failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
bin="$BUILD/bin"
source scripts/lib/cluster.sh

args=("$@")
[[ " ${args[*]-} " == *" --target_accuracy "* ]] || args+=(--target_accuracy 0.9)
export PYTHONPATH="$BUILD/python${PYTHONPATH:+:$PYTHONPATH}"
export OPENBLAS_NUM_THREADS=1 PSKIT_NAMESPACE=${PSKIT_NAMESPACE:-fashion-mnist}

start_shards "${SHARDS:-2}" --log_level warn
export PSKIT_SHARDS="$shards"
echo "shards: $PSKIT_SHARDS"
workers=()
for ((r = 0; r < ${WORKERS:-2}; r++)); do
  RANK=$r WORLD_SIZE=${WORKERS:-2} /usr/bin/python3 \
    examples/python/train_fashion_mnist.py "${args[@]}" &
  workers+=($!)
  pids+=($!)
done
status=0
PSKIT_ROLE=evaluator /usr/bin/python3 examples/python/train_fashion_mnist.py \
  "${args[@]}" || status=$?
for p in "${workers[@]}"; do
  wait "$p" || { echo "worker (pid $p) failed" >&2; [ "$status" -ne 0 ] || status=1; }
done
exit "$status"
