// server/finish.h
//
// FinishNow: answers a unary callback call at once with `status` (for
// handlers whose work is done inline). Thread safety: as the reactor's.
#ifndef PSKIT_SERVER_FINISH_H_
#define PSKIT_SERVER_FINISH_H_

#include <grpcpp/support/server_callback.h>

#include "absl/status/status.h"
#include "common/grpc_status.h"

namespace pskit {

inline grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx,
                                           const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace pskit

#endif  // PSKIT_SERVER_FINISH_H_
