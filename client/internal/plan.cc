#include "client/internal/plan.h"

#include <algorithm>

namespace pskit::client_internal {

std::vector<RequestBatch> PlanRequests(
    const Layout& layout, absl::string_view ns,
    absl::Span<const std::pair<absl::string_view, uint64_t>> tensors,
    size_t bytes_per_elem, size_t max_request_bytes) {
  // Tensors in name order, whatever the caller's: every worker then sends a
  // tensor set's chunks in the same order. Under ssp and sync the shard
  // holds a call until the other workers' calls for the same chunks arrive;
  // with a window of calls in flight per shard, two workers sending the
  // same chunks in different orders could each fill their window with
  // calls that wait for ones the other cannot start.
  std::vector<size_t> order(tensors.size());
  for (size_t t = 0; t < order.size(); ++t) order[t] = t;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return tensors[a].first < tensors[b].first;
  });
  std::vector<std::vector<RequestBatch>> per_shard(layout.num_shards());
  std::vector<size_t> open_bytes(layout.num_shards(), 0);
  for (size_t t : order) {
    for (const ChunkSpan& span :
         layout.Chunks(ns, tensors[t].first, tensors[t].second)) {
      std::vector<RequestBatch>& batches = per_shard[span.shard];
      const size_t bytes = span.length * bytes_per_elem;
      if (batches.empty() ||
          (!batches.back().pieces.empty() &&
           open_bytes[span.shard] + bytes > max_request_bytes)) {
        batches.push_back(RequestBatch{span.shard, {}});
        open_bytes[span.shard] = 0;
      }
      batches.back().pieces.push_back(RequestPiece{t, span});
      open_bytes[span.shard] += bytes;
    }
  }
  // Interleave shards so the first requests on the wire go to all shards.
  std::vector<RequestBatch> out;
  for (size_t round = 0;; ++round) {
    bool any = false;
    for (auto& batches : per_shard) {
      if (round < batches.size()) {
        out.push_back(std::move(batches[round]));
        any = true;
      }
    }
    if (!any) break;
  }
  return out;
}

}  // namespace pskit::client_internal
