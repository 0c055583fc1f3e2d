// common/encoding.h
//
// Float encodings on the wire: f32 (as is), f16 (IEEE binary16) and bf16
// (bfloat16). Narrowing rounds to nearest, ties to even; f16 keeps
// subnormals, overflows to +-inf past 65504 (from 65520 up), and keeps NaN a
// NaN (quiet) and inf an inf. Widening is exact.
//
// Payloads are little-endian; pskit builds only on little-endian hosts.
//
// Thread safety: pure functions.
#ifndef PSKIT_COMMON_ENCODING_H_
#define PSKIT_COMMON_ENCODING_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "pskit/v1/ps.pb.h"

namespace pskit {

static_assert(std::endian::native == std::endian::little,
              "pskit's wire format is little-endian");

// Bytes per element of `encoding`; 0 for ENCODING_UNSPECIFIED or an unknown
// value.
size_t BytesPerElement(v1::Encoding encoding);

// "f32", "f16", "bf16", or "unknown(<n>)".
std::string EncodingName(v1::Encoding encoding);

// The encoding named "f32", "f16" or "bf16"; INVALID_ARGUMENT naming `what`
// (e.g. "--encoding") and the three choices for anything else.
absl::StatusOr<v1::Encoding> ParseEncoding(absl::string_view name,
                                           absl::string_view what);

uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBf16(float f);
float Bf16ToFloat(uint16_t b);

// Whether EncodeFloats/DecodeFloats convert f16 with the CPU's F16C
// instructions (x86-64 with F16C) rather than FloatToHalf/HalfToFloat. Both
// give identical bits; tests compare them.
bool HalfConversionUsesF16c();

// Writes in.size() * BytesPerElement(encoding) bytes to `out`.
// Precondition: `encoding` is known (BytesPerElement > 0).
void EncodeFloats(v1::Encoding encoding, absl::Span<const float> in,
                  char* out);

// Replaces *out with the encoding of `in`.
void EncodeFloats(v1::Encoding encoding, absl::Span<const float> in,
                  std::string* out);

// Reads out.size() elements from `in`, which holds
// out.size() * BytesPerElement(encoding) bytes. Precondition: known encoding.
void DecodeFloats(v1::Encoding encoding, const char* in, absl::Span<float> out);

}  // namespace pskit

#endif  // PSKIT_COMMON_ENCODING_H_
