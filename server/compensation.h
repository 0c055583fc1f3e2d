// server/compensation.h
//
// Compensation: the staleness compensations that keep state on the shard,
// one small class per rule (compensation.cc), created from a namespace's
// normalized NamespaceConfig next to its UpdateRule (server/update_rule.h):
//
//   dcasgd-c  DC-ASGD, constant lambda (Zheng et al., ICML 2017): at worker
//             m's pull w_bak[m] <- w; at its push the optimizer gets
//             g' = g + lambda * g * g * (w - w_bak[m]).
//   dcasgd-a  the same with lambda_t = dc_lambda / sqrt(MS + dc_epsilon),
//             MS <- dc_momentum MS + (1 - dc_momentum) g * g first (MS per
//             element, shared by the workers).
//   gem       GEM, server side (Hermans & Louppe, arXiv 1805.08469): at
//             worker i's pull s_i <- w; at its push the optimizer's update
//             D = w_opt - w (-lr g for sgd), m_i <- gem_momentum m_i + D,
//             pi = clip((gem_kappa |m_i| - |w - s_i|) / (|D| + gem_epsilon),
//             0, 5), w <- w + pi * D.
//
// none and inverse keep no state: Create returns null for them and the
// shard applies CompensatedRate (server/update_rule.h) as before.
//
// Per-worker state: worker_floats() floats per element of a chunk (dcasgd:
// w_bak; gem: s_i then m_i), shared state: shared_floats() per element
// (dcasgd-a: MS). Where it lives, its life cycle and its checkpoints:
// ChunkStore (server/chunk_store.h, "Compensation state").
//
// Example:
//   std::unique_ptr<const Compensation> comp = Compensation::Create(cfg);
//   if (comp != nullptr) {
//     comp->RecordPull(w, state, n);                        // at a pull
//     bool finite = comp->Apply(rule, {w, g, slots, state, shared, n, step,
//                                      lr}, out, &scale);   // at a push
//   }
//
// Thread safety: a Compensation is immutable; Apply and RecordPull may run
// concurrently on different chunks (the caller holds the chunk's lock).
#ifndef PSKIT_SERVER_COMPENSATION_H_
#define PSKIT_SERVER_COMPENSATION_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "pskit/v1/ps.pb.h"
#include "server/update_rule.h"

namespace pskit {

class Compensation {
 public:
  // What a push reads. `state` is the worker's (worker_floats() * n floats,
  // field after field), `shared` the chunk's (shared_floats() * n floats).
  struct Input {
    const float* w;
    const float* g;
    const float* slots;  // the optimizer's, rule.num_slots() * n floats
    const float* state;
    const float* shared;
    size_t n;
    uint64_t step;  // as UpdateRule::Update's
    float lr;       // as UpdateRule::Update's
  };
  // Where a push writes; no output may overlap an input. `scratch` is n
  // floats of working space.
  struct Output {
    float* w;
    float* slots;
    float* state;
    float* shared;
    float* scratch;
  };

  // Null for none, inverse and unspecified. `config` must come from
  // NormalizeConfig (its settings in bounds).
  static std::unique_ptr<const Compensation> Create(
      const v1::NamespaceConfig& config);

  virtual ~Compensation() = default;

  // "dcasgd-c", "dcasgd-a", "gem": the metrics' rule label.
  virtual const char* name() const = 0;
  // 0, 1, 2 for dcasgd-c, dcasgd-a, gem (CompensationScales' index).
  virtual int index() const = 0;
  // Floats of per-worker state per element (dcasgd: 1, gem: 2).
  virtual int worker_floats() const = 0;
  // Floats of shared per-chunk state per element (dcasgd-a: 1; others 0).
  // Fresh shared state is zeros.
  virtual int shared_floats() const { return 0; }

  // A pull answered `w`: records it in the worker's `state` in place
  // (dcasgd: w_bak <- w; gem: s_i <- w, m_i kept).
  virtual void RecordPull(const float* w, float* state, size_t n) const = 0;
  // Fresh state of a worker whose first call here is a push: as if it
  // pulled `w` now (dcasgd: w_bak = w, no correction; gem: s_i = w,
  // m_i = 0).
  virtual void InitState(const float* w, float* state, size_t n) const = 0;

  // Computes one compensated update of `n` elements out of place with the
  // optimizer `rule`: new values, optimizer slots, worker state and shared
  // state go to `out`. Returns whether every new value, optimizer slot and
  // state float is finite. `*scale` gets the compensation's mean scale over
  // the chunk (gem: pi; dcasgd-a: lambda_t; dcasgd-c: lambda).
  virtual bool Apply(const UpdateRule& rule, const Input& in,
                     const Output& out, float* scale) const = 0;
};

// The compensation's scale per push chunk (Compensation::Apply's *scale),
// counted per rule into the buckets of the histogram
// pskit_server_compensation_scale{rule} (server/server_metrics.h).
//
// Thread safety: Observe and Read may be called concurrently (atomics).
class CompensationScales {
 public:
  static constexpr int kRules = 3;
  static constexpr std::array<double, 11> kBounds = {
      0.0, 0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0};
  static constexpr std::array<const char*, kRules> kNames = {
      "dcasgd-c", "dcasgd-a", "gem"};

  // One push chunk of rule `rule` (Compensation::index()).
  void Observe(int rule, double scale);

  struct Counts {
    std::array<uint64_t, kBounds.size() + 1> buckets{};  // not cumulative
    uint64_t count = 0;
    double sum = 0.0;
  };
  Counts Read(int rule) const;

 private:
  struct PerRule {
    std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets{};
    // Atomic: pushes to different chunks observe concurrently.
    std::atomic<double> sum{0.0};
  };
  std::array<PerRule, kRules> rules_;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_COMPENSATION_H_
