#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest labels unit,
# integration; gpu tests skip with a message where there is no device), then
# the static checks of deploy/ (scripts/check-deploy.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 600
cd ..
bash scripts/thread-safety.sh
bash scripts/check-deploy.sh
