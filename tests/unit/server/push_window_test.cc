// Exactly-once pushes on one shard, without gRPC: a (worker, sequence)
// applied once whatever the copies (Push, PushPull, Exchange), copies that
// arrive at once, the window's eviction and its too-old refusal, a sequence
// reused for other chunks, windows freed at Leave and lapse, and the window
// carried through Snapshot/Replace and a checkpoint (whole and in part).
// Anonymous calls (worker 0 or sequence 0) are applied every time.
#include "server/push_window.h"

#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/encoding.h"
#include "common/layout.h"
#include "gtest/gtest.h"
#include "server/checkpoint_store.h"
#include "server/chunk_store.h"
#include "server/worker_registry.h"
#include "tests/testing/cluster.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

// One shard, chunks of 4 elements: a 16-element tensor "w" has 4 chunks.
constexpr uint32_t kChunkElems = 4;
constexpr int64_t kNumel = 16;
constexpr float kInit = 0.5f;
constexpr float kLr = 0.5f;
constexpr uint64_t kWorker = 42;

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

class PushWindowTest : public ::testing::Test {
 protected:
  PushWindowTest() : layout_(Layout::Create(1, kChunkElems).value()) {
    store_ = NewStore();
    Declare(*store_);
  }

  std::unique_ptr<ChunkStore> NewStore(size_t calls_per_worker = 1024) {
    PushWindowOptions w;
    w.calls_per_worker = calls_per_worker;
    w.clock = &clock_;
    return std::make_unique<ChunkStore>(layout_, 0, /*allow_nonfinite=*/false,
                                        /*max_message_bytes=*/1 << 20,
                                        /*max_memory_bytes=*/1 << 30, w);
  }

  v1::Layout Wire() const {
    v1::Layout l;
    l.set_num_shards(1);
    l.set_chunk_elems(kChunkElems);
    l.set_shard_index(0);
    return l;
  }

  void Declare(ChunkStore& store) {
    v1::DeclareRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    *req.mutable_config() = testing::SgdConfig(kLr);
    v1::TensorSpec* t = req.add_tensors();
    t->set_name("w");
    t->add_shape(kNumel);
    t->mutable_init()->set_kind(v1::INIT_CONSTANT);
    t->mutable_init()->set_value(kInit);
    v1::DeclareResponse resp;
    ASSERT_OK(store.Declare(req, &resp));
  }

  // A push of gradient `g` to each of `chunks` by (worker, seq).
  v1::PushRequest PushReq(uint64_t worker, uint64_t seq,
                          std::vector<uint32_t> chunks, float g = 1.0f) const {
    v1::PushRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    req.set_worker_id(worker);
    req.set_sequence(seq);
    req.set_return_encoding(v1::ENCODING_F32);
    for (uint32_t c : chunks) {
      v1::ChunkData* d = req.add_grads();
      d->set_tensor("w");
      d->set_chunk(c);
      d->set_encoding(v1::ENCODING_F32);
      d->set_data(F32(std::vector<float>(kChunkElems, g)));
    }
    return req;
  }

  v1::ExchangeRequest ExchangeReq(uint64_t worker, uint64_t seq, uint32_t chunk,
                                  float x) const {
    v1::ExchangeRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    req.set_worker_id(worker);
    req.set_sequence(seq);
    req.set_alpha(0.5f);
    v1::ChunkData* d = req.add_params();
    d->set_tensor("w");
    d->set_chunk(chunk);
    d->set_encoding(v1::ENCODING_F32);
    d->set_data(F32(std::vector<float>(kChunkElems, x)));
    return req;
  }

  // Chunk `chunk`'s values and version in `store`.
  std::pair<std::vector<float>, uint64_t> Pull(ChunkStore& store,
                                               uint32_t chunk) const {
    v1::PullRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    req.set_encoding(v1::ENCODING_F32);
    v1::ChunkRef* r = req.add_chunks();
    r->set_tensor("w");
    r->set_chunk(chunk);
    v1::PullResponse resp;
    EXPECT_OK(store.Pull(req, &resp));
    if (resp.chunks_size() != 1) return {};
    return {Floats(resp.chunks(0).data()), resp.chunks(0).version()};
  }

  // The value of every element after `n` SGD steps of gradient 1.
  static std::vector<float> After(int n) {
    return std::vector<float>(kChunkElems, kInit - n * kLr * 1.0f);
  }

  testing::FakeClock clock_;
  Layout layout_;
  std::unique_ptr<ChunkStore> store_;
};

TEST_F(PushWindowTest, SameWorkerAndSequenceTwiceIsAppliedOnceWithTheSameAcks) {
  const v1::PushRequest push = PushReq(kWorker, 7, {0, 1});
  v1::PushResponse first, again;
  bool replayed = true;
  ASSERT_OK(store_->Push(push, &first, &replayed));
  EXPECT_FALSE(replayed);
  ASSERT_OK(store_->Push(push, &again, &replayed));
  EXPECT_TRUE(replayed);
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  ASSERT_EQ(again.acks_size(), 2);
  EXPECT_EQ(again.acks(0).version(), 1u);
  EXPECT_EQ(Pull(*store_, 0), std::make_pair(After(1), uint64_t{1}));
  EXPECT_EQ(Pull(*store_, 1), std::make_pair(After(1), uint64_t{1}));
  EXPECT_EQ(store_->updates_applied(), 2u);
  EXPECT_EQ(store_->push_window().retries_answered(), 1u);

  // The next sequence is a new call: applied.
  v1::PushResponse next;
  ASSERT_OK(store_->Push(PushReq(kWorker, 8, {0, 1}), &next));
  EXPECT_EQ(next.acks(0).version(), 2u);
  EXPECT_EQ(Pull(*store_, 0).first, After(2));
}

TEST_F(PushWindowTest, AnonymousOrUnnumberedCallsAreAppliedEveryTime) {
  // What worker 0 (and a client that sends no sequence) gives up: a copy
  // is applied again.
  for (const auto& [worker, seq] :
       {std::pair<uint64_t, uint64_t>{0, 5}, {kWorker, 0}}) {
    v1::PushResponse resp;
    ASSERT_OK(store_->Push(PushReq(worker, seq, {2}), &resp));
    ASSERT_OK(store_->Push(PushReq(worker, seq, {2}), &resp));
  }
  EXPECT_EQ(Pull(*store_, 2), std::make_pair(After(4), uint64_t{4}));
  EXPECT_EQ(store_->push_window().retries_answered(), 0u);
}

TEST_F(PushWindowTest, PushPullRetryAnswersTheFirstAcksAndTheValuesNow) {
  v1::PushPullResponse first, again;
  ASSERT_OK(store_->PushPull(PushReq(kWorker, 1, {0}), &first));
  v1::PushResponse other;
  ASSERT_OK(store_->Push(PushReq(kWorker + 1, 1, {0}), &other));  // another worker
  bool replayed = false;
  ASSERT_OK(store_->PushPull(PushReq(kWorker, 1, {0}), &again, &replayed));
  EXPECT_TRUE(replayed);
  ASSERT_EQ(again.acks_size(), 1);
  EXPECT_EQ(again.acks(0).SerializeAsString(), first.acks(0).SerializeAsString());
  ASSERT_EQ(again.chunks_size(), 1);
  EXPECT_EQ(again.chunks(0).version(), 2u);
  EXPECT_EQ(Floats(again.chunks(0).data()), After(2));
  EXPECT_EQ(Pull(*store_, 0), std::make_pair(After(2), uint64_t{2}));
}

TEST_F(PushWindowTest, ExchangeRetryAnswersTheFirstDiffs) {
  v1::ExchangeResponse first, again;
  ASSERT_OK(store_->Exchange(ExchangeReq(kWorker, 3, 1, 1.5f), &first));
  // e = 0.5 * (1.5 - 0.5) = 0.5; the centre moves to 1.0, once.
  ASSERT_EQ(first.diffs_size(), 1);
  EXPECT_EQ(Floats(first.diffs(0).data()), std::vector<float>(kChunkElems, 0.5f));
  bool replayed = false;
  ASSERT_OK(store_->Exchange(ExchangeReq(kWorker, 3, 1, 1.5f), &again, &replayed));
  EXPECT_TRUE(replayed);
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(Pull(*store_, 1),
            std::make_pair(std::vector<float>(kChunkElems, 1.0f), uint64_t{1}));

  // A sequence used by a Push cannot come back as an Exchange.
  v1::PushResponse push;
  ASSERT_OK(store_->Push(PushReq(kWorker, 4, {1}), &push));
  EXPECT_EQ(store_->Exchange(ExchangeReq(kWorker, 4, 1, 1.5f), &again).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PushWindowTest, ASequenceReusedForOtherChunksIsRefused) {
  v1::PushResponse resp;
  ASSERT_OK(store_->Push(PushReq(kWorker, 9, {0}), &resp));
  const absl::Status s = store_->Push(PushReq(kWorker, 9, {1}), &resp);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("reused sequence 9"), std::string::npos) << s;
  EXPECT_EQ(Pull(*store_, 1).second, 0u);
}

TEST_F(PushWindowTest, ConcurrentCopiesApplyOnce) {
  const v1::PushRequest push = PushReq(kWorker, 11, {0, 1, 2, 3});
  constexpr int kCopies = 8;
  std::vector<v1::PushResponse> answers(kCopies);
  std::vector<absl::Status> results(kCopies);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCopies; ++i) {
    threads.emplace_back(
        [&, i] { results[i] = store_->Push(push, &answers[i]); });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kCopies; ++i) {
    ASSERT_OK(results[i]);
    EXPECT_EQ(answers[i].SerializeAsString(), answers[0].SerializeAsString());
  }
  for (uint32_t c = 0; c < 4; ++c) {
    EXPECT_EQ(Pull(*store_, c), std::make_pair(After(1), uint64_t{1}));
  }
  EXPECT_EQ(store_->push_window().retries_answered(), kCopies - 1u);
}

TEST_F(PushWindowTest, ACopyArrivingWhileTheFirstIsAppliedWaitsForItsAnswer) {
  // The interleaving fixed by hand: the first copy has begun and not
  // finished when the second calls Begin.
  PushWindow window{PushWindowOptions{}};
  const v1::PushRequest push = PushReq(kWorker, 5, {0});
  ASSERT_OK_AND_ASSIGN(PushWindow::Ticket first,
                       window.Begin(kWorker, 5, "job", false, push.grads()));
  EXPECT_FALSE(first.replay());
  absl::StatusOr<PushWindow::Ticket> second = absl::UnknownError("not run");
  std::thread copy([&] {
    second = window.Begin(kWorker, 5, "job", false, push.grads());
  });
  v1::ChunkAck ack;
  ack.set_version(17);
  ack.set_staleness(3);
  window.Record(first, 0, ack, nullptr);
  window.Finish(first);
  copy.join();
  ASSERT_OK(second);
  EXPECT_TRUE(second->replay());
  v1::ChunkAck got;
  ASSERT_TRUE(second->Applied(0, &got, nullptr));
  EXPECT_EQ(got.SerializeAsString(), ack.SerializeAsString());

  // An abandoned first copy (it failed before applying) leaves the call
  // new for the next copy.
  ASSERT_OK_AND_ASSIGN(PushWindow::Ticket third,
                       window.Begin(kWorker, 6, "job", false, push.grads()));
  window.Abandon(third);
  ASSERT_OK_AND_ASSIGN(PushWindow::Ticket fourth,
                       window.Begin(kWorker, 6, "job", false, push.grads()));
  EXPECT_FALSE(fourth.replay());
  EXPECT_FALSE(fourth.Applied(0, &got, nullptr));
  window.Finish(fourth);
}

TEST_F(PushWindowTest, OldestCallsLeaveTheWindowAndTheirCopiesAreRefused) {
  store_ = NewStore(/*calls_per_worker=*/2);
  Declare(*store_);
  v1::PushResponse resp;
  for (uint64_t seq : {10, 20, 30}) {
    ASSERT_OK(store_->Push(PushReq(kWorker, seq, {0}), &resp));
  }
  // 10 left the window: a copy of it, or of anything at or below it not
  // remembered, is refused rather than maybe applied twice.
  for (uint64_t seq : {10, 5}) {
    const absl::Status s = store_->Push(PushReq(kWorker, seq, {0}), &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find(absl::StrCat("worker ", kWorker, " sent sequence ",
                                            seq)),
              std::string::npos)
        << s;
  }
  EXPECT_EQ(store_->push_window().too_old(), 2u);
  // 20 and 30 are remembered; 15 and 40 are new.
  resp.Clear();
  ASSERT_OK(store_->Push(PushReq(kWorker, 30, {0}), &resp));
  EXPECT_EQ(resp.acks(0).version(), 3u);
  ASSERT_OK(store_->Push(PushReq(kWorker, 15, {0}), &resp));
  ASSERT_OK(store_->Push(PushReq(kWorker, 40, {0}), &resp));
  EXPECT_EQ(Pull(*store_, 0), std::make_pair(After(5), uint64_t{5}));
  EXPECT_EQ(store_->push_window().calls(), 2u);
}

// What ps-server wires between its registry and the window (server.cc).
WorkerListener ListenerFor(PushWindow* window) {
  WorkerListener listener;
  listener.live = [window](uint64_t id) { window->Adopt(id); };
  listener.gone = [window](uint64_t id, bool left) {
    if (left) {
      window->DropWorker(id);
    } else {
      window->Orphan(id);
    }
  };
  return listener;
}

TEST_F(PushWindowTest, AWorkersWindowIsFreedWhenItLeavesOrItsLeaseLapses) {
  PushWindow& window = store_->push_window();
  WorkerRegistry registry(&clock_, absl::Seconds(10), ListenerFor(&window));
  const uint64_t a = registry.Register(0, "a").value();
  const uint64_t b = registry.Register(0, "b").value();
  v1::PushResponse resp;
  ASSERT_OK(store_->Push(PushReq(a, 1, {0}), &resp));
  ASSERT_OK(store_->Push(PushReq(b, 1, {0}), &resp));
  EXPECT_EQ(window.workers(), 2u);

  ASSERT_OK(registry.Leave(a));
  EXPECT_EQ(window.workers(), 1u);
  clock_.Advance(absl::Seconds(11));
  EXPECT_EQ(registry.LiveCount(), 0u);  // b lapsed
  // b's window waits adopt_within: b may re-register and resend a call
  // whose answer it lost, which must not apply twice.
  EXPECT_EQ(window.workers(), 1u);
  clock_.Advance(PushWindowOptions{}.adopt_within + absl::Seconds(1));
  (void)window.Snapshot();  // sweeps windows nobody came back for
  EXPECT_EQ(window.workers(), 0u);
  EXPECT_EQ(window.calls(), 0u);
}

TEST_F(PushWindowTest, AWorkerWhoseLeaseLapsedResendsACallAndItAppliesOnce) {
  PushWindow& window = store_->push_window();
  WorkerRegistry registry(&clock_, absl::Seconds(10), ListenerFor(&window));
  const uint64_t b = registry.Register(0, "b").value();
  v1::PushResponse first;
  ASSERT_OK(store_->Push(PushReq(b, 1, {0}), &first));
  clock_.Advance(absl::Seconds(11));
  EXPECT_EQ(registry.LiveCount(), 0u);  // b lapsed, its answer lost
  ASSERT_EQ(registry.Register(b, "b").value(), b);
  v1::PushResponse again;
  ASSERT_OK(store_->Push(PushReq(b, 1, {0}), &again));
  EXPECT_EQ(again.acks(0).version(), first.acks(0).version());
  EXPECT_EQ(Pull(*store_, 0), std::make_pair(After(1), uint64_t{1}));
}

TEST_F(PushWindowTest, TheWindowSurvivesSnapshotAndReplace) {
  v1::PushResponse first;
  ASSERT_OK(store_->Push(PushReq(kWorker, 100, {0, 3}), &first));
  const ShardSnapshot snapshot = store_->Snapshot();
  ASSERT_EQ(snapshot.windows.size(), 1u);

  std::unique_ptr<ChunkStore> restarted = NewStore();
  ASSERT_OK(restarted->Replace(snapshot));
  v1::PushResponse again;
  bool replayed = false;
  ASSERT_OK(restarted->Push(PushReq(kWorker, 100, {0, 3}), &again, &replayed));
  EXPECT_TRUE(replayed);
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(Pull(*restarted, 0), std::make_pair(After(1), uint64_t{1}));
  EXPECT_EQ(Pull(*restarted, 3), std::make_pair(After(1), uint64_t{1}));

  // A worker that does not come back within adopt_within loses its window.
  clock_.Advance(PushWindowOptions{}.adopt_within + absl::Seconds(1));
  std::unique_ptr<ChunkStore> later = NewStore();
  ASSERT_OK(later->Replace(snapshot));
  clock_.Advance(PushWindowOptions{}.adopt_within + absl::Seconds(1));
  EXPECT_TRUE(later->Snapshot().windows.empty());
}

TEST_F(PushWindowTest, ACheckpointHoldingPartOfACallGetsTheRestFromTheRetry) {
  // A checkpoint copies chunk 0 after the call updated it and chunk 1
  // before: the retry must apply chunk 1 only, and answer both acks.
  const ShardSnapshot before = store_->Snapshot();
  v1::PushResponse first;
  ASSERT_OK(store_->Push(PushReq(kWorker, 200, {0, 1}), &first));
  ShardSnapshot mixed = store_->Snapshot();
  for (v1::ChunkRecord& c : mixed.chunks) {
    if (c.chunk() != 1) continue;
    for (const v1::ChunkRecord& old : before.chunks) {
      if (old.chunk() == 1) c = old;
    }
  }
  std::unique_ptr<ChunkStore> restarted = NewStore();
  ASSERT_OK(restarted->Replace(mixed));
  ASSERT_EQ(Pull(*restarted, 1).second, 0u);
  v1::PushResponse again;
  bool replayed = true;
  ASSERT_OK(restarted->Push(PushReq(kWorker, 200, {0, 1}), &again, &replayed));
  EXPECT_FALSE(replayed);  // chunk 1 was applied now
  ASSERT_EQ(again.acks_size(), 2);
  EXPECT_EQ(again.acks(0).SerializeAsString(), first.acks(0).SerializeAsString());
  EXPECT_EQ(again.acks(1).version(), 1u);
  EXPECT_EQ(Pull(*restarted, 0), std::make_pair(After(1), uint64_t{1}));
  EXPECT_EQ(Pull(*restarted, 1), std::make_pair(After(1), uint64_t{1}));
  // And a third copy is answered whole.
  ASSERT_OK(restarted->Push(PushReq(kWorker, 200, {0, 1}), &again, &replayed));
  EXPECT_TRUE(replayed);
  EXPECT_EQ(Pull(*restarted, 1).second, 1u);

  // A checkpoint taken before the call holds none of it: the retry applies
  // it whole (the window loaded with it does not know the call).
  std::unique_ptr<ChunkStore> older = NewStore();
  ShardSnapshot stale = before;
  stale.windows = mixed.windows;
  ASSERT_OK(older->Replace(stale));
  ASSERT_OK(older->Push(PushReq(kWorker, 200, {0, 1}), &again, &replayed));
  EXPECT_FALSE(replayed);
  EXPECT_EQ(Pull(*older, 0), std::make_pair(After(1), uint64_t{1}));
}

TEST_F(PushWindowTest, WindowsGoThroughACheckpointAndOldCheckpointsStillLoad) {
  v1::ExchangeResponse first;
  ASSERT_OK(store_->Exchange(ExchangeReq(kWorker, 300, 2, 2.5f), &first));
  testing::TempDir dir;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<CheckpointStore> checkpoints,
                       CheckpointStore::Open(dir.path(), layout_, 0, 3));
  ShardSnapshot old_style = store_->Snapshot();
  old_style.windows.clear();  // as written before windows existed
  ASSERT_OK(checkpoints->Write("old", old_style, absl::Now(), absl::ZeroDuration())
                .status());
  ASSERT_OK(checkpoints->Write("new", store_->Snapshot(), absl::Now(),
                               absl::ZeroDuration())
                .status());

  ASSERT_OK_AND_ASSIGN(ShardSnapshot loaded_old, checkpoints->Load("old", nullptr));
  EXPECT_TRUE(loaded_old.windows.empty());
  ASSERT_OK_AND_ASSIGN(ShardSnapshot loaded, checkpoints->Load("new", nullptr));
  ASSERT_EQ(loaded.windows.size(), 1u);
  std::unique_ptr<ChunkStore> restarted = NewStore();
  ASSERT_OK(restarted->Replace(loaded));
  v1::ExchangeResponse again;
  ASSERT_OK(restarted->Exchange(ExchangeReq(kWorker, 300, 2, 2.5f), &again));
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(Pull(*restarted, 2).second, 1u);
}

}  // namespace
}  // namespace pskit
