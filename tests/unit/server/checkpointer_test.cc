// Checkpointer driven by a fake clock: automatic checkpoints fall on the
// clock's multiples of the interval (and only then), missed slots are
// skipped, requests and restores run on its thread, and after Stop every
// request is answered UNAVAILABLE; the shutdown checkpoint is skipped when
// nothing changed since the newest checkpoint. Time moves only when the test
// says so; nothing sleeps.
#include "server/checkpointer.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/testing/cluster.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::TempDir;

class CheckpointerTest : public ::testing::Test {
 protected:
  CheckpointerTest()
      : layout_(Layout::Create(1, 4096).value()),
        store_(layout_, 0, /*allow_nonfinite=*/false, 1 << 20, 1 << 30),
        checkpoints_(CheckpointStore::Open(dir_.path(), layout_, 0, 100).value()) {}

  void Start(absl::Duration interval) {
    checkpointer_ = std::make_unique<Checkpointer>(
        &store_, checkpoints_.get(), &clock_, interval,
        [this](const absl::StatusOr<v1::CheckpointInfo>& info) {
          absl::MutexLock lock(&mu_);
          taken_.push_back(info.ok() ? info->id() : info.status().ToString());
        });
  }

  // Runs `id` through the checkpointer's queue and waits for its answer.
  absl::StatusOr<v1::CheckpointInfo> Request(const std::string& id,
                                             bool restore = false) {
    absl::Notification answered;
    absl::StatusOr<v1::CheckpointInfo> result;
    auto done = [&](absl::StatusOr<v1::CheckpointInfo> r) {
      result = std::move(r);
      answered.Notify();
    };
    if (restore) {
      checkpointer_->RestoreAsync(id, done);
    } else {
      checkpointer_->CheckpointAsync(id, done);
    }
    // The limit only keeps a broken checkpointer from hanging the suite.
    EXPECT_TRUE(answered.WaitForNotificationWithTimeout(absl::Minutes(1)));
    return result;
  }

  // The checkpoints taken so far, in order.
  std::vector<std::string> Taken() {
    absl::MutexLock lock(&mu_);
    return taken_;
  }

  // "auto-<unix ms>" of the clock's start plus `offset`.
  std::string Auto(absl::Duration offset) const {
    return absl::StrCat("auto-", absl::ToUnixMillis(start_ + offset));
  }

  // Members are destroyed bottom-up: the checkpointer first.
  TempDir dir_;
  testing::FakeClock clock_;  // starts at a multiple of 10 s
  const absl::Time start_ = clock_.Now();
  Layout layout_;
  ChunkStore store_;
  std::unique_ptr<CheckpointStore> checkpoints_;
  absl::Mutex mu_;
  std::vector<std::string> taken_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Checkpointer> checkpointer_;
};

TEST_F(CheckpointerTest, AutomaticCheckpointsFallOnTheClocksSlots) {
  Start(absl::Seconds(10));
  // A due slot is taken before a request made after it (the header's
  // promise), so each request below shows whether a slot was due.
  clock_.Advance(absl::Seconds(10) - absl::Milliseconds(1));
  ASSERT_OK(Request("m1"));
  EXPECT_EQ(Taken(), std::vector<std::string>{"m1"});

  clock_.Advance(absl::Milliseconds(1));  // the first slot
  ASSERT_OK(Request("m2"));
  EXPECT_EQ(Taken(), (std::vector<std::string>{"m1", Auto(absl::Seconds(10)),
                                                "m2"}));

  // Slots 20, 30 and 40 pass at once: one checkpoint (for 20), and the
  // next slot is 50.
  clock_.Advance(absl::Seconds(35));
  ASSERT_OK(Request("m3"));
  clock_.Advance(absl::Seconds(5));
  ASSERT_OK(Request("m4"));
  EXPECT_EQ(Taken(),
            (std::vector<std::string>{"m1", Auto(absl::Seconds(10)), "m2",
                                      Auto(absl::Seconds(20)), "m3",
                                      Auto(absl::Seconds(50)), "m4"}));
  // Every one of them is in the store, stamped with the clock's time.
  const std::vector<v1::CheckpointInfo> list = checkpoints_->List();
  ASSERT_EQ(list.size(), 7u);
  EXPECT_EQ(list[0].id(), "m4");
  EXPECT_EQ(list[0].time_unix_ms(), absl::ToUnixMillis(clock_.Now()));
}

TEST_F(CheckpointerTest, IntervalZeroTakesOnlyRequestedCheckpoints) {
  Start(absl::ZeroDuration());
  clock_.Advance(absl::Hours(1000));
  ASSERT_OK(Request("m1"));
  EXPECT_EQ(Taken(), std::vector<std::string>{"m1"});
}

TEST_F(CheckpointerTest, RestoreRunsOnItsThread) {
  v1::DeclareRequest declare;
  declare.set_namespace_("job");
  declare.mutable_layout()->set_num_shards(1);
  declare.mutable_layout()->set_chunk_elems(4096);
  *declare.mutable_config() = testing::SgdConfig(0.1f);
  v1::TensorSpec* t = declare.add_tensors();
  t->set_name("w");
  t->add_shape(8);
  t->mutable_init()->set_kind(v1::INIT_ZEROS);
  v1::DeclareResponse declared;
  ASSERT_OK(store_.Declare(declare, &declared));
  Start(absl::ZeroDuration());

  ASSERT_OK(Request("before"));
  v1::DeclareRequest more = declare;
  more.mutable_tensors(0)->set_name("later");
  ASSERT_OK(store_.Declare(more, &declared));
  v1::StatusResponse status;
  store_.Describe(&status);
  ASSERT_EQ(status.namespaces(0).tensors_size(), 2);

  ASSERT_OK_AND_ASSIGN(v1::CheckpointInfo restored,
                       Request("before", /*restore=*/true));
  EXPECT_EQ(restored.id(), "before");
  status.Clear();
  store_.Describe(&status);
  ASSERT_EQ(status.namespaces(0).tensors_size(), 1);
  EXPECT_EQ(status.namespaces(0).tensors(0).name(), "w");

  EXPECT_EQ(Request("missing", /*restore=*/true).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Request("before").status().code(),
            absl::StatusCode::kAlreadyExists);
}

// A coordinated shutdown takes one shared id on every shard; the shard's own
// final checkpoint must then not bury it under a "final-" id of its own
// unless the shard changed since.
TEST_F(CheckpointerTest, FinalCheckpointOnlyWhenTheStateChanged) {
  v1::DeclareRequest declare;
  declare.set_namespace_("job");
  declare.mutable_layout()->set_num_shards(1);
  declare.mutable_layout()->set_chunk_elems(4096);
  *declare.mutable_config() = testing::SgdConfig(0.1f);
  v1::TensorSpec* t = declare.add_tensors();
  t->set_name("w");
  t->add_shape(8);
  t->mutable_init()->set_kind(v1::INIT_ZEROS);
  v1::DeclareResponse declared;
  ASSERT_OK(store_.Declare(declare, &declared));
  Start(absl::ZeroDuration());
  ASSERT_OK(Request("shared"));
  checkpointer_->Stop();

  // Nothing changed since "shared": no final checkpoint.
  EXPECT_FALSE(checkpointer_->FinalCheckpoint("final-1").has_value());
  ASSERT_EQ(checkpoints_->List().front().id(), "shared");

  // One applied update since: the final checkpoint is taken.
  v1::PushRequest push;
  push.set_namespace_("job");
  *push.mutable_layout() = declare.layout();
  v1::ChunkData* g = push.add_grads();
  g->set_tensor("w");
  g->set_chunk(0);
  g->set_encoding(v1::ENCODING_F32);
  g->set_data(std::string(8 * sizeof(float), '\0'));
  v1::PushResponse pushed;
  ASSERT_OK(store_.Push(push, &pushed));
  auto final2 = checkpointer_->FinalCheckpoint("final-2");
  ASSERT_TRUE(final2.has_value());
  ASSERT_OK(*final2);
  EXPECT_EQ(checkpoints_->List().front().id(), "final-2");
  // ... and is itself the newest, so a second shutdown adds nothing.
  EXPECT_FALSE(checkpointer_->FinalCheckpoint("final-3").has_value());

  // A shard started from the newest checkpoint (NoteLoaded) and stopped
  // without an update writes none either; a declared tensor is a change.
  ShardSnapshot snapshot = store_.Snapshot();
  checkpointer_->NoteLoaded("final-2", Checkpointer::Fingerprint(snapshot));
  EXPECT_FALSE(checkpointer_->FinalCheckpoint("final-4").has_value());
  v1::DeclareRequest more = declare;
  more.mutable_tensors(0)->set_name("later");
  ASSERT_OK(store_.Declare(more, &declared));
  auto final5 = checkpointer_->FinalCheckpoint("final-5");
  ASSERT_TRUE(final5.has_value());
  EXPECT_OK(*final5);
}

// The state matches a checkpoint that is not the newest (an operator
// restored an older one): a restart would load the newest, so the final
// checkpoint is taken.
TEST_F(CheckpointerTest, FinalCheckpointAfterRestoringAnOlderOne) {
  Start(absl::ZeroDuration());
  ASSERT_OK(Request("old"));
  v1::DeclareRequest declare;
  declare.set_namespace_("job");
  declare.mutable_layout()->set_num_shards(1);
  declare.mutable_layout()->set_chunk_elems(4096);
  *declare.mutable_config() = testing::SgdConfig(0.1f);
  v1::TensorSpec* t = declare.add_tensors();
  t->set_name("w");
  t->add_shape(8);
  t->mutable_init()->set_kind(v1::INIT_ZEROS);
  v1::DeclareResponse declared;
  ASSERT_OK(store_.Declare(declare, &declared));
  ASSERT_OK(Request("new"));
  ASSERT_OK(Request("old", /*restore=*/true));
  checkpointer_->Stop();
  auto final1 = checkpointer_->FinalCheckpoint("final-1");
  ASSERT_TRUE(final1.has_value());
  EXPECT_OK(*final1);
}

TEST_F(CheckpointerTest, AfterStopRequestsAreAnsweredUnavailable) {
  Start(absl::Seconds(10));
  checkpointer_->Stop();
  checkpointer_->Stop();  // idempotent
  EXPECT_EQ(Request("late").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Request("late", /*restore=*/true).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(Taken().empty());
}

}  // namespace
}  // namespace pskit
