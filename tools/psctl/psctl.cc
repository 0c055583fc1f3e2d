// psctl: the operator's command line for a running pskit cluster.
//
//   psctl --shards h1:7000,h2:7000 status
//   PSKIT_SHARDS=h1:7000,h2:7000 psctl checkpoint --wait
//   psctl set job1 lr=0.0005 --json
//   psctl dump job1 fc1/w --out fc1_w.npy
//
// It talks to each shard's pskit.v1.Admin service (one channel per shard,
// every call fanned out to all shards at once with a deadline) and, for
// `dump`, pulls through libpskit_client. Output is tables for people, or with
// --json one JSON object on stdout for scripts (README.md, "psctl", has the
// schema); errors also go to stderr, one line each, naming shard and address.
//
// Every command first asks each shard for its Status: a shard that does not
// answer stops the command (exit 3) before anything changes, and shard i of
// --shards must call itself shard i of N (exit 2 otherwise). `status` itself
// reports what the reachable shards say and then exits 3.
//
// Exit codes: 0 ok; 1 an operation failed (a shard refused it, a checkpoint
// is missing somewhere, a drain's wait ran out); 2 usage (unknown command or
// flag, bad argument, --shards missing or out of order); 3 a shard
// unreachable.
//
// Thread safety: one thread runs the commands; gRPC's callback threads only
// hand answers back under a mutex.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/admin_client.h"
#include "client/client.h"
#include "common/grpc_options.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/optimizer_config.h"
#include "pskit/v1/admin.grpc.pb.h"

ABSL_FLAG(std::string, shards, "",
          "comma-separated shard addresses host:port, in shard-index order. "
          "Default: the environment variable PSKIT_SHARDS");
ABSL_FLAG(bool, json, false,
          "print one JSON object on stdout instead of tables");
ABSL_FLAG(double, timeout_s, 60,
          "deadline of every call to a shard, in seconds");
ABSL_FLAG(double, wait_s, 60,
          "drain: how long to wait for the workers to leave, in seconds "
          "(counted from the start of the command)");
ABSL_FLAG(std::string, id, "",
          "checkpoint: the checkpoint id. Default: psctl-<unix ms>");
ABSL_FLAG(bool, wait, false,
          "checkpoint: wait until every shard has written it and report "
          "each; without it psctl waits at most 1 s and reports the shards "
          "still writing as started");
ABSL_FLAG(std::string, out, "", "dump: the .npy file to write (required)");
ABSL_FLAG(std::string, reason, "",
          "drain: why, recorded as each ended job's reason. Default: "
          "\"drained by an operator\"");

namespace pskit {
namespace {

// ---------------------------------------------------------------------------
// Exit codes and errors.

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

// A command's end: the exit code and, unless it is 0, what went wrong.
struct Outcome {
  int code = kExitOk;
  std::string error;
};

Outcome Ok() { return {}; }
Outcome Usage(std::string msg) { return {kExitUsage, std::move(msg)}; }
Outcome Failed(std::string msg) { return {kExitFailed, std::move(msg)}; }

// "UNAVAILABLE: failed to connect to all addresses".
std::string StatusText(const absl::Status& s) { return s.ToString(); }

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
      .Set("compensation",
           ShortName(v1::Compensation_Name(c.compensation()), "COMPENSATION_"));
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

// ---------------------------------------------------------------------------
// Shards and fan-out.

struct Shard {
  uint32_t index;
  std::string address;
};

// What every command starts from.
struct Context {
  std::vector<Shard> shards;
  std::unique_ptr<AdminClient> admin;  // every Admin call goes through it
  absl::Duration timeout;
  // Status of each shard; nullopt where it did not answer.
  std::vector<std::optional<v1::StatusResponse>> status;
  std::vector<std::string> down;  // per shard: "" or the gRPC error
  Json out = Json::Object();      // the command's JSON fields
  std::string text;               // the command's tables
};

std::string Where(const Shard& s) {
  return absl::StrCat("shard ", s.index, " (", s.address, ")");
}

// Asks every shard for its Status. Returns exit 3 naming each shard that
// did not answer, or exit 2 when one's place in --shards is not its index.
Outcome QueryStatus(Context* ctx) {
  auto replies = ctx->admin->Status();
  std::vector<std::string> unreachable;
  ctx->status.assign(ctx->shards.size(), std::nullopt);
  ctx->down.assign(ctx->shards.size(), "");
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i].status.ok()) {
      ctx->status[i] = std::move(replies[i].response);
      continue;
    }
    ctx->down[i] = StatusText(replies[i].status);
    unreachable.push_back(
        absl::StrCat(Where(ctx->shards[i]), " is unreachable: ", ctx->down[i]));
  }
  const uint32_t n = static_cast<uint32_t>(ctx->shards.size());
  std::vector<std::string> misplaced;
  const v1::StatusResponse* first = nullptr;
  for (uint32_t i = 0; i < n; ++i) {
    if (!ctx->status[i]) continue;
    const v1::StatusResponse& s = *ctx->status[i];
    if (first == nullptr) first = &s;
    if (s.shard_index() != i || s.num_shards() != n) {
      misplaced.push_back(absl::StrCat(
          ctx->shards[i].address, " is listed as shard ", i, " of ", n,
          " but is shard ", s.shard_index(), " of ", s.num_shards()));
    }
    if (s.chunk_elems() != first->chunk_elems()) {
      misplaced.push_back(absl::StrCat(
          ctx->shards[i].address, " has chunk_elems ", s.chunk_elems(),
          " but shard ", first->shard_index(), " has ", first->chunk_elems()));
    }
  }
  if (!unreachable.empty()) {
    return {kExitUnreachable, absl::StrJoin(unreachable, "; ")};
  }
  if (!misplaced.empty()) {
    return Usage(absl::StrCat(
        absl::StrJoin(misplaced, "; "),
        ". List every shard in --shards (or PSKIT_SHARDS), in shard-index "
        "order"));
  }
  return Ok();
}

// The shard entry of a JSON answer: index, address, ok, and error if not.
Json ShardJson(const Shard& s, const absl::Status& status) {
  Json j = Json::Object();
  j.Set("index", s.index).Set("address", s.address).Set("ok", status.ok());
  if (!status.ok()) j.Set("error", StatusText(status));
  return j;
}

// Joins the failures among `replies` into one message ("" if none).
template <typename Resp>
std::string Failures(const Context& ctx,
                     const std::vector<ShardResult<Resp>>& replies,
                     absl::string_view what) {
  std::vector<std::string> lines;
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i].status.ok()) continue;
    lines.push_back(absl::StrCat(what, " failed on ", Where(ctx.shards[i]),
                                 ": ", StatusText(replies[i].status)));
  }
  return absl::StrJoin(lines, "; ");
}

// ---------------------------------------------------------------------------
// status

Outcome CmdStatus(Context* ctx, const std::vector<std::string>& args) {
  if (!args.empty()) return Usage("status takes no arguments");
  Outcome outcome = QueryStatus(ctx);
  if (outcome.code == kExitUsage) return outcome;

  Json shards = Json::Array();
  Table table({"shard", "address", "state", "namespaces", "tensors",
               "parameters", "max version", "workers", "last checkpoint", "age",
               "latest evaluation"});
  struct NsSum {
    uint64_t tensors = 0, parameters = 0, max_version = 0;
    std::optional<v1::NamespaceConfig> config;
    bool configs_agree = true;
    std::optional<v1::Evaluation> evaluation;
  };
  std::map<std::string, NsSum> namespaces;
  for (size_t i = 0; i < ctx->shards.size(); ++i) {
    const Shard& shard = ctx->shards[i];
    Json j = Json::Object();
    j.Set("index", shard.index).Set("address", shard.address);
    if (!ctx->status[i]) {
      j.Set("up", false).Set("error", ctx->down[i]);
      shards.Add(std::move(j));
      table.Row({absl::StrCat(shard.index), shard.address, "down", "-", "-",
                 "-", "-", "-", "-", "-", ctx->down[i]});
      continue;
    }
    const v1::StatusResponse& s = *ctx->status[i];
    uint64_t tensors = 0, parameters = 0, max_version = 0;
    const v1::NamespaceStatus* latest_ns = nullptr;
    for (const v1::NamespaceStatus& n : s.namespaces()) {
      NsSum& sum = namespaces[n.name()];
      for (const v1::TensorStatus& t : n.tensors()) {
        ++tensors;
        parameters += t.elements_here();
        max_version = std::max(max_version, t.max_version());
        sum.parameters += t.elements_here();
        sum.max_version = std::max(sum.max_version, t.max_version());
      }
      sum.tensors = std::max<uint64_t>(sum.tensors, n.tensors_size());
      if (!sum.config) {
        sum.config = n.config();
      } else if (sum.config->SerializeAsString() !=
                 n.config().SerializeAsString()) {
        sum.configs_agree = false;
      }
      if (n.has_last_evaluation()) {
        if (!sum.evaluation || n.last_evaluation().time_unix_ms() >
                                   sum.evaluation->time_unix_ms()) {
          sum.evaluation = n.last_evaluation();
        }
        if (latest_ns == nullptr ||
            n.last_evaluation().time_unix_ms() >
                latest_ns->last_evaluation().time_unix_ms()) {
          latest_ns = &n;
        }
      }
    }
    j.Set("up", true)
        .Set("shard_index", s.shard_index())
        .Set("num_shards", s.num_shards())
        .Set("chunk_elems", s.chunk_elems())
        .Set("durable", s.durable())
        .Set("draining", s.draining())
        .Set("namespaces", s.namespaces_size())
        .Set("tensors", tensors)
        .Set("parameters", parameters)
        .Set("max_version", max_version)
        .Set("live_workers", s.live_workers())
        .Set("updates_applied", s.updates_applied());
    std::string checkpoint_text = s.durable() ? "none" : "memory-only";
    std::string age_text = "-";
    if (s.checkpoints_size() > 0) {
      const v1::CheckpointInfo& c = s.checkpoints(0);
      j.Set("last_checkpoint", CheckpointJson(c));
      checkpoint_text = c.id();
      age_text = HumanAge(AgeSeconds(c.time_unix_ms()));
    } else {
      j.Set("last_checkpoint", nullptr);
    }
    std::string eval_text = "-";
    if (latest_ns != nullptr) {
      j.Set("latest_evaluation",
            EvaluationJson(latest_ns->name(), latest_ns->last_evaluation()));
      eval_text =
          EvaluationText(latest_ns->name(), latest_ns->last_evaluation());
    } else {
      j.Set("latest_evaluation", nullptr);
    }
    shards.Add(std::move(j));
    table.Row({absl::StrCat(shard.index), shard.address,
               s.draining() ? "draining" : "up",
               absl::StrCat(s.namespaces_size()), absl::StrCat(tensors),
               absl::StrCat(parameters), absl::StrCat(max_version),
               absl::StrCat(s.live_workers()), checkpoint_text, age_text,
               eval_text});
  }

  Json ns_json = Json::Array();
  Table ns_table(
      {"namespace", "tensors", "parameters", "max version", "config"});
  for (const auto& [name, sum] : namespaces) {
    Json j = Json::Object();
    j.Set("name", name)
        .Set("tensors", sum.tensors)
        .Set("parameters", sum.parameters)
        .Set("max_version", sum.max_version)
        .Set("config", ConfigJson(*sum.config))
        .Set("config_text", DescribeConfig(*sum.config))
        .Set("configs_agree", sum.configs_agree)
        .Set("evaluation", sum.evaluation
                               ? EvaluationJson(name, *sum.evaluation)
                               : Json(nullptr));
    ns_json.Add(std::move(j));
    ns_table.Row({name, absl::StrCat(sum.tensors), absl::StrCat(sum.parameters),
                  absl::StrCat(sum.max_version),
                  DescribeConfig(*sum.config) +
                      (sum.configs_agree ? "" : " (differs between shards!)")});
  }
  ctx->out.Set("shards", std::move(shards))
      .Set("namespaces", std::move(ns_json));
  ctx->text = table.Render();
  if (!namespaces.empty()) ctx->text += "\n" + ns_table.Render();
  return outcome;
}

// ---------------------------------------------------------------------------
// tensors [NAMESPACE]

Outcome CmdTensors(Context* ctx, const std::vector<std::string>& args) {
  if (args.size() > 1) return Usage("tensors takes at most one NAMESPACE");
  if (Outcome o = QueryStatus(ctx); o.code != kExitOk) return o;
  const size_t n = ctx->shards.size();
  struct Merged {
    google::protobuf::RepeatedField<int64_t> shape;
    std::vector<uint32_t> chunks_per_shard;
    uint64_t max_version = 0;
  };
  std::map<std::pair<std::string, std::string>, Merged> tensors;
  bool namespace_found = args.empty();
  for (size_t i = 0; i < n; ++i) {
    for (const v1::NamespaceStatus& ns : ctx->status[i]->namespaces()) {
      if (!args.empty() && ns.name() != args[0]) continue;
      namespace_found = true;
      for (const v1::TensorStatus& t : ns.tensors()) {
        Merged& m = tensors[{ns.name(), t.name()}];
        if (m.chunks_per_shard.empty()) {
          m.shape = t.shape();
          m.chunks_per_shard.assign(n, 0);
        }
        m.chunks_per_shard[i] = t.chunks_here();
        m.max_version = std::max(m.max_version, t.max_version());
      }
    }
  }
  if (!namespace_found) {
    return Failed(absl::StrCat("NOT_FOUND: namespace '", args[0],
                               "' is not declared on any shard"));
  }
  Json list = Json::Array();
  Table table({"namespace", "tensor", "shape", "elements", "chunks",
               "chunks per shard", "max version"});
  for (const auto& [key, m] : tensors) {
    uint64_t elements = 1, chunks = 0;
    for (int64_t d : m.shape) elements *= static_cast<uint64_t>(d);
    for (uint32_t c : m.chunks_per_shard) chunks += c;
    list.Add(Json::Object()
                 .Set("namespace", key.first)
                 .Set("name", key.second)
                 .Set("shape", JsonArray(m.shape))
                 .Set("elements", elements)
                 .Set("chunks", chunks)
                 .Set("chunks_per_shard", JsonArray(m.chunks_per_shard))
                 .Set("max_version", m.max_version));
    table.Row({key.first, key.second, ShapeText(m.shape),
               absl::StrCat(elements), absl::StrCat(chunks),
               absl::StrJoin(m.chunks_per_shard, "/"),
               absl::StrCat(m.max_version)});
  }
  ctx->out.Set("tensors", std::move(list));
  ctx->text = tensors.empty() ? "no tensors\n" : table.Render();
  return Ok();
}

// ---------------------------------------------------------------------------
// checkpoint [--id ID] [--wait]

// Exit 1 naming every memory-only shard, if any.
Outcome RequireDurable(const Context& ctx, absl::string_view command) {
  std::vector<std::string> memory_only;
  for (size_t i = 0; i < ctx.shards.size(); ++i) {
    if (!ctx.status[i]->durable()) memory_only.push_back(Where(ctx.shards[i]));
  }
  if (memory_only.empty()) return Ok();
  return Failed(absl::StrCat("FAILED_PRECONDITION: ", command,
                             " needs checkpoints, and ",
                             absl::StrJoin(memory_only, ", "),
                             memory_only.size() == 1 ? " keeps" : " keep",
                             " none: start ps-server with --data_dir"));
}

Outcome CmdCheckpoint(Context* ctx, const std::vector<std::string>& args) {
  if (!args.empty()) {
    return Usage("checkpoint takes no arguments (the id goes in --id)");
  }
  if (Outcome o = QueryStatus(ctx); o.code != kExitOk) return o;
  if (Outcome o = RequireDurable(*ctx, "checkpoint"); o.code != kExitOk) {
    return o;
  }
  std::string id = absl::GetFlag(FLAGS_id);
  if (id.empty()) id = absl::StrCat("psctl-", absl::ToUnixMillis(absl::Now()));
  const bool wait = absl::GetFlag(FLAGS_wait);
  v1::CheckpointRequest req;
  req.set_id(id);
  // Without --wait: a shard refuses a bad or taken id at once; one still
  // busy after a second has queued the checkpoint and finishes it whether
  // or not psctl is still there.
  const absl::Duration patience =
      wait ? ctx->timeout : std::min(ctx->timeout, absl::Seconds(1));
  auto replies =
      ctx->admin->Checkpoint(ctx->admin->ToEveryShard(req), patience);
  Json shards = Json::Array();
  Table table(
      {"shard", "address", "state", "chunks", "size", "seconds", "error"});
  bool all_done = true;
  std::vector<std::string> failures;
  for (size_t i = 0; i < replies.size(); ++i) {
    const Shard& shard = ctx->shards[i];
    const absl::Status& st = replies[i].status;
    const bool started =
        !wait && st.code() == absl::StatusCode::kCancelled;
    std::string state = st.ok() ? "done" : started ? "started" : "failed";
    Json j = Json::Object();
    j.Set("index", shard.index)
        .Set("address", shard.address)
        .Set("state", state);
    if (st.ok()) {
      const v1::CheckpointInfo& c = replies[i].response.checkpoint();
      j.Set("checkpoint", CheckpointJson(c));
      table.Row({absl::StrCat(shard.index), shard.address, state,
                 absl::StrCat(c.chunks()), HumanBytes(c.bytes()),
                 absl::StrFormat("%.2f", c.duration_s()), ""});
    } else {
      all_done = false;
      j.Set("checkpoint", nullptr);
      if (!started) {
        j.Set("error", StatusText(st));
        failures.push_back(absl::StrCat("checkpoint '", id, "' failed on ",
                                        Where(shard), ": ", StatusText(st)));
      }
      table.Row({absl::StrCat(shard.index), shard.address, state, "-", "-", "-",
                 started ? "" : StatusText(st)});
    }
    shards.Add(std::move(j));
  }
  ctx->out.Set("id", id)
      .Set("waited", wait)
      .Set("complete", all_done)
      .Set("shards", std::move(shards));
  ctx->text =
      absl::StrCat("checkpoint ", id,
                   all_done           ? ": written on every shard"
                   : failures.empty() ? ": started; `psctl checkpoints` "
                                        "shows when every shard has it"
                                      : ": FAILED",
                   "\n", table.Render());
  if (!failures.empty()) return Failed(absl::StrJoin(failures, "; "));
  return Ok();
}

// ---------------------------------------------------------------------------
// checkpoints

struct MergedCheckpoint {
  std::vector<uint32_t> shards;
  int64_t time_unix_ms = 0;
  uint64_t bytes = 0, chunks = 0;
};

// ListCheckpoints on every durable shard, merged by id. Fails (exit 1) when
// a durable shard refuses to list.
Outcome ListAll(Context* ctx, std::map<std::string, MergedCheckpoint>* merged) {
  auto replies = ctx->admin->ListCheckpoints();
  std::vector<std::string> failures;
  for (size_t i = 0; i < replies.size(); ++i) {
    if (!replies[i].status.ok()) {
      if (!ctx->status[i]->durable()) continue;  // it keeps none
      failures.push_back(absl::StrCat("ListCheckpoints failed on ",
                                      Where(ctx->shards[i]), ": ",
                                      StatusText(replies[i].status)));
      continue;
    }
    for (const v1::CheckpointInfo& c : replies[i].response.checkpoints()) {
      MergedCheckpoint& m = (*merged)[c.id()];
      m.shards.push_back(ctx->shards[i].index);
      m.time_unix_ms = std::max(m.time_unix_ms, c.time_unix_ms());
      m.bytes += c.bytes();
      m.chunks += c.chunks();
    }
  }
  if (!failures.empty()) return Failed(absl::StrJoin(failures, "; "));
  return Ok();
}

Outcome CmdCheckpoints(Context* ctx, const std::vector<std::string>& args) {
  if (!args.empty()) return Usage("checkpoints takes no arguments");
  if (Outcome o = QueryStatus(ctx); o.code != kExitOk) return o;
  std::map<std::string, MergedCheckpoint> merged;
  if (Outcome o = ListAll(ctx, &merged); o.code != kExitOk) return o;
  std::vector<std::pair<std::string, MergedCheckpoint>> sorted(merged.begin(),
                                                               merged.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return a.second.time_unix_ms != b.second.time_unix_ms
               ? a.second.time_unix_ms > b.second.time_unix_ms
               : a.first < b.first;
  });
  const size_t n = ctx->shards.size();
  Json list = Json::Array();
  Table table({"id", "complete", "shards", "taken (UTC)", "age", "size"});
  for (const auto& [id, m] : sorted) {
    std::vector<uint32_t> missing;
    for (uint32_t i = 0; i < n; ++i) {
      if (std::find(m.shards.begin(), m.shards.end(), i) == m.shards.end()) {
        missing.push_back(i);
      }
    }
    const bool complete = missing.empty();
    list.Add(Json::Object()
                 .Set("id", id)
                 .Set("complete", complete)
                 .Set("shards", JsonArray(m.shards))
                 .Set("missing", JsonArray(missing))
                 .Set("time_unix_ms", m.time_unix_ms)
                 .Set("age_s", Json::Seconds(AgeSeconds(m.time_unix_ms)))
                 .Set("bytes", m.bytes)
                 .Set("chunks", m.chunks));
    table.Row({id, complete ? "yes" : "no", absl::StrJoin(m.shards, ","),
               absl::FormatTime("%Y-%m-%d %H:%M:%S",
                                absl::FromUnixMillis(m.time_unix_ms),
                                absl::UTCTimeZone()),
               HumanAge(AgeSeconds(m.time_unix_ms)), HumanBytes(m.bytes)});
  }
  Json memory_only = Json::Array();
  std::vector<std::string> memory_only_text;
  for (size_t i = 0; i < n; ++i) {
    if (ctx->status[i]->durable()) continue;
    memory_only.Add(ctx->shards[i].index);
    memory_only_text.push_back(Where(ctx->shards[i]));
  }
  ctx->out.Set("checkpoints", std::move(list))
      .Set("memory_only_shards", std::move(memory_only));
  ctx->text = sorted.empty() ? "no checkpoints\n" : table.Render();
  if (!memory_only_text.empty()) {
    absl::StrAppend(&ctx->text, "memory-only (no checkpoints): ",
                    absl::StrJoin(memory_only_text, ", "), "\n");
  }
  return Ok();
}

// ---------------------------------------------------------------------------
// restore ID

Outcome CmdRestore(Context* ctx, const std::vector<std::string>& args) {
  if (args.size() != 1) return Usage("restore takes one checkpoint ID");
  const std::string& id = args[0];
  if (Outcome o = QueryStatus(ctx); o.code != kExitOk) return o;
  if (Outcome o = RequireDurable(*ctx, "restore"); o.code != kExitOk) return o;
  std::map<std::string, MergedCheckpoint> merged;
  if (Outcome o = ListAll(ctx, &merged); o.code != kExitOk) return o;
  // Refuse before any shard swaps its state: a cluster restored on some
  // shards only would mix two moments of the model.
  auto it = merged.find(id);
  std::vector<std::string> lacking;
  for (const Shard& s : ctx->shards) {
    if (it == merged.end() ||
        std::find(it->second.shards.begin(), it->second.shards.end(),
                  s.index) == it->second.shards.end()) {
      lacking.push_back(Where(s));
    }
  }
  if (!lacking.empty()) {
    return Failed(absl::StrCat(
        "FAILED_PRECONDITION: checkpoint '", id, "' is not on ",
        absl::StrJoin(lacking, ", "),
        it == merged.end()
            ? ""
            : absl::StrCat(" (only on shards ",
                           absl::StrJoin(it->second.shards, ","), ")"),
        "; a restore needs it on every shard, and nothing was restored. "
        "`psctl checkpoints` lists the complete ones"));
  }
  v1::RestoreRequest req;
  req.set_id(id);
  auto replies = ctx->admin->Restore(req);
  Json shards = Json::Array();
  Table table(
      {"shard", "address", "restored", "chunks", "size", "taken (UTC)"});
  for (size_t i = 0; i < replies.size(); ++i) {
    const Shard& s = ctx->shards[i];
    Json j = ShardJson(s, replies[i].status);
    if (replies[i].status.ok()) {
      const v1::CheckpointInfo& c = replies[i].response.checkpoint();
      j.Set("checkpoint", CheckpointJson(c));
      table.Row({absl::StrCat(s.index), s.address, "yes",
                 absl::StrCat(c.chunks()), HumanBytes(c.bytes()),
                 absl::FormatTime("%Y-%m-%d %H:%M:%S",
                                  absl::FromUnixMillis(c.time_unix_ms()),
                                  absl::UTCTimeZone())});
    } else {
      table.Row({absl::StrCat(s.index), s.address,
                 "no: " + StatusText(replies[i].status), "-", "-", "-"});
    }
    shards.Add(std::move(j));
  }
  ctx->out.Set("id", id).Set("shards", std::move(shards));
  ctx->text = absl::StrCat("restore ", id, "\n", table.Render());
  if (std::string f = Failures(*ctx, replies, "restore"); !f.empty()) {
    return Failed(std::move(f));
  }
  return Ok();
}

// ---------------------------------------------------------------------------
// set NAMESPACE key=value...

constexpr absl::string_view kSetKeys =
    "lr (or learning_rate), momentum, beta1, beta2, epsilon (or eps), "
    "weight_decay (or wd), rho, initial_accumulator, compensation "
    "(none|inverse), optimizer (must stay the namespace's)";

// Parses key=value pairs into a SetConfigRequest; `changes` gets them for
// the report. INVALID_ARGUMENT (a usage error) for anything unparseable.
absl::Status ParseSettings(const std::vector<std::string>& pairs,
                           v1::SetConfigRequest* req, Json* changes) {
  v1::OptimizerConfig* o = req->mutable_optimizer();
  std::set<std::string> seen;
  for (const std::string& pair : pairs) {
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == pair.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", pair, "' is not key=value; keys: ", kSetKeys));
    }
    std::string key = absl::AsciiStrToLower(pair.substr(0, eq));
    const std::string value = pair.substr(eq + 1);
    if (key == "lr") key = "learning_rate";
    if (key == "eps") key = "epsilon";
    if (key == "wd") key = "weight_decay";
    if (key == "kind") key = "optimizer";
    if (!seen.insert(key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", key, "' is given twice"));
    }
    if (key == "compensation") {
      v1::Compensation c;
      if (!v1::Compensation_Parse(
              "COMPENSATION_" + absl::AsciiStrToUpper(value), &c) ||
          c == v1::COMPENSATION_UNSPECIFIED) {
        return absl::InvalidArgumentError(absl::StrCat(
            "compensation '", value, "' is not known; use none or inverse"));
      }
      req->set_compensation(c);
      changes->Set(key, absl::AsciiStrToLower(value));
      continue;
    }
    if (key == "optimizer") {
      v1::OptimizerKind k;
      if (!v1::OptimizerKind_Parse("OPTIMIZER_" + absl::AsciiStrToUpper(value),
                                   &k) ||
          k == v1::OPTIMIZER_UNSPECIFIED) {
        return absl::InvalidArgumentError(absl::StrCat(
            "optimizer '", value,
            "' is not known; use sgd, momentum, nesterov, adagrad, rmsprop, "
            "adam or adamw"));
      }
      o->set_kind(k);
      changes->Set(key, absl::AsciiStrToLower(value));
      continue;
    }
    float v;
    if (!absl::SimpleAtof(value, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat(pair, ": '", value, "' is not a number"));
    }
    if (key == "learning_rate") {
      o->set_learning_rate(v);
    } else if (key == "momentum") {
      o->set_momentum(v);
    } else if (key == "beta1") {
      o->set_beta1(v);
    } else if (key == "beta2") {
      o->set_beta2(v);
    } else if (key == "epsilon") {
      o->set_epsilon(v);
    } else if (key == "weight_decay") {
      o->set_weight_decay(v);
    } else if (key == "rho") {
      o->set_rho(v);
    } else if (key == "initial_accumulator") {
      o->set_initial_accumulator(v);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("'", key, "' is not a setting; keys: ", kSetKeys));
    }
    changes->Set(key, v);
  }
  return absl::OkStatus();
}

Outcome CmdSet(Context* ctx, const std::vector<std::string>& args) {
  if (args.size() < 2) {
    return Usage("set takes a NAMESPACE and at least one key=value");
  }
  v1::SetConfigRequest req;
  req.set_namespace_(args[0]);
  Json changes = Json::Object();
  if (absl::Status s =
          ParseSettings(std::vector<std::string>(args.begin() + 1, args.end()),
                        &req, &changes);
      !s.ok()) {
    return Usage(std::string(s.message()));
  }
  if (Outcome o = QueryStatus(ctx); o.code != kExitOk) return o;
  // Every shard must have the namespace before any changes. Shards run the
  // same checks on the same config, so a bad value is refused by all; if
  // only some refuse (their configs differ), the others are set back below.
  std::vector<std::string> problems;
  for (size_t i = 0; i < ctx->shards.size(); ++i) {
    const v1::NamespaceStatus* found = nullptr;
    for (const v1::NamespaceStatus& n : ctx->status[i]->namespaces()) {
      if (n.name() == args[0]) found = &n;
    }
    if (found == nullptr) {
      problems.push_back(absl::StrCat("NOT_FOUND: namespace '", args[0],
                                      "' is not declared on ",
                                      Where(ctx->shards[i])));
    }
  }
  if (!problems.empty()) return Failed(absl::StrJoin(problems, "; "));

  ctx->out.Set("namespace", args[0]).Set("changes", std::move(changes));
  auto replies = ctx->admin->SetConfig(req);
  std::string failures = Failures(*ctx, replies, "set");
  bool rolled_back = false;
  if (!failures.empty()) {
    // Put back the shards that took it, so the cluster keeps one config.
    std::vector<const Shard*> took;
    std::vector<ShardRequest<v1::SetConfigRequest>> undo;
    for (size_t i = 0; i < replies.size(); ++i) {
      if (!replies[i].status.ok()) continue;
      v1::SetConfigRequest u;
      u.set_namespace_(args[0]);
      *u.mutable_optimizer() = replies[i].response.previous().optimizer();
      u.mutable_optimizer()->clear_initial_accumulator();
      u.set_compensation(replies[i].response.previous().compensation());
      undo.push_back({ctx->shards[i].index, std::move(u)});
      took.push_back(&ctx->shards[i]);
    }
    if (!took.empty()) {
      auto undone = ctx->admin->SetConfig(undo);
      rolled_back = true;
      for (size_t i = 0; i < undone.size(); ++i) {
        if (undone[i].status.ok()) continue;
        rolled_back = false;
        absl::StrAppend(&failures,
                        "; putting back the previous config failed on ",
                        Where(*took[i]), ": ", StatusText(undone[i].status));
      }
      if (rolled_back) {
        absl::StrAppend(&failures,
                        "; the shards that took it were set back, so nothing "
                        "changed");
      }
    }
  }
  Json shards = Json::Array();
  std::string text;
  for (size_t i = 0; i < replies.size(); ++i) {
    const Shard& s = ctx->shards[i];
    Json j = ShardJson(s, replies[i].status);
    if (replies[i].status.ok()) {
      j.Set("previous", ConfigJson(replies[i].response.previous()))
          .Set("config", ConfigJson(replies[i].response.config()));
      absl::StrAppend(
          &text, Where(s),
          ":\n  before: ", DescribeConfig(replies[i].response.previous()),
          "\n  now:    ", DescribeConfig(replies[i].response.config()), "\n");
    } else {
      absl::StrAppend(&text, Where(s),
                      ": refused: ", StatusText(replies[i].status), "\n");
    }
    shards.Add(std::move(j));
  }
  ctx->out.Set("shards", std::move(shards)).Set("rolled_back", rolled_back);
  ctx->text = absl::StrCat("namespace ", args[0], "\n", text);
  if (!failures.empty()) return Failed(std::move(failures));
  return Ok();
}

// ---------------------------------------------------------------------------
// dump NAMESPACE TENSOR --out FILE.npy

// The .npy 1.0 header for a C-ordered little-endian float32 array: magic,
// version, header length (little-endian uint16), then the dict padded with
// spaces and ended by '\n' so that data starts at a multiple of 64 bytes.
std::string NpyHeader(const google::protobuf::RepeatedField<int64_t>& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < shape.size(); ++i) {
    absl::StrAppend(&dict, i > 0 ? ", " : "", shape[i]);
  }
  absl::StrAppend(&dict, shape.size() == 1 ? ",), }" : "), }");
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  return out + dict;
}

// Writes `header` and `values` to `path` through a temporary file in the
// same directory, renamed over `path` only once complete and synced.
absl::Status WriteAtomically(const std::string& path, const std::string& header,
                             absl::Span<const float> values) {
  static_assert(std::endian::native == std::endian::little,
                ".npy '<f4' data is written as the host's floats");
  const std::string tmp = absl::StrCat(path, ".tmp-", getpid());
  const int fd =
      open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  auto write_all = [fd](const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  };
  bool ok = write_all(header.data(), header.size()) &&
            write_all(reinterpret_cast<const char*>(values.data()),
                      values.size() * sizeof(float)) &&
            fsync(fd) == 0;
  const int saved = errno;
  ok = close(fd) == 0 && ok;
  if (ok && rename(tmp.c_str(), path.c_str()) == 0) return absl::OkStatus();
  const int err = ok ? errno : saved;
  unlink(tmp.c_str());
  return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ",
                                             std::strerror(err),
                                             "; nothing was written there"));
}

Outcome CmdDump(Context* ctx, const std::vector<std::string>& args) {
  if (args.size() != 2) return Usage("dump takes a NAMESPACE and a TENSOR");
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return Usage("dump needs --out FILE.npy");
  if (Outcome o = QueryStatus(ctx); o.code != kExitOk) return o;
  const std::string& ns = args[0];
  const std::string& name = args[1];
  const v1::TensorStatus* found = nullptr;
  uint64_t max_version = 0;
  for (const auto& s : ctx->status) {
    for (const v1::NamespaceStatus& n : s->namespaces()) {
      if (n.name() != ns) continue;
      for (const v1::TensorStatus& t : n.tensors()) {
        if (t.name() != name) continue;
        found = &t;
        max_version = std::max(max_version, t.max_version());
      }
    }
  }
  if (found == nullptr) {
    return Failed(absl::StrCat("NOT_FOUND: tensor '", name, "' of namespace '",
                               ns,
                               "' is not declared on any shard; `psctl "
                               "tensors` lists them"));
  }
  uint64_t elements = 1;
  for (int64_t d : found->shape()) elements *= static_cast<uint64_t>(d);

  ClientOptions options;
  options.chunk_elems = ctx->status[0]->chunk_elems();
  options.timeout = ctx->timeout;
  std::vector<std::string> addresses;
  for (const Shard& s : ctx->shards) addresses.push_back(s.address);
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect(addresses, options);
  if (!client.ok()) return Failed(client.status().ToString());
  std::vector<float> values(elements);
  if (absl::Status s = (*client)->Pull(ns, {{name, absl::MakeSpan(values)}});
      !s.ok()) {
    return Failed(s.ToString());
  }
  const std::string header = NpyHeader(found->shape());
  if (absl::Status s = WriteAtomically(out, header, values); !s.ok()) {
    return Failed(s.ToString());
  }
  const uint64_t bytes = header.size() + elements * sizeof(float);
  ctx->out.Set("namespace", ns)
      .Set("tensor", name)
      .Set("shape", JsonArray(found->shape()))
      .Set("elements", elements)
      .Set("max_version", max_version)
      .Set("out", out)
      .Set("bytes", bytes);
  ctx->text =
      absl::StrCat("wrote ", ns, "/", name, " ", ShapeText(found->shape()),
                   " (", elements, " float32, max version ", max_version,
                   ") to ", out, ", ", HumanBytes(bytes), "\n");
  return Ok();
}

// ---------------------------------------------------------------------------
// drain [--wait_s N] [--reason TEXT]

Outcome CmdDrain(Context* ctx, const std::vector<std::string>& args) {
  if (!args.empty()) return Usage("drain takes no arguments");
  if (Outcome o = QueryStatus(ctx); o.code != kExitOk) return o;
  const absl::Time start = absl::Now();
  v1::DrainRequest req;
  req.set_reason(absl::GetFlag(FLAGS_reason));
  // One id for every shard's drain checkpoint, so it restores cluster-wide.
  req.set_checkpoint_id(absl::StrCat("drain-", absl::ToUnixMillis(start)));
  auto replies = ctx->admin->Drain(req);
  Json shards = Json::Array();
  Table table({"shard", "address", "drained", "jobs ended", "workers then",
               "checkpoint"});
  for (size_t i = 0; i < replies.size(); ++i) {
    const Shard& s = ctx->shards[i];
    const v1::DrainResponse& r = replies[i].response;
    Json j = ShardJson(s, replies[i].status);
    if (replies[i].status.ok()) {
      j.Set("namespaces", JsonArray(r.namespaces()))
          .Set("live_workers", r.live_workers())
          .Set("checkpoint",
               r.has_checkpoint() ? CheckpointJson(r.checkpoint()) : Json());
      table.Row(
          {absl::StrCat(s.index), s.address, "yes",
           r.namespaces().empty() ? "-" : absl::StrJoin(r.namespaces(), ","),
           absl::StrCat(r.live_workers()),
           r.has_checkpoint() ? r.checkpoint().id() : "memory-only"});
    } else {
      table.Row({absl::StrCat(s.index), s.address,
                 "no: " + StatusText(replies[i].status), "-", "-", "-"});
    }
    shards.Add(std::move(j));
  }
  ctx->out.Set("shards", std::move(shards));
  ctx->text = table.Render();
  std::string failures = Failures(*ctx, replies, "drain");

  // Workers see job_done on their next heartbeat and leave; wait for the
  // last lease to go, asking every 0.5 s. A worker holds a lease on every
  // shard, so the count is the most any shard holds.
  const double wait_s = absl::GetFlag(FLAGS_wait_s);
  if (!(wait_s >= 0)) {
    return {kExitUsage, "--wait_s must be >= 0 (seconds to wait for the "
                        "workers to leave)"};
  }
  const absl::Time deadline = start + absl::Seconds(wait_s);
  uint64_t live = 0;
  std::string down;
  for (;;) {
    auto status = ctx->admin->Status();
    live = 0;
    for (size_t i = 0; i < status.size(); ++i) {
      if (!status[i].status.ok()) {
        down =
            absl::StrCat(Where(ctx->shards[i]),
                         " became unreachable: ", StatusText(status[i].status));
        break;
      }
      live = std::max<uint64_t>(live, status[i].response.live_workers());
    }
    if (!down.empty() || live == 0 ||
        absl::Now() + absl::Milliseconds(500) > deadline) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(500));
  }
  const double waited = absl::ToDoubleSeconds(absl::Now() - start);
  const bool drained = down.empty() && live == 0;
  ctx->out.Set("drained", drained)
      .Set("live_workers", live)
      .Set("waited_s", Json::Seconds(waited));
  absl::StrAppend(
      &ctx->text,
      drained ? absl::StrFormat("drained: no live workers after %.1f s\n",
                                waited)
      : !down.empty()
          ? absl::StrFormat("a shard went away %.1f s into the wait (a "
                            "launcher such as psrun stops the shards once "
                            "the workers have left)\n",
                            waited)
          : absl::StrFormat("not drained: %d workers still live after %.1f s\n",
                            live, waited));
  if (!down.empty()) return {kExitUnreachable, down};
  if (!failures.empty()) return Failed(std::move(failures));
  if (!drained) {
    return Failed(absl::StrCat(
        "DEADLINE_EXCEEDED: ", live, " workers still hold leases after ",
        absl::StrFormat("%.1f", waited),
        " s (--wait_s); their jobs are ended, so they leave at their next "
        "heartbeat, or their leases lapse (ps-server --lease_s)"));
  }
  return Ok();
}

// ---------------------------------------------------------------------------
// Commands, help and flags.

struct Command {
  const char* name;
  const char* synopsis;
  const char* help;
  Outcome (*run)(Context*, const std::vector<std::string>&);
};

constexpr Command kCommands[] = {
    {"status", "status",
     "Per shard: up/draining/down, namespaces, tensors, parameters held, max\n"
     "version, live workers, last checkpoint and its age, latest evaluation;\n"
     "then per namespace its optimizer config. Exit 3 when a shard is down\n"
     "(the others are still shown).",
     CmdStatus},
    {"tensors", "tensors [NAMESPACE]",
     "Every tensor (of NAMESPACE, or of all), merged across shards: shape,\n"
     "elements, chunks in all and per shard, max version.",
     CmdTensors},
    {"checkpoint", "checkpoint [--id ID] [--wait]",
     "Takes checkpoint ID (default psctl-<unix ms>) on every shard, so it can\n"
     "be restored cluster-wide. With --wait: waits for every shard (up to\n"
     "--timeout_s) and reports each. Without: waits at most 1 s; shards that\n"
     "answered are reported done or failed, the rest 'started' (they finish\n"
     "on their own; `psctl checkpoints` shows when the id is complete).",
     CmdCheckpoint},
    {"checkpoints", "checkpoints",
     "Every shard's checkpoints, merged by id, newest first: which shards "
     "hold\n"
     "each; an id on every shard is complete (restorable cluster-wide).",
     CmdCheckpoints},
    {"restore", "restore ID",
     "Restores checkpoint ID on every shard (each swaps its whole state at\n"
     "once). Refused before anything changes when a shard lacks ID.",
     CmdRestore},
    {"set", "set NAMESPACE key=value [key=value...]",
     "Changes NAMESPACE's hyper-parameters live on every shard, checked as\n"
     "Declare checks them. Keys: lr (learning_rate), momentum, beta1, beta2,\n"
     "epsilon (eps), weight_decay (wd), rho, compensation=none|inverse.\n"
     "The optimizer kind and initial_accumulator cannot change. If a shard\n"
     "refuses, the shards that took it are set back. Checkpoints keep it.",
     CmdSet},
    {"dump", "dump NAMESPACE TENSOR --out FILE.npy",
     "Pulls TENSOR and writes it as NumPy .npy 1.0 (little-endian float32,\n"
     "C order) through a temporary file renamed into place, so FILE is never\n"
     "half written. Each chunk is as of its own pull.",
     CmdDump},
    {"drain", "drain [--wait_s N] [--reason TEXT]",
     "Ends every job on every shard (workers see job_done at their next\n"
     "heartbeat and exit 0), makes shards refuse new workers until they\n"
     "restart, and has each durable shard write checkpoint drain-<unix ms>;\n"
     "then waits (asking every 0.5 s, up to --timeout_s) until no worker\n"
     "holds a lease. Exit 1 if some still do.",
     CmdDrain},
};

constexpr absl::string_view kCommonHelp =
    "Flags: --shards A,B,... (default $PSKIT_SHARDS; shard i of the list must\n"
    "be shard i), --json (one JSON object on stdout), --timeout_s N (default\n"
    "60).\n"
    "Exit codes: 0 ok, 1 an operation failed, 2 usage error, 3 a shard\n"
    "unreachable.\n";

std::string GeneralHelp() {
  std::string out =
      "psctl: operate a pskit cluster.\n\n"
      "usage: psctl [--shards A,B,...] [--json] [--timeout_s N] COMMAND "
      "[ARGS]\n\ncommands:\n";
  for (const Command& c : kCommands)
    absl::StrAppend(&out, "  ", c.synopsis, "\n");
  absl::StrAppend(&out, "\n", kCommonHelp,
                  "`psctl help COMMAND` or `psctl COMMAND --help` describes "
                  "one command.\n");
  return out;
}

std::string CommandHelp(const Command& c) {
  return absl::StrCat("usage: psctl ", c.synopsis, "\n\n", c.help, "\n\n",
                      kCommonHelp);
}

const Command* FindCommand(absl::string_view name) {
  for (const Command& c : kCommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

// Sets the flags given anywhere in argv (--name=value, --name value, --bool,
// --nobool; "--" ends them) and returns the other arguments. Only psctl's
// own flags are accepted. `help` is set by --help or -h. INVALID_ARGUMENT
// for an unknown flag or a bad value.
absl::StatusOr<std::vector<std::string>> ParseArgs(int argc, char** argv,
                                                   bool* help) {
  static const std::set<std::string> kOwn = {
      "shards", "json", "timeout_s", "wait_s", "id", "wait", "out", "reason"};
  std::vector<std::string> positional;
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    absl::string_view body =
        absl::StripPrefix(absl::StripPrefix(arg, "-"), "-");
    if (body == "help" || body == "h") {
      *help = true;
      continue;
    }
    std::string name(body), value;
    bool has_value = false;
    if (const size_t eq = body.find('='); eq != absl::string_view::npos) {
      name = std::string(body.substr(0, eq));
      value = std::string(body.substr(eq + 1));
      has_value = true;
    }
    absl::CommandLineFlag* flag =
        kOwn.count(name) ? absl::FindCommandLineFlag(name) : nullptr;
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no") &&
        kOwn.count(name.substr(2))) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      if (flag != nullptr && flag->IsOfType<bool>()) {
        name = name.substr(2);
        value = "false";
        has_value = true;
      } else {
        flag = nullptr;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", arg, "; `psctl help` lists the flags"));
    }
    if (!has_value) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value"));
      }
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, "=", value, ": ", error));
    }
  }
  return positional;
}

int Main(int argc, char** argv) {
  bool help = false;
  absl::StatusOr<std::vector<std::string>> positional =
      ParseArgs(argc, argv, &help);
  // A bad flag stops the parse before a later --json is read: look for it
  // by hand, so scripts get their JSON answer for usage errors too.
  bool json = absl::GetFlag(FLAGS_json);
  for (int i = 1; i < argc && !positional.ok(); ++i) {
    if (std::string_view(argv[i]) == "--json" ||
        std::string_view(argv[i]) == "--json=true") {
      json = true;
    }
  }
  std::string command_name;
  Outcome outcome;
  Context ctx;

  auto finish = [&](const Outcome& o) {
    if (!o.error.empty()) std::fprintf(stderr, "psctl: %s\n", o.error.c_str());
    if (json) {
      Json top = Json::Object();
      top.Set("command", command_name)
          .Set("ok", o.code == kExitOk)
          .Set("exit_code", o.code);
      if (!o.error.empty()) top.Set("error", o.error);
      std::string body = ctx.out.Dump();
      // Splice the command's fields after the common ones.
      std::string head = top.Dump();
      if (body.size() > 2) {
        head.pop_back();
        head += "," + body.substr(1);
      }
      std::fprintf(stdout, "%s\n", head.c_str());
    } else {
      std::fputs(ctx.text.c_str(), stdout);
    }
    std::fflush(stdout);
    return o.code;
  };

  if (!positional.ok()) {
    return finish(Usage(std::string(positional.status().message())));
  }
  std::vector<std::string> args = *std::move(positional);
  if (!args.empty() && args[0] == "help") {
    if (args.size() == 1) {
      std::fputs(GeneralHelp().c_str(), stdout);
      return kExitOk;
    }
    const Command* c = FindCommand(args[1]);
    if (c == nullptr) {
      std::fputs(GeneralHelp().c_str(), stderr);
      return kExitUsage;
    }
    std::fputs(CommandHelp(*c).c_str(), stdout);
    return kExitOk;
  }
  if (args.empty()) {
    if (help) {
      std::fputs(GeneralHelp().c_str(), stdout);
      return kExitOk;
    }
    std::fputs(GeneralHelp().c_str(), stderr);
    return kExitUsage;
  }
  command_name = args[0];
  const Command* command = FindCommand(args[0]);
  if (command == nullptr) {
    return finish(Usage(absl::StrCat("unknown command '", args[0],
                                     "'; `psctl help` lists the commands")));
  }
  if (help) {
    std::fputs(CommandHelp(*command).c_str(), stdout);
    return kExitOk;
  }
  args.erase(args.begin());

  std::string shard_list = absl::GetFlag(FLAGS_shards);
  if (shard_list.empty()) {
    if (const char* env = std::getenv("PSKIT_SHARDS")) shard_list = env;
  }
  std::vector<std::string> addresses =
      absl::StrSplit(shard_list, ',', absl::SkipWhitespace());
  if (addresses.empty()) {
    return finish(
        Usage("no shards: give --shards host:port,... or set PSKIT_SHARDS"));
  }
  const double timeout_s = absl::GetFlag(FLAGS_timeout_s);
  if (!(timeout_s > 0) || timeout_s > 1e6) {
    return finish(Usage("--timeout_s must be > 0 seconds"));
  }
  ctx.timeout = absl::Seconds(timeout_s);
  for (size_t i = 0; i < addresses.size(); ++i) {
    addresses[i] = std::string(absl::StripAsciiWhitespace(addresses[i]));
    ctx.shards.push_back({static_cast<uint32_t>(i), addresses[i]});
  }
  AdminOptions admin_options;
  admin_options.timeout = ctx.timeout;
  absl::StatusOr<std::unique_ptr<AdminClient>> admin =
      AdminClient::Connect(addresses, admin_options);
  if (!admin.ok()) return finish(Usage(std::string(admin.status().message())));
  ctx.admin = *std::move(admin);
  return finish(command->run(&ctx, args));
}

}  // namespace
}  // namespace pskit

int main(int argc, char** argv) {
  if (absl::Status s = pskit::SetupLogging("psctl", "warn"); !s.ok()) {
    std::fprintf(stderr, "psctl: %s\n", s.ToString().c_str());
    return 1;
  }
  return pskit::Main(argc, argv);
}
