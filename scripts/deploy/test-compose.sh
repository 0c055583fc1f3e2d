#!/usr/bin/env bash
# Test 2 of the deployment tests: the compose stack (deploy/compose) run with
# podman-compose, as a user runs it:
#   - `podman-compose up --exit-code-from evaluator` trains Fashion-MNIST on
#     two shards and two workers until the evaluator reaches TARGET_ACCURACY
#     (compose.yaml's default 0.88, as scripts/run.sh; at 0.85 the job can
#     end within a second of the last worker's start, before Prometheus's
#     first scrape of it) and exits 0;
#   - the stack's Prometheus, asked over its HTTP API from the host (its port
#     is published on 127.0.0.1 only), has pskit series from every shard,
#     worker and the evaluator, scraped by service name;
#   - `podman-compose down -t 60` stops the shards with SIGTERM and time to
#     write their final checkpoint: each exits 0 and logs it, and the volumes
#     hold it.
# Prints the job's time to target (the evaluator's clock) and the wall time of
# `up`. Grafana (profile `grafana`) is not started: no registry here has its
# image; scripts/deploy/check-compose.sh checks its provisioning statically.
# Everything is in compose project pskit-test-compose-PID, removed at the end.
#
#   scripts/deploy/setup-podman.sh   # once per host
#   scripts/deploy/test-compose.sh
#
# Environment: PSKIT_IMAGE (default localhost/pskit:latest), TARGET_ACCURACY.
# Both images are built first (podman's layer cache makes that seconds when
# test-image.sh built pskit's already).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$(pwd)"

log() { echo "test-compose: $*"; }
fail() { echo "test-compose: FAIL: $*" >&2; exit 1; }

command -v podman-compose >/dev/null || fail "podman-compose is not installed: run scripts/deploy/setup-podman.sh"
[ -d /usr/share/datasets/fashion-mnist ] ||
  fail "Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist (or scripts/install-deps.sh)"

export PSKIT_IMAGE="${PSKIT_IMAGE:-localhost/pskit:latest}"
export PROMETHEUS_IMAGE=localhost/pskit-prometheus:latest
export TARGET_ACCURACY="${TARGET_ACCURACY:-0.88}"  # printed; compose.yaml has the same default
export MAX_SECONDS=600
PROMETHEUS_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export PROMETHEUS_PORT
project="pskit-test-compose-$$"
work="$(mktemp -d)"
services=(shard0 shard1 worker0 worker1 evaluator prometheus)
compose() { (cd "$repo/deploy/compose" && podman-compose -p "$project" "$@"); }

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  compose down -t 60 >/dev/null 2>&1 || true
  podman volume rm -f "${project}_shard0-data" "${project}_shard1-data" >/dev/null 2>&1 || true
  podman network rm -f "${project}_default" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

log "building $PSKIT_IMAGE and $PROMETHEUS_IMAGE"
nice podman build --format docker --network host -f docker/Dockerfile -t "$PSKIT_IMAGE" . >"$work/build.log" 2>&1 ||
  { tail -n 30 "$work/build.log" >&2; fail "podman build of pskit failed"; }
nice podman build --format docker --network host -t "$PROMETHEUS_IMAGE" docker/prometheus >"$work/build.log" 2>&1 ||
  { tail -n 30 "$work/build.log" >&2; fail "podman build of docker/prometheus failed"; }

# The instances whose pskit_* series Prometheus must hold (every target of
# deploy/compose/prometheus.yml). Asked every 2 s while the stack runs; the
# answer is kept in $work/series.txt. The TSDB keeps series after a target
# ends, so the last answer stands for the whole job.
want="evaluator:9400 shard0:9400 shard1:9400 worker0:9400 worker1:9400"
poll_prometheus() {
  local url="http://127.0.0.1:$PROMETHEUS_PORT/api/v1/series"
  while true; do
    curl -sf -G "$url" --data-urlencode 'match[]={__name__=~"pskit_.+"}' 2>/dev/null |
      python3 -c 'import json, sys
d = json.load(sys.stdin)["data"]
for inst in sorted({s["instance"] for s in d}):
    n = sum(1 for s in d if s["instance"] == inst)
    print(inst, n)' >"$work/series.new" 2>/dev/null && mv "$work/series.new" "$work/series.txt"
    sleep 2
  done
}
command -v curl >/dev/null || fail "curl is not installed (apt-get install curl)"
poll_prometheus &
pids+=($!)

log "podman-compose -p $project up --exit-code-from evaluator ${services[*]} (target $TARGET_ACCURACY)"
start=$(date +%s)
set +e
compose up --exit-code-from evaluator "${services[@]}" >"$work/up.log" 2>&1
rc=$?
set -e
wall=$(( $(date +%s) - start ))
grep -E '^\[evaluator\]|eval:' "$work/up.log" | tail -n 3 || true
# The verdict: up's status is the evaluator's (0 at the target, 3 when the
# job ended without it), and the evaluator must say it reached the target
# (an exit status alone could come from elsewhere, e.g. an older ps-worker
# that exited 0 without the target).
elog="$(podman logs "${project}_evaluator_1" 2>&1 || true)"
code="$(podman inspect --format '{{.State.ExitCode}}' "${project}_evaluator_1")"
if [ "$rc" = 3 ] || [ "$code" = 3 ]; then
  tail -n 20 <<<"$elog" >&2
  fail "the evaluator ended the job without reaching the target $TARGET_ACCURACY (exit 3)"
fi
[ "$rc" = 0 ] || { tail -n 60 "$work/up.log" >&2; fail "up exited $rc, not 0 (log tail above)"; }
[ "$code" = 0 ] || fail "the evaluator exited $code"
reached="$(grep -o 'target accuracy [0-9.]* reached after [0-9.]* s' <<<"$elog" | tail -n 1 || true)"
[ -n "$reached" ] || { tail -n 20 <<<"$elog" >&2; fail "the evaluator exited 0 but never logged 'target accuracy ... reached after ... s'"; }
ended="$(grep 'eval: job ended' <<<"$elog" | tail -n 1 || true)"
log "ok: up exited 0 after ${wall} s; evaluator: ${ended#*eval: }"

# Prometheus keeps running after `up` returns (podman-compose 1.0.3 leaves the
# other containers up): give the poller a last scrape, then judge.
curl -sf "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" >/dev/null ||
  fail "Prometheus on 127.0.0.1:$PROMETHEUS_PORT is not ready"
sleep 4
[ -s "$work/series.txt" ] || fail "Prometheus's /api/v1/series never answered with pskit series"
for inst in $want; do
  n="$(awk -v i="$inst" '$1 == i {print $2}' "$work/series.txt")"
  if [ -z "$n" ] || [ "$n" -le 0 ]; then
    cat "$work/series.txt" >&2
    fail "Prometheus has no pskit series from $inst"
  fi
done
log "ok: Prometheus (127.0.0.1:$PROMETHEUS_PORT/api/v1/series) has pskit series from every process: $(tr '\n' ' ' <"$work/series.txt")"

# Follow the shards' logs through the stop: `down` removes the containers.
for s in shard0 shard1; do
  podman logs -f "${project}_${s}_1" >"$work/$s.log" 2>&1 &
  pids+=($!)
done
log "podman-compose down -t 60"
compose down -t 60 >"$work/down.log" 2>&1 || { cat "$work/down.log" >&2; fail "down failed"; }
sleep 1
for s in shard0 shard1; do
  grep -q 'got SIGTERM; draining' "$work/$s.log" || { cat "$work/$s.log" >&2; fail "$s did not get SIGTERM"; }
  final="$(grep -o "checkpoint 'final-[0-9]*' written[^)]*)" "$work/$s.log" | tail -n 1)"
  [ -n "$final" ] || { tail -n 20 "$work/$s.log" >&2; fail "$s wrote no final checkpoint"; }
  grep -q "shard [0-9]* on .* stopped" "$work/$s.log" || { tail -n 20 "$work/$s.log" >&2; fail "$s did not stop cleanly"; }
  files="$(podman run --rm --no-healthcheck -v "${project}_${s}-data:/data" --entrypoint sh "$PSKIT_IMAGE" -c 'find /data -type f | wc -l')"
  [ "$files" -gt 0 ] || fail "volume ${project}_${s}-data is empty"
  log "ok: $s: $final; $files files in its volume"
done
log "PASS: $reached (the evaluator's clock), up took ${wall} s"
