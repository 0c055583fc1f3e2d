#include "tools/psrun/launch/monitor.h"

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/http_get.h"
#include "common/status_macros.h"

namespace pskit::launch {

absl::StatusOr<std::unique_ptr<Monitor>> Monitor::Start(
    MonitorOptions options) {
  if (options.shards.empty()) {
    return absl::InvalidArgumentError("the monitor needs at least one shard");
  }
  AdminOptions admin_options;
  admin_options.timeout = options.rpc_timeout;
  admin_options.security = options.security;
  PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<AdminClient> admin,
                         AdminClient::Connect(options.shards, admin_options));
  std::unique_ptr<Monitor> m(
      new Monitor(std::move(options), admin_options, std::move(admin)));
  m->thread_ = std::thread([raw = m.get()] { raw->Loop(); });
  return m;
}

Monitor::Monitor(MonitorOptions options, const AdminOptions& admin_options,
                 std::unique_ptr<AdminClient> admin)
    : options_(std::move(options)),
      admin_options_(admin_options),
      admin_(std::move(admin)) {
  const size_t workers = options_.worker_metrics_ports.size();
  prev_samples_.resize(workers);
  prev_samples_time_.resize(workers);
  latest_.worker_samples.resize(workers);
  latest_.worker_steps.resize(workers);
  running_.resize(workers, false);
}

Monitor::~Monitor() { Stop(); }

void Monitor::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

ClusterSample Monitor::Latest() const {
  absl::MutexLock lock(&mu_);
  return latest_;
}

void Monitor::SetWorkerRunning(int j, bool running) {
  absl::MutexLock lock(&mu_);
  if (j >= 0 && static_cast<size_t>(j) < running_.size()) running_[j] = running;
}

std::vector<ShardResult<v1::CheckpointResponse>> Monitor::Checkpoint(
    const std::string& id, absl::Duration timeout) {
  // Its own client: the monitor's deadline (rpc_timeout) is too short for
  // a checkpoint's write.
  AdminOptions o = admin_options_;
  o.timeout = timeout;
  absl::StatusOr<std::unique_ptr<AdminClient>> admin =
      AdminClient::Connect(options_.shards, o);
  if (!admin.ok()) {
    std::vector<ShardResult<v1::CheckpointResponse>> out(1);
    out[0].status = admin.status();
    out[0].description = std::string(admin.status().message());
    return out;
  }
  v1::CheckpointRequest req;
  req.set_id(id);
  return (*admin)->Checkpoint((*admin)->ToEveryShard(req), timeout);
}

ClusterSample Monitor::PollNow() {
  absl::MutexLock lock(&round_mu_);
  return Round();
}

void Monitor::Loop() {
  absl::Duration wait = absl::ZeroDuration();
  while (!stop_.WaitForNotificationWithTimeout(wait)) {
    bool answered_once;
    {
      absl::MutexLock lock(&round_mu_);
      Round();
      answered_once = answered_once_;
    }
    wait = answered_once ? options_.interval : options_.startup_interval;
  }
}

ClusterSample Monitor::Round() {
  // Every shard at once, one deadline for all.
  const std::vector<ShardResult<v1::StatusResponse>> results = admin_->Status();
  const size_t n = results.size();

  std::vector<bool> running;
  ClusterSample previous;
  {
    absl::MutexLock lock(&mu_);
    running = running_;
    previous = latest_;
  }
  ClusterSample s;
  s.time = absl::Now();
  s.round = ++rounds_;
  s.all_shards_answered = true;
  uint64_t updates = 0;
  int64_t newest_eval_ms = -1;
  for (size_t i = 0; i < n; ++i) {
    if (!results[i].ok()) {
      s.all_shards_answered = false;
      s.shard_errors.push_back(absl::StrCat(
          "shard", i, " at ", options_.shards[i], ": gRPC code ",
          static_cast<int>(results[i].status.code()), ": ",
          results[i].status.message()));
      continue;
    }
    const v1::StatusResponse& r = results[i].response;
    updates += r.updates_applied();
    s.live_workers = std::max(s.live_workers, r.live_workers());
    // The job's namespace if a shard has it, else the newest of any.
    const v1::Evaluation* best = nullptr;
    for (const v1::NamespaceStatus& ns : r.namespaces()) {
      if (!ns.has_last_evaluation()) continue;
      if (ns.name() == options_.ns) {
        best = &ns.last_evaluation();
        break;
      }
      if (best == nullptr ||
          ns.last_evaluation().time_unix_ms() > best->time_unix_ms()) {
        best = &ns.last_evaluation();
      }
    }
    if (best != nullptr && best->time_unix_ms() > newest_eval_ms) {
      newest_eval_ms = best->time_unix_ms();
      s.last_evaluation = *best;
    }
  }
  if (s.all_shards_answered) answered_once_ = true;
  s.every_shard_answered_once = answered_once_;
  if (!s.last_evaluation.has_value())
    s.last_evaluation = previous.last_evaluation;
  if (s.all_shards_answered) {
    s.updates = updates;
    if (prev_updates_.has_value() && updates >= *prev_updates_) {
      const double dt = absl::ToDoubleSeconds(s.time - prev_updates_time_);
      if (dt > 0) s.updates_per_s = (updates - *prev_updates_) / dt;
    }
    prev_updates_ = updates;
    prev_updates_time_ = s.time;
  } else {
    s.updates = previous.updates;
  }

  // Scrape the running workers; samples/s only when each of them answered
  // now and the round before.
  s.worker_samples = previous.worker_samples;
  s.worker_steps = previous.worker_steps;
  double samples_per_s = 0;
  bool rate_known = false;  // until a running worker counts
  bool scrape_failed = false;
  for (size_t j = 0; j < running.size(); ++j) {
    if (!running[j]) {
      prev_samples_[j].reset();
      continue;
    }
    const int port = options_.worker_metrics_ports[j];
    std::optional<double> samples, steps;
    if (port > 0) {
      // One series each: a worker labels its counters with its role and
      // rank.
      absl::StatusOr<std::string> body =
          HttpGet("127.0.0.1", port, "/metrics", options_.scrape_timeout);
      if (body.ok()) {
        if (absl::StatusOr<double> v =
                FindSample(*body, "pskit_worker_samples_total");
            v.ok()) {
          samples = *v;
        }
        if (absl::StatusOr<double> v =
                FindSample(*body, "pskit_worker_steps_total");
            v.ok()) {
          steps = *v;
        }
      }
    }
    if (samples.has_value()) s.worker_samples[j] = samples;
    if (steps.has_value()) s.worker_steps[j] = steps;
    if (samples.has_value() && prev_samples_[j].has_value() &&
        *samples >= *prev_samples_[j]) {
      const double dt = absl::ToDoubleSeconds(s.time - prev_samples_time_[j]);
      if (dt > 0) samples_per_s += (*samples - *prev_samples_[j]) / dt;
      rate_known = true;
    } else {
      scrape_failed = true;
    }
    prev_samples_[j] = samples;
    prev_samples_time_[j] = s.time;
  }
  if (rate_known && !scrape_failed) s.samples_per_s = samples_per_s;

  {
    absl::MutexLock lock(&mu_);
    latest_ = s;
  }
  if (options_.wake_fd >= 0) {
    const uint64_t one = 1;
    (void)!write(options_.wake_fd, &one, sizeof(one));
  }
  return s;
}

}  // namespace pskit::launch
