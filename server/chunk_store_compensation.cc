// server/chunk_store_compensation.cc
//
// ChunkStore's bookkeeping of the compensation's per-worker state
// (server/compensation.h): whether a worker may still get state
// (MayKeepState), the memory it takes (ReserveRuleState, CompensationState),
// and freeing it when workers go (WorkerLive, WorkerGone, DropStateOf,
// ExpiredRestored). The state itself is used and made in chunk_store.cc's
// Pull and ApplyGradients.
//
// Thread safety: see server/chunk_store.h.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/validation.h"
#include "server/chunk_store.h"
#include "server/chunk_store_internal.h"

namespace pskit {

bool ChunkStore::MayKeepState(uint64_t id) const {
  absl::MutexLock lock(&workers_mu_);
  return !gone_.contains(id);
}

absl::Status ChunkStore::ReserveRuleState(uint64_t bytes,
                                          const std::string& ns) const {
  if (bytes == 0) return absl::OkStatus();
  uint64_t held = rule_state_bytes_.load(std::memory_order_relaxed);
  while (true) {
    if (bytes_held_ + held + bytes > max_memory_bytes_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "namespace ", Quoted(ns), ": the compensation's per-worker state "
          "would need ", bytes, " more bytes; the shard holds ",
          bytes_held_ >> 20, " MiB of values and slots and ", held >> 20,
          " MiB of compensation state of its ", max_memory_bytes_ >> 20,
          " MiB (ps-server --max_memory_mib). Use fewer workers, give the "
          "shard more memory or more shards, or a compensation without "
          "per-worker state (psctl set <ns> compensation=inverse)"));
    }
    if (rule_state_bytes_.compare_exchange_weak(held, held + bytes,
                                                std::memory_order_relaxed)) {
      return absl::OkStatus();
    }
  }
}

void ChunkStore::DropStateOf(const std::vector<uint64_t>& ids) const {
  if (ids.empty()) return;
  absl::ReaderMutexLock index_lock(&index_mu_);
  uint64_t freed = 0;
  for (const auto& [name, ns] : namespaces_) {
    // Namespaces whose compensation keeps no state hold none (SetConfig
    // frees it when the compensation changes): no chunk lock taken there,
    // since this runs under the registry's mutex.
    if (ns->compensation == nullptr) continue;
    for (const auto& [tensor_name, t] : ns->tensors) {
      for (const std::unique_ptr<Chunk>& c : t->chunks) {
        if (c == nullptr) continue;
        absl::MutexLock lock(&c->mu);
        if (c->worker_state.empty()) continue;
        for (uint64_t id : ids) {
          auto it = c->worker_state.find(id);
          if (it == c->worker_state.end()) continue;
          freed += it->second.size() * sizeof(float);
          c->worker_state.erase(it);
        }
      }
    }
  }
  rule_state_bytes_.fetch_sub(freed, std::memory_order_relaxed);
}

std::vector<uint64_t> ChunkStore::ExpiredRestored() const {
  std::vector<uint64_t> out;
  absl::MutexLock lock(&workers_mu_);
  if (restored_.empty()) return out;
  const absl::Time now = clock_->Now();
  for (const auto& [id, deadline] : restored_) {
    if (now >= deadline) out.push_back(id);
  }
  for (uint64_t id : out) restored_.erase(id);
  return out;
}

void ChunkStore::WorkerLive(uint64_t id) {
  {
    absl::MutexLock lock(&workers_mu_);
    gone_.erase(id);  // registered again (it may ask for its old id)
    restored_.erase(id);
  }
  DropStateOf(ExpiredRestored());
}

void ChunkStore::WorkerGone(uint64_t id) {
  {
    // Marked first: a call creating state for it after the sweep below
    // passed its chunk sees the mark (MayKeepState under the chunk lock).
    absl::MutexLock lock(&workers_mu_);
    gone_[id] = ++gone_seq_;
    gone_order_.emplace_back(id, gone_seq_);
    while (gone_order_.size() > kMaxGone) {
      auto [old, seq] = gone_order_.front();
      gone_order_.pop_front();
      auto it = gone_.find(old);
      if (it != gone_.end() && it->second == seq) gone_.erase(it);
    }
    restored_.erase(id);
  }
  std::vector<uint64_t> ids = ExpiredRestored();
  ids.push_back(id);
  DropStateOf(ids);
}

ChunkStore::CompensationStateInfo ChunkStore::CompensationState() const {
  DropStateOf(ExpiredRestored());
  CompensationStateInfo out;
  absl::flat_hash_set<uint64_t> workers;
  absl::ReaderMutexLock index_lock(&index_mu_);
  for (const auto& [name, ns] : namespaces_) {
    if (ns->compensation == nullptr) continue;
    for (const auto& [tensor_name, t] : ns->tensors) {
      for (const std::unique_ptr<Chunk>& c : t->chunks) {
        if (c == nullptr) continue;
        absl::ReaderMutexLock lock(&c->mu);
        for (const auto& [id, state] : c->worker_state) workers.insert(id);
      }
    }
  }
  out.bytes = rule_state_bytes_.load(std::memory_order_relaxed);
  out.workers = workers.size();
  return out;
}

}  // namespace pskit
