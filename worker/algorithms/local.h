// worker/algorithms/local.h
//
// Local: training without shards, the baseline that shows what the cluster
// costs and gains. The shards' optimizer (sgd, momentum, nesterov or adam,
// from the job's server_config) is applied to the worker's own weights, which
// start as the shards would start them: the model's tensor specs through
// common/initializer.h, in the job's namespace, so a local run and a cluster
// run of the same model begin from identical weights.
//
// Thread safety: see worker/algorithms/algorithm.h.
#ifndef PSKIT_WORKER_ALGORITHMS_LOCAL_H_
#define PSKIT_WORKER_ALGORITHMS_LOCAL_H_

#include <memory>

#include "absl/status/statusor.h"
#include "worker/algorithms/algorithm.h"

namespace pskit::worker {

// INVALID_ARGUMENT when the job's server_config does not normalize (no
// optimizer given, bad hyper-parameters) or names an optimizer not run
// locally (adagrad, rmsprop, adamw).
absl::StatusOr<std::unique_ptr<Algorithm>> MakeLocal(
    const AlgorithmOptions& options, const AlgorithmContext& context);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_ALGORITHMS_LOCAL_H_
