// server/worker_registry.cc: WorkerRegistry, the shard's leases. See
// server/worker_registry.h.
#include "server/worker_registry.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/validation.h"
#include "spdlog/spdlog.h"

namespace pskit {

WorkerRegistry::WorkerRegistry(Clock* clock, absl::Duration lease,
                               WorkerListener listener)
    : clock_(clock),
      lease_(lease),
      listener_(std::move(listener)),
      rng_(std::random_device{}()) {}

void WorkerRegistry::TellLive(uint64_t id) {
  if (listener_.live) listener_.live(id);
}

void WorkerRegistry::TellGone(uint64_t id, bool left) {
  if (listener_.gone) listener_.gone(id, left);
}

void WorkerRegistry::Sweep() {
  const absl::Time now = clock_->Now();
  std::vector<uint64_t> lapsed;  // told after: the lambda is outside mu_'s analysis
  absl::erase_if(workers_, [&](const auto& kv) {
    if (kv.second.expiry > now) return false;
    spdlog::warn("worker {} ({}) lease lapsed; dropped", kv.first,
                 kv.second.name);
    lapsed.push_back(kv.first);
    return true;
  });
  for (uint64_t id : lapsed) TellGone(id, /*left=*/false);
}

absl::StatusOr<uint64_t> WorkerRegistry::Register(uint64_t requested_id,
                                                  const std::string& name,
                                                  const std::string& ns) {
  if (absl::Status s = ValidateName("worker name", name); !s.ok()) return s;
  if (absl::Status s = ValidateName("namespace", NamespaceOf(ns)); !s.ok()) {
    return s;
  }
  absl::MutexLock lock(&mu_);
  Sweep();
  if (auto it = workers_.find(requested_id);
      requested_id != 0 && it != workers_.end() && it->second.name != name) {
    return absl::AlreadyExistsError(
        absl::StrCat("worker id ", requested_id, " is held by live worker ",
                     Quoted(it->second.name), "; register ", Quoted(name),
                     " with worker_id 0 to get an id of its own"));
  }
  uint64_t id = requested_id;
  while (id == 0 || (requested_id == 0 && workers_.contains(id))) {
    // Keep ids below 2^53 so JSON tools print them exactly.
    id = rng_() >> 11;
  }
  workers_[id] = Entry{name, clock_->Now() + lease_, NamespaceOf(ns)};
  TellLive(id);
  spdlog::info("worker {} ({}) registered; {} live", id, name,
               workers_.size());
  return id;
}

absl::Status WorkerRegistry::Lookup(uint64_t id, const char* call) {
  // Only this id is checked: the push path calls this, and must stay O(1).
  auto it = workers_.find(id);
  if (it != workers_.end() && it->second.expiry <= clock_->Now()) {
    spdlog::warn("worker {} ({}) lease lapsed; dropped", id, it->second.name);
    workers_.erase(it);
    TellGone(id, /*left=*/false);
    it = workers_.end();
  }
  if (it == workers_.end()) {
    return absl::NotFoundError(absl::StrCat(
        call, ": worker id ", id,
        " is not registered on this shard (never registered, left, or its "
        "lease lapsed); call RegisterWorker again"));
  }
  return absl::OkStatus();
}

absl::Status WorkerRegistry::Heartbeat(uint64_t id, const std::string& ns) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Lookup(id, "Heartbeat");
  if (s.ok()) {
    Entry& e = workers_[id];
    e.expiry = clock_->Now() + lease_;
    // An empty namespace keeps the one registered: a caller that named its
    // job at registration and heartbeats with the default "" must not turn
    // into a worker of "default" (its job could then be dropped under it).
    if (!ns.empty()) e.ns = NamespaceOf(ns);
    TellLive(id);
  }
  return s;
}

absl::Status WorkerRegistry::Leave(uint64_t id) {
  absl::MutexLock lock(&mu_);
  absl::Status s = Lookup(id, "Leave");
  if (s.ok()) {
    spdlog::info("worker {} ({}) left", id, workers_[id].name);
    workers_.erase(id);
    TellGone(id, /*left=*/true);
  }
  return s;
}

absl::Status WorkerRegistry::CheckLive(uint64_t id) {
  absl::MutexLock lock(&mu_);
  return Lookup(id, "request");
}

std::vector<std::string> WorkerRegistry::LiveIn(const std::string& ns) {
  absl::MutexLock lock(&mu_);
  Sweep();
  std::vector<std::string> out;
  for (const auto& [id, e] : workers_) {
    if (e.ns == ns) out.push_back(absl::StrCat(e.name, " (id ", id, ")"));
  }
  std::sort(out.begin(), out.end());
  return out;
}

size_t WorkerRegistry::LiveCount() {
  absl::MutexLock lock(&mu_);
  Sweep();
  return workers_.size();
}

}  // namespace pskit
