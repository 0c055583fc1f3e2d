// AdminClient, the one per-shard Admin fan-out, against real shards on
// 127.0.0.1: one result per shard in the order asked, a failing shard named
// by index and address, requests to chosen shards only.
#include "client/admin_client.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::TestCluster;

// "127.0.0.1:<port>" with nothing listening (the port was free a moment ago).
std::string ClosedAddress() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "cannot bind 127.0.0.1:0";
  }
  close(fd);
  return absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
}

TEST(AdminClient, OneResultPerShardAndTheUnreachableOneNamed) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  const std::string closed = ClosedAddress();
  AdminOptions o;
  o.timeout = absl::Seconds(5);
  ASSERT_OK_AND_ASSIGN(
      auto admin,
      AdminClient::Connect(
          {cluster->addresses()[0], closed, cluster->addresses()[1]}, o));
  const auto results = admin->Status();
  ASSERT_EQ(results.size(), 3u);
  EXPECT_OK(results[0].status);
  EXPECT_EQ(results[0].shard, 0u);
  EXPECT_EQ(results[0].response.shard_index(), 0u);
  EXPECT_OK(results[2].status);
  EXPECT_EQ(results[2].response.shard_index(), 1u);
  ASSERT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].address, closed);
  EXPECT_TRUE(absl::StrContains(results[1].Error().message(),
                                absl::StrCat("shard 1 (", closed, ")")))
      << results[1].Error();
  const absl::Status all = AllOk("Status", results);
  EXPECT_EQ(all.code(), results[1].status.code());
  EXPECT_TRUE(absl::StartsWith(all.message(), "Status: ")) << all;
  EXPECT_TRUE(absl::StrContains(all.message(), closed)) << all;
  EXPECT_FALSE(absl::StrContains(all.message(), cluster->addresses()[0]))
      << all;
}

TEST(AdminClient, RequestsGoOnlyToTheShardsNamed) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(3));
  ASSERT_OK_AND_ASSIGN(auto admin,
                       AdminClient::Connect(cluster->addresses(), {}));
  const std::vector<ShardRequest<v1::CheckpointRequest>> none;
  EXPECT_TRUE(admin->Checkpoint(none).empty());
  v1::SetConfigRequest set;
  set.set_namespace_("missing");
  const auto results = admin->SetConfig({{2, set}, {0, set}});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].shard, 2u);
  EXPECT_EQ(results[1].shard, 0u);
  // Neither shard knows the namespace: each refusal names its own shard.
  for (const auto& r : results) {
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(absl::StrContains(
        r.Error().message(), absl::StrCat("shard ", r.shard, " (",
                                          cluster->addresses()[r.shard], ")")))
        << r.Error();
  }
}

TEST(AdminClient, AShardIndexOutOfRangeIsInvalidAndNothingIsSent) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  ASSERT_OK_AND_ASSIGN(auto admin,
                       AdminClient::Connect(cluster->addresses(), {}));
  v1::SetConfigRequest set;
  set.set_namespace_("missing");
  const auto results = admin->SetConfig({{0, set}, {7, set}});
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument) << r.Error();
    EXPECT_TRUE(absl::StrContains(r.Error().message(), "shard 7"))
        << r.Error();
  }
}

// A shard that failed for a reason of its own is not hidden behind one that
// was merely down: AllOk reports the real error, with its code, and names
// the down shard only when it is the only kind of failure.
TEST(AdminClient, AllOkPutsARealErrorBeforeAShardThatStayedDown) {
  ShardResult<v1::StatusResponse> down;
  down.shard = 0;
  down.status = absl::UnavailableError("connection refused");
  down.description = "shard 0 (h0:1) still unavailable after 3 attempts";
  down.gave_up_retrying = true;
  ShardResult<v1::StatusResponse> refused;
  refused.shard = 1;
  refused.status = absl::FailedPreconditionError("no data dir");
  refused.description = "shard 1 (h1:1): no data dir";
  ShardResult<v1::StatusResponse> fine;
  fine.shard = 2;

  absl::Status s = AllOk("Checkpoint", std::vector{down, refused, fine});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(s.message(), "Checkpoint: shard 1 (h1:1): no data dir");

  s = AllOk("Checkpoint", std::vector{fine, down, down});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(s.message(),
            "Checkpoint: shard 0 (h0:1) still unavailable after 3 attempts");

  EXPECT_OK(AllOk("Checkpoint", std::vector{fine, fine}));
}

TEST(AdminClient, ConnectRefusesAnEmptyListOrAddress) {
  EXPECT_EQ(AdminClient::Connect({}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AdminClient::Connect({"127.0.0.1:1", ""}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pskit
