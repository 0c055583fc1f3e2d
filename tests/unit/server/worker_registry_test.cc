// WorkerRegistry with a fake clock: leases renewed, lapsed and left, ids,
// names, and the namespace each live worker trains.
#include "server/worker_registry.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

TEST(WorkerRegistry, HeartbeatRenewsAndLapseRemoves) {
  testing::FakeClock clock;
  WorkerRegistry reg(&clock, absl::Seconds(10));
  const uint64_t a = reg.Register(0, "a").value();
  const uint64_t b = reg.Register(0, "b").value();
  EXPECT_NE(a, 0u);
  EXPECT_NE(a, b);
  EXPECT_EQ(reg.LiveCount(), 2u);

  clock.Advance(absl::Seconds(8));
  EXPECT_OK(reg.Heartbeat(a));  // a renewed until t=18
  clock.Advance(absl::Seconds(3));  // t=11: b lapsed
  EXPECT_OK(reg.CheckLive(a));
  EXPECT_EQ(reg.CheckLive(b).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.Heartbeat(b).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.LiveCount(), 1u);

  clock.Advance(absl::Seconds(8));  // t=19: a lapsed too
  EXPECT_EQ(reg.LiveCount(), 0u);
  EXPECT_EQ(reg.Heartbeat(a).code(), absl::StatusCode::kNotFound);
}

TEST(WorkerRegistry, ReRegisterKeepsTheRequestedId) {
  testing::FakeClock clock;
  WorkerRegistry reg(&clock, absl::Seconds(10));
  const uint64_t a = reg.Register(0, "a").value();
  clock.Advance(absl::Seconds(11));
  EXPECT_EQ(reg.CheckLive(a).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.Register(a, "a").value(), a);
  EXPECT_OK(reg.CheckLive(a));
}

TEST(WorkerRegistry, LeaveRemoves) {
  testing::FakeClock clock;
  WorkerRegistry reg(&clock, absl::Seconds(10));
  const uint64_t a = reg.Register(0, "a").value();
  EXPECT_OK(reg.Leave(a));
  EXPECT_EQ(reg.Leave(a).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.CheckLive(a).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.CheckLive(12345).code(), absl::StatusCode::kNotFound);
}

TEST(WorkerRegistry, RefusesTakingOverALiveIdAndBadNames) {
  testing::FakeClock clock;
  WorkerRegistry reg(&clock, absl::Seconds(10));
  const uint64_t a = reg.Register(0, "rank0").value();
  EXPECT_EQ(reg.Register(a, "rank1").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(reg.Register(a, "rank0").value(), a);  // renewing is fine
  EXPECT_EQ(reg.Register(0, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.Register(0, "two\nlines").status().code(),
            absl::StatusCode::kInvalidArgument);
  // Once the lease lapsed, the id is free for anyone.
  clock.Advance(absl::Seconds(11));
  EXPECT_EQ(reg.Register(a, "rank1").value(), a);
}

TEST(WorkerRegistry, KnowsEachLiveWorkersNamespace) {
  testing::FakeClock clock;
  WorkerRegistry reg(&clock, absl::Seconds(10));
  const uint64_t a = reg.Register(0, "a", "job").value();
  const uint64_t b = reg.Register(0, "b").value();  // "" is "default"
  EXPECT_EQ(reg.LiveIn("job"),
            std::vector<std::string>{absl::StrCat("a (id ", a, ")")});
  EXPECT_EQ(reg.LiveIn("default"),
            std::vector<std::string>{absl::StrCat("b (id ", b, ")")});
  EXPECT_TRUE(reg.LiveIn("other").empty());
  EXPECT_EQ(reg.Register(0, "c", "bad name").status().code(),
            absl::StatusCode::kInvalidArgument);

  // A heartbeat says which namespace the worker trains now.
  EXPECT_OK(reg.Heartbeat(b, "job"));
  EXPECT_EQ(reg.LiveIn("job").size(), 2u);
  EXPECT_TRUE(reg.LiveIn("default").empty());
  // One without a namespace ("", the Python binding's default) keeps it.
  EXPECT_OK(reg.Heartbeat(a));
  EXPECT_OK(reg.Heartbeat(b, ""));
  EXPECT_EQ(reg.LiveIn("job").size(), 2u);
  EXPECT_TRUE(reg.LiveIn("default").empty());
  EXPECT_OK(reg.Leave(a));
  EXPECT_EQ(reg.LiveIn("job"),
            std::vector<std::string>{absl::StrCat("b (id ", b, ")")});
  clock.Advance(absl::Seconds(11));  // b's lease lapsed
  EXPECT_TRUE(reg.LiveIn("job").empty());
}

}  // namespace
}  // namespace pskit
