// worker/algorithms/downpour.cc: push gradients, pull weights.
#include "worker/algorithms/downpour.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/algorithms/shard_session.h"
#include "worker/host_params.h"

namespace pskit::worker {
namespace {

class Downpour final : public Algorithm {
 public:
  Downpour(const AlgorithmOptions& options, const AlgorithmContext& context,
           std::vector<DeviceBuffer> sums)
      : options_(options),
        context_(context),
        grads_(GradPointers(context.model)),
        session_(context),
        outgoing_(*context.model),
        sums_(std::move(sums)) {}

  absl::Status Setup() override { return session_.Join(); }

  absl::Status AfterGradient(int64_t step) override {
    Backend* const be = context_.backend;
    if (options_.n_push > 1) {
      for (size_t i = 0; i < grads_.size(); ++i) {
        PSKIT_RETURN_IF_ERROR(
            be->Axpy(1.0f, grads_[i], sums_[i].data(), sums_[i].size()));
      }
    }
    if (step % options_.n_push != 0) return absl::OkStatus();
    // The gradient (summed since the last push) goes out from outgoing_.
    for (size_t i = 0; i < grads_.size(); ++i) {
      const float* src = options_.n_push > 1 ? sums_[i].data() : grads_[i];
      PSKIT_RETURN_IF_ERROR(be->CopyToHost(src, outgoing_.values[i].data(),
                                           outgoing_.values[i].size()));
    }
    return absl::OkStatus();
  }

  absl::Status Communicate(int64_t step, PhaseSink* phases) override {
    const bool push = step % options_.n_push == 0;
    const bool fetch = step % options_.n_fetch == 0;
    const std::string& ns = context_.job->ns;
    Client* const client = session_.client();
    HostParams& weights = session_.weights();
    if (push) {
      PhaseSink::Span span(phases, fetch ? "pushpull" : "push");
      if (fetch) {
        PSKIT_RETURN_IF_ERROR(session_.Recover(
            client->PushPull(ns, outgoing_.const_views, weights.mutable_views)
                .status()));
        PSKIT_RETURN_IF_ERROR(session_.WeightsToModel());
      } else {
        PSKIT_RETURN_IF_ERROR(
            session_.Recover(client->Push(ns, outgoing_.const_views).status()));
      }
      if (options_.n_push > 1) {  // start the next sum from zero
        for (DeviceBuffer& sum : sums_) {
          PSKIT_ASSIGN_OR_RETURN(sum, context_.backend->Allocate(sum.size()));
        }
      }
    } else if (fetch) {
      PhaseSink::Span span(phases, "pull");
      PSKIT_RETURN_IF_ERROR(
          session_.Recover(client->Pull(ns, weights.mutable_views)));
      PSKIT_RETURN_IF_ERROR(session_.WeightsToModel());
    }
    return absl::OkStatus();
  }

  bool JobDone() const override { return session_.job_done(); }
  void Finish() override { session_.Leave(); }

 private:
  // Constant after construction.
  const AlgorithmOptions options_;
  const AlgorithmContext context_;
  const std::vector<float*> grads_;  // the model's, on the backend

  ShardSession session_;
  HostParams outgoing_;  // the gradient on its way to the shards
  // With n_push > 1: the gradients summed since the last push, one per
  // tensor, on the backend; empty otherwise.
  std::vector<DeviceBuffer> sums_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Algorithm>> MakeDownpour(
    const AlgorithmOptions& options, const AlgorithmContext& context) {
  if (options.n_push < 1 || options.n_fetch < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--n_push (", options.n_push, ") and --n_fetch (", options.n_fetch,
        ") must be >= 1"));
  }
  std::vector<DeviceBuffer> sums;
  if (options.n_push > 1) {
    for (size_t i = 0; i < context.model->num_params(); ++i) {
      PSKIT_ASSIGN_OR_RETURN(DeviceBuffer sum, context.backend->Allocate(
                                                   context.model->param_size(i)));
      sums.push_back(std::move(sum));
    }
  }
  return std::make_unique<Downpour>(options, context, std::move(sums));
}

}  // namespace pskit::worker
