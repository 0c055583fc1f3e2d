#include "tools/psrun/launch/progress.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace pskit::launch {

void AccuracyTrend::Add(absl::Time time, double accuracy) {
  if (!points_.empty() && time <= points_.back().first) return;
  points_.emplace_back(time, accuracy);
  while (points_.size() > max_points_ ||
         (points_.size() > 1 && points_.front().first < time - window_)) {
    points_.pop_front();
  }
  if (!best_.has_value() || accuracy > *best_) {
    best_ = accuracy;
    records_.emplace_back(time, accuracy);
  }
}

std::optional<double> AccuracyTrend::latest() const {
  if (points_.empty()) return std::nullopt;
  return points_.back().second;
}

std::optional<absl::Time> AccuracyTrend::FirstAtOrAbove(double target) const {
  for (const auto& [time, accuracy] : records_) {
    if (accuracy >= target) return time;
  }
  return std::nullopt;
}

std::optional<absl::Duration> AccuracyTrend::TimeToReach(double target) const {
  if (points_.empty()) return std::nullopt;
  const auto& [newest_time, newest] = points_.back();
  if (newest >= target) return absl::ZeroDuration();
  if (points_.size() < 3 || !(target < 1)) return std::nullopt;
  // log of the error; an accuracy of 1 (no error) is clamped.
  auto log_error = [](double accuracy) {
    return std::log(std::max(1.0 - accuracy, 1e-9));
  };
  // Least squares with time in seconds relative to the newest point.
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& [time, accuracy] : points_) {
    const double x = absl::ToDoubleSeconds(time - newest_time);
    const double y = log_error(accuracy);
    n += 1;
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  const double denom = n * sxx - sx * sx;
  if (!(denom > 0)) return std::nullopt;
  const double slope = (n * sxy - sx * sy) / denom;  // log-error per second
  if (!(slope < 0)) return std::nullopt;
  const double seconds = (log_error(target) - log_error(newest)) / slope;
  if (!std::isfinite(seconds) || seconds > 86400) return std::nullopt;
  return absl::Seconds(seconds);
}

std::string HumanDuration(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  if (d < absl::Seconds(1)) {
    return absl::StrFormat("%d ms", absl::ToInt64Milliseconds(d));
  }
  if (d < absl::Seconds(9.95)) {
    return absl::StrFormat("%.1f s", absl::ToDoubleSeconds(d));
  }
  const int64_t s = absl::ToInt64Seconds(d + absl::Milliseconds(500));
  if (s < 60) return absl::StrFormat("%d s", s);
  if (s < 3600) return absl::StrFormat("%d min %02d s", s / 60, s % 60);
  return absl::StrFormat("%d h %02d min", s / 3600, (s % 3600) / 60);
}

std::string FormatCount(double v) {
  static const char* const kSuffix[] = {"", "K", "M", "G", "T"};
  int i = 0;
  double a = std::fabs(v);
  while (a >= 999.5 && i < 4) {
    a /= 1000;
    v /= 1000;
    ++i;
  }
  if (i == 0) return absl::StrFormat("%.0f", v);
  const int decimals = a >= 99.95 ? 0 : a >= 9.995 ? 1 : 2;
  return absl::StrFormat("%.*f%s", decimals, v, kSuffix[i]);
}

}  // namespace pskit::launch
