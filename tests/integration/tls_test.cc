// TLS and mTLS end to end: in-process shards (Server) with certificates made
// at test time by the throw-away CA (tools/psrun/launch/throwaway_ca.h; no
// key is committed), reached through MakeChannel, Client, AdminClient and
// CheckHealth; a plaintext client refused by a TLS shard; mTLS refusing a
// client without a certificate and one of another CA; the shard's
// certificate rotated on disk and served to new connections without a
// restart; the bearer token on plaintext and TLS channels; the startup
// checks of bad files and tokens; and, as processes, ps-server's flags,
// `psctl health` over mTLS and `psrun --tls` running a job that psctl then
// reaches with the flags psrun printed.
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/admin_client.h"
#include "client/client.h"
#include "client/health.h"
#include "client/security_flags.h"
#include "common/auth_token.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "gtest/gtest.h"
#include "pskit/v1/admin.grpc.pb.h"
#include "server/server.h"
#include "tests/testing/child_server.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"
#include "tools/psrun/launch/throwaway_ca.h"

extern char** environ;

namespace pskit {
namespace {

using launch::CertificateUse;
using launch::IssuedCertificate;
using launch::ThrowawayCa;
using launch::WritePrivateFile;
using testing::TempDir;

// Writes `content` to dir/name (mode 0600) and returns the path.
std::string Put(const TempDir& dir, const std::string& name,
                const std::string& content) {
  const std::string path = dir.path() + "/" + name;
  EXPECT_OK(WritePrivateFile(path, content, 0600));
  return path;
}

// Two CAs, a shard certificate (127.0.0.1, localhost) and a client
// certificate from the first, a client certificate from the second, all
// written to a temporary directory.
struct Pki {
  TempDir dir;
  std::string ca, other_ca;           // CA certificates
  std::string shard_cert, shard_key;  // from ca
  std::string client_cert, client_key;
  std::string other_client_cert, other_client_key;  // from other_ca

  Pki() {
    absl::StatusOr<ThrowawayCa> a = ThrowawayCa::Create("test CA");
    absl::StatusOr<ThrowawayCa> b = ThrowawayCa::Create("other CA");
    EXPECT_OK(a.status());
    EXPECT_OK(b.status());
    if (!a.ok() || !b.ok()) return;
    absl::StatusOr<IssuedCertificate> shard = a->Issue(
        "shard", CertificateUse::kServer, {"127.0.0.1", "localhost"});
    absl::StatusOr<IssuedCertificate> client =
        a->Issue("client", CertificateUse::kClient, {});
    absl::StatusOr<IssuedCertificate> other =
        b->Issue("intruder", CertificateUse::kClient, {});
    EXPECT_OK(shard.status());
    EXPECT_OK(client.status());
    EXPECT_OK(other.status());
    if (!shard.ok() || !client.ok() || !other.ok()) return;
    ca = Put(dir, "ca.pem", a->cert_pem());
    other_ca = Put(dir, "other_ca.pem", b->cert_pem());
    shard_cert = Put(dir, "shard.pem", shard->cert_pem);
    shard_key = Put(dir, "shard.key", shard->key_pem);
    client_cert = Put(dir, "client.pem", client->cert_pem);
    client_key = Put(dir, "client.key", client->key_pem);
    other_client_cert = Put(dir, "other_client.pem", other->cert_pem);
    other_client_key = Put(dir, "other_client.key", other->key_pem);
  }

  ChannelSecurity Client() const {
    ChannelSecurity s;
    s.tls_ca = ca;
    s.tls_cert = client_cert;
    s.tls_key = client_key;
    return s;
  }
};

ServerOptions TlsShard(const Pki& pki, bool mtls) {
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.tls_cert = pki.shard_cert;
  o.tls_key = pki.shard_key;
  if (mtls) o.tls_ca = pki.ca;
  o.tls_refresh_interval = absl::Seconds(1);
  return o;
}

// One Admin/Status call on a new connection (channel_index keeps gRPC from
// reusing an earlier one).
absl::Status StatusCall(const std::string& address,
                        const ChannelSecurity& security) {
  static int next_index = 1000;
  ChannelOptions o;
  o.security = security;
  o.channel_index = next_index++;
  auto stub = v1::Admin::NewStub(MakeChannel(address, o));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::StatusResponse resp;
  return FromGrpcStatus(stub->Status(&ctx, v1::StatusRequest(), &resp));
}

TEST(Tls, ClientPushesAndPullsOverTls) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> shard,
                       Server::Start(TlsShard(pki, /*mtls=*/false)));
  ClientOptions co;
  co.security.tls_ca = pki.ca;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> client,
                       Client::Connect({shard->address()}, co));
  v1::NamespaceConfig config;
  config.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  config.mutable_optimizer()->set_learning_rate(0.5f);
  TensorDecl w;
  w.spec.set_name("w");
  w.spec.add_shape(3);
  w.spec.mutable_init()->set_kind(v1::INIT_ZEROS);
  ASSERT_OK(client->Declare("job", config, {w}));
  const std::vector<float> grad = {2, 4, 6};
  ASSERT_OK(client->Push("job", {{"w", grad}}).status());
  std::vector<float> values(3);
  ASSERT_OK(client->Pull("job", {{"w", absl::MakeSpan(values)}}));
  EXPECT_EQ(values, (std::vector<float>{-1, -2, -3}));

  // The health service is on the same TLS port.
  HealthOptions ho;
  ho.security.tls_ca = pki.ca;
  const std::vector<ShardHealth> health = CheckHealth({shard->address()}, ho);
  ASSERT_EQ(health.size(), 1u);
  EXPECT_TRUE(health[0].serving()) << health[0].description;
}

TEST(Tls, PlaintextClientToTlsShardIsUnavailable) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> shard,
                       Server::Start(TlsShard(pki, /*mtls=*/false)));
  const absl::Status s = StatusCall(shard->address(), {});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  // AdminClient's answer names the shard.
  AdminOptions ao;
  ao.timeout = absl::Seconds(5);
  ASSERT_OK_AND_ASSIGN(auto admin, AdminClient::Connect({shard->address()}, ao));
  const auto results = admin->Status();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(results[0].description, shard->address()))
      << results[0].description;
  // And a TLS client to a plaintext shard fails the handshake the same way.
  ServerOptions plain;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> plain_shard,
                       Server::Start(plain));
  ChannelSecurity tls;
  tls.tls_ca = pki.ca;
  EXPECT_EQ(StatusCall(plain_shard->address(), tls).code(),
            absl::StatusCode::kUnavailable);
}

TEST(Tls, ShardCertificateIsVerified) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> shard,
                       Server::Start(TlsShard(pki, /*mtls=*/false)));
  ChannelSecurity right, wrong_ca;
  right.tls_ca = pki.ca;
  wrong_ca.tls_ca = pki.other_ca;
  EXPECT_OK(StatusCall(shard->address(), right));
  EXPECT_EQ(StatusCall(shard->address(), wrong_ca).code(),
            absl::StatusCode::kUnavailable);

  // A certificate of the right CA that does not name the host dialled.
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(ThrowawayCa ca, ThrowawayCa::Create("CA"));
  ASSERT_OK_AND_ASSIGN(
      IssuedCertificate elsewhere,
      ca.Issue("shard", CertificateUse::kServer, {"shard9.example.org"}));
  ServerOptions o;
  o.tls_cert = Put(dir, "s.pem", elsewhere.cert_pem);
  o.tls_key = Put(dir, "s.key", elsewhere.key_pem);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> misnamed, Server::Start(o));
  ChannelSecurity trusting;
  trusting.tls_ca = Put(dir, "ca.pem", ca.cert_pem());
  EXPECT_EQ(StatusCall(misnamed->address(), trusting).code(),
            absl::StatusCode::kUnavailable);
}

TEST(Tls, MutualTlsRefusesClientsWithoutTheRightCertificate) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> shard,
                       Server::Start(TlsShard(pki, /*mtls=*/true)));
  ChannelSecurity no_cert;
  no_cert.tls_ca = pki.ca;
  ChannelSecurity other_cert = no_cert;
  other_cert.tls_cert = pki.other_client_cert;
  other_cert.tls_key = pki.other_client_key;
  EXPECT_EQ(StatusCall(shard->address(), no_cert).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusCall(shard->address(), other_cert).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_OK(StatusCall(shard->address(), pki.Client()));
  // Health too needs the client certificate.
  HealthOptions ho;
  ho.security = no_cert;
  EXPECT_FALSE(CheckHealth({shard->address()}, ho)[0].serving());
  ho.security = pki.Client();
  EXPECT_TRUE(CheckHealth({shard->address()}, ho)[0].serving());
}

TEST(Tls, RotatedShardCertificateServesNewConnectionsWithoutRestart) {
  Pki pki;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Server> shard,
                       Server::Start(TlsShard(pki, /*mtls=*/false)));
  ChannelSecurity old_ca, new_ca;
  old_ca.tls_ca = pki.ca;
  new_ca.tls_ca = pki.other_ca;
  ASSERT_OK(StatusCall(shard->address(), old_ca));
  ASSERT_EQ(StatusCall(shard->address(), new_ca).code(),
            absl::StatusCode::kUnavailable);

  // A new pair from the other CA, renamed over the files the shard reads
  // (key first: the watcher may see the new key with the old certificate
  // for a moment, which the polling below rides out).
  ASSERT_OK_AND_ASSIGN(ThrowawayCa other, ThrowawayCa::Create("other CA 2"));
  ASSERT_OK_AND_ASSIGN(
      IssuedCertificate next,
      other.Issue("shard", CertificateUse::kServer, {"127.0.0.1"}));
  new_ca.tls_ca = Put(pki.dir, "other_ca2.pem", other.cert_pem());
  ASSERT_OK(WritePrivateFile(pki.shard_key, next.key_pem, 0600));
  ASSERT_OK(WritePrivateFile(pki.shard_cert, next.cert_pem, 0644));

  // The watcher looks every second; a new connection sees the new
  // certificate once it has. Bounded at 60 s.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  absl::Status s;
  while (!(s = StatusCall(shard->address(), new_ca)).ok() &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_OK(s);
  // New connections no longer get the old certificate.
  EXPECT_EQ(StatusCall(shard->address(), old_ca).code(),
            absl::StatusCode::kUnavailable);
}

// A server that answers every call PERMISSION_DENIED with the call's
// "authorization" metadata as the message ("<none>" without one): what the
// client sent, seen from the other end.
class EchoAuthorization : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* ctx) override {
    class Reactor : public grpc::ServerGenericBidiReactor {
     public:
      explicit Reactor(grpc::GenericCallbackServerContext* ctx) {
        std::string auth = "<none>";
        auto it = ctx->client_metadata().find("authorization");
        if (it != ctx->client_metadata().end()) {
          auth.assign(it->second.data(), it->second.size());
        }
        Finish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED, auth));
      }
      void OnDone() override { delete this; }
    };
    return new Reactor(ctx);
  }
};

TEST(Tls, TokenTravelsOnPlaintextAndTlsChannels) {
  Pki pki;
  EchoAuthorization echo;
  int plain_port = 0, tls_port = 0;
  grpc::SslServerCredentialsOptions ssl;
  std::ifstream key(pki.shard_key), cert(pki.shard_cert);
  std::stringstream key_pem, cert_pem;
  key_pem << key.rdbuf();
  cert_pem << cert.rdbuf();
  ssl.pem_key_cert_pairs.push_back({key_pem.str(), cert_pem.str()});
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &plain_port);
  builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl),
                           &tls_port);
  builder.RegisterCallbackGenericService(&echo);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  const std::string plain = absl::StrCat("127.0.0.1:", plain_port);
  const std::string tls = absl::StrCat("127.0.0.1:", tls_port);

  ChannelSecurity token_only;
  token_only.token = "s3cr3t-T0ken_value";
  absl::Status s = StatusCall(plain, token_only);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "Bearer s3cr3t-T0ken_value");
  EXPECT_EQ(StatusCall(plain, {}).message(), "<none>");

  ChannelSecurity token_tls = token_only;
  token_tls.tls_ca = pki.ca;
  s = StatusCall(tls, token_tls);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "Bearer s3cr3t-T0ken_value");

  // Client's data plane (generic stub) and admin calls carry it too.
  ClientOptions co;
  co.security = token_only;
  co.timeout = absl::Seconds(5);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Client> client,
                       Client::Connect({plain}, co));
  std::vector<float> v(4);
  s = client->Pull("job", {{"w", absl::MakeSpan(v)}});
  EXPECT_TRUE(absl::StrContains(s.message(), "Bearer s3cr3t-T0ken_value"))
      << s;
  server->Shutdown();
}

TEST(Tls, BadFilesAreRefusedAtStartupNamingTheFile) {
  Pki pki;
  TempDir dir;
  const std::string missing = dir.path() + "/nope.pem";
  const std::string garbage = Put(dir, "garbage.pem", "not a certificate\n");

  ChannelSecurity s;
  s.tls_ca = missing;
  absl::Status st = CheckChannelSecurity(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(st.message(), "--tls_ca " + missing)) << st;
  s.tls_ca = garbage;
  st = CheckChannelSecurity(s);
  EXPECT_TRUE(absl::StrContains(st.message(), "no PEM certificate")) << st;
  s = pki.Client();
  s.tls_key = pki.other_client_key;  // not the certificate's key
  st = CheckChannelSecurity(s);
  EXPECT_TRUE(absl::StrContains(st.message(), "is not the key of")) << st;
  s = pki.Client();
  s.tls_key.clear();
  EXPECT_TRUE(absl::StrContains(CheckChannelSecurity(s).message(),
                                "go together"));
  s = {};
  s.token = "two words";
  st = CheckChannelSecurity(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(st.message(), "two words")) << st;
  EXPECT_OK(CheckChannelSecurity(pki.Client()));
  // Client and AdminClient check before making channels.
  ClientOptions co;
  co.security.tls_ca = missing;
  EXPECT_EQ(Client::Connect({"127.0.0.1:1"}, co).status().code(),
            absl::StatusCode::kInvalidArgument);

  // The shard: a missing key, a key of another certificate.
  ServerOptions o = TlsShard(pki, /*mtls=*/true);
  o.tls_key = missing;
  EXPECT_TRUE(absl::StrContains(Server::Start(o).status().message(),
                                "--tls_key " + missing));
  o = TlsShard(pki, /*mtls=*/true);
  o.tls_key = pki.client_key;
  EXPECT_TRUE(absl::StrContains(Server::Start(o).status().message(),
                                "is not the key of"));
  o = TlsShard(pki, /*mtls=*/true);
  o.tls_cert.clear();
  o.tls_key.clear();
  EXPECT_EQ(Server::Start(o).status().code(),
            absl::StatusCode::kInvalidArgument);  // tls_ca without a cert
}

TEST(Tls, TokenFileIsReadAndAWorldReadableOneWarned) {
  TempDir dir;
  const std::string path = dir.path() + "/token";
  ASSERT_OK_AND_ASSIGN(const std::string generated, GenerateToken());
  ASSERT_OK(WritePrivateFile(path, generated + "\n", 0600));
  EXPECT_EQ(TokenFileWarning(path), "");
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  const std::string warning = TokenFileWarning(path);
  EXPECT_TRUE(absl::StrContains(warning, "chmod 600")) << warning;
  EXPECT_FALSE(absl::StrContains(warning, generated)) << warning;

  // The environment, when --token_file is not given: a file first, else
  // the token itself.
  const std::string direct(kMinTokenLength, 'v');
  auto env = [&](const char* name) -> const char* {
    if (std::string(name) == "PSKIT_TOKEN_FILE") return path.c_str();
    if (std::string(name) == "PSKIT_TOKEN") return direct.c_str();
    return nullptr;
  };
  ASSERT_OK_AND_ASSIGN(ChannelSecurity sec, ChannelSecurityFromFlags(env));
  EXPECT_EQ(sec.token, generated);
  ASSERT_OK_AND_ASSIGN(sec, ChannelSecurityFromFlags([&](const char* name) {
    return std::string(name) == "PSKIT_TOKEN" ? direct.c_str() : nullptr;
  }));
  EXPECT_EQ(sec.token, direct);
  const absl::Status s = ChannelSecurityFromFlags([](const char* name) {
    return std::string(name) == "PSKIT_TOKEN" ? "short" : nullptr;
  }).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(s.message(), "short")) << s;
}

// ---------------------------------------------------------------------------
// Processes.

struct Ran {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

Ran RunToEnd(const std::string& program, std::vector<std::string> args) {
  Ran ran;
  int fd = -1;
  const pid_t pid = testing::SpawnPiped(program, std::move(args),
                                        /*merge_stderr=*/true, &fd);
  if (pid < 0) return ran;
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
  return ran;
}

TEST(TlsProcess, PsServerServesMutualTlsAndPsctlHealthUsesTheFlags) {
  Pki pki;
  testing::ChildServer shard(
      "ps-server",
      {"--listen", "127.0.0.1:0", "--tls_cert", pki.shard_cert, "--tls_key",
       pki.shard_key, "--tls_ca", pki.ca},
      /*merge_stderr=*/true);
  std::string address, serving;
  for (std::string line = shard.first_line(); !line.empty();
       line = shard.ReadLine()) {
    if (absl::StrContains(line, "serving on")) serving = line;
    const std::string prefix = "ps-server listening on ";
    if (absl::StartsWith(line, prefix)) {
      address = line.substr(prefix.size());
      break;
    }
  }
  ASSERT_FALSE(address.empty());
  EXPECT_TRUE(absl::StrContains(serving, "with mTLS (certificate ")) << serving;

  const std::string psctl = testing::SiblingBinary("psctl");
  Ran ran = RunToEnd(psctl, {"--shards", address, "--tls_ca", pki.ca, "--tls_cert",
                        pki.client_cert, "--tls_key", pki.client_key, "health"});
  EXPECT_EQ(ran.exit_code, 0) << ran.out;
  EXPECT_TRUE(absl::StrContains(ran.out, "SERVING")) << ran.out;
  ran = RunToEnd(psctl, {"--shards", address, "--tls_ca", pki.ca, "health"});
  EXPECT_EQ(ran.exit_code, 1) << ran.out;  // no client certificate
  ran = RunToEnd(psctl, {"--shards", address, "--tls_ca", pki.ca, "--tls_cert",
                    pki.client_cert, "--tls_key", pki.client_key, "status"});
  EXPECT_EQ(ran.exit_code, 0) << ran.out;
  // A missing file is a usage error naming it, before any call.
  ran = RunToEnd(psctl, {"--shards", address, "--tls_ca", "/nonexistent/ca.pem",
                    "status"});
  EXPECT_EQ(ran.exit_code, 2) << ran.out;
  EXPECT_TRUE(absl::StrContains(ran.out, "--tls_ca /nonexistent/ca.pem"))
      << ran.out;
  EXPECT_EQ(shard.StopWith(SIGTERM), 0);

  // ps-server refuses to start with a missing key file, naming it.
  ran = RunToEnd(testing::SiblingBinary("ps-server"),
            {"--listen", "127.0.0.1:0", "--tls_cert", pki.shard_cert,
             "--tls_key", "/nonexistent/shard.key"});
  EXPECT_NE(ran.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(ran.out, "--tls_key /nonexistent/shard.key"))
      << ran.out;
}

// What a psrun run printed, and psctl run (while the job ran) with the flags
// psrun printed, and with them less those named in `drop`.
struct PsrunRun {
  int exit_code = -1;
  std::string out;
  std::string psctl_line;  // after "psctl for this cluster: psctl "
  Ran psctl;               // with the printed flags
  Ran psctl_without;       // without the flags in `drop` (and their values)
};

PsrunRun RunPsrunAndPsctl(const std::vector<std::string>& psrun_flags,
                          const std::vector<std::string>& drop) {
  std::vector<std::string> args = psrun_flags;
  for (const char* a :
       {"--servers", "2", "--workers", "1", "--metrics_port_base", "0",
        "--kill_timeout_s", "20", "--", "--dataset", "synthetic",
        "--synthetic_train", "2000", "--synthetic_test", "200",
        "--synthetic_dim", "8", "--synthetic_classes", "2", "--layers",
        "8,16,2", "--backend", "cpu", "--epochs", "100000", "--max_seconds",
        "6"}) {
    args.push_back(a);
  }
  PsrunRun run;
  int fd = -1;
  const pid_t pid = testing::SpawnPiped(testing::SiblingBinary("psrun"),
                                        args, /*merge_stderr=*/true, &fd);
  if (pid < 0) return run;
  std::string pending;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    run.out.append(buf, n);
    pending.append(buf, n);
    for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
      const std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      const std::string marker = "psctl for this cluster: psctl ";
      const size_t at = line.find(marker);
      if (at == std::string::npos || !run.psctl_line.empty()) continue;
      run.psctl_line = line.substr(at + marker.size());
      // While the job runs (the worker trains for 6 s).
      std::vector<std::string> printed =
          absl::StrSplit(run.psctl_line, ' ', absl::SkipEmpty());
      run.psctl = RunToEnd(testing::SiblingBinary("psctl"), printed);
      std::vector<std::string> without;
      for (size_t i = 0; i < printed.size(); ++i) {
        if (std::find(drop.begin(), drop.end(), printed[i]) != drop.end()) {
          ++i;  // and its value
          continue;
        }
        without.push_back(printed[i]);
      }
      run.psctl_without = RunToEnd(testing::SiblingBinary("psctl"), without);
    }
  }
  close(fd);
  int wait_status = 0;
  waitpid(pid, &wait_status, 0);
  run.exit_code = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1;
  return run;
}

TEST(TlsProcess, PsrunTlsRunsAJobThatPsctlReachesWithThePrintedFlags) {
  const PsrunRun run = RunPsrunAndPsctl({"--tls"}, {"--tls_cert", "--tls_key"});
  EXPECT_EQ(run.exit_code, 0) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "mTLS with a throw-away CA")) << run.out;
  EXPECT_TRUE(absl::StrContains(run.out, "with mTLS (certificate ")) << run.out;
  ASSERT_FALSE(run.psctl_line.empty()) << run.out;
  EXPECT_TRUE(absl::StrContains(run.psctl_line, "--tls_ca ")) << run.psctl_line;
  EXPECT_EQ(run.psctl.exit_code, 0) << run.psctl_line << "\n" << run.psctl.out;
  EXPECT_TRUE(absl::StrContains(run.psctl.out, "shard")) << run.psctl.out;
  // Without the client certificate the shards refuse psctl: unreachable.
  EXPECT_EQ(run.psctl_without.exit_code, 3) << run.psctl_without.out;
}

TEST(TlsProcess, PsrunAuthGivesWorkersAndPsctlTheirTokens) {
  // The shards' --auth_tokens is the token part of issue 11 (common/auth
  // and the server's gate); a ps-server without it cannot run this.
  const Ran help = RunToEnd(testing::SiblingBinary("ps-server"), {"--help"});
  if (!absl::StrContains(help.out, "auth_tokens")) {
    GTEST_SKIP() << "ps-server has no --auth_tokens flag in this build";
  }
  const PsrunRun run = RunPsrunAndPsctl({"--tls", "--auth"}, {"--token_file"});
  EXPECT_EQ(run.exit_code, 0) << run.out;
  ASSERT_FALSE(run.psctl_line.empty()) << run.out;
  EXPECT_TRUE(absl::StrContains(run.psctl_line, "/auth/admin.token"))
      << run.psctl_line;
  EXPECT_EQ(run.psctl.exit_code, 0) << run.psctl_line << "\n" << run.psctl.out;
  // No token: refused.
  EXPECT_NE(run.psctl_without.exit_code, 0) << run.psctl_without.out;
  EXPECT_TRUE(absl::StrContains(run.psctl_without.out, "UNAUTHENTICATED"))
      << run.psctl_without.out;
}

TEST(TlsProcess, PsrunRefusesConflictingSecurityFlags) {
  Pki pki;
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(const std::string token, GenerateToken());
  const std::string token_file = dir.path() + "/t";
  ASSERT_OK(WritePrivateFile(token_file, token, 0600));
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {{"--tls", "--tls_ca", pki.ca, "--", "--dataset", "synthetic"},
            "--tls makes its own CA"},
           {{"--", "--dataset", "synthetic", "--tls_ca", pki.ca},
            "give --tls_ca, --tls_cert, --tls_key and --token_file to psrun"},
           {{"--tls", "--server_args=--tls_cert a.pem", "--", "--dataset",
             "synthetic"},
            "--tls makes the shards' certificates"},
           {{"--auth", "--token_file", token_file, "--"},
            "--auth makes its own tokens"}}) {
    const Ran ran = RunToEnd(testing::SiblingBinary("psrun"), c.args);
    EXPECT_EQ(ran.exit_code, 2) << absl::StrJoin(c.args, " ") << "\n" << ran.out;
    EXPECT_TRUE(absl::StrContains(ran.out, c.says)) << c.says << "\n" << ran.out;
    EXPECT_FALSE(absl::StrContains(ran.out, token));
  }
}

}  // namespace
}  // namespace pskit
