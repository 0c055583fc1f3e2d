#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ (clang, ASan + UBSan, in
# build-fuzz/) and runs each for SECONDS seconds, one after another.
#
#   scripts/fuzz.sh SECONDS [TARGET...]   fuzz (default: every target)
#   scripts/fuzz.sh --replay [TARGET...]  only replay the regression inputs
#   scripts/fuzz.sh --write-seeds         regenerate the generated seeds
#
# Before fuzzing a target, every input in tests/fuzz/regressions/TARGET/
# (inputs that once crashed it) is replayed; any failure stops the script.
# Fuzzing starts from tests/fuzz/corpus/TARGET/, copied to a temporary
# working corpus so the repository's stays small. Per target it prints the
# executions, exec/s, coverage (libFuzzer's final cov: edges and ft:
# features), corpus size and crashes. A crashing input is saved under
# build-fuzz/crashes/TARGET/ (the path is printed): fix the bug, then keep
# the input in tests/fuzz/regressions/TARGET/. Exits 1 when a target
# crashed, 2 on a usage error.
#
# Environment: FUZZ_JOBS (parallel compile jobs; default: nproc),
# FUZZ_NICE (nice level of the fuzzing; default 10), FUZZ_LOG_DIR (keep the
# libFuzzer logs there; default: a temporary directory, removed).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(fuzz_wire fuzz_rpc fuzz_server_wire fuzz_checkpoint fuzz_config)
usage() {
  echo "usage: scripts/fuzz.sh SECONDS [TARGET...] | --replay [TARGET...] | --write-seeds" >&2
  echo "targets: ${ALL_TARGETS[*]}" >&2
  exit 2
}
[ $# -ge 1 ] || usage
MODE=fuzz
SECONDS_EACH=0
case "$1" in
  --replay) MODE=replay ;;
  --write-seeds) MODE=seeds ;;
  ''|*[!0-9]*) usage ;;
  *) SECONDS_EACH=$1 ;;
esac
shift
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "fuzz: unknown target '$t'" >&2; usage; }
done

if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ is missing; install it with scripts/install-deps.sh (Debian package clang)" >&2
  exit 2
fi

# The build: its own directory, so the gcc build is untouched.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(pwd)}"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPSKIT_WITH_CUDA=OFF -DPSKIT_BUILD_TESTS=OFF -DPSKIT_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "${FUZZ_JOBS:-$(nproc)}" --target "${TARGETS[@]}" >/dev/null

if [ "$MODE" = seeds ]; then
  for t in "${ALL_TARGETS[@]}"; do
    mkdir -p "tests/fuzz/corpus/$t"
    PSKIT_FUZZ_WRITE_SEEDS="tests/fuzz/corpus/$t" "build-fuzz/bin/$t"
    echo "fuzz: wrote the seeds of $t to tests/fuzz/corpus/$t"
  done
  exit 0
fi

LOGS="${FUZZ_LOG_DIR:-}"
if [ -z "$LOGS" ]; then
  LOGS=$(mktemp -d)
  trap 'rm -rf "$LOGS"' EXIT
fi
mkdir -p "$LOGS"
# Leaks are reported too; UBSan stops at the first finding (it is compiled
# with -fno-sanitize-recover) and prints a stack.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

status=0
for t in "${TARGETS[@]}"; do
  bin="build-fuzz/bin/$t"
  # Inputs that once crashed this target: each must run clean now.
  regressions=(tests/fuzz/regressions/"$t"/*)
  if [ -e "${regressions[0]}" ]; then
    if ! "$bin" "${regressions[@]}" >"$LOGS/$t.replay.log" 2>&1; then
      echo "fuzz: $t: a regression input in tests/fuzz/regressions/$t fails again:" >&2
      tail -n 30 "$LOGS/$t.replay.log" >&2
      status=1
      continue
    fi
    echo "$t: ${#regressions[@]} regression inputs replayed, all pass"
  fi
  [ "$MODE" = fuzz ] || continue

  work=$(mktemp -d)
  if [ -d "tests/fuzz/corpus/$t" ]; then cp -r "tests/fuzz/corpus/$t/." "$work/"; fi
  seeds=$(find "$work" -type f | wc -l)
  crashes="build-fuzz/crashes/$t"
  mkdir -p "$crashes"
  log="$LOGS/$t.log"
  rc=0
  nice -n "${FUZZ_NICE:-10}" "$bin" "$work" -max_total_time="$SECONDS_EACH" \
    -print_final_stats=1 -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -max_len=8192 -artifact_prefix="$crashes/" >"$log" 2>&1 || rc=$?
  corpus=$(find "$work" -type f | wc -l)
  rm -rf "$work"
  final_stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
  execs=$(final_stat number_of_executed_units)
  rate=$(final_stat average_exec_per_sec)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
  if [ "$rc" -eq 0 ]; then
    echo "$t: ${SECONDS_EACH}s, ${execs:-?} executions, ${rate:-?} exec/s, ${cov:-cov: ?}, corpus $seeds -> $corpus inputs, 0 crashes"
  else
    status=1
    artifact=$(grep -Eo "Test unit written to [^ ]+" "$log" | tail -n 1 | sed 's/Test unit written to //' || true)
    echo "$t: CRASH after ${execs:-?} executions (${cov:-cov: ?}); input saved as ${artifact:-?}" >&2
    grep -E "ERROR|FUZZ_CHECK|runtime error|SUMMARY|#[0-9]+ 0x" "$log" | head -n 25 >&2 || true
    echo "fuzz: fix the bug, then keep the input in tests/fuzz/regressions/$t/ (replayed on every run)" >&2
  fi
done
exit "$status"
