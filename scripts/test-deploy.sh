#!/usr/bin/env bash
# Runs pskit's deployments for real on this machine, as users run them:
#   image    the container image: non-root, tini as PID 1, health check,
#            SIGTERM -> exit 0 with a checkpoint in the volume, restart restores
#   compose  the compose stack (podman-compose): a Fashion-MNIST job reaches
#            its target, Prometheus has every process's series, down with grace
#   k8s      the Kubernetes manifests: every overlay renders and validates
#            strictly offline, then `podman kube play` runs a real job
#   slurm    the sbatch script on a single-node SLURM: a job reaches its
#            target; a shard killed mid-job fails the job quickly
#
#   bash scripts/test-deploy.sh              # all four, in that order
#   bash scripts/test-deploy.sh image k8s    # only those parts
#
# It installs and sets up what it needs (podman and a debootstrap-made
# debian:bookworm base image, SLURM with munge): run it as root on a Debian 12
# machine. The fast static checks also run in CI (scripts/check-deploy.sh);
# this script is the slow part that needs containers and daemons. Each part
# is a script of its own under scripts/deploy/ and can be run alone.
# Exit status: 0 when every part asked for passed.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: bash scripts/test-deploy.sh [image] [compose] [k8s] [slurm]" >&2
  echo "  (no argument: all four)" >&2
  exit 2
}

parts=("$@")
if [ ${#parts[@]} -eq 0 ]; then
  parts=(image compose k8s slurm)
fi
for p in "${parts[@]}"; do
  case "$p" in
    image|compose|k8s|slurm) ;;
    -h|--help) usage ;;
    *) echo "test-deploy: unknown part '$p'" >&2; usage ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "test-deploy: run as root (it installs packages and starts daemons)" >&2
  exit 2
fi

bash scripts/install-deps.sh

needs_podman=0
for p in "${parts[@]}"; do
  case "$p" in image|compose|k8s) needs_podman=1 ;; esac
done
if [ "$needs_podman" -eq 1 ]; then
  bash scripts/deploy/setup-podman.sh
fi

declare -A result seconds
failed=0
for p in "${parts[@]}"; do
  echo
  echo "=== test-deploy: $p ==="
  start=$(date +%s)
  rc=0
  case "$p" in
    image)   bash scripts/deploy/test-image.sh || rc=$? ;;
    compose) bash scripts/deploy/test-compose.sh || rc=$? ;;
    k8s)     bash scripts/deploy/test-k8s.sh || rc=$? ;;
    slurm)   bash scripts/deploy/setup-slurm.sh && bash scripts/deploy/test-slurm.sh || rc=$? ;;
  esac
  seconds[$p]=$(( $(date +%s) - start ))
  if [ "$rc" -eq 0 ]; then
    result[$p]=passed
  else
    result[$p]="FAILED (exit $rc)"
    failed=$((failed + 1))
  fi
done

echo
echo "=== test-deploy summary ==="
for p in "${parts[@]}"; do
  printf '  %-8s %s in %ss\n' "$p" "${result[$p]}" "${seconds[$p]}"
done
passed=$(( ${#parts[@]} - failed ))
echo "test-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
