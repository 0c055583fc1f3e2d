// Client's request planning (client/internal/plan.h): every chunk of every
// tensor is sent exactly once, to its shard; a request stays within
// max_request_bytes (a larger chunk travels alone); shards are interleaved.
#include "client/internal/plan.h"

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/layout.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pskit::client_internal {
namespace {

using Tensors = std::vector<std::pair<absl::string_view, uint64_t>>;

// Checks what holds for every plan: each chunk of each tensor exactly once,
// on the shard the layout gives it, each batch of one shard.
void ExpectCoversEveryChunkOnce(const Layout& layout, const Tensors& tensors,
                                const std::vector<RequestBatch>& plan) {
  std::set<std::pair<size_t, uint32_t>> seen;
  for (const RequestBatch& b : plan) {
    ASSERT_FALSE(b.pieces.empty());
    for (const RequestPiece& p : b.pieces) {
      EXPECT_EQ(p.span.shard, b.shard);
      EXPECT_TRUE(seen.insert({p.tensor, p.span.index}).second)
          << "tensor " << p.tensor << " chunk " << p.span.index << " twice";
    }
  }
  size_t total = 0;
  for (const auto& [name, numel] : tensors) total += layout.NumChunks(numel);
  EXPECT_EQ(seen.size(), total);
}

TEST(PlanRequests, GroupsEachShardsChunksWithinTheByteLimit) {
  ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(3, 1000));
  const Tensors tensors = {{"a", 10'000}, {"b", 2'500}, {"c", 7}};
  const size_t max_bytes = 8'000;  // two 1000-float chunks at 4 bytes
  const std::vector<RequestBatch> plan =
      PlanRequests(layout, "ns", tensors, /*bytes_per_elem=*/4, max_bytes);
  ExpectCoversEveryChunkOnce(layout, tensors, plan);
  for (const RequestBatch& b : plan) {
    size_t bytes = 0;
    for (const RequestPiece& p : b.pieces) bytes += p.span.length * 4;
    EXPECT_LE(bytes, max_bytes);
  }
  // Batches are filled: no shard has two batches that would fit in one.
  std::map<uint32_t, std::vector<size_t>> per_shard;
  for (const RequestBatch& b : plan) {
    size_t bytes = 0;
    for (const RequestPiece& p : b.pieces) bytes += p.span.length * 4;
    per_shard[b.shard].push_back(bytes);
  }
  for (const auto& [shard, sizes] : per_shard) {
    for (size_t i = 0; i + 1 < sizes.size(); ++i) {
      EXPECT_GT(sizes[i] + sizes[i + 1], max_bytes) << "shard " << shard;
    }
  }
}

TEST(PlanRequests, AChunkLargerThanTheLimitTravelsAlone) {
  ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(2, 1000));
  const Tensors tensors = {{"big", 4'000}};
  const std::vector<RequestBatch> plan =
      PlanRequests(layout, "ns", tensors, 4, /*max_request_bytes=*/1024);
  ExpectCoversEveryChunkOnce(layout, tensors, plan);
  EXPECT_EQ(plan.size(), layout.NumChunks(4'000));
  for (const RequestBatch& b : plan) EXPECT_EQ(b.pieces.size(), 1u);
}

TEST(PlanRequests, InterleavesShardsSoEveryShardGetsAnEarlyRequest) {
  ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(4, 100));
  const Tensors tensors = {{"w", 100 * 4 * 6}};  // 6 chunks per shard
  const std::vector<RequestBatch> plan =
      PlanRequests(layout, "ns", tensors, 4, /*max_request_bytes=*/400);
  ExpectCoversEveryChunkOnce(layout, tensors, plan);
  ASSERT_EQ(plan.size(), 24u);  // one chunk per request
  // Every window of 4 consecutive requests covers the 4 shards.
  for (size_t round = 0; round < 6; ++round) {
    std::set<uint32_t> shards;
    for (size_t i = 0; i < 4; ++i) shards.insert(plan[round * 4 + i].shard);
    EXPECT_EQ(shards.size(), 4u) << "round " << round;
  }
}

TEST(PlanRequests, PiecesKeepTheirTensorIndexAndOffsets) {
  ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(1, 10));
  const Tensors tensors = {{"x", 25}, {"y", 5}};
  const std::vector<RequestBatch> plan =
      PlanRequests(layout, "ns", tensors, 2, /*max_request_bytes=*/1 << 20);
  ASSERT_EQ(plan.size(), 1u);  // one shard, everything fits
  ExpectCoversEveryChunkOnce(layout, tensors, plan);
  uint64_t x_elems = 0, y_elems = 0;
  for (const RequestPiece& p : plan[0].pieces) {
    (p.tensor == 0 ? x_elems : y_elems) += p.span.length;
  }
  EXPECT_EQ(x_elems, 25u);
  EXPECT_EQ(y_elems, 5u);
}

// Two workers naming the same tensors in different orders send their chunks
// in the same order: under ssp and sync a shard holds a call until the
// others' calls for its chunks arrive, and with a window of calls in flight
// per shard, different orders could leave each worker's window full of
// calls waiting for ones the other has not started.
TEST(PlanRequests, TheCallersTensorOrderDoesNotChangeTheSendingOrder) {
  ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(2, 100));
  const Tensors ab = {{"a", 450}, {"b", 300}, {"c", 50}};
  const Tensors ba = {{"c", 50}, {"b", 300}, {"a", 450}};
  auto sequence = [&](const Tensors& t) {
    std::vector<std::pair<uint32_t, std::pair<std::string, uint32_t>>> seq;
    for (const RequestBatch& b :
         PlanRequests(layout, "ns", t, 4, /*max_request_bytes=*/800)) {
      for (const RequestPiece& p : b.pieces) {
        seq.push_back({b.shard, {std::string(t[p.tensor].first), p.span.index}});
      }
    }
    return seq;
  };
  ExpectCoversEveryChunkOnce(layout, ba,
                             PlanRequests(layout, "ns", ba, 4, 800));
  EXPECT_EQ(sequence(ab), sequence(ba));
}

}  // namespace
}  // namespace pskit::client_internal
