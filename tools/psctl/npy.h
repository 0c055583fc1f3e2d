// tools/psctl/npy.h
//
// The .npy writer of `psctl dump`: a NumPy 1.0 header for a float32 array,
// and an atomic file write (temporary file, fsync, rename).
//
// Thread safety: pure functions; WriteAtomically touches only `path` and a
// temporary file next to it.
#ifndef PSKIT_TOOLS_PSCTL_NPY_H_
#define PSKIT_TOOLS_PSCTL_NPY_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "google/protobuf/repeated_field.h"

namespace pskit::psctl {

// The .npy 1.0 header for a C-ordered little-endian float32 array: magic,
// version, header length (little-endian uint16), then the dict padded with
// spaces and ended by '\n' so that data starts at a multiple of 64 bytes.
std::string NpyHeader(const google::protobuf::RepeatedField<int64_t>& shape);

// Writes `header` and `values` to `path` through a temporary file in the
// same directory, renamed over `path` only once complete and synced.
// INTERNAL (naming the file and errno) when a step fails; `path` is then
// untouched.
[[nodiscard]] absl::Status WriteAtomically(const std::string& path,
                                           const std::string& header,
                                           absl::Span<const float> values);

}  // namespace pskit::psctl

#endif  // PSKIT_TOOLS_PSCTL_NPY_H_
