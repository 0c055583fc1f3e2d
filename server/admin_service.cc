// server/admin_service.cc
//
// AdminService's handlers and the roles of its methods.
#include "server/admin_service.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/optimizer_config.h"
#include "common/validation.h"
#include "spdlog/spdlog.h"

namespace pskit {
namespace {

absl::Status NotDurable() {
  return absl::FailedPreconditionError(
      "this shard keeps no checkpoints: start ps-server with --data_dir");
}

}  // namespace

AdminService::AdminService(ChunkStore* store, WorkerRegistry* workers,
                           CheckpointStore* checkpoints,
                           Checkpointer* checkpointer, Gate* gate,
                           Consistency* consistency)
    : GatedService(v1::Admin::service_full_name(), gate),
      store_(store),
      workers_(workers),
      checkpoints_(checkpoints),
      checkpointer_(checkpointer),
      consistency_(consistency) {
  AddMethod("Checkpoint", kAdminShardCall, &AdminService::Checkpoint);
  AddMethod("ListCheckpoints", kReaderCall, &AdminService::ListCheckpoints);
  AddMethod("Restore", kAdminShardCall, &AdminService::Restore);
  AddMethod("Status", kReaderCall, &AdminService::Status);
  AddMethod("SetConfig", kAdminCall, &AdminService::SetConfig);
  AddMethod("Drain", kAdminShardCall, &AdminService::Drain);
  // A token limited to some namespaces may drop those (the gate checks the
  // request's namespace).
  AddMethod("DropNamespace", kAdminCall, &AdminService::DropNamespace);
  CheckAllAdded();
}

void AdminService::Checkpoint(
    ServerCall<v1::CheckpointRequest, v1::CheckpointResponse>* call) {
  if (checkpointer_ == nullptr) return call->Reply(NotDurable());
  const v1::CheckpointRequest& req = call->request();
  if (!req.id().empty()) {
    if (absl::Status s = ValidateCheckpointId(req.id()); !s.ok()) {
      return call->Reply(s);
    }
  }
  checkpointer_->CheckpointAsync(
      req.id(), [call](absl::StatusOr<v1::CheckpointInfo> info) {
        if (info.ok()) *call->response()->mutable_checkpoint() = *info;
        call->Reply(info.status());
      });
}

void AdminService::ListCheckpoints(
    ServerCall<v1::ListCheckpointsRequest, v1::ListCheckpointsResponse>*
        call) {
  if (checkpoints_ == nullptr) return call->Reply(NotDurable());
  for (v1::CheckpointInfo& c : checkpoints_->List()) {
    *call->response()->add_checkpoints() = std::move(c);
  }
  call->Reply(absl::OkStatus());
}

void AdminService::Restore(
    ServerCall<v1::RestoreRequest, v1::RestoreResponse>* call) {
  if (checkpointer_ == nullptr) return call->Reply(NotDurable());
  const v1::RestoreRequest& req = call->request();
  if (absl::Status s = ValidateCheckpointId(req.id()); !s.ok()) {
    return call->Reply(s);
  }
  checkpointer_->RestoreAsync(
      req.id(), [this, call](absl::StatusOr<v1::CheckpointInfo> info) {
        // Sync rounds in progress were built on the replaced versions.
        if (info.ok() && consistency_ != nullptr) consistency_->StateReplaced();
        if (info.ok()) *call->response()->mutable_checkpoint() = *info;
        call->Reply(info.status());
      });
}

void AdminService::Status(
    ServerCall<v1::StatusRequest, v1::StatusResponse>* call) {
  v1::StatusResponse* resp = call->response();
  store_->Describe(resp, call->request().evaluations());
  // A token limited to some namespaces sees only those (their names,
  // configs, tensors and evaluations).
  if (!call->caller().AllNamespaces()) {
    auto* spaces = resp->mutable_namespaces();
    spaces->erase(
        std::remove_if(spaces->begin(), spaces->end(),
                       [call](const v1::NamespaceStatus& n) {
                         return !call->caller().AllowsNamespace(n.name());
                       }),
        spaces->end());
  }
  resp->set_live_workers(static_cast<uint32_t>(workers_->LiveCount()));
  resp->set_durable(checkpoints_ != nullptr);
  if (checkpoints_ != nullptr) {
    for (v1::CheckpointInfo& c : checkpoints_->List()) {
      *resp->add_checkpoints() = std::move(c);
    }
  }
  call->Reply(absl::OkStatus());
}

void AdminService::SetConfig(
    ServerCall<v1::SetConfigRequest, v1::SetConfigResponse>* call) {
  const v1::SetConfigRequest& req = call->request();
  v1::SetConfigResponse* resp = call->response();
  if (consistency_ != nullptr) {
    // sync:B needs B < the workers pushing now (the store cannot know them).
    if (absl::StatusOr<v1::NamespaceConfig> now =
            store_->ConfigOf(req.namespace_());
        now.ok()) {
      v1::NamespaceConfig next;
      next.set_consistency(req.consistency() != v1::CONSISTENCY_UNSPECIFIED
                               ? req.consistency()
                               : now->consistency());
      if (req.has_staleness() && req.staleness().has_backup_workers()) {
        next.mutable_staleness()->set_backup_workers(
            req.staleness().backup_workers());
      } else if (next.consistency() == now->consistency()) {
        next.mutable_staleness()->set_backup_workers(
            now->staleness().backup_workers());
      }
      if (absl::Status b = consistency_->CheckBackupWorkers(
              req.namespace_(), next, /*joining=*/0);
          !b.ok()) {
        call->Reply(b);
        return;
      }
    }
  }
  absl::Status s = store_->SetConfig(req, resp);
  if (s.ok() && consistency_ != nullptr) consistency_->ConfigChanged();
  if (s.ok()) {
    spdlog::info("namespace '{}': config changed from {} to {}",
                 req.namespace_().empty() ? "default" : req.namespace_(),
                 DescribeConfig(resp->previous()),
                 DescribeConfig(resp->config()));
  }
  call->Reply(s);
}

void AdminService::Drain(ServerCall<v1::DrainRequest, v1::DrainResponse>* call) {
  const v1::DrainRequest& req = call->request();
  v1::DrainResponse* resp = call->response();
  const absl::Time now = absl::Now();
  const std::string checkpoint_id =
      req.checkpoint_id().empty()
          ? absl::StrCat("drain-", absl::ToUnixMillis(now))
          : req.checkpoint_id();
  if (checkpointer_ != nullptr) {
    if (absl::Status s = ValidateCheckpointId(checkpoint_id); !s.ok()) {
      return call->Reply(s);
    }
  }
  for (std::string& ns : store_->Drain(
           req.reason().empty() ? "drained by an operator" : req.reason(),
           absl::ToUnixMillis(now))) {
    resp->add_namespaces(std::move(ns));
  }
  resp->set_live_workers(static_cast<uint32_t>(workers_->LiveCount()));
  spdlog::info("draining: {} jobs ended, {} workers live; new ones refused",
               resp->namespaces_size(), resp->live_workers());
  if (checkpointer_ == nullptr) return call->Reply(absl::OkStatus());
  checkpointer_->CheckpointAsync(
      checkpoint_id, [call](absl::StatusOr<v1::CheckpointInfo> info) {
        if (info.ok()) {
          *call->response()->mutable_checkpoint() = *info;
          call->Reply(absl::OkStatus());
          return;
        }
        // The jobs are ended either way; say that the copy is missing.
        call->Reply(absl::Status(
            info.status().code(),
            absl::StrCat("the shard is draining and its jobs are ended, but "
                         "the drain checkpoint failed: ",
                         info.status().message())));
      });
}

void AdminService::DropNamespace(
    ServerCall<v1::DropNamespaceRequest, v1::DropNamespaceResponse>* call) {
  const std::string& ns = call->request().namespace_();
  if (ns.empty()) {
    return call->Reply(absl::InvalidArgumentError(
        "DropNamespace needs a namespace name; \"\" does not mean "
        "\"default\" here: name the namespace to delete"));
  }
  if (absl::Status s = ValidateName("namespace", ns); !s.ok()) {
    return call->Reply(s);
  }
  if (absl::StatusOr<v1::NamespaceConfig> declared = store_->ConfigOf(ns);
      !declared.ok()) {
    return call->Reply(absl::NotFoundError(absl::StrCat(
        "namespace ", Quoted(ns), " is not declared on shard ",
        store_->shard_index(), " (never declared, or dropped already)")));
  }
  // Refused while it trains: its workers would get NOT_FOUND and declare it
  // again with fresh values.
  if (std::vector<std::string> live = workers_->LiveIn(ns); !live.empty()) {
    return call->Reply(absl::FailedPreconditionError(absl::StrCat(
        "namespace ", Quoted(ns), " has ", live.size(), " live worker",
        live.size() == 1 ? "" : "s", " on shard ", store_->shard_index(), ": ",
        absl::StrJoin(live, ", "),
        "; stop them (or wait for their leases to lapse), then drop")));
  }
  absl::Status s = store_->DropNamespace(ns, call->response());
  if (s.ok()) {
    if (consistency_ != nullptr) consistency_->NamespaceDropped(ns);
    spdlog::info("namespace '{}' dropped: {} chunks, {} elements freed", ns,
                 call->response()->chunks_freed(),
                 call->response()->elements_freed());
  }
  call->Reply(s);
}

}  // namespace pskit
