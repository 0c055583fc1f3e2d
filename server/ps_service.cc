// server/ps_service.cc: the ParameterServer handlers. See
// server/ps_service.h.
#include "server/ps_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "server/finish.h"

namespace pskit {

void PsService::MarkReplayed(grpc::CallbackServerContext* ctx, bool replayed) {
  if (replayed) ctx->AddInitialMetadata(kReplayedMetadata, "1");
}

absl::Status PsService::Answer(absl::string_view method, absl::Status s) {
  if (s.ok() && lose_answer_ && lose_answer_(method)) {
    return absl::UnavailableError(absl::StrCat(
        "test hook: the answer to ", method,
        " was lost after the shard applied it"));
  }
  return s;
}

absl::Status PsService::CheckWorker(uint64_t worker_id) {
  if (worker_id == 0) return absl::OkStatus();
  return workers_->CheckLive(worker_id);
}

grpc::ServerUnaryReactor* PsService::Declare(grpc::CallbackServerContext* ctx,
                                             const v1::DeclareRequest* req,
                                             v1::DeclareResponse* resp) {
  return FinishNow(ctx, store_->Declare(*req, resp));
}

grpc::ServerUnaryReactor* PsService::Pull(grpc::CallbackServerContext* ctx,
                                          const v1::PullRequest* req,
                                          v1::PullResponse* resp) {
  return FinishNow(ctx, store_->Pull(*req, resp));
}

grpc::ServerUnaryReactor* PsService::Push(grpc::CallbackServerContext* ctx,
                                          const v1::PushRequest* req,
                                          v1::PushResponse* resp) {
  absl::Status s = CheckWorker(req->worker_id());
  bool replayed = false;
  if (s.ok()) s = store_->Push(*req, resp, &replayed);
  MarkReplayed(ctx, replayed);
  return FinishNow(ctx, Answer("Push", s));
}

grpc::ServerUnaryReactor* PsService::PushPull(grpc::CallbackServerContext* ctx,
                                              const v1::PushRequest* req,
                                              v1::PushPullResponse* resp) {
  absl::Status s = CheckWorker(req->worker_id());
  bool replayed = false;
  if (s.ok()) s = store_->PushPull(*req, resp, &replayed);
  MarkReplayed(ctx, replayed);
  return FinishNow(ctx, Answer("PushPull", s));
}

grpc::ServerUnaryReactor* PsService::Exchange(grpc::CallbackServerContext* ctx,
                                              const v1::ExchangeRequest* req,
                                              v1::ExchangeResponse* resp) {
  absl::Status s = CheckWorker(req->worker_id());
  bool replayed = false;
  if (s.ok()) s = store_->Exchange(*req, resp, &replayed);
  MarkReplayed(ctx, replayed);
  return FinishNow(ctx, Answer("Exchange", s));
}

grpc::ServerUnaryReactor* PsService::RegisterWorker(
    grpc::CallbackServerContext* ctx, const v1::RegisterWorkerRequest* req,
    v1::RegisterWorkerResponse* resp) {
  if (store_->draining()) {
    return FinishNow(ctx, absl::UnavailableError(
                              "shard is draining (Admin/Drain ended its jobs); "
                              "no new workers until it restarts"));
  }
  absl::StatusOr<uint64_t> id = workers_->Register(req->worker_id(), req->name());
  if (id.ok()) {
    resp->set_worker_id(*id);
    resp->set_lease_ms(absl::ToInt64Milliseconds(workers_->lease()));
  }
  return FinishNow(ctx, id.status());
}

grpc::ServerUnaryReactor* PsService::Heartbeat(grpc::CallbackServerContext* ctx,
                                               const v1::HeartbeatRequest* req,
                                               v1::HeartbeatResponse* resp) {
  absl::Status s = workers_->Heartbeat(req->worker_id());
  if (s.ok()) {
    resp->set_lease_ms(absl::ToInt64Milliseconds(workers_->lease()));
    resp->set_live_workers(static_cast<uint32_t>(workers_->LiveCount()));
    resp->set_job_done(store_->JobDone(req->namespace_()));
  }
  return FinishNow(ctx, s);
}

grpc::ServerUnaryReactor* PsService::Leave(grpc::CallbackServerContext* ctx,
                                           const v1::LeaveRequest* req,
                                           v1::LeaveResponse* resp) {
  return FinishNow(ctx, workers_->Leave(req->worker_id()));
}

grpc::ServerUnaryReactor* PsService::ReportEvaluation(
    grpc::CallbackServerContext* ctx, const v1::ReportEvaluationRequest* req,
    v1::ReportEvaluationResponse* resp) {
  absl::Status s = store_->ReportEvaluation(*req);
  if (s.ok()) resp->set_job_done(store_->JobDone(req->namespace_()));
  return FinishNow(ctx, s);
}

}  // namespace pskit
