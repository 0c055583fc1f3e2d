// server/wire.h
//
// The shard's own codec for the data plane, byte-compatible with
// proto/pskit/v1/ps.proto (the client's counterpart is
// client/internal/wire.h).
//
// Requests: ParseRequest reads a PushRequest or ExchangeRequest from the
// slices gRPC received. Every field goes into the protobuf message except
// the chunks' `data` bytes, which stay where they arrived: each becomes a
// PayloadView of slice segments (a payload may span slices), and the slices
// are kept referenced alongside. The message minus its payloads is parsed by
// protobuf itself, so every field is checked as protobuf checks it; anything
// the walk does not handle (a group, an over-long varint, a truncated field)
// is handed to protobuf's parser whole, which then decides. So a request is
// accepted exactly when protobuf accepts it, and gives the same message.
//
// Answers: WireChunkOut (a ChunkOut, server/chunk_payload.h) gives the store
// one gRPC slice per answered chunk to encode the values into; AppendAnswer
// then puts the rest of the response (acks), serialized by protobuf, and the
// chunks (their fields and those slices, shared, not copied) into the
// reply's ByteBuffer. A repeated field's elements may come anywhere in a
// message, so the result is a valid message of the response type.
//
// Thread safety: a WireChunkOut is used by one thread at a time; the free
// functions are reentrant.
#ifndef PSKIT_SERVER_WIRE_H_
#define PSKIT_SERVER_WIRE_H_

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <string>
#include <vector>

#include "google/protobuf/message_lite.h"
#include "pskit/v1/ps.pb.h"
#include "server/chunk_payload.h"

namespace pskit {

// The field number of a request's repeated ChunkData whose payloads
// ParseRequest keeps as views; 0: the request is parsed by protobuf whole.
template <typename Req>
inline constexpr int kPayloadField = 0;
template <>
inline constexpr int kPayloadField<v1::PushRequest> = 4;  // grads
template <>
inline constexpr int kPayloadField<v1::ExchangeRequest> = 5;  // params

// The field number of a response's repeated ChunkData that WireChunkOut
// fills; 0: the response has none.
template <typename Resp>
inline constexpr int kAnswerField = 0;
template <>
inline constexpr int kAnswerField<v1::PullResponse> = 1;
template <>
inline constexpr int kAnswerField<v1::PushPullResponse> = 2;
template <>
inline constexpr int kAnswerField<v1::ExchangeResponse> = 1;

namespace wire_internal {

// The walk over `slices`: true with `*header` (the message's bytes without
// the payloads of field `field`'s chunks) and `*payloads` (one per chunk,
// in order), false when it met something it leaves to protobuf.
bool SplitPayloads(const std::vector<grpc::Slice>& slices, int field,
                   std::string* header, std::vector<PayloadView>* payloads);

inline const google::protobuf::RepeatedPtrField<v1::ChunkData>& PayloadChunks(
    const v1::PushRequest& r) {
  return r.grads();
}
inline const google::protobuf::RepeatedPtrField<v1::ChunkData>& PayloadChunks(
    const v1::ExchangeRequest& r) {
  return r.params();
}
inline google::protobuf::RepeatedPtrField<v1::ChunkData>* MutablePayloadChunks(
    v1::PushRequest* r) {
  return r->mutable_grads();
}
inline google::protobuf::RepeatedPtrField<v1::ChunkData>* MutablePayloadChunks(
    v1::ExchangeRequest* r) {
  return r->mutable_params();
}

}  // namespace wire_internal

// Parses `in` into `req` and `payloads` (one per chunk of the payload
// field, in order; they point into `in`'s slices, which `keep` references,
// or, when protobuf parsed the message whole, into `req`'s own strings).
// False when the bytes are not a valid Req (the gate answers
// INVALID_ARGUMENT "request could not be parsed as ...").
template <typename Req>
bool ParseRequest(const grpc::ByteBuffer& in, Req* req,
                  std::vector<grpc::Slice>* keep,
                  std::vector<PayloadView>* payloads) {
  static_assert(kPayloadField<Req> != 0);
  keep->clear();
  payloads->clear();
  std::string header;
  if (in.Dump(keep).ok() &&
      wire_internal::SplitPayloads(*keep, kPayloadField<Req>, &header,
                                   payloads) &&
      req->ParseFromString(header) &&
      static_cast<size_t>(wire_internal::PayloadChunks(*req).size()) ==
          payloads->size()) {
    return true;
  }
  // Protobuf decides, over the whole message.
  keep->clear();
  payloads->clear();
  req->Clear();
  grpc::ByteBuffer copy(in);  // Deserialize consumes its buffer
  if (!grpc::SerializationTraits<Req>::Deserialize(&copy, req).ok()) {
    return false;
  }
  *payloads = PayloadsOf(wire_internal::PayloadChunks(*req));
  return true;
}

// Answer chunks as gRPC slices, appended to a serialized response.
class WireChunkOut final : public ChunkOut {
 public:
  void Resize(int n) override;
  char* Set(int i, absl::string_view tensor, uint32_t chunk, uint64_t version,
            v1::Encoding encoding, size_t bytes) override;
  bool empty() const { return metas_.empty(); }
  int size() const { return static_cast<int>(metas_.size()); }

  // The reply: `rest` serialized, then every chunk as an element of
  // repeated field `field`. The payload slices are shared, not copied.
  grpc::ByteBuffer AppendAnswer(const google::protobuf::MessageLite& rest,
                                int field) const;

 private:
  std::vector<v1::ChunkData> metas_;  // data left empty
  std::vector<grpc::Slice> payloads_;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_WIRE_H_
