#include "tools/psrun/launch/worker_flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace pskit::launch {
namespace {

// Splits "--name=value", "-name=value", "--name" into name and value.
// False for a non-flag (no leading dash, or a bare "-" / "--").
bool SplitFlag(absl::string_view arg, absl::string_view* name,
               std::optional<absl::string_view>* value) {
  if (!absl::ConsumePrefix(&arg, "-")) return false;
  absl::ConsumePrefix(&arg, "-");
  if (arg.empty()) return false;
  const size_t eq = arg.find('=');
  *name = arg.substr(0, eq);
  if (eq != absl::string_view::npos) {
    *value = arg.substr(eq + 1);
  } else {
    value->reset();
  }
  return true;
}

}  // namespace

absl::Status RejectReserved(const std::vector<std::string>& args,
                            const std::vector<absl::string_view>& reserved,
                            absl::string_view whose) {
  for (const std::string& arg : args) {
    if (arg == "--") break;
    absl::string_view name;
    std::optional<absl::string_view> value;
    if (!SplitFlag(arg, &name, &value)) continue;
    for (absl::string_view r : reserved) {
      if (name == r) {
        return absl::InvalidArgumentError(
            absl::StrCat("psrun sets --", r, " for each ", whose,
                         " itself; remove it from the ", whose, " flags"));
      }
    }
  }
  return absl::OkStatus();
}

enum class Role { kShard, kWorker, kEvaluator };

absl::StatusOr<WorkerFlagInfo> InspectWorkerArgs(
    const std::vector<std::string>& args) {
  if (absl::Status s = RejectReserved(
          args, {"shards", "rank", "world", "role", "metrics_port"}, "worker");
      !s.ok()) {
    return s;
  }
  WorkerFlagInfo info;
  double patience = 0, max_seconds = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--") break;
    absl::string_view name;
    std::optional<absl::string_view> value;
    if (!SplitFlag(args[i], &name, &value)) continue;
    double* number = nullptr;
    double target = 0;
    if (name == "target_accuracy") {
      number = &target;
    } else if (name == "eval_interval_s") {
      number = &info.eval_interval_s;
    } else if (name == "patience") {
      number = &patience;
    } else if (name == "max_seconds") {
      number = &max_seconds;
    } else if (name != "namespace") {
      continue;
    }
    if (!value.has_value()) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (number == nullptr) {
      info.ns = std::string(*value);
      continue;
    }
    if (!absl::SimpleAtod(*value, number)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " must be a number, got '", *value, "'"));
    }
    if (name == "target_accuracy") {
      if (target > 0) {
        info.target_accuracy = target;
      } else {
        info.target_accuracy.reset();
      }
    }
  }
  info.evaluator_can_end =
      info.target_accuracy.has_value() || patience > 0 || max_seconds > 0;
  return info;
}

}  // namespace pskit::launch
