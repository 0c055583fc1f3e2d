// tests/fuzz/fuzz_wire.cc
//
// libFuzzer target: the wire codec. The first input byte picks one of:
//   0  common/encoding: f32/f16/bf16 EncodeFloats/DecodeFloats on the
//      input's floats and on the input's raw bytes as a payload;
//   1  common/validation DecodeChunk on a ChunkData parsed from the input
//      (the shard's check of every pushed payload);
//   2  client/internal/wire ParseChunks on the input as a shard's answer
//      (Pull/Exchange or PushPull), against sinks the input describes;
//   3  a valid answer built with protobuf from the input's values, cut into
//      slices at input-chosen points, parsed with ParseChunks;
//   4  an OutgoingMessage (the client's PushRequest) built from the input,
//      parsed back with protobuf.
//
// Asserted beyond "no crash" (ASan/UBSan on):
//   - f32 round trips bit for bit; narrowing an already narrowed value
//     gives the same bits (a NaN stays a NaN); the vectorised EncodeFloats /
//     DecodeFloats give exactly the bits of the scalar FloatToHalf /
//     HalfToFloat / FloatToBf16 / Bf16ToFloat;
//   - DecodeChunk's OK answer has exactly the expected elements, equal to a
//     plain decode of the payload, all finite unless non-finite is allowed;
//   - ParseChunks on arbitrary bytes never writes past a sink (ASan) and on
//     OK fills one meta per sink; on a valid answer it returns OK and writes
//     exactly the values (or dest - values for Exchange) with the versions
//     and staleness sent;
//   - protobuf parses an OutgoingMessage into the same PushRequest that
//     protobuf itself would have built.
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "absl/types/span.h"
#include "client/internal/wire.h"
#include "common/encoding.h"
#include "common/validation.h"
#include "google/protobuf/util/message_differencer.h"
#include "pskit/v1/ps.pb.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace pskit {
namespace {

using client_internal::ChunkMeta;
using client_internal::ChunkSink;
using client_internal::OutgoingMessage;
using client_internal::ParseChunks;
using client_internal::SliceTracker;

constexpr v1::Encoding kEncodings[] = {v1::ENCODING_F32, v1::ENCODING_F16,
                                       v1::ENCODING_BF16};

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

uint16_t Narrow(v1::Encoding e, float f) {
  return e == v1::ENCODING_F16 ? FloatToHalf(f) : FloatToBf16(f);
}
float Widen(v1::Encoding e, uint16_t h) {
  return e == v1::ENCODING_F16 ? HalfToFloat(h) : Bf16ToFloat(h);
}

std::vector<float> ConsumeFloats(FuzzedDataProvider* in, size_t max,
                                 size_t min = 0) {
  std::vector<float> v(in->ConsumeIntegralInRange<size_t>(min, max));
  for (float& f : v) {
    const uint32_t b = in->ConsumeIntegral<uint32_t>();
    std::memcpy(&f, &b, 4);
  }
  return v;
}

// Mode 0: the float codecs.
void FuzzCodec(FuzzedDataProvider* in) {
  const std::vector<float> floats = ConsumeFloats(in, 64);
  const std::string raw = in->ConsumeRemainingBytesAsString();
  for (v1::Encoding e : kEncodings) {
    const size_t bpe = BytesPerElement(e);
    std::string encoded;
    EncodeFloats(e, floats, &encoded);
    FUZZ_CHECK(encoded.size() == floats.size() * bpe);
    std::vector<float> decoded(floats.size());
    DecodeFloats(e, encoded.data(), absl::MakeSpan(decoded));
    for (size_t i = 0; i < floats.size(); ++i) {
      if (e == v1::ENCODING_F32) {
        FUZZ_CHECK(Bits(decoded[i]) == Bits(floats[i]));
        continue;
      }
      uint16_t h;
      std::memcpy(&h, encoded.data() + 2 * i, 2);
      // The bulk path (F16C where the CPU has it) agrees with the scalar one.
      FUZZ_CHECK(h == Narrow(e, floats[i]));
      FUZZ_CHECK(Bits(decoded[i]) == Bits(Widen(e, h)));
      FUZZ_CHECK(std::isnan(decoded[i]) == std::isnan(floats[i]));
      // Narrowing a narrowed value is exact.
      if (!std::isnan(decoded[i])) FUZZ_CHECK(Narrow(e, decoded[i]) == h);
    }
    // Any bytes decode; re-encoding gives them back (NaNs stay NaNs).
    const size_t n = raw.size() / bpe;
    std::vector<float> from_raw(n);
    DecodeFloats(e, raw.data(), absl::MakeSpan(from_raw));
    std::string again;
    EncodeFloats(e, from_raw, &again);
    FUZZ_CHECK(again.size() == n * bpe);
    for (size_t i = 0; i < n; ++i) {
      if (std::isnan(from_raw[i])) {
        std::vector<float> back(1);
        DecodeFloats(e, again.data() + i * bpe, absl::MakeSpan(back));
        FUZZ_CHECK(std::isnan(back[0]));
      } else {
        FUZZ_CHECK(std::memcmp(again.data() + i * bpe, raw.data() + i * bpe,
                               bpe) == 0);
      }
    }
  }
}

// Mode 1: the shard's check of a pushed payload.
void FuzzDecodeChunk(FuzzedDataProvider* in) {
  const uint64_t expected = in->ConsumeIntegralInRange<uint64_t>(0, 1024);
  const bool allow_nonfinite = in->ConsumeBool();
  const std::string bytes = in->ConsumeRemainingBytesAsString();
  v1::ChunkData chunk;
  if (!chunk.ParseFromString(bytes)) return;
  std::vector<float> scratch;
  absl::StatusOr<absl::Span<const float>> got =
      DecodeChunk(chunk, expected, allow_nonfinite, &scratch);
  if (!got.ok()) {
    FUZZ_CHECK(got.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(got->size() == expected);
  const size_t bpe = BytesPerElement(chunk.encoding());
  FUZZ_CHECK(bpe > 0 && chunk.data().size() == expected * bpe);
  std::vector<float> plain(expected);
  DecodeFloats(chunk.encoding(), chunk.data().data(), absl::MakeSpan(plain));
  for (size_t i = 0; i < expected; ++i) {
    FUZZ_CHECK(Bits((*got)[i]) == Bits(plain[i]));
    if (!allow_nonfinite) FUZZ_CHECK(std::isfinite((*got)[i]));
  }
}

// Up to 4 slice lengths from the input, read before the message itself.
std::vector<size_t> ConsumeCuts(FuzzedDataProvider* in) {
  std::vector<size_t> cuts(in->ConsumeIntegralInRange<int>(0, 4));
  for (size_t& c : cuts) c = 1 + in->ConsumeIntegral<uint16_t>();
  return cuts;
}

// A ByteBuffer of `bytes` cut after each of `cuts` bytes (as far as they
// go), so parsing must cross slice boundaries where the input says.
grpc::ByteBuffer Slices(const std::string& bytes,
                        const std::vector<size_t>& cuts) {
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  for (size_t n : cuts) {
    if (at >= bytes.size()) break;
    n = std::min(n, bytes.size() - at);
    slices.emplace_back(bytes.substr(at, n));
    at += n;
  }
  if (at < bytes.size() || slices.empty()) {
    slices.emplace_back(bytes.substr(at));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

// Mode 2: arbitrary bytes as a shard's answer.
void FuzzParseAnswer(FuzzedDataProvider* in) {
  const bool with_acks = in->ConsumeBool();
  const size_t n = in->ConsumeIntegralInRange<size_t>(0, 4);
  std::vector<std::string> names(n);
  std::vector<std::vector<float>> dests(n);
  std::vector<ChunkSink> sinks(n);
  for (size_t i = 0; i < n; ++i) {
    names[i] = in->ConsumeRandomLengthString(8);
    sinks[i].tensor = names[i];
    sinks[i].chunk = in->ConsumeIntegralInRange<uint32_t>(0, 3);
    sinks[i].length = in->ConsumeIntegralInRange<uint64_t>(0, 32);
    sinks[i].subtract = in->ConsumeBool();
    // Exactly `length` floats, so ASan catches a write past the sink.
    dests[i].resize(sinks[i].length);
    sinks[i].dest = dests[i].data();
  }
  const std::vector<size_t> cuts = ConsumeCuts(in);
  const std::string bytes = in->ConsumeRemainingBytesAsString();
  grpc::ByteBuffer buffer = Slices(bytes, cuts);
  std::vector<ChunkMeta> meta;
  absl::Status s = ParseChunks(&buffer, with_acks, sinks, &meta);
  FUZZ_CHECK(meta.size() == n);
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == absl::StatusCode::kInternal ||
               s.code() == absl::StatusCode::kFailedPrecondition);
  }
}

// Mode 3: a valid answer must parse to exactly what was sent.
void FuzzParseValidAnswer(FuzzedDataProvider* in) {
  const bool with_acks = in->ConsumeBool();
  const size_t n = in->ConsumeIntegralInRange<size_t>(0, 4);
  v1::PullResponse pull;         // chunks in field 1
  v1::PushPullResponse pushpull;  // acks in 1, chunks in 2
  std::vector<std::string> names(n);
  std::vector<std::vector<float>> sent(n), dests(n), before(n);
  std::vector<ChunkSink> sinks(n);
  std::vector<ChunkMeta> want(n);
  for (size_t i = 0; i < n; ++i) {
    names[i] = in->ConsumeRandomLengthString(8);
    const v1::Encoding e = in->PickValueInArray(kEncodings);
    // A chunk has at least one element (proto3 leaves an empty payload
    // out, and ParseChunks rightly refuses a chunk without values).
    sent[i] = ConsumeFloats(in, 16, 1);
    v1::ChunkData c;
    c.set_tensor(names[i]);
    c.set_chunk(in->ConsumeIntegral<uint32_t>());
    c.set_version(in->ConsumeIntegral<uint64_t>());
    c.set_encoding(e);
    EncodeFloats(e, sent[i], c.mutable_data());
    want[i].version = c.version();
    sinks[i].tensor = names[i];
    sinks[i].chunk = c.chunk();
    sinks[i].length = sent[i].size();
    sinks[i].subtract = in->ConsumeBool();
    before[i] = ConsumeFloats(in, 16);
    before[i].resize(sent[i].size(), 1.5f);
    dests[i] = before[i];
    sinks[i].dest = dests[i].data();
    // What the sink must hold: the decoded values (or dest minus them).
    std::vector<float> decoded(sent[i].size());
    DecodeFloats(e, c.data().data(), absl::MakeSpan(decoded));
    sent[i] = decoded;
    if (with_acks) {
      v1::ChunkAck* ack = pushpull.add_acks();
      ack->set_version(c.version());
      ack->set_staleness(in->ConsumeIntegral<uint64_t>());
      want[i].staleness = ack->staleness();
      *pushpull.add_chunks() = c;
    } else {
      *pull.add_chunks() = c;
    }
  }
  const std::string bytes =
      with_acks ? pushpull.SerializeAsString() : pull.SerializeAsString();
  grpc::ByteBuffer buffer = Slices(bytes, ConsumeCuts(in));
  std::vector<ChunkMeta> meta;
  absl::Status s = ParseChunks(&buffer, with_acks, sinks, &meta);
  FUZZ_CHECK(s.ok());
  for (size_t i = 0; i < n; ++i) {
    FUZZ_CHECK(meta[i].version == want[i].version);
    FUZZ_CHECK(meta[i].staleness == want[i].staleness);
    for (size_t k = 0; k < sent[i].size(); ++k) {
      const float expect =
          sinks[i].subtract ? before[i][k] - sent[i][k] : sent[i][k];
      FUZZ_CHECK(Bits(dests[i][k]) == Bits(expect) ||
                 (std::isnan(dests[i][k]) && std::isnan(expect)));
    }
  }
}

// Names as the client sends them: it has checked them (ValidateName), and
// protobuf refuses a proto3 string that is not UTF-8, so keep them ASCII.
std::string AsciiName(FuzzedDataProvider* in, size_t max) {
  std::string s = in->ConsumeRandomLengthString(max);
  for (char& c : s) c = static_cast<char>(c & 0x7f);
  return s;
}

// Mode 4: the client's outgoing PushRequest against protobuf's own.
void FuzzOutgoing(FuzzedDataProvider* in) {
  v1::PushRequest header;
  header.set_namespace_(AsciiName(in, 16));
  header.mutable_layout()->set_num_shards(in->ConsumeIntegral<uint32_t>());
  header.mutable_layout()->set_chunk_elems(in->ConsumeIntegral<uint32_t>());
  header.set_worker_id(in->ConsumeIntegral<uint64_t>());
  v1::PushRequest want = header;
  const size_t n = in->ConsumeIntegralInRange<size_t>(0, 4);
  std::vector<std::string> payloads(n);
  SliceTracker tracker;
  {
    OutgoingMessage msg;
    msg.AppendMessageFields(header);
    for (size_t i = 0; i < n; ++i) {
      v1::ChunkData meta;
      meta.set_tensor(AsciiName(in, 8));
      meta.set_chunk(in->ConsumeIntegral<uint32_t>());
      meta.set_version(in->ConsumeIntegral<uint64_t>());
      meta.set_encoding(in->PickValueInArray(kEncodings));
      payloads[i] = in->ConsumeRandomLengthString(64);
      msg.AppendChunk(4, meta, payloads[i].data(), payloads[i].size(),
                      &tracker);
      v1::ChunkData* g = want.add_grads();
      *g = meta;
      g->set_data(payloads[i]);
    }
    grpc::ByteBuffer buffer = msg.Finish();
    std::vector<grpc::Slice> slices;
    FUZZ_CHECK(buffer.Dump(&slices).ok());
    std::string bytes;
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    v1::PushRequest got;
    FUZZ_CHECK(got.ParseFromString(bytes));
    FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(got, want));
  }
  tracker.WaitForNone();
}

// Seeds: floats of every kind, a pushed chunk, real shard answers.
fuzz::Seeds MakeSeeds() {
  fuzz::Seeds seeds;
  const std::vector<float> floats = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f,
                                     65520.0f, 1e-8f, 3.0e38f, INFINITY,
                                     -INFINITY, NAN, 5.96e-8f};
  {
    fuzz::FuzzInputWriter w;
    w.Small(0);
    w.Small(static_cast<uint8_t>(floats.size()));
    for (float f : floats) w.Int<uint32_t>(Bits(f));
    w.Bytes(std::string("\x00\x3c\x00\x7c\x01\x7e\xff\xff\x80\x3f", 10));
    seeds.emplace_back("codec", w.Finish());
  }
  v1::ChunkData chunk;
  chunk.set_tensor("fc1/w");
  chunk.set_chunk(1);
  chunk.set_version(7);
  chunk.set_encoding(v1::ENCODING_F16);
  EncodeFloats(v1::ENCODING_F16, std::vector<float>(6, 0.5f),
               chunk.mutable_data());
  {
    fuzz::FuzzInputWriter w;
    w.Small(1);
    w.Int<uint16_t>(6);  // elements, read in range [0, 1024]
    w.Small(0);          // allow_nonfinite: false
    w.Bytes(chunk.SerializeAsString());
    seeds.emplace_back("decode-chunk", w.Finish());
  }
  for (bool with_acks : {false, true}) {
    v1::PullResponse pull;
    v1::PushPullResponse pushpull;
    fuzz::FuzzInputWriter w;
    w.Small(2);
    w.Small(with_acks);
    w.Small(1);  // one sink
    w.String(chunk.tensor());
    w.Small(static_cast<uint8_t>(chunk.chunk()));
    w.Small(6);  // elements
    w.Small(0);  // not subtract
    w.Small(1);  // cut in two slices: after 3 bytes
    w.Int<uint16_t>(2);
    if (with_acks) {
      pushpull.add_acks()->set_version(7);
      *pushpull.add_chunks() = chunk;
      w.Bytes(pushpull.SerializeAsString());
    } else {
      *pull.add_chunks() = chunk;
      w.Bytes(pull.SerializeAsString());
    }
    seeds.emplace_back(with_acks ? "answer-pushpull" : "answer-pull",
                       w.Finish());
  }
  {
    fuzz::FuzzInputWriter w;
    w.Small(3);
    w.Small(1);  // with acks
    w.Small(2);  // two chunks
    for (int i = 0; i < 2; ++i) {
      w.String(i == 0 ? "w" : "b");
      w.Small(static_cast<uint8_t>(i));  // encoding f32, f16
      w.Small(2);  // 1 + 2 = 3 floats
      for (int k = 0; k < 3; ++k) w.Int<uint32_t>(Bits(0.25f * k));
      w.Int<uint32_t>(i);
      w.Int<uint64_t>(100 + i);
      w.Small(i);  // subtract for the second
      w.Small(0);
      w.Int<uint64_t>(2);
    }
    seeds.emplace_back("answer-valid", w.Finish());
  }
  {
    fuzz::FuzzInputWriter w;
    w.Small(4);
    w.String("job");
    w.Int<uint32_t>(2);
    w.Int<uint32_t>(262144);
    w.Int<uint64_t>(42);
    w.Small(1);
    w.String("fc1/b");
    w.Int<uint32_t>(0);
    w.Int<uint64_t>(3);
    w.Small(2);  // bf16
    w.String(std::string(8, '\x3f'));
    seeds.emplace_back("outgoing", w.Finish());
  }
  return seeds;
}

}  // namespace
}  // namespace pskit

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  pskit::fuzz::QuietLogs();
  pskit::fuzz::WriteSeedsIfAsked(pskit::MakeSeeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  switch (in.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: pskit::FuzzCodec(&in); break;
    case 1: pskit::FuzzDecodeChunk(&in); break;
    case 2: pskit::FuzzParseAnswer(&in); break;
    case 3: pskit::FuzzParseValidAnswer(&in); break;
    case 4: pskit::FuzzOutgoing(&in); break;
  }
  return 0;
}
