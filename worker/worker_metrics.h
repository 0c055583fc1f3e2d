// worker/worker_metrics.h
//
// WorkerMetrics: a ps-worker's Prometheus metrics, every family with the
// constant labels role (worker, evaluator) and rank:
//
//   pskit_worker_steps_total                     counter (training steps)
//   pskit_worker_samples_total                   counter (samples trained on)
//   pskit_worker_phase_duration_seconds{phase}   histogram: data (waiting for
//       the next batch), compute, push, pull, pushpull, exchange, comm_wait
//       (the training thread waiting for the communication thread)
//   pskit_worker_staleness_pushes                histogram: per pushed
//       gradient, how many of this worker's own earlier pushes the weights
//       it was computed on did not hold yet (0 pushing and pulling every
//       step; 1 with downpour's overlap). The shard's
//       pskit_server_staleness_updates counts from the worker's last pull,
//       so it does not see this part.
//   pskit_worker_loss                            gauge (training loss, moving
//                                                average over ~100 steps)
//   pskit_worker_evaluations_total               counter (role evaluator only,
//   pskit_worker_eval_accuracy_ratio             gauge  as are these: last test
//   pskit_worker_eval_loss                       gauge  accuracy and loss)
//
// PhaseSink sends each step's phases to the trace file and the metrics
// (either may be absent), so the training loop marks a phase once.
//
// Thread safety: WorkerMetrics may be updated from any thread (prometheus-cpp
// metrics are atomic) and scraped meanwhile; PhaseSink is used by one thread.
#ifndef PSKIT_WORKER_WORKER_METRICS_H_
#define PSKIT_WORKER_WORKER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "worker/trace.h"

namespace pskit::worker {

class WorkerMetrics {
 public:
  // `role`: "worker" or "evaluator".
  WorkerMetrics(const std::string& role, int rank);

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void AddStep(int samples, float loss);
  // `phase` is one of the names above (others get their own series).
  void ObservePhase(const std::string& phase, double seconds);
  void AddEvaluation(double accuracy, double loss);
  void ObserveStaleness(int64_t pushes);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* steps_;
  prometheus::Counter* samples_;
  prometheus::Family<prometheus::Histogram>* phases_;
  prometheus::Gauge* loss_;
  prometheus::Histogram* staleness_;
  // Only with role "evaluator"; null otherwise.
  prometheus::Counter* evaluations_ = nullptr;
  prometheus::Gauge* eval_accuracy_ = nullptr;
  prometheus::Gauge* eval_loss_ = nullptr;
  // Only the training thread reads or writes these.
  absl::flat_hash_map<std::string, prometheus::Histogram*> phase_by_name_;
  double loss_average_ = 0;
  bool have_loss_ = false;
};

class PhaseSink {
 public:
  // Borrows both; either may be null.
  PhaseSink(TraceWriter* trace, WorkerMetrics* metrics)
      : trace_(trace), metrics_(metrics) {}

  // `track`: see TraceWriter::Add (1: a span of the communication thread,
  // added by the training thread once it has taken the exchange's result).
  void Add(const char* phase, absl::Time start, absl::Time end, int track = 0) {
    if (trace_ != nullptr) trace_->Add(phase, start, end, track);
    if (metrics_ != nullptr) {
      metrics_->ObservePhase(phase, absl::ToDoubleSeconds(end - start));
    }
  }

  // Records the span from construction to destruction; a null sink records
  // nothing, so call sites need no branches.
  class Span {
   public:
    Span(PhaseSink* sink, const char* phase)
        : sink_(sink), phase_(phase), start_(absl::Now()) {}
    ~Span() {
      if (sink_ != nullptr) sink_->Add(phase_, start_, absl::Now());
    }
    Span(const Span&) = delete;
    Span& operator=(const Span&) = delete;

   private:
    PhaseSink* const sink_;
    const char* const phase_;
    const absl::Time start_;
  };

 private:
  TraceWriter* const trace_;
  WorkerMetrics* const metrics_;
};

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_WORKER_METRICS_H_
