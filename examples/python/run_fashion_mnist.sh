#!/usr/bin/env bash
# examples/python/run_fashion_mnist.sh: the Python example end to end: psrun
# starts 2 shards, 2 Python workers and a Python evaluator
# (examples/python/train_fashion_mnist.py through --worker_command), which
# train the CNN of examples/python/fashion_mnist.py on Fashion-MNIST until
# the evaluator sees 90% test accuracy.
#
#   examples/python/run_fashion_mnist.sh [SCRIPT FLAGS...]
#   e.g. examples/python/run_fashion_mnist.sh --model mlp --target_accuracy 0.88
#
# SHARDS and WORKERS (default 2 and 2) size the cluster; BUILD (default
# build) is the build directory. Exit status: psrun's (0 when the target was
# reached, 1 when it was not or a process failed).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
args=("$@")
[[ " ${args[*]-} " == *" --target_accuracy "* || " ${args[*]-}" == *" --target_accuracy="* ]] ||
  args+=(--target_accuracy 0.9)
export PYTHONPATH="$BUILD/python${PYTHONPATH:+:$PYTHONPATH}"
export OPENBLAS_NUM_THREADS=1
exec "$BUILD/bin/psrun" --servers "${SHARDS:-2}" --workers "${WORKERS:-2}" --evaluator \
  --namespace fashion-mnist --metrics_port_base 0 --server_args "--log_level warn" \
  --worker_command "/usr/bin/python3 examples/python/train_fashion_mnist.py" -- "${args[@]}"
