// tests/testing/fake_clock.h
//
// FakeClock: a Clock that moves only when a test says so.
//
// Thread safety: Now and Advance may be called concurrently.
#ifndef PSKIT_TESTS_TESTING_FAKE_CLOCK_H_
#define PSKIT_TESTS_TESTING_FAKE_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "common/clock.h"

namespace pskit::testing {

class FakeClock final : public Clock {
 public:
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::FromUnixSeconds(1'700'000'000);
};

}  // namespace pskit::testing

#endif  // PSKIT_TESTS_TESTING_FAKE_CLOCK_H_
