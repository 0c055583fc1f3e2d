// worker/algorithms/downpour.h
//
// Downpour SGD (Dean et al. 2012): the worker computes a gradient every
// step and pushes it to the shards every n_push steps (summed since the last
// push); it pulls fresh weights every n_fetch steps, in one PushPull when
// both fall on the same step. The shards apply the job's optimizer.
//
// Thread safety: see worker/algorithms/algorithm.h.
#ifndef PSKIT_WORKER_ALGORITHMS_DOWNPOUR_H_
#define PSKIT_WORKER_ALGORITHMS_DOWNPOUR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "worker/algorithms/algorithm.h"

namespace pskit::worker {

// INVALID_ARGUMENT without shards, or with n_push or n_fetch below 1.
absl::StatusOr<std::unique_ptr<Algorithm>> MakeDownpour(
    const AlgorithmOptions& options, const AlgorithmContext& context);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_ALGORITHMS_DOWNPOUR_H_
