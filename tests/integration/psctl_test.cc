// psctl against two real ps-server processes with --data_dir in temp dirs:
// every subcommand run as a child process with --json (the object parsed
// with protobuf's JSON parser into a google.protobuf.Struct), the .npy dump
// checked byte for byte (and through numpy where /usr/bin/python3 has it),
// live config changes surviving restore and restart, refusals that change
// nothing, an unreachable shard, usage errors, a drain that ends a
// worker's job and refuses new ones, the health command, a shutdown
// that leaves one checkpoint id on every shard, and drop.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/client.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/testing/child_server.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

extern char** environ;

namespace pskit {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;
using testing::ChildServer;
using testing::SiblingBinary;
using testing::TempDir;

constexpr uint32_t kChunkElems = 4;


std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Ran {
  int exit_code = -1;  // -1: killed by a signal, or could not start
  std::string out;
  std::string err;
};

// Runs `program` with `args` to completion, stdout and stderr captured in
// files. The environment is this process's without PSKIT_SHARDS, plus `env`.
Ran RunProgram(const std::string& program, std::vector<std::string> args,
               const std::vector<std::string>& env = {}) {
  TempDir dir;
  const std::string err = dir.path() + "/err";
  std::vector<std::string> env_strings(env);
  for (char** e = environ; *e != nullptr; ++e) {
    if (!absl::StartsWith(*e, "PSKIT_SHARDS=")) env_strings.emplace_back(*e);
  }
  Ran ran;
  int fd = -1;
  const pid_t pid = testing::SpawnPiped(program, std::move(args),
                                        /*merge_stderr=*/false, &fd,
                                        &env_strings, err);
  if (pid < 0) {
    ADD_FAILURE() << "cannot start " << program;
    return ran;
  }
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    ran.out.append(buf, n);
  }
  close(fd);
  int status = 0;
  waitpid(pid, &status, 0);
  ran.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  ran.err = ReadFile(err);
  return ran;
}

// psctl's --json answer as a Struct (a failed test if it is not one JSON
// object on one line).
Struct ParseJson(const Ran& ran) {
  Struct s;
  EXPECT_TRUE(absl::EndsWith(ran.out, "\n") &&
              ran.out.find('\n') == ran.out.size() - 1)
      << "not one line: " << ran.out;
  const auto status = google::protobuf::util::JsonStringToMessage(ran.out, &s);
  EXPECT_TRUE(status.ok()) << status.ToString() << " in: " << ran.out
                           << "\nstderr: " << ran.err;
  return s;
}

const Value& At(const Struct& s, const std::string& key) {
  static const Value* const kMissing = new Value();
  auto it = s.fields().find(key);
  if (it == s.fields().end()) {
    ADD_FAILURE() << "no field '" << key << "'";
    return *kMissing;
  }
  return it->second;
}
const Value& At(const Value& v, const std::string& key) {
  return At(v.struct_value(), key);
}
const Value& At(const Value& v, int i) {
  static const Value* const kMissing = new Value();
  if (i >= v.list_value().values_size()) {
    ADD_FAILURE() << "no element " << i;
    return *kMissing;
  }
  return v.list_value().values(i);
}
int Size(const Value& v) { return v.list_value().values_size(); }
double Num(const Value& v) { return v.number_value(); }
const std::string& Str(const Value& v) { return v.string_value(); }

// The port of a socket bound on 127.0.0.1 and closed again: nothing listens
// there.
int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "cannot bind 127.0.0.1:0";
  }
  close(fd);
  return ntohs(addr.sin_port);
}

class PsctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(StartShards());
    auto client = NewClient();
    ASSERT_OK(client->Declare("job", testing::SgdConfig(1.0f), Model()));
  }

  void TearDown() override {
    for (auto& s : shards_) {
      if (s != nullptr) {
        EXPECT_EQ(s->StopWith(SIGTERM), 0);
      }
    }
  }

  // Two shards on 127.0.0.1, each on its data dir (kept across restarts).
  void StartShards() {
    for (uint32_t i = 0; i < 2; ++i) {
      shards_[i] = std::make_unique<ChildServer>(std::vector<std::string>{
          "--listen", "127.0.0.1:0", "--shard_index", absl::StrCat(i),
          "--num_shards", "2", "--chunk_elems", absl::StrCat(kChunkElems),
          "--data_dir", dirs_[i].path(), "--checkpoint_interval_s", "0",
          "--log_level", "warn"});
      addresses_[i] = shards_[i]->address();
      ASSERT_FALSE(addresses_[i].empty()) << shards_[i]->first_line();
    }
    shard_list_ = absl::StrCat(addresses_[0], ",", addresses_[1]);
  }

  void RestartShards() {
    for (auto& s : shards_) {
      ASSERT_EQ(s->StopWith(SIGTERM), 0);
    }
    ASSERT_NO_FATAL_FAILURE(StartShards());
  }

  // "w" [3,5] and "b" [7], uniform in [-1, 1): 6 chunks of at most 4.
  static std::vector<TensorDecl> Model() {
    std::vector<TensorDecl> model(2);
    model[0].spec.set_name("w");
    model[0].spec.add_shape(3);
    model[0].spec.add_shape(5);
    model[1].spec.set_name("b");
    model[1].spec.add_shape(7);
    for (TensorDecl& t : model) {
      t.spec.mutable_init()->set_kind(v1::INIT_UNIFORM);
      t.spec.mutable_init()->set_low(-1.0f);
      t.spec.mutable_init()->set_high(1.0f);
      t.spec.mutable_init()->set_seed(7);
    }
    return model;
  }

  std::unique_ptr<Client> NewClient(absl::Duration timeout = absl::Seconds(20),
                                    std::vector<std::string> shards = {}) {
    ClientOptions options;
    options.chunk_elems = kChunkElems;
    options.timeout = timeout;
    if (shards.empty()) shards = {addresses_[0], addresses_[1]};
    auto c = Client::Connect(shards, options);
    EXPECT_OK(c);
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Pushes gradient g[i] = scale * (i + 1) to both tensors.
  void PushRamp(Client* c, float scale) {
    std::vector<float> gw(15), gb(7);
    for (size_t i = 0; i < gw.size(); ++i) gw[i] = scale * (i + 1);
    for (size_t i = 0; i < gb.size(); ++i) gb[i] = scale * (i + 1);
    ASSERT_OK(c->Push("job", {{"w", gw}, {"b", gb}}));
  }

  std::vector<float> PullTensor(Client* c, const std::string& name, size_t n) {
    std::vector<float> v(n);
    EXPECT_OK(c->Pull("job", {{name, absl::MakeSpan(v)}}));
    return v;
  }

  Ran Psctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"--shards", shard_list_, "--timeout_s", "20"});
    return RunProgram(SiblingBinary("psctl"), std::move(args));
  }

  // The namespace "job" entry of `psctl status --json`.
  Value StatusOfJob() {
    Ran ran = Psctl({"status", "--json"});
    EXPECT_EQ(ran.exit_code, 0) << ran.err;
    Struct s = ParseJson(ran);
    const Value& namespaces = At(s, "namespaces");
    for (int i = 0; i < Size(namespaces); ++i) {
      if (Str(At(At(namespaces, i), "name")) == "job") return At(namespaces, i);
    }
    ADD_FAILURE() << "no namespace job in " << ran.out;
    return Value();
  }

  TempDir dirs_[2];
  std::unique_ptr<ChildServer> shards_[2];
  std::string addresses_[2];
  std::string shard_list_;
};

TEST_F(PsctlTest, StatusReportsEveryShard) {
  auto c = NewClient();
  ASSERT_OK(c->RegisterWorker("rank0"));
  ASSERT_NO_FATAL_FAILURE(PushRamp(c.get(), 0.01f));
  v1::Evaluation eval;
  eval.set_time_unix_ms(absl::ToUnixMillis(absl::Now()));
  eval.set_accuracy(0.75);
  eval.set_loss(0.5);
  eval.set_samples(100);
  ASSERT_OK(c->ReportEvaluation("job", eval));
  ASSERT_OK(c->Checkpoint("first"));

  Ran ran = Psctl({"status", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  Struct s = ParseJson(ran);
  EXPECT_EQ(Str(At(s, "command")), "status");
  EXPECT_TRUE(At(s, "ok").bool_value());
  const Value& shards = At(s, "shards");
  ASSERT_EQ(Size(shards), 2);
  double parameters = 0;
  for (int i = 0; i < 2; ++i) {
    const Value& sh = At(shards, i);
    EXPECT_EQ(Str(At(sh, "address")), addresses_[i]);
    EXPECT_TRUE(At(sh, "up").bool_value());
    EXPECT_EQ(Num(At(sh, "shard_index")), i);
    EXPECT_EQ(Num(At(sh, "num_shards")), 2);
    EXPECT_EQ(Num(At(sh, "chunk_elems")), kChunkElems);
    EXPECT_TRUE(At(sh, "durable").bool_value());
    EXPECT_FALSE(At(sh, "draining").bool_value());
    EXPECT_EQ(Num(At(sh, "namespaces")), 1);
    EXPECT_EQ(Num(At(sh, "tensors")), 2);
    EXPECT_EQ(Num(At(sh, "max_version")), 1);  // one push to every chunk
    EXPECT_EQ(Num(At(sh, "live_workers")), 1);
    EXPECT_EQ(Str(At(At(sh, "last_checkpoint"), "id")), "first");
    EXPECT_GE(Num(At(At(sh, "last_checkpoint"), "age_s")), 0);
    const Value& e = At(sh, "latest_evaluation");
    EXPECT_EQ(Str(At(e, "namespace")), "job");
    EXPECT_EQ(Num(At(e, "accuracy")), 0.75);
    EXPECT_EQ(Num(At(e, "loss")), 0.5);
    EXPECT_FALSE(At(e, "done").bool_value());
    EXPECT_GE(Num(At(e, "age_s")), 0);
    parameters += Num(At(sh, "parameters"));
  }
  EXPECT_EQ(parameters, 15 + 7);
  const Value& ns = At(At(s, "namespaces"), 0);
  EXPECT_EQ(Str(At(ns, "name")), "job");
  EXPECT_EQ(Num(At(ns, "parameters")), 22);
  EXPECT_EQ(Str(At(At(ns, "config"), "optimizer")), "sgd");
  EXPECT_EQ(Num(At(At(ns, "config"), "learning_rate")), 1);

  // The table, with the shards from PSKIT_SHARDS.
  ran =
      RunProgram(SiblingBinary("psctl"), {"status"}, {"PSKIT_SHARDS=" + shard_list_});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  for (const std::string& want :
       {addresses_[0], addresses_[1], std::string("latest evaluation"),
        std::string("first"), std::string("job: acc 0.7500 loss 0.5000"),
        std::string("OPTIMIZER_SGD lr=1")}) {
    EXPECT_TRUE(absl::StrContains(ran.out, want)) << want << " in\n" << ran.out;
  }
  ASSERT_OK(c->Leave());
}

TEST_F(PsctlTest, UnreachableShardExitsThreeNamingItsAddress) {
  const std::string closed = absl::StrCat("127.0.0.1:", ClosedPort());
  for (const char* command : {"status", "tensors", "checkpoint", "drain"}) {
    Ran ran =
        RunProgram(SiblingBinary("psctl"), {"--shards", addresses_[0] + "," + closed,
                                     "--timeout_s", "10", command, "--json"});
    EXPECT_EQ(ran.exit_code, 3) << command << ": " << ran.err;
    EXPECT_TRUE(absl::StrContains(ran.err, closed)) << ran.err;
    EXPECT_TRUE(absl::StrContains(ran.err, "UNAVAILABLE")) << ran.err;
    Struct s = ParseJson(ran);
    EXPECT_EQ(Num(At(s, "exit_code")), 3);
    EXPECT_TRUE(absl::StrContains(Str(At(s, "error")), closed));
    if (std::string(command) == "status") {
      // The shard that answers is still reported.
      EXPECT_TRUE(At(At(At(s, "shards"), 0), "up").bool_value());
      EXPECT_FALSE(At(At(At(s, "shards"), 1), "up").bool_value());
      EXPECT_TRUE(absl::StrContains(Str(At(At(At(s, "shards"), 1), "error")),
                                    "UNAVAILABLE"));
    }
  }
  // drain stopped before it changed anything.
  Ran ran = Psctl({"status", "--json"});
  EXPECT_FALSE(
      At(At(At(ParseJson(ran), "shards"), 0), "draining").bool_value());
}

TEST_F(PsctlTest, UsageErrorsExitTwo) {
  const std::string psctl = SiblingBinary("psctl");
  Ran ran = RunProgram(psctl, {});
  EXPECT_EQ(ran.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(ran.err, "commands:")) << ran.err;
  EXPECT_EQ(
      RunProgram(psctl, {"--shards", shard_list_, "frobnicate"}).exit_code, 2);
  EXPECT_EQ(RunProgram(psctl, {"--shards", shard_list_, "status", "--nope"})
                .exit_code,
            2);
  EXPECT_EQ(
      RunProgram(psctl, {"--shards", shard_list_, "--timeout_s=abc", "status"})
          .exit_code,
      2);
  // Scripts get JSON even when a bad flag comes before --json.
  ran = RunProgram(psctl, {"--shards", shard_list_, "--nope", "--json", "status"});
  EXPECT_EQ(ran.exit_code, 2);
  EXPECT_EQ(Num(At(ParseJson(ran), "exit_code")), 2) << ran.out;
  ran = RunProgram(psctl, {"status"});  // no --shards, no PSKIT_SHARDS
  EXPECT_EQ(ran.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(ran.err, "PSKIT_SHARDS")) << ran.err;
  EXPECT_EQ(Psctl({"restore"}).exit_code, 2);
  EXPECT_EQ(Psctl({"set", "job"}).exit_code, 2);
  EXPECT_EQ(Psctl({"dump", "job", "w"}).exit_code, 2);  // no --out

  // Shards in the wrong order.
  ran = RunProgram(psctl, {"--shards", addresses_[1] + "," + addresses_[0],
                           "status", "--json"});
  EXPECT_EQ(ran.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(ran.err, "is shard 1 of 2")) << ran.err;
  EXPECT_EQ(Num(At(ParseJson(ran), "exit_code")), 2);

  // Help: general, per command, and COMMAND --help.
  ran = RunProgram(psctl, {"help"});
  EXPECT_EQ(ran.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(ran.out, "Exit codes")) << ran.out;
  ran = RunProgram(psctl, {"help", "dump"});
  EXPECT_EQ(ran.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(ran.out, ".npy")) << ran.out;
  ran = RunProgram(psctl, {"drain", "--help"});
  EXPECT_EQ(ran.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(ran.out, "usage: psctl drain")) << ran.out;
}

// --help on every pskit program lists its own flags on stdout and exits 0
// (absl's --help found none outside a file named after the binary and exited
// 1).
TEST(ToolsHelp, ListsTheFlagsAndExitsZero) {
  const struct {
    const char* program;
    const char* flag;
  } kCases[] = {{"psctl", "--timeout_s"},
                {"psrun", "--servers"},
                {"ps-bench", "--model_mib"},
                {"ps-server", "--shard_index"},
                {"ps-worker", "--algorithm"}};
  for (const auto& c : kCases) {
    const Ran ran = RunProgram(SiblingBinary(c.program), {"--help"});
    EXPECT_EQ(ran.exit_code, 0) << c.program << ": " << ran.err;
    EXPECT_TRUE(absl::StrContains(ran.out, c.flag))
        << c.program << " --help:\n" << ran.out;
  }
}

// psctl health asks only the gRPC health service: a shard just started,
// with nothing declared, is healthy (exit 0); one that was stopped by
// SIGTERM, a closed port, or a server whose health is NOT_SERVING is not
// (exit 1, the shard's address and the reason on stderr and in the JSON).
TEST(PsctlHealth, ServingIsZeroNotServingOrUnreachableIsOne) {
  const std::string psctl = SiblingBinary("psctl");
  ChildServer fresh({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  const std::string address = fresh.address();
  ASSERT_FALSE(address.empty()) << fresh.first_line();

  Ran ran = RunProgram(psctl, {"--shards", address, "health"});
  EXPECT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.out, "SERVING")) << ran.out;
  ran = RunProgram(psctl, {"health", "--json"}, {"PSKIT_SHARDS=" + address});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  Struct s = ParseJson(ran);
  EXPECT_EQ(Str(At(s, "command")), "health");
  EXPECT_TRUE(At(s, "ok").bool_value());
  EXPECT_EQ(Num(At(s, "timeout_s")), 3);  // health's own default
  ASSERT_EQ(Size(At(s, "shards")), 1);
  EXPECT_EQ(Str(At(At(At(s, "shards"), 0), "address")), address);
  EXPECT_EQ(Str(At(At(At(s, "shards"), 0), "status")), "SERVING");

  // A server whose health service says NOT_SERVING (what a draining
  // ps-server says between SIGTERM and its exit).
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  std::unique_ptr<grpc::Server> draining = builder.BuildAndStart();
  ASSERT_NE(draining, nullptr);
  draining->GetHealthCheckService()->SetServingStatus(false);
  const std::string not_serving = absl::StrCat("127.0.0.1:", port);
  ran = RunProgram(psctl, {"--shards", absl::StrCat(address, ",", not_serving),
                           "health", "--json"});
  EXPECT_EQ(ran.exit_code, 1) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, not_serving + ") is NOT_SERVING"))
      << ran.err;
  s = ParseJson(ran);
  EXPECT_EQ(Num(At(s, "exit_code")), 1);
  EXPECT_TRUE(At(At(At(s, "shards"), 0), "ok").bool_value());
  EXPECT_EQ(Str(At(At(At(s, "shards"), 1), "status")), "NOT_SERVING");
  draining->Shutdown();

  // A closed port: unreachable, and --timeout_s is honoured.
  const std::string closed = absl::StrCat("127.0.0.1:", ClosedPort());
  ran = RunProgram(psctl, {"--shards", closed, "--timeout_s", "2", "health",
                           "--json"});
  EXPECT_EQ(ran.exit_code, 1) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, closed + ") is unreachable"))
      << ran.err;
  s = ParseJson(ran);
  EXPECT_EQ(Num(At(s, "timeout_s")), 2);
  EXPECT_EQ(Str(At(At(At(s, "shards"), 0), "status")), "UNREACHABLE");

  // The shard after SIGTERM (drained, exited 0): unreachable at its address.
  EXPECT_EQ(fresh.StopWith(SIGTERM), 0);
  ran = RunProgram(psctl, {"--shards", address, "health"});
  EXPECT_EQ(ran.exit_code, 1) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, address)) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.out, "UNREACHABLE")) << ran.out;

  // Usage and help.
  EXPECT_EQ(RunProgram(psctl, {"--shards", address, "health", "x"}).exit_code,
            2);
  ran = RunProgram(psctl, {"help"});
  EXPECT_TRUE(absl::StrContains(ran.out, "  health\n")) << ran.out;
  ran = RunProgram(psctl, {"health", "--help"});
  EXPECT_EQ(ran.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(ran.out, "usage: psctl health")) << ran.out;
}

// A shard name that never resolves: psctl asks again until --timeout_s
// (saying which name it waits for), then status exits 3 and health 1, both
// naming the name; the shard that answers is still reported.
TEST(PsctlNames, AnUnresolvableNameIsWaitedForThenNamed) {
  ChildServer shard({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  ASSERT_FALSE(shard.address().empty()) << shard.first_line();
  const std::string name = "pskit-shard.invalid:7000";
  Ran ran = RunProgram(SiblingBinary("psctl"),
                       {"--shards", name, "--timeout_s", "2", "status"});
  EXPECT_EQ(ran.exit_code, 3) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, "shard 0 (" + name + ")")) << ran.err;
  if (absl::StrContains(ran.err, "DNS resolution failed")) {
    EXPECT_TRUE(absl::StrContains(
        ran.err, "waiting for shard " + name +
                     ": the name does not resolve yet"))
        << ran.err;
  }
  ran = RunProgram(SiblingBinary("psctl"), {"--shards", shard.address() + "," +
                                                name,
                                            "--timeout_s", "2", "health",
                                            "--json"});
  EXPECT_EQ(ran.exit_code, 1) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, name)) << ran.err;
  Struct s = ParseJson(ran);
  EXPECT_EQ(Str(At(At(At(s, "shards"), 0), "status")), "SERVING");
  if (absl::StrContains(ran.err, "DNS resolution failed")) {
    EXPECT_EQ(Str(At(At(At(s, "shards"), 1), "status")), "NAME_NOT_RESOLVED");
    EXPECT_TRUE(absl::StrContains(
        ran.err, "the name 'pskit-shard.invalid' of shard 1 (" + name +
                     ") did not resolve within 2s"))
        << ran.err;
  }
}

TEST_F(PsctlTest, TensorsMergesEveryShard) {
  auto c = NewClient();
  ASSERT_NO_FATAL_FAILURE(PushRamp(c.get(), 0.01f));
  ASSERT_NO_FATAL_FAILURE(PushRamp(c.get(), 0.01f));
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"tensors", "--json"},
        std::vector<std::string>{"tensors", "job", "--json"}}) {
    Ran ran = Psctl(args);
    ASSERT_EQ(ran.exit_code, 0) << ran.err;
    Struct s = ParseJson(ran);
    const Value& tensors = At(s, "tensors");
    ASSERT_EQ(Size(tensors), 2) << ran.out;
    struct Want {
      const char* name;
      std::vector<double> shape;
      double elements, chunks;
    };
    const Want want[] = {{"b", {7}, 7, 2}, {"w", {3, 5}, 15, 4}};
    for (int i = 0; i < 2; ++i) {
      const Value& t = At(tensors, i);
      EXPECT_EQ(Str(At(t, "namespace")), "job");
      EXPECT_EQ(Str(At(t, "name")), want[i].name);
      const Value& shape = At(t, "shape");
      ASSERT_EQ(Size(shape), static_cast<int>(want[i].shape.size()));
      for (int d = 0; d < Size(shape); ++d) {
        EXPECT_EQ(Num(At(shape, d)), want[i].shape[d]);
      }
      EXPECT_EQ(Num(At(t, "elements")), want[i].elements);
      EXPECT_EQ(Num(At(t, "chunks")), want[i].chunks);
      const Value& per = At(t, "chunks_per_shard");
      ASSERT_EQ(Size(per), 2);
      EXPECT_EQ(Num(At(per, 0)) + Num(At(per, 1)), want[i].chunks);
      EXPECT_EQ(Num(At(t, "max_version")), 2);
    }
  }
  Ran ran = Psctl({"tensors"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.out, "[3,5]")) << ran.out;
  ran = Psctl({"tensors", "nope", "--json"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ran.err, "NOT_FOUND")) << ran.err;
}

TEST_F(PsctlTest, CheckpointListAndRestore) {
  auto c = NewClient();
  ASSERT_NO_FATAL_FAILURE(PushRamp(c.get(), 0.01f));
  const std::vector<float> saved = PullTensor(c.get(), "w", 15);

  Ran ran = Psctl({"checkpoint", "--id", "c1", "--wait", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  Struct s = ParseJson(ran);
  EXPECT_EQ(Str(At(s, "id")), "c1");
  EXPECT_TRUE(At(s, "waited").bool_value());
  EXPECT_TRUE(At(s, "complete").bool_value());
  for (int i = 0; i < 2; ++i) {
    const Value& sh = At(At(s, "shards"), i);
    EXPECT_EQ(Str(At(sh, "state")), "done");
    EXPECT_EQ(Str(At(At(sh, "checkpoint"), "id")), "c1");
    EXPECT_GT(Num(At(At(sh, "checkpoint"), "chunks")), 0);
  }
  // The same id again is refused by every shard.
  ran = Psctl({"checkpoint", "--id", "c1", "--wait", "--json"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ran.err, "ALREADY_EXISTS")) << ran.err;

  // Without --wait and an id: psctl-<ms>; a small model is done within the
  // second psctl waits.
  ran = Psctl({"checkpoint", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  s = ParseJson(ran);
  const std::string auto_id = Str(At(s, "id"));
  EXPECT_TRUE(absl::StartsWith(auto_id, "psctl-")) << auto_id;
  EXPECT_FALSE(At(s, "waited").bool_value());
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Str(At(At(At(s, "shards"), i), "state")), "done") << ran.out;
  }

  // A checkpoint on shard 0 only.
  auto shard0 = NewClient(absl::Seconds(20), {addresses_[0]});
  ASSERT_OK(shard0->Checkpoint("half"));

  ran = Psctl({"checkpoints", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  s = ParseJson(ran);
  const Value& list = At(s, "checkpoints");
  ASSERT_EQ(Size(list), 3) << ran.out;
  EXPECT_EQ(Str(At(At(list, 0), "id")), "half");  // newest first
  for (int i = 0; i < 3; ++i) {
    const Value& ck = At(list, i);
    if (Str(At(ck, "id")) == "half") {
      EXPECT_FALSE(At(ck, "complete").bool_value());
      ASSERT_EQ(Size(At(ck, "shards")), 1);
      EXPECT_EQ(Num(At(At(ck, "shards"), 0)), 0);
      ASSERT_EQ(Size(At(ck, "missing")), 1);
      EXPECT_EQ(Num(At(At(ck, "missing"), 0)), 1);
    } else {
      EXPECT_TRUE(Str(At(ck, "id")) == "c1" || Str(At(ck, "id")) == auto_id);
      EXPECT_TRUE(At(ck, "complete").bool_value());
      EXPECT_EQ(Size(At(ck, "shards")), 2);
      EXPECT_EQ(Size(At(ck, "missing")), 0);
    }
  }
  ran = Psctl({"checkpoints"});
  ASSERT_EQ(ran.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(ran.out, "complete")) << ran.out;

  // Move on, then restore c1 everywhere.
  ASSERT_NO_FATAL_FAILURE(PushRamp(c.get(), 0.5f));
  const std::vector<float> moved = PullTensor(c.get(), "w", 15);
  ASSERT_NE(moved, saved);

  // Refusals change nothing: an unknown id, and one only shard 0 has.
  ran = Psctl({"restore", "nope", "--json"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ran.err, "'nope'")) << ran.err;
  EXPECT_TRUE(absl::StrContains(Str(At(ParseJson(ran), "error")), "'nope'"));
  ran = Psctl({"restore", "half"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ran.err, "'half' is not on shard 1"))
      << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, addresses_[1])) << ran.err;
  EXPECT_EQ(PullTensor(c.get(), "w", 15), moved);

  ran = Psctl({"restore", "c1", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  s = ParseJson(ran);
  EXPECT_EQ(Str(At(s, "id")), "c1");
  for (int i = 0; i < 2; ++i) {
    const Value& sh = At(At(s, "shards"), i);
    EXPECT_TRUE(At(sh, "ok").bool_value());
    EXPECT_EQ(Str(At(At(sh, "checkpoint"), "id")), "c1");
  }
  EXPECT_EQ(PullTensor(c.get(), "w", 15), saved);
}

TEST_F(PsctlTest, SetChangesHyperParametersLive) {
  auto c = NewClient();
  Ran ran = Psctl({"set", "job", "lr=0.5", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  Struct s = ParseJson(ran);
  EXPECT_EQ(Str(At(s, "namespace")), "job");
  EXPECT_EQ(Num(At(At(s, "changes"), "learning_rate")), 0.5);
  for (int i = 0; i < 2; ++i) {
    const Value& sh = At(At(s, "shards"), i);
    EXPECT_TRUE(At(sh, "ok").bool_value());
    EXPECT_EQ(Num(At(At(sh, "previous"), "learning_rate")), 1);
    EXPECT_EQ(Num(At(At(sh, "config"), "learning_rate")), 0.5);
  }
  EXPECT_EQ(Num(At(At(StatusOfJob(), "config"), "learning_rate")), 0.5);

  // The next update uses it: b -= 0.5 * g.
  const std::vector<float> before = PullTensor(c.get(), "b", 7);
  std::vector<float> g(7, 1.0f);
  ASSERT_OK(c->Push("job", {{"b", g}}));
  const std::vector<float> after = PullTensor(c.get(), "b", 7);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(after[i], before[i] - 0.5f) << i;

  // Bad values: refused with a clear message, nothing changes.
  ran = Psctl({"set", "job", "lr=-1", "--json"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ran.err, "INVALID_ARGUMENT")) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, "learning_rate is -1")) << ran.err;
  EXPECT_FALSE(At(ParseJson(ran), "ok").bool_value());
  ran = Psctl({"set", "job", "lr=0.25", "weight_decay=-3"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ran.err, "weight_decay is -3")) << ran.err;
  // A setting the namespace's optimizer (SGD) never reads changes nothing:
  // refused, naming what it does take.
  ran = Psctl({"set", "job", "lr=0.25", "momentum=0.5"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(
      absl::StrContains(ran.err,
                        "OPTIMIZER_SGD does not read 'momentum'; it takes "
                        "learning_rate, weight_decay"))
      << ran.err;
  ran = Psctl({"set", "job", "lr=fast"});
  EXPECT_EQ(ran.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(ran.err, "not a number")) << ran.err;
  ran = Psctl({"set", "job", "speed=1"});
  EXPECT_EQ(ran.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(ran.err, "not a setting")) << ran.err;
  ran = Psctl({"set", "job", "optimizer=adam"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ran.err, "FAILED_PRECONDITION")) << ran.err;
  ran = Psctl({"set", "nope", "lr=1"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ran.err, "NOT_FOUND")) << ran.err;
  Value job = StatusOfJob();
  EXPECT_EQ(Num(At(At(job, "config"), "learning_rate")), 0.5);
  EXPECT_EQ(Num(At(At(job, "config"), "momentum")), 0.9);

  // A worker that declares the model again with its own flags is accepted;
  // a third config is not.
  ASSERT_OK(c->Declare("job", testing::SgdConfig(1.0f), Model()));
  EXPECT_EQ(c->Declare("job", testing::SgdConfig(0.25f), Model()).code(),
            absl::StatusCode::kFailedPrecondition);

  // Checkpoints keep the config: restore brings 0.5 back, and so does a
  // restart (which also remembers the declared config).
  ASSERT_EQ(Psctl({"checkpoint", "--id", "lr05", "--wait"}).exit_code, 0);
  ran = Psctl({"set", "job", "lr=0.125", "compensation=inverse"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  job = StatusOfJob();
  EXPECT_EQ(Num(At(At(job, "config"), "learning_rate")), 0.125);
  EXPECT_EQ(Str(At(At(job, "config"), "compensation")), "inverse");
  ASSERT_EQ(Psctl({"restore", "lr05"}).exit_code, 0);
  job = StatusOfJob();
  EXPECT_EQ(Num(At(At(job, "config"), "learning_rate")), 0.5);
  EXPECT_EQ(Str(At(At(job, "config"), "compensation")), "none");

  ASSERT_NO_FATAL_FAILURE(RestartShards());
  EXPECT_EQ(Num(At(At(StatusOfJob(), "config"), "learning_rate")), 0.5);
  auto again = NewClient();
  EXPECT_OK(again->Declare("job", testing::SgdConfig(1.0f), Model()));
}

// Checks `file` is .npy 1.0 of little-endian float32 `values` in `shape`
// (numpy's header text for it given as `shape_text`).
void ExpectNpy(const std::string& file, const std::string& shape_text,
               const std::vector<float>& values) {
  const std::string bytes = ReadFile(file);
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 6), std::string("\x93NUMPY", 6));
  EXPECT_EQ(bytes[6], 1);  // version 1.0
  EXPECT_EQ(bytes[7], 0);
  const size_t header_len = static_cast<uint8_t>(bytes[8]) |
                            static_cast<size_t>(static_cast<uint8_t>(bytes[9]))
                                << 8;
  EXPECT_EQ((10 + header_len) % 64, 0u) << header_len;
  ASSERT_EQ(bytes.size(), 10 + header_len + values.size() * 4);
  const std::string header = bytes.substr(10, header_len);
  const std::string dict =
      "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text + ", }";
  EXPECT_EQ(header.substr(0, dict.size()), dict);
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(header.find_first_not_of(' ', dict.size()), header.size() - 1)
      << "padding is not spaces: [" << header << "]";
  // Raw little-endian float32, in C order (this host is little-endian).
  EXPECT_EQ(std::memcmp(bytes.data() + 10 + header_len, values.data(),
                        values.size() * 4),
            0);
}

std::string Hex(const std::vector<float>& values) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(values.data());
  for (size_t i = 0; i < values.size() * 4; ++i) {
    absl::StrAppend(&out, absl::Hex(p[i], absl::kZeroPad2));
  }
  return out;
}

TEST_F(PsctlTest, DumpWritesNpyVersion1) {
  auto c = NewClient();
  ASSERT_NO_FATAL_FAILURE(PushRamp(c.get(), 0.01f));
  const std::vector<float> w = PullTensor(c.get(), "w", 15);
  const std::vector<float> b = PullTensor(c.get(), "b", 7);
  TempDir dir;
  const std::string w_file = dir.path() + "/w.npy";
  const std::string b_file = dir.path() + "/b.npy";

  Ran ran = Psctl({"dump", "job", "w", "--out", w_file, "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  Struct s = ParseJson(ran);
  EXPECT_EQ(Str(At(s, "tensor")), "w");
  ASSERT_EQ(Size(At(s, "shape")), 2);
  EXPECT_EQ(Num(At(At(s, "shape"), 0)), 3);
  EXPECT_EQ(Num(At(At(s, "shape"), 1)), 5);
  EXPECT_EQ(Num(At(s, "elements")), 15);
  EXPECT_EQ(Num(At(s, "max_version")), 1);
  EXPECT_EQ(Str(At(s, "out")), w_file);
  EXPECT_EQ(Num(At(s, "bytes")), std::filesystem::file_size(w_file));
  ExpectNpy(w_file, "(3, 5)", w);

  ran = Psctl({"dump", "job", "b", "--out", b_file});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.out, b_file)) << ran.out;
  ExpectNpy(b_file, "(7,)", b);

  // Failures leave no file, and no temporary one either.
  ran = Psctl({"dump", "job", "nope", "--out", dir.path() + "/nope.npy"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ran.err, "'nope'")) << ran.err;
  ran = Psctl({"dump", "job", "w", "--out", dir.path() + "/no/such/dir.npy"});
  EXPECT_EQ(ran.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(ran.err, "cannot create")) << ran.err;
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(absl::StrJoin(names, ","), "b.npy,w.npy");

  // numpy reads them back the same, where it is installed.
  const std::string python = "/usr/bin/python3";
  if (access(python.c_str(), X_OK) != 0 ||
      RunProgram(python, {"-c", "import numpy"}).exit_code != 0) {
    GTEST_SKIP() << "no numpy for /usr/bin/python3: the byte-for-byte checks "
                    "passed; the numpy.load check is skipped";
  }
  const std::string script =
      "import numpy, sys\n"
      "a = numpy.load(sys.argv[1])\n"
      "print(a.dtype.str, a.shape, a.tobytes().hex())\n";
  ran = RunProgram(python, {"-c", script, w_file});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_EQ(ran.out, absl::StrCat("<f4 (3, 5) ", Hex(w), "\n"));
  ran = RunProgram(python, {"-c", script, b_file});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_EQ(ran.out, absl::StrCat("<f4 (7,) ", Hex(b), "\n"));
}

TEST_F(PsctlTest, DrainEndsJobsRefusesNewWorkersAndCheckpoints) {
  auto worker = NewClient();
  ASSERT_OK(worker->RegisterWorker("rank0"));
  ASSERT_OK_AND_ASSIGN(bool done, worker->Heartbeat("job"));
  ASSERT_FALSE(done);

  // The worker has not heard yet: the wait runs out with it still live.
  Ran ran =
      Psctl({"drain", "--wait_s", "1", "--reason", "maintenance", "--json"});
  EXPECT_EQ(ran.exit_code, 1) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, "still hold leases")) << ran.err;
  Struct s = ParseJson(ran);
  EXPECT_FALSE(At(s, "drained").bool_value());
  EXPECT_EQ(Num(At(s, "live_workers")), 1);
  for (int i = 0; i < 2; ++i) {
    const Value& sh = At(At(s, "shards"), i);
    EXPECT_TRUE(At(sh, "ok").bool_value());
    ASSERT_EQ(Size(At(sh, "namespaces")), 1);
    EXPECT_EQ(Str(At(At(sh, "namespaces"), 0)), "job");
    EXPECT_EQ(Num(At(sh, "live_workers")), 1);
    EXPECT_TRUE(
        absl::StartsWith(Str(At(At(sh, "checkpoint"), "id")), "drain-"));
  }

  // Its next heartbeat says the job is done; it leaves.
  ASSERT_OK_AND_ASSIGN(done, worker->Heartbeat("job"));
  EXPECT_TRUE(done);
  ASSERT_OK(worker->Leave());
  // New workers are refused (the client retries UNAVAILABLE until its
  // deadline, then says why).
  auto late = NewClient(absl::Seconds(1));
  absl::StatusOr<uint64_t> id = late->RegisterWorker("rank1");
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(id.status().message(), "shard is draining"))
      << id.status();

  ran = Psctl({"drain", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  s = ParseJson(ran);
  EXPECT_TRUE(At(s, "drained").bool_value());
  EXPECT_EQ(Num(At(s, "live_workers")), 0);
  ran = Psctl({"drain"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.out, "drained: no live workers"))
      << ran.out;

  ran = Psctl({"status", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  s = ParseJson(ran);
  for (int i = 0; i < 2; ++i) {
    const Value& sh = At(At(s, "shards"), i);
    EXPECT_TRUE(At(sh, "draining").bool_value());
    EXPECT_EQ(Num(At(sh, "live_workers")), 0);
    EXPECT_TRUE(
        absl::StartsWith(Str(At(At(sh, "last_checkpoint"), "id")), "drain-"));
    const Value& e = At(sh, "latest_evaluation");
    EXPECT_TRUE(At(e, "done").bool_value());
    EXPECT_EQ(Str(At(e, "reason")), "maintenance");  // the first drain's
  }
  ran = Psctl({"checkpoints", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  s = ParseJson(ran);
  const Value& list = At(s, "checkpoints");
  ASSERT_GE(Size(list), 1);
  EXPECT_TRUE(absl::StartsWith(Str(At(At(list, 0), "id")), "drain-"));
  EXPECT_TRUE(At(At(list, 0), "complete").bool_value());
}

// psctl drop: refused (exit 1, the shard's message, nothing changed) while
// a worker of the namespace holds a lease; then one line per shard with the
// chunks and elements freed, and the namespace gone from every shard.
TEST_F(PsctlTest, DropDeletesANamespaceOnEveryShard) {
  auto worker = NewClient();
  ASSERT_OK(worker->RegisterWorker("rank0", "job"));
  Ran ran = Psctl({"drop", "job"});
  EXPECT_EQ(ran.exit_code, 1) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, "FAILED_PRECONDITION")) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, "rank0")) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, "no shard was changed")) << ran.err;
  StatusOfJob();  // still there

  ASSERT_OK(worker->Leave());
  ran = Psctl({"drop", "job", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  Struct s = ParseJson(ran);
  EXPECT_EQ(Str(At(s, "namespace")), "job");
  ASSERT_EQ(Size(At(s, "shards")), 2);
  double chunks = 0, elements = 0;
  for (int i = 0; i < 2; ++i) {
    const Value& sh = At(At(s, "shards"), i);
    EXPECT_TRUE(At(sh, "ok").bool_value());
    chunks += Num(At(sh, "chunks_freed"));
    elements += Num(At(sh, "elements_freed"));
  }
  EXPECT_EQ(chunks, 6);      // w: 15 elements in 4 chunks, b: 7 in 2
  EXPECT_EQ(elements, 22);
  ran = Psctl({"status", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_FALSE(absl::StrContains(ran.out, "\"job\"")) << ran.out;

  // Gone: dropping it again names the reason; the table form.
  ran = Psctl({"drop", "job"});
  EXPECT_EQ(ran.exit_code, 1) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.err, "NOT_FOUND")) << ran.err;
  auto client = NewClient();
  ASSERT_OK(client->Declare("job", testing::SgdConfig(1.0f), Model()));
  ran = Psctl({"drop", "job"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_TRUE(absl::StrContains(ran.out, "chunks freed")) << ran.out;
  EXPECT_TRUE(absl::StrContains(ran.out, addresses_[1])) << ran.out;
  EXPECT_EQ(Psctl({"drop"}).exit_code, 2);
  EXPECT_EQ(Psctl({"drop", "a", "b"}).exit_code, 2);
}

// psctl shutdown: drain, then one checkpoint id on every shard; the shards'
// SIGTERM adds no final checkpoint of its own (nothing changed), so that id
// is every shard's newest after the restart and restores the cluster.
TEST_F(PsctlTest, ShutdownLeavesOneCheckpointIdOnEveryShard) {
  auto worker = NewClient();
  ASSERT_OK(worker->RegisterWorker("rank0"));
  PushRamp(worker.get(), 0.5f);
  const std::vector<float> w = PullTensor(worker.get(), "w", 15);
  ASSERT_OK(worker->Leave());

  Ran ran = Psctl({"shutdown", "--id", "end-1", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  Struct s = ParseJson(ran);
  EXPECT_EQ(Str(At(s, "id")), "end-1");
  EXPECT_TRUE(At(s, "complete").bool_value());
  EXPECT_TRUE(At(At(s, "drain"), "drained").bool_value());

  ASSERT_NO_FATAL_FAILURE(RestartShards());  // SIGTERM, then start again
  ran = Psctl({"checkpoints", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  s = ParseJson(ran);
  const Value& list = At(s, "checkpoints");
  ASSERT_GE(Size(list), 1);
  EXPECT_EQ(Str(At(At(list, 0), "id")), "end-1") << ran.out;
  EXPECT_TRUE(At(At(list, 0), "complete").bool_value());
  for (int i = 0; i < Size(list); ++i) {
    EXPECT_FALSE(absl::StartsWith(Str(At(At(list, i), "id")), "final-"))
        << ran.out;
  }
  ran = Psctl({"status", "--json"});
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  s = ParseJson(ran);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Str(At(At(At(At(s, "shards"), i), "last_checkpoint"), "id")),
              "end-1");
  }
  // The restarted cluster serves the pushed values, and restores them.
  auto reader = NewClient();
  EXPECT_EQ(PullTensor(reader.get(), "w", 15), w);
  ran = Psctl({"restore", "end-1"});
  EXPECT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_EQ(PullTensor(reader.get(), "w", 15), w);

  // A bad id is refused before anything happens.
  ran = Psctl({"shutdown", "--id", "a/b"});
  EXPECT_EQ(ran.exit_code, 2) << ran.err;
}

}  // namespace
}  // namespace pskit
