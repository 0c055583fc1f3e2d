// Client::Connect's checks of ClientOptions that need no shard: a bad
// window of requests in flight per shard is refused with a clear
// INVALID_ARGUMENT.
#include "client/client.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace pskit {
namespace {

absl::Status ConnectWithWindow(int window) {
  ClientOptions o;
  o.max_in_flight_per_shard = window;
  // Connect does not wait for the shard: nothing needs to listen here.
  return Client::Connect({"127.0.0.1:1"}, o).status();
}

TEST(ClientOptions, RefusesAWindowOutOfRange) {
  for (int bad : {-1, 1025}) {
    const absl::Status s = ConnectWithWindow(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(s.message(), "max_in_flight_per_shard is"))
        << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "use 1 to 1024")) << s;
  }
}

TEST(ClientOptions, AcceptsAWindowInRangeOrNone) {
  for (int ok : {0, 1, 4, 1024}) EXPECT_TRUE(ConnectWithWindow(ok).ok()) << ok;
}

TEST(ClientOptions, TheDefaultWindowBoundsWhatIsInFlight) {
  EXPECT_GT(ClientOptions().max_in_flight_per_shard, 0);
}

}  // namespace
}  // namespace pskit
