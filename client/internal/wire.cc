#include "client/internal/wire.h"

#include <grpcpp/support/proto_buffer_reader.h>

#include <climits>

#include "absl/strings/str_cat.h"
#include "common/encoding.h"
#include "common/validation.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace pskit::client_internal {
namespace {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutLengthDelimitedTag(int field, std::string* out) {
  PutVarint((static_cast<uint64_t>(field) << 3) |
                WireFormatLite::WIRETYPE_LENGTH_DELIMITED,
            out);
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

absl::Status Malformed(const char* what) {
  return absl::InternalError(
      absl::StrCat("malformed answer from the shard: ", what));
}

// ChunkData field numbers (ps.proto).
constexpr int kTensor = 1, kChunk = 2, kVersion = 3, kEncoding = 4, kData = 5;

// Writes `n` values, read from `in` as `encoding`, to the sink.
absl::Status ConsumePayload(CodedInputStream* in, v1::Encoding encoding,
                            uint32_t bytes, const ChunkSink& sink,
                            std::string* raw, std::vector<float>* values) {
  const size_t bpe = BytesPerElement(encoding);
  if (bytes != sink.length * bpe) {
    return absl::FailedPreconditionError(absl::StrCat(
        ChunkName(sink.tensor, sink.chunk), ": the shard sent ", bytes,
        " bytes of ", EncodingName(encoding), ", expected ", sink.length,
        " elements: the buffer size does not match the declared tensor"));
  }
  if (encoding == v1::ENCODING_F32 && !sink.subtract) {
    // The one copy: from gRPC's buffer into the caller's.
    if (!in->ReadRaw(sink.dest, static_cast<int>(bytes))) {
      return Malformed("truncated payload");
    }
    return absl::OkStatus();
  }
  if (!in->ReadString(raw, static_cast<int>(bytes))) {
    return Malformed("truncated payload");
  }
  values->resize(sink.length);
  DecodeFloats(encoding, raw->data(), absl::MakeSpan(*values));
  if (sink.subtract) {
    float* __restrict d = sink.dest;
    const float* __restrict v = values->data();
    for (size_t i = 0; i < sink.length; ++i) d[i] -= v[i];
  } else {
    std::copy(values->begin(), values->end(), sink.dest);
  }
  return absl::OkStatus();
}

// Parses one ChunkData up to the current limit into `sink`.
absl::Status ParseChunk(CodedInputStream* in, const ChunkSink& sink,
                        ChunkMeta* meta, std::string* raw,
                        std::vector<float>* values) {
  std::string tensor;
  uint32_t chunk = 0;
  uint32_t encoding = 0;
  bool have_data = false;
  while (uint32_t tag = in->ReadTag()) {
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    const auto type = WireFormatLite::GetTagWireType(tag);
    if (field == kTensor && type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t len;
      if (!in->ReadVarint32(&len) || !in->ReadString(&tensor, len)) {
        return Malformed("bad tensor name");
      }
    } else if (field == kChunk && type == WireFormatLite::WIRETYPE_VARINT) {
      if (!in->ReadVarint32(&chunk)) return Malformed("bad chunk index");
    } else if (field == kVersion && type == WireFormatLite::WIRETYPE_VARINT) {
      if (!in->ReadVarint64(&meta->version)) return Malformed("bad version");
    } else if (field == kEncoding && type == WireFormatLite::WIRETYPE_VARINT) {
      if (!in->ReadVarint32(&encoding)) return Malformed("bad encoding");
    } else if (field == kData &&
               type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t len;
      if (!in->ReadVarint32(&len)) return Malformed("bad payload length");
      // The shard writes fields in number order, so name, index and
      // encoding are known here; a chunk that does not match is refused
      // before its payload is written anywhere.
      if (tensor != sink.tensor || chunk != sink.chunk) {
        return absl::InternalError(absl::StrCat(
            "the shard answered ", ChunkName(tensor, chunk), " where ",
            ChunkName(sink.tensor, sink.chunk), " was asked for"));
      }
      const auto enc = static_cast<v1::Encoding>(encoding);
      if (BytesPerElement(enc) == 0) {
        return absl::InternalError(
            absl::StrCat(ChunkName(tensor, chunk), ": the shard sent encoding ",
                         EncodingName(enc)));
      }
      if (have_data) return Malformed("two payloads in one chunk");
      absl::Status s = ConsumePayload(in, enc, len, sink, raw, values);
      if (!s.ok()) return s;
      have_data = true;
    } else if (!WireFormatLite::SkipField(in, tag)) {
      return Malformed("unreadable field");
    }
  }
  if (!have_data) {
    return absl::InternalError(absl::StrCat(
        "the shard answered ", ChunkName(sink.tensor, sink.chunk),
        " without values"));
  }
  return absl::OkStatus();
}

}  // namespace

void SliceTracker::Acquire() {
  absl::MutexLock lock(&mu_);
  ++live_;
}

void SliceTracker::Release(void* tracker) {
  auto* t = static_cast<SliceTracker*>(tracker);
  absl::MutexLock lock(&t->mu_);
  --t->live_;
}

void SliceTracker::WaitForNone() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int64_t* live) { return *live == 0; }, &live_));
}

void OutgoingMessage::AppendMessageFields(
    const google::protobuf::MessageLite& header) {
  header.AppendToString(&pending_);
}

void OutgoingMessage::AppendChunkHeader(int field, const v1::ChunkData& meta,
                                        size_t bytes) {
  const std::string head = meta.SerializeAsString();
  const size_t data_field = 1 + VarintSize(bytes) + bytes;  // tag 5 is 1 byte
  PutLengthDelimitedTag(field, &pending_);
  PutVarint(head.size() + data_field, &pending_);
  pending_ += head;
  PutLengthDelimitedTag(kData, &pending_);
  PutVarint(bytes, &pending_);
}

void OutgoingMessage::AppendChunk(int field, const v1::ChunkData& meta,
                                  grpc::Slice payload) {
  AppendChunkHeader(field, meta, payload.size());
  if (payload.size() == 0) return;
  Flush();
  slices_.push_back(std::move(payload));
}

void OutgoingMessage::AppendChunk(int field, const v1::ChunkData& meta,
                                  const char* data, size_t bytes,
                                  SliceTracker* tracker) {
  AppendChunkHeader(field, meta, bytes);
  if (bytes == 0) return;
  Flush();
  tracker->Acquire();
  slices_.emplace_back(const_cast<char*>(data), bytes, &SliceTracker::Release,
                       tracker);
}

void OutgoingMessage::Flush() {
  if (pending_.empty()) return;
  slices_.emplace_back(pending_);
  pending_.clear();
}

grpc::ByteBuffer OutgoingMessage::Finish() {
  Flush();
  return grpc::ByteBuffer(slices_.data(), slices_.size());
}

absl::Status ParseChunks(grpc::ByteBuffer* buffer, bool with_acks,
                         absl::Span<const ChunkSink> sinks,
                         std::vector<ChunkMeta>* meta) {
  meta->assign(sinks.size(), ChunkMeta{});
  grpc::ProtoBufferReader reader(buffer);
  CodedInputStream in(&reader);
  in.SetTotalBytesLimit(INT_MAX);
  const int chunk_field = with_acks ? 2 : 1;
  size_t chunks = 0, acks = 0;
  std::string raw;
  std::vector<float> values;
  while (uint32_t tag = in.ReadTag()) {
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    const bool delimited = WireFormatLite::GetTagWireType(tag) ==
                           WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    if (delimited && field == chunk_field) {
      if (chunks >= sinks.size()) return Malformed("more chunks than asked");
      uint32_t len;
      if (!in.ReadVarint32(&len) || len > static_cast<uint32_t>(INT_MAX)) {
        return Malformed("bad chunk length");
      }
      const auto limit = in.PushLimit(static_cast<int>(len));
      absl::Status s =
          ParseChunk(&in, sinks[chunks], &(*meta)[chunks], &raw, &values);
      if (!s.ok()) return s;
      if (in.BytesUntilLimit() != 0) return Malformed("chunk cut short");
      in.PopLimit(limit);
      ++chunks;
    } else if (delimited && with_acks && field == 1) {
      if (acks >= sinks.size()) return Malformed("more acks than asked");
      uint32_t len;
      if (!in.ReadVarint32(&len) || !in.ReadString(&raw, len)) {
        return Malformed("bad ack");
      }
      v1::ChunkAck ack;
      if (!ack.ParseFromString(raw)) return Malformed("bad ack");
      (*meta)[acks].staleness = ack.staleness();
      ++acks;
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return Malformed("unreadable field");
    }
  }
  if (!in.ConsumedEntireMessage()) return Malformed("truncated message");
  if (chunks != sinks.size() || (with_acks && acks != sinks.size())) {
    return absl::InternalError(absl::StrCat(
        "the shard answered ", chunks, " chunks", with_acks ? " and " : "",
        with_acks ? absl::StrCat(acks, " acks") : "", " for ", sinks.size(),
        " asked"));
  }
  return absl::OkStatus();
}

}  // namespace pskit::client_internal
