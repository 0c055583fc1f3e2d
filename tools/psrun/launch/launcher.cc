#include "tools/psrun/launch/launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "tools/psrun/launch/child_process.h"
#include "tools/psrun/launch/monitor.h"
#include "tools/psrun/launch/ports.h"
#include "tools/psrun/launch/progress.h"

namespace pskit::launch {
namespace {

namespace fs = std::filesystem;

// Lines of a child's output kept to show when it fails.
constexpr size_t kTailLines = 12;

// "SIGINT", or "signal 99".
std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? absl::StrCat("SIG", abbrev)
                           : absl::StrCat("signal ", sig);
}

// Splits "--name=value", "-name=value", "--name" into name and value.
// False for a non-flag (no leading dash, or a bare "-" / "--").
bool SplitFlag(absl::string_view arg, absl::string_view* name,
               std::optional<absl::string_view>* value) {
  if (!absl::ConsumePrefix(&arg, "-")) return false;
  absl::ConsumePrefix(&arg, "-");
  if (arg.empty()) return false;
  const size_t eq = arg.find('=');
  *name = arg.substr(0, eq);
  if (eq != absl::string_view::npos) {
    *value = arg.substr(eq + 1);
  } else {
    value->reset();
  }
  return true;
}

absl::Status RejectReserved(const std::vector<std::string>& args,
                            const std::vector<absl::string_view>& reserved,
                            absl::string_view whose) {
  for (const std::string& arg : args) {
    if (arg == "--") break;
    absl::string_view name;
    std::optional<absl::string_view> value;
    if (!SplitFlag(arg, &name, &value)) continue;
    for (absl::string_view r : reserved) {
      if (name == r) {
        return absl::InvalidArgumentError(
            absl::StrCat("psrun sets --", r, " for each ", whose,
                         " itself; remove it from the ", whose, " flags"));
      }
    }
  }
  return absl::OkStatus();
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

// Writes child lines and psrun's own lines, and keeps the live status line
// at the bottom of a terminal: erased before other output, redrawn after.
class Console {
 public:
  explicit Console(bool live) : live_(live) {}

  void Out(absl::string_view line) {
    EraseStatus();
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
  }
  void Err(absl::string_view line) {
    EraseStatus();
    std::fflush(stdout);
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fputc('\n', stderr);
    std::fflush(stderr);
  }
  // Ends a batch of output: redraws `status` (live mode) and flushes.
  void Flush(const std::string& status) {
    if (live_ && !status.empty()) {
      EraseStatus();
      std::string s = status;
      const size_t width = Width();
      if (s.size() >= width) s.resize(width - 1);
      std::fputs(s.c_str(), stdout);
      shown_ = true;
    }
    std::fflush(stdout);
  }
  void EraseStatus() {
    if (shown_) std::fputs("\r\033[K", stdout);
    shown_ = false;
  }

 private:
  static size_t Width() {
    winsize ws{};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10) {
      return ws.ws_col;
    }
    return 80;
  }
  bool live_;
  bool shown_ = false;
};

// Runs one local cluster: a single thread poll()s the signalfd, the
// monitor's eventfd and every child's pipes, and moves through Phase as
// children start, answer and end. Only this thread writes to stdout/stderr,
// so lines never interleave; the Monitor's thread only hands samples over.
class Launcher {
 public:
  Launcher(const LauncherOptions& options, WorkerFlagInfo info)
      : options_(options),
        info_(std::move(info)),
        console_(options.live_status_line) {}
  ~Launcher();

  int Run();

 private:
  // Setup; false (after saying why) if the cluster cannot start.
  bool Prepare();
  bool StartShards();
  void StartWorkers();
  // Starts one child and registers it; false (after saying why) on error.
  bool Spawn(Role role, int index, const std::string& binary,
             const std::vector<std::string>& args);

  void Loop();
  absl::Time NextDeadline() const;
  void HandleSignals();
  void ReapChildren();
  void ReadFrom(Child& c, int stream);
  void OnLine(Child& c, int stream, std::string line);
  void OnExit(Child& c, int wait_status);
  void OnSample(const ClusterSample& s);
  void Advance();

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
  Console console_;
  const absl::Time start_ = absl::Now();

  std::string run_dir_;
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
};

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

bool Launcher::Prepare() {
  std::error_code ec;
  if (options_.data_dir.empty()) {
    std::string tmpl = options_.temp_root + "/psrun-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      console_.Err(absl::StrCat("psrun: cannot create a directory under ",
                                options_.temp_root, ": ", strerror(errno)));
      return false;
    }
    run_dir_ = tmpl;
    remove_run_dir_ = !options_.keep_data;
  } else {
    run_dir_ = options_.data_dir;
  }
  for (int i = 0; i < options_.servers; ++i) {
    const std::string dir = absl::StrCat(run_dir_, "/shard-", i);
    fs::create_directories(dir, ec);
    if (ec) {
      console_.Err(
          absl::StrCat("psrun: cannot create ", dir, ": ", ec.message()));
      return false;
    }
  }
  Note(absl::StrCat("shard data in ", run_dir_, "/shard-{0..",
                    options_.servers - 1, "}",
                    options_.data_dir.empty()
                        ? (options_.keep_data ? " (a fresh directory, kept)"
                                              : " (a fresh directory, removed "
                                                "at the end; --keep_data "
                                                "keeps it)")
                        : ""));

  absl::StatusOr<MetricsPorts> ports =
      ChooseMetricsPorts(options_.metrics_port_base, options_.servers,
                         options_.workers, options_.evaluator);
  if (!ports.ok()) {
    console_.Err(absl::StrCat("psrun: ", ports.status().message()));
    return false;
  }
  ports_ = *std::move(ports);
  for (const std::string& w : ports_.warnings)
    console_.Err("psrun: warning: " + w);

  // Prometheus file_sd: the same ports a fixed config would scrape.
  auto targets = [](const std::vector<int>& list) {
    std::vector<std::string> quoted;
    for (int p : list) quoted.push_back(absl::StrCat("\"127.0.0.1:", p, "\""));
    return absl::StrJoin(quoted, ", ");
  };
  std::vector<int> worker_ports = ports_.workers;
  if (ports_.evaluator > 0) worker_ports.push_back(ports_.evaluator);
  const std::string json = absl::StrCat(
      "[\n  {\"targets\": [", targets(ports_.shards),
      "], \"labels\": {\"job\": \"pskit-server\"}},\n  {\"targets\": [",
      targets(worker_ports),
      "], \"labels\": {\"job\": \"pskit-worker\"}}\n]\n");
  const std::string path = options_.prometheus_targets.empty()
                               ? run_dir_ + "/prometheus_targets.json"
                               : options_.prometheus_targets;
  {
    // Prometheus may read the file at any moment: write a sibling, rename.
    std::error_code ec;
    const std::filesystem::path parent =
        std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    const std::string tmp = path + ".tmp";
    std::ofstream out(tmp, std::ios::trunc);
    out << json;
    out.close();
    if (!out || std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      console_.Err("psrun: warning: cannot write " + path);
    } else {
      Note("Prometheus targets (file_sd): " + path);
    }
  }
  return true;
}

bool Launcher::Spawn(Role role, int index, const std::string& binary,
                     const std::vector<std::string>& args) {
  auto c = std::make_unique<Child>();
  c->role = role;
  c->index = index;
  c->name = role == Role::kShard    ? absl::StrCat("shard", index)
            : role == Role::kWorker ? absl::StrCat("worker", index)
                                    : "evaluator";
  absl::StatusOr<SpawnedChild> spawned =
      SpawnChild(options_.bin_dir + "/" + binary, args);
  if (!spawned.ok()) {
    Fail(absl::StrCat("cannot start ", c->name, ": ",
                      spawned.status().message()),
         nullptr);
    return false;
  }
  c->pid = spawned->pid;
  c->fds[0] = spawned->stdout_fd;
  c->fds[1] = spawned->stderr_fd;
  c->started = absl::Now();
  c->running = true;
  Note(absl::StrCat("started ", c->name, " (pid ", c->pid, ")"));
  children_.push_back(std::move(c));
  return true;
}

bool Launcher::StartShards() {
  start_deadline_ = absl::Now() + options_.start_timeout;
  for (int i = 0; i < options_.servers; ++i) {
    std::vector<std::string> args = {
        "--listen",       "127.0.0.1:0",
        "--shard_index",  absl::StrCat(i),
        "--num_shards",   absl::StrCat(options_.servers),
        "--data_dir",     absl::StrCat(run_dir_, "/shard-", i),
        "--metrics_port", absl::StrCat(ports_.shards[i])};
    args.insert(args.end(), options_.server_args.begin(),
                options_.server_args.end());
    if (!Spawn(Role::kShard, i, "ps-server", args)) return false;
  }
  return true;
}

void Launcher::StartWorkers() {
  std::vector<std::string> shards;
  for (const auto& c : children_) {
    if (c->role == Role::kShard) shards.push_back(c->address);
  }
  const std::string list = absl::StrJoin(shards, ",");
  Note(absl::StrCat("every shard answers; starting ", options_.workers,
                    options_.workers == 1 ? " worker" : " workers",
                    options_.evaluator ? " and the evaluator" : "",
                    ": ps-worker --shards ", list, " --rank J --world ",
                    options_.workers, " ",
                    absl::StrJoin(options_.worker_args, " ")));
  workers_started_ = absl::Now();
  for (int j = 0; j < options_.workers; ++j) {
    std::vector<std::string> args = {
        "--shards",       list,
        "--rank",         absl::StrCat(j),
        "--world",        absl::StrCat(options_.workers),
        "--metrics_port", absl::StrCat(ports_.workers[j]),
        "--metrics_host", "127.0.0.1"};
    args.insert(args.end(), options_.worker_args.begin(),
                options_.worker_args.end());
    if (!Spawn(Role::kWorker, j, "ps-worker", args)) return;
    monitor_->SetWorkerRunning(j, true);
  }
  if (options_.evaluator) {
    // --rank/--world keep a launcher's environment (SLURM_PROCID, ...)
    // from reaching the evaluator.
    std::vector<std::string> args = {
        "--role",         "evaluator",
        "--shards",       list,
        "--rank",         "0",
        "--world",        "1",
        "--metrics_port", absl::StrCat(ports_.evaluator),
        "--metrics_host", "127.0.0.1"};
    args.insert(args.end(), options_.worker_args.begin(),
                options_.worker_args.end());
    if (!Spawn(Role::kEvaluator, 0, "ps-worker", args)) return;
  }
  phase_ = Phase::kRunning;
  next_status_ = absl::Now() + options_.status_interval;
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
      if (interrupted_by_ == 0 && failure_.empty()) interrupted_by_ = sig;
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
  const bool exited_zero =
      WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
  const int sig = WIFSIGNALED(wait_status) ? WTERMSIG(wait_status) : 0;
  const std::string how = absl::StrCat(c.name, " (pid ", c.pid, ") ",
                                       DescribeWaitStatus(wait_status));
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

void Launcher::Advance() {
  const absl::Time now = absl::Now();
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
        StartWorkers();
      } else if (now >= start_deadline_) {
        Fail(absl::StrCat("the shards did not answer Admin/Status within ",
                          HumanDuration(options_.start_timeout), ": ",
                          absl::StrJoin(sample_.shard_errors, "; ")),
             nullptr);
      }
      return;
    case Phase::kRunning:
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
      phase_deadline_ = now + absl::Seconds(2 * info_.eval_interval_s + 5);
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
  if (phase_ == Phase::kRunning) {
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
  // One last look at the counters and the final evaluation, while the
  // shards still answer.
  if (monitor_ != nullptr) {
    if (sample_.round > 0) OnSample(monitor_->PollNow());
    monitor_->Stop();
  }
  phase_ = Phase::kStoppingShards;
  phase_deadline_ = absl::Now() + options_.kill_timeout;
  escalated_ = false;
  if (AnyRunning(true)) {
    Note("stopping the shards (SIGTERM; they write a final checkpoint)");
  }
  SignalAll(true, SIGTERM);
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

// Most important first: a narrow terminal cuts the line from the right.
// "12 s | step 1.47M (23.7K/s) | 380K samples/s | accuracy 0.8460 (best
// 0.8490) | 0.88 in ~12 s | workers 2/2"
std::string Launcher::StatusText() const {
  if (phase_ < Phase::kRunning) {
    return absl::StrCat(HumanDuration(absl::Now() - start_),
                        " | starting the shards");
  }
  auto count = [](const auto& v) {
    return v.has_value() ? FormatCount(*v) : std::string("-");
  };
  // The global step: training steps summed over the workers (as scraped);
  // the shards' rate is in chunk updates, a finer unit, so it is named so.
  std::optional<double> steps;
  for (const std::optional<double>& w : sample_.worker_steps) {
    if (w.has_value()) steps = steps.value_or(0) + *w;
  }
  std::string s = absl::StrCat(
      HumanDuration(absl::Now() - start_), " | step ", count(steps), " | ",
      count(sample_.samples_per_s), " samples/s | ",
      count(sample_.updates_per_s), " chunk updates/s");
  if (const std::optional<double> acc = trend_.latest(); acc.has_value()) {
    absl::StrAppendFormat(&s, " | accuracy %.4f (best %.4f)", *acc,
                          trend_.best().value_or(*acc));
  } else {
    absl::StrAppend(&s, " | accuracy -");
  }
  if (info_.target_accuracy.has_value()) {
    const double target = *info_.target_accuracy;
    if (trend_.FirstAtOrAbove(target).has_value()) {
      absl::StrAppend(&s, " | ", target, " reached");
    } else {
      const std::optional<absl::Duration> left = trend_.TimeToReach(target);
      absl::StrAppend(&s, " | ", target, " in ",
                      left.has_value() ? "~" + HumanDuration(*left) : "-");
    }
  }
  int workers = 0;
  for (const auto& c : children_) {
    if (c->role == Role::kWorker && c->running) ++workers;
  }
  absl::StrAppend(&s, " | workers ", workers, "/", options_.workers);
  return s;
}

void Launcher::PrintSummary() {
  const absl::Time now = absl::Now();
  console_.Out(absl::StrCat(
      "psrun: summary after ", HumanDuration(now - start_), " (",
      options_.servers, options_.servers == 1 ? " shard, " : " shards, ",
      options_.workers, options_.workers == 1 ? " worker" : " workers",
      options_.evaluator ? ", evaluator" : "", ")"));
  console_.Out(absl::StrFormat("  %-10s %-5s %-8s %-42s %s", "role", "rank",
                               "pid", "exit", "wall"));
  for (const auto& c : children_) {
    std::string exit;
    if (c->running) {
      exit = "still running";
    } else if (WIFEXITED(c->wait_status)) {
      exit = absl::StrCat(WEXITSTATUS(c->wait_status));
    } else if (WIFSIGNALED(c->wait_status)) {
      const int sig = WTERMSIG(c->wait_status);
      exit = absl::StrCat("signal ", sig, " (", SignalName(sig), ")");
    }
    if (c->kill_sent) {
      absl::StrAppend(&exit, ", killed by psrun");
    } else if (c->stop_sent) {
      absl::StrAppend(&exit, ", stopped by psrun");
    }
    const char* role = c->role == Role::kShard    ? "shard"
                       : c->role == Role::kWorker ? "worker"
                                                  : "evaluator";
    const std::string rank =
        c->role == Role::kEvaluator ? "-" : absl::StrCat(c->index);
    console_.Out(absl::StrFormat(
        "  %-10s %-5s %-8d %-42s %s", role, rank, c->pid, exit,
        HumanDuration((c->running ? now : c->ended) - c->started)));
  }

  // Totals: the workers' own summaries where they printed one, else their
  // last scraped counters.
  double steps = 0, samples = 0;
  int known = 0, started = 0;
  for (const auto& c : children_) {
    if (c->role != Role::kWorker) continue;
    ++started;
    const size_t j = c->index;
    std::optional<double> st = c->steps, sa = c->samples;
    if (!st.has_value() && j < sample_.worker_steps.size())
      st = sample_.worker_steps[j];
    if (!sa.has_value() && j < sample_.worker_samples.size())
      sa = sample_.worker_samples[j];
    if (st.has_value() && sa.has_value()) {
      steps += *st;
      samples += *sa;
      ++known;
    }
  }
  if (started > 0) {
    std::string line = absl::StrCat(
        "  updates applied on the shards ",
        sample_.updates.has_value() ? absl::StrCat(*sample_.updates) : "-");
    if (known > 0) {
      absl::StrAppend(&line, "; worker steps ", static_cast<int64_t>(steps),
                      ", samples ", static_cast<int64_t>(samples));
      if (known < started) {
        absl::StrAppend(&line, " (", known, " of ", started, " workers known)");
      }
    } else {
      absl::StrAppend(&line, "; worker steps and samples unknown");
    }
    console_.Out(line);
  }

  std::optional<double> final_acc = trend_.latest();
  std::optional<double> best_acc = trend_.best();
  for (const auto& c : children_) {
    if (c->role != Role::kEvaluator) continue;
    if (c->last_accuracy.has_value()) final_acc = c->last_accuracy;
    if (c->best_accuracy.has_value()) {
      best_acc = std::max(best_acc.value_or(0), *c->best_accuracy);
    }
  }
  if (final_acc.has_value()) {
    std::string line =
        absl::StrFormat("  accuracy: final %.4f, best %.4f", *final_acc,
                        best_acc.value_or(*final_acc));
    if (info_.target_accuracy.has_value()) {
      const std::optional<absl::Time> at =
          trend_.FirstAtOrAbove(*info_.target_accuracy);
      if (at.has_value() && workers_started_ != absl::InfiniteFuture()) {
        absl::StrAppend(&line, "; target ", *info_.target_accuracy, " reached ",
                        HumanDuration(*at - workers_started_),
                        " after the workers started");
      } else {
        absl::StrAppend(&line, "; target ", *info_.target_accuracy,
                        " not reached");
      }
      target_missed_ = !(best_acc.value_or(*final_acc) >=
                         *info_.target_accuracy);
    }
    console_.Out(line);
  }
  if (!failure_.empty()) {
    console_.Out("psrun: job failed: " + failure_);
  } else if (interrupted_by_ != 0) {
    console_.Out("psrun: job interrupted by " + SignalName(interrupted_by_));
  } else if (target_missed_) {
    console_.Out(absl::StrCat(
        "psrun: job failed: it ended (", end_reason_.empty() ? "ended" : end_reason_,
        ") without reaching the target accuracy ", *info_.target_accuracy,
        "; give it more time (--max_seconds, --epochs) or lower the target"));
  } else {
    console_.Out(absl::StrCat("psrun: job done: ",
                              end_reason_.empty() ? "ended" : end_reason_));
  }
}

int Launcher::ExitCode() const {
  if (interrupted_by_ != 0) return 128 + interrupted_by_;
  if (!failure_.empty() || target_missed_) return kExitFailed;
  return kExitOk;
}

}  // namespace

absl::StatusOr<WorkerFlagInfo> InspectWorkerArgs(
    const std::vector<std::string>& args) {
  if (absl::Status s = RejectReserved(
          args, {"shards", "rank", "world", "role", "metrics_port"}, "worker");
      !s.ok()) {
    return s;
  }
  WorkerFlagInfo info;
  double patience = 0, max_seconds = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--") break;
    absl::string_view name;
    std::optional<absl::string_view> value;
    if (!SplitFlag(args[i], &name, &value)) continue;
    double* number = nullptr;
    double target = 0;
    if (name == "target_accuracy") {
      number = &target;
    } else if (name == "eval_interval_s") {
      number = &info.eval_interval_s;
    } else if (name == "patience") {
      number = &patience;
    } else if (name == "max_seconds") {
      number = &max_seconds;
    } else if (name != "namespace") {
      continue;
    }
    if (!value.has_value()) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (number == nullptr) {
      info.ns = std::string(*value);
      continue;
    }
    if (!absl::SimpleAtod(*value, number)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " must be a number, got '", *value, "'"));
    }
    if (name == "target_accuracy") {
      if (target > 0) {
        info.target_accuracy = target;
      } else {
        info.target_accuracy.reset();
      }
    }
  }
  info.evaluator_can_end =
      info.target_accuracy.has_value() || patience > 0 || max_seconds > 0;
  return info;
}

absl::Status ValidateLauncherOptions(const LauncherOptions& o) {
  if (o.servers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--servers must be at least 1, got ", o.servers));
  }
  if (o.workers < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--workers must be at least 1 (the job ends when every worker has "
        "exited), got ",
        o.workers));
  }
  if (o.metrics_port_base < 0 || o.metrics_port_base > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics_port_base must be 0 (free ports) or a port, got ",
        o.metrics_port_base));
  }
  if (absl::Status s =
          CheckMetricsPortBase(o.metrics_port_base, o.servers, o.workers);
      !s.ok()) {
    return s;
  }
  if (o.kill_timeout < absl::ZeroDuration() ||
      o.start_timeout <= absl::ZeroDuration() ||
      o.status_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--kill_timeout_s and --status_interval_s must be >= 0 and "
        "--start_timeout_s > 0");
  }
  absl::StatusOr<WorkerFlagInfo> info = InspectWorkerArgs(o.worker_args);
  if (!info.ok()) return info.status();
  if (o.evaluator && !info->evaluator_can_end) {
    return absl::InvalidArgumentError(
        "--evaluator needs --target_accuracy, --patience or --max_seconds "
        "among the flags after -- (otherwise it never ends)");
  }
  if (absl::Status s = RejectReserved(
          o.server_args,
          {"listen", "shard_index", "num_shards", "data_dir", "metrics_port"},
          "server");
      !s.ok()) {
    return s;
  }
  for (const char* binary : {"ps-server", "ps-worker"}) {
    const std::string path = o.bin_dir + "/" + binary;
    if (access(path.c_str(), X_OK) != 0) {
      return absl::NotFoundError(absl::StrCat(
          binary, " not found at ", path,
          " (psrun runs the ps-server and ps-worker next to its own binary; "
          "build them: cmake --build build --target ps-server ps-worker)"));
    }
  }
  return absl::OkStatus();
}

int RunLocalCluster(const LauncherOptions& options) {
  if (absl::Status s = ValidateLauncherOptions(options); !s.ok()) {
    std::fprintf(stderr, "psrun: %s\n", std::string(s.message()).c_str());
    return kExitUsage;
  }
  Launcher launcher(options, *InspectWorkerArgs(options.worker_args));
  return launcher.Run();
}

}  // namespace pskit::launch
