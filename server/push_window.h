// server/push_window.h
//
// PushWindow: a shard's memory of the Push, PushPull and Exchange calls each
// registered worker made recently, so that a call that arrives twice (the
// client retried it after UNAVAILABLE or CANCELLED, or after the shard
// restarted from a checkpoint) is applied once. A call is named by
// (worker id, sequence); see PushRequest.sequence in ps.proto.
//
// For each chunk of a call the window keeps what the shard answered: the ack
// (version after the update, staleness) and, for an Exchange, the elastic
// difference e. A retry of a remembered call is answered from there: the
// centre of an Exchange moved by e once, so the worker must subtract that
// same e once, whichever copy's answer it reads (a new e, computed against a
// centre that already moved, would move the worker by a different amount
// than the centre). A PushPull's retry gets the first acks and the chunks'
// current values (the values right after the first update are gone, and
// newer ones serve the worker better).
//
// ChunkStore drives it (server/chunk_store.cc):
//   PSKIT_ASSIGN_OR_RETURN(PushWindow::Ticket t,
//                          window.Begin(worker, seq, ns, false, req.grads()));
//   for each chunk i:
//     if (t.Applied(i, &ack, nullptr)) { answer ack; continue; }
//     lock the chunk; apply; window.Record(t, i, ack, nullptr); unlock;
//   window.Finish(t);
//
// Bounds: per worker at most `calls_per_worker` calls and about
// `bytes_per_worker` bytes of answers; the oldest calls leave first. A
// sequence at or below the newest that left, and not remembered, is refused
// (FAILED_PRECONDITION): it may have been applied, and the shard cannot
// tell. A worker's window is freed when it leaves or its lease lapses
// (WorkerRegistry's listener calls DropWorker). A window loaded from a
// checkpoint is kept for `adopt_within` for its worker to come back
// (register, heartbeat or push), then freed.
//
// Thread safety: all methods may be called concurrently. mu_ guards the
// windows; each call has its own mutex for its per-chunk results, taken by
// Record (under the chunk's lock: a snapshot that copied a chunk after its
// update also sees the update recorded) and by Snapshot. Lock order:
// WorkerRegistry's mutex, then mu_, then a call's mutex; a chunk's mutex
// before a call's mutex. Two copies of one call arriving at once: the second
// waits in Begin until the first finishes (bounded CPU work of another
// thread, as a wait for a chunk's mutex is), then is answered from the
// window.
#ifndef PSKIT_SERVER_PUSH_WINDOW_H_
#define PSKIT_SERVER_PUSH_WINDOW_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "pskit/v1/checkpoint.pb.h"
#include "pskit/v1/ps.pb.h"

namespace pskit {

struct PushWindowOptions {
  // Calls remembered per worker. A client retries only calls still in
  // flight, so this needs to cover the calls one worker has in flight to
  // one shard at once (ps-worker: a few). Default: 1024.
  size_t calls_per_worker = 1024;
  // Bytes of remembered answers per worker (acks are ~40 bytes a chunk; an
  // Exchange keeps its diffs, as large as its request). Older calls leave
  // to stay under it. Default: 256 MiB.
  uint64_t bytes_per_worker = uint64_t{256} << 20;
  // How long a window loaded from a checkpoint waits for its worker to
  // register, heartbeat or push again before it is freed. Default: 30 s
  // (the default lease).
  absl::Duration adopt_within = absl::Seconds(30);
  // Measures adopt_within. Borrowed; must outlive the window. Default: the
  // system clock.
  const Clock* clock = SystemClock();
};

class PushWindow {
 private:
  struct Call;

 public:
  // What Begin hands the caller. Keeps the call alive.
  class Ticket {
   public:
    // Whether chunk `i` of the call was applied already (by the first copy,
    // or before the checkpoint this shard loaded); if so, fills `ack` and,
    // when not null, `diff` (Exchange) with what was answered.
    bool Applied(int i, v1::ChunkAck* ack, v1::ChunkData* diff) const;
    // True when every chunk was applied already: nothing to do but answer.
    bool replay() const { return replay_; }

   private:
    friend class PushWindow;
    std::shared_ptr<Call> call_;
    uint64_t worker_ = 0;
    bool replay_ = false;
  };

  explicit PushWindow(const PushWindowOptions& options);
  PushWindow(const PushWindow&) = delete;
  PushWindow& operator=(const PushWindow&) = delete;

  // Starts call (`worker`, `sequence`) of namespace `ns` naming `chunks`
  // (tensor and chunk of each; their data is not looked at). Preconditions:
  // worker != 0, sequence != 0, the request is valid. If the call is new
  // it is remembered as in flight and the caller applies every chunk; if a
  // copy is in flight, waits for it to finish first; if the call was seen
  // (or loaded from a checkpoint), the ticket says which chunks are applied.
  // Unless replay(), the caller must end with Finish or Abandon.
  // FAILED_PRECONDITION: `sequence` left the window (too old). INVALID_
  // ARGUMENT: the remembered call named other chunks, another namespace or
  // another method (a client reused a sequence). Nothing changes on error.
  [[nodiscard]] absl::StatusOr<Ticket> Begin(
      uint64_t worker, uint64_t sequence, const std::string& ns,
      bool exchange,
      const google::protobuf::RepeatedPtrField<v1::ChunkData>& chunks)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Records that chunk `i` of the ticket's call was applied with `ack` (and
  // `diff`, Exchange only, may be null). Call it holding the chunk's lock.
  void Record(const Ticket& t, int i, const v1::ChunkAck& ack,
              const v1::ChunkData* diff);

  // The call is done: copies of it are answered from the window from now on.
  void Finish(const Ticket& t) ABSL_LOCKS_EXCLUDED(mu_);
  // The call failed before any chunk was applied: forgotten, so a copy is
  // handled as new.
  void Abandon(const Ticket& t) ABSL_LOCKS_EXCLUDED(mu_);

  // Frees `worker`'s window (it left).
  void DropWorker(uint64_t worker) ABSL_LOCKS_EXCLUDED(mu_);
  // Forgets every finished call of namespace `ns` (it was dropped), as if
  // evicted: a copy is refused as too old. Returns how many. Calls in
  // flight are kept (ChunkStore drops holding its index exclusively, so
  // there are none).
  size_t DropNamespace(const std::string& ns) ABSL_LOCKS_EXCLUDED(mu_);
  // `worker`'s lease lapsed: its window is kept for adopt_within, as a
  // loaded one is, since the worker may re-register and resend a call
  // whose answer it lost (the Client does); freed if it does not.
  void Orphan(uint64_t worker) ABSL_LOCKS_EXCLUDED(mu_);
  // `worker` is live (registered or renewed its lease): a window loaded
  // from a checkpoint for it is kept.
  void Adopt(uint64_t worker) ABSL_LOCKS_EXCLUDED(mu_);

  // Every window, for a checkpoint. Calls in flight are included with the
  // chunks they applied so far (WindowChunk.applied); calls with none are
  // left out.
  std::vector<v1::WindowRecord> Snapshot() ABSL_LOCKS_EXCLUDED(mu_);
  // Replaces every window with `records` (WindowChunk.applied must say
  // whether the state loaded with them holds that chunk's update). Calls
  // with no applied chunk are dropped (a copy is applied as new). Each
  // loaded window waits adopt_within for its worker. Precondition: no call
  // in flight (ChunkStore holds its index exclusively).
  void Replace(std::vector<v1::WindowRecord> records) ABSL_LOCKS_EXCLUDED(mu_);

  // Copies answered from the window (wholly or in part) since the start.
  uint64_t retries_answered() const { return retries_answered_.load(); }
  // Calls refused as older than the window since the start.
  uint64_t too_old() const { return too_old_.load(); }
  // Workers with a window, and calls remembered over all of them.
  size_t workers() ABSL_LOCKS_EXCLUDED(mu_);
  size_t calls() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Call {
    Call(uint64_t seq, std::string n, bool ex) : sequence(seq), ns(std::move(n)), exchange(ex) {}
    // Constant after construction.
    const uint64_t sequence;
    const std::string ns;
    const bool exchange;
    // Per chunk, in request order: tensor and chunk are constant once the
    // call is in the window; the rest is written by the call's owner.
    mutable absl::Mutex mu;
    std::vector<v1::WindowChunk> chunks ABSL_GUARDED_BY(mu);
    // Guarded by PushWindow::mu_ (not annotated: another object's mutex).
    bool in_flight = true;
    bool abandoned = false;
    uint64_t bytes = 0;  // counted in its worker's bytes once finished
  };
  struct Worker {
    std::map<uint64_t, std::shared_ptr<Call>> calls;  // by sequence
    uint64_t evicted_through = 0;
    uint64_t bytes = 0;
    // Loaded from a checkpoint and not yet adopted: freed at this time.
    absl::Time adopt_by = absl::InfiniteFuture();
  };

  // Drops the oldest finished calls of `w` while it holds too many.
  void Evict(Worker* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees loaded windows whose worker did not come back in time.
  void SweepUnadopted() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const PushWindowOptions options_;

  absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Worker> workers_ ABSL_GUARDED_BY(mu_);
  // Workers whose window was loaded and not yet adopted.
  size_t unadopted_ ABSL_GUARDED_BY(mu_) = 0;

  // Atomic: counted by concurrent calls, read by metric scrapes unlocked.
  std::atomic<uint64_t> retries_answered_{0};
  std::atomic<uint64_t> too_old_{0};
  // Atomic: lets Adopt (every heartbeat) skip mu_ when nothing waits.
  std::atomic<bool> any_unadopted_{false};
};

}  // namespace pskit

#endif  // PSKIT_SERVER_PUSH_WINDOW_H_
