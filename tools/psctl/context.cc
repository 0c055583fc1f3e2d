#include "tools/psctl/context.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pskit::psctl {

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

}  // namespace pskit::psctl
