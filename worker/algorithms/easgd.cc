// worker/algorithms/easgd.cc: local momentum SGD and elastic exchanges.
#include "worker/algorithms/easgd.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/algorithms/shard_session.h"

namespace pskit::worker {
namespace {

class Easgd final : public Algorithm {
 public:
  Easgd(const AlgorithmOptions& options, const AlgorithmContext& context,
        float alpha, std::vector<DeviceBuffer> velocity)
      : options_(options),
        context_(context),
        alpha_(alpha),
        params_(ParamPointers(context.model)),
        grads_(GradPointers(context.model)),
        session_(context),
        velocity_(std::move(velocity)) {}

  absl::Status Setup() override { return session_.Join(); }

  absl::Status AfterGradient(int64_t /*step*/) override {
    for (size_t i = 0; i < params_.size(); ++i) {
      PSKIT_RETURN_IF_ERROR(context_.backend->MomentumStep(
          options_.local_lr, options_.local_momentum, options_.nesterov,
          grads_[i], velocity_[i].data(), params_[i], velocity_[i].size(),
          /*sum=*/nullptr, /*restart_sum=*/false));
    }
    return absl::OkStatus();
  }

  absl::Status Communicate(int64_t step, PhaseSink* phases) override {
    if (step % options_.tau != 0) return absl::OkStatus();
    PhaseSink::Span span(phases, "exchange");
    PSKIT_RETURN_IF_ERROR(session_.ModelToWeights());
    PSKIT_RETURN_IF_ERROR(session_.Recover(session_.client()->Exchange(
        context_.job->ns, alpha_, session_.weights().mutable_views)));
    return session_.WeightsToModel();
  }

  bool JobDone() const override { return session_.job_done(); }
  void Finish() override { session_.Leave(); }

 private:
  // Constant after construction.
  const AlgorithmOptions options_;
  const AlgorithmContext context_;
  const float alpha_;
  const std::vector<float*> params_;  // the model's, on the backend
  const std::vector<float*> grads_;

  ShardSession session_;
  std::vector<DeviceBuffer> velocity_;  // the local momentum, per tensor
};

}  // namespace

absl::StatusOr<std::unique_ptr<Algorithm>> MakeEasgd(
    const AlgorithmOptions& options, const AlgorithmContext& context) {
  if (options.tau < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tau ", options.tau, " must be >= 1"));
  }
  const float alpha = options.alpha > 0
                          ? options.alpha
                          : 0.9f / static_cast<float>(context.world);
  if (!(alpha > 0 && alpha <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("alpha ", alpha, " must be in (0, 1]"));
  }
  std::vector<DeviceBuffer> velocity;
  for (size_t i = 0; i < context.model->num_params(); ++i) {
    PSKIT_ASSIGN_OR_RETURN(DeviceBuffer v, context.backend->Allocate(
                                               context.model->param_size(i)));
    velocity.push_back(std::move(v));
  }
  return std::make_unique<Easgd>(options, context, alpha, std::move(velocity));
}

}  // namespace pskit::worker
