#include "server/update_rule.h"

#include <cmath>
#include <random>
#include <vector>

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

TEST(CompensatedRate, InverseDividesByStaleness) {
  EXPECT_EQ(CompensatedRate(v1::COMPENSATION_NONE, 0.1f, 10), 0.1f);
  EXPECT_EQ(CompensatedRate(v1::COMPENSATION_INVERSE, 0.1f, 0), 0.1f);
  EXPECT_EQ(CompensatedRate(v1::COMPENSATION_INVERSE, 0.1f, 1), 0.1f);
  EXPECT_FLOAT_EQ(CompensatedRate(v1::COMPENSATION_INVERSE, 0.1f, 4), 0.025f);
}

}  // namespace
}  // namespace pskit
