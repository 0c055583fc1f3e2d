// worker/algorithms/comm_thread.h
//
// CommThread: one background thread that runs an algorithm's communication
// (a PushPull, a Push, a Pull) while the training thread computes the next
// step. It holds at most one exchange at a time: the training thread hands
// one over with Start, goes on computing, and takes its result with Wait
// (or looks first with done()) before it hands over the next. What the
// exchange reads and writes (the outgoing gradient, the incoming weights)
// belongs to the exchange from Start until Wait returns: that handover is
// the double buffer's rule, so the training thread never reads a half-
// written buffer and never overwrites one on the wire.
//
// Example:
//   CommThread comm;
//   comm.Start([&] { return client->PushPull(ns, grad, weights).status(); });
//   ... compute the next step on the weights in the model ...
//   PSKIT_RETURN_IF_ERROR(comm.Wait());   // the exchange's own status
//   ... copy `weights` into the model ...
//
// Thread safety: Start, Wait, done() and busy() are for one thread (the
// training loop); the exchange runs on the CommThread's own thread. The
// destructor waits for an exchange in flight (its calls have deadlines) and
// joins the thread, so no thread outlives the object.
#ifndef PSKIT_WORKER_ALGORITHMS_COMM_THREAD_H_
#define PSKIT_WORKER_ALGORITHMS_COMM_THREAD_H_

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace pskit::worker {

class CommThread {
 public:
  // The result of an exchange: its status and when it ran, for the phase
  // spans of the trace and the metrics.
  struct Result {
    absl::Status status;
    absl::Time start;
    absl::Time end;
  };

  CommThread();
  ~CommThread();
  CommThread(const CommThread&) = delete;
  CommThread& operator=(const CommThread&) = delete;

  // Hands `exchange` to the thread, which runs it at once. FAILED_PRECONDITION
  // (and `exchange` is not run) while an earlier one's result was not yet
  // taken with Wait.
  [[nodiscard]] absl::Status Start(absl::AnyInvocable<absl::Status()> exchange);

  // Blocks until the exchange handed over last has finished and returns its
  // result; afterwards the thread is free. Without an exchange in hand:
  // OK at once (start = end = now).
  Result Wait();

  // True from Start until Wait returned.
  bool busy() const;
  // True when the exchange in hand has finished (Wait will not block).
  bool done() const;

 private:
  void Loop();

  mutable absl::Mutex mu_;
  absl::AnyInvocable<absl::Status()> pending_ ABSL_GUARDED_BY(mu_);
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;  // given, not yet started
  bool in_hand_ ABSL_GUARDED_BY(mu_) = false;      // Start .. Wait
  bool finished_ ABSL_GUARDED_BY(mu_) = false;     // result ready
  Result result_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: it starts once the fields above exist
};

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_ALGORITHMS_COMM_THREAD_H_
