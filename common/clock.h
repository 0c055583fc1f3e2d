// common/clock.h
//
// Clock: the source of "now" for leases, timeouts and timed work, injectable
// so tests can move time without sleeping. SystemClock() is the real one;
// tests use testing::FakeClock (tests/testing/fake_clock.h).
//
// A thread that waits for a time on a Clock calls AwaitWithDeadline instead
// of absl::Mutex::AwaitWithDeadline, so that a fake clock can end the wait
// when a test moves time past the deadline.
//
// Thread safety: implementations must allow concurrent calls.
#ifndef PSKIT_COMMON_CLOCK_H_
#define PSKIT_COMMON_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pskit {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;

  // Waits, holding `mu` as absl::Mutex::Await does (released while waiting,
  // held again on return), until `cond` holds or Now() >= `deadline`.
  // Returns whether `cond` holds. `cond` is evaluated with `mu` held. The
  // default waits on the wall clock (absl::Mutex::AwaitWithDeadline).
  virtual bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                                 absl::Time deadline) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return mu->AwaitWithDeadline(cond, deadline);
  }

  // Blocks the caller for `d` of this clock's time: a backoff between
  // retries. The default sleeps on the wall clock; a fake clock advances
  // itself instead, so a test's retries take no real time.
  virtual void SleepFor(absl::Duration d) const { absl::SleepFor(d); }
};

// The wall clock. Lives for the whole program; never delete it.
Clock* SystemClock();

}  // namespace pskit

#endif  // PSKIT_COMMON_CLOCK_H_
