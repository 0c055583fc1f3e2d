#include "tools/psrun/launch/launcher.h"

#include <cstdio>
#include <string>

#include "tools/psrun/launch/supervisor.h"

namespace pskit::launch {

int RunLocalCluster(const LauncherOptions& options) {
  if (absl::Status s = ValidateLauncherOptions(options); !s.ok()) {
    std::fprintf(stderr, "psrun: %s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  Launcher launcher(options, *InspectWorkerArgs(options.worker_args));
  return launcher.Run();
}

}  // namespace pskit::launch
