#include "tools/psrun/launch/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/exit_status.h"
#include "tools/psrun/launch/child_process.h"
#include "tools/psrun/launch/ports.h"
#include "tools/psrun/launch/progress.h"

namespace pskit::launch {

namespace fs = std::filesystem;

Launcher::~Launcher() {
  if (monitor_ != nullptr) monitor_->Stop();
  for (auto& c : children_) {
    if (c->running) {
      kill(c->pid, SIGKILL);
      waitpid(c->pid, nullptr, 0);
    }
    for (int& fd : c->fds) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
  }
  if (signal_fd_ >= 0) close(signal_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (remove_run_dir_ && !run_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(run_dir_, ec);
  }
}

int Launcher::Run() {
  // Signals arrive on a signalfd, read by the poll loop; blocked before any
  // thread exists so that gRPC's and the monitor's threads inherit the mask.
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&mask, sig);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a closed stdout must not kill the supervisor
  signal_fd_ = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (signal_fd_ < 0 || wake_fd_ < 0) {
    console_.Err(absl::StrCat("psrun: signalfd/eventfd: ", strerror(errno)));
    return kExitFailed;
  }
  // Block-buffered: each poll round's output leaves in one flush, after
  // which the live status line is redrawn.
  static char buffer[1 << 16];
  setvbuf(stdout, buffer, _IOFBF, sizeof(buffer));

  if (!Prepare() || !StartShards()) {
    // Shards already started are stopped the usual way.
    if (failure_.empty()) failure_ = "the cluster could not start";
    BeginStop();
  }
  Loop();
  console_.EraseStatus();
  PrintSummary();
  console_.Flush("");
  if (remove_run_dir_) {
    std::error_code ec;
    fs::remove_all(run_dir_, ec);
    remove_run_dir_ = false;
  } else if (!run_dir_.empty()) {
    Note(absl::StrCat("shard data kept in ", run_dir_, "; psrun --data_dir ",
                      run_dir_, " resumes from it"));
  }
  console_.Flush("");
  return ExitCode();
}

void Launcher::Loop() {
  while (true) {
    // Until the phase settles: a step that stops the shards when none is
    // left running must reach kDone now, not after the next poll timeout.
    for (Phase before = phase_;; before = phase_) {
      Advance();
      if (phase_ == before || phase_ == Phase::kDone) break;
    }
    if (!options_.live_status_line &&
        options_.status_interval > absl::ZeroDuration() &&
        (phase_ == Phase::kRunning || phase_ == Phase::kFinalEvaluation) &&
        absl::Now() >= next_status_) {
      Note("status " + StatusText());
      next_status_ = absl::Now() + options_.status_interval;
    }
    console_.Flush(options_.live_status_line ? "psrun " + StatusText() : "");
    if (phase_ == Phase::kDone) break;
    std::vector<pollfd> fds;
    std::vector<std::pair<Child*, int>> owners;
    fds.push_back({signal_fd_, POLLIN, 0});
    fds.push_back({wake_fd_, POLLIN, 0});
    for (auto& c : children_) {
      for (int s = 0; s < 2; ++s) {
        if (c->fds[s] < 0) continue;
        fds.push_back({c->fds[s], POLLIN, 0});
        owners.emplace_back(c.get(), s);
      }
    }
    const absl::Time deadline = NextDeadline();
    int timeout_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(std::clamp<int64_t>(
          absl::ToInt64Milliseconds(deadline - absl::Now()) + 1, 0, 60000));
    }
    const int n = poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) {
      console_.Err(absl::StrCat("psrun: poll: ", strerror(errno)));
      Fail("poll failed", nullptr);
    }
    if (n > 0) {
      // Output first, so that a child's last lines are in before its exit
      // is reported (OnExit drains what is left anyway).
      for (size_t i = 0; i < owners.size(); ++i) {
        if (fds[i + 2].revents == 0) continue;
        Child& c = *owners[i].first;
        const int s = owners[i].second;
        if (c.fds[s] == fds[i + 2].fd) ReadFrom(c, s);
      }
      if (fds[1].revents != 0) {
        uint64_t count;
        (void)!read(wake_fd_, &count, sizeof(count));
        if (monitor_ != nullptr) OnSample(monitor_->Latest());
      }
      if (fds[0].revents != 0) HandleSignals();
    }
  }
}

absl::Time Launcher::NextDeadline() const {
  absl::Time t = absl::InfiniteFuture();
  if (phase_ == Phase::kStartingShards || phase_ == Phase::kWaitingForShards) {
    t = std::min(t, start_deadline_);
  }
  if (phase_ == Phase::kFinalEvaluation ||
      ((phase_ == Phase::kStoppingWorkers ||
        phase_ == Phase::kStoppingShards) &&
       !escalated_)) {
    t = std::min(t, phase_deadline_);
  }
  if (!options_.live_status_line &&
      options_.status_interval > absl::ZeroDuration() &&
      (phase_ == Phase::kRunning || phase_ == Phase::kFinalEvaluation)) {
    t = std::min(t, next_status_);
  }
  if (phase_ == Phase::kWaitingForShards || phase_ == Phase::kRunning ||
      phase_ == Phase::kFinalEvaluation) {
    for (const auto& c : children_) t = std::min(t, c->restart_at);
  }
  return t;
}

void Launcher::HandleSignals() {
  signalfd_siginfo info;
  bool child = false;
  while (read(signal_fd_, &info, sizeof(info)) == sizeof(info)) {
    const int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGCHLD) {
      child = true;
      continue;
    }
    ++stop_signals_;
    if (stop_signals_ == 1) {
      if (Serving()) {
        // Serving the shards alone ends this way: not an interruption.
        end_reason_ = absl::StrCat("served ", options_.servers,
                                   options_.servers == 1 ? " shard" : " shards",
                                   " until ", SignalName(sig));
      } else if (interrupted_by_ == 0 && failure_.empty()) {
        interrupted_by_ = sig;
      }
      console_.Err(absl::StrCat("psrun: got ", SignalName(sig),
                                " (send it again to kill everything at once)"));
      BeginStop();
    } else {
      console_.Err("psrun: second stop signal; killing every child");
      for (auto& c : children_) {
        if (c->running && !c->kill_sent) {
          kill(c->pid, SIGKILL);
          c->kill_sent = true;
        }
      }
      escalated_ = true;
    }
  }
  if (child) ReapChildren();
}

void Launcher::ReapChildren() {
  for (auto& c : children_) {
    if (!c->running) continue;
    int status = 0;
    const pid_t r = waitpid(c->pid, &status, WNOHANG);
    if (r == c->pid) OnExit(*c, status);
  }
}

void Launcher::ReadFrom(Child& c, int stream) {
  char buf[1 << 16];
  ssize_t n;
  do {
    n = read(c.fds[stream], buf, sizeof(buf));
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    for (std::string& line :
         c.split[stream].Append(absl::string_view(buf, n))) {
      OnLine(c, stream, std::move(line));
    }
    return;
  }
  if (n < 0 && errno == EAGAIN) return;
  // EOF or an error: this stream is over.
  for (std::string& line : c.split[stream].Finish()) {
    OnLine(c, stream, std::move(line));
  }
  close(c.fds[stream]);
  c.fds[stream] = -1;
}

void Launcher::OnLine(Child& c, int stream, std::string line) {
  console_.Out(absl::StrCat("[", c.name, "] ", line));
  if (c.role == Role::kShard && stream == 0 && c.address.empty()) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "ps-server listening on ")) {
      c.address = std::string(absl::StripAsciiWhitespace(rest));
    }
  }
  // The workers' and the evaluator's own summaries are the exact totals
  // (the last scrape of a worker's counters can be a second old).
  long long steps = 0, samples = 0;
  int rank = 0, evaluations = 0;
  double secs = 0, best = 0, last = 0;
  if (c.role == Role::kWorker &&
      std::sscanf(line.c_str(),
                  "worker summary: rank %d: %lld steps, %lld samples", &rank,
                  &steps, &samples) == 3) {
    c.steps = steps;
    c.samples = samples;
  } else if (c.role == Role::kEvaluator &&
             std::sscanf(line.c_str(),
                         "evaluator summary: %d evaluations in %lf s, best "
                         "accuracy %lf, last %lf",
                         &evaluations, &secs, &best, &last) == 4) {
    c.best_accuracy = best;
    c.last_accuracy = last;
  }
  c.tail.push_back(std::move(line));
  if (c.tail.size() > kTailLines) c.tail.pop_front();
}

void Launcher::OnExit(Child& c, int wait_status) {
  // The process is gone, so everything it wrote is in the pipes.
  for (int s = 0; s < 2; ++s) {
    while (c.fds[s] >= 0) ReadFrom(c, s);
  }
  c.running = false;
  c.ended = absl::Now();
  c.wait_status = wait_status;
  if (c.role == Role::kWorker && monitor_ != nullptr) {
    monitor_->SetWorkerRunning(c.index, false);
  }
  // An evaluator's exit status 3 is its verdict "target not reached", not a
  // failure: the report says so and psrun exits 1 for it (TargetNotReached).
  const bool exited_zero =
      WIFEXITED(wait_status) &&
      (WEXITSTATUS(wait_status) == 0 ||
       (c.role == Role::kEvaluator &&
        WEXITSTATUS(wait_status) == kExitTargetNotReached));
  if (c.role == Role::kEvaluator && WIFEXITED(wait_status) &&
      WEXITSTATUS(wait_status) == kExitTargetNotReached) {
    evaluator_missed_target_ = true;
  }
  const int sig = WIFSIGNALED(wait_status) ? WTERMSIG(wait_status) : 0;
  const std::string how = absl::StrCat(c.name, " (pid ", c.pid, ") ",
                                       DescribeWaitStatus(wait_status));
  if (c.role == Role::kShard && !c.stop_sent && ScheduleRestart(c)) return;
  if (c.stop_sent && (exited_zero || sig == SIGTERM || sig == SIGKILL)) {
    if (c.role == Role::kShard && sig == SIGKILL && c.kill_sent &&
        stop_signals_ < 2) {
      Fail(absl::StrCat(c.name, " (pid ", c.pid, ") did not stop within ",
                        HumanDuration(options_.kill_timeout),
                        " of SIGTERM and was killed; its last checkpoint may "
                        "be older"),
           nullptr);
    }
    return;
  }
  if (exited_zero && c.role != Role::kShard) {
    Note(absl::StrCat(c.name, " finished after ",
                      HumanDuration(c.ended - c.started)));
    return;
  }
  if (c.role == Role::kShard && phase_ == Phase::kStartingShards &&
      c.address.empty()) {
    Fail(absl::StrCat(c.name, " failed to start: it ",
                      DescribeWaitStatus(wait_status)),
         &c);
    return;
  }
  if (exited_zero) {
    Fail(how + " while the job was running", &c);
  } else {
    Fail(how, &c);
  }
}

void Launcher::OnSample(const ClusterSample& s) {
  sample_ = s;
  if (s.last_evaluation.has_value() && s.last_evaluation->time_unix_ms() > 0) {
    trend_.Add(absl::FromUnixMillis(s.last_evaluation->time_unix_ms()),
               s.last_evaluation->accuracy());
  }
}

bool Launcher::ScheduleRestart(Child& c) {
  // Only a shard that was up (it printed its address, which the restart
  // reuses) while the job runs; not one being stopped.
  if (c.address.empty() || c.restarts >= options_.restart_shards ||
      !(phase_ == Phase::kWaitingForShards || phase_ == Phase::kRunning ||
        phase_ == Phase::kFinalEvaluation)) {
    return false;
  }
  // Kubernetes-like backoff: doubled while the shard keeps dying soon after
  // its start, reset once it ran a minute.
  if (c.backoff == absl::ZeroDuration() ||
      c.ended - c.started >= absl::Minutes(1)) {
    c.backoff = options_.restart_backoff;
  } else {
    c.backoff = std::min(2 * c.backoff, absl::Seconds(30));
  }
  c.restart_at = absl::Now() + c.backoff;
  console_.Err(
      absl::StrCat("psrun: ", c.name, " (pid ", c.pid, ") ",
                   DescribeWaitStatus(c.wait_status), "; restarting it on ",
                   c.address, " in ", HumanDuration(c.backoff), " (restart ",
                   c.restarts + 1, " of ", options_.restart_shards, ")"));
  return true;
}

void Launcher::RestartDueShards() {
  const absl::Time now = absl::Now();
  for (auto& cp : children_) {
    Child& c = *cp;
    if (c.role != Role::kShard || c.running || c.restart_at > now) continue;
    c.restart_at = absl::InfiniteFuture();
    // The same flags on the address it had, so the workers' channels find
    // it again, and the same --data_dir, so it loads its newest checkpoint.
    std::vector<std::string> args = c.args;
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == "--listen") args[i + 1] = c.address;
    }
    absl::StatusOr<SpawnedChild> spawned =
        SpawnChild(options_.bin_dir + "/ps-server", args);
    if (!spawned.ok()) {
      Fail(absl::StrCat("cannot restart ", c.name, ": ",
                        spawned.status().message()),
           nullptr);
      return;
    }
    ++c.restarts;
    ++shard_restarts_;
    c.pid = spawned->pid;
    c.fds[0] = spawned->stdout_fd;
    c.fds[1] = spawned->stderr_fd;
    c.split[0] = LineSplitter();
    c.split[1] = LineSplitter();
    c.started = absl::Now();
    c.running = true;
    c.wait_status = 0;
    Note(absl::StrCat("restarted ", c.name, " (pid ", c.pid, ") on ", c.address,
                      " (restart ", c.restarts, " of ", options_.restart_shards,
                      ")"));
  }
}

void Launcher::Advance() {
  const absl::Time now = absl::Now();
  if (phase_ == Phase::kWaitingForShards || phase_ == Phase::kRunning ||
      phase_ == Phase::kFinalEvaluation) {
    RestartDueShards();
  }
  switch (phase_) {
    case Phase::kStartingShards: {
      bool all = true;
      for (const auto& c : children_) {
        if (c->role == Role::kShard && c->address.empty()) all = false;
      }
      if (all && !children_.empty()) {
        MonitorOptions mo;
        for (const auto& c : children_) mo.shards.push_back(c->address);
        mo.worker_metrics_ports = ports_.workers;
        mo.ns = info_.ns;
        mo.wake_fd = wake_fd_;
        mo.security = security_;
        absl::StatusOr<std::unique_ptr<Monitor>> m = Monitor::Start(mo);
        if (!m.ok()) {
          Fail(
              absl::StrCat("cannot monitor the shards: ", m.status().message()),
              nullptr);
          return;
        }
        monitor_ = *std::move(m);
        phase_ = Phase::kWaitingForShards;
      } else if (now >= start_deadline_) {
        for (const auto& c : children_) {
          if (c->role == Role::kShard && c->address.empty()) {
            Fail(absl::StrCat(c->name, " (pid ", c->pid,
                              ") printed no 'ps-server listening on' line "
                              "within ",
                              HumanDuration(options_.start_timeout)),
                 c.get());
            return;
          }
        }
      }
      return;
    }
    case Phase::kWaitingForShards:
      if (sample_.every_shard_answered_once) {
        if (options_.workers == 0) {
          StartServing();
        } else {
          StartWorkers();
        }
      } else if (now >= start_deadline_) {
        Fail(absl::StrCat("the shards did not answer Admin/Status within ",
                          HumanDuration(options_.start_timeout), ": ",
                          absl::StrJoin(sample_.shard_errors, "; ")),
             nullptr);
      }
      return;
    case Phase::kRunning:
      if (Serving()) return;  // until a stop signal or a failure
      if (!AnyRunning(false)) {
        end_reason_ = "every worker finished";
        StopShards();
        return;
      }
      for (const auto& c : children_) {
        if (c->role == Role::kWorker && c->running) return;
      }
      workers_done_ = now;
      // Only the evaluator is left: let it score the final model.
      phase_ = Phase::kFinalEvaluation;
      phase_deadline_ =
          now + (options_.final_eval_timeout > absl::ZeroDuration()
                     ? options_.final_eval_timeout
                 : options_.worker_command.empty()
                     ? absl::Seconds(2 * info_.eval_interval_s + 5)
                     : absl::Seconds(60));
      Note("every worker finished; the evaluator scores the final model");
      return;
    case Phase::kFinalEvaluation:
      if (!AnyRunning(false)) {
        end_reason_ = "every worker finished";
        StopShards();
      } else if (now >= phase_deadline_ ||
                 (sample_.last_evaluation.has_value() &&
                  absl::FromUnixMillis(
                      sample_.last_evaluation->time_unix_ms()) >
                      workers_done_)) {
        end_reason_ = "every worker finished";
        Note("stopping the evaluator");
        BeginStop();
      }
      return;
    case Phase::kStoppingWorkers:
      if (!AnyRunning(false)) {
        StopShards();
      } else if (now >= phase_deadline_ && !escalated_) {
        Note(absl::StrCat("still running ",
                          HumanDuration(options_.kill_timeout),
                          " after SIGTERM; sending SIGKILL"));
        SignalAll(false, SIGKILL);
        escalated_ = true;
      }
      return;
    case Phase::kStoppingShards:
      if (!AnyRunning(true)) {
        phase_ = Phase::kDone;
      } else if (now >= phase_deadline_ && !escalated_) {
        Note(absl::StrCat("a shard is still running ",
                          HumanDuration(options_.kill_timeout),
                          " after SIGTERM; sending SIGKILL"));
        SignalAll(true, SIGKILL);
        escalated_ = true;
      }
      return;
    case Phase::kDone:
      return;
  }
}

void Launcher::Fail(const std::string& what, const Child* c) {
  std::string line = "psrun: " + what;
  if (c != nullptr && !c->tail.empty()) line += "; its last lines:";
  console_.Err(line);
  if (c != nullptr) {
    for (const std::string& l : c->tail) console_.Err("  " + l);
  }
  if (failure_.empty() && interrupted_by_ == 0) failure_ = what;
  BeginStop();
}

void Launcher::BeginStop() {
  if (phase_ >= Phase::kStoppingWorkers) return;
  if (phase_ == Phase::kRunning && options_.workers > 0) {
    Note(options_.evaluator
             ? "stopping the workers and the evaluator (SIGTERM), then the "
               "shards"
             : "stopping the workers (SIGTERM), then the shards");
  }
  phase_ = Phase::kStoppingWorkers;
  phase_deadline_ = absl::Now() + options_.kill_timeout;
  escalated_ = false;
  SignalAll(false, SIGTERM);
  // Advance moves on to the shards once no worker is left.
}

void Launcher::StopShards() {
  // A restart still pending is not made: the job is over.
  for (auto& c : children_) c->restart_at = absl::InfiniteFuture();
  // One last look at the counters and the final evaluation, while the
  // shards still answer.
  if (monitor_ != nullptr) {
    if (sample_.round > 0) OnSample(monitor_->PollNow());
    TakeShutdownCheckpoint();
    monitor_->Stop();
  }
  phase_ = Phase::kStoppingShards;
  phase_deadline_ = absl::Now() + options_.kill_timeout;
  escalated_ = false;
  if (AnyRunning(true)) {
    Note(shutdown_checkpoint_.empty()
             ? "stopping the shards (SIGTERM; they write a final checkpoint)"
             : "stopping the shards (SIGTERM; a shard writes a final "
               "checkpoint of its own only if it changed since)");
  }
  SignalAll(true, SIGTERM);
}

void Launcher::TakeShutdownCheckpoint() {
  // Only a whole cluster makes a restorable checkpoint, and only one that
  // ran workers has anything new to keep.
  // A second stop signal asked for everything to end at once.
  if (workers_started_ == absl::InfiniteFuture() || stop_signals_ >= 2) return;
  for (const auto& c : children_) {
    if (c->role == Role::kShard && !c->running) return;
  }
  // The workers have all exited (StopShards runs after them), so no update
  // can land on one shard after its copy: each shard's state in this
  // checkpoint is final, and its SIGTERM then adds none of its own.
  const std::string id =
      absl::StrCat("shutdown-", absl::ToUnixMillis(absl::Now()));
  std::vector<ShardResult<v1::CheckpointResponse>> results =
      monitor_->Checkpoint(id, options_.kill_timeout);
  std::vector<std::string> failed;
  for (const auto& r : results) {
    if (!r.ok()) failed.push_back(r.description);
  }
  if (failed.empty()) {
    shutdown_checkpoint_ = id;
    Note(absl::StrCat("checkpoint '", id, "' taken on every shard (psctl ",
                      "restore ", id, " brings this cluster back)"));
  } else {
    console_.Err(absl::StrCat(
        "psrun: warning: the shutdown checkpoint '", id,
        "' failed on some shards (", absl::StrJoin(failed, "; "),
        "); each shard writes a final checkpoint of its own instead"));
  }
}

// Sends `sig` to the running shards (`shards`) or to the running workers
// and evaluator.
void Launcher::SignalAll(bool shards, int sig) {
  for (auto& c : children_) {
    if (!c->running || (c->role == Role::kShard) != shards) continue;
    kill(c->pid, sig);
    if (sig == SIGKILL) {
      c->kill_sent = true;
    }
    c->stop_sent = true;
  }
}

bool Launcher::AnyRunning(bool shards) const {
  for (const auto& c : children_) {
    if (c->running && (c->role == Role::kShard) == shards) return true;
  }
  return false;
}

}  // namespace pskit::launch
