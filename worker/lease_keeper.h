// worker/lease_keeper.h
//
// LeaseKeeper: renews a registered worker's lease on every shard with a
// Heartbeat every `period`, on a thread of its own, and remembers when a
// heartbeat answered that the job is done (the evaluator reached its target,
// or psctl drain): that is how a training loop learns the job has ended.
//
// Example:
//   PSKIT_RETURN_IF_ERROR(client->RegisterWorker("rank0").status());
//   LeaseKeeper lease(client.get(), "default", absl::Milliseconds(500));
//   while (!lease.job_done()) { ... train a step ... }
//
// Thread safety: job_done() may be called from any thread. The thread is
// started by the constructor and joined by the destructor (within one
// heartbeat's deadline).
#ifndef PSKIT_WORKER_LEASE_KEEPER_H_
#define PSKIT_WORKER_LEASE_KEEPER_H_

#include <atomic>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/client.h"

namespace pskit::worker {

class LeaseKeeper {
 public:
  // Starts heartbeating namespace `ns` through `client` (borrowed; must
  // outlive this object, and be registered). A failed heartbeat is logged
  // and the next one tried on time: the client retries within a call, and
  // a lease survives a few missed renewals.
  LeaseKeeper(Client* client, std::string ns, absl::Duration period);
  // Stops and joins the thread; the lease is left to lapse (call
  // Client::Leave to end it at once).
  ~LeaseKeeper();
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  // True once a heartbeat answered that the job is done; stays true.
  bool job_done() const { return done_.load(); }

 private:
  void Loop();

  // Constant after construction.
  Client* const client_;
  const std::string ns_;
  const absl::Duration period_;

  absl::Notification stop_;
  // Atomic: written by the heartbeat thread, read by the training loop.
  std::atomic<bool> done_{false};
  std::thread thread_;  // last: it starts once the fields above exist
};

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_LEASE_KEEPER_H_
