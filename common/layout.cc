#include "common/layout.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pskit {

uint64_t Fingerprint64(absl::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a offset basis
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;  // FNV prime
  }
  // MurmurHash3 fmix64: FNV's low bits mix poorly on short keys.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

int32_t JumpConsistentHash(uint64_t key, int32_t num_buckets) {
  int64_t b = -1;
  int64_t j = 0;
  while (j < num_buckets) {
    b = j;
    key = key * 2862933555777941757ULL + 1;
    j = static_cast<int64_t>((b + 1) * (static_cast<double>(1LL << 31) /
                                        static_cast<double>((key >> 33) + 1)));
  }
  return static_cast<int32_t>(b);
}

std::string TensorKey(absl::string_view ns, absl::string_view tensor) {
  return absl::StrCat(ns, "/", tensor);
}

absl::StatusOr<Layout> Layout::Create(uint32_t num_shards,
                                      uint32_t chunk_elems) {
  if (num_shards < 1 || num_shards > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_shards must be in [1, 65536], got ", num_shards));
  }
  if (chunk_elems < 1 || chunk_elems > (1u << 26)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk_elems must be in [1, 67108864], got ", chunk_elems));
  }
  return Layout(num_shards, chunk_elems);
}

uint32_t Layout::NumChunks(uint64_t numel) const {
  const uint64_t s = num_shards_;
  const uint64_t per_shard = (numel + s * chunk_elems_ - 1) / (s * chunk_elems_);
  const uint64_t min_chunk = std::min<uint64_t>(kMinChunkElems, chunk_elems_);
  if (per_shard <= 1 && numel < s * min_chunk) {
    return static_cast<uint32_t>(std::max<uint64_t>(
        1, (numel + min_chunk - 1) / min_chunk));
  }
  // min(): with chunk_elems 1, S * per_shard can pass numel. The clamp
  // only matters past MaxTensorElems(), which callers refuse first; it keeps
  // a caller that did not from dividing by zero.
  return static_cast<uint32_t>(
      std::min<uint64_t>(std::min(s * per_shard, numel), UINT32_MAX));
}

uint64_t Layout::MaxTensorElems() const {
  return std::min<uint64_t>(kMaxTensorElems,
                            uint64_t{chunk_elems_} << 31);
}

uint32_t Layout::FirstShard(absl::string_view ns,
                            absl::string_view tensor) const {
  return static_cast<uint32_t>(JumpConsistentHash(
      Fingerprint64(TensorKey(ns, tensor)), static_cast<int32_t>(num_shards_)));
}

ChunkSpan Layout::Chunk(absl::string_view ns, absl::string_view tensor,
                        uint64_t numel, uint32_t index) const {
  const uint64_t k = NumChunks(numel);
  const uint64_t base = numel / k;
  const uint64_t rem = numel % k;
  ChunkSpan span;
  span.index = index;
  span.offset = index * base + std::min<uint64_t>(index, rem);
  span.length = base + (index < rem ? 1 : 0);
  span.shard = (FirstShard(ns, tensor) + index) % num_shards_;
  return span;
}

std::vector<ChunkSpan> Layout::Chunks(absl::string_view ns,
                                      absl::string_view tensor,
                                      uint64_t numel) const {
  const uint32_t k = NumChunks(numel);
  const uint64_t base = numel / k;
  const uint64_t rem = numel % k;
  const uint32_t first = FirstShard(ns, tensor);
  std::vector<ChunkSpan> spans(k);
  uint64_t offset = 0;
  for (uint32_t i = 0; i < k; ++i) {
    spans[i].index = i;
    spans[i].offset = offset;
    spans[i].length = base + (i < rem ? 1 : 0);
    spans[i].shard = (first + i) % num_shards_;
    offset += spans[i].length;
  }
  return spans;
}

uint64_t Layout::ElementsOnShard(absl::string_view ns,
                                 absl::string_view tensor, uint64_t numel,
                                 uint32_t shard) const {
  const uint64_t k = NumChunks(numel);
  const uint64_t s = num_shards_;
  // Chunk i is on `shard` when (first + i) mod S == shard, that is for
  // i = skip, skip + S, skip + 2S, ... below k.
  const uint64_t skip = (shard + s - FirstShard(ns, tensor)) % s;
  if (skip >= k) return 0;
  const uint64_t count = (k - skip + s - 1) / s;
  // Chunks below numel % k are one element longer; count those among them.
  const uint64_t rem = numel % k;
  const uint64_t longer = rem > skip ? (rem - skip + s - 1) / s : 0;
  return count * (numel / k) + longer;
}

std::string Layout::ToString() const {
  return absl::StrCat("num_shards=", num_shards_,
                      " chunk_elems=", chunk_elems_);
}

}  // namespace pskit
