// worker/algorithms/local_optimizer.h
//
// LocalOptimizer: the shards' optimizer (the job's NamespaceConfig, sgd,
// momentum, nesterov or adam), applied on the worker to the model's own
// weights with the model's gradient, its state (momentum, Adam's moments)
// kept on the backend. `--algorithm local` trains with it alone; downpour
// with `local_update` takes a step with it between fetches (Dean et al.
// 2012, Algorithm 7.1: the replica applies each gradient to its copy).
//
// Thread safety: none; the training loop's thread only.
#ifndef PSKIT_WORKER_ALGORITHMS_LOCAL_OPTIMIZER_H_
#define PSKIT_WORKER_ALGORITHMS_LOCAL_OPTIMIZER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pskit/v1/ps.pb.h"
#include "worker/algorithms/algorithm.h"

namespace pskit::worker {

class LocalOptimizer {
 public:
  // INVALID_ARGUMENT for a config the shards would refuse, or an optimizer
  // other than sgd, momentum, nesterov and adam (`who` names the caller in
  // that message, e.g. "--algorithm local").
  static absl::StatusOr<LocalOptimizer> Make(const AlgorithmContext& context,
                                             const char* who);

  LocalOptimizer(LocalOptimizer&&) = default;
  LocalOptimizer& operator=(LocalOptimizer&&) = default;

  // One update of every parameter with its gradient; `step` counts from 1
  // (Adam's bias correction). With `sums` (one per parameter), also adds
  // each gradient to its sum in the same pass, or starts the sums from this
  // gradient with `restart_sums` (Backend::AdamStep).
  absl::Status Step(int64_t step, std::vector<DeviceBuffer>* sums = nullptr,
                    bool restart_sums = false);

 private:
  LocalOptimizer(const AlgorithmContext& context, v1::OptimizerConfig opt,
                 std::vector<DeviceBuffer> slot1,
                 std::vector<DeviceBuffer> slot2);

  Backend* backend_;
  v1::OptimizerConfig optimizer_;  // normalized: every default filled
  std::vector<float*> params_;     // the model's, on the backend
  std::vector<float*> grads_;
  // Per tensor: momentum (or Adam's first moment), and Adam's second moment.
  std::vector<DeviceBuffer> slot1_;
  std::vector<DeviceBuffer> slot2_;
};

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_ALGORITHMS_LOCAL_OPTIMIZER_H_
