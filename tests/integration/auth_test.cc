// tests/integration/auth_test.cc
//
// The gate (server/gate.h) on a real shard started with --auth_tokens:
// UNAUTHENTICATED on every RPC without a token, each role refused exactly
// what it may not do (one test per RPC and role), namespace limits, worker
// ids bound to the token that registered them, malformed requests answered
// INVALID_ARGUMENT naming the message type, the refusal metric, the metrics
// endpoint's token, and the start-time checks (bad token file, tokens
// without TLS).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/auth_token.h"
#include "common/channel.h"
#include "common/http_get.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pskit/v1/admin.pb.h"
#include "pskit/v1/ps.pb.h"
#include "tests/testing/child_server.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::TempDir;
using testing::TestCluster;

constexpr uint32_t kChunk = 1024;

// Every RPC of both services, with a well-formed request and the least
// role that may call it.
struct Rpc {
  std::string service;  // "ParameterServer" or "Admin"
  std::string method;   // "Declare"
  TokenRole role;
  std::function<std::unique_ptr<google::protobuf::Message>(
      const std::string& ns)>
      request;

  std::string path() const {
    return absl::StrCat("/pskit.v1.", service, "/", method);
  }
  std::string label() const { return absl::StrCat(service, "/", method); }
};

v1::Layout WireLayout() {
  v1::Layout l;
  l.set_num_shards(1);
  l.set_chunk_elems(kChunk);
  l.set_shard_index(0);
  return l;
}

template <typename M>
std::function<std::unique_ptr<google::protobuf::Message>(const std::string&)>
Make(std::function<void(M*, const std::string&)> fill) {
  return [fill](const std::string& ns) {
    auto m = std::make_unique<M>();
    fill(m.get(), ns);
    return m;
  };
}

const std::vector<Rpc>& AllRpcs() {
  static const auto* rpcs = new std::vector<Rpc>{
      {"ParameterServer", "Declare", TokenRole::kWorker,
       Make<v1::DeclareRequest>([](auto* r, const std::string& ns) {
         r->set_namespace_(ns);
         *r->mutable_layout() = WireLayout();
         r->mutable_config()->mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
         v1::TensorSpec* t = r->add_tensors();
         t->set_name("w");
         t->add_shape(4);
         t->mutable_init()->set_kind(v1::INIT_ZEROS);
       })},
      {"ParameterServer", "Pull", TokenRole::kReader,
       Make<v1::PullRequest>([](auto* r, const std::string& ns) {
         r->set_namespace_(ns);
         *r->mutable_layout() = WireLayout();
         r->set_encoding(v1::ENCODING_F32);
       })},
      {"ParameterServer", "Push", TokenRole::kWorker,
       Make<v1::PushRequest>([](auto* r, const std::string& ns) {
         r->set_namespace_(ns);
         *r->mutable_layout() = WireLayout();
       })},
      {"ParameterServer", "PushPull", TokenRole::kWorker,
       Make<v1::PushRequest>([](auto* r, const std::string& ns) {
         r->set_namespace_(ns);
         *r->mutable_layout() = WireLayout();
         r->set_return_encoding(v1::ENCODING_F32);
       })},
      {"ParameterServer", "Exchange", TokenRole::kWorker,
       Make<v1::ExchangeRequest>([](auto* r, const std::string& ns) {
         r->set_namespace_(ns);
         *r->mutable_layout() = WireLayout();
         r->set_alpha(0.5f);
       })},
      {"ParameterServer", "RegisterWorker", TokenRole::kWorker,
       Make<v1::RegisterWorkerRequest>(
           [](auto* r, const std::string&) { r->set_name("auth-test"); })},
      {"ParameterServer", "Heartbeat", TokenRole::kWorker,
       Make<v1::HeartbeatRequest>([](auto* r, const std::string& ns) {
         r->set_worker_id(777);
         r->set_namespace_(ns);
       })},
      {"ParameterServer", "Leave", TokenRole::kWorker,
       Make<v1::LeaveRequest>(
           [](auto* r, const std::string&) { r->set_worker_id(777); })},
      {"ParameterServer", "ReportEvaluation", TokenRole::kWorker,
       Make<v1::ReportEvaluationRequest>([](auto* r, const std::string& ns) {
         r->set_namespace_(ns);
         r->mutable_evaluation()->set_accuracy(0.5);
       })},
      {"Admin", "Checkpoint", TokenRole::kAdmin,
       Make<v1::CheckpointRequest>(
           [](auto* r, const std::string&) { r->set_id("auth-test"); })},
      {"Admin", "ListCheckpoints", TokenRole::kReader,
       Make<v1::ListCheckpointsRequest>([](auto*, const std::string&) {})},
      {"Admin", "Restore", TokenRole::kAdmin,
       Make<v1::RestoreRequest>(
           [](auto* r, const std::string&) { r->set_id("no-such-id"); })},
      {"Admin", "Status", TokenRole::kReader,
       Make<v1::StatusRequest>([](auto*, const std::string&) {})},
      {"Admin", "SetConfig", TokenRole::kAdmin,
       Make<v1::SetConfigRequest>([](auto* r, const std::string& ns) {
         r->set_namespace_(ns);
         r->mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
         r->mutable_optimizer()->set_learning_rate(0.1f);
       })},
      {"Admin", "Drain", TokenRole::kAdmin,
       Make<v1::DrainRequest>(
           [](auto* r, const std::string&) { r->set_reason("auth test"); })},
      {"Admin", "DropNamespace", TokenRole::kAdmin,
       Make<v1::DropNamespaceRequest>([](auto* r, const std::string& ns) {
         r->set_namespace_(ns.empty() ? "nothing-here" : ns);
       })},
  };
  return *rpcs;
}

// A shard started with a token file holding one token per name below.
class AuthCluster {
 public:
  // Names: reader, worker, admin (every namespace); worker_a, reader_a,
  // admin_a (namespace jobA only); worker2 (a second worker token).
  static absl::StatusOr<std::unique_ptr<AuthCluster>> Start(
      ServerOptions base = {}) {
    auto c = std::unique_ptr<AuthCluster>(new AuthCluster());
    const std::pair<const char*, std::string> specs[] = {
        {"reader", "reader"},         {"worker", "worker"},
        {"admin", "admin"},           {"worker_a", "worker jobA"},
        {"reader_a", "reader jobA"},  {"admin_a", "admin jobA"},
        {"worker2", "worker"},
    };
    std::string text = "# auth_test tokens\n";
    for (const auto& [name, role_ns] : specs) {
      absl::StatusOr<std::string> t = GenerateToken();
      if (!t.ok()) return t.status();
      c->tokens_[name] = *t;
      absl::StrAppend(&text, HashToken(*t), " ", role_ns, "\n");
    }
    c->tokens_file_ = c->dir_.path() + "/tokens";
    std::ofstream(c->tokens_file_) << text;
    base.chunk_elems = kChunk;
    base.auth_tokens_file = c->tokens_file_;
    base.metrics_port = 0;
    absl::StatusOr<std::unique_ptr<TestCluster>> cluster =
        TestCluster::Start(1, base);
    if (!cluster.ok()) return cluster.status();
    c->cluster_ = *std::move(cluster);
    c->channel_ = MakeChannel(c->cluster_->addresses()[0]);
    c->stub_ = std::make_unique<grpc::GenericStub>(c->channel_);
    return c;
  }

  const std::string& token(const std::string& name) { return tokens_[name]; }
  const std::string& tokens_file() const { return tokens_file_; }
  TestCluster& cluster() { return *cluster_; }

  // Sends `bytes` to method `path` with `authorization` metadata (none when
  // empty); returns the status and fills `answer` with the response bytes.
  grpc::Status CallBytes(const std::string& path, const std::string& bytes,
                         const std::string& authorization,
                         std::string* answer = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::Status status;
    absl::Notification done;
    stub_->UnaryCall(&ctx, path, grpc::StubOptions(), &request, &response,
                     [&](grpc::Status s) {
                       status = std::move(s);
                       done.Notify();
                     });
    done.WaitForNotification();
    if (answer != nullptr && status.ok()) {
      std::vector<grpc::Slice> slices;
      (void)response.Dump(&slices);
      answer->clear();
      for (const grpc::Slice& s : slices) {
        answer->append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
    return status;
  }

  // Calls `rpc` in namespace `ns` with the token named `who` ("" = none).
  grpc::Status Call(const Rpc& rpc, const std::string& who,
                    const std::string& ns = "jobA",
                    std::string* answer = nullptr) {
    return CallBytes(rpc.path(), rpc.request(ns)->SerializeAsString(),
                     who.empty() ? "" : "Bearer " + token(who), answer);
  }

  template <typename Req>
  grpc::Status CallMsg(const std::string& path, const Req& req,
                       const std::string& who, std::string* answer = nullptr) {
    return CallBytes(path, req.SerializeAsString(), "Bearer " + token(who),
                     answer);
  }

 private:
  AuthCluster() = default;
  TempDir dir_;
  std::string tokens_file_;
  std::map<std::string, std::string> tokens_;
  std::unique_ptr<TestCluster> cluster_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
};

const Rpc& FindRpc(const std::string& method) {
  for (const Rpc& r : AllRpcs()) {
    if (r.method == method) return r;
  }
  ADD_FAILURE() << "no rpc " << method;
  return AllRpcs()[0];
}

TEST(AuthTest, UnauthenticatedOnEveryRpc) {
  ASSERT_OK_AND_ASSIGN(auto c, AuthCluster::Start());
  ASSERT_OK_AND_ASSIGN(std::string stranger, GenerateToken());
  ASSERT_EQ(AllRpcs().size(), 16u);
  for (const Rpc& rpc : AllRpcs()) {
    const std::string bytes = rpc.request("jobA")->SerializeAsString();
    for (const std::string& auth :
         {std::string(), "Bearer " + stranger, "Basic " + c->token("admin"),
          "Bearer " + HashToken(c->token("admin"))}) {
      grpc::Status s = c->CallBytes(rpc.path(), bytes, auth);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << rpc.label() << " with '" << auth.substr(0, 6) << "...': "
          << s.error_message();
      EXPECT_THAT(s.error_message(), HasSubstr(rpc.label()));
      EXPECT_THAT(s.error_message(), Not(HasSubstr(stranger)));
      EXPECT_THAT(s.error_message(), Not(HasSubstr(c->token("admin"))));
    }
  }
  // The health service stays open for probes.
  grpc::Status health =
      c->CallBytes("/grpc.health.v1.Health/Check", std::string(), "");
  EXPECT_TRUE(health.ok()) << health.error_message();
}

// One test per RPC and role: a role is refused exactly the RPCs above it.
class RoleTest
    : public ::testing::TestWithParam<std::tuple<TokenRole, std::string>> {};

TEST_P(RoleTest, RefusedExactlyWhatTheRoleMayNotDo) {
  const auto& [role, method] = GetParam();
  const Rpc& rpc = FindRpc(method);
  ASSERT_OK_AND_ASSIGN(auto c, AuthCluster::Start());
  const std::string who(TokenRoleName(role));
  grpc::Status s = c->Call(rpc, who);
  if (role < rpc.role) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(rpc.label()));
    EXPECT_THAT(s.error_message(), HasSubstr(who));
    EXPECT_THAT(s.error_message(), HasSubstr(TokenRoleName(rpc.role)));
    EXPECT_THAT(s.error_message(), Not(HasSubstr(c->token(who))));
  } else {
    // Allowed: the call may still fail for its own reasons (NOT_FOUND for an
    // undeclared namespace, FAILED_PRECONDITION on a memory-only shard).
    EXPECT_NE(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << s.error_message();
    EXPECT_NE(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << s.error_message();
  }
}

std::vector<std::string> AllMethodNames() {
  std::vector<std::string> names;
  for (const Rpc& r : AllRpcs()) names.push_back(r.method);
  return names;
}

INSTANTIATE_TEST_SUITE_P(
    EveryRpcAndRole, RoleTest,
    ::testing::Combine(::testing::Values(TokenRole::kReader,
                                         TokenRole::kWorker,
                                         TokenRole::kAdmin),
                       ::testing::ValuesIn(AllMethodNames())),
    [](const ::testing::TestParamInfo<RoleTest::ParamType>& info) {
      return absl::StrCat(TokenRoleName(std::get<0>(info.param)), "_",
                          std::get<1>(info.param));
    });

TEST(AuthTest, AllowedCallsReallyWork) {
  ASSERT_OK_AND_ASSIGN(auto c, AuthCluster::Start());
  EXPECT_TRUE(c->Call(FindRpc("Declare"), "worker").ok());
  v1::PullRequest pull;
  pull.set_namespace_("jobA");
  *pull.mutable_layout() = WireLayout();
  pull.set_encoding(v1::ENCODING_F32);
  v1::ChunkRef* ref = pull.add_chunks();
  ref->set_tensor("w");
  ref->set_chunk(0);
  std::string answer;
  ASSERT_TRUE(c->CallMsg("/pskit.v1.ParameterServer/Pull", pull, "reader",
                         &answer)
                  .ok());
  v1::PullResponse resp;
  ASSERT_TRUE(resp.ParseFromString(answer));
  ASSERT_EQ(resp.chunks_size(), 1);
  EXPECT_EQ(resp.chunks(0).data().size(), 4 * sizeof(float));
  EXPECT_TRUE(c->Call(FindRpc("SetConfig"), "admin").ok());
}

TEST(AuthTest, NamespaceLimitedTokens) {
  ASSERT_OK_AND_ASSIGN(auto c, AuthCluster::Start());
  const Rpc& declare = FindRpc("Declare");
  ASSERT_TRUE(c->Call(declare, "worker", "jobA").ok());
  ASSERT_TRUE(c->Call(declare, "worker", "jobB").ok());

  // A worker limited to jobA: its namespace yes, any other (the default
  // one included) no, for every RPC that names a namespace.
  for (const char* method : {"Declare", "Pull", "Push", "PushPull", "Exchange",
                             "Heartbeat", "ReportEvaluation"}) {
    const Rpc& rpc = FindRpc(method);
    grpc::Status in = c->Call(rpc, "worker_a", "jobA");
    EXPECT_NE(in.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << method << ": " << in.error_message();
    for (const char* other : {"jobB", ""}) {
      grpc::Status out = c->Call(rpc, "worker_a", other);
      EXPECT_EQ(out.error_code(), grpc::StatusCode::PERMISSION_DENIED)
          << method << " in '" << other << "': " << out.error_message();
      EXPECT_THAT(out.error_message(), HasSubstr(rpc.label()));
      EXPECT_THAT(out.error_message(),
                  HasSubstr(*other == '\0' ? "'default'" : "'jobB'"));
      EXPECT_THAT(out.error_message(), HasSubstr("worker"));
    }
  }

  // RegisterWorker names the namespace the worker trains: a limited token
  // may register for its own only (without one, as older clients send it,
  // the Heartbeats' namespace is what is checked).
  for (const auto& [ns, allowed] :
       std::vector<std::pair<std::string, bool>>{
           {"jobA", true}, {"", true}, {"jobB", false}}) {
    v1::RegisterWorkerRequest reg;
    reg.set_name("limited");
    reg.set_namespace_(ns);
    grpc::Status s = c->CallMsg("/pskit.v1.ParameterServer/RegisterWorker",
                                reg, "worker_a");
    EXPECT_EQ(s.ok(), allowed) << "'" << ns << "': " << s.error_message();
    if (!allowed) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    }
  }

  // An admin limited to jobA: SetConfig and DropNamespace on jobA only;
  // nothing that acts on every namespace (Checkpoint, Restore, Drain).
  v1::DropNamespaceRequest drop;
  drop.set_namespace_("jobB");
  EXPECT_EQ(c->CallMsg("/pskit.v1.Admin/DropNamespace", drop, "admin_a")
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(c->Call(FindRpc("SetConfig"), "admin_a", "jobA").ok());
  EXPECT_EQ(c->Call(FindRpc("SetConfig"), "admin_a", "jobB").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  for (const char* method : {"Checkpoint", "Restore", "Drain"}) {
    grpc::Status s = c->Call(FindRpc(method), "admin_a");
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << method << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("every namespace"));
  }

  // Status shows a limited reader only its namespaces.
  for (const auto& [who, want] :
       std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"reader_a", {"jobA"}}, {"reader", {"jobA", "jobB"}}}) {
    std::string answer;
    ASSERT_TRUE(c->Call(FindRpc("Status"), who, "", &answer).ok());
    v1::StatusResponse status;
    ASSERT_TRUE(status.ParseFromString(answer));
    std::vector<std::string> names;
    for (const auto& n : status.namespaces()) names.push_back(n.name());
    EXPECT_EQ(names, want) << who;
  }
}

TEST(AuthTest, WorkerIdBelongsToTheTokenThatRegisteredIt) {
  ASSERT_OK_AND_ASSIGN(auto c, AuthCluster::Start());
  v1::RegisterWorkerRequest reg;
  reg.set_name("w1");
  std::string answer;
  ASSERT_TRUE(c->CallMsg("/pskit.v1.ParameterServer/RegisterWorker", reg,
                         "worker", &answer)
                  .ok());
  v1::RegisterWorkerResponse registered;
  ASSERT_TRUE(registered.ParseFromString(answer));
  const uint64_t id = registered.worker_id();
  ASSERT_NE(id, 0u);

  v1::HeartbeatRequest hb;
  hb.set_worker_id(id);
  v1::LeaveRequest leave;
  leave.set_worker_id(id);
  v1::PushRequest push;
  *push.mutable_layout() = WireLayout();
  push.set_worker_id(id);
  v1::RegisterWorkerRequest steal;
  steal.set_name("w1");
  steal.set_worker_id(id);
  const std::vector<std::pair<std::string, std::string>> foreign = {
      {"/pskit.v1.ParameterServer/Heartbeat", hb.SerializeAsString()},
      {"/pskit.v1.ParameterServer/Leave", leave.SerializeAsString()},
      {"/pskit.v1.ParameterServer/Push", push.SerializeAsString()},
      {"/pskit.v1.ParameterServer/PushPull", push.SerializeAsString()},
      {"/pskit.v1.ParameterServer/RegisterWorker", steal.SerializeAsString()},
  };
  for (const auto& [path, bytes] : foreign) {
    grpc::Status s =
        c->CallBytes(path, bytes, "Bearer " + c->token("worker2"));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << path << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("worker id ", id)));
  }
  // The owner still may; so may an admin.
  EXPECT_TRUE(
      c->CallMsg("/pskit.v1.ParameterServer/Heartbeat", hb, "worker").ok());
  EXPECT_TRUE(
      c->CallMsg("/pskit.v1.ParameterServer/Leave", leave, "admin").ok());
  // Once it left, another token may register that id.
  std::string again;
  EXPECT_TRUE(c->CallMsg("/pskit.v1.ParameterServer/RegisterWorker", steal,
                         "worker2", &again)
                  .ok());
}

// Garbage that no message type parses: field 1, length-delimited, 127 bytes
// announced and 3 present.
const std::string kGarbage("\x0a\x7f" "abc", 5);

void ExpectUnparsableOnEveryRpc(AuthCluster* c, const std::string& auth,
                                const std::string& what) {
  for (const Rpc& rpc : AllRpcs()) {
    grpc::Status s = c->CallBytes(rpc.path(), kGarbage, auth);
    const std::string type =
        rpc.request("")->GetDescriptor()->full_name();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << what << " " << rpc.label() << ": " << s.error_message();
    EXPECT_THAT(s.error_message(),
                HasSubstr("request could not be parsed as " + type))
        << what;
    EXPECT_THAT(s.error_message(), HasSubstr(rpc.label())) << what;
  }
}

TEST(MalformedRequestTest, InvalidArgumentNamingTheTypeOnAnOpenShard) {
  ServerOptions base;
  base.chunk_elems = kChunk;
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, base));
  grpc::GenericStub stub(MakeChannel(cluster->addresses()[0]));
  for (const Rpc& rpc : AllRpcs()) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    grpc::Slice slice(kGarbage);
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::Status status;
    absl::Notification done;
    stub.UnaryCall(&ctx, rpc.path(), grpc::StubOptions(), &request, &response,
                   [&](grpc::Status s) {
                     status = std::move(s);
                     done.Notify();
                   });
    done.WaitForNotification();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << rpc.label() << ": " << status.error_message();
    EXPECT_THAT(status.error_message(),
                HasSubstr("request could not be parsed as " +
                          rpc.request("")->GetDescriptor()->full_name()));
  }
}

TEST(MalformedRequestTest, InvalidArgumentWithATokenAndUnauthenticatedWithout) {
  ASSERT_OK_AND_ASSIGN(auto c, AuthCluster::Start());
  ExpectUnparsableOnEveryRpc(c.get(), "Bearer " + c->token("admin"), "admin");
  // Without a token the caller learns nothing, not even that it is garbage.
  for (const Rpc& rpc : AllRpcs()) {
    EXPECT_EQ(c->CallBytes(rpc.path(), kGarbage, "").error_code(),
              grpc::StatusCode::UNAUTHENTICATED)
        << rpc.label();
  }
}

TEST(AuthTest, RefusalsAreCounted) {
  ASSERT_OK_AND_ASSIGN(auto c, AuthCluster::Start());
  const Rpc& push = FindRpc("Push");
  for (int i = 0; i < 3; ++i) (void)c->Call(push, "");
  (void)c->Call(push, "reader");
  (void)c->Call(push, "worker_a", "jobB");
  (void)c->CallBytes(push.path(), kGarbage, "Bearer " + c->token("worker"));
  ASSERT_OK_AND_ASSIGN(
      std::string text,
      HttpGet("127.0.0.1", c->cluster().shard(0).metrics_port(), "/metrics",
              absl::Seconds(5)));
  const std::string name = "pskit_server_auth_refusals_total";
  const std::string rpc = "rpc=\"ParameterServer/Push\"";
  EXPECT_EQ(FindSample(text, name, {rpc, "reason=\"no_token\""}).value_or(-1),
            3);
  EXPECT_EQ(FindSample(text, name, {rpc, "reason=\"role\""}).value_or(-1), 1);
  EXPECT_EQ(FindSample(text, name, {rpc, "reason=\"namespace\""}).value_or(-1),
            1);
  EXPECT_EQ(
      FindSample(text, name, {rpc, "reason=\"unparsable\""}).value_or(-1), 1);
  EXPECT_THAT(text, Not(HasSubstr(c->token("worker"))));
}

TEST(AuthTest, ReloadAddsTokensAndKeepsTheOldOnesOnABadFile) {
  ASSERT_OK_AND_ASSIGN(auto c, AuthCluster::Start());
  ASSERT_OK_AND_ASSIGN(std::string fresh, GenerateToken());
  const Rpc& status = FindRpc("Status");
  const std::string bytes = status.request("")->SerializeAsString();
  EXPECT_EQ(c->CallBytes(status.path(), bytes, "Bearer " + fresh).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  std::ofstream(c->tokens_file(), std::ios::app)
      << TokenFileLine(fresh, TokenRole::kReader, {}) << "\n";
  ASSERT_OK_AND_ASSIGN(size_t n, c->cluster().shard(0).ReloadTokens());
  EXPECT_EQ(n, 8u);
  EXPECT_TRUE(c->CallBytes(status.path(), bytes, "Bearer " + fresh).ok());

  std::ofstream(c->tokens_file(), std::ios::app) << "oops reader\n";
  auto bad = c->cluster().shard(0).ReloadTokens();
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("line 10"));
  EXPECT_TRUE(c->CallBytes(status.path(), bytes, "Bearer " + fresh).ok());
}

TEST(AuthStartTest, BadTokenFileRefusesTheStartNamingFileAndLine) {
  TempDir dir;
  const std::string path = dir.path() + "/tokens";
  std::ofstream(path) << "# ok\n" << std::string(64, 'a') << " writer\n";
  ServerOptions options;
  options.auth_tokens_file = path;
  auto server = Server::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr(path));
  EXPECT_THAT(server.status().message(), HasSubstr("line 2"));
  EXPECT_THAT(server.status().message(), HasSubstr("'writer'"));

  options.auth_tokens_file = dir.path() + "/missing";
  server = Server::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kNotFound);
}

TEST(AuthStartTest, TokensOnANetworkAddressNeedTlsOrAllowInsecure) {
  TempDir dir;
  const std::string path = dir.path() + "/tokens";
  std::ofstream(path) << "# none yet\n";
  ServerOptions options;
  options.auth_tokens_file = path;
  for (const char* listen : {"0.0.0.0:0", "[::]:0", "10.1.2.3:7000"}) {
    options.listen = listen;
    auto server = Server::Start(options);
    ASSERT_FALSE(server.ok()) << listen;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(server.status().message(), HasSubstr("--tls_cert"));
    EXPECT_THAT(server.status().message(), HasSubstr("--allow_insecure"));
  }
  // Loopback needs neither.
  options.listen = "127.0.0.1:0";
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(options));
  server->Shutdown(absl::ZeroDuration());
}

// GET /metrics with an optional Authorization header; returns the status
// line.
std::string MetricsStatusLine(int port, const std::string& authorization) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "connect failed";
  }
  std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n";
  if (!authorization.empty()) {
    absl::StrAppend(&req, "Authorization: ", authorization, "\r\n");
  }
  req += "\r\n";
  (void)!send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string answer;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) answer.append(buf, n);
  close(fd);
  return answer.substr(0, answer.find("\r\n"));
}

TEST(MetricsTokenTest, EndpointRequiresTheBearerToken) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(std::string token, GenerateToken());
  const std::string path = dir.path() + "/metrics_token";
  std::ofstream(path) << token << "\n";
  ServerOptions options;
  options.metrics_port = 0;
  options.metrics_token_file = path;
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(options));
  const int port = server->metrics_port();
  EXPECT_EQ(MetricsStatusLine(port, ""), "HTTP/1.0 401 Unauthorized");
  EXPECT_EQ(MetricsStatusLine(port, "Bearer " + token + "x"),
            "HTTP/1.0 401 Unauthorized");
  EXPECT_EQ(MetricsStatusLine(port, "Basic " + token),
            "HTTP/1.0 401 Unauthorized");
  EXPECT_EQ(MetricsStatusLine(port, "Bearer " + token), "HTTP/1.0 200 OK");
  EXPECT_EQ(MetricsStatusLine(port, "bearer " + token), "HTTP/1.0 200 OK");
  server->Shutdown(absl::ZeroDuration());

  // A token file that holds no usable token refuses the start.
  std::ofstream(path) << "short\n";
  auto refused = Server::Start(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("--metrics_token_file"));
}

// Runs psctl with `args`; returns its exit code and its stdout in *out.
int RunPsctl(const std::vector<std::string>& args, std::string* out) {
  int fd = -1;
  const pid_t pid = testing::SpawnPiped(testing::SiblingBinary("psctl"), args,
                                        /*merge_stderr=*/false, &fd);
  if (pid < 0) return -1;
  out->clear();
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    out->append(buf, n);
  }
  close(fd);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(PsctlTokenTest, NewWritesA0600TokenAndPrintsItsShardLine) {
  TempDir dir;
  const std::string path = dir.path() + "/worker.token";
  std::string out;
  ASSERT_EQ(RunPsctl({"token", "new", "--role", "worker", "--namespaces",
                      "jobA,jobB", "--out", path},
                     &out),
            0);
  ASSERT_OK_AND_ASSIGN(std::string token, ReadTokenFile(path));
  EXPECT_EQ(token.size(), 43u);
  EXPECT_EQ(out, HashToken(token) + " worker jobA,jobB\n");
  EXPECT_THAT(out, Not(HasSubstr(token)));
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  // The printed line is what a shard's token file takes.
  ASSERT_OK_AND_ASSIGN(auto entries, ParseTokenText(out, "stdout"));
  ASSERT_NE(FindToken(entries, token), nullptr);
  EXPECT_EQ(FindToken(entries, token)->role, TokenRole::kWorker);

  // Never over an existing file; a bad role or no --out is a usage error.
  EXPECT_EQ(RunPsctl({"token", "new", "--role", "admin", "--out", path}, &out),
            1);
  ASSERT_OK_AND_ASSIGN(std::string still, ReadTokenFile(path));
  EXPECT_EQ(still, token);
  EXPECT_EQ(RunPsctl({"token", "new", "--role", "root", "--out",
                      dir.path() + "/x"},
                     &out),
            2);
  EXPECT_EQ(RunPsctl({"token", "new", "--role", "reader"}, &out), 2);
  EXPECT_EQ(RunPsctl({"token", "new", "--role", "reader", "--namespaces",
                      "a,,b", "--out", dir.path() + "/y"},
                     &out),
            2);
}

}  // namespace
}  // namespace pskit
