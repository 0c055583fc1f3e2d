#!/usr/bin/env bash
# The main job, until the worker lands: installs what is missing, builds,
# starts a local cluster of 2 shards on 127.0.0.1, and measures push/pull
# throughput with ps-bench next to the loopback TCP ceiling (iperf3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
exec bash tests/bench/pushpull_vs_iperf.sh 1 20
