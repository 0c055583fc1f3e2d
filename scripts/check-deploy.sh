#!/usr/bin/env bash
# The fast static checks of everything under deploy/ and the deploy scripts
# (CI runs them from scripts/test.sh; no container, cluster or API server is
# needed). Each check prints one line, then a summary line
# "check-deploy: N passed, N failed"; the exit status is 1 if any failed.
#   - every kustomize overlay of deploy/k8s renders (`kubectl kustomize`);
#   - the validator (deploy/k8s/validate, npm packages pinned by its
#     package-lock.json) passes every rendering: Kubernetes and
#     Prometheus-Operator schemas, unknown fields refused, pskit's rules;
#     and its tests pass (each kind of mistake injected must fail, a
#     misspelled `imagee:` among them);
#   - shellcheck on .ci/run, scripts/*.sh, scripts/deploy/*.sh, deploy/slurm/*.{sh,sbatch};
#   - yamllint on deploy/ (the repository's .yamllint);
#   - promtool check config on the Prometheus configurations;
#   - the compose file against the Compose Specification schema
#     (docker-compose config: podman-compose 1.0.3 has no `config`);
#   - scripts/deploy/check-dockerfiles.sh and check-compose.sh, with their
#     self-tests, where they exist.
#
#   scripts/check-deploy.sh         everything
#   scripts/check-deploy.sh --k8s   only the Kubernetes part (test-k8s.sh)
# Tools it needs come from scripts/install-deps.sh (Debian packages), except
# kubectl >= 1.24 (its kustomize v4.5.4 is the oldest that renders deploy/k8s),
# which no Debian 12 package provides and pskit cannot install: see
# deploy/k8s/README.md, "Prerequisites".
set -euo pipefail
cd "$(dirname "$0")/.."

only_k8s=0
case "${1:-}" in
  "") ;;
  --k8s) only_k8s=1 ;;
  *) echo "usage: scripts/check-deploy.sh [--k8s]" >&2; exit 2 ;;
esac

failed=()
passed=0
log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT

# check NAME COMMAND...: runs it quietly; on failure shows its output.
check() {
  local name="$1"
  shift
  local log
  log="$log_dir/$(echo "$name" | tr -c 'A-Za-z0-9' '_').log"
  if "$@" >"$log" 2>&1; then
    echo "check-deploy: ok    $name"
    passed=$((passed + 1))
  else
    echo "check-deploy: FAIL  $name"
    sed 's/^/    /' "$log" | tail -n 60
    failed+=("$name")
  fi
}

need() {
  if ! command -v "$1" >/dev/null; then
    echo "check-deploy: FAIL  $1 is not installed: $2"
    failed+=("$1 missing")
    return 1
  fi
}

# -- Kubernetes ------------------------------------------------------------
k8s_ok=1
need kubectl "install kubectl >= 1.24 from Kubernetes' own packages (no Debian 12 package has one: deploy/k8s/README.md, Prerequisites)" || k8s_ok=0
need node "install Node.js >= 18 (Debian: nodejs npm)" || k8s_ok=0
need npm "install npm (Debian: npm)" || k8s_ok=0
# The overlays (components, replacements with [name=...] field paths) need
# kustomize >= v4.5.4, which kubectl 1.24 embeds: v4.5.4 renders every
# overlay byte for byte as kubectl 1.32's v5.5 (tried). Debian 12's
# kubernetes-client is kubectl 1.20 with kustomize v2, which refuses
# `components:` (tried): it cannot render these overlays.
kustomize_version() {
  local v major minor patch
  v="$(kubectl version --client -o json 2>/dev/null |
       sed -n 's/.*"kustomizeVersion": *"v\([0-9]*\)\.\([0-9]*\)\.\([0-9]*\).*/\1 \2 \3/p')"
  read -r major minor patch <<<"${v:-0 0 0}"
  if [ "$major" -gt 4 ] || { [ "$major" -eq 4 ] && { [ "$minor" -gt 5 ] || { [ "$minor" -eq 5 ] && [ "$patch" -ge 4 ]; }; }; }; then
    return 0
  fi
  echo "kubectl's kustomize is ${v:-unknown}; deploy/k8s needs >= v4.5.4 (kubectl >= 1.24), which no Debian 12 package provides (deploy/k8s/README.md, Prerequisites)"
  return 1
}
if [ "$k8s_ok" = 1 ]; then
  check "kubectl has kustomize >= v4.5.4 (kubectl >= 1.24)" kustomize_version || true
  rendered="$log_dir/rendered"
  mkdir -p "$rendered"
  render() {
    kubectl kustomize "deploy/k8s/$1" >"$rendered/$(basename "$1").yaml"
  }
  for overlay in base overlays/gpu overlays/monitoring overlays/podman; do
    check "kubectl kustomize deploy/k8s/$overlay" render "$overlay"
  done
  # npm ci: exactly the versions in package-lock.json, offline when cached.
  check "npm ci (deploy/k8s/validate)" \
    npm ci --prefix deploy/k8s/validate --no-audit --no-fund --prefer-offline
  validate_all() {
    local files=("$rendered"/*.yaml)
    [ "${#files[@]}" -eq 4 ] || { echo "only ${#files[@]} of 4 overlays rendered"; return 1; }
    node deploy/k8s/validate/validate.mjs "${files[@]}"
  }
  check "validate every rendering (schemas, unknown fields, pskit rules)" validate_all
  check "validator tests (mistakes injected, imagee: among them, must fail)" \
    node --test deploy/k8s/validate/test.mjs
fi

summary() {
  # The summary, in the plain form CI reads: "check-deploy: N passed, N failed".
  echo "check-deploy: $passed passed, ${#failed[@]} failed"
  if [ "${#failed[@]}" -gt 0 ]; then
    printf 'check-deploy: failed: %s\n' "${failed[@]}"
    exit 1
  fi
}
if [ "$only_k8s" = 1 ]; then
  summary
  exit 0
fi

# -- Shell -----------------------------------------------------------------
if need shellcheck "scripts/install-deps.sh installs it"; then
  shell_files=()
  for f in .ci/run scripts/*.sh scripts/deploy/*.sh deploy/slurm/*.sh deploy/slurm/*.sbatch; do
    [ -f "$f" ] && shell_files+=("$f")
  done
  check "shellcheck (${#shell_files[@]} files)" shellcheck -x "${shell_files[@]}"
fi

# -- YAML ------------------------------------------------------------------
if need yamllint "scripts/install-deps.sh installs it"; then
  check "yamllint deploy/" yamllint --strict -c .yamllint deploy/
fi

# -- Prometheus ------------------------------------------------------------
if need promtool "scripts/install-deps.sh installs it (package prometheus)"; then
  for f in deploy/prometheus/prometheus.yml deploy/compose/prometheus.yml \
           deploy/compose/prometheus/prometheus.yml; do
    if [ -f "$f" ]; then
      check "promtool check config $f" promtool check config "$f"
    fi
  done
fi

# -- Compose ---------------------------------------------------------------
if [ -f deploy/compose/compose.yaml ] &&
   need docker-compose "scripts/install-deps.sh installs it (package docker-compose)"; then
  # Only the file's validity: no container engine is asked.
  check "compose file valid (docker-compose config)" \
    docker-compose -f deploy/compose/compose.yaml config -q
fi

# -- The other deploy checks, where their owners have written them ----------
for script in scripts/deploy/check-dockerfiles.sh scripts/deploy/check-compose.sh; do
  if [ -f "$script" ]; then
    check "$script" bash "$script"
    check "$script --self-test" bash "$script" --self-test
  fi
done

summary
