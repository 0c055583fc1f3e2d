// client/admin_client.h
//
// AdminClient: the one per-shard fan-out of pskit.v1.Admin calls (Status,
// Checkpoint, ListCheckpoints, Restore, SetConfig, Drain, DropNamespace). Every call goes
// to the chosen shards at once and comes back as one ShardResult per shard,
// in the order asked, each failure naming its shard (index and address).
// Client's admin calls, psctl and psrun's monitor all use it.
//
//   AdminOptions o;
//   o.timeout = absl::Seconds(5);
//   PSKIT_ASSIGN_OR_RETURN(auto admin, AdminClient::Connect({"h1:7000",
//   "h2:7000"}, o)); for (const auto& r : admin->Status()) {
//     if (!r.ok()) std::cerr << r.Error() << "\n";  // "shard 1 (h2:7000): ..."
//   }
//   PSKIT_RETURN_IF_ERROR(AllOk("Status", admin->Status()));
//
// Thread safety: all methods may be called concurrently.
#ifndef PSKIT_CLIENT_ADMIN_CLIENT_H_
#define PSKIT_CLIENT_ADMIN_CLIENT_H_

#include <grpcpp/channel.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "common/clock.h"
#include "common/grpc_status.h"
#include "pskit/v1/admin.grpc.pb.h"

namespace pskit {

struct AdminOptions {
  // Deadline of each fan-out, retries included. Default: 60 s.
  absl::Duration timeout = absl::Seconds(60);
  // Wait for an unreachable shard to come up (until the deadline) and retry
  // one that answers UNAVAILABLE or CANCELLED, with backoff. Client sets
  // both (a restarting shard is waited for); psctl and psrun's monitor want
  // an unreachable shard reported at once. Default: false.
  bool wait_for_ready = false;
  bool retry_unavailable = false;
  // First and largest wait between retries. Default: 50 ms and 2 s.
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  // The clock retries and backoffs are measured on (see FanOutOptions).
  // Borrowed; must outlive the AdminClient. Default: the wall clock.
  const Clock* clock = SystemClock();
  // TLS files and bearer token of Connect's channels (common/channel.h);
  // checked by Connect. Default: plaintext, no token.
  ChannelSecurity security;
};

// One shard's answer to one fan-out.
template <typename Resp>
struct ShardResult {
  uint32_t shard = 0;
  std::string address;
  // The shard's gRPC status: OK, or its error as the shard (or gRPC) gave it.
  absl::Status status;
  Resp response;  // meaningful when status is OK
  // When not ok(): one line naming the shard and why, e.g. "shard 1
  // (h2:7000): <message>", "could not connect to shard 1 (h2:7000) within
  // 5s; ..." or "shard 1 (h2:7000) still unavailable after 4 attempts ...".
  std::string description;
  // Whether the shard still answered UNAVAILABLE or CANCELLED when the
  // retries (AdminOptions::retry_unavailable) stopped.
  bool gave_up_retrying = false;

  bool ok() const { return status.ok(); }
  // status's code with `description` as its message; OK if ok().
  absl::Status Error() const {
    if (status.ok()) return status;
    return absl::Status(status.code(), description);
  }
};

// A request for one shard.
template <typename Req>
struct ShardRequest {
  uint32_t shard = 0;
  Req request;
};

// OK when every result is; otherwise "op: shard i (addr): msg; shard j ..."
// naming each shard that failed for a reason of its own, with the first such
// failure's code. Only when every failure is a shard that stayed unavailable
// through the retries: UNAVAILABLE naming the first of those. (The rule of
// client_internal::JoinFailures: a real error is not hidden behind a shard
// that was merely down.)
template <typename Resp>
absl::Status AllOk(absl::string_view op,
                   const std::vector<ShardResult<Resp>>& results) {
  absl::Status failed;
  const ShardResult<Resp>* gave_up = nullptr;
  for (const ShardResult<Resp>& r : results) {
    if (r.ok()) continue;
    if (r.gave_up_retrying) {
      if (gave_up == nullptr) gave_up = &r;
      continue;
    }
    const absl::Status e = r.Error();
    failed = failed.ok()
                 ? absl::Status(e.code(), absl::StrCat(op, ": ", e.message()))
                 : absl::Status(failed.code(), absl::StrCat(failed.message(),
                                                            "; ", e.message()));
  }
  if (!failed.ok() || gave_up == nullptr) return failed;
  return absl::UnavailableError(absl::StrCat(op, ": ", gave_up->description));
}

class AdminClient {
 public:
  // Opens a channel to each of `shards` (host:port, in shard-index order)
  // through MakeChannel. Does not wait for them. INVALID_ARGUMENT for an
  // empty list or address, or options.security that CheckChannelSecurity
  // refuses.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<AdminClient>> Connect(
      std::vector<std::string> shards, const AdminOptions& options);
  // Uses existing channels, one per shard in shard order (Client shares its
  // own). `channels` must be as many as `shards`.
  AdminClient(std::vector<std::string> shards,
              std::vector<std::shared_ptr<grpc::Channel>> channels,
              const AdminOptions& options);
  ~AdminClient();

  // Each call: the request to every shard, or requests to the shards named
  // in them (one result per request, in their order). `wait` (at most the
  // timeout): calls still open then are cancelled on this side and answer
  // CANCELLED, though the shard may go on with the work. Never fails as a
  // whole: look at each result (or AllOk).
  std::vector<ShardResult<v1::StatusResponse>> Status(
      const v1::StatusRequest& req = {});
  std::vector<ShardResult<v1::CheckpointResponse>> Checkpoint(
      const v1::CheckpointRequest& req);
  std::vector<ShardResult<v1::CheckpointResponse>> Checkpoint(
      const std::vector<ShardRequest<v1::CheckpointRequest>>& reqs,
      absl::Duration wait = absl::InfiniteDuration());
  std::vector<ShardResult<v1::ListCheckpointsResponse>> ListCheckpoints(
      const v1::ListCheckpointsRequest& req = {});
  std::vector<ShardResult<v1::RestoreResponse>> Restore(
      const v1::RestoreRequest& req);
  std::vector<ShardResult<v1::SetConfigResponse>> SetConfig(
      const v1::SetConfigRequest& req);
  std::vector<ShardResult<v1::SetConfigResponse>> SetConfig(
      const std::vector<ShardRequest<v1::SetConfigRequest>>& reqs);
  std::vector<ShardResult<v1::DrainResponse>> Drain(
      const v1::DrainRequest& req);
  // Drops namespace `ns` (Admin/DropNamespace): shard 0 first; when it
  // refuses, only its result comes back (no other shard was asked, so
  // nothing changed anywhere). Then every other shard at once; one answering
  // NOT_FOUND had nothing of it (an earlier drop got that far) and counts
  // as dropped (OK, nothing freed). Shard 0's NOT_FOUND does not stop the
  // others (a drop that got past shard 0 and was refused further on is
  // finished by calling again); it counts as dropped when another shard
  // dropped it, and the answers come back as they are when none did.
  std::vector<ShardResult<v1::DropNamespaceResponse>> DropNamespace(
      const std::string& ns);

  // The same request for every shard, for the per-shard overloads.
  template <typename Req>
  std::vector<ShardRequest<Req>> ToEveryShard(const Req& req) const {
    std::vector<ShardRequest<Req>> out;
    for (uint32_t s = 0; s < shards_.size(); ++s) out.push_back({s, req});
    return out;
  }

  const std::vector<std::string>& shards() const { return shards_; }

 private:
  template <typename Resp, typename Req, typename Start>
  std::vector<ShardResult<Resp>> Call(
      const char* op, const std::vector<ShardRequest<Req>>& reqs,
      absl::Duration wait, Start start);

  // Constant after construction.
  const std::vector<std::string> shards_;
  const std::vector<std::shared_ptr<grpc::Channel>> channels_;
  const AdminOptions options_;
  std::vector<std::unique_ptr<v1::Admin::Stub>> stubs_;  // [shard]
};

}  // namespace pskit

#endif  // PSKIT_CLIENT_ADMIN_CLIENT_H_
