// tests/testing/fake_clock.h
//
// FakeClock: a Clock that moves only when a test says so. A thread waiting
// in AwaitWithDeadline wakes when Advance moves time past its deadline (or
// its condition holds), so timed work runs at once, without sleeping.
//
// Thread safety: Now, Advance and AwaitWithDeadline may be called
// concurrently. An object waiting on this clock must not be destroyed while
// another thread is inside Advance (tests advance and destroy on one
// thread).
#ifndef PSKIT_TESTS_TESTING_FAKE_CLOCK_H_
#define PSKIT_TESTS_TESTING_FAKE_CLOCK_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/clock.h"

namespace pskit::testing {

class FakeClock final : public Clock {
 public:
  absl::Time Now() const override {
    return absl::FromUnixNanos(now_ns_.load());
  }

  // Records `d` (see sleeps()) and advances time by it, at once.
  void SleepFor(absl::Duration d) const override {
    {
      absl::MutexLock lock(&mu_);
      sleeps_.push_back(d);
    }
    Advance(d);
  }

  // Every SleepFor so far, in order.
  std::vector<absl::Duration> sleeps() const {
    absl::MutexLock lock(&mu_);
    return sleeps_;
  }

  // Moves time forward by `d` and wakes the waiters whose deadline passed.
  // Const like every Clock method: what a reference to the clock may do.
  void Advance(absl::Duration d) const {
    std::vector<absl::Mutex*> waiters;
    {
      absl::MutexLock lock(&mu_);
      now_ns_.fetch_add(absl::ToInt64Nanoseconds(d));
      waiters = waiters_;
    }
    // Releasing a mutex makes absl evaluate the conditions of the threads
    // waiting on it: now against the new time. Not under mu_, since a
    // waiter holds its mutex while it takes mu_.
    for (absl::Mutex* m : waiters) {
      m->Lock();
      m->Unlock();
    }
  }

  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) const override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    {
      absl::MutexLock lock(&mu_);
      waiters_.push_back(mu);
    }
    auto done = [&] { return cond.Eval() || Now() >= deadline; };
    mu->Await(absl::Condition(&done));
    {
      absl::MutexLock lock(&mu_);
      waiters_.erase(std::find(waiters_.begin(), waiters_.end(), mu));
    }
    return cond.Eval();
  }

 private:
  mutable absl::Mutex mu_;
  // The mutexes of the threads inside AwaitWithDeadline (one entry each).
  mutable std::vector<absl::Mutex*> waiters_ ABSL_GUARDED_BY(mu_);
  mutable std::vector<absl::Duration> sleeps_ ABSL_GUARDED_BY(mu_);
  // Unix nanoseconds. Atomic so that a waiter's condition, which absl may
  // evaluate on any thread that releases the waiter's mutex, reads it
  // without taking a lock. Changed only under mu_, so a waiter registered
  // under mu_ sees every Advance either in its first check or as a wake-up.
  mutable std::atomic<int64_t> now_ns_{int64_t{1'700'000'000} * 1'000'000'000};
};

}  // namespace pskit::testing

#endif  // PSKIT_TESTS_TESTING_FAKE_CLOCK_H_
