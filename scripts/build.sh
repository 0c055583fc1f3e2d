#!/usr/bin/env bash
# Configures and builds pskit into build/ (binaries in build/bin/, the
# Python package in build/python/pskit). Extra arguments go to cmake, e.g.
# -DCMAKE_CUDA_ARCHITECTURES=90.
#
# Run as root, it also puts build/python on the path of Debian's
# /usr/bin/python3 (a pskit-build.pth in its site-packages), so
# `/usr/bin/python3 -c "import pskit"` works from anywhere; otherwise use
# PYTHONPATH=build/python.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$jobs"
if [ -d build/python/pskit ] && [ "$(id -u)" = 0 ] && [ -x /usr/bin/python3 ]; then
  site=$(/usr/bin/python3 -c 'import site; print(site.getsitepackages()[0])')
  mkdir -p "$site"
  echo "$PWD/build/python" > "$site/pskit-build.pth"
fi
