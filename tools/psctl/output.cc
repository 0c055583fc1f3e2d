#include "tools/psctl/output.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/staleness_config.h"

namespace pskit::psctl {

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  if (bytes < (1 << 20)) return absl::StrFormat("%.1f KiB", bytes / 1024.0);
  if (bytes < (uint64_t{1} << 30)) {
    return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
  }
  return absl::StrFormat("%.2f GiB", bytes / 1073741824.0);
}

std::string HumanAge(double s) {
  if (s < 0) s = 0;
  if (s < 120) return absl::StrFormat("%.1f s", s);
  if (s < 7200) return absl::StrFormat("%.1f min", s / 60);
  if (s < 172800) return absl::StrFormat("%.1f h", s / 3600);
  return absl::StrFormat("%.1f d", s / 86400);
}

double AgeSeconds(int64_t unix_ms) {
  return absl::ToDoubleSeconds(absl::Now() - absl::FromUnixMillis(unix_ms));
}

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// "OPTIMIZER_ADAM" -> "adam", "COMPENSATION_INVERSE" -> "inverse".
std::string ShortName(const std::string& enum_name, absl::string_view prefix) {
  return absl::AsciiStrToLower(absl::StripPrefix(enum_name, prefix));
}

Json ConfigJson(const v1::NamespaceConfig& c) {
  const v1::OptimizerConfig& o = c.optimizer();
  Json j = Json::Object();
  j.Set("optimizer", ShortName(v1::OptimizerKind_Name(o.kind()), "OPTIMIZER_"))
      .Set("learning_rate", o.learning_rate())
      .Set("momentum", o.momentum())
      .Set("beta1", o.beta1())
      .Set("beta2", o.beta2())
      .Set("epsilon", o.epsilon())
      .Set("weight_decay", o.weight_decay())
      .Set("rho", o.rho())
      .Set("initial_accumulator", o.initial_accumulator())
      .Set("compensation", CompensationName(c.compensation()))
      .Set("consistency", ConsistencyName(c));
  const v1::StalenessSettings& s = c.staleness();
  for (const std::string& name :
       StalenessFieldsUsedBy(c.compensation(), c.consistency())) {
    const auto* f = s.GetDescriptor()->FindFieldByName(name);
    if (f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_INT32) {
      j.Set(name, static_cast<int64_t>(s.GetReflection()->GetInt32(s, f)));
    } else {
      j.Set(name, s.GetReflection()->GetFloat(s, f));
    }
  }
  return j;
}

Json CheckpointJson(const v1::CheckpointInfo& c) {
  Json j = Json::Object();
  j.Set("id", c.id())
      .Set("time_unix_ms", static_cast<int64_t>(c.time_unix_ms()))
      .Set("age_s", Json::Seconds(AgeSeconds(c.time_unix_ms())))
      .Set("sequence", c.sequence())
      .Set("chunks", c.chunks())
      .Set("bytes", c.bytes())
      .Set("duration_s", Json::Seconds(c.duration_s()));
  return j;
}

Json EvaluationJson(const std::string& ns, const v1::Evaluation& e) {
  Json j = Json::Object();
  j.Set("namespace", ns)
      .Set("accuracy", e.accuracy())
      .Set("loss", e.loss())
      .Set("samples", e.samples())
      .Set("done", e.done())
      .Set("reason", e.reason())
      .Set("time_unix_ms", static_cast<int64_t>(e.time_unix_ms()))
      .Set("age_s", Json::Seconds(AgeSeconds(e.time_unix_ms())));
  return j;
}

// "default: acc 0.8800 loss 0.3409, 2.1 s ago (done: target reached)".
std::string EvaluationText(const std::string& ns, const v1::Evaluation& e) {
  std::string out = absl::StrCat(ns, ": ");
  if (e.samples() > 0) {
    absl::StrAppendFormat(&out, "acc %.4f loss %.4f, ", e.accuracy(), e.loss());
  }
  absl::StrAppend(&out, HumanAge(AgeSeconds(e.time_unix_ms())), " ago");
  if (e.done()) {
    absl::StrAppend(&out, " (done", e.reason().empty() ? "" : ": ", e.reason(),
                    ")");
  }
  return out;
}

}  // namespace pskit::psctl
