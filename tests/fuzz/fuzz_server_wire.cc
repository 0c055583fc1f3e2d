// tests/fuzz/fuzz_server_wire.cc
//
// libFuzzer target: the shard's codec (server/wire.h). The first input
// byte picks one of:
//   0  ParseRequest on the input's bytes as a PushRequest or an
//      ExchangeRequest, cut into slices at input-chosen points;
//   1  a reply built with WireChunkOut (chunks and acks from the input),
//      read back with protobuf.
//
// Asserted beyond "no crash" (ASan/UBSan on):
//   - ParseRequest accepts exactly the bytes protobuf's parser accepts, and
//     then gives protobuf's message (the same bytes when serialized) once
//     the payloads are put back; the
//     payloads it keeps as views lie inside the slices it references;
//   - protobuf reads a WireChunkOut reply as the response protobuf itself
//     would have built (acks, then every chunk with its payload).
//
// Seeds: PSKIT_FUZZ_WRITE_SEEDS=DIR writes a valid PushRequest and
// ExchangeRequest and a reply into DIR (tests/fuzz/corpus/
// fuzz_server_wire).
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "google/protobuf/util/message_differencer.h"
#include "pskit/v1/ps.pb.h"
#include "server/wire.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace pskit {
namespace {

using google::protobuf::util::MessageDifferencer;

// `bytes` cut into slices of input-chosen sizes (0..255 bytes each).
grpc::ByteBuffer Cut(const std::string& bytes, FuzzedDataProvider* in) {
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  while (at < bytes.size()) {
    size_t n = in->ConsumeIntegral<uint8_t>();
    if (in->remaining_bytes() == 0) n = bytes.size() - at;
    n = std::min(n, bytes.size() - at);
    slices.emplace_back(bytes.data() + at, n);
    at += n;
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

template <typename Req>
void CheckParse(const std::string& bytes, FuzzedDataProvider* in) {
  Req want;
  const bool want_ok = want.ParseFromString(bytes);
  const grpc::ByteBuffer buffer = Cut(bytes, in);
  Req have;
  std::vector<grpc::Slice> keep;
  std::vector<PayloadView> payloads;
  const bool have_ok = ParseRequest(buffer, &have, &keep, &payloads);
  FUZZ_CHECK(have_ok == want_ok);
  if (!have_ok) return;
  auto* chunks = wire_internal::MutablePayloadChunks(&have);
  FUZZ_CHECK(static_cast<size_t>(chunks->size()) == payloads.size());
  for (int i = 0; i < chunks->size(); ++i) {
    if (!keep.empty()) {
      FUZZ_CHECK((*chunks)[i].data().empty());
      for (absl::string_view s : payloads[i].segments) {
        bool inside = false;
        for (const grpc::Slice& sl : keep) {
          const char* b = reinterpret_cast<const char*>(sl.begin());
          inside |= s.data() >= b && s.data() + s.size() <= b + sl.size();
        }
        FUZZ_CHECK(inside);
      }
    }
    (*chunks)[i].set_data(payloads[i].ToString());
  }
  // Compared as bytes: a NaN (alpha) equals itself there, not in
  // MessageDifferencer.
  FUZZ_CHECK(have.SerializeAsString() == want.SerializeAsString());
}

void FuzzParse(FuzzedDataProvider* in) {
  const bool exchange = in->ConsumeBool();
  const std::string bytes =
      in->ConsumeBytesAsString(in->ConsumeIntegral<uint16_t>());
  if (exchange) {
    CheckParse<v1::ExchangeRequest>(bytes, in);
  } else {
    CheckParse<v1::PushRequest>(bytes, in);
  }
}

void FuzzReply(FuzzedDataProvider* in) {
  const int n = in->ConsumeIntegralInRange<int>(0, 8);
  v1::PushPullResponse want;
  v1::PushPullResponse rest;
  for (int i = 0; i < n; ++i) {
    v1::ChunkAck* a = rest.add_acks();
    a->set_version(in->ConsumeIntegral<uint64_t>());
    a->set_staleness(in->ConsumeIntegral<uint8_t>());
  }
  *want.mutable_acks() = rest.acks();
  WireChunkOut out;
  out.Resize(n);
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  // Set in an input-chosen order, as Exchange does.
  for (int i = n - 1; i > 0; --i) {
    std::swap(order[i], order[in->ConsumeIntegralInRange<int>(0, i)]);
  }
  for (int i = 0; i < n; ++i) want.add_chunks();
  for (int i : order) {
    v1::ChunkData* c = want.mutable_chunks(i);
    c->set_tensor(in->ConsumeRandomLengthString(40));
    c->set_chunk(in->ConsumeIntegral<uint32_t>());
    c->set_version(in->ConsumeIntegral<uint64_t>());
    c->set_encoding(static_cast<v1::Encoding>(in->ConsumeIntegralInRange(0, 3)));
    c->set_data(in->ConsumeRandomLengthString(300));
    char* dst = out.Set(i, c->tensor(), c->chunk(), c->version(),
                        c->encoding(), c->data().size());
    if (!c->data().empty()) std::memcpy(dst, c->data().data(), c->data().size());
  }
  std::vector<grpc::Slice> slices;
  FUZZ_CHECK(out.AppendAnswer(rest, 2).Dump(&slices).ok());
  std::string flat;
  for (const grpc::Slice& s : slices) {
    flat.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  v1::PushPullResponse got;
  if (!got.ParseFromString(flat)) {
    // A tensor name that is not UTF-8 fails protobuf's own check as well.
    FUZZ_CHECK(!v1::PushPullResponse().ParseFromString(
        want.SerializeAsString()));
    return;
  }
  FUZZ_CHECK(MessageDifferencer::Equals(got, want));
}

fuzz::Seeds MakeSeeds() {
  fuzz::Seeds seeds;
  v1::PushRequest push;
  push.set_namespace_("job");
  push.mutable_layout()->set_num_shards(2);
  push.set_worker_id(7);
  push.set_sequence(3);
  for (int i = 0; i < 2; ++i) {
    v1::ChunkData* g = push.add_grads();
    g->set_tensor("w");
    g->set_chunk(i);
    g->set_version(5);
    g->set_encoding(v1::ENCODING_F32);
    g->set_data(std::string(16, static_cast<char>(i)));
  }
  v1::ExchangeRequest ex;
  ex.set_namespace_("job");
  ex.set_alpha(0.5f);
  *ex.add_params() = push.grads(0);
  for (const auto& [name, bytes, exchange] :
       {std::tuple<std::string, std::string, bool>{
            "push", push.SerializeAsString(), false},
        {"exchange", ex.SerializeAsString(), true}}) {
    fuzz::FuzzInputWriter w;
    w.Small(0);
    w.Int<uint8_t>(exchange ? 1 : 0);
    w.Int<uint16_t>(bytes.size());
    w.Bytes(bytes);
    for (int k = 0; k < 4; ++k) w.Int<uint8_t>(13);
    seeds.emplace_back(name, w.Finish());
  }
  fuzz::FuzzInputWriter w;
  w.Small(1);
  w.Small(2);
  seeds.emplace_back("reply", w.Finish());
  return seeds;
}

}  // namespace
}  // namespace pskit

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pskit::fuzz::QuietLogs();
  pskit::fuzz::WriteSeedsIfAsked(pskit::MakeSeeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  switch (in.ConsumeIntegralInRange<int>(0, 1)) {
    case 0: pskit::FuzzParse(&in); break;
    case 1: pskit::FuzzReply(&in); break;
  }
  return 0;
}
