// server/chunk_store_snapshot.cc
//
// ChunkStore::Snapshot (copy the whole state for a checkpoint) and
// ChunkStore::Replace (swap in a state loaded from one), exactly-once
// windows included.
//
// The windows are copied after the chunks, while pushes go on. A call in
// flight then may have updated a chunk after that chunk was copied, or
// before; the window says, per chunk, which version the call's update made,
// and the copied chunk's version says whether the copy holds it (versions
// count updates, one at a time under the chunk's lock). Replace uses that to
// keep, per call, exactly the chunks the loaded state holds: a retry then
// applies the rest, and nothing twice.
//
// Thread safety: see server/chunk_store.h.
#include "server/chunk_store.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/staleness_config.h"
#include "common/optimizer_config.h"
#include "common/validation.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/chunk_store_internal.h"

namespace pskit {

using chunk_store_internal::NumElements;

ShardSnapshot ChunkStore::Snapshot() const {
  ShardSnapshot out;
  absl::ReaderMutexLock index_lock(&index_mu_);
  out.updates_applied = updates_applied_.load();
  for (const auto& [name, ns] : namespaces_) {
    v1::NamespaceRecord& record = out.namespaces.emplace_back();
    record.set_name(name);
    *record.mutable_config() = ns->config;
    if (!google::protobuf::util::MessageDifferencer::Equals(
            ns->config, ns->declared_config)) {
      *record.mutable_declared_config() = ns->declared_config;
    }
    {
      absl::MutexLock lock(&ns->eval_mu);
      if (ns->has_evaluation) *record.mutable_last_evaluation() = ns->evaluation;
    }
    for (const auto& [tensor_name, tensor] : ns->tensors) {
      *record.add_tensors() = tensor->spec;
      for (size_t i = 0; i < tensor->chunks.size(); ++i) {
        Chunk* c = tensor->chunks[i].get();
        if (c == nullptr) continue;
        v1::ChunkRecord& chunk = out.chunks.emplace_back();
        chunk.set_namespace_(name);
        chunk.set_tensor(tensor_name);
        chunk.set_chunk(static_cast<uint32_t>(i));
        // The only work under the chunk's lock: two memcpys.
        absl::ReaderMutexLock lock(&c->mu);
        chunk.set_version(c->version);
        chunk.mutable_values()->assign(
            reinterpret_cast<const char*>(c->values.data()),
            c->values.size() * sizeof(float));
        chunk.mutable_slots()->assign(
            reinterpret_cast<const char*>(c->slots.data()),
            c->slots.size() * sizeof(float));
        // The compensation's state, by worker id (sorted: one checkpoint
        // of one state is one set of bytes).
        std::vector<uint64_t> ids;
        ids.reserve(c->worker_state.size());
        for (const auto& [id, state] : c->worker_state) ids.push_back(id);
        std::sort(ids.begin(), ids.end());
        for (uint64_t id : ids) {
          const std::vector<float>& state = c->worker_state.at(id);
          v1::WorkerStateRecord* w = chunk.add_worker_states();
          w->set_worker_id(id);
          w->mutable_state()->assign(
              reinterpret_cast<const char*>(state.data()),
              state.size() * sizeof(float));
        }
        chunk.mutable_shared_state()->assign(
            reinterpret_cast<const char*>(c->shared_state.data()),
            c->shared_state.size() * sizeof(float));
      }
    }
  }
  // After the chunks: every update a copied chunk holds is in the window.
  out.windows = window_.Snapshot();
  return out;
}

std::vector<v1::WindowRecord> ChunkStore::LoadedWindows(
    const ShardSnapshot& snapshot,
    const absl::flat_hash_map<std::string, std::unique_ptr<Namespace>>& built)
    const {
  std::vector<v1::WindowRecord> out = snapshot.windows;
  for (v1::WindowRecord& w : out) {
    for (v1::WindowCall& call : *w.mutable_calls()) {
      auto ns = built.find(call.namespace_());
      for (v1::WindowChunk& chunk : *call.mutable_chunks()) {
        if (!chunk.applied()) continue;
        Chunk* c = nullptr;
        if (ns != built.end()) {
          auto t = ns->second->tensors.find(chunk.tensor());
          if (t != ns->second->tensors.end() &&
              chunk.chunk() < t->second->chunks.size()) {
            c = t->second->chunks[chunk.chunk()].get();
          }
        }
        bool held = false;
        if (c != nullptr) {
          absl::ReaderMutexLock lock(&c->mu);
          held = c->version >= chunk.ack().version();
        }
        chunk.set_applied(held);
      }
    }
  }
  return out;
}

absl::Status ChunkStore::Replace(const ShardSnapshot& snapshot) {
  // Build the whole new state first; nothing changes until the swap.
  absl::flat_hash_map<std::string, std::unique_ptr<Namespace>> built;
  uint64_t bytes = 0;
  uint64_t rule_bytes = 0;  // compensation state
  absl::flat_hash_set<uint64_t> restored_ids;
  for (const v1::NamespaceRecord& record : snapshot.namespaces) {
    auto ns = std::make_unique<Namespace>();
    // A record this shard cannot take is damage (DATA_LOSS, so LoadNewest
    // falls back to an older checkpoint), not a bad request.
    auto damaged = [&record](const absl::Status& s) {
      return absl::DataLossError(absl::StrCat(
          "checkpoint namespace '", record.name(), "': ", s.message()));
    };
    absl::StatusOr<v1::NamespaceConfig> config =
        NormalizeConfig(record.config());
    if (!config.ok()) return damaged(config.status());
    ns->config = *std::move(config);
    NoteConsistency(ns->config);
    ns->rule = UpdateRule::Create(ns->config.optimizer());
    ns->compensation = Compensation::Create(ns->config);
    if (record.has_declared_config()) {
      absl::StatusOr<v1::NamespaceConfig> declared =
          NormalizeConfig(record.declared_config());
      if (!declared.ok()) return damaged(declared.status());
      ns->declared_config = *std::move(declared);
    } else {
      ns->declared_config = ns->config;
    }
    if (record.has_last_evaluation()) {
      absl::MutexLock lock(&ns->eval_mu);
      ns->evaluation = record.last_evaluation();
      ns->has_evaluation = true;
      // Checkpoints keep the last evaluation only: the history starts there.
      ns->history.push_back(record.last_evaluation());
    }
    for (const v1::TensorSpec& spec : record.tensors()) {
      auto t = std::make_unique<Tensor>();
      t->spec = spec;
      absl::StatusOr<uint64_t> numel =
          NumElements(spec, layout_.MaxTensorElems());
      if (!numel.ok()) return damaged(numel.status());
      t->numel = *numel;
      t->spans = layout_.Chunks(record.name(), spec.name(), t->numel);
      t->chunks.resize(t->spans.size());
      ns->tensors.emplace(spec.name(), std::move(t));
    }
    if (!built.emplace(record.name(), std::move(ns)).second) {
      return absl::DataLossError(absl::StrCat("the checkpoint holds namespace ",
                                              Quoted(record.name()), " twice"));
    }
  }
  for (const v1::ChunkRecord& record : snapshot.chunks) {
    const std::string where = absl::StrCat(
        "checkpoint chunk of namespace ", Quoted(record.namespace_()), " ",
        ChunkName(record.tensor(), record.chunk()));
    auto ns = built.find(record.namespace_());
    if (ns == built.end()) {
      return absl::DataLossError(absl::StrCat(where, ": no such namespace"));
    }
    auto t = ns->second->tensors.find(record.tensor());
    if (t == ns->second->tensors.end() ||
        record.chunk() >= t->second->spans.size()) {
      return absl::DataLossError(absl::StrCat(where, ": no such chunk"));
    }
    Tensor& tensor = *t->second;
    const ChunkSpan& span = tensor.spans[record.chunk()];
    if (span.shard != shard_index_) {
      return absl::FailedPreconditionError(absl::StrCat(
          where, " belongs to shard ", span.shard, " under ",
          layout_.ToString()));
    }
    const size_t num_slots = ns->second->rule->num_slots();
    if (record.values().size() != span.length * sizeof(float) ||
        record.slots().size() != span.length * num_slots * sizeof(float)) {
      return absl::DataLossError(absl::StrCat(
          where, ": ", record.values().size(), " value bytes and ",
          record.slots().size(), " slot bytes, expected ",
          span.length * sizeof(float), " and ",
          span.length * num_slots * sizeof(float)));
    }
    if (tensor.chunks[record.chunk()] != nullptr) {
      return absl::DataLossError(absl::StrCat(where, ": appears twice"));
    }
    std::vector<float> values(span.length), slots(span.length * num_slots);
    std::memcpy(values.data(), record.values().data(), record.values().size());
    std::memcpy(slots.data(), record.slots().data(), record.slots().size());
    auto chunk = std::make_unique<Chunk>(std::move(values), std::move(slots),
                                         record.version());
    // The compensation's state; a checkpoint without it loads without it.
    const Compensation* comp = ns->second->compensation.get();
    const size_t worker_bytes =
        comp == nullptr ? 0 : comp->worker_floats() * span.length * sizeof(float);
    const size_t shared_bytes =
        comp == nullptr ? 0 : comp->shared_floats() * span.length * sizeof(float);
    {
      absl::MutexLock lock(&chunk->mu);
      for (const v1::WorkerStateRecord& w : record.worker_states()) {
        if (comp == nullptr || w.worker_id() == 0 ||
            w.state().size() != worker_bytes ||
            chunk->worker_state.contains(w.worker_id())) {
          return absl::DataLossError(absl::StrCat(
              where, ": compensation state of worker ", w.worker_id(), " has ",
              w.state().size(), " bytes, expected ", worker_bytes,
              " once per worker for compensation ",
              CompensationName(ns->second->config.compensation())));
        }
        std::vector<float>& state = chunk->worker_state[w.worker_id()];
        state.resize(worker_bytes / sizeof(float));
        std::memcpy(state.data(), w.state().data(), worker_bytes);
        rule_bytes += worker_bytes;
        restored_ids.insert(w.worker_id());
      }
      if (!record.shared_state().empty()) {
        if (record.shared_state().size() != shared_bytes) {
          return absl::DataLossError(absl::StrCat(
              where, ": ", record.shared_state().size(),
              " bytes of shared compensation state, expected ", shared_bytes));
        }
        chunk->shared_state.resize(shared_bytes / sizeof(float));
        std::memcpy(chunk->shared_state.data(), record.shared_state().data(),
                    shared_bytes);
        rule_bytes += shared_bytes;
      }
    }
    tensor.chunks[record.chunk()] = std::move(chunk);
    bytes += (1 + num_slots) * span.length * sizeof(float);
  }
  for (const auto& [ns_name, ns] : built) {
    for (const auto& [name, t] : ns->tensors) {
      for (const ChunkSpan& span : t->spans) {
        if (span.shard == shard_index_ && t->chunks[span.index] == nullptr) {
          return absl::DataLossError(absl::StrCat(
              "the checkpoint lacks ", ns_name, "/",
              ChunkName(name, span.index), ", which this shard holds"));
        }
      }
    }
  }
  std::vector<v1::WindowRecord> windows = LoadedWindows(snapshot, built);
  {
    absl::MutexLock lock(&index_mu_);
    namespaces_.swap(built);
    bytes_held_ = bytes;
    rule_state_bytes_.store(rule_bytes);
    {
      // Restored state waits adopt_within for its worker (WorkerLive).
      absl::MutexLock workers_lock(&workers_mu_);
      restored_.clear();
      const absl::Time deadline = clock_->Now() + adopt_within_;
      for (uint64_t id : restored_ids) restored_[id] = deadline;
    }
    updates_applied_.store(snapshot.updates_applied);
    // No call is in flight: each holds index_mu_ shared.
    window_.Replace(std::move(windows));
  }
  // `built` now holds the old state; it is freed here, outside the lock.
  return absl::OkStatus();
}

}  // namespace pskit
