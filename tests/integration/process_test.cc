// ps-server as a child process: the address line on stdout, real traffic,
// and SIGTERM ending it with exit status 0.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

extern char** environ;

namespace pskit {
namespace {

// build/bin/ps-server, next to this test binary.
std::string ServerBinary() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string self(buf, n > 0 ? n : 0);
  return self.substr(0, self.rfind('/')) + "/ps-server";
}

class ChildServer {
 public:
  // Starts ps-server with `args`; reads the address it prints.
  explicit ChildServer(std::vector<std::string> args) {
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    args.insert(args.begin(), ServerBinary());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(),
                          environ),
              0);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    out_ = fdopen(out[0], "r");
    char line[512];
    // Blocks until the server prints its line (or exits and closes stdout).
    if (fgets(line, sizeof(line), out_) != nullptr) first_line_ = line;
  }
  ~ChildServer() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ != nullptr) fclose(out_);
  }
  const std::string& first_line() const { return first_line_; }
  std::string address() const {
    const std::string prefix = "ps-server listening on ";
    if (first_line_.rfind(prefix, 0) != 0) return "";
    std::string a = first_line_.substr(prefix.size());
    while (!a.empty() && (a.back() == '\n' || a.back() == '\r')) a.pop_back();
    return a;
  }
  // Sends `sig` and returns the exit status (-1 if killed by a signal).
  int StopWith(int sig) {
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  std::string first_line_;
};

TEST(PsServerProcess, PrintsAddressServesAndExitsZeroOnSigterm) {
  ChildServer server({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  const std::string address = server.address();
  ASSERT_FALSE(address.empty()) << "first line: " << server.first_line();
  ASSERT_NE(address.substr(address.rfind(':') + 1), "0");

  ClientOptions opts;
  opts.timeout = absl::Seconds(20);
  ASSERT_OK_AND_ASSIGN(auto client, Client::Connect({address}, opts));
  v1::NamespaceConfig cfg;
  cfg.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  cfg.mutable_optimizer()->set_learning_rate(1.0f);
  TensorDecl d;
  d.spec.set_name("w");
  d.spec.add_shape(1000);
  d.spec.mutable_init()->set_kind(v1::INIT_ZEROS);
  ASSERT_OK(client->Declare("", cfg, {d}));
  std::vector<float> g(1000, 2.0f), w(1000);
  ASSERT_OK(client->PushPull("", {{"w", g}}, {{"w", absl::MakeSpan(w)}}));
  EXPECT_EQ(w[999], -2.0f);

  EXPECT_EQ(server.StopWith(SIGTERM), 0);
}

TEST(PsServerProcess, SigintAlsoExitsZero) {
  ChildServer server({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  ASSERT_FALSE(server.address().empty()) << server.first_line();
  EXPECT_EQ(server.StopWith(SIGINT), 0);
}

TEST(PsServerProcess, BadFlagExitsNonZeroWithAMessage) {
  ChildServer server({"--shard_index", "4", "--num_shards", "2"});
  EXPECT_TRUE(server.address().empty());
  EXPECT_EQ(server.StopWith(0), 1);
}

}  // namespace
}  // namespace pskit
