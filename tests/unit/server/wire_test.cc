// The shard's codec (server/wire.h, server/chunk_payload.h): ParseRequest
// against protobuf's own parser on valid messages written with fields in
// random order, unknown fields and repeated payloads, cut into random
// slices, and on every truncation of them; payloads seen where they
// arrived; DecodePayload across segment boundaries; ChunkStore fed
// segmented payloads and answering into WireChunkOut, whose reply protobuf
// and the client's parser (client/internal/wire.h) both read back.
#include "server/wire.h"

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "client/internal/wire.h"
#include "common/encoding.h"
#include "common/layout.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "server/chunk_store.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using google::protobuf::util::MessageDifferencer;

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}

std::string Delimited(int field, const std::string& body) {
  return Varint((static_cast<uint64_t>(field) << 3) | 2) + Varint(body.size()) +
         body;
}

// An unknown field of a random wire type (field numbers 50..59).
std::string Unknown(std::mt19937* rng) {
  const int field = 50 + static_cast<int>((*rng)() % 10);
  switch ((*rng)() % 4) {
    case 0:
      return Varint(static_cast<uint64_t>(field) << 3) + Varint((*rng)());
    case 1:
      return Varint((static_cast<uint64_t>(field) << 3) | 1) +
             std::string(8, 'x');
    case 2:
      return Varint((static_cast<uint64_t>(field) << 3) | 5) +
             std::string(4, 'y');
    default:
      return Delimited(field, std::string((*rng)() % 20, 'z'));
  }
}

// A ChunkData written field by field in random order, with unknown fields
// and sometimes an earlier `data` that the later one replaces.
std::string ChunkBytes(const v1::ChunkData& c, std::mt19937* rng) {
  std::vector<std::string> fields;
  v1::ChunkData one;
  one.set_tensor(c.tensor());
  fields.push_back(one.SerializeAsString());
  one.Clear();
  one.set_chunk(c.chunk());
  fields.push_back(one.SerializeAsString());
  one.Clear();
  one.set_version(c.version());
  fields.push_back(one.SerializeAsString());
  one.Clear();
  one.set_encoding(c.encoding());
  fields.push_back(one.SerializeAsString());
  for (int k = (*rng)() % 3; k > 0; --k) fields.push_back(Unknown(rng));
  std::shuffle(fields.begin(), fields.end(), *rng);
  std::string out;
  for (const std::string& f : fields) out += f;
  const std::string data = Delimited(5, c.data());
  if ((*rng)() % 4 == 0) {
    // An earlier payload, replaced by the last one (protobuf's rule).
    out.insert(0, Delimited(5, "stale bytes"));
  }
  out.insert(((*rng)() % 2 == 0) ? 0 : out.size(), data);
  return out;
}

v1::ChunkData RandomChunk(int i, std::mt19937* rng) {
  v1::ChunkData c;
  c.set_tensor("t" + std::to_string(i));
  c.set_chunk((*rng)() % 100);
  c.set_version((*rng)() % 1000);
  c.set_encoding(v1::ENCODING_F32);
  std::string data((*rng)() % 300, '\0');
  for (char& ch : data) ch = static_cast<char>((*rng)());
  c.set_data(data);
  return c;
}

// A PushRequest's bytes with its fields in random order.
std::string PushBytes(const v1::PushRequest& req, std::mt19937* rng) {
  std::vector<std::string> fields;
  v1::PushRequest one;
  one.set_namespace_(req.namespace_());
  fields.push_back(one.SerializeAsString());
  one.Clear();
  *one.mutable_layout() = req.layout();
  fields.push_back(one.SerializeAsString());
  one.Clear();
  one.set_worker_id(req.worker_id());
  fields.push_back(one.SerializeAsString());
  one.Clear();
  one.set_return_encoding(req.return_encoding());
  one.set_sequence(req.sequence());
  fields.push_back(one.SerializeAsString());
  for (int k = (*rng)() % 3; k > 0; --k) fields.push_back(Unknown(rng));
  std::shuffle(fields.begin(), fields.end(), *rng);
  // The grads keep their order among themselves, anywhere between.
  std::string out;
  size_t f = 0;
  for (const v1::ChunkData& g : req.grads()) {
    while (f < fields.size() && (*rng)() % 2 == 0) out += fields[f++];
    out += Delimited(4, ChunkBytes(g, rng));
  }
  while (f < fields.size()) out += fields[f++];
  return out;
}

// `bytes` as a ByteBuffer cut at random points (some slices empty).
grpc::ByteBuffer Cut(const std::string& bytes, std::mt19937* rng) {
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  while (at < bytes.size()) {
    const size_t n = std::min<size_t>(bytes.size() - at, (*rng)() % 40);
    slices.emplace_back(bytes.data() + at, n);
    at += n;
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

// The request with its payloads put back, for comparison with protobuf's.
template <typename Req>
Req WithPayloads(Req req, const std::vector<PayloadView>& payloads) {
  auto* chunks = wire_internal::MutablePayloadChunks(&req);
  EXPECT_EQ(static_cast<size_t>(chunks->size()), payloads.size());
  for (int i = 0; i < chunks->size(); ++i) {
    (*chunks)[i].set_data(payloads[i].ToString());
  }
  return req;
}

TEST(ParseRequest, AgreesWithProtobufOnShuffledMessagesInRandomSlices) {
  std::mt19937 rng(15);
  for (int round = 0; round < 300; ++round) {
    v1::PushRequest req;
    req.set_namespace_("job");
    req.mutable_layout()->set_num_shards(1 + rng() % 4);
    req.set_worker_id(rng() % 3);
    req.set_return_encoding(v1::ENCODING_F16);
    req.set_sequence(rng() % 5);
    for (int i = rng() % 5; i > 0; --i) *req.add_grads() = RandomChunk(i, &rng);
    const std::string bytes = PushBytes(req, &rng);
    v1::PushRequest expected;
    ASSERT_TRUE(expected.ParseFromString(bytes));
    const grpc::ByteBuffer buffer = Cut(bytes, &rng);

    v1::PushRequest got;
    std::vector<grpc::Slice> keep;
    std::vector<PayloadView> payloads;
    ASSERT_TRUE(ParseRequest(buffer, &got, &keep, &payloads));
    // The walk itself handled it (no fallback): the payloads point into
    // the received slices and the message holds none.
    ASSERT_FALSE(keep.empty());
    for (const v1::ChunkData& g : got.grads()) EXPECT_TRUE(g.data().empty());
    for (const PayloadView& p : payloads) {
      for (absl::string_view s : p.segments) {
        bool inside = false;
        for (const grpc::Slice& sl : keep) {
          const char* b = reinterpret_cast<const char*>(sl.begin());
          inside |= s.data() >= b && s.data() + s.size() <= b + sl.size();
        }
        EXPECT_TRUE(inside);
      }
    }
    EXPECT_TRUE(MessageDifferencer::Equals(WithPayloads(got, payloads),
                                           expected))
        << "round " << round;

    // Every truncation: accepted exactly when protobuf accepts it, as the
    // same message.
    for (size_t cut = 0; cut < bytes.size(); cut += 1 + rng() % 7) {
      const std::string part = bytes.substr(0, cut);
      v1::PushRequest want;
      const bool want_ok = want.ParseFromString(part);
      v1::PushRequest have;
      const bool have_ok =
          ParseRequest(Cut(part, &rng), &have, &keep, &payloads);
      ASSERT_EQ(have_ok, want_ok) << "round " << round << " cut " << cut;
      if (have_ok) {
        EXPECT_TRUE(
            MessageDifferencer::Equals(WithPayloads(have, payloads), want));
      }
    }
  }
}

TEST(ParseRequest, ExchangeRequestPayloads) {
  v1::ExchangeRequest req;
  req.set_namespace_("job");
  req.set_alpha(0.5f);
  std::mt19937 rng(3);
  *req.add_params() = RandomChunk(0, &rng);
  *req.add_params() = RandomChunk(1, &rng);
  const std::string bytes = req.SerializeAsString();
  v1::ExchangeRequest got;
  std::vector<grpc::Slice> keep;
  std::vector<PayloadView> payloads;
  ASSERT_TRUE(ParseRequest(Cut(bytes, &rng), &got, &keep, &payloads));
  ASSERT_EQ(payloads.size(), 2u);
  EXPECT_EQ(payloads[1].ToString(), req.params(1).data());
  EXPECT_TRUE(got.params(1).data().empty());
  EXPECT_TRUE(MessageDifferencer::Equals(WithPayloads(got, payloads), req));
}

TEST(ParseRequest, MalformedIsRefusedAsProtobufRefusesIt) {
  const std::vector<std::string> bad = {
      std::string("\x0a\x7f" "abc", 5),            // length past the end
      std::string("\x22\x05\x2a\x09" "ab", 6),     // payload past its chunk
      std::string("\x22\x03\x2a\x01", 4),          // chunk past the end
      std::string("\x18\xff\xff", 3),              // truncated varint
      std::string("\x18") + std::string(11, '\xff') + "\x01",  // over-long
      std::string("\x00\x01", 2),                  // field 0
      std::string("\x22\x02\x0a\x80", 4),          // bad name length
      std::string("\x0a\x02\xff\xfe", 4),          // namespace not UTF-8
      std::string("\x23\x24", 2),                  // a group: protobuf's call
      std::string("\x27", 1),                      // reserved wire type
  };
  for (const std::string& b : bad) {
    v1::PushRequest want, have;
    std::vector<grpc::Slice> keep;
    std::vector<PayloadView> payloads;
    grpc::Slice slice(b);
    const grpc::ByteBuffer buffer(&slice, 1);
    EXPECT_EQ(ParseRequest(buffer, &have, &keep, &payloads),
              want.ParseFromString(b))
        << absl::CEscape(b);
  }
}

TEST(DecodePayload, ElementsCutBySegmentBoundaries) {
  std::vector<float> values = {1.5f, -2.25f, 3.0f, 1e-3f, 7.0f};
  for (v1::Encoding e :
       {v1::ENCODING_F32, v1::ENCODING_F16, v1::ENCODING_BF16}) {
    std::string bytes;
    EncodeFloats(e, values, &bytes);
    std::vector<float> want(values.size());
    DecodeFloats(e, bytes.data(), absl::MakeSpan(want));
    for (size_t step = 1; step <= bytes.size(); ++step) {
      PayloadView p;
      for (size_t at = 0; at < bytes.size(); at += step) {
        p.Append(absl::string_view(bytes).substr(at, step));
      }
      v1::ChunkData meta;
      meta.set_tensor("w");
      meta.set_encoding(e);
      std::unique_ptr<float[]> buffer;
      ASSERT_OK_AND_ASSIGN(absl::Span<const float> got,
                           DecodePayload(meta, p, values.size(), false, &buffer));
      EXPECT_THAT(std::vector<float>(got.begin(), got.end()),
                  ::testing::ElementsAreArray(want))
          << EncodingName(e) << " step " << step;
    }
  }
}

TEST(DecodePayload, WrongLengthAndNonFiniteNameTheChunk) {
  v1::ChunkData meta;
  meta.set_tensor("w");
  meta.set_chunk(2);
  meta.set_encoding(v1::ENCODING_F32);
  std::unique_ptr<float[]> buffer;
  const std::string three(12, '\0');
  absl::Status s =
      DecodePayload(meta, PayloadOf(three), 4, false, &buffer).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("payload has 12 bytes"));
  std::string inf;
  EncodeFloats(v1::ENCODING_F32,
               std::vector<float>{1.0f, std::numeric_limits<float>::infinity()},
               &inf);
  PayloadView split;
  split.Append(absl::string_view(inf).substr(0, 5));
  split.Append(absl::string_view(inf).substr(5));
  s = DecodePayload(meta, split, 2, false, &buffer).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("element 1 is inf"));
}

// A 1-shard store with tensor "w" of 3000 elements: 3 chunks of 1000.
class WireStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(Layout layout, Layout::Create(1, 1024));
    for (auto* s : {&a_, &b_}) {
      *s = std::make_unique<ChunkStore>(layout, 0, false, 64 << 20, 1 << 30);
      v1::DeclareRequest d;
      d.set_namespace_("job");
      *d.mutable_layout() = Wire();
      *d.mutable_config() = testing::SgdConfig(0.1f);
      v1::TensorSpec* t = d.add_tensors();
      t->set_name("w");
      t->add_shape(3000);
      t->mutable_init()->set_kind(v1::INIT_CONSTANT);
      t->mutable_init()->set_value(0.5f);
      v1::DeclareResponse r;
      ASSERT_OK((*s)->Declare(d, &r));
    }
  }

  static v1::Layout Wire() {
    v1::Layout l;
    l.set_num_shards(1);
    l.set_chunk_elems(1024);
    return l;
  }

  v1::PushRequest Grads(v1::Encoding e) {
    v1::PushRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    req.set_return_encoding(v1::ENCODING_F32);
    const size_t lens[] = {1000, 1000, 1000};
    for (uint32_t c = 0; c < 3; ++c) {
      std::vector<float> g(lens[c]);
      for (size_t i = 0; i < g.size(); ++i) g[i] = 0.001f * (i % 97) - c;
      v1::ChunkData* d = req.add_grads();
      d->set_tensor("w");
      d->set_chunk(c);
      d->set_encoding(e);
      EncodeFloats(e, g, d->mutable_data());
    }
    return req;
  }

  std::unique_ptr<ChunkStore> a_, b_;
};

TEST_F(WireStoreTest, SegmentedPayloadsAndWireAnswersMatchTheProtobufPath) {
  for (v1::Encoding e : {v1::ENCODING_F32, v1::ENCODING_BF16}) {
    const v1::PushRequest req = Grads(e);
    v1::PushPullResponse want;
    ASSERT_OK(a_->PushPull(req, &want));

    // The same gradients as segments of 7 bytes (elements cut in two),
    // without the data in the message.
    v1::PushRequest meta = req;
    std::vector<PayloadView> payloads(3);
    for (int i = 0; i < 3; ++i) {
      meta.mutable_grads(i)->clear_data();
      absl::string_view d = req.grads(i).data();
      for (size_t at = 0; at < d.size(); at += 7) {
        payloads[i].Append(d.substr(at, 7));
      }
    }
    v1::PushPullResponse acks;
    WireChunkOut out;
    ASSERT_OK(b_->PushPull(meta, payloads, acks.mutable_acks(), &out));
    grpc::ByteBuffer reply = out.AppendAnswer(acks, 2);

    // Protobuf reads the reply as the PushPullResponse the proto path gave.
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(reply.Dump(&slices).ok());
    std::string flat;
    for (const grpc::Slice& s : slices) {
      flat.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    v1::PushPullResponse got;
    ASSERT_TRUE(got.ParseFromString(flat));
    EXPECT_TRUE(MessageDifferencer::Equals(got, want)) << EncodingName(e);

    // So does the client's own parser.
    std::vector<std::vector<float>> dest(3);
    std::vector<client_internal::ChunkSink> sinks;
    for (int i = 0; i < 3; ++i) {
      dest[i].resize(want.chunks(i).data().size() / sizeof(float));
      sinks.push_back({"w", static_cast<uint32_t>(i), dest[i].data(),
                       dest[i].size(), false});
    }
    std::vector<client_internal::ChunkMeta> metas;
    ASSERT_OK(client_internal::ParseChunks(&reply, true, sinks, &metas));
    for (int i = 0; i < 3; ++i) {
      std::vector<float> v(dest[i].size());
      DecodeFloats(v1::ENCODING_F32, want.chunks(i).data().data(),
                   absl::MakeSpan(v));
      EXPECT_EQ(dest[i], v);
      EXPECT_EQ(metas[i].version, want.chunks(i).version());
    }
  }
}

TEST_F(WireStoreTest, PullAndExchangeAnswerAsTheProtobufPath) {
  v1::PullRequest pull;
  pull.set_namespace_("job");
  *pull.mutable_layout() = Wire();
  pull.set_encoding(v1::ENCODING_F16);
  for (uint32_t c : {2u, 0u}) {
    v1::ChunkRef* r = pull.add_chunks();
    r->set_tensor("w");
    r->set_chunk(c);
  }
  v1::PullResponse want;
  ASSERT_OK(a_->Pull(pull, &want));
  WireChunkOut out;
  ASSERT_OK(b_->Pull(pull, &out));
  v1::PullResponse got;
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(out.AppendAnswer(v1::PullResponse(), 1).Dump(&slices).ok());
  std::string flat;
  for (const grpc::Slice& s : slices) {
    flat.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  ASSERT_TRUE(got.ParseFromString(flat));
  EXPECT_TRUE(MessageDifferencer::Equals(got, want));

  v1::ExchangeRequest ex;
  ex.set_namespace_("job");
  *ex.mutable_layout() = Wire();
  ex.set_alpha(0.5f);
  v1::ChunkData* p = ex.add_params();
  p->set_tensor("w");
  p->set_chunk(1);
  p->set_encoding(v1::ENCODING_F32);
  EncodeFloats(v1::ENCODING_F32, std::vector<float>(1000, 2.0f),
               p->mutable_data());
  v1::ExchangeResponse want_ex;
  ASSERT_OK(a_->Exchange(ex, &want_ex));
  WireChunkOut diffs;
  ASSERT_OK(b_->Exchange(ex, PayloadsOf(ex.params()), &diffs));
  slices.clear();
  ASSERT_TRUE(diffs.AppendAnswer(v1::ExchangeResponse(), 1).Dump(&slices).ok());
  flat.clear();
  for (const grpc::Slice& s : slices) {
    flat.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  v1::ExchangeResponse got_ex;
  ASSERT_TRUE(got_ex.ParseFromString(flat));
  EXPECT_TRUE(MessageDifferencer::Equals(got_ex, want_ex));
}

}  // namespace
}  // namespace pskit
