// server/wire.cc
//
// The shard's request walk and answer assembly (server/wire.h).
#include "server/wire.h"

#include <grpc/slice.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace pskit {
namespace {

constexpr int kWireVarint = 0, kWire64 = 1, kWireDelimited = 2, kWire32 = 5;
constexpr int kDataField = 5;  // ChunkData.data

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// A cursor over a message cut into slices.
class SliceReader {
 public:
  explicit SliceReader(const std::vector<grpc::Slice>& slices) {
    segs_.reserve(slices.size());
    for (const grpc::Slice& s : slices) {
      if (s.size() == 0) continue;
      segs_.emplace_back(reinterpret_cast<const char*>(s.begin()), s.size());
      starts_.push_back(size_);
      size_ += s.size();
    }
  }

  size_t pos() const { return pos_; }
  size_t size() const { return size_; }

  // A varint of at most `max_bytes` bytes (the last one without its
  // continuation bit), or false.
  bool ReadVarint(uint64_t* v, int max_bytes) {
    uint64_t r = 0;
    for (int i = 0; i < max_bytes; ++i) {
      if (pos_ >= size_) return false;
      const uint8_t b = static_cast<uint8_t>(segs_[seg_][off_]);
      Advance(1);
      r |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) {
        *v = r;
        return true;
      }
    }
    return false;
  }

  // Skips `n` bytes; false past the end.
  bool Skip(size_t n) {
    if (n > size_ - pos_) return false;
    Advance(n);
    return true;
  }

  // The next `n` bytes as segments (borrowed); false past the end.
  bool View(size_t n, PayloadView* out) {
    if (n > size_ - pos_) return false;
    while (n > 0) {
      const size_t here = std::min(n, segs_[seg_].size() - off_);
      out->Append(segs_[seg_].substr(off_, here));
      Advance(here);
      n -= here;
    }
    return true;
  }

  // Appends bytes [from, to) (already read) to `out`.
  void CopyRange(size_t from, size_t to, std::string* out) const {
    if (from >= to) return;
    size_t i = std::upper_bound(starts_.begin(), starts_.end(), from) -
               starts_.begin() - 1;
    size_t off = from - starts_[i];
    while (from < to) {
      const size_t here = std::min(to - from, segs_[i].size() - off);
      out->append(segs_[i].data() + off, here);
      from += here;
      ++i;
      off = 0;
    }
  }

 private:
  void Advance(size_t n) {
    pos_ += n;
    while (n > 0) {
      const size_t here = std::min(n, segs_[seg_].size() - off_);
      off_ += here;
      n -= here;
      if (off_ == segs_[seg_].size() && seg_ + 1 < segs_.size()) {
        ++seg_;
        off_ = 0;
      }
    }
  }

  std::vector<absl::string_view> segs_;
  std::vector<size_t> starts_;
  size_t size_ = 0;
  size_t pos_ = 0;
  size_t seg_ = 0;
  size_t off_ = 0;
};

// Reads one field's tag; false for what is left to protobuf (a tag longer
// than 5 bytes or past 32 bits, field number 0, a group or a reserved wire
// type).
bool ReadTag(SliceReader* in, uint32_t* field, int* wire_type) {
  uint64_t tag;
  if (!in->ReadVarint(&tag, 5) || tag > UINT32_MAX) return false;
  *field = static_cast<uint32_t>(tag >> 3);
  *wire_type = static_cast<int>(tag & 7);
  if (*field == 0) return false;
  return *wire_type == kWireVarint || *wire_type == kWire64 ||
         *wire_type == kWireDelimited || *wire_type == kWire32;
}

// Reads a length-delimited field's length, which must fit before `end`.
bool ReadLength(SliceReader* in, size_t end, size_t* len) {
  uint64_t n;
  if (!in->ReadVarint(&n, 5) || n > INT32_MAX) return false;
  if (n > end - in->pos()) return false;
  *len = static_cast<size_t>(n);
  return true;
}

// Skips the value of a field of `wire_type` (not length-delimited).
bool SkipScalar(SliceReader* in, int wire_type, size_t end) {
  switch (wire_type) {
    case kWireVarint: {
      uint64_t v;
      return in->ReadVarint(&v, 10) && in->pos() <= end;
    }
    case kWire64:
      return end - in->pos() >= 8 && in->Skip(8);
    case kWire32:
      return end - in->pos() >= 4 && in->Skip(4);
    default:
      return false;
  }
}

// One ChunkData of `len` bytes: its fields but `data` go to `fields`,
// `data` (the last one, as protobuf keeps) to `payload`.
bool SplitChunk(SliceReader* in, size_t len, std::string* fields,
                PayloadView* payload) {
  const size_t end = in->pos() + len;
  while (in->pos() < end) {
    const size_t start = in->pos();
    uint32_t field;
    int wire_type;
    if (!ReadTag(in, &field, &wire_type)) return false;
    if (wire_type == kWireDelimited) {
      size_t n;
      if (!ReadLength(in, end, &n)) return false;
      if (field == kDataField) {
        payload->Clear();  // a second `data` replaces the first
        if (!in->View(n, payload)) return false;
        continue;
      }
      if (!in->Skip(n)) return false;
    } else if (!SkipScalar(in, wire_type, end)) {
      return false;
    }
    in->CopyRange(start, in->pos(), fields);
  }
  return in->pos() == end;
}

}  // namespace

namespace wire_internal {

bool SplitPayloads(const std::vector<grpc::Slice>& slices, int field,
                   std::string* header, std::vector<PayloadView>* payloads) {
  SliceReader in(slices);
  const size_t end = in.size();
  std::string fields;
  while (in.pos() < end) {
    const size_t start = in.pos();
    uint32_t f;
    int wire_type;
    if (!ReadTag(&in, &f, &wire_type)) return false;
    if (wire_type == kWireDelimited) {
      size_t n;
      if (!ReadLength(&in, end, &n)) return false;
      if (static_cast<int>(f) == field) {
        fields.clear();
        PayloadView payload;
        if (!SplitChunk(&in, n, &fields, &payload)) return false;
        PutVarint((static_cast<uint64_t>(f) << 3) | kWireDelimited, header);
        PutVarint(fields.size(), header);
        header->append(fields);
        payloads->push_back(std::move(payload));
        continue;
      }
      if (!in.Skip(n)) return false;
    } else if (!SkipScalar(&in, wire_type, end)) {
      return false;
    }
    in.CopyRange(start, in.pos(), header);
  }
  return true;
}

}  // namespace wire_internal

void WireChunkOut::Resize(int n) {
  metas_.assign(n, v1::ChunkData());
  payloads_.assign(n, grpc::Slice());
}

char* WireChunkOut::Set(int i, absl::string_view tensor, uint32_t chunk,
                        uint64_t version, v1::Encoding encoding,
                        size_t bytes) {
  v1::ChunkData& m = metas_[i];
  m.set_tensor(std::string(tensor));
  m.set_chunk(chunk);
  m.set_version(version);
  m.set_encoding(encoding);
  // Stored first, then written through: a small slice keeps its bytes
  // inside the grpc::Slice object itself.
  payloads_[i] = grpc::Slice(grpc_slice_malloc(bytes), grpc::Slice::STEAL_REF);
  return const_cast<char*>(
      reinterpret_cast<const char*>(payloads_[i].begin()));
}

grpc::ByteBuffer WireChunkOut::AppendAnswer(
    const google::protobuf::MessageLite& rest, int field) const {
  std::vector<grpc::Slice> slices;
  slices.reserve(2 * metas_.size() + 1);
  std::string pending;
  rest.AppendToString(&pending);
  for (size_t i = 0; i < metas_.size(); ++i) {
    const size_t bytes = payloads_[i].size();
    const size_t head = metas_[i].ByteSizeLong();
    // ChunkData.data as protobuf writes it: omitted when empty.
    const size_t data_field = bytes == 0 ? 0 : 1 + VarintSize(bytes) + bytes;
    PutVarint((static_cast<uint64_t>(field) << 3) | kWireDelimited, &pending);
    PutVarint(head + data_field, &pending);
    metas_[i].AppendToString(&pending);
    if (bytes == 0) continue;
    PutVarint((kDataField << 3) | kWireDelimited, &pending);
    PutVarint(bytes, &pending);
    slices.emplace_back(pending);
    pending.clear();
    slices.push_back(payloads_[i]);
  }
  if (!pending.empty()) slices.emplace_back(pending);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace pskit
