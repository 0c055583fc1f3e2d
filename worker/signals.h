// worker/signals.h
//
// StopOnSignal: ps-worker's SIGTERM and SIGINT. The first signal asks the
// job to stop: training ends after the step in hand, leaves the shards and
// prints its summary (exit 0); the evaluator stops waiting for its next
// round. A second signal ends the process at once, and so does a stop that
// takes over 10 s (a call retrying a dead shard), with status 143.
//
// The handler only writes a byte to a pipe (async-signal-safe); a thread
// turns it into the notification the trainer watches. A handler, not
// sigwait: OpenBLAS starts threads before main, with signals unblocked.
//
// Example:
//   StopOnSignal stop_on_signal;
//   job.stop = stop_on_signal.notification();
//
// Thread safety: make one per process, in main; the handler is
// process-wide. The thread is owned and joined by the destructor.
#ifndef PSKIT_WORKER_SIGNALS_H_
#define PSKIT_WORKER_SIGNALS_H_

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace pskit::worker {

class StopOnSignal {
 public:
  // Installs the handler for SIGTERM and SIGINT and starts the thread. If
  // no pipe can be made, logs that the signals keep their default action.
  StopOnSignal();
  ~StopOnSignal();
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

  // Notified on the first signal; lives as long as this object.
  const absl::Notification* notification() const { return &stop_; }

 private:
  static void Handle(int sig);
  void Watch();

  // How long the step in hand may take after the first signal.
  static constexpr absl::Duration kGrace = absl::Seconds(10);
  // Atomic: the handler reads and writes them, at any point of any thread.
  static inline std::atomic<bool> signalled_{false};
  static inline std::atomic<int> write_fd_{-1};

  int fds_[2] = {-1, -1};  // the pipe: read end, write end
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_SIGNALS_H_
