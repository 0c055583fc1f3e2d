// The pieces of psrun's launcher that need no process: line splitting, wait
// statuses, the accuracy trend, number formats, metrics ports and the
// worker-flag checks, the restart policy's options; the worker command's
// splitting, program search, environment contract and checks.
// tests/integration/psrun_test.cc runs psrun itself.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"
#include "tools/psrun/launch/child_process.h"
#include "tools/psrun/launch/launcher.h"
#include "tools/psrun/launch/ports.h"
#include "tools/psrun/launch/progress.h"
#include "tools/psrun/launch/worker_command.h"

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

// --workers 0 serves the shards only: it needs no ps-worker, and anything
// of a job (evaluator, worker command, namespace, worker flags) is refused
// with the flag named; a negative count is refused.
TEST(PsrunFlags, WorkersZeroServesShardsOnly) {
  testing::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string server = dir.path() + "/ps-server";
  std::ofstream(server) << "#!/bin/sh\n";
  std::filesystem::permissions(server, std::filesystem::perms::owner_all);
  LauncherOptions o;
  o.bin_dir = dir.path();  // ps-server only
  o.workers = 0;
  EXPECT_TRUE(ValidateLauncherOptions(o).ok()) << ValidateLauncherOptions(o);
  o.workers = 1;
  EXPECT_EQ(ValidateLauncherOptions(o).code(), absl::StatusCode::kNotFound)
      << "a job needs ps-worker";
  o.workers = -1;
  absl::Status s = ValidateLauncherOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "--workers must be at least 1"))
      << s;
  const auto refused = [&](LauncherOptions bad, const std::string& named) {
    bad.bin_dir = dir.path();
    bad.workers = 0;
    const absl::Status st = ValidateLauncherOptions(bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << named;
    EXPECT_TRUE(absl::StrContains(st.message(), "--workers 0 serves the shards "
                                                "only"))
        << st;
    EXPECT_TRUE(absl::StrContains(st.message(), named)) << st;
  };
  LauncherOptions bad;
  bad.evaluator = true;
  bad.worker_args = {"--max_seconds", "5"};
  refused(bad, "--evaluator");
  bad = LauncherOptions();
  bad.worker_command = {"/bin/sh", "train.sh"};
  refused(bad, "--worker_command");
  bad = LauncherOptions();
  bad.ns = "job";
  refused(bad, "--namespace");
  bad = LauncherOptions();
  bad.worker_args = {"--dataset", "synthetic"};
  refused(bad, "worker flags after -- ('--dataset')");
}

TEST(PsrunWorkerCommand, SplitsLikeAShellWithoutOne) {
  using V = std::vector<std::string>;
  EXPECT_EQ(*SplitCommandLine("python3 train.py --epochs 3"),
            V({"python3", "train.py", "--epochs", "3"}));
  EXPECT_EQ(*SplitCommandLine("  a\t'b c'  \"d \\\"e\\\" \\\\ \\$x\" f\\ g ''"),
            V({"a", "b c", "d \"e\" \\ $x", "f g", ""}));
  EXPECT_EQ(*SplitCommandLine("x'y'\"z\""), V({"xyz"}));
  // Literal inside quotes: what a shell would act on is only data there.
  EXPECT_EQ(*SplitCommandLine("sh -c 'echo $HOME > log | cat'"),
            V({"sh", "-c", "echo $HOME > log | cat"}));
  for (const char* bad :
       {"", "   ", "a 'b", "a \"b", "a\\", "a | b", "a > f", "a; b", "a & b",
        "echo $HOME", "a \"$HOME\"", "a `b`", "a (b)"}) {
    absl::StatusOr<std::vector<std::string>> r = SplitCommandLine(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(r.status().message(), "--worker_command"))
        << r.status();
  }
}

TEST(PsrunWorkerCommand, FindsTheProgramAsExecvpWould) {
  testing::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  namespace fs = std::filesystem;
  const std::string tool = dir.path() + "/bin/tool";
  const std::string plain = dir.path() + "/other/tool";
  fs::create_directories(dir.path() + "/bin");
  fs::create_directories(dir.path() + "/other");
  std::ofstream(tool) << "#!/bin/sh\n";
  std::ofstream(plain) << "#!/bin/sh\n";
  fs::permissions(tool, fs::perms::owner_all);
  fs::permissions(plain, fs::perms::owner_read | fs::perms::owner_write);
  // PATH order: the first executable one; a non-executable one is passed
  // over when an executable one follows.
  EXPECT_EQ(*FindProgram("tool", dir.path() + "/other:" + dir.path() + "/bin"),
            tool);
  absl::StatusOr<std::string> r = FindProgram("tool", dir.path() + "/other");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "is not executable"))
      << r.status();
  r = FindProgram("no-such-tool", dir.path() + "/bin");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(r.status().message(),
                                "'no-such-tool' not found in PATH"))
      << r.status();
  // A name with a slash is taken as it is.
  EXPECT_EQ(*FindProgram(tool, std::nullopt), tool);
  EXPECT_EQ(FindProgram(plain, std::nullopt).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FindProgram(dir.path() + "/nope", std::nullopt).status().code(),
            absl::StatusCode::kNotFound);
  r = FindProgram(dir.path() + "/bin", std::nullopt);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "is a directory"))
      << r.status();
  // PATH unset: /bin and /usr/bin, as execvp.
  EXPECT_TRUE(FindProgram("sh", std::nullopt).ok());
}

std::map<std::string, std::optional<std::string>> AsMap(
    const std::vector<EnvChange>& env) {
  std::map<std::string, std::optional<std::string>> m;
  for (const EnvChange& c : env) m[c.name] = c.value;
  return m;
}

TEST(PsrunWorkerCommand, EnvironmentContract) {
  WorkerEnvironmentInput in;
  in.shards = {"127.0.0.1:7000", "127.0.0.1:7001"};
  in.rank = 1;
  in.world = 3;
  in.metrics_port = 9501;
  auto m = AsMap(WorkerEnvironment(in));
  EXPECT_EQ(m["PSKIT_SHARDS"], "127.0.0.1:7000,127.0.0.1:7001");
  EXPECT_EQ(m["RANK"], "1");
  EXPECT_EQ(m["WORLD_SIZE"], "3");
  EXPECT_EQ(m["LOCAL_RANK"], "1");
  EXPECT_EQ(m["LOCAL_WORLD_SIZE"], "3");
  EXPECT_EQ(m["PSKIT_ROLE"], "worker");
  EXPECT_EQ(m["PSKIT_METRICS_PORT"], "9501");
  EXPECT_EQ(m["PSKIT_METRICS_HOST"], "127.0.0.1");
  EXPECT_EQ(m["PYTHONUNBUFFERED"], "1");
  // Not set by psrun: removed, so nothing inherited passes for psrun's.
  for (const char* removed :
       {"PSKIT_NAMESPACE", "PSKIT_TLS_CA", "PSKIT_TLS_CERT", "PSKIT_TLS_KEY",
        "SLURM_PROCID", "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "JOB_COMPLETION_INDEX",
        "PSKIT_WORLD_SIZE"}) {
    ASSERT_TRUE(m.contains(removed)) << removed;
    EXPECT_FALSE(m[removed].has_value()) << removed;
  }
  // The token psrun got from its own environment is passed on as it is.
  EXPECT_FALSE(m.contains("PSKIT_TOKEN_FILE"));
  EXPECT_FALSE(m.contains("PSKIT_TOKEN"));

  in.evaluator = true;
  in.ns = "job7";
  in.token_file = "/run/auth/worker.token";
  in.tls_ca = "/run/tls/ca.pem";
  in.tls_cert = "/run/tls/client.pem";
  in.tls_key = "/run/tls/client.key";
  in.pythonunbuffered_inherited = true;
  m = AsMap(WorkerEnvironment(in));
  EXPECT_EQ(m["PSKIT_ROLE"], "evaluator");
  EXPECT_EQ(m["RANK"], "0");
  EXPECT_EQ(m["WORLD_SIZE"], "1");
  EXPECT_EQ(m["PSKIT_NAMESPACE"], "job7");
  EXPECT_EQ(m["PSKIT_TOKEN_FILE"], "/run/auth/worker.token");
  ASSERT_TRUE(m.contains("PSKIT_TOKEN"));
  EXPECT_FALSE(m["PSKIT_TOKEN"].has_value()) << "the file wins, unambiguously";
  EXPECT_EQ(m["PSKIT_TLS_CA"], "/run/tls/ca.pem");
  EXPECT_EQ(m["PSKIT_TLS_CERT"], "/run/tls/client.pem");
  EXPECT_EQ(m["PSKIT_TLS_KEY"], "/run/tls/client.key");
  EXPECT_FALSE(m.contains("PYTHONUNBUFFERED"));
}

// SpawnChild applies the environment changes to what the child inherits.
TEST(PsrunWorkerCommand, SpawnChildSetsAndRemovesVariables) {
  setenv("PSRUN_TEST_KEPT", "kept", 1);
  setenv("PSRUN_TEST_GONE", "gone", 1);
  setenv("PSRUN_TEST_CHANGED", "old", 1);
  absl::StatusOr<SpawnedChild> c = SpawnChild(
      "/bin/sh",
      {"-c",
       "echo \"$PSRUN_TEST_KEPT ${PSRUN_TEST_GONE-unset} $PSRUN_TEST_CHANGED "
       "$PSRUN_TEST_NEW\""},
      {{"PSRUN_TEST_GONE", std::nullopt},
       {"PSRUN_TEST_CHANGED", "new"},
       {"PSRUN_TEST_NEW", "added"}});
  unsetenv("PSRUN_TEST_KEPT");
  unsetenv("PSRUN_TEST_GONE");
  unsetenv("PSRUN_TEST_CHANGED");
  ASSERT_TRUE(c.ok()) << c.status();
  int status = 0;
  ASSERT_EQ(waitpid(c->pid, &status, 0), c->pid);
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = read(c->stdout_fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  close(c->stdout_fd);
  close(c->stderr_fd);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(out, "kept unset new added\n");
}

// With a worker command psrun needs no ps-worker and does not check the
// flags after `--` (they are the command's): an evaluator without
// --target_accuracy is fine. Its program must exist.
TEST(PsrunWorkerCommand, OptionsAreCheckedForACommand) {
  testing::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string server = dir.path() + "/ps-server";
  std::ofstream(server) << "#!/bin/sh\n";
  std::filesystem::permissions(server, std::filesystem::perms::owner_all);
  LauncherOptions o;
  o.bin_dir = dir.path();  // ps-server only
  o.evaluator = true;
  o.worker_args = {"--rank", "3", "--anything"};
  EXPECT_EQ(ValidateLauncherOptions(o).code(),
            absl::StatusCode::kInvalidArgument)
      << "ps-worker's flags are checked without a command";
  o.worker_command = {"/bin/sh", "train.sh"};
  EXPECT_TRUE(ValidateLauncherOptions(o).ok()) << ValidateLauncherOptions(o);
  o.worker_command = {dir.path() + "/missing"};
  absl::Status s = ValidateLauncherOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(s.message(), "--worker_command")) << s;
  o.worker_command = {"/bin/sh"};
  o.final_eval_timeout = absl::Seconds(-1);
  EXPECT_EQ(ValidateLauncherOptions(o).code(),
            absl::StatusCode::kInvalidArgument);
  // ps-worker mode: a namespace given both ways.
  o = LauncherOptions();
  o.bin_dir = dir.path();
  o.ns = "a";
  o.worker_args = {"--namespace", "b"};
  s = ValidateLauncherOptions(o);
  EXPECT_TRUE(absl::StrContains(s.message(), "--namespace is given twice"))
      << s;
}

}  // namespace
}  // namespace pskit::launch
