// client/admin_client.cc: AdminClient, the per-shard Admin fan-out over
// client_internal::FanOut.
#include "client/admin_client.h"

#include <cstdlib>
#include <utility>

#include "spdlog/spdlog.h"
#include "client/internal/fan_out.h"
#include "common/channel.h"

namespace pskit {
namespace {

template <typename Req, typename Resp>
struct AdminCall : client_internal::FanOutCall {
  Req req;
  Resp resp;
};

}  // namespace

absl::StatusOr<std::unique_ptr<AdminClient>> AdminClient::Connect(
    std::vector<std::string> shards, const AdminOptions& options) {
  if (shards.empty()) {
    return absl::InvalidArgumentError(
        "no shard addresses; give host:port of every shard, in shard order");
  }
  if (absl::Status s = CheckChannelSecurity(options.security); !s.ok()) {
    return s;
  }
  ChannelOptions channel_options;
  channel_options.security = options.security;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (size_t i = 0; i < shards.size(); ++i) {
    if (shards[i].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard address ", i, " is empty"));
    }
    channels.push_back(MakeChannel(shards[i], channel_options));
  }
  return std::make_unique<AdminClient>(std::move(shards), std::move(channels),
                                       options);
}

AdminClient::AdminClient(std::vector<std::string> shards,
                         std::vector<std::shared_ptr<grpc::Channel>> channels,
                         const AdminOptions& options)
    : shards_(std::move(shards)),
      channels_(std::move(channels)),
      options_(options) {
  // A broken precondition of the caller's code, not bad input.
  if (channels_.size() != shards_.size()) {
    spdlog::critical("AdminClient: {} channels for {} shards", channels_.size(),
                     shards_.size());
    std::abort();
  }
  for (const auto& channel : channels_) {
    stubs_.push_back(v1::Admin::NewStub(channel));
  }
}

AdminClient::~AdminClient() = default;

template <typename Resp, typename Req, typename Start>
std::vector<ShardResult<Resp>> AdminClient::Call(
    const char* op, const std::vector<ShardRequest<Req>>& reqs,
    absl::Duration wait, Start start) {
  using CallT = AdminCall<Req, Resp>;
  // A shard index the client does not know is the caller's error: it gets
  // INVALID_ARGUMENT and nothing is sent anywhere.
  for (const ShardRequest<Req>& r : reqs) {
    if (r.shard >= shards_.size()) {
      std::vector<ShardResult<Resp>> out(reqs.size());
      for (size_t i = 0; i < reqs.size(); ++i) {
        out[i].shard = reqs[i].shard;
        out[i].status = absl::InvalidArgumentError(absl::StrCat(
            op, " for shard ", r.shard, ", but there are ", shards_.size(),
            " shards (0..", shards_.size() - 1, "); nothing was sent"));
        out[i].description = std::string(out[i].status.message());
        if (reqs[i].shard < shards_.size()) {
          out[i].address = shards_[reqs[i].shard];
        }
      }
      return out;
    }
  }
  std::vector<CallT> calls(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    calls[i].shard = reqs[i].shard;
    calls[i].req = reqs[i].request;
  }
  client_internal::FanOutOptions o;
  o.timeout = options_.timeout;
  o.wait = wait;
  o.wait_for_ready = options_.wait_for_ready;
  o.retry_unavailable = options_.retry_unavailable;
  o.initial_backoff = options_.initial_backoff;
  o.max_backoff = options_.max_backoff;
  o.clock = options_.clock;
  o.op = op;
  o.addresses = &shards_;
  const int attempts = client_internal::FanOut(
      calls, o,
      [&](CallT& c, size_t, std::function<void(grpc::Status)> done) {
        c.resp.Clear();
        start(stubs_[c.shard].get(), c.ctx.get(), &c.req, &c.resp,
              std::move(done));
      },
      [](CallT&) { return absl::OkStatus(); });
  std::vector<ShardResult<Resp>> out(calls.size());
  for (size_t i = 0; i < calls.size(); ++i) {
    out[i].shard = calls[i].shard;
    out[i].address = shards_[calls[i].shard];
    out[i].status = calls[i].Outcome();
    out[i].response = std::move(calls[i].resp);
    if (out[i].ok()) continue;
    const uint32_t s = calls[i].shard;
    out[i].gave_up_retrying =
        o.retry_unavailable && client_internal::IsRetryable(out[i].status);
    out[i].description =
        out[i].gave_up_retrying
            ? client_internal::DescribeGaveUp(s, shards_[s], out[i].status,
                                              o.timeout, attempts)
            : client_internal::DescribeFailure(s, shards_[s], out[i].status,
                                               o.timeout, attempts,
                                               channels_[s].get());
  }
  return out;
}

// A `start` for Call that calls Admin method `Method`.
#define PSKIT_ADMIN_START(Method)                                      \
  [](v1::Admin::Stub* stub, grpc::ClientContext* ctx, const auto* req, \
     auto* resp, std::function<void(grpc::Status)> done) {             \
    stub->async()->Method(ctx, req, resp, std::move(done));            \
  }

std::vector<ShardResult<v1::StatusResponse>> AdminClient::Status(
    const v1::StatusRequest& req) {
  return Call<v1::StatusResponse>("Status", ToEveryShard(req),
                                  absl::InfiniteDuration(),
                                  PSKIT_ADMIN_START(Status));
}

std::vector<ShardResult<v1::CheckpointResponse>> AdminClient::Checkpoint(
    const v1::CheckpointRequest& req) {
  return Checkpoint(ToEveryShard(req));
}

std::vector<ShardResult<v1::CheckpointResponse>> AdminClient::Checkpoint(
    const std::vector<ShardRequest<v1::CheckpointRequest>>& reqs,
    absl::Duration wait) {
  return Call<v1::CheckpointResponse>("Checkpoint", reqs, wait,
                                      PSKIT_ADMIN_START(Checkpoint));
}

std::vector<ShardResult<v1::ListCheckpointsResponse>>
AdminClient::ListCheckpoints(const v1::ListCheckpointsRequest& req) {
  return Call<v1::ListCheckpointsResponse>("ListCheckpoints", ToEveryShard(req),
                                           absl::InfiniteDuration(),
                                           PSKIT_ADMIN_START(ListCheckpoints));
}

std::vector<ShardResult<v1::RestoreResponse>> AdminClient::Restore(
    const v1::RestoreRequest& req) {
  return Call<v1::RestoreResponse>("Restore", ToEveryShard(req),
                                   absl::InfiniteDuration(),
                                   PSKIT_ADMIN_START(Restore));
}

std::vector<ShardResult<v1::SetConfigResponse>> AdminClient::SetConfig(
    const v1::SetConfigRequest& req) {
  return SetConfig(ToEveryShard(req));
}

std::vector<ShardResult<v1::SetConfigResponse>> AdminClient::SetConfig(
    const std::vector<ShardRequest<v1::SetConfigRequest>>& reqs) {
  return Call<v1::SetConfigResponse>("SetConfig", reqs,
                                     absl::InfiniteDuration(),
                                     PSKIT_ADMIN_START(SetConfig));
}

std::vector<ShardResult<v1::DrainResponse>> AdminClient::Drain(
    const v1::DrainRequest& req) {
  return Call<v1::DrainResponse>("Drain", ToEveryShard(req),
                                 absl::InfiniteDuration(),
                                 PSKIT_ADMIN_START(Drain));
}

std::vector<ShardResult<v1::DropNamespaceResponse>> AdminClient::DropNamespace(
    const std::string& ns) {
  v1::DropNamespaceRequest req;
  req.set_namespace_(ns);
  // Shard 0 first: it refuses (live workers, no such namespace, a bad name)
  // before any shard changed.
  std::vector<ShardResult<v1::DropNamespaceResponse>> out =
      Call<v1::DropNamespaceResponse>("DropNamespace",
                                      std::vector<ShardRequest<
                                          v1::DropNamespaceRequest>>{{0, req}},
                                      absl::InfiniteDuration(),
                                      PSKIT_ADMIN_START(DropNamespace));
  // NOT_FOUND on shard 0 may be an earlier drop that got past it and was
  // refused further on: the others are asked too, so running the drop again
  // finishes it. It is NOT_FOUND only when no shard had the namespace.
  const bool missing_on_0 = out[0].status.code() == absl::StatusCode::kNotFound;
  if ((!out[0].ok() && !missing_on_0) || shards_.size() == 1) return out;
  std::vector<ShardRequest<v1::DropNamespaceRequest>> rest;
  for (uint32_t s = 1; s < shards_.size(); ++s) rest.push_back({s, req});
  std::vector<ShardResult<v1::DropNamespaceResponse>> others =
      Call<v1::DropNamespaceResponse>("DropNamespace", rest,
                                      absl::InfiniteDuration(),
                                      PSKIT_ADMIN_START(DropNamespace));
  bool dropped_somewhere = false;
  for (const auto& r : others) dropped_somewhere |= r.ok();
  if (missing_on_0 && !dropped_somewhere) {
    // Nowhere to drop (or refused where it is): every answer as it came.
    for (auto& r : others) out.push_back(std::move(r));
    return out;
  }
  const auto as_dropped = [](ShardResult<v1::DropNamespaceResponse>* r) {
    if (r->status.code() != absl::StatusCode::kNotFound) return;
    // Nothing of it there (an earlier drop got that far): dropped.
    r->status = absl::OkStatus();
    r->description.clear();
    r->response = v1::DropNamespaceResponse();
  };
  as_dropped(&out[0]);
  for (auto& r : others) {
    as_dropped(&r);
    out.push_back(std::move(r));
  }
  return out;
}

#undef PSKIT_ADMIN_START

}  // namespace pskit
