#include "client/internal/fan_out.h"

namespace pskit::client_internal {

std::string HostOf(const std::string& address) {
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find(']');
    if (close != std::string::npos) return address.substr(1, close - 1);
  }
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || address.find(':') != colon) return address;
  return address.substr(0, colon);
}

std::string DescribeFailure(uint32_t shard, const std::string& address,
                            const absl::Status& s, absl::Duration timeout,
                            int attempts, grpc::Channel* channel) {
  const std::string where = absl::StrCat("shard ", shard, " (", address, ")");
  if (IsNameNotResolved(s)) {
    return absl::StrCat(
        "the name '", HostOf(address), "' of ", where,
        " did not resolve within ", absl::FormatDuration(timeout), ": ",
        s.message(),
        "; is the name right, and is the shard up? (A Kubernetes headless "
        "Service publishes a pod's name only once the pod is ready.)");
  }
  if (s.code() != absl::StatusCode::kDeadlineExceeded) {
    return absl::StrCat(where, ": ", s.message());
  }
  const grpc_connectivity_state state =
      channel == nullptr ? GRPC_CHANNEL_READY
                         : channel->GetState(/*try_to_connect=*/false);
  if (state != GRPC_CHANNEL_READY && state != GRPC_CHANNEL_IDLE) {
    return absl::StrCat("could not connect to ", where, " within ",
                        absl::FormatDuration(timeout),
                        "; is ps-server running there, and is the address "
                        "right?");
  }
  return absl::StrCat(where, " did not answer within ",
                      absl::FormatDuration(timeout), " (attempt ", attempts,
                      ")");
}

std::string DescribeGaveUp(uint32_t shard, const std::string& address,
                           const absl::Status& s, absl::Duration timeout,
                           int attempts) {
  if (IsNameNotResolved(s)) {
    return DescribeFailure(shard, address, s, timeout, attempts, nullptr);
  }
  return absl::StrCat("shard ", shard, " (", address,
                      ") still unavailable after ", attempts, " attempts over ",
                      absl::FormatDuration(timeout), ": ", s.message());
}

}  // namespace pskit::client_internal
