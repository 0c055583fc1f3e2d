#include "worker/trainer.h"

#include <algorithm>
#include <atomic>
#include <numeric>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/optimizer_config.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"
#include "worker/data/batcher.h"
#include "worker/trace.h"

namespace pskit::worker {
namespace {

// The model's parameters as host buffers, one per tensor, and the views the
// client takes.
struct HostParams {
  std::vector<std::vector<float>> values;
  std::vector<TensorBuffer> mutable_views;
  std::vector<ConstTensorBuffer> const_views;

  explicit HostParams(const Mlp& mlp) : values(mlp.num_params()) {
    for (size_t i = 0; i < values.size(); ++i) {
      values[i].resize(mlp.param_size(i));
      mutable_views.push_back({mlp.specs()[i].name(), absl::MakeSpan(values[i])});
      const_views.push_back({mlp.specs()[i].name(), values[i]});
    }
  }
};

absl::Status ToDevice(Backend* be, const HostParams& host,
                      const std::vector<float*>& device) {
  for (size_t i = 0; i < host.values.size(); ++i) {
    PSKIT_RETURN_IF_ERROR(
        be->CopyToDevice(host.values[i].data(), device[i], host.values[i].size()));
  }
  return absl::OkStatus();
}

absl::Status ToHost(Backend* be, const std::vector<float*>& device,
                    HostParams* host) {
  for (size_t i = 0; i < host->values.size(); ++i) {
    PSKIT_RETURN_IF_ERROR(be->CopyToHost(device[i], host->values[i].data(),
                                         host->values[i].size()));
  }
  return absl::OkStatus();
}

std::vector<TensorDecl> Decls(const Mlp& mlp) {
  std::vector<TensorDecl> out;
  for (const v1::TensorSpec& spec : mlp.specs()) {
    TensorDecl d;
    d.spec = spec;
    out.push_back(std::move(d));
  }
  return out;
}

absl::Status CheckFits(const Dataset& data, const MlpConfig& model) {
  if (data.size() == 0) {
    return absl::InvalidArgumentError("the dataset is empty");
  }
  if (data.feature_dim != model.layers.front()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the data has ", data.feature_dim, " features per sample but the "
        "model's input layer takes ", model.layers.front(),
        "; make --layers start with ", data.feature_dim));
  }
  if (data.num_classes > model.layers.back()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the data has ", data.num_classes, " classes but the model's output "
        "layer has ", model.layers.back(), "; make --layers end with ",
        data.num_classes));
  }
  return absl::OkStatus();
}

// Renews the worker's lease every `period` on its own thread, and notes
// when the evaluator has ended the job.
class LeaseKeeper {
 public:
  LeaseKeeper(Client* client, std::string ns, absl::Duration period)
      : client_(client), ns_(std::move(ns)), period_(period),
        thread_([this] { Loop(); }) {}
  ~LeaseKeeper() {
    stop_.Notify();
    thread_.join();
  }
  bool job_done() const { return done_.load(); }

 private:
  void Loop() {
    while (!stop_.WaitForNotificationWithTimeout(period_)) {
      absl::StatusOr<bool> done = client_->Heartbeat(ns_);
      if (!done.ok()) {
        spdlog::warn("heartbeat: {}", done.status().ToString());
      } else if (*done) {
        done_.store(true);
      }
    }
  }

  Client* const client_;
  const std::string ns_;
  const absl::Duration period_;
  absl::Notification stop_;
  std::atomic<bool> done_{false};  // read by the training loop
  std::thread thread_;
};

}  // namespace

absl::StatusOr<TrainSummary> Train(const TrainOptions& o, Backend* be,
                                   const Dataset& train) {
  const bool local = o.algorithm == "local";
  const bool downpour = o.algorithm == "downpour";
  const bool easgd = o.algorithm == "easgd";
  if (!local && !downpour && !easgd) {
    return absl::InvalidArgumentError(absl::StrCat(
        "algorithm '", o.algorithm, "' is not known; use downpour, easgd or local"));
  }
  if (o.batch_size < 1 || o.epochs < 1 || o.n_push < 1 || o.n_fetch < 1 ||
      o.tau < 1) {
    return absl::InvalidArgumentError(
        "batch_size, epochs, n_push, n_fetch and tau must all be >= 1");
  }
  if (o.world < 1 || o.rank < 0 || o.rank >= o.world) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank ", o.rank, " of world ", o.world,
        ": ranks run from 0 to world - 1"));
  }
  if (!local && o.job.shards.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--algorithm ", o.algorithm, " needs --shards (or use local)"));
  }
  PSKIT_RETURN_IF_ERROR(CheckFits(train, o.job.model));
  if (o.local_test != nullptr) {
    PSKIT_RETURN_IF_ERROR(CheckFits(*o.local_test, o.job.model));
  }
  // Everything is checked before the worker registers anywhere.
  const auto [begin, end] = SliceOf(train.size(), o.rank, o.world);
  if (end - begin < o.batch_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank ", o.rank, " has ", end - begin, " samples, fewer than one batch of ",
        o.batch_size, "; use a smaller --batch_size or fewer workers"));
  }
  const float alpha = o.alpha > 0 ? o.alpha : 0.9f / static_cast<float>(o.world);
  if (easgd && !(alpha > 0 && alpha <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("alpha ", alpha, " must be in (0, 1]"));
  }
  const std::string name =
      o.name.empty() ? absl::StrCat("rank", o.rank) : o.name;

  PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Mlp> mlp,
                         Mlp::Create(o.job.model, be, o.batch_size));
  std::vector<float*> params, grads;
  std::vector<DeviceBuffer> acc, slot1, slot2;  // grad sums / optimizer slots
  for (size_t i = 0; i < mlp->num_params(); ++i) {
    params.push_back(mlp->param(i));
    grads.push_back(mlp->grad(i));
    const size_t n = mlp->param_size(i);
    PSKIT_ASSIGN_OR_RETURN(DeviceBuffer a, be->Allocate(downpour && o.n_push > 1 ? n : 0));
    PSKIT_ASSIGN_OR_RETURN(DeviceBuffer s1, be->Allocate(downpour ? 0 : n));
    PSKIT_ASSIGN_OR_RETURN(DeviceBuffer s2, be->Allocate(local ? n : 0));
    acc.push_back(std::move(a));
    slot1.push_back(std::move(s1));
    slot2.push_back(std::move(s2));
  }
  HostParams host(*mlp);

  std::unique_ptr<Client> client;
  std::unique_ptr<LeaseKeeper> lease;
  const std::vector<TensorDecl> decls = Decls(*mlp);
  if (!local) {
    PSKIT_ASSIGN_OR_RETURN(client, Client::Connect(o.job.shards, o.job.client));
    PSKIT_RETURN_IF_ERROR(client->Declare(o.job.ns, o.job.server_config, decls));
    PSKIT_RETURN_IF_ERROR(client->RegisterWorker(name).status());
    PSKIT_RETURN_IF_ERROR(client->Pull(o.job.ns, host.mutable_views));
    PSKIT_RETURN_IF_ERROR(ToDevice(be, host, params));
    // Every 0.5 s: a heartbeat is one small call per shard, and it is how a
    // worker learns that the evaluator ended the job (at 2 s, workers
    // trained on for up to 2 s after the target was reached).
    lease = std::make_unique<LeaseKeeper>(client.get(), o.job.ns,
                                          absl::Milliseconds(500));
  } else {
    // No server: initial values from a local RNG (the shards' initializers
    // live server-side).
    std::mt19937 rng(static_cast<uint32_t>(o.job.seed));
    for (size_t i = 0; i < host.values.size(); ++i) {
      const v1::TensorSpec& spec = mlp->specs()[i];
      if (spec.init().kind() == v1::INIT_ZEROS) continue;
      const double fan_in = spec.shape(0), fan_out = spec.shape(1);
      const double stddev = spec.init().kind() == v1::INIT_HE_NORMAL
                                ? std::sqrt(2.0 / fan_in)
                                : std::sqrt(2.0 / (fan_in + fan_out));
      std::normal_distribution<float> normal(0.0f, static_cast<float>(stddev));
      for (float& v : host.values[i]) v = normal(rng);
    }
    PSKIT_RETURN_IF_ERROR(ToDevice(be, host, params));
  }

  // A shard that restarted without a checkpoint answers NOT_FOUND (the
  // namespace, or this worker's lease, is gone). Declare the model and renew
  // the lease again, then start over from fresh weights. The failed update is
  // not repeated: the shards that did take it must not take it twice.
  auto recover = [&](absl::Status s) -> absl::Status {
    if (s.code() != absl::StatusCode::kNotFound) return s;
    spdlog::warn("{}: {}; declaring the model and registering again", name,
                 s.ToString());
    PSKIT_RETURN_IF_ERROR(client->Declare(o.job.ns, o.job.server_config, decls));
    PSKIT_RETURN_IF_ERROR(client->Heartbeat(o.job.ns).status());
    PSKIT_RETURN_IF_ERROR(client->Pull(o.job.ns, host.mutable_views));
    return ToDevice(be, host, params);
  };

  Batcher batches(train, begin, end, o.batch_size, o.job.seed * 7919 + o.rank,
                  o.prefetch);
  std::unique_ptr<TraceWriter> trace;
  if (!o.trace_file.empty()) {
    PSKIT_ASSIGN_OR_RETURN(trace, TraceWriter::Open(o.trace_file, o.rank));
  }
  PhaseSink phases(trace.get(), o.job.metrics);
  PhaseSink* const tw =
      trace != nullptr || o.job.metrics != nullptr ? &phases : nullptr;
  const size_t batch_floats = static_cast<size_t>(o.batch_size) * train.feature_dim;
  PSKIT_ASSIGN_OR_RETURN(DeviceBuffer x, be->Allocate(batch_floats));

  PSKIT_ASSIGN_OR_RETURN(const v1::NamespaceConfig normalized,
                         NormalizeConfig(o.job.server_config));
  const v1::OptimizerConfig& opt = normalized.optimizer();
  if (local && opt.kind() != v1::OPTIMIZER_SGD &&
      opt.kind() != v1::OPTIMIZER_MOMENTUM &&
      opt.kind() != v1::OPTIMIZER_NESTEROV && opt.kind() != v1::OPTIMIZER_ADAM) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--algorithm local runs sgd, momentum, nesterov or adam, not ",
        v1::OptimizerKind_Name(opt.kind())));
  }
  // Scores the current model on local_test, batch by batch.
  auto local_accuracy = [&]() -> absl::StatusOr<double> {
    const Dataset& t = *o.local_test;
    int64_t correct = 0;
    for (int64_t b = 0; b < t.size(); b += o.batch_size) {
      const int rows = static_cast<int>(std::min<int64_t>(o.batch_size, t.size() - b));
      PSKIT_RETURN_IF_ERROR(be->CopyToDevice(
          t.row(b), x.data(), static_cast<size_t>(rows) * t.feature_dim));
      PSKIT_ASSIGN_OR_RETURN(
          StepResult r,
          mlp->Evaluate(x.data(), absl::MakeConstSpan(t.labels).subspan(b, rows)));
      correct += r.correct;
    }
    return static_cast<double>(correct) / t.size();
  };
  TrainSummary summary;
  const absl::Time start = absl::Now();
  absl::Time next_log = start + absl::Seconds(o.job.log_interval_s);
  absl::Time next_eval = start + absl::Seconds(o.local_eval_interval_s);
  HostParams grad_host(*mlp);  // the gradient on its way to the shards
  double loss_sum = 0;
  int loss_count = 0;
  bool stop = false;
  while (!stop) {
    const absl::Time wait_start = absl::Now();
    const Batch& batch = batches.Next();
    if (tw != nullptr) tw->Add("data", wait_start, absl::Now());
    if (batch.epoch >= o.epochs) break;
    const int epoch = batch.epoch;
    {
      std::optional<PhaseSink::Span> compute(std::in_place, tw, "compute");
      PSKIT_RETURN_IF_ERROR(be->CopyToDevice(batch.x.data(), x.data(), batch_floats));
      PSKIT_ASSIGN_OR_RETURN(StepResult step, mlp->ForwardBackward(x.data(), batch.y));
      ++summary.steps;
      summary.samples += o.batch_size;
      loss_sum += step.loss;
      ++loss_count;
      summary.last_loss = step.loss;
      if (o.job.metrics != nullptr) o.job.metrics->AddStep(o.batch_size, step.loss);

      if (local) {
        for (size_t i = 0; i < params.size(); ++i) {
          if (opt.kind() == v1::OPTIMIZER_ADAM) {
            PSKIT_RETURN_IF_ERROR(be->AdamStep(
                opt.learning_rate(), opt.beta1(), opt.beta2(), opt.epsilon(),
                summary.steps, grads[i], slot1[i].data(), slot2[i].data(),
                params[i], mlp->param_size(i)));
          } else {
            const float mu =
                opt.kind() == v1::OPTIMIZER_SGD ? 0.0f : opt.momentum();
            PSKIT_RETURN_IF_ERROR(be->MomentumStep(
                opt.learning_rate(), mu, opt.kind() == v1::OPTIMIZER_NESTEROV,
                grads[i], slot1[i].data(), params[i], mlp->param_size(i)));
          }
        }
      } else if (easgd) {
        for (size_t i = 0; i < params.size(); ++i) {
          PSKIT_RETURN_IF_ERROR(be->MomentumStep(
              o.local_lr, o.local_momentum, o.nesterov, grads[i],
              slot1[i].data(), params[i], mlp->param_size(i)));
        }
        if (summary.steps % o.tau == 0) {
          compute.reset();
          PhaseSink::Span span(tw, "exchange");
          PSKIT_RETURN_IF_ERROR(ToHost(be, params, &host));
          PSKIT_RETURN_IF_ERROR(
              recover(client->Exchange(o.job.ns, alpha, host.mutable_views)));
          PSKIT_RETURN_IF_ERROR(ToDevice(be, host, params));
        }
      } else {  // downpour
        const bool push = summary.steps % o.n_push == 0;
        const bool fetch = summary.steps % o.n_fetch == 0;
        if (o.n_push > 1) {
          for (size_t i = 0; i < params.size(); ++i) {
            PSKIT_RETURN_IF_ERROR(
                be->Axpy(1.0f, grads[i], acc[i].data(), mlp->param_size(i)));
          }
        }
        if (push) {
          // The gradient (summed since the last push) goes out from
          // grad_host; fresh weights come back into `host`.
          HostParams& g = grad_host;
          for (size_t i = 0; i < params.size(); ++i) {
            const float* src = o.n_push > 1 ? acc[i].data() : grads[i];
            PSKIT_RETURN_IF_ERROR(
                be->CopyToHost(src, g.values[i].data(), g.values[i].size()));
          }
          compute.reset();
          PhaseSink::Span span(tw, fetch ? "pushpull" : "push");
          if (fetch) {
            PSKIT_RETURN_IF_ERROR(recover(
                client->PushPull(o.job.ns, g.const_views, host.mutable_views)
                    .status()));
            PSKIT_RETURN_IF_ERROR(ToDevice(be, host, params));
          } else {
            PSKIT_RETURN_IF_ERROR(
                recover(client->Push(o.job.ns, g.const_views).status()));
          }
          if (o.n_push > 1) {  // start the next sum from zero
            for (size_t i = 0; i < params.size(); ++i) {
              PSKIT_ASSIGN_OR_RETURN(acc[i], be->Allocate(mlp->param_size(i)));
            }
          }
        } else if (fetch) {
          compute.reset();
          PhaseSink::Span span(tw, "pull");
          PSKIT_RETURN_IF_ERROR(
              recover(client->Pull(o.job.ns, host.mutable_views)));
          PSKIT_RETURN_IF_ERROR(ToDevice(be, host, params));
        }
      }

      if (o.after_step) o.after_step(summary.steps);
      const absl::Time now = absl::Now();
      if (o.job.log_interval_s > 0 && now >= next_log) {
        const double secs = absl::ToDoubleSeconds(now - start);
        spdlog::info("{}: epoch {} step {} {:.0f} samples/s loss {:.4f}", name,
                     epoch, summary.steps, summary.samples / secs,
                     loss_sum / std::max(1, loss_count));
        loss_sum = 0;
        loss_count = 0;
        next_log = now + absl::Seconds(o.job.log_interval_s);
      }
      if (local && o.local_test != nullptr && now >= next_eval) {
        PSKIT_ASSIGN_OR_RETURN(summary.local_accuracy, local_accuracy());
        const double secs = absl::ToDoubleSeconds(absl::Now() - start);
        spdlog::info("{}: {:.1f} s test accuracy {:.4f}", name, secs,
                     summary.local_accuracy);
        if (o.local_target_accuracy > 0 &&
            summary.local_accuracy >= o.local_target_accuracy) {
          summary.seconds_to_target = secs;
          stop = true;
        }
        next_eval = absl::Now() + absl::Seconds(o.local_eval_interval_s);
      }
      if (lease != nullptr && lease->job_done()) {
        summary.ended_by_evaluator = true;
        stop = true;
      }
      if (o.job.stop != nullptr && o.job.stop->HasBeenNotified()) {
        summary.stopped = true;
        stop = true;
      }
      if (o.job.max_seconds > 0 &&
          now - start >= absl::Seconds(o.job.max_seconds)) {
        stop = true;
      }
    }
  }
  summary.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  summary.samples_per_s = summary.samples / std::max(summary.seconds, 1e-9);
  lease.reset();
  if (client != nullptr) {
    if (absl::Status s = client->Leave(); !s.ok()) {
      spdlog::warn("{}: leave: {}", name, s.ToString());
    }
  }
  spdlog::info("{}: done: {} steps, {} samples in {:.1f} s ({:.0f} samples/s), "
               "last loss {:.4f}{}",
               name, summary.steps, summary.samples, summary.seconds,
               summary.samples_per_s, summary.last_loss,
               summary.ended_by_evaluator ? ", ended by the evaluator"
               : summary.stopped          ? ", stopped by a signal"
                                          : "");
  return summary;
}

absl::StatusOr<EvalSummary> Evaluate(const EvalOptions& o, Backend* be,
                                     const Dataset& test) {
  if (o.job.shards.empty()) {
    return absl::InvalidArgumentError("the evaluator needs --shards");
  }
  if (!(o.eval_interval_s > 0) || o.batch_size < 1) {
    return absl::InvalidArgumentError(
        "eval_interval_s must be > 0 and the batch size >= 1");
  }
  if (!(o.target_accuracy > 0) && o.patience < 1 && !(o.job.max_seconds > 0)) {
    return absl::InvalidArgumentError(
        "the evaluator needs a way to end the job: give --target_accuracy, "
        "--patience or --max_seconds");
  }
  PSKIT_RETURN_IF_ERROR(CheckFits(test, o.job.model));
  const int batch = static_cast<int>(std::min<int64_t>(o.batch_size, test.size()));
  PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Mlp> mlp,
                         Mlp::Create(o.job.model, be, batch));
  std::vector<float*> params;
  for (size_t i = 0; i < mlp->num_params(); ++i) params.push_back(mlp->param(i));
  HostParams host(*mlp);
  PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Client> client,
                         Client::Connect(o.job.shards, o.job.client));
  PSKIT_RETURN_IF_ERROR(client->Declare(o.job.ns, o.job.server_config, Decls(*mlp)));
  PSKIT_ASSIGN_OR_RETURN(DeviceBuffer x,
                         be->Allocate(static_cast<size_t>(batch) * test.feature_dim));

  EvalSummary summary;
  const absl::Time start = absl::Now();
  int since_best = 0;
  while (true) {
    const absl::Time round = absl::Now();
    absl::Status pulled = client->Pull(o.job.ns, host.mutable_views);
    if (pulled.code() == absl::StatusCode::kNotFound) {
      // A shard came back empty: declare the model again (its values there
      // start over) and score what is there.
      spdlog::warn("eval: {}; declaring the model again", pulled.ToString());
      PSKIT_RETURN_IF_ERROR(
          client->Declare(o.job.ns, o.job.server_config, Decls(*mlp)));
      pulled = client->Pull(o.job.ns, host.mutable_views);
    }
    PSKIT_RETURN_IF_ERROR(pulled);
    PSKIT_RETURN_IF_ERROR(ToDevice(be, host, params));
    double loss = 0;
    int64_t correct = 0;
    for (int64_t b = 0; b < test.size(); b += batch) {
      const int rows = static_cast<int>(std::min<int64_t>(batch, test.size() - b));
      PSKIT_RETURN_IF_ERROR(be->CopyToDevice(
          test.row(b), x.data(), static_cast<size_t>(rows) * test.feature_dim));
      PSKIT_ASSIGN_OR_RETURN(
          StepResult r,
          mlp->Evaluate(x.data(),
                        absl::MakeConstSpan(test.labels).subspan(b, rows)));
      loss += double{r.loss} * rows;
      correct += r.correct;
    }
    ++summary.evaluations;
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    summary.last_loss = loss / test.size();
    summary.last_accuracy = static_cast<double>(correct) / test.size();
    if (summary.last_accuracy > summary.best_accuracy) {
      summary.best_accuracy = summary.last_accuracy;
      since_best = 0;
    } else {
      ++since_best;
    }
    if (o.target_accuracy > 0 && summary.last_accuracy >= o.target_accuracy &&
        summary.seconds_to_target < 0) {
      summary.seconds_to_target = secs;
      summary.reason = absl::StrCat("target accuracy ", o.target_accuracy,
                                    " reached after ", secs, " s");
    } else if (o.patience > 0 && since_best >= o.patience) {
      summary.reason = absl::StrCat("no better accuracy in ", o.patience,
                                    " evaluations");
    } else if (o.job.max_seconds > 0 && secs >= o.job.max_seconds) {
      summary.reason = absl::StrCat("time limit of ", o.job.max_seconds, " s");
    }
    spdlog::info("eval: {:.1f} s accuracy {:.4f} loss {:.4f} (best {:.4f})",
                 secs, summary.last_accuracy, summary.last_loss,
                 summary.best_accuracy);
    if (o.job.metrics != nullptr) {
      o.job.metrics->AddEvaluation(summary.last_accuracy, summary.last_loss);
    }
    v1::Evaluation e;
    e.set_time_unix_ms(absl::ToUnixMillis(absl::Now()));
    e.set_loss(summary.last_loss);
    e.set_accuracy(summary.last_accuracy);
    e.set_samples(test.size());
    e.set_done(!summary.reason.empty());
    e.set_reason(summary.reason);
    PSKIT_ASSIGN_OR_RETURN(const bool job_done,
                           client->ReportEvaluation(o.job.ns, e));
    if (e.done()) break;
    if (job_done) {  // ended elsewhere: another evaluator, or a drain
      summary.reason = "the job was ended on the shards (psctl drain or "
                       "another evaluator)";
      break;
    }
    const absl::Duration wait = round + absl::Seconds(o.eval_interval_s) - absl::Now();
    if (o.job.stop != nullptr) {
      if (o.job.stop->WaitForNotificationWithTimeout(wait)) {
        summary.reason = "stopped by a signal";
        break;
      }
    } else {
      absl::SleepFor(wait);
    }
  }
  summary.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  spdlog::info("eval: job ended: {}", summary.reason);
  return summary;
}

}  // namespace pskit::worker
