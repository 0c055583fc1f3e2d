// server/chunk_store_job.cc
//
// ChunkStore's per-namespace job state: the evaluator's reports
// (ReportEvaluation, JobDone) and their history, live hyper-parameters
// (SetConfig), Drain, dropping a namespace (DropNamespace), and the
// read-only view for the Admin Status call (Describe).
//
// Thread safety: see server/chunk_store.h.
#include "server/chunk_store.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/optimizer_config.h"
#include "common/staleness_config.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "server/chunk_store_internal.h"

namespace pskit {


void ChunkStore::Describe(v1::StatusResponse* out, bool evaluations) const {
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
      if (evaluations) {
        n->mutable_evaluations()->Reserve(
            static_cast<int>(ns->history.size()));
        for (const v1::Evaluation& e : ns->history) *n->add_evaluations() = e;
      }
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
  // By name, so every answer (and psctl's table) lists them in one order.
  std::sort(out->mutable_namespaces()->begin(),
            out->mutable_namespaces()->end(),
            [](const v1::NamespaceStatus& a, const v1::NamespaceStatus& b) {
              return a.name() < b.name();
            });
}

absl::Status ChunkStore::ReportEvaluation(
    const v1::ReportEvaluationRequest& req) {
  const std::string ns = NamespaceOf(req.namespace_());
  const v1::Evaluation& e = req.evaluation();
  if (!std::isfinite(e.loss()) || !(e.accuracy() >= 0 && e.accuracy() <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("evaluation of namespace ", Quoted(ns), " has loss ",
                     e.loss(), " and accuracy ", e.accuracy(),
                     "; the loss must be finite and the accuracy in [0, 1]"));
  }
  absl::ReaderMutexLock index_lock(&index_mu_);
  auto it = namespaces_.find(ns);
  if (it == namespaces_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "namespace ", Quoted(ns), " is not declared on shard ", shard_index_));
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
  n.history.push_back(n.evaluation);
  while (n.history.size() > kMaxEvaluations) n.history.pop_front();
  return absl::OkStatus();
}

absl::Status ChunkStore::DropNamespace(const std::string& ns,
                                       v1::DropNamespaceResponse* resp) {
  if (ns.empty()) {
    return absl::InvalidArgumentError(
        "DropNamespace needs a namespace name; \"\" does not mean "
        "\"default\" here: name the namespace to delete");
  }
  PSKIT_RETURN_IF_ERROR(ValidateName("namespace", ns));
  std::unique_ptr<Namespace> dropped;
  uint32_t chunks = 0;
  uint64_t elements = 0;
  {
    // Exclusive: every request holds index_mu_ shared for its whole run, so
    // none is in flight on the namespace while it goes, and later ones do
    // not find it (NOT_FOUND, as for a namespace never declared).
    absl::MutexLock index_lock(&index_mu_);
    auto it = namespaces_.find(ns);
    if (it == namespaces_.end()) {
      return absl::NotFoundError(absl::StrCat(
          "namespace ", Quoted(ns), " is not declared on shard ", shard_index_,
          " (never declared, or dropped already)"));
    }
    uint64_t bytes = 0;
    uint64_t rule_bytes = 0;
    const int num_slots = it->second->rule->num_slots();
    for (const auto& [tensor_name, t] : it->second->tensors) {
      bytes += BytesHere(ns, tensor_name, t->numel, num_slots);
      for (size_t i = 0; i < t->chunks.size(); ++i) {
        Chunk* c = t->chunks[i].get();
        if (c == nullptr) continue;
        ++chunks;
        elements += t->spans[i].length;
        absl::MutexLock lock(&c->mu);
        for (const auto& [id, state] : c->worker_state) {
          rule_bytes += state.size() * sizeof(float);
        }
        rule_bytes += c->shared_state.size() * sizeof(float);
      }
    }
    dropped = std::move(it->second);
    namespaces_.erase(it);
    bytes_held_ -= std::min(bytes_held_, bytes);
    rule_state_bytes_.fetch_sub(rule_bytes);
    // No call is in flight (each holds index_mu_ shared): the window's
    // records of the namespace's calls can all go.
    window_.DropNamespace(ns);
  }
  // Freed here, outside the lock: a large namespace's values must not stall
  // the other namespaces' requests.
  dropped.reset();
  resp->set_chunks_freed(chunks);
  resp->set_elements_freed(elements);
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
        "namespace ", Quoted(ns), " is not declared on shard ", shard_index_));
  }
  Namespace& n = *it->second;
  const v1::OptimizerConfig& now = n.config.optimizer();
  if (change.kind() != v1::OPTIMIZER_UNSPECIFIED &&
      change.kind() != now.kind()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "namespace ", Quoted(ns), " uses ", v1::OptimizerKind_Name(now.kind()),
        "; it cannot change to ", v1::OptimizerKind_Name(change.kind()),
        " while it holds that optimizer's slots. Declare a new namespace "
        "for another optimizer"));
  }
  // A setting the optimizer never reads would change nothing: refuse it,
  // as Declare does.
  if (absl::Status used = CheckSettingsUsed(change, now.kind()); !used.ok()) {
    return absl::Status(used.code(), absl::StrCat("namespace ", Quoted(ns),
                                                  ": ", used.message()));
  }
  if (change.has_initial_accumulator() &&
      change.initial_accumulator() != now.initial_accumulator()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "namespace ", Quoted(ns), " has initial_accumulator ",
        now.initial_accumulator(),
        "; it only sets adagrad's slots when a tensor is declared, so it "
        "cannot change afterwards"));
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
  // The rules: a new compensation or consistency starts from its own
  // defaults, then the request's settings (only those the rules read).
  if (req.compensation() != v1::COMPENSATION_UNSPECIFIED) {
    merged.set_compensation(req.compensation());
  }
  if (req.consistency() != v1::CONSISTENCY_UNSPECIFIED) {
    merged.set_consistency(req.consistency());
  }
  if (!v1::Compensation_IsValid(merged.compensation()) ||
      !v1::Consistency_IsValid(merged.consistency())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "namespace ", Quoted(ns), ": compensation ",
        static_cast<int>(req.compensation()), " or consistency ",
        static_cast<int>(req.consistency()),
        " is not known; use none, inverse, dcasgd-c, dcasgd-a or gem, and "
        "async, ssp or sync"));
  }
  if (absl::Status used = CheckStalenessSettingsUsed(
          req.staleness(), merged.compensation(), merged.consistency());
      !used.ok()) {
    return absl::Status(used.code(), absl::StrCat("namespace ", Quoted(ns),
                                                  ": ", used.message()));
  }
  if (merged.compensation() != n.config.compensation()) {
    v1::StalenessSettings* st = merged.mutable_staleness();
    st->clear_dc_lambda();  // dcasgd-c's 0.04 is not dcasgd-a's lambda0
    st->clear_dc_momentum();
    st->clear_dc_epsilon();
    st->clear_gem_momentum();
    st->clear_gem_kappa();
    st->clear_gem_epsilon();
  }
  ClearUnusedStaleness(&merged);
  merged.mutable_staleness()->MergeFrom(req.staleness());
  absl::StatusOr<v1::NamespaceConfig> normalized = NormalizeConfig(merged);
  if (!normalized.ok()) {
    return absl::Status(normalized.status().code(),
                        absl::StrCat("namespace ", Quoted(ns), " keeps ",
                                     DescribeConfig(n.config), ": ",
                                     normalized.status().message()));
  }
  *resp->mutable_previous() = n.config;
  *resp->mutable_config() = *normalized;
  n.rule = UpdateRule::Create(normalized->optimizer());
  if (normalized->compensation() != n.config.compensation()) {
    // The compensation's state means something else now: all of it goes
    // (index_mu_ is held exclusively: no update runs).
    uint64_t freed = 0;
    for (const auto& [tensor_name, t] : n.tensors) {
      for (const std::unique_ptr<Chunk>& c : t->chunks) {
        if (c == nullptr) continue;
        absl::MutexLock lock(&c->mu);
        for (const auto& [id, state] : c->worker_state) {
          freed += state.size() * sizeof(float);
        }
        freed += c->shared_state.size() * sizeof(float);
        c->worker_state.clear();
        std::vector<float>().swap(c->shared_state);
      }
    }
    rule_state_bytes_.fetch_sub(freed);
  }
  n.compensation = Compensation::Create(*normalized);
  n.config = *std::move(normalized);
  NoteConsistency(n.config);
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
