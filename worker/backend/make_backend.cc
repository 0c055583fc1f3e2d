#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "worker/backend/backend.h"
#if PSKIT_WITH_CUDA
#include "worker/backend/cuda_backend.h"
#endif

namespace pskit::worker {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view name,
                                                     int cpu_threads) {
  if (name == "cpu") return MakeCpuBackend(cpu_threads);
  if (name == "cuda") {
#if PSKIT_WITH_CUDA
    return MakeCudaBackend(0);
#else
    return absl::FailedPreconditionError(
        "--backend cuda: this build has no CUDA backend (built without "
        "nvcc/cuBLAS); use --backend cpu or auto");
#endif
  }
  if (name == "auto") {
#if PSKIT_WITH_CUDA
    absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend(0);
    if (cuda.ok()) {
      spdlog::info("backend auto: using {}", (*cuda)->name());
      return cuda;
    }
    spdlog::info("backend auto: using the CPU ({})",
                 std::string(cuda.status().message()));
#else
    spdlog::info("backend auto: using the CPU (built without CUDA)");
#endif
    return MakeCpuBackend(cpu_threads);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "backend '", name, "' is not known; use auto, cpu or cuda"));
}

}  // namespace pskit::worker
