// common/channel.h
//
// MakeChannel: the one place where pskit creates a gRPC channel. Client,
// AdminClient, psctl, psrun's monitor, the worker and the tests all call it,
// so what every channel needs (message limits, keepalive, reconnect backoff
// from common/grpc_options.h, and later TLS credentials and bearer tokens) is
// added here once.
//
// Example:
//   ChannelOptions o;
//   o.channel_index = 1;  // a second TCP connection to the same shard
//   std::shared_ptr<grpc::Channel> ch = MakeChannel("127.0.0.1:7000", o);
//   auto stub = v1::Admin::NewStub(ch);
//
// Thread safety: MakeChannel may be called from any thread; channels are
// thread-safe.
#ifndef PSKIT_COMMON_CHANNEL_H_
#define PSKIT_COMMON_CHANNEL_H_

#include <grpcpp/channel.h>

#include <memory>
#include <string>

#include "common/grpc_options.h"

namespace pskit {

struct ChannelOptions {
  // Largest gRPC message sent or received. Default: 64 MiB
  // (kDefaultMaxMessageBytes), the shards' default too.
  int max_message_bytes = kDefaultMaxMessageBytes;
  // Channels to one address with different indices open separate TCP
  // connections (gRPC would otherwise share one). Default: 0.
  int channel_index = 0;
  // Where TLS credentials (certificate files) and a bearer token will go:
  // today every channel is plaintext, as every shard listens without TLS.
};

// Returns a channel to `address` (host:port) with `options`. Does not
// connect: the first call does, and a channel reconnects by itself.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const ChannelOptions& options = {});

}  // namespace pskit

#endif  // PSKIT_COMMON_CHANNEL_H_
