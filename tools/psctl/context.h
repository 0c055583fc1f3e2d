// tools/psctl/context.h
//
// What every psctl command starts from and ends with: the shards (and the
// AdminClient that fans every Admin call out to them), their Status, the
// command's JSON fields and tables, and an Outcome (exit code and error).
//
// Thread safety: used by psctl's one thread.
#ifndef PSKIT_TOOLS_PSCTL_CONTEXT_H_
#define PSKIT_TOOLS_PSCTL_CONTEXT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/admin_client.h"
#include "pskit/v1/admin.pb.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {

// ---------------------------------------------------------------------------
// Exit codes and errors.

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

// health's deadline when --timeout_s is not given: a probe must be quick.
inline constexpr absl::Duration kHealthDefaultTimeout = absl::Seconds(3);

// A command's end: the exit code and, unless it is 0, what went wrong.
struct Outcome {
  int code = kExitOk;
  std::string error;
};

inline Outcome Ok() { return {}; }
inline Outcome Usage(std::string msg) { return {kExitUsage, std::move(msg)}; }
inline Outcome Failed(std::string msg) { return {kExitFailed, std::move(msg)}; }

// "UNAVAILABLE: failed to connect to all addresses".
inline std::string StatusText(const absl::Status& s) { return s.ToString(); }

// ---------------------------------------------------------------------------
// Shards.

struct Shard {
  uint32_t index;
  std::string address;
};

// What every command starts from.
struct Context {
  std::vector<Shard> shards;
  std::unique_ptr<AdminClient> admin;  // every Admin call goes through it
  ChannelSecurity security;            // of every channel psctl makes
  absl::Duration timeout;
  bool timeout_given = false;  // --timeout_s was on the command line
  // Status of each shard; nullopt where it did not answer.
  std::vector<std::optional<v1::StatusResponse>> status;
  std::vector<std::string> down;  // per shard: "" or the gRPC error
  Json out = Json::Object();      // the command's JSON fields
  std::string text;               // the command's tables
};

// "shard 1 (127.0.0.1:7001)".
std::string Where(const Shard& s);

// Asks every shard for its Status. Returns exit 3 naming each shard that
// did not answer, or exit 2 when one's place in --shards is not its index.
Outcome QueryStatus(Context* ctx);

// The shard entry of a JSON answer: index, address, ok, and error if not.
Json ShardJson(const Shard& s, const absl::Status& status);

// Exit 1 naming every memory-only shard, if any.
Outcome RequireDurable(const Context& ctx, absl::string_view command);

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

}  // namespace pskit::psctl

#endif  // PSKIT_TOOLS_PSCTL_CONTEXT_H_
