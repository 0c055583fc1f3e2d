# shellcheck shell=bash
# The --self-test of the static deploy checks (check-compose.sh,
# check-dockerfiles.sh), sourced by them, never run by itself: for each
# planted error, a fresh copy of the tree gets that one error and the check
# must fail on it; the unchanged copy must pass. Proves each check can fail.
#
#   pskit_self_test NAME ROOT CHECK_FUNCTION "what|shell command" ...
#
# NAME prefixes the messages; CHECK_FUNCTION is called with the copy's path
# and must return non-zero (saying why on stderr) on a bad tree. Each command
# runs with `eval` in the copy's root. Exits the calling script: 0 when every
# planted error was caught, 1 otherwise.

# Copies the tree at $1 into $2 (made afresh): without .git, build
# folders and node_modules (deploy/k8s/validate's npm packages, ~60 MB):
# no check reads them.
pskit_self_test_copy() {
  rm -rf "$2"
  mkdir -p "$2"
  (cd "$1" && tar -c --anchored --exclude=./.git --exclude=./build --exclude='./build-*' \
    --exclude=node_modules .) | tar -C "$2" -x
}

pskit_self_test() {
  local name=$1 root=$2 check_fn=$3 tmp c what plant
  shift 3
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064  # $tmp is fixed now
  trap "rm -rf '$tmp'" EXIT
  pskit_self_test_copy "$root" "$tmp/r"
  "$check_fn" "$tmp/r" || { echo "$name: self-test: the unchanged copy fails" >&2; exit 1; }
  for c in "$@"; do
    what="${c%%|*}"
    plant="${c#*|}"
    pskit_self_test_copy "$root" "$tmp/r"
    (cd "$tmp/r" && eval "$plant")
    if "$check_fn" "$tmp/r" 2>"$tmp/err"; then
      echo "$name: self-test: a planted $what was not caught" >&2
      exit 1
    fi
    echo "self-test: planted $what -> caught: $(head -n 1 "$tmp/err")"
  done
  echo "$name: self-test passed ($# planted errors caught)"
  exit 0
}
