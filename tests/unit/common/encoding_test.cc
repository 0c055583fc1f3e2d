#include "common/encoding.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace pskit {
namespace {

float F(uint32_t bits) { return std::bit_cast<float>(bits); }
constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(Half, KnownValues) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(0.5f), 0x3800);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);  // largest finite
  EXPECT_EQ(FloatToHalf(0.333333343f), 0x3555);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
}

TEST(Half, RoundsToNearestEven) {
  // Halfway between 1 and the next half (1 + 2^-10): ties to even (1).
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // Halfway between 1 + 2^-10 (odd) and 1 + 2^-9: ties to even, up.
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  // Just above halfway rounds up.
  EXPECT_EQ(FloatToHalf(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)),
            0x3c01);
}

TEST(Half, Overflow) {
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);   // below the midpoint
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);   // midpoint ties to even: inf
  EXPECT_EQ(FloatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-1e10f), 0xfc00);
}

TEST(Half, Subnormals) {
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie to even: 0
  EXPECT_EQ(FloatToHalf(1.5f * std::ldexp(1.0f, -25)), 0x0001);
  EXPECT_EQ(FloatToHalf(3 * std::ldexp(1.0f, -25)), 0x0002);  // tie: even
  EXPECT_EQ(FloatToHalf(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(FloatToHalf(1023 * std::ldexp(1.0f, -24)), 0x03ff);  // largest
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(FloatToHalf(F(1)), 0x0000);  // float subnormal
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03ff), 1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x8001), -std::ldexp(1.0f, -24));
}

TEST(Half, InfAndNaN) {
  EXPECT_EQ(FloatToHalf(kInf), 0x7c00);
  EXPECT_EQ(FloatToHalf(-kInf), 0xfc00);
  EXPECT_EQ(HalfToFloat(0x7c00), kInf);
  EXPECT_EQ(HalfToFloat(0xfc00), -kInf);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  // A signalling NaN whose payload sits in the low bits stays a NaN.
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(F(0x7f800001)))));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
}

TEST(Half, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToHalf(f), h) << std::hex << h;
  }
}

TEST(Bf16, KnownValuesAndRounding) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToBf16(kInf), 0x7f80);
  EXPECT_EQ(FloatToBf16(-kInf), 0xff80);
  EXPECT_EQ(FloatToBf16(F(0x3f808000)), 0x3f80);  // tie, even stays
  EXPECT_EQ(FloatToBf16(F(0x3f818000)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(FloatToBf16(F(0x3f808001)), 0x3f81);  // above tie
  EXPECT_EQ(FloatToBf16(F(0x7f7fffff)), 0x7f80);  // max float rounds to inf
  EXPECT_EQ(FloatToBf16(F(0x00010000)), 0x0001);  // subnormal kept
  EXPECT_EQ(FloatToBf16(F(0x00008000)), 0x0000);  // tie to even
  EXPECT_EQ(FloatToBf16(F(0x00018000)), 0x0002);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(F(0x7f800001)))));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(F(0xffc00000)))));
}

TEST(Bf16, EveryBf16RoundTrips) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToBf16(f), b) << std::hex << b;
  }
}

TEST(Encode, BufferRoundTrip) {
  const std::vector<float> in = {0.0f, 1.0f, -1.5f, 3.14159f, 1e-6f, 65504.0f};
  for (v1::Encoding e :
       {v1::ENCODING_F32, v1::ENCODING_F16, v1::ENCODING_BF16}) {
    std::string wire;
    EncodeFloats(e, in, &wire);
    ASSERT_EQ(wire.size(), in.size() * BytesPerElement(e));
    std::vector<float> out(in.size());
    DecodeFloats(e, wire.data(), absl::MakeSpan(out));
    for (size_t i = 0; i < in.size(); ++i) {
      const float tol = e == v1::ENCODING_F32   ? 0.0f
                        : e == v1::ENCODING_F16 ? 1e-3f
                                                : 8e-3f;
      EXPECT_NEAR(out[i], in[i], std::abs(in[i]) * tol + 1e-7f)
          << EncodingName(e) << " element " << i;
    }
  }
  EXPECT_EQ(BytesPerElement(v1::ENCODING_UNSPECIFIED), 0u);
  EXPECT_EQ(BytesPerElement(static_cast<v1::Encoding>(99)), 0u);
  EXPECT_EQ(EncodingName(static_cast<v1::Encoding>(99)), "unknown(99)");
}

}  // namespace
}  // namespace pskit

namespace pskit {
namespace {

// The vector path (F16C, where the CPU has it) gives the scalar path's bits
// for every half value, for values between them (rounding), subnormals,
// overflow, inf and NaN.
TEST(Encode, VectorHalfPathMatchesScalar) {
  if (!HalfConversionUsesF16c()) {
    GTEST_SKIP() << "this CPU has no F16C; only the scalar path runs";
  }
  std::vector<float> in;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    in.push_back(f);
    in.push_back(std::nextafter(f, 0.0f));
    in.push_back(std::nextafter(f, std::numeric_limits<float>::infinity()));
  }
  for (uint32_t bits : {0x477ff000u, 0x477fefffu, 0x33000000u, 0x33000001u,
                        0x7f800001u, 0xffc00000u, 0x00000001u}) {
    in.push_back(std::bit_cast<float>(bits));
  }
  std::string wire;
  EncodeFloats(v1::ENCODING_F16, in, &wire);
  for (size_t i = 0; i < in.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, wire.data() + 2 * i, 2);
    if (std::isnan(in[i])) {
      ASSERT_TRUE(std::isnan(HalfToFloat(h))) << i;
      continue;
    }
    ASSERT_EQ(h, FloatToHalf(in[i])) << "element " << i << " value " << in[i];
  }
  std::vector<float> back(in.size());
  DecodeFloats(v1::ENCODING_F16, wire.data(), absl::MakeSpan(back));
  for (size_t i = 0; i < in.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, wire.data() + 2 * i, 2);
    const float want = HalfToFloat(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(back[i]));
    } else {
      ASSERT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(want))
          << i;
    }
  }
}

}  // namespace
}  // namespace pskit
