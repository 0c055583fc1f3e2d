// server/ps_service.h
//
// PsService: the gRPC face of one shard, pskit.v1.ParameterServer on the
// callback API. Every handler does bounded CPU work (validate, apply, copy)
// and finishes inline; nothing here waits.
//
// Thread safety: handlers run concurrently on gRPC's threads; all state is
// in ChunkStore and WorkerRegistry, which are thread-safe.
#ifndef PSKIT_SERVER_PS_SERVICE_H_
#define PSKIT_SERVER_PS_SERVICE_H_

#include "pskit/v1/ps.grpc.pb.h"
#include "server/chunk_store.h"
#include "server/worker_registry.h"

namespace pskit {

class PsService final : public v1::ParameterServer::CallbackService {
 public:
  // Borrows `store` and `workers`; both must outlive the service.
  PsService(ChunkStore* store, WorkerRegistry* workers)
      : store_(store), workers_(workers) {}

  grpc::ServerUnaryReactor* Declare(grpc::CallbackServerContext* ctx,
                                    const v1::DeclareRequest* req,
                                    v1::DeclareResponse* resp) override;
  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* ctx,
                                 const v1::PullRequest* req,
                                 v1::PullResponse* resp) override;
  grpc::ServerUnaryReactor* Push(grpc::CallbackServerContext* ctx,
                                 const v1::PushRequest* req,
                                 v1::PushResponse* resp) override;
  grpc::ServerUnaryReactor* PushPull(grpc::CallbackServerContext* ctx,
                                     const v1::PushRequest* req,
                                     v1::PushPullResponse* resp) override;
  grpc::ServerUnaryReactor* Exchange(grpc::CallbackServerContext* ctx,
                                     const v1::ExchangeRequest* req,
                                     v1::ExchangeResponse* resp) override;
  grpc::ServerUnaryReactor* RegisterWorker(
      grpc::CallbackServerContext* ctx, const v1::RegisterWorkerRequest* req,
      v1::RegisterWorkerResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* ctx,
                                  const v1::LeaveRequest* req,
                                  v1::LeaveResponse* resp) override;
  grpc::ServerUnaryReactor* ReportEvaluation(
      grpc::CallbackServerContext* ctx,
      const v1::ReportEvaluationRequest* req,
      v1::ReportEvaluationResponse* resp) override;

 private:
  // OK for worker id 0 (anonymous) or a live lease.
  absl::Status CheckWorker(uint64_t worker_id);

  ChunkStore* const store_;
  WorkerRegistry* const workers_;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_PS_SERVICE_H_
