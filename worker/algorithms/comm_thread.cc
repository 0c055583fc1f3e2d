// worker/algorithms/comm_thread.cc: the communication thread's handover.
#include "worker/algorithms/comm_thread.h"

#include <utility>

#include "absl/time/clock.h"

namespace pskit::worker {

CommThread::CommThread() : thread_([this] { Loop(); }) {}

CommThread::~CommThread() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;  // the thread finishes an exchange it started, then ends
  }
  thread_.join();
}

absl::Status CommThread::Start(absl::AnyInvocable<absl::Status()> exchange) {
  absl::MutexLock lock(&mu_);
  if (in_hand_) {
    return absl::FailedPreconditionError(
        "CommThread::Start: the previous exchange's result was not taken "
        "with Wait");
  }
  pending_ = std::move(exchange);
  has_pending_ = true;
  in_hand_ = true;
  finished_ = false;
  return absl::OkStatus();
}

CommThread::Result CommThread::Wait() {
  absl::MutexLock lock(&mu_);
  if (!in_hand_) {
    const absl::Time now = absl::Now();
    return {absl::OkStatus(), now, now};
  }
  mu_.Await(absl::Condition(&finished_));
  in_hand_ = false;
  finished_ = false;
  return std::move(result_);
}

bool CommThread::busy() const {
  absl::MutexLock lock(&mu_);
  return in_hand_;
}

bool CommThread::done() const {
  absl::MutexLock lock(&mu_);
  return finished_;
}

void CommThread::Loop() {
  while (true) {
    absl::AnyInvocable<absl::Status()> exchange;
    {
      absl::MutexLock lock(&mu_);
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return has_pending_ || stop_;
      };
      mu_.Await(absl::Condition(&wake));
      if (!has_pending_) return;  // stop_, nothing left to run
      exchange = std::move(pending_);
      has_pending_ = false;
    }
    Result r;
    r.start = absl::Now();
    r.status = exchange();
    r.end = absl::Now();
    absl::MutexLock lock(&mu_);
    result_ = std::move(r);
    finished_ = true;
  }
}

}  // namespace pskit::worker
