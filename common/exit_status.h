// common/exit_status.h
//
// Exit statuses that more than one pskit program agrees on. A program's own
// statuses (0 done, 1 failed, 2 bad flags) are in its main.cc header; this
// file holds the ones another program or a deployment reads.
//
// Thread safety: constants only.
#ifndef PSKIT_COMMON_EXIT_STATUS_H_
#define PSKIT_COMMON_EXIT_STATUS_H_

namespace pskit {

// ps-worker --role evaluator, given a --target_accuracy, when the job ended
// without reaching it (time limit, patience, a stop request): the verdict
// `docker compose up --exit-code-from evaluator`, a Kubernetes Job and a
// SLURM step see without reading the log. psrun counts it as the
// evaluator's verdict, not as a failed child (it exits 1: target missed).
inline constexpr int kExitTargetNotReached = 3;

}  // namespace pskit

#endif  // PSKIT_COMMON_EXIT_STATUS_H_
