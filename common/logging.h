// common/logging.h
//
// SetupLogging configures spdlog's default logger for a pskit process: one
// line per event on stderr, with time, level and process name.
//
// Thread safety: call once from main() before other threads log.
#ifndef PSKIT_COMMON_LOGGING_H_
#define PSKIT_COMMON_LOGGING_H_

#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace pskit {

// `level`: trace, debug, info, warn, error, off. INVALID_ARGUMENT for any
// other word (the logger is left as it was).
[[nodiscard]] absl::Status SetupLogging(absl::string_view process_name,
                                        absl::string_view level);

}  // namespace pskit

#endif  // PSKIT_COMMON_LOGGING_H_
