// tools/psrun/launch/report.cc
//
// What Launcher tells the operator: the live status line, the summary
// table at the end, and psrun's exit code.
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
#include "tools/psrun/launch/supervisor.h"

namespace pskit::launch {

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
  if (options_.workers == 0) {
    // Serving the shards alone: what the clients started elsewhere do.
    return absl::StrCat(HumanDuration(absl::Now() - start_), " | serving ",
                        options_.servers,
                        options_.servers == 1 ? " shard" : " shards", " | ",
                        count(sample_.updates_per_s), " chunk updates/s | ",
                        sample_.live_workers, " live workers");
  }
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

  if (options_.restart_shards > 0 || shard_restarts_ > 0) {
    std::string line = absl::StrCat("  shard restarts: ", shard_restarts_);
    for (const auto& c : children_) {
      if (c->role == Role::kShard && c->restarts > 0) {
        absl::StrAppend(&line, "; ", c->name, " ", c->restarts);
      }
    }
    absl::StrAppend(&line, " (--restart_shards ", options_.restart_shards,
                    " each)");
    console_.Out(line);
  }
  if (!shutdown_checkpoint_.empty()) {
    console_.Out("  checkpoint on every shard: " + shutdown_checkpoint_);
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
  // Serving alone, the evaluations are other people's jobs'.
  if (final_acc.has_value() && options_.workers > 0) {
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
      target_missed_ =
          !(best_acc.value_or(*final_acc) >= *info_.target_accuracy);
    }
    console_.Out(line);
  }
  if (!failure_.empty()) {
    console_.Out("psrun: job failed: " + failure_);
  } else if (interrupted_by_ != 0) {
    console_.Out("psrun: job interrupted by " + SignalName(interrupted_by_));
  } else if (target_missed_) {
    console_.Out(absl::StrCat(
        "psrun: job failed: it ended (",
        end_reason_.empty() ? "ended" : end_reason_,
        ") without reaching the target accuracy ", *info_.target_accuracy,
        "; give it more time (--max_seconds, --epochs) or lower the target"));
  } else if (evaluator_missed_target_) {
    console_.Out(absl::StrCat("psrun: job failed: it ended (",
                              end_reason_.empty() ? "ended" : end_reason_,
                              ") and the evaluator exited ",
                              kExitTargetNotReached,
                              ": the target accuracy was not reached"));
  } else if (options_.workers == 0) {
    console_.Out(absl::StrCat("psrun: done: ", end_reason_,
                              "; every shard stopped cleanly"));
  } else {
    console_.Out(absl::StrCat("psrun: job done: ",
                              end_reason_.empty() ? "ended" : end_reason_));
  }
}

int Launcher::ExitCode() const {
  if (interrupted_by_ != 0) return 128 + interrupted_by_;
  if (!failure_.empty() || target_missed_ || evaluator_missed_target_) {
    return kExitFailed;
  }
  return kExitOk;
}

}  // namespace pskit::launch
