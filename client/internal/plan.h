// client/internal/plan.h
//
// PlanRequests: how Client cuts an operation on whole tensors into gRPC
// requests. The tensors are taken in name order (the caller's order does
// not matter: every worker sends the same chunks in the same order, which
// ssp and sync need with a window of calls in flight). Each tensor is cut
// into chunks by the cluster's Layout; the
// chunks of each shard are grouped, in order, into batches of at most
// `max_request_bytes` (a chunk larger than that gets a batch of its own);
// the batches are interleaved across shards (round r holds every shard's
// r-th batch) so the first requests on the wire go to all shards.
//
//   std::vector<RequestBatch> b = PlanRequests(layout, "default",
//       {{"fc1/w", 784 * 256}, {"fc1/b", 256}}, /*bytes_per_elem=*/4,
//       /*max_request_bytes=*/4 << 20);
//
// Thread safety: a pure function.
#ifndef PSKIT_CLIENT_INTERNAL_PLAN_H_
#define PSKIT_CLIENT_INTERNAL_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/layout.h"

namespace pskit::client_internal {

// One chunk of a request: which tensor (index into the operation's tensor
// list) and which part of it.
struct RequestPiece {
  size_t tensor;
  ChunkSpan span;
};

// The chunks one request carries, all of shard `shard`.
struct RequestBatch {
  uint32_t shard;
  std::vector<RequestPiece> pieces;
};

// Plans the requests for `tensors` (name, number of elements) of namespace
// `ns` at `bytes_per_elem` payload bytes per element; see the file comment.
std::vector<RequestBatch> PlanRequests(
    const Layout& layout, absl::string_view ns,
    absl::Span<const std::pair<absl::string_view, uint64_t>> tensors,
    size_t bytes_per_elem, size_t max_request_bytes);

}  // namespace pskit::client_internal

#endif  // PSKIT_CLIENT_INTERNAL_PLAN_H_
