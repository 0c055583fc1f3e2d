// worker/trainer.h
//
// Train: one worker of a job. It takes its rank's slice of the data, runs
// the training loop (batch, forward and backward, then the Algorithm's local
// update and communication; see worker/algorithms/algorithm.h), logs its
// progress, and ends after `epochs`, at the time limit, when the evaluator
// ends the job, or on a stop request; it then leaves the shards and returns
// its summary. The evaluator is in worker/evaluator.h.
//
// Example:
//   TrainOptions o;
//   o.job.shards = {"127.0.0.1:7000"};
//   o.job.model = *ParseMlpConfig("784,256,10", "relu", "xent");
//   o.algorithm.name = "easgd";
//   PSKIT_ASSIGN_OR_RETURN(TrainSummary s, Train(o, backend.get(), train));
//
// Thread safety: each call owns its client, model and threads; concurrent
// calls (several workers in one process, as the tests do) are independent.
#ifndef PSKIT_WORKER_TRAINER_H_
#define PSKIT_WORKER_TRAINER_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "worker/algorithms/algorithm.h"
#include "worker/backend/backend.h"
#include "worker/data/dataset.h"
#include "worker/job.h"

namespace pskit::worker {

struct TrainOptions {
  JobOptions job;
  // Which algorithm and its parameters. Default: downpour.
  AlgorithmOptions algorithm;
  int batch_size = 64;
  int epochs = 10;
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
  // Score this worker's own model on `local_test` (borrowed; null = never)
  // every local_eval_interval_s and stop at local_target_accuracy (0 =
  // never), as the evaluator would. ps-worker gives it for local only, the
  // baseline that has no evaluator.
  const Dataset* local_test = nullptr;
  // What local_test is, in the log lines ("<name> accuracy A"): "test", or
  // "validation fold i of K" (k-fold cross-validation).
  std::string local_test_name = "test";
  double local_eval_interval_s = 1;
  double local_target_accuracy = 0;
};

struct TrainSummary {
  int64_t steps = 0;
  int64_t samples = 0;
  double seconds = 0;
  double samples_per_s = 0;
  // CPU time of the whole process (every thread: the communication thread's
  // and gRPC's included) over those `seconds`: a worker that trains at one
  // core's full rate shows about `seconds`, one that waits on the shards less.
  double cpu_seconds = 0;
  float last_loss = 0;
  bool ended_by_evaluator = false;
  bool stopped = false;  // JobOptions::stop was notified
  // With a local_test: the last accuracy and when the target was met.
  double local_accuracy = -1;
  double seconds_to_target = -1;
};

// Trains on `train` (this rank's slice of it). INVALID_ARGUMENT for bad
// options or a dataset that does not fit the model, before anything is sent
// to the shards; errors from the shards (after the client's retries) end
// the run.
absl::StatusOr<TrainSummary> Train(const TrainOptions& options,
                                   Backend* backend, const Dataset& train);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_TRAINER_H_
