// worker/run.h
//
// RunWorker: the whole of a ps-worker process after its flags are parsed:
// read the data, build the model, serve or push metrics, pick the backend,
// then train (role worker) or evaluate (role evaluator), and print the
// summary line that psrun and the tests read:
//
//   worker summary: rank R: S steps, N samples in T s, X samples/s, last
//       loss L[, ended by the evaluator | , stopped by a signal][, test
//       accuracy A reached after T s]
//   evaluator summary: E evaluations in T s, best accuracy B, last A (loss
//       L), target reached after T s | not reached; ended: REASON
//
// Thread safety: call once, from main.
#ifndef PSKIT_WORKER_RUN_H_
#define PSKIT_WORKER_RUN_H_

#include <string>

#include "common/exit_status.h"
#include "worker/data/data_source.h"
#include "worker/evaluator.h"
#include "worker/job.h"
#include "worker/launch_env.h"
#include "worker/trainer.h"

namespace pskit::worker {

struct WorkerOptions {
  // worker or evaluator. Default: worker.
  std::string role = "worker";
  RankWorld rank_world;  // the evaluator reports as rank 0
  DataSourceOptions data;
  // The model: layer widths ("784,256,10"; empty: the data's width,
  // 256,128, its number of classes; csv/hdf5 need them given), activation
  // and loss as ParseMlpConfig takes them.
  std::string layers;
  std::string activation = "relu";
  std::string loss = "xent";
  // Everything but `model` and `metrics`, which RunWorker fills in.
  JobOptions job;
  // Role worker: everything but job, rank, world and local_test, which
  // RunWorker fills in. The local baseline scores itself every
  // eval.eval_interval_s and stops at eval.target_accuracy.
  TrainOptions train;
  // Role evaluator: everything but job.
  EvalOptions eval;
  // auto, cpu or cuda; OpenBLAS threads of the CPU backend.
  std::string backend = "auto";
  int threads = 1;
  // The Prometheus endpoint's port (0 picks one, -1 serves none) and
  // address; a Pushgateway URL ("" = none) and the seconds between pushes.
  int metrics_port = -1;
  std::string metrics_host = "0.0.0.0";
  std::string pushgateway;
  double pushgateway_interval_s = 10;
};

// Runs the process and returns its exit status: 0 done (epochs, time
// limit, the evaluator ended the job, or a stop request; for the evaluator
// with a target: the target was reached), 1 failed, 2 bad options (a
// message on stderr says which), kExitTargetNotReached (3) for an evaluator
// whose target was not reached (common/exit_status.h).
int RunWorker(const WorkerOptions& options);

// Prints "ps-worker: <msg>" to stderr and returns 2, ps-worker's exit status
// for a bad command line.
int Usage(const std::string& msg);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_RUN_H_
