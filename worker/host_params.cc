// worker/host_params.cc: host copies of a model's tensors.
#include "worker/host_params.h"

#include "common/status_macros.h"

namespace pskit::worker {

HostParams::HostParams(const Mlp& mlp) : values(mlp.num_params()) {
  for (size_t i = 0; i < values.size(); ++i) {
    values[i].resize(mlp.param_size(i));
    mutable_views.push_back({mlp.specs()[i].name(), absl::MakeSpan(values[i])});
    const_views.push_back({mlp.specs()[i].name(), values[i]});
  }
}

absl::Status HostParams::CopyTo(Backend* backend,
                                const std::vector<float*>& device) const {
  for (size_t i = 0; i < values.size(); ++i) {
    PSKIT_RETURN_IF_ERROR(
        backend->CopyToDevice(values[i].data(), device[i], values[i].size()));
  }
  return absl::OkStatus();
}

absl::Status HostParams::CopyFrom(Backend* backend,
                                  const std::vector<float*>& device) {
  for (size_t i = 0; i < values.size(); ++i) {
    PSKIT_RETURN_IF_ERROR(
        backend->CopyToHost(device[i], values[i].data(), values[i].size()));
  }
  return absl::OkStatus();
}

std::vector<float*> ParamPointers(Mlp* mlp) {
  std::vector<float*> out;
  for (size_t i = 0; i < mlp->num_params(); ++i) out.push_back(mlp->param(i));
  return out;
}

std::vector<float*> GradPointers(Mlp* mlp) {
  std::vector<float*> out;
  for (size_t i = 0; i < mlp->num_params(); ++i) out.push_back(mlp->grad(i));
  return out;
}

}  // namespace pskit::worker
