// worker/algorithms/local.cc: the shards' optimizer, run on the worker.
#include "worker/algorithms/local.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/initializer.h"
#include "common/optimizer_config.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "worker/host_params.h"

namespace pskit::worker {
namespace {

class Local final : public Algorithm {
 public:
  Local(const AlgorithmContext& context, v1::OptimizerConfig optimizer,
        std::vector<DeviceBuffer> slot1, std::vector<DeviceBuffer> slot2)
      : context_(context),
        optimizer_(std::move(optimizer)),
        params_(ParamPointers(context.model)),
        grads_(GradPointers(context.model)),
        slot1_(std::move(slot1)),
        slot2_(std::move(slot2)) {}

  // The values a shard gives each element on Declare: same specs, same
  // namespace (an empty one is the shards' default), same function.
  absl::Status Setup() override {
    const Mlp& model = *context_.model;
    const std::string ns = NamespaceOf(context_.job->ns);
    HostParams initial(model);
    for (size_t i = 0; i < model.num_params(); ++i) {
      const v1::TensorSpec& spec = model.specs()[i];
      PSKIT_RETURN_IF_ERROR(ValidateInitializer(spec));
      if (spec.init().kind() == v1::INIT_EXPLICIT) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", spec.name(), "' has explicit initial values, which "
            "only a Declare to the shards can carry"));
      }
      FillInitialValues(ns, spec, 0, absl::MakeSpan(initial.values[i]));
    }
    return initial.CopyTo(context_.backend, params_);
  }

  absl::Status AfterGradient(int64_t step) override {
    const v1::OptimizerConfig& opt = optimizer_;
    for (size_t i = 0; i < params_.size(); ++i) {
      const size_t n = slot1_[i].size();
      if (opt.kind() == v1::OPTIMIZER_ADAM) {
        PSKIT_RETURN_IF_ERROR(context_.backend->AdamStep(
            opt.learning_rate(), opt.beta1(), opt.beta2(), opt.epsilon(), step,
            grads_[i], slot1_[i].data(), slot2_[i].data(), params_[i], n));
      } else {
        const float mu = opt.kind() == v1::OPTIMIZER_SGD ? 0.0f : opt.momentum();
        PSKIT_RETURN_IF_ERROR(context_.backend->MomentumStep(
            opt.learning_rate(), mu, opt.kind() == v1::OPTIMIZER_NESTEROV,
            grads_[i], slot1_[i].data(), params_[i], n));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Communicate(int64_t, PhaseSink*) override {
    return absl::OkStatus();  // nobody to talk to
  }

 private:
  // Constant after construction.
  const AlgorithmContext context_;
  const v1::OptimizerConfig optimizer_;  // normalized: every default filled
  const std::vector<float*> params_;     // the model's, on the backend
  const std::vector<float*> grads_;

  // The optimizer's state per tensor: momentum (or Adam's first moment),
  // and Adam's second moment.
  std::vector<DeviceBuffer> slot1_;
  std::vector<DeviceBuffer> slot2_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Algorithm>> MakeLocal(
    const AlgorithmOptions& /*options*/, const AlgorithmContext& context) {
  PSKIT_ASSIGN_OR_RETURN(const v1::NamespaceConfig normalized,
                         NormalizeConfig(context.job->server_config));
  const v1::OptimizerConfig& opt = normalized.optimizer();
  if (opt.kind() != v1::OPTIMIZER_SGD && opt.kind() != v1::OPTIMIZER_MOMENTUM &&
      opt.kind() != v1::OPTIMIZER_NESTEROV && opt.kind() != v1::OPTIMIZER_ADAM) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--algorithm local runs sgd, momentum, nesterov or adam, not ",
        v1::OptimizerKind_Name(opt.kind())));
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
  return std::make_unique<Local>(context, opt, std::move(slot1),
                                 std::move(slot2));
}

}  // namespace pskit::worker
