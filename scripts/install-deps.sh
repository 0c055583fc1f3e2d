#!/usr/bin/env bash
# Installs the Debian 12 packages pskit needs to build, test and run.
# A quick no-op when they are all present. Run as root (or with sudo).
#
#   scripts/install-deps.sh               everything (build, tests, tools)
#   scripts/install-deps.sh --build-only  only what compiling the binaries
#                                         needs (the container images' build
#                                         stage, docker/build-pskit.sh)
#   scripts/install-deps.sh --packages P...
#                                         exactly packages P (those not yet
#                                         installed), for the deploy setup
#                                         scripts (scripts/deploy/setup-*.sh)
set -euo pipefail

# What compiling ps-server, ps-worker, psctl, psrun and ps-bench needs
# (ccache: CMake uses it when present; image builds keep its cache).
BUILD_PACKAGES=(
  build-essential cmake pkg-config ccache
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev librocksdb-dev prometheus-cpp-dev libspdlog-dev
  libopenblas-dev zlib1g-dev libhdf5-dev libssl-dev
)
# The Python module (client/python/, built when pybind11-dev and python3-dev
# are there), its tests (pytest), pskit.torch (PyTorch) and its metrics
# (prometheus-client). pstune (tools/pstune/): Optuna, scikit-learn (its GP
# sampler) and PyYAML (space files).
# clang: scripts/thread-safety.sh and scripts/fuzz.sh (Debian's clang-14
# brings libFuzzer and the sanitizer runtimes).
case "${1:-}" in
  "") PACKAGES=(
        "${BUILD_PACKAGES[@]}" git clang
        libgtest-dev libgmock-dev libbenchmark-dev
        iperf3 dataset-fashion-mnist prometheus prometheus-pushgateway python3-numpy
        python3-matplotlib
        pybind11-dev python3-dev python3-pytest python3-torch python3-prometheus-client
        python3-optuna python3-sklearn python3-yaml
      ) ;;
  --build-only) PACKAGES=("${BUILD_PACKAGES[@]}") ;;
  --packages)
    shift
    [ $# -gt 0 ] || { echo "install-deps: --packages needs at least one package name" >&2; exit 2; }
    PACKAGES=("$@") ;;
  *) echo "install-deps: unknown argument '$1' (use --build-only, --packages P... or nothing)" >&2; exit 2 ;;
esac
# scripts/check-deploy.sh's static checks of deploy/: shellcheck, yamllint,
# docker-compose (only its offline `config` validation of the compose file;
# no Docker engine), python3-yaml (scripts/deploy/check-compose.sh parses the
# compose file with PyYAML; nothing else here brings it), and Node.js with npm
# for the Kubernetes validator's pinned packages: Debian's only where the
# machine has none (these hosts' image ships Node.js 20 and npm; Debian's npm
# would replace that nodejs). kubectl is not among them: no Debian 12
# package has one recent enough (deploy/k8s/README.md, Prerequisites).
if [ -z "${1:-}" ]; then
  PACKAGES+=(shellcheck yamllint docker-compose python3-yaml)
  command -v npm >/dev/null || PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then
    SUDO=sudo
  else
    echo "install-deps: missing packages (${missing[*]}) and not root; run as root" >&2
    exit 1
  fi
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# The lock timeout waits for another apt-get on the same host instead of
# failing.
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"

# Debian's prometheus and prometheus-pushgateway start system services on
# :9090 and :9091 where systemd runs. pskit only runs them from its tests, on
# ports of their own: leave the machine as it was.
for svc in prometheus prometheus-pushgateway; do
  if [[ " ${missing[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null &&
     systemctl is-enabled "$svc" >/dev/null 2>&1; then
    echo "install-deps: stopping and disabling the $svc service it started"
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
