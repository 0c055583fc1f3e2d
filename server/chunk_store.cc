// server/chunk_store.cc
//
// ChunkStore's data plane: finding the chunks a request names (Resolve),
// Pull, Push, PushPull and Exchange; and the helpers the other
// chunk_store_*.cc files share. Declare is in chunk_store_declare.cc,
// Snapshot and Replace in chunk_store_snapshot.cc, the job's state
// (evaluations, config, drain, Describe) in chunk_store_job.cc.
//
// Thread safety: see server/chunk_store.h.
#include "server/chunk_store.h"

#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
        "tensor '", spec.name(),
        "' has an empty shape; give every dimension (a scalar is [1])"));
  }
  uint64_t n = 1;
  for (int64_t d : spec.shape()) {
    if (d <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name(), "' has shape ",
                       ShapeString(spec.shape()),
                       "; every dimension must be > 0"));
    }
    if (static_cast<uint64_t>(d) > max_elems / n) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", spec.name(), "' with shape ", ShapeString(spec.shape()),
          " has more than ", max_elems,
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
    return absl::NotFoundError(absl::StrCat(
        "namespace '", ns, "' is not declared on shard ", shard_index_,
        "; call Declare first"));
  }
  out.ns = it->second.get();
  for (const auto& ref : refs) {
    auto t = out.ns->tensors.find(ref.tensor());
    if (t == out.ns->tensors.end()) {
      return absl::NotFoundError(absl::StrCat("tensor '", ref.tensor(),
                                              "' is not declared in namespace '",
                                              ns, "'"));
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

absl::Status ChunkStore::Pull(const v1::PullRequest& req,
                              v1::PullResponse* resp) {
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
  resp->mutable_chunks()->Reserve(req.chunks_size());
  for (int i = 0; i < req.chunks_size(); ++i) {
    v1::ChunkData* out = resp->add_chunks();
    out->set_tensor(req.chunks(i).tensor());
    out->set_chunk(req.chunks(i).chunk());
    out->set_encoding(req.encoding());
    Chunk& c = *r.targets[i].chunk;
    absl::ReaderMutexLock lock(&c.mu);
    out->set_version(c.version);
    EncodeFloats(req.encoding(), c.values, out->mutable_data());
  }
  return absl::OkStatus();
}

absl::Status ChunkStore::ApplyGradients(
    const v1::PushRequest& req,
    google::protobuf::RepeatedPtrField<v1::ChunkAck>* acks,
    google::protobuf::RepeatedPtrField<v1::ChunkData>* values,
    v1::Encoding encoding, bool* replayed) {
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
  std::vector<std::vector<float>> scratch(req.grads_size());
  for (int i = 0; i < req.grads_size(); ++i) {
    PSKIT_ASSIGN_OR_RETURN(grads[i],
                           DecodeChunk(req.grads(i), r.targets[i].length,
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
  acks->Reserve(req.grads_size());
  if (values != nullptr) values->Reserve(req.grads_size());
  for (int i = 0; i < req.grads_size(); ++i) {
    Chunk& c = *r.targets[i].chunk;
    v1::ChunkAck* ack = acks->Add();
    if (ticket.has_value() && ticket->Applied(i, ack, nullptr)) {
      // Applied by an earlier copy of this call: its ack, today's values.
      if (values != nullptr) {
        v1::ChunkData* out = values->Add();
        out->set_tensor(req.grads(i).tensor());
        out->set_chunk(req.grads(i).chunk());
        out->set_encoding(encoding);
        absl::ReaderMutexLock lock(&c.mu);
        out->set_version(c.version);
        EncodeFloats(encoding, c.values, out->mutable_data());
      }
      continue;
    }
    absl::MutexLock lock(&c.mu);
    const uint64_t pulled = req.grads(i).version();
    // A version from the future means this shard lost updates (a restart
    // without a checkpoint): the gradient is as fresh as it can be.
    const uint64_t staleness = c.version > pulled ? c.version - pulled : 0;
    rule.Apply(c.values.data(), grads[i].data(), c.slots.data(),
               c.values.size(), c.version + 1,
               CompensatedRate(compensation, rule.learning_rate(), staleness));
    ++c.version;
    updates_applied_.fetch_add(1, std::memory_order_relaxed);
    ack->set_version(c.version);
    ack->set_staleness(staleness);
    if (ticket.has_value()) window_.Record(*ticket, i, *ack, nullptr);
    if (values != nullptr) {
      v1::ChunkData* out = values->Add();
      out->set_tensor(req.grads(i).tensor());
      out->set_chunk(req.grads(i).chunk());
      out->set_encoding(encoding);
      out->set_version(c.version);
      EncodeFloats(encoding, c.values, out->mutable_data());
    }
  }
  if (ticket.has_value() && !ticket->replay()) window_.Finish(*ticket);
  return absl::OkStatus();
}

absl::Status ChunkStore::Push(const v1::PushRequest& req,
                              v1::PushResponse* resp, bool* replayed) {
  return ApplyGradients(req, resp->mutable_acks(), nullptr,
                        v1::ENCODING_UNSPECIFIED, replayed);
}

absl::Status ChunkStore::PushPull(const v1::PushRequest& req,
                                  v1::PushPullResponse* resp, bool* replayed) {
  return ApplyGradients(req, resp->mutable_acks(), resp->mutable_chunks(),
                        req.return_encoding(), replayed);
}

absl::Status ChunkStore::Exchange(const v1::ExchangeRequest& req,
                                  v1::ExchangeResponse* resp, bool* replayed) {
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
  std::vector<std::vector<float>> scratch(req.params_size());
  for (int i = 0; i < req.params_size(); ++i) {
    PSKIT_ASSIGN_OR_RETURN(params[i],
                           DecodeChunk(req.params(i), r.targets[i].length,
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
  std::vector<float> diff;
  resp->mutable_diffs()->Reserve(req.params_size());
  for (int i = 0; i < req.params_size(); ++i) {
    v1::ChunkData* out = resp->add_diffs();
    v1::ChunkAck first;
    if (ticket.has_value() && ticket->Applied(i, &first, out)) {
      continue;  // an earlier copy's diff: the centre moved by it once
    }
    Chunk& c = *r.targets[i].chunk;
    const size_t n = r.targets[i].length;
    diff.resize(n);
    out->set_tensor(req.params(i).tensor());
    out->set_chunk(req.params(i).chunk());
    out->set_encoding(req.params(i).encoding());
    {
      absl::MutexLock lock(&c.mu);
      float* __restrict centre = c.values.data();
      const float* __restrict x = params[i].data();
      float* __restrict e = diff.data();
      for (size_t j = 0; j < n; ++j) {
        e[j] = alpha * (x[j] - centre[j]);
        centre[j] += e[j];
      }
      out->set_version(++c.version);
      if (ticket.has_value()) {
        // Recorded under the chunk's lock, with the diff: a checkpoint
        // that holds this update also holds what was answered for it.
        EncodeFloats(req.params(i).encoding(), diff, out->mutable_data());
        v1::ChunkAck ack;
        ack.set_version(out->version());
        window_.Record(*ticket, i, ack, out);
      }
    }
    updates_applied_.fetch_add(1, std::memory_order_relaxed);
    if (!ticket.has_value()) {
      EncodeFloats(req.params(i).encoding(), diff, out->mutable_data());
    }
  }
  if (ticket.has_value() && !ticket->replay()) window_.Finish(*ticket);
  return absl::OkStatus();
}

}  // namespace pskit
