// server/compensation.cc
//
// The compensations that keep state (server/compensation.h): DcAsgd (both
// forms) and Gem. Each Apply is a few plain loops around the optimizer's own
// UpdateRule::Update, so every optimizer gets them.
#include "server/compensation.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

namespace pskit {
namespace {

// 1 when `x` is NaN or +-inf, else 0 (as in update_rule.cc).
inline uint32_t NonFinite(float x) {
  return static_cast<uint32_t>((std::bit_cast<uint32_t>(x) & 0x7f800000u) ==
                               0x7f800000u);
}

// The sum of `x[0..n)`, in double with four independent partial sums (a
// single running sum is one long dependency chain).
double SumOf(const float* x, size_t n) {
  double a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += x[i];
    b += x[i + 1];
    c += x[i + 2];
    d += x[i + 3];
  }
  for (; i < n; ++i) a += x[i];
  return (a + b) + (c + d);
}

// The element-wise loops, as functions of restrict parameters: GCC honours
// restrict on parameters, not on local pointers copied from a struct, and
// without it these loops need more runtime alias checks than it will emit,
// so they stayed scalar (gem's was 14x the momentum update in perf).

// dcasgd-a: MS, the corrected gradient and each lambda_t; returns the
// non-finite bits of MS.
uint32_t DcAsgdAdaptiveLoop(const float* __restrict w,
                            const float* __restrict g,
                            const float* __restrict bak,
                            const float* __restrict ms,
                            float* __restrict ms_out, float* __restrict gc,
                            float* __restrict lambdas, size_t n, float m,
                            float l0, float eps) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float gg = g[i] * g[i];
    const float msi = m * ms[i] + (1.0f - m) * gg;
    const float li = l0 / std::sqrt(msi + eps);
    ms_out[i] = msi;
    gc[i] = g[i] + li * gg * (w[i] - bak[i]);
    lambdas[i] = li;
    bad |= NonFinite(msi);
  }
  return bad;
}

// gem: from the optimizer's values `w_opt` (each replaced by its pi), the
// new values and m_i; returns the non-finite bits of both.
uint32_t GemLoop(const float* __restrict w, float* __restrict w_opt,
                 const float* __restrict s, const float* __restrict m,
                 float* __restrict m_out, float* __restrict w_out, size_t n,
                 float mu, float kappa, float eps) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float d = w_opt[i] - w[i];
    const float mi = mu * m[i] + d;
    const float raw =
        (kappa * std::fabs(mi) - std::fabs(w[i] - s[i])) / (std::fabs(d) + eps);
    const float lo = raw > 0.0f ? raw : 0.0f;
    const float pi = lo < 5.0f ? lo : 5.0f;
    const float wi = w[i] + pi * d;
    m_out[i] = mi;
    w_out[i] = wi;
    w_opt[i] = pi;
    bad |= NonFinite(wi) | NonFinite(mi);
  }
  return bad;
}

// DC-ASGD: g' = g + lambda * g * g * (w - w_bak), then the optimizer on g'.
// Adaptive: MS <- m MS + (1 - m) g * g, lambda = lambda0 / sqrt(MS + eps).
class DcAsgd final : public Compensation {
 public:
  DcAsgd(const v1::StalenessSettings& s, bool adaptive)
      : lambda_(s.dc_lambda()),
        momentum_(s.dc_momentum()),
        epsilon_(s.dc_epsilon()),
        adaptive_(adaptive) {}
  const char* name() const override {
    return adaptive_ ? "dcasgd-a" : "dcasgd-c";
  }
  int index() const override { return adaptive_ ? 1 : 0; }
  int worker_floats() const override { return 1; }
  int shared_floats() const override { return adaptive_ ? 1 : 0; }
  void RecordPull(const float* w, float* state, size_t n) const override {
    std::memcpy(state, w, n * sizeof(float));
  }
  void InitState(const float* w, float* state, size_t n) const override {
    std::memcpy(state, w, n * sizeof(float));
  }
  bool Apply(const UpdateRule& rule, const Input& in, const Output& out,
             float* scale) const override {
    const size_t n = in.n;
    const float* __restrict w = in.w;
    const float* __restrict g = in.g;
    const float* __restrict bak = in.state;
    float* __restrict gc = out.scratch;
    uint32_t bad = 0;
    if (adaptive_) {
      const float* __restrict ms = in.shared;
      float* __restrict ms_out = out.shared;
      // Each lambda_t goes to out.w (free until rule.Update writes it) and
      // is summed apart, so the loop has no floating-point reduction and
      // vectorises.
      bad = DcAsgdAdaptiveLoop(w, g, bak, ms, ms_out, gc, out.w, n, momentum_,
                               lambda_, epsilon_);
      *scale = n > 0 ? static_cast<float>(SumOf(out.w, n) / n) : 0.0f;
    } else {
      const float l = lambda_;
      for (size_t i = 0; i < n; ++i) {
        gc[i] = g[i] + l * g[i] * g[i] * (w[i] - bak[i]);
      }
      *scale = l;
    }
    const bool finite = rule.Update(w, gc, in.slots, out.w, out.slots, n,
                                    in.step, in.lr);
    // The worker's backup stays what it pulled until its next pull.
    std::memcpy(out.state, bak, n * sizeof(float));
    return finite && bad == 0;
  }

 private:
  const float lambda_;
  const float momentum_;
  const float epsilon_;
  const bool adaptive_;
};

// GEM: D = w_opt - w, m_i <- mu m_i + D,
// pi = clip((kappa |m_i| - |w - s_i|) / (|D| + eps), 0, 5), w <- w + pi D.
class Gem final : public Compensation {
 public:
  explicit Gem(const v1::StalenessSettings& s)
      : momentum_(s.gem_momentum()),
        kappa_(s.gem_kappa()),
        epsilon_(s.gem_epsilon()) {}
  const char* name() const override { return "gem"; }
  int index() const override { return 2; }
  int worker_floats() const override { return 2; }
  void RecordPull(const float* w, float* state, size_t n) const override {
    std::memcpy(state, w, n * sizeof(float));  // s_i; m_i (state + n) kept
  }
  void InitState(const float* w, float* state, size_t n) const override {
    std::memcpy(state, w, n * sizeof(float));
    std::fill(state + n, state + 2 * n, 0.0f);
  }
  bool Apply(const UpdateRule& rule, const Input& in, const Output& out,
             float* scale) const override {
    const size_t n = in.n;
    float* __restrict w_opt = out.scratch;
    bool finite = rule.Update(in.w, in.g, in.slots, w_opt, out.slots, n,
                              in.step, in.lr);
    const float* __restrict w = in.w;
    const float* __restrict s = in.state;
    const float* __restrict m = in.state + n;
    float* __restrict s_out = out.state;
    float* __restrict m_out = out.state + n;
    float* __restrict w_out = out.w;
    // s_i stays what the worker pulled until its next pull.
    std::memcpy(s_out, s, n * sizeof(float));
    // Each pi replaces its w_opt in place and is summed apart, so the loop
    // has no floating-point reduction and vectorises.
    const uint32_t bad = GemLoop(w, w_opt, s, m, m_out, w_out, n, momentum_,
                                 kappa_, epsilon_);
    *scale = n > 0 ? static_cast<float>(SumOf(w_opt, n) / n) : 0.0f;
    return finite && bad == 0;
  }

 private:
  const float momentum_;
  const float kappa_;
  const float epsilon_;
};

}  // namespace

void CompensationScales::Observe(int rule, double scale) {
  if (rule < 0 || rule >= kRules) return;
  PerRule& r = rules_[rule];
  size_t b = 0;
  while (b < kBounds.size() && scale > kBounds[b]) ++b;
  r.buckets[b].fetch_add(1, std::memory_order_relaxed);
  double sum = r.sum.load(std::memory_order_relaxed);
  while (!r.sum.compare_exchange_weak(sum, sum + scale,
                                      std::memory_order_relaxed)) {
  }
}

CompensationScales::Counts CompensationScales::Read(int rule) const {
  Counts out;
  if (rule < 0 || rule >= kRules) return out;
  const PerRule& r = rules_[rule];
  for (size_t b = 0; b < r.buckets.size(); ++b) {
    out.buckets[b] = r.buckets[b].load(std::memory_order_relaxed);
    out.count += out.buckets[b];
  }
  out.sum = r.sum.load(std::memory_order_relaxed);
  return out;
}

std::unique_ptr<const Compensation> Compensation::Create(
    const v1::NamespaceConfig& config) {
  switch (config.compensation()) {
    case v1::COMPENSATION_DCASGD_C:
      return std::make_unique<DcAsgd>(config.staleness(), /*adaptive=*/false);
    case v1::COMPENSATION_DCASGD_A:
      return std::make_unique<DcAsgd>(config.staleness(), /*adaptive=*/true);
    case v1::COMPENSATION_GEM:
      return std::make_unique<Gem>(config.staleness());
    default:
      return nullptr;
  }
}

}  // namespace pskit
