// server/chunk_payload.h
//
// How chunk payloads reach ChunkStore and how its answers leave it, without
// tying the store to one representation:
//   - PayloadView: the bytes of one pushed chunk (a gradient, or EASGD's
//     parameters) as a list of segments. server/wire.h makes them point
//     into the slices gRPC received (no copy); PayloadOf makes one over a
//     protobuf string (tests, held ssp/sync calls, replays).
//   - DecodePayload: checks one payload (encoding, length, finiteness) and
//     gives its values: in place when it is one aligned f32 segment, else
//     decoded once into a buffer the caller supplies.
//   - ChunkOut: where answered chunks go. The store asks it, under the
//     chunk's lock, for a buffer of the payload's size and encodes the
//     values straight into it: ProtoChunkOut gives the data string of a
//     ChunkData, server/wire.h's WireChunkOut a gRPC slice that the reply
//     then carries as it is.
//
// Thread safety: a ChunkOut is filled by one thread at a time.
#ifndef PSKIT_SERVER_CHUNK_PAYLOAD_H_
#define PSKIT_SERVER_CHUNK_PAYLOAD_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "pskit/v1/ps.pb.h"

namespace pskit {

// One payload as consecutive segments (borrowed; the owner keeps them).
struct PayloadView {
  absl::InlinedVector<absl::string_view, 1> segments;
  size_t size = 0;  // bytes, the sum of the segments'

  void Append(absl::string_view s) {
    if (s.empty()) return;
    segments.push_back(s);
    size += s.size();
  }
  void Clear() {
    segments.clear();
    size = 0;
  }
  // The bytes as one string (a copy).
  std::string ToString() const;
};

// A view of `data` (borrowed).
inline PayloadView PayloadOf(absl::string_view data) {
  PayloadView v;
  v.Append(data);
  return v;
}

// Views of the data of each of `chunks` (borrowed).
std::vector<PayloadView> PayloadsOf(
    const google::protobuf::RepeatedPtrField<v1::ChunkData>& chunks);

// Checks the payload of `meta` (its tensor, chunk and encoding; its own
// data field is not read) as common/validation.h's DecodeChunk does, with
// the same INVALID_ARGUMENT messages: a known encoding, exactly
// `expected_elems` elements, and, unless `allow_nonfinite`, every value
// finite. Returns the values: a view of the payload when it is one f32
// segment aligned for floats, else decoded into a new *buffer (the view
// borrows it). The buffer is not zeroed first, and is a plain heap block
// rather than one of the store's ScratchPool buffers: those serve the
// update's outputs, and taking the inputs from the same pool overflowed it
// (a 64 MiB push then allocated and zeroed fresh buffers each time).
[[nodiscard]] absl::StatusOr<absl::Span<const float>> DecodePayload(
    const v1::ChunkData& meta, const PayloadView& payload,
    uint64_t expected_elems, bool allow_nonfinite,
    std::unique_ptr<float[]>* buffer);

// Where a store's answer chunks go: Resize(n) once, then Set each i in
// [0, n) once, in any order.
class ChunkOut {
 public:
  virtual ~ChunkOut() = default;
  // n chunks, none set yet (drops what was there).
  virtual void Resize(int n) = 0;
  // Chunk i's fields and a buffer of `bytes` bytes for its payload, which
  // the caller fills before the next call on this ChunkOut.
  virtual char* Set(int i, absl::string_view tensor, uint32_t chunk,
                    uint64_t version, v1::Encoding encoding, size_t bytes) = 0;
  // Chunk i as `c` (a stored answer: its data is copied).
  void SetCopy(int i, const v1::ChunkData& c);
};

// Fills a repeated ChunkData field of a protobuf message.
class ProtoChunkOut final : public ChunkOut {
 public:
  explicit ProtoChunkOut(
      google::protobuf::RepeatedPtrField<v1::ChunkData>* out)
      : out_(out) {}
  void Resize(int n) override;
  char* Set(int i, absl::string_view tensor, uint32_t chunk, uint64_t version,
            v1::Encoding encoding, size_t bytes) override;

 private:
  google::protobuf::RepeatedPtrField<v1::ChunkData>* const out_;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_CHUNK_PAYLOAD_H_
