#!/usr/bin/env bash
# The build steps both container images share (docker/Dockerfile and
# docker/Dockerfile.cuda call it in their build stage): configure and build
# only pskit's binaries (no tests), install them stripped into PREFIX/bin, and
# write PREFIX/runtime-packages.txt, the distribution packages that own the
# shared libraries the binaries load (found with ldd + dpkg -S), which the
# runtime stage installs and nothing more.
#
#   docker/build-pskit.sh SRC_DIR PREFIX [cuda]
#
# With `cuda` the CUDA backend is required (PSKIT_WITH_CUDA=ON: a missing nvcc
# or cuBLAS fails the build instead of silently building a CPU-only worker).
# Environment: PSKIT_BUILD_JOBS parallel compile jobs (default: all cores);
# PSKIT_CUDA_ARCHITECTURES the GPU architectures to compile for, as CMake's
# CUDA_ARCHITECTURES (default: worker/CMakeLists.txt's, 80).
# Run where the build dependencies are installed (scripts/install-deps.sh
# --build-only).
set -euo pipefail

die() { echo "build-pskit: error: $*" >&2; exit 1; }

if [ $# -lt 2 ] || [ $# -gt 3 ]; then die "usage: build-pskit.sh SRC_DIR PREFIX [cuda]"; fi
src="$1"
prefix="$2"
cuda=OFF
case "${3:-}" in
  "") ;;
  cuda) cuda=ON ;;
  *) die "third argument must be 'cuda' or absent, not '$3'" ;;
esac
[ -f "$src/CMakeLists.txt" ] || die "$src/CMakeLists.txt not found: SRC_DIR must be pskit's source tree"

# The binaries the images ship; each is an add_executable target
# (scripts/deploy/check-dockerfiles.sh checks these names against the CMake
# files).
TARGETS=(ps-server ps-worker psctl psrun ps-bench)

# A fixed build path: the compile commands name it (generated proto headers),
# and ccache only hits when they are the same from one image build to the next.
build=/tmp/pskit-build
rm -rf "$build"
trap 'rm -rf "$build"' EXIT
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DPSKIT_BUILD_TESTS=OFF -DPSKIT_WITH_CUDA="$cuda" \
  ${PSKIT_CUDA_ARCHITECTURES:+"-DCMAKE_CUDA_ARCHITECTURES=$PSKIT_CUDA_ARCHITECTURES"}
cmake --build "$build" -j "${PSKIT_BUILD_JOBS:-$(nproc)}" --target "${TARGETS[@]}"

mkdir -p "$prefix/bin"
for t in "${TARGETS[@]}"; do
  install -m 0755 -s "$build/bin/$t" "$prefix/bin/$t"
done

# Runtime packages: the owner of every shared library a binary names as
# NEEDED (apt brings what those need in turn), located where ldd finds it.
# dpkg records a file under the path its package shipped it (/lib/... or
# /usr/lib/..., usrmerge) and alternatives (libopenblas.so.0) are symlinks, so
# try the path ldd prints, its /usr-less or /usr-ful twin, and the resolved
# file.
owner() {
  local lib="$1" p real out
  real="$(readlink -f "$lib")"
  for p in "$lib" "${lib#/usr}" "/usr$lib" "$real" "${real#/usr}"; do
    if out="$(dpkg-query -S "$p" 2>/dev/null)"; then
      echo "${out%%:*}"
      return 0
    fi
  done
  return 1
}
: >"$prefix/runtime-packages.txt"
for t in "${TARGETS[@]}"; do
  bin="$prefix/bin/$t"
  paths="$(ldd "$bin")"
  for soname in $(objdump -p "$bin" | awk '$1 == "NEEDED" {print $2}'); do
    lib="$(awk -v n="$soname" '$1 == n && $2 == "=>" {print $3}' <<<"$paths")"
    if [ -z "$lib" ] || [ "$lib" = "not" ]; then die "$t needs $soname, which ldd does not find"; fi
    pkg="$(owner "$lib")" || die "no package owns $lib (a library built by hand?): the runtime image could not install it"
    echo "$pkg" >>"$prefix/runtime-packages.txt"
  done
done
sort -u -o "$prefix/runtime-packages.txt" "$prefix/runtime-packages.txt"
echo "build-pskit: built ${TARGETS[*]} (CUDA $cuda) into $prefix/bin"
echo "build-pskit: runtime packages: $(tr '\n' ' ' <"$prefix/runtime-packages.txt")"
