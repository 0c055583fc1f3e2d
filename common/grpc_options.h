// common/grpc_options.h
//
// The gRPC channel and server settings every pskit process uses: message
// size limits, keepalive and reconnect backoff, in one place so client and
// server agree.
//
// Thread safety: pure functions.
#ifndef PSKIT_COMMON_GRPC_OPTIONS_H_
#define PSKIT_COMMON_GRPC_OPTIONS_H_

#include <grpcpp/server_builder.h>
#include <grpcpp/support/channel_arguments.h>

namespace pskit {

// Largest gRPC message a process sends or receives. Default for both sides;
// requests are split well below it (ClientOptions::max_request_bytes).
inline constexpr int kDefaultMaxMessageBytes = 64 << 20;

// Keepalive: a ping every 20 s on an idle connection, dead after 10 s
// without an answer, so a vanished shard is noticed within half a minute
// even when no call is in flight.
inline constexpr int kKeepaliveTimeMs = 20000;
inline constexpr int kKeepaliveTimeoutMs = 10000;

// Reconnect backoff: a restarted shard is reached again within about a
// second, instead of gRPC's default of up to two minutes.
inline constexpr int kInitialReconnectBackoffMs = 100;
inline constexpr int kMaxReconnectBackoffMs = 1000;
// How long one connection attempt (TCP and HTTP/2 handshake) may take.
// gRPC reads it from GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, which does not delay
// the next attempt after a refused connection (that is the backoff above).
// It was 100 ms, the backoff's value: on a loaded host a container's psctl
// then failed with "connection attempt timed out before receiving SETTINGS
// frame" against a healthy shard.
inline constexpr int kConnectTimeoutMs = 3000;

// Shortest time between two DNS lookups of a shard's name that a failed
// connection asks for: a shard back on another address (a rescheduled pod)
// is found again within about a second, instead of after gRPC's default
// 30 s (measured: 20 s of standstill with it). A lookup happens only when a
// connection fails, so this costs DNS nothing while all is well.
inline constexpr int kMinTimeBetweenResolutionsMs = 1000;

// Arguments for a client channel. `channel_index` makes channels to the same
// address open separate TCP connections (gRPC would otherwise share one).
grpc::ChannelArguments ClientChannelArguments(int max_message_bytes,
                                              int channel_index);

// Applies the same limits and keepalive settings to a server builder.
void ConfigureServerBuilder(int max_message_bytes,
                            grpc::ServerBuilder* builder);

}  // namespace pskit

#endif  // PSKIT_COMMON_GRPC_OPTIONS_H_
