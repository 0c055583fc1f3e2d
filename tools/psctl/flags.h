// tools/psctl/flags.h
//
// psctl's flags and its own command-line parser: flags may come anywhere
// (before or after the command), as --name=value, --name value, --bool or
// --nobool; "--" ends them. Only psctl's own flags are accepted.
//
// Thread safety: ParseArgs runs once, from main, before other threads start.
#ifndef PSKIT_TOOLS_PSCTL_FLAGS_H_
#define PSKIT_TOOLS_PSCTL_FLAGS_H_

#include <set>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"

ABSL_DECLARE_FLAG(std::string, shards);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(double, timeout_s);
ABSL_DECLARE_FLAG(double, wait_s);
ABSL_DECLARE_FLAG(std::string, id);
ABSL_DECLARE_FLAG(bool, wait);
ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(std::string, reason);
ABSL_DECLARE_FLAG(std::string, role);
ABSL_DECLARE_FLAG(std::string, namespaces);

namespace pskit::psctl {

// Sets the flags given anywhere in argv (--name=value, --name value, --bool,
// --nobool; "--" ends them) and returns the other arguments. Only psctl's
// own flags are accepted. `help` is set by --help or -h; `given` (if not
// null) receives the name of every flag on the command line. INVALID_ARGUMENT
// for an unknown flag or a bad value.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> ParseArgs(
    int argc, char** argv, bool* help, std::set<std::string>* given = nullptr);

}  // namespace pskit::psctl

#endif  // PSKIT_TOOLS_PSCTL_FLAGS_H_
