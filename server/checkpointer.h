// server/checkpointer.h
//
// Checkpointer: takes a shard's checkpoints on its own thread, so no gRPC
// reactor ever waits on disk. Triggers: every `interval` (0 = never) at the
// multiples of it on the injected clock (the wall clock in ps-server),
// named "auto-<unix ms of the slot>", so every
// shard with the same interval writes the same id at the same time and the
// set is a whole-cluster checkpoint; a
// request (the Admin Checkpoint RPC parks its reactor and is answered from
// here), and a final one at shutdown (Server calls CheckpointNow after the
// gRPC server has drained). Restore requests run here too, one at a time
// with checkpoints. When an automatic slot is due, it is taken before the
// queued requests: every shard then copies its state for the slot at the
// slot's time, not after whatever requests were queued on it, which keeps a
// cluster-wide checkpoint close to one moment; and a request made after a
// slot passed finds that slot's checkpoint written (tests rely on it). A
// queued request waits at most one extra checkpoint write. A slot missed
// while another checkpoint was written is skipped, not made up.
//
// The final checkpoint (FinalCheckpoint) is skipped when the shard's state
// is exactly that of its newest checkpoint: after a coordinated shutdown
// (psrun's end, `psctl shutdown`) took a checkpoint with one id on every
// shard and nothing changed since, that shared id stays every shard's
// newest, so the cluster restarts (and `psctl restore`s) from one whole
// checkpoint. "The same state" is judged by a fingerprint of the snapshot
// (namespace records whole; per chunk its key, version and sizes; the update
// counter): values and optimizer slots change only with a version, and a
// Restore records the restored checkpoint's fingerprint.
//
// Thread safety: CheckpointAsync/RestoreAsync may be called from any thread;
// `done` runs exactly once: on the checkpointer's thread, or at once on the
// caller's after Stop(). Stop() joins the thread; requests still queued are
// answered UNAVAILABLE.
#ifndef PSKIT_SERVER_CHECKPOINTER_H_
#define PSKIT_SERVER_CHECKPOINTER_H_

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/checkpoint_store.h"
#include "server/chunk_store.h"

namespace pskit {

class Checkpointer {
 public:
  using Done = std::function<void(absl::StatusOr<v1::CheckpointInfo>)>;

  // Called after every checkpoint this object takes, with its result (on
  // the thread that took it); for metrics.
  using Observer =
      std::function<void(const absl::StatusOr<v1::CheckpointInfo>&)>;

  // Borrows `store`, `checkpoints` and `clock`, which must outlive it.
  // `clock` times the automatic checkpoints and stamps every checkpoint.
  // `observer` may be empty.
  Checkpointer(ChunkStore* store, CheckpointStore* checkpoints, Clock* clock,
               absl::Duration interval, Observer observer = nullptr);
  ~Checkpointer();

  // Queues a checkpoint with `id` ("" picks "auto-<unix ms>").
  void CheckpointAsync(std::string id, Done done) ABSL_LOCKS_EXCLUDED(mu_);
  // Queues a restore of checkpoint `id`.
  void RestoreAsync(std::string id, Done done) ABSL_LOCKS_EXCLUDED(mu_);

  // Takes a checkpoint: copies on the calling thread, then writes there or,
  // with `background`, on a short-lived thread at the lowest CPU priority.
  // Server calls it with background = false after Stop(), at shutdown.
  absl::StatusOr<v1::CheckpointInfo> CheckpointNow(std::string id,
                                                   bool background = false)
      ABSL_LOCKS_EXCLUDED(state_mu_);

  // The shutdown checkpoint, called by Server after Stop() when no request
  // runs any more: takes checkpoint `id` unless the state is exactly that
  // of the newest checkpoint in the store (then returns nullopt and writes
  // nothing; see the file comment).
  std::optional<absl::StatusOr<v1::CheckpointInfo>> FinalCheckpoint(
      std::string id) ABSL_LOCKS_EXCLUDED(state_mu_);

  // Records that the store now holds checkpoint `id`'s state, whose
  // Fingerprint is `fingerprint`: Server calls it for the checkpoint loaded
  // at start.
  void NoteLoaded(const std::string& id, uint64_t fingerprint)
      ABSL_LOCKS_EXCLUDED(state_mu_);

  // The fingerprint of a shard's state (see the file comment). Equal
  // states give equal fingerprints; any applied update, Declare, SetConfig,
  // evaluation or dropped namespace changes it.
  static uint64_t Fingerprint(const ShardSnapshot& snapshot);

  // Finishes the job in hand, answers the queued ones UNAVAILABLE, joins.
  // Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Job {
    bool restore;
    std::string id;
    Done done;
  };
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  // Queues `job`, or answers it UNAVAILABLE at once after Stop().
  void Enqueue(Job job) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::CheckpointInfo> Restore(const std::string& id)
      ABSL_LOCKS_EXCLUDED(state_mu_);
  // Writes `snapshot` (copied at `taken`) as checkpoint `id`.
  absl::StatusOr<v1::CheckpointInfo> Write(const std::string& id,
                                           const ShardSnapshot& snapshot,
                                           absl::Time taken, bool background)
      ABSL_LOCKS_EXCLUDED(state_mu_);

  // Constant after construction.
  ChunkStore* const store_;
  CheckpointStore* const checkpoints_;
  Clock* const clock_;
  const absl::Duration interval_;
  const Observer observer_;

  absl::Mutex mu_;
  std::deque<Job> jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  // The checkpoint whose state the store held when it was last written,
  // loaded or restored, and that state's fingerprint; empty id: none.
  absl::Mutex state_mu_;
  std::string last_id_ ABSL_GUARDED_BY(state_mu_);
  uint64_t last_fingerprint_ ABSL_GUARDED_BY(state_mu_) = 0;

  std::thread thread_;  // started in the constructor, joined by Stop()
};

}  // namespace pskit

#endif  // PSKIT_SERVER_CHECKPOINTER_H_
