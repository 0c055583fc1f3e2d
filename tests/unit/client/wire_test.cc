// The client's hand-written codec must agree byte for byte with protobuf.
#include "client/internal/wire.h"

#include <grpcpp/support/proto_buffer_reader.h>

#include <string>
#include <vector>

#include "common/encoding.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pskit::client_internal {
namespace {

grpc::ByteBuffer BufferOf(const std::string& bytes, size_t pieces = 3) {
  // Several slices, so parsing must cross slice boundaries.
  std::vector<grpc::Slice> slices;
  const size_t step = bytes.size() / pieces + 1;
  for (size_t at = 0; at < bytes.size(); at += step) {
    slices.emplace_back(bytes.substr(at, step));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

v1::ChunkData Data(const std::string& tensor, uint32_t chunk,
                   const std::vector<float>& v, v1::Encoding e,
                   uint64_t version) {
  v1::ChunkData c;
  c.set_tensor(tensor);
  c.set_chunk(chunk);
  c.set_version(version);
  c.set_encoding(e);
  EncodeFloats(e, v, c.mutable_data());
  return c;
}

TEST(OutgoingMessage, ProtobufParsesWhatItBuilds) {
  std::vector<float> a = {1, 2, 3}, b = {-4.5f, 5};
  SliceTracker tracker;
  {
    v1::PushRequest header;
    header.set_namespace_("job");
    header.mutable_layout()->set_num_shards(3);
    header.set_worker_id(77);
    header.set_return_encoding(v1::ENCODING_F32);
    OutgoingMessage msg;
    msg.AppendMessageFields(header);
    v1::ChunkData meta;
    meta.set_tensor("w");
    meta.set_chunk(0);
    meta.set_version(9);
    meta.set_encoding(v1::ENCODING_F32);
    msg.AppendChunk(4, meta, reinterpret_cast<const char*>(a.data()), 12,
                    &tracker);
    meta.set_tensor("b");
    meta.set_chunk(5);
    msg.AppendChunk(4, meta, reinterpret_cast<const char*>(b.data()), 8,
                    &tracker);
    grpc::ByteBuffer buffer = msg.Finish();
    v1::PushRequest parsed;
    grpc::ProtoBufferReader reader(&buffer);
    ASSERT_TRUE(parsed.ParseFromZeroCopyStream(&reader));
    EXPECT_EQ(parsed.namespace_(), "job");
    EXPECT_EQ(parsed.layout().num_shards(), 3u);
    EXPECT_EQ(parsed.worker_id(), 77u);
    EXPECT_EQ(parsed.return_encoding(), v1::ENCODING_F32);
    ASSERT_EQ(parsed.grads_size(), 2);
    EXPECT_EQ(parsed.grads(0).SerializeAsString(),
              Data("w", 0, a, v1::ENCODING_F32, 9).SerializeAsString());
    EXPECT_EQ(parsed.grads(1).SerializeAsString(),
              Data("b", 5, b, v1::ENCODING_F32, 9).SerializeAsString());
  }
  // Every borrowed slice was handed back once the buffers were gone.
  tracker.WaitForNone();
}

TEST(ParseChunks, PullAnswerInEveryEncoding) {
  for (v1::Encoding e :
       {v1::ENCODING_F32, v1::ENCODING_F16, v1::ENCODING_BF16}) {
    v1::PullResponse resp;
    *resp.add_chunks() = Data("w", 2, {1, 2, 3, 4}, e, 5);
    *resp.add_chunks() = Data("b", 0, {0.5f}, e, 6);
    std::vector<float> w(10, -1), b(1, -1);
    std::vector<ChunkSink> sinks = {{"w", 2, w.data() + 6, 4, false},
                                    {"b", 0, b.data(), 1, false}};
    std::vector<ChunkMeta> meta;
    grpc::ByteBuffer buf = BufferOf(resp.SerializeAsString());
    ASSERT_OK(ParseChunks(&buf, false, sinks, &meta));
    EXPECT_EQ(w, (std::vector<float>{-1, -1, -1, -1, -1, -1, 1, 2, 3, 4}));
    EXPECT_EQ(b[0], 0.5f);
    EXPECT_EQ(meta[0].version, 5u);
    EXPECT_EQ(meta[1].version, 6u);
  }
}

TEST(ParseChunks, PushPullAcksAndExchangeSubtracts) {
  v1::PushPullResponse resp;
  v1::ChunkAck* ack = resp.add_acks();
  ack->set_version(8);
  ack->set_staleness(3);
  *resp.add_chunks() = Data("w", 1, {1, 2}, v1::ENCODING_F32, 8);
  std::vector<float> w = {10, 20};
  std::vector<ChunkMeta> meta;
  grpc::ByteBuffer buf = BufferOf(resp.SerializeAsString());
  ASSERT_OK(ParseChunks(&buf, true, {{"w", 1, w.data(), 2, false}}, &meta));
  EXPECT_EQ(w, (std::vector<float>{1, 2}));
  EXPECT_EQ(meta[0].staleness, 3u);
  EXPECT_EQ(meta[0].version, 8u);

  v1::ExchangeResponse ex;
  *ex.add_diffs() = Data("w", 1, {0.5f, -1}, v1::ENCODING_F32, 9);
  buf = BufferOf(ex.SerializeAsString());
  ASSERT_OK(ParseChunks(&buf, false, {{"w", 1, w.data(), 2, true}}, &meta));
  EXPECT_EQ(w, (std::vector<float>{0.5f, 3}));
}

TEST(ParseChunks, RefusesAnswersThatDoNotMatch) {
  std::vector<float> w(4);
  std::vector<ChunkMeta> meta;
  auto parse = [&](const v1::PullResponse& r, uint64_t length) {
    grpc::ByteBuffer buf = BufferOf(r.SerializeAsString());
    return ParseChunks(&buf, false, {{"w", 0, w.data(), length, false}}, &meta);
  };
  v1::PullResponse other_tensor;
  *other_tensor.add_chunks() = Data("x", 0, {1, 2, 3, 4}, v1::ENCODING_F32, 1);
  EXPECT_EQ(parse(other_tensor, 4).code(), absl::StatusCode::kInternal);
  v1::PullResponse short_chunk;
  *short_chunk.add_chunks() = Data("w", 0, {1, 2, 3}, v1::ENCODING_F32, 1);
  EXPECT_EQ(parse(short_chunk, 4).code(), absl::StatusCode::kFailedPrecondition);
  v1::PullResponse none;
  EXPECT_EQ(parse(none, 4).code(), absl::StatusCode::kInternal);
  v1::PullResponse two;
  *two.add_chunks() = Data("w", 0, {1, 2, 3, 4}, v1::ENCODING_F32, 1);
  *two.add_chunks() = Data("w", 0, {1, 2, 3, 4}, v1::ENCODING_F32, 1);
  EXPECT_EQ(parse(two, 4).code(), absl::StatusCode::kInternal);
  v1::PullResponse bad_encoding;
  *bad_encoding.add_chunks() = Data("w", 0, {1, 2, 3, 4}, v1::ENCODING_F32, 1);
  bad_encoding.mutable_chunks(0)->set_encoding(static_cast<v1::Encoding>(9));
  EXPECT_EQ(parse(bad_encoding, 4).code(), absl::StatusCode::kInternal);
  // Truncated: the last byte of the payload is missing.
  v1::PullResponse ok;
  *ok.add_chunks() = Data("w", 0, {1, 2, 3, 4}, v1::ENCODING_F32, 1);
  std::string bytes = ok.SerializeAsString();
  bytes.pop_back();
  grpc::ByteBuffer buf = BufferOf(bytes);
  EXPECT_EQ(ParseChunks(&buf, false, {{"w", 0, w.data(), 4, false}}, &meta)
                .code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace pskit::client_internal
