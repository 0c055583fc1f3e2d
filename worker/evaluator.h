// worker/evaluator.h
//
// Evaluate: the evaluator of a job. It pulls the model every few seconds,
// scores it on the test set, reports each score to the shards, and ends the
// job (for every worker, through their heartbeats) at a target accuracy,
// after `patience` evaluations without a new best, or at a time limit.
// ScoreModel: the scoring itself, shared with the local baseline's scoring.
//
// It declares the model itself (Declare is idempotent), so the evaluator and
// the workers may start in any order.
//
// Thread safety: each Evaluate call owns its client and model; concurrent
// calls are independent. ScoreModel uses the caller's backend and model.
#ifndef PSKIT_WORKER_EVALUATOR_H_
#define PSKIT_WORKER_EVALUATOR_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/backend/backend.h"
#include "worker/data/dataset.h"
#include "worker/job.h"
#include "worker/model/mlp.h"

namespace pskit::worker {

struct EvalOptions {
  JobOptions job;
  double eval_interval_s = 2;
  double target_accuracy = 0;  // end the job on reaching it; 0 = never
  int patience = 0;  // end after this many evaluations without a new best
  int batch_size = 1000;
  // What the data is when it is not the test set, e.g. "validation fold 1
  // of 5" (k-fold cross-validation): named at the start and in every
  // evaluation's log line. Default "": the test set.
  std::string validation;
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

// Runs the evaluator on `test` until the job ends (see above), the job was
// ended elsewhere (another evaluator, psctl drain) or `job.stop` is
// notified. INVALID_ARGUMENT for options without shards or without a way to
// end the job, or data that does not fit the model; errors from the shards
// (after the client's retries) end it. A shard that answers NOT_FOUND (it
// restarted empty) gets the model declared again.
absl::StatusOr<EvalSummary> Evaluate(const EvalOptions& options,
                                     Backend* backend, const Dataset& test);

struct Score {
  double loss = 0;      // mean over the samples
  double accuracy = 0;  // fraction of samples whose argmax is the label
};

// Scores `model` (as it is on `backend`) on all of `data`, in batches of up
// to `batch` rows staged through `x` (device memory for batch *
// data.feature_dim floats). Precondition: the model was created for batches
// of `batch` rows and `data` fits it. Errors are the backend's.
absl::StatusOr<Score> ScoreModel(Backend* backend, Mlp* model,
                                 const Dataset& data, int batch, float* x);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_EVALUATOR_H_
