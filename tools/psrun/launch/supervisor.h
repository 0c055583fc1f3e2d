// tools/psrun/launch/supervisor.h
//
// Launcher: the supervision state machine behind RunLocalCluster (see
// launcher.h for the lifecycle). Its methods live in files of one idea:
// startup.cc (directories, ports, spawning shards and workers),
// supervisor.cc (the poll loop, signals, child output and exits, the phase
// machine, stopping), report.cc (the status line, the summary, the exit
// code).
//
// Thread safety: one thread (the process's main thread) owns a Launcher;
// the Monitor's thread only hands samples over through the eventfd.
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_SUPERVISOR_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_SUPERVISOR_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tools/psrun/launch/child_process.h"
#include "tools/psrun/launch/console.h"
#include "tools/psrun/launch/monitor.h"
#include "tools/psrun/launch/options.h"
#include "tools/psrun/launch/ports.h"
#include "tools/psrun/launch/progress.h"
#include "tools/psrun/launch/worker_flags.h"

namespace pskit::launch {

// Lines of a child's output kept to show when it fails.
inline constexpr size_t kTailLines = 12;

// "SIGINT", or "signal 99".
inline std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? absl::StrCat("SIG", abbrev)
                           : absl::StrCat("signal ", sig);
}

enum class Role { kShard, kWorker, kEvaluator };

// One process psrun started, from spawn until it is reaped. Touched only by
// the launcher's (main) thread.
struct Child {
  Role role = Role::kShard;
  int index = 0;     // shard index or rank; 0 for the evaluator
  std::string name;  // "shard0", "worker1", "evaluator"
  pid_t pid = -1;
  int fds[2] = {-1, -1};  // stdout, stderr
  LineSplitter split[2];
  absl::Time started = absl::InfinitePast();
  absl::Time ended = absl::InfinitePast();
  bool running = false;
  int wait_status = 0;
  bool stop_sent = false;  // psrun sent SIGTERM
  bool kill_sent = false;  // psrun sent SIGKILL
  std::deque<std::string> tail;
  std::string address;  // shards: from "ps-server listening on"
  // Shards: the arguments it was started with (a restart reuses them on
  // its first address), restarts so far, the next one's time (InfiniteFuture:
  // none pending) and the wait before it.
  std::vector<std::string> args;
  int restarts = 0;
  absl::Time restart_at = absl::InfiniteFuture();
  absl::Duration backoff = absl::ZeroDuration();
  // From the child's own summary line, when it printed one.
  std::optional<int64_t> steps, samples;
  std::optional<double> best_accuracy, last_accuracy;
};

enum class Phase {
  kStartingShards,    // waiting for each shard's address line
  kWaitingForShards,  // waiting for every shard to answer Admin/Status
  kRunning,
  kFinalEvaluation,  // workers done; the evaluator scores the final model
  kStoppingWorkers,  // SIGTERM sent to workers and evaluator
  kStoppingShards,   // SIGTERM sent to the shards
  kDone,
};

// Runs one local cluster: a single thread poll()s the signalfd, the
// monitor's eventfd and every child's pipes, and moves through Phase as
// children start, answer and end. Only this thread writes to stdout/stderr,
// so lines never interleave; the Monitor's thread only hands samples over.
class Launcher {
 public:
  // `worker_program`: the file run for workers and the evaluator (ps-worker,
  // or the worker command's program as FindProgram found it).
  Launcher(const LauncherOptions& options, WorkerFlagInfo info,
           std::string worker_program)
      : options_(options),
        info_(std::move(info)),
        worker_program_(std::move(worker_program)),
        console_(options.live_status_line) {}
  ~Launcher();

  int Run();

 private:
  // Setup; false (after saying why) if the cluster cannot start.
  bool Prepare();
  // With --tls: the throw-away CA and certificates; with --auth: the
  // throw-away tokens. False after saying why.
  bool PrepareSecurity();
  bool PrepareTokens();
  bool StartShards();
  void StartWorkers();
  // Workers 0: prints "shards: HOST:PORT,..." and the psctl command, and
  // serves (Phase::kRunning until a stop signal).
  void StartServing();
  // "psctl --shards LIST <psrun's client flags> status".
  std::string PsctlCommand(const std::string& shards) const;
  // Workers 0, and the shards announced: only a stop signal (the normal
  // end) or a failure ends the run.
  bool Serving() const {
    return options_.workers == 0 && phase_ == Phase::kRunning;
  }
  // Starts one child (`program`: a path) and registers it; false (after
  // saying why) on error.
  bool Spawn(Role role, int index, const std::string& program,
             const std::vector<std::string>& args,
             const std::vector<EnvChange>& env = {});
  // The arguments and environment of training worker `rank` (-1: the
  // evaluator), for ps-worker or the worker command.
  void WorkerLaunch(int rank, const std::string& shards,
                    std::vector<std::string>* args,
                    std::vector<EnvChange>* env) const;

  void Loop();
  absl::Time NextDeadline() const;
  void HandleSignals();
  void ReapChildren();
  void ReadFrom(Child& c, int stream);
  void OnLine(Child& c, int stream, std::string line);
  void OnExit(Child& c, int wait_status);
  void OnSample(const ClusterSample& s);
  void Advance();

  // Whether a dead shard `c` gets restarted (restart policy, phase); if so,
  // schedules it and says so.
  bool ScheduleRestart(Child& c);
  // Starts the shards whose restart is due.
  void RestartDueShards();
  // Before SIGTERM to the shards: one checkpoint id on every shard, which
  // the shards' own final checkpoints then leave the newest.
  void TakeShutdownCheckpoint();

  // Reports a failure (the first decides the exit code) and stops.
  void Fail(const std::string& what, const Child* c);
  void BeginStop();
  void StopShards();
  void SignalAll(bool shards, int sig);
  bool AnyRunning(bool shards) const;
  std::string StatusText() const;
  void PrintSummary();
  int ExitCode() const;
  void Note(const std::string& line) { console_.Out("psrun: " + line); }

  const LauncherOptions options_;
  const WorkerFlagInfo info_;
  const std::string worker_program_;
  Console console_;
  const absl::Time start_ = absl::Now();

  std::string run_dir_;
  // From options_, or made by Prepare with --tls: the monitor's credentials,
  // the flags workers and the evaluator get, and the shards' TLS flags.
  ChannelSecurity security_;
  std::vector<std::string> client_flags_;
  std::vector<std::string> server_security_flags_;
  // With --auth: the workers' and evaluator's --token_file, and the one the
  // printed psctl command gets (the admin token's).
  std::vector<std::string> worker_token_flags_;
  std::vector<std::string> psctl_token_flags_;
  bool remove_run_dir_ = false;
  MetricsPorts ports_;
  int signal_fd_ = -1;
  int wake_fd_ = -1;
  std::vector<std::unique_ptr<Child>> children_;
  std::unique_ptr<Monitor> monitor_;
  ClusterSample sample_;
  AccuracyTrend trend_;

  Phase phase_ = Phase::kStartingShards;
  absl::Time start_deadline_ = absl::InfiniteFuture();
  absl::Time phase_deadline_ = absl::InfiniteFuture();
  bool escalated_ = false;  // SIGKILL sent in this stopping phase
  absl::Time workers_started_ = absl::InfiniteFuture();
  absl::Time workers_done_ = absl::InfiniteFuture();
  absl::Time next_status_ = absl::InfiniteFuture();
  int interrupted_by_ = 0;  // the first stop signal psrun got
  int stop_signals_ = 0;
  std::string failure_;  // the first failure, if any
  std::string end_reason_;
  // A --target_accuracy was set and the evaluator's best stayed below it:
  // the job ran, but did not do what it was asked (exit 1).
  bool target_missed_ = false;
  // The evaluator exited kExitTargetNotReached (3): its own verdict that the
  // target was missed, the only one psrun has from a worker command.
  bool evaluator_missed_target_ = false;
  int shard_restarts_ = 0;           // by the restart policy, all shards
  std::string shutdown_checkpoint_;  // its id, once on every shard
};

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_SUPERVISOR_H_
