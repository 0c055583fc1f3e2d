// Consistency's clocks and rounds (server/consistency.h) on a real
// ChunkStore, with a fake clock and Waiters that record their answers: no
// gRPC, no threads but the class's own.
#include "server/consistency.h"

#include <functional>
#include <memory>
#include <vector>

#include "common/encoding.h"
#include "gtest/gtest.h"
#include "tests/testing/cluster.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

constexpr uint32_t kChunkElems = 4;

// One answer a Waiter got.
struct Answer {
  bool released = false;
  HoldOutcome outcome;
};

class ConsistencyTest : public ::testing::Test {
 protected:
  ConsistencyTest()
      : layout_(Layout::Create(1, kChunkElems).value()),
        store_(layout_, 0, /*allow_nonfinite=*/false, 1 << 20, 1 << 30),
        consistency_(&store_, nullptr, &clock_) {}

  void Declare(v1::Consistency kind, uint32_t ssp_bound, uint32_t backup) {
    v1::DeclareRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    *req.mutable_config() = testing::SgdConfig(1.0f);
    req.mutable_config()->set_consistency(kind);
    if (kind == v1::CONSISTENCY_SSP) {
      req.mutable_config()->mutable_staleness()->set_ssp_bound(ssp_bound);
    }
    if (kind == v1::CONSISTENCY_SYNC) {
      req.mutable_config()->mutable_staleness()->set_backup_workers(backup);
    }
    v1::TensorSpec* t = req.add_tensors();
    t->set_name("w");
    t->add_shape(kChunkElems);
    t->mutable_init()->set_kind(v1::INIT_CONSTANT);
    t->mutable_init()->set_value(0.0f);
    v1::DeclareResponse resp;
    ASSERT_OK(store_.Declare(req, &resp));
    EXPECT_EQ(consistency_.ModeFor("job", 1), kind);
  }

  v1::Layout Wire() const {
    v1::Layout l;
    l.set_num_shards(1);
    l.set_chunk_elems(kChunkElems);
    l.set_shard_index(0);
    return l;
  }

  v1::PushRequest PushReq(uint64_t worker, uint64_t pulled_version, float g,
                          uint64_t sequence = 0) const {
    v1::PushRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    req.set_worker_id(worker);
    req.set_sequence(sequence);
    v1::ChunkData* d = req.add_grads();
    d->set_tensor("w");
    d->set_chunk(0);
    d->set_version(pulled_version);
    d->set_encoding(v1::ENCODING_F32);
    std::vector<float> v(kChunkElems, g);
    EncodeFloats(v1::ENCODING_F32, v, d->mutable_data());
    return req;
  }

  v1::PullRequest PullReq(uint64_t worker) const {
    v1::PullRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    req.set_worker_id(worker);
    req.set_encoding(v1::ENCODING_F32);
    v1::ChunkRef* ref = req.add_chunks();
    ref->set_tensor("w");
    ref->set_chunk(0);
    return req;
  }

  Waiter Recorder(std::shared_ptr<Answer> a) {
    return Waiter{[a](HoldOutcome o) {
                    EXPECT_FALSE(a->released) << "answered twice";
                    a->released = true;
                    a->outcome = std::move(o);
                  },
                  {}};
  }

  // The chunk's version and first value.
  std::pair<uint64_t, float> Chunk() {
    v1::PullRequest req = PullReq(0);
    v1::PullResponse resp;
    EXPECT_OK(store_.Pull(req, &resp));
    std::vector<float> v(kChunkElems);
    DecodeFloats(v1::ENCODING_F32, resp.chunks(0).data().data(),
                 absl::MakeSpan(v));
    return {resp.chunks(0).version(), v[0]};
  }

  // SSP: worker `w` pushes (applied now) and its PushPull's values wait.
  std::shared_ptr<Answer> SspPushPull(uint64_t w) {
    v1::PushRequest req = PushReq(w, Chunk().first, 1.0f);
    v1::PushResponse resp;
    EXPECT_OK(store_.Push(req, &resp));
    auto a = std::make_shared<Answer>();
    consistency_.AfterSspPush(req, false, /*holds=*/true, Recorder(a));
    return a;
  }

  std::shared_ptr<Answer> Pull(uint64_t w) {
    auto a = std::make_shared<Answer>();
    consistency_.Pull(PullReq(w), Recorder(a));
    return a;
  }

  std::shared_ptr<Answer> Contribute(const v1::PushRequest& req) {
    auto a = std::make_shared<Answer>();
    consistency_.Contribute(req, Recorder(a));
    return a;
  }

  testing::FakeClock clock_;
  Layout layout_;
  ChunkStore store_;
  Consistency consistency_;
};

TEST_F(ConsistencyTest, SspZeroHoldsTheFastestUntilTheSlowestPushes) {
  Declare(v1::CONSISTENCY_SSP, 0, 0);
  ASSERT_TRUE(Pull(1)->released);  // members at clock 0
  ASSERT_TRUE(Pull(2)->released);
  auto a1 = SspPushPull(1);  // clock 1 > 0 + 0: held
  EXPECT_FALSE(a1->released);
  EXPECT_FALSE(Pull(1)->released);  // a plain pull waits too
  EXPECT_EQ(consistency_.held(), 2u);
  auto a2 = SspPushPull(2);  // level: everyone goes
  EXPECT_TRUE(a2->released);
  EXPECT_TRUE(a1->released);
  EXPECT_OK(a1->outcome.status);
  EXPECT_EQ(consistency_.held(), 0u);
}

TEST_F(ConsistencyTest, SspBoundLetsAWorkerRunAhead) {
  Declare(v1::CONSISTENCY_SSP, 2, 0);
  ASSERT_TRUE(Pull(1)->released);
  ASSERT_TRUE(Pull(2)->released);
  EXPECT_TRUE(SspPushPull(1)->released);  // 1 ahead
  EXPECT_TRUE(SspPushPull(1)->released);  // 2 ahead
  auto third = SspPushPull(1);            // 3 ahead: waits
  EXPECT_FALSE(third->released);
  EXPECT_TRUE(SspPushPull(2)->released);
  EXPECT_TRUE(third->released);
}

TEST_F(ConsistencyTest, AnonymousCallersAreNotMembers) {
  Declare(v1::CONSISTENCY_SSP, 0, 0);
  EXPECT_EQ(consistency_.ModeFor("job", 0), v1::CONSISTENCY_ASYNC);
  ASSERT_TRUE(Pull(1)->released);
  EXPECT_TRUE(SspPushPull(1)->released);  // alone: nobody to wait for
}

TEST_F(ConsistencyTest, AWorkerGoneReleasesThoseHeldForIt) {
  Declare(v1::CONSISTENCY_SSP, 0, 0);
  ASSERT_TRUE(Pull(1)->released);
  ASSERT_TRUE(Pull(2)->released);
  auto held = SspPushPull(1);
  EXPECT_FALSE(held->released);
  consistency_.WorkerGone(2, /*left=*/false);  // lease lapsed: the own thread re-checks
  for (int i = 0; i < 500 && !held->released; ++i) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_TRUE(held->released);
}

TEST_F(ConsistencyTest, SyncAppliesTheMeanOnceWhenEveryMemberPushed) {
  Declare(v1::CONSISTENCY_SYNC, 0, 0);
  ASSERT_TRUE(Pull(1)->released);
  ASSERT_TRUE(Pull(2)->released);
  auto a1 = Contribute(PushReq(1, 0, 1.0f));
  EXPECT_FALSE(a1->released);
  EXPECT_EQ(Chunk().first, 0u);
  EXPECT_FALSE(Pull(1)->released);  // its gradient waits in the round
  auto a2 = Contribute(PushReq(2, 0, 3.0f));
  ASSERT_TRUE(a1->released);
  ASSERT_TRUE(a2->released);
  // One update with the mean (2) at lr 1.
  EXPECT_EQ(Chunk(), std::make_pair(uint64_t{1}, -2.0f));
  ASSERT_EQ(a1->outcome.acks.size(), 1u);
  EXPECT_EQ(a1->outcome.acks[0].version(), 1u);
  EXPECT_FALSE(a1->outcome.acks[0].dropped());
  EXPECT_EQ(consistency_.held(), 0u);
}

TEST_F(ConsistencyTest, SyncBackupWorkerDropsTheStraggler) {
  Declare(v1::CONSISTENCY_SYNC, 0, 1);
  for (uint64_t w : {1, 2, 3}) ASSERT_TRUE(Pull(w)->released);
  auto a1 = Contribute(PushReq(1, 0, 1.0f));
  auto a2 = Contribute(PushReq(2, 0, 1.0f));  // 2 of 3: applied
  EXPECT_TRUE(a1->released);
  EXPECT_TRUE(a2->released);
  auto late = Contribute(PushReq(3, 0, 100.0f));
  ASSERT_TRUE(late->released);
  ASSERT_EQ(late->outcome.acks.size(), 1u);
  EXPECT_TRUE(late->outcome.acks[0].dropped());
  EXPECT_EQ(consistency_.dropped(), 1u);
  EXPECT_EQ(Chunk(), std::make_pair(uint64_t{1}, -1.0f));
}

TEST_F(ConsistencyTest, SyncRetriedCopyWaitsThenReplaysTheAcks) {
  Declare(v1::CONSISTENCY_SYNC, 0, 0);
  ASSERT_TRUE(Pull(1)->released);
  ASSERT_TRUE(Pull(2)->released);
  auto first = Contribute(PushReq(1, 0, 1.0f, /*sequence=*/7));
  auto copy = Contribute(PushReq(1, 0, 1.0f, /*sequence=*/7));
  EXPECT_TRUE(first->released);  // superseded
  EXPECT_FALSE(first->outcome.status.ok());
  EXPECT_FALSE(copy->released);  // still waits for the round
  auto a2 = Contribute(PushReq(2, 0, 3.0f));
  ASSERT_TRUE(copy->released);
  EXPECT_OK(copy->outcome.status);
  EXPECT_EQ(Chunk(), std::make_pair(uint64_t{1}, -2.0f));  // once
  auto again = Contribute(PushReq(1, 0, 1.0f, /*sequence=*/7));
  ASSERT_TRUE(again->released);
  EXPECT_TRUE(again->outcome.replayed);
  EXPECT_EQ(Chunk().first, 1u);
}

// The usual retry: the first copy's client cancels (its connection
// dropped), then sends the same call again. The copy takes the wait over,
// is answered once its round applies, and its gradient counts once.
TEST_F(ConsistencyTest, SyncRetryAfterACancelledCopyIsAnsweredAndCountedOnce) {
  Declare(v1::CONSISTENCY_SYNC, 0, 0);
  ASSERT_TRUE(Pull(1)->released);
  ASSERT_TRUE(Pull(2)->released);
  auto first = std::make_shared<Answer>();
  std::function<void()> cancel_first;
  Waiter w = Recorder(first);
  w.on_cancel = [&cancel_first](std::function<void()> hook) {
    cancel_first = std::move(hook);
  };
  consistency_.Contribute(PushReq(1, 0, 1.0f, /*sequence=*/9), std::move(w));
  ASSERT_TRUE(cancel_first);
  cancel_first();
  ASSERT_TRUE(first->released);
  EXPECT_EQ(first->outcome.status.code(), absl::StatusCode::kCancelled);
  auto copy = Contribute(PushReq(1, 0, 1.0f, /*sequence=*/9));
  EXPECT_FALSE(copy->released);  // its round still waits for worker 2
  auto a2 = Contribute(PushReq(2, 0, 3.0f));
  ASSERT_TRUE(copy->released);
  EXPECT_OK(copy->outcome.status);
  ASSERT_TRUE(a2->released);
  // The mean of 1 and 3, once: worker 1's gradient was not added twice.
  EXPECT_EQ(Chunk(), std::make_pair(uint64_t{1}, -2.0f));
  EXPECT_EQ(consistency_.held(), 0u);
}

// A call that passed the lease check just before its worker lapsed does
// not make the worker a member again: no round would ever wait less.
TEST_F(ConsistencyTest, ALapsedWorkersRacingPullJoinsNothing) {
  Declare(v1::CONSISTENCY_SYNC, 0, 0);
  ASSERT_TRUE(Pull(1)->released);
  consistency_.WorkerGone(2, /*left=*/false);
  ASSERT_TRUE(Pull(2)->released);
  auto a1 = Contribute(PushReq(1, 0, 1.0f));
  EXPECT_TRUE(a1->released) << "the round waited for a lapsed worker";
  consistency_.WorkerLive(2);  // registered again: it may join
  ASSERT_TRUE(Pull(2)->released);
  auto b1 = Contribute(PushReq(1, 1, 1.0f));
  EXPECT_FALSE(b1->released);
  auto b2 = Contribute(PushReq(2, 1, 1.0f));
  EXPECT_TRUE(b1->released);
  EXPECT_TRUE(b2->released);
}

TEST_F(ConsistencyTest, BackupWorkersMustBeFewerThanMembers) {
  Declare(v1::CONSISTENCY_SYNC, 0, 0);
  ASSERT_TRUE(Pull(1)->released);
  ASSERT_TRUE(Pull(2)->released);
  v1::NamespaceConfig c;
  c.set_consistency(v1::CONSISTENCY_SYNC);
  c.mutable_staleness()->set_backup_workers(2);
  EXPECT_EQ(consistency_.CheckBackupWorkers("job", c, 0).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_OK(consistency_.CheckBackupWorkers("job", c, 1));  // a 3rd declares
  c.mutable_staleness()->set_backup_workers(1);
  EXPECT_OK(consistency_.CheckBackupWorkers("job", c, 0));
}

TEST_F(ConsistencyTest, ShutdownAnswersHeldCallsUnavailable) {
  Declare(v1::CONSISTENCY_SYNC, 0, 0);
  ASSERT_TRUE(Pull(1)->released);
  ASSERT_TRUE(Pull(2)->released);
  auto a1 = Contribute(PushReq(1, 0, 1.0f));
  EXPECT_FALSE(a1->released);
  consistency_.Shutdown();
  ASSERT_TRUE(a1->released);
  EXPECT_EQ(a1->outcome.status.code(), absl::StatusCode::kUnavailable);
  auto after = Pull(2);
  ASSERT_TRUE(after->released);
  EXPECT_EQ(after->outcome.status.code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace pskit
