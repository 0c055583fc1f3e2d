// psrun: runs a whole pskit job on this machine, as torchrun or horovodrun
// would: N ps-server shards, M ps-worker processes and an optional
// evaluator, every child's output streamed with a prefix, a live status
// line, and a summary at the end.
//
//   psrun --tls --servers 2 --workers 2 --evaluator -- --dataset idx
//         --data_path /usr/share/datasets/fashion-mnist --algorithm easgd
//         --tau 8 --target_accuracy 0.88
//
// With --worker_command "python3 train.py", workers and the evaluator run
// that command instead of ps-worker; what ps-worker gets as flags, it gets
// as environment variables (PSKIT_SHARDS, RANK, WORLD_SIZE, PSKIT_ROLE,
// ...: the list is in tools/psrun/launch/worker_command.h).
//
// With --workers 0 it starts the shards only, prints the line
// `shards: HOST:PORT,...` and the psctl command that reaches them, and serves
// until SIGINT/SIGTERM (exit 0), for clients started elsewhere (pstune):
//
//   psrun --servers 2 --workers 0
//
// The flags after `--` go to every worker and to the evaluator. Exit status:
// 0 when the job ended well, 1 when a child failed (psrun names it), 2 for
// bad flags, 128 + signal when interrupted (130 for Ctrl-C). See
// tools/psrun/launch/launcher.h.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/security_flags.h"
#include "common/flags.h"
#include "tools/psrun/launch/launcher.h"
#include "tools/psrun/launch/worker_command.h"

ABSL_FLAG(int32_t, servers, 1, "number of ps-server shards (>= 1)");
ABSL_FLAG(int32_t, workers, 1,
          "number of training ps-worker processes (>= 1); 0: serve the shards "
          "only: print 'shards: HOST:PORT,...' and the psctl command that "
          "reaches them, serve until SIGINT/SIGTERM, then stop them cleanly "
          "and exit 0 (no --evaluator, --worker_command, --namespace or flags "
          "after --)");
ABSL_FLAG(bool, evaluator, false,
          "also run ps-worker --role evaluator (it needs --target_accuracy, "
          "--patience or --max_seconds after --), or the worker command with "
          "PSKIT_ROLE=evaluator");
ABSL_FLAG(std::string, worker_command, "",
          "run this command for every worker and the evaluator instead of "
          "ps-worker, e.g. \"/usr/bin/python3 train.py --epochs 3\" (split "
          "into words like a shell splits plain words and quotes; no shell "
          "runs it); the args after -- are appended, and the shards, rank, "
          "world, role, ... come as environment variables: PSKIT_SHARDS, "
          "RANK, WORLD_SIZE, PSKIT_ROLE, PSKIT_NAMESPACE, PSKIT_METRICS_PORT, "
          "PSKIT_TOKEN_FILE, PSKIT_TLS_CA/CERT/KEY (README: psrun)");
ABSL_FLAG(std::string, namespace, "",
          "the job's namespace: ps-worker gets --namespace, a worker command "
          "PSKIT_NAMESPACE, and psrun's status line shows its evaluations; "
          "empty: ps-worker's --namespace after -- or \"default\"");
ABSL_FLAG(double, final_eval_timeout_s, 0,
          "how long an evaluator still running when the last worker ends "
          "gets to report an evaluation of the final model before psrun "
          "stops it; 0: 2 x ps-worker's --eval_interval_s + 5 s, or 60 s "
          "with --worker_command");
ABSL_FLAG(std::string, data_dir, "",
          "shard i checkpoints in DIR/shard-i and a second run resumes from "
          "them; empty: a fresh temporary directory, removed at the end");
ABSL_FLAG(bool, keep_data, false,
          "keep the temporary directory (without --data_dir)");
ABSL_FLAG(std::string, server_args, "",
          "extra ps-server flags, separated by spaces (no quoting), e.g. "
          "'--log_level warn --checkpoint_interval_s 30'");
ABSL_FLAG(int32_t, metrics_port_base, 9400,
          "Prometheus ports: shard i at P+i, the evaluator at P+99, worker j "
          "at P+100+j (a busy one falls back to a free port); 0: free ports");
ABSL_FLAG(std::string, prometheus_targets, "",
          "write the Prometheus file_sd targets here (e.g. "
          "/tmp/pskit/prometheus_targets.json, which "
          "deploy/prometheus/prometheus.yml reads); empty: "
          "<run dir>/prometheus_targets.json");
ABSL_FLAG(double, status_interval_s, 10,
          "when stdout is not a terminal, print the status line every this "
          "many seconds (0: never); on a terminal it is redrawn in place");
ABSL_FLAG(double, kill_timeout_s, 30,
          "seconds a child gets after SIGTERM before SIGKILL");
ABSL_FLAG(double, start_timeout_s, 60,
          "seconds the shards get to start and answer Admin/Status");
ABSL_FLAG(bool, auth, false,
          "run the cluster with tokens: make a throw-away admin and worker "
          "token in <run dir>/auth (mode 0600), give the shards their hashes "
          "(--auth_tokens), the workers and evaluator the worker token, "
          "psrun's monitor and the printed psctl command the admin token");
ABSL_FLAG(bool, tls, false,
          "run the cluster with mTLS: make a throw-away CA and certificates "
          "in <run dir>/tls, give them to shards, workers, the evaluator and "
          "psrun's monitor, and print the psctl flags that reach it");
ABSL_FLAG(int32_t, restart_shards, 0,
          "restart a shard that dies (SIGKILL, crash) on the same address and "
          "data directory, at most this many times per shard; 0: a dead "
          "shard fails the job");
ABSL_FLAG(double, restart_backoff_s, 1,
          "seconds before a shard's restart, doubled while it keeps dying "
          "within a minute (at most 30)");

int main(int argc, char** argv) {
  // Everything after the first "--" belongs to the workers; absl parses the
  // rest.
  int psrun_argc = argc;
  std::vector<std::string> worker_args;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--") {
      psrun_argc = i;
      worker_args.assign(argv + i + 1, argv + argc);
      break;
    }
  }
  std::vector<char*> positional = pskit::ParseFlags(
      psrun_argc, argv,
      "runs a pskit job on this machine: shards, workers, an evaluator.\n"
      "  psrun --servers N --workers M [--evaluator] [--data_dir DIR] -- "
      "<ps-worker flags>\n"
      "  psrun --worker_command \"/usr/bin/python3 train.py\" --servers N "
      "--workers M [--evaluator] -- <the command's args>\n"
      "  psrun --servers N --workers 0   (the shards only, until Ctrl-C)");
  if (positional.size() > 1) {
    std::fprintf(stderr,
                 "psrun: unexpected argument '%s'; ps-worker flags (or the "
                 "worker command's args) go after --\n",
                 positional[1]);
    return pskit::launch::kExitUsage;
  }

  pskit::launch::LauncherOptions o;
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    std::fprintf(stderr, "psrun: cannot read /proc/self/exe\n");
    return pskit::launch::kExitFailed;
  }
  o.bin_dir = std::filesystem::path(std::string(self, n)).parent_path();
  std::error_code ec;
  o.temp_root = std::filesystem::temp_directory_path(ec);
  if (ec) o.temp_root = "/tmp";
  o.servers = absl::GetFlag(FLAGS_servers);
  o.workers = absl::GetFlag(FLAGS_workers);
  o.evaluator = absl::GetFlag(FLAGS_evaluator);
  o.data_dir = absl::GetFlag(FLAGS_data_dir);
  o.keep_data = absl::GetFlag(FLAGS_keep_data);
  o.server_args = absl::StrSplit(absl::GetFlag(FLAGS_server_args), ' ',
                                 absl::SkipWhitespace());
  o.worker_args = worker_args;
  // Given at all (even as ""): an empty one is an error, not ps-worker.
  bool command_given = false;
  for (int i = 1; i < psrun_argc; ++i) {
    absl::string_view a = argv[i];
    if (!absl::ConsumePrefix(&a, "--")) absl::ConsumePrefix(&a, "-");
    if (a == "worker_command" || absl::StartsWith(a, "worker_command=")) {
      command_given = true;
    }
  }
  if (const std::string command = absl::GetFlag(FLAGS_worker_command);
      command_given) {
    absl::StatusOr<std::vector<std::string>> argv =
        pskit::launch::SplitCommandLine(command);
    if (!argv.ok()) {
      std::fprintf(stderr, "psrun: %s\n",
                   std::string(argv.status().message()).c_str());
      return pskit::launch::kExitUsage;
    }
    o.worker_command = *std::move(argv);
  }
  if (const char* path = std::getenv("PATH")) o.search_path = path;
  o.inherited_pythonunbuffered = std::getenv("PYTHONUNBUFFERED") != nullptr;
  o.ns = absl::GetFlag(FLAGS_namespace);
  o.final_eval_timeout =
      absl::Seconds(absl::GetFlag(FLAGS_final_eval_timeout_s));
  o.metrics_port_base = absl::GetFlag(FLAGS_metrics_port_base);
  o.prometheus_targets = absl::GetFlag(FLAGS_prometheus_targets);
  o.live_status_line = isatty(STDOUT_FILENO) == 1;
  o.status_interval = absl::Seconds(absl::GetFlag(FLAGS_status_interval_s));
  o.kill_timeout = absl::Seconds(absl::GetFlag(FLAGS_kill_timeout_s));
  o.start_timeout = absl::Seconds(absl::GetFlag(FLAGS_start_timeout_s));
  o.tls = absl::GetFlag(FLAGS_tls);
  o.auth = absl::GetFlag(FLAGS_auth);
  absl::StatusOr<pskit::ChannelSecurity> security =
      pskit::ChannelSecurityFromFlags();
  if (!security.ok()) {
    std::fprintf(stderr, "psrun: %s\n",
                 std::string(security.status().message()).c_str());
    return pskit::launch::kExitUsage;
  }
  o.security = *std::move(security);
  for (absl::string_view name : pskit::kChannelSecurityFlags) {
    const absl::CommandLineFlag* flag =
        absl::FindCommandLineFlag(name);
    const std::string value = flag->CurrentValue();
    if (!value.empty()) {
      o.client_flags.push_back(absl::StrCat("--", name));
      o.client_flags.push_back(value);
    }
  }
  o.restart_shards = absl::GetFlag(FLAGS_restart_shards);
  o.restart_backoff = absl::Seconds(absl::GetFlag(FLAGS_restart_backoff_s));
  return pskit::launch::RunLocalCluster(o);
}
