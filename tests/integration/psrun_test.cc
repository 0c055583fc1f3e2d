// psrun, the local-cluster launcher: the built build/bin/psrun as a child
// process running real shards and workers on 127.0.0.1 (its pieces are
// tested in tests/unit/tools/launch_test.cc): a job to its target, a worker
// killed with SIGKILL, SIGTERM to psrun leaving one checkpoint id on every
// shard, a SIGKILLed shard restarted by --restart_shards, a shard that cannot
// start, bad flags; --workers 0 serving the shards alone until SIGTERM; a
// worker command (shell and Python scripts standing in
// for Python workers): its environment, its exit codes, a bad one.
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
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "gtest/gtest.h"
#include "pskit/v1/admin.grpc.pb.h"
#include "tests/testing/child_server.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"
#include "tools/psrun/launch/child_process.h"
#include "tools/psrun/launch/launcher.h"
#include "tools/psrun/launch/ports.h"
#include "tools/psrun/launch/progress.h"

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
  // `env` (if not null): psrun's whole environment, else the test's.
  PsrunProcess(const std::string& binary, std::vector<std::string> args,
               const std::vector<std::string>* env = nullptr) {
    pid_ = testing::SpawnPiped(binary, std::move(args), /*merge_stderr=*/true,
                               &fd_, env);
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
      {{"--namespace", "a", "--", "--namespace", "b"},
       "--namespace is given twice"},
      {{"--workers", "-1", "--"}, "--workers must be at least 1"},
      {{"--workers", "0", "--evaluator", "--", "--max_seconds", "5"},
       "--workers 0 serves the shards only"},
      {{"--workers", "0", "--worker_command", "/bin/true"},
       "so --worker_command has nothing to run"},
      {{"--workers", "0", "--", "--dataset", "synthetic"},
       "worker flags after -- ('--dataset')"},
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

// --workers 0: the shards alone. psrun prints "shards: HOST:PORT,..." and
// a psctl command that reaches them (here with --auth: it carries the admin
// token), serves until SIGTERM, then stops them and exits 0; no shard
// outlives it.
TEST(Psrun, WorkersZeroServesTheShardsUntilSigtermThenExitsZero) {
  PsrunProcess p(Psrun(), {"--servers", "2", "--workers", "0", "--auth",
                           "--metrics_port_base", "0", "--kill_timeout_s",
                           "20", "--status_interval_s", "0.5"});
  ASSERT_GT(p.pid(), 0);
  std::vector<int> pidfds;
  for (int i = 0; i < 2; ++i) {
    const std::string line =
        p.ReadUntilContains("psrun: started shard", absl::Seconds(60));
    const pid_t pid = PidOf(line);
    ASSERT_GT(pid, 0) << p.output();
    const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    ASSERT_GE(fd, 0) << "pidfd_open(" << pid << ")";
    pidfds.push_back(fd);
  }
  const std::string shards_line = p.ReadUntil(
      [](const std::string& l) { return absl::StartsWith(l, "shards: "); },
      absl::Seconds(60));
  ASSERT_FALSE(shards_line.empty()) << p.output();
  const std::vector<std::string> shards =
      absl::StrSplit(shards_line.substr(8), ',');
  ASSERT_EQ(shards.size(), 2u) << shards_line;
  for (const std::string& s : shards) {
    EXPECT_TRUE(absl::StartsWith(s, "127.0.0.1:")) << shards_line;
  }
  const std::string psctl_line =
      p.ReadUntilContains("psrun: psctl for this cluster: psctl ",
                          absl::Seconds(10));
  ASSERT_FALSE(psctl_line.empty()) << p.output();
  std::vector<std::string> words = absl::StrSplit(
      psctl_line.substr(psctl_line.find("psctl --shards ") + 6), ' ',
      absl::SkipEmpty());
  EXPECT_NE(std::find(words.begin(), words.end(), "--token_file"),
            words.end())
      << psctl_line;
  EXPECT_NE(std::find(words.begin(), words.end(), shards_line.substr(8)),
            words.end())
      << psctl_line;
  // The printed command reaches both shards (with the admin token: a
  // status without it is refused).
  int fd = -1;
  const pid_t psctl = testing::SpawnPiped(testing::SiblingBinary("psctl"),
                                          words, /*merge_stderr=*/true, &fd);
  ASSERT_GT(psctl, 0);
  std::string psctl_out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    psctl_out.append(buf, n);
  }
  close(fd);
  int status = 0;
  waitpid(psctl, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << psctl_out;
  for (const std::string& s : shards) {
    EXPECT_TRUE(absl::StrContains(psctl_out, s)) << s << "\n" << psctl_out;
  }
  // Still serving: the status line, and no end yet.
  ASSERT_FALSE(p.ReadUntil(
                    [](const std::string& l) {
                      return absl::StartsWith(l, "psrun: status ") &&
                             absl::StrContains(l, "serving 2 shards");
                    },
                    absl::Seconds(10))
                   .empty())
      << p.output();
  EXPECT_FALSE(absl::StrContains(p.output(), "psrun: summary")) << p.output();

  p.Signal(SIGTERM);
  EXPECT_EQ(p.Wait(absl::Seconds(60)), 0) << p.output();
  const std::string& out = p.output();
  EXPECT_TRUE(absl::StrContains(
      out, "psrun: done: served 2 shards until SIGTERM; every shard stopped "
           "cleanly"))
      << out;
  EXPECT_FALSE(absl::StrContains(out, "interrupted")) << out;
  EXPECT_FALSE(absl::StrContains(out, "started worker")) << out;
  for (int pidfd : pidfds) {
    pollfd pfd{pidfd, POLLIN, 0};
    EXPECT_EQ(poll(&pfd, 1, 0), 1) << "a shard outlived psrun\n" << out;
    close(pidfd);
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

// ---------------------------------------------------------------------------
// A worker command instead of ps-worker.

// Writes `text` to `path` (mode 0755 when `executable`).
void WriteFile(const std::string& path, const std::string& text,
               bool executable = false) {
  std::ofstream(path) << text;
  fs::permissions(
      path, executable ? fs::perms::owner_all | fs::perms::group_read |
                             fs::perms::group_exec | fs::perms::others_read |
                             fs::perms::others_exec
                       : fs::perms::owner_read | fs::perms::owner_write);
}

// NAME=value lines (as `env` prints them) into a map.
std::map<std::string, std::string> ReadEnvFile(const std::string& path) {
  std::map<std::string, std::string> vars;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const size_t eq = line.find('=');
    if (eq != std::string::npos) vars[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return vars;
}

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The test's environment without PYTHONUNBUFFERED, plus `extra` NAME=value
// entries, for psrun.
std::vector<std::string> EnvironmentWith(
    const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    if (absl::StartsWith(entry, "PYTHONUNBUFFERED=")) continue;
    env.push_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

// Every variable of the contract (tools/psrun/launch/worker_command.h) with
// the right rank, world and role in each process, the command's own words
// and the args after `--`, the credentials of --auth and --tls, and no
// launcher rank inherited from psrun's environment; the job ends 0 when
// every command exits 0.
TEST(PsrunWorkerCommandJob, EachProcessGetsTheContractInItsEnvironment) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string out = dir.path() + "/out dir";  // a word with a blank
  fs::create_directories(out);
  const std::string script = dir.path() + "/dump.sh";
  WriteFile(script,
            "#!/bin/sh\n"
            "# Records its environment and arguments, then exits 0.\n"
            "f=\"$1/$PSKIT_ROLE-$RANK\"\n"
            "env > \"$f.env.tmp\" && mv \"$f.env.tmp\" \"$f.env\"\n"
            "shift\n"
            "printf '%s\\n' \"$@\" > \"$f.args\"\n"
            "echo \"hello from $PSKIT_ROLE $RANK\"\n");
  const std::vector<std::string> env =
      EnvironmentWith({"SLURM_PROCID=5", "SLURM_NTASKS=9", "PMI_RANK=3",
                       "PSKIT_TLS_CA=/nonexistent/inherited-ca.pem",
                       "PSKIT_NAMESPACE=inherited"});
  PsrunProcess p(Psrun(),
                 {"--servers", "2", "--workers", "2", "--evaluator", "--auth",
                  "--tls", "--namespace", "job7", "--metrics_port_base", "0",
                  "--kill_timeout_s", "20", "--worker_command",
                  "/bin/sh " + script + " '" + out + "' \"two words\"", "--",
                  "--epochs", "3"},
                 &env);
  ASSERT_GT(p.pid(), 0);
  EXPECT_EQ(p.Wait(absl::Seconds(120)), 0) << p.output();
  const std::string& log = p.output();
  EXPECT_TRUE(absl::StrContains(log, "psrun: job done")) << log;
  EXPECT_TRUE(absl::StrContains(log, "[worker1] hello from worker 1")) << log;
  EXPECT_TRUE(absl::StrContains(log, "[evaluator] hello from evaluator 0"))
      << log;
  // The shards' addresses, in shard order, as psrun read them.
  std::vector<std::string> shards(2);
  for (int i = 0; i < 2; ++i) {
    const std::string prefix =
        absl::StrCat("[shard", i, "] ps-server listening on ");
    const size_t at = log.find(prefix);
    ASSERT_NE(at, std::string::npos) << log;
    const size_t from = at + prefix.size();
    shards[i] = log.substr(from, log.find('\n', from) - from);
  }
  struct Expected {
    std::string file, role, rank, world;
  };
  for (const Expected& e : {Expected{"worker-0", "worker", "0", "2"},
                            Expected{"worker-1", "worker", "1", "2"},
                            Expected{"evaluator-0", "evaluator", "0", "1"}}) {
    SCOPED_TRACE(e.file);
    std::map<std::string, std::string> vars =
        ReadEnvFile(out + "/" + e.file + ".env");
    ASSERT_FALSE(vars.empty()) << "no environment written\n" << log;
    EXPECT_EQ(vars["PSKIT_SHARDS"], shards[0] + "," + shards[1]);
    EXPECT_EQ(vars["RANK"], e.rank);
    EXPECT_EQ(vars["WORLD_SIZE"], e.world);
    EXPECT_EQ(vars["LOCAL_RANK"], e.rank);
    EXPECT_EQ(vars["LOCAL_WORLD_SIZE"], e.world);
    EXPECT_EQ(vars["PSKIT_ROLE"], e.role);
    EXPECT_EQ(vars["PSKIT_NAMESPACE"], "job7");
    int port = 0;
    EXPECT_TRUE(absl::SimpleAtoi(vars["PSKIT_METRICS_PORT"], &port) &&
                port > 0 && port < 65536)
        << vars["PSKIT_METRICS_PORT"];
    EXPECT_EQ(vars["PSKIT_METRICS_HOST"], "127.0.0.1");
    EXPECT_EQ(vars["PYTHONUNBUFFERED"], "1");
    // --auth: the worker token's file (psrun removes the run dir at the
    // end, so only its name is checked); --tls: psrun's CA and client
    // certificate, not the inherited CA.
    EXPECT_TRUE(absl::EndsWith(vars["PSKIT_TOKEN_FILE"], "/auth/worker.token"))
        << vars["PSKIT_TOKEN_FILE"];
    EXPECT_TRUE(absl::EndsWith(vars["PSKIT_TLS_CA"], "/tls/ca.pem"))
        << vars["PSKIT_TLS_CA"];
    EXPECT_NE(vars["PSKIT_TLS_CA"], "/nonexistent/inherited-ca.pem");
    EXPECT_TRUE(absl::StrContains(vars["PSKIT_TLS_CERT"], "/tls/"))
        << vars["PSKIT_TLS_CERT"];
    EXPECT_TRUE(absl::StrContains(vars["PSKIT_TLS_KEY"], "/tls/"))
        << vars["PSKIT_TLS_KEY"];
    // Another launcher's rank does not reach the command.
    EXPECT_EQ(vars.count("SLURM_PROCID"), 0u);
    EXPECT_EQ(vars.count("SLURM_NTASKS"), 0u);
    EXPECT_EQ(vars.count("PMI_RANK"), 0u);
    // The command's own words, split as a shell would, then the args after
    // `--`.
    EXPECT_EQ(ReadWhole(out + "/" + e.file + ".args"),
              "two words\n--epochs\n3\n");
  }
}

// /usr/bin/python3 as the worker command, checking the contract itself.
// psrun's exit code follows the commands': a worker's failure fails the
// job (named, with its status) and the other worker is stopped with
// SIGTERM; an evaluator's exit 3 ("target not reached") makes psrun exit 1.
constexpr char kCheckingWorker[] = R"(
# Checks psrun's environment contract, then does what argv[1] says.
import os, signal, sys, time
role, rank, world = os.environ["PSKIT_ROLE"], int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
# argv: mode, a directory to meet in, the number of shards.
ok = (role in ("worker", "evaluator")
      and len(os.environ["PSKIT_SHARDS"].split(",")) == int(sys.argv[3])
      and (world, 0 <= rank < world) == ((2, True) if role == "worker" else (1, True))
      and int(os.environ["PSKIT_METRICS_PORT"]) > 0)
print(f"checked {role} {rank}/{world}: {'ok' if ok else 'WRONG ' + repr(dict(os.environ))}")
if not ok:
    sys.exit(9)
mode, ready = sys.argv[1], os.path.join(sys.argv[2], "worker1-ready")
if mode == "fail" and role == "worker" and rank == 0:
    for _ in range(3000):  # fail once worker1 runs (at most 30 s)
        if os.path.exists(ready):
            break
        time.sleep(0.01)
    sys.exit(7)
if mode == "fail":
    open(ready, "w").close()
    signal.pause()  # until psrun's SIGTERM
if mode == "missed" and role == "evaluator":
    sys.exit(3)
)";

TEST(PsrunWorkerCommandJob, AFailingCommandFailsTheJobAndTheOthersAreStopped) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string script = dir.path() + "/worker.py";
  WriteFile(script, kCheckingWorker);
  // Without PYTHONUNBUFFERED psrun sets it: worker1's line, printed before
  // it waits for the SIGTERM that kills it, reaches psrun.
  const std::vector<std::string> env = EnvironmentWith({});
  PsrunProcess p(Psrun(),
                 {"--servers", "2", "--workers", "2", "--metrics_port_base",
                  "0", "--kill_timeout_s", "20", "--worker_command",
                  "/usr/bin/python3 " + script, "--", "fail", dir.path(), "2"},
                 &env);
  ASSERT_GT(p.pid(), 0);
  EXPECT_EQ(p.Wait(absl::Seconds(120)), 1) << p.output();
  const std::string& out = p.output();
  EXPECT_TRUE(absl::StrContains(out, "[worker0] checked worker 0/2: ok"))
      << out;
  EXPECT_TRUE(absl::StrContains(out, "[worker1] checked worker 1/2: ok"))
      << out;
  EXPECT_TRUE(absl::StrContains(out, ") exited with status 7")) << out;
  EXPECT_TRUE(absl::StrContains(out, "psrun: job failed: worker0")) << out;
  // worker1 waited for psrun's SIGTERM, and the summary says psrun sent it.
  EXPECT_TRUE(absl::StrContains(out, "signal 15 (SIGTERM), stopped by psrun"))
      << out;
  const size_t at = out.find("started worker1 (pid ");
  ASSERT_NE(at, std::string::npos);
  const pid_t worker1 = PidOf(out.substr(at, 40));
  ASSERT_GT(worker1, 0);
  EXPECT_NE(kill(worker1, 0), 0) << "worker1 outlived psrun";
}

TEST(PsrunWorkerCommandJob, ExitCodeFollowsTheCommands) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string script = dir.path() + "/worker.py";
  WriteFile(script, kCheckingWorker);
  for (const std::string mode : {"done", "missed"}) {
    SCOPED_TRACE(mode);
    PsrunProcess p(
        Psrun(), {"--servers", "1", "--workers", "2", "--evaluator",
                  "--metrics_port_base", "0", "--kill_timeout_s", "20",
                  "--worker_command", "/usr/bin/python3 " + script, "--", mode,
                  dir.path(), "1"});
    ASSERT_GT(p.pid(), 0);
    const int code = p.Wait(absl::Seconds(120));
    const std::string& out = p.output();
    EXPECT_TRUE(absl::StrContains(out, "[evaluator] checked evaluator 0/1: ok"))
        << out;
    EXPECT_FALSE(absl::StrContains(out, "exited with status 9")) << out;
    if (mode == "done") {
      EXPECT_EQ(code, 0) << out;
      EXPECT_TRUE(absl::StrContains(out, "psrun: job done")) << out;
    } else {
      EXPECT_EQ(code, 1) << out;
      EXPECT_TRUE(absl::StrContains(
          out, "the evaluator exited 3: the target accuracy was not reached"))
          << out;
    }
  }
}

// A command psrun cannot run is refused (exit 2, the reason) before any
// shard starts.
TEST(PsrunWorkerCommandJob, BadCommandIsRefusedBeforeAnyShardStarts) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string not_executable = dir.path() + "/train.py";
  WriteFile(not_executable, "print('hi')\n");
  struct Case {
    std::string command, says;
  };
  const Case cases[] = {
      {"", "--worker_command is empty"},
      {"   ", "--worker_command is empty"},
      {"no-such-program-psrun-test --epochs 3",
       "program 'no-such-program-psrun-test' not found in PATH"},
      {dir.path() + "/missing.py",
       "no such file: " + dir.path() + "/missing.py"},
      {not_executable, not_executable + " is not executable"},
      {dir.path(), dir.path() + " is a directory"},
      {"/usr/bin/python3 'train.py", "unterminated ' quote"},
      {"/usr/bin/python3 train.py > log", "unquoted '>'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.command);
    PsrunProcess p(Psrun(), {"--metrics_port_base", "0", "--worker_command",
                             c.command, "--"});
    EXPECT_EQ(p.Wait(absl::Seconds(30)), 2) << p.output();
    EXPECT_TRUE(absl::StrContains(p.output(), c.says)) << p.output();
    EXPECT_FALSE(absl::StrContains(p.output(), "started shard")) << p.output();
  }
}

}  // namespace
}  // namespace pskit::launch
