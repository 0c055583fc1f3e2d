// server/admin_service.h
//
// AdminService: pskit.v1.Admin for one shard (checkpoints, restore, status,
// live hyper-parameters, drain, dropping a namespace). Checkpoint, Restore and a durable shard's
// Drain wait on disk, so their reactors are parked and finished from the
// Checkpointer's thread; ListCheckpoints, Status and SetConfig are bounded
// and finish inline, as does DropNamespace. Every method is behind the gate (server/gate.h):
// Status and ListCheckpoints need a reader token, the rest an admin token,
// and Checkpoint, Restore and Drain one not limited to some namespaces
// (they act on all of them). Status shows a limited token only its
// namespaces.
//
// Thread safety: handlers run concurrently on gRPC's threads; the state they
// touch is thread-safe.
#ifndef PSKIT_SERVER_ADMIN_SERVICE_H_
#define PSKIT_SERVER_ADMIN_SERVICE_H_

#include "pskit/v1/admin.grpc.pb.h"
#include "server/checkpoint_store.h"
#include "server/checkpointer.h"
#include "server/chunk_store.h"
#include "server/consistency.h"
#include "server/gate.h"
#include "server/worker_registry.h"

namespace pskit {

class AdminService final : public GatedService<v1::Admin::Service> {
 public:
  // Borrows everything; `checkpoints` and `checkpointer` are null for a
  // memory-only shard; `consistency` may be null (no held calls). All must
  // outlive the service.
  AdminService(ChunkStore* store, WorkerRegistry* workers,
               CheckpointStore* checkpoints, Checkpointer* checkpointer,
               Gate* gate, Consistency* consistency = nullptr);

  void Checkpoint(
      ServerCall<v1::CheckpointRequest, v1::CheckpointResponse>* call);
  void ListCheckpoints(ServerCall<v1::ListCheckpointsRequest,
                                  v1::ListCheckpointsResponse>* call);
  void Restore(ServerCall<v1::RestoreRequest, v1::RestoreResponse>* call);
  void Status(ServerCall<v1::StatusRequest, v1::StatusResponse>* call);
  void SetConfig(ServerCall<v1::SetConfigRequest, v1::SetConfigResponse>* call);
  void Drain(ServerCall<v1::DrainRequest, v1::DrainResponse>* call);
  void DropNamespace(
      ServerCall<v1::DropNamespaceRequest, v1::DropNamespaceResponse>* call);

 private:
  ChunkStore* const store_;
  WorkerRegistry* const workers_;
  CheckpointStore* const checkpoints_;
  Checkpointer* const checkpointer_;
  Consistency* const consistency_;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_ADMIN_SERVICE_H_
