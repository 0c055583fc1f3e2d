// psrun, the local-cluster launcher: the built build/bin/psrun as a child
// process running real shards and workers on 127.0.0.1 (its pieces are
// tested in tests/unit/tools/launch_test.cc): a job to its target, a worker
// killed with SIGKILL, SIGTERM to psrun leaving one checkpoint id on every
// shard, a SIGKILLed shard restarted by --restart_shards, a shard that cannot
// start, bad flags.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "tools/psrun/launch/child_process.h"
#include "tools/psrun/launch/launcher.h"
#include "tools/psrun/launch/ports.h"
#include "tools/psrun/launch/progress.h"
#include "gtest/gtest.h"
#include "pskit/v1/admin.grpc.pb.h"
#include "tests/testing/child_server.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

extern char** environ;

namespace pskit::launch {
namespace {

namespace fs = std::filesystem;
using pskit::testing::TempDir;

// ---------------------------------------------------------------------------
// The psrun binary.

// psrun run as a child, its stdout and stderr on one pipe read with
// deadlines. The destructor SIGKILLs psrun if it still runs; its children
// follow (PR_SET_PDEATHSIG).
class PsrunProcess {
 public:
  PsrunProcess(const std::string& binary, std::vector<std::string> args) {
    pid_ = testing::SpawnPiped(binary, std::move(args), /*merge_stderr=*/true,
                               &fd_);
  }
  ~PsrunProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) close(fd_);
  }

  pid_t pid() const { return pid_; }
  // Everything read so far.
  const std::string& output() const { return output_; }

  // Reads lines until one satisfies `match` (returned) or the output ends or
  // `timeout` passes ("" for both).
  std::string ReadUntil(const std::function<bool(const std::string&)>& match,
                        absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      const size_t nl = pending_.find('\n');
      if (nl != std::string::npos) {
        std::string line = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        if (match(line)) return line;
        continue;
      }
      if (fd_ < 0) return "";
      pollfd p{fd_, POLLIN, 0};
      const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) return "";
      char buf[8192];
      const ssize_t n = read(fd_, buf, sizeof(buf));
      if (n <= 0) {
        close(fd_);
        fd_ = -1;
        continue;
      }
      output_.append(buf, n);
      pending_.append(buf, n);
    }
  }
  std::string ReadUntilContains(const std::string& needle,
                                absl::Duration timeout) {
    return ReadUntil(
        [&](const std::string& l) { return absl::StrContains(l, needle); },
        timeout);
  }
  // Reads to the end of the output, then reaps psrun: its exit status, or
  // -1 if it did not end within `timeout` or a signal ended it.
  int Wait(absl::Duration timeout) {
    ReadUntil([](const std::string&) { return false; }, timeout);
    if (fd_ >= 0) return -1;  // still writing: it did not end in time
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  void Signal(int sig) { kill(pid_, sig); }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string output_;
  std::string pending_;
};

// The synthetic teacher set of tests/integration/training_test.cc as
// ps-worker flags: small and quick to learn.
std::vector<std::string> SyntheticJob() {
  return {"--dataset",
          "synthetic",
          "--synthetic_train",
          "6000",
          "--synthetic_test",
          "1000",
          "--synthetic_dim",
          "16",
          "--synthetic_classes",
          "4",
          "--layers",
          "16,64,4",
          "--seed",
          "11",
          "--batch_size",
          "32",
          "--lr",
          "0.003",
          "--epochs",
          "100000",
          "--backend",
          "cpu",
          "--log_interval_s",
          "0.2"};
}

std::vector<std::string> Concat(std::vector<std::string> a,
                                const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string Psrun() { return testing::SiblingBinary("psrun"); }

TEST(Psrun, SyntheticJobReachesItsTargetAndExitsZeroWithASummary) {
  PsrunProcess p(
      Psrun(), Concat({"--servers", "2", "--workers", "2", "--evaluator",
                       "--metrics_port_base", "0", "--status_interval_s", "0.5",
                       "--kill_timeout_s", "20", "--"},
                      Concat(SyntheticJob(),
                             {"--target_accuracy", "0.8", "--eval_interval_s",
                              "0.2", "--max_seconds", "120"})));
  ASSERT_GT(p.pid(), 0);
  EXPECT_EQ(p.Wait(absl::Seconds(150)), 0) << p.output();
  const std::string& out = p.output();
  for (const char* expected :
       {"[shard0] ps-server listening on 127.0.0.1:", "[shard1] ", "[worker0] ",
        "[worker1] ", "[evaluator] ", "started worker1 (pid ",
        "prometheus_targets.json", "psrun: status ", "psrun: summary after",
        "target 0.8 reached", "psrun: job done: every worker finished"}) {
    EXPECT_TRUE(absl::StrContains(out, expected)) << expected << "\n" << out;
  }
  // Every line of a child carries its prefix whole: no line of one child
  // runs into another's.
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (absl::StartsWith(line, "[")) {
      EXPECT_TRUE(absl::StartsWith(line, "[shard") ||
                  absl::StartsWith(line, "[worker") ||
                  absl::StartsWith(line, "[evaluator]"))
          << line;
    }
  }
  // The summary table has a row per process, each exit 0.
  for (const char* row :
       {"  shard      0 ", "  shard      1 ", "  worker     0 ",
        "  worker     1 ", "  evaluator  - "}) {
    EXPECT_TRUE(absl::StrContains(out, row)) << row << "\n" << out;
  }
}

// "started worker1 (pid 1234)" -> 1234.
pid_t PidOf(const std::string& started_line) {
  const size_t at = started_line.find("(pid ");
  int pid = -1;
  if (at == std::string::npos ||
      !absl::SimpleAtoi(
          started_line.substr(at + 5, started_line.find(')', at) - at - 5),
          &pid)) {
    return -1;
  }
  return pid;
}

TEST(Psrun, WorkerKilledWithSigkillFailsTheJobAndIsNamed) {
  PsrunProcess p(
      Psrun(),
      Concat({"--servers", "1", "--workers", "2", "--metrics_port_base", "0",
              "--kill_timeout_s", "20", "--"},
             Concat(SyntheticJob(), {"--max_seconds", "120"})));
  const std::string started =
      p.ReadUntilContains("started worker1 (pid ", absl::Seconds(60));
  const pid_t worker1 = PidOf(started);
  ASSERT_GT(worker1, 0) << p.output();
  // Training, not just started: a progress line with a step count.
  ASSERT_FALSE(p.ReadUntil(
                    [](const std::string& l) {
                      return absl::StartsWith(l, "[worker1] ") &&
                             absl::StrContains(l, " step ");
                    },
                    absl::Seconds(60))
                   .empty())
      << p.output();
  ASSERT_EQ(kill(worker1, SIGKILL), 0);
  EXPECT_EQ(p.Wait(absl::Seconds(90)), 1) << p.output();
  const std::string& out = p.output();
  EXPECT_TRUE(
      absl::StrContains(out, absl::StrCat("worker1 (pid ", worker1,
                                          ") was killed by signal 9 (Killed)")))
      << out;
  EXPECT_TRUE(absl::StrContains(out, "psrun: job failed: worker1")) << out;
  // The other worker was stopped, then the shard.
  EXPECT_TRUE(absl::StrContains(out, "stopped by psrun")) << out;
  EXPECT_TRUE(absl::StrContains(out, "[shard0] ")) << out;
  // Nothing of the job is left: the worker processes are gone.
  const pid_t worker0 =
      PidOf(out.substr(out.find("started worker0 (pid "), 40));
  ASSERT_GT(worker0, 0);
  EXPECT_NE(kill(worker0, 0), 0) << "worker0 outlived psrun";
}

// A job that ends without reaching its --target_accuracy did not do what it
// was asked: psrun says so and exits 1 (so `scripts/run.sh` fails too).
TEST(Psrun, TargetNotReachedExitsOne) {
  PsrunProcess p(
      Psrun(), Concat({"--servers", "1", "--workers", "1", "--evaluator",
                       "--metrics_port_base", "0", "--kill_timeout_s", "20",
                       "--"},
                      Concat(SyntheticJob(),
                             {"--target_accuracy", "0.9999", "--eval_interval_s",
                              "0.2", "--max_seconds", "1"})));
  ASSERT_GT(p.pid(), 0);
  EXPECT_EQ(p.Wait(absl::Seconds(120)), 1) << p.output();
  EXPECT_TRUE(absl::StrContains(p.output(), "without reaching the target accuracy 0.9999"))
      << p.output();
}

TEST(Psrun, NoChildOutlivesPsrunKilledWithSigkill) {
  // A psrun killed with SIGKILL cannot remove its temporary directory: give
  // it one the test removes (after the last child ended).
  TempDir dir;
  PsrunProcess p(
      Psrun(),
      Concat({"--servers", "2", "--workers", "1", "--evaluator", "--data_dir",
              dir.path(), "--metrics_port_base", "0", "--"},
             Concat(SyntheticJob(),
                    {"--max_seconds", "120", "--target_accuracy", "0.999"})));
  // A pidfd turns readable when its process ends, whoever its parent is.
  std::vector<int> pidfds;
  for (int i = 0; i < 4; ++i) {
    const std::string line =
        p.ReadUntilContains("psrun: started ", absl::Seconds(60));
    const pid_t pid = PidOf(line);
    ASSERT_GT(pid, 0) << p.output();
    const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    ASSERT_GE(fd, 0) << "pidfd_open(" << pid << ")";
    pidfds.push_back(fd);
  }
  ASSERT_FALSE(p.ReadUntilContains("[worker0] ", absl::Seconds(60)).empty());
  p.Signal(SIGKILL);
  EXPECT_EQ(p.Wait(absl::Seconds(30)), -1);
  for (int fd : pidfds) {
    pollfd pfd{fd, POLLIN, 0};
    EXPECT_EQ(poll(&pfd, 1, 30000), 1) << "a child of psrun outlived it";
    close(fd);
  }
}

TEST(Psrun, SigtermLeavesACheckpointInTheDataDir) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  {
    PsrunProcess p(
        Psrun(),
        Concat({"--servers", "2", "--workers", "1", "--data_dir", dir.path(),
                "--metrics_port_base", "0", "--kill_timeout_s", "20",
                "--status_interval_s", "0.5", "--"},
               Concat(SyntheticJob(), {"--max_seconds", "120"})));
    // Training, and psrun's status line shows it: the step from the shards'
    // Admin/Status, samples/s from the worker's metrics endpoint.
    ASSERT_FALSE(p.ReadUntil(
                      [](const std::string& l) {
                        return absl::StartsWith(l, "psrun: status ") &&
                               !absl::StrContains(l, "| - samples/s") &&
                               !absl::StrContains(l, "| 0 samples/s") &&
                               !absl::StrContains(l, "step - ") &&
                               !absl::StrContains(l, "step 0 ");
                      },
                      absl::Seconds(60))
                     .empty())
        << p.output();
    p.Signal(SIGTERM);
    EXPECT_EQ(p.Wait(absl::Seconds(90)), 128 + SIGTERM) << p.output();
    const std::string& out = p.output();
    EXPECT_TRUE(absl::StrContains(out, "psrun: got SIGTERM")) << out;
    EXPECT_TRUE(absl::StrContains(out, "psrun: job interrupted by SIGTERM"))
        << out;
    // psrun's end: one id on every shard, and no shard's final checkpoint
    // of its own after it (nothing changed once the workers were gone).
    EXPECT_TRUE(absl::StrContains(out, "checkpoint 'shutdown-") &&
                absl::StrContains(out, "taken on every shard"))
        << out;
    EXPECT_FALSE(absl::StrContains(out, "checkpoint 'final-")) << out;
    EXPECT_TRUE(fs::exists(dir.path() + "/prometheus_targets.json"));
  }
  // Shards started on the two directories load that one checkpoint.
  std::string newest[2];
  for (int i = 0; i < 2; ++i) {
    testing::ChildServer shard(
        "ps-server",
        {"--listen", "127.0.0.1:0", "--shard_index", absl::StrCat(i),
         "--num_shards", "2", "--data_dir",
         absl::StrCat(dir.path(), "/shard-", i), "--checkpoint_interval_s",
         "0"},
        /*merge_stderr=*/true);
    std::string address;
    for (std::string line = shard.first_line(); !line.empty();
         line = shard.ReadLine()) {
      EXPECT_FALSE(absl::StrContains(line, "no loadable checkpoint")) << line;
      const std::string prefix = "ps-server listening on ";
      if (absl::StartsWith(line, prefix)) {
        address = line.substr(prefix.size());
        break;
      }
    }
    ASSERT_FALSE(address.empty());
    auto admin = v1::Admin::NewStub(MakeChannel(address));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    v1::ListCheckpointsResponse list;
    ASSERT_TRUE(
        admin->ListCheckpoints(&ctx, v1::ListCheckpointsRequest(), &list).ok());
    ASSERT_GE(list.checkpoints_size(), 1);
    newest[i] = list.checkpoints(0).id();
    EXPECT_TRUE(absl::StartsWith(newest[i], "shutdown-")) << newest[i];
    EXPECT_GT(list.checkpoints(0).chunks(), 0u);
    EXPECT_EQ(shard.StopWith(SIGTERM), 0);
  }
  EXPECT_EQ(newest[0], newest[1]);
}

// The restart policy: a shard SIGKILLed mid-job comes back on its address
// and data directory, the worker goes on, and the job ends well.
TEST(Psrun, ShardKilledWithSigkillIsRestartedAndTheJobFinishes) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  PsrunProcess p(
      Psrun(),
      Concat({"--servers", "2", "--workers", "1", "--data_dir", dir.path(),
              "--metrics_port_base", "0", "--restart_shards", "2",
              "--restart_backoff_s", "0.2", "--status_interval_s", "0.5",
              "--server_args", "--checkpoint_interval_s 1", "--"},
             Concat(SyntheticJob(), {"--max_seconds", "12"})));
  const std::string started =
      p.ReadUntilContains("psrun: started shard1 (pid ", absl::Seconds(60));
  ASSERT_FALSE(started.empty()) << p.output();
  int shard_pid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      started.substr(started.find("(pid ") + 5,
                     started.find(')') - started.find("(pid ") - 5),
      &shard_pid))
      << started;
  // Training, and a checkpoint of it taken, before the kill.
  ASSERT_FALSE(p.ReadUntil(
                    [](const std::string& l) {
                      return absl::StartsWith(l, "psrun: status ") &&
                             !absl::StrContains(l, "step - ") &&
                             !absl::StrContains(l, "step 0 ");
                    },
                    absl::Seconds(60))
                   .empty())
      << p.output();
  ASSERT_FALSE(p.ReadUntilContains("[shard1] ", absl::Seconds(30)).empty());
  ASSERT_EQ(kill(shard_pid, SIGKILL), 0);
  EXPECT_FALSE(
      p.ReadUntilContains("psrun: restarted shard1", absl::Seconds(60)).empty())
      << p.output();
  EXPECT_EQ(p.Wait(absl::Seconds(120)), 0) << p.output();
  const std::string& out = p.output();
  EXPECT_TRUE(absl::StrContains(out, "restarting it on")) << out;
  EXPECT_TRUE(absl::StrContains(out, "loaded checkpoint")) << out;
  EXPECT_TRUE(absl::StrContains(out, "shard restarts: 1; shard1 1")) << out;
  EXPECT_TRUE(absl::StrContains(out, "psrun: job done")) << out;
}

TEST(Psrun, ShardThatFailsToStartIsReportedWithItsStderr) {
  PsrunProcess p(
      Psrun(), {"--servers", "2", "--workers", "1", "--metrics_port_base", "0",
                "--server_args", "--log_level nonsense", "--", "--dataset",
                "synthetic"});
  EXPECT_EQ(p.Wait(absl::Seconds(60)), 1) << p.output();
  const std::string& out = p.output();
  EXPECT_TRUE(
      absl::StrContains(out, "failed to start: it exited with status 2"))
      << out;
  EXPECT_TRUE(absl::StrContains(out, "unknown log level 'nonsense'")) << out;
  EXPECT_FALSE(absl::StrContains(out, "started worker0")) << out;
}

TEST(Psrun, BadFlagsExitTwoWithAReason) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const Case cases[] = {
      {{"--servers", "0", "--", "--dataset", "synthetic"},
       "--servers must be at least 1"},
      {{"--workers", "0", "--"}, "--workers must be at least 1"},
      {{"--", "--shards", "127.0.0.1:1"}, "psrun sets --shards"},
      {{"--evaluator", "--", "--dataset", "synthetic"},
       "--evaluator needs --target_accuracy"},
      {{"--server_args", "--listen 0.0.0.0:7000", "--"}, "psrun sets --listen"},
      {{"stray", "--"}, "unexpected argument 'stray'"},
  };
  for (const Case& c : cases) {
    PsrunProcess p(Psrun(), c.args);
    EXPECT_EQ(p.Wait(absl::Seconds(30)), 2) << p.output();
    EXPECT_TRUE(absl::StrContains(p.output(), c.says)) << p.output();
  }
}

TEST(Psrun, MissingServerBinaryIsNamed) {
  TempDir dir;
  const std::string alone = dir.path() + "/psrun";
  fs::copy_file(Psrun(), alone);
  PsrunProcess p(alone, {"--metrics_port_base", "0", "--"});
  EXPECT_EQ(p.Wait(absl::Seconds(30)), 2) << p.output();
  EXPECT_TRUE(
      absl::StrContains(p.output(), "ps-server not found at " + dir.path()))
      << p.output();
}

}  // namespace
}  // namespace pskit::launch
