// server/chunk_payload.cc
//
// PayloadView, DecodePayload and ProtoChunkOut (server/chunk_payload.h).
#include "server/chunk_payload.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/encoding.h"
#include "common/validation.h"

namespace pskit {

std::string PayloadView::ToString() const {
  std::string out;
  out.reserve(size);
  for (absl::string_view s : segments) out.append(s.data(), s.size());
  return out;
}

std::vector<PayloadView> PayloadsOf(
    const google::protobuf::RepeatedPtrField<v1::ChunkData>& chunks) {
  std::vector<PayloadView> out(chunks.size());
  for (int i = 0; i < chunks.size(); ++i) out[i] = PayloadOf(chunks[i].data());
  return out;
}

absl::StatusOr<absl::Span<const float>> DecodePayload(
    const v1::ChunkData& meta, const PayloadView& payload,
    uint64_t expected_elems, bool allow_nonfinite,
    std::unique_ptr<float[]>* buffer) {
  const v1::Encoding encoding = meta.encoding();
  const size_t bpe = BytesPerElement(encoding);
  if (bpe == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        ChunkName(meta.tensor(), meta.chunk()), ": encoding ",
        EncodingName(encoding),
        " is not supported; use ENCODING_F32, ENCODING_F16 or ENCODING_BF16"));
  }
  if (payload.size != expected_elems * bpe) {
    const bool whole = payload.size % bpe == 0;
    return absl::InvalidArgumentError(absl::StrCat(
        ChunkName(meta.tensor(), meta.chunk()), ": payload has ",
        payload.size, " bytes",
        whole ? absl::StrCat(" (", payload.size / bpe, " elements)")
              : std::string(" (not a whole number of elements)"),
        ", expected ", expected_elems * bpe, " bytes (", expected_elems,
        " elements of ", EncodingName(encoding), ")"));
  }
  absl::Span<const float> values;
  if (expected_elems == 0) {
    // Nothing to read.
  } else if (encoding == v1::ENCODING_F32 && payload.segments.size() == 1 &&
             reinterpret_cast<uintptr_t>(payload.segments[0].data()) %
                     alignof(float) ==
                 0) {
    values = absl::Span<const float>(
        reinterpret_cast<const float*>(payload.segments[0].data()),
        expected_elems);
  } else {
    // The one copy: each segment decoded into place; an element cut by a
    // segment boundary goes through `carry`.
    buffer->reset(new float[expected_elems]);  // not zeroed: all written
    float* out = buffer->get();
    char carry[sizeof(float)];
    size_t carried = 0;
    for (absl::string_view s : payload.segments) {
      const char* p = s.data();
      size_t left = s.size();
      if (carried > 0) {
        const size_t n = std::min(bpe - carried, left);
        std::memcpy(carry + carried, p, n);
        carried += n;
        p += n;
        left -= n;
        if (carried < bpe) continue;
        DecodeFloats(encoding, carry, absl::MakeSpan(out, 1));
        ++out;
        carried = 0;
      }
      const size_t whole = left / bpe;
      DecodeFloats(encoding, p, absl::MakeSpan(out, whole));
      out += whole;
      p += whole * bpe;
      left -= whole * bpe;
      std::memcpy(carry, p, left);
      carried = left;
    }
    values = absl::Span<const float>(buffer->get(), expected_elems);
  }
  if (!allow_nonfinite) {
    const int64_t bad = FirstNonFinite(values);
    if (bad >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          ChunkName(meta.tensor(), meta.chunk()), ": element ", bad, " is ",
          values[bad],
          "; NaN and Inf are rejected (start ps-server with "
          "--allow_nonfinite to accept them)"));
    }
  }
  return values;
}

void ChunkOut::SetCopy(int i, const v1::ChunkData& c) {
  char* dst = Set(i, c.tensor(), c.chunk(), c.version(), c.encoding(),
                  c.data().size());
  if (!c.data().empty()) std::memcpy(dst, c.data().data(), c.data().size());
}

void ProtoChunkOut::Resize(int n) {
  out_->Clear();
  out_->Reserve(n);
  for (int i = 0; i < n; ++i) out_->Add();
}

char* ProtoChunkOut::Set(int i, absl::string_view tensor, uint32_t chunk,
                         uint64_t version, v1::Encoding encoding,
                         size_t bytes) {
  v1::ChunkData* c = out_->Mutable(i);
  c->set_tensor(std::string(tensor));
  c->set_chunk(chunk);
  c->set_version(version);
  c->set_encoding(encoding);
  std::string* data = c->mutable_data();
  data->resize(bytes);
  return data->data();
}

}  // namespace pskit
