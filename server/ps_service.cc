// server/ps_service.cc
//
// PsService's handlers and the roles of its methods (README "Tokens and
// roles"). Push, PushPull and Exchange read their payloads where gRPC
// received them, and Pull, PushPull and Exchange answer their chunks from
// slices the store encoded the values into (server/wire.h); a call held by
// ssp or sync copies its payloads into the request first and answers
// through the protobuf response.
#include "server/ps_service.h"

#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace pskit {

PsService::PsService(ChunkStore* store, WorkerRegistry* workers, Gate* gate,
                     std::function<bool(absl::string_view method)> lose_answer,
                     Consistency* consistency)
    : GatedService(v1::ParameterServer::service_full_name(), gate),
      store_(store),
      workers_(workers),
      lose_answer_(std::move(lose_answer)),
      consistency_(consistency) {
  using WorkerId = MethodPolicy::WorkerId;
  const MethodPolicy acts_for = {TokenRole::kWorker, false, WorkerId::kActsFor};
  AddMethod("Declare", kWorkerCall, &PsService::Declare);
  AddMethod("Pull", MethodPolicy{TokenRole::kReader, false, WorkerId::kActsFor},
            &PsService::Pull);
  AddMethod("Push", acts_for, &PsService::Push);
  AddMethod("PushPull", acts_for, &PsService::PushPull);
  AddMethod("Exchange", acts_for, &PsService::Exchange);
  AddMethod("RegisterWorker",
            MethodPolicy{TokenRole::kWorker, false, WorkerId::kBinds},
            &PsService::RegisterWorker);
  AddMethod("Heartbeat", acts_for, &PsService::Heartbeat);
  AddMethod("Leave",
            MethodPolicy{TokenRole::kWorker, false, WorkerId::kReleases},
            &PsService::Leave);
  AddMethod("ReportEvaluation", kWorkerCall, &PsService::ReportEvaluation);
  CheckAllAdded();
}

template <typename Req, typename Resp>
void PsService::MarkReplayed(ServerCall<Req, Resp>* call, bool replayed) {
  if (!replayed) return;
  call->context()->AddInitialMetadata(kReplayedMetadata, "1");
  call->DoNotCountUpdates();
}

absl::Status PsService::Answer(absl::string_view method, absl::Status s) {
  if (s.ok() && lose_answer_ && lose_answer_(method)) {
    return absl::UnavailableError(absl::StrCat(
        "test hook: the answer to ", method,
        " was lost after the shard applied it"));
  }
  return s;
}

namespace {

// The hook setter a Waiter needs: the call's own SetOnCancel.
template <typename Req, typename Resp>
std::function<void(std::function<void()>)> CancelHookOf(
    ServerCall<Req, Resp>* call) {
  return [call](std::function<void()> hook) {
    call->SetOnCancel(std::move(hook));
  };
}

// The values of the chunks `req` pushed, now, into `out` (a held PushPull
// answers the values of when it is released).
absl::Status PullPushed(ChunkStore* store, const v1::PushRequest& req,
                        google::protobuf::RepeatedPtrField<v1::ChunkData>* out) {
  v1::PullRequest pull;
  pull.set_namespace_(req.namespace_());
  // The worker reads these values: a per-worker compensation records them.
  pull.set_worker_id(req.worker_id());
  if (req.has_layout()) *pull.mutable_layout() = req.layout();
  pull.set_encoding(req.return_encoding());
  for (const v1::ChunkData& g : req.grads()) {
    v1::ChunkRef* ref = pull.add_chunks();
    ref->set_tensor(g.tensor());
    ref->set_chunk(g.chunk());
  }
  v1::PullResponse values;
  absl::Status s = store->Pull(pull, &values);
  if (s.ok()) out->Swap(values.mutable_chunks());
  return s;
}

}  // namespace

v1::Consistency PsService::ModeFor(const std::string& ns, uint64_t worker) {
  if (consistency_ == nullptr) return v1::CONSISTENCY_ASYNC;
  return consistency_->ModeFor(ns, worker);
}

template <typename Resp>
void PsService::HeldUpdate(ServerCall<v1::PushRequest, Resp>* call,
                           v1::Consistency mode, const char* method) {
  constexpr bool kPushPull = std::is_same_v<Resp, v1::PushPullResponse>;
  const v1::PushRequest& req = call->request();
  if (mode == v1::CONSISTENCY_SSP) {
    // Applied as in async; only the pull half of a PushPull waits.
    bool replayed = false;
    absl::Status s;
    if constexpr (kPushPull) {
      s = store_->PushPull(req, call->response(), &replayed);
    } else {
      s = store_->Push(req, call->response(), &replayed);
    }
    MarkReplayed(call, replayed);
    if (!s.ok()) {
      call->Reply(Answer(method, s));
      return;
    }
    consistency_->AfterSspPush(
        req, replayed, /*holds=*/kPushPull,
        Waiter{[this, call, method](HoldOutcome o) {
                 absl::Status s = o.status;
                 if constexpr (kPushPull) {
                   if (s.ok() && o.held) {
                     s = PullPushed(store_, call->request(),
                                    call->response()->mutable_chunks());
                   }
                 }
                 call->Reply(Answer(method, s));
               },
               CancelHookOf(call)});
    return;
  }
  // Sync: the gradients join their rounds; the answer comes once applied.
  if constexpr (kPushPull) {
    // Checked before the gradients join a round: refused after the round
    // applied them, the call would be answered with an error yet applied.
    if (absl::Status s = ValidateEncoding(req.return_encoding()); !s.ok()) {
      call->Reply(s);
      return;
    }
  }
  consistency_->Contribute(
      req, Waiter{[this, call, method](HoldOutcome o) {
                    absl::Status s = o.status;
                    if (s.ok()) {
                      for (v1::ChunkAck& ack : o.acks) {
                        *call->response()->add_acks() = std::move(ack);
                      }
                      if constexpr (kPushPull) {
                        s = PullPushed(store_, call->request(),
                                       call->response()->mutable_chunks());
                      }
                      // The round's update was counted once when applied.
                      call->DoNotCountUpdates();
                      MarkReplayed(call, o.replayed);
                    }
                    call->Reply(Answer(method, s));
                  },
                  CancelHookOf(call)});
}

absl::Status PsService::CheckWorker(uint64_t worker_id) {
  if (worker_id == 0) return absl::OkStatus();
  return workers_->CheckLive(worker_id);
}

void PsService::Declare(
    ServerCall<v1::DeclareRequest, v1::DeclareResponse>* call) {
  const v1::DeclareRequest& req = call->request();
  if (consistency_ != nullptr) {
    if (absl::Status s =
            consistency_->CheckBackupWorkers(req.namespace_(), req.config(),
                                             /*joining=*/1);
        !s.ok()) {
      call->Reply(s);
      return;
    }
  }
  call->Reply(store_->Declare(req, call->response()));
}

void PsService::Pull(ServerCall<v1::PullRequest, v1::PullResponse>* call) {
  const v1::PullRequest& req = call->request();
  absl::Status s = CheckWorker(req.worker_id());
  if (s.ok() &&
      ModeFor(req.namespace_(), req.worker_id()) != v1::CONSISTENCY_ASYNC) {
    consistency_->Pull(
        req, Waiter{[this, call](HoldOutcome o) {
                      absl::Status s = o.status;
                      if (s.ok()) {
                        s = store_->Pull(call->request(), call->response());
                      }
                      call->Reply(s);
                    },
                    CancelHookOf(call)});
    return;
  }
  if (s.ok()) s = store_->Pull(req, call->answer_chunks());
  call->Reply(s);
}

void PsService::Push(ServerCall<v1::PushRequest, v1::PushResponse>* call) {
  const v1::PushRequest& req = call->request();
  absl::Status s = CheckWorker(req.worker_id());
  if (s.ok()) {
    if (v1::Consistency mode = ModeFor(req.namespace_(), req.worker_id());
        mode != v1::CONSISTENCY_ASYNC) {
      call->MaterializePayloads();
      HeldUpdate(call, mode, "Push");
      return;
    }
  }
  bool replayed = false;
  if (s.ok()) {
    s = store_->Push(req, call->payloads(), call->response(), &replayed);
  }
  MarkReplayed(call, replayed);
  call->Reply(Answer("Push", s));
}

void PsService::PushPull(
    ServerCall<v1::PushRequest, v1::PushPullResponse>* call) {
  const v1::PushRequest& req = call->request();
  absl::Status s = CheckWorker(req.worker_id());
  if (s.ok()) {
    if (v1::Consistency mode = ModeFor(req.namespace_(), req.worker_id());
        mode != v1::CONSISTENCY_ASYNC) {
      call->MaterializePayloads();
      HeldUpdate(call, mode, "PushPull");
      return;
    }
  }
  bool replayed = false;
  if (s.ok()) {
    s = store_->PushPull(req, call->payloads(), call->response()->mutable_acks(),
                         call->answer_chunks(), &replayed);
  }
  MarkReplayed(call, replayed);
  call->Reply(Answer("PushPull", s));
}

void PsService::Exchange(
    ServerCall<v1::ExchangeRequest, v1::ExchangeResponse>* call) {
  const v1::ExchangeRequest& req = call->request();
  absl::Status s = CheckWorker(req.worker_id());
  bool replayed = false;
  if (s.ok()) {
    s = store_->Exchange(req, call->payloads(), call->answer_chunks(),
                         &replayed);
  }
  MarkReplayed(call, replayed);
  call->Reply(Answer("Exchange", s));
}

void PsService::RegisterWorker(
    ServerCall<v1::RegisterWorkerRequest, v1::RegisterWorkerResponse>* call) {
  if (store_->draining()) {
    call->Reply(absl::UnavailableError(
        "shard is draining (Admin/Drain ended its jobs); "
        "no new workers until it restarts"));
    return;
  }
  const v1::RegisterWorkerRequest& req = call->request();
  absl::StatusOr<uint64_t> id = workers_->Register(req.worker_id(), req.name(), req.namespace_());
  if (id.ok()) {
    call->response()->set_worker_id(*id);
    call->response()->set_lease_ms(absl::ToInt64Milliseconds(workers_->lease()));
  }
  call->Reply(id.status());
}

void PsService::Heartbeat(
    ServerCall<v1::HeartbeatRequest, v1::HeartbeatResponse>* call) {
  const v1::HeartbeatRequest& req = call->request();
  absl::Status s = workers_->Heartbeat(req.worker_id(), req.namespace_());
  if (s.ok()) {
    v1::HeartbeatResponse* resp = call->response();
    resp->set_lease_ms(absl::ToInt64Milliseconds(workers_->lease()));
    resp->set_live_workers(static_cast<uint32_t>(workers_->LiveCount()));
    resp->set_job_done(store_->JobDone(req.namespace_()));
  }
  call->Reply(s);
}

void PsService::Leave(ServerCall<v1::LeaveRequest, v1::LeaveResponse>* call) {
  call->Reply(workers_->Leave(call->request().worker_id()));
}

void PsService::ReportEvaluation(
    ServerCall<v1::ReportEvaluationRequest, v1::ReportEvaluationResponse>*
        call) {
  const v1::ReportEvaluationRequest& req = call->request();
  absl::Status s = store_->ReportEvaluation(req);
  if (s.ok()) call->response()->set_job_done(store_->JobDone(req.namespace_()));
  call->Reply(s);
}

}  // namespace pskit
