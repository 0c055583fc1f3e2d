// tools/psctl/cmd_drain.cc
//
// The drain command: end every job, wait for the workers to leave; and the
// shutdown command: a drain, then one checkpoint id on every shard.
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
    return {kExitUsage,
            "--wait_s must be >= 0 (seconds to wait for the "
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
      drained
          ? absl::StrFormat("drained: no live workers after %.1f s\n", waited)
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
// shutdown [--id ID] [--wait_s N] [--reason TEXT]

Outcome CmdShutdown(Context* ctx, const std::vector<std::string>& args) {
  if (!args.empty()) {
    return Usage("shutdown takes no arguments (the id goes in --id)");
  }
  // Checked before the drain, so a bad id changes nothing.
  std::string id = absl::GetFlag(FLAGS_id);
  if (id.empty())
    id = absl::StrCat("shutdown-", absl::ToUnixMillis(absl::Now()));
  if (id.size() > 128 || id.find('/') != std::string::npos ||
      std::any_of(id.begin(), id.end(),
                  [](char ch) { return ch <= ' ' || ch > '~'; })) {
    return Usage(
        "--id must be 1..128 printable ASCII characters without '/' or "
        "spaces");
  }
  // 1. The drain: jobs end, no new worker is let in, and the wait lasts
  // until no worker holds a lease, so no update can arrive after step 2.
  Outcome drained = CmdDrain(ctx, {});
  Json drain = std::move(ctx->out);
  std::string text = std::move(ctx->text);
  ctx->out = Json::Object();
  if (drained.code != kExitOk) {
    ctx->out.Set("drain", std::move(drain));
    ctx->text = text;
    absl::StrAppend(&drained.error,
                    "; no shutdown checkpoint was taken (run psctl shutdown "
                    "again once the workers are gone)");
    return drained;
  }
  // 2. One checkpoint id on every shard, waited for. The shards' own final
  // checkpoints at SIGTERM are skipped when nothing changed since, so this
  // id stays every shard's newest: the cluster restarts from it, and
  // `psctl restore ID` brings it back.
  absl::SetFlag(&FLAGS_id, id);
  absl::SetFlag(&FLAGS_wait, true);
  Outcome taken = CmdCheckpoint(ctx, {});
  ctx->out.Set("drain", std::move(drain));
  ctx->text = absl::StrCat(text, ctx->text);
  if (taken.code != kExitOk) return taken;
  absl::StrAppend(&ctx->text, "shut down: checkpoint ", id,
                  " is on every shard; stop the shards now (SIGTERM: each "
                  "writes no checkpoint of its own unless updated since); a "
                  "restarted cluster loads it\n");
  return Ok();
}

}  // namespace pskit::psctl
