// tools/psrun/launch/worker_command.h
//
// psrun's worker command (`psrun --worker_command "python3 train.py"`): a
// program psrun runs for every training worker and for the evaluator
// instead of ps-worker. This file splits the command into argv (no shell),
// finds its program, and holds THE ENVIRONMENT CONTRACT: what ps-worker gets
// from psrun as flags, a worker command gets as these variables (the
// README's psrun section repeats this list):
//
//   PSKIT_SHARDS        the shards, "host:port,host:port" in shard order
//                       (ps-worker: --shards)
//   RANK, WORLD_SIZE    the rank among the training workers (0..M-1) and M,
//                       as torchrun sets them; the evaluator gets 0 and 1
//                       (ps-worker: --rank, --world)
//   LOCAL_RANK,         the same two again, as torchrun sets them (psrun
//   LOCAL_WORLD_SIZE    runs every process on one machine)
//   PSKIT_ROLE          "worker" or "evaluator" (ps-worker: --role)
//   PSKIT_NAMESPACE     psrun --namespace, when given (ps-worker:
//                       --namespace); absent otherwise
//   PSKIT_METRICS_PORT  the port psrun reserved for this process's
//                       Prometheus /metrics (it is in the file_sd targets
//                       and psrun scrapes it for its status line); 0: none
//   PSKIT_METRICS_HOST  "127.0.0.1", the address to serve it on
//                       (ps-worker: --metrics_port, --metrics_host)
//   PSKIT_TOKEN_FILE    the worker token's file with --auth, psrun's own
//                       --token_file otherwise (ps-worker: --token_file);
//                       when psrun sets it, PSKIT_TOKEN is removed
//   PSKIT_TLS_CA,       the CA, client certificate and key with --tls or
//   PSKIT_TLS_CERT,     psrun's own --tls_ca/--tls_cert/--tls_key
//   PSKIT_TLS_KEY       (ps-worker: the same flags); absent otherwise
//   PYTHONUNBUFFERED    "1" unless psrun's environment sets it, so that a
//                       Python worker's lines reach psrun as they are
//                       printed, not when a pipe buffer fills
//
// Removed, so that a launcher psrun itself runs under (srun psrun ...)
// cannot hand its own rank to the workers: SLURM_PROCID, SLURM_NTASKS,
// OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, PMI_RANK, PMI_SIZE,
// JOB_COMPLETION_INDEX, PSKIT_WORLD_SIZE (ps-worker's --rank/--world
// override them the same way). Everything else is inherited.
//
//   PSKIT_ASSIGN_OR_RETURN(std::vector<std::string> argv,
//                          SplitCommandLine("python3 'my train.py' -v"));
//   // {"python3", "my train.py", "-v"}
//   PSKIT_ASSIGN_OR_RETURN(std::string program, FindProgram(argv[0]));
//   // "/usr/bin/python3"
//
// Thread safety: pure functions (FindProgram reads PATH and the file
// system).
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_WORKER_COMMAND_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_WORKER_COMMAND_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tools/psrun/launch/child_process.h"

namespace pskit::launch {

// Splits `command` into words the way a POSIX shell splits plain words and
// quotes, with no expansion: blanks separate words; '...' is literal;
// "..." is literal but for \" \\ \$ \` (the backslash dropped); outside
// quotes a backslash takes the next character literally. INVALID_ARGUMENT
// for an empty command, an unterminated quote, a trailing backslash, or an
// unquoted | & ; < > ( ) $ ` (which only a shell would act on: the message
// says to quote them or to run `sh -c '...'`), a word starting with an
// unquoted ~ (no home directory is substituted), or a first word that is a
// shell's VAR=value assignment (the message says to use `env VAR=value`).
[[nodiscard]] absl::StatusOr<std::vector<std::string>> SplitCommandLine(
    absl::string_view command);

// The file `program` names, as execvp would find it: a name with a '/' is
// taken as it is (relative to the working directory), any other is looked
// up in `path` (PATH's value; nullopt: PATH unset, "/bin:/usr/bin"). The
// answer is absolute when the name or the PATH entry is. NOT_FOUND when no
// executable regular file is there (the message names what was searched);
// INVALID_ARGUMENT for a directory or a file without execute permission.
[[nodiscard]] absl::StatusOr<std::string> FindProgram(
    const std::string& program, std::optional<std::string> path);

// What psrun knows about one process it starts with the worker command.
struct WorkerEnvironmentInput {
  std::vector<std::string> shards;
  bool evaluator = false;
  int rank = 0;    // among the training workers; ignored for the evaluator
  int world = 1;   // training workers; ignored for the evaluator
  std::string ns;  // "": PSKIT_NAMESPACE is removed
  int metrics_port = 0;
  std::string metrics_host = "127.0.0.1";
  // "": the variable is removed (TLS), or left as inherited (the token:
  // psrun passes on PSKIT_TOKEN_FILE / PSKIT_TOKEN from its environment).
  std::string token_file;
  std::string tls_ca, tls_cert, tls_key;
  // Whether psrun's own environment sets PYTHONUNBUFFERED (then it is left
  // as it is).
  bool pythonunbuffered_inherited = false;
};

// The environment changes of the contract above for one process, for
// SpawnChild: every variable of the table set or removed.
std::vector<EnvChange> WorkerEnvironment(const WorkerEnvironmentInput& in);

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_WORKER_COMMAND_H_
