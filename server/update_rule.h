// server/update_rule.h
//
// UpdateRule: one optimizer's per-chunk update, w <- f(w, g, slots, step).
// Each optimizer is a small class behind this interface (update_rule.cc); the
// unit tests check each against a scalar reference of its formula.
//
// Also here: CompensatedRate (staleness compensation of the learning rate).
// NormalizeConfig, which fills an optimizer config's defaults, is in
// common/optimizer_config.h (the worker's local baseline needs it too).
//
// Example:
//   PSKIT_ASSIGN_OR_RETURN(v1::NamespaceConfig cfg, NormalizeConfig(req));
//   PSKIT_ASSIGN_OR_RETURN(auto rule, UpdateRule::Create(cfg.optimizer()));
//   bool finite = rule->Update(w, g, slots, w_new, slots_new, n, version + 1,
//       CompensatedRate(cfg, rule->learning_rate(), staleness));
//
// Thread safety: an UpdateRule is immutable; Update may run concurrently on
// different chunks (the caller holds the chunk's lock).
#ifndef PSKIT_SERVER_UPDATE_RULE_H_
#define PSKIT_SERVER_UPDATE_RULE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/optimizer_config.h"
#include "pskit/v1/ps.pb.h"

namespace pskit {

// The learning rate to apply to a gradient `staleness` versions old:
// `lr` for COMPENSATION_NONE, lr / max(1, staleness) for COMPENSATION_INVERSE.
float CompensatedRate(v1::Compensation compensation, float lr,
                      uint64_t staleness);

class UpdateRule {
 public:
  // `config` must come from NormalizeConfig.
  static std::unique_ptr<UpdateRule> Create(const v1::OptimizerConfig& config);

  virtual ~UpdateRule() = default;

  // Number of float slots per element (momentum: 1, adam: 2, ...).
  virtual int num_slots() const = 0;
  // Value a fresh slot starts at (adagrad's initial accumulator, else 0).
  virtual float initial_slot_value() const { return 0.0f; }
  float learning_rate() const { return lr_; }

  // Computes one update of a chunk's `n` elements out of place: `w` the
  // values, `g` the gradient, `slots` num_slots() * n floats laid out slot
  // after slot; the new values go to `w_out` and the new slots to
  // `slots_out` (same layout). `step` >= 1 is the number of updates
  // including this one (Adam's bias correction), `lr` the (compensated)
  // learning rate. No output may overlap an input. Returns whether every new
  // value and slot is finite; the check is fused into the update's loop, so
  // it costs no extra pass. Out of place so that the caller can check a
  // whole request before committing any of it (server/chunk_store.cc).
  virtual bool Update(const float* w, const float* g, const float* slots,
                      float* w_out, float* slots_out, size_t n, uint64_t step,
                      float lr) const = 0;

  // Update in place, through temporary copies: for tests and benchmarks.
  // Returns what Update returns; `w` and `slots` are updated either way.
  bool Apply(float* w, const float* g, float* slots, size_t n, uint64_t step,
             float lr) const;

 protected:
  explicit UpdateRule(float lr) : lr_(lr) {}

 private:
  const float lr_;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_UPDATE_RULE_H_
