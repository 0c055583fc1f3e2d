// tools/psctl/cmd_checkpoint.cc
//
// The checkpoint, checkpoints and restore commands.
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
#include "tools/psctl/commands.h"
#include "tools/psctl/context.h"
#include "tools/psctl/flags.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {

// ---------------------------------------------------------------------------
// checkpoint [--id ID] [--wait]

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
    const bool started = !wait && st.code() == absl::StatusCode::kCancelled;
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

}  // namespace pskit::psctl
