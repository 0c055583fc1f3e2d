// common/validation.h
//
// Checks on wire messages, shared by the shard server (which validates every
// request before it touches state) and the client (which checks answers).
// Every error message names the tensor and chunk and says what was expected.
//
// Thread safety: pure functions.
#ifndef PSKIT_COMMON_VALIDATION_H_
#define PSKIT_COMMON_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/layout.h"
#include "pskit/v1/ps.pb.h"

namespace pskit {

// Longest namespace or tensor name accepted, in bytes.
inline constexpr size_t kMaxNameBytes = 256;
// The namespace an empty namespace field means.
inline constexpr absl::string_view kDefaultNamespace = "default";

// The namespace a request, an operation or a local job addresses: `ns`, or
// kDefaultNamespace when it is empty. Shards, clients and local mode all
// call this one function, so they agree on what "" means.
inline std::string NamespaceOf(absl::string_view ns) {
  return ns.empty() ? std::string(kDefaultNamespace) : std::string(ns);
}

// Longest client-supplied string that Quoted shows whole, in bytes: every
// valid name and checkpoint id fits.
inline constexpr size_t kMaxQuotedBytes = kMaxNameBytes;
// How much of a longer string Quoted shows.
inline constexpr size_t kQuotedPrefixBytes = 64;

// `s` in single quotes, for a status or log message, bounded: a string of at
// most kMaxQuotedBytes bytes whole ("'fc1/w'"), a longer one cut to its
// first kQuotedPrefixBytes bytes with its length ("'aaaa...' (1048576
// bytes)"); bytes outside printable ASCII, quotes and backslashes escaped
// C-style ("\x01"). Every message that echoes a string a client sent (a
// tensor, namespace, worker or checkpoint name) goes through this, so a
// 1 MB name cannot blow an answer past gRPC's metadata limit.
std::string Quoted(absl::string_view s);

// "tensor 'fc1/w' chunk 3" (the name through Quoted).
std::string ChunkName(absl::string_view tensor, uint32_t chunk);

// INVALID_ARGUMENT unless `name` is 1..kMaxNameBytes printable ASCII bytes.
// `what` is "namespace" or "tensor name", for the message.
[[nodiscard]] absl::Status ValidateName(absl::string_view what,
                                        absl::string_view name);

// INVALID_ARGUMENT for ENCODING_UNSPECIFIED or an unknown value.
[[nodiscard]] absl::Status ValidateEncoding(v1::Encoding encoding);

// FAILED_PRECONDITION when the sender's layout differs from this shard's
// (`mine`, `shard_index`); INVALID_ARGUMENT when `got` is missing.
[[nodiscard]] absl::Status CheckLayout(const v1::Layout& got, bool has_layout,
                                       const Layout& mine,
                                       uint32_t shard_index);

// The interval a numeric setting must lie in: [lo, hi], (lo, hi], ...
struct Bounds {
  double lo;
  bool lo_open;
  double hi;
  bool hi_open;
};

// INVALID_ARGUMENT "<label> is <value>; it must be in (lo, hi]" unless
// `value` is finite and within `bounds`. The one range check of the
// optimizers' and the staleness rules' settings.
[[nodiscard]] absl::Status CheckBounds(absl::string_view label, double value,
                                       const Bounds& bounds);

// Index of the first NaN or +-inf in `values`, or -1 when all are finite.
int64_t FirstNonFinite(absl::Span<const float> values);

// Checks `chunk` (encoding known, payload of exactly `expected_elems`
// elements, and, unless `allow_nonfinite`, every value finite) and returns its
// values. An f32 payload is read in place (the view borrows chunk.data());
// others are decoded into *scratch (the view borrows *scratch).
// INVALID_ARGUMENT on any mismatch, naming the chunk.
[[nodiscard]] absl::StatusOr<absl::Span<const float>> DecodeChunk(
    const v1::ChunkData& chunk, uint64_t expected_elems, bool allow_nonfinite,
    std::vector<float>* scratch);

}  // namespace pskit

#endif  // PSKIT_COMMON_VALIDATION_H_
