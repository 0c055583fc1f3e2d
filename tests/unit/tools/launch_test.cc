// The pieces of psrun's launcher that need no process: line splitting, wait
// statuses, the accuracy trend, number formats, metrics ports and the
// worker-flag checks, the restart policy's options.
// tests/integration/psrun_test.cc runs psrun itself.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tools/psrun/launch/child_process.h"
#include "tools/psrun/launch/launcher.h"
#include "tools/psrun/launch/ports.h"
#include "tools/psrun/launch/progress.h"

namespace pskit::launch {
namespace {

TEST(PsrunLineSplitter, WholeLinesOnlyAcrossReads) {
  LineSplitter s;
  EXPECT_TRUE(s.Append("hel").empty());
  EXPECT_EQ(s.Append("lo\nwor"), std::vector<std::string>({"hello"}));
  EXPECT_EQ(s.Append("ld\r\n\nlast"), std::vector<std::string>({"world", ""}));
  EXPECT_EQ(s.Finish(), std::vector<std::string>({"last"}));
  EXPECT_TRUE(s.Finish().empty());
}

TEST(PsrunLineSplitter, CutsEndlessLines) {
  LineSplitter s(/*max_line=*/4);
  EXPECT_EQ(s.Append("abcdefghij\nxy\n"),
            std::vector<std::string>({"abcd", "efgh", "ij", "xy"}));
  EXPECT_EQ(s.Append("abcd\n"), std::vector<std::string>({"abcd"}));
}

TEST(PsrunWaitStatus, SaysHowAProcessEnded) {
  EXPECT_EQ(DescribeWaitStatus(0), "exited normally");
  EXPECT_EQ(DescribeWaitStatus(1 << 8), "exited with status 1");
  EXPECT_EQ(DescribeWaitStatus(SIGKILL), "was killed by signal 9 (Killed)");
}

// The error 1 - accuracy decaying as 0.5 exp(-t/2): the estimate is exact.
double Curve(double e0, double rate, double t) {
  return 1.0 - e0 * std::exp(-rate * t);
}

TEST(PsrunTrend, EstimatesTimeToTargetFromTheDecayingError) {
  AccuracyTrend t;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_FALSE(t.TimeToReach(0.9).has_value());
  t.Add(t0, Curve(0.5, 0.5, 0));
  t.Add(t0 + absl::Seconds(1), Curve(0.5, 0.5, 1));
  EXPECT_FALSE(t.TimeToReach(0.9).has_value()) << "two points are no trend";
  t.Add(t0 + absl::Seconds(2), Curve(0.5, 0.5, 2));
  t.Add(t0 + absl::Seconds(2), 0.99);  // the same time again: ignored
  ASSERT_TRUE(t.TimeToReach(Curve(0.5, 0.5, 6)).has_value());
  EXPECT_NEAR(absl::ToDoubleSeconds(*t.TimeToReach(Curve(0.5, 0.5, 6))), 4.0,
              1e-6);
  EXPECT_EQ(*t.TimeToReach(0.6), absl::ZeroDuration());
  EXPECT_FALSE(t.TimeToReach(1.0).has_value()) << "an error of 0 never comes";
  EXPECT_EQ(t.latest(), Curve(0.5, 0.5, 2));
  EXPECT_EQ(t.FirstAtOrAbove(0.55), t0 + absl::Seconds(1));
  EXPECT_FALSE(t.FirstAtOrAbove(0.9).has_value());
}

TEST(PsrunTrend, NoEstimateWhenFlatOrFalling) {
  AccuracyTrend t;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 5; ++i) t.Add(t0 + absl::Seconds(i), 0.8 - 0.01 * i);
  EXPECT_FALSE(t.TimeToReach(0.9).has_value());
  EXPECT_EQ(t.best(), 0.8);
  EXPECT_EQ(t.FirstAtOrAbove(0.8), t0);
}

TEST(PsrunTrend, UsesOnlyTheRecentWindow) {
  AccuracyTrend t(absl::Seconds(10), 11);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  // Fast early progress, then a slow climb: the estimate follows the latter.
  t.Add(t0, 0.1);
  t.Add(t0 + absl::Seconds(1), 0.5);
  for (int i = 0; i <= 10; ++i) {
    t.Add(t0 + absl::Seconds(20 + i), Curve(0.2, 0.05, i));
  }
  ASSERT_TRUE(t.TimeToReach(Curve(0.2, 0.05, 20)).has_value());
  EXPECT_NEAR(absl::ToDoubleSeconds(*t.TimeToReach(Curve(0.2, 0.05, 20))), 10.0,
              1e-3);
}

TEST(PsrunFormat, CompactNumbersAndDurations) {
  EXPECT_EQ(FormatCount(950), "950");
  EXPECT_EQ(FormatCount(12345), "12.3K");
  EXPECT_EQ(FormatCount(4560000), "4.56M");
  EXPECT_EQ(FormatCount(999999), "1.00M");
  EXPECT_EQ(HumanDuration(absl::Milliseconds(850)), "850 ms");
  EXPECT_EQ(HumanDuration(absl::Seconds(4.62)), "4.6 s");
  EXPECT_EQ(HumanDuration(absl::Seconds(12.4)), "12 s");
  EXPECT_EQ(HumanDuration(absl::Seconds(185)), "3 min 05 s");
  EXPECT_EQ(HumanDuration(absl::Hours(2) + absl::Minutes(4)), "2 h 04 min");
}

TEST(PsrunPorts, FixedLayoutWithFallbackForABusyPort) {
  // Hold a port, then ask for a layout whose shard0 port is that one.
  int held = -1;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  held = ntohs(addr.sin_port);
  if (held + 101 > 65535) {
    close(fd);
    GTEST_SKIP() << "port " << held << " too high for this layout";
  }
  ASSERT_OK_AND_ASSIGN(MetricsPorts p, ChooseMetricsPorts(held, 2, 2, true));
  close(fd);
  ASSERT_EQ(p.shards.size(), 2u);
  EXPECT_NE(p.shards[0], held);
  ASSERT_GE(p.warnings.size(), 1u);
  EXPECT_TRUE(absl::StrContains(p.warnings[0], absl::StrCat(held)))
      << p.warnings[0];
  // The rest keep their fixed places unless something else holds them.
  if (p.warnings.size() == 1) {
    EXPECT_EQ(p.shards[1], held + 1);
    EXPECT_EQ(p.evaluator, held + 99);
    EXPECT_EQ(p.workers[1], held + 101);
  }

  ASSERT_OK_AND_ASSIGN(MetricsPorts any, ChooseMetricsPorts(0, 3, 2, false));
  EXPECT_TRUE(any.warnings.empty());
  EXPECT_EQ(any.evaluator, -1);
  std::vector<int> all = any.shards;
  all.insert(all.end(), any.workers.begin(), any.workers.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::unique(all.begin(), all.end()), all.end()) << "distinct";
}

TEST(PsrunFlags, WorkerFlagsPsrunSetsItselfAreRefused) {
  EXPECT_FALSE(InspectWorkerArgs({"--shards", "a:1"}).ok());
  EXPECT_FALSE(InspectWorkerArgs({"--rank=0"}).ok());
  EXPECT_FALSE(InspectWorkerArgs({"-world", "2"}).ok());
  EXPECT_FALSE(InspectWorkerArgs({"--metrics_port=0"}).ok());
  EXPECT_FALSE(InspectWorkerArgs({"--target_accuracy", "high"}).ok());
  ASSERT_OK_AND_ASSIGN(
      WorkerFlagInfo info,
      InspectWorkerArgs({"--dataset", "synthetic", "--target_accuracy=0.9",
                         "--namespace", "job7", "-eval_interval_s", "0.5"}));
  EXPECT_EQ(info.target_accuracy, 0.9);
  EXPECT_EQ(info.ns, "job7");
  EXPECT_EQ(info.eval_interval_s, 0.5);
  EXPECT_TRUE(info.evaluator_can_end);
  ASSERT_OK_AND_ASSIGN(info, InspectWorkerArgs({"--lr", "0.1"}));
  EXPECT_FALSE(info.evaluator_can_end);
  EXPECT_FALSE(info.target_accuracy.has_value());
}

// The restart policy's options: a negative count or backoff is refused
// with the flag named, before anything starts.
TEST(PsrunFlags, RestartPolicyIsChecked) {
  LauncherOptions o;
  o.bin_dir = "/nonexistent";  // the restart check comes before binaries
  o.restart_shards = -1;
  absl::Status s = ValidateLauncherOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "--restart_shards")) << s;
  o.restart_shards = 3;
  o.restart_backoff = absl::Seconds(-1);
  s = ValidateLauncherOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "--restart_backoff_s")) << s;
  o.restart_backoff = absl::Seconds(1);
  // Valid now: what is left is the missing binary.
  EXPECT_EQ(ValidateLauncherOptions(o).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace pskit::launch
