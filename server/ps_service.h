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

#include <functional>
#include <utility>

#include "absl/strings/string_view.h"
#include "pskit/v1/ps.grpc.pb.h"
#include "server/chunk_store.h"
#include "server/worker_registry.h"

namespace pskit {

// Initial metadata key of an answer that a shard gave from its exactly-once
// window without applying anything (value "1"): the metrics interceptor does
// not count its acks as updates, and a client may log it.
inline constexpr char kReplayedMetadata[] = "pskit-replayed";

class PsService final : public v1::ParameterServer::CallbackService {
 public:
  // Borrows `store` and `workers`; both must outlive the service.
  // `lose_answer` (tests only, may be empty): see
  // ServerOptions::testonly_lose_answer.
  PsService(ChunkStore* store, WorkerRegistry* workers,
            std::function<bool(absl::string_view method)> lose_answer = {})
      : store_(store), workers_(workers), lose_answer_(std::move(lose_answer)) {}

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
  // Marks the answer as given from the window (kReplayedMetadata).
  static void MarkReplayed(grpc::CallbackServerContext* ctx, bool replayed);
  // The outcome of a data-plane call that ended with `s`, after the test
  // hook had its say.
  absl::Status Answer(absl::string_view method, absl::Status s);

  ChunkStore* const store_;
  WorkerRegistry* const workers_;
  const std::function<bool(absl::string_view)> lose_answer_;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_PS_SERVICE_H_
