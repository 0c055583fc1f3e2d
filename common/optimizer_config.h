// common/optimizer_config.h
//
// NormalizeConfig: an optimizer config with every default filled in and
// every value checked, the one meaning of "adam with lr 1e-3" that the shard
// (which applies it) and the worker's local baseline (which imitates it)
// share. DescribeConfig: the same, for people.
//
// Thread safety: pure functions.
#ifndef PSKIT_COMMON_OPTIMIZER_CONFIG_H_
#define PSKIT_COMMON_OPTIMIZER_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pskit/v1/ps.pb.h"

namespace pskit {

// Bounds on the hyper-parameters, chosen so that one update of finite
// values with a finite gradient of sane size stays finite (an update that
// still would not is refused by the shard as a whole; see
// server/chunk_store.h). learning_rate in (0, kMaxLearningRate]: lr * g stays
// finite for |g| < FLT_MAX / 1000. momentum, beta1, beta2, rho in [0, 1): the
// slots are moving averages that cannot grow without bound. epsilon in
// [kMinEpsilon, kMaxEpsilon]: g / (sqrt(s) + eps) stays below 1e30 even when
// g * g underflows to 0. weight_decay in [0, kMaxWeightDecay]: w shrinks by at
// most lr * wd * w. initial_accumulator in [0, kMaxInitialAccumulator].
inline constexpr float kMaxLearningRate = 1000.0f;
inline constexpr float kMinEpsilon = 1e-30f;
inline constexpr float kMaxEpsilon = 1.0f;
inline constexpr float kMaxWeightDecay = 1.0f;
inline constexpr float kMaxInitialAccumulator = 1e6f;

// Returns `config` with every unset setting filled in with its default (so
// two normalized configs compare field by field), and its staleness rules
// normalized by NormalizeStaleness (common/staleness_config.h).
// INVALID_ARGUMENT for an unspecified or unknown optimizer, the staleness
// rules' errors, or a setting the optimizer reads
// (FieldsUsedBy) outside its bounds above, not finite included; the message
// names the field, its value and the bound. Settings the optimizer does not
// read are not checked here: CheckSettingsUsed refuses them where a request
// sets them.
[[nodiscard]] absl::StatusOr<v1::NamespaceConfig> NormalizeConfig(
    const v1::NamespaceConfig& config);

// INVALID_ARGUMENT naming the field and the optimizer when `given` sets a
// field (other than kind) that optimizer `kind` never reads. Declare and
// SetConfig both call it on the request, so they agree on what each
// optimizer takes.
[[nodiscard]] absl::Status CheckSettingsUsed(const v1::OptimizerConfig& given,
                                             v1::OptimizerKind kind);

// The fields in which two configs differ, as
// "learning_rate: declared 0.01, requested 0.1; momentum: declared unset,
// requested 0.9", with `have_label` and `want_label` naming the two sides.
// Empty when they are equal.
std::string DiffConfigs(const v1::NamespaceConfig& have,
                        const v1::NamespaceConfig& want,
                        absl::string_view have_label,
                        absl::string_view want_label);

// "adam lr=0.001 beta1=0.9 ...": for logs and error messages.
std::string DescribeConfig(const v1::NamespaceConfig& config);

// The OptimizerConfig fields `kind` reads: learning_rate and weight_decay
// always; momentum for momentum and nesterov; epsilon and
// initial_accumulator for adagrad; rho and epsilon for rmsprop; beta1, beta2
// and epsilon for adam and adamw. Names as in ps.proto. The one table of
// which settings each optimizer takes: NormalizeConfig, CheckSettingsUsed
// and DescribeConfig all read it.
std::vector<std::string> FieldsUsedBy(v1::OptimizerKind kind);

}  // namespace pskit

#endif  // PSKIT_COMMON_OPTIMIZER_CONFIG_H_
