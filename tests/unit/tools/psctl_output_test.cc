// psctl's output helpers: the JSON writer (escaping, numbers, order), the
// tables' alignment, sizes, and the .npy header of `psctl dump`.
#include <cstdint>
#include <limits>
#include <string>

#include "gtest/gtest.h"
#include "tools/psctl/npy.h"
#include "tools/psctl/output.h"

namespace pskit::psctl {
namespace {

TEST(PsctlJson, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(Json("a\"b\\c").Dump(), R"("a\"b\\c")");
  EXPECT_EQ(Json("line\nnext\r\ttab").Dump(), R"("line\nnext\r\ttab")");
  EXPECT_EQ(Json(std::string("\x01\x1f", 2)).Dump(), R"("\u0001\u001f")");
  // UTF-8 passes through unchanged.
  EXPECT_EQ(Json("π≈3.14").Dump(), "\"π≈3.14\"");
}

TEST(PsctlJson, ObjectsKeepInsertionOrderAndNest) {
  Json inner = Json::Array();
  inner.Add(Json(1)).Add(Json(true)).Add(Json(nullptr));
  Json j = Json::Object();
  j.Set("z", "last?")
      .Set("a", inner)
      .Set("k\"ey", uint64_t{18446744073709551615u});
  EXPECT_EQ(j.Dump(),
            R"({"z":"last?","a":[1,true,null],"k\"ey":18446744073709551615})");
  EXPECT_EQ(Json::Object().Dump(), "{}");
  EXPECT_EQ(Json::Array().Dump(), "[]");
}

TEST(PsctlJson, NumbersAreShortestRoundTripAndNonFiniteIsNull) {
  EXPECT_EQ(Json(0.001f).Dump(), "0.001");
  EXPECT_EQ(Json(0.1).Dump(), "0.1");
  EXPECT_EQ(Json(1.0 / 3).Dump(), "0.3333333333333333");
  EXPECT_EQ(Json(int64_t{-7}).Dump(), "-7");
  EXPECT_EQ(Json(std::numeric_limits<double>::infinity()).Dump(), "null");
  EXPECT_EQ(Json(std::numeric_limits<float>::quiet_NaN()).Dump(), "null");
}

TEST(PsctlTable, AlignsColumnsTwoSpacesApartWithoutTrailingSpaces) {
  Table t({"shard", "address", "state"});
  t.Row({"0", "127.0.0.1:7000", "ok"});
  t.Row({"10", "h:1", "unreachable"});
  EXPECT_EQ(t.Render(),
            "shard  address         state\n"
            "0      127.0.0.1:7000  ok\n"
            "10     h:1             unreachable\n");
}

TEST(PsctlFormat, HumanBytesPicksTheUnit) {
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(3 << 20), "3.0 MiB");
  EXPECT_EQ(HumanBytes(uint64_t{5} << 30), "5.00 GiB");
}

TEST(PsctlNpy, HeaderIsVersion1AlignedTo64BytesWithTheShape) {
  google::protobuf::RepeatedField<int64_t> shape;
  shape.Add(784);
  shape.Add(256);
  const std::string h = NpyHeader(shape);
  ASSERT_GE(h.size(), 10u);
  EXPECT_EQ(h.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_EQ(h.size() % 64, 0u);
  const size_t dict_len =
      static_cast<unsigned char>(h[8]) | static_cast<unsigned char>(h[9]) << 8;
  EXPECT_EQ(dict_len, h.size() - 10);
  EXPECT_EQ(h.back(), '\n');
  EXPECT_EQ(h.substr(10, h.find('}') - 9),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (784, 256), }");

  google::protobuf::RepeatedField<int64_t> vector_shape;
  vector_shape.Add(10);
  const std::string v = NpyHeader(vector_shape);
  EXPECT_NE(v.find("'shape': (10,)"), std::string::npos) << v;
  EXPECT_EQ(v.size() % 64, 0u);
}

}  // namespace
}  // namespace pskit::psctl
