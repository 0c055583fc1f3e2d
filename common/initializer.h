// common/initializer.h
//
// Initial tensor values as a pure function of (seed, namespace, tensor,
// element index): any shard can fill any slice, and the model does not depend
// on the number of shards or the chunk size.
//
// Random values come from a counter-based generator: element i's bits are
// SplitMix64(key + i * golden), key = Fingerprint64("ns/tensor") ^ mixed seed.
// Normal values use Box-Muller on two such draws.
//
// Thread safety: pure functions.
#ifndef PSKIT_COMMON_INITIALIZER_H_
#define PSKIT_COMMON_INITIALIZER_H_

#include <cstdint>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "pskit/v1/ps.pb.h"

namespace pskit {

// INVALID_ARGUMENT when `spec.init` is unspecified or unknown, or its
// parameters are unusable (uniform low >= high, stddev < 0, non-finite
// numbers). Names the tensor.
[[nodiscard]] absl::Status ValidateInitializer(const v1::TensorSpec& spec);

// Fills `out` with elements [offset, offset + out.size()) of the tensor's
// initial value. Precondition: ValidateInitializer(spec) is OK and the kind is
// not INIT_EXPLICIT.
void FillInitialValues(absl::string_view ns, const v1::TensorSpec& spec,
                       uint64_t offset, absl::Span<float> out);

}  // namespace pskit

#endif  // PSKIT_COMMON_INITIALIZER_H_
