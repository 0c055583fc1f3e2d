#include "server/update_rule.h"

#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pskit {
namespace {

// Loops below are written for the vectoriser: raw restrict pointers, no calls
// but sqrt (which -fno-math-errno makes a vector instruction), no branches.

class Sgd final : public UpdateRule {
 public:
  explicit Sgd(const v1::OptimizerConfig& c)
      : UpdateRule(c.learning_rate()), wd_(c.weight_decay()) {}
  int num_slots() const override { return 0; }
  void Apply(float* __restrict w, const float* __restrict g, float*, size_t n,
             uint64_t, float lr) const override {
    const float wd = wd_;
    for (size_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i]);
  }

 private:
  const float wd_;
};

class Momentum final : public UpdateRule {
 public:
  Momentum(const v1::OptimizerConfig& c, bool nesterov)
      : UpdateRule(c.learning_rate()),
        mu_(c.momentum()),
        wd_(c.weight_decay()),
        nesterov_(nesterov) {}
  int num_slots() const override { return 1; }
  void Apply(float* __restrict w, const float* __restrict g,
             float* __restrict v, size_t n, uint64_t,
             float lr) const override {
    const float mu = mu_, wd = wd_;
    if (nesterov_) {
      for (size_t i = 0; i < n; ++i) {
        const float gi = g[i] + wd * w[i];
        const float vi = mu * v[i] + gi;
        v[i] = vi;
        w[i] -= lr * (gi + mu * vi);
      }
    } else {
      for (size_t i = 0; i < n; ++i) {
        const float vi = mu * v[i] + (g[i] + wd * w[i]);
        v[i] = vi;
        w[i] -= lr * vi;
      }
    }
  }

 private:
  const float mu_;
  const float wd_;
  const bool nesterov_;
};

class Adagrad final : public UpdateRule {
 public:
  explicit Adagrad(const v1::OptimizerConfig& c)
      : UpdateRule(c.learning_rate()),
        eps_(c.epsilon()),
        wd_(c.weight_decay()),
        init_(c.initial_accumulator()) {}
  int num_slots() const override { return 1; }
  float initial_slot_value() const override { return init_; }
  void Apply(float* __restrict w, const float* __restrict g,
             float* __restrict s, size_t n, uint64_t,
             float lr) const override {
    const float eps = eps_, wd = wd_;
    for (size_t i = 0; i < n; ++i) {
      const float gi = g[i] + wd * w[i];
      const float si = s[i] + gi * gi;
      s[i] = si;
      w[i] -= lr * gi / (std::sqrt(si) + eps);
    }
  }

 private:
  const float eps_;
  const float wd_;
  const float init_;
};

class RmsProp final : public UpdateRule {
 public:
  explicit RmsProp(const v1::OptimizerConfig& c)
      : UpdateRule(c.learning_rate()),
        rho_(c.rho()),
        eps_(c.epsilon()),
        wd_(c.weight_decay()) {}
  int num_slots() const override { return 1; }
  void Apply(float* __restrict w, const float* __restrict g,
             float* __restrict s, size_t n, uint64_t,
             float lr) const override {
    const float rho = rho_, eps = eps_, wd = wd_;
    for (size_t i = 0; i < n; ++i) {
      const float gi = g[i] + wd * w[i];
      const float si = rho * s[i] + (1.0f - rho) * gi * gi;
      s[i] = si;
      w[i] -= lr * gi / (std::sqrt(si) + eps);
    }
  }

 private:
  const float rho_;
  const float eps_;
  const float wd_;
};

// Adam (Kingma & Ba 2015, Algorithm 1) and AdamW (Loshchilov & Hutter 2019):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   w -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// AdamW first decays w -= lr * wd * w; Adam adds wd * w to g instead.
class Adam final : public UpdateRule {
 public:
  Adam(const v1::OptimizerConfig& c, bool decoupled)
      : UpdateRule(c.learning_rate()),
        b1_(c.beta1()),
        b2_(c.beta2()),
        eps_(c.epsilon()),
        wd_(c.weight_decay()),
        decoupled_(decoupled) {}
  int num_slots() const override { return 2; }
  void Apply(float* __restrict w, const float* __restrict g,
             float* __restrict slots, size_t n, uint64_t step,
             float lr) const override {
    float* __restrict m = slots;
    float* __restrict v = slots + n;
    const float b1 = b1_, b2 = b2_, eps = eps_;
    const double t = static_cast<double>(step);
    const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(double{b1}, t)));
    const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(double{b2}, t)));
    const float l2 = decoupled_ ? 0.0f : wd_;
    const float decay = decoupled_ ? 1.0f - lr * wd_ : 1.0f;
    for (size_t i = 0; i < n; ++i) {
      const float wi = w[i] * decay;
      const float gi = g[i] + l2 * w[i];
      const float mi = b1 * m[i] + (1.0f - b1) * gi;
      const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      w[i] = wi - lr * (mi * c1) / (std::sqrt(vi * c2) + eps);
    }
  }

 private:
  const float b1_;
  const float b2_;
  const float eps_;
  const float wd_;
  const bool decoupled_;
};

}  // namespace

float CompensatedRate(v1::Compensation compensation, float lr,
                      uint64_t staleness) {
  if (compensation == v1::COMPENSATION_INVERSE && staleness > 1) {
    return lr / static_cast<float>(staleness);
  }
  return lr;
}

std::unique_ptr<UpdateRule> UpdateRule::Create(
    const v1::OptimizerConfig& config) {
  switch (config.kind()) {
    case v1::OPTIMIZER_MOMENTUM:
      return std::make_unique<Momentum>(config, /*nesterov=*/false);
    case v1::OPTIMIZER_NESTEROV:
      return std::make_unique<Momentum>(config, /*nesterov=*/true);
    case v1::OPTIMIZER_ADAGRAD:
      return std::make_unique<Adagrad>(config);
    case v1::OPTIMIZER_RMSPROP:
      return std::make_unique<RmsProp>(config);
    case v1::OPTIMIZER_ADAM:
      return std::make_unique<Adam>(config, /*decoupled=*/false);
    case v1::OPTIMIZER_ADAMW:
      return std::make_unique<Adam>(config, /*decoupled=*/true);
    default:
      return std::make_unique<Sgd>(config);
  }
}

}  // namespace pskit
