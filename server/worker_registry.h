// server/worker_registry.h
//
// WorkerRegistry: the shard's leases. RegisterWorker gives a worker an id and
// a lease; Heartbeat renews it; Leave, or a lease that lapses, removes it.
// A lapsed worker is gone for good: its next call gets NOT_FOUND and it must
// register again (it may ask for its old id). Each lease records the
// namespace its worker trains (from RegisterWorker, then every Heartbeat),
// so Admin/DropNamespace can refuse while one of them is live.
//
// Lapses are found lazily (on each call, against the injected clock), so no
// thread is needed and tests move time without sleeping.
//
// A listener hears of workers that come (register, renew) and go (leave,
// lapse): the shard frees a departed worker's exactly-once window with it.
//
// Thread safety: all methods may be called concurrently (one mutex). The
// listener is called holding it: it must not call back into the registry.
#ifndef PSKIT_SERVER_WORKER_REGISTRY_H_
#define PSKIT_SERVER_WORKER_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace pskit {

// What a WorkerRegistry tells about its workers; either may be empty.
struct WorkerListener {
  // The worker registered or renewed its lease.
  std::function<void(uint64_t id)> live;
  // The worker left (`left`), or its lease lapsed (!`left`).
  std::function<void(uint64_t id, bool left)> gone;
};

class WorkerRegistry {
 public:
  // `clock` is borrowed and must outlive the registry. `lease` > 0.
  // `listener` is told of workers coming and going (see the top).
  WorkerRegistry(Clock* clock, absl::Duration lease,
                 WorkerListener listener = {});

  // Registers (or re-registers) a worker and starts its lease. With
  // `requested_id` 0 a fresh random nonzero id is chosen; otherwise that id
  // is used, renewing it if live under the same name. Returns the id.
  // INVALID_ARGUMENT for a name that is empty, longer than 256 bytes or not
  // printable ASCII; ALREADY_EXISTS when `requested_id` is live under
  // another name (two workers would share one lease).
  // `ns` is the namespace the worker trains ("" is "default"), as
  // RegisterWorkerRequest.namespace says.
  [[nodiscard]] absl::StatusOr<uint64_t> Register(uint64_t requested_id,
                                                  const std::string& name,
                                                  const std::string& ns = "")
      ABSL_LOCKS_EXCLUDED(mu_);

  // Renews the lease, and records `ns` as the worker's namespace; "" keeps
  // the one it has (registered, or named by an earlier Heartbeat). NOT_FOUND
  // when the id is unknown or its lease lapsed.
  [[nodiscard]] absl::Status Heartbeat(uint64_t id, const std::string& ns = "")
      ABSL_LOCKS_EXCLUDED(mu_);

  // The live workers of namespace `ns` (registered for it, or whose last
  // Heartbeat named it), as "name (id N)", sorted; lapsed leases are
  // dropped first.
  std::vector<std::string> LiveIn(const std::string& ns)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Removes the worker. NOT_FOUND when the id is unknown or lapsed.
  [[nodiscard]] absl::Status Leave(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);

  // OK when `id` holds a live lease; NOT_FOUND otherwise (and the lapsed
  // entry is dropped). Does not renew.
  [[nodiscard]] absl::Status CheckLive(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);

  // Number of live leases.
  size_t LiveCount() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Duration lease() const { return lease_; }

 private:
  struct Entry {
    std::string name;
    absl::Time expiry;
    std::string ns;  // the namespace it trains ("default" for "")
  };
  // Drops every lapsed lease.
  void Sweep() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TellLive(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TellGone(uint64_t id, bool left) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Lookup(uint64_t id, const char* call)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  Clock* const clock_;
  const absl::Duration lease_;
  const WorkerListener listener_;

  absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Entry> workers_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pskit

#endif  // PSKIT_SERVER_WORKER_REGISTRY_H_
