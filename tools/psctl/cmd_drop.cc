// tools/psctl/cmd_drop.cc
//
// The drop command: deletes a namespace on every shard (Admin/
// DropNamespace through AdminClient::DropNamespace: shard 0 first, so a
// refusal there changes nothing anywhere).
//
// Thread safety: run by psctl's one thread.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tools/psctl/commands.h"
#include "tools/psctl/context.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {

// ---------------------------------------------------------------------------
// drop NAMESPACE

Outcome CmdDrop(Context* ctx, const std::vector<std::string>& args) {
  if (args.size() != 1 || args[0].empty()) {
    return Usage(
        "drop takes one argument: the namespace to delete (psctl drop "
        "NAMESPACE)");
  }
  // Every shard must answer first: a shard down halfway would keep the
  // namespace while the others dropped it.
  if (Outcome o = QueryStatus(ctx); o.code != kExitOk) return o;
  const std::string& ns = args[0];
  auto replies = ctx->admin->DropNamespace(ns);
  Json shards = Json::Array();
  Table table({"shard", "address", "dropped", "chunks freed",
               "elements freed"});
  for (const auto& r : replies) {
    const Shard& s = ctx->shards[r.shard];
    Json j = ShardJson(s, r.status);
    if (r.status.ok()) {
      j.Set("chunks_freed", r.response.chunks_freed())
          .Set("elements_freed", r.response.elements_freed());
      table.Row({absl::StrCat(s.index), s.address, "yes",
                 absl::StrCat(r.response.chunks_freed()),
                 absl::StrCat(r.response.elements_freed())});
    } else {
      table.Row({absl::StrCat(s.index), s.address,
                 "no: " + StatusText(r.status), "-", "-"});
    }
    shards.Add(std::move(j));
  }
  ctx->out.Set("namespace", ns).Set("shards", std::move(shards));
  ctx->text = absl::StrCat("namespace ", ns, "\n", table.Render());
  if (replies.size() == 1 && !replies[0].ok() && ctx->shards.size() > 1) {
    return Failed(absl::StrCat(
        "drop refused by ", Where(ctx->shards[0]), ": ",
        StatusText(replies[0].status),
        " (no shard was changed: the others are asked only after shard 0 "
        "dropped it)"));
  }
  std::string failures;
  for (const auto& r : replies) {
    if (r.ok()) continue;
    absl::StrAppend(&failures, failures.empty() ? "" : "; ", "drop failed on ",
                    Where(ctx->shards[r.shard]), ": ", StatusText(r.status));
  }
  if (!failures.empty()) {
    if (replies[0].ok()) {
      absl::StrAppend(&failures,
                      "; shard 0 dropped it: run psctl drop again once those "
                      "shards answer (a shard without it counts as dropped)");
    }
    return Failed(std::move(failures));
  }
  return Ok();
}

}  // namespace pskit::psctl
