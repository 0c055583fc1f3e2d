// worker/trainer.h
//
// The training side of a job: Train (one worker: local steps on its slice of
// the data, with downpour, easgd or no server at all) and Evaluate (the
// evaluator: pulls the model every few seconds, scores it on the test set,
// reports to the shards, and ends the job at a target accuracy or when it
// stops improving).
//
// Both declare the model themselves (Declare is idempotent), so processes
// may start in any order.
//
// Thread safety: each call owns its client, model and threads; concurrent
// calls (several workers in one process, as the tests do) are independent.
#ifndef PSKIT_WORKER_TRAINER_H_
#define PSKIT_WORKER_TRAINER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "client/client.h"
#include "worker/backend/backend.h"
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

struct TrainOptions {
  JobOptions job;
  // downpour: a gradient every step, pushed every n_push steps (summed) and
  //   fresh weights pulled every n_fetch (one PushPull when both fall on a
  //   step).
  // easgd: local momentum SGD (local_lr, local_momentum, nesterov) for tau
  //   steps, then Exchange with alpha (0: 0.9 / world).
  // local: the same loop with the server's optimizer applied locally, no
  //   server (the baseline for the overhead).
  std::string algorithm = "downpour";
  int batch_size = 64;
  int epochs = 10;
  int n_push = 1;
  int n_fetch = 1;
  int tau = 4;
  float alpha = 0;
  float local_lr = 0.05f;
  float local_momentum = 0.0f;
  bool nesterov = false;
  int rank = 0;
  int world = 1;
  std::string name;  // for the lease and logs; default "rank<r>"
  // Assemble the next batch on a prefetch thread (see worker/data/batcher.h).
  bool prefetch = false;
  // Write a Chrome trace of every step's spans here ("" = none).
  std::string trace_file;
  // Tests only: called on the training thread after every step with the
  // step count (to act at an exact point, such as restarting a shard).
  std::function<void(int64_t)> after_step;
  // local only: score the model on `local_test` every local_eval_interval_s
  // and stop at local_target_accuracy (0 = never), as the evaluator would.
  const Dataset* local_test = nullptr;
  double local_eval_interval_s = 1;
  double local_target_accuracy = 0;
};

struct TrainSummary {
  int64_t steps = 0;
  int64_t samples = 0;
  double seconds = 0;
  double samples_per_s = 0;
  float last_loss = 0;
  bool ended_by_evaluator = false;
  bool stopped = false;  // JobOptions::stop was notified
  // local with a test set: the last accuracy and when the target was met.
  double local_accuracy = -1;
  double seconds_to_target = -1;
};

// Trains on `train` (this rank's slice of it). INVALID_ARGUMENT for bad
// options or a dataset that does not fit the model; errors from the shards
// (after the client's retries) end the run.
absl::StatusOr<TrainSummary> Train(const TrainOptions& options,
                                   Backend* backend, const Dataset& train);

struct EvalOptions {
  JobOptions job;
  double eval_interval_s = 2;
  double target_accuracy = 0;  // end the job on reaching it; 0 = never
  int patience = 0;  // end after this many evaluations without a new best
  int batch_size = 1000;
};

struct EvalSummary {
  int evaluations = 0;
  double best_accuracy = 0;
  double last_accuracy = 0;
  double last_loss = 0;
  double seconds = 0;
  double seconds_to_target = -1;  // -1: not reached
  std::string reason;             // why the job ended
};

absl::StatusOr<EvalSummary> Evaluate(const EvalOptions& options,
                                     Backend* backend, const Dataset& test);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_TRAINER_H_
