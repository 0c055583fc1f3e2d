// server/chunk_store.h
//
// ChunkStore owns this shard's part of every namespace: the namespace's
// optimizer config and update rule, each tensor's spec, and for each chunk
// this shard holds its values, optimizer slots and version (the number of
// updates applied to it).
//
// Every request is validated in full before any state changes: unknown
// namespace or tensor (NOT_FOUND), a chunk index past the tensor's end
// (OUT_OF_RANGE), a chunk held by another shard or a layout mismatch
// (FAILED_PRECONDITION), unknown encoding, wrong payload length, NaN/Inf,
// duplicate chunks or an empty request (INVALID_ARGUMENT), an answer that
// would pass the message limit or a Declare that would pass the memory limit
// (RESOURCE_EXHAUSTED). On error the store is unchanged.
//
// Updates (Push, PushPull, Exchange) are all or nothing: the request's
// chunks are locked together, each chunk's new values and optimizer slots are
// computed out of place, and only if every one of them is finite (unless
// --allow_nonfinite) are they swapped in, versions bumped. An update that
// would make any value or slot NaN or Inf (finite gradients can overflow)
// is refused with INVALID_ARGUMENT naming the tensor and chunk, and no chunk
// of the request changes.
//
// Exactly-once: a Push, PushPull or Exchange with a worker id and a
// sequence goes through the store's PushWindow (server/push_window.h), so a
// copy of a call already applied is answered without being applied again;
// the window is part of Snapshot and Replace.
//
// Compensation state (dcasgd-c, dcasgd-a, gem; server/compensation.h): each
// chunk keeps, per worker id, what the rule needs of that worker's last
// read (dcasgd: w_bak, 1 float per element; gem: s_i and m_i, 2), and
// dcasgd-a one shared MS per element. A Pull with a worker id records it
// (under the chunk's exclusive lock); a PushPull records the values it
// answers; a Push from a worker with no state yet is compensated as if it
// had pulled just now, and creates its state. Calls without a worker id
// keep no state and get the plain optimizer. The state counts against
// max_memory_bytes: a Pull or Push that would create state past it is
// refused (RESOURCE_EXHAUSTED) before anything changes. Freed by
// WorkerGone (the worker left or its lease lapsed), by a SetConfig that
// changes the compensation (the namespace's whole state), and never
// re-created for an id that went recently (a call checked live just
// before the lease lapsed cannot leak state). Snapshot and Replace carry
// it; restored state of a worker that is not seen live (WorkerLive)
// within the window's adopt_within is freed, as the exactly-once window's
// loaded records are. A non-finite update changes no state.
//
// Thread safety: all public methods may be called concurrently. Every
// request holds index_mu_ shared for its whole run, and each chunk has its
// own mutex, so pushes to different chunks run in parallel and pulls of one
// chunk share it. An update holds the locks of all its chunks at once,
// taken in address order (the one order every update uses, so two updates
// never wait on each other in a cycle); pulls and snapshots take one chunk
// lock at a time. index_mu_ is held exclusively only to insert declared
// tensors (built beforehand, outside it), to change a namespace's config
// (SetConfig), to swap in a restored state and to take a namespace out
// (DropNamespace; freed outside it).
#ifndef PSKIT_SERVER_CHUNK_STORE_H_
#define PSKIT_SERVER_CHUNK_STORE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/layout.h"
#include "pskit/v1/admin.pb.h"
#include "pskit/v1/ps.pb.h"
#include "server/checkpoint_store.h"
#include "server/chunk_payload.h"
#include "server/compensation.h"
#include "server/push_window.h"
#include "server/update_rule.h"

namespace pskit {
namespace chunk_store_internal {
struct DeclarePlan;  // server/chunk_store_internal.h
}  // namespace chunk_store_internal

class ChunkStore {
 public:
  // `layout` and `shard_index` (< layout.num_shards()) identify this shard.
  // `allow_nonfinite`: accept NaN/Inf in gradients and values.
  // `max_message_bytes`: answers larger than this are refused up front.
  // `max_memory_bytes`: values plus optimizer slots this shard may hold; a
  // Declare that would pass it is refused with RESOURCE_EXHAUSTED.
  // `window`: the exactly-once window's bounds (server/push_window.h).
  ChunkStore(const Layout& layout, uint32_t shard_index, bool allow_nonfinite,
             size_t max_message_bytes, uint64_t max_memory_bytes,
             const PushWindowOptions& window = {});
  ~ChunkStore();

  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  // Creates the namespace (if new) and the tensors not yet declared, with
  // this shard's chunks initialised. Idempotent: a tensor declared again with
  // the same shape is left as it is. FAILED_PRECONDITION when the namespace
  // exists with another optimizer config or a tensor with another shape.
  [[nodiscard]] absl::Status Declare(const v1::DeclareRequest& req,
                                     v1::DeclareResponse* resp)
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Copies the requested chunks, with their versions, into `resp`.
  [[nodiscard]] absl::Status Pull(const v1::PullRequest& req,
                                  v1::PullResponse* resp)
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Pull with the chunks written to `out` (server/chunk_payload.h): each
  // chunk's values are encoded once, under its lock, into the buffer `out`
  // gives.
  [[nodiscard]] absl::Status Pull(const v1::PullRequest& req, ChunkOut* out)
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Applies each gradient with the namespace's rule and compensation; each
  // ack carries the new version and the staleness. With a worker id and a
  // sequence, a call already applied is answered with its first acks and
  // not applied again (`*replayed` = true, when not null); see
  // PushRequest.sequence for the errors this adds.
  [[nodiscard]] absl::Status Push(const v1::PushRequest& req,
                                  v1::PushResponse* resp,
                                  bool* replayed = nullptr)
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Push, then the values of the same chunks right after their update (a
  // call answered from the window: its first acks and the values now).
  [[nodiscard]] absl::Status PushPull(const v1::PushRequest& req,
                                      v1::PushPullResponse* resp,
                                      bool* replayed = nullptr)
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Push and PushPull with each gradient's payload given apart:
  // `grads[i]` is req.grads(i)'s (whose own data field is not read), e.g.
  // the received slices (server/wire.h). PushPull's values go to `values`.
  [[nodiscard]] absl::Status Push(const v1::PushRequest& req,
                                  absl::Span<const PayloadView> grads,
                                  v1::PushResponse* resp,
                                  bool* replayed = nullptr)
      ABSL_LOCKS_EXCLUDED(index_mu_);
  [[nodiscard]] absl::Status PushPull(
      const v1::PushRequest& req, absl::Span<const PayloadView> grads,
      google::protobuf::RepeatedPtrField<v1::ChunkAck>* acks, ChunkOut* values,
      bool* replayed = nullptr) ABSL_LOCKS_EXCLUDED(index_mu_);

  // EASGD: per chunk e = alpha * (x - centre); centre += e; answers e.
  // A call already applied is answered with its first diffs.
  [[nodiscard]] absl::Status Exchange(const v1::ExchangeRequest& req,
                                      v1::ExchangeResponse* resp,
                                      bool* replayed = nullptr)
      ABSL_LOCKS_EXCLUDED(index_mu_);
  // Exchange with each chunk's payload given apart (`params[i]` is
  // req.params(i)'s) and the diffs written to `diffs`.
  [[nodiscard]] absl::Status Exchange(const v1::ExchangeRequest& req,
                                      absl::Span<const PayloadView> params,
                                      ChunkOut* diffs,
                                      bool* replayed = nullptr)
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Copies the whole state: each chunk under its own (shared) lock, so
  // pushes to other chunks go on meanwhile. Chunks are copied one by one, so
  // the copy is per-chunk consistent, not a global instant.
  ShardSnapshot Snapshot() const ABSL_LOCKS_EXCLUDED(index_mu_);

  // Replaces the whole state with `snapshot`, atomically: the new state is
  // built first, then swapped in while no request runs (requests that
  // arrive meanwhile wait). DATA_LOSS or FAILED_PRECONDITION when the
  // snapshot does not fit this shard's layout or is inconsistent; the state
  // is unchanged then.
  [[nodiscard]] absl::Status Replace(const ShardSnapshot& snapshot)
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Records the evaluator's report for the namespace, and appends it to the
  // namespace's history (the last kMaxEvaluations). NOT_FOUND for an
  // undeclared namespace; INVALID_ARGUMENT for a non-finite loss or an
  // accuracy outside [0, 1]. Once a report said done, the job stays done.
  [[nodiscard]] absl::Status ReportEvaluation(
      const v1::ReportEvaluationRequest& req) ABSL_LOCKS_EXCLUDED(index_mu_);

  // Evaluations a namespace's history keeps (the oldest leave first).
  static constexpr size_t kMaxEvaluations = 10000;

  // Deletes namespace `ns` ("" is not "default": name it) and all its state
  // here: tensors, chunks (values, optimizer slots, compensation state), its
  // evaluations, config and the exactly-once window's records of its calls.
  // A later Declare of the name starts fresh. Waits for the requests in
  // flight (it holds index_mu_ exclusively); the memory is freed after the
  // lock is released. `resp` gets this shard's chunks and elements freed.
  // INVALID_ARGUMENT for an empty or malformed name; NOT_FOUND when the
  // namespace is not declared here. Whether workers still train it is the
  // caller's check (AdminService, with the WorkerRegistry).
  [[nodiscard]] absl::Status DropNamespace(const std::string& ns,
                                           v1::DropNamespaceResponse* resp)
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Whether the evaluator ended namespace `ns`'s job (false if unknown).
  bool JobDone(const std::string& ns) const ABSL_LOCKS_EXCLUDED(index_mu_);

  // Changes namespace `req.namespace_()`'s hyper-parameters for every later
  // update: the fields set in `req` replace the current ones, the result goes
  // through NormalizeConfig as a Declare's would, and a new update rule is
  // swapped in (slots are kept). `resp` gets the config before and after.
  // NOT_FOUND for an undeclared namespace; INVALID_ARGUMENT for a bad value
  // or an unknown kind or compensation; FAILED_PRECONDITION for another
  // optimizer kind (its slots would mean something else) or another
  // initial_accumulator (it only shapes slots when they are created). On
  // error nothing changes. Later Declares of the namespace are accepted with
  // either the config it was declared with or the current one; checkpoints
  // record both.
  [[nodiscard]] absl::Status SetConfig(const v1::SetConfigRequest& req,
                                       v1::SetConfigResponse* resp)
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Ends every job on the shard the way an evaluator does: each namespace's
  // evaluation is marked done (its last loss and accuracy kept; one without
  // an evaluation gets an empty one stamped `time_unix_ms`), with `reason`
  // unless it was done already. From then on draining() is true. Returns the
  // namespaces, sorted. Cannot fail.
  std::vector<std::string> Drain(const std::string& reason,
                                 int64_t time_unix_ms)
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Whether Drain ran (until the process ends; Replace keeps it): new
  // workers are refused.
  bool draining() const { return draining_.load(); }

  // Read-only view for the Admin Status call (draining included); with
  // `evaluations`, each namespace's evaluation history, oldest first.
  void Describe(v1::StatusResponse* out, bool evaluations = false) const
      ABSL_LOCKS_EXCLUDED(index_mu_);

  // Chunk updates (pushes and exchanges) applied since the shard started,
  // carried over by checkpoints.
  uint64_t updates_applied() const { return updates_applied_.load(); }

  const Layout& layout() const { return layout_; }
  uint32_t shard_index() const { return shard_index_; }

  // The WorkerRegistry's listener: `id` registered or renewed its lease
  // (restored compensation state of it is kept), or left or lapsed (its
  // compensation state is freed on every chunk). Both also free restored
  // state whose worker was not seen live within adopt_within.
  void WorkerLive(uint64_t id) ABSL_LOCKS_EXCLUDED(index_mu_, workers_mu_);
  void WorkerGone(uint64_t id) ABSL_LOCKS_EXCLUDED(index_mu_, workers_mu_);

  // Bytes of compensation state held, and how many distinct workers hold
  // some (read chunk by chunk).
  struct CompensationStateInfo {
    uint64_t bytes = 0;
    uint64_t workers = 0;
  };
  CompensationStateInfo CompensationState() const
      ABSL_LOCKS_EXCLUDED(index_mu_, workers_mu_);
  // The compensation's scale per push chunk, for the metrics.
  const CompensationScales& compensation_scales() const { return scales_; }
  // Whether any namespace was ever declared, set or restored with ssp or
  // sync (sticky): while false, no call needs server/consistency.cc, which
  // the handlers then skip without a lock.
  bool MayHoldCalls() const {
    return may_hold_calls_.load(std::memory_order_acquire);
  }

  // For server/consistency.cc (SSP and sync), in chunk_store_sync.cc.
  // The namespace's current config (normalized); NOT_FOUND when undeclared.
  [[nodiscard]] absl::StatusOr<v1::NamespaceConfig> ConfigOf(
      const std::string& ns) const ABSL_LOCKS_EXCLUDED(index_mu_);
  // Checks `req`'s gradients as a Push would (layout, namespace, chunks,
  // lengths, encodings, finiteness) without applying anything, and gives
  // each gradient's chunk length and current version. Push's errors.
  [[nodiscard]] absl::Status CheckGradients(const v1::PushRequest& req,
                                            std::vector<uint64_t>* lengths,
                                            std::vector<uint64_t>* versions)
      const ABSL_LOCKS_EXCLUDED(index_mu_);

  // The exactly-once window: the Server tells it when workers come and go
  // (WorkerRegistry's listener), and metrics read its counters.
  PushWindow& push_window() { return window_; }

 private:
  // Defined in server/chunk_store_internal.h.
  struct Chunk;
  struct Tensor;
  struct Namespace;
  struct Target;
  struct Resolved;
  class ScratchPool;
  using DeclarePlan = chunk_store_internal::DeclarePlan;

  // Declare's steps (server/chunk_store_declare.cc). PlanDeclare checks the
  // request on its own: names, shapes, config, initializers and explicit
  // values. CheckDeclare checks it against the store (config and shape
  // clashes, the memory limit) and records which tensors are new; Declare
  // runs it twice, before building and again before inserting, since
  // another Declare may run in between. BuildTensors fills the new tensors'
  // chunks without holding index_mu_. InsertDeclared inserts what is still
  // missing and returns how many of the request's chunks this shard holds.
  [[nodiscard]] absl::StatusOr<DeclarePlan> PlanDeclare(
      const v1::DeclareRequest& req) const;
  [[nodiscard]] absl::Status CheckDeclare(const v1::DeclareRequest& req,
                                          DeclarePlan* plan) const
      ABSL_SHARED_LOCKS_REQUIRED(index_mu_);
  [[nodiscard]] absl::StatusOr<std::vector<std::unique_ptr<Tensor>>>
  BuildTensors(const DeclarePlan& plan) const ABSL_LOCKS_EXCLUDED(index_mu_);
  uint32_t InsertDeclared(const v1::DeclareRequest& req, DeclarePlan* plan,
                          std::vector<std::unique_ptr<Tensor>> built,
                          v1::DeclareResponse* resp)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(index_mu_);
  // Bytes of values and `num_slots` optimizer slots that this shard's
  // chunks of tensor `tensor` (`numel` elements) in `ns` take.
  uint64_t BytesHere(const std::string& ns, const std::string& tensor,
                     uint64_t numel, int num_slots) const;

  // Finds the namespace and the chunks named by `refs` (tensor, chunk pairs)
  // and checks each is held here. The pointers are valid while index_mu_ is
  // held.
  template <typename Refs>
  absl::StatusOr<Resolved> Resolve(const std::string& ns, const Refs& refs,
                                   const char* what) const
      ABSL_SHARED_LOCKS_REQUIRED(index_mu_);

  // The shared path of Push and PushPull; `values` (may be null) receives
  // the updated values in `encoding`.
  absl::Status ApplyGradients(const v1::PushRequest& req,
                              absl::Span<const PayloadView> grads,
                              google::protobuf::RepeatedPtrField<v1::ChunkAck>* acks,
                              ChunkOut* values, v1::Encoding encoding,
                              bool* replayed)
      ABSL_LOCKS_EXCLUDED(index_mu_);
  // The windows of `snapshot`, each chunk marked applied only where the
  // state `built` holds its update (its version >= the ack's).
  std::vector<v1::WindowRecord> LoadedWindows(
      const ShardSnapshot& snapshot,
      const absl::flat_hash_map<std::string, std::unique_ptr<Namespace>>& built)
      const;

  // Compensation state helpers (server/chunk_store.cc). Whether state may
  // be created for `id` (not gone recently); call it holding the chunk
  // lock the state goes under, so WorkerGone's sweep, which marks the id
  // first, comes after and frees what was created.
  bool MayKeepState(uint64_t id) const ABSL_LOCKS_EXCLUDED(workers_mu_);
  // Adds `bytes` to rule_state_bytes_ if values, slots and rule state stay
  // within max_memory_bytes_; else RESOURCE_EXHAUSTED saying what to do.
  absl::Status ReserveRuleState(uint64_t bytes, const std::string& ns) const
      ABSL_SHARED_LOCKS_REQUIRED(index_mu_);
  // Frees every chunk's state of the workers `ids`.
  void DropStateOf(const std::vector<uint64_t>& ids) const
      ABSL_LOCKS_EXCLUDED(index_mu_);
  // Restored state whose worker was not seen live in time: its ids,
  // removed from restored_.
  std::vector<uint64_t> ExpiredRestored() const
      ABSL_LOCKS_EXCLUDED(workers_mu_);

  // Constant after construction.
  const Layout layout_;
  const uint32_t shard_index_;
  const bool allow_nonfinite_;
  const size_t max_message_bytes_;
  const uint64_t max_memory_bytes_;
  // Restored compensation state waits this long for its worker (the
  // window's adopt_within, measured on its clock).
  const absl::Duration adopt_within_;
  const Clock* const clock_;
  // Buffers that updates compute into; thread-safe on its own.
  const std::unique_ptr<ScratchPool> scratch_;

  mutable absl::Mutex index_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Namespace>> namespaces_
      ABSL_GUARDED_BY(index_mu_);
  // Bytes of values and optimizer slots held.
  uint64_t bytes_held_ ABSL_GUARDED_BY(index_mu_) = 0;
  // Thread-safe on its own. Its calls run holding index_mu_ shared; Replace
  // swaps it holding index_mu_ exclusively, so no call is in flight then.
  mutable PushWindow window_;  // mutable: the const Snapshot copies it

  // Workers gone recently (WorkerGone; WorkerLive forgets an id again), by
  // id with their order, at most kMaxGone; and ids whose state a Replace
  // restored, with the time it is freed unless they are seen live.
  static constexpr size_t kMaxGone = 4096;
  mutable absl::Mutex workers_mu_;
  mutable absl::flat_hash_map<uint64_t, uint64_t> gone_
      ABSL_GUARDED_BY(workers_mu_);
  mutable std::deque<std::pair<uint64_t, uint64_t>> gone_order_
      ABSL_GUARDED_BY(workers_mu_);
  mutable uint64_t gone_seq_ ABSL_GUARDED_BY(workers_mu_) = 0;
  mutable absl::flat_hash_map<uint64_t, absl::Time> restored_
      ABSL_GUARDED_BY(workers_mu_);

  // Atomic: incremented by concurrent pushes that hold index_mu_ shared.
  std::atomic<uint64_t> updates_applied_{0};
  // Atomic: bytes of compensation state; changed by concurrent pulls and
  // pushes holding index_mu_ shared.
  mutable std::atomic<uint64_t> rule_state_bytes_{0};
  // Thread-safe on its own (atomics).
  CompensationScales scales_;
  // Atomic: set once by Drain, read by every RegisterWorker without a lock.
  std::atomic<bool> draining_{false};
  // Atomic: set by NoteConsistency, read by every handler without a lock.
  std::atomic<bool> may_hold_calls_{false};
  // Sets may_hold_calls_ when `config` is ssp or sync.
  void NoteConsistency(const v1::NamespaceConfig& config) {
    if (config.consistency() == v1::CONSISTENCY_SSP ||
        config.consistency() == v1::CONSISTENCY_SYNC) {
      may_hold_calls_.store(true, std::memory_order_release);
    }
  }
};

}  // namespace pskit

#endif  // PSKIT_SERVER_CHUNK_STORE_H_
