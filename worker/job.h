// worker/job.h
//
// JobOptions: what a worker and an evaluator of one job share (the shards,
// the namespace, the model, the shards' optimizer), and the checks and
// declarations both make from it: CheckFits (does the data fit the model)
// and ModelDecls (the model's tensors as Declare takes them).
//
// Thread safety: plain data and pure functions.
#ifndef PSKIT_WORKER_JOB_H_
#define PSKIT_WORKER_JOB_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "client/client.h"
#include "worker/data/dataset.h"
#include "worker/model/mlp.h"
#include "worker/worker_metrics.h"

namespace pskit::worker {

struct JobOptions {
  std::vector<std::string> shards;  // in shard order; empty only for "local"
  std::string ns = "default";
  ClientOptions client;
  MlpConfig model;
  // The shards' optimizer for this namespace (also the local baseline's).
  v1::NamespaceConfig server_config;
  // Shuffling seed (the initial weights come from the model's tensor specs,
  // the same in every mode).
  uint64_t seed = 1;
  double log_interval_s = 5;  // progress lines; 0 = none
  double max_seconds = 0;     // stop after this long; 0 = no limit
  // Steps, samples, phases, loss and evaluations go here (borrowed; may be
  // null).
  WorkerMetrics* metrics = nullptr;
  // Notified to stop early (ps-worker: on SIGTERM or SIGINT): training ends
  // after the step in hand, leaves the shards and returns its summary; the
  // evaluator stops waiting for its next round. Borrowed; may be null.
  const absl::Notification* stop = nullptr;
};

// OK when `data` is non-empty and fits `model`: as many features as the
// input layer, no more classes than the output layer. INVALID_ARGUMENT
// otherwise, saying how to change --layers.
[[nodiscard]] absl::Status CheckFits(const Dataset& data,
                                     const MlpConfig& model);

// The model's tensors as Declare takes them (initializers from its specs).
std::vector<TensorDecl> ModelDecls(const Mlp& mlp);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_JOB_H_
