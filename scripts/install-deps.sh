#!/usr/bin/env bash
# Installs the Debian 12 packages pskit needs to build, test and run.
# A quick no-op when they are all present. Run as root (or with sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config ccache git clang
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev librocksdb-dev prometheus-cpp-dev libspdlog-dev
  libopenblas-dev zlib1g-dev libhdf5-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  iperf3 dataset-fashion-mnist prometheus prometheus-pushgateway python3-numpy
)
# scripts/check-deploy.sh's static checks of deploy/: shellcheck, yamllint,
# docker-compose (only its offline `config` validation of the compose file;
# no Docker engine), and Node.js with npm for the Kubernetes validator's
# pinned packages: Debian's only where the machine has none (these hosts'
# image ships Node.js 20 and npm; Debian's npm would replace that nodejs).
PACKAGES+=(shellcheck yamllint docker-compose)
command -v npm >/dev/null || PACKAGES+=(nodejs npm)

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
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

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
