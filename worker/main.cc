// ps-worker: trains a model against a pskit cluster, or evaluates it.
//
//   ps-worker --shards h1:7000,h2:7000 --dataset idx
//       --data_path /usr/share/datasets/fashion-mnist --layers 784,256,128,10
//   ps-worker --role evaluator --shards ... --target_accuracy 0.88
//
// Rank and world come from --rank/--world or SLURM / Open MPI / PMI
// variables; each rank trains on its own slice of the data. Exit status: 0
// done (epochs, time limit, or the evaluator ended the job), 1 failed, 2 bad
// flags.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <thread>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/malloc_tuning.h"
#include "common/metrics.h"
#include "spdlog/spdlog.h"
#include "worker/launch_env.h"
#include "worker/trainer.h"
#include "worker/worker_metrics.h"

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
ABSL_FLAG(std::string, compensation, "none", "staleness: none or inverse");
ABSL_FLAG(int32_t, n_push, 1, "downpour: push every n_push steps");
ABSL_FLAG(int32_t, n_fetch, 1, "downpour: pull every n_fetch steps");
ABSL_FLAG(int32_t, tau, 4, "easgd: local steps between exchanges");
ABSL_FLAG(double, alpha, 0, "easgd: moving rate; 0 = 0.9 / world");
ABSL_FLAG(double, local_lr, 0.05, "easgd: local learning rate");
ABSL_FLAG(double, local_momentum, 0.9, "easgd: local momentum (0 = SGD)");
ABSL_FLAG(bool, nesterov, false, "easgd: Nesterov momentum (EAMSGD)");
ABSL_FLAG(int32_t, rank, -1, "this worker's rank; -1: from the launcher");
ABSL_FLAG(int32_t, world, -1, "number of workers; -1: from the launcher");
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
          "evaluator (and --algorithm local): end at this test accuracy");
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

// SIGTERM or SIGINT asks the job to stop: training ends after the step in
// hand, leaves the shards and prints its summary (exit 0); the evaluator
// stops waiting for its next round. A second signal ends the process at
// once, and so does a stop that takes over 10 s (a call retrying a dead
// shard), with status 143. The handler only writes a byte to a pipe (async-signal-safe); a
// thread turns it into the notification the trainer watches. A handler,
// not sigwait: OpenBLAS starts threads before main, with signals unblocked.
class StopOnSignal {
 public:
  StopOnSignal() {
    if (pipe2(fds_, O_CLOEXEC) != 0) {
      spdlog::warn("no pipe for signals: SIGTERM ends the process at once");
      return;
    }
    write_fd_.store(fds_[1]);
    struct sigaction sa = {};
    sa.sa_handler = &StopOnSignal::Handle;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    thread_ = std::thread([this] {
      char c = 0;
      while (read(fds_[0], &c, 1) < 0 && errno == EINTR) {
      }
      if (c != 's') return;
      spdlog::warn("stop signal: finishing the step in hand, then leaving "
                   "(signal again to stop at once)");
      stop_.Notify();
      // A call that is retrying a dead shard would hold the stop until its
      // deadline (--timeout_s); give the step in hand kGrace, then go.
      pollfd p = {fds_[0], POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(kGrace))) ==
          0) {
        spdlog::error("still busy {} s after the stop signal (a call to the "
                      "shards is retrying?); exiting now",
                      absl::ToInt64Seconds(kGrace));
        std::fflush(stdout);
        _exit(128 + SIGTERM);
      }
    });
  }
  ~StopOnSignal() {
    if (!thread_.joinable()) return;
    const char quit = 'q';
    (void)!write(fds_[1], &quit, 1);
    thread_.join();
  }
  const absl::Notification* notification() const { return &stop_; }

 private:
  static void Handle(int sig) {
    if (signalled_.exchange(true)) _exit(128 + sig);
    const char stop = 's';
    (void)!write(write_fd_.load(), &stop, 1);
  }
  static constexpr absl::Duration kGrace = absl::Seconds(10);
  static inline std::atomic<bool> signalled_{false};
  static inline std::atomic<int> write_fd_{-1};
  int fds_[2] = {-1, -1};
  absl::Notification stop_;
  std::thread thread_;
};

int Usage(const std::string& msg) {
  std::fprintf(stderr, "ps-worker: %s\n", msg.c_str());
  return 2;
}

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

}  // namespace

int main(int argc, char** argv) {
  pskit::ParseFlags(argc, argv,
      "trains a model against a pskit cluster (or evaluates it).\n"
      "  ps-worker --shards h1:7000,h2:7000 --dataset idx --data_path DIR");
  pskit::TuneMallocForLargeMessages();
  const std::string role = absl::GetFlag(FLAGS_role);
  if (absl::Status s = pskit::SetupLogging(
          role == "evaluator" ? "evaluator" : "ps-worker",
          absl::GetFlag(FLAGS_log_level));
      !s.ok()) {
    return Usage(s.ToString());
  }
  if (role != "worker" && role != "evaluator") {
    return Usage("--role must be worker or evaluator, got '" + role + "'");
  }
  StopOnSignal stop_on_signal;
  absl::StatusOr<pw::RankWorld> rw =
      pw::RankAndWorld(absl::GetFlag(FLAGS_rank), absl::GetFlag(FLAGS_world),
                       [](const char* name) { return std::getenv(name); });
  if (!rw.ok()) return Usage(rw.status().ToString());

  // Data.
  std::string dataset = absl::GetFlag(FLAGS_dataset);
  const std::string data_path = absl::GetFlag(FLAGS_data_path);
  if (dataset.empty()) dataset = data_path.empty() ? "synthetic" : "idx";
  pw::Dataset train, test;
  if (dataset == "idx") {
    if (data_path.empty()) return Usage("--dataset idx needs --data_path DIR");
    absl::StatusOr<pw::Dataset> d = pw::ReadIdxDir(data_path, role == "worker");
    if (!d.ok()) return Usage(d.status().ToString());
    (role == "worker" ? train : test) = std::move(*d);
    if (role == "worker" && absl::GetFlag(FLAGS_algorithm) == "local") {
      absl::StatusOr<pw::Dataset> t = pw::ReadIdxDir(data_path, false);
      if (!t.ok()) return Usage(t.status().ToString());
      test = std::move(*t);
    }
  } else if (dataset == "csv" || dataset == "hdf5") {
    auto read = [&](const std::string& path) {
      return dataset == "csv"
                 ? pw::ReadCsv(path, absl::GetFlag(FLAGS_label_column))
                 : pw::ReadHdf5(path, absl::GetFlag(FLAGS_features),
                                absl::GetFlag(FLAGS_labels));
    };
    const std::string test_path = absl::GetFlag(FLAGS_test_path);
    const bool local = absl::GetFlag(FLAGS_algorithm) == "local";
    if (role == "worker") {
      if (data_path.empty()) {
        return Usage("--dataset " + dataset + " needs --data_path FILE");
      }
      absl::StatusOr<pw::Dataset> d = read(data_path);
      if (!d.ok()) return Usage(d.status().ToString());
      train = std::move(*d);
    }
    if (role == "evaluator" || (local && !test_path.empty())) {
      if (test_path.empty()) {
        return Usage("the evaluator with --dataset " + dataset +
                     " needs --test_path FILE");
      }
      absl::StatusOr<pw::Dataset> t = read(test_path);
      if (!t.ok()) return Usage(t.status().ToString());
      test = std::move(*t);
    }
  } else if (dataset == "synthetic") {
    const int64_t n = role == "worker" ? absl::GetFlag(FLAGS_synthetic_train)
                                       : absl::GetFlag(FLAGS_synthetic_test);
    const int dim = absl::GetFlag(FLAGS_synthetic_dim);
    const int classes = absl::GetFlag(FLAGS_synthetic_classes);
    if (n < 1 || dim < 1 || classes < 2) {
      return Usage("synthetic data needs samples >= 1, dim >= 1, classes >= 2");
    }
    // Same teacher for training and test, different samples.
    (role == "worker" ? train : test) = pw::MakeTeacherDataset(
        absl::GetFlag(FLAGS_seed), absl::GetFlag(FLAGS_seed) +
                                       (role == "worker" ? 1000 : 2000),
        n, dim, classes);
    if (role == "worker" && absl::GetFlag(FLAGS_algorithm) == "local") {
      test = pw::MakeTeacherDataset(absl::GetFlag(FLAGS_seed),
                                    absl::GetFlag(FLAGS_seed) + 2000,
                                    absl::GetFlag(FLAGS_synthetic_test), dim,
                                    classes);
    }
  } else {
    return Usage("--dataset must be idx, csv, hdf5 or synthetic, got '" +
                 dataset + "'");
  }
  const pw::Dataset& data = role == "worker" ? train : test;

  // Model and job.
  std::string layers = absl::GetFlag(FLAGS_layers);
  if (layers.empty() && (dataset == "csv" || dataset == "hdf5")) {
    // Training and test files may not show the same classes, and the worker
    // and the evaluator must declare the same model.
    return Usage("--dataset " + dataset +
                 " needs --layers (e.g. 20,64,3): the model cannot be read "
                 "off one file");
  }
  if (layers.empty()) {
    layers = absl::StrCat(data.feature_dim, ",256,128,", data.num_classes);
  }
  absl::StatusOr<pw::MlpConfig> model = pw::ParseMlpConfig(
      layers, absl::GetFlag(FLAGS_activation), absl::GetFlag(FLAGS_loss));
  if (!model.ok()) return Usage(model.status().ToString());
  absl::StatusOr<pskit::v1::OptimizerKind> kind =
      ParseOptimizer(absl::GetFlag(FLAGS_optimizer));
  if (!kind.ok()) return Usage(kind.status().ToString());
  pw::JobOptions job;
  job.shards = absl::StrSplit(absl::GetFlag(FLAGS_shards), ',', absl::SkipEmpty());
  job.ns = absl::GetFlag(FLAGS_namespace);
  job.client.chunk_elems = absl::GetFlag(FLAGS_chunk_elems);
  job.client.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  const std::string encoding = absl::GetFlag(FLAGS_encoding);
  if (encoding == "f16") {
    job.client.encoding = pskit::v1::ENCODING_F16;
  } else if (encoding == "bf16") {
    job.client.encoding = pskit::v1::ENCODING_BF16;
  } else if (encoding != "f32") {
    return Usage("--encoding must be f32, f16 or bf16, got '" + encoding + "'");
  }
  job.model = *model;
  job.server_config.mutable_optimizer()->set_kind(*kind);
  job.server_config.mutable_optimizer()->set_learning_rate(
      static_cast<float>(absl::GetFlag(FLAGS_lr)));
  const std::string comp = absl::GetFlag(FLAGS_compensation);
  if (comp == "inverse") {
    job.server_config.set_compensation(pskit::v1::COMPENSATION_INVERSE);
  } else if (comp != "none") {
    return Usage("--compensation must be none or inverse, got '" + comp + "'");
  }
  job.seed = absl::GetFlag(FLAGS_seed);
  job.log_interval_s = absl::GetFlag(FLAGS_log_interval_s);
  job.max_seconds = absl::GetFlag(FLAGS_max_seconds);

  // Metrics: scraped at --metrics_port and/or pushed to --pushgateway.
  const std::string metrics_role = role == "evaluator" ? "evaluator" : "worker";
  const int metrics_rank = role == "evaluator" ? 0 : rw->rank;
  pw::WorkerMetrics metrics(metrics_role, metrics_rank);
  job.metrics = &metrics;
  job.stop = stop_on_signal.notification();
  std::unique_ptr<pskit::MetricsEndpoint> metrics_endpoint;
  if (const int port = absl::GetFlag(FLAGS_metrics_port); port >= 0) {
    absl::StatusOr<std::unique_ptr<pskit::MetricsEndpoint>> e =
        pskit::MetricsEndpoint::Start(absl::GetFlag(FLAGS_metrics_host), port,
                                      metrics.registry());
    if (!e.ok()) {
      std::fprintf(stderr, "ps-worker: %s\n", e.status().ToString().c_str());
      return e.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
    metrics_endpoint = *std::move(e);
    std::printf("ps-worker metrics on %s\n", metrics_endpoint->url().c_str());
    std::fflush(stdout);
  }
  std::unique_ptr<pskit::MetricsPusher> metrics_pusher;  // pushes at the end
  if (const std::string url = absl::GetFlag(FLAGS_pushgateway); !url.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    absl::StatusOr<std::unique_ptr<pskit::MetricsPusher>> p =
        pskit::MetricsPusher::Start(
            url, "pskit-worker",
            {{"instance", host},
             {"role", metrics_role},
             {"rank", std::to_string(metrics_rank)}},
            metrics.registry(),
            absl::Seconds(absl::GetFlag(FLAGS_pushgateway_interval_s)));
    if (!p.ok()) return Usage(p.status().ToString());
    metrics_pusher = *std::move(p);
  }

  absl::StatusOr<std::unique_ptr<pw::Backend>> backend = pw::MakeBackend(
      absl::GetFlag(FLAGS_backend), absl::GetFlag(FLAGS_threads));
  if (!backend.ok()) return Usage(backend.status().ToString());

  if (role == "evaluator") {
    pw::EvalOptions o;
    o.job = job;
    o.eval_interval_s = absl::GetFlag(FLAGS_eval_interval_s);
    o.target_accuracy = absl::GetFlag(FLAGS_target_accuracy);
    o.patience = absl::GetFlag(FLAGS_patience);
    absl::StatusOr<pw::EvalSummary> s = pw::Evaluate(o, backend->get(), test);
    if (!s.ok()) {
      std::fprintf(stderr, "ps-worker evaluator: %s\n", s.status().ToString().c_str());
      return 1;
    }
    std::printf(
        "evaluator summary: %d evaluations in %.1f s, best accuracy %.4f, "
        "last %.4f (loss %.4f), target %s; ended: %s\n",
        s->evaluations, s->seconds, s->best_accuracy, s->last_accuracy,
        s->last_loss,
        s->seconds_to_target >= 0
            ? absl::StrCat("reached after ", s->seconds_to_target, " s").c_str()
            : "not reached",
        s->reason.c_str());
    return 0;
  }
  pw::TrainOptions o;
  o.job = job;
  o.algorithm = absl::GetFlag(FLAGS_algorithm);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.epochs = absl::GetFlag(FLAGS_epochs);
  o.n_push = absl::GetFlag(FLAGS_n_push);
  o.n_fetch = absl::GetFlag(FLAGS_n_fetch);
  o.tau = absl::GetFlag(FLAGS_tau);
  o.alpha = static_cast<float>(absl::GetFlag(FLAGS_alpha));
  o.local_lr = static_cast<float>(absl::GetFlag(FLAGS_local_lr));
  o.local_momentum = static_cast<float>(absl::GetFlag(FLAGS_local_momentum));
  o.nesterov = absl::GetFlag(FLAGS_nesterov);
  o.prefetch = absl::GetFlag(FLAGS_prefetch);
  o.trace_file = absl::GetFlag(FLAGS_trace_file);
  o.rank = rw->rank;
  o.world = rw->world;
  if (o.algorithm == "local" && test.size() > 0) {
    o.local_test = &test;
    o.local_eval_interval_s = absl::GetFlag(FLAGS_eval_interval_s);
    o.local_target_accuracy = absl::GetFlag(FLAGS_target_accuracy);
  }
  spdlog::info("rank {} of {} ({}), {} on {} samples, model {}, backend {}",
               rw->rank, rw->world, rw->source, o.algorithm, train.size(),
               layers, (*backend)->name());
  absl::StatusOr<pw::TrainSummary> s = pw::Train(o, backend->get(), train);
  if (!s.ok()) {
    std::fprintf(stderr, "ps-worker rank %d: %s\n", rw->rank,
                 s.status().ToString().c_str());
    return s.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf(
      "worker summary: rank %d: %lld steps, %lld samples in %.1f s, %.0f "
      "samples/s, last loss %.4f%s%s\n",
      rw->rank, static_cast<long long>(s->steps),
      static_cast<long long>(s->samples), s->seconds, s->samples_per_s,
      s->last_loss,
      s->ended_by_evaluator ? ", ended by the evaluator"
      : s->stopped          ? ", stopped by a signal"
                            : "",
      s->seconds_to_target >= 0
          ? absl::StrCat(", test accuracy ", s->local_accuracy,
                         " reached after ", s->seconds_to_target, " s")
                .c_str()
          : "");
  return 0;
}
