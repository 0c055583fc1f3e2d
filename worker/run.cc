// worker/run.cc: a ps-worker process from options to exit status.
#include "worker/run.h"

#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "spdlog/spdlog.h"
#include "worker/algorithms/algorithm.h"
#include "worker/worker_metrics.h"

namespace pskit::worker {

int Usage(const std::string& msg) {
  std::fprintf(stderr, "ps-worker: %s\n", msg.c_str());
  return 2;
}

namespace {

// `test_name`: what `test` is (JobData::test_name); `validation`: it is a
// validation fold, not the test set.
int RunEvaluator(const WorkerOptions& w, const JobOptions& job,
                 Backend* backend, const Dataset& test,
                 const std::string& test_name, bool validation) {
  EvalOptions o = w.eval;
  o.job = job;
  if (validation) o.validation = test_name;
  absl::StatusOr<EvalSummary> s = Evaluate(o, backend, test);
  if (!s.ok()) {
    std::fprintf(stderr, "ps-worker evaluator: %s\n",
                 s.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "evaluator summary: %d evaluations in %.1f s, best accuracy %.4f, "
      "last %.4f (loss %.4f), target %s; ended: %s%s\n",
      s->evaluations, s->seconds, s->best_accuracy, s->last_accuracy,
      s->last_loss,
      s->seconds_to_target >= 0
          ? absl::StrCat("reached after ", s->seconds_to_target, " s").c_str()
          : "not reached",
      s->reason.c_str(),
      validation ? absl::StrCat("; scored on ", test_name).c_str() : "");
  if (o.target_accuracy > 0 && s->seconds_to_target < 0) {
    return kExitTargetNotReached;
  }
  return 0;
}

int RunTrainer(const WorkerOptions& w, const JobOptions& job,
               const std::string& layers, Backend* backend,
               const JobData& data) {
  TrainOptions o = w.train;
  o.job = job;
  o.rank = w.rank_world.rank;
  o.world = w.rank_world.world;
  if (TrainsWithoutShards(o.algorithm.name) && data.test.size() > 0) {
    o.local_test = &data.test;
    if (w.data.folds > 0) o.local_test_name = data.test_name;
    o.local_eval_interval_s = w.eval.eval_interval_s;
    o.local_target_accuracy = w.eval.target_accuracy;
  }
  spdlog::info("rank {} of {} ({}), {} on {} samples{}, model {}, backend {}",
               o.rank, o.world, w.rank_world.source, o.algorithm.name,
               data.train.size(),
               w.data.folds > 0 ? " (all but " + data.test_name + ")" : "",
               layers, backend->name());
  absl::StatusOr<TrainSummary> s = Train(o, backend, data.train);
  if (!s.ok()) {
    std::fprintf(stderr, "ps-worker rank %d: %s\n", o.rank,
                 s.status().ToString().c_str());
    return s.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf(
      "worker summary: rank %d: %lld steps, %lld samples in %.1f s, %.0f "
      "samples/s, cpu %.1f s, last loss %.4f%s%s\n",
      o.rank, static_cast<long long>(s->steps),
      static_cast<long long>(s->samples), s->seconds, s->samples_per_s,
      s->cpu_seconds, s->last_loss,
      s->ended_by_evaluator ? ", ended by the evaluator"
      : s->stopped          ? ", stopped by a signal"
                            : "",
      s->seconds_to_target >= 0
          ? absl::StrCat(", ", o.local_test_name, " accuracy ",
                         s->local_accuracy,
                         " reached after ", s->seconds_to_target, " s")
                .c_str()
          : "");
  return 0;
}

}  // namespace

int RunWorker(const WorkerOptions& w) {
  const bool worker = w.role == "worker";
  absl::StatusOr<JobData> data = LoadJobData(
      w.data, worker, worker && TrainsWithoutShards(w.train.algorithm.name));
  if (!data.ok()) return Usage(data.status().ToString());
  const Dataset& mine = worker ? data->train : data->test;

  std::string layers = w.layers;
  if (layers.empty() && (data->dataset == "csv" || data->dataset == "hdf5")) {
    // Training and test files may not show the same classes, and the worker
    // and the evaluator must declare the same model.
    return Usage("--dataset " + data->dataset +
                 " needs --layers (e.g. 20,64,3): the model cannot be read "
                 "off one file");
  }
  if (layers.empty()) {
    layers = absl::StrCat(mine.feature_dim, ",256,128,", mine.num_classes);
  }
  absl::StatusOr<MlpConfig> model = ParseMlpConfig(layers, w.activation, w.loss);
  if (!model.ok()) return Usage(model.status().ToString());
  JobOptions job = w.job;
  job.model = *model;

  // Metrics: scraped at metrics_port and/or pushed to the Pushgateway.
  const std::string metrics_role = worker ? "worker" : "evaluator";
  const int metrics_rank = worker ? w.rank_world.rank : 0;
  WorkerMetrics metrics(metrics_role, metrics_rank);
  job.metrics = &metrics;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint;
  if (w.metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> e =
        MetricsEndpoint::Start(w.metrics_host, w.metrics_port,
                               metrics.registry());
    if (!e.ok()) {
      std::fprintf(stderr, "ps-worker: %s\n", e.status().ToString().c_str());
      return e.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
    metrics_endpoint = *std::move(e);
    std::printf("ps-worker metrics on %s\n", metrics_endpoint->url().c_str());
    std::fflush(stdout);
  }
  std::unique_ptr<MetricsPusher> metrics_pusher;  // pushes at the end
  if (!w.pushgateway.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    absl::StatusOr<std::unique_ptr<MetricsPusher>> p = MetricsPusher::Start(
        w.pushgateway, "pskit-worker",
        {{"instance", host},
         {"role", metrics_role},
         {"rank", std::to_string(metrics_rank)}},
        metrics.registry(), absl::Seconds(w.pushgateway_interval_s));
    if (!p.ok()) return Usage(p.status().ToString());
    metrics_pusher = *std::move(p);
  }

  absl::StatusOr<std::unique_ptr<Backend>> backend =
      MakeBackend(w.backend, w.threads);
  if (!backend.ok()) return Usage(backend.status().ToString());
  return worker ? RunTrainer(w, job, layers, backend->get(), *data)
                : RunEvaluator(w, job, backend->get(), data->test,
                               data->test_name, w.data.folds > 0);
}

}  // namespace pskit::worker
