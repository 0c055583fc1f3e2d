#include "common/staleness_config.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/validation.h"

namespace pskit {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Reflection;

// One StalenessSettings field and its bounds (floats and int32s alike).
struct Setting {
  const char* name;
  Bounds bounds;
};

constexpr Setting kSettings[] = {
    {"dc_lambda", {0, false, kMaxDcLambda, false}},
    {"dc_momentum", {0, false, 1, true}},
    {"dc_epsilon", {0, true, 1, false}},
    {"gem_momentum", {0, false, 1, true}},
    {"gem_kappa", {0, true, kMaxGemKappa, false}},
    {"gem_epsilon", {0, true, 1, false}},
    {"ssp_bound", {0, false, kMaxSspBound, false}},
    {"backup_workers", {0, false, kMaxBackupWorkers, false}},
};

double DefaultOf(absl::string_view name, v1::Compensation compensation) {
  if (name == "dc_lambda") {
    return compensation == v1::COMPENSATION_DCASGD_C ? 0.04 : 2.0;
  }
  if (name == "dc_momentum") return 0.95;
  if (name == "dc_epsilon") return 1e-7;
  if (name == "gem_momentum") return 0.9;
  if (name == "gem_kappa") return 1.0;
  if (name == "gem_epsilon") return 1e-12;
  if (name == "ssp_bound") return 2;
  return 0;  // backup_workers
}

double Get(const v1::StalenessSettings& s, const FieldDescriptor* f) {
  const Reflection* r = s.GetReflection();
  return f->cpp_type() == FieldDescriptor::CPPTYPE_INT32 ? r->GetInt32(s, f)
                                                         : r->GetFloat(s, f);
}

void Set(v1::StalenessSettings* s, const FieldDescriptor* f, double v) {
  const Reflection* r = s->GetReflection();
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_INT32) {
    r->SetInt32(s, f, static_cast<int32_t>(v));
  } else {
    r->SetFloat(s, f, static_cast<float>(v));
  }
}

bool Uses(v1::Compensation c, v1::Consistency k, absl::string_view field) {
  const std::vector<std::string> used = StalenessFieldsUsedBy(c, k);
  return std::find(used.begin(), used.end(), field) != used.end();
}

bool PerWorker(v1::Compensation c) {
  return c == v1::COMPENSATION_DCASGD_C || c == v1::COMPENSATION_DCASGD_A ||
         c == v1::COMPENSATION_GEM;
}

}  // namespace

std::vector<std::string> StalenessFieldsUsedBy(v1::Compensation compensation,
                                               v1::Consistency consistency) {
  std::vector<std::string> out;
  switch (compensation) {
    case v1::COMPENSATION_DCASGD_C:
      out = {"dc_lambda"};
      break;
    case v1::COMPENSATION_DCASGD_A:
      out = {"dc_lambda", "dc_momentum", "dc_epsilon"};
      break;
    case v1::COMPENSATION_GEM:
      out = {"gem_momentum", "gem_kappa", "gem_epsilon"};
      break;
    default:
      break;
  }
  if (consistency == v1::CONSISTENCY_SSP) out.push_back("ssp_bound");
  if (consistency == v1::CONSISTENCY_SYNC) out.push_back("backup_workers");
  return out;
}

absl::Status NormalizeStaleness(v1::NamespaceConfig* config) {
  switch (config->compensation()) {
    case v1::COMPENSATION_UNSPECIFIED:
      config->set_compensation(v1::COMPENSATION_NONE);
      break;
    case v1::COMPENSATION_NONE:
    case v1::COMPENSATION_INVERSE:
    case v1::COMPENSATION_DCASGD_C:
    case v1::COMPENSATION_DCASGD_A:
    case v1::COMPENSATION_GEM:
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "compensation ", static_cast<int>(config->compensation()),
          " is not known; use none, inverse, dcasgd-c, dcasgd-a or gem"));
  }
  switch (config->consistency()) {
    case v1::CONSISTENCY_UNSPECIFIED:
      config->set_consistency(v1::CONSISTENCY_ASYNC);
      break;
    case v1::CONSISTENCY_ASYNC:
    case v1::CONSISTENCY_SSP:
    case v1::CONSISTENCY_SYNC:
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "consistency ", static_cast<int>(config->consistency()),
          " is not known; use async, ssp:S or sync[:B]"));
  }
  if (config->consistency() == v1::CONSISTENCY_SYNC &&
      PerWorker(config->compensation())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compensation ", CompensationName(config->compensation()),
        " cannot go with consistency sync: a sync round applies the average "
        "of every worker's gradient, which is never stale; use compensation "
        "none, or consistency async or ssp"));
  }
  v1::StalenessSettings* s = config->mutable_staleness();
  const Reflection* r = s->GetReflection();
  const Descriptor* d = s->GetDescriptor();
  for (const Setting& setting : kSettings) {
    const FieldDescriptor* f = d->FindFieldByName(setting.name);
    if (!r->HasField(*s, f)) {
      Set(s, f, DefaultOf(setting.name, config->compensation()));
    }
    if (!Uses(config->compensation(), config->consistency(), setting.name)) {
      continue;
    }
    PSKIT_RETURN_IF_ERROR(
        CheckBounds(setting.name, Get(*s, f), setting.bounds));
  }
  return absl::OkStatus();
}

absl::Status CheckStalenessSettingsUsed(const v1::StalenessSettings& given,
                                        v1::Compensation compensation,
                                        v1::Consistency consistency) {
  std::vector<const FieldDescriptor*> set;
  given.GetReflection()->ListFields(given, &set);
  for (const FieldDescriptor* f : set) {
    if (Uses(compensation, consistency, f->name())) continue;
    const std::vector<std::string> used =
        StalenessFieldsUsedBy(compensation, consistency);
    v1::NamespaceConfig shown;
    shown.set_consistency(consistency);
    return absl::InvalidArgumentError(absl::StrCat(
        "'", f->name(), "' is not read by compensation ",
        CompensationName(compensation), " with consistency ",
        ConsistencyName(shown), "; ",
        used.empty() ? std::string("they take no settings")
                     : absl::StrCat("they take ", absl::StrJoin(used, ", ")),
        ". Leave '", f->name(), "' unset"));
  }
  return absl::OkStatus();
}

void ClearUnusedStaleness(v1::NamespaceConfig* config) {
  v1::StalenessSettings* s = config->mutable_staleness();
  const Reflection* r = s->GetReflection();
  const Descriptor* d = s->GetDescriptor();
  for (const Setting& setting : kSettings) {
    if (!Uses(config->compensation(), config->consistency(), setting.name)) {
      r->ClearField(s, d->FindFieldByName(setting.name));
    }
  }
}

absl::Status ParseCompensation(absl::string_view text, v1::Compensation* out) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "none") {
    *out = v1::COMPENSATION_NONE;
  } else if (t == "inverse") {
    *out = v1::COMPENSATION_INVERSE;
  } else if (t == "dcasgd-c") {
    *out = v1::COMPENSATION_DCASGD_C;
  } else if (t == "dcasgd-a") {
    *out = v1::COMPENSATION_DCASGD_A;
  } else if (t == "gem") {
    *out = v1::COMPENSATION_GEM;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "compensation '", text,
        "' is not known; use none, inverse, dcasgd-c, dcasgd-a or gem"));
  }
  return absl::OkStatus();
}

std::string CompensationName(v1::Compensation compensation) {
  switch (compensation) {
    case v1::COMPENSATION_UNSPECIFIED:
    case v1::COMPENSATION_NONE:
      return "none";
    case v1::COMPENSATION_INVERSE:
      return "inverse";
    case v1::COMPENSATION_DCASGD_C:
      return "dcasgd-c";
    case v1::COMPENSATION_DCASGD_A:
      return "dcasgd-a";
    case v1::COMPENSATION_GEM:
      return "gem";
    default:
      return absl::StrCat("unknown(", static_cast<int>(compensation), ")");
  }
}

absl::Status ParseConsistency(absl::string_view text,
                              v1::NamespaceConfig* config) {
  const std::string t = absl::AsciiStrToLower(text);
  const size_t colon = t.find(':');
  const std::string name = t.substr(0, colon);
  const bool has_arg = colon != std::string::npos;
  int64_t arg = 0;
  if (has_arg && (!absl::SimpleAtoi(t.substr(colon + 1), &arg) || arg < 0 ||
                  arg > kMaxSspBound)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "consistency '", text, "': '", t.substr(colon + 1),
        "' is not an integer in [0, ", kMaxSspBound,
        "]; write ssp:S (S the bound) or sync:B (B backup workers)"));
  }
  if (name == "async" && !has_arg) {
    config->set_consistency(v1::CONSISTENCY_ASYNC);
  } else if (name == "ssp") {
    config->set_consistency(v1::CONSISTENCY_SSP);
    if (has_arg) config->mutable_staleness()->set_ssp_bound(arg);
  } else if (name == "sync") {
    config->set_consistency(v1::CONSISTENCY_SYNC);
    if (has_arg) config->mutable_staleness()->set_backup_workers(arg);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "consistency '", text,
        "' is not known; use async, ssp:S (S >= 0 the staleness bound), sync "
        "or sync:B (B backup workers)"));
  }
  return absl::OkStatus();
}

std::string ConsistencyName(const v1::NamespaceConfig& config) {
  switch (config.consistency()) {
    case v1::CONSISTENCY_UNSPECIFIED:
    case v1::CONSISTENCY_ASYNC:
      return "async";
    case v1::CONSISTENCY_SSP:
      return config.staleness().has_ssp_bound()
                 ? absl::StrCat("ssp:", config.staleness().ssp_bound())
                 : std::string("ssp");
    case v1::CONSISTENCY_SYNC:
      return config.staleness().backup_workers() > 0
                 ? absl::StrCat("sync:", config.staleness().backup_workers())
                 : std::string("sync");
    default:
      return absl::StrCat("unknown(", static_cast<int>(config.consistency()),
                          ")");
  }
}

std::string DescribeStaleness(const v1::NamespaceConfig& config) {
  std::string out =
      absl::StrCat(" compensation=", CompensationName(config.compensation()));
  const v1::StalenessSettings& s = config.staleness();
  const Descriptor* d = s.GetDescriptor();
  for (const std::string& name : StalenessFieldsUsedBy(
           config.compensation(), v1::CONSISTENCY_ASYNC)) {
    absl::StrAppend(&out, " ", name, "=", Get(s, d->FindFieldByName(name)));
  }
  absl::StrAppend(&out, " consistency=", ConsistencyName(config));
  return out;
}

}  // namespace pskit
