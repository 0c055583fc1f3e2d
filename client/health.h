// client/health.h
//
// CheckHealth: asks every shard's standard gRPC health service
// (grpc.health.v1.Health/Check, service "", what ps-server marks SERVING once
// it serves and NOT_SERVING when it drains) at once and says, per shard,
// whether it is serving and if not why. It needs nothing but the health
// service: a shard that has nothing declared is healthy. psctl health (and
// through it the Docker HEALTHCHECK) uses it.
//
//   HealthOptions o;
//   o.timeout = absl::Seconds(3);
//   for (const ShardHealth& h : CheckHealth({"h1:7000", "h2:7000"}, o)) {
//     if (!h.serving()) std::cerr << h.description << "\n";
//   }
//
// An unreachable shard is reported at once (no waiting for it to come up:
// a health check asks "now?"). A shard name that does not resolve yet is
// asked again until the timeout, as every fan-out does (client/internal/
// fan_out.h).
//
// Thread safety: CheckHealth may be called from any thread; it blocks until
// every shard answered or the timeout passed.
#ifndef PSKIT_CLIENT_HEALTH_H_
#define PSKIT_CLIENT_HEALTH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "common/clock.h"

namespace pskit {

struct HealthOptions {
  // Deadline of the whole check. Default: 3 s (a probe must be quick).
  absl::Duration timeout = absl::Seconds(3);
  // The clock a name's retries are measured on. Borrowed. Default: wall.
  const Clock* clock = SystemClock();
  // TLS files and bearer token of the channels (common/channel.h): a shard
  // with TLS serves its health service over TLS too. Default: plaintext.
  ChannelSecurity security;
};

// One shard's health.
struct ShardHealth {
  uint32_t shard = 0;
  std::string address;
  // The health service's answer ("SERVING", "NOT_SERVING", "UNKNOWN"), or
  // why there was none: "UNREACHABLE" (refused, or no connection within the
  // timeout), "NAME_NOT_RESOLVED" (the host name has no address),
  // "DEADLINE_EXCEEDED" (connected, no answer in time), or the gRPC code's
  // name (e.g. "UNIMPLEMENTED": no health service there).
  std::string state;
  // The gRPC error when there was no answer; OK otherwise.
  absl::Status error;
  // "" when serving; otherwise one line naming shard, address and why, e.g.
  // "shard 1 (h2:7000) is NOT_SERVING (draining or not started)".
  std::string description;

  bool serving() const { return state == "SERVING"; }
};

// Checks every shard of `shards` (host:port, in shard-index order) through
// MakeChannel, all at once. Returns one ShardHealth per shard, in order.
// Never fails as a whole; an empty address is reported as that shard's
// INVALID_ARGUMENT.
std::vector<ShardHealth> CheckHealth(const std::vector<std::string>& shards,
                                     const HealthOptions& options);

}  // namespace pskit

#endif  // PSKIT_CLIENT_HEALTH_H_
