#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "worker/backend/backend.h"

namespace pskit::worker {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view name) {
  if (name == "cpu") return MakeCpuBackend(0);
  if (name == "cuda") {
    return absl::FailedPreconditionError(
        "--backend cuda: this build has no CUDA backend yet (it is the next "
        "step of the worker); use --backend cpu or auto");
  }
  if (name == "auto") {
    spdlog::info("backend auto: using the CPU (this build has no CUDA backend)");
    return MakeCpuBackend(0);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "backend '", name, "' is not known; use auto, cpu or cuda"));
}

}  // namespace pskit::worker
