#include "client/internal/fan_out.h"

namespace pskit::client_internal {

std::string DescribeFailure(uint32_t shard, const std::string& address,
                            const absl::Status& s, absl::Duration timeout,
                            int attempts, grpc::Channel* channel) {
  const std::string where = absl::StrCat("shard ", shard, " (", address, ")");
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
  return absl::StrCat("shard ", shard, " (", address,
                      ") still unavailable after ", attempts, " attempts over ",
                      absl::FormatDuration(timeout), ": ", s.message());
}

}  // namespace pskit::client_internal
