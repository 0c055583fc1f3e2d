// worker/launch_env.h
//
// RankAndWorld: a worker's rank and world size, from --rank/--world or, when
// those are not given, from the launcher's environment: SLURM (srun),
// Open MPI (mpirun) or PMI (MPICH, Intel MPI, hydra), in that order.
//
// Thread safety: pure functions of their arguments.
#ifndef PSKIT_WORKER_LAUNCH_ENV_H_
#define PSKIT_WORKER_LAUNCH_ENV_H_

#include <functional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace pskit::worker {

// Looks up an environment variable; nullptr when unset.
using EnvLookup = std::function<const char*(const char*)>;

struct RankWorld {
  int rank = 0;
  int world = 1;
  std::string source;  // "flags", "SLURM", "Open MPI", "PMI" or "default"
};

// `flag_rank`/`flag_world` < 0 mean "not given". INVALID_ARGUMENT when only
// one flag is given, a variable is not a number, or rank is not in
// [0, world).
absl::StatusOr<RankWorld> RankAndWorld(int flag_rank, int flag_world,
                                       const EnvLookup& env);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_LAUNCH_ENV_H_
