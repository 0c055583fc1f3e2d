// common/clock.h
//
// Clock: the source of "now" for leases and timeouts, injectable so tests can
// move time without sleeping. SystemClock() is the real one.
//
// Thread safety: implementations must allow concurrent calls.
#ifndef PSKIT_COMMON_CLOCK_H_
#define PSKIT_COMMON_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pskit {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// The wall clock. Lives for the whole program; never delete it.
Clock* SystemClock();

}  // namespace pskit

#endif  // PSKIT_COMMON_CLOCK_H_
