// ChunkStore on its own, without gRPC: Declare's idempotence and conflicts,
// the data plane's semantics (pull, push, pushpull, exchange, versions and
// staleness), refusals that leave the state unchanged, the snapshot/replace
// round trip, SetConfig and Drain, DropNamespace (everything freed, a
// Declare after it starts fresh, refusals, pushes racing it) and the
// evaluation history.
#include "server/chunk_store.h"

#include <cfloat>
#include <cmath>
#include <memory>
#include <atomic>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/encoding.h"
#include "common/layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

// 2 shards, chunks of 4 elements: a 16-element tensor has 4 chunks, two on
// each shard.
constexpr uint32_t kShards = 2;
constexpr uint32_t kChunkElems = 4;
constexpr int64_t kNumel = 16;
constexpr float kInit = 0.5f;

std::string F32(const std::vector<float>& v) {
  std::string out;
  EncodeFloats(v1::ENCODING_F32, v, &out);
  return out;
}

std::vector<float> Floats(const std::string& bytes) {
  std::vector<float> v(bytes.size() / sizeof(float));
  DecodeFloats(v1::ENCODING_F32, bytes.data(), absl::MakeSpan(v));
  return v;
}

class ChunkStoreTest : public ::testing::Test {
 protected:
  ChunkStoreTest() : layout_(Layout::Create(kShards, kChunkElems).value()) {
    for (uint32_t s = 0; s < kShards; ++s) stores_.push_back(NewStore(s));
  }

  std::unique_ptr<ChunkStore> NewStore(uint32_t shard,
                                       uint64_t max_memory = 1 << 30) {
    return std::make_unique<ChunkStore>(layout_, shard,
                                        /*allow_nonfinite=*/false,
                                        /*max_message_bytes=*/1 << 20,
                                        max_memory);
  }

  v1::Layout Wire(uint32_t shard) const {
    v1::Layout l;
    l.set_num_shards(kShards);
    l.set_chunk_elems(kChunkElems);
    l.set_shard_index(shard);
    return l;
  }

  // A Declare of tensor `name` with shape [kNumel] and a constant
  // initializer, meant for `shard`.
  v1::DeclareRequest DeclareReq(uint32_t shard, const std::string& name = "w",
                                float lr = 0.1f) const {
    v1::DeclareRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire(shard);
    *req.mutable_config() = testing::SgdConfig(lr);
    v1::TensorSpec* t = req.add_tensors();
    t->set_name(name);
    t->add_shape(kNumel);
    t->mutable_init()->set_kind(v1::INIT_CONSTANT);
    t->mutable_init()->set_value(kInit);
    return req;
  }

  void DeclareEverywhere() {
    for (uint32_t s = 0; s < kShards; ++s) {
      v1::DeclareResponse resp;
      ASSERT_OK(stores_[s]->Declare(DeclareReq(s), &resp));
    }
  }

  // The chunks of "w" that shard `shard` holds, and one it does not.
  std::vector<uint32_t> Here(uint32_t shard) const {
    std::vector<uint32_t> out;
    for (const ChunkSpan& c : layout_.Chunks("job", "w", kNumel)) {
      if (c.shard == shard) out.push_back(c.index);
    }
    return out;
  }
  uint32_t Elsewhere(uint32_t shard) const {
    for (const ChunkSpan& c : layout_.Chunks("job", "w", kNumel)) {
      if (c.shard != shard) return c.index;
    }
    return 0;
  }

  v1::PullRequest PullReq(uint32_t shard, std::vector<uint32_t> chunks) const {
    v1::PullRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire(shard);
    req.set_encoding(v1::ENCODING_F32);
    for (uint32_t c : chunks) {
      v1::ChunkRef* r = req.add_chunks();
      r->set_tensor("w");
      r->set_chunk(c);
    }
    return req;
  }

  // Pulls chunk `chunk` of "w" from `store` (shard `shard`): its values
  // and version.
  std::pair<std::vector<float>, uint64_t> PullFrom(ChunkStore& store,
                                                   uint32_t shard,
                                                   uint32_t chunk) const {
    v1::PullResponse resp;
    EXPECT_OK(store.Pull(PullReq(shard, {chunk}), &resp));
    if (resp.chunks_size() != 1) return {};
    return {Floats(resp.chunks(0).data()), resp.chunks(0).version()};
  }
  std::pair<std::vector<float>, uint64_t> PullOne(uint32_t shard,
                                                  uint32_t chunk) const {
    return PullFrom(*stores_[shard], shard, chunk);
  }

  // A gradient (or Exchange parameter) of `value` everywhere for `chunk`,
  // carrying the version pulled.
  static void AddChunk(google::protobuf::RepeatedPtrField<v1::ChunkData>* out,
                       uint32_t chunk, float value, uint64_t version,
                       size_t elems = kChunkElems) {
    v1::ChunkData* d = out->Add();
    d->set_tensor("w");
    d->set_chunk(chunk);
    d->set_version(version);
    d->set_encoding(v1::ENCODING_F32);
    d->set_data(F32(std::vector<float>(elems, value)));
  }

  v1::PushRequest PushReq(uint32_t shard) const {
    v1::PushRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire(shard);
    return req;
  }

  Layout layout_;
  std::vector<std::unique_ptr<ChunkStore>> stores_;
};

TEST_F(ChunkStoreTest, EveryChunkIsHeldByExactlyOneShard) {
  uint32_t held = 0;
  uint64_t elements = 0;
  for (uint32_t s = 0; s < kShards; ++s) {
    v1::DeclareResponse resp;
    ASSERT_OK(stores_[s]->Declare(DeclareReq(s), &resp));
    EXPECT_EQ(resp.chunks_held(), Here(s).size());
    EXPECT_EQ(resp.config().optimizer().kind(), v1::OPTIMIZER_SGD);
    held += resp.chunks_held();
    v1::StatusResponse status;
    stores_[s]->Describe(&status);
    ASSERT_EQ(status.namespaces_size(), 1);
    ASSERT_EQ(status.namespaces(0).tensors_size(), 1);
    elements += status.namespaces(0).tensors(0).elements_here();
  }
  EXPECT_EQ(held, layout_.NumChunks(kNumel));
  EXPECT_EQ(elements, static_cast<uint64_t>(kNumel));
}

TEST_F(ChunkStoreTest, DeclareAgainLeavesTheTensorAsItIs) {
  DeclareEverywhere();
  const uint32_t c = Here(0)[0];
  v1::PushRequest push = PushReq(0);
  AddChunk(push.mutable_grads(), c, 1.0f, 0);
  v1::PushResponse pushed;
  ASSERT_OK(stores_[0]->Push(push, &pushed));
  const auto before = PullOne(0, c);

  v1::DeclareResponse resp;
  ASSERT_OK(stores_[0]->Declare(DeclareReq(0), &resp));
  EXPECT_EQ(resp.chunks_held(), Here(0).size());
  EXPECT_EQ(PullOne(0, c), before);
  EXPECT_EQ(before.second, 1u);

  // A Declare that adds a tensor to the namespace keeps the old one too.
  v1::DeclareRequest more = DeclareReq(0);
  *more.add_tensors() = more.tensors(0);
  more.mutable_tensors(1)->set_name("b");
  ASSERT_OK(stores_[0]->Declare(more, &resp));
  EXPECT_EQ(PullOne(0, c), before);
}

TEST_F(ChunkStoreTest, DeclareConflictsAreRefusedAndChangeNothing) {
  DeclareEverywhere();
  v1::DeclareResponse resp;

  v1::DeclareRequest shape = DeclareReq(0);
  shape.mutable_tensors(0)->set_shape(0, kNumel + 1);
  EXPECT_EQ(stores_[0]->Declare(shape, &resp).code(),
            absl::StatusCode::kFailedPrecondition);

  v1::DeclareRequest config = DeclareReq(0, "w", /*lr=*/0.2f);
  EXPECT_EQ(stores_[0]->Declare(config, &resp).code(),
            absl::StatusCode::kFailedPrecondition);

  // A clash in one tensor refuses the whole request: "new" is not added.
  v1::DeclareRequest mixed = shape;
  *mixed.add_tensors() = DeclareReq(0, "new").tensors(0);
  EXPECT_EQ(stores_[0]->Declare(mixed, &resp).code(),
            absl::StatusCode::kFailedPrecondition);

  v1::DeclareRequest twice = DeclareReq(0, "other");
  *twice.add_tensors() = twice.tensors(0);
  EXPECT_EQ(stores_[0]->Declare(twice, &resp).code(),
            absl::StatusCode::kInvalidArgument);

  v1::DeclareRequest empty = DeclareReq(0);
  empty.clear_tensors();
  EXPECT_EQ(stores_[0]->Declare(empty, &resp).code(),
            absl::StatusCode::kInvalidArgument);

  v1::StatusResponse status;
  stores_[0]->Describe(&status);
  ASSERT_EQ(status.namespaces_size(), 1);
  ASSERT_EQ(status.namespaces(0).tensors_size(), 1);
  EXPECT_EQ(status.namespaces(0).tensors(0).name(), "w");
  EXPECT_EQ(status.namespaces(0).tensors(0).shape(0), kNumel);
}

TEST_F(ChunkStoreTest, DeclarePastTheMemoryLimitIsRefused) {
  // Room for the values of this shard's chunks, not for them twice.
  const uint64_t need =
      layout_.ElementsOnShard("job", "w", kNumel, 0) * sizeof(float);
  std::unique_ptr<ChunkStore> small = NewStore(0, need);
  v1::DeclareResponse resp;
  ASSERT_OK(small->Declare(DeclareReq(0), &resp));
  EXPECT_EQ(small->Declare(DeclareReq(0, "second"), &resp).code(),
            absl::StatusCode::kResourceExhausted);
  v1::StatusResponse status;
  small->Describe(&status);
  ASSERT_EQ(status.namespaces_size(), 1);
  EXPECT_EQ(status.namespaces(0).tensors_size(), 1);
}

TEST_F(ChunkStoreTest, ExplicitValuesMustBeChunksHeldHere) {
  v1::DeclareRequest req = DeclareReq(0);
  req.mutable_tensors(0)->mutable_init()->set_kind(v1::INIT_EXPLICIT);
  v1::DeclareResponse resp;
  // Missing values for a chunk held here.
  EXPECT_EQ(stores_[0]->Declare(req, &resp).code(),
            absl::StatusCode::kInvalidArgument);
  // Values for a chunk held elsewhere.
  v1::DeclareRequest wrong = req;
  AddChunk(wrong.mutable_initial_values(), Elsewhere(0), 1.0f, 0);
  EXPECT_EQ(stores_[0]->Declare(wrong, &resp).code(),
            absl::StatusCode::kFailedPrecondition);
  // Exactly this shard's chunks: accepted, and pulled back as sent.
  for (uint32_t c : Here(0)) {
    AddChunk(req.mutable_initial_values(), c, 2.0f + c, 0);
  }
  ASSERT_OK(stores_[0]->Declare(req, &resp));
  for (uint32_t c : Here(0)) {
    EXPECT_EQ(PullOne(0, c).first, std::vector<float>(kChunkElems, 2.0f + c));
  }
}

TEST_F(ChunkStoreTest, PullPushAndVersions) {
  DeclareEverywhere();
  const std::vector<uint32_t> here = Here(0);
  for (uint32_t c : here) {
    EXPECT_EQ(PullOne(0, c),
              std::make_pair(std::vector<float>(kChunkElems, kInit),
                             uint64_t{0}));
  }

  // SGD: w -= lr * g. Each push adds one to the version; staleness is the
  // version before the update minus the version the gradient was pulled at.
  v1::PushRequest push = PushReq(0);
  AddChunk(push.mutable_grads(), here[0], 1.0f, 0);
  v1::PushResponse resp;
  ASSERT_OK(stores_[0]->Push(push, &resp));
  ASSERT_EQ(resp.acks_size(), 1);
  EXPECT_EQ(resp.acks(0).version(), 1u);
  EXPECT_EQ(resp.acks(0).staleness(), 0u);
  const float once = kInit - 0.1f * 1.0f;
  EXPECT_EQ(PullOne(0, here[0]),
            std::make_pair(std::vector<float>(kChunkElems, once), uint64_t{1}));

  resp.Clear();
  ASSERT_OK(stores_[0]->Push(push, &resp));  // still says version 0
  EXPECT_EQ(resp.acks(0).version(), 2u);
  EXPECT_EQ(resp.acks(0).staleness(), 1u);

  // A version from the future (a shard that lost updates) counts as fresh.
  v1::PushRequest future = PushReq(0);
  AddChunk(future.mutable_grads(), here[0], 0.0f, 99);
  resp.Clear();
  ASSERT_OK(stores_[0]->Push(future, &resp));
  EXPECT_EQ(resp.acks(0).staleness(), 0u);
  EXPECT_EQ(resp.acks(0).version(), 3u);

  // The other chunk was not touched.
  EXPECT_EQ(PullOne(0, here[1]).second, 0u);
  EXPECT_EQ(stores_[0]->updates_applied(), 3u);
}

TEST_F(ChunkStoreTest, PushPullAnswersTheValuesRightAfterTheUpdate) {
  DeclareEverywhere();
  const uint32_t c = Here(1)[0];
  v1::PushRequest push = PushReq(1);
  AddChunk(push.mutable_grads(), c, -2.0f, 0);
  push.set_return_encoding(v1::ENCODING_F32);
  v1::PushPullResponse resp;
  ASSERT_OK(stores_[1]->PushPull(push, &resp));
  ASSERT_EQ(resp.acks_size(), 1);
  ASSERT_EQ(resp.chunks_size(), 1);
  EXPECT_EQ(resp.acks(0).version(), 1u);
  EXPECT_EQ(resp.chunks(0).version(), 1u);
  EXPECT_EQ(resp.chunks(0).chunk(), c);
  const std::vector<float> after(kChunkElems, kInit - 0.1f * -2.0f);
  EXPECT_EQ(Floats(resp.chunks(0).data()), after);
  EXPECT_EQ(PullOne(1, c).first, after);

  // PushPull needs a known answer encoding; refused before any update.
  push.set_return_encoding(v1::ENCODING_UNSPECIFIED);
  EXPECT_EQ(stores_[1]->PushPull(push, &resp).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PullOne(1, c).second, 1u);
}

TEST_F(ChunkStoreTest, ExchangeMovesTheCentreTowardsTheWorker) {
  DeclareEverywhere();
  const uint32_t c = Here(0)[0];
  v1::ExchangeRequest req;
  req.set_namespace_("job");
  *req.mutable_layout() = Wire(0);
  req.set_alpha(0.5f);
  AddChunk(req.mutable_params(), c, 1.5f, 0);
  v1::ExchangeResponse resp;
  ASSERT_OK(stores_[0]->Exchange(req, &resp));
  ASSERT_EQ(resp.diffs_size(), 1);
  // e = alpha * (x - centre) = 0.5 * (1.5 - 0.5); centre += e.
  EXPECT_EQ(Floats(resp.diffs(0).data()), std::vector<float>(kChunkElems, 0.5f));
  EXPECT_EQ(resp.diffs(0).version(), 1u);
  EXPECT_EQ(PullOne(0, c),
            std::make_pair(std::vector<float>(kChunkElems, 1.0f), uint64_t{1}));

  for (float alpha : {0.0f, -0.1f, 1.5f}) {
    req.set_alpha(alpha);
    EXPECT_EQ(stores_[0]->Exchange(req, &resp).code(),
              absl::StatusCode::kInvalidArgument)
        << alpha;
  }
  EXPECT_EQ(PullOne(0, c).second, 1u);
}

// Finite gradients whose update drives values to -inf: over two chunks where
// only the second overflows, nothing is applied (values, versions and the
// update count unchanged), and the message names the tensor and the chunk.
TEST_F(ChunkStoreTest, UpdateThatWouldMakeValuesNonFiniteIsRefusedWhole) {
  constexpr float kLow = -FLT_MAX / 2;
  v1::DeclareRequest declare = DeclareReq(0, "w", /*lr=*/100.0f);
  declare.mutable_tensors(0)->mutable_init()->set_value(kLow);
  v1::DeclareResponse declared;
  ASSERT_OK(stores_[0]->Declare(declare, &declared));
  const std::vector<uint32_t> here = Here(0);
  ASSERT_EQ(here.size(), 2u);
  const std::string second = absl::StrCat("tensor 'w' chunk ", here[1]);
  auto unchanged = [&] {
    for (uint32_t c : here) {
      EXPECT_EQ(
          PullOne(0, c),
          std::make_pair(std::vector<float>(kChunkElems, kLow), uint64_t{0}))
          << "chunk " << c;
    }
    EXPECT_EQ(stores_[0]->updates_applied(), 0u);
  };

  v1::PushRequest push = PushReq(0);
  AddChunk(push.mutable_grads(), here[0], 1.0f, 0);   // -FLT_MAX/2 - 100
  AddChunk(push.mutable_grads(), here[1], 1e37f, 0);  // -FLT_MAX/2 - 1e39
  v1::PushResponse push_resp;
  absl::Status s = stores_[0]->Push(push, &push_resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              ::testing::AllOf(::testing::HasSubstr(second),
                               ::testing::HasSubstr("-inf"),
                               ::testing::HasSubstr("nothing of the request")));
  EXPECT_EQ(push_resp.acks_size(), 0);
  unchanged();

  push.set_return_encoding(v1::ENCODING_F32);
  v1::PushPullResponse pushpull_resp;
  s = stores_[0]->PushPull(push, &pushpull_resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr(second));
  unchanged();

  // EASGD: e = alpha * (x - centre) overflows for the second chunk only.
  v1::ExchangeRequest exchange;
  exchange.set_namespace_("job");
  *exchange.mutable_layout() = Wire(0);
  exchange.set_alpha(1.0f);
  AddChunk(exchange.mutable_params(), here[0], kLow, 0);
  AddChunk(exchange.mutable_params(), here[1], FLT_MAX, 0);
  v1::ExchangeResponse exchange_resp;
  s = stores_[0]->Exchange(exchange, &exchange_resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr(second));
  unchanged();

  // The control: a gradient that keeps both chunks finite is applied.
  push.mutable_grads(1)->set_data(F32(std::vector<float>(kChunkElems, 1.0f)));
  ASSERT_OK(stores_[0]->Push(push, &push_resp));
  for (uint32_t c : here) EXPECT_EQ(PullOne(0, c).second, 1u);
}

TEST_F(ChunkStoreTest, AllowNonFiniteAppliesAnOverflowingUpdate) {
  ChunkStore store(layout_, 0, /*allow_nonfinite=*/true, 1 << 20, 1 << 30);
  v1::DeclareRequest declare = DeclareReq(0, "w", /*lr=*/100.0f);
  declare.mutable_tensors(0)->mutable_init()->set_value(-FLT_MAX / 2);
  v1::DeclareResponse declared;
  ASSERT_OK(store.Declare(declare, &declared));
  v1::PushRequest push = PushReq(0);
  AddChunk(push.mutable_grads(), Here(0)[0], 1e37f, 0);
  v1::PushResponse resp;
  ASSERT_OK(store.Push(push, &resp));
  auto [values, version] = PullFrom(store, 0, Here(0)[0]);
  EXPECT_EQ(version, 1u);
  ASSERT_FALSE(values.empty());
  EXPECT_TRUE(std::isinf(values[0]));
}

TEST_F(ChunkStoreTest, DeclareRefusesASettingTheOptimizerNeverReads) {
  v1::DeclareRequest req = DeclareReq(0);  // SGD: no momentum
  req.mutable_config()->mutable_optimizer()->set_momentum(0.5f);
  v1::DeclareResponse resp;
  absl::Status s = stores_[0]->Declare(req, &resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              ::testing::AllOf(::testing::HasSubstr("OPTIMIZER_SGD"),
                               ::testing::HasSubstr("'momentum'")));
  v1::StatusResponse status;
  stores_[0]->Describe(&status);
  EXPECT_EQ(status.namespaces_size(), 0);

  // SetConfig refuses the same setting the same way.
  DeclareEverywhere();
  v1::SetConfigRequest set;
  set.set_namespace_("job");
  set.mutable_optimizer()->set_momentum(0.5f);
  v1::SetConfigResponse set_resp;
  s = stores_[0]->SetConfig(set, &set_resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              ::testing::AllOf(::testing::HasSubstr("OPTIMIZER_SGD"),
                               ::testing::HasSubstr("'momentum'")));
}

TEST_F(ChunkStoreTest, ConfigMismatchNamesTheDifferingFields) {
  DeclareEverywhere();  // SGD, lr 0.1
  v1::DeclareResponse resp;
  absl::Status s = stores_[0]->Declare(DeclareReq(0, "w", 0.2f), &resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      std::string(s.message()),
      ::testing::HasSubstr("learning_rate: declared 0.1, requested 0.2"));
  EXPECT_THAT(std::string(s.message()),
              ::testing::Not(::testing::HasSubstr("weight_decay")));

  v1::SetConfigRequest set;
  set.set_namespace_("job");
  set.mutable_optimizer()->set_learning_rate(0.3f);
  v1::SetConfigResponse set_resp;
  ASSERT_OK(stores_[0]->SetConfig(set, &set_resp));
  s = stores_[0]->Declare(DeclareReq(0, "w", 0.2f), &resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      std::string(s.message()),
      ::testing::AllOf(
          ::testing::HasSubstr("learning_rate: declared 0.1, requested 0.2"),
          ::testing::HasSubstr("learning_rate: current 0.3, requested 0.2")));
}

TEST_F(ChunkStoreTest, HyperParameterBoundsHoldInDeclareAndSetConfig) {
  v1::DeclareResponse resp;
  v1::DeclareRequest req = DeclareReq(0, "w", 1e38f);
  absl::Status s = stores_[0]->Declare(req, &resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              ::testing::AllOf(::testing::HasSubstr("learning_rate"),
                               ::testing::HasSubstr("1e+38"),
                               ::testing::HasSubstr("1000]")));
  DeclareEverywhere();
  v1::SetConfigRequest set;
  set.set_namespace_("job");
  set.mutable_optimizer()->set_learning_rate(1e38f);
  v1::SetConfigResponse set_resp;
  s = stores_[0]->SetConfig(set, &set_resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              ::testing::AllOf(::testing::HasSubstr("learning_rate"),
                               ::testing::HasSubstr("1e+38"),
                               ::testing::HasSubstr("1000]")));
}

// A 1 MB name is echoed cut short: the message stays small and the code is
// the real error.
TEST_F(ChunkStoreTest, HugeNamesGetShortMessages) {
  DeclareEverywhere();
  const std::string huge(1 << 20, 'x');
  auto short_message = [](const absl::Status& s) {
    EXPECT_LT(s.message().size(), 1024u) << s.message().substr(0, 200);
    EXPECT_THAT(std::string(s.message()),
                ::testing::HasSubstr("1048576 bytes"));
  };
  {
    v1::PushRequest push = PushReq(0);
    AddChunk(push.mutable_grads(), Here(0)[0], 1.0f, 0);
    push.mutable_grads(0)->set_tensor(huge);
    v1::PushResponse resp;
    absl::Status s = stores_[0]->Push(push, &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
    short_message(s);
    push.set_namespace_(huge);
    s = stores_[0]->Push(push, &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    short_message(s);
  }
  {
    v1::PullRequest pull = PullReq(0, {Here(0)[0]});
    pull.mutable_chunks(0)->set_tensor(huge);
    v1::PullResponse resp;
    absl::Status s = stores_[0]->Pull(pull, &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
    short_message(s);
  }
  {
    v1::DeclareRequest declare = DeclareReq(0, huge);
    v1::DeclareResponse resp;
    absl::Status s = stores_[0]->Declare(declare, &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    short_message(s);
    declare = DeclareReq(0);
    declare.set_namespace_(huge);
    s = stores_[0]->Declare(declare, &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    short_message(s);
  }
  {
    v1::SetConfigRequest set;
    set.set_namespace_(huge);
    v1::SetConfigResponse resp;
    absl::Status s = stores_[0]->SetConfig(set, &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    short_message(s);
  }
  {
    v1::ReportEvaluationRequest report;
    report.set_namespace_(huge);
    absl::Status s = stores_[0]->ReportEvaluation(report);
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
    short_message(s);
  }
}

TEST_F(ChunkStoreTest, ChunkOfAnotherShardOrLayoutIsFailedPrecondition) {
  DeclareEverywhere();
  v1::PullResponse pulled;
  absl::Status s = stores_[0]->Pull(PullReq(0, {Elsewhere(0)}), &pulled);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("belongs to shard"), absl::string_view::npos) << s;

  v1::PushRequest push = PushReq(0);
  AddChunk(push.mutable_grads(), Elsewhere(0), 1.0f, 0);
  v1::PushResponse resp;
  EXPECT_EQ(stores_[0]->Push(push, &resp).code(),
            absl::StatusCode::kFailedPrecondition);

  // A request meant for shard 1 sent to shard 0.
  EXPECT_EQ(stores_[0]->Pull(PullReq(1, {Here(0)[0]}), &pulled).code(),
            absl::StatusCode::kFailedPrecondition);
  v1::DeclareResponse declared;
  EXPECT_EQ(stores_[0]->Declare(DeclareReq(1), &declared).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ChunkStoreTest, BadPushesAreRefusedWholeAndChangeNothing) {
  DeclareEverywhere();
  const std::vector<uint32_t> here = Here(0);
  v1::PushResponse resp;
  auto refused = [&](const v1::PushRequest& req) {
    return stores_[0]->Push(req, &resp).code();
  };
  {  // The first gradient is good, the second has the wrong length.
    v1::PushRequest req = PushReq(0);
    AddChunk(req.mutable_grads(), here[0], 1.0f, 0);
    AddChunk(req.mutable_grads(), here[1], 1.0f, 0, kChunkElems - 1);
    EXPECT_EQ(refused(req), absl::StatusCode::kInvalidArgument);
  }
  {  // NaN.
    v1::PushRequest req = PushReq(0);
    AddChunk(req.mutable_grads(), here[0], 1.0f, 0);
    AddChunk(req.mutable_grads(), here[1], std::nanf(""), 0);
    EXPECT_EQ(refused(req), absl::StatusCode::kInvalidArgument);
  }
  {  // The same chunk twice.
    v1::PushRequest req = PushReq(0);
    AddChunk(req.mutable_grads(), here[0], 1.0f, 0);
    AddChunk(req.mutable_grads(), here[0], 1.0f, 0);
    EXPECT_EQ(refused(req), absl::StatusCode::kInvalidArgument);
  }
  {  // An unknown encoding.
    v1::PushRequest req = PushReq(0);
    AddChunk(req.mutable_grads(), here[0], 1.0f, 0);
    req.mutable_grads(0)->set_encoding(v1::ENCODING_UNSPECIFIED);
    EXPECT_EQ(refused(req), absl::StatusCode::kInvalidArgument);
  }
  {  // No chunks at all.
    EXPECT_EQ(refused(PushReq(0)), absl::StatusCode::kInvalidArgument);
  }
  {  // A chunk past the tensor's end.
    v1::PushRequest req = PushReq(0);
    AddChunk(req.mutable_grads(), here[0], 1.0f, 0);
    AddChunk(req.mutable_grads(), layout_.NumChunks(kNumel), 1.0f, 0);
    EXPECT_EQ(refused(req), absl::StatusCode::kOutOfRange);
  }
  {  // An unknown tensor, then an unknown namespace.
    v1::PushRequest req = PushReq(0);
    AddChunk(req.mutable_grads(), here[0], 1.0f, 0);
    AddChunk(req.mutable_grads(), here[1], 1.0f, 0);
    req.mutable_grads(1)->set_tensor("nope");
    EXPECT_EQ(refused(req), absl::StatusCode::kNotFound);
    req.set_namespace_("nope");
    EXPECT_EQ(refused(req), absl::StatusCode::kNotFound);
  }
  {  // No layout.
    v1::PushRequest req = PushReq(0);
    AddChunk(req.mutable_grads(), here[0], 1.0f, 0);
    req.clear_layout();
    EXPECT_EQ(refused(req), absl::StatusCode::kInvalidArgument);
  }
  for (uint32_t c : here) {
    EXPECT_EQ(PullOne(0, c),
              std::make_pair(std::vector<float>(kChunkElems, kInit),
                             uint64_t{0}));
  }
  EXPECT_EQ(stores_[0]->updates_applied(), 0u);
}

TEST_F(ChunkStoreTest, SnapshotThenReplaceGivesTheSameState) {
  DeclareEverywhere();
  const std::vector<uint32_t> here = Here(0);
  for (int step = 0; step < 3; ++step) {
    v1::PushRequest push = PushReq(0);
    AddChunk(push.mutable_grads(), here[0], 1.0f + step, step);
    v1::PushResponse resp;
    ASSERT_OK(stores_[0]->Push(push, &resp));
  }
  v1::SetConfigRequest lr;
  lr.set_namespace_("job");
  lr.mutable_optimizer()->set_learning_rate(0.05f);
  v1::SetConfigResponse set;
  ASSERT_OK(stores_[0]->SetConfig(lr, &set));
  v1::ReportEvaluationRequest eval;
  eval.set_namespace_("job");
  eval.mutable_evaluation()->set_accuracy(0.5);
  ASSERT_OK(stores_[0]->ReportEvaluation(eval));

  const ShardSnapshot snapshot = stores_[0]->Snapshot();
  EXPECT_EQ(snapshot.updates_applied, 3u);
  EXPECT_EQ(snapshot.chunks.size(), here.size());

  std::unique_ptr<ChunkStore> fresh = NewStore(0);
  ASSERT_OK(fresh->Replace(snapshot));
  EXPECT_EQ(fresh->updates_applied(), 3u);
  v1::StatusResponse a, b;
  stores_[0]->Describe(&a);
  fresh->Describe(&b);
  EXPECT_EQ(a.SerializeAsString(), b.SerializeAsString());
  for (uint32_t c : here) {
    EXPECT_EQ(PullFrom(*fresh, 0, c), PullOne(0, c)) << "chunk " << c;
  }
  // The declared config survives too: a Declare with it is still accepted,
  // and answers the config in force.
  v1::DeclareResponse resp;
  EXPECT_OK(fresh->Declare(DeclareReq(0), &resp));
  EXPECT_FLOAT_EQ(resp.config().optimizer().learning_rate(), 0.05f);
}

TEST_F(ChunkStoreTest, ReplaceWithABadSnapshotChangesNothing) {
  DeclareEverywhere();
  const ShardSnapshot good = stores_[0]->Snapshot();
  std::unique_ptr<ChunkStore> target = NewStore(0);
  v1::DeclareResponse resp;
  ASSERT_OK(target->Declare(DeclareReq(0, "keep"), &resp));
  v1::StatusResponse before;
  target->Describe(&before);

  ShardSnapshot missing = good;
  missing.chunks.pop_back();
  EXPECT_EQ(target->Replace(missing).code(), absl::StatusCode::kDataLoss);

  ShardSnapshot twice = good;
  twice.chunks.push_back(twice.chunks.front());
  EXPECT_EQ(target->Replace(twice).code(), absl::StatusCode::kDataLoss);

  ShardSnapshot short_values = good;
  short_values.chunks[0].mutable_values()->resize(4);
  EXPECT_EQ(target->Replace(short_values).code(), absl::StatusCode::kDataLoss);

  // Records this shard cannot take are damage too (DATA_LOSS, so
  // LoadNewest falls back to an older checkpoint), not INVALID_ARGUMENT:
  // a config NormalizeConfig refuses, a shape NumElements refuses (found by
  // tests/fuzz/fuzz_checkpoint.cc).
  ShardSnapshot bad_config = good;
  bad_config.namespaces[0].mutable_config()->mutable_optimizer()
      ->set_learning_rate(-1);
  EXPECT_EQ(target->Replace(bad_config).code(), absl::StatusCode::kDataLoss);
  ShardSnapshot bad_declared = good;
  bad_declared.namespaces[0].mutable_declared_config()->mutable_optimizer()
      ->set_kind(v1::OPTIMIZER_UNSPECIFIED);
  EXPECT_EQ(target->Replace(bad_declared).code(), absl::StatusCode::kDataLoss);
  ShardSnapshot bad_shape = good;
  bad_shape.namespaces[0].mutable_tensors(0)->set_shape(0, -3);
  EXPECT_EQ(target->Replace(bad_shape).code(), absl::StatusCode::kDataLoss);

  // Shard 1's state on shard 0.
  EXPECT_EQ(target->Replace(stores_[1]->Snapshot()).code(),
            absl::StatusCode::kFailedPrecondition);

  v1::StatusResponse after;
  target->Describe(&after);
  EXPECT_EQ(before.SerializeAsString(), after.SerializeAsString());
}

TEST_F(ChunkStoreTest, SetConfigChangesLaterUpdatesOnly) {
  DeclareEverywhere();
  const uint32_t c = Here(0)[0];
  v1::SetConfigRequest req;
  req.set_namespace_("job");
  req.mutable_optimizer()->set_learning_rate(0.25f);
  v1::SetConfigResponse resp;
  ASSERT_OK(stores_[0]->SetConfig(req, &resp));
  EXPECT_FLOAT_EQ(resp.previous().optimizer().learning_rate(), 0.1f);
  EXPECT_FLOAT_EQ(resp.config().optimizer().learning_rate(), 0.25f);
  EXPECT_EQ(PullOne(0, c).second, 0u);  // values untouched

  v1::PushRequest push = PushReq(0);
  AddChunk(push.mutable_grads(), c, 1.0f, 0);
  v1::PushResponse pushed;
  ASSERT_OK(stores_[0]->Push(push, &pushed));
  EXPECT_EQ(PullOne(0, c).first,
            std::vector<float>(kChunkElems, kInit - 0.25f * 1.0f));

  // Both the declared config and the current one are accepted by Declare.
  v1::DeclareResponse declared;
  EXPECT_OK(stores_[0]->Declare(DeclareReq(0), &declared));
  EXPECT_OK(stores_[0]->Declare(DeclareReq(0, "w", 0.25f), &declared));
}

TEST_F(ChunkStoreTest, SetConfigRefusalsChangeNothing) {
  DeclareEverywhere();
  v1::SetConfigResponse resp;
  v1::SetConfigRequest kind;
  kind.set_namespace_("job");
  kind.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
  EXPECT_EQ(stores_[0]->SetConfig(kind, &resp).code(),
            absl::StatusCode::kFailedPrecondition);

  v1::SetConfigRequest unused;  // SGD has no momentum
  unused.set_namespace_("job");
  unused.mutable_optimizer()->set_momentum(0.5f);
  EXPECT_EQ(stores_[0]->SetConfig(unused, &resp).code(),
            absl::StatusCode::kInvalidArgument);

  v1::SetConfigRequest negative;
  negative.set_namespace_("job");
  negative.mutable_optimizer()->set_learning_rate(-1.0f);
  EXPECT_EQ(stores_[0]->SetConfig(negative, &resp).code(),
            absl::StatusCode::kInvalidArgument);

  v1::SetConfigRequest unknown;
  unknown.set_namespace_("nope");
  unknown.mutable_optimizer()->set_learning_rate(0.5f);
  EXPECT_EQ(stores_[0]->SetConfig(unknown, &resp).code(),
            absl::StatusCode::kNotFound);

  v1::StatusResponse status;
  stores_[0]->Describe(&status);
  ASSERT_EQ(status.namespaces_size(), 1);
  EXPECT_EQ(status.namespaces(0).config().optimizer().kind(),
            v1::OPTIMIZER_SGD);
  EXPECT_FLOAT_EQ(status.namespaces(0).config().optimizer().learning_rate(),
                  0.1f);
}

TEST_F(ChunkStoreTest, DrainEndsEveryJobAndKeepsAnEarlierReason) {
  v1::DeclareResponse resp;
  ASSERT_OK(stores_[0]->Declare(DeclareReq(0), &resp));
  v1::DeclareRequest other = DeclareReq(0);
  other.set_namespace_("another");
  ASSERT_OK(stores_[0]->Declare(other, &resp));
  v1::ReportEvaluationRequest done;
  done.set_namespace_("job");
  done.mutable_evaluation()->set_accuracy(0.9);
  done.mutable_evaluation()->set_done(true);
  done.mutable_evaluation()->set_reason("target reached");
  ASSERT_OK(stores_[0]->ReportEvaluation(done));

  EXPECT_FALSE(stores_[0]->draining());
  EXPECT_FALSE(stores_[0]->JobDone("another"));
  EXPECT_EQ(stores_[0]->Drain("drained", 1234),
            (std::vector<std::string>{"another", "job"}));
  EXPECT_TRUE(stores_[0]->draining());
  EXPECT_TRUE(stores_[0]->JobDone("another"));
  EXPECT_TRUE(stores_[0]->JobDone("job"));
  EXPECT_FALSE(stores_[0]->JobDone("unknown"));

  // An evaluator that reports on after the drain cannot undo it.
  v1::ReportEvaluationRequest later;
  later.set_namespace_("another");
  later.mutable_evaluation()->set_accuracy(0.3);
  ASSERT_OK(stores_[0]->ReportEvaluation(later));
  EXPECT_TRUE(stores_[0]->JobDone("another"));

  v1::StatusResponse status;
  stores_[0]->Describe(&status);
  EXPECT_TRUE(status.draining());
  for (const v1::NamespaceStatus& ns : status.namespaces()) {
    EXPECT_TRUE(ns.last_evaluation().done()) << ns.name();
    EXPECT_EQ(ns.last_evaluation().reason(),
              ns.name() == "job" ? "target reached" : "drained")
        << ns.name();
  }
}

TEST_F(ChunkStoreTest, ReportEvaluationChecksItsInput) {
  DeclareEverywhere();
  v1::ReportEvaluationRequest req;
  req.set_namespace_("job");
  req.mutable_evaluation()->set_accuracy(1.5);
  EXPECT_EQ(stores_[0]->ReportEvaluation(req).code(),
            absl::StatusCode::kInvalidArgument);
  req.mutable_evaluation()->set_accuracy(0.5);
  req.mutable_evaluation()->set_loss(std::nan(""));
  EXPECT_EQ(stores_[0]->ReportEvaluation(req).code(),
            absl::StatusCode::kInvalidArgument);
  req.mutable_evaluation()->set_loss(0.1);
  req.set_namespace_("nope");
  EXPECT_EQ(stores_[0]->ReportEvaluation(req).code(),
            absl::StatusCode::kNotFound);
  v1::StatusResponse status;
  stores_[0]->Describe(&status);
  EXPECT_FALSE(status.namespaces(0).has_last_evaluation());
}

// The namespaces `store` describes, by name.
std::vector<std::string> NamespacesOf(const ChunkStore& store) {
  v1::StatusResponse status;
  store.Describe(&status);
  std::vector<std::string> out;
  for (const v1::NamespaceStatus& n : status.namespaces()) {
    out.push_back(n.name());
  }
  return out;
}

TEST_F(ChunkStoreTest, DropNamespaceFreesItAndADeclareStartsFresh) {
  DeclareEverywhere();
  v1::DeclareRequest other = DeclareReq(0);
  other.set_namespace_("other");
  v1::DeclareResponse declared;
  ASSERT_OK(stores_[0]->Declare(other, &declared));
  // "job" trained a step and was evaluated; "other" trained too.
  const uint32_t c = Here(0)[0];
  v1::PushRequest push = PushReq(0);
  AddChunk(push.mutable_grads(), c, 1.0f, 0);
  v1::PushResponse pushed;
  ASSERT_OK(stores_[0]->Push(push, &pushed));
  push.set_namespace_("other");
  ASSERT_OK(stores_[0]->Push(push, &pushed));
  v1::ReportEvaluationRequest eval;
  eval.set_namespace_("job");
  eval.mutable_evaluation()->set_accuracy(0.5);
  eval.mutable_evaluation()->set_done(true);
  ASSERT_OK(stores_[0]->ReportEvaluation(eval));
  const uint64_t updates = stores_[0]->updates_applied();

  v1::DropNamespaceResponse dropped;
  ASSERT_OK(stores_[0]->DropNamespace("job", &dropped));
  EXPECT_EQ(dropped.chunks_freed(), Here(0).size());
  EXPECT_EQ(dropped.elements_freed(), Here(0).size() * kChunkElems);
  EXPECT_EQ(NamespacesOf(*stores_[0]), std::vector<std::string>{"other"});
  v1::PullResponse pulled;
  EXPECT_EQ(stores_[0]->Pull(PullReq(0, {c}), &pulled).code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(stores_[0]->JobDone("job"));
  EXPECT_EQ(stores_[0]->updates_applied(), updates);  // a shard-wide count

  // Declared again with another config (refused while it existed): its
  // initial values at version 0, no evaluation.
  ASSERT_OK(stores_[0]->Declare(DeclareReq(0, "w", /*lr=*/0.5f), &declared));
  EXPECT_FLOAT_EQ(declared.config().optimizer().learning_rate(), 0.5f);
  EXPECT_EQ(PullOne(0, c),
            std::make_pair(std::vector<float>(kChunkElems, kInit), uint64_t{0}));
  EXPECT_FALSE(stores_[0]->JobDone("job"));
  v1::StatusResponse status;
  stores_[0]->Describe(&status, /*evaluations=*/true);
  for (const v1::NamespaceStatus& n : status.namespaces()) {
    EXPECT_FALSE(n.has_last_evaluation()) << n.name();
    EXPECT_EQ(n.evaluations_size(), 0) << n.name();
  }
  // The other namespace kept its values and version.
  v1::PullRequest pull_other = PullReq(0, {c});
  pull_other.set_namespace_("other");
  ASSERT_OK(stores_[0]->Pull(pull_other, &pulled));
  EXPECT_EQ(pulled.chunks(0).version(), 1u);
  EXPECT_EQ(Floats(pulled.chunks(0).data()),
            std::vector<float>(kChunkElems, kInit - 0.1f));
  // Shard 1 was not asked: its part is still there.
  EXPECT_EQ(NamespacesOf(*stores_[1]), std::vector<std::string>{"job"});
}

TEST_F(ChunkStoreTest, DropNamespaceGivesItsMemoryBack) {
  // Room for one namespace's values of one shard (8 elements, no slots
  // under SGD) and not two.
  const uint64_t one = Here(0).size() * kChunkElems * sizeof(float);
  auto store = NewStore(0, /*max_memory=*/one + one / 2);
  v1::DeclareResponse declared;
  ASSERT_OK(store->Declare(DeclareReq(0), &declared));
  v1::DeclareRequest other = DeclareReq(0);
  other.set_namespace_("other");
  EXPECT_EQ(store->Declare(other, &declared).code(),
            absl::StatusCode::kResourceExhausted);
  v1::DropNamespaceResponse dropped;
  ASSERT_OK(store->DropNamespace("job", &dropped));
  EXPECT_OK(store->Declare(other, &declared));
}

TEST_F(ChunkStoreTest, DropNamespaceRefusalsChangeNothing) {
  DeclareEverywhere();
  v1::DropNamespaceResponse dropped;
  // "" is not "default" here.
  absl::Status s = stores_[0]->DropNamespace("", &dropped);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("name"));
  EXPECT_EQ(stores_[0]->DropNamespace("bad name", &dropped).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stores_[0]->DropNamespace(std::string(300, 'x'), &dropped).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(stores_[0]->DropNamespace("nope", &dropped).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(stores_[0]->DropNamespace("default", &dropped).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(NamespacesOf(*stores_[0]), std::vector<std::string>{"job"});
  EXPECT_EQ(PullOne(0, Here(0)[0]).second, 0u);
  // Dropped once: a second drop finds nothing.
  ASSERT_OK(stores_[0]->DropNamespace("job", &dropped));
  EXPECT_EQ(stores_[0]->DropNamespace("job", &dropped).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ChunkStoreTest, ACallRememberedBeforeADropIsNotReplayedAfterIt) {
  DeclareEverywhere();
  const uint32_t c = Here(0)[0];
  v1::PushRequest push = PushReq(0);
  push.set_worker_id(7);
  push.set_sequence(1);
  AddChunk(push.mutable_grads(), c, 1.0f, 0);
  v1::PushResponse pushed;
  ASSERT_OK(stores_[0]->Push(push, &pushed));
  v1::DropNamespaceResponse dropped;
  ASSERT_OK(stores_[0]->DropNamespace("job", &dropped));
  v1::DeclareResponse declared;
  ASSERT_OK(stores_[0]->Declare(DeclareReq(0), &declared));
  // A late copy of the call must neither be answered as applied (the fresh
  // namespace never had it) nor applied to the fresh namespace.
  bool replayed = false;
  absl::Status s = stores_[0]->Push(push, &pushed, &replayed);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_FALSE(replayed);
  EXPECT_EQ(PullOne(0, c).second, 0u);
  // The worker's next call goes through.
  push.set_sequence(2);
  ASSERT_OK(stores_[0]->Push(push, &pushed));
  EXPECT_EQ(PullOne(0, c).second, 1u);
}

TEST_F(ChunkStoreTest, PushesRacingADropSeeTheNamespaceOrNotFound) {
  DeclareEverywhere();
  std::atomic<bool> stop{false};
  std::atomic<int> odd{0};
  std::vector<std::thread> pushers;
  for (int t = 0; t < 3; ++t) {
    pushers.emplace_back([&, t] {
      while (!stop.load()) {
        v1::PushRequest push = PushReq(0);
        for (uint32_t c : Here(0)) AddChunk(push.mutable_grads(), c, 0.01f, 0);
        v1::PushResponse pushed;
        v1::PullResponse pulled;
        absl::Status s = t == 2 ? stores_[0]->Pull(PullReq(0, Here(0)), &pulled)
                                : stores_[0]->Push(push, &pushed);
        if (!s.ok() && s.code() != absl::StatusCode::kNotFound) ++odd;
      }
    });
  }
  for (int round = 0; round < 500; ++round) {
    v1::DropNamespaceResponse dropped;
    ASSERT_OK(stores_[0]->DropNamespace("job", &dropped));
    EXPECT_EQ(dropped.chunks_freed(), Here(0).size());
    v1::DeclareResponse declared;
    ASSERT_OK(stores_[0]->Declare(DeclareReq(0), &declared));
  }
  stop = true;
  for (std::thread& t : pushers) t.join();
  EXPECT_EQ(odd.load(), 0);
}

TEST_F(ChunkStoreTest, DeclaresRacingDropsLeaveWholeTensorsOrNone) {
  // A Declare builds its tensors between two checks; a drop in that gap
  // used to leave it inserting fewer tensors than the namespace then lacked
  // (a null tensor, dereferenced: the shard crashed).
  DeclareEverywhere();
  std::atomic<bool> stop{false};
  std::atomic<int> odd{0};
  std::vector<std::thread> declarers;
  for (int t = 0; t < 2; ++t) {
    declarers.emplace_back([&] {
      while (!stop.load()) {
        v1::DeclareResponse declared;
        absl::Status s = stores_[0]->Declare(DeclareReq(0), &declared);
        if (!s.ok() && s.code() != absl::StatusCode::kAborted) ++odd;
        if (s.ok() && declared.chunks_held() != Here(0).size()) ++odd;
      }
    });
  }
  for (int round = 0; round < 500; ++round) {
    v1::DropNamespaceResponse dropped;
    absl::Status s = stores_[0]->DropNamespace("job", &dropped);
    ASSERT_TRUE(s.ok() || s.code() == absl::StatusCode::kNotFound) << s;
    if (s.ok()) EXPECT_EQ(dropped.chunks_freed(), Here(0).size());
  }
  stop = true;
  for (std::thread& t : declarers) t.join();
  EXPECT_EQ(odd.load(), 0);
  // Whatever the last step was, the namespace is whole or absent.
  v1::DeclareResponse declared;
  ASSERT_OK(stores_[0]->Declare(DeclareReq(0), &declared));
  EXPECT_EQ(declared.chunks_held(), Here(0).size());
  EXPECT_EQ(PullOne(0, Here(0)[0]).second, 0u);
}

TEST_F(ChunkStoreTest, EvaluationHistoryKeepsTheLastReportsOldestFirst) {
  DeclareEverywhere();
  v1::ReportEvaluationRequest eval;
  eval.set_namespace_("job");
  const int n = static_cast<int>(ChunkStore::kMaxEvaluations) + 5;
  for (int i = 0; i < n; ++i) {
    eval.mutable_evaluation()->set_time_unix_ms(i);
    eval.mutable_evaluation()->set_loss(1.0 / (i + 1));
    eval.mutable_evaluation()->set_accuracy(0.5);
    ASSERT_OK(stores_[0]->ReportEvaluation(eval));
  }
  v1::StatusResponse plain;
  stores_[0]->Describe(&plain);
  ASSERT_EQ(plain.namespaces_size(), 1);
  EXPECT_EQ(plain.namespaces(0).evaluations_size(), 0);  // not asked for
  EXPECT_EQ(plain.namespaces(0).last_evaluation().time_unix_ms(), n - 1);
  v1::StatusResponse status;
  stores_[0]->Describe(&status, /*evaluations=*/true);
  const auto& history = status.namespaces(0).evaluations();
  ASSERT_EQ(history.size(), static_cast<int>(ChunkStore::kMaxEvaluations));
  // The 5 oldest were forgotten; the rest in the order reported.
  for (int i = 0; i < history.size(); ++i) {
    ASSERT_EQ(history[i].time_unix_ms(), i + 5) << i;
  }
  // A report after the job ended is kept done, in the history as well.
  eval.mutable_evaluation()->set_done(true);
  eval.mutable_evaluation()->set_reason("target reached");
  ASSERT_OK(stores_[0]->ReportEvaluation(eval));
  eval.mutable_evaluation()->set_done(false);
  eval.mutable_evaluation()->set_reason("");
  ASSERT_OK(stores_[0]->ReportEvaluation(eval));
  status.Clear();
  stores_[0]->Describe(&status, /*evaluations=*/true);
  const v1::NamespaceStatus& job = status.namespaces(0);
  const v1::Evaluation& last = job.evaluations(job.evaluations_size() - 1);
  EXPECT_TRUE(last.done());
  EXPECT_EQ(last.reason(), "target reached");
}

}  // namespace
}  // namespace pskit
