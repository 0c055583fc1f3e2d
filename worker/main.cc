// ps-worker: trains a model against a pskit cluster, or evaluates it.
//
//   ps-worker --shards h1:7000,h2:7000 --dataset idx
//       --data_path /usr/share/datasets/fashion-mnist --layers 784,256,128,10
//   ps-worker --role evaluator --shards ... --target_accuracy 0.88
//
// Rank and world come from --rank/--world or SLURM / Open MPI / PMI /
// Kubernetes Indexed Job (JOB_COMPLETION_INDEX with PSKIT_WORLD_SIZE)
// variables; each rank trains on its own slice of the data. With --folds K
// --fold i (k-fold cross-validation) the workers train on the training set
// without fold i and the evaluator scores fold i. Exit status: 0
// done (epochs, time limit, the evaluator ended the job, or SIGTERM/SIGINT:
// see worker/signals.h), 1 failed, 2 bad flags, 3 the evaluator's
// --target_accuracy was not reached.
//
// This file is the flags and their translation into WorkerOptions; the run
// itself is RunWorker (worker/run.h).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/security_flags.h"
#include "common/encoding.h"
#include "common/flags.h"
#include "common/layout.h"
#include "common/logging.h"
#include "common/malloc_tuning.h"
#include "common/optimizer_config.h"
#include "common/staleness_config.h"
#include "worker/data/dataset.h"
#include "worker/launch_env.h"
#include "worker/run.h"
#include "worker/signals.h"

ABSL_FLAG(std::string, shards, "",
          "comma-separated shard addresses in shard order (not for "
          "--algorithm local)");
ABSL_FLAG(std::string, namespace, "default", "the job's namespace");
ABSL_FLAG(std::string, role, "worker", "worker or evaluator");
ABSL_FLAG(std::string, algorithm, "downpour", "downpour, easgd or local");
ABSL_FLAG(std::string, layers, "",
          "layer widths, e.g. 784,512,256,10; empty: the data's width, "
          "256,128, the number of classes");
ABSL_FLAG(std::string, activation, "relu", "relu, tanh or sigmoid");
ABSL_FLAG(std::string, loss, "xent", "xent (softmax cross-entropy) or mse");
ABSL_FLAG(int32_t, batch_size, 64, "samples per step");
ABSL_FLAG(int32_t, epochs, 10, "passes over this rank's slice");
ABSL_FLAG(double, max_seconds, 0, "stop after this long; 0 = no limit");
ABSL_FLAG(std::string, optimizer, "adam",
          "the shards' optimizer: sgd, momentum, nesterov, adagrad, rmsprop, "
          "adam, adamw");
ABSL_FLAG(double, lr, 0.001, "the shards' learning rate");
ABSL_FLAG(double, momentum, std::nan(""),
          "the shards' momentum (momentum, nesterov); unset: 0.9");
ABSL_FLAG(std::string, compensation, "none",
          "the shards' staleness compensation: none, inverse, dcasgd-c, "
          "dcasgd-a or gem (README \"Staleness rules\")");
ABSL_FLAG(std::string, consistency, "async",
          "the shards' consistency: async, ssp:S (bounded staleness S), sync "
          "or sync:B (B backup workers)");
ABSL_FLAG(double, dc_lambda, std::nan(""),
          "dcasgd-c: lambda (unset: 0.04); dcasgd-a: lambda0 (unset: 2)");
ABSL_FLAG(double, dc_momentum, std::nan(""), "dcasgd-a: m (unset: 0.95)");
ABSL_FLAG(double, dc_epsilon, std::nan(""), "dcasgd-a: epsilon (unset: 1e-7)");
ABSL_FLAG(double, gem_momentum, std::nan(""), "gem: mu (unset: 0.9)");
ABSL_FLAG(double, gem_kappa, std::nan(""), "gem: kappa (unset: 1)");
ABSL_FLAG(double, gem_epsilon, std::nan(""), "gem: epsilon (unset: 1e-12)");
ABSL_FLAG(int32_t, n_push, 1, "downpour: push every n_push steps");
ABSL_FLAG(int32_t, n_fetch, 1, "downpour: pull every n_fetch steps");
ABSL_FLAG(bool, local_update, false,
          "downpour: also apply each gradient to this worker's weights with "
          "the job's optimizer, so the steps between fetches build on each "
          "other (Dean et al. 2012, Algorithm 7.1); needs --n_fetch >= 2");
ABSL_FLAG(bool, overlap, false,
          "downpour: push and pull on a communication thread while the next "
          "step computes (one more step of staleness); false: in turn");
ABSL_FLAG(int32_t, tau, 4, "easgd: local steps between exchanges");
ABSL_FLAG(double, alpha, 0, "easgd: moving rate; 0 = 0.9 / world");
ABSL_FLAG(double, local_lr, 0.05, "easgd: local learning rate");
ABSL_FLAG(double, local_momentum, 0.9, "easgd: local momentum (0 = SGD)");
ABSL_FLAG(bool, nesterov, false, "easgd: Nesterov momentum (EAMSGD)");
ABSL_FLAG(int32_t, rank, -1,
          "this worker's rank; -1: from the launcher (SLURM_PROCID, "
          "OMPI_COMM_WORLD_RANK, PMI_RANK, or Kubernetes' "
          "JOB_COMPLETION_INDEX, in that order)");
ABSL_FLAG(int32_t, world, -1,
          "number of workers; -1: from the launcher (SLURM_NTASKS, "
          "OMPI_COMM_WORLD_SIZE, PMI_SIZE, or PSKIT_WORLD_SIZE with "
          "JOB_COMPLETION_INDEX)");
ABSL_FLAG(std::string, dataset, "",
          "idx, csv, hdf5 or synthetic; empty: idx when --data_path is given, "
          "else "
          "synthetic");
ABSL_FLAG(std::string, data_path, "",
          "directory with train-images-idx3-ubyte[.gz] and the other three "
          "standard IDX files");
ABSL_FLAG(std::string, test_path, "",
          "csv/hdf5: the test-set file (the evaluator's data; --data_path is "
          "the training file)");
ABSL_FLAG(std::string, features, "features",
          "hdf5: name of the features dataset, shape [n, ...]");
ABSL_FLAG(std::string, labels, "labels",
          "hdf5: name of the labels dataset, shape [n]");
ABSL_FLAG(std::string, label_column, "last",
          "csv: the label's column: a 0-based index, a header name, or last");
ABSL_FLAG(int64_t, synthetic_train, 60000, "synthetic: training samples");
ABSL_FLAG(int64_t, synthetic_test, 10000, "synthetic: test samples");
ABSL_FLAG(int32_t, synthetic_dim, 32, "synthetic: features per sample");
ABSL_FLAG(int32_t, synthetic_classes, 10, "synthetic: classes");
ABSL_FLAG(int32_t, folds, 0,
          "k-fold cross-validation: K >= 2 folds of the training data "
          "(sample j is in fold j mod K), with --fold; 0: off (workers train "
          "on the training set, the evaluator scores the test set)");
ABSL_FLAG(int32_t, fold, -1,
          "with --folds K: the validation fold, 0 <= i < K; workers train on "
          "the other folds, the evaluator (and --algorithm local) scores "
          "this one instead of the test set");
ABSL_FLAG(uint64_t, seed, 1, "shuffling and synthetic-data seed");
ABSL_FLAG(std::string, trace_file, "",
          "write a Chrome trace (chrome://tracing, Perfetto) of every step's "
          "data, compute, push/pull/exchange spans to this file");
ABSL_FLAG(bool, prefetch, false,
          "assemble the next batch on a prefetch thread; off by default: with "
          "the data in memory it made no measurable difference");
ABSL_FLAG(std::string, backend, "auto", "auto, cpu or cuda");
ABSL_FLAG(int32_t, threads, 1, "OpenBLAS threads for the CPU backend");
ABSL_FLAG(double, log_interval_s, 5, "seconds between progress lines");
ABSL_FLAG(double, eval_interval_s, 2, "evaluator: seconds between evaluations");
ABSL_FLAG(double, target_accuracy, 0,
          "evaluator (and --algorithm local): end at this test accuracy; an "
          "evaluator that ends without reaching it exits 3");
ABSL_FLAG(int32_t, patience, 0,
          "evaluator: end the job after this many evaluations without a new "
          "best; 0 = never");
ABSL_FLAG(uint32_t, chunk_elems, pskit::kDefaultChunkElems,
          "must match the shards' --chunk_elems");
ABSL_FLAG(double, timeout_s, 60, "deadline of each call to the shards");
ABSL_FLAG(std::string, encoding, "f32",
          "wire encoding of gradients and weights: f32, f16 or bf16 (half "
          "the bytes, rounded)");
ABSL_FLAG(int32_t, metrics_port, -1,
          "port of the Prometheus endpoint (/metrics); 0 picks a free one, "
          "-1 serves none");
ABSL_FLAG(std::string, metrics_host, "0.0.0.0",
          "address the metrics endpoint binds");
ABSL_FLAG(std::string, pushgateway, "",
          "push metrics to this Prometheus Pushgateway, http://HOST:PORT "
          "(for nodes nobody can scrape); job pskit-worker, grouped by "
          "instance, role and rank");
ABSL_FLAG(double, pushgateway_interval_s, 10,
          "seconds between pushes to --pushgateway (and one at the end)");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error");

namespace pw = pskit::worker;

namespace {

using pw::Usage;

absl::StatusOr<pskit::v1::OptimizerKind> ParseOptimizer(const std::string& s) {
  static const std::pair<const char*, pskit::v1::OptimizerKind> kinds[] = {
      {"sgd", pskit::v1::OPTIMIZER_SGD},
      {"momentum", pskit::v1::OPTIMIZER_MOMENTUM},
      {"nesterov", pskit::v1::OPTIMIZER_NESTEROV},
      {"adagrad", pskit::v1::OPTIMIZER_ADAGRAD},
      {"rmsprop", pskit::v1::OPTIMIZER_RMSPROP},
      {"adam", pskit::v1::OPTIMIZER_ADAM},
      {"adamw", pskit::v1::OPTIMIZER_ADAMW}};
  for (const auto& [name, kind] : kinds) {
    if (s == name) return kind;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--optimizer '", s,
      "' is not known; use sgd, momentum, nesterov, adagrad, rmsprop, adam or "
      "adamw"));
}

// The job's flags: shards, namespace, client, the shards' optimizer, seed,
// logging and time limit. INVALID_ARGUMENT naming a bad flag.
absl::StatusOr<pw::JobOptions> JobFromFlags() {
  pw::JobOptions job;
  job.shards = absl::StrSplit(absl::GetFlag(FLAGS_shards), ',', absl::SkipEmpty());
  job.ns = absl::GetFlag(FLAGS_namespace);
  job.client.chunk_elems = absl::GetFlag(FLAGS_chunk_elems);
  job.client.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  absl::StatusOr<pskit::ChannelSecurity> security =
      pskit::ChannelSecurityFromFlags();
  if (!security.ok()) return security.status();
  job.client.security = *std::move(security);
  absl::StatusOr<pskit::v1::Encoding> encoding =
      pskit::ParseEncoding(absl::GetFlag(FLAGS_encoding), "--encoding");
  if (!encoding.ok()) return encoding.status();
  job.client.encoding = *encoding;
  absl::StatusOr<pskit::v1::OptimizerKind> kind =
      ParseOptimizer(absl::GetFlag(FLAGS_optimizer));
  if (!kind.ok()) return kind.status();
  job.server_config.mutable_optimizer()->set_kind(*kind);
  job.server_config.mutable_optimizer()->set_learning_rate(
      static_cast<float>(absl::GetFlag(FLAGS_lr)));
  if (!std::isnan(absl::GetFlag(FLAGS_momentum))) {
    job.server_config.mutable_optimizer()->set_momentum(
        static_cast<float>(absl::GetFlag(FLAGS_momentum)));
  }
  pskit::v1::Compensation compensation;
  if (absl::Status s = pskit::ParseCompensation(
          absl::GetFlag(FLAGS_compensation), &compensation);
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--compensation: ", s.message()));
  }
  job.server_config.set_compensation(compensation);
  if (absl::Status s = pskit::ParseConsistency(
          absl::GetFlag(FLAGS_consistency), &job.server_config);
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--consistency: ", s.message()));
  }
  pskit::v1::StalenessSettings* st = job.server_config.mutable_staleness();
  const std::pair<double, void (pskit::v1::StalenessSettings::*)(float)>
      settings[] = {
          {absl::GetFlag(FLAGS_dc_lambda), &pskit::v1::StalenessSettings::set_dc_lambda},
          {absl::GetFlag(FLAGS_dc_momentum), &pskit::v1::StalenessSettings::set_dc_momentum},
          {absl::GetFlag(FLAGS_dc_epsilon), &pskit::v1::StalenessSettings::set_dc_epsilon},
          {absl::GetFlag(FLAGS_gem_momentum), &pskit::v1::StalenessSettings::set_gem_momentum},
          {absl::GetFlag(FLAGS_gem_kappa), &pskit::v1::StalenessSettings::set_gem_kappa},
          {absl::GetFlag(FLAGS_gem_epsilon), &pskit::v1::StalenessSettings::set_gem_epsilon},
      };
  for (const auto& [value, set] : settings) {
    if (!std::isnan(value)) (st->*set)(static_cast<float>(value));
  }
  // Checked here too, so a bad flag fails before any shard is touched (the
  // shards check the same at Declare).
  if (absl::StatusOr<pskit::v1::NamespaceConfig> n =
          pskit::NormalizeConfig(job.server_config);
      !n.ok()) {
    return n.status();
  } else if (absl::Status used = pskit::CheckStalenessSettingsUsed(
                 job.server_config.staleness(), n->compensation(),
                 n->consistency());
             !used.ok()) {
    return used;
  }
  job.seed = absl::GetFlag(FLAGS_seed);
  job.log_interval_s = absl::GetFlag(FLAGS_log_interval_s);
  job.max_seconds = absl::GetFlag(FLAGS_max_seconds);
  return job;
}

pw::DataSourceOptions DataFromFlags() {
  pw::DataSourceOptions d;
  d.dataset = absl::GetFlag(FLAGS_dataset);
  d.data_path = absl::GetFlag(FLAGS_data_path);
  d.test_path = absl::GetFlag(FLAGS_test_path);
  d.features = absl::GetFlag(FLAGS_features);
  d.labels = absl::GetFlag(FLAGS_labels);
  d.label_column = absl::GetFlag(FLAGS_label_column);
  d.synthetic_train = absl::GetFlag(FLAGS_synthetic_train);
  d.synthetic_test = absl::GetFlag(FLAGS_synthetic_test);
  d.synthetic_dim = absl::GetFlag(FLAGS_synthetic_dim);
  d.synthetic_classes = absl::GetFlag(FLAGS_synthetic_classes);
  d.seed = absl::GetFlag(FLAGS_seed);
  d.folds = absl::GetFlag(FLAGS_folds);
  d.fold = absl::GetFlag(FLAGS_fold);
  return d;
}

pw::TrainOptions TrainFromFlags() {
  pw::TrainOptions o;
  o.algorithm.name = absl::GetFlag(FLAGS_algorithm);
  o.algorithm.n_push = absl::GetFlag(FLAGS_n_push);
  o.algorithm.n_fetch = absl::GetFlag(FLAGS_n_fetch);
  o.algorithm.local_update = absl::GetFlag(FLAGS_local_update);
  o.algorithm.overlap = absl::GetFlag(FLAGS_overlap);
  o.algorithm.tau = absl::GetFlag(FLAGS_tau);
  o.algorithm.alpha = static_cast<float>(absl::GetFlag(FLAGS_alpha));
  o.algorithm.local_lr = static_cast<float>(absl::GetFlag(FLAGS_local_lr));
  o.algorithm.local_momentum =
      static_cast<float>(absl::GetFlag(FLAGS_local_momentum));
  o.algorithm.nesterov = absl::GetFlag(FLAGS_nesterov);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.epochs = absl::GetFlag(FLAGS_epochs);
  o.prefetch = absl::GetFlag(FLAGS_prefetch);
  o.trace_file = absl::GetFlag(FLAGS_trace_file);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  pskit::ParseFlags(argc, argv,
      "trains a model against a pskit cluster (or evaluates it).\n"
      "  ps-worker --shards h1:7000,h2:7000 --dataset idx --data_path DIR");
  pskit::TuneMallocForLargeMessages();
  pw::WorkerOptions o;
  o.role = absl::GetFlag(FLAGS_role);
  if (absl::Status s = pskit::SetupLogging(
          o.role == "evaluator" ? "evaluator" : "ps-worker",
          absl::GetFlag(FLAGS_log_level));
      !s.ok()) {
    return Usage(s.ToString());
  }
  if (o.role != "worker" && o.role != "evaluator") {
    return Usage("--role must be worker or evaluator, got '" + o.role + "'");
  }
  pw::StopOnSignal stop_on_signal;
  absl::StatusOr<pw::RankWorld> rw =
      pw::RankAndWorld(absl::GetFlag(FLAGS_rank), absl::GetFlag(FLAGS_world),
                       [](const char* name) { return std::getenv(name); });
  if (!rw.ok()) return Usage(rw.status().ToString());
  o.rank_world = *rw;
  absl::StatusOr<pw::JobOptions> job = JobFromFlags();
  if (!job.ok()) return Usage(job.status().ToString());
  o.job = *std::move(job);
  // sync:B applies each round once all workers but B have pushed: B must
  // leave at least one of --world.
  if (o.role == "worker" &&
      o.job.server_config.consistency() == pskit::v1::CONSISTENCY_SYNC &&
      static_cast<int64_t>(o.job.server_config.staleness().backup_workers()) >=
          o.rank_world.world) {
    return Usage(absl::StrCat(
        "--consistency sync:", o.job.server_config.staleness().backup_workers(),
        " needs fewer backup workers than --world (", o.rank_world.world,
        "); use sync:B with B <= ", o.rank_world.world - 1));
  }
  o.job.stop = stop_on_signal.notification();
  o.data = DataFromFlags();
  if (absl::Status s = pw::CheckFolds(o.data.folds, o.data.fold); !s.ok()) {
    return Usage(s.ToString());
  }
  o.layers = absl::GetFlag(FLAGS_layers);
  o.activation = absl::GetFlag(FLAGS_activation);
  o.loss = absl::GetFlag(FLAGS_loss);
  o.train = TrainFromFlags();
  o.eval.eval_interval_s = absl::GetFlag(FLAGS_eval_interval_s);
  o.eval.target_accuracy = absl::GetFlag(FLAGS_target_accuracy);
  o.eval.patience = absl::GetFlag(FLAGS_patience);
  o.backend = absl::GetFlag(FLAGS_backend);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  o.metrics_host = absl::GetFlag(FLAGS_metrics_host);
  o.pushgateway = absl::GetFlag(FLAGS_pushgateway);
  o.pushgateway_interval_s = absl::GetFlag(FLAGS_pushgateway_interval_s);
  return pw::RunWorker(o);
}
