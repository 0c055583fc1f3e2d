#include "server/update_rule.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

// Scalar references, in double, written straight from each method's
// published formula (PyTorch's documentation for momentum/nesterov/adagrad/
// rmsprop; Kingma & Ba 2015 Algorithm 1; Loshchilov & Hutter 2019).
struct Ref {
  v1::OptimizerConfig c;
  std::vector<double> w, s1, s2;
  int t = 0;

  void Step(const std::vector<float>& g, double lr) {
    ++t;
    const double wd = c.weight_decay();
    for (size_t i = 0; i < w.size(); ++i) {
      double gi = g[i];
      switch (c.kind()) {
        case v1::OPTIMIZER_SGD:
          w[i] -= lr * (gi + wd * w[i]);
          break;
        case v1::OPTIMIZER_MOMENTUM:
          gi += wd * w[i];
          s1[i] = c.momentum() * s1[i] + gi;
          w[i] -= lr * s1[i];
          break;
        case v1::OPTIMIZER_NESTEROV:
          gi += wd * w[i];
          s1[i] = c.momentum() * s1[i] + gi;
          w[i] -= lr * (gi + c.momentum() * s1[i]);
          break;
        case v1::OPTIMIZER_ADAGRAD:
          gi += wd * w[i];
          s1[i] += gi * gi;
          w[i] -= lr * gi / (std::sqrt(s1[i]) + c.epsilon());
          break;
        case v1::OPTIMIZER_RMSPROP:
          gi += wd * w[i];
          s1[i] = c.rho() * s1[i] + (1 - c.rho()) * gi * gi;
          w[i] -= lr * gi / (std::sqrt(s1[i]) + c.epsilon());
          break;
        case v1::OPTIMIZER_ADAM:
        case v1::OPTIMIZER_ADAMW: {
          const bool decoupled = c.kind() == v1::OPTIMIZER_ADAMW;
          if (decoupled) {
            w[i] -= lr * wd * w[i];
          } else {
            gi += wd * w[i];
          }
          s1[i] = c.beta1() * s1[i] + (1 - c.beta1()) * gi;
          s2[i] = c.beta2() * s2[i] + (1 - c.beta2()) * gi * gi;
          const double mhat = s1[i] / (1 - std::pow(double{c.beta1()}, t));
          const double vhat = s2[i] / (1 - std::pow(double{c.beta2()}, t));
          w[i] -= lr * mhat / (std::sqrt(vhat) + c.epsilon());
          break;
        }
        default:
          FAIL();
      }
    }
  }
};

void CheckAgainstReference(v1::OptimizerConfig raw) {
  v1::NamespaceConfig ns;
  *ns.mutable_optimizer() = raw;
  ASSERT_OK_AND_ASSIGN(v1::NamespaceConfig cfg, NormalizeConfig(ns));
  std::unique_ptr<UpdateRule> rule = UpdateRule::Create(cfg.optimizer());
  const size_t n = 1003;  // not a multiple of any vector width
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0, 1);
  std::vector<float> w(n);
  for (float& x : w) x = dist(rng);
  std::vector<float> slots(n * rule->num_slots(), rule->initial_slot_value());
  Ref ref{cfg.optimizer(),
          std::vector<double>(w.begin(), w.end()),
          std::vector<double>(n, rule->initial_slot_value()),
          std::vector<double>(n, 0.0)};
  for (int step = 1; step <= 8; ++step) {
    std::vector<float> g(n);
    for (float& x : g) x = dist(rng);
    const float lr = step == 5 ? rule->learning_rate() / 3 : rule->learning_rate();
    rule->Apply(w.data(), g.data(), slots.data(), n, step, lr);
    ref.Step(g, lr);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_NEAR(w[i], ref.w[i], 2e-5 * (1 + std::abs(ref.w[i])))
          << v1::OptimizerKind_Name(cfg.optimizer().kind()) << " step "
          << step << " element " << i;
    }
  }
}

v1::OptimizerConfig Opt(v1::OptimizerKind kind, float lr) {
  v1::OptimizerConfig c;
  c.set_kind(kind);
  c.set_learning_rate(lr);
  return c;
}

TEST(UpdateRule, Sgd) {
  CheckAgainstReference(Opt(v1::OPTIMIZER_SGD, 0.1f));
  v1::OptimizerConfig c = Opt(v1::OPTIMIZER_SGD, 0.1f);
  c.set_weight_decay(0.01f);
  CheckAgainstReference(c);
}
TEST(UpdateRule, Momentum) {
  CheckAgainstReference(Opt(v1::OPTIMIZER_MOMENTUM, 0.05f));
}
TEST(UpdateRule, Nesterov) {
  v1::OptimizerConfig c = Opt(v1::OPTIMIZER_NESTEROV, 0.05f);
  c.set_momentum(0.8f);
  CheckAgainstReference(c);
}
TEST(UpdateRule, Adagrad) {
  v1::OptimizerConfig c = Opt(v1::OPTIMIZER_ADAGRAD, 0.1f);
  c.set_initial_accumulator(0.1f);
  CheckAgainstReference(c);
}
TEST(UpdateRule, RmsProp) { CheckAgainstReference(Opt(v1::OPTIMIZER_RMSPROP, 0.01f)); }
TEST(UpdateRule, Adam) {
  CheckAgainstReference(Opt(v1::OPTIMIZER_ADAM, 0.01f));
  v1::OptimizerConfig c = Opt(v1::OPTIMIZER_ADAM, 0.01f);
  c.set_weight_decay(0.1f);
  c.set_beta1(0.8f);
  CheckAgainstReference(c);
}
TEST(UpdateRule, AdamW) {
  v1::OptimizerConfig c = Opt(v1::OPTIMIZER_ADAMW, 0.01f);
  c.set_weight_decay(0.1f);
  CheckAgainstReference(c);
}

TEST(UpdateRule, SgdWithRateOneIsExact) {
  auto rule = UpdateRule::Create(Opt(v1::OPTIMIZER_SGD, 1.0f));
  std::vector<float> w(10, 5.0f), g(10, 1.0f);
  for (int i = 0; i < 100; ++i) rule->Apply(w.data(), g.data(), nullptr, 10, i + 1, 1.0f);
  for (float x : w) EXPECT_EQ(x, -95.0f);
}

TEST(NormalizeConfig, FillsDefaults) {
  v1::NamespaceConfig c;
  c.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAMW);
  ASSERT_OK_AND_ASSIGN(v1::NamespaceConfig n, NormalizeConfig(c));
  EXPECT_FLOAT_EQ(n.optimizer().learning_rate(), 0.01f);
  EXPECT_FLOAT_EQ(n.optimizer().beta1(), 0.9f);
  EXPECT_FLOAT_EQ(n.optimizer().beta2(), 0.999f);
  EXPECT_FLOAT_EQ(n.optimizer().weight_decay(), 0.01f);
  EXPECT_EQ(n.compensation(), v1::COMPENSATION_NONE);
  // Normalising twice changes nothing.
  ASSERT_OK_AND_ASSIGN(v1::NamespaceConfig again, NormalizeConfig(n));
  EXPECT_EQ(again.SerializeAsString(), n.SerializeAsString());
}

TEST(NormalizeConfig, RejectsBadValues) {
  auto code = [](auto mutate) {
    v1::NamespaceConfig c;
    c.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
    mutate(c.mutable_optimizer());
    return NormalizeConfig(c).status().code();
  };
  const auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code([](auto* o) { o->set_learning_rate(0); }), kBad);
  EXPECT_EQ(code([](auto* o) { o->set_learning_rate(-1); }), kBad);
  EXPECT_EQ(code([](auto* o) { o->set_learning_rate(std::nanf("")); }), kBad);
  EXPECT_EQ(code([](auto* o) { o->set_beta1(1); }), kBad);
  EXPECT_EQ(code([](auto* o) { o->set_epsilon(0); }), kBad);
  EXPECT_EQ(code([](auto* o) { o->set_weight_decay(-0.1f); }), kBad);
  EXPECT_EQ(code([](auto* o) { o->set_kind(v1::OPTIMIZER_UNSPECIFIED); }), kBad);
  v1::NamespaceConfig c;
  c.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  c.set_compensation(static_cast<v1::Compensation>(17));
  EXPECT_EQ(NormalizeConfig(c).status().code(), kBad);
}

// Every optimizer reports an update that overflows, computes out of place
// (its inputs untouched) and reports a finite one as finite.
TEST(UpdateRule, UpdateReportsNonFiniteResultsAndLeavesItsInputs) {
  for (v1::OptimizerKind kind :
       {v1::OPTIMIZER_SGD, v1::OPTIMIZER_MOMENTUM, v1::OPTIMIZER_NESTEROV,
        v1::OPTIMIZER_ADAGRAD, v1::OPTIMIZER_RMSPROP, v1::OPTIMIZER_ADAM,
        v1::OPTIMIZER_ADAMW}) {
    v1::NamespaceConfig ns;
    *ns.mutable_optimizer() = Opt(kind, 100.0f);
    ASSERT_OK_AND_ASSIGN(v1::NamespaceConfig cfg, NormalizeConfig(ns));
    auto rule = UpdateRule::Create(cfg.optimizer());
    const size_t n = 37;
    const size_t ns_floats = n * rule->num_slots();
    const std::vector<float> slots(ns_floats, rule->initial_slot_value());
    std::vector<float> w_out(n), slots_out(ns_floats);
    // Finite values, finite gradient, finite result.
    const std::vector<float> w(n, 0.5f), g(n, 0.25f);
    EXPECT_TRUE(rule->Update(w.data(), g.data(), slots.data(), w_out.data(),
                             slots_out.data(), n, 1, 1e-3f))
        << v1::OptimizerKind_Name(kind);
    // Values near -FLT_MAX and one large, finite gradient element: the update
    // drives that value (or, for the adaptive ones, a slot: g * g overflows)
    // to a non-finite number.
    const std::vector<float> low(n, -FLT_MAX / 2);
    std::vector<float> big(n, 1.0f);
    big[20] = 1e37f;
    EXPECT_FALSE(rule->Update(low.data(), big.data(), slots.data(),
                              w_out.data(), slots_out.data(), n, 1, 100.0f))
        << v1::OptimizerKind_Name(kind);
    EXPECT_TRUE(std::all_of(low.begin(), low.end(),
                            [](float x) { return x == -FLT_MAX / 2; }));
    EXPECT_TRUE(std::all_of(slots.begin(), slots.end(), [&](float x) {
      return x == rule->initial_slot_value();
    }));
  }
}

TEST(UpdateRule, OverflowOfASlotAloneIsReported) {
  // Adam's second moment overflows ((1 - beta2) * g * g > FLT_MAX) while
  // the value stays finite: the slot alone makes the update non-finite.
  auto rule = UpdateRule::Create(NormalizeConfig([] {
                                   v1::NamespaceConfig ns;
                                   *ns.mutable_optimizer() =
                                       Opt(v1::OPTIMIZER_ADAM, 1e-3f);
                                   return ns;
                                 }())
                                     ->optimizer());
  const std::vector<float> w(4, 1.0f), g(4, 1e25f), slots(8, 0.0f);
  std::vector<float> w_out(4), slots_out(8);
  EXPECT_FALSE(rule->Update(w.data(), g.data(), slots.data(), w_out.data(),
                            slots_out.data(), 4, 1, 1e-3f));
  EXPECT_TRUE(std::isinf(slots_out[4]));
}

TEST(NormalizeConfig, BoundsKeepOneUpdateFinite) {
  auto status = [](auto mutate) {
    v1::NamespaceConfig c;
    c.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
    mutate(c.mutable_optimizer());
    return NormalizeConfig(c).status();
  };
  absl::Status s = status([](auto* o) { o->set_learning_rate(1e38f); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              ::testing::AllOf(::testing::HasSubstr("learning_rate"),
                               ::testing::HasSubstr("1e+38"),
                               ::testing::HasSubstr("1000]")));
  EXPECT_OK(status([](auto* o) { o->set_learning_rate(kMaxLearningRate); }));
  EXPECT_EQ(status([](auto* o) { o->set_epsilon(1e-38f); }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status([](auto* o) { o->set_epsilon(2.0f); }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status([](auto* o) { o->set_weight_decay(1.5f); }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status([](auto* o) { o->set_beta2(1.0f); }).code(),
            absl::StatusCode::kInvalidArgument);
  v1::NamespaceConfig ada;
  ada.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAGRAD);
  ada.mutable_optimizer()->set_initial_accumulator(1e30f);
  EXPECT_EQ(NormalizeConfig(ada).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NormalizeConfig, ChecksTheBoundsOfWhatTheOptimizerReads) {
  // SGD never reads epsilon: an old checkpoint's stray value does not make
  // it unloadable. Adam reads it: refused.
  v1::NamespaceConfig c;
  c.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  c.mutable_optimizer()->set_epsilon(5.0f);
  EXPECT_OK(NormalizeConfig(c).status());
  c.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
  EXPECT_EQ(NormalizeConfig(c).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CheckSettingsUsed, NamesTheFieldAndTheOptimizer) {
  v1::OptimizerConfig o = Opt(v1::OPTIMIZER_ADAM, 0.01f);
  EXPECT_OK(CheckSettingsUsed(o, v1::OPTIMIZER_ADAM));
  o.set_momentum(0.9f);
  absl::Status s = CheckSettingsUsed(o, v1::OPTIMIZER_ADAM);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              ::testing::AllOf(::testing::HasSubstr("OPTIMIZER_ADAM"),
                               ::testing::HasSubstr("'momentum'")));
  // Each optimizer accepts exactly the fields FieldsUsedBy lists.
  for (v1::OptimizerKind kind :
       {v1::OPTIMIZER_SGD, v1::OPTIMIZER_MOMENTUM, v1::OPTIMIZER_ADAGRAD,
        v1::OPTIMIZER_RMSPROP, v1::OPTIMIZER_ADAMW}) {
    const std::vector<std::string> used = FieldsUsedBy(kind);
    const google::protobuf::Descriptor* d = v1::OptimizerConfig::descriptor();
    for (int i = 0; i < d->field_count(); ++i) {
      const google::protobuf::FieldDescriptor* f = d->field(i);
      if (f->name() == "kind") continue;
      v1::OptimizerConfig one;
      one.GetReflection()->SetFloat(&one, f, 0.5f);
      const bool reads =
          std::find(used.begin(), used.end(), f->name()) != used.end();
      EXPECT_EQ(CheckSettingsUsed(one, kind).ok(), reads)
          << v1::OptimizerKind_Name(kind) << " " << f->name();
    }
  }
}

TEST(DiffConfigs, NamesOnlyTheDifferingFieldsWithBothValues) {
  v1::NamespaceConfig a, b;
  *a.mutable_optimizer() = Opt(v1::OPTIMIZER_SGD, 0.01f);
  *b.mutable_optimizer() = Opt(v1::OPTIMIZER_SGD, 0.1f);
  ASSERT_OK_AND_ASSIGN(a, NormalizeConfig(a));
  ASSERT_OK_AND_ASSIGN(b, NormalizeConfig(b));
  EXPECT_EQ(DiffConfigs(a, b, "declared", "requested"),
            "learning_rate: declared 0.01, requested 0.1");
  EXPECT_EQ(DiffConfigs(a, a, "declared", "requested"), "");
  b.set_compensation(v1::COMPENSATION_INVERSE);
  EXPECT_EQ(DiffConfigs(a, b, "declared", "requested"),
            "learning_rate: declared 0.01, requested 0.1; compensation: "
            "declared none, requested inverse");
}

TEST(CompensatedRate, InverseDividesByStaleness) {
  EXPECT_EQ(CompensatedRate(v1::COMPENSATION_NONE, 0.1f, 10), 0.1f);
  EXPECT_EQ(CompensatedRate(v1::COMPENSATION_INVERSE, 0.1f, 0), 0.1f);
  EXPECT_EQ(CompensatedRate(v1::COMPENSATION_INVERSE, 0.1f, 1), 0.1f);
  EXPECT_FLOAT_EQ(CompensatedRate(v1::COMPENSATION_INVERSE, 0.1f, 4), 0.025f);
}

}  // namespace
}  // namespace pskit
