// tools/psctl/output.h
//
// What psctl prints: Json (an ordered tree written compactly, for --json),
// Table (left-aligned columns two spaces apart, for people) and the
// formatting of sizes, ages, shapes, configs, checkpoints and evaluations
// both use.
//
//   Json j = Json::Object();
//   j.Set("index", 0).Set("ok", true);
//   j.Dump();  // {"index":0,"ok":true}
//   Table t({"shard", "address"});
//   t.Row({"0", "127.0.0.1:7000"});
//   t.Render();  // "shard  address\n0      127.0.0.1:7000\n"
//
// Thread safety: values; the functions are pure (the ages read the clock).
#ifndef PSKIT_TOOLS_PSCTL_OUTPUT_H_
#define PSKIT_TOOLS_PSCTL_OUTPUT_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_field.h"
#include "pskit/v1/admin.pb.h"

namespace pskit::psctl {

// ---------------------------------------------------------------------------
// JSON: an ordered tree, written compactly.

class Json {
 public:
  Json() : value_(nullptr) {}
  Json(std::nullptr_t) : value_(nullptr) {}
  Json(bool b) : value_(b) {}
  Json(const char* s) : value_(std::string(s)) {}
  Json(std::string s) : value_(std::move(s)) {}
  Json(absl::string_view s) : value_(std::string(s)) {}
  Json(int v) : value_(Number{absl::StrCat(v)}) {}
  Json(int64_t v) : value_(Number{absl::StrCat(v)}) {}
  Json(uint32_t v) : value_(Number{absl::StrCat(v)}) {}
  Json(uint64_t v) : value_(Number{absl::StrCat(v)}) {}
  // The shortest text that reads back as the same float (0.001, not
  // 0.0010000000474974513); null when not finite.
  Json(float v) : value_(nullptr) {
    if (!std::isfinite(v)) return;
    for (int digits = 1; digits <= 9; ++digits) {
      std::string text = absl::StrFormat("%.*g", digits, v);
      if (std::strtof(text.c_str(), nullptr) == v) {
        value_ = Number{std::move(text)};
        return;
      }
    }
  }
  Json(double v) : value_(nullptr) {
    if (!std::isfinite(v)) return;
    for (int digits = 1; digits <= 17; ++digits) {
      std::string text = absl::StrFormat("%.*g", digits, v);
      if (std::strtod(text.c_str(), nullptr) == v) {
        value_ = Number{std::move(text)};
        return;
      }
    }
  }

  static Json Object() {
    Json j;
    j.value_ = ObjectT{};
    return j;
  }
  static Json Array() {
    Json j;
    j.value_ = ArrayT{};
    return j;
  }
  // Seconds rounded to milliseconds, for ages and durations.
  static Json Seconds(double s) { return Json(std::round(s * 1000) / 1000); }

  // Adds `key` to an object (keys keep their order); returns the object.
  Json& Set(std::string key, Json value) {
    std::get<ObjectT>(value_).emplace_back(std::move(key), std::move(value));
    return *this;
  }
  // Appends to an array; returns the array.
  Json& Add(Json value) {
    std::get<ArrayT>(value_).push_back(std::move(value));
    return *this;
  }

  std::string Dump() const {
    std::string out;
    Write(&out);
    return out;
  }

 private:
  struct Number {
    std::string text;
  };
  using ObjectT = std::vector<std::pair<std::string, Json>>;
  using ArrayT = std::vector<Json>;

  static void WriteString(absl::string_view s, std::string* out) {
    out->push_back('"');
    for (unsigned char c : s) {
      switch (c) {
        case '"':
          *out += "\\\"";
          break;
        case '\\':
          *out += "\\\\";
          break;
        case '\n':
          *out += "\\n";
          break;
        case '\r':
          *out += "\\r";
          break;
        case '\t':
          *out += "\\t";
          break;
        default:
          if (c < 0x20) {
            absl::StrAppendFormat(out, "\\u%04x", c);
          } else {
            out->push_back(static_cast<char>(c));
          }
      }
    }
    out->push_back('"');
  }

  void Write(std::string* out) const {
    if (std::holds_alternative<std::nullptr_t>(value_)) {
      *out += "null";
    } else if (const bool* b = std::get_if<bool>(&value_)) {
      *out += *b ? "true" : "false";
    } else if (const Number* n = std::get_if<Number>(&value_)) {
      *out += n->text;
    } else if (const std::string* s = std::get_if<std::string>(&value_)) {
      WriteString(*s, out);
    } else if (const ArrayT* a = std::get_if<ArrayT>(&value_)) {
      out->push_back('[');
      for (size_t i = 0; i < a->size(); ++i) {
        if (i > 0) out->push_back(',');
        (*a)[i].Write(out);
      }
      out->push_back(']');
    } else {
      const ObjectT& o = std::get<ObjectT>(value_);
      out->push_back('{');
      for (size_t i = 0; i < o.size(); ++i) {
        if (i > 0) out->push_back(',');
        WriteString(o[i].first, out);
        out->push_back(':');
        o[i].second.Write(out);
      }
      out->push_back('}');
    }
  }

  std::variant<std::nullptr_t, bool, Number, std::string, ObjectT, ArrayT>
      value_;
};

template <typename T>
Json JsonArray(const T& items) {
  Json a = Json::Array();
  for (const auto& item : items) a.Add(Json(item));
  return a;
}

// ---------------------------------------------------------------------------
// Tables for people: left-aligned columns two spaces apart.

class Table {
 public:
  explicit Table(std::vector<std::string> header) {
    rows_.push_back(std::move(header));
  }
  void Row(std::vector<std::string> cells) {
    rows_.push_back(std::move(cells));
  }

  std::string Render() const {
    std::vector<size_t> width;
    for (const auto& row : rows_) {
      if (width.size() < row.size()) width.resize(row.size(), 0);
      for (size_t i = 0; i < row.size(); ++i) {
        width[i] = std::max(width[i], row[i].size());
      }
    }
    std::string out;
    for (const auto& row : rows_) {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size())
          line += std::string(width[i] - row[i].size() + 2, ' ');
      }
      out += line + "\n";
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string HumanBytes(uint64_t bytes);
std::string HumanAge(double s);
double AgeSeconds(int64_t unix_ms);
std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape);
// "OPTIMIZER_ADAM" -> "adam", "COMPENSATION_INVERSE" -> "inverse".
std::string ShortName(const std::string& enum_name, absl::string_view prefix);
Json ConfigJson(const v1::NamespaceConfig& c);
Json CheckpointJson(const v1::CheckpointInfo& c);
Json EvaluationJson(const std::string& ns, const v1::Evaluation& e);
// "default: acc 0.8800 loss 0.3409, 2.1 s ago (done: target reached)".
std::string EvaluationText(const std::string& ns, const v1::Evaluation& e);

}  // namespace pskit::psctl

#endif  // PSKIT_TOOLS_PSCTL_OUTPUT_H_
