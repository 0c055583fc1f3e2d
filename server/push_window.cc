// server/push_window.cc: PushWindow, the shard's exactly-once memory of
// recent calls. See server/push_window.h.
#include "server/push_window.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace pskit {
namespace {

// Bytes a remembered chunk takes, roughly: its name, ack and diff.
uint64_t ChunkBytes(const v1::WindowChunk& c) {
  return c.tensor().size() + c.diff().data().size() + c.diff().tensor().size() +
         64;
}

}  // namespace

bool PushWindow::Ticket::Applied(int i, v1::ChunkAck* ack,
                                 v1::ChunkData* diff) const {
  absl::MutexLock lock(&call_->mu);
  const v1::WindowChunk& c = call_->chunks[i];
  if (!c.applied()) return false;
  *ack = c.ack();
  if (diff != nullptr) *diff = c.diff();
  return true;
}

PushWindow::PushWindow(const PushWindowOptions& options) : options_(options) {}

absl::StatusOr<PushWindow::Ticket> PushWindow::Begin(
    uint64_t worker, uint64_t sequence, const std::string& ns, bool exchange,
    const google::protobuf::RepeatedPtrField<v1::ChunkData>& chunks) {
  absl::MutexLock lock(&mu_);
  SweepUnadopted();
  for (;;) {
    Worker& w = workers_[worker];
    if (w.adopt_by != absl::InfiniteFuture()) {  // it came back
      w.adopt_by = absl::InfiniteFuture();
      --unadopted_;
      any_unadopted_.store(unadopted_ > 0);
    }
    auto it = w.calls.find(sequence);
    if (it == w.calls.end()) {
      if (sequence <= w.evicted_through) {
        too_old_.fetch_add(1, std::memory_order_relaxed);
        return absl::FailedPreconditionError(absl::StrCat(
            "worker ", worker, " sent sequence ", sequence,
            ", older than this shard's window of its calls (every sequence "
            "up to ", w.evicted_through,
            " not remembered has left it); it may or may not have been "
            "applied, so it is refused. Retry only calls still in flight, or "
            "raise ps-server --push_window"));
      }
      auto call = std::make_shared<Call>(sequence, ns, exchange);
      {
        absl::MutexLock call_lock(&call->mu);
        call->chunks.resize(chunks.size());
        for (int i = 0; i < chunks.size(); ++i) {
          call->chunks[i].set_tensor(chunks[i].tensor());
          call->chunks[i].set_chunk(chunks[i].chunk());
        }
      }
      w.calls.emplace(sequence, call);
      Evict(&w);
      Ticket t;
      t.call_ = std::move(call);
      t.worker_ = worker;
      return t;
    }
    std::shared_ptr<Call> call = it->second;
    if (call->in_flight) {
      // A copy is being applied: wait for it, then answer from what it
      // recorded (or, if it was abandoned, look again).
      // mu_ is released while waiting: look the call up again after.
      mu_.Await(absl::Condition(
          +[](Call* c) { return !c->in_flight; }, call.get()));
      continue;
    }
    if (call->ns != ns || call->exchange != exchange) {
      return absl::InvalidArgumentError(absl::StrCat(
          "worker ", worker, " reused sequence ", sequence, ": it named ",
          call->exchange ? "an Exchange" : "a Push", " of namespace '",
          call->ns, "' before; give every call its own sequence"));
    }
    bool replay = true;
    {
      absl::MutexLock call_lock(&call->mu);
      bool same = static_cast<int>(call->chunks.size()) == chunks.size();
      for (int i = 0; same && i < chunks.size(); ++i) {
        same = call->chunks[i].tensor() == chunks[i].tensor() &&
               call->chunks[i].chunk() == chunks[i].chunk();
      }
      if (!same) {
        return absl::InvalidArgumentError(absl::StrCat(
            "worker ", worker, " reused sequence ", sequence,
            " for other chunks than its first call; give every call its own "
            "sequence"));
      }
      for (const v1::WindowChunk& c : call->chunks) replay &= c.applied();
    }
    retries_answered_.fetch_add(1, std::memory_order_relaxed);
    if (!replay) {
      // Loaded from a checkpoint that holds only part of the call: this
      // copy applies the rest.
      call->in_flight = true;
      w.bytes -= std::min(w.bytes, call->bytes);
      call->bytes = 0;
    }
    Ticket t;
    t.call_ = std::move(call);
    t.worker_ = worker;
    t.replay_ = replay;
    return t;
  }
}

void PushWindow::Record(const Ticket& t, int i, const v1::ChunkAck& ack,
                        const v1::ChunkData* diff) {
  absl::MutexLock lock(&t.call_->mu);
  v1::WindowChunk& c = t.call_->chunks[i];
  c.set_applied(true);
  *c.mutable_ack() = ack;
  if (diff != nullptr) *c.mutable_diff() = *diff;
}

void PushWindow::Finish(const Ticket& t) {
  uint64_t bytes = 64;
  {
    absl::MutexLock lock(&t.call_->mu);
    for (const v1::WindowChunk& c : t.call_->chunks) bytes += ChunkBytes(c);
  }
  absl::MutexLock lock(&mu_);
  Call& call = *t.call_;
  call.in_flight = false;
  auto w = workers_.find(t.worker_);
  if (w == workers_.end()) return;  // the worker left meanwhile
  auto it = w->second.calls.find(call.sequence);
  if (it == w->second.calls.end() || it->second != t.call_) return;
  call.bytes = bytes;
  w->second.bytes += bytes;
  Evict(&w->second);
}

void PushWindow::Abandon(const Ticket& t) {
  bool any_applied = false;
  {
    absl::MutexLock lock(&t.call_->mu);
    for (const v1::WindowChunk& c : t.call_->chunks) any_applied |= c.applied();
  }
  if (any_applied) {
    Finish(t);
    return;
  }
  absl::MutexLock lock(&mu_);
  t.call_->in_flight = false;
  t.call_->abandoned = true;
  auto w = workers_.find(t.worker_);
  if (w == workers_.end()) return;
  auto it = w->second.calls.find(t.call_->sequence);
  if (it != w->second.calls.end() && it->second == t.call_) {
    w->second.calls.erase(it);
  }
}

void PushWindow::Evict(Worker* w) {
  auto it = w->calls.begin();
  while (it != w->calls.end() &&
         (w->calls.size() > options_.calls_per_worker ||
          w->bytes > options_.bytes_per_worker)) {
    // In flight: its owner still writes it. The newest: a call whose answer
    // alone is over the byte budget must still answer its own retry.
    if (it->second->in_flight || std::next(it) == w->calls.end()) {
      ++it;
      continue;
    }
    w->evicted_through = std::max(w->evicted_through, it->first);
    w->bytes -= std::min(w->bytes, it->second->bytes);
    it = w->calls.erase(it);
  }
}

void PushWindow::SweepUnadopted() {
  if (unadopted_ == 0) return;
  const absl::Time now = options_.clock->Now();
  size_t freed = 0;  // counted here: the lambda is outside mu_'s analysis
  absl::erase_if(workers_, [&](const auto& kv) {
    if (kv.second.adopt_by > now) return false;
    spdlog::info(
        "worker {} did not come back within {} (of a checkpoint load, or of "
        "its lease lapsing); its exactly-once window ({} calls) is freed",
        kv.first, absl::FormatDuration(options_.adopt_within),
        kv.second.calls.size());
    ++freed;
    return true;
  });
  unadopted_ -= std::min(unadopted_, freed);
  any_unadopted_.store(unadopted_ > 0);
}

void PushWindow::DropWorker(uint64_t worker) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  if (it->second.adopt_by != absl::InfiniteFuture()) --unadopted_;
  workers_.erase(it);
  any_unadopted_.store(unadopted_ > 0);
}

size_t PushWindow::DropNamespace(const std::string& ns) {
  absl::MutexLock lock(&mu_);
  size_t dropped = 0;
  for (auto& [id, w] : workers_) {
    for (auto it = w.calls.begin(); it != w.calls.end();) {
      if (it->second->ns != ns || it->second->in_flight) {
        ++it;
        continue;
      }
      // As an eviction: a copy of the call is refused as too old, never
      // applied to a namespace declared afresh under the same name.
      w.evicted_through = std::max(w.evicted_through, it->first);
      w.bytes -= std::min(w.bytes, it->second->bytes);
      it = w.calls.erase(it);
      ++dropped;
    }
  }
  return dropped;
}

void PushWindow::Orphan(uint64_t worker) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second.adopt_by != absl::InfiniteFuture()) {
    return;
  }
  it->second.adopt_by = options_.clock->Now() + options_.adopt_within;
  ++unadopted_;
  any_unadopted_.store(true);
}

void PushWindow::Adopt(uint64_t worker) {
  if (!any_unadopted_.load()) return;
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second.adopt_by == absl::InfiniteFuture()) {
    return;
  }
  it->second.adopt_by = absl::InfiniteFuture();
  --unadopted_;
  any_unadopted_.store(unadopted_ > 0);
}

std::vector<v1::WindowRecord> PushWindow::Snapshot() {
  std::vector<v1::WindowRecord> out;
  absl::MutexLock lock(&mu_);
  SweepUnadopted();
  for (const auto& [id, w] : workers_) {
    v1::WindowRecord& r = out.emplace_back();
    r.set_worker_id(id);
    r.set_evicted_through(w.evicted_through);
    for (const auto& [seq, call] : w.calls) {
      absl::MutexLock call_lock(&call->mu);
      if (std::none_of(call->chunks.begin(), call->chunks.end(),
                       [](const v1::WindowChunk& c) { return c.applied(); })) {
        continue;
      }
      v1::WindowCall* c = r.add_calls();
      c->set_sequence(seq);
      c->set_namespace_(call->ns);
      c->set_exchange(call->exchange);
      for (const v1::WindowChunk& chunk : call->chunks) *c->add_chunks() = chunk;
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.worker_id() < b.worker_id();
  });
  return out;
}

void PushWindow::Replace(std::vector<v1::WindowRecord> records) {
  absl::flat_hash_map<uint64_t, Worker> built;
  const absl::Time adopt_by = options_.clock->Now() + options_.adopt_within;
  for (v1::WindowRecord& r : records) {
    if (r.worker_id() == 0) continue;
    Worker& w = built[r.worker_id()];
    w.evicted_through = std::max(w.evicted_through, r.evicted_through());
    w.adopt_by = adopt_by;
    for (v1::WindowCall& c : *r.mutable_calls()) {
      bool any_applied = false;
      for (const v1::WindowChunk& chunk : c.chunks()) any_applied |= chunk.applied();
      if (c.sequence() == 0 || !any_applied) continue;
      auto call = std::make_shared<Call>(c.sequence(), c.namespace_(),
                                         c.exchange());
      call->in_flight = false;
      uint64_t bytes = 64;
      {
        absl::MutexLock call_lock(&call->mu);
        call->chunks.assign(c.mutable_chunks()->begin(),
                            c.mutable_chunks()->end());
        for (const v1::WindowChunk& chunk : call->chunks) bytes += ChunkBytes(chunk);
      }
      call->bytes = bytes;
      w.bytes += bytes;
      w.calls[c.sequence()] = std::move(call);
    }
  }
  absl::MutexLock lock(&mu_);
  for (auto& [id, w] : built) Evict(&w);
  workers_.swap(built);
  unadopted_ = workers_.size();
  any_unadopted_.store(unadopted_ > 0);
}

size_t PushWindow::workers() {
  absl::MutexLock lock(&mu_);
  return workers_.size();
}

size_t PushWindow::calls() {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [id, w] : workers_) n += w.calls.size();
  return n;
}

}  // namespace pskit
