#include "server/chunk_store.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/encoding.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "google/protobuf/util/message_differencer.h"
#include "common/initializer.h"

namespace pskit {

struct ChunkStore::Chunk {
  Chunk(std::vector<float> initial, int num_slots, float slot_value)
      : values(std::move(initial)),
        slots(values.size() * num_slots, slot_value) {}
  Chunk(std::vector<float> v, std::vector<float> s, uint64_t ver)
      : values(std::move(v)), slots(std::move(s)), version(ver) {}
  absl::Mutex mu;
  std::vector<float> values ABSL_GUARDED_BY(mu);
  std::vector<float> slots ABSL_GUARDED_BY(mu);  // slot after slot
  uint64_t version ABSL_GUARDED_BY(mu) = 0;
};

// Constant once inserted into a Namespace.
struct ChunkStore::Tensor {
  v1::TensorSpec spec;
  uint64_t numel = 0;
  std::vector<ChunkSpan> spans;                // every chunk of the tensor
  std::vector<std::unique_ptr<Chunk>> chunks;  // null: held by another shard
};

struct ChunkStore::Namespace {
  // Guarded by ChunkStore::index_mu_: requests read them holding it shared;
  // SetConfig replaces them holding it exclusively.
  v1::NamespaceConfig config;
  std::unique_ptr<const UpdateRule> rule;
  // The config of the first Declare; SetConfig leaves it, so a worker that
  // declares the model again with its own flags is still accepted.
  v1::NamespaceConfig declared_config;
  // Guarded by ChunkStore::index_mu_ (insertions only; never erased).
  absl::flat_hash_map<std::string, std::unique_ptr<Tensor>> tensors;
  // The evaluator's latest report; `done` never goes back to false.
  mutable absl::Mutex eval_mu;
  v1::Evaluation evaluation ABSL_GUARDED_BY(eval_mu);
  bool has_evaluation ABSL_GUARDED_BY(eval_mu) = false;
};

// A chunk a request names, found and checked.
struct ChunkStore::Target {
  Chunk* chunk;
  uint64_t length;
};

struct ChunkStore::Resolved {
  const Namespace* ns;
  std::vector<Target> targets;
};

namespace {

std::string NamespaceOf(const std::string& ns) {
  return ns.empty() ? std::string(kDefaultNamespace) : ns;
}

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
                       uint64_t max_memory_bytes)
    : layout_(layout),
      shard_index_(shard_index),
      allow_nonfinite_(allow_nonfinite),
      max_message_bytes_(max_message_bytes),
      max_memory_bytes_(max_memory_bytes) {}

ChunkStore::~ChunkStore() = default;

absl::Status ChunkStore::Declare(const v1::DeclareRequest& req,
                                 v1::DeclareResponse* resp) {
  const std::string ns = NamespaceOf(req.namespace_());
  PSKIT_RETURN_IF_ERROR(ValidateName("namespace", ns));
  PSKIT_RETURN_IF_ERROR(
      CheckLayout(req.layout(), req.has_layout(), layout_, shard_index_));
  if (req.tensors().empty()) {
    return absl::InvalidArgumentError(
        "Declare carries no tensors; send every tensor of the model");
  }
  PSKIT_ASSIGN_OR_RETURN(v1::NamespaceConfig config,
                         NormalizeConfig(req.config()));

  // Check every spec and the explicit values before touching anything.
  absl::flat_hash_map<std::string, const v1::TensorSpec*> specs;
  absl::flat_hash_map<std::string, uint64_t> numels;
  for (const v1::TensorSpec& spec : req.tensors()) {
    PSKIT_RETURN_IF_ERROR(ValidateName("tensor name", spec.name()));
    PSKIT_ASSIGN_OR_RETURN(uint64_t numel,
                           NumElements(spec, layout_.MaxTensorElems()));
    PSKIT_RETURN_IF_ERROR(ValidateInitializer(spec));
    if (!specs.emplace(spec.name(), &spec).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", spec.name(), "' appears twice in one Declare"));
    }
    numels[spec.name()] = numel;
  }
  // Explicit values: exactly the chunks of INIT_EXPLICIT tensors held here.
  absl::flat_hash_map<std::pair<std::string, uint32_t>, const v1::ChunkData*>
      explicit_values;
  for (const v1::ChunkData& c : req.initial_values()) {
    auto it = specs.find(c.tensor());
    if (it == specs.end() || it->second->init().kind() != v1::INIT_EXPLICIT) {
      return absl::InvalidArgumentError(absl::StrCat(
          "initial values sent for ", ChunkName(c.tensor(), c.chunk()),
          ", which is not declared with INIT_EXPLICIT in this request"));
    }
    const uint64_t numel = numels[c.tensor()];
    if (c.chunk() >= layout_.NumChunks(numel)) {
      return absl::OutOfRangeError(absl::StrCat(
          ChunkName(c.tensor(), c.chunk()), " does not exist: the tensor has ",
          layout_.NumChunks(numel), " chunks with ", layout_.ToString()));
    }
    const ChunkSpan span = layout_.Chunk(ns, c.tensor(), numel, c.chunk());
    if (span.shard != shard_index_) {
      return absl::FailedPreconditionError(absl::StrCat(
          ChunkName(c.tensor(), c.chunk()), " belongs to shard ", span.shard,
          ", not to this shard ", shard_index_, " (", layout_.ToString(), ")"));
    }
    if (!explicit_values.emplace(std::make_pair(c.tensor(), c.chunk()), &c)
             .second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "initial values for ", ChunkName(c.tensor(), c.chunk()),
          " appear twice"));
    }
  }

  // Which tensors are new, and does anything clash with what is declared?
  std::vector<const v1::TensorSpec*> fresh;
  bool namespace_exists = false;
  auto check_existing = [&]() ABSL_SHARED_LOCKS_REQUIRED(index_mu_)
                            -> absl::Status {
    fresh.clear();
    auto it = namespaces_.find(ns);
    namespace_exists = it != namespaces_.end();
    if (!namespace_exists) {
      for (const v1::TensorSpec& spec : req.tensors()) fresh.push_back(&spec);
      return absl::OkStatus();
    }
    const Namespace& existing = *it->second;
    if (!google::protobuf::util::MessageDifferencer::Equals(existing.config,
                                                            config) &&
        !google::protobuf::util::MessageDifferencer::Equals(
            existing.declared_config, config)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "namespace '", ns, "' is declared with ",
          DescribeConfig(existing.config), "; this Declare asks for ",
          DescribeConfig(config),
          ". Use the same config, or another namespace"));
    }
    for (const v1::TensorSpec& spec : req.tensors()) {
      auto t = existing.tensors.find(spec.name());
      if (t == existing.tensors.end()) {
        fresh.push_back(&spec);
        continue;
      }
      if (!std::equal(t->second->spec.shape().begin(),
                      t->second->spec.shape().end(), spec.shape().begin(),
                      spec.shape().end())) {
        return absl::FailedPreconditionError(absl::StrCat(
            "tensor '", spec.name(), "' in namespace '", ns,
            "' is declared with shape ", ShapeString(t->second->spec.shape()),
            "; this Declare asks for ", ShapeString(spec.shape())));
      }
    }
    return absl::OkStatus();
  };
  // What the new tensors take here: values and optimizer slots of the
  // chunks this shard holds.
  std::unique_ptr<const UpdateRule> rule = UpdateRule::Create(config.optimizer());
  const uint64_t floats_per_element = 1 + static_cast<uint64_t>(rule->num_slots());
  auto needed_bytes = [&]() {
    uint64_t bytes = 0;
    for (const v1::TensorSpec* spec : fresh) {
      const uint64_t numel = numels[spec->name()];
      const uint64_t k = layout_.NumChunks(numel);
      // Chunk i is here when (first + i) mod S == shard_index: count them.
      const uint32_t first = layout_.Chunk(ns, spec->name(), numel, 0).shard;
      const uint64_t s = layout_.num_shards();
      const uint64_t skip = (shard_index_ + s - first) % s;
      if (skip >= k) continue;
      // Chunks below numel % k are one element longer (common/layout.h).
      const uint64_t count = (k - skip + s - 1) / s;
      const uint64_t rem = numel % k;
      const uint64_t longer = rem > skip ? (rem - skip + s - 1) / s : 0;
      bytes += (count * (numel / k) + longer) * 4 * floats_per_element;
    }
    return bytes;
  };
  auto check_memory = [&]() ABSL_SHARED_LOCKS_REQUIRED(index_mu_)
                          -> absl::Status {
    const uint64_t need = needed_bytes();
    if (bytes_held_ + need <= max_memory_bytes_) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrCat(
        "Declare of namespace '", ns, "' needs ", need >> 20, " MiB on shard ",
        shard_index_, " for values and optimizer slots; the shard holds ",
        bytes_held_ >> 20, " MiB of its ", max_memory_bytes_ >> 20,
        " MiB limit (ps-server --max_memory_mib). Use more shards or raise "
        "the limit"));
  };
  {
    absl::ReaderMutexLock lock(&index_mu_);
    PSKIT_RETURN_IF_ERROR(check_existing());
    PSKIT_RETURN_IF_ERROR(check_memory());
  }

  // Build the new tensors without holding the index: filling a large
  // tensor's values must not stall pulls and pushes.
  std::vector<float> scratch;
  std::vector<std::unique_ptr<Tensor>> built;
  for (const v1::TensorSpec* spec : fresh) {
    auto t = std::make_unique<Tensor>();
    t->spec = *spec;
    t->numel = numels[spec->name()];
    t->spans = layout_.Chunks(ns, spec->name(), t->numel);
    t->chunks.resize(t->spans.size());
    for (const ChunkSpan& span : t->spans) {
      if (span.shard != shard_index_) continue;
      std::vector<float> values(span.length);
      if (spec->init().kind() == v1::INIT_EXPLICIT) {
        auto it = explicit_values.find(std::make_pair(spec->name(), span.index));
        if (it == explicit_values.end()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "tensor '", spec->name(), "' is INIT_EXPLICIT but its chunk ",
              span.index, " (held by this shard) has no initial values"));
        }
        PSKIT_ASSIGN_OR_RETURN(
            absl::Span<const float> v,
            DecodeChunk(*it->second, span.length, allow_nonfinite_, &scratch));
        std::copy(v.begin(), v.end(), values.begin());
      } else {
        FillInitialValues(ns, *spec, span.offset, absl::MakeSpan(values));
      }
      t->chunks[span.index] = std::make_unique<Chunk>(
          std::move(values), rule->num_slots(), rule->initial_slot_value());
    }
    built.push_back(std::move(t));
  }

  uint32_t held = 0;
  {
    absl::MutexLock lock(&index_mu_);
    // Another Declare may have run meanwhile: check again, then insert what
    // is still missing. Nothing is inserted if anything clashes.
    PSKIT_RETURN_IF_ERROR(check_existing());
    PSKIT_RETURN_IF_ERROR(check_memory());
    Namespace* target;
    if (!namespace_exists) {
      auto fresh_ns = std::make_unique<Namespace>();
      fresh_ns->config = config;
      fresh_ns->declared_config = config;
      fresh_ns->rule = std::move(rule);
      target = fresh_ns.get();
      namespaces_.emplace(ns, std::move(fresh_ns));
    } else {
      target = namespaces_[ns].get();
    }
    for (auto& t : built) {
      std::string name = t->spec.name();
      uint64_t bytes = 0;
      for (const ChunkSpan& span : t->spans) {
        if (span.shard == shard_index_) {
          bytes += span.length * 4 * floats_per_element;
        }
      }
      if (target->tensors.try_emplace(name, std::move(t)).second) {
        bytes_held_ += bytes;
      }
    }
    for (const v1::TensorSpec& spec : req.tensors()) {
      const Tensor& t = *target->tensors[spec.name()];
      for (const auto& c : t.chunks) held += c != nullptr;
    }
    // The config in force, which SetConfig may have changed since.
    *resp->mutable_config() = target->config;
  }
  resp->set_chunks_held(held);
  return absl::OkStatus();
}

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
    v1::Encoding encoding) {
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
  const UpdateRule& rule = *r.ns->rule;
  const v1::Compensation compensation = r.ns->config.compensation();
  acks->Reserve(req.grads_size());
  if (values != nullptr) values->Reserve(req.grads_size());
  for (int i = 0; i < req.grads_size(); ++i) {
    Chunk& c = *r.targets[i].chunk;
    v1::ChunkAck* ack = acks->Add();
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
    if (values != nullptr) {
      v1::ChunkData* out = values->Add();
      out->set_tensor(req.grads(i).tensor());
      out->set_chunk(req.grads(i).chunk());
      out->set_encoding(encoding);
      out->set_version(c.version);
      EncodeFloats(encoding, c.values, out->mutable_data());
    }
  }
  return absl::OkStatus();
}

absl::Status ChunkStore::Push(const v1::PushRequest& req,
                              v1::PushResponse* resp) {
  return ApplyGradients(req, resp->mutable_acks(), nullptr,
                        v1::ENCODING_UNSPECIFIED);
}

absl::Status ChunkStore::PushPull(const v1::PushRequest& req,
                                  v1::PushPullResponse* resp) {
  return ApplyGradients(req, resp->mutable_acks(), resp->mutable_chunks(),
                        req.return_encoding());
}

absl::Status ChunkStore::Exchange(const v1::ExchangeRequest& req,
                                  v1::ExchangeResponse* resp) {
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
  const float alpha = req.alpha();
  std::vector<float> diff;
  resp->mutable_diffs()->Reserve(req.params_size());
  for (int i = 0; i < req.params_size(); ++i) {
    Chunk& c = *r.targets[i].chunk;
    const size_t n = r.targets[i].length;
    diff.resize(n);
    uint64_t version;
    {
      absl::MutexLock lock(&c.mu);
      float* __restrict centre = c.values.data();
      const float* __restrict x = params[i].data();
      float* __restrict e = diff.data();
      for (size_t j = 0; j < n; ++j) {
        e[j] = alpha * (x[j] - centre[j]);
        centre[j] += e[j];
      }
      version = ++c.version;
    }
    updates_applied_.fetch_add(1, std::memory_order_relaxed);
    v1::ChunkData* out = resp->add_diffs();
    out->set_version(version);
    out->set_tensor(req.params(i).tensor());
    out->set_chunk(req.params(i).chunk());
    out->set_encoding(req.params(i).encoding());
    EncodeFloats(req.params(i).encoding(), diff, out->mutable_data());
  }
  return absl::OkStatus();
}

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
      }
    }
  }
  return out;
}

absl::Status ChunkStore::Replace(const ShardSnapshot& snapshot) {
  // Build the whole new state first; nothing changes until the swap.
  absl::flat_hash_map<std::string, std::unique_ptr<Namespace>> built;
  uint64_t bytes = 0;
  for (const v1::NamespaceRecord& record : snapshot.namespaces) {
    auto ns = std::make_unique<Namespace>();
    PSKIT_ASSIGN_OR_RETURN(ns->config, NormalizeConfig(record.config()));
    ns->rule = UpdateRule::Create(ns->config.optimizer());
    if (record.has_declared_config()) {
      PSKIT_ASSIGN_OR_RETURN(ns->declared_config,
                             NormalizeConfig(record.declared_config()));
    } else {
      ns->declared_config = ns->config;
    }
    if (record.has_last_evaluation()) {
      absl::MutexLock lock(&ns->eval_mu);
      ns->evaluation = record.last_evaluation();
      ns->has_evaluation = true;
    }
    for (const v1::TensorSpec& spec : record.tensors()) {
      auto t = std::make_unique<Tensor>();
      t->spec = spec;
      PSKIT_ASSIGN_OR_RETURN(t->numel,
                             NumElements(spec, layout_.MaxTensorElems()));
      t->spans = layout_.Chunks(record.name(), spec.name(), t->numel);
      t->chunks.resize(t->spans.size());
      ns->tensors.emplace(spec.name(), std::move(t));
    }
    if (!built.emplace(record.name(), std::move(ns)).second) {
      return absl::DataLossError(absl::StrCat(
          "the checkpoint holds namespace '", record.name(), "' twice"));
    }
  }
  for (const v1::ChunkRecord& record : snapshot.chunks) {
    const std::string where = absl::StrCat(
        "checkpoint chunk ", record.namespace_(), "/",
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
    tensor.chunks[record.chunk()] = std::make_unique<Chunk>(
        std::move(values), std::move(slots), record.version());
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
  {
    absl::MutexLock lock(&index_mu_);
    namespaces_.swap(built);
    bytes_held_ = bytes;
    updates_applied_.store(snapshot.updates_applied);
  }
  // `built` now holds the old state; it is freed here, outside the lock.
  return absl::OkStatus();
}

void ChunkStore::Describe(v1::StatusResponse* out) const {
  out->set_shard_index(shard_index_);
  out->set_num_shards(layout_.num_shards());
  out->set_chunk_elems(layout_.chunk_elems());
  out->set_updates_applied(updates_applied_.load());
  out->set_draining(draining_.load());
  absl::ReaderMutexLock index_lock(&index_mu_);
  for (const auto& [name, ns] : namespaces_) {
    v1::NamespaceStatus* n = out->add_namespaces();
    n->set_name(name);
    *n->mutable_config() = ns->config;
    {
      absl::MutexLock lock(&ns->eval_mu);
      if (ns->has_evaluation) *n->mutable_last_evaluation() = ns->evaluation;
    }
    for (const auto& [tensor_name, t] : ns->tensors) {
      v1::TensorStatus* ts = n->add_tensors();
      ts->set_name(tensor_name);
      *ts->mutable_shape() = t->spec.shape();
      for (size_t i = 0; i < t->chunks.size(); ++i) {
        Chunk* c = t->chunks[i].get();
        if (c == nullptr) continue;
        ts->set_chunks_here(ts->chunks_here() + 1);
        ts->set_elements_here(ts->elements_here() + t->spans[i].length);
        absl::ReaderMutexLock lock(&c->mu);
        ts->set_max_version(std::max(ts->max_version(), c->version));
      }
    }
  }
}

absl::Status ChunkStore::ReportEvaluation(
    const v1::ReportEvaluationRequest& req) {
  const std::string ns = NamespaceOf(req.namespace_());
  const v1::Evaluation& e = req.evaluation();
  if (!std::isfinite(e.loss()) || !(e.accuracy() >= 0 && e.accuracy() <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "evaluation of namespace '", ns, "' has loss ", e.loss(),
        " and accuracy ", e.accuracy(),
        "; the loss must be finite and the accuracy in [0, 1]"));
  }
  absl::ReaderMutexLock index_lock(&index_mu_);
  auto it = namespaces_.find(ns);
  if (it == namespaces_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "namespace '", ns, "' is not declared on shard ", shard_index_));
  }
  Namespace& n = *it->second;
  absl::MutexLock lock(&n.eval_mu);
  const bool was_done = n.has_evaluation && n.evaluation.done();
  const std::string done_reason = was_done ? n.evaluation.reason() : "";
  n.evaluation = e;
  if (was_done && !e.done()) {
    // A job once ended stays ended, and says why (an evaluator that goes on
    // after a Drain must not erase the drain's reason).
    n.evaluation.set_done(true);
    n.evaluation.set_reason(done_reason);
  }
  n.has_evaluation = true;
  return absl::OkStatus();
}

bool ChunkStore::JobDone(const std::string& ns_field) const {
  const std::string ns = NamespaceOf(ns_field);
  absl::ReaderMutexLock index_lock(&index_mu_);
  auto it = namespaces_.find(ns);
  if (it == namespaces_.end()) return false;
  absl::MutexLock lock(&it->second->eval_mu);
  return it->second->has_evaluation && it->second->evaluation.done();
}

absl::Status ChunkStore::SetConfig(const v1::SetConfigRequest& req,
                                   v1::SetConfigResponse* resp) {
  const std::string ns = NamespaceOf(req.namespace_());
  PSKIT_RETURN_IF_ERROR(ValidateName("namespace", ns));
  const v1::OptimizerConfig& change = req.optimizer();
  if (!v1::OptimizerKind_IsValid(change.kind())) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer kind ", static_cast<int>(change.kind()),
                     " is not known; leave it unset to keep the namespace's"));
  }
  // Exclusive: pushes read the config and the rule holding it shared, so
  // none runs with half a change. Bounded: no request holds it for long.
  absl::MutexLock index_lock(&index_mu_);
  auto it = namespaces_.find(ns);
  if (it == namespaces_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "namespace '", ns, "' is not declared on shard ", shard_index_));
  }
  Namespace& n = *it->second;
  const v1::OptimizerConfig& now = n.config.optimizer();
  if (change.kind() != v1::OPTIMIZER_UNSPECIFIED &&
      change.kind() != now.kind()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "namespace '", ns, "' uses ", v1::OptimizerKind_Name(now.kind()),
        "; it cannot change to ", v1::OptimizerKind_Name(change.kind()),
        " while it holds that optimizer's slots. Declare a new namespace "
        "for another optimizer"));
  }
  if (change.has_initial_accumulator() &&
      change.initial_accumulator() != now.initial_accumulator()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "namespace '", ns, "' has initial_accumulator ",
        now.initial_accumulator(),
        "; it only sets adagrad's slots when a tensor is declared, so it "
        "cannot change afterwards"));
  }
  {  // A setting the optimizer never reads would change nothing: refuse it.
    const std::vector<std::string> used = FieldsUsedBy(now.kind());
    std::vector<const google::protobuf::FieldDescriptor*> given;
    change.GetReflection()->ListFields(change, &given);
    for (const google::protobuf::FieldDescriptor* f : given) {
      if (f->name() == "kind") continue;
      if (std::find(used.begin(), used.end(), f->name()) == used.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "namespace '", ns, "' uses ", v1::OptimizerKind_Name(now.kind()),
            ", which has no '", f->name(), "'; it takes ",
            absl::StrJoin(used, ", ")));
      }
    }
  }
  v1::NamespaceConfig merged = n.config;
  v1::OptimizerConfig* o = merged.mutable_optimizer();
  if (change.has_learning_rate()) o->set_learning_rate(change.learning_rate());
  if (change.has_momentum()) o->set_momentum(change.momentum());
  if (change.has_beta1()) o->set_beta1(change.beta1());
  if (change.has_beta2()) o->set_beta2(change.beta2());
  if (change.has_epsilon()) o->set_epsilon(change.epsilon());
  if (change.has_weight_decay()) o->set_weight_decay(change.weight_decay());
  if (change.has_rho()) o->set_rho(change.rho());
  if (req.compensation() != v1::COMPENSATION_UNSPECIFIED) {
    merged.set_compensation(req.compensation());
  }
  absl::StatusOr<v1::NamespaceConfig> normalized = NormalizeConfig(merged);
  if (!normalized.ok()) {
    return absl::Status(
        normalized.status().code(),
        absl::StrCat("namespace '", ns, "' keeps ", DescribeConfig(n.config),
                     ": ", normalized.status().message()));
  }
  *resp->mutable_previous() = n.config;
  *resp->mutable_config() = *normalized;
  n.rule = UpdateRule::Create(normalized->optimizer());
  n.config = *std::move(normalized);
  return absl::OkStatus();
}

std::vector<std::string> ChunkStore::Drain(const std::string& reason,
                                           int64_t time_unix_ms) {
  draining_.store(true);
  std::vector<std::string> ended;
  absl::ReaderMutexLock index_lock(&index_mu_);
  for (const auto& [name, ns] : namespaces_) {
    absl::MutexLock lock(&ns->eval_mu);
    if (!ns->has_evaluation) {
      ns->evaluation = v1::Evaluation();
      ns->evaluation.set_time_unix_ms(time_unix_ms);
      ns->has_evaluation = true;
    }
    if (!ns->evaluation.done()) {
      ns->evaluation.set_done(true);
      ns->evaluation.set_reason(reason);
    }
    ended.push_back(name);
  }
  std::sort(ended.begin(), ended.end());
  return ended;
}

}  // namespace pskit
