// server/ps_service.h
//
// PsService: the gRPC face of one shard, pskit.v1.ParameterServer on the
// callback API. Every method is a raw method behind the gate (server/gate.h:
// token, role, parse, namespace and worker id) that then runs one of the
// handlers below. Every handler does bounded CPU work (validate, apply,
// copy) and replies inline, except a member's Pull, Push or PushPull under
// ssp or sync (server/consistency.h): that call is handed to Consistency,
// which answers it later from whichever thread releases it; no thread waits.
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
#include "server/consistency.h"
#include "server/gate.h"
#include "server/worker_registry.h"

namespace pskit {

// Initial metadata key of an answer that a shard gave from its exactly-once
// window without applying anything (value "1"): the gate counts no updates
// for it, and a client may log it.
inline constexpr char kReplayedMetadata[] = "pskit-replayed";

class PsService final : public GatedService<v1::ParameterServer::Service> {
 public:
  // Borrows `store`, `workers` and `gate`; all must outlive the service.
  // `lose_answer` (tests only, may be empty): see
  // ServerOptions::testonly_lose_answer.
  // `consistency` (borrowed, may be null: every namespace is then async)
  // must outlive the gRPC server.
  PsService(ChunkStore* store, WorkerRegistry* workers, Gate* gate,
            std::function<bool(absl::string_view method)> lose_answer = {},
            Consistency* consistency = nullptr);

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
  // Marks the answer as given from the window (kReplayedMetadata) and not
  // counted as updates.
  template <typename Req, typename Resp>
  static void MarkReplayed(ServerCall<Req, Resp>* call, bool replayed);
  // The outcome of a data-plane call that ended with `s`, after the test
  // hook had its say.
  absl::Status Answer(absl::string_view method, absl::Status s);
  // The consistency model of a call by `worker` in namespace `ns`.
  v1::Consistency ModeFor(const std::string& ns, uint64_t worker);
  // A Push or PushPull under ssp or sync (Resp tells which).
  template <typename Resp>
  void HeldUpdate(ServerCall<v1::PushRequest, Resp>* call,
                  v1::Consistency mode, const char* method);

  ChunkStore* const store_;
  WorkerRegistry* const workers_;
  const std::function<bool(absl::string_view)> lose_answer_;
  Consistency* const consistency_;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_PS_SERVICE_H_
