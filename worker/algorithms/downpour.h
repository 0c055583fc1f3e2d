// worker/algorithms/downpour.h
//
// Downpour SGD (Dean et al. 2012): the worker computes a gradient every
// step and pushes it to the shards every n_push steps (summed since the last
// push); it pulls fresh weights every n_fetch steps, in one PushPull when
// both fall on the same step. The shards apply the job's optimizer.
//
// With overlap (AlgorithmOptions::overlap, off by default), the exchange of
// step t runs on a communication thread (comm_thread.h) while step t+1
// computes on the weights the model holds; at step t+1's end the worker
// waits for it if need be, copies the fresh weights into the model, and
// hands over step t+1's gradient. Each gradient is then one of this
// worker's own pushes staler (pskit_worker_staleness_pushes), and each
// step costs max(compute, exchange) instead of their sum.
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
