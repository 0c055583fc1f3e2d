// server/gate.cc
//
// The gate's checks: token lookup, role, namespace and worker-id ownership.
#include "server/gate.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "common/validation.h"
#include "google/protobuf/descriptor.h"
#include "server/server_metrics.h"
#include "server/worker_registry.h"
#include "spdlog/spdlog.h"

namespace pskit {
namespace {

std::string NamespaceList(const TokenEntry& e) {
  return absl::StrJoin(e.namespaces, ",");
}

// The request's namespace ("" is "default"), or nullopt-like false when the
// message has no `namespace` field.
bool RequestNamespace(const google::protobuf::Message& m, std::string* ns) {
  const google::protobuf::FieldDescriptor* f =
      m.GetDescriptor()->FindFieldByName("namespace");
  if (f == nullptr ||
      f->type() != google::protobuf::FieldDescriptor::TYPE_STRING ||
      f->is_repeated()) {
    return false;
  }
  *ns = m.GetReflection()->GetString(m, f);
  if (ns->empty()) {
    // A RegisterWorker without one comes from a client older than the
    // field: it names no namespace (its Heartbeats name theirs, and are
    // checked), so a token limited to some namespaces may still register.
    if (m.GetDescriptor()->full_name() == "pskit.v1.RegisterWorkerRequest") {
      return false;
    }
    *ns = "default";
  }
  return true;
}

// The message's `worker_id` (0 when it has none).
uint64_t WorkerIdOf(const google::protobuf::Message& m) {
  const google::protobuf::FieldDescriptor* f =
      m.GetDescriptor()->FindFieldByName("worker_id");
  if (f == nullptr ||
      f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_UINT64 ||
      f->is_repeated()) {
    return 0;
  }
  return m.GetReflection()->GetUInt64(m, f);
}

}  // namespace

bool Caller::AllowsNamespace(absl::string_view ns) const {
  if (entry_ == nullptr) return true;
  return entry_->AllowsNamespace(ns.empty() ? absl::string_view("default")
                                            : ns);
}

absl::StatusOr<std::unique_ptr<Gate>> Gate::WithTokens(
    const std::string& tokens_file, ServerMetrics* metrics,
    WorkerRegistry* workers) {
  if (tokens_file.empty()) {
    return absl::InvalidArgumentError("the token file path is empty");
  }
  auto gate = std::make_unique<Gate>(metrics, workers);
  gate->tokens_file_ = tokens_file;
  absl::StatusOr<size_t> n = gate->Reload();
  if (!n.ok()) return n.status();
  return gate;
}

absl::StatusOr<size_t> Gate::Reload() {
  if (open()) return 0;
  absl::StatusOr<std::vector<TokenEntry>> entries =
      ParseTokenFile(tokens_file_);
  if (!entries.ok()) return entries.status();
  auto table =
      std::make_shared<const std::vector<TokenEntry>>(*std::move(entries));
  const size_t n = table->size();
  absl::MutexLock lock(&mu_);
  tokens_ = std::move(table);
  return n;
}

void Gate::CountRefusal(absl::string_view rpc, absl::string_view reason) {
  if (metrics_ != nullptr) metrics_->CountAuthRefusal(rpc, reason);
  spdlog::debug("refused {}: {}", std::string(rpc), std::string(reason));
}

absl::StatusOr<Caller> Gate::Admit(const grpc::CallbackServerContext& ctx,
                                   absl::string_view rpc,
                                   const MethodPolicy& policy) {
  if (open()) return Caller();
  std::shared_ptr<const std::vector<TokenEntry>> table;
  {
    absl::MutexLock lock(&mu_);
    table = tokens_;
  }
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    CountRefusal(rpc, "no_token");
    return absl::UnauthenticatedError(absl::StrCat(
        rpc,
        ": this shard requires a bearer token (metadata 'authorization: "
        "Bearer <token>'); give the client --token_file FILE or "
        "PSKIT_TOKEN_FILE (psctl token new makes a token)"));
  }
  absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    CountRefusal(rpc, "not_bearer");
    return absl::UnauthenticatedError(absl::StrCat(
        rpc,
        ": the authorization metadata is not 'Bearer <token>'; this shard "
        "takes bearer tokens only"));
  }
  const absl::string_view token =
      absl::StripAsciiWhitespace(value.substr(kScheme.size()));
  const TokenEntry* entry = FindToken(*table, token);
  if (entry == nullptr) {
    CountRefusal(rpc, "unknown_token");
    return absl::UnauthenticatedError(absl::StrCat(
        rpc,
        ": the bearer token is not in this shard's token file (--auth_tokens); "
        "check the client's --token_file and that the token's hash line was "
        "added to every shard's file"));
  }
  if (entry->role < policy.role) {
    CountRefusal(rpc, "role");
    return absl::PermissionDeniedError(absl::StrCat(
        rpc, " needs role ", TokenRoleName(policy.role),
        policy.role == TokenRole::kAdmin ? "" : " or higher",
        "; the caller's token has role ", TokenRoleName(entry->role),
        " (roles: reader < worker < admin)"));
  }
  if (policy.whole_shard && !entry->namespaces.empty()) {
    CountRefusal(rpc, "namespace");
    return absl::PermissionDeniedError(absl::StrCat(
        rpc, " acts on every namespace of the shard; the caller's token (role ",
        TokenRoleName(entry->role), ") is limited to namespaces ",
        Quoted(NamespaceList(*entry)),
        ": use an admin token without a namespace list"));
  }
  return Caller(std::move(table), entry);
}

absl::Status Gate::AuthorizeRequest(const Caller& caller,
                                    absl::string_view rpc,
                                    const MethodPolicy& policy,
                                    const google::protobuf::Message& request) {
  if (caller.open()) return absl::OkStatus();
  const TokenEntry& entry = *caller.entry();
  std::string ns;
  if (RequestNamespace(request, &ns) && !entry.AllowsNamespace(ns)) {
    CountRefusal(rpc, "namespace");
    return absl::PermissionDeniedError(absl::StrCat(
        rpc, " on namespace ", Quoted(ns), ": the caller's token (role ",
        TokenRoleName(entry.role), ") is limited to namespaces ",
        Quoted(NamespaceList(entry))));
  }
  if (policy.worker_id == MethodPolicy::WorkerId::kNone ||
      entry.role == TokenRole::kAdmin) {
    return absl::OkStatus();
  }
  const uint64_t id = WorkerIdOf(request);
  if (id == 0) return absl::OkStatus();
  bool foreign = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = worker_owner_.find(id);
    foreign = it != worker_owner_.end() && it->second != entry.hash;
  }
  // A lapsed worker's id may be registered again by anyone.
  if (foreign && policy.worker_id == MethodPolicy::WorkerId::kBinds &&
      workers_ != nullptr && !workers_->CheckLive(id).ok()) {
    foreign = false;
  }
  if (foreign) {
    CountRefusal(rpc, "worker_id");
    return absl::PermissionDeniedError(absl::StrCat(
        rpc, " for worker id ", id,
        ": that worker was registered with another token; a worker may act "
        "only for the id it registered itself"));
  }
  return absl::OkStatus();
}

void Gate::Answered(const Caller& caller, const MethodPolicy& policy,
                    const google::protobuf::Message& request,
                    const google::protobuf::Message& response,
                    bool count_updates) {
  if (metrics_ != nullptr && count_updates) {
    metrics_->RecordAnswer(request, response);
  }
  if (caller.open()) return;
  switch (policy.worker_id) {
    case MethodPolicy::WorkerId::kNone:
    case MethodPolicy::WorkerId::kActsFor:
      return;
    case MethodPolicy::WorkerId::kBinds: {
      const uint64_t id = WorkerIdOf(response);
      if (id == 0) return;
      absl::MutexLock lock(&mu_);
      worker_owner_[id] = caller.entry()->hash;
      if (worker_owner_.size() >= next_sweep_ && workers_ != nullptr) {
        // Drop the ids whose leases lapsed, so the map stays as large as
        // the live workers (plus those registered since the last sweep).
        absl::erase_if(worker_owner_, [this](const auto& kv) {
          return !workers_->CheckLive(kv.first).ok();
        });
        next_sweep_ = std::max<size_t>(4096, 2 * worker_owner_.size());
      }
      return;
    }
    case MethodPolicy::WorkerId::kReleases: {
      const uint64_t id = WorkerIdOf(request);
      absl::MutexLock lock(&mu_);
      worker_owner_.erase(id);
      return;
    }
  }
}

namespace gate_internal {

absl::Status Unparsable(absl::string_view rpc, absl::string_view type_name,
                        size_t bytes) {
  return absl::InvalidArgumentError(absl::StrCat(
      "request could not be parsed as ", type_name, " (", rpc, ", ", bytes,
      " bytes): the bytes are not a valid message of that type; the client "
      "may have been built from another .proto, or the message was corrupted "
      "on the way"));
}

int MethodIndex(absl::string_view service, absl::string_view method) {
  const google::protobuf::ServiceDescriptor* s =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          std::string(service));
  const google::protobuf::MethodDescriptor* m =
      s == nullptr ? nullptr : s->FindMethodByName(std::string(method));
  if (m == nullptr) {
    spdlog::critical("gate: service {} has no method {}", std::string(service),
                     std::string(method));
    std::abort();
  }
  return m->index();
}

void CheckMethodCount(absl::string_view service, int added) {
  const google::protobuf::ServiceDescriptor* s =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          std::string(service));
  if (s == nullptr || s->method_count() != added) {
    spdlog::critical("gate: {} of service {}'s {} methods are gated", added,
                     std::string(service), s == nullptr ? 0 : s->method_count());
    std::abort();
  }
}

}  // namespace gate_internal
}  // namespace pskit
