// server/consistency.cc
//
// SSP clocks, sync rounds and the parked calls that wait on them (see
// server/consistency.h).
#include "server/consistency.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/encoding.h"
#include "common/validation.h"
#include "server/server_metrics.h"

namespace pskit {
namespace {

// Acks remembered per worker for retried sync calls (a client has at most
// a few calls to one shard in flight).
constexpr size_t kDoneKept = 8;

HoldOutcome Failed(absl::Status s) {
  HoldOutcome o;
  o.status = std::move(s);
  return o;
}

// A new member of a chunk starts at its slowest clock: it holds nobody
// back. No-op for a member.
void JoinClock(absl::flat_hash_map<uint64_t, uint64_t>* clocks, uint64_t w) {
  if (clocks->contains(w)) return;
  uint64_t least = 0;
  bool any = false;
  for (const auto& [id, c] : *clocks) {
    least = any ? std::min(least, c) : c;
    any = true;
  }
  (*clocks)[w] = least;
}

}  // namespace

Consistency::Consistency(ChunkStore* store, ServerMetrics* metrics,
                         Clock* clock)
    : store_(store), metrics_(metrics), clock_(clock) {
  thread_ = std::thread([this] { Loop(); });
}

Consistency::~Consistency() {
  Shutdown();
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

bool Consistency::RefreshRule(const std::string& ns) {
  absl::StatusOr<v1::NamespaceConfig> config = store_->ConfigOf(ns);
  if (!config.ok()) return false;
  absl::MutexLock lock(&mu_);
  NsState& st = namespaces_[ns];
  st.kind = config->consistency() == v1::CONSISTENCY_SSP ||
                    config->consistency() == v1::CONSISTENCY_SYNC
                ? config->consistency()
                : v1::CONSISTENCY_ASYNC;
  st.ssp_bound = config->staleness().ssp_bound();
  st.backup_workers = config->staleness().backup_workers();
  return true;
}

v1::Consistency Consistency::ModeFor(const std::string& ns_field,
                                     uint64_t worker) {
  if (worker == 0 || !store_->MayHoldCalls()) return v1::CONSISTENCY_ASYNC;
  const std::string ns = NamespaceOf(ns_field);
  if (!RefreshRule(ns)) return v1::CONSISTENCY_ASYNC;
  absl::MutexLock lock(&mu_);
  return namespaces_[ns].kind;
}

void Consistency::Pull(const v1::PullRequest& req, Waiter waiter) {
  const std::string ns = NamespaceOf(req.namespace_());
  auto p = std::make_unique<Parked>();
  p->ns = ns;
  p->worker = req.worker_id();
  for (const v1::ChunkRef& ref : req.chunks()) {
    p->chunks.emplace_back(ref.tensor(), ref.chunk());
  }
  {
    absl::MutexLock lock(&mu_);
    NsState& st = namespaces_[ns];
    p->kind = st.kind == v1::CONSISTENCY_SYNC ? Kind::kSyncPull
                                              : Kind::kSspPull;
    // A worker joins at its first pull: sync's rounds wait for it, and
    // under SSP it starts at the slowest clock and from then on holds the
    // others back (else its first push could be arbitrarily stale).
    if (gone_.contains(p->worker)) {
      // Its lease lapsed after the handler's check: nothing would ever
      // remove it again, so it joins nothing and is not held either.
      p->kind = Kind::kSspPull;
      p->chunks.clear();
    } else {
      st.members.insert(p->worker);
      if (st.kind == v1::CONSISTENCY_SSP) {
        for (const ChunkRef& key : p->chunks) {
          JoinClock(&st.clocks[key], p->worker);
        }
      }
    }
  }
  p->release = std::move(waiter.release);
  Park(std::move(p), waiter.on_cancel);
}

void Consistency::AfterSspPush(const v1::PushRequest& req, bool replayed,
                               bool holds, Waiter waiter) {
  const std::string ns = NamespaceOf(req.namespace_());
  const uint64_t w = req.worker_id();
  {
    absl::MutexLock lock(&mu_);
    NsState& st = namespaces_[ns];
    if (!gone_.contains(w)) st.members.insert(w);
    if (!replayed && !gone_.contains(w)) {
      for (const v1::ChunkData& g : req.grads()) {
        auto& clocks = st.clocks[ChunkRef(g.tensor(), g.chunk())];
        JoinClock(&clocks, w);
        ++clocks[w];
      }
    }
  }
  auto p = std::make_unique<Parked>();
  p->ns = ns;
  p->worker = w;
  p->kind = Kind::kSspPull;
  for (const v1::ChunkData& g : req.grads()) {
    p->chunks.emplace_back(g.tensor(), g.chunk());
  }
  bool ready = !holds;
  if (!ready) {
    absl::MutexLock lock(&mu_);
    ready = Releasable(*p);
  }
  if (ready) {
    // Not held: the values the push answered are current; no second read.
    if (holds && metrics_ != nullptr) metrics_->ObserveHeld("ssp", 0.0);
    waiter.release(HoldOutcome{});
    Progress();  // this push may have moved the slowest clock
    return;
  }
  p->release = std::move(waiter.release);
  Park(std::move(p), waiter.on_cancel);
}

void Consistency::Park(
    std::unique_ptr<Parked> p,
    const std::function<void(std::function<void()>)>& on_cancel) {
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    if (!shutting_down_) {
      id = next_id_++;
      arming_.insert(id);
    }
  }
  if (id == 0) {
    p->release(Failed(absl::UnavailableError(
        "shard is shutting down; the call was not answered, retry on the "
        "restarted shard")));
    return;
  }
  p->id = id;
  p->since = clock_->Now();
  // The hook is registered before the call is parked: once parked, another
  // thread may answer it and gRPC free it.
  if (on_cancel) on_cancel([this, id] { Cancel(id); });
  std::function<void(HoldOutcome)> refuse;
  absl::Status why;
  {
    absl::MutexLock lock(&mu_);
    arming_.erase(id);
    if (cancelled_early_.erase(id) > 0) {
      why = absl::CancelledError("the client cancelled the call");
    } else if (shutting_down_) {
      why = absl::UnavailableError("shard is shutting down");
    }
    if (!why.ok()) {
      refuse = std::move(p->release);
    } else {
      parked_[id] = std::move(p);
    }
  }
  if (refuse) {
    refuse(Failed(why));
    return;
  }
  Progress();
}

void Consistency::Contribute(const v1::PushRequest& req, Waiter waiter) {
  const std::string ns = NamespaceOf(req.namespace_());
  std::vector<uint64_t> lengths, versions;
  if (absl::Status s = store_->CheckGradients(req, &lengths, &versions);
      !s.ok()) {
    waiter.release(Failed(s));
    return;
  }
  const uint64_t w = req.worker_id();
  uint64_t id = 0;
  bool took_over = false;
  std::function<void(HoldOutcome)> superseded;
  std::optional<HoldOutcome> replay;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      replay = Failed(absl::UnavailableError("shard is shutting down"));
    } else if (req.sequence() != 0) {
      NsState& st = namespaces_[ns];
      for (const auto& [seq, acks] : st.done[w]) {
        if (seq == req.sequence()) {
          replay.emplace();
          replay->acks = acks;
          replay->replayed = true;
        }
      }
      if (!replay.has_value()) {
        // A copy of a call whose gradients still wait: it takes the wait
        // over (the first copy's client gave up on it).
        for (auto& [pid, p] : parked_) {
          if (p->kind == Kind::kSyncPush && p->worker == w &&
              p->sequence == req.sequence() && p->ns == ns) {
            // (Empty when the first copy was cancelled: the usual retry.)
            superseded = std::move(p->release);
            p->release = std::move(waiter.release);
            id = pid;
            took_over = true;
            break;
          }
        }
      }
    }
    if (replay.has_value() || id != 0) {
      // handled below
    } else {
      id = next_id_++;
      arming_.insert(id);
    }
  }
  if (replay.has_value()) {
    waiter.release(*std::move(replay));
    return;
  }
  if (took_over) {
    // This copy now owns the wait: its cancellation answers it (Cancel
    // finds the parked entry by id; one already released is a no-op).
    if (waiter.on_cancel) waiter.on_cancel([this, id] { Cancel(id); });
    if (superseded) {
      superseded(Failed(absl::AbortedError(
          "a retried copy of this call took over its wait")));
    }
    Progress();
    return;
  }
  if (waiter.on_cancel) waiter.on_cancel([this, id] { Cancel(id); });
  auto p = std::make_unique<Parked>();
  p->id = id;
  p->ns = ns;
  p->worker = w;
  p->kind = Kind::kSyncPush;
  p->sequence = req.sequence();
  p->since = clock_->Now();
  p->release = std::move(waiter.release);
  p->acks.resize(req.grads_size());
  uint64_t late = 0;
  bool shutting_down = false;
  {
    absl::MutexLock lock(&mu_);
    arming_.erase(id);
    if (shutting_down_) {
      // Shutdown answered every parked call already: this one is not
      // parked, and its gradients join no round.
      cancelled_early_.erase(id);
      superseded = std::move(p->release);
      shutting_down = true;
    } else {
      NsState& st = namespaces_[ns];
      if (!gone_.contains(w)) st.members.insert(w);
      for (int i = 0; i < req.grads_size(); ++i) {
        const v1::ChunkData& g = req.grads(i);
        const ChunkRef key(g.tensor(), g.chunk());
        p->chunks.push_back(key);
        Round& r = st.rounds[key];
        if (r.parts.empty()) {
          // The floor: one past the last round applied (or being applied),
          // so a round never starts below it whatever version was read.
          auto floor = st.min_base.find(key);
          r.base = floor == st.min_base.end()
                       ? versions[i]
                       : std::max(versions[i], floor->second);
          r.length = lengths[i];
          r.layout = req.layout();
        }
        if (g.version() < r.base) {
          // Its round was applied already: a straggler's gradient.
          v1::ChunkAck& ack = p->acks[i];
          ack.set_version(r.base);
          ack.set_staleness(r.base - g.version());
          ack.set_dropped(true);
          ++late;
          if (r.parts.empty()) st.rounds.erase(key);
        } else {
          r.parts.push_back(Contribution{w, id, i, g});
          ++p->pending;
        }
      }
      dropped_ += late;
      if (cancelled_early_.erase(id) > 0 && p->release) {
        superseded = std::move(p->release);  // answered CANCELLED below
      }
      parked_[id] = std::move(p);
    }
  }
  if (shutting_down) {
    superseded(Failed(absl::UnavailableError(
        "shard is shutting down; the gradient was not applied, retry on the "
        "restarted shard")));
    return;
  }
  if (late > 0 && metrics_ != nullptr) metrics_->CountLateDropped(ns, late);
  if (superseded) {
    superseded(Failed(absl::CancelledError("the client cancelled the call")));
  }
  Progress();
}

void Consistency::Cancel(uint64_t id) {
  std::function<void(HoldOutcome)> release;
  const char* label = "ssp";
  absl::Duration held;
  {
    absl::MutexLock lock(&mu_);
    auto it = parked_.find(id);
    if (it == parked_.end()) {
      if (arming_.contains(id)) cancelled_early_.insert(id);
      return;
    }
    Parked& p = *it->second;
    release = std::move(p.release);
    p.release = nullptr;
    held = clock_->Now() - p.since;
    if (p.kind != Kind::kSspPull) label = "sync";
    // A sync push's gradients stay in their rounds: the entry waits on,
    // answerless, so that a retried copy finds its acks.
    if (p.kind != Kind::kSyncPush) parked_.erase(it);
  }
  if (!release) return;
  if (metrics_ != nullptr) metrics_->ObserveHeld(label, absl::ToDoubleSeconds(held));
  release(Failed(absl::CancelledError(
      "the client cancelled the call (its deadline passed?) while the shard "
      "held it for ssp/sync")));
  Progress();  // refreshes the held-calls gauge
}

bool Consistency::SspHeld(const NsState& st, uint64_t worker,
                          const std::vector<ChunkRef>& chunks) const {
  for (const ChunkRef& key : chunks) {
    auto it = st.clocks.find(key);
    if (it == st.clocks.end()) continue;
    auto mine = it->second.find(worker);
    if (mine == it->second.end()) continue;
    uint64_t least = mine->second;
    for (const auto& [id, c] : it->second) least = std::min(least, c);
    if (mine->second > least + st.ssp_bound) return true;
  }
  return false;
}

bool Consistency::SyncPending(const NsState& st, uint64_t worker,
                              const std::vector<ChunkRef>& chunks) const {
  for (const ChunkRef& key : chunks) {
    auto it = st.rounds.find(key);
    if (it == st.rounds.end()) continue;
    for (const Contribution& c : it->second.parts) {
      if (c.worker == worker) return true;
    }
  }
  return false;
}

bool Consistency::Releasable(const Parked& p) const {
  if (p.kind == Kind::kSyncPush) return p.pending == 0;
  auto it = namespaces_.find(p.ns);
  if (it == namespaces_.end()) return true;
  const NsState& st = it->second;
  if (p.kind == Kind::kSspPull) {
    return st.kind != v1::CONSISTENCY_SSP || !SspHeld(st, p.worker, p.chunks);
  }
  return !SyncPending(st, p.worker, p.chunks);
}

std::optional<Consistency::Released> Consistency::TakeParked(uint64_t id) {
  auto it = parked_.find(id);
  std::unique_ptr<Parked> p = std::move(it->second);
  parked_.erase(it);
  if (p->kind == Kind::kSyncPush && p->sequence != 0 && p->error.ok()) {
    auto& done = namespaces_[p->ns].done[p->worker];
    done.emplace_back(p->sequence, p->acks);
    while (done.size() > kDoneKept) done.pop_front();
  }
  if (!p->release) return std::nullopt;
  Released r;
  r.release = std::move(p->release);
  r.outcome.status = p->error;
  r.outcome.held = true;
  if (p->kind == Kind::kSyncPush) r.outcome.acks = std::move(p->acks);
  r.held = clock_->Now() - p->since;
  r.label = p->kind == Kind::kSspPull ? "ssp" : "sync";
  return r;
}

size_t Consistency::Contributors(const Round& r) {
  absl::flat_hash_set<uint64_t> workers;
  for (const Contribution& c : r.parts) workers.insert(c.worker);
  return workers.size();
}

void Consistency::Progress() {
  for (;;) {
    std::vector<TakenRound> rounds;
    std::vector<Released> out;
    size_t held_now = 0;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [ns, st] : namespaces_) {
        const size_t members = st.members.size();
        const size_t need =
            members > st.backup_workers ? members - st.backup_workers : 1;
        std::vector<ChunkRef> ready;
        for (const auto& [key, r] : st.rounds) {
          if (r.parts.empty()) continue;
          if (st.kind != v1::CONSISTENCY_SYNC || Contributors(r) >= need) {
            ready.push_back(key);
          }
        }
        for (const ChunkRef& key : ready) {
          auto it = st.rounds.find(key);
          st.min_base[key] = it->second.base + 1;
          rounds.push_back(TakenRound{ns, key, std::move(it->second)});
          st.rounds.erase(it);
        }
      }
      std::vector<uint64_t> ids;
      for (const auto& [id, p] : parked_) {
        if (Releasable(*p)) ids.push_back(id);
      }
      for (uint64_t id : ids) {
        if (std::optional<Released> r = TakeParked(id)) {
          out.push_back(*std::move(r));
        }
      }
      held_now = parked_.size();
    }
    if (metrics_ != nullptr) metrics_->SetHeldNow(static_cast<double>(held_now));
    const bool moved = !rounds.empty() || !out.empty();
    for (TakenRound& t : rounds) ApplyRound(std::move(t));
    Finish(std::move(out));
    if (!moved) return;
  }
}

void Consistency::ApplyRound(TakenRound taken) {
  const Round& round = taken.round;
  std::vector<float> mean(round.length, 0.0f);
  std::vector<float> scratch;
  for (const Contribution& c : round.parts) {
    // Checked by CheckGradients when it joined the round.
    absl::StatusOr<absl::Span<const float>> g =
        DecodeChunk(c.grad, round.length, /*allow_nonfinite=*/true, &scratch);
    if (!g.ok()) continue;
    for (size_t j = 0; j < round.length; ++j) mean[j] += (*g)[j];
  }
  const float scale = 1.0f / static_cast<float>(round.parts.size());
  for (float& x : mean) x *= scale;
  v1::PushRequest req;
  req.set_namespace_(taken.ns);
  *req.mutable_layout() = round.layout;
  v1::ChunkData* g = req.add_grads();
  g->set_tensor(taken.chunk.first);
  g->set_chunk(taken.chunk.second);
  g->set_encoding(v1::ENCODING_F32);
  g->set_version(round.base);
  EncodeFloats(v1::ENCODING_F32, mean, g->mutable_data());
  v1::PushResponse resp;
  const absl::Status s = store_->Push(req, &resp);
  if (s.ok() && metrics_ != nullptr) metrics_->RecordAnswer(req, resp);
  absl::MutexLock lock(&mu_);
  // Applied (version base + 1) or not (base): the store's version rules
  // again, so a later Restore leaves no stale floor behind.
  // A round applied keeps its floor (base + 1) until a Restore clears the
  // floors: a gradient read before this apply must not start a round below
  // it. A round refused (non-finite) left the version at base: its floor
  // goes, unless a later round raised it meanwhile.
  auto& floors = namespaces_[taken.ns].min_base;
  if (auto f = floors.find(taken.chunk);
      !s.ok() && f != floors.end() && f->second == round.base + 1) {
    floors.erase(f);
  }
  for (const Contribution& c : round.parts) {
    auto it = parked_.find(c.parked);
    if (it == parked_.end()) continue;
    Parked& p = *it->second;
    if (s.ok()) {
      v1::ChunkAck& ack = p.acks[c.index];
      ack.set_version(resp.acks(0).version());
      ack.set_staleness(0);
    } else if (p.error.ok()) {
      p.error = s;
    }
    --p.pending;
  }
}

void Consistency::Finish(std::vector<Released> released) {
  for (Released& r : released) {
    if (metrics_ != nullptr) {
      metrics_->ObserveHeld(r.label, absl::ToDoubleSeconds(r.held));
    }
    r.release(std::move(r.outcome));
  }
}

absl::Status Consistency::CheckBackupWorkers(
    const std::string& ns_field, const v1::NamespaceConfig& config,
    int joining) {
  if (config.consistency() != v1::CONSISTENCY_SYNC) return absl::OkStatus();
  const uint32_t b = config.staleness().backup_workers();
  const std::string ns = NamespaceOf(ns_field);
  absl::MutexLock lock(&mu_);
  auto it = namespaces_.find(ns);
  const size_t members =
      it == namespaces_.end() ? 0 : it->second.members.size();
  if (members == 0) return absl::OkStatus();
  const size_t n = members + static_cast<size_t>(joining);
  if (b < n) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "backup_workers is ", b, " but namespace ", Quoted(ns), " has ", n,
      " live worker", n == 1 ? "" : "s",
      joining > 0 ? " (counting the one declaring)" : "", " pushing to it: sync needs backup_workers < workers (sync:B with B "
      "at most ", n - 1, ")"));
}

void Consistency::WorkerLive(uint64_t worker) {
  absl::MutexLock lock(&mu_);
  gone_.erase(worker);
}

void Consistency::WorkerGone(uint64_t worker, bool left) {
  absl::MutexLock lock(&mu_);
  // Marked, so a call that passed the lease check just before the lapse
  // does not make it a member again (it would then hold others forever).
  if (gone_.insert(worker).second) {
    gone_order_.push_back(worker);
    while (gone_order_.size() > kMaxGone) {
      gone_.erase(gone_order_.front());
      gone_order_.pop_front();
    }
  }
  for (auto& [ns, st] : namespaces_) {
    st.members.erase(worker);
    for (auto& [key, clocks] : st.clocks) clocks.erase(worker);
    // A lapsed worker may register again under its id and retry a sync
    // call: its answers stay (like the push window's orphans) until it
    // leaves for good.
    if (left) st.done.erase(worker);
  }
  recheck_ = true;
}

void Consistency::ConfigChanged() {
  std::vector<std::string> names;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [ns, st] : namespaces_) names.push_back(ns);
  }
  for (const std::string& ns : names) RefreshRule(ns);
  Progress();
}

void Consistency::StateReplaced() {
  {
    absl::MutexLock lock(&mu_);
    for (auto& [ns, st] : namespaces_) {
      for (auto& [key, round] : st.rounds) {
        for (const Contribution& c : round.parts) {
          auto it = parked_.find(c.parked);
          if (it == parked_.end()) continue;
          Parked& p = *it->second;
          if (p.error.ok()) {
            p.error = absl::AbortedError(
                "the shard's state was restored from a checkpoint; the sync "
                "round this gradient waited in was lost: pull and push again");
          }
          --p.pending;
        }
      }
      st.rounds.clear();
      st.min_base.clear();
    }
  }
  ConfigChanged();
}

void Consistency::NamespaceDropped(const std::string& ns) {
  {
    absl::MutexLock lock(&mu_);
    auto it = namespaces_.find(ns);
    if (it != namespaces_.end()) {
      for (auto& [key, round] : it->second.rounds) {
        for (const Contribution& c : round.parts) {
          auto p = parked_.find(c.parked);
          if (p == parked_.end()) continue;
          if (p->second->error.ok()) {
            p->second->error = absl::NotFoundError(absl::StrCat(
                "namespace ", Quoted(ns),
                " was dropped (Admin/DropNamespace) while this gradient "
                "waited in its sync round"));
          }
          --p->second->pending;
        }
      }
      namespaces_.erase(it);
    }
  }
  Progress();
}

void Consistency::Shutdown() {
  std::vector<Released> out;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return;
    shutting_down_ = true;
    for (auto& [id, p] : parked_) {
      if (!p->release) continue;
      Released r;
      r.release = std::move(p->release);
      r.outcome.status = absl::UnavailableError(
          "shard is shutting down; the call was held for ssp/sync and not "
          "answered (retry on the restarted shard)");
      r.held = clock_->Now() - p->since;
      r.label = p->kind == Kind::kSspPull ? "ssp" : "sync";
      out.push_back(std::move(r));
    }
    parked_.clear();
    for (auto& [ns, st] : namespaces_) st.rounds.clear();
  }
  if (metrics_ != nullptr) metrics_->SetHeldNow(0);
  Finish(std::move(out));
}

size_t Consistency::held() {
  absl::MutexLock lock(&mu_);
  return parked_.size();
}

uint64_t Consistency::dropped() {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

bool Consistency::Wake() const { return recheck_ || stop_; }

void Consistency::Loop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Consistency::Wake));
      if (stop_) return;
      recheck_ = false;
    }
    Progress();
  }
}

}  // namespace pskit
