// common/staleness_config.h
//
// The staleness rules' part of a NamespaceConfig: the compensation
// (none, inverse, dcasgd-c, dcasgd-a, gem), the consistency (async, ssp:S,
// sync, sync:B) and their StalenessSettings, with one table of which
// settings each reads (StalenessFieldsUsedBy), their defaults and bounds.
// NormalizeConfig (common/optimizer_config.h) calls NormalizeStaleness, so
// the shard, ps-worker, psctl and psrun share one meaning of "gem".
//
// Names as people type them: ParseCompensation("dcasgd-a"),
// ParseConsistency("ssp:2"), and the same back from CompensationName and
// ConsistencyName.
//
// Thread safety: pure functions.
#ifndef PSKIT_COMMON_STALENESS_CONFIG_H_
#define PSKIT_COMMON_STALENESS_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "pskit/v1/ps.pb.h"

namespace pskit {

inline constexpr int32_t kMaxSspBound = 1000000;
inline constexpr int32_t kMaxBackupWorkers = 10000;
inline constexpr float kMaxGemKappa = 100.0f;
inline constexpr float kMaxDcLambda = 1e6f;

// Fills `config`'s compensation and consistency (UNSPECIFIED becomes NONE and
// ASYNC) and every StalenessSettings field with its default (dc_lambda's
// depends on the compensation: 0.04 for dcasgd-c, 2 otherwise), and checks
// the settings the rules read. INVALID_ARGUMENT, naming the field, its value
// and the bound, for a value out of bounds (dc_lambda < 0, gem_kappa <= 0,
// ssp_bound < 0, backup_workers < 0, ...), an unknown enum value, or
// CONSISTENCY_SYNC with a per-worker compensation (dcasgd-*, gem: a sync
// round's gradient is no one worker's, and is never stale).
[[nodiscard]] absl::Status NormalizeStaleness(v1::NamespaceConfig* config);

// The StalenessSettings fields `compensation` and `consistency` read (names
// as in ps.proto): dc_lambda for dcasgd-c; dc_lambda, dc_momentum and
// dc_epsilon for dcasgd-a; gem_momentum, gem_kappa and gem_epsilon for gem;
// ssp_bound for ssp; backup_workers for sync.
std::vector<std::string> StalenessFieldsUsedBy(v1::Compensation compensation,
                                               v1::Consistency consistency);

// INVALID_ARGUMENT naming the field when `given` sets a field that neither
// `compensation` nor `consistency` reads. Declare and SetConfig call it on
// the request.
[[nodiscard]] absl::Status CheckStalenessSettingsUsed(
    const v1::StalenessSettings& given, v1::Compensation compensation,
    v1::Consistency consistency);

// Clears the settings of `config` that `compensation` and `consistency` do
// not read, so NormalizeStaleness fills them with the new rule's defaults
// (SetConfig switching dcasgd-c, lambda 0.04, to dcasgd-a gets lambda0 2).
void ClearUnusedStaleness(v1::NamespaceConfig* config);

// "none", "inverse", "dcasgd-c", "dcasgd-a", "gem". INVALID_ARGUMENT
// listing them for anything else.
[[nodiscard]] absl::Status ParseCompensation(absl::string_view text,
                                             v1::Compensation* out);
std::string CompensationName(v1::Compensation compensation);

// "async", "ssp" (bound unset: the default), "ssp:S", "sync", "sync:B"
// (B backup workers) into `config`'s consistency and ssp_bound or
// backup_workers. INVALID_ARGUMENT for anything else, or an S or B that is
// not an integer >= 0.
[[nodiscard]] absl::Status ParseConsistency(absl::string_view text,
                                            v1::NamespaceConfig* config);
// "async", "ssp:2", "sync", "sync:1" (as ParseConsistency reads them).
std::string ConsistencyName(const v1::NamespaceConfig& config);

// " compensation=gem gem_momentum=0.9 ... consistency=ssp:2": the rules'
// part of DescribeConfig, with a leading space.
std::string DescribeStaleness(const v1::NamespaceConfig& config);

}  // namespace pskit

#endif  // PSKIT_COMMON_STALENESS_CONFIG_H_
