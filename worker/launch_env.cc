// worker/launch_env.cc: RankAndWorld, the launchers' variables in order.
#include "worker/launch_env.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace pskit::worker {
namespace {

absl::Status Check(const RankWorld& rw) {
  if (rw.world < 1 || rw.rank < 0 || rw.rank >= rw.world) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank ", rw.rank, " and world ", rw.world, " (from ", rw.source,
        "): the world must be >= 1 and the rank in [0, world)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RankWorld> RankAndWorld(int flag_rank, int flag_world,
                                       const EnvLookup& env) {
  if ((flag_rank >= 0) != (flag_world >= 0)) {
    return absl::InvalidArgumentError(
        "give both --rank and --world, or neither (then SLURM, Open MPI, "
        "PMI or Kubernetes variables are used)");
  }
  RankWorld rw;
  if (flag_rank >= 0) {
    rw = {flag_rank, flag_world, "flags"};
    if (absl::Status s = Check(rw); !s.ok()) return s;
    return rw;
  }
  const struct {
    const char* rank;
    const char* world;
    const char* name;
  } launchers[] = {{"SLURM_PROCID", "SLURM_NTASKS", "SLURM"},
                   {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI"},
                   {"PMI_RANK", "PMI_SIZE", "PMI"},
                   {"JOB_COMPLETION_INDEX", "PSKIT_WORLD_SIZE", "Kubernetes"}};
  for (const auto& l : launchers) {
    const char* r = env(l.rank);
    const char* w = env(l.world);
    if (r == nullptr || w == nullptr) continue;
    rw.source = l.name;
    if (!absl::SimpleAtoi(r, &rw.rank) || !absl::SimpleAtoi(w, &rw.world)) {
      return absl::InvalidArgumentError(absl::StrCat(
          l.rank, "='", r, "' and ", l.world, "='", w, "' are not numbers"));
    }
    if (absl::Status s = Check(rw); !s.ok()) return s;
    return rw;
  }
  if (const char* index = env("JOB_COMPLETION_INDEX"); index != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "JOB_COMPLETION_INDEX=", index,
        " is set (a Kubernetes Indexed Job) but PSKIT_WORLD_SIZE is not: set "
        "PSKIT_WORLD_SIZE in the pod template to the Job's completions (the "
        "number of workers), or give --rank and --world"));
  }
  return RankWorld{0, 1, "default"};
}

}  // namespace pskit::worker
