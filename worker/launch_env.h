// worker/launch_env.h
//
// RankAndWorld: a worker's rank and world size, from --rank/--world or, when
// those are not given, from the launcher's environment: SLURM (srun),
// Open MPI (mpirun), PMI (MPICH, Intel MPI, hydra) or a Kubernetes Indexed
// Job, in that order. Kubernetes gives each pod of an Indexed Job its index
// in JOB_COMPLETION_INDEX but not the Job's size, so the world comes from
// PSKIT_WORLD_SIZE, which the Job's pod template must set to its
// `completions` (deploy/k8s does).
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
  // "flags", "SLURM", "Open MPI", "PMI", "Kubernetes" or "default".
  std::string source;
};

// `flag_rank`/`flag_world` < 0 mean "not given". INVALID_ARGUMENT when only
// one flag is given, a variable is not a number, rank is not in [0, world),
// or JOB_COMPLETION_INDEX is set without PSKIT_WORLD_SIZE (the message says
// to set it to the Job's completions). PSKIT_WORLD_SIZE alone is ignored: a
// ConfigMap may give it to every pod, the evaluator's too.
absl::StatusOr<RankWorld> RankAndWorld(int flag_rank, int flag_world,
                                       const EnvLookup& env);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_LAUNCH_ENV_H_
