#include "common/encoding.h"

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#include <cpuid.h>
#endif

#include "absl/strings/str_cat.h"

namespace pskit {
namespace {

#if defined(__x86_64__)
// F16C converts 8 floats per instruction with the same rounding (to nearest,
// ties to even), subnormals, inf and NaN handling as FloatToHalf; the scalar
// code is 10-20x slower. Chosen at run time, so the binary still runs on a
// CPU without F16C.
__attribute__((target("avx,f16c"))) void FloatsToHalvesF16c(const float* in,
                                                           size_t n,
                                                           char* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(in + i),
                                      _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), h);
  }
  for (; i < n; ++i) {
    const uint16_t h = FloatToHalf(in[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

__attribute__((target("avx,f16c"))) void HalvesToFloatsF16c(const char* in,
                                                           size_t n,
                                                           float* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    out[i] = HalfToFloat(h);
  }
}

bool HasF16c() {
  // clang 14's __builtin_cpu_supports knows no "f16c": read the CPUID bit
  // (leaf 1, ECX bit 29). "avx" also checks that the OS saves AVX state.
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __builtin_cpu_supports("avx") &&
           __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 &&
           (ecx & bit_F16C) != 0;
  }();
  return has;
}
#else
bool HasF16c() { return false; }
void FloatsToHalvesF16c(const float*, size_t, char*) {}
void HalvesToFloatsF16c(const char*, size_t, float*) {}
#endif

}  // namespace

bool HalfConversionUsesF16c() { return HasF16c(); }

size_t BytesPerElement(v1::Encoding encoding) {
  switch (encoding) {
    case v1::ENCODING_F32:
      return 4;
    case v1::ENCODING_F16:
    case v1::ENCODING_BF16:
      return 2;
    default:
      return 0;
  }
}

std::string EncodingName(v1::Encoding encoding) {
  switch (encoding) {
    case v1::ENCODING_F32:
      return "f32";
    case v1::ENCODING_F16:
      return "f16";
    case v1::ENCODING_BF16:
      return "bf16";
    default:
      return absl::StrCat("unknown(", static_cast<int>(encoding), ")");
  }
}

absl::StatusOr<v1::Encoding> ParseEncoding(absl::string_view name,
                                           absl::string_view what) {
  if (name == "f32") return v1::ENCODING_F32;
  if (name == "f16") return v1::ENCODING_F16;
  if (name == "bf16") return v1::ENCODING_BF16;
  return absl::InvalidArgumentError(
      absl::StrCat(what, " must be f32, f16 or bf16, got '", name, "'"));
}

uint16_t FloatToHalf(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  x &= 0x7fffffff;
  if (x >= 0x7f800000) {  // inf or NaN
    if (x == 0x7f800000) return sign | 0x7c00;
    return sign | 0x7e00 | static_cast<uint16_t>((x >> 13) & 0x3ff);
  }
  if (x >= 0x477ff000) return sign | 0x7c00;  // >= 65520 rounds to inf
  if (x < 0x38800000) {                       // below 2^-14: subnormal half
    const uint32_t e = x >> 23;
    if (e < 102) return sign;  // below 2^-25: rounds to zero
    const uint32_t m = (x & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // in [14, 24]
    uint32_t result = m >> shift;
    const uint32_t rest = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (result & 1))) ++result;
    return sign | static_cast<uint16_t>(result);
  }
  uint32_t result = (x - 0x38000000) >> 13;  // exponent bias 127 -> 15
  const uint32_t rest = x & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (result & 1))) ++result;
  return sign | static_cast<uint16_t>(result);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t e = (h >> 10) & 0x1f;
  const uint32_t m = h & 0x3ff;
  if (e == 0) {
    // Zero or subnormal: m * 2^-24, exact in float.
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  }
  if (e == 31) return std::bit_cast<float>(sign | 0x7f800000 | (m << 13));
  return std::bit_cast<float>(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t FloatToBf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffff) > 0x7f800000) {  // NaN: keep it a quiet NaN
    return static_cast<uint16_t>((x >> 16) | 0x40);
  }
  return static_cast<uint16_t>((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

float Bf16ToFloat(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

void EncodeFloats(v1::Encoding encoding, absl::Span<const float> in,
                  char* out) {
  if (in.empty()) return;  // as in DecodeFloats: no memcpy of a null span
  switch (encoding) {
    case v1::ENCODING_F32:
      std::memcpy(out, in.data(), in.size() * sizeof(float));
      return;
    case v1::ENCODING_F16:
      if (HasF16c()) {
        FloatsToHalvesF16c(in.data(), in.size(), out);
        return;
      }
      for (size_t i = 0; i < in.size(); ++i) {
        const uint16_t h = FloatToHalf(in[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case v1::ENCODING_BF16:
      for (size_t i = 0; i < in.size(); ++i) {
        const uint16_t b = FloatToBf16(in[i]);
        std::memcpy(out + 2 * i, &b, 2);
      }
      return;
    default:
      return;
  }
}

void EncodeFloats(v1::Encoding encoding, absl::Span<const float> in,
                  std::string* out) {
  if (encoding == v1::ENCODING_F32) {
    // assign() copies once; resize() then memcpy would zero-fill first, a
    // whole extra pass over every message on the push/pull path.
    out->assign(reinterpret_cast<const char*>(in.data()),
                in.size() * sizeof(float));
    return;
  }
  out->resize(in.size() * BytesPerElement(encoding));
  EncodeFloats(encoding, in, out->data());
}

void DecodeFloats(v1::Encoding encoding, const char* in,
                  absl::Span<float> out) {
  // An empty span may have a null data(): memcpy must not see it (UB, which
  // UBSan reports; found by tests/fuzz/fuzz_wire.cc).
  if (out.empty()) return;
  switch (encoding) {
    case v1::ENCODING_F32:
      std::memcpy(out.data(), in, out.size() * sizeof(float));
      return;
    case v1::ENCODING_F16:
      if (HasF16c()) {
        HalvesToFloatsF16c(in, out.size(), out.data());
        return;
      }
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
      return;
    case v1::ENCODING_BF16:
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t b;
        std::memcpy(&b, in + 2 * i, 2);
        out[i] = Bf16ToFloat(b);
      }
      return;
    default:
      return;
  }
}

}  // namespace pskit
