#include "server/admin_service.h"

#include "server/finish.h"

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

}  // namespace pskit
