#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains on a local
# cluster started by psrun: 2 shards, 2 workers (EASGD, 8 local steps between
# exchanges) and an evaluator that ends the job at 88% test accuracy on
# Fashion-MNIST (Debian's dataset-fashion-mnist; the synthetic teacher set, to
# 90%, where it is not installed). psrun streams every process's output with a
# prefix, shows the job's progress, stops everything at the end and prints a
# summary; its exit status is the job's. Arguments go to psrun (before its
# `--`), e.g. `--data_dir DIR` to keep the shards' checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh

data=/usr/share/datasets/fashion-mnist
if [ -f "$data/train-images-idx3-ubyte.gz" ] || [ -f "$data/train-images-idx3-ubyte" ]; then
  dataflags=(--dataset idx --data_path "$data" --layers "784,256,128,10")
  target=0.88
else
  echo "Fashion-MNIST is not installed; training on the synthetic set"
  dataflags=(--dataset synthetic --synthetic_train 300000 --layers "32,256,128,10")
  target=0.90
fi

exec build/bin/psrun --servers 2 --workers 2 --evaluator --status_interval_s 2 \
  --server_args "--log_level warn" "$@" -- \
  "${dataflags[@]}" --algorithm easgd --tau 8 \
  --target_accuracy "$target" --eval_interval_s 0.5 --epochs 50 --max_seconds 600
