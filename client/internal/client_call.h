// client/internal/client_call.h
//
// What client.cc (data plane) and client_control.cc (worker control and
// admin calls) share: Client::Call, a call of one fan-out; Client::Run, which
// sends a set of them through client_internal::FanOut; PSKIT_SEND, a `send`
// for Run that calls one method of a stub.
//
// Thread safety: as Client's.
#ifndef PSKIT_CLIENT_INTERNAL_CLIENT_CALL_H_
#define PSKIT_CLIENT_INTERNAL_CLIENT_CALL_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "client/client.h"
#include "client/internal/fan_out.h"
#include "common/layout.h"
#include "common/validation.h"

namespace pskit {

template <typename Req, typename Resp>
struct Client::Call : client_internal::FanOutCall {
  std::vector<Piece> pieces;
  Req req;
  Resp resp;
};

// A `send` for Run that calls `Method` on `stub`, an expression of `shard`
// and `channel`.
#define PSKIT_SEND(stub, Method)                                              \
  [this](uint32_t shard, size_t channel, grpc::ClientContext* ctx,            \
         const auto* req, auto* resp, std::function<void(grpc::Status)> cb) { \
    (void)channel;                                                            \
    (stub)->async()->Method(ctx, req, resp, std::move(cb));                   \
  }

template <typename Req, typename Resp, typename Send, typename OnOk>
absl::Status Client::Run(
    const char* op, std::vector<Call<Req, Resp>>& calls, Send send, OnOk on_ok,
    std::function<bool(uint32_t, const absl::Status&)> recover, size_t window,
    std::function<void(Call<Req, Resp>&)> prepare) {
  client_internal::FanOutOptions o;
  o.timeout = options_.timeout;
  // Wait for a (re)connecting shard instead of failing at once.
  o.wait_for_ready = true;
  o.retry_unavailable = true;
  o.initial_backoff = options_.initial_backoff;
  o.max_backoff = options_.max_backoff;
  o.clock = options_.clock;
  o.op = op;
  o.addresses = &shards_;
  o.recover = std::move(recover);
  o.max_in_flight_per_shard = window;
  // A shard's calls take its channels in turn, by their order among that
  // shard's calls (the plan interleaves shards, so the index in `calls`
  // would send every call of a shard down one channel whenever the numbers
  // of shards and of channels share a factor).
  std::vector<uint32_t> lane(calls.size());
  {
    std::vector<uint32_t> next(stubs_.size(), 0);
    for (size_t i = 0; i < calls.size(); ++i) lane[i] = next[calls[i].shard]++;
  }
  const int attempts = client_internal::FanOut(
      calls, o,
      [&](Call<Req, Resp>& c, size_t i,
          std::function<void(grpc::Status)> done) {
        if (prepare) prepare(c);
        c.resp.Clear();
        send(c.shard, lane[i] % stubs_[c.shard].size(), c.ctx.get(), &c.req,
             &c.resp, std::move(done));
      },
      on_ok);
  return client_internal::JoinFailures(op, calls, shards_, channels_, o,
                                       attempts);
}

}  // namespace pskit

#endif  // PSKIT_CLIENT_INTERNAL_CLIENT_CALL_H_
