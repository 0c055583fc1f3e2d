// worker/algorithms/algorithm.h
//
// Algorithm: how one worker's model meets the rest of the job. The training
// loop (worker/trainer.h) computes a gradient each step; an Algorithm decides
// what happens around that: where the starting weights come from, what each
// step does with the gradient locally, and what it sends to and takes from
// the shards. One small class per algorithm, chosen once by MakeAlgorithm,
// the only place that reads an algorithm's name (with TrainsWithoutShards):
//
//   downpour  push the gradient every n_push steps, pull every n_fetch
//             (worker/algorithms/downpour.h)
//   easgd     local momentum SGD, an elastic Exchange every tau steps
//             (worker/algorithms/easgd.h)
//   local     no shards: the shards' optimizer applied locally, from the
//             shards' initial weights (worker/algorithms/local.h)
//
// A synchronous or bounded-staleness algorithm is a Communicate that waits
// on the shards' clock; a strategy written elsewhere (Python) implements the
// same four calls.
//
// The loop calls, on one thread:
//   Setup()                                     once, before the first step
//   per step: ForwardBackward (gradient in model->grad(i)), then
//     AfterGradient(step)    inside the step's "compute" phase
//     Communicate(step, phases)   marks its own phases (push, pull, ...)
//     JobDone()              the job was ended elsewhere: stop
//   Drain(phases)          once, after the last step: communication still
//                          in flight is finished, its error returned
//   Finish()                                    once, after Drain
// After an error the loop stops calling; destroying the Algorithm releases
// everything (threads joined), without Finish's goodbyes.
//
// Thread safety: one thread (the training loop) calls every method; an
// algorithm may run its communication on a thread of its own (downpour with
// overlap, worker/algorithms/comm_thread.h), joined by its destructor.
#ifndef PSKIT_WORKER_ALGORITHMS_ALGORITHM_H_
#define PSKIT_WORKER_ALGORITHMS_ALGORITHM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/backend/backend.h"
#include "worker/job.h"
#include "worker/model/mlp.h"
#include "worker/worker_metrics.h"

namespace pskit::worker {

// The algorithm and its parameters; each algorithm reads its own.
struct AlgorithmOptions {
  // downpour, easgd or local. Default: downpour.
  std::string name = "downpour";
  // downpour: push every n_push steps (the gradients summed meanwhile) and
  // pull fresh weights every n_fetch (one PushPull when both fall on a
  // step). Default: 1 and 1.
  int n_push = 1;
  int n_fetch = 1;
  // downpour: exchange on a communication thread while the next step
  // computes (one more step of staleness). Default: off (on 2 shared cores
  // it bought no throughput and cost time to the target; see
  // NOTES-README-O.md).
  bool overlap = false;
  // downpour: apply each gradient to the worker's own weights with the
  // job's optimizer as well (Dean et al. 2012, Algorithm 7.1), so the steps
  // between fetches build on each other rather than recomputing gradients
  // at the same weights. Needs n_fetch >= 2. Default: off.
  bool local_update = false;
  // easgd: local steps between exchanges. Default: 4.
  int tau = 4;
  // easgd: the moving rate of an exchange, in (0, 1]; 0 = 0.9 / world.
  float alpha = 0;
  // easgd: the local optimizer (momentum SGD; EAMSGD with nesterov).
  float local_lr = 0.05f;
  float local_momentum = 0.0f;
  bool nesterov = false;
};

// What an algorithm works on; everything borrowed must outlive it.
struct AlgorithmContext {
  const JobOptions* job = nullptr;  // shards, namespace, optimizer
  Backend* backend = nullptr;
  Mlp* model = nullptr;  // its params and grads are the algorithm's to use
  std::string worker_name;  // for the lease and logs
  int world = 1;            // number of workers in the job
};

class Algorithm {
 public:
  virtual ~Algorithm() = default;

  // Puts the starting weights into the model (pulled from the shards, or
  // computed as the shards would) and joins the job where there is one.
  // Errors: the shards' (after the client's retries), the backend's.
  [[nodiscard]] virtual absl::Status Setup() = 0;

  // Step `step` (1, 2, ...) has left its gradient in model->grad(i): the
  // local part of the update (an optimizer step, a running sum, staging
  // for the wire). Runs inside the step's "compute" phase.
  [[nodiscard]] virtual absl::Status AfterGradient(int64_t step) = 0;

  // The communication of step `step`, if any, each call marked as a phase
  // on `phases` (may be null). A shard that restarted empty (NOT_FOUND) is
  // given the model again and this worker starts over from its weights; the
  // update in hand is not repeated (shards that took it must not take it
  // twice). Other errors: the shards', the backend's.
  [[nodiscard]] virtual absl::Status Communicate(int64_t step,
                                                 PhaseSink* phases) = 0;

  // Waits for communication still in flight (an algorithm that overlaps
  // it with compute) and returns its error as Communicate would have.
  [[nodiscard]] virtual absl::Status Drain(PhaseSink* /*phases*/) {
    return absl::OkStatus();
  }

  // True once the job was ended elsewhere (the evaluator reached its
  // target, psctl drain). Cheap; polled after every step.
  virtual bool JobDone() const { return false; }

  // Leaves the job (the shards drop this worker at once instead of when its
  // lease lapses). Failures are logged, not returned: the training is over.
  virtual void Finish() {}
};

// Makes the algorithm `options.name` for `context`, checking its options
// and allocating its buffers; it touches no shard yet. INVALID_ARGUMENT for
// an unknown name (the message lists the known ones) or unusable options
// (naming the flag), such as a shard algorithm without shards.
absl::StatusOr<std::unique_ptr<Algorithm>> MakeAlgorithm(
    const AlgorithmOptions& options, const AlgorithmContext& context);

// True when the algorithm `name` trains without shards (local), so no
// evaluator watches it and the worker scores itself on the test set. False
// for the others, and for unknown names (MakeAlgorithm refuses those).
bool TrainsWithoutShards(absl::string_view name);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_ALGORITHMS_ALGORITHM_H_
