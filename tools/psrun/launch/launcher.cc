#include "tools/psrun/launch/launcher.h"

#include <cstdio>
#include <string>

#include "tools/psrun/launch/supervisor.h"
#include "tools/psrun/launch/worker_command.h"

namespace pskit::launch {

int RunLocalCluster(const LauncherOptions& options) {
  if (absl::Status s = ValidateLauncherOptions(options); !s.ok()) {
    std::fprintf(stderr, "psrun: %s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  // A worker command's arguments are its own: psrun reads nothing from them.
  WorkerFlagInfo info;
  std::string program = options.bin_dir + "/ps-worker";
  if (options.worker_command.empty()) {
    info = *InspectWorkerArgs(options.worker_args);
  } else {
    program = *FindProgram(options.worker_command[0], options.search_path);
  }
  if (!options.ns.empty()) info.ns = options.ns;
  Launcher launcher(options, std::move(info), std::move(program));
  return launcher.Run();
}

}  // namespace pskit::launch
