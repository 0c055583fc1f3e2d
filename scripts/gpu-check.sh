#!/usr/bin/env bash
# The one prepared check for a machine with an NVIDIA GPU (within 10 minutes):
#   1. builds pskit with the CUDA backend for Hopper (CMAKE_CUDA_ARCHITECTURES,
#      default 90; GPU_ARCH=80 for an A100),
#   2. runs the GPU tests (every CUDA op and a whole model step against the CPU
#      backend),
#   3. trains Fashion-MNIST (MLP 784-256-128-10, Adam 1e-3, --algorithm local)
#      with --backend cpu and --backend cuda at batch 64 and 1024, and prints
#      samples/s and the time to 88% test accuracy side by side.
#
#   bash scripts/gpu-check.sh                builds here (Debian 12 with the
#                                            project's packages), then runs
#   bash scripts/gpu-check.sh --pack DIR     builds here and writes
#                                            DIR/pskit-gpu.tar.gz: the binaries,
#                                            the shared libraries they need that
#                                            a CUDA image lacks, and the data
#                                            set (~50 MB); runs nothing
#   bash scripts/gpu-check.sh --bundle DIR   unpacks DIR/pskit-gpu.tar.gz and
#                                            runs from it, on a machine that has
#                                            CUDA 13 but none of the project's
#                                            -dev packages
#
# With the device tool, whose CUDA image has no gRPC or RocksDB: pack here into
# build-gpu/ (ignored by git, so it travels only as `carry`), then run
# `bash scripts/gpu-check.sh --bundle build-gpu` there with carry ["build-gpu"].
#
# Exit status: 0 when the GPU tests pass and every CUDA run finished; 1 when a
# check failed or no CUDA device answered (the table says which).
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${GPU_ARCH:-90}
max_s=${GPU_CHECK_MAX_SECONDS:-75}  # per training run
mode=run
dir=""
case "${1:-}" in
  --pack) mode=pack; dir=${2:?--pack needs a directory} ;;
  --bundle) mode=bundle; dir=${2:?--bundle needs a directory} ;;
  "") ;;
  *) echo "usage: gpu-check.sh [--pack DIR | --bundle DIR]" >&2; exit 2 ;;
esac

build() {
  bash scripts/install-deps.sh
  bash scripts/build.sh -DCMAKE_CUDA_ARCHITECTURES="$arch" -DPSKIT_WITH_CUDA=ON
}

data=/usr/share/datasets/fashion-mnist
bin=build/bin
if [ "$mode" = pack ]; then
  build
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/bin" "$stage/lib" "$stage/data" "$dir"
  cp build/bin/ps-worker build/bin/gpu_tests "$stage/bin/"
  cp "$data"/*-ubyte.gz "$stage/data/"
  # Every shared library but the C and C++ runtimes (a newer image's are
  # backward compatible; ours would shadow what its cuBLAS needs), the CUDA
  # driver and the CUDA runtime libraries (the image has its own of the same
  # major version; cuBLASLt alone is over 500 MB).
  ldd build/bin/ps-worker build/bin/gpu_tests | awk '/=> \// {print $3}' | sort -u |
    grep -Ev '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt)\.so' |
    xargs -r cp -L -t "$stage/lib/"
  tar -C "$stage" -czf "$dir/pskit-gpu.tar.gz" bin lib data
  du -h "$dir/pskit-gpu.tar.gz"
  exit 0
elif [ "$mode" = bundle ]; then
  root=$(mktemp -d)
  tar -C "$root" -xzf "$dir/pskit-gpu.tar.gz"
  bin="$root/bin"
  data="$root/data"
  export LD_LIBRARY_PATH="$root/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  build
fi

echo "== device"
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: no driver or no device"

echo "== gpu_tests"
failed=0
"$bin/gpu_tests" 2>&1 | tee /tmp/pskit-gpu-tests.txt || failed=1
if grep -q "no CUDA device" /tmp/pskit-gpu-tests.txt; then
  echo "gpu_tests skipped: no CUDA device answered"
  failed=1
fi

echo "== Fashion-MNIST to 88%, --algorithm local (each run at most ${max_s} s)"
rows=()
for backend in cpu cuda; do
  for batch in 64 1024; do
    log=/tmp/pskit-gpu-$backend-$batch.txt
    echo "-- $backend, batch $batch"
    if OPENBLAS_NUM_THREADS=1 "$bin/ps-worker" --algorithm local --backend "$backend" \
        --batch_size "$batch" --dataset idx --data_path "$data" \
        --layers 784,256,128,10 --target_accuracy 0.88 --eval_interval_s 0.5 \
        --epochs 200 --max_seconds "$max_s" --log_interval_s 10 >"$log" 2>&1; then
      summary=$(grep '^worker summary' "$log" || true)
      sps=$(sed -n 's/.* \([0-9.]*\) samples\/s.*/\1/p' <<<"$summary")
      t=$(sed -n 's/.*reached after \([0-9.]*\) s.*/\1 s/p' <<<"$summary")
      rows+=("$(printf '%-5s %6s %14s %16s' "$backend" "$batch" "${sps:-?}" "${t:-not in ${max_s} s}")")
    else
      tail -n 3 "$log"
      rows+=("$(printf '%-5s %6s %14s %16s' "$backend" "$batch" failed "$(tail -n 1 "$log" | cut -c1-60)")")
      [ "$backend" = cuda ] && failed=1
    fi
  done
done

echo "== summary"
printf '%-5s %6s %14s %16s\n' backend batch samples/s "time to 88%"
printf '%s\n' "${rows[@]}"
exit "$failed"
