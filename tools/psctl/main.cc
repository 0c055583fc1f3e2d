// psctl: the operator's command line for a running pskit cluster.
//
//   psctl --shards h1:7000,h2:7000 status
//   PSKIT_SHARDS=h1:7000,h2:7000 psctl checkpoint --wait
//   psctl set job1 lr=0.0005 --json
//   psctl dump job1 fc1/w --out fc1_w.npy
//   psctl --shards 127.0.0.1:7000 health   # a container's HEALTHCHECK
//   psctl token new --role worker --out w.token >> shard-tokens.txt
//
// It talks to each shard's pskit.v1.Admin service through AdminClient (one
// channel per shard, every call fanned out to all shards at once with a
// deadline) and, for `dump`, pulls through libpskit_client. Output is tables
// for people, or with --json one JSON object on stdout for scripts
// (README.md, "psctl", has the schema); errors also go to stderr, one line
// each, naming shard and address.
//
// Every command but `health` first asks each shard for its Status: a shard
// that does not answer stops the command (exit 3) before anything changes,
// and shard i of --shards must call itself shard i of N (exit 2 otherwise).
// `status` itself reports what the reachable shards say and then exits 3.
// `health` asks only the standard gRPC health service and exits 1 when a
// shard is not SERVING or not reachable (a probe's 0/1).
//
// Exit codes: 0 ok; 1 an operation failed (a shard refused it, a checkpoint
// is missing somewhere, a drain's wait ran out); 2 usage (unknown command or
// flag, bad argument, --shards missing or out of order); 3 a shard
// unreachable.
//
// The code: flags.h (flags and parser), context.h (shards, Status, exit
// codes), commands.h (the commands, one file per group), output.h (JSON,
// tables), npy.h (dump's .npy writer).
//
// Thread safety: one thread runs the commands; gRPC's callback threads only
// hand answers back under a mutex.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/admin_client.h"
#include "client/security_flags.h"
#include "common/logging.h"
#include "tools/psctl/commands.h"
#include "tools/psctl/context.h"
#include "tools/psctl/flags.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {
namespace {

int Main(int argc, char** argv) {
  bool help = false;
  std::set<std::string> given;
  absl::StatusOr<std::vector<std::string>> positional =
      ParseArgs(argc, argv, &help, &given);
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
  if (command->local) return finish(command->run(&ctx, args));

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
  ctx.timeout_given = given.count("timeout_s") > 0;
  for (size_t i = 0; i < addresses.size(); ++i) {
    addresses[i] = std::string(absl::StripAsciiWhitespace(addresses[i]));
    ctx.shards.push_back({static_cast<uint32_t>(i), addresses[i]});
  }
  absl::StatusOr<ChannelSecurity> security = ChannelSecurityFromFlags();
  if (!security.ok()) {
    return finish(Usage(std::string(security.status().message())));
  }
  ctx.security = *std::move(security);
  AdminOptions admin_options;
  admin_options.timeout = ctx.timeout;
  admin_options.security = ctx.security;
  absl::StatusOr<std::unique_ptr<AdminClient>> admin =
      AdminClient::Connect(addresses, admin_options);
  if (!admin.ok()) return finish(Usage(std::string(admin.status().message())));
  ctx.admin = *std::move(admin);
  return finish(command->run(&ctx, args));
}

}  // namespace
}  // namespace pskit::psctl

int main(int argc, char** argv) {
  if (absl::Status s = pskit::SetupLogging("psctl", "warn"); !s.ok()) {
    std::fprintf(stderr, "psctl: %s\n", s.ToString().c_str());
    return 1;
  }
  return pskit::psctl::Main(argc, argv);
}
