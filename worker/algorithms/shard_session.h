// worker/algorithms/shard_session.h
//
// ShardSession: what every algorithm that trains against shards shares: the
// client, joining the job (declare the model, register, pull the starting
// weights, keep the lease), the host copy of the weights the wire fills, the
// recovery from a shard that restarted empty, and leaving.
//
// Example (inside an algorithm):
//   PSKIT_RETURN_IF_ERROR(session_.Join());              // Setup
//   ...
//   PSKIT_RETURN_IF_ERROR(session_.Recover(
//       session_.client()->Pull(ns, session_.weights().mutable_views)));
//   PSKIT_RETURN_IF_ERROR(session_.WeightsToModel());
//
// Thread safety: one thread (the training loop); the lease keeper's thread
// is internal and joined by Leave() or the destructor.
#ifndef PSKIT_WORKER_ALGORITHMS_SHARD_SESSION_H_
#define PSKIT_WORKER_ALGORITHMS_SHARD_SESSION_H_

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "client/client.h"
#include "worker/algorithms/algorithm.h"
#include "worker/host_params.h"
#include "worker/lease_keeper.h"

namespace pskit::worker {

class ShardSession {
 public:
  // Nothing is contacted yet. `context` (borrowed, with what it points to)
  // must outlive the session. Precondition: context.job->shards non-empty.
  explicit ShardSession(const AlgorithmContext& context);
  ShardSession(const ShardSession&) = delete;
  ShardSession& operator=(const ShardSession&) = delete;

  // Connects, declares the model (idempotent: whoever comes first creates
  // it), registers the worker, pulls the weights into the model and starts
  // renewing the lease. Errors: the shards' after the client's retries.
  [[nodiscard]] absl::Status Join();

  // A shard that restarted without a checkpoint answers NOT_FOUND (the
  // namespace, or this worker's lease, is gone): declares the model and
  // renews the lease again, then pulls fresh weights into the model, and
  // returns OK. Any other `s` is returned as it is. Precondition: Join()
  // succeeded.
  [[nodiscard]] absl::Status Recover(absl::Status s);

  // The client, after Join().
  Client* client() { return client_.get(); }
  // Host copy of the model's weights, which pulls fill and exchanges send.
  HostParams& weights() { return weights_; }
  // weights() -> the model's params, and back.
  [[nodiscard]] absl::Status WeightsToModel();
  [[nodiscard]] absl::Status ModelToWeights();

  // True once a heartbeat said the job is done.
  bool job_done() const { return lease_ != nullptr && lease_->job_done(); }

  // Stops the lease keeper and leaves the shards; a failed Leave is logged.
  void Leave();

 private:
  // Constant after construction.
  const AlgorithmContext context_;
  const std::vector<TensorDecl> decls_;
  const std::vector<float*> params_;  // the model's, on the backend

  HostParams weights_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<LeaseKeeper> lease_;
};

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_ALGORITHMS_SHARD_SESSION_H_
