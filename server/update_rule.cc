#include "server/update_rule.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/vector_clones.h"

namespace pskit {
namespace {

// Loops below are written for the vectoriser: raw restrict pointers, no calls
// but sqrt (which -fno-math-errno makes a vector instruction), no branches.
// Each ORs NonFinite of every value and slot it writes into `bad`: a
// branch-free reduction that vectorises with the update itself.

// 1 when `x` is NaN or +-inf (all exponent bits set), else 0.
inline uint32_t NonFinite(float x) {
  return static_cast<uint32_t>((std::bit_cast<uint32_t>(x) & 0x7f800000u) ==
                               0x7f800000u);
}

// The loops, one free function each (GCC clones no virtual function).
PSKIT_VECTOR_CLONES bool SgdLoop(const float* __restrict w,
                                 const float* __restrict g,
                                 float* __restrict w_out, size_t n, float lr,
                                 float wd) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float wi = w[i] - lr * (g[i] + wd * w[i]);
    w_out[i] = wi;
    bad |= NonFinite(wi);
  }
  return bad == 0;
}

PSKIT_VECTOR_CLONES bool MomentumLoop(const float* __restrict w,
                                      const float* __restrict g,
                                      const float* __restrict v,
                                      float* __restrict w_out,
                                      float* __restrict v_out, size_t n,
                                      float lr, float mu, float wd,
                                      bool nesterov) {
  uint32_t bad = 0;
  if (nesterov) {
    for (size_t i = 0; i < n; ++i) {
      const float gi = g[i] + wd * w[i];
      const float vi = mu * v[i] + gi;
      const float wi = w[i] - lr * (gi + mu * vi);
      v_out[i] = vi;
      w_out[i] = wi;
      bad |= NonFinite(wi) | NonFinite(vi);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      const float vi = mu * v[i] + (g[i] + wd * w[i]);
      const float wi = w[i] - lr * vi;
      v_out[i] = vi;
      w_out[i] = wi;
      bad |= NonFinite(wi) | NonFinite(vi);
    }
  }
  return bad == 0;
}

// The second-moment rules: s = decay s + scale g^2, with (1, 1) for Adagrad
// and (rho, 1 - rho) for RMSprop (a product with 1 is exact, so Adagrad's
// s + g^2 comes out bit for bit).
PSKIT_VECTOR_CLONES bool ScaledLoop(const float* __restrict w,
                                    const float* __restrict g,
                                    const float* __restrict s,
                                    float* __restrict w_out,
                                    float* __restrict s_out, size_t n,
                                    float lr, float decay, float scale,
                                    float eps, float wd) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float gi = g[i] + wd * w[i];
    const float si = decay * s[i] + scale * gi * gi;
    const float wi = w[i] - lr * gi / (std::sqrt(si) + eps);
    s_out[i] = si;
    w_out[i] = wi;
    bad |= NonFinite(wi) | NonFinite(si);
  }
  return bad == 0;
}

// c1, c2: the bias corrections 1 / (1 - b^t); l2 is added to g as wd * w
// (Adam), decay multiplies w first (AdamW).
PSKIT_VECTOR_CLONES bool AdamLoop(const float* __restrict w,
                                  const float* __restrict g,
                                  const float* __restrict m,
                                  const float* __restrict v,
                                  float* __restrict w_out,
                                  float* __restrict m_out,
                                  float* __restrict v_out, size_t n, float lr,
                                  float b1, float b2, float eps, float c1,
                                  float c2, float l2, float decay) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float decayed = w[i] * decay;
    const float gi = g[i] + l2 * w[i];
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    const float wi = decayed - lr * (mi * c1) / (std::sqrt(vi * c2) + eps);
    m_out[i] = mi;
    v_out[i] = vi;
    w_out[i] = wi;
    bad |= NonFinite(wi) | NonFinite(mi) | NonFinite(vi);
  }
  return bad == 0;
}

class Sgd final : public UpdateRule {
 public:
  explicit Sgd(const v1::OptimizerConfig& c)
      : UpdateRule(c.learning_rate()), wd_(c.weight_decay()) {}
  int num_slots() const override { return 0; }
  bool Update(const float* __restrict w, const float* __restrict g,
              const float*, float* __restrict w_out, float*, size_t n, uint64_t,
              float lr) const override {
    return SgdLoop(w, g, w_out, n, lr, wd_);
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
  bool Update(const float* __restrict w, const float* __restrict g,
              const float* __restrict v, float* __restrict w_out,
              float* __restrict v_out, size_t n, uint64_t,
              float lr) const override {
    return MomentumLoop(w, g, v, w_out, v_out, n, lr, mu_, wd_, nesterov_);
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
  bool Update(const float* __restrict w, const float* __restrict g,
              const float* __restrict s, float* __restrict w_out,
              float* __restrict s_out, size_t n, uint64_t,
              float lr) const override {
    return ScaledLoop(w, g, s, w_out, s_out, n, lr, /*decay=*/1.0f,
                      /*scale=*/1.0f, eps_, wd_);
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
  bool Update(const float* __restrict w, const float* __restrict g,
              const float* __restrict s, float* __restrict w_out,
              float* __restrict s_out, size_t n, uint64_t,
              float lr) const override {
    return ScaledLoop(w, g, s, w_out, s_out, n, lr, rho_, 1.0f - rho_,
                      eps_, wd_);
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
  bool Update(const float* __restrict w, const float* __restrict g,
              const float* __restrict slots, float* __restrict w_out,
              float* __restrict slots_out, size_t n, uint64_t step,
              float lr) const override {
    const double t = static_cast<double>(step);
    const float c1 =
        static_cast<float>(1.0 / (1.0 - std::pow(double{b1_}, t)));
    const float c2 =
        static_cast<float>(1.0 / (1.0 - std::pow(double{b2_}, t)));
    const float l2 = decoupled_ ? 0.0f : wd_;
    const float decay = decoupled_ ? 1.0f - lr * wd_ : 1.0f;
    return AdamLoop(w, g, slots, slots + n, w_out, slots_out, slots_out + n,
                    n, lr, b1_, b2_, eps_, c1, c2, l2, decay);
  }

 private:
  const float b1_;
  const float b2_;
  const float eps_;
  const float wd_;
  const bool decoupled_;
};

}  // namespace

bool UpdateRule::Apply(float* w, const float* g, float* slots, size_t n,
                       uint64_t step, float lr) const {
  const size_t num_slot_floats = n * static_cast<size_t>(num_slots());
  std::vector<float> w_out(n), slots_out(num_slot_floats);
  const bool finite =
      Update(w, g, slots, w_out.data(), slots_out.data(), n, step, lr);
  std::memcpy(w, w_out.data(), n * sizeof(float));
  if (num_slot_floats > 0) {
    std::memcpy(slots, slots_out.data(), num_slot_floats * sizeof(float));
  }
  return finite;
}

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
