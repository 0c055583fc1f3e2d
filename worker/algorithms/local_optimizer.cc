// worker/algorithms/local_optimizer.cc
#include "worker/algorithms/local_optimizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/optimizer_config.h"
#include "common/status_macros.h"
#include "worker/host_params.h"

namespace pskit::worker {

absl::StatusOr<LocalOptimizer> LocalOptimizer::Make(
    const AlgorithmContext& context, const char* who) {
  PSKIT_ASSIGN_OR_RETURN(const v1::NamespaceConfig normalized,
                         NormalizeConfig(context.job->server_config));
  const v1::OptimizerConfig& opt = normalized.optimizer();
  if (opt.kind() != v1::OPTIMIZER_SGD && opt.kind() != v1::OPTIMIZER_MOMENTUM &&
      opt.kind() != v1::OPTIMIZER_NESTEROV && opt.kind() != v1::OPTIMIZER_ADAM) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, " runs sgd, momentum, nesterov or adam, not ",
        v1::OptimizerKind_Name(opt.kind())));
  }
  if (opt.weight_decay() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, " applies no weight decay, and the shards' optimizer has ",
        opt.weight_decay(), ": leave weight_decay unset"));
  }
  std::vector<DeviceBuffer> slot1, slot2;
  for (size_t i = 0; i < context.model->num_params(); ++i) {
    const size_t n = context.model->param_size(i);
    PSKIT_ASSIGN_OR_RETURN(DeviceBuffer s1, context.backend->Allocate(n));
    PSKIT_ASSIGN_OR_RETURN(
        DeviceBuffer s2,
        context.backend->Allocate(opt.kind() == v1::OPTIMIZER_ADAM ? n : 0));
    slot1.push_back(std::move(s1));
    slot2.push_back(std::move(s2));
  }
  return LocalOptimizer(context, opt, std::move(slot1), std::move(slot2));
}

LocalOptimizer::LocalOptimizer(const AlgorithmContext& context,
                               v1::OptimizerConfig opt,
                               std::vector<DeviceBuffer> slot1,
                               std::vector<DeviceBuffer> slot2)
    : backend_(context.backend),
      optimizer_(std::move(opt)),
      params_(ParamPointers(context.model)),
      grads_(GradPointers(context.model)),
      slot1_(std::move(slot1)),
      slot2_(std::move(slot2)) {}

absl::Status LocalOptimizer::Step(int64_t step,
                                  std::vector<DeviceBuffer>* sums,
                                  bool restart_sums) {
  const v1::OptimizerConfig& opt = optimizer_;
  for (size_t i = 0; i < params_.size(); ++i) {
    const size_t n = slot1_[i].size();
    float* const sum = sums != nullptr ? (*sums)[i].data() : nullptr;
    if (opt.kind() == v1::OPTIMIZER_ADAM) {
      PSKIT_RETURN_IF_ERROR(backend_->AdamStep(
          opt.learning_rate(), opt.beta1(), opt.beta2(), opt.epsilon(), step,
          grads_[i], slot1_[i].data(), slot2_[i].data(), params_[i], n, sum,
          restart_sums));
    } else {
      const float mu = opt.kind() == v1::OPTIMIZER_SGD ? 0.0f : opt.momentum();
      PSKIT_RETURN_IF_ERROR(backend_->MomentumStep(
          opt.learning_rate(), mu, opt.kind() == v1::OPTIMIZER_NESTEROV,
          grads_[i], slot1_[i].data(), params_[i], n, sum, restart_sums));
    }
  }
  return absl::OkStatus();
}

}  // namespace pskit::worker
