// worker/algorithms/local.cc: the shards' optimizer, run on the worker.
#include "worker/algorithms/local.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/initializer.h"
#include "common/optimizer_config.h"
#include "worker/algorithms/local_optimizer.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "worker/host_params.h"

namespace pskit::worker {
namespace {

class Local final : public Algorithm {
 public:
  Local(const AlgorithmContext& context, LocalOptimizer optimizer)
      : context_(context),
        params_(ParamPointers(context.model)),
        optimizer_(std::move(optimizer)) {}

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
    return optimizer_.Step(step);
  }

  absl::Status Communicate(int64_t, PhaseSink*) override {
    return absl::OkStatus();  // nobody to talk to
  }

 private:
  // Constant after construction.
  const AlgorithmContext context_;
  const std::vector<float*> params_;  // the model's, on the backend

  LocalOptimizer optimizer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Algorithm>> MakeLocal(
    const AlgorithmOptions& /*options*/, const AlgorithmContext& context) {
  PSKIT_ASSIGN_OR_RETURN(LocalOptimizer optimizer,
                         LocalOptimizer::Make(context, "--algorithm local"));
  return std::make_unique<Local>(context, std::move(optimizer));
}

}  // namespace pskit::worker
