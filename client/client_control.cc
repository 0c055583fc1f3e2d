// client/client_control.cc
//
// Client's control calls: worker registration, heartbeats, evaluations and
// leaving (ParameterServer), and checkpoint, status, restore and dropping a
// namespace (Admin, through AdminClient). The data plane is in client.cc.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/admin_client.h"
#include "client/client.h"
#include "client/internal/client_call.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace pskit {


template <typename Resp, typename Req, typename Send>
absl::StatusOr<std::vector<Resp>> Client::Broadcast(const char* op,
                                                    const Req& req,
                                                    uint32_t begin,
                                                    uint32_t end, Send send) {
  std::vector<Call<Req, Resp>> calls(end - begin);
  for (uint32_t s = begin; s < end; ++s) {
    calls[s - begin].shard = s;
    calls[s - begin].req = req;
  }
  PSKIT_RETURN_IF_ERROR(
      Run(op, calls, send, [](Call<Req, Resp>&) { return absl::OkStatus(); }));
  std::vector<Resp> out;
  for (Call<Req, Resp>& c : calls) out.push_back(std::move(c.resp));
  return out;
}

absl::StatusOr<uint64_t> Client::RegisterWorker(std::string name,
                                                absl::string_view ns) {
  // Shard 0 picks the id; the others are told to use it.
  v1::RegisterWorkerRequest req;
  req.set_name(name);
  req.set_namespace_(NamespaceOf(ns));
  PSKIT_ASSIGN_OR_RETURN(
      std::vector<v1::RegisterWorkerResponse> first,
      Broadcast<v1::RegisterWorkerResponse>(
          "RegisterWorker", req, 0, 1,
          PSKIT_SEND(stubs_[shard][channel], RegisterWorker)));
  const uint64_t id = first[0].worker_id();
  req.set_worker_id(id);
  PSKIT_RETURN_IF_ERROR(Broadcast<v1::RegisterWorkerResponse>(
                            "RegisterWorker", req, 1, layout_.num_shards(),
                            PSKIT_SEND(stubs_[shard][channel], RegisterWorker))
                            .status());
  absl::MutexLock lock(&mu_);
  worker_id_ = id;
  worker_name_ = std::move(name);
  worker_ns_ = req.namespace_();
  return id;
}

absl::StatusOr<bool> Client::Heartbeat(absl::string_view ns) {
  v1::RegisterWorkerRequest again;
  v1::HeartbeatRequest req;
  req.set_namespace_(NamespaceOf(ns));
  {
    absl::MutexLock lock(&mu_);
    req.set_worker_id(worker_id_);
    again.set_worker_id(worker_id_);
    again.set_name(worker_name_);
    // The shards record the namespace of every heartbeat; so does this.
    if (worker_id_ != 0) worker_ns_ = req.namespace_();
    again.set_namespace_(req.namespace_());
  }
  if (req.worker_id() == 0) {
    return absl::FailedPreconditionError(
        "Heartbeat before RegisterWorker; register first");
  }
  absl::StatusOr<std::vector<v1::HeartbeatResponse>> beats =
      Broadcast<v1::HeartbeatResponse>(
          "Heartbeat", req, 0, layout_.num_shards(),
          PSKIT_SEND(stubs_[shard][channel], Heartbeat));
  if (beats.ok()) {
    for (const v1::HeartbeatResponse& b : *beats) {
      if (b.job_done()) return true;
    }
    return false;
  }
  if (beats.status().code() != absl::StatusCode::kNotFound) {
    return beats.status();
  }
  // A shard forgot this worker (it restarted, or the lease lapsed): register
  // the same id again everywhere (a renewal where it is still known).
  spdlog::warn("worker {}: {}; registering again", req.worker_id(),
               std::string(beats.status().message()));
  PSKIT_RETURN_IF_ERROR(Broadcast<v1::RegisterWorkerResponse>(
                            "RegisterWorker", again, 0, layout_.num_shards(),
                            PSKIT_SEND(stubs_[shard][channel], RegisterWorker))
                            .status());
  return false;
}

bool Client::ReregisterOn(uint32_t shard, uint64_t worker_id) {
  v1::RegisterWorkerRequest again;
  {
    absl::MutexLock lock(&mu_);
    if (worker_id_ != worker_id) return false;  // left or registered anew
    again.set_name(worker_name_);
    again.set_namespace_(worker_ns_);
  }
  again.set_worker_id(worker_id);
  spdlog::warn(
      "worker {}: shard {} ({}) does not know this worker (it restarted, or "
      "the lease lapsed); registering again and resending",
      worker_id, shard, shards_[shard]);
  absl::Status s = Broadcast<v1::RegisterWorkerResponse>(
                       "RegisterWorker", again, shard, shard + 1,
                       PSKIT_SEND(stubs_[shard][channel], RegisterWorker))
                       .status();
  if (!s.ok()) {
    spdlog::warn("worker {}: registering again on shard {}: {}", worker_id,
                 shard, s.ToString());
  }
  return s.ok();
}

absl::StatusOr<bool> Client::ReportEvaluation(absl::string_view ns,
                                              const v1::Evaluation& eval) {
  v1::ReportEvaluationRequest req;
  req.set_namespace_(NamespaceOf(ns));
  *req.mutable_evaluation() = eval;
  PSKIT_ASSIGN_OR_RETURN(
      auto answers, Broadcast<v1::ReportEvaluationResponse>(
                        "ReportEvaluation", req, 0, layout_.num_shards(),
                        PSKIT_SEND(stubs_[shard][channel], ReportEvaluation)));
  bool done = false;
  for (const v1::ReportEvaluationResponse& a : answers) done |= a.job_done();
  return done;
}

uint64_t Client::worker_id() const {
  absl::MutexLock lock(&mu_);
  return worker_id_;
}

absl::Status Client::Leave() {
  v1::LeaveRequest req;
  {
    absl::MutexLock lock(&mu_);
    req.set_worker_id(worker_id_);
  }
  if (req.worker_id() == 0) return absl::OkStatus();
  PSKIT_RETURN_IF_ERROR(
      Broadcast<v1::LeaveResponse>("Leave", req, 0, layout_.num_shards(),
                                   PSKIT_SEND(stubs_[shard][channel], Leave))
          .status());
  absl::MutexLock lock(&mu_);
  if (worker_id_ == req.worker_id()) worker_id_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::CheckpointInfo>> Client::Checkpoint(
    std::string id) {
  v1::CheckpointRequest req;
  req.set_id(id.empty() ? absl::StrCat("ckpt-", absl::ToUnixMillis(absl::Now()))
                        : std::move(id));
  auto got = admin_->Checkpoint(req);
  PSKIT_RETURN_IF_ERROR(AllOk("Checkpoint", got));
  std::vector<v1::CheckpointInfo> out;
  for (const auto& r : got) out.push_back(r.response.checkpoint());
  return out;
}

absl::StatusOr<std::vector<v1::StatusResponse>> Client::Status(
    bool evaluations) {
  v1::StatusRequest req;
  req.set_evaluations(evaluations);
  auto got = admin_->Status(req);
  PSKIT_RETURN_IF_ERROR(AllOk("Status", got));
  std::vector<v1::StatusResponse> out;
  for (auto& r : got) out.push_back(std::move(r.response));
  return out;
}

absl::StatusOr<std::vector<v1::DropNamespaceResponse>> Client::DropNamespace(
    const std::string& ns) {
  auto got = admin_->DropNamespace(ns);
  PSKIT_RETURN_IF_ERROR(AllOk("DropNamespace", got));
  std::vector<v1::DropNamespaceResponse> out;
  for (auto& r : got) out.push_back(std::move(r.response));
  return out;
}

absl::StatusOr<std::vector<v1::CheckpointInfo>> Client::Restore(
    const std::string& id) {
  v1::RestoreRequest req;
  req.set_id(id);
  auto got = admin_->Restore(req);
  PSKIT_RETURN_IF_ERROR(AllOk("Restore", got));
  // Versions pulled before the restore mean nothing now.
  {
    absl::MutexLock lock(&mu_);
    versions_.clear();
  }
  std::vector<v1::CheckpointInfo> out;
  for (const auto& r : got) out.push_back(r.response.checkpoint());
  return out;
}

#undef PSKIT_SEND

}  // namespace pskit
