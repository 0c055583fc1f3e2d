#include "common/layout.h"

#include <algorithm>
#include <map>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

TEST(Fingerprint64, PinnedValues) {
  // Part of the layout contract: these must never change (values computed by
  // an independent implementation of FNV-1a + fmix64).
  EXPECT_EQ(Fingerprint64(""), 0xefd01f60ba992926ULL);
  EXPECT_EQ(Fingerprint64("a"), 0x82a2a958a9bece5bULL);
  EXPECT_EQ(Fingerprint64("default/fc1/w"), 0xb423ada5f11c7805ULL);
}

TEST(JumpConsistentHash, PinnedValues) {
  EXPECT_EQ(JumpConsistentHash(0, 1), 0);
  EXPECT_EQ(JumpConsistentHash(1, 10), 6);
  EXPECT_EQ(JumpConsistentHash(0xdeadbeef, 100), 87);
  EXPECT_EQ(JumpConsistentHash(~uint64_t{0}, 1000), 313);
  EXPECT_EQ(JumpConsistentHash(123456789, 7), 0);
}

TEST(JumpConsistentHash, MovesFewKeysWhenABucketIsAdded) {
  int moved = 0;
  for (uint64_t k = 0; k < 10000; ++k) {
    const uint64_t key = Fingerprint64(absl::StrCat(k));
    const int32_t a = JumpConsistentHash(key, 10);
    const int32_t b = JumpConsistentHash(key, 11);
    if (a != b) {
      ++moved;
      EXPECT_EQ(b, 10) << "a key may only move to the new bucket";
    }
  }
  EXPECT_NEAR(moved, 10000 / 11, 150);
}

TEST(Layout, CreateRejectsBadValues) {
  EXPECT_EQ(Layout::Create(0, 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Layout::Create(2, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_OK(Layout::Create(1, 1));
}

// Chunks tile the tensor, none is longer than chunk_elems, lengths differ by
// at most one, and Chunk(i) agrees with Chunks()[i].
TEST(Layout, ChunksTileTheTensor) {
  for (uint32_t shards : {1u, 2u, 3u, 8u, 13u}) {
    for (uint32_t chunk : {1u, 7u, 4096u, 262144u}) {
      ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(shards, chunk));
      for (uint64_t n : {uint64_t{1}, uint64_t{5}, uint64_t{4095},
                         uint64_t{4097}, uint64_t{100000}, uint64_t{1} << 22,
                         (uint64_t{1} << 22) + 3}) {
        if (chunk == 1 && n > 100000) continue;
        const auto spans = layout.Chunks("ns", "t", n);
        ASSERT_EQ(spans.size(), layout.NumChunks(n));
        uint64_t offset = 0, lo = n, hi = 0;
        for (size_t i = 0; i < spans.size(); ++i) {
          EXPECT_EQ(spans[i].index, i);
          EXPECT_EQ(spans[i].offset, offset);
          EXPECT_GE(spans[i].length, 1u);
          EXPECT_LE(spans[i].length, chunk);
          EXPECT_LT(spans[i].shard, shards);
          lo = std::min(lo, spans[i].length);
          hi = std::max(hi, spans[i].length);
          offset += spans[i].length;
          const ChunkSpan one = layout.Chunk("ns", "t", n, i);
          EXPECT_EQ(one.offset, spans[i].offset);
          EXPECT_EQ(one.length, spans[i].length);
          EXPECT_EQ(one.shard, spans[i].shard);
        }
        EXPECT_EQ(offset, n) << shards << " " << chunk << " " << n;
        EXPECT_LE(hi - lo, 1u);
      }
    }
  }
}

// ElementsOnShard's closed form agrees with summing Chunks' lengths per
// shard, for tensors cut in one chunk, fewer chunks than shards, and many,
// with and without a remainder.
TEST(Layout, ElementsOnShardIsTheSumOfItsChunks) {
  for (uint32_t shards : {1u, 2u, 3u, 8u, 13u}) {
    for (uint32_t chunk : {1u, 7u, 4096u, 262144u}) {
      ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(shards, chunk));
      for (uint64_t n : {uint64_t{1}, uint64_t{5}, uint64_t{4095},
                         uint64_t{4097}, uint64_t{9000}, uint64_t{100000},
                         uint64_t{1} << 22, (uint64_t{1} << 22) + 3}) {
        if (chunk == 1 && n > 100000) continue;
        for (const char* tensor : {"t", "fc1/w", "layer7/b"}) {
          std::vector<uint64_t> summed(shards, 0);
          for (const ChunkSpan& c : layout.Chunks("ns", tensor, n)) {
            summed[c.shard] += c.length;
          }
          uint64_t total = 0;
          for (uint32_t s = 0; s < shards; ++s) {
            EXPECT_EQ(layout.ElementsOnShard("ns", tensor, n, s), summed[s])
                << layout.ToString() << " numel=" << n << " tensor=" << tensor
                << " shard=" << s;
            total += layout.ElementsOnShard("ns", tensor, n, s);
          }
          EXPECT_EQ(total, n);
        }
      }
    }
  }
}

TEST(Layout, PlacementIsDeterministicAndDependsOnTheName) {
  ASSERT_OK_AND_ASSIGN(Layout a, Layout::Create(8, kDefaultChunkElems));
  ASSERT_OK_AND_ASSIGN(Layout b, Layout::Create(8, kDefaultChunkElems));
  std::map<uint32_t, int> first_shards;
  for (int t = 0; t < 200; ++t) {
    const std::string name = absl::StrCat("layer", t, "/b");
    const ChunkSpan x = a.Chunk("job", name, 100, 0);
    EXPECT_EQ(x.shard, b.Chunk("job", name, 100, 0).shard);
    ++first_shards[x.shard];
  }
  // 200 small tensors spread over all 8 shards.
  EXPECT_EQ(first_shards.size(), 8u);
}

TEST(Layout, LargeTensorGivesEveryShardTheSameNumberOfChunks) {
  ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(8, kDefaultChunkElems));
  std::vector<int> per_shard(8, 0);
  for (const ChunkSpan& s : layout.Chunks("ns", "big", 10'000'000)) {
    ++per_shard[s.shard];
  }
  for (int c : per_shard) EXPECT_EQ(c, per_shard[0]);
}

// The balance requirement: 8 shards, a 100 MB model of mixed tensor
// sizes, default chunk size: bytes per shard within 10% of the mean.
TEST(Layout, BalancedOverEightShardsForMixedModels) {
  ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(8, kDefaultChunkElems));
  std::mt19937_64 rng(7);
  for (int model = 0; model < 20; ++model) {
    std::vector<uint64_t> bytes(8, 0);
    uint64_t total = 0;
    for (int t = 0; total < 100'000'000; ++t) {
      const double kind = std::uniform_real_distribution<>(0, 1)(rng);
      uint64_t n;
      if (kind < 0.3) {
        n = std::uniform_int_distribution<uint64_t>(10, 5000)(rng);  // biases
      } else if (kind < 0.7) {
        n = std::uniform_int_distribution<uint64_t>(50'000, 1'000'000)(rng);
      } else {
        n = std::uniform_int_distribution<uint64_t>(1'000'000, 8'000'000)(rng);
      }
      for (const ChunkSpan& s :
           layout.Chunks("default", absl::StrCat("layer", t, "/w"), n)) {
        bytes[s.shard] += s.length * 4;
      }
      total += n * 4;
    }
    const double mean = static_cast<double>(total) / 8;
    for (int s = 0; s < 8; ++s) {
      EXPECT_LT(std::abs(bytes[s] - mean) / mean, 0.10)
          << "model " << model << " shard " << s << " holds " << bytes[s]
          << " bytes, mean " << mean;
    }
  }
}

TEST(Layout, SmallTensorsAreNotCutIntoTinyChunks) {
  ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(8, kDefaultChunkElems));
  EXPECT_EQ(layout.NumChunks(10), 1u);
  EXPECT_EQ(layout.NumChunks(kMinChunkElems), 1u);
  EXPECT_EQ(layout.NumChunks(kMinChunkElems + 1), 2u);
  EXPECT_EQ(layout.NumChunks(8 * kMinChunkElems), 8u);
}

}  // namespace
}  // namespace pskit
