// worker/algorithms/shard_session.cc: joining, recovering and leaving.
#include "worker/algorithms/shard_session.h"

#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace pskit::worker {

ShardSession::ShardSession(const AlgorithmContext& context)
    : context_(context),
      decls_(ModelDecls(*context.model)),
      params_(ParamPointers(context.model)),
      weights_(*context.model) {}

absl::Status ShardSession::Join() {
  const JobOptions& job = *context_.job;
  PSKIT_ASSIGN_OR_RETURN(client_, Client::Connect(job.shards, job.client));
  PSKIT_RETURN_IF_ERROR(client_->Declare(job.ns, job.server_config, decls_));
  // With the namespace: the shards refuse to drop it while this trains.
  PSKIT_RETURN_IF_ERROR(
      client_->RegisterWorker(context_.worker_name, job.ns).status());
  PSKIT_RETURN_IF_ERROR(client_->Pull(job.ns, weights_.mutable_views));
  PSKIT_RETURN_IF_ERROR(WeightsToModel());
  // Every 0.5 s: a heartbeat is one small call per shard, and it is how a
  // worker learns that the evaluator ended the job (at 2 s, workers
  // trained on for up to 2 s after the target was reached).
  lease_ = std::make_unique<LeaseKeeper>(client_.get(), job.ns,
                                         absl::Milliseconds(500));
  return absl::OkStatus();
}

absl::Status ShardSession::Recover(absl::Status s) {
  if (s.code() != absl::StatusCode::kNotFound) return s;
  const JobOptions& job = *context_.job;
  spdlog::warn("{}: {}; declaring the model and registering again",
               context_.worker_name, s.ToString());
  PSKIT_RETURN_IF_ERROR(client_->Declare(job.ns, job.server_config, decls_));
  PSKIT_RETURN_IF_ERROR(client_->Heartbeat(job.ns).status());
  PSKIT_RETURN_IF_ERROR(client_->Pull(job.ns, weights_.mutable_views));
  return WeightsToModel();
}

absl::Status ShardSession::WeightsToModel() {
  return weights_.CopyTo(context_.backend, params_);
}

absl::Status ShardSession::ModelToWeights() {
  return weights_.CopyFrom(context_.backend, params_);
}

void ShardSession::Leave() {
  lease_.reset();
  if (client_ == nullptr) return;
  if (absl::Status s = client_->Leave(); !s.ok()) {
    spdlog::warn("{}: leave: {}", context_.worker_name, s.ToString());
  }
}

}  // namespace pskit::worker
