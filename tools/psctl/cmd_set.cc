// tools/psctl/cmd_set.cc
//
// The set command: live hyper-parameters (Admin/SetConfig), rolled back
// on every shard when one refuses.
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
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/optimizer_config.h"
#include "common/staleness_config.h"
#include "common/status_macros.h"
#include "tools/psctl/commands.h"
#include "tools/psctl/context.h"
#include "tools/psctl/flags.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {

// ---------------------------------------------------------------------------
// set NAMESPACE key=value...

constexpr absl::string_view kSetKeys =
    "lr (or learning_rate), momentum, beta1, beta2, epsilon (or eps), "
    "weight_decay (or wd), rho, initial_accumulator, compensation "
    "(none|inverse|dcasgd-c|dcasgd-a|gem), dc_lambda, dc_momentum, "
    "dc_epsilon, gem_momentum, gem_kappa, gem_epsilon, consistency "
    "(async|ssp:S|sync|sync:B), ssp_bound, backup_workers, optimizer (must "
    "stay the namespace's)";

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
      PSKIT_RETURN_IF_ERROR(ParseCompensation(value, &c));
      req->set_compensation(c);
      changes->Set(key, absl::AsciiStrToLower(value));
      continue;
    }
    if (key == "consistency") {
      v1::NamespaceConfig parsed;
      PSKIT_RETURN_IF_ERROR(ParseConsistency(value, &parsed));
      req->set_consistency(parsed.consistency());
      req->mutable_staleness()->MergeFrom(parsed.staleness());
      changes->Set(key, absl::AsciiStrToLower(value));
      continue;
    }
    if (key == "ssp_bound" || key == "backup_workers") {
      int32_t n;
      if (!absl::SimpleAtoi(value, &n)) {
        return absl::InvalidArgumentError(
            absl::StrCat(pair, ": '", value, "' is not an integer"));
      }
      if (key == "ssp_bound") {
        req->mutable_staleness()->set_ssp_bound(n);
      } else {
        req->mutable_staleness()->set_backup_workers(n);
      }
      changes->Set(key, static_cast<int64_t>(n));
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
    } else if (key == "dc_lambda") {
      req->mutable_staleness()->set_dc_lambda(v);
    } else if (key == "dc_momentum") {
      req->mutable_staleness()->set_dc_momentum(v);
    } else if (key == "dc_epsilon") {
      req->mutable_staleness()->set_dc_epsilon(v);
    } else if (key == "gem_momentum") {
      req->mutable_staleness()->set_gem_momentum(v);
    } else if (key == "gem_kappa") {
      req->mutable_staleness()->set_gem_kappa(v);
    } else if (key == "gem_epsilon") {
      req->mutable_staleness()->set_gem_epsilon(v);
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
      v1::NamespaceConfig previous = replies[i].response.previous();
      ClearUnusedStaleness(&previous);
      u.set_compensation(previous.compensation());
      u.set_consistency(previous.consistency());
      *u.mutable_staleness() = previous.staleness();
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

}  // namespace pskit::psctl
