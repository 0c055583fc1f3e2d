// server/chunk_store.cc
//
// ChunkStore's data plane: finding the chunks a request names (Resolve),
// Pull, Push, PushPull and Exchange; and the helpers the other
// chunk_store_*.cc files share. Declare is in chunk_store_declare.cc,
// Snapshot and Replace in chunk_store_snapshot.cc, the job's state
// (evaluations, config, drain, Describe) in chunk_store_job.cc, the
// compensation state's bookkeeping in chunk_store_compensation.cc.
//
// Thread safety: see server/chunk_store.h.
#include "server/chunk_store.h"

#include <algorithm>
#include <bit>
#include <functional>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/encoding.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "server/chunk_store_internal.h"

namespace pskit {
namespace chunk_store_internal {

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::StatusOr<uint64_t> NumElements(const v1::TensorSpec& spec,
                                     uint64_t max_elems) {
  if (spec.shape_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", Quoted(spec.name()),
        " has an empty shape; give every dimension (a scalar is [1])"));
  }
  uint64_t n = 1;
  for (int64_t d : spec.shape()) {
    if (d <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", Quoted(spec.name()), " has shape ",
          ShapeString(spec.shape()), "; every dimension must be > 0"));
    }
    if (static_cast<uint64_t>(d) > max_elems / n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", Quoted(spec.name()), " with shape ",
          ShapeString(spec.shape()), " has more than ", max_elems,
          " elements, the most one tensor may have with this chunk_elems; "
          "split it into several tensors"));
    }
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

}  // namespace chunk_store_internal

namespace {


// Bytes a ChunkData of `elems` elements takes on the wire, with room for
// its tensor name and field tags.
size_t WireBytes(uint64_t elems, v1::Encoding encoding, size_t name_bytes) {
  return elems * BytesPerElement(encoding) + name_bytes + 32;
}

// 1 when `x` is NaN or +-inf, else 0: branch-free, so a loop ORing it
// vectorises.
inline uint32_t NonFiniteBit(float x) {
  return static_cast<uint32_t>((std::bit_cast<uint32_t>(x) & 0x7f800000u) ==
                               0x7f800000u);
}

// Holds the mutexes of every chunk an update names, all at once, taken in
// address order: the one order every update uses, so two updates never wait
// on each other in a cycle. (Pulls and snapshots hold one chunk lock at a
// time, and index_mu_ is taken before any chunk lock.) The mutexes must be
// distinct (Resolve refuses a chunk named twice).
class LockedTogether {
 public:
  explicit LockedTogether(std::vector<absl::Mutex*> mus)
      ABSL_NO_THREAD_SAFETY_ANALYSIS : mus_(std::move(mus)) {
    std::sort(mus_.begin(), mus_.end(), std::less<absl::Mutex*>());
    for (absl::Mutex* mu : mus_) mu->Lock();
  }
  ~LockedTogether() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (auto it = mus_.rbegin(); it != mus_.rend(); ++it) (*it)->Unlock();
  }
  LockedTogether(const LockedTogether&) = delete;
  LockedTogether& operator=(const LockedTogether&) = delete;

 private:
  std::vector<absl::Mutex*> mus_;
};

// The locks of chunks `todo` (indices into `targets`), for LockedTogether.
template <typename Targets>
std::vector<absl::Mutex*> LocksOf(const Targets& targets,
                                  const std::vector<int>& todo) {
  std::vector<absl::Mutex*> mus(todo.size());
  for (size_t k = 0; k < todo.size(); ++k) mus[k] = &targets[todo[k]].chunk->mu;
  return mus;
}

// Ends the exactly-once ticket of a call refused (non-finite) after the
// window let it in. Nothing of it was applied before: forgotten, so a copy
// is handled as new. Some chunks were (an earlier copy, partly kept by a
// checkpoint): finished, so those chunks keep their first answers.
void EndRefused(PushWindow* window,
                const std::optional<PushWindow::Ticket>& ticket,
                bool none_applied_before) {
  if (!ticket.has_value()) return;
  if (none_applied_before) {
    window->Abandon(*ticket);
  } else {
    window->Finish(*ticket);
  }
}

// INVALID_ARGUMENT for an update of chunk (`tensor`, `chunk`) whose new
// values or slots hold a NaN or Inf: says which, and that nothing of the
// request was applied.
absl::Status NonFiniteUpdate(absl::string_view what, absl::string_view tensor,
                             uint32_t chunk, absl::Span<const float> values,
                             absl::Span<const float> slots,
                             absl::string_view advice) {
  int64_t bad = FirstNonFinite(values);
  std::string where;
  if (bad >= 0) {
    where = absl::StrCat("value ", bad, " would become ", values[bad]);
  } else {
    bad = FirstNonFinite(slots);
    const size_t n = values.empty() ? 1 : values.size();
    where = bad >= 0 ? absl::StrCat("optimizer slot ", bad / n, " of element ",
                                    bad % n, " would become ", slots[bad])
                     : std::string("a value would become non-finite");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      what, " refused: it would make ", ChunkName(tensor, chunk),
      " non-finite (", where, "); nothing of the request was applied. ", advice,
      " (ps-server --allow_nonfinite accepts such updates)"));
}

// The state of `worker` in a chunk's map, or null when it has none.
const std::vector<float>* FindState(
    const absl::flat_hash_map<uint64_t, std::vector<float>>& states,
    uint64_t worker) {
  auto it = states.find(worker);
  return it == states.end() ? nullptr : &it->second;
}

// One chunk's compensated update, out of place (server/compensation.h):
// buffers for the new values, slots, worker state (`state` null: the worker
// has none yet, as if it pulled `w` now) and shared state (empty: zeros)
// come from `pool`. Returns Compensation::Apply's result.
template <typename Pool>
bool CompensatedUpdate(const Compensation& comp, const UpdateRule& rule,
                       const std::vector<float>& w, const float* g,
                       const std::vector<float>& slots,
                       const std::vector<float>* state,
                       const std::vector<float>& shared, uint64_t step,
                       float lr, Pool* pool, std::vector<float>* w_out,
                       std::vector<float>* slots_out,
                       std::vector<float>* state_out,
                       std::vector<float>* shared_out, float* scale) {
  const size_t n = w.size();
  *state_out = pool->Take(comp.worker_floats() * n);
  *shared_out = pool->Take(comp.shared_floats() * n);
  std::vector<float> fresh, zeros;
  if (state == nullptr) {
    fresh = pool->Take(comp.worker_floats() * n);
    comp.InitState(w.data(), fresh.data(), n);
  }
  if (shared.empty() && comp.shared_floats() > 0) {
    zeros = pool->Take(comp.shared_floats() * n);
    std::fill(zeros.begin(), zeros.end(), 0.0f);
  }
  std::vector<float> tmp = pool->Take(n);
  const Compensation::Input in{
      w.data(), g, slots.data(), state != nullptr ? state->data() : fresh.data(),
      shared.empty() ? zeros.data() : shared.data(), n, step, lr};
  const Compensation::Output out{w_out->data(), slots_out->data(),
                                 state_out->data(), shared_out->data(),
                                 tmp.data()};
  const bool finite = comp.Apply(rule, in, out, scale);
  pool->Give(std::move(fresh));
  pool->Give(std::move(zeros));
  pool->Give(std::move(tmp));
  return finite;
}

absl::Status CheckAnswerSize(size_t bytes, size_t limit) {
  if (bytes <= limit) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the answer would take ", bytes, " bytes, more than the ", limit,
      "-byte message limit (ps-server --max_message_bytes); ask for fewer "
      "chunks per request"));
}

}  // namespace

ChunkStore::ChunkStore(const Layout& layout, uint32_t shard_index,
                       bool allow_nonfinite, size_t max_message_bytes,
                       uint64_t max_memory_bytes,
                       const PushWindowOptions& window)
    : layout_(layout),
      shard_index_(shard_index),
      allow_nonfinite_(allow_nonfinite),
      max_message_bytes_(max_message_bytes),
      max_memory_bytes_(max_memory_bytes),
      adopt_within_(window.adopt_within),
      clock_(window.clock),
      scratch_(std::make_unique<ScratchPool>()),
      window_(window) {}

ChunkStore::~ChunkStore() = default;

template <typename Refs>
absl::StatusOr<ChunkStore::Resolved> ChunkStore::Resolve(
    const std::string& ns_field, const Refs& refs, const char* what) const {
  const std::string ns = NamespaceOf(ns_field);
  if (refs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " names no chunks; send at least one"));
  }
  Resolved out;
  out.targets.reserve(refs.size());
  absl::flat_hash_set<const Chunk*> seen;
  auto it = namespaces_.find(ns);
  if (it == namespaces_.end()) {
    PSKIT_RETURN_IF_ERROR(ValidateName("namespace", ns));
    return absl::NotFoundError(
        absl::StrCat("namespace ", Quoted(ns), " is not declared on shard ",
                     shard_index_, "; call Declare first"));
  }
  out.ns = it->second.get();
  for (const auto& ref : refs) {
    auto t = out.ns->tensors.find(ref.tensor());
    if (t == out.ns->tensors.end()) {
      return absl::NotFoundError(absl::StrCat("tensor ", Quoted(ref.tensor()),
                                              " is not declared in namespace ",
                                              Quoted(ns)));
    }
    const Tensor& tensor = *t->second;
    if (ref.chunk() >= tensor.spans.size()) {
      return absl::OutOfRangeError(absl::StrCat(
          ChunkName(ref.tensor(), ref.chunk()), " does not exist: the tensor has ",
          tensor.spans.size(), " chunks with ", layout_.ToString(),
          "; does the caller's buffer have the declared size (",
          tensor.numel, " elements)?"));
    }
    Chunk* chunk = tensor.chunks[ref.chunk()].get();
    if (chunk == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          ChunkName(ref.tensor(), ref.chunk()), " belongs to shard ",
          tensor.spans[ref.chunk()].shard, ", not to this shard ", shard_index_,
          " (", layout_.ToString(), "); check the order of --shards, and "
          "that the caller's buffer has the declared size (",
          tensor.numel, " elements)"));
    }
    if (!seen.insert(chunk).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          ChunkName(ref.tensor(), ref.chunk()), " appears twice in one ",
          what));
    }
    out.targets.push_back({chunk, tensor.spans[ref.chunk()].length});
  }
  return out;
}

// CheckGradients (chunk_store_sync.cc) resolves a push's gradients too.
template absl::StatusOr<ChunkStore::Resolved> ChunkStore::Resolve(
    const std::string&, const google::protobuf::RepeatedPtrField<v1::ChunkData>&,
    const char*) const;

absl::Status ChunkStore::Pull(const v1::PullRequest& req,
                              v1::PullResponse* resp) {
  ProtoChunkOut out(resp->mutable_chunks());
  return Pull(req, &out);
}

absl::Status ChunkStore::Pull(const v1::PullRequest& req, ChunkOut* out) {
  PSKIT_RETURN_IF_ERROR(
      CheckLayout(req.layout(), req.has_layout(), layout_, shard_index_));
  PSKIT_RETURN_IF_ERROR(ValidateEncoding(req.encoding()));
  absl::ReaderMutexLock index_lock(&index_mu_);
  PSKIT_ASSIGN_OR_RETURN(Resolved r, Resolve(req.namespace_(), req.chunks(), "Pull"));
  size_t bytes = 0;
  for (int i = 0; i < req.chunks_size(); ++i) {
    bytes += WireBytes(r.targets[i].length, req.encoding(),
                       req.chunks(i).tensor().size());
  }
  PSKIT_RETURN_IF_ERROR(CheckAnswerSize(bytes, max_message_bytes_));
  // Compensation state: the worker's read is recorded on every chunk
  // (created where it has none, the bytes reserved first).
  const Compensation* comp = r.ns->compensation.get();
  const uint64_t worker = req.worker_id();
  const bool record = comp != nullptr && worker != 0;
  uint64_t reserved = 0;
  if (record && MayKeepState(worker)) {
    for (const Target& t : r.targets) {
      absl::ReaderMutexLock lock(&t.chunk->mu);
      if (!t.chunk->worker_state.contains(worker)) {
        reserved += comp->worker_floats() * t.length * sizeof(float);
      }
    }
    PSKIT_RETURN_IF_ERROR(
        ReserveRuleState(reserved, NamespaceOf(req.namespace_())));
  }
  const v1::Encoding encoding = req.encoding();
  const size_t bpe = BytesPerElement(encoding);
  out->Resize(req.chunks_size());
  for (int i = 0; i < req.chunks_size(); ++i) {
    const v1::ChunkRef& ref = req.chunks(i);
    Chunk& c = *r.targets[i].chunk;
    if (record) {
      absl::MutexLock lock(&c.mu);
      const size_t n = c.values.size();
      auto it = c.worker_state.find(worker);
      if (it != c.worker_state.end()) {
        comp->RecordPull(c.values.data(), it->second.data(), n);
      } else {
        const uint64_t need = comp->worker_floats() * n * sizeof(float);
        if (reserved >= need && MayKeepState(worker)) {
          std::vector<float>& state = c.worker_state[worker];
          state.resize(comp->worker_floats() * n);
          comp->InitState(c.values.data(), state.data(), n);
          reserved -= need;
        }
      }
      EncodeFloats(encoding, c.values,
                   out->Set(i, ref.tensor(), ref.chunk(), c.version, encoding,
                            c.values.size() * bpe));
    } else {
      absl::ReaderMutexLock lock(&c.mu);
      EncodeFloats(encoding, c.values,
                   out->Set(i, ref.tensor(), ref.chunk(), c.version, encoding,
                            c.values.size() * bpe));
    }
  }
  // What was reserved for state another call created meanwhile.
  rule_state_bytes_.fetch_sub(reserved, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status ChunkStore::ApplyGradients(
    const v1::PushRequest& req, absl::Span<const PayloadView> grads_in,
    google::protobuf::RepeatedPtrField<v1::ChunkAck>* acks, ChunkOut* values,
    v1::Encoding encoding, bool* replayed) {
  if (grads_in.size() != static_cast<size_t>(req.grads_size())) {
    return absl::InternalError(absl::StrCat(
        "Push: ", grads_in.size(), " payloads for ", req.grads_size(),
        " gradients (a bug in the shard)"));
  }
  PSKIT_RETURN_IF_ERROR(
      CheckLayout(req.layout(), req.has_layout(), layout_, shard_index_));
  absl::ReaderMutexLock index_lock(&index_mu_);
  PSKIT_ASSIGN_OR_RETURN(Resolved r, Resolve(req.namespace_(), req.grads(), "Push"));
  if (values != nullptr) {
    PSKIT_RETURN_IF_ERROR(ValidateEncoding(encoding));
    size_t bytes = 0;
    for (int i = 0; i < req.grads_size(); ++i) {
      bytes += WireBytes(r.targets[i].length, encoding,
                         req.grads(i).tensor().size()) + 16;
    }
    PSKIT_RETURN_IF_ERROR(CheckAnswerSize(bytes, max_message_bytes_));
  }
  // Decode and check every gradient before the first update.
  std::vector<absl::Span<const float>> grads(req.grads_size());
  std::vector<std::unique_ptr<float[]>> scratch(req.grads_size());
  for (int i = 0; i < req.grads_size(); ++i) {
    PSKIT_ASSIGN_OR_RETURN(
        grads[i], DecodePayload(req.grads(i), grads_in[i], r.targets[i].length,
                                allow_nonfinite_, &scratch[i]));
  }
  // Exactly-once: from here on nothing fails, so a call the window lets
  // through is applied whole.
  std::optional<PushWindow::Ticket> ticket;
  if (req.worker_id() != 0 && req.sequence() != 0) {
    PSKIT_ASSIGN_OR_RETURN(
        ticket, window_.Begin(req.worker_id(), req.sequence(),
                              NamespaceOf(req.namespace_()),
                              /*exchange=*/false, req.grads()));
  }
  if (replayed != nullptr) *replayed = ticket.has_value() && ticket->replay();
  const UpdateRule& rule = *r.ns->rule;
  const v1::Compensation compensation = r.ns->config.compensation();
  // Compensation with per-worker state: only for calls with a worker id.
  const uint64_t worker = req.worker_id();
  const Compensation* comp =
      worker != 0 ? r.ns->compensation.get() : nullptr;
  const int n = req.grads_size();
  acks->Reserve(n);
  for (int i = 0; i < n; ++i) acks->Add();
  // Chunks an earlier copy of this call applied (exactly-once) answer that
  // copy's ack; the rest are applied now.
  std::vector<int> todo;
  todo.reserve(n);
  for (int i = 0; i < n; ++i) {
    if (!ticket.has_value() || !ticket->Applied(i, &(*acks)[i], nullptr)) {
      todo.push_back(i);
    }
  }
  // Every chunk's new values and slots, computed out of place under all the
  // request's chunk locks, then checked, then swapped in: all or nothing.
  struct Pending {
    std::vector<float> values;
    std::vector<float> slots;
    uint64_t staleness = 0;
    // Compensation: the worker's and the chunk's new state, whether to
    // keep the worker's (false: it went, or the store is anonymous), the
    // rule's scale.
    std::vector<float> state;
    std::vector<float> shared;
    bool keep_state = false;
    float scale = 0.0f;
  };
  std::vector<Pending> pending(todo.size());
  auto give_back = [&] {
    for (Pending& q : pending) {
      scratch_->Give(std::move(q.values));
      scratch_->Give(std::move(q.slots));
      scratch_->Give(std::move(q.state));
      scratch_->Give(std::move(q.shared));
    }
  };
  uint64_t comp_reserved = 0;  // bytes of state this push creates
  {
    LockedTogether locked(LocksOf(r.targets, todo));
    // ---- compensation: reserve the state this push creates ----
    if (comp != nullptr) {
      const bool may_keep = MayKeepState(worker);
      uint64_t need = 0;
      for (size_t k = 0; k < todo.size(); ++k) {
        Chunk& c = *r.targets[todo[k]].chunk;
        c.mu.AssertHeld();
        const size_t len = c.values.size();
        const bool has = c.worker_state.contains(worker);
        pending[k].keep_state = has || may_keep;
        if (!has && may_keep) need += comp->worker_floats() * len;
        if (c.shared_state.empty()) need += comp->shared_floats() * len;
      }
      comp_reserved = need * sizeof(float);
      if (absl::Status full =
              ReserveRuleState(comp_reserved, NamespaceOf(req.namespace_()));
          !full.ok()) {
        EndRefused(&window_, ticket, todo.size() == static_cast<size_t>(n));
        acks->Clear();
        return full;
      }
    }
    // ---- end compensation ----
    for (size_t k = 0; k < todo.size(); ++k) {
      const int i = todo[k];
      Chunk& c = *r.targets[i].chunk;
      c.mu.AssertHeld();
      Pending& p = pending[k];
      p.values = scratch_->Take(c.values.size());
      p.slots = scratch_->Take(c.slots.size());
      const uint64_t pulled = req.grads(i).version();
      // A version from the future means this shard lost updates (a restart
      // without a checkpoint): the gradient is as fresh as it can be.
      p.staleness = c.version > pulled ? c.version - pulled : 0;
      const float lr =
          CompensatedRate(compensation, rule.learning_rate(), p.staleness);
      const bool finite =
          comp != nullptr
              ? CompensatedUpdate(*comp, rule, c.values, grads[i].data(),
                                  c.slots, FindState(c.worker_state, worker),
                                  c.shared_state, c.version + 1, lr,
                                  scratch_.get(), &p.values, &p.slots,
                                  &p.state, &p.shared, &p.scale)
              : rule.Update(c.values.data(), grads[i].data(), c.slots.data(),
                            p.values.data(), p.slots.data(), c.values.size(),
                            c.version + 1, lr);
      if (!finite && !allow_nonfinite_) {
        rule_state_bytes_.fetch_sub(comp_reserved, std::memory_order_relaxed);
        absl::Status refused = NonFiniteUpdate(
            "Push", req.grads(i).tensor(), req.grads(i).chunk(), p.values,
            p.slots,
            "Lower the learning rate (SetConfig), or clip the gradients");
        give_back();
        EndRefused(&window_, ticket, todo.size() == static_cast<size_t>(n));
        acks->Clear();  // a refused call answers nothing
        return refused;
      }
    }
    for (size_t k = 0; k < todo.size(); ++k) {
      const int i = todo[k];
      Chunk& c = *r.targets[i].chunk;
      c.mu.AssertHeld();
      Pending& p = pending[k];
      c.values.swap(p.values);
      c.slots.swap(p.slots);
      if (comp != nullptr) {  // compensation: swap in the new state
        if (p.keep_state) c.worker_state[worker].swap(p.state);
        c.shared_state.swap(p.shared);
        scales_.Observe(comp->index(), p.scale);
      }
      ++c.version;
      v1::ChunkAck* ack = &(*acks)[i];
      ack->set_version(c.version);
      ack->set_staleness(p.staleness);
      // Under the chunk's lock: a checkpoint that holds this update also
      // holds its ack.
      if (ticket.has_value()) window_.Record(*ticket, i, *ack, nullptr);
    }
  }
  updates_applied_.fetch_add(todo.size(), std::memory_order_relaxed);
  // The chunks' old buffers, now in `pending`, serve the next update.
  give_back();
  if (values != nullptr) {
    // Today's values of every chunk, one lock at a time (another lock taken
    // while holding the request's could deadlock with a LockedTogether),
    // encoded straight into the answer.
    const size_t bpe = BytesPerElement(encoding);
    values->Resize(n);
    for (int i = 0; i < n; ++i) {
      Chunk& c = *r.targets[i].chunk;
      const v1::ChunkData& g = req.grads(i);
      if (comp != nullptr) {
        // The worker reads these values: its new backup.
        absl::MutexLock lock(&c.mu);
        auto it = c.worker_state.find(worker);
        if (it != c.worker_state.end()) {
          comp->RecordPull(c.values.data(), it->second.data(), c.values.size());
        }
        EncodeFloats(encoding, c.values,
                     values->Set(i, g.tensor(), g.chunk(), c.version, encoding,
                                 c.values.size() * bpe));
        continue;
      }
      absl::ReaderMutexLock lock(&c.mu);
      EncodeFloats(encoding, c.values,
                   values->Set(i, g.tensor(), g.chunk(), c.version, encoding,
                               c.values.size() * bpe));
    }
  }
  if (ticket.has_value() && !ticket->replay()) window_.Finish(*ticket);
  return absl::OkStatus();
}

absl::Status ChunkStore::Push(const v1::PushRequest& req,
                              v1::PushResponse* resp, bool* replayed) {
  return Push(req, PayloadsOf(req.grads()), resp, replayed);
}

absl::Status ChunkStore::Push(const v1::PushRequest& req,
                              absl::Span<const PayloadView> grads,
                              v1::PushResponse* resp, bool* replayed) {
  return ApplyGradients(req, grads, resp->mutable_acks(), nullptr,
                        v1::ENCODING_UNSPECIFIED, replayed);
}

absl::Status ChunkStore::PushPull(const v1::PushRequest& req,
                                  v1::PushPullResponse* resp, bool* replayed) {
  ProtoChunkOut values(resp->mutable_chunks());
  return PushPull(req, PayloadsOf(req.grads()), resp->mutable_acks(), &values,
                  replayed);
}

absl::Status ChunkStore::PushPull(
    const v1::PushRequest& req, absl::Span<const PayloadView> grads,
    google::protobuf::RepeatedPtrField<v1::ChunkAck>* acks, ChunkOut* values,
    bool* replayed) {
  return ApplyGradients(req, grads, acks, values, req.return_encoding(),
                        replayed);
}

absl::Status ChunkStore::Exchange(const v1::ExchangeRequest& req,
                                  v1::ExchangeResponse* resp, bool* replayed) {
  ProtoChunkOut diffs(resp->mutable_diffs());
  return Exchange(req, PayloadsOf(req.params()), &diffs, replayed);
}

absl::Status ChunkStore::Exchange(const v1::ExchangeRequest& req,
                                  absl::Span<const PayloadView> params_in,
                                  ChunkOut* out, bool* replayed) {
  if (params_in.size() != static_cast<size_t>(req.params_size())) {
    return absl::InternalError(absl::StrCat(
        "Exchange: ", params_in.size(), " payloads for ", req.params_size(),
        " chunks (a bug in the shard)"));
  }
  PSKIT_RETURN_IF_ERROR(
      CheckLayout(req.layout(), req.has_layout(), layout_, shard_index_));
  if (!(req.alpha() > 0.0f && req.alpha() <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Exchange alpha is ", req.alpha(),
                     "; it must be in (0, 1] (EASGD's moving rate, typically "
                     "0.9 / number of workers)"));
  }
  absl::ReaderMutexLock index_lock(&index_mu_);
  PSKIT_ASSIGN_OR_RETURN(Resolved r,
                         Resolve(req.namespace_(), req.params(), "Exchange"));
  std::vector<absl::Span<const float>> params(req.params_size());
  std::vector<std::unique_ptr<float[]>> scratch(req.params_size());
  for (int i = 0; i < req.params_size(); ++i) {
    PSKIT_ASSIGN_OR_RETURN(
        params[i],
        DecodePayload(req.params(i), params_in[i], r.targets[i].length,
                      allow_nonfinite_, &scratch[i]));
  }
  // Exactly-once, as in ApplyGradients.
  std::optional<PushWindow::Ticket> ticket;
  if (req.worker_id() != 0 && req.sequence() != 0) {
    PSKIT_ASSIGN_OR_RETURN(
        ticket, window_.Begin(req.worker_id(), req.sequence(),
                              NamespaceOf(req.namespace_()),
                              /*exchange=*/true, req.params()));
  }
  if (replayed != nullptr) *replayed = ticket.has_value() && ticket->replay();
  const float alpha = req.alpha();
  const int n = req.params_size();
  out->Resize(n);
  // Chunks an earlier copy applied answer that copy's diff: the centre
  // moved by it once, so the worker must move by the same e once.
  std::vector<int> todo;
  todo.reserve(n);
  for (int i = 0; i < n; ++i) {
    v1::ChunkAck first;
    v1::ChunkData diff;
    if (ticket.has_value() && ticket->Applied(i, &first, &diff)) {
      out->SetCopy(i, diff);
    } else {
      todo.push_back(i);
    }
  }
  // As ApplyGradients: every chunk's new centre and the answer's diff are
  // computed under all the request's chunk locks, checked, then swapped in.
  std::vector<std::vector<float>> centres(todo.size()), diffs(todo.size());
  auto give_back = [&] {
    for (std::vector<float>& v : centres) scratch_->Give(std::move(v));
    for (std::vector<float>& v : diffs) scratch_->Give(std::move(v));
  };
  {
    LockedTogether locked(LocksOf(r.targets, todo));
    for (size_t k = 0; k < todo.size(); ++k) {
      const int i = todo[k];
      Chunk& c = *r.targets[i].chunk;
      c.mu.AssertHeld();
      const size_t len = r.targets[i].length;
      centres[k] = scratch_->Take(len);
      diffs[k] = scratch_->Take(len);
      const float* __restrict centre = c.values.data();
      const float* __restrict x = params[i].data();
      float* __restrict e = diffs[k].data();
      float* __restrict next = centres[k].data();
      uint32_t bad = 0;
      for (size_t j = 0; j < len; ++j) {
        const float ej = alpha * (x[j] - centre[j]);
        const float cj = centre[j] + ej;
        e[j] = ej;
        next[j] = cj;
        bad |= NonFiniteBit(ej) | NonFiniteBit(cj);
      }
      if (bad != 0 && !allow_nonfinite_) {
        absl::Status refused = NonFiniteUpdate(
            "Exchange", req.params(i).tensor(), req.params(i).chunk(),
            FirstNonFinite(centres[k]) >= 0
                ? absl::Span<const float>(centres[k])
                : absl::Span<const float>(diffs[k]),
            {}, "Check the parameters sent");
        give_back();
        EndRefused(&window_, ticket, todo.size() == static_cast<size_t>(n));
        out->Resize(0);  // a refused call answers nothing
        return refused;
      }
    }
    for (size_t k = 0; k < todo.size(); ++k) {
      const int i = todo[k];
      Chunk& c = *r.targets[i].chunk;
      c.mu.AssertHeld();
      c.values.swap(centres[k]);
      const v1::ChunkData& p = req.params(i);
      const size_t bytes = diffs[k].size() * BytesPerElement(p.encoding());
      char* e = out->Set(i, p.tensor(), p.chunk(), ++c.version, p.encoding(),
                         bytes);
      EncodeFloats(p.encoding(), diffs[k], e);
      if (ticket.has_value()) {
        // Recorded under the chunk's lock, with the diff: a checkpoint
        // that holds this update also holds what was answered for it.
        v1::ChunkData diff;
        diff.set_tensor(p.tensor());
        diff.set_chunk(p.chunk());
        diff.set_version(c.version);
        diff.set_encoding(p.encoding());
        diff.set_data(e, bytes);
        v1::ChunkAck ack;
        ack.set_version(c.version);
        window_.Record(*ticket, i, ack, &diff);
      }
    }
  }
  updates_applied_.fetch_add(todo.size(), std::memory_order_relaxed);
  give_back();
  if (ticket.has_value() && !ticket->replay()) window_.Finish(*ticket);
  return absl::OkStatus();
}

}  // namespace pskit
