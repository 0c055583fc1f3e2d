// server/consistency.h
//
// Consistency: the shard's SSP and sync consistency models (README
// "Consistency: ssp, sync and backup workers"). It decides when a member's
// call may be answered, and holds ("parks") the calls that must wait; the
// thread that makes a parked call's condition true answers it. Nothing
// polls.
//
// Members: a namespace's members are the registered workers (worker id !=
// 0) that pulled from or pushed to it under ssp or sync (joining at the
// first pull keeps a joiner's first push from being arbitrarily stale, and
// makes sync lockstep from the first round; so a registered worker that
// pulls and never pushes, such as an EASGD worker, holds the others back:
// do not mix algorithms in an ssp or sync namespace). Anonymous calls (worker 0, the evaluator) are never held and
// never counted. A worker that leaves or whose lease lapses (WorkerGone)
// stops being a member at once, and a call racing its lapse does not make
// it one again.
//
// SSP (bound S): per chunk, each member's clock is its count of pushes to
// that chunk; a new member starts at the chunk's slowest clock. A member's
// Pull (or the pull half of its PushPull, after its push was applied as in
// async) is held while its clock of any chunk it names is more than S
// ahead of the slowest member's clock of that chunk. S = 0 is
// bulk-synchronous.
//
// Sync (backup workers B): per chunk a round sums the members' gradients;
// when max(1, members - B) have contributed, their mean is applied once with
// the namespace's update rule (one version bump; non-finite refusal as for
// a push) and every contributor's call is answered (a PushPull with the new
// values). A gradient computed on a version older than the round's (its
// round was applied already) is dropped: its ack says `dropped` and the
// call is answered at once. A member's Pull that names a chunk it has a
// gradient pending for waits for that round. Rounds live in memory only: a
// checkpoint does not hold them, so a restore loses the round in progress
// (its contributors' calls fail or are retried into a new round).
// Exactly-once for sync: a retried copy of a call (same worker and
// sequence) whose gradients wait in a round takes over the wait; one whose
// round was applied is answered with the first copy's acks (replayed).
//
// Thread safety: all methods may be called from any thread. Parked calls'
// answers (Waiter::release) run outside the mutex, exactly once each.
// WorkerGone may be called holding the WorkerRegistry's mutex: it only
// updates state and wakes the class's own thread, which re-checks.
#ifndef PSKIT_SERVER_CONSISTENCY_H_
#define PSKIT_SERVER_CONSISTENCY_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "pskit/v1/ps.pb.h"
#include "server/chunk_store.h"

namespace pskit {

class ServerMetrics;

// How a held call ends.
struct HoldOutcome {
  // OK: the caller may now do its part (pull values) and answer; else the
  // call is answered with this status.
  absl::Status status;
  // Sync: one ack per gradient of the call, in request order.
  std::vector<v1::ChunkAck> acks;
  // Sync: answered from the acks of an earlier copy of the call.
  bool replayed = false;
  // The call waited (was parked and released later): what it read before
  // waiting is stale, so a PushPull reads its values again.
  bool held = false;
};

// What the shard's handler gives for a call that may be held.
struct Waiter {
  // Runs exactly once, outside Consistency's mutex, on whichever thread
  // released the call (possibly the caller's, before the method returns).
  std::function<void(HoldOutcome)> release;
  // Registers a hook to run if the client cancels (ServerCall::SetOnCancel);
  // may be empty (then a cancelled call waits for its condition).
  std::function<void(std::function<void()>)> on_cancel;
};

class Consistency {
 public:
  // `store` is borrowed and must outlive this object; `metrics` (may be
  // null) likewise; `clock` times the holds.
  Consistency(ChunkStore* store, ServerMetrics* metrics, Clock* clock);
  // Shutdown(), then joins the thread.
  ~Consistency();

  Consistency(const Consistency&) = delete;
  Consistency& operator=(const Consistency&) = delete;

  // The namespace's model for a call by `worker`: ASYNC for worker 0 and
  // for an undeclared namespace (the store answers that call's error).
  v1::Consistency ModeFor(const std::string& ns, uint64_t worker)
      ABSL_LOCKS_EXCLUDED(mu_);

  // A member's Pull under SSP or sync: released now or when its condition
  // holds.
  void Pull(const v1::PullRequest& req, Waiter waiter) ABSL_LOCKS_EXCLUDED(mu_);

  // SSP: after `req` was answered by the store (applied, or replayed when
  // `replayed`), advances the worker's clocks (not for a replay) and, when
  // `holds` (a PushPull), holds the answer while the worker is too far
  // ahead; else releases it at once.
  void AfterSspPush(const v1::PushRequest& req, bool replayed, bool holds,
                    Waiter waiter) ABSL_LOCKS_EXCLUDED(mu_);

  // Sync: checks `req` as a push, adds its gradients to their chunks'
  // rounds (or drops late ones) and releases the call with its acks once
  // every round it joined was applied. Push's errors.
  void Contribute(const v1::PushRequest& req, Waiter waiter)
      ABSL_LOCKS_EXCLUDED(mu_);

  // INVALID_ARGUMENT when `config` is sync with backup_workers >= N, N the
  // live members of namespace `ns` plus `joining` (a Declare: the declaring
  // worker is about to join), when the namespace has members.
  [[nodiscard]] absl::Status CheckBackupWorkers(
      const std::string& ns, const v1::NamespaceConfig& config, int joining)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The worker registered or renewed its lease (WorkerListener::live).
  void WorkerLive(uint64_t worker) ABSL_LOCKS_EXCLUDED(mu_);
  // The worker left (`left`) or its lease lapsed (WorkerListener::gone): it
  // stops being a member at once, and until it is live again no call makes
  // it one. Its sync answers for retries are kept after a lapse (it may
  // register again and retry), dropped when it left.
  void WorkerGone(uint64_t worker, bool left) ABSL_LOCKS_EXCLUDED(mu_);

  // A namespace's config changed (SetConfig) or state was replaced:
  // every parked call and round is checked again.
  void ConfigChanged() ABSL_LOCKS_EXCLUDED(mu_);

  // The store's state was replaced (Restore): sync rounds in progress are
  // lost, their contributors answered ABORTED; then as ConfigChanged.
  void StateReplaced() ABSL_LOCKS_EXCLUDED(mu_);

  // Namespace `ns` was dropped from the store (Admin/DropNamespace): its
  // state here goes (members, clocks, rounds, sync answers kept for
  // retries); a sync push waiting in one of its rounds is answered
  // NOT_FOUND, and its held pulls are released (the store then answers
  // them NOT_FOUND).
  void NamespaceDropped(const std::string& ns) ABSL_LOCKS_EXCLUDED(mu_);

  // Answers every parked call UNAVAILABLE ("shard is shutting down") and
  // every later one at once. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  // Calls held now; gradients dropped as late so far.
  size_t held() ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t dropped() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // (tensor, chunk) within a namespace.
  using ChunkRef = std::pair<std::string, uint32_t>;
  enum class Kind { kSspPull, kSyncPull, kSyncPush };
  struct Parked {
    uint64_t id = 0;
    std::string ns;
    uint64_t worker = 0;
    Kind kind = Kind::kSspPull;
    std::vector<ChunkRef> chunks;
    // kSyncPush: acks so far, rounds still pending, the first failure.
    std::vector<v1::ChunkAck> acks;
    int pending = 0;
    absl::Status error;
    uint64_t sequence = 0;
    absl::Time since;
    // Empty once answered (a cancelled sync push waits on for its rounds,
    // so that a retried copy finds their acks).
    std::function<void(HoldOutcome)> release;
  };
  struct Contribution {
    uint64_t worker = 0;
    uint64_t parked = 0;  // the Parked id
    int index = 0;        // the gradient's index in its request
    v1::ChunkData grad;
  };
  struct Round {
    uint64_t base = 0;    // the version its gradients were computed on
    uint64_t length = 0;  // elements of the chunk
    v1::Layout layout;    // as the contributors sent it
    std::vector<Contribution> parts;
  };
  struct TakenRound {
    std::string ns;
    ChunkRef chunk;
    Round round;
  };
  struct NsState {
    v1::Consistency kind = v1::CONSISTENCY_ASYNC;
    uint32_t ssp_bound = 0;
    uint32_t backup_workers = 0;
    absl::flat_hash_set<uint64_t> members;
    // SSP: chunk -> member -> pushes.
    absl::flat_hash_map<ChunkRef, absl::flat_hash_map<uint64_t, uint64_t>>
        clocks;
    // Sync: the round in progress per chunk, and the least base of the
    // next one (a round taken for applying moves it on).
    absl::flat_hash_map<ChunkRef, Round> rounds;
    absl::flat_hash_map<ChunkRef, uint64_t> min_base;
    // Sync exactly-once: per worker, (sequence, acks) of its last calls.
    absl::flat_hash_map<uint64_t,
                        std::deque<std::pair<uint64_t, std::vector<v1::ChunkAck>>>>
        done;
  };
  struct Released {
    std::function<void(HoldOutcome)> release;
    HoldOutcome outcome;
    absl::Duration held;
    const char* label;
  };

  // Reads the namespace's config from the store into its state; false when
  // the namespace is not declared.
  bool RefreshRule(const std::string& ns) ABSL_LOCKS_EXCLUDED(mu_);
  // Parks `p` (registering the cancel hook) unless the shard is shutting
  // down; then runs Progress.
  void Park(std::unique_ptr<Parked> p,
            const std::function<void(std::function<void()>)>& on_cancel)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Cancel(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Applies every complete round and releases every parked call whose
  // condition holds, until nothing moves.
  void Progress() ABSL_LOCKS_EXCLUDED(mu_);
  void ApplyRound(TakenRound taken) ABSL_LOCKS_EXCLUDED(mu_);
  bool SspHeld(const NsState& st, uint64_t worker,
               const std::vector<ChunkRef>& chunks) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SyncPending(const NsState& st, uint64_t worker,
                   const std::vector<ChunkRef>& chunks) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Releasable(const Parked& p) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The distinct workers with a gradient in round `r`.
  static size_t Contributors(const Round& r);
  // Takes out the parked call `id`, recording a finished sync push's acks
  // for retries; the answer to run, if it still has a waiter.
  std::optional<Released> TakeParked(uint64_t id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Wake() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(std::vector<Released> released) ABSL_LOCKS_EXCLUDED(mu_);
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after construction.
  ChunkStore* const store_;
  ServerMetrics* const metrics_;
  Clock* const clock_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, NsState> namespaces_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::unique_ptr<Parked>> parked_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Ids whose cancel hook is registered but whose call is not parked yet,
  // and those of them whose client cancelled meanwhile.
  absl::flat_hash_set<uint64_t> arming_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> cancelled_early_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  // Workers gone (left or lapsed) and not live since, oldest first; at most
  // kMaxGone remembered.
  static constexpr size_t kMaxGone = 4096;
  absl::flat_hash_set<uint64_t> gone_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> gone_order_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool recheck_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  std::thread thread_;  // Loop: re-checks after WorkerGone / ConfigChanged
};

}  // namespace pskit

#endif  // PSKIT_SERVER_CONSISTENCY_H_
