// CommThread: the handover between the training thread and the
// communication thread (worker/algorithms/comm_thread.h).
#include "worker/algorithms/comm_thread.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pskit::worker {
namespace {

TEST(CommThread, RunsTheExchangeOnItsOwnThreadAndWaitReturnsItsStatus) {
  CommThread comm;
  std::thread::id ran_on;
  ASSERT_OK(comm.Start([&] {
    ran_on = std::this_thread::get_id();
    return absl::UnavailableError("shard 0 down");
  }));
  CommThread::Result r = comm.Wait();
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.status.message(), "shard 0 down");
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_LE(r.start, r.end);
  EXPECT_FALSE(comm.busy());
}

TEST(CommThread, WaitWithoutAnExchangeIsOkAtOnce) {
  CommThread comm;
  EXPECT_OK(comm.Wait().status);
  EXPECT_FALSE(comm.busy());
  EXPECT_FALSE(comm.done());
}

// The training thread computes while the exchange runs: busy and not done
// until the exchange returns; a second exchange is refused (and not run)
// until the first one's result was taken.
TEST(CommThread, OneExchangeInHandUntilWaitTakesIt) {
  CommThread comm;
  absl::Notification entered, release;
  ASSERT_OK(comm.Start([&] {
    entered.Notify();
    release.WaitForNotification();
    return absl::OkStatus();
  }));
  entered.WaitForNotification();
  EXPECT_TRUE(comm.busy());
  EXPECT_FALSE(comm.done());
  bool second_ran = false;
  absl::Status refused = comm.Start([&] {
    second_ran = true;
    return absl::OkStatus();
  });
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  release.Notify();
  EXPECT_OK(comm.Wait().status);
  EXPECT_FALSE(second_ran);
  EXPECT_FALSE(comm.busy());
  ASSERT_OK(comm.Start([] { return absl::OkStatus(); }));
  EXPECT_OK(comm.Wait().status);
}

// done() turns true once the exchange finished, without blocking: what a
// caller polls to decide whether Wait would block.
TEST(CommThread, DoneOnceTheExchangeFinished) {
  CommThread comm;
  ASSERT_OK(comm.Start([] { return absl::OkStatus(); }));
  while (!comm.done()) std::this_thread::yield();
  EXPECT_TRUE(comm.busy());  // the result is not taken yet
  EXPECT_OK(comm.Wait().status);
  EXPECT_FALSE(comm.done());
}

// Exchanges run one after another, in the order handed over, each seeing
// what the previous one wrote (the buffers pass between the threads only
// through Start and Wait).
TEST(CommThread, ExchangesSeeEachOthersWritesInOrder) {
  CommThread comm;
  std::vector<int> buffer;  // no lock: the handover orders the accesses
  for (int i = 0; i < 200; ++i) {
    buffer.push_back(-1);  // the training thread's write before the handover
    ASSERT_OK(comm.Start([&buffer, i] {
      if (buffer.back() != -1) return absl::InternalError("torn");
      buffer.back() = i;
      return absl::OkStatus();
    }));
    ASSERT_OK(comm.Wait().status);
    ASSERT_EQ(buffer.back(), i);
  }
}

// Destroying the CommThread with an exchange in flight waits for it (its
// calls have deadlines) and joins the thread: once the destructor has
// returned, the exchange has finished and nothing runs any more.
TEST(CommThread, DestructorFinishesTheExchangeInFlight) {
  bool finished = false;  // read after the join: no lock needed
  absl::Notification entered, release;
  auto comm = std::make_unique<CommThread>();
  ASSERT_OK(comm->Start([&] {
    entered.Notify();
    release.WaitForNotification();
    finished = true;
    return absl::OkStatus();
  }));
  entered.WaitForNotification();
  std::thread destroyer([&] { comm.reset(); });
  release.Notify();
  destroyer.join();
  EXPECT_TRUE(finished);
}

}  // namespace
}  // namespace pskit::worker
