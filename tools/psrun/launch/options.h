// tools/psrun/launch/options.h
//
// LauncherOptions: what psrun's flags become (shards, workers, evaluator,
// directories, ports, status line, timeouts), psrun's exit codes, and the
// check of the options before anything starts.
//
// Thread safety: plain data and a pure function.
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_OPTIONS_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_OPTIONS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/channel.h"

namespace pskit::launch {

// psrun's exit codes besides 128 + signal number after SIGINT (130),
// SIGTERM (143) or SIGHUP (129) (with workers 0, a stop signal once the
// shards serve is the normal end: kExitOk).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;  // a child failed, or startup did
inline constexpr int kExitUsage = 2;   // bad flags, missing binaries

struct LauncherOptions {
  // Directory holding ps-server and ps-worker. Required.
  std::string bin_dir;
  // Shards (>= 1) and training workers (>= 1; 0: serve the shards only:
  // print their addresses, the line "shards: HOST:PORT,...", and the psctl
  // command that reaches them, and serve until SIGINT/SIGTERM, which stop
  // them cleanly with exit 0; for clients started elsewhere, such as
  // pstune's trials). Default: 1 and 1.
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
  // The worker command (psrun --worker_command, split into argv by
  // SplitCommandLine): run for every training worker and the evaluator
  // instead of ps-worker, with worker_args appended and what ps-worker gets
  // as flags in its environment (the contract: worker_command.h). psrun
  // neither reads nor checks worker_args then (they are the command's), and
  // needs no ps-worker. Empty: ps-worker. Default: empty.
  std::vector<std::string> worker_command;
  // PATH's value, where a worker command's program without a '/' is looked
  // up (FindProgram); nullopt: "/bin:/usr/bin". psrun's main passes its own
  // PATH. Default: nullopt.
  std::optional<std::string> search_path;
  // Whether psrun's environment sets PYTHONUNBUFFERED: a worker command
  // then inherits it as it is, instead of getting "1". Default: false.
  bool inherited_pythonunbuffered = false;
  // The job's namespace: ps-worker gets --namespace, a worker command
  // PSKIT_NAMESPACE; psrun's monitor reports its evaluations. Empty: none
  // given (ps-worker's own --namespace after `--`, or "default").
  // Default: empty.
  std::string ns;
  // How long an evaluator still running when the last worker ends gets to
  // report an evaluation of the final model before psrun stops it. Zero:
  // 2 x ps-worker's --eval_interval_s + 5 s, or 60 s for a worker command
  // (psrun cannot know its interval). Default: zero.
  absl::Duration final_eval_timeout = absl::ZeroDuration();
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
  // The credentials of psrun's clients (psrun's own --tls_ca, --tls_cert,
  // --tls_key, --token_file, or PSKIT_TOKEN_FILE / PSKIT_TOKEN): the monitor
  // uses `security`, and `client_flags` (those flags as psrun got them) go
  // to every worker and the evaluator, who also inherit the environment.
  // The shards' own TLS flags go in server_args. Default: none.
  ChannelSecurity security;
  std::vector<std::string> client_flags;
  // Make a throw-away CA, a shard certificate (127.0.0.1, ::1, localhost)
  // and a client certificate in <run dir>/tls, and run the cluster with
  // mTLS: shards get --tls_cert/--tls_key/--tls_ca, workers, the evaluator
  // and the monitor the client certificate. Excludes `security`'s TLS files
  // and TLS flags in server_args. Default: off.
  bool tls = false;
  // Make throw-away bearer tokens in <run dir>/auth (mode 0600): an admin
  // token for psrun's monitor and the printed psctl command, a worker token
  // for workers and the evaluator, and the shards' --auth_tokens file
  // holding their hashes. Separate from `tls` because each turns on one
  // mechanism: tokens without TLS are fine on loopback (what psrun uses),
  // and TLS alone is what one debugs certificates with. Excludes psrun's
  // own --token_file and --auth_tokens in server_args. Default: off.
  bool auth = false;
  // A shard that dies once the cluster is up (SIGKILL, a crash) is started
  // again on the same address and data directory, as Kubernetes and SLURM
  // restart them: it loads its newest checkpoint and the workers, which
  // retry UNAVAILABLE until their --timeout_s, go on. At most this many
  // restarts per shard; one more death fails the job. 0: a dead shard
  // fails the job at once. Default: 0.
  int restart_shards = 0;
  // Wait before a restart: restart_backoff, doubled for each restart of a
  // shard that ran less than a minute since its last start, at most 30 s.
  // Default: 1 s.
  absl::Duration restart_backoff = absl::Seconds(1);
};

// INVALID_ARGUMENT (the message says which option and how to fix it) for
// servers < 1 or workers < 0, workers 0 with an evaluator, a worker command,
// a namespace or worker flags (nothing would run them), a negative duration,
// port base or restart count, an evaluator that could never end, a server
// arg psrun sets itself, a client security flag among the worker flags (it
// belongs to psrun), --tls with TLS files of psrun's own or in the server
// args, a namespace given both to psrun and after `--`; NOT_FOUND when
// ps-server or ps-worker (not needed with workers 0) is missing from
// bin_dir. With a worker command: its program missing or not executable
// (FindProgram's errors, NOT_FOUND or INVALID_ARGUMENT), or an empty one;
// ps-worker is not needed and the worker flags are not checked (they are the
// command's own; an evaluator command decides itself when it ends).
[[nodiscard]] absl::Status ValidateLauncherOptions(const LauncherOptions& o);

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_OPTIONS_H_
