#include "server/admin_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/optimizer_config.h"
#include "server/finish.h"
#include "spdlog/spdlog.h"

namespace pskit {
namespace {

absl::Status NotDurable() {
  return absl::FailedPreconditionError(
      "this shard keeps no checkpoints: start ps-server with --data_dir");
}

}  // namespace

grpc::ServerUnaryReactor* AdminService::Checkpoint(
    grpc::CallbackServerContext* ctx, const v1::CheckpointRequest* req,
    v1::CheckpointResponse* resp) {
  if (checkpointer_ == nullptr) return FinishNow(ctx, NotDurable());
  if (!req->id().empty()) {
    if (absl::Status s = ValidateCheckpointId(req->id()); !s.ok()) {
      return FinishNow(ctx, s);
    }
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  checkpointer_->CheckpointAsync(
      req->id(), [reactor, resp](absl::StatusOr<v1::CheckpointInfo> info) {
        if (info.ok()) *resp->mutable_checkpoint() = *info;
        reactor->Finish(ToGrpcStatus(info.status()));
      });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::ListCheckpoints(
    grpc::CallbackServerContext* ctx, const v1::ListCheckpointsRequest* req,
    v1::ListCheckpointsResponse* resp) {
  if (checkpoints_ == nullptr) return FinishNow(ctx, NotDurable());
  for (v1::CheckpointInfo& c : checkpoints_->List()) {
    *resp->add_checkpoints() = std::move(c);
  }
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdminService::Restore(
    grpc::CallbackServerContext* ctx, const v1::RestoreRequest* req,
    v1::RestoreResponse* resp) {
  if (checkpointer_ == nullptr) return FinishNow(ctx, NotDurable());
  if (absl::Status s = ValidateCheckpointId(req->id()); !s.ok()) {
    return FinishNow(ctx, s);
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  checkpointer_->RestoreAsync(
      req->id(), [reactor, resp](absl::StatusOr<v1::CheckpointInfo> info) {
        if (info.ok()) *resp->mutable_checkpoint() = *info;
        reactor->Finish(ToGrpcStatus(info.status()));
      });
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::Status(grpc::CallbackServerContext* ctx,
                                               const v1::StatusRequest* req,
                                               v1::StatusResponse* resp) {
  store_->Describe(resp);
  resp->set_live_workers(static_cast<uint32_t>(workers_->LiveCount()));
  resp->set_durable(checkpoints_ != nullptr);
  if (checkpoints_ != nullptr) {
    for (v1::CheckpointInfo& c : checkpoints_->List()) {
      *resp->add_checkpoints() = std::move(c);
    }
  }
  return FinishNow(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdminService::SetConfig(
    grpc::CallbackServerContext* ctx, const v1::SetConfigRequest* req,
    v1::SetConfigResponse* resp) {
  absl::Status s = store_->SetConfig(*req, resp);
  if (s.ok()) {
    spdlog::info("namespace '{}': config changed from {} to {}",
                 req->namespace_().empty() ? "default" : req->namespace_(),
                 DescribeConfig(resp->previous()),
                 DescribeConfig(resp->config()));
  }
  return FinishNow(ctx, s);
}

grpc::ServerUnaryReactor* AdminService::Drain(grpc::CallbackServerContext* ctx,
                                              const v1::DrainRequest* req,
                                              v1::DrainResponse* resp) {
  const absl::Time now = absl::Now();
  const std::string checkpoint_id =
      req->checkpoint_id().empty()
          ? absl::StrCat("drain-", absl::ToUnixMillis(now))
          : req->checkpoint_id();
  if (checkpointer_ != nullptr) {
    if (absl::Status s = ValidateCheckpointId(checkpoint_id); !s.ok()) {
      return FinishNow(ctx, s);
    }
  }
  for (std::string& ns : store_->Drain(
           req->reason().empty() ? "drained by an operator" : req->reason(),
           absl::ToUnixMillis(now))) {
    resp->add_namespaces(std::move(ns));
  }
  resp->set_live_workers(static_cast<uint32_t>(workers_->LiveCount()));
  spdlog::info("draining: {} jobs ended, {} workers live; new ones refused",
               resp->namespaces_size(), resp->live_workers());
  if (checkpointer_ == nullptr) return FinishNow(ctx, absl::OkStatus());
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  checkpointer_->CheckpointAsync(
      checkpoint_id, [reactor, resp](absl::StatusOr<v1::CheckpointInfo> info) {
        if (info.ok()) {
          *resp->mutable_checkpoint() = *info;
          reactor->Finish(grpc::Status::OK);
          return;
        }
        // The jobs are ended either way; say that the copy is missing.
        reactor->Finish(ToGrpcStatus(absl::Status(
            info.status().code(),
            absl::StrCat("the shard is draining and its jobs are ended, but "
                         "the drain checkpoint failed: ",
                         info.status().message()))));
      });
  return reactor;
}

}  // namespace pskit
