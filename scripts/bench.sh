#!/usr/bin/env bash
# Push/pull throughput of a local 2-shard cluster next to the loopback TCP
# ceiling (see README, Performance). Installs and builds first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
exec bash tests/bench/pushpull_vs_iperf.sh "${1:-1}" "${2:-20}"
