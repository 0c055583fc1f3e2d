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

#include "absl/status/statusor.h"
#include "pskit/v1/ps.pb.h"

namespace pskit {

// Returns `config` with every optimizer default filled in and COMPENSATION_
// UNSPECIFIED turned into COMPENSATION_NONE. INVALID_ARGUMENT for an
// unspecified or unknown optimizer or compensation, a learning rate <= 0 or
// not finite, momentum/beta/rho outside [0, 1), epsilon <= 0, weight decay
// < 0, initial accumulator < 0.
[[nodiscard]] absl::StatusOr<v1::NamespaceConfig> NormalizeConfig(
    const v1::NamespaceConfig& config);

// "adam lr=0.001 beta1=0.9 ...": for logs and error messages.
std::string DescribeConfig(const v1::NamespaceConfig& config);

// The OptimizerConfig fields `kind` reads: learning_rate and weight_decay
// always; momentum for momentum and nesterov; epsilon and
// initial_accumulator for adagrad; rho and epsilon for rmsprop; beta1, beta2
// and epsilon for adam and adamw. Names as in ps.proto.
std::vector<std::string> FieldsUsedBy(v1::OptimizerKind kind);

}  // namespace pskit

#endif  // PSKIT_COMMON_OPTIMIZER_CONFIG_H_
