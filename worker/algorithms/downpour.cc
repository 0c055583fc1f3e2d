// worker/algorithms/downpour.cc: push gradients, pull weights; with overlap,
// on a communication thread while the next step computes.
#include "worker/algorithms/downpour.h"

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "worker/algorithms/comm_thread.h"
#include "worker/algorithms/local_optimizer.h"
#include "worker/algorithms/shard_session.h"
#include "worker/host_params.h"

namespace pskit::worker {
namespace {

class Downpour final : public Algorithm {
 public:
  Downpour(const AlgorithmOptions& options, const AlgorithmContext& context,
           std::vector<DeviceBuffer> sums,
           std::optional<LocalOptimizer> local)
      : options_(options),
        context_(context),
        grads_(GradPointers(context.model)),
        summing_(!sums.empty()),
        session_(context),
        outgoing_(*context.model),
        sums_(std::move(sums)),
        local_(std::move(local)) {
    if (options_.overlap) comm_ = std::make_unique<CommThread>();
  }

  // The communication thread goes first: its exchange borrows the session
  // and the buffers.
  ~Downpour() override { comm_.reset(); }

  absl::Status Setup() override { return session_.Join(); }

  absl::Status AfterGradient(int64_t step) override {
    if (local_.has_value()) {
      // The local step adds the gradient to the sums in its own pass.
      const bool restart = restart_sums_;
      restart_sums_ = false;
      return local_->Step(step, summing_ ? &sums_ : nullptr, restart);
    }
    for (size_t i = 0; summing_ && i < grads_.size(); ++i) {
      PSKIT_RETURN_IF_ERROR(context_.backend->Axpy(
          1.0f, grads_[i], sums_[i].data(), sums_[i].size()));
    }
    return absl::OkStatus();
  }

  absl::Status Communicate(int64_t step, PhaseSink* phases) override {
    const bool push = step % options_.n_push == 0;
    const bool fetch = step % options_.n_fetch == 0;
    if (comm_ == nullptr) return CommunicateInline(push, fetch, phases);
    if (!push && !fetch) return absl::OkStatus();
    // The gradient of this step was computed on the weights in the model,
    // which lack the pushes made since they were fetched.
    const int64_t behind = pushes_sent_ - pushes_in_model_;
    PSKIT_RETURN_IF_ERROR(Collect(phases));
    if (push) {
      PSKIT_RETURN_IF_ERROR(StageGradient());
      ObserveStaleness(behind);
    }
    return StartExchange(push, fetch);
  }

  absl::Status Drain(PhaseSink* phases) override { return Collect(phases); }

  bool JobDone() const override { return session_.job_done(); }
  void Finish() override {
    if (comm_ != nullptr) comm_->Wait();  // Drain took it unless it failed
    session_.Leave();
  }

 private:
  // --overlap=false: the exchange on the training thread, as it comes.
  absl::Status CommunicateInline(bool push, bool fetch, PhaseSink* phases) {
    const std::string& ns = context_.job->ns;
    Client* const client = session_.client();
    HostParams& weights = session_.weights();
    if (push) {
      ObserveStaleness(pushes_sent_ - pushes_in_model_);
      PSKIT_RETURN_IF_ERROR(StageGradient());
      ++pushes_sent_;
      PhaseSink::Span span(phases, fetch ? "pushpull" : "push");
      if (fetch) {
        PSKIT_RETURN_IF_ERROR(session_.Recover(
            client->PushPull(ns, outgoing_.const_views, weights.mutable_views)
                .status()));
      } else {
        PSKIT_RETURN_IF_ERROR(
            session_.Recover(client->Push(ns, outgoing_.const_views).status()));
      }
    } else if (fetch) {
      PhaseSink::Span span(phases, "pull");
      PSKIT_RETURN_IF_ERROR(
          session_.Recover(client->Pull(ns, weights.mutable_views)));
    }
    if (fetch) {
      PSKIT_RETURN_IF_ERROR(session_.WeightsToModel());
      pushes_in_model_ = pushes_sent_;
    }
    return absl::OkStatus();
  }

  // The gradient (summed since the last push) -> outgoing_, and the sum
  // starts again: the local step's next pass overwrites it, else it is
  // zeroed. Precondition: no exchange in flight.
  absl::Status StageGradient() {
    Backend* const be = context_.backend;
    for (size_t i = 0; i < grads_.size(); ++i) {
      const float* src = summing_ ? sums_[i].data() : grads_[i];
      PSKIT_RETURN_IF_ERROR(be->CopyToHost(src, outgoing_.values[i].data(),
                                           outgoing_.values[i].size()));
    }
    if (local_.has_value()) {
      restart_sums_ = true;
      return absl::OkStatus();
    }
    for (DeviceBuffer& sum : sums_) {
      PSKIT_ASSIGN_OR_RETURN(sum, be->Allocate(sum.size()));
    }
    return absl::OkStatus();
  }

  // Hands the exchange to the communication thread: from now until
  // Collect, outgoing_ and the session's weights are the thread's alone.
  absl::Status StartExchange(bool push, bool fetch) {
    if (push) ++pushes_sent_;
    in_flight_ = {push, fetch, pushes_sent_};
    Client* const client = session_.client();
    const std::string* ns = &context_.job->ns;
    HostParams* weights = &session_.weights();
    return comm_->Start([this, client, ns, weights, push, fetch] {
      if (push && fetch) {
        return client
            ->PushPull(*ns, outgoing_.const_views, weights->mutable_views)
            .status();
      }
      if (push) return client->Push(*ns, outgoing_.const_views).status();
      return client->Pull(*ns, weights->mutable_views);
    });
  }

  // Waits for the exchange in flight, if any, and takes its result: its
  // span (and the time this thread waited) go to `phases`; fresh weights go
  // into the model at this step boundary; a shard that restarted empty is
  // recovered as inline (the update in flight is not repeated).
  absl::Status Collect(PhaseSink* phases) {
    if (comm_ == nullptr || !comm_->busy()) return absl::OkStatus();
    const absl::Time wait_start = absl::Now();
    CommThread::Result r = comm_->Wait();
    if (phases != nullptr) {
      phases->Add(in_flight_.push ? (in_flight_.fetch ? "pushpull" : "push")
                                  : "pull",
                  r.start, r.end, /*track=*/1);
      phases->Add("comm_wait", wait_start, absl::Now());
    }
    if (r.status.code() == absl::StatusCode::kNotFound) {
      PSKIT_RETURN_IF_ERROR(session_.Recover(std::move(r.status)));
      pushes_in_model_ = pushes_sent_;
      return absl::OkStatus();
    }
    PSKIT_RETURN_IF_ERROR(r.status);
    if (in_flight_.fetch) {
      PSKIT_RETURN_IF_ERROR(session_.WeightsToModel());
      pushes_in_model_ = in_flight_.pushes_sent;
    }
    return absl::OkStatus();
  }

  void ObserveStaleness(int64_t behind) {
    if (context_.job->metrics != nullptr) {
      context_.job->metrics->ObserveStaleness(behind);
    }
  }

  // What the exchange in flight does.
  struct InFlight {
    bool push = false;
    bool fetch = false;
    int64_t pushes_sent = 0;  // this worker's pushes, this one included
  };

  // Constant after construction.
  const AlgorithmOptions options_;
  const AlgorithmContext context_;
  const std::vector<float*> grads_;  // the model's, on the backend
  const bool summing_;  // n_push > 1: sums_ holds the gradient

  ShardSession session_;
  HostParams outgoing_;  // the gradient on its way to the shards
  // With summing_: the gradients summed since the last push, one per
  // tensor, on the backend; empty otherwise.
  std::vector<DeviceBuffer> sums_;
  // With local_: the next local step starts the sums instead of adding to
  // them (they hold a pushed sum, or zeros at the start).
  bool restart_sums_ = true;
  // With options_.local_update: the job's optimizer, applied to the model's
  // weights each step (its state lives on across fetches).
  std::optional<LocalOptimizer> local_;
  // Pushes this worker made, and how many of them the model's weights
  // hold (they were fetched after them): the difference is the staleness
  // of the next gradient in this worker's own pushes.
  int64_t pushes_sent_ = 0;
  int64_t pushes_in_model_ = 0;
  InFlight in_flight_;
  std::unique_ptr<CommThread> comm_;  // null with --overlap=false
};

}  // namespace

absl::StatusOr<std::unique_ptr<Algorithm>> MakeDownpour(
    const AlgorithmOptions& options, const AlgorithmContext& context) {
  if (options.n_push < 1 || options.n_fetch < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--n_push (", options.n_push, ") and --n_fetch (", options.n_fetch,
        ") must be >= 1"));
  }
  if (options.local_update && options.n_fetch < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--local_update needs --n_fetch of 2 or more (it is ",
        options.n_fetch, "): the weights fetched after every step would "
        "overwrite each local update"));
  }
  std::optional<LocalOptimizer> local;
  if (options.local_update) {
    PSKIT_ASSIGN_OR_RETURN(local,
                           LocalOptimizer::Make(context, "--local_update"));
  }
  std::vector<DeviceBuffer> sums;
  if (options.n_push > 1) {
    for (size_t i = 0; i < context.model->num_params(); ++i) {
      PSKIT_ASSIGN_OR_RETURN(DeviceBuffer sum, context.backend->Allocate(
                                                   context.model->param_size(i)));
      sums.push_back(std::move(sum));
    }
  }
  return std::make_unique<Downpour>(options, context, std::move(sums),
                                    std::move(local));
}

}  // namespace pskit::worker
