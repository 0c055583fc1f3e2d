// server/chunk_store_declare.cc
//
// ChunkStore::Declare and its steps: check the request, check it against
// the store, build the new tensors outside the index lock, insert them.
//
// Thread safety: see server/chunk_store.h; each step states the lock it
// needs there.
#include "server/chunk_store.h"

#include <algorithm>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/encoding.h"
#include "common/initializer.h"
#include "common/optimizer_config.h"
#include "common/staleness_config.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/chunk_store_internal.h"

namespace pskit {
namespace {

using chunk_store_internal::DeclarePlan;
using chunk_store_internal::NumElements;
using chunk_store_internal::ShapeString;

// Checks every spec's name, shape and initializer, and that no name
// repeats; fills plan->specs and plan->numels.
absl::Status IndexSpecs(const v1::DeclareRequest& req, const Layout& layout,
                        DeclarePlan* plan) {
  for (const v1::TensorSpec& spec : req.tensors()) {
    PSKIT_RETURN_IF_ERROR(ValidateName("tensor name", spec.name()));
    PSKIT_ASSIGN_OR_RETURN(uint64_t numel,
                           NumElements(spec, layout.MaxTensorElems()));
    PSKIT_RETURN_IF_ERROR(ValidateInitializer(spec));
    if (!plan->specs.emplace(spec.name(), &spec).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", Quoted(spec.name()), " appears twice in one Declare"));
    }
    plan->numels[spec.name()] = numel;
  }
  return absl::OkStatus();
}

// Checks that the explicit values name exactly chunks of INIT_EXPLICIT
// tensors held by shard `shard`, each once; fills plan->explicit_values.
// Needs IndexSpecs first.
absl::Status IndexExplicitValues(const v1::DeclareRequest& req,
                                 const Layout& layout, uint32_t shard,
                                 DeclarePlan* plan) {
  for (const v1::ChunkData& c : req.initial_values()) {
    auto it = plan->specs.find(c.tensor());
    if (it == plan->specs.end() ||
        it->second->init().kind() != v1::INIT_EXPLICIT) {
      return absl::InvalidArgumentError(absl::StrCat(
          "initial values sent for ", ChunkName(c.tensor(), c.chunk()),
          ", which is not declared with INIT_EXPLICIT in this request"));
    }
    const uint64_t numel = plan->numels[c.tensor()];
    if (c.chunk() >= layout.NumChunks(numel)) {
      return absl::OutOfRangeError(absl::StrCat(
          ChunkName(c.tensor(), c.chunk()), " does not exist: the tensor has ",
          layout.NumChunks(numel), " chunks with ", layout.ToString()));
    }
    const ChunkSpan span = layout.Chunk(plan->ns, c.tensor(), numel, c.chunk());
    if (span.shard != shard) {
      return absl::FailedPreconditionError(absl::StrCat(
          ChunkName(c.tensor(), c.chunk()), " belongs to shard ", span.shard,
          ", not to this shard ", shard, " (", layout.ToString(), ")"));
    }
    if (!plan->explicit_values
             .emplace(std::make_pair(c.tensor(), c.chunk()), &c)
             .second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "initial values for ", ChunkName(c.tensor(), c.chunk()),
          " appear twice"));
    }
  }
  return absl::OkStatus();
}

// The values of chunk `span` of new tensor `spec`: the request's explicit
// values, or the initializer's. INVALID_ARGUMENT when an INIT_EXPLICIT chunk
// held here has no values or they do not decode.
absl::StatusOr<std::vector<float>> InitialValues(const DeclarePlan& plan,
                                                 const v1::TensorSpec& spec,
                                                 const ChunkSpan& span,
                                                 bool allow_nonfinite,
                                                 std::vector<float>* scratch) {
  std::vector<float> values(span.length);
  if (spec.init().kind() != v1::INIT_EXPLICIT) {
    FillInitialValues(plan.ns, spec, span.offset, absl::MakeSpan(values));
    return values;
  }
  auto it = plan.explicit_values.find(std::make_pair(spec.name(), span.index));
  if (it == plan.explicit_values.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", Quoted(spec.name()), " is INIT_EXPLICIT but its chunk ",
        span.index, " (held by this shard) has no initial values"));
  }
  PSKIT_ASSIGN_OR_RETURN(
      absl::Span<const float> v,
      DecodeChunk(*it->second, span.length, allow_nonfinite, scratch));
  std::copy(v.begin(), v.end(), values.begin());
  return values;
}

}  // namespace

absl::Status ChunkStore::Declare(const v1::DeclareRequest& req,
                                 v1::DeclareResponse* resp) {
  PSKIT_ASSIGN_OR_RETURN(DeclarePlan plan, PlanDeclare(req));
  {
    absl::ReaderMutexLock lock(&index_mu_);
    PSKIT_RETURN_IF_ERROR(CheckDeclare(req, &plan));
  }
  // Build the new tensors without holding the index: filling a large
  // tensor's values must not stall pulls and pushes. Another Declare may
  // run meanwhile (then fewer tensors are missing), or a DropNamespace (then
  // more are: build again, a bounded number of times).
  for (int attempt = 0;; ++attempt) {
    PSKIT_ASSIGN_OR_RETURN(std::vector<std::unique_ptr<Tensor>> built,
                           BuildTensors(plan));
    absl::flat_hash_set<std::string> names;
    for (const auto& t : built) names.insert(t->spec.name());
    {
      absl::MutexLock lock(&index_mu_);
      // Check again, then insert what is still missing. Nothing is inserted
      // if anything clashes.
      PSKIT_RETURN_IF_ERROR(CheckDeclare(req, &plan));
      const bool all_built = absl::c_all_of(
          plan.fresh, [&](const v1::TensorSpec* spec) {
            return names.contains(spec->name());
          });
      if (all_built) {
        resp->set_chunks_held(
            InsertDeclared(req, &plan, std::move(built), resp));
        return absl::OkStatus();
      }
    }
    if (attempt == 2) {
      return absl::AbortedError(absl::StrCat(
          "namespace ", Quoted(plan.ns),
          " was dropped on shard ", shard_index_,
          " while this Declare built it, three times over: declare again"));
    }
  }
}

absl::StatusOr<DeclarePlan> ChunkStore::PlanDeclare(
    const v1::DeclareRequest& req) const {
  DeclarePlan plan;
  plan.ns = NamespaceOf(req.namespace_());
  PSKIT_RETURN_IF_ERROR(ValidateName("namespace", plan.ns));
  PSKIT_RETURN_IF_ERROR(
      CheckLayout(req.layout(), req.has_layout(), layout_, shard_index_));
  if (req.tensors().empty()) {
    return absl::InvalidArgumentError(
        "Declare carries no tensors; send every tensor of the model");
  }
  absl::StatusOr<v1::NamespaceConfig> config = NormalizeConfig(req.config());
  absl::Status used = config.ok()
                          ? CheckSettingsUsed(req.config().optimizer(),
                                              config->optimizer().kind())
                          : config.status();
  if (used.ok()) {
    used = CheckStalenessSettingsUsed(req.config().staleness(),
                                      config->compensation(),
                                      config->consistency());
  }
  if (!used.ok()) {
    return absl::Status(used.code(),
                        absl::StrCat("Declare of namespace ", Quoted(plan.ns),
                                     ": ", used.message()));
  }
  plan.config = *std::move(config);
  PSKIT_RETURN_IF_ERROR(IndexSpecs(req, layout_, &plan));
  PSKIT_RETURN_IF_ERROR(
      IndexExplicitValues(req, layout_, shard_index_, &plan));
  plan.rule = UpdateRule::Create(plan.config.optimizer());
  return plan;
}

absl::Status ChunkStore::CheckDeclare(const v1::DeclareRequest& req,
                                      DeclarePlan* plan) const {
  plan->fresh.clear();
  plan->needed_bytes = 0;
  auto it = namespaces_.find(plan->ns);
  plan->namespace_exists = it != namespaces_.end();
  if (!plan->namespace_exists) {
    for (const v1::TensorSpec& spec : req.tensors()) {
      plan->fresh.push_back(&spec);
    }
  } else {
    const Namespace& existing = *it->second;
    using google::protobuf::util::MessageDifferencer;
    if (!MessageDifferencer::Equals(existing.config, plan->config) &&
        !MessageDifferencer::Equals(existing.declared_config, plan->config)) {
      // Name only the fields that differ: whole configs side by side hide
      // the difference.
      std::string why = DiffConfigs(existing.declared_config, plan->config,
                                    "declared", "requested");
      if (!MessageDifferencer::Equals(existing.config,
                                      existing.declared_config)) {
        absl::StrAppend(
            &why,
            " (or, against the config SetConfig put in "
            "force since: ",
            DiffConfigs(existing.config, plan->config, "current", "requested"),
            ")");
      }
      return absl::FailedPreconditionError(
          absl::StrCat("namespace ", Quoted(plan->ns),
                       " is declared with another optimizer config: ", why,
                       ". Use the same config, or another namespace"));
    }
    for (const v1::TensorSpec& spec : req.tensors()) {
      auto t = existing.tensors.find(spec.name());
      if (t == existing.tensors.end()) {
        plan->fresh.push_back(&spec);
        continue;
      }
      if (!std::equal(t->second->spec.shape().begin(),
                      t->second->spec.shape().end(), spec.shape().begin(),
                      spec.shape().end())) {
        return absl::FailedPreconditionError(absl::StrCat(
            "tensor ", Quoted(spec.name()), " in namespace ", Quoted(plan->ns),
            " is declared with shape ", ShapeString(t->second->spec.shape()),
            "; this Declare asks for ", ShapeString(spec.shape())));
      }
    }
  }
  // What the new tensors take here: values and optimizer slots of the
  // chunks this shard holds.
  for (const v1::TensorSpec* spec : plan->fresh) {
    plan->needed_bytes += BytesHere(plan->ns, spec->name(),
                                    plan->numels.at(spec->name()),
                                    plan->rule->num_slots());
  }
  const uint64_t rule_state = rule_state_bytes_.load();
  if (bytes_held_ + rule_state + plan->needed_bytes <= max_memory_bytes_) {
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "Declare of namespace ", Quoted(plan->ns), " needs ",
      plan->needed_bytes >> 20, " MiB on shard ", shard_index_,
      " for values and optimizer slots; the shard holds ", bytes_held_ >> 20,
      " MiB of them and ", rule_state >> 20,
      " MiB of compensation state of its ", max_memory_bytes_ >> 20,
      " MiB limit (ps-server --max_memory_mib). Use more shards or raise "
      "the limit"));
}

absl::StatusOr<std::vector<std::unique_ptr<ChunkStore::Tensor>>>
ChunkStore::BuildTensors(const DeclarePlan& plan) const {
  std::vector<float> scratch;
  std::vector<std::unique_ptr<Tensor>> built;
  for (const v1::TensorSpec* spec : plan.fresh) {
    auto t = std::make_unique<Tensor>();
    t->spec = *spec;
    t->numel = plan.numels.at(spec->name());
    t->spans = layout_.Chunks(plan.ns, spec->name(), t->numel);
    t->chunks.resize(t->spans.size());
    for (const ChunkSpan& span : t->spans) {
      if (span.shard != shard_index_) continue;
      PSKIT_ASSIGN_OR_RETURN(
          std::vector<float> values,
          InitialValues(plan, *spec, span, allow_nonfinite_, &scratch));
      t->chunks[span.index] = std::make_unique<Chunk>(
          std::move(values), plan.rule->num_slots(),
          plan.rule->initial_slot_value());
    }
    built.push_back(std::move(t));
  }
  return built;
}

uint32_t ChunkStore::InsertDeclared(const v1::DeclareRequest& req,
                                    DeclarePlan* plan,
                                    std::vector<std::unique_ptr<Tensor>> built,
                                    v1::DeclareResponse* resp) {
  Namespace* target;
  if (!plan->namespace_exists) {
    auto fresh_ns = std::make_unique<Namespace>();
    fresh_ns->config = plan->config;
    NoteConsistency(plan->config);
    fresh_ns->declared_config = plan->config;
    fresh_ns->rule = std::move(plan->rule);
    fresh_ns->compensation = Compensation::Create(plan->config);
    target = fresh_ns.get();
    namespaces_.emplace(plan->ns, std::move(fresh_ns));
  } else {
    target = namespaces_[plan->ns].get();
  }
  const int num_slots = target->rule->num_slots();
  for (auto& t : built) {
    std::string name = t->spec.name();
    const uint64_t bytes = BytesHere(plan->ns, name, t->numel, num_slots);
    if (target->tensors.try_emplace(name, std::move(t)).second) {
      bytes_held_ += bytes;
    }
  }
  uint32_t held = 0;
  for (const v1::TensorSpec& spec : req.tensors()) {
    const Tensor& t = *target->tensors[spec.name()];
    for (const auto& c : t.chunks) held += c != nullptr;
  }
  // The config in force, which SetConfig may have changed since.
  *resp->mutable_config() = target->config;
  return held;
}

uint64_t ChunkStore::BytesHere(const std::string& ns, const std::string& tensor,
                               uint64_t numel, int num_slots) const {
  return layout_.ElementsOnShard(ns, tensor, numel, shard_index_) *
         sizeof(float) * (1 + static_cast<uint64_t>(num_slots));
}

}  // namespace pskit
