// common/grpc_status.h
//
// The one place where absl::Status and grpc::Status are turned into each other
// (their canonical codes have the same numbers).
//
// Thread safety: pure functions.
#ifndef PSKIT_COMMON_GRPC_STATUS_H_
#define PSKIT_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace pskit {

// Same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace pskit

#endif  // PSKIT_COMMON_GRPC_STATUS_H_
