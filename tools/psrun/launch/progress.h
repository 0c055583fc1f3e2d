// tools/psrun/launch/progress.h
//
// The arithmetic behind psrun's status line: how accuracy is trending and
// when it will reach the target, and compact numbers and durations.
//
//   AccuracyTrend trend;
//   trend.Add(t0, 0.71); trend.Add(t0 + absl::Seconds(1), 0.74); ...
//   std::optional<absl::Duration> left = trend.TimeToReach(0.88);
//   HumanDuration(*left)  // "12 s"
//
// Thread safety: AccuracyTrend is not thread-safe; the functions are pure.
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_PROGRESS_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_PROGRESS_H_

#include <deque>
#include <optional>
#include <string>
#include <utility>

#include "absl/time/time.h"

namespace pskit::launch {

// The recent accuracy of a job, one point per evaluation.
class AccuracyTrend {
 public:
  // Points older than `window` before the newest one are not used for the
  // estimate; at most `max_points` of the newest are. Default: 30 s, 10.
  explicit AccuracyTrend(absl::Duration window = absl::Seconds(30),
                         size_t max_points = 10)
      : window_(window), max_points_(max_points) {}

  // Records the evaluation taken at `time`. A time not after the newest
  // point's is ignored (the same evaluation seen again, or a clock step).
  void Add(absl::Time time, double accuracy);

  // How long after the newest evaluation the accuracy should reach `target`.
  // Learning curves saturate, so the error (1 - accuracy) is taken to decay
  // exponentially: a least-squares line through log(1 - accuracy) of the
  // recent points (a straight line through the accuracies promised the
  // target within a second while the curve was flattening). Zero when the
  // newest already has; nullopt with fewer than 3 recent points, a target of
  // 1 or more, when the error does not fall, or when the answer is over a
  // day (no estimate is better than a silly one).
  std::optional<absl::Duration> TimeToReach(double target) const;

  std::optional<double> latest() const;
  std::optional<double> best() const { return best_; }
  // When the first evaluation at or above `target` was taken, if one was.
  std::optional<absl::Time> FirstAtOrAbove(double target) const;

 private:
  absl::Duration window_;
  size_t max_points_;
  std::deque<std::pair<absl::Time, double>> points_;  // oldest first
  std::optional<double> best_;
  // The first evaluation ever seen at each accuracy record; enough to answer
  // FirstAtOrAbove for any target.
  std::deque<std::pair<absl::Time, double>> records_;
};

// "850 ms", "4.6 s", "12 s", "3 min 05 s", "2 h 04 min".
std::string HumanDuration(absl::Duration d);
// "950", "12.3K", "4.56M", "7.89G": three significant digits.
std::string FormatCount(double v);

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_PROGRESS_H_
