#include "common/validation.h"

#include <bit>
#include <cmath>
#include <cstdint>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/encoding.h"
#include "common/vector_clones.h"

namespace pskit {

std::string Quoted(absl::string_view s) {
  if (s.size() <= kMaxQuotedBytes) {
    return absl::StrCat("'", absl::CHexEscape(s), "'");
  }
  return absl::StrCat("'", absl::CHexEscape(s.substr(0, kQuotedPrefixBytes)),
                      "...' (", s.size(), " bytes)");
}

std::string ChunkName(absl::string_view tensor, uint32_t chunk) {
  return absl::StrCat("tensor ", Quoted(tensor), " chunk ", chunk);
}

absl::Status ValidateName(absl::string_view what, absl::string_view name) {
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  }
  if (name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", Quoted(name), " is too long: the limit is ",
                     kMaxNameBytes, " bytes"));
  }
  for (char c : name) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", Quoted(name),
          " has a space or non-printable byte; use printable ASCII"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateEncoding(v1::Encoding encoding) {
  if (BytesPerElement(encoding) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("encoding ", EncodingName(encoding),
                     " is not supported; use ENCODING_F32, ENCODING_F16 or "
                     "ENCODING_BF16"));
  }
  return absl::OkStatus();
}

absl::Status CheckLayout(const v1::Layout& got, bool has_layout,
                         const Layout& mine, uint32_t shard_index) {
  if (!has_layout) {
    return absl::InvalidArgumentError(
        "request carries no layout; set layout {num_shards chunk_elems "
        "shard_index}");
  }
  if (got.num_shards() != mine.num_shards() ||
      got.chunk_elems() != mine.chunk_elems() ||
      got.shard_index() != shard_index) {
    return absl::FailedPreconditionError(absl::StrCat(
        "layout mismatch: this is shard ", shard_index, " with ",
        mine.ToString(), ", the request was meant for shard ",
        got.shard_index(), " with num_shards=", got.num_shards(),
        " chunk_elems=", got.chunk_elems(),
        "; give every process the same shard list (in the same order) and "
        "chunk_elems"));
  }
  return absl::OkStatus();
}

namespace {

// A branch-free OR over exponent bits: it vectorises, and is cloned for
// wider vectors (common/vector_clones.h).
PSKIT_VECTOR_CLONES bool AnyNonFinite(const float* p, size_t n) {
  uint32_t any = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t bits = std::bit_cast<uint32_t>(p[i]);
    any |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return any != 0;
}

}  // namespace

int64_t FirstNonFinite(absl::Span<const float> values) {
  // The slow search runs only when something is wrong.
  const float* p = values.data();
  const size_t n = values.size();
  if (!AnyNonFinite(p, n)) return -1;
  for (size_t i = 0; i < n; ++i) {
    if ((std::bit_cast<uint32_t>(p[i]) & 0x7f800000u) == 0x7f800000u) {
      return static_cast<int64_t>(i);
    }
  }
  return -1;
}

absl::StatusOr<absl::Span<const float>> DecodeChunk(
    const v1::ChunkData& chunk, uint64_t expected_elems, bool allow_nonfinite,
    std::vector<float>* scratch) {
  const size_t bpe = BytesPerElement(chunk.encoding());
  if (bpe == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        ChunkName(chunk.tensor(), chunk.chunk()), ": encoding ",
        EncodingName(chunk.encoding()),
        " is not supported; use ENCODING_F32, ENCODING_F16 or ENCODING_BF16"));
  }
  if (chunk.data().size() != expected_elems * bpe) {
    const bool whole = chunk.data().size() % bpe == 0;
    return absl::InvalidArgumentError(absl::StrCat(
        ChunkName(chunk.tensor(), chunk.chunk()), ": payload has ",
        chunk.data().size(), " bytes",
        whole ? absl::StrCat(" (", chunk.data().size() / bpe, " elements)")
              : std::string(" (not a whole number of elements)"),
        ", expected ", expected_elems * bpe, " bytes (", expected_elems,
        " elements of ", EncodingName(chunk.encoding()), ")"));
  }
  absl::Span<const float> values;
  const char* data = chunk.data().data();
  if (chunk.encoding() == v1::ENCODING_F32 &&
      reinterpret_cast<uintptr_t>(data) % alignof(float) == 0) {
    values = absl::Span<const float>(reinterpret_cast<const float*>(data),
                                     expected_elems);
  } else {
    scratch->resize(expected_elems);
    DecodeFloats(chunk.encoding(), data, absl::MakeSpan(*scratch));
    values = absl::Span<const float>(*scratch);
  }
  if (!allow_nonfinite) {
    const int64_t bad = FirstNonFinite(values);
    if (bad >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          ChunkName(chunk.tensor(), chunk.chunk()), ": element ", bad,
          " is ", values[bad],
          "; NaN and Inf are rejected (start ps-server with "
          "--allow_nonfinite to accept them)"));
    }
  }
  return values;
}

absl::Status CheckBounds(absl::string_view label, double value,
                         const Bounds& b) {
  const bool ok = std::isfinite(value) &&
                  (b.lo_open ? value > b.lo : value >= b.lo) &&
                  (b.hi_open ? value < b.hi : value <= b.hi);
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      label, " is ", value, "; it must be in ", b.lo_open ? "(" : "[", b.lo,
      ", ", b.hi, b.hi_open ? ")" : "]"));
}

}  // namespace pskit
