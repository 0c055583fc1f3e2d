// server/admin_service.h
//
// AdminService: pskit.v1.Admin for one shard (checkpoints, restore, status,
// live hyper-parameters, drain). Checkpoint, Restore and a durable shard's
// Drain wait on disk, so their reactors are parked and finished from the
// Checkpointer's thread; ListCheckpoints, Status and SetConfig are bounded
// and finish inline.
//
// Thread safety: handlers run concurrently on gRPC's threads; the state they
// touch is thread-safe.
#ifndef PSKIT_SERVER_ADMIN_SERVICE_H_
#define PSKIT_SERVER_ADMIN_SERVICE_H_

#include "pskit/v1/admin.grpc.pb.h"
#include "server/checkpoint_store.h"
#include "server/checkpointer.h"
#include "server/chunk_store.h"
#include "server/worker_registry.h"

namespace pskit {

class AdminService final : public v1::Admin::CallbackService {
 public:
  // Borrows everything; `checkpoints` and `checkpointer` are null for a
  // memory-only shard. All must outlive the service.
  AdminService(ChunkStore* store, WorkerRegistry* workers,
               CheckpointStore* checkpoints, Checkpointer* checkpointer)
      : store_(store),
        workers_(workers),
        checkpoints_(checkpoints),
        checkpointer_(checkpointer) {}

  grpc::ServerUnaryReactor* Checkpoint(grpc::CallbackServerContext* ctx,
                                       const v1::CheckpointRequest* req,
                                       v1::CheckpointResponse* resp) override;
  grpc::ServerUnaryReactor* ListCheckpoints(
      grpc::CallbackServerContext* ctx, const v1::ListCheckpointsRequest* req,
      v1::ListCheckpointsResponse* resp) override;
  grpc::ServerUnaryReactor* Restore(grpc::CallbackServerContext* ctx,
                                    const v1::RestoreRequest* req,
                                    v1::RestoreResponse* resp) override;
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx,
                                   const v1::StatusRequest* req,
                                   v1::StatusResponse* resp) override;
  grpc::ServerUnaryReactor* SetConfig(grpc::CallbackServerContext* ctx,
                                      const v1::SetConfigRequest* req,
                                      v1::SetConfigResponse* resp) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* ctx,
                                  const v1::DrainRequest* req,
                                  v1::DrainResponse* resp) override;

 private:
  ChunkStore* const store_;
  WorkerRegistry* const workers_;
  CheckpointStore* const checkpoints_;
  Checkpointer* const checkpointer_;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_ADMIN_SERVICE_H_
