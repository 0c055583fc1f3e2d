// worker/algorithms/easgd.h
//
// Elastic averaging SGD (Zhang, Choromanska & LeCun 2015): the worker runs
// its own momentum SGD (local_lr, local_momentum; EAMSGD with nesterov) and
// every tau steps trades an elastic pull with the shards' center variable
// (Exchange with moving rate alpha, 0.9 / world when alpha is 0).
//
// Thread safety: see worker/algorithms/algorithm.h.
#ifndef PSKIT_WORKER_ALGORITHMS_EASGD_H_
#define PSKIT_WORKER_ALGORITHMS_EASGD_H_

#include <memory>

#include "absl/status/statusor.h"
#include "worker/algorithms/algorithm.h"

namespace pskit::worker {

// INVALID_ARGUMENT with tau below 1 or alpha outside (0, 1].
absl::StatusOr<std::unique_ptr<Algorithm>> MakeEasgd(
    const AlgorithmOptions& options, const AlgorithmContext& context);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_ALGORITHMS_EASGD_H_
