#include "server/server_metrics.h"

#include <grpcpp/support/byte_buffer.h>

#include <limits>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics.h"
#include "pskit/v1/ps.pb.h"

namespace pskit {
namespace {

// Which message types a method has, so the interceptor can read sizes,
// namespaces and acks from the (type-erased) messages it is handed.
enum Kind {
  kOther = 0,  // sizes from the serialized answer only
  kDeclare,
  kPull,
  kPush,
  kPushPull,
  kExchange,
};

Kind KindOf(absl::string_view full_name) {
  if (full_name == "/pskit.v1.ParameterServer/Declare") return kDeclare;
  if (full_name == "/pskit.v1.ParameterServer/Pull") return kPull;
  if (full_name == "/pskit.v1.ParameterServer/Push") return kPush;
  if (full_name == "/pskit.v1.ParameterServer/PushPull") return kPushPull;
  if (full_name == "/pskit.v1.ParameterServer/Exchange") return kExchange;
  return kOther;
}

// "/pskit.v1.ParameterServer/Push" -> "ParameterServer/Push";
// "/grpc.health.v1.Health/Check" stays whole (less the slash).
std::string MethodLabel(absl::string_view full_name) {
  absl::ConsumePrefix(&full_name, "/");
  absl::ConsumePrefix(&full_name, "pskit.v1.");
  return std::string(full_name);
}

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(ServerMetrics* metrics, ServerMetrics::Method* method)
      : metrics_(metrics), method_(method), start_(absl::Now()) {}

  ~MetricsInterceptor() override {
    // No status was sent: the client cancelled or the deadline passed.
    if (!counted_) Count(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    using grpc::experimental::InterceptionHookPoints;
    if (m->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_MESSAGE)) {
      OnRequest(m->GetRecvMessage());
    }
    if (m->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      if (grpc::ByteBuffer* b = m->GetSerializedSendMessage(); b != nullptr) {
        method_->sent->Increment(static_cast<double>(b->Length()));
      }
    }
    if (m->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      Count(m->GetSendStatus().error_code());
    }
    m->Proceed();
  }

 private:
  void Count(grpc::StatusCode code) {
    counted_ = true;
    metrics_->CountCall(method_, static_cast<int>(code),
                        absl::ToDoubleSeconds(absl::Now() - start_));
  }

  // pskit's methods are raw (server/gate.h): their messages reach the
  // interceptor as serialized bytes.
  void OnRequest(void* msg) {
    if (msg == nullptr || method_->kind == kOther) return;
    method_->received->Increment(
        static_cast<double>(static_cast<grpc::ByteBuffer*>(msg)->Length()));
  }

  ServerMetrics* const metrics_;
  ServerMetrics::Method* const method_;
  const absl::Time start_;
  bool counted_ = false;
};

class MetricsInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(ServerMetrics* metrics)
      : metrics_(metrics) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_, metrics_->ForMethod(info->method()));
  }

 private:
  ServerMetrics* const metrics_;
};

prometheus::MetricFamily GaugeFamily(std::string name, std::string help) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = prometheus::MetricType::Gauge;
  return f;
}

void AddGauge(prometheus::MetricFamily* f, double value,
              std::vector<prometheus::ClientMetric::Label> labels) {
  prometheus::ClientMetric& m = f->metric.emplace_back();
  m.label = std::move(labels);
  m.gauge.value = value;
}

}  // namespace

void ServerMetrics::ObserveHeld(absl::string_view consistency,
                                double seconds) {
  (consistency == "ssp" ? held_ssp_ : held_sync_)->Observe(seconds);
}

void ServerMetrics::SetHeldNow(double calls) { held_now_->Set(calls); }

void ServerMetrics::CountLateDropped(const std::string& ns, uint64_t n) {
  late_dropped_->Add({{"namespace", ns}}).Increment(static_cast<double>(n));
}

ServerMetrics::ServerMetrics(uint32_t shard_index, ChunkStore* store,
                             WorkerRegistry* workers)
    : shard_label_(std::to_string(shard_index)),
      store_(store),
      workers_(workers),
      staleness_buckets_({0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024}),
      registry_(std::make_shared<prometheus::Registry>()) {
  const prometheus::Labels shard = {{"shard", shard_label_}};
  requests_ = &prometheus::BuildCounter()
                   .Name("pskit_server_requests_total")
                   .Help("gRPC calls answered, by method and status code")
                   .Labels(shard)
                   .Register(*registry_);
  duration_ = &prometheus::BuildHistogram()
                   .Name("pskit_server_request_duration_seconds")
                   .Help("time from a call's arrival to its status, by method "
                         "and status code")
                   .Labels(shard)
                   .Register(*registry_);
  received_ = &prometheus::BuildCounter()
                   .Name("pskit_server_received_bytes_total")
                   .Help("request message bytes received, by method "
                         "(ParameterServer data methods)")
                   .Labels(shard)
                   .Register(*registry_);
  sent_ = &prometheus::BuildCounter()
               .Name("pskit_server_sent_bytes_total")
               .Help("answer message bytes sent, by method")
               .Labels(shard)
               .Register(*registry_);
  updates_ = &prometheus::BuildCounter()
                  .Name("pskit_server_updates_applied_total")
                  .Help("chunk updates applied (pushed gradients and EASGD "
                        "exchanges), by namespace")
                  .Labels(shard)
                  .Register(*registry_);
  staleness_ = &prometheus::BuildHistogram()
                    .Name("pskit_server_staleness_updates")
                    .Help("updates a chunk received between a worker's pull "
                          "and its push of a gradient for it, by namespace")
                    .Labels(shard)
                    .Register(*registry_);
  auth_refusals_ = &prometheus::BuildCounter()
                        .Name("pskit_server_auth_refusals_total")
                        .Help("calls the gate refused, by RPC and reason "
                              "(no_token, not_bearer, unknown_token, role, "
                              "namespace, worker_id, unparsable)")
                        .Labels(shard)
                        .Register(*registry_);
  auto& held = prometheus::BuildHistogram()
                   .Name("pskit_server_held_seconds")
                   .Help("time a member's Pull or PushPull waited under ssp "
                         "or sync (0 when it did not), by consistency")
                   .Labels(shard)
                   .Register(*registry_);
  const prometheus::Histogram::BucketBoundaries held_buckets = {
      0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60};
  held_ssp_ = &held.Add({{"consistency", "ssp"}}, held_buckets);
  held_sync_ = &held.Add({{"consistency", "sync"}}, held_buckets);
  held_now_ = &prometheus::BuildGauge()
                   .Name("pskit_server_held_calls")
                   .Help("calls held now by ssp or sync")
                   .Labels(shard)
                   .Register(*registry_)
                   .Add({});
  late_dropped_ = &prometheus::BuildCounter()
                       .Name("pskit_server_late_gradients_dropped_total")
                       .Help("sync: gradients dropped because their round "
                             "was applied already (stragglers), by namespace")
                       .Labels(shard)
                       .Register(*registry_);
  auto& checkpoints = prometheus::BuildCounter()
                          .Name("pskit_server_checkpoints_total")
                          .Help("checkpoints taken, by result (ok, error)")
                          .Labels(shard)
                          .Register(*registry_);
  checkpoints_ok_ = &checkpoints.Add({{"result", "ok"}});
  checkpoints_failed_ = &checkpoints.Add({{"result", "error"}});
  checkpoint_duration_ =
      &prometheus::BuildHistogram()
           .Name("pskit_server_checkpoint_duration_seconds")
           .Help("time to copy and write one checkpoint")
           .Labels(shard)
           .Register(*registry_)
           .Add({}, prometheus::Histogram::BucketBoundaries{
                        0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                        120, 300});
  checkpoint_last_success_ =
      &prometheus::BuildGauge()
           .Name("pskit_server_checkpoint_last_success_timestamp_seconds")
           .Help("Unix time of the newest complete checkpoint (0: none)")
           .Labels(shard)
           .Register(*registry_)
           .Add({});
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ServerMetrics::InterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

ServerMetrics::Method* ServerMetrics::ForMethod(const char* full_name) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<Method>& m = methods_[full_name];
  if (m == nullptr) {
    m = std::make_unique<Method>();
    m->label = MethodLabel(full_name);
    m->kind = KindOf(full_name);
    const prometheus::Labels labels = {{"method", m->label}};
    m->received = &received_->Add(labels);
    m->sent = &sent_->Add(labels);
  }
  return m.get();
}

ServerMetrics::Namespace* ServerMetrics::ForNamespace(const std::string& ns) {
  const std::string name = ns.empty() ? "default" : ns;
  absl::MutexLock lock(&mu_);
  std::unique_ptr<Namespace>& n = namespaces_[name];
  if (n == nullptr) {
    n = std::make_unique<Namespace>();
    const prometheus::Labels labels = {{"namespace", name}};
    n->updates = &updates_->Add(labels);
    n->staleness = &staleness_->Add(labels, staleness_buckets_);
  }
  return n.get();
}

void ServerMetrics::CountAuthRefusal(absl::string_view rpc,
                                     absl::string_view reason) {
  // Family::Add returns the existing counter for labels seen before.
  auth_refusals_
      ->Add({{"rpc", std::string(rpc)}, {"reason", std::string(reason)}})
      .Increment();
}

void ServerMetrics::RecordAnswer(const google::protobuf::Message& request,
                                 const google::protobuf::Message& response) {
  const google::protobuf::RepeatedPtrField<v1::ChunkAck>* acks = nullptr;
  const std::string* ns = nullptr;
  if (const auto* r = dynamic_cast<const v1::PushResponse*>(&response)) {
    acks = &r->acks();
    ns = &static_cast<const v1::PushRequest&>(request).namespace_();
  } else if (const auto* r =
                 dynamic_cast<const v1::PushPullResponse*>(&response)) {
    acks = &r->acks();
    ns = &static_cast<const v1::PushRequest&>(request).namespace_();
  } else if (dynamic_cast<const v1::ExchangeResponse*>(&response) !=
             nullptr) {
    // One diff per chunk sent; the diffs themselves may travel outside the
    // response message (server/wire.h), so they are counted by the request.
    const auto& req = static_cast<const v1::ExchangeRequest&>(request);
    const int n = req.params_size();
    if (n > 0) ForNamespace(req.namespace_())->updates->Increment(n);
    return;
  } else {
    return;
  }
  if (acks->empty()) return;
  Namespace* space = ForNamespace(*ns);
  space->updates->Increment(acks->size());
  // One ObserveMultiple per answer instead of one Observe per chunk.
  const auto& bounds = staleness_buckets_;
  std::vector<double> counts(bounds.size() + 1, 0.0);
  double sum = 0;
  for (const v1::ChunkAck& ack : *acks) {
    const double s = static_cast<double>(ack.staleness());
    sum += s;
    size_t b = 0;
    while (b < bounds.size() && s > bounds[b]) ++b;
    counts[b] += 1;
  }
  space->staleness->ObserveMultiple(counts, sum);
}

void ServerMetrics::CountCall(Method* m, int code, double seconds) {
  if (code < 0 || code >= static_cast<int>(m->by_code.size())) {
    code = static_cast<int>(grpc::StatusCode::UNKNOWN);
  }
  prometheus::Counter* c = m->by_code[code].load(std::memory_order_acquire);
  prometheus::Histogram* h =
      m->duration_by_code[code].load(std::memory_order_acquire);
  if (c == nullptr || h == nullptr) {
    // Family::Add is idempotent and thread-safe: racing callers get the
    // same series.
    static constexpr const char* kNames[] = {
        "OK",           "CANCELLED",         "UNKNOWN",
        "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS",   "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION", "ABORTED",         "OUT_OF_RANGE",
        "UNIMPLEMENTED",    "INTERNAL",          "UNAVAILABLE",
        "DATA_LOSS",        "UNAUTHENTICATED"};
    const prometheus::Labels labels = {{"method", m->label},
                                       {"code", kNames[code]}};
    c = &requests_->Add(labels);
    h = &duration_->Add(labels, LatencyBuckets());
    m->by_code[code].store(c, std::memory_order_release);
    m->duration_by_code[code].store(h, std::memory_order_release);
  }
  c->Increment();
  h->Observe(seconds);
}

void ServerMetrics::RecordCheckpoint(
    const absl::StatusOr<v1::CheckpointInfo>& result) {
  if (!result.ok()) {
    // A request refused up front (an id already taken or malformed) is not
    // a checkpoint that failed.
    const absl::StatusCode code = result.status().code();
    if (code != absl::StatusCode::kAlreadyExists &&
        code != absl::StatusCode::kInvalidArgument) {
      checkpoints_failed_->Increment();
    }
    return;
  }
  checkpoints_ok_->Increment();
  checkpoint_duration_->Observe(result->duration_s());
  SetLastCheckpoint(*result);
}

void ServerMetrics::SetLastCheckpoint(const v1::CheckpointInfo& info) {
  checkpoint_last_success_->Set(static_cast<double>(info.time_unix_ms()) /
                                1000.0);
}

std::vector<prometheus::MetricFamily> ServerMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> out = registry_->Collect();
  using Label = prometheus::ClientMetric::Label;
  const Label shard{"shard", shard_label_};

  prometheus::MetricFamily workers = GaugeFamily(
      "pskit_server_active_workers", "workers holding a live lease");
  AddGauge(&workers, static_cast<double>(workers_->LiveCount()), {shard});
  out.push_back(std::move(workers));

  v1::StatusResponse status;
  store_->Describe(&status);
  prometheus::MetricFamily chunks = GaugeFamily(
      "pskit_server_chunks", "chunks held by this shard, by namespace");
  prometheus::MetricFamily params = GaugeFamily(
      "pskit_server_parameters",
      "parameters (floats) held by this shard, by namespace");
  prometheus::MetricFamily accuracy = GaugeFamily(
      "pskit_server_eval_accuracy_ratio",
      "the evaluator's last reported test accuracy, by namespace");
  prometheus::MetricFamily loss = GaugeFamily(
      "pskit_server_eval_loss", "the evaluator's last reported test loss");
  prometheus::MetricFamily eval_time = GaugeFamily(
      "pskit_server_eval_timestamp_seconds",
      "Unix time of the evaluator's last report");
  for (const v1::NamespaceStatus& ns : status.namespaces()) {
    uint64_t n_chunks = 0, n_params = 0;
    for (const v1::TensorStatus& t : ns.tensors()) {
      n_chunks += t.chunks_here();
      n_params += t.elements_here();
    }
    const Label name{"namespace", ns.name()};
    AddGauge(&chunks, static_cast<double>(n_chunks), {name, shard});
    AddGauge(&params, static_cast<double>(n_params), {name, shard});
    if (ns.has_last_evaluation()) {
      const v1::Evaluation& e = ns.last_evaluation();
      AddGauge(&accuracy, e.accuracy(), {name, shard});
      AddGauge(&loss, e.loss(), {name, shard});
      AddGauge(&eval_time, static_cast<double>(e.time_unix_ms()) / 1000.0,
               {name, shard});
    }
  }
  for (auto* f : {&chunks, &params, &accuracy, &loss, &eval_time}) {
    if (!f->metric.empty()) out.push_back(std::move(*f));
  }

  PushWindow& window = store_->push_window();
  for (const auto& [name, help, value] :
       {std::tuple<const char*, const char*, uint64_t>{
            "pskit_server_retries_answered_total",
            "copies of a Push, PushPull or Exchange answered from the "
            "exactly-once window instead of applied again",
            window.retries_answered()},
        {"pskit_server_retries_too_old_total",
         "copies of a call refused because they were older than the "
         "exactly-once window",
         window.too_old()}}) {
    prometheus::MetricFamily f;
    f.name = name;
    f.help = help;
    f.type = prometheus::MetricType::Counter;
    prometheus::ClientMetric metric;
    metric.label = {shard};
    metric.counter.value = static_cast<double>(value);
    f.metric.push_back(std::move(metric));
    out.push_back(std::move(f));
  }
  // The compensation (server/compensation.h): its scale per push chunk and
  // the per-worker state it holds.
  const ChunkStore::CompensationStateInfo comp = store_->CompensationState();
  prometheus::MetricFamily comp_bytes = GaugeFamily(
      "pskit_server_compensation_state_bytes",
      "bytes of per-worker and shared compensation state (dcasgd, gem)");
  AddGauge(&comp_bytes, static_cast<double>(comp.bytes), {shard});
  out.push_back(std::move(comp_bytes));
  prometheus::MetricFamily comp_workers = GaugeFamily(
      "pskit_server_compensation_workers",
      "workers the compensation keeps state for (dcasgd, gem)");
  AddGauge(&comp_workers, static_cast<double>(comp.workers), {shard});
  out.push_back(std::move(comp_workers));
  prometheus::MetricFamily scale;
  scale.name = "pskit_server_compensation_scale";
  scale.help =
      "the compensation's scale per push chunk: gem's mean pi, dcasgd-a's "
      "mean lambda_t, dcasgd-c's lambda";
  scale.type = prometheus::MetricType::Histogram;
  const CompensationScales& scales = store_->compensation_scales();
  for (int rule = 0; rule < CompensationScales::kRules; ++rule) {
    const CompensationScales::Counts counts = scales.Read(rule);
    if (counts.count == 0) continue;
    prometheus::ClientMetric metric;
    metric.label = {{"rule", CompensationScales::kNames[rule]}, shard};
    metric.histogram.sample_count = counts.count;
    metric.histogram.sample_sum = counts.sum;
    uint64_t cumulative = 0;
    for (size_t b = 0; b < counts.buckets.size(); ++b) {
      cumulative += counts.buckets[b];
      prometheus::ClientMetric::Bucket bucket;
      bucket.cumulative_count = cumulative;
      bucket.upper_bound = b < CompensationScales::kBounds.size()
                               ? CompensationScales::kBounds[b]
                               : std::numeric_limits<double>::infinity();
      metric.histogram.bucket.push_back(bucket);
    }
    scale.metric.push_back(std::move(metric));
  }
  if (!scale.metric.empty()) out.push_back(std::move(scale));

  prometheus::MetricFamily calls = GaugeFamily(
      "pskit_server_push_window_calls",
      "calls remembered in the exactly-once windows of all workers");
  AddGauge(&calls, static_cast<double>(window.calls()), {shard});
  out.push_back(std::move(calls));
  return out;
}

}  // namespace pskit
