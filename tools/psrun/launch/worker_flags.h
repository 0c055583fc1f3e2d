// tools/psrun/launch/worker_flags.h
//
// What psrun reads from the flags it passes on to ps-worker (the target
// accuracy, the namespace, the evaluation interval), and the refusal of a
// flag psrun sets itself (--shards, --rank, ...) in them or in the
// ps-server flags.
//
// Thread safety: pure functions.
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_WORKER_FLAGS_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_WORKER_FLAGS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pskit::launch {

// What psrun reads from the worker flags.
struct WorkerFlagInfo {
  std::optional<double> target_accuracy;
  std::string ns = "default";
  double eval_interval_s = 2;  // ps-worker's default
  bool evaluator_can_end =
      false;  // --target_accuracy, --patience or --max_seconds
};

// Checks the flags meant for ps-worker: INVALID_ARGUMENT when one of them is
// a flag psrun sets itself (the message names it), or a value psrun reads is
// not a number. Accepts --flag=value, --flag value and single dashes.
[[nodiscard]] absl::StatusOr<WorkerFlagInfo> InspectWorkerArgs(
    const std::vector<std::string>& args);

// INVALID_ARGUMENT naming the flag when `args` (up to a "--") sets one of
// `reserved`, which psrun sets for each `whose` ("worker", "shard") itself.
[[nodiscard]] absl::Status RejectReserved(
    const std::vector<std::string>& args,
    const std::vector<absl::string_view>& reserved, absl::string_view whose);

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_WORKER_FLAGS_H_
