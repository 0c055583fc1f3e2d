// client/health.cc: CheckHealth over client_internal::FanOut and the
// grpc.health.v1 stubs generated from proto/grpc/health/v1/health.proto.
#include "client/health.h"

#include <functional>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/internal/fan_out.h"
#include "common/channel.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace pskit {
namespace {

using HealthResponse = grpc::health::v1::HealthCheckResponse;

struct HealthCall : client_internal::FanOutCall {
  grpc::health::v1::HealthCheckRequest req;  // service "": the server
  HealthResponse resp;
};

// Fills h.state and h.description from a call that got no answer.
void DescribeNoAnswer(const absl::Status& s, absl::Duration timeout,
                      grpc::Channel* channel, ShardHealth* h) {
  const std::string where =
      absl::StrCat("shard ", h->shard, " (", h->address, ")");
  h->error = s;
  if (client_internal::IsNameNotResolved(s)) {
    h->state = "NAME_NOT_RESOLVED";
    h->description = client_internal::DescribeFailure(
        h->shard, h->address, s, timeout, /*attempts=*/0, channel);
    return;
  }
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
      h->state = "UNREACHABLE";
      h->description = absl::StrCat(where, " is unreachable: ", s.message());
      return;
    case absl::StatusCode::kDeadlineExceeded: {
      const grpc_connectivity_state state =
          channel->GetState(/*try_to_connect=*/false);
      if (state != GRPC_CHANNEL_READY && state != GRPC_CHANNEL_IDLE) {
        h->state = "UNREACHABLE";
        h->description =
            absl::StrCat(where, " is unreachable: no connection within ",
                         absl::FormatDuration(timeout));
      } else {
        h->state = "DEADLINE_EXCEEDED";
        h->description = absl::StrCat(where, " did not answer within ",
                                      absl::FormatDuration(timeout));
      }
      return;
    }
    case absl::StatusCode::kUnimplemented:
      h->state = "UNIMPLEMENTED";
      h->description = absl::StrCat(
          where, " has no gRPC health service (is it a ps-server?): ",
          s.message());
      return;
    default:
      h->state = absl::StatusCodeToString(s.code());
      h->description = absl::StrCat(where, ": ", s.ToString());
  }
}

}  // namespace

std::vector<ShardHealth> CheckHealth(const std::vector<std::string>& shards,
                                     const HealthOptions& options) {
  std::vector<ShardHealth> out(shards.size());
  std::vector<std::shared_ptr<grpc::Channel>> channels(shards.size());
  std::vector<std::unique_ptr<grpc::health::v1::Health::Stub>> stubs(
      shards.size());
  std::vector<HealthCall> calls;
  for (size_t i = 0; i < shards.size(); ++i) {
    out[i].shard = static_cast<uint32_t>(i);
    out[i].address = shards[i];
    if (shards[i].empty()) {
      out[i].state = "INVALID_ARGUMENT";
      out[i].error = absl::InvalidArgumentError("empty shard address");
      out[i].description = absl::StrCat("shard ", i, ": empty address");
      continue;
    }
    ChannelOptions channel_options;
    channel_options.security = options.security;
    channels[i] = MakeChannel(shards[i], channel_options);
    stubs[i] = grpc::health::v1::Health::NewStub(channels[i]);
    calls.emplace_back();
    calls.back().shard = static_cast<uint32_t>(i);
  }
  client_internal::FanOutOptions o;
  o.timeout = options.timeout;
  o.clock = options.clock;
  o.op = "health check";
  o.addresses = &shards;
  // wait_for_ready and retry_unavailable stay off: a shard that is down now
  // is unhealthy now.
  client_internal::FanOut(
      calls, o,
      [&](HealthCall& c, size_t, std::function<void(grpc::Status)> done) {
        c.resp.Clear();
        stubs[c.shard]->async()->Check(c.ctx.get(), &c.req, &c.resp,
                                       std::move(done));
      },
      [](HealthCall&) { return absl::OkStatus(); });
  for (const HealthCall& c : calls) {
    ShardHealth& h = out[c.shard];
    if (!c.status.ok()) {
      DescribeNoAnswer(FromGrpcStatus(c.status), options.timeout,
                       channels[c.shard].get(), &h);
      continue;
    }
    h.state = HealthResponse::ServingStatus_Name(c.resp.status());
    if (!h.serving()) {
      h.description = absl::StrCat(
          "shard ", h.shard, " (", h.address, ") is ", h.state,
          c.resp.status() == HealthResponse::NOT_SERVING
              ? " (draining, or not yet serving)"
              : "");
    }
  }
  return out;
}

}  // namespace pskit
