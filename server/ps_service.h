// server/ps_service.h
//
// PsService: the gRPC face of one shard, pskit.v1.ParameterServer on the
// callback API. Every method is a raw method behind the gate (server/gate.h:
// token, role, parse, namespace and worker id) that then runs one of the
// handlers below. Every handler does bounded CPU work (validate, apply,
// copy) and replies inline; nothing here waits.
//
// Thread safety: handlers run concurrently on gRPC's threads; all state is
// in ChunkStore and WorkerRegistry, which are thread-safe.
#ifndef PSKIT_SERVER_PS_SERVICE_H_
#define PSKIT_SERVER_PS_SERVICE_H_

#include "pskit/v1/ps.grpc.pb.h"
#include "server/chunk_store.h"
#include "server/gate.h"
#include "server/worker_registry.h"

namespace pskit {

class PsService final : public GatedService<v1::ParameterServer::Service> {
 public:
  // Borrows `store`, `workers` and `gate`; all must outlive the service.
  PsService(ChunkStore* store, WorkerRegistry* workers, Gate* gate);

  void Declare(ServerCall<v1::DeclareRequest, v1::DeclareResponse>* call);
  void Pull(ServerCall<v1::PullRequest, v1::PullResponse>* call);
  void Push(ServerCall<v1::PushRequest, v1::PushResponse>* call);
  void PushPull(ServerCall<v1::PushRequest, v1::PushPullResponse>* call);
  void Exchange(ServerCall<v1::ExchangeRequest, v1::ExchangeResponse>* call);
  void RegisterWorker(ServerCall<v1::RegisterWorkerRequest,
                                 v1::RegisterWorkerResponse>* call);
  void Heartbeat(
      ServerCall<v1::HeartbeatRequest, v1::HeartbeatResponse>* call);
  void Leave(ServerCall<v1::LeaveRequest, v1::LeaveResponse>* call);
  void ReportEvaluation(ServerCall<v1::ReportEvaluationRequest,
                                   v1::ReportEvaluationResponse>* call);

 private:
  // OK for worker id 0 (anonymous) or a live lease.
  absl::Status CheckWorker(uint64_t worker_id);

  ChunkStore* const store_;
  WorkerRegistry* const workers_;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_PS_SERVICE_H_
