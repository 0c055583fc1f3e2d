#include "common/initializer.h"

#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

v1::TensorSpec Spec(v1::InitKind kind, std::vector<int64_t> shape) {
  v1::TensorSpec s;
  s.set_name("fc/w");
  for (int64_t d : shape) s.add_shape(d);
  s.mutable_init()->set_kind(kind);
  s.mutable_init()->set_seed(42);
  return s;
}

struct Moments {
  double mean, stddev, min, max;
};
Moments MomentsOf(const std::vector<float>& v) {
  double sum = 0, sq = 0, lo = v[0], hi = v[0];
  for (float x : v) {
    sum += x;
    sq += double{x} * x;
    lo = std::min<double>(lo, x);
    hi = std::max<double>(hi, x);
  }
  const double mean = sum / v.size();
  return {mean, std::sqrt(sq / v.size() - mean * mean), lo, hi};
}

TEST(Initializer, SlicesAgreeWithTheWhole) {
  // Values must not depend on how the tensor is cut (shards, chunk size).
  for (v1::InitKind k : {v1::INIT_UNIFORM, v1::INIT_NORMAL,
                         v1::INIT_GLOROT_UNIFORM, v1::INIT_HE_NORMAL}) {
    v1::TensorSpec spec = Spec(k, {100, 50});
    spec.mutable_init()->set_low(-1);
    spec.mutable_init()->set_high(1);
    spec.mutable_init()->set_stddev(1);
    ASSERT_OK(ValidateInitializer(spec));
    std::vector<float> whole(5000), pieces(5000);
    FillInitialValues("ns", spec, 0, absl::MakeSpan(whole));
    FillInitialValues("ns", spec, 0, absl::MakeSpan(pieces).subspan(0, 1234));
    FillInitialValues("ns", spec, 1234,
                      absl::MakeSpan(pieces).subspan(1234, 3000));
    FillInitialValues("ns", spec, 4234, absl::MakeSpan(pieces).subspan(4234));
    EXPECT_EQ(whole, pieces) << v1::InitKind_Name(k);
  }
}

TEST(Initializer, SeedNamespaceAndTensorChangeTheValues) {
  v1::TensorSpec spec = Spec(v1::INIT_HE_NORMAL, {64, 64});
  std::vector<float> a(100), b(100), c(100), d(100);
  FillInitialValues("ns", spec, 0, absl::MakeSpan(a));
  FillInitialValues("other", spec, 0, absl::MakeSpan(b));
  spec.mutable_init()->set_seed(43);
  FillInitialValues("ns", spec, 0, absl::MakeSpan(c));
  spec.set_name("fc/w2");
  FillInitialValues("ns", spec, 0, absl::MakeSpan(d));
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(c, d);
}

TEST(Initializer, DistributionsHaveTheirMoments) {
  const int n = 200000;
  std::vector<float> v(n);
  // glorot_uniform on [400, 500]: limit sqrt(6/900).
  FillInitialValues("ns", Spec(v1::INIT_GLOROT_UNIFORM, {400, 500}), 0,
                    absl::MakeSpan(v));
  const double limit = std::sqrt(6.0 / 900);
  Moments m = MomentsOf(v);
  EXPECT_GE(m.min, -limit);
  EXPECT_LT(m.max, limit);
  EXPECT_NEAR(m.mean, 0, 0.01 * limit);
  EXPECT_NEAR(m.stddev, limit / std::sqrt(3.0), 0.01 * limit);
  // he_normal on [800, 250]: stddev sqrt(2/800) = 0.05.
  FillInitialValues("ns", Spec(v1::INIT_HE_NORMAL, {800, 250}), 0,
                    absl::MakeSpan(v));
  m = MomentsOf(v);
  EXPECT_NEAR(m.mean, 0, 0.001);
  EXPECT_NEAR(m.stddev, 0.05, 0.001);
  // normal(3, 2).
  v1::TensorSpec normal = Spec(v1::INIT_NORMAL, {n});
  normal.mutable_init()->set_mean(3);
  normal.mutable_init()->set_stddev(2);
  FillInitialValues("ns", normal, 0, absl::MakeSpan(v));
  m = MomentsOf(v);
  EXPECT_NEAR(m.mean, 3, 0.02);
  EXPECT_NEAR(m.stddev, 2, 0.02);
  // constant and zeros.
  v1::TensorSpec constant = Spec(v1::INIT_CONSTANT, {n});
  constant.mutable_init()->set_value(0.25f);
  FillInitialValues("ns", constant, 0, absl::MakeSpan(v));
  EXPECT_EQ(MomentsOf(v).min, 0.25);
  EXPECT_EQ(MomentsOf(v).max, 0.25);
  FillInitialValues("ns", Spec(v1::INIT_ZEROS, {n}), 0, absl::MakeSpan(v));
  EXPECT_EQ(MomentsOf(v).max, 0.0);
}

TEST(Initializer, RejectsBadParameters) {
  v1::TensorSpec s = Spec(v1::INIT_UNIFORM, {4});
  s.mutable_init()->set_low(1);
  s.mutable_init()->set_high(1);
  EXPECT_EQ(ValidateInitializer(s).code(), absl::StatusCode::kInvalidArgument);
  s = Spec(v1::INIT_NORMAL, {4});
  s.mutable_init()->set_stddev(-1);
  EXPECT_EQ(ValidateInitializer(s).code(), absl::StatusCode::kInvalidArgument);
  // Finite bounds whose difference overflows float would fill with inf.
  s = Spec(v1::INIT_UNIFORM, {4});
  s.mutable_init()->set_low(-3e38f);
  s.mutable_init()->set_high(3e38f);
  EXPECT_EQ(ValidateInitializer(s).code(), absl::StatusCode::kInvalidArgument);
  s = Spec(v1::INIT_NORMAL, {4});
  s.mutable_init()->set_stddev(1e38f);
  EXPECT_EQ(ValidateInitializer(s).code(), absl::StatusCode::kInvalidArgument);
  s = Spec(v1::INIT_UNSPECIFIED, {4});
  EXPECT_EQ(ValidateInitializer(s).code(), absl::StatusCode::kInvalidArgument);
  s = Spec(v1::INIT_CONSTANT, {4});
  s.mutable_init()->set_value(std::nanf(""));
  EXPECT_EQ(ValidateInitializer(s).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pskit
