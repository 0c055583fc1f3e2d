#!/usr/bin/env bash
# Builds pskit's libraries and binaries with clang and
# -Werror=thread-safety into build-clang/, so the ABSL_GUARDED_BY /
# ABSL_EXCLUSIVE_LOCKS_REQUIRED annotations are checked (gcc ignores them).
# CUDA and tests are left out: this build only checks the analysis. Run by
# scripts/test.sh, so CI fails on a lock taken wrongly.
set -euo pipefail
cd "$(dirname "$0")/.."
CC=clang CXX=clang++ cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Release \
  -DPSKIT_WITH_CUDA=OFF -DPSKIT_BUILD_TESTS=OFF \
  -DCMAKE_CXX_FLAGS="-Werror=thread-safety" >/dev/null
cmake --build build-clang -j "$(nproc)"
echo "thread-safety: clang -Wthread-safety -Werror=thread-safety build passed"
