#!/usr/bin/env bash
# Test 3 of scripts/test-deploy.sh: Kubernetes. First the static part
# (scripts/check-deploy.sh --k8s: every overlay renders, the validator passes
# them all, its injected mistakes fail), then a real job from the manifests:
# `podman kube play` of deploy/k8s/overlays/podman (the job as Pods, PVCs and
# the shared ConfigMap; no API server exists here) on a podman network of its
# own, where pods find each other by name.
#   1. 2 shards, 2 workers (JOB_COMPLETION_INDEX 0, 1) and the evaluator
#      train Fashion-MNIST; the evaluator container must exit 0 having
#      reached its target (0.80, capped at 600 s), the workers exit 0.
#   2. The shards get SIGTERM with a 60 s grace (what scaling the StatefulSet
#      to 0 does): each must exit 0 after writing its final checkpoint.
#   3. The shard pods are played again on the same PVCs (podman volumes):
#      each must restore that final checkpoint.
# Everything it makes is named k8s-pskit-* and removed at the end, also on
# failure; the PVC volumes are removed before and after.
#
#   scripts/deploy/test-k8s.sh
#   PSKIT_IMAGE=localhost/other:tag scripts/deploy/test-k8s.sh   another tag
#
# Needs podman (scripts/deploy/setup-podman.sh). Builds the image
# localhost/pskit:latest (docker/Dockerfile, from this tree every time;
# PSKIT_IMAGE names another tag) and the Fashion-MNIST image
# (deploy/k8s/dataset); both are cached after the first time.
set -euo pipefail
cd "$(dirname "$0")/../.."

prefix=k8s-pskit
network="$prefix-net"
shards=("$prefix-shard-0" "$prefix-shard-1")
workers=("$prefix-worker-0" "$prefix-worker-1")
evaluator="$prefix-evaluator"
job_timeout_s=900
image="${PSKIT_IMAGE:-localhost/pskit:latest}"

log() { echo "test-k8s: $*"; }
die() { echo "test-k8s: FAIL: $*" >&2; exit 1; }

# -- 0. Static checks -------------------------------------------------------
bash scripts/check-deploy.sh --k8s

command -v podman >/dev/null ||
  die "podman is not installed: run scripts/deploy/setup-podman.sh first"

work="$(mktemp -d)"
play_down() {
  local f
  for f in "$work/play.yaml" "$work/shards.yaml"; do
    if [ -f "$f" ]; then
      podman kube down "$f" >/dev/null 2>&1 || true
    fi
  done
}
# Removes the pods, the PVC volumes, the pods' emptyDir volumes (podman-play.mjs
# names them k8s-pskit-<pod>-<volume>) and the network.
remove_all() {
  local v
  podman pod rm -f "${shards[@]}" "${workers[@]}" "$evaluator" >/dev/null 2>&1 || true
  for v in $(podman volume ls -q 2>/dev/null); do
    if [[ "$v" == "$prefix"-* ]]; then
      podman volume rm -f "$v" >/dev/null || echo "test-k8s: could not remove volume $v" >&2
    fi
  done
  podman network rm -f "$network" >/dev/null 2>&1 || true
}
cleanup() {
  play_down
  remove_all
  rm -rf "$work"
}
trap cleanup EXIT
# Leftovers of an interrupted run would restore a trained model.
remove_all

# -- Images -----------------------------------------------------------------
# Always built from this tree, never an existing image that may be stale
# (podman's layer cache makes it seconds when test-image.sh built it);
# --format docker as test-image.sh and test-compose.sh, so the cache is
# shared and the HEALTHCHECK kept.
log "building $image (docker/Dockerfile; minutes the first time)"
nice podman build --format docker --network host -f docker/Dockerfile -t "$image" . >"$work/build.log" 2>&1 ||
  { tail -n 30 "$work/build.log" >&2; die "podman build of $image failed"; }
log "building localhost/pskit-fashion-mnist:latest (deploy/k8s/dataset)"
nice podman build -q --network host -t localhost/pskit-fashion-mnist:latest \
  deploy/k8s/dataset >/dev/null

# -- The manifests, as podman runs them ----------------------------------------
kubectl kustomize deploy/k8s/overlays/podman |
  sed "s#image: localhost/pskit:latest\$#image: $image#" >"$work/rendered.yaml"
node deploy/k8s/validate/validate.mjs "$work/rendered.yaml"
# podman 4.3 neither expands $(VAR) in args nor leaves unpublished ports
# alone: podman-play.mjs makes the play file as a cluster would run it.
node deploy/k8s/validate/podman-play.mjs "$work/rendered.yaml" >"$work/play.yaml"
node deploy/k8s/validate/podman-play.mjs "$work/rendered.yaml" shard >"$work/shards.yaml"

podman network create "$network" >/dev/null

# -- 1. The job ---------------------------------------------------------------
log "podman kube play deploy/k8s/overlays/podman (2 shards, 2 workers, evaluator)"
start=$(date +%s)
podman kube play --network "$network" "$work/play.yaml" >/dev/null

# wait_exit CONTAINER SECONDS: its exit code, or "timeout".
wait_exit() {
  local code
  if code="$(timeout "$2" podman wait "$1" 2>/dev/null)"; then
    echo "$code"
  else
    echo timeout
  fi
}
dump_logs() {
  local c
  for c in "$@"; do
    echo "---- last lines of $c"
    podman logs --tail 15 "$c" 2>&1 || true
  done
}
evaluator_code="$(wait_exit "$evaluator-evaluator" "$job_timeout_s")"
elapsed=$(($(date +%s) - start))
eval_log="$(podman logs "$evaluator-evaluator" 2>&1)"
if [ "$evaluator_code" != 0 ] || ! grep -q "target accuracy .* reached after" <<<"$eval_log"; then
  dump_logs "$evaluator-evaluator" "${workers[@]/%/-ps-worker}" "${shards[@]/%/-ps-server}"
  die "the evaluator ended with '$evaluator_code' without reaching its target"
fi
log "evaluator exited 0: $(grep -o "target accuracy .* reached after [0-9.]* s" <<<"$eval_log" | tail -1) ($elapsed s from kube play, with image start and data copy)"
for i in "${!workers[@]}"; do
  w="${workers[$i]}"
  code="$(wait_exit "$w-ps-worker" 120)"
  if [ "$code" != 0 ]; then
    dump_logs "$w-ps-worker"
    die "worker $w ended with '$code' after the evaluator ended the job"
  fi
  # The rank is the Indexed Job's JOB_COMPLETION_INDEX, the world PSKIT_WORLD_SIZE.
  # (Logs in a variable: `podman logs | grep -q` fails under pipefail when grep
  # stops reading early.)
  wlog="$(podman logs "$w-ps-worker" 2>&1)"
  if ! grep -q "rank $i of ${#workers[@]} (Kubernetes)" <<<"$wlog"; then
    dump_logs "$w-ps-worker"
    die "worker $w did not take rank $i of ${#workers[@]} from JOB_COMPLETION_INDEX/PSKIT_WORLD_SIZE"
  fi
done
log "both workers exited 0, as ranks 0 and 1 of 2 from JOB_COMPLETION_INDEX"

# -- 2. Stopping the shards: SIGTERM, final checkpoint, exit 0 ----------------------
log "stopping the shards with a 60 s grace (as scaling the StatefulSet to 0 does)"
podman pod stop -t 60 "${shards[@]}" >/dev/null
for s in "${shards[@]}"; do
  code="$(podman inspect -f '{{.State.ExitCode}}' "$s-ps-server")"
  slog="$(podman logs "$s-ps-server" 2>&1)"
  if [ "$code" != 0 ] || ! grep -q "checkpoint 'final-[0-9]*' written" <<<"$slog"; then
    dump_logs "$s-ps-server"
    die "shard $s exited $code without writing its final checkpoint"
  fi
done
log "both shards exited 0 after writing their final checkpoint into their PVC"
play_down

# -- 3. The shards again, on the same PVCs: they restore ----------------------------
log "playing the shard pods again on the same PVCs"
podman kube play --network "$network" "$work/shards.yaml" >/dev/null
for s in "${shards[@]}"; do
  restored=""
  for _ in $(seq 60); do
    slog="$(podman logs "$s-ps-server" 2>&1)"
    if grep -q "loaded checkpoint 'final-" <<<"$slog"; then
      restored=1
      break
    fi
    sleep 1
  done
  if [ -z "$restored" ]; then
    dump_logs "$s-ps-server"
    die "shard $s did not restore its final checkpoint from its PVC"
  fi
done
log "both shards restored their final checkpoint"
podman pod stop -t 60 "${shards[@]}" >/dev/null
play_down

log "passed: job to target in $elapsed s, workers and shards exited 0, checkpoints kept and restored"
