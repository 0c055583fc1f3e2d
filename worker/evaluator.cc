// worker/evaluator.cc: the evaluator loop and model scoring.
#include "worker/evaluator.h"

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"
#include "worker/host_params.h"

namespace pskit::worker {
namespace {

absl::Status CheckOptions(const EvalOptions& o) {
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
  return absl::OkStatus();
}

// Updates `summary` with one evaluation's score and says why the job ends
// now ("" = it goes on).
std::string Judge(const EvalOptions& o, const Score& score, double secs,
                  int* since_best, EvalSummary* summary) {
  ++summary->evaluations;
  summary->last_loss = score.loss;
  summary->last_accuracy = score.accuracy;
  if (summary->last_accuracy > summary->best_accuracy) {
    summary->best_accuracy = summary->last_accuracy;
    *since_best = 0;
  } else {
    ++*since_best;
  }
  if (o.target_accuracy > 0 && summary->last_accuracy >= o.target_accuracy &&
      summary->seconds_to_target < 0) {
    summary->seconds_to_target = secs;
    return absl::StrCat("target accuracy ", o.target_accuracy,
                        " reached after ", secs, " s");
  }
  if (o.patience > 0 && *since_best >= o.patience) {
    return absl::StrCat("no better accuracy in ", o.patience, " evaluations");
  }
  if (o.job.max_seconds > 0 && secs >= o.job.max_seconds) {
    return absl::StrCat("time limit of ", o.job.max_seconds, " s");
  }
  return "";
}

}  // namespace

absl::StatusOr<Score> ScoreModel(Backend* be, Mlp* model, const Dataset& data,
                                 int batch, float* x) {
  double loss = 0;
  int64_t correct = 0;
  for (int64_t b = 0; b < data.size(); b += batch) {
    const int rows = static_cast<int>(std::min<int64_t>(batch, data.size() - b));
    PSKIT_RETURN_IF_ERROR(be->CopyToDevice(
        data.row(b), x, static_cast<size_t>(rows) * data.feature_dim));
    PSKIT_ASSIGN_OR_RETURN(
        StepResult r,
        model->Evaluate(x, absl::MakeConstSpan(data.labels).subspan(b, rows)));
    loss += double{r.loss} * rows;
    correct += r.correct;
  }
  return Score{loss / data.size(), static_cast<double>(correct) / data.size()};
}

absl::StatusOr<EvalSummary> Evaluate(const EvalOptions& o, Backend* be,
                                     const Dataset& test) {
  PSKIT_RETURN_IF_ERROR(CheckOptions(o));
  PSKIT_RETURN_IF_ERROR(CheckFits(test, o.job.model));
  const int batch = static_cast<int>(std::min<int64_t>(o.batch_size, test.size()));
  PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Mlp> mlp,
                         Mlp::Create(o.job.model, be, batch));
  const std::vector<float*> params = ParamPointers(mlp.get());
  HostParams host(*mlp);
  PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Client> client,
                         Client::Connect(o.job.shards, o.job.client));
  PSKIT_RETURN_IF_ERROR(
      client->Declare(o.job.ns, o.job.server_config, ModelDecls(*mlp)));
  PSKIT_ASSIGN_OR_RETURN(DeviceBuffer x,
                         be->Allocate(static_cast<size_t>(batch) * test.feature_dim));

  const std::string on =
      o.validation.empty() ? "" : absl::StrCat(" on ", o.validation);
  spdlog::info("eval: scoring {} ({} samples)",
               o.validation.empty() ? "the test set" : o.validation,
               test.size());
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
          client->Declare(o.job.ns, o.job.server_config, ModelDecls(*mlp)));
      pulled = client->Pull(o.job.ns, host.mutable_views);
    }
    PSKIT_RETURN_IF_ERROR(pulled);
    PSKIT_RETURN_IF_ERROR(host.CopyTo(be, params));
    PSKIT_ASSIGN_OR_RETURN(const Score score,
                           ScoreModel(be, mlp.get(), test, batch, x.data()));
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    summary.reason = Judge(o, score, secs, &since_best, &summary);
    spdlog::info("eval: {:.1f} s accuracy {:.4f} loss {:.4f} (best {:.4f}){}",
                 secs, summary.last_accuracy, summary.last_loss,
                 summary.best_accuracy, on);
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
