#include "common/validation.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/encoding.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using ::testing::HasSubstr;

v1::ChunkData Chunk(const std::vector<float>& values, v1::Encoding e) {
  v1::ChunkData c;
  c.set_tensor("fc1/w");
  c.set_chunk(3);
  c.set_encoding(e);
  EncodeFloats(e, values, c.mutable_data());
  return c;
}

TEST(DecodeChunk, AcceptsEveryEncoding) {
  const std::vector<float> v = {1, 2, 3, 4};
  for (v1::Encoding e :
       {v1::ENCODING_F32, v1::ENCODING_F16, v1::ENCODING_BF16}) {
    std::vector<float> scratch;
    const v1::ChunkData chunk = Chunk(v, e);  // the view borrows it
    ASSERT_OK_AND_ASSIGN(auto out, DecodeChunk(chunk, 4, false, &scratch));
    EXPECT_EQ(std::vector<float>(out.begin(), out.end()), v);
  }
}

TEST(DecodeChunk, WrongElementCountNamesTheChunk) {
  std::vector<float> scratch;
  auto r = DecodeChunk(Chunk({1, 2, 3}, v1::ENCODING_F32), 4, false, &scratch);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("tensor 'fc1/w' chunk 3: payload has 12 bytes (3 "
                        "elements), expected 16 bytes (4 elements of f32)"));
}

TEST(DecodeChunk, PayloadNotAWholeNumberOfElements) {
  v1::ChunkData c = Chunk({1, 2}, v1::ENCODING_F16);
  c.mutable_data()->push_back('x');
  std::vector<float> scratch;
  auto r = DecodeChunk(c, 2, false, &scratch);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("not a whole number of elements"));
}

TEST(DecodeChunk, UnknownEncoding) {
  v1::ChunkData c = Chunk({1, 2}, v1::ENCODING_F32);
  c.set_encoding(static_cast<v1::Encoding>(42));
  std::vector<float> scratch;
  auto r = DecodeChunk(c, 2, false, &scratch);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("unknown(42)"));
  c.set_encoding(v1::ENCODING_UNSPECIFIED);
  EXPECT_EQ(DecodeChunk(c, 2, false, &scratch).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DecodeChunk, NonFiniteRejectedUnlessAllowed) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (v1::Encoding e :
       {v1::ENCODING_F32, v1::ENCODING_F16, v1::ENCODING_BF16}) {
    for (float bad : {nan, inf, -inf}) {
      std::vector<float> scratch;
      auto r = DecodeChunk(Chunk({1, bad, 3}, e), 3, false, &scratch);
      ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(r.status().message()), HasSubstr("element 1"));
      EXPECT_OK(DecodeChunk(Chunk({1, bad, 3}, e), 3, true, &scratch));
    }
  }
  // f16 overflow turns a finite float into inf on the wire: rejected too.
  std::vector<float> scratch;
  EXPECT_EQ(DecodeChunk(Chunk({1e6f}, v1::ENCODING_F16), 1, false, &scratch)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(FirstNonFinite, FindsTheFirst) {
  std::vector<float> v(1000, 1.0f);
  EXPECT_EQ(FirstNonFinite(v), -1);
  v[777] = std::numeric_limits<float>::infinity();
  v[900] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(FirstNonFinite(v), 777);
}

TEST(CheckLayout, MismatchIsFailedPrecondition) {
  ASSERT_OK_AND_ASSIGN(Layout mine, Layout::Create(4, 1024));
  v1::Layout got;
  got.set_num_shards(4);
  got.set_chunk_elems(1024);
  got.set_shard_index(2);
  EXPECT_OK(CheckLayout(got, true, mine, 2));
  EXPECT_EQ(CheckLayout(got, true, mine, 1).code(),
            absl::StatusCode::kFailedPrecondition);
  got.set_num_shards(3);
  absl::Status s = CheckLayout(got, true, mine, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("num_shards=4"));
  EXPECT_EQ(CheckLayout(got, false, mine, 2).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ValidateName, RejectsEmptyLongAndUnprintable) {
  EXPECT_OK(ValidateName("tensor name", "fc1/w"));
  EXPECT_EQ(ValidateName("tensor name", "").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateName("tensor name", std::string(300, 'a')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateName("tensor name", "a b").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateName("tensor name", "a\nb").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Quoted, ShowsShortStringsWholeAndCutsLongOnes) {
  EXPECT_EQ(Quoted("fc1/w"), "'fc1/w'");
  EXPECT_EQ(Quoted(std::string(kMaxQuotedBytes, 'a')),
            "'" + std::string(kMaxQuotedBytes, 'a') + "'");
  const std::string huge(1 << 20, 'n');
  const std::string q = Quoted(huge);
  EXPECT_EQ(
      q, "'" + std::string(kQuotedPrefixBytes, 'n') + "...' (1048576 bytes)");
}

TEST(Quoted, EscapesNonPrintableBytesAndQuotes) {
  EXPECT_EQ(Quoted(std::string("a\x01"
                               "b\n'\"",
                               6)),
            R"('a\x01\x62\n\'\"')");
  // ('b' right after "\x01" is escaped too, so that it cannot read as a
  // hex digit of that escape.) A long string of control bytes stays bounded
  // after escaping.
  EXPECT_LE(Quoted(std::string(1 << 20, '\x7f')).size(),
            4 * kQuotedPrefixBytes + 32);
}

TEST(ChunkName, BoundsTheTensorName) {
  EXPECT_EQ(ChunkName("fc1/w", 3), "tensor 'fc1/w' chunk 3");
  EXPECT_LT(ChunkName(std::string(1 << 20, 'x'), 3).size(), 200u);
}

TEST(ValidateName, MessagesAreBoundedAndEscaped) {
  absl::Status s = ValidateName("tensor name", std::string(1 << 20, 'a'));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(s.message().size(), 200u) << s.message().substr(0, 300);
  EXPECT_THAT(std::string(s.message()), HasSubstr("1048576 bytes"));
  // A control byte is shown escaped, never raw (it would garble a terminal
  // or a log line).
  s = ValidateName("namespace", "job\x1b[2J");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(s.message()).find('\x1b'), std::string::npos);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'job\\x1b[2J'"));
}

}  // namespace
}  // namespace pskit
