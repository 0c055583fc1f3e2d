// tools/psctl/commands.h
//
// psctl's commands: one function per command (each in the file of its
// group: cmd_status.cc, cmd_checkpoint.cc, cmd_set.cc, cmd_dump.cc,
// cmd_drain.cc, cmd_drop.cc, cmd_health.cc), the table that names them, and the help
// texts.
//
// A command gets the Context and the arguments after the command name; most
// call QueryStatus first (status reports what the reachable shards said;
// health never asks for Status, only the gRPC health service); it fills ctx->out (JSON) and ctx->text (tables) and returns
// its Outcome.
//
// Thread safety: run by psctl's one thread.
#ifndef PSKIT_TOOLS_PSCTL_COMMANDS_H_
#define PSKIT_TOOLS_PSCTL_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "pskit/v1/admin.pb.h"
#include "tools/psctl/context.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {

Outcome CmdStatus(Context* ctx, const std::vector<std::string>& args);
Outcome CmdTensors(Context* ctx, const std::vector<std::string>& args);
Outcome CmdCheckpoint(Context* ctx, const std::vector<std::string>& args);
Outcome CmdCheckpoints(Context* ctx, const std::vector<std::string>& args);
Outcome CmdRestore(Context* ctx, const std::vector<std::string>& args);
Outcome CmdSet(Context* ctx, const std::vector<std::string>& args);
Outcome CmdDump(Context* ctx, const std::vector<std::string>& args);
Outcome CmdDrain(Context* ctx, const std::vector<std::string>& args);
Outcome CmdDrop(Context* ctx, const std::vector<std::string>& args);
Outcome CmdShutdown(Context* ctx, const std::vector<std::string>& args);
Outcome CmdHealth(Context* ctx, const std::vector<std::string>& args);
Outcome CmdToken(Context* ctx, const std::vector<std::string>& args);

// set's arguments after the namespace: key=value pairs (lr, momentum, ...,
// compensation, optimizer) into `req`'s optimizer and compensation;
// `changes` gets each as JSON for the report. INVALID_ARGUMENT (a usage
// error, naming the pair) for a pair that is not key=value, an unknown key,
// a key given twice, a value that is not a number or not a known name.
// Declared here so the flag fuzzer (tests/fuzz/fuzz_config.cc) reaches it.
[[nodiscard]] absl::Status ParseSettings(const std::vector<std::string>& pairs,
                                         v1::SetConfigRequest* req,
                                         Json* changes);

// One command: its name, one-line synopsis, help text and function.
struct Command {
  const char* name;
  const char* synopsis;
  const char* help;
  Outcome (*run)(Context*, const std::vector<std::string>&);
  // Runs on this machine alone: no --shards needed, none contacted.
  bool local = false;
};

// The whole help (`psctl help`, `psctl --help`): usage and every command.
std::string GeneralHelp();
// One command's help (`psctl help COMMAND`, `psctl COMMAND --help`).
std::string CommandHelp(const Command& c);
// The command called `name`, or nullptr.
const Command* FindCommand(absl::string_view name);

}  // namespace pskit::psctl

#endif  // PSKIT_TOOLS_PSCTL_COMMANDS_H_
