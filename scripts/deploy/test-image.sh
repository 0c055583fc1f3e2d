#!/usr/bin/env bash
# Test 1 of the deployment tests: builds pskit's image (docker/Dockerfile) and
# checks a shard container as users run it:
#   - it runs as a non-root user, and PID 1 is tini;
#   - its HEALTHCHECK (psctl health) answers and the container turns healthy;
#   - after a short ps-worker job (another container on a podman network,
#     finding the shard by name) the shard holds a model; `podman stop -t 60`
#     (SIGTERM) ends it with exit code 0 and a final checkpoint in its volume;
#   - the restarted container restores that checkpoint: every tensor dumps
#     byte for byte the same as before the stop.
# Prints the runtime image's size. Everything it creates is named
# pskit-test-image-PID-* and removed at the end, also on failure.
#
#   scripts/deploy/setup-podman.sh   # once per host
#   scripts/deploy/test-image.sh
#
# Environment: PSKIT_IMAGE, the tag to build and test (default
# localhost/pskit:latest). The build reuses podman's layer cache: with no
# source change it takes seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "test-image: $*"; }
fail() { echo "test-image: FAIL: $*" >&2; exit 1; }

command -v podman >/dev/null || fail "podman is not installed: run scripts/deploy/setup-podman.sh"
podman image exists docker.io/library/debian:bookworm ||
  fail "no debian:bookworm base image: run scripts/deploy/setup-podman.sh"

image="${PSKIT_IMAGE:-localhost/pskit:latest}"
prefix="pskit-test-image-$$"
net="$prefix-net"
vol="$prefix-data"
shard="$prefix-shard"
work="$(mktemp -d)"

cleanup() {
  podman rm -f -t 0 "$shard" "$prefix-worker" >/dev/null 2>&1 || true
  podman volume rm -f "$vol" >/dev/null 2>&1 || true
  podman network rm -f "$net" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

log "building $image (docker/Dockerfile)"
nice podman build --format docker --network host -f docker/Dockerfile -t "$image" . >"$work/build.log" 2>&1 ||
  { tail -n 30 "$work/build.log" >&2; fail "podman build failed (log above)"; }
size="$(podman image inspect --format '{{.Size}}' "$image")"
log "image $image: $((size / 1000000)) MB ($size bytes)"

# Without systemd (containers, CI runners) podman cannot schedule periodic
# health checks and says so on stderr at every run/stop; `podman healthcheck
# run` still works, and is what this test uses. That noise goes to a file.
quiet() {
  "$@" 2>>"$work/podman.err" || { cat "$work/podman.err" >&2; fail "'$*' failed (its errors above)"; }
}

podman network create "$net" >/dev/null
podman volume create "$vol" >/dev/null

# Waits until the shard container's health check passes (the first one may
# come before the shard listens); fails with its logs after 60 tries.
wait_healthy() {
  local _
  for _ in $(seq 60); do
    if podman healthcheck run "$shard" >/dev/null 2>&1; then return 0; fi
    [ "$(podman inspect --format '{{.State.Running}}' "$shard")" = true ] ||
      { podman logs "$shard" >&2; fail "the shard container exited"; }
    sleep 1
  done
  podman logs "$shard" >&2
  fail "the shard's health check never passed"
}

# psctl inside the shard container; any failure fails the test (no retry:
# one would hide a regression in how clients connect).
psctl_in_shard() {
  local rc=0
  podman exec "$shard" psctl --shards 127.0.0.1:7000 "$@" 2>"$work/psctl.err" || rc=$?
  [ "$rc" = 0 ] || { cat "$work/psctl.err" >&2; fail "psctl $* exited $rc"; }
}

# Every tensor of namespace `default`, dumped inside the shard container, as
# "name sha256" lines, sorted.
dump_tensors() {
  local names name
  names="$(psctl_in_shard tensors default --json | python3 -c 'import json, sys
for t in json.load(sys.stdin)["tensors"]: print(t["name"])')"
  [ -n "$names" ] || fail "the shard holds no tensors in namespace default"
  for name in $names; do
    psctl_in_shard dump default "$name" --out /tmp/t.npy >/dev/null
    podman exec "$shard" sha256sum /tmp/t.npy | awk -v n="$name" '{print n, $1}'
  done | sort
}

log "starting shard container $shard (image defaults: ps-server on :7000, --data_dir /data)"
quiet podman run -d --name "$shard" --network "$net" -v "$vol:/data" "$image" >/dev/null

uid="$(podman exec "$shard" id -u)"
[ "$uid" != 0 ] || fail "the container runs as root"
log "ok: runs as uid $uid ($(podman exec "$shard" id -un))"

pid1="$(podman exec "$shard" cat /proc/1/comm)"
[ "$pid1" = tini ] || fail "PID 1 is '$pid1', not tini"
log "ok: PID 1 is tini; ps-server is its child: $(podman exec "$shard" sh -c 'cat /proc/[0-9]*/comm' | grep -c '^ps-server$') process"

wait_healthy
health="$(podman inspect --format '{{.State.Healthcheck.Status}}' "$shard")"
[ "$health" = healthy ] || fail "health status is '$health' after a passing check"
log "ok: health check answers: $(podman exec "$shard" psctl --shards 127.0.0.1:7000 health 2>&1 | tail -n 1); status $health"

log "a short ps-worker job from another container puts a model into the shard"
podman run --name "$prefix-worker" --network "$net" --no-healthcheck "$image" \
  ps-worker --shards "$shard:7000" --rank 0 --world 1 --dataset synthetic \
  --synthetic_train 4000 --synthetic_test 500 --layers 32,64,10 --epochs 2 \
  --log_level warn >"$work/worker.log" 2>&1 ||
  { cat "$work/worker.log" >&2; fail "the worker container failed"; }
quiet podman rm "$prefix-worker" >/dev/null
dump_tensors >"$work/before.txt"
log "ok: $(wc -l <"$work/before.txt") tensors in the shard; first: $(head -n 1 "$work/before.txt")"

log "podman stop -t 60 (SIGTERM through tini)"
quiet podman stop -t 60 "$shard" >/dev/null
code="$(podman inspect --format '{{.State.ExitCode}}' "$shard")"
[ "$code" = 0 ] || { podman logs "$shard" >&2; fail "the shard exited with $code after SIGTERM, not 0"; }
final="$(podman logs "$shard" 2>&1 | grep -o "checkpoint 'final-[0-9]*' written" | tail -n 1)"
[ -n "$final" ] || { podman logs "$shard" >&2; fail "no final checkpoint in the shard's log"; }
files="$(quiet podman run --rm -v "$vol:/data" --entrypoint sh "$image" -c 'find /data -type f | wc -l')"
[ "$files" -gt 0 ] || fail "the volume $vol is empty after the stop"
log "ok: exit code 0; $final; $files files in the volume"

log "restarting the container"
: >"$work/restart-mark"
quiet podman start "$shard" >/dev/null
wait_healthy
id="${final#checkpoint \'}"
id="${id%%\'*}"
podman logs --since "$(date -u -r "$work/restart-mark" +%Y-%m-%dT%H:%M:%SZ)" "$shard" 2>&1 |
  grep -q "loaded checkpoint '$id'" ||
  { podman logs "$shard" >&2; fail "the restarted shard did not restore checkpoint '$id'"; }
dump_tensors >"$work/after.txt"
if ! diff -u "$work/before.txt" "$work/after.txt" >&2; then
  fail "tensor values differ after the restart (diff above)"
fi
log "ok: restored '$id'; all $(wc -l <"$work/after.txt") tensors identical (sha256 of psctl dump)"
quiet podman stop -t 60 "$shard" >/dev/null
log "PASS (image size $((size / 1000000)) MB)"
