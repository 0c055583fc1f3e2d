// common/layout.h
//
// Layout: how a tensor is cut into chunks and which shard holds each chunk.
// Client and server call these same functions, so they always agree.
//
// Cutting. A tensor of n elements on S shards with chunk_elems C is cut into
// k near-equal chunks (lengths differ by at most one element, none longer than
// C): k = S * ceil(n / (S*C)), so a large tensor always gives every shard the
// same number of chunks; a tensor smaller than S * kMinChunkElems is cut into
// ceil(n / kMinChunkElems) chunks instead, so small tensors do not become many
// tiny messages.
//
// Placement. Chunk i of tensor t in namespace ns lives on shard
//   (JumpConsistentHash(Fingerprint64(ns + "/" + t), S) + i) mod S:
// a tensor's chunks are striped round-robin from a hashed first shard.
// Why not hash every chunk on its own: with 1 MiB chunks a 100 MB model has
// about 100 chunks, and independent hashing leaves the busiest of 8 shards
// 30-80% above the mean (simulated over 50 mixed models); the slowest shard
// sets the pace of every step. Striping equal chunks keeps every shard within
// 1% of the mean; small tensors still spread by their hash.
//
// The cut depends on S and C, so a cluster's (num_shards, chunk_elems) is
// part of its identity: every request carries it and shards refuse a
// mismatch.
//
// Example:
//   PSKIT_ASSIGN_OR_RETURN(Layout layout, Layout::Create(4, kDefaultChunkElems));
//   for (const ChunkSpan& c : layout.Chunks("default", "fc1/w", 784 * 512)) {
//     Send(c.shard, data + c.offset, c.length);
//   }
//
// Thread safety: Layout is immutable; all functions are pure.
#ifndef PSKIT_COMMON_LAYOUT_H_
#define PSKIT_COMMON_LAYOUT_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace pskit {

// Default maximum chunk size: 262,144 floats = 1 MiB.
inline constexpr uint32_t kDefaultChunkElems = 262144;
// Smallest chunk a tensor is cut into when it is cut at all (16 KiB).
inline constexpr uint32_t kMinChunkElems = 4096;
// Largest tensor accepted: 2^36 elements (256 GiB of float32).
inline constexpr uint64_t kMaxTensorElems = uint64_t{1} << 36;

// A stable 64-bit fingerprint of `bytes`: FNV-1a followed by the MurmurHash3
// 64-bit finaliser. Part of the layout contract: never change it.
uint64_t Fingerprint64(absl::string_view bytes);

// Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014).
// Returns a bucket in [0, num_buckets); num_buckets must be > 0.
int32_t JumpConsistentHash(uint64_t key, int32_t num_buckets);

// One chunk of a tensor: elements [offset, offset + length) on `shard`.
struct ChunkSpan {
  uint32_t index = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint32_t shard = 0;
};

class Layout {
 public:
  // INVALID_ARGUMENT unless 1 <= num_shards <= 65536 and
  // 1 <= chunk_elems <= 2^26.
  static absl::StatusOr<Layout> Create(uint32_t num_shards,
                                       uint32_t chunk_elems);

  uint32_t num_shards() const { return num_shards_; }
  uint32_t chunk_elems() const { return chunk_elems_; }

  // Largest tensor this layout can cut: kMaxTensorElems, or fewer with a
  // tiny chunk_elems (chunk indices are 32-bit). Larger tensors are refused.
  uint64_t MaxTensorElems() const;

  // Number of chunks a tensor of `numel` (0 < numel <= MaxTensorElems())
  // elements is cut into.
  uint32_t NumChunks(uint64_t numel) const;

  // Chunk `index` (< NumChunks(numel)) of tensor `tensor` in `ns`.
  ChunkSpan Chunk(absl::string_view ns, absl::string_view tensor, uint64_t numel,
                  uint32_t index) const;

  // All chunks of the tensor, in index order.
  std::vector<ChunkSpan> Chunks(absl::string_view ns, absl::string_view tensor,
                                uint64_t numel) const;

  // How many of the tensor's `numel` (as for NumChunks) elements live on
  // `shard` (< num_shards()): the sum of the lengths of its chunks there,
  // counted in O(1) without listing the chunks. 0 when the shard holds none.
  uint64_t ElementsOnShard(absl::string_view ns, absl::string_view tensor,
                           uint64_t numel, uint32_t shard) const;

  // "num_shards=4 chunk_elems=262144", for error messages.
  std::string ToString() const;

  bool operator==(const Layout&) const = default;

 private:
  Layout(uint32_t num_shards, uint32_t chunk_elems)
      : num_shards_(num_shards), chunk_elems_(chunk_elems) {}
  uint32_t FirstShard(absl::string_view ns, absl::string_view tensor) const;

  uint32_t num_shards_;
  uint32_t chunk_elems_;
};

// The fingerprint key of a tensor: "ns/tensor".
std::string TensorKey(absl::string_view ns, absl::string_view tensor);

}  // namespace pskit

#endif  // PSKIT_COMMON_LAYOUT_H_
