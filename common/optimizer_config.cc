#include "common/optimizer_config.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/staleness_config.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace pskit {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Reflection;

// One float setting of OptimizerConfig and its bounds.
struct Setting {
  const char* name;
  Bounds bounds;
};

constexpr Setting kSettings[] = {
    {"learning_rate", {0, true, kMaxLearningRate, false}},
    {"momentum", {0, false, 1, true}},
    {"beta1", {0, false, 1, true}},
    {"beta2", {0, false, 1, true}},
    {"epsilon", {kMinEpsilon, false, kMaxEpsilon, false}},
    {"weight_decay", {0, false, kMaxWeightDecay, false}},
    {"rho", {0, false, 1, true}},
    {"initial_accumulator", {0, false, kMaxInitialAccumulator, false}},
};

float DefaultOf(absl::string_view name, v1::OptimizerKind kind) {
  if (name == "learning_rate") return 0.01f;
  if (name == "momentum" || name == "beta1" || name == "rho") return 0.9f;
  if (name == "beta2") return 0.999f;
  if (name == "epsilon") return kind == v1::OPTIMIZER_ADAGRAD ? 1e-10f : 1e-8f;
  if (name == "weight_decay") return kind == v1::OPTIMIZER_ADAMW ? 0.01f : 0.0f;
  return 0.0f;  // initial_accumulator
}

absl::Status CheckRange(const Setting& s, float value) {
  absl::Status st =
      CheckBounds(absl::StrCat("optimizer ", s.name), value, s.bounds);
  if (st.ok()) return st;
  return absl::InvalidArgumentError(absl::StrCat(
      st.message(), " (the bounds keep one update finite)"));
}

bool Uses(v1::OptimizerKind kind, absl::string_view field) {
  const std::vector<std::string> used = FieldsUsedBy(kind);
  return std::find(used.begin(), used.end(), field) != used.end();
}

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
  const Reflection* r = o->GetReflection();
  const Descriptor* d = o->GetDescriptor();
  for (const Setting& s : kSettings) {
    const FieldDescriptor* f = d->FindFieldByName(s.name);
    if (!r->HasField(*o, f)) r->SetFloat(o, f, DefaultOf(s.name, o->kind()));
    if (Uses(o->kind(), s.name)) {
      PSKIT_RETURN_IF_ERROR(CheckRange(s, r->GetFloat(*o, f)));
    }
  }
  PSKIT_RETURN_IF_ERROR(NormalizeStaleness(&out));
  return out;
}

absl::Status CheckSettingsUsed(const v1::OptimizerConfig& given,
                               v1::OptimizerKind kind) {
  std::vector<const FieldDescriptor*> set;
  given.GetReflection()->ListFields(given, &set);
  for (const FieldDescriptor* f : set) {
    if (f->name() == "kind" || Uses(kind, f->name())) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        v1::OptimizerKind_Name(kind), " does not read '", f->name(),
        "'; it takes ", absl::StrJoin(FieldsUsedBy(kind), ", "), ". Leave '",
        f->name(), "' unset"));
  }
  return absl::OkStatus();
}

std::string DiffConfigs(const v1::NamespaceConfig& have,
                        const v1::NamespaceConfig& want,
                        absl::string_view have_label,
                        absl::string_view want_label) {
  std::vector<std::string> diffs;
  auto add = [&](absl::string_view name, const std::string& a,
                 const std::string& b) {
    if (a == b) return;
    diffs.push_back(
        absl::StrCat(name, ": ", have_label, " ", a, ", ", want_label, " ", b));
  };
  const v1::OptimizerConfig& a = have.optimizer();
  const v1::OptimizerConfig& b = want.optimizer();
  add("kind", v1::OptimizerKind_Name(a.kind()),
      v1::OptimizerKind_Name(b.kind()));
  const Reflection* r = a.GetReflection();
  const Descriptor* d = a.GetDescriptor();
  auto shown = [&](const v1::OptimizerConfig& o, const FieldDescriptor* f) {
    return r->HasField(o, f) ? absl::StrCat(r->GetFloat(o, f))
                             : std::string("unset");
  };
  for (const Setting& s : kSettings) {
    const FieldDescriptor* f = d->FindFieldByName(s.name);
    add(s.name, shown(a, f), shown(b, f));
  }
  add("compensation", CompensationName(have.compensation()),
      CompensationName(want.compensation()));
  add("consistency", ConsistencyName(have), ConsistencyName(want));
  const v1::StalenessSettings& sa = have.staleness();
  const v1::StalenessSettings& sb = want.staleness();
  for (int i = 0; i < sa.GetDescriptor()->field_count(); ++i) {
    const FieldDescriptor* f = sa.GetDescriptor()->field(i);
    const Reflection* sr = sa.GetReflection();
    auto staleness_shown = [&](const v1::StalenessSettings& s) {
      if (!sr->HasField(s, f)) return std::string("unset");
      return f->cpp_type() == FieldDescriptor::CPPTYPE_INT32
                 ? absl::StrCat(sr->GetInt32(s, f))
                 : absl::StrCat(sr->GetFloat(s, f));
    };
    add(f->name(), staleness_shown(sa), staleness_shown(sb));
  }
  return absl::StrJoin(diffs, "; ");
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
  absl::StrAppend(&out, DescribeStaleness(config));
  return out;
}

}  // namespace pskit
