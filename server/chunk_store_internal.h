// server/chunk_store_internal.h
//
// Private to ChunkStore's files (chunk_store.cc, chunk_store_declare.cc,
// chunk_store_snapshot.cc, chunk_store_job.cc, chunk_store_compensation.cc,
// chunk_store_sync.cc): the structs behind a
// namespace, a tensor and a chunk, and the small helpers more than one of
// those files needs. Nothing outside server/chunk_store*.cc includes it.
//
// Thread safety: as stated on each struct; the helpers are pure.
#ifndef PSKIT_SERVER_CHUNK_STORE_INTERNAL_H_
#define PSKIT_SERVER_CHUNK_STORE_INTERNAL_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/layout.h"
#include "pskit/v1/ps.pb.h"
#include "server/chunk_store.h"
#include "server/compensation.h"
#include "server/update_rule.h"

namespace pskit {

// One chunk this shard holds. Its own mutex: pushes to different chunks run
// in parallel.
struct ChunkStore::Chunk {
  Chunk(std::vector<float> initial, int num_slots, float slot_value)
      : values(std::move(initial)),
        slots(values.size() * num_slots, slot_value) {}
  Chunk(std::vector<float> v, std::vector<float> s, uint64_t ver)
      : values(std::move(v)), slots(std::move(s)), version(ver) {}
  absl::Mutex mu;
  std::vector<float> values ABSL_GUARDED_BY(mu);
  std::vector<float> slots ABSL_GUARDED_BY(mu);  // slot after slot
  uint64_t version ABSL_GUARDED_BY(mu) = 0;
  // The compensation's state (server/compensation.h; ChunkStore's
  // "Compensation state"): per worker id worker_floats() * values.size()
  // floats, and shared_floats() * values.size() shared floats (empty until
  // the first push that needs them). Both empty under none and inverse.
  absl::flat_hash_map<uint64_t, std::vector<float>> worker_state
      ABSL_GUARDED_BY(mu);
  std::vector<float> shared_state ABSL_GUARDED_BY(mu);
};

// Constant once inserted into a Namespace.
struct ChunkStore::Tensor {
  v1::TensorSpec spec;
  uint64_t numel = 0;
  std::vector<ChunkSpan> spans;                // every chunk of the tensor
  std::vector<std::unique_ptr<Chunk>> chunks;  // null: held by another shard
};

struct ChunkStore::Namespace {
  // Guarded by ChunkStore::index_mu_: requests read them holding it shared;
  // SetConfig replaces them holding it exclusively.
  v1::NamespaceConfig config;
  std::unique_ptr<const UpdateRule> rule;
  // Null for compensations that keep no state (none, inverse).
  std::unique_ptr<const Compensation> compensation;
  // The config of the first Declare; SetConfig leaves it, so a worker that
  // declares the model again with its own flags is still accepted.
  v1::NamespaceConfig declared_config;
  // Guarded by ChunkStore::index_mu_ (insertions only; erased only with
  // the whole namespace, by DropNamespace holding it exclusively).
  absl::flat_hash_map<std::string, std::unique_ptr<Tensor>> tensors;
  // The evaluator's latest report; `done` never goes back to false.
  mutable absl::Mutex eval_mu;
  v1::Evaluation evaluation ABSL_GUARDED_BY(eval_mu);
  bool has_evaluation ABSL_GUARDED_BY(eval_mu) = false;
  // Every report as recorded (after the rule above), oldest first; at most
  // ChunkStore::kMaxEvaluations.
  std::deque<v1::Evaluation> history ABSL_GUARDED_BY(eval_mu);
};

// Float buffers reused by updates. Push, PushPull and Exchange compute each
// chunk's new values and slots into buffers of this pool, check the whole
// request, then swap the buffers into the chunks (O(1)); the chunks' old
// buffers come back to the pool. So computing out of place costs no
// allocation, no zeroing and no copy in the steady state. The pool keeps at
// most kMaxBytes; buffers beyond that are freed.
//
// Thread safety: Take and Give may be called concurrently.
class ChunkStore::ScratchPool {
 public:
  static constexpr size_t kMaxBytes = size_t{64} << 20;

  // A buffer of exactly `n` floats, contents unspecified.
  std::vector<float> Take(size_t n) ABSL_LOCKS_EXCLUDED(mu_) {
    if (n == 0) return {};
    {
      absl::MutexLock lock(&mu_);
      auto it = free_.find(n);
      if (it != free_.end() && !it->second.empty()) {
        std::vector<float> v = std::move(it->second.back());
        it->second.pop_back();
        bytes_ -= n * sizeof(float);
        return v;
      }
    }
    return std::vector<float>(n);
  }

  // Returns `v` to the pool (or frees it when the pool is full).
  void Give(std::vector<float> v) ABSL_LOCKS_EXCLUDED(mu_) {
    const size_t bytes = v.size() * sizeof(float);
    if (bytes == 0 || v.size() != v.capacity()) return;
    absl::MutexLock lock(&mu_);
    if (bytes_ + bytes > kMaxBytes) return;
    bytes_ += bytes;
    free_[v.size()].push_back(std::move(v));
  }

 private:
  absl::Mutex mu_;
  // Free buffers by their size in floats.
  absl::flat_hash_map<size_t, std::vector<std::vector<float>>> free_
      ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// A chunk a request names, found and checked.
struct ChunkStore::Target {
  Chunk* chunk;
  uint64_t length;
};

struct ChunkStore::Resolved {
  const Namespace* ns;
  std::vector<Target> targets;
};

namespace chunk_store_internal {

// A Declare checked against the request alone (PlanDeclare), then against
// the store (CheckDeclare). Lives on the declaring thread only.
struct DeclarePlan {
  std::string ns;
  v1::NamespaceConfig config;
  // The rule a new namespace gets; it also sizes the new chunks' slots.
  std::unique_ptr<const UpdateRule> rule;
  // Every tensor of the request by name, with its element count.
  absl::flat_hash_map<std::string, const v1::TensorSpec*> specs;
  absl::flat_hash_map<std::string, uint64_t> numels;
  // INIT_EXPLICIT values by (tensor, chunk): only chunks held here.
  absl::flat_hash_map<std::pair<std::string, uint32_t>, const v1::ChunkData*>
      explicit_values;
  // Set by CheckDeclare: the tensors not declared yet, whether the
  // namespace exists, and the bytes the new tensors take here.
  std::vector<const v1::TensorSpec*> fresh;
  bool namespace_exists = false;
  uint64_t needed_bytes = 0;
};

// "[2,3]", for error messages.
std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape);

// The element count of `spec`'s shape. INVALID_ARGUMENT for an empty shape,
// a dimension <= 0, or more than `max_elems` elements.
absl::StatusOr<uint64_t> NumElements(const v1::TensorSpec& spec,
                                     uint64_t max_elems);

}  // namespace chunk_store_internal
}  // namespace pskit

#endif  // PSKIT_SERVER_CHUNK_STORE_INTERNAL_H_
