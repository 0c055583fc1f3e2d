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

std::vector<std::string> FieldsUsedBy(v1::OptimizerKind kind) {
  switch (kind) {
    case v1::OPTIMIZER_MOMENTUM:
    case v1::OPTIMIZER_NESTEROV:
      return {"learning_rate", "momentum", "weight_decay"};
    case v1::OPTIMIZER_ADAGRAD:
      return {"learning_rate", "epsilon", "initial_accumulator",
              "weight_decay"};
    case v1::OPTIMIZER_RMSPROP:
      return {"learning_rate", "rho", "epsilon", "weight_decay"};
    case v1::OPTIMIZER_ADAM:
    case v1::OPTIMIZER_ADAMW:
      return {"learning_rate", "beta1", "beta2", "epsilon", "weight_decay"};
    default:
      return {"learning_rate", "weight_decay"};
  }
}

std::string DescribeConfig(const v1::NamespaceConfig& config) {
  const v1::OptimizerConfig& o = config.optimizer();
  // learning_rate first, then the kind's own fields in FieldsUsedBy order.
  std::string out = v1::OptimizerKind_Name(o.kind());
  const google::protobuf::Reflection* r = o.GetReflection();
  const google::protobuf::Descriptor* d = o.GetDescriptor();
  for (const std::string& name : FieldsUsedBy(o.kind())) {
    const std::string shown = name == "learning_rate" ? "lr" : name;
    absl::StrAppend(&out, " ", shown, "=",
                    r->GetFloat(o, d->FindFieldByName(name)));
  }
  absl::StrAppend(&out, " compensation=",
                  v1::Compensation_Name(config.compensation()));
  return out;
}

}  // namespace pskit
