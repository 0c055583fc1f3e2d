// tools/psrun/launch/launcher.h
//
// The local-cluster launcher behind psrun: starts N ps-server shards and M
// ps-worker processes (plus an optional evaluator) on 127.0.0.1, streams
// their output line by line with a prefix, shows a live status line, and
// stops everything in order when the job ends, a child fails, or psrun is
// interrupted.
//
//   LauncherOptions o;
//   o.bin_dir = "/opt/pskit/bin";
//   o.servers = 2;
//   o.workers = 2;
//   o.evaluator = true;
//   o.worker_args = {"--dataset", "synthetic", "--target_accuracy", "0.9"};
//   return RunLocalCluster(o);  // psrun's exit code
//
// Lifecycle: shards start with --listen 127.0.0.1:0 and are read back from
// their "ps-server listening on" line; workers start once every shard
// answers Admin/Status. The job ends when every worker has exited; an
// evaluator still running then gets until its next evaluation (at most
// 2 x --eval_interval_s + 5 s) to score the final model and is stopped.
// Stopping = SIGTERM to workers and evaluator, wait, then SIGTERM to the
// shards (which checkpoint), wait; whoever outlasts kill_timeout gets SIGKILL.
//
// Thread safety: RunLocalCluster must run on the process's main thread
// before any other thread exists: it blocks SIGINT, SIGTERM, SIGHUP and
// SIGCHLD (threads started later inherit the mask) and reads them from a
// signalfd; children die with the thread that started them
// (PR_SET_PDEATHSIG). It writes to stdout and stderr.
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_LAUNCHER_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_LAUNCHER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pskit::launch {

// psrun's exit codes besides 128 + signal number after SIGINT (130),
// SIGTERM (143) or SIGHUP (129).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;  // a child failed, or startup did
inline constexpr int kExitUsage = 2;   // bad flags, missing binaries

struct LauncherOptions {
  // Directory holding ps-server and ps-worker. Required.
  std::string bin_dir;
  // Shards and training workers, each >= 1. Default: 1 and 1.
  int servers = 1;
  int workers = 1;
  // Also run `ps-worker --role evaluator`. Default: off.
  bool evaluator = false;
  // Shard i keeps its checkpoints in data_dir/shard-i; a second run with
  // the same directory resumes from them. Empty: a fresh directory under
  // temp_root, removed at the end unless keep_data. Default: empty.
  std::string data_dir;
  std::string temp_root = "/tmp";
  bool keep_data = false;
  // Extra flags for every ps-server (e.g. {"--log_level", "warn"}).
  // psrun sets --listen, --shard_index, --num_shards, --data_dir and
  // --metrics_port itself. Default: none.
  std::vector<std::string> server_args;
  // The flags after `--`: given to every worker and to the evaluator
  // (ps-worker has one set of flags; each role ignores those it does not
  // use, and both must agree on the model and the optimizer). psrun sets
  // --shards, --rank, --world, --role and --metrics_port itself.
  std::vector<std::string> worker_args;
  // Metrics ports: shard i at base+i, the evaluator at base+99, worker j at
  // base+100+j; a busy one is replaced by a free port (with a warning).
  // 0: free ports for all. Default: 9400.
  int metrics_port_base = 9400;
  // Where to write the Prometheus file_sd targets (replaced atomically,
  // parent directories created). Empty: <run dir>/prometheus_targets.json.
  // deploy/prometheus/prometheus.yml reads /tmp/pskit/prometheus_targets.json.
  std::string prometheus_targets;
  // Redraw a status line at the bottom (stdout is a terminal), or print it
  // as a normal line every status_interval (0: never). Default: off, 10 s.
  bool live_status_line = false;
  absl::Duration status_interval = absl::Seconds(10);
  // How long children get after SIGTERM before SIGKILL. Default: 30 s.
  absl::Duration kill_timeout = absl::Seconds(30);
  // How long shards get to print their address and answer Admin/Status.
  // Default: 60 s.
  absl::Duration start_timeout = absl::Seconds(60);
};

// What psrun reads from the worker flags.
struct WorkerFlagInfo {
  std::optional<double> target_accuracy;
  std::string ns = "default";
  double eval_interval_s = 2;  // ps-worker's default
  bool evaluator_can_end =
      false;  // --target_accuracy, --patience or --max_seconds
};

// Checks the flags meant for ps-worker: INVALID_ARGUMENT when one of them is
// a flag psrun sets itself (the message names it), or a value psrun reads is
// not a number. Accepts --flag=value, --flag value and single dashes.
[[nodiscard]] absl::StatusOr<WorkerFlagInfo> InspectWorkerArgs(
    const std::vector<std::string>& args);

// INVALID_ARGUMENT (the message says which option and how to fix it) for
// servers or workers < 1, a negative duration or port base, an evaluator
// that could never end, a server arg psrun sets itself; NOT_FOUND when
// ps-server or ps-worker is missing from bin_dir.
[[nodiscard]] absl::Status ValidateLauncherOptions(const LauncherOptions& o);

// Runs the cluster until the job ends (see the file comment) and returns
// psrun's exit code: kExitOk when every worker and the evaluator exited 0
// (or the evaluator was stopped after the workers finished) and every shard
// stopped cleanly; kExitFailed when a child failed (psrun names it, says how
// it ended and shows its last lines) or the cluster could not start;
// kExitUsage for invalid options; 128 + signal when interrupted. Prints a
// summary table at the end in every case but kExitUsage.
int RunLocalCluster(const LauncherOptions& options);

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_LAUNCHER_H_
