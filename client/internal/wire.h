// client/internal/wire.h
//
// The client's own codec for the data-plane messages (PushRequest,
// ExchangeRequest out; PullResponse, PushPullResponse, ExchangeResponse in),
// byte-compatible with proto/pskit/v1/ps.proto, used with grpc::GenericStub.
//
// Why not the generated protobuf classes: they copy every payload twice on
// the way out (into a ChunkData string, then into gRPC's buffer) and twice on
// the way in (into a ChunkData string, then into the caller's buffer). On the
// push/pull path that was a third of the client's CPU time (perf). Here an
// f32 payload leaves straight from the caller's buffer (a slice that points
// at it) and arrives with one copy from gRPC's buffer into the caller's.
//
// OutgoingMessage builds a grpc::ByteBuffer whose payload slices borrow
// caller memory; SliceTracker counts those slices until gRPC releases them,
// so the caller can wait before its memory goes away.
//
// Thread safety: an OutgoingMessage is used by one thread. SliceTracker is
// thread-safe (gRPC releases slices on its own threads).
#ifndef PSKIT_CLIENT_INTERNAL_WIRE_H_
#define PSKIT_CLIENT_INTERNAL_WIRE_H_

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "google/protobuf/message_lite.h"
#include "pskit/v1/ps.pb.h"

namespace pskit::client_internal {

// Counts borrowed slices that gRPC still holds.
class SliceTracker {
 public:
  SliceTracker() = default;
  SliceTracker(const SliceTracker&) = delete;
  SliceTracker& operator=(const SliceTracker&) = delete;
  // Waits for every borrowed slice to be released.
  ~SliceTracker() { WaitForNone(); }

  void Acquire() ABSL_LOCKS_EXCLUDED(mu_);
  // The slice destroy callback; `tracker` is a SliceTracker*.
  static void Release(void* tracker);
  void WaitForNone() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  int64_t live_ ABSL_GUARDED_BY(mu_) = 0;
};

// Builds one message as a sequence of slices: small owned header bytes and
// borrowed payloads.
class OutgoingMessage {
 public:
  // Fields of `header`, serialized normally (a message without its repeated
  // ChunkData field; the wire format lets fields come in any order).
  void AppendMessageFields(const google::protobuf::MessageLite& header);

  // One element of repeated ChunkData field `field`: `meta` (tensor, chunk,
  // version, encoding; data left empty) and a payload of `bytes` bytes at
  // `data`, which is borrowed: it must stay valid and unchanged until every
  // buffer built from this message is destroyed and `tracker` is empty.
  void AppendChunk(int field, const v1::ChunkData& meta, const char* data,
                   size_t bytes, SliceTracker* tracker);

  // The same with a payload the message owns (shared with gRPC, freed when
  // the last buffer holding it lets go): `payload`.
  void AppendChunk(int field, const v1::ChunkData& meta, grpc::Slice payload);

  // The message so far, as a byte buffer (the slices are shared, not
  // copied).
  grpc::ByteBuffer Finish();

 private:
  void Flush();
  // AppendChunk's field and ChunkData headers, up to the payload.
  void AppendChunkHeader(int field, const v1::ChunkData& meta, size_t bytes);
  std::string pending_;
  std::vector<grpc::Slice> slices_;
};

// What to do with each arriving chunk payload.
struct ChunkSink {
  absl::string_view tensor;  // expected name
  uint32_t chunk = 0;       // expected index
  float* dest = nullptr;    // where the chunk's elements go
  uint64_t length = 0;      // expected elements
  bool subtract = false;    // dest -= values (Exchange) instead of dest = values
};

// Per-chunk results besides the values.
struct ChunkMeta {
  uint64_t version = 0;
  uint64_t staleness = 0;  // PushPull acks only
};

// Parses a PullResponse / ExchangeResponse (chunks in field 1) or a
// PushPullResponse (acks in field 1, chunks in field 2; `with_acks`). The
// k-th chunk must match sinks[k] (name, index, length, a known encoding);
// its values are written to sinks[k].dest, and its version (and ack) into
// (*meta)[k]. INTERNAL for a malformed message or one that does not match
// what was asked; FAILED_PRECONDITION when the lengths differ (the caller's
// buffer does not match the declared tensor).
absl::Status ParseChunks(grpc::ByteBuffer* buffer, bool with_acks,
                         absl::Span<const ChunkSink> sinks,
                         std::vector<ChunkMeta>* meta);

}  // namespace pskit::client_internal

#endif  // PSKIT_CLIENT_INTERNAL_WIRE_H_
