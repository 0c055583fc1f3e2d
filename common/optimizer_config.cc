#include "common/optimizer_config.h"

#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pskit {
namespace {

absl::Status CheckRange(const char* name, float value, float lo, bool lo_open,
                        float hi, bool hi_open) {
  const bool ok = std::isfinite(value) && (lo_open ? value > lo : value >= lo) &&
                  (hi_open ? value < hi : value <= hi);
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "optimizer ", name, " is ", value, "; it must be in ", lo_open ? "(" : "[",
      lo, ", ", hi, hi_open ? ")" : "]"));
}

constexpr float kInf = std::numeric_limits<float>::infinity();

}  // namespace

absl::StatusOr<v1::NamespaceConfig> NormalizeConfig(
    const v1::NamespaceConfig& config) {
  v1::NamespaceConfig out = config;
  v1::OptimizerConfig* o = out.mutable_optimizer();
  switch (o->kind()) {
    case v1::OPTIMIZER_SGD:
    case v1::OPTIMIZER_MOMENTUM:
    case v1::OPTIMIZER_NESTEROV:
    case v1::OPTIMIZER_ADAGRAD:
    case v1::OPTIMIZER_RMSPROP:
    case v1::OPTIMIZER_ADAM:
    case v1::OPTIMIZER_ADAMW:
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer kind ", static_cast<int>(o->kind()),
          " is not known; use sgd, momentum, nesterov, adagrad, rmsprop, adam "
          "or adamw"));
  }
  if (!o->has_learning_rate()) o->set_learning_rate(0.01f);
  if (!o->has_momentum()) o->set_momentum(0.9f);
  if (!o->has_beta1()) o->set_beta1(0.9f);
  if (!o->has_beta2()) o->set_beta2(0.999f);
  if (!o->has_epsilon()) {
    o->set_epsilon(o->kind() == v1::OPTIMIZER_ADAGRAD ? 1e-10f : 1e-8f);
  }
  if (!o->has_weight_decay()) {
    o->set_weight_decay(o->kind() == v1::OPTIMIZER_ADAMW ? 0.01f : 0.0f);
  }
  if (!o->has_rho()) o->set_rho(0.9f);
  if (!o->has_initial_accumulator()) o->set_initial_accumulator(0.0f);

  absl::Status s;
  for (absl::Status check :
       {CheckRange("learning_rate", o->learning_rate(), 0, true, kInf, true),
        CheckRange("momentum", o->momentum(), 0, false, 1, true),
        CheckRange("beta1", o->beta1(), 0, false, 1, true),
        CheckRange("beta2", o->beta2(), 0, false, 1, true),
        CheckRange("epsilon", o->epsilon(), 0, true, kInf, true),
        CheckRange("weight_decay", o->weight_decay(), 0, false, kInf, true),
        CheckRange("rho", o->rho(), 0, false, 1, true),
        CheckRange("initial_accumulator", o->initial_accumulator(), 0, false,
                   kInf, true)}) {
    if (!check.ok()) return check;
  }
  switch (out.compensation()) {
    case v1::COMPENSATION_UNSPECIFIED:
      out.set_compensation(v1::COMPENSATION_NONE);
      break;
    case v1::COMPENSATION_NONE:
    case v1::COMPENSATION_INVERSE:
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "compensation ", static_cast<int>(out.compensation()),
          " is not known; use COMPENSATION_NONE or COMPENSATION_INVERSE"));
  }
  return out;
}

std::string DescribeConfig(const v1::NamespaceConfig& config) {
  const v1::OptimizerConfig& o = config.optimizer();
  std::string kind = v1::OptimizerKind_Name(o.kind());
  std::string out = absl::StrCat(kind, " lr=", o.learning_rate());
  switch (o.kind()) {
    case v1::OPTIMIZER_MOMENTUM:
    case v1::OPTIMIZER_NESTEROV:
      absl::StrAppend(&out, " momentum=", o.momentum());
      break;
    case v1::OPTIMIZER_ADAGRAD:
      absl::StrAppend(&out, " epsilon=", o.epsilon(),
                      " initial_accumulator=", o.initial_accumulator());
      break;
    case v1::OPTIMIZER_RMSPROP:
      absl::StrAppend(&out, " rho=", o.rho(), " epsilon=", o.epsilon());
      break;
    case v1::OPTIMIZER_ADAM:
    case v1::OPTIMIZER_ADAMW:
      absl::StrAppend(&out, " beta1=", o.beta1(), " beta2=", o.beta2(),
                      " epsilon=", o.epsilon());
      break;
    default:
      break;
  }
  absl::StrAppend(&out, " weight_decay=", o.weight_decay(), " compensation=",
                  v1::Compensation_Name(config.compensation()));
  return out;
}

}  // namespace pskit
