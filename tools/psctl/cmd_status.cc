// tools/psctl/cmd_status.cc
//
// The status and tensors commands: what the shards hold and how they are.
//
// Thread safety: run by psctl's one thread.
#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/optimizer_config.h"
#include "tools/psctl/commands.h"
#include "tools/psctl/context.h"
#include "tools/psctl/flags.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {

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

}  // namespace pskit::psctl
