// Every class of bad input gets its own gRPC code and a message naming what
// was wrong, and leaves the shard's values bit-identical.

#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/encoding.h"
#include "common/layout.h"
#include "gtest/gtest.h"
#include "pskit/v1/admin.grpc.pb.h"
#include "pskit/v1/ps.grpc.pb.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::TempDir;
using testing::TestCluster;

constexpr uint32_t kChunk = 4096;
constexpr int64_t kRows = 3;
constexpr int64_t kN = kRows * kChunk;  // 4 chunks of 3072 on 2 shards

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions base;
    base.chunk_elems = kChunk;
    base.max_message_bytes = 1 << 20;
    ASSERT_OK_AND_ASSIGN(cluster_, TestCluster::Start(2, base));
    ClientOptions opts;
    opts.max_request_bytes = 256 << 10;
    ASSERT_OK_AND_ASSIGN(client_, cluster_->NewClient(opts));
    config_.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
    TensorDecl w, big;
    w.spec.set_name("w");
    w.spec.add_shape(kRows);
    w.spec.add_shape(kChunk);
    w.spec.mutable_init()->set_kind(v1::INIT_GLOROT_UNIFORM);
    big.spec.set_name("big");
    big.spec.add_shape(600000);
    big.spec.mutable_init()->set_kind(v1::INIT_HE_NORMAL);
    decls_ = {w, big};
    ASSERT_OK(client_->Declare("job", config_, decls_));
    // One step so optimizer slots and versions are not at their start.
    std::vector<float> g(kN, 0.5f);
    ASSERT_OK(client_->Push("job", {{"w", g}}));

    ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(2, kChunk));
    for (const ChunkSpan& s : layout.Chunks("job", "w", kN)) {
      (s.shard == 0 ? mine_ : theirs_) = s;
    }
    stub_ = v1::ParameterServer::NewStub(MakeChannel(cluster_->addresses()[0]));
    before_ = Snapshot();
  }

  std::vector<float> Snapshot() {
    std::vector<float> w(kN), big(600000);
    EXPECT_OK(client_->Pull(
        "job", {{"w", absl::MakeSpan(w)}, {"big", absl::MakeSpan(big)}}));
    w.insert(w.end(), big.begin(), big.end());
    return w;
  }

  void ExpectUnchanged(const std::string& what) {
    const std::vector<float> after = Snapshot();
    ASSERT_EQ(after.size(), before_.size());
    EXPECT_EQ(std::memcmp(after.data(), before_.data(),
                          after.size() * sizeof(float)),
              0)
        << what << " changed the values";
  }

  v1::Layout WireLayout() {
    v1::Layout l;
    l.set_num_shards(2);
    l.set_chunk_elems(kChunk);
    l.set_shard_index(0);
    return l;
  }

  // A valid push to shard 0 of its chunk of "w".
  v1::PushRequest ValidPush() {
    v1::PushRequest r;
    r.set_namespace_("job");
    *r.mutable_layout() = WireLayout();
    v1::ChunkData* c = r.add_grads();
    c->set_tensor("w");
    c->set_chunk(mine_.index);
    c->set_encoding(v1::ENCODING_F32);
    std::vector<float> ones(mine_.length, 1.0f);
    EncodeFloats(v1::ENCODING_F32, ones, c->mutable_data());
    return r;
  }

  void ExpectPushRejected(const std::string& what,
                          std::function<void(v1::PushRequest*)> mutate,
                          grpc::StatusCode code, const std::string& needle) {
    v1::PushRequest req = ValidPush();
    mutate(&req);
    for (bool pushpull : {false, true}) {
      grpc::ClientContext ctx;
      grpc::Status s;
      if (pushpull) {
        req.set_return_encoding(v1::ENCODING_F32);
        v1::PushPullResponse resp;
        s = stub_->PushPull(&ctx, req, &resp);
      } else {
        v1::PushResponse resp;
        s = stub_->Push(&ctx, req, &resp);
      }
      EXPECT_EQ(s.error_code(), code) << what << ": " << s.error_message();
      EXPECT_NE(s.error_message().find(needle), std::string::npos)
          << what << ": message '" << s.error_message() << "' lacks '"
          << needle << "'";
    }
    ExpectUnchanged(what);
  }

  std::unique_ptr<TestCluster> cluster_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<v1::ParameterServer::Stub> stub_;
  v1::NamespaceConfig config_;
  std::vector<TensorDecl> decls_;
  ChunkSpan mine_, theirs_;
  std::vector<float> before_;
};

TEST_F(BadInputTest, ValidPushChangesValues) {
  // The control: the request every case below breaks is itself accepted.
  grpc::ClientContext ctx;
  v1::PushResponse resp;
  ASSERT_TRUE(stub_->Push(&ctx, ValidPush(), &resp).ok());
  EXPECT_NE(Snapshot(), before_);
}

TEST_F(BadInputTest, UnknownNamespace) {
  ExpectPushRejected("unknown namespace",
                     [](auto* r) { r->set_namespace_("nope"); },
                     grpc::StatusCode::NOT_FOUND, "namespace 'nope'");
}

TEST_F(BadInputTest, UnknownTensor) {
  ExpectPushRejected(
      "unknown tensor",
      [](auto* r) { r->mutable_grads(0)->set_tensor("fc9/w"); },
      grpc::StatusCode::NOT_FOUND, "tensor 'fc9/w' is not declared");
}

TEST_F(BadInputTest, WrongElementCount) {
  ExpectPushRejected(
      "wrong element count",
      [&](auto* r) {
        r->mutable_grads(0)->mutable_data()->resize((mine_.length - 8) * 4);
      },
      grpc::StatusCode::INVALID_ARGUMENT,
      "expected " + std::to_string(mine_.length * 4) + " bytes");
}

TEST_F(BadInputTest, ChunkOfAnotherShard) {
  ExpectPushRejected(
      "chunk not owned",
      [&](auto* r) {
        r->mutable_grads(0)->set_chunk(theirs_.index);
        std::vector<float> ones(theirs_.length, 1.0f);
        EncodeFloats(v1::ENCODING_F32, ones, r->mutable_grads(0)->mutable_data());
      },
      grpc::StatusCode::FAILED_PRECONDITION, "belongs to shard 1");
}

TEST_F(BadInputTest, ChunkPastTheEnd) {
  ExpectPushRejected("chunk index past the end",
                     [](auto* r) { r->mutable_grads(0)->set_chunk(99); },
                     grpc::StatusCode::OUT_OF_RANGE, "chunk 99 does not exist");
}

TEST_F(BadInputTest, UnknownEncoding) {
  ExpectPushRejected(
      "unknown encoding",
      [](auto* r) {
        r->mutable_grads(0)->set_encoding(static_cast<v1::Encoding>(9));
      },
      grpc::StatusCode::INVALID_ARGUMENT, "encoding unknown(9)");
  ExpectPushRejected(
      "unspecified encoding",
      [](auto* r) {
        r->mutable_grads(0)->set_encoding(v1::ENCODING_UNSPECIFIED);
      },
      grpc::StatusCode::INVALID_ARGUMENT, "is not supported");
}

TEST_F(BadInputTest, PayloadLengthNotMatchingEncoding) {
  ExpectPushRejected(
      "f16 payload of f32 length",
      [](auto* r) { r->mutable_grads(0)->set_encoding(v1::ENCODING_F16); },
      grpc::StatusCode::INVALID_ARGUMENT, "of f16");
  ExpectPushRejected(
      "odd byte count",
      [](auto* r) { r->mutable_grads(0)->mutable_data()->push_back('x'); },
      grpc::StatusCode::INVALID_ARGUMENT, "not a whole number of elements");
}

TEST_F(BadInputTest, NanOrInfInGradient) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity()}) {
    ExpectPushRejected(
        "non-finite gradient",
        [&](auto* r) {
          std::memcpy(r->mutable_grads(0)->mutable_data()->data() + 4 * 100,
                      &bad, 4);
        },
        grpc::StatusCode::INVALID_ARGUMENT, "element 100");
  }
}

TEST_F(BadInputTest, OneBadChunkRejectsTheWholeRequest) {
  ExpectPushRejected(
      "valid chunk followed by a NaN chunk",
      [&](auto* r) {
        // The first chunk of "big" held here is valid; the NaN is in "w".
        ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(2, kChunk));
        for (const ChunkSpan& s : layout.Chunks("job", "big", 600000)) {
          if (s.shard != 0) continue;
          v1::ChunkData good;
          good.set_tensor("big");
          good.set_chunk(s.index);
          good.set_encoding(v1::ENCODING_F32);
          std::vector<float> ones(s.length, 1.0f);
          EncodeFloats(v1::ENCODING_F32, ones, good.mutable_data());
          *r->mutable_grads()->Add() = r->grads(0);
          *r->mutable_grads(0) = good;
          break;
        }
        const float nan = std::nanf("");
        std::memcpy(r->mutable_grads(1)->mutable_data()->data(), &nan, 4);
      },
      grpc::StatusCode::INVALID_ARGUMENT, "tensor 'w'");
}

TEST_F(BadInputTest, DuplicateChunk) {
  ExpectPushRejected(
      "duplicate chunk",
      [](auto* r) { *r->mutable_grads()->Add() = r->grads(0); },
      grpc::StatusCode::INVALID_ARGUMENT, "appears twice");
}

TEST_F(BadInputTest, EmptyRequest) {
  ExpectPushRejected("empty push", [](auto* r) { r->clear_grads(); },
                     grpc::StatusCode::INVALID_ARGUMENT, "names no chunks");
  grpc::ClientContext ctx;
  v1::PullRequest pull;
  pull.set_namespace_("job");
  *pull.mutable_layout() = WireLayout();
  pull.set_encoding(v1::ENCODING_F32);
  v1::PullResponse resp;
  EXPECT_EQ(stub_->Pull(&ctx, pull, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BadInputTest, OversizedRequest) {
  ExpectPushRejected(
      "request over --max_message_bytes",
      [](auto* r) { r->mutable_grads(0)->mutable_data()->resize(2 << 20); },
      grpc::StatusCode::RESOURCE_EXHAUSTED, "larger than max");
}

TEST_F(BadInputTest, AnswerOverTheMessageLimit) {
  ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(2, kChunk));
  v1::PullRequest pull;
  pull.set_namespace_("job");
  *pull.mutable_layout() = WireLayout();
  pull.set_encoding(v1::ENCODING_F32);
  for (const ChunkSpan& s : layout.Chunks("job", "big", 600000)) {
    if (s.shard != 0) continue;
    v1::ChunkRef* r = pull.add_chunks();
    r->set_tensor("big");
    r->set_chunk(s.index);
  }
  grpc::ClientContext ctx;
  v1::PullResponse resp;
  grpc::Status s = stub_->Pull(&ctx, pull, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(s.error_message().find("ask for fewer chunks"), std::string::npos)
      << s.error_message();
}

TEST_F(BadInputTest, UnknownWorkerId) {
  ExpectPushRejected("unknown worker", [](auto* r) { r->set_worker_id(77); },
                     grpc::StatusCode::NOT_FOUND, "worker id 77");
}

TEST_F(BadInputTest, LayoutMismatch) {
  ExpectPushRejected(
      "wrong num_shards",
      [](auto* r) { r->mutable_layout()->set_num_shards(3); },
      grpc::StatusCode::FAILED_PRECONDITION, "layout mismatch");
  ExpectPushRejected(
      "wrong chunk_elems",
      [](auto* r) { r->mutable_layout()->set_chunk_elems(1024); },
      grpc::StatusCode::FAILED_PRECONDITION, "chunk_elems=4096");
  ExpectPushRejected(
      "wrong shard index (shards listed out of order)",
      [](auto* r) { r->mutable_layout()->set_shard_index(1); },
      grpc::StatusCode::FAILED_PRECONDITION, "this is shard 0");
  ExpectPushRejected("no layout", [](auto* r) { r->clear_layout(); },
                     grpc::StatusCode::INVALID_ARGUMENT, "carries no layout");
}

TEST_F(BadInputTest, BadExchangeAlpha) {
  for (float alpha : {0.0f, -0.5f, 1.5f, std::nanf("")}) {
    v1::ExchangeRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = WireLayout();
    req.set_alpha(alpha);
    *req.add_params() = ValidPush().grads(0);
    grpc::ClientContext ctx;
    v1::ExchangeResponse resp;
    grpc::Status s = stub_->Exchange(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << alpha;
    EXPECT_NE(s.error_message().find("alpha"), std::string::npos);
  }
  ExpectUnchanged("bad alpha");
}

TEST_F(BadInputTest, ReDeclareWithAnotherShapeOrOptimizer) {
  std::vector<TensorDecl> reshaped = decls_;
  reshaped[0].spec.set_shape(1, kChunk + 1);
  absl::Status s = client_->Declare("job", config_, reshaped);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("shape [3,4096]"), absl::string_view::npos) << s;

  v1::NamespaceConfig sgd;
  sgd.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  s = client_->Declare("job", sgd, decls_);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("OPTIMIZER_ADAM"), absl::string_view::npos) << s;

  // The same declaration again is fine and changes nothing.
  ASSERT_OK(client_->Declare("job", config_, decls_));
  ExpectUnchanged("re-declare");
}

// Finite gradients whose update would make an optimizer slot (Adam's
// second moment: g * g overflows) non-finite, over two chunks where only the
// second overflows: nothing of the request is applied, versions included.
TEST_F(BadInputTest, UpdateThatWouldBeNonFiniteIsRefusedWhole) {
  auto version_of_mine = [&] {
    v1::PullRequest pull;
    pull.set_namespace_("job");
    *pull.mutable_layout() = WireLayout();
    pull.set_encoding(v1::ENCODING_F32);
    v1::ChunkRef* r = pull.add_chunks();
    r->set_tensor("w");
    r->set_chunk(mine_.index);
    grpc::ClientContext ctx;
    v1::PullResponse resp;
    EXPECT_TRUE(stub_->Pull(&ctx, pull, &resp).ok());
    return resp.chunks_size() == 1 ? resp.chunks(0).version() : 0;
  };
  const uint64_t version = version_of_mine();
  ExpectPushRejected(
      "finite gradient that overflows the update",
      [&](auto* r) {
        ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(2, kChunk));
        for (const ChunkSpan& s : layout.Chunks("job", "big", 600000)) {
          if (s.shard != 0) continue;
          v1::ChunkData good;
          good.set_tensor("big");
          good.set_chunk(s.index);
          good.set_encoding(v1::ENCODING_F32);
          std::vector<float> ones(s.length, 1.0f);
          EncodeFloats(v1::ENCODING_F32, ones, good.mutable_data());
          *r->mutable_grads()->Add() = r->grads(0);
          *r->mutable_grads(0) = good;
          break;
        }
        const float huge = 1e25f;  // finite; (1 - beta2) * g * g is not
        std::memcpy(r->mutable_grads(1)->mutable_data()->data() + 4 * 7, &huge,
                    4);
      },
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrCat("tensor 'w' chunk ", mine_.index));
  EXPECT_EQ(version_of_mine(), version);
}

TEST_F(BadInputTest, HyperParameterPastItsBound) {
  auto admin = v1::Admin::NewStub(MakeChannel(cluster_->addresses()[0]));
  v1::SetConfigRequest set;
  set.set_namespace_("job");
  set.mutable_optimizer()->set_learning_rate(1e38f);
  grpc::ClientContext ctx;
  v1::SetConfigResponse resp;
  grpc::Status s = admin->SetConfig(&ctx, set, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(
      s.error_message().find("learning_rate is 1e+38; it must be in (0, 1000]"),
      std::string::npos)
      << s.error_message();

  v1::NamespaceConfig fast = config_;
  fast.mutable_optimizer()->set_learning_rate(1e38f);
  absl::Status d = client_->Declare("fast", fast, decls_);
  EXPECT_EQ(d.code(), absl::StatusCode::kInvalidArgument) << d;
  EXPECT_NE(d.message().find("learning_rate"), absl::string_view::npos) << d;
  ExpectUnchanged("bad hyper-parameter");
}

TEST_F(BadInputTest, SettingTheOptimizerNeverReads) {
  v1::NamespaceConfig adam_with_momentum = config_;
  adam_with_momentum.mutable_optimizer()->set_momentum(0.5f);
  absl::Status s = client_->Declare("other", adam_with_momentum, decls_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("OPTIMIZER_ADAM does not read 'momentum'"),
            absl::string_view::npos)
      << s;
}

TEST_F(BadInputTest, ConfigMismatchNamesTheFields) {
  v1::NamespaceConfig faster = config_;
  faster.mutable_optimizer()->set_learning_rate(0.1f);
  absl::Status s = client_->Declare("job", faster, decls_);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("learning_rate: declared 0.01, requested 0.1"),
            absl::string_view::npos)
      << s;
  ExpectUnchanged("mismatched re-declare");
}

TEST_F(BadInputTest, BadDeclarations) {
  auto declare = [&](std::function<void(v1::DeclareRequest*)> mutate) {
    v1::DeclareRequest req;
    req.set_namespace_("fresh");
    *req.mutable_layout() = WireLayout();
    req.mutable_config()->mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
    v1::TensorSpec* t = req.add_tensors();
    t->set_name("x");
    t->add_shape(10);
    t->mutable_init()->set_kind(v1::INIT_ZEROS);
    mutate(&req);
    grpc::ClientContext ctx;
    v1::DeclareResponse resp;
    return stub_->Declare(&ctx, req, &resp);
  };
  EXPECT_TRUE(declare([](auto*) {}).ok());
  EXPECT_EQ(declare([](auto* r) { r->mutable_tensors(0)->set_shape(0, 0); })
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(declare([](auto* r) { r->mutable_tensors(0)->clear_shape(); })
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(declare([](auto* r) {
              r->mutable_config()->mutable_optimizer()->set_learning_rate(-1);
            }).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(declare([](auto* r) { r->clear_tensors(); }).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(declare([](auto* r) { *r->add_tensors() = r->tensors(0); })
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // INIT_EXPLICIT without the values of the chunks this shard holds (a
  // tensor of 4 chunks puts 2 on each shard).
  EXPECT_EQ(declare([](auto* r) {
              r->set_namespace_("fresh2");
              r->mutable_tensors(0)->set_shape(0, 4 * kChunk);
              r->mutable_tensors(0)->mutable_init()->set_kind(
                  v1::INIT_EXPLICIT);
            }).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(declare([](auto* r) { r->set_namespace_("has space"); })
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ExpectUnchanged("bad declarations");
}

// A declaration the shard cannot hold is refused before anything is
// allocated: too many elements for the chunk size (chunk indices are
// 32-bit), or more memory than --max_memory_mib.
TEST(DeclareLimits, TooManyElementsOrTooMuchMemory) {
  ServerOptions base;
  base.chunk_elems = 1;
  base.max_memory_bytes = 1 << 20;
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, base));
  auto stub =
      v1::ParameterServer::NewStub(MakeChannel(cluster->addresses()[0]));
  auto declare = [&](int64_t n, v1::OptimizerKind kind) {
    v1::DeclareRequest req;
    req.set_namespace_(absl::StrCat("n", n, "k", static_cast<int>(kind)));
    req.mutable_layout()->set_num_shards(1);
    req.mutable_layout()->set_chunk_elems(1);
    req.mutable_config()->mutable_optimizer()->set_kind(kind);
    v1::TensorSpec* t = req.add_tensors();
    t->set_name("x");
    t->add_shape(n);
    t->mutable_init()->set_kind(v1::INIT_ZEROS);
    grpc::ClientContext ctx;
    v1::DeclareResponse resp;
    return stub->Declare(&ctx, req, &resp);
  };
  grpc::Status s = declare(int64_t{1} << 32, v1::OPTIMIZER_SGD);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("split it"), std::string::npos)
      << s.error_message();
  // 100k floats with Adam's two slots: 1.2 MB, over the 1 MiB limit...
  s = declare(100000, v1::OPTIMIZER_ADAM);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(s.error_message().find("--max_memory_mib"), std::string::npos)
      << s.error_message();
  // ...while plain SGD's 0.4 MB fits, twice, and a third does not.
  EXPECT_TRUE(declare(100000, v1::OPTIMIZER_SGD).ok());
  EXPECT_TRUE(declare(100001, v1::OPTIMIZER_SGD).ok());
  EXPECT_EQ(declare(100002, v1::OPTIMIZER_SGD).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

// The per-connection call limit bounds what one connection can make the
// shard hold; a value that would not is refused before anything starts.
TEST(ServerLimits, CallsPerConnectionOutOfRangeIsRefused) {
  for (int bad : {0, -1, 4097}) {
    ServerOptions o;
    o.max_calls_per_connection = bad;
    absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(o);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find("max_calls_per_connection"),
              std::string::npos)
        << s.status();
  }
  ServerOptions ok;
  ok.max_calls_per_connection = 1;
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, ok));
  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
  EXPECT_TRUE(c->Status().ok());
}

TEST(ClientChecks, RepeatedTensorInOneCallIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1));
  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
  v1::NamespaceConfig cfg;
  cfg.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  TensorDecl d;
  d.spec.set_name("w");
  d.spec.add_shape(4);
  d.spec.mutable_init()->set_kind(v1::INIT_ZEROS);
  ASSERT_OK(c->Declare("", cfg, {d}));
  std::vector<float> g(4, 1.0f), w(4, 0.0f);
  EXPECT_EQ(c->Push("", {{"w", g}, {"w", g}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Pull("", {{"w", absl::MakeSpan(w)}, {"w", absl::MakeSpan(w)}})
                .code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> wrong(5);
  absl::Status s = c->Pull("", {{"w", absl::MakeSpan(wrong)}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("has 4 elements"), absl::string_view::npos) << s;
  ASSERT_OK(c->Pull("", {{"w", absl::MakeSpan(w)}}));
  EXPECT_EQ(w, std::vector<float>(4, 0.0f));
}

// A 1 MB name, namespace, checkpoint id or worker name (well within the
// shard's 64 MiB message limit) gets the real error with a short message on
// every call that takes one, not RESOURCE_EXHAUSTED about metadata.
TEST(HugeStrings, EveryCallAnswersTheRealErrorShortly) {
  TempDir dir;
  ServerOptions base;
  base.chunk_elems = kChunk;
  base.data_dir = dir.path();
  base.checkpoint_interval = absl::ZeroDuration();
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, base));
  ASSERT_OK_AND_ASSIGN(auto client, cluster->NewClient());
  v1::NamespaceConfig cfg;
  cfg.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  TensorDecl d;
  d.spec.set_name("w");
  d.spec.add_shape(4);
  d.spec.mutable_init()->set_kind(v1::INIT_ZEROS);
  ASSERT_OK(client->Declare("job", cfg, {d}));
  auto ps = v1::ParameterServer::NewStub(MakeChannel(cluster->addresses()[0]));
  auto admin = v1::Admin::NewStub(MakeChannel(cluster->addresses()[0]));
  const std::string huge(1 << 20, 'x');

  auto expect = [&](const std::string& what, grpc::StatusCode code,
                    std::function<grpc::Status(grpc::ClientContext*)> call) {
    grpc::ClientContext ctx;
    grpc::Status s = call(&ctx);
    EXPECT_EQ(s.error_code(), code) << what << ": " << s.error_code() << " "
                                    << s.error_message().substr(0, 200);
    EXPECT_LT(s.error_message().size(), 1024u) << what;
    EXPECT_NE(s.error_message().find("1048576 bytes"), std::string::npos)
        << what << ": " << s.error_message().substr(0, 200);
  };
  v1::Layout layout;
  layout.set_num_shards(1);
  layout.set_chunk_elems(kChunk);
  auto chunk = [&](const std::string& tensor) {
    v1::ChunkData c;
    c.set_tensor(tensor);
    c.set_encoding(v1::ENCODING_F32);
    std::vector<float> ones(4, 1.0f);
    EncodeFloats(v1::ENCODING_F32, ones, c.mutable_data());
    return c;
  };
  for (bool long_namespace : {false, true}) {
    const std::string ns = long_namespace ? huge : "job";
    const std::string tensor = long_namespace ? "w" : huge;
    const grpc::StatusCode code = long_namespace
                                      ? grpc::StatusCode::INVALID_ARGUMENT
                                      : grpc::StatusCode::NOT_FOUND;
    const std::string which = long_namespace ? " (namespace)" : " (tensor)";
    expect("Declare" + which, grpc::StatusCode::INVALID_ARGUMENT,
           [&](auto* ctx) {
             v1::DeclareRequest req;
             req.set_namespace_(long_namespace ? huge : "fresh");
             *req.mutable_layout() = layout;
             *req.mutable_config() = cfg;
             v1::TensorSpec* t = req.add_tensors();
             t->set_name(tensor);
             t->add_shape(4);
             t->mutable_init()->set_kind(v1::INIT_ZEROS);
             v1::DeclareResponse resp;
             return ps->Declare(ctx, req, &resp);
           });
    expect("Pull" + which, code, [&](auto* ctx) {
      v1::PullRequest req;
      req.set_namespace_(ns);
      *req.mutable_layout() = layout;
      req.set_encoding(v1::ENCODING_F32);
      req.add_chunks()->set_tensor(tensor);
      v1::PullResponse resp;
      return ps->Pull(ctx, req, &resp);
    });
    for (bool pushpull : {false, true}) {
      expect((pushpull ? "PushPull" : "Push") + which, code, [&](auto* ctx) {
        v1::PushRequest req;
        req.set_namespace_(ns);
        *req.mutable_layout() = layout;
        *req.add_grads() = chunk(tensor);
        req.set_return_encoding(v1::ENCODING_F32);
        if (pushpull) {
          v1::PushPullResponse resp;
          return ps->PushPull(ctx, req, &resp);
        }
        v1::PushResponse resp;
        return ps->Push(ctx, req, &resp);
      });
    }
    expect("Exchange" + which, code, [&](auto* ctx) {
      v1::ExchangeRequest req;
      req.set_namespace_(ns);
      *req.mutable_layout() = layout;
      req.set_alpha(0.5f);
      *req.add_params() = chunk(tensor);
      v1::ExchangeResponse resp;
      return ps->Exchange(ctx, req, &resp);
    });
  }
  expect("SetConfig", grpc::StatusCode::INVALID_ARGUMENT, [&](auto* ctx) {
    v1::SetConfigRequest req;
    req.set_namespace_(huge);
    req.mutable_optimizer()->set_learning_rate(0.5f);
    v1::SetConfigResponse resp;
    return admin->SetConfig(ctx, req, &resp);
  });
  expect("ReportEvaluation", grpc::StatusCode::NOT_FOUND, [&](auto* ctx) {
    v1::ReportEvaluationRequest req;
    req.set_namespace_(huge);
    v1::ReportEvaluationResponse resp;
    return ps->ReportEvaluation(ctx, req, &resp);
  });
  expect("RegisterWorker", grpc::StatusCode::INVALID_ARGUMENT, [&](auto* ctx) {
    v1::RegisterWorkerRequest req;
    req.set_name(huge);
    v1::RegisterWorkerResponse resp;
    return ps->RegisterWorker(ctx, req, &resp);
  });
  expect("Checkpoint", grpc::StatusCode::INVALID_ARGUMENT, [&](auto* ctx) {
    v1::CheckpointRequest req;
    req.set_id(huge);
    v1::CheckpointResponse resp;
    return admin->Checkpoint(ctx, req, &resp);
  });
  expect("Restore", grpc::StatusCode::INVALID_ARGUMENT, [&](auto* ctx) {
    v1::RestoreRequest req;
    req.set_id(huge);
    v1::RestoreResponse resp;
    return admin->Restore(ctx, req, &resp);
  });
  expect("Drain", grpc::StatusCode::INVALID_ARGUMENT, [&](auto* ctx) {
    v1::DrainRequest req;
    req.set_checkpoint_id(huge);
    v1::DrainResponse resp;
    return admin->Drain(ctx, req, &resp);
  });
}

TEST(AllowNonFinite, FlagLetsNanThrough) {
  ServerOptions base;
  base.allow_nonfinite = true;
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, base));
  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
  v1::NamespaceConfig cfg;
  cfg.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  TensorDecl d;
  d.spec.set_name("w");
  d.spec.add_shape(4);
  d.spec.mutable_init()->set_kind(v1::INIT_ZEROS);
  ASSERT_OK(c->Declare("", cfg, {d}));
  std::vector<float> g = {1, std::nanf(""), 1, 1}, w(4);
  ASSERT_OK(c->PushPull("", {{"w", g}}, {{"w", absl::MakeSpan(w)}}));
  EXPECT_TRUE(std::isnan(w[1]));
}

}  // namespace
}  // namespace pskit
