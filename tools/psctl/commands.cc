#include "tools/psctl/commands.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace pskit::psctl {
namespace {

constexpr Command kCommands[] = {
    {"status", "status",
     "Per shard: up/draining/down, namespaces, tensors, parameters held, max\n"
     "version, live workers, last checkpoint and its age, latest evaluation;\n"
     "then per namespace its optimizer config. Exit 3 when a shard is down\n"
     "(the others are still shown).",
     CmdStatus},
    {"health", "health",
     "Asks each shard's standard gRPC health service (grpc.health.v1, the\n"
     "one Kubernetes' grpc probes ask) whether it is SERVING; needs nothing\n"
     "else (a shard with nothing declared is healthy). Exit 0 when every\n"
     "shard is SERVING, 1 otherwise, naming each shard and why\n"
     "(NOT_SERVING: draining or not started; UNREACHABLE; NAME_NOT_RESOLVED;\n"
     "DEADLINE_EXCEEDED). Its deadline is --timeout_s if given, else 3 s.\n"
     "For a container's HEALTHCHECK: psctl --shards 127.0.0.1:7000 health",
     CmdHealth},
    {"tensors", "tensors [NAMESPACE]",
     "Every tensor (of NAMESPACE, or of all), merged across shards: shape,\n"
     "elements, chunks in all and per shard, max version.",
     CmdTensors},
    {"checkpoint", "checkpoint [--id ID] [--wait]",
     "Takes checkpoint ID (default psctl-<unix ms>) on every shard, so it can\n"
     "be restored cluster-wide. With --wait: waits for every shard (up to\n"
     "--timeout_s) and reports each. Without: waits at most 1 s; shards that\n"
     "answered are reported done or failed, the rest 'started' (they finish\n"
     "on their own; `psctl checkpoints` shows when the id is complete).",
     CmdCheckpoint},
    {"checkpoints", "checkpoints",
     "Every shard's checkpoints, merged by id, newest first: which shards "
     "hold\n"
     "each; an id on every shard is complete (restorable cluster-wide).",
     CmdCheckpoints},
    {"restore", "restore ID",
     "Restores checkpoint ID on every shard (each swaps its whole state at\n"
     "once). Refused before anything changes when a shard lacks ID.",
     CmdRestore},
    {"set", "set NAMESPACE key=value [key=value...]",
     "Changes NAMESPACE's hyper-parameters live on every shard, checked as\n"
     "Declare checks them. Keys: lr (learning_rate), momentum, beta1, beta2,\n"
     "epsilon (eps), weight_decay (wd), rho, compensation=none|inverse.\n"
     "The optimizer kind and initial_accumulator cannot change. If a shard\n"
     "refuses, the shards that took it are set back. Checkpoints keep it.",
     CmdSet},
    {"dump", "dump NAMESPACE TENSOR --out FILE.npy",
     "Pulls TENSOR and writes it as NumPy .npy 1.0 (little-endian float32,\n"
     "C order) through a temporary file renamed into place, so FILE is never\n"
     "half written. Each chunk is as of its own pull.",
     CmdDump},
    {"drop", "drop NAMESPACE",
     "Deletes NAMESPACE on every shard: its tensors, values, optimizer and\n"
     "compensation state, evaluations and config, so a later Declare of the\n"
     "name starts afresh. Shard 0 is asked first; if it refuses, no shard\n"
     "changed. Refused while a worker of NAMESPACE holds a lease (stop it,\n"
     "or wait for the lease to lapse); NOT_FOUND when no shard has it (a\n"
     "drop that got past shard 0 and stopped is finished by running it\n"
     "again). Prints, per shard, the chunks and elements freed.\n"
     "Checkpoints written before keep it (restore brings it back).",
     CmdDrop},
    {"drain", "drain [--wait_s N] [--reason TEXT]",
     "Ends every job on every shard (workers see job_done at their next\n"
     "heartbeat and exit 0), makes shards refuse new workers until they\n"
     "restart, and has each durable shard write checkpoint drain-<unix ms>;\n"
     "then waits (asking every 0.5 s, up to --timeout_s) until no worker\n"
     "holds a lease. Exit 1 if some still do.",
     CmdDrain},
    {"shutdown", "shutdown [--id ID] [--wait_s N] [--reason TEXT]",
     "Readies the whole cluster to stop with one checkpoint: drains (as\n"
     "drain does, and fails like it if workers still hold leases after\n"
     "--wait_s), then takes checkpoint ID (default shutdown-<unix ms>) on\n"
     "every shard and waits for it. Stop the shards afterwards (SIGTERM):\n"
     "a shard with no update since writes no final checkpoint of its own,\n"
     "so ID stays the newest on every shard and a restart loads it.",
     CmdShutdown},
    {"token", "token new --role R [--namespaces a,b] --out FILE",
     "Makes a fresh bearer token (32 random bytes, base64url) and writes it\n"
     "to FILE (mode 0600; an existing FILE is never overwritten) for a\n"
     "client's --token_file. Prints on stdout the line to add to every\n"
     "shard's --auth_tokens file: the token's SHA-256, the role (reader,\n"
     "worker or admin) and the namespaces (none: every namespace). Needs no\n"
     "shards.",
     CmdToken, /*local=*/true},
};

constexpr absl::string_view kCommonHelp =
    "Flags: --shards A,B,... (default $PSKIT_SHARDS; shard i of the list must\n"
    "be shard i), --json (one JSON object on stdout), --timeout_s N (default\n"
    "60; health: 3).\n"
    "Security: --tls_ca FILE (TLS, verify the shards), --tls_cert FILE\n"
    "--tls_key FILE (mTLS), --token_file FILE (default $PSKIT_TOKEN_FILE,\n"
    "else the token in $PSKIT_TOKEN).\n"
    "Exit codes: 0 ok, 1 an operation failed, 2 usage error, 3 a shard\n"
    "unreachable.\n";

}  // namespace

std::string GeneralHelp() {
  std::string out =
      "psctl: operate a pskit cluster.\n\n"
      "usage: psctl [--shards A,B,...] [--json] [--timeout_s N] COMMAND "
      "[ARGS]\n\ncommands:\n";
  for (const Command& c : kCommands)
    absl::StrAppend(&out, "  ", c.synopsis, "\n");
  absl::StrAppend(&out, "\n", kCommonHelp,
                  "`psctl help COMMAND` or `psctl COMMAND --help` describes "
                  "one command.\n");
  return out;
}

std::string CommandHelp(const Command& c) {
  return absl::StrCat("usage: psctl ", c.synopsis, "\n\n", c.help, "\n\n",
                      kCommonHelp);
}

const Command* FindCommand(absl::string_view name) {
  for (const Command& c : kCommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}
}  // namespace pskit::psctl
