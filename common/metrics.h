// common/metrics.h
//
// How a pskit process exports its Prometheus metrics (prometheus-cpp):
//
//   MetricsEndpoint  serves a registry at http://HOST:PORT/metrics (pull);
//                    port 0 picks a free port, read back with port().
//                    Its own small HTTP/1.0 server on one thread, not
//                    prometheus-cpp's civetweb Exposer: civetweb starts its
//                    threads with a fixed 100 KiB stack, and in ps-worker
//                    the static TLS of cuBLASLt (92 KiB) and OpenBLAS
//                    (60 KiB) leaves pthread_create no room (EINVAL).
//   MetricsPusher    pushes a registry to a Pushgateway every interval and
//                    once more at Stop() (for HPC nodes nobody can scrape):
//                    an HTTP PUT with a deadline (common/http_get.h), not
//                    prometheus-cpp's Gateway, whose curl call has none: a
//                    gateway that accepted and never answered held the
//                    worker's exit for minutes.
//
// Names follow pskit_<process>_<what>_<unit>: counters end in _total,
// durations are _seconds histograms (see server/server_metrics.h and
// worker/worker_metrics.h for the metrics themselves).
//
// Example:
//   auto registry = std::make_shared<prometheus::Registry>();
//   PSKIT_ASSIGN_OR_RETURN(auto endpoint,
//                          MetricsEndpoint::Start("127.0.0.1", 0, registry));
//   std::printf("metrics on http://127.0.0.1:%d/metrics\n", endpoint->port());
//
// Thread safety: both classes are safe to use from any thread; the
// registry's metrics are updated concurrently by the process.
#ifndef PSKIT_COMMON_METRICS_H_
#define PSKIT_COMMON_METRICS_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/collectable.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace pskit {

// Buckets for request and phase latencies: 100 us to 60 s.
prometheus::Histogram::BucketBoundaries LatencyBuckets();

class MetricsEndpoint {
 public:
  // Serves `registry` at http://host:port/metrics. `port` 0 picks a free
  // port. With a non-empty `bearer_token` every request must carry
  // "Authorization: Bearer <bearer_token>" (compared in constant time) or
  // gets 401. INVALID_ARGUMENT for a port outside [0, 65535]; UNAVAILABLE
  // when the address cannot be bound (the message names it).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& host, int port,
      std::shared_ptr<prometheus::Collectable> registry,
      std::string bearer_token = "");

  // Stops serving and joins the thread.
  ~MetricsEndpoint();

  // The bound port.
  int port() const { return port_; }
  // http://host:port/metrics
  std::string url() const;

 private:
  MetricsEndpoint() = default;
  void Serve();
  void Answer(int fd);

  // Constant after Start.
  std::string host_;
  int port_ = 0;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: written by the destructor to end Serve()
  std::shared_ptr<prometheus::Collectable> collectable_;
  std::string bearer_token_;  // empty: no token needed
  std::thread thread_;
};

class MetricsPusher {
 public:
  // Pushes `registry` to the Pushgateway at `url` (http://host:port) under
  // job `job` and grouping labels `grouping` (for example instance and
  // rank) every `interval`, and once more in Stop(). INVALID_ARGUMENT for a
  // URL that is not http://host:port[/]. A failed push is logged, not
  // fatal: training goes on while the gateway is down.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MetricsPusher>> Start(
      const std::string& url, const std::string& job,
      const prometheus::Labels& grouping,
      std::shared_ptr<prometheus::Collectable> registry, absl::Duration interval);

  // Stops the thread after a last push. Idempotent.
  ~MetricsPusher();
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Pushes now (deadline 5 s). Errors are returned and logged.
  absl::Status PushNow();

 private:
  MetricsPusher() = default;
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after Start.
  std::string url_;
  absl::Duration interval_;
  std::string host_;
  int port_ = 0;
  std::string path_;  // /metrics/job/<job>/<label>@base64/<value>...
  std::shared_ptr<prometheus::Collectable> collectable_;
  std::thread thread_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace pskit

#endif  // PSKIT_COMMON_METRICS_H_
