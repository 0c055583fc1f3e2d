// worker/worker_metrics.cc: the Prometheus families of a ps-worker.
#include "worker/worker_metrics.h"

#include "common/metrics.h"

namespace pskit::worker {

WorkerMetrics::WorkerMetrics(const std::string& role, int rank)
    : registry_(std::make_shared<prometheus::Registry>()) {
  const prometheus::Labels labels = {{"role", role},
                                     {"rank", std::to_string(rank)}};
  steps_ = &prometheus::BuildCounter()
                .Name("pskit_worker_steps_total")
                .Help("training steps taken (one batch each)")
                .Labels(labels)
                .Register(*registry_)
                .Add({});
  samples_ = &prometheus::BuildCounter()
                  .Name("pskit_worker_samples_total")
                  .Help("samples trained on")
                  .Labels(labels)
                  .Register(*registry_)
                  .Add({});
  phases_ = &prometheus::BuildHistogram()
                 .Name("pskit_worker_phase_duration_seconds")
                 .Help("time per step phase: data (waiting for the batch), "
                       "compute, push, pull, pushpull, exchange, comm_wait "
                       "(waiting for the communication thread)")
                 .Labels(labels)
                 .Register(*registry_);
  loss_ = &prometheus::BuildGauge()
               .Name("pskit_worker_loss")
               .Help("training loss, moving average over about 100 steps")
               .Labels(labels)
               .Register(*registry_)
               .Add({});
  staleness_ = &prometheus::BuildHistogram()
                    .Name("pskit_worker_staleness_pushes")
                    .Help("per pushed gradient: this worker's own earlier "
                          "pushes missing from the weights it was computed on")
                    .Labels(labels)
                    .Register(*registry_)
                    .Add({}, prometheus::Histogram::BucketBoundaries{
                                 0, 1, 2, 4, 8, 16, 64});
  if (role != "evaluator") return;  // a training worker has no evaluations
  evaluations_ = &prometheus::BuildCounter()
                      .Name("pskit_worker_evaluations_total")
                      .Help("evaluations of the model on the test set")
                      .Labels(labels)
                      .Register(*registry_)
                      .Add({});
  eval_accuracy_ = &prometheus::BuildGauge()
                        .Name("pskit_worker_eval_accuracy_ratio")
                        .Help("the evaluator's last test accuracy")
                        .Labels(labels)
                        .Register(*registry_)
                        .Add({});
  eval_loss_ = &prometheus::BuildGauge()
                    .Name("pskit_worker_eval_loss")
                    .Help("the evaluator's last test loss")
                    .Labels(labels)
                    .Register(*registry_)
                    .Add({});
}

void WorkerMetrics::AddStep(int samples, float loss) {
  steps_->Increment();
  samples_->Increment(samples);
  loss_average_ = have_loss_ ? 0.99 * loss_average_ + 0.01 * loss : loss;
  have_loss_ = true;
  loss_->Set(loss_average_);
}

void WorkerMetrics::ObservePhase(const std::string& phase, double seconds) {
  prometheus::Histogram*& h = phase_by_name_[phase];
  if (h == nullptr) h = &phases_->Add({{"phase", phase}}, LatencyBuckets());
  h->Observe(seconds);
}

void WorkerMetrics::ObserveStaleness(int64_t pushes) {
  staleness_->Observe(static_cast<double>(pushes));
}

void WorkerMetrics::AddEvaluation(double accuracy, double loss) {
  if (evaluations_ == nullptr) return;  // not the evaluator's metrics
  evaluations_->Increment();
  eval_accuracy_->Set(accuracy);
  eval_loss_->Set(loss);
}

}  // namespace pskit::worker
