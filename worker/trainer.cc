// worker/trainer.cc: the training loop that drives one Algorithm.
#include "worker/trainer.h"

#include <time.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"
#include "worker/data/batcher.h"
#include "worker/evaluator.h"
#include "worker/trace.h"

namespace pskit::worker {
namespace {

// CPU seconds this process has used, all its threads together.
double ProcessCpuSeconds() {
  timespec ts{};
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

absl::Status CheckOptions(const TrainOptions& o, const Dataset& train) {
  if (o.batch_size < 1 || o.epochs < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch_size (", o.batch_size, ") and epochs (", o.epochs,
        ") must be >= 1"));
  }
  if (o.world < 1 || o.rank < 0 || o.rank >= o.world) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank ", o.rank, " of world ", o.world,
        ": ranks run from 0 to world - 1"));
  }
  PSKIT_RETURN_IF_ERROR(CheckFits(train, o.job.model));
  if (o.local_test != nullptr) {
    PSKIT_RETURN_IF_ERROR(CheckFits(*o.local_test, o.job.model));
  }
  const auto [begin, end] = SliceOf(train.size(), o.rank, o.world);
  if (end - begin < o.batch_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank ", o.rank, " has ", end - begin, " samples, fewer than one batch of ",
        o.batch_size, "; use a smaller --batch_size or fewer workers"));
  }
  return absl::OkStatus();
}

// The progress line every log_interval_s: throughput so far and the mean
// loss since the previous line.
class ProgressLog {
 public:
  ProgressLog(const std::string& name, double interval_s, absl::Time start)
      : name_(name), interval_s_(interval_s), start_(start),
        next_(start + absl::Seconds(interval_s)) {}

  void Step(float loss) {
    loss_sum_ += loss;
    ++loss_count_;
  }

  void MaybeLog(absl::Time now, int epoch, const TrainSummary& s) {
    if (!(interval_s_ > 0) || now < next_) return;
    const double secs = absl::ToDoubleSeconds(now - start_);
    spdlog::info("{}: epoch {} step {} {:.0f} samples/s loss {:.4f}", name_,
                 epoch, s.steps, s.samples / secs,
                 loss_sum_ / std::max(1, loss_count_));
    loss_sum_ = 0;
    loss_count_ = 0;
    next_ = now + absl::Seconds(interval_s_);
  }

 private:
  const std::string& name_;
  const double interval_s_;
  const absl::Time start_;
  absl::Time next_;
  double loss_sum_ = 0;
  int loss_count_ = 0;
};

// Scores the worker's own model on TrainOptions::local_test every
// local_eval_interval_s; true once the target accuracy is reached.
class LocalScoring {
 public:
  LocalScoring(const TrainOptions& o, Backend* be, Mlp* mlp, float* x,
               const std::string& name, absl::Time start)
      : o_(o), be_(be), mlp_(mlp), x_(x), name_(name), start_(start),
        next_(start + absl::Seconds(o.local_eval_interval_s)) {}

  absl::StatusOr<bool> MaybeScore(absl::Time now, TrainSummary* s) {
    if (o_.local_test == nullptr || now < next_) return false;
    PSKIT_ASSIGN_OR_RETURN(
        const Score score,
        ScoreModel(be_, mlp_, *o_.local_test, o_.batch_size, x_));
    s->local_accuracy = score.accuracy;
    const double secs = absl::ToDoubleSeconds(absl::Now() - start_);
    spdlog::info("{}: {:.1f} s {} accuracy {:.4f}", name_, secs,
                 o_.local_test_name, s->local_accuracy);
    next_ = absl::Now() + absl::Seconds(o_.local_eval_interval_s);
    if (o_.local_target_accuracy > 0 &&
        s->local_accuracy >= o_.local_target_accuracy) {
      s->seconds_to_target = secs;
      return true;
    }
    return false;
  }

 private:
  const TrainOptions& o_;
  Backend* const be_;
  Mlp* const mlp_;
  float* const x_;  // room for one batch
  const std::string& name_;
  const absl::Time start_;
  absl::Time next_;
};

}  // namespace

absl::StatusOr<TrainSummary> Train(const TrainOptions& o, Backend* be,
                                   const Dataset& train) {
  // Everything is checked before the worker registers anywhere.
  PSKIT_RETURN_IF_ERROR(CheckOptions(o, train));
  const auto [begin, end] = SliceOf(train.size(), o.rank, o.world);
  const std::string name =
      o.name.empty() ? absl::StrCat("rank", o.rank) : o.name;
  PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Mlp> mlp,
                         Mlp::Create(o.job.model, be, o.batch_size));
  PSKIT_ASSIGN_OR_RETURN(
      std::unique_ptr<Algorithm> algorithm,
      MakeAlgorithm(o.algorithm, {&o.job, be, mlp.get(), name, o.world}));
  std::unique_ptr<TraceWriter> trace;
  if (!o.trace_file.empty()) {
    PSKIT_ASSIGN_OR_RETURN(trace, TraceWriter::Open(o.trace_file, o.rank));
  }
  PhaseSink sink(trace.get(), o.job.metrics);
  PhaseSink* const phases =
      trace != nullptr || o.job.metrics != nullptr ? &sink : nullptr;
  const size_t batch_floats = static_cast<size_t>(o.batch_size) * train.feature_dim;
  PSKIT_ASSIGN_OR_RETURN(DeviceBuffer x, be->Allocate(batch_floats));

  PSKIT_RETURN_IF_ERROR(algorithm->Setup());
  Batcher batches(train, begin, end, o.batch_size, o.job.seed * 7919 + o.rank,
                  o.prefetch);
  TrainSummary summary;
  const absl::Time start = absl::Now();
  const double cpu_start = ProcessCpuSeconds();
  ProgressLog progress(name, o.job.log_interval_s, start);
  LocalScoring scoring(o, be, mlp.get(), x.data(), name, start);
  bool stop = false;
  while (!stop) {
    const absl::Time wait_start = absl::Now();
    const Batch& batch = batches.Next();
    if (phases != nullptr) phases->Add("data", wait_start, absl::Now());
    if (batch.epoch >= o.epochs) break;
    const int epoch = batch.epoch;
    {
      PhaseSink::Span compute(phases, "compute");
      PSKIT_RETURN_IF_ERROR(be->CopyToDevice(batch.x.data(), x.data(), batch_floats));
      PSKIT_ASSIGN_OR_RETURN(StepResult step, mlp->ForwardBackward(x.data(), batch.y));
      ++summary.steps;
      summary.samples += o.batch_size;
      summary.last_loss = step.loss;
      progress.Step(step.loss);
      if (o.job.metrics != nullptr) o.job.metrics->AddStep(o.batch_size, step.loss);
      PSKIT_RETURN_IF_ERROR(algorithm->AfterGradient(summary.steps));
    }
    PSKIT_RETURN_IF_ERROR(algorithm->Communicate(summary.steps, phases));

    if (o.after_step) o.after_step(summary.steps);
    const absl::Time now = absl::Now();
    progress.MaybeLog(now, epoch, summary);
    PSKIT_ASSIGN_OR_RETURN(stop, scoring.MaybeScore(now, &summary));
    if (algorithm->JobDone()) {
      summary.ended_by_evaluator = true;
      stop = true;
    }
    if (o.job.stop != nullptr && o.job.stop->HasBeenNotified()) {
      summary.stopped = true;
      stop = true;
    }
    if (o.job.max_seconds > 0 && now - start >= absl::Seconds(o.job.max_seconds)) {
      stop = true;
    }
  }
  PSKIT_RETURN_IF_ERROR(algorithm->Drain(phases));
  summary.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  summary.samples_per_s = summary.samples / std::max(summary.seconds, 1e-9);
  summary.cpu_seconds = ProcessCpuSeconds() - cpu_start;
  algorithm->Finish();
  spdlog::info("{}: done: {} steps, {} samples in {:.1f} s ({:.0f} samples/s, "
               "cpu {:.1f} s), last loss {:.4f}{}",
               name, summary.steps, summary.samples, summary.seconds,
               summary.samples_per_s, summary.cpu_seconds, summary.last_loss,
               summary.ended_by_evaluator ? ", ended by the evaluator"
               : summary.stopped          ? ", stopped by a signal"
                                          : "");
  return summary;
}

}  // namespace pskit::worker
