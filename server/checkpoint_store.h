// server/checkpoint_store.h
//
// CheckpointStore: a shard's checkpoints in its own RocksDB database.
//
// A checkpoint is one atomic, synced WriteBatch holding the namespaces
// (config and tensor specs), one record per chunk (version, values,
// optimizer slots, the compensation's per-worker and shared state) and,
// written last, a manifest (id, time, sequence, the shard's layout, a
// CRC-32 per namespace and chunk record, counters). A checkpoint is
// complete or absent: loading only considers checkpoints with a manifest,
// and a chunk whose CRC does not match makes the checkpoint unloadable (the
// previous one is used). The newest `keep` are kept.
//
// Keys: "m/<id>" manifest, "n/<id>/<namespace>", "c/<id>/<8-byte index>",
// "w/<id>/<8-byte worker id>" (exactly-once windows; absent in older
// checkpoints, which load with empty windows).
//
// Thread safety: Write and Delete are serialized by write_mu_; List and Load
// may run concurrently with them (RocksDB is thread-safe).
#ifndef PSKIT_SERVER_CHECKPOINT_STORE_H_
#define PSKIT_SERVER_CHECKPOINT_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/layout.h"
#include "pskit/v1/checkpoint.pb.h"

namespace rocksdb {
class DB;
}

namespace pskit {

// A shard's whole state, as copied for a checkpoint or loaded from one.
struct ShardSnapshot {
  std::vector<v1::NamespaceRecord> namespaces;
  std::vector<v1::ChunkRecord> chunks;
  uint64_t updates_applied = 0;
  // Exactly-once windows (server/push_window.h), one per worker; none in a
  // checkpoint written before they existed.
  std::vector<v1::WindowRecord> windows;
};

// INVALID_ARGUMENT unless `id` is 1..128 printable ASCII bytes without '/'.
[[nodiscard]] absl::Status ValidateCheckpointId(const std::string& id);

// Yields the next record of a checkpoint: sets *value and returns true, or
// returns false when there is none left. *value stays valid until the next
// call.
using NextRecord = std::function<bool(absl::string_view* value)>;

// Decodes checkpoint `id` from what the database holds for it: `manifest`,
// the value under "m/<id>", and its namespace, chunk and exactly-once
// window records in key order, read one by one through `next_namespace`,
// `next_chunk` and `next_window` (in that order). `layout` and `shard_index` are the loading shard's.
// Returns what Load returns (it is Load's decoding, apart from the
// database, so it can be fuzzed: tests/fuzz/fuzz_checkpoint.cc), and sets
// *info (if not null) to the manifest's record on success.
// FAILED_PRECONDITION when the manifest is another layout's or shard's;
// DATA_LOSS when the manifest or a record is unreadable, a CRC does not
// match, or the counts disagree.
[[nodiscard]] absl::StatusOr<ShardSnapshot> DecodeCheckpoint(
    const std::string& id, absl::string_view manifest, const Layout& layout,
    uint32_t shard_index, const NextRecord& next_namespace,
    const NextRecord& next_chunk, const NextRecord& next_window,
    v1::CheckpointInfo* info);

class CheckpointStore {
 public:
  // Opens or creates the database in `dir`. `layout` and `shard_index` are
  // this shard's; `keep` >= 1 checkpoints are kept. UNAVAILABLE when the
  // database cannot be opened (another process holds it, no permission).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<CheckpointStore>> Open(
      const std::string& dir, const Layout& layout, uint32_t shard_index,
      int keep);
  ~CheckpointStore();

  // Writes `snapshot` as checkpoint `id` (taken at `taken`, `copy_time`
  // spent copying it), then deletes checkpoints beyond the newest `keep`.
  // ALREADY_EXISTS when `id` is taken; INTERNAL when RocksDB fails (nothing
  // is written then).
  [[nodiscard]] absl::StatusOr<v1::CheckpointInfo> Write(
      const std::string& id, const ShardSnapshot& snapshot, absl::Time taken,
      absl::Duration copy_time) ABSL_LOCKS_EXCLUDED(write_mu_);

  // Complete checkpoints, newest first.
  std::vector<v1::CheckpointInfo> List() const;

  // Loads checkpoint `id`. NOT_FOUND if absent; FAILED_PRECONDITION if it
  // was taken with another layout or shard index; DATA_LOSS if a record is
  // unreadable or a CRC does not match.
  [[nodiscard]] absl::StatusOr<ShardSnapshot> Load(
      const std::string& id, v1::CheckpointInfo* info) const;

  // Loads checkpoints newest first and hands each to `apply` until one
  // loads and applies; one that fails either with DATA_LOSS is skipped with
  // an error log. Returns the applied checkpoint's record. NOT_FOUND when
  // none is left; any other error (FAILED_PRECONDITION for another layout)
  // is returned at once.
  [[nodiscard]] absl::StatusOr<v1::CheckpointInfo> LoadNewest(
      const std::function<absl::Status(const ShardSnapshot&)>& apply) const;

  // Test only: runs `hook` after the batch is built and before it is
  // committed (a test can hold or kill the process there).
  void SetBeforeCommitHook(std::function<void()> hook)
      ABSL_LOCKS_EXCLUDED(write_mu_);

 private:
  CheckpointStore(std::unique_ptr<rocksdb::DB> db, const Layout& layout,
                  uint32_t shard_index, int keep, uint64_t next_sequence);
  absl::Status DeleteCheckpoint(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  // Constant after construction.
  const std::unique_ptr<rocksdb::DB> db_;
  const Layout layout_;
  const uint32_t shard_index_;
  const int keep_;

  absl::Mutex write_mu_;
  uint64_t next_sequence_ ABSL_GUARDED_BY(write_mu_);
  std::function<void()> before_commit_ ABSL_GUARDED_BY(write_mu_);
};

}  // namespace pskit

#endif  // PSKIT_SERVER_CHECKPOINT_STORE_H_
