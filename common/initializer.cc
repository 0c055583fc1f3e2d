#include "common/initializer.h"

#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "common/layout.h"
#include "common/validation.h"

namespace pskit {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

uint64_t SplitMix64(uint64_t z) {
  z += kGolden;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 random bits: every value is a float exactly.
float UnitFloat(uint64_t bits) {
  return static_cast<float>(bits >> 40) * 0x1.0p-24f;
}

struct Fans {
  double in;
  double out;
};

Fans FansOf(const v1::TensorSpec& spec) {
  const int rank = spec.shape_size();
  if (rank == 0) return {1, 1};
  if (rank == 1) {
    const double n = static_cast<double>(spec.shape(0));
    return {n, n};
  }
  double receptive = 1;
  for (int i = 0; i + 2 < rank; ++i) receptive *= spec.shape(i);
  return {receptive * spec.shape(rank - 2), receptive * spec.shape(rank - 1)};
}

}  // namespace

absl::Status ValidateInitializer(const v1::TensorSpec& spec) {
  const v1::Initializer& init = spec.init();
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", Quoted(spec.name()), ": initializer ",
                     v1::InitKind_Name(init.kind()), " ", what));
  };
  switch (init.kind()) {
    case v1::INIT_ZEROS:
    case v1::INIT_GLOROT_UNIFORM:
    case v1::INIT_HE_NORMAL:
    case v1::INIT_EXPLICIT:
      return absl::OkStatus();
    case v1::INIT_CONSTANT:
      if (!std::isfinite(init.value())) return bad("needs a finite value");
      return absl::OkStatus();
    case v1::INIT_UNIFORM:
      // high - low is computed in float when filling: it must not overflow.
      if (!std::isfinite(init.low()) || !std::isfinite(init.high()) ||
          !(init.low() < init.high()) ||
          !std::isfinite(init.high() - init.low())) {
        return bad(absl::StrCat("needs finite low < high with a finite "
                                "high - low, got [", init.low(),
                                ", ", init.high(), ")"));
      }
      return absl::OkStatus();
    case v1::INIT_NORMAL:
      // Box-Muller draws stay within 9 standard deviations (|z| <=
      // sqrt(-2 ln 2^-53) < 8.6): every value must be a finite float.
      if (!std::isfinite(init.mean()) || !std::isfinite(init.stddev()) ||
          init.stddev() < 0 ||
          !std::isfinite(std::abs(init.mean()) + 9.0f * init.stddev())) {
        return bad(absl::StrCat(
            "needs a finite mean and 0 <= stddev with |mean| + 9 stddev "
            "finite in float, got ",
            init.mean(), " and ", init.stddev()));
      }
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", Quoted(spec.name()), ": initializer kind ",
                       static_cast<int>(init.kind()),
                       " is not known; use zeros, constant, uniform, normal, "
                       "glorot_uniform, he_normal or explicit"));
  }
}

void FillInitialValues(absl::string_view ns, const v1::TensorSpec& spec,
                       uint64_t offset, absl::Span<float> out) {
  const v1::Initializer& init = spec.init();
  const uint64_t key =
      Fingerprint64(TensorKey(ns, spec.name())) ^ SplitMix64(init.seed());
  auto uniform = [&](float lo, float hi) {
    for (size_t i = 0; i < out.size(); ++i) {
      const uint64_t bits = SplitMix64(key + (offset + i) * kGolden);
      out[i] = lo + (hi - lo) * UnitFloat(bits);
    }
  };
  auto normal = [&](double mean, double stddev) {
    for (size_t i = 0; i < out.size(); ++i) {
      const uint64_t bits = SplitMix64(key + (offset + i) * kGolden);
      // u1 in (0, 1] so log(u1) is finite.
      const double u1 = (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53;
      const double u2 = static_cast<double>(SplitMix64(bits) >> 11) * 0x1.0p-53;
      const double z = std::sqrt(-2.0 * std::log(u1)) *
                       std::cos(2.0 * std::numbers::pi * u2);
      out[i] = static_cast<float>(mean + stddev * z);
    }
  };
  switch (init.kind()) {
    case v1::INIT_CONSTANT:
      for (float& v : out) v = init.value();
      return;
    case v1::INIT_UNIFORM:
      uniform(init.low(), init.high());
      return;
    case v1::INIT_NORMAL:
      normal(init.mean(), init.stddev());
      return;
    case v1::INIT_GLOROT_UNIFORM: {
      const Fans f = FansOf(spec);
      const float limit = static_cast<float>(std::sqrt(6.0 / (f.in + f.out)));
      uniform(-limit, limit);
      return;
    }
    case v1::INIT_HE_NORMAL:
      normal(0.0, std::sqrt(2.0 / FansOf(spec).in));
      return;
    default:  // zeros; explicit values are copied by the caller
      for (float& v : out) v = 0.0f;
      return;
  }
}

}  // namespace pskit
