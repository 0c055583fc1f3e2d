// tools/psctl/cmd_health.cc
//
// The health command: each shard's standard gRPC health service
// (grpc.health.v1.Health/Check, service ""), through CheckHealth
// (client/health.h). Unlike every other command it does not ask for the
// Admin Status first: a shard just started, with nothing declared, is
// healthy, and a container's HEALTHCHECK must not depend on more than the
// health service.
//
//   psctl --shards h1:7000,h2:7000 health           # exit 0: all SERVING
//   psctl --shards shard-0.ps:7000 health --json    # one JSON object
//
// Its deadline is --timeout_s when given, else kHealthDefaultTimeout (3 s):
// psctl's general default (60 s) is far longer than a probe may take.
//
// Thread safety: run by psctl's one thread.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/health.h"
#include "tools/psctl/commands.h"
#include "tools/psctl/context.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {

Outcome CmdHealth(Context* ctx, const std::vector<std::string>& args) {
  if (!args.empty()) return Usage("health takes no arguments");
  HealthOptions options;
  options.timeout = ctx->timeout_given ? ctx->timeout : kHealthDefaultTimeout;
  options.security = ctx->security;
  std::vector<std::string> addresses;
  for (const Shard& s : ctx->shards) addresses.push_back(s.address);
  const std::vector<ShardHealth> health = CheckHealth(addresses, options);

  Json shards = Json::Array();
  Table table({"shard", "address", "health", "detail"});
  std::vector<std::string> failures;
  for (const ShardHealth& h : health) {
    Json j = Json::Object();
    j.Set("index", h.shard)
        .Set("address", h.address)
        .Set("ok", h.serving())
        .Set("status", h.state);
    if (!h.serving()) {
      j.Set("error", h.description);
      failures.push_back(h.description);
    }
    shards.Add(std::move(j));
    table.Row({absl::StrCat(h.shard), h.address, h.state,
               h.error.ok() ? "" : std::string(h.error.message())});
  }
  ctx->out.Set("timeout_s", Json::Seconds(absl::ToDoubleSeconds(options.timeout)))
      .Set("shards", std::move(shards));
  ctx->text = table.Render();
  if (!failures.empty()) return Failed(absl::StrJoin(failures, "; "));
  return Ok();
}

}  // namespace pskit::psctl
