// worker/host_params.h
//
// HostParams: host-memory copies of a model's tensors, one buffer per
// tensor in the model's param(i) order, with the named views the client
// pulls into and pushes from, and the copies between them and the backend.
//
// Example:
//   HostParams host(*mlp);
//   PSKIT_RETURN_IF_ERROR(client->Pull(ns, host.mutable_views));
//   PSKIT_RETURN_IF_ERROR(host.CopyTo(backend, ParamPointers(mlp)));
//
// Thread safety: none; one thread (the training loop) owns it.
#ifndef PSKIT_WORKER_HOST_PARAMS_H_
#define PSKIT_WORKER_HOST_PARAMS_H_

#include <vector>

#include "absl/status/status.h"
#include "client/client.h"
#include "worker/backend/backend.h"
#include "worker/model/mlp.h"

namespace pskit::worker {

struct HostParams {
  // Zeroed buffers shaped like `mlp`'s tensors (named by its specs).
  explicit HostParams(const Mlp& mlp);
  HostParams(const HostParams&) = delete;
  HostParams& operator=(const HostParams&) = delete;

  // Copies every buffer to the matching device pointer (param(i) or grad(i)
  // order). Errors are the backend's.
  [[nodiscard]] absl::Status CopyTo(Backend* backend,
                                    const std::vector<float*>& device) const;
  // Copies every device buffer into the matching host buffer.
  [[nodiscard]] absl::Status CopyFrom(Backend* backend,
                                      const std::vector<float*>& device);

  std::vector<std::vector<float>> values;
  // Views of `values`, named by tensor; valid while this object lives.
  std::vector<TensorBuffer> mutable_views;
  std::vector<ConstTensorBuffer> const_views;
};

// mlp->param(i) for every i: the device side of the weights.
std::vector<float*> ParamPointers(Mlp* mlp);
// mlp->grad(i) for every i: the device side of the gradients.
std::vector<float*> GradPointers(Mlp* mlp);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_HOST_PARAMS_H_
