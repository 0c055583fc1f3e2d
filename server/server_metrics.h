// server/server_metrics.h
//
// ServerMetrics: a shard's Prometheus metrics. Every family carries the
// constant label shard="<index>".
//
//   pskit_server_requests_total{method,code}            counter
//   pskit_server_request_duration_seconds{method,code}  histogram
//   pskit_server_received_bytes_total{method}           counter (request
//   pskit_server_sent_bytes_total{method}               counter  messages)
//   pskit_server_updates_applied_total{namespace}       counter (chunk updates:
//                                                       pushes and exchanges)
//   pskit_server_staleness_updates{namespace}           histogram (versions a
//                                                       gradient's chunk moved
//                                                       on since it was pulled)
//   pskit_server_checkpoints_total{result}              counter (ok, error)
//   pskit_server_checkpoint_duration_seconds            histogram
//   pskit_server_checkpoint_last_success_timestamp_seconds  gauge
//   pskit_server_held_seconds{consistency}           histogram (time a
//                                                       member's call waited
//                                                       under ssp or sync;
//                                                       0 when it did not)
//   pskit_server_held_calls                             gauge (calls held now)
//   pskit_server_late_gradients_dropped_total{namespace} counter (sync:
//                                                       stragglers dropped)
//   pskit_server_auth_refusals_total{rpc,reason}       counter (calls the
//                                                       gate refused; reason:
//                                                       no_token, not_bearer,
//                                                       unknown_token, role,
//                                                       namespace, worker_id,
//                                                       unparsable)
// and, read from the shard's state at each scrape:
//   pskit_server_active_workers                         gauge (live leases)
//   pskit_server_chunks{namespace}                      gauge (held here)
//   pskit_server_parameters{namespace}                  gauge (held here)
//   pskit_server_eval_accuracy_ratio{namespace}         gauge (the evaluator's
//   pskit_server_eval_loss{namespace}                   gauge  last report)
//   pskit_server_eval_timestamp_seconds{namespace}      gauge
//   pskit_server_retries_answered_total                 counter (copies of a
//                                                       Push/PushPull/Exchange
//                                                       answered from the
//                                                       exactly-once window)
//   pskit_server_retries_too_old_total                  counter (copies refused:
//                                                       older than the window)
//   pskit_server_push_window_calls                      gauge (calls remembered)
//   pskit_server_compensation_scale{rule}               histogram (per push
//                                                       chunk: gem's mean pi,
//                                                       dcasgd-a's mean
//                                                       lambda_t, dcasgd-c's
//                                                       lambda)
//   pskit_server_compensation_state_bytes               gauge (dcasgd, gem
//   pskit_server_compensation_workers                   gauge  per-worker state)
//
// An answer given from the window (initial metadata "pskit-replayed") is
// not counted as updates or staleness again.
//
// Requests, latencies and bytes are counted by a gRPC server interceptor
// (InterceptorFactory), so every method, health checks included, is
// covered. Updates, staleness and refusals come from the gate
// (server/gate.h), which has the typed messages: pskit's methods are raw
// (ByteBuffer) methods, so the interceptor sees only bytes.
//
// Thread safety: all methods may be called from any thread.
#ifndef PSKIT_SERVER_SERVER_METRICS_H_
#define PSKIT_SERVER_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/support/server_interceptor.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "pskit/v1/admin.pb.h"
#include "server/chunk_store.h"
#include "server/worker_registry.h"

namespace pskit {

class ServerMetrics : public prometheus::Collectable {
 public:
  // Borrows `store` and `workers`, which must outlive every scrape (the
  // Server stops its metrics endpoint before destroying them).
  ServerMetrics(uint32_t shard_index, ChunkStore* store,
                WorkerRegistry* workers);

  // The registry's metrics plus the state gauges, read now.
  std::vector<prometheus::MetricFamily> Collect() const override;

  // For grpc::ServerBuilder::experimental().SetInterceptorCreators. The
  // factory borrows this object, which must outlive the gRPC server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  InterceptorFactory();

  // A finished checkpoint (or a failed one).
  void RecordCheckpoint(const absl::StatusOr<v1::CheckpointInfo>& result);
  // The newest checkpoint on disk at start (its time becomes the last
  // success, so a restarted shard does not report "never").
  void SetLastCheckpoint(const v1::CheckpointInfo& info);

  // A call the gate refused (see the reasons above). `rpc`:
  // "ParameterServer/Push".
  void CountAuthRefusal(absl::string_view rpc, absl::string_view reason);

  // Consistency (server/consistency.h): a held call answered after
  // `seconds` (`consistency`: "ssp" or "sync"); the calls held now; late
  // gradients sync dropped in namespace `ns`.
  void ObserveHeld(absl::string_view consistency, double seconds);
  void SetHeldNow(double calls);
  void CountLateDropped(const std::string& ns, uint64_t n);

  // A successful answer: Push, PushPull and Exchange answers count updates
  // and staleness in the request's namespace; other types are ignored.
  void RecordAnswer(const google::protobuf::Message& request,
                    const google::protobuf::Message& response);

  // One method's metrics; created on first use. Public for the interceptor.
  struct Method {
    std::string label;  // "Push", "Admin/Status", "grpc.health.v1.Health/Check"
    int kind = 0;       // which request/response types it has (metrics.cc)
    prometheus::Counter* received = nullptr;
    prometheus::Counter* sent = nullptr;
    // requests_total and the duration histogram by status code, created
    // on first use.
    std::array<std::atomic<prometheus::Counter*>, 17> by_code{};
    std::array<std::atomic<prometheus::Histogram*>, 17> duration_by_code{};
  };
  struct Namespace {
    prometheus::Counter* updates = nullptr;
    prometheus::Histogram* staleness = nullptr;
  };
  Method* ForMethod(const char* full_name) ABSL_LOCKS_EXCLUDED(mu_);
  Namespace* ForNamespace(const std::string& ns) ABSL_LOCKS_EXCLUDED(mu_);
  void CountCall(Method* m, int code, double seconds);
  // Bucket bounds of the staleness histogram.
  const prometheus::Histogram::BucketBoundaries& staleness_buckets() const {
    return staleness_buckets_;
  }

 private:
  // Constant after construction.
  const std::string shard_label_;
  ChunkStore* const store_;
  WorkerRegistry* const workers_;
  const prometheus::Histogram::BucketBoundaries staleness_buckets_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* duration_;
  prometheus::Family<prometheus::Counter>* received_;
  prometheus::Family<prometheus::Counter>* sent_;
  prometheus::Family<prometheus::Counter>* updates_;
  prometheus::Family<prometheus::Histogram>* staleness_;
  prometheus::Family<prometheus::Counter>* auth_refusals_;
  prometheus::Histogram* held_ssp_;
  prometheus::Histogram* held_sync_;
  prometheus::Gauge* held_now_;
  prometheus::Family<prometheus::Counter>* late_dropped_;
  prometheus::Counter* checkpoints_ok_;
  prometheus::Counter* checkpoints_failed_;
  prometheus::Histogram* checkpoint_duration_;
  prometheus::Gauge* checkpoint_last_success_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Method>> methods_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Namespace>> namespaces_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace pskit

#endif  // PSKIT_SERVER_SERVER_METRICS_H_
