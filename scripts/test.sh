#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest labels unit,
# integration; gpu tests skip with a message where there is no device), the
# clang thread-safety build, a short fuzzing run (15 s per libFuzzer target
# of tests/fuzz/, after replaying every kept crash input; scripts/fuzz.sh),
# then the static checks of deploy/ (scripts/check-deploy.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 600
cd ..
bash scripts/thread-safety.sh
bash scripts/fuzz.sh "${PSKIT_FUZZ_SECONDS:-15}"
bash scripts/check-deploy.sh
