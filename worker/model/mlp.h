// worker/model/mlp.h
//
// Mlp: a fully connected network from --layers (e.g. 784,512,256,10) with
// one hidden activation and a softmax cross-entropy or MSE loss, computed on
// a Backend. Layer i has parameters "fc<i>/w" of shape [in, out] (y = x W,
// as in Keras) and "fc<i>/b" of shape [out]; the last layer is linear.
//
// ForwardBackward runs one batch and leaves the gradient of the mean loss
// in grad(i), aligned with param(i).
//
// Thread safety: one thread at a time (as its Backend).
#ifndef PSKIT_WORKER_MODEL_MLP_H_
#define PSKIT_WORKER_MODEL_MLP_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "pskit/v1/ps.pb.h"
#include "worker/backend/backend.h"

namespace pskit::worker {

enum class Loss { kSoftmaxCrossEntropy, kMeanSquaredError };

struct MlpConfig {
  std::vector<int> layers;  // input width, hidden widths..., output width
  Activation activation = Activation::kRelu;
  Loss loss = Loss::kSoftmaxCrossEntropy;
};

// Parses "784,512,10", "relu|tanh|sigmoid" and "xent|mse". INVALID_ARGUMENT
// with what is wrong (fewer than two layers, a width < 1, unknown names).
absl::StatusOr<MlpConfig> ParseMlpConfig(absl::string_view layers,
                                         absl::string_view activation,
                                         absl::string_view loss);

struct StepResult {
  float loss = 0;
  int correct = 0;  // rows whose argmax is the label
};

class Mlp {
 public:
  // Allocates parameters, gradients and activations for batches of up to
  // `max_batch` rows on `backend` (borrowed; must outlive the Mlp).
  static absl::StatusOr<std::unique_ptr<Mlp>> Create(const MlpConfig& config,
                                                     Backend* backend,
                                                     int max_batch);

  // The parameter tensors, in param(i) order, with the initializer each
  // should be declared with (he_normal before relu, glorot otherwise;
  // biases zero).
  const std::vector<v1::TensorSpec>& specs() const { return specs_; }
  size_t num_params() const { return params_.size(); }
  float* param(size_t i) { return params_[i].data(); }
  float* grad(size_t i) { return grads_[i].data(); }
  size_t param_size(size_t i) const { return params_[i].size(); }
  const MlpConfig& config() const { return config_; }

  ~Mlp();

  // One batch of labels.size() rows: x[batch, layers[0]] in device memory,
  // labels in host memory. Fills every grad(i). INVALID_ARGUMENT for a batch
  // outside [1, max_batch] or a label outside [0, classes); the gradients
  // are then undefined.
  absl::StatusOr<StepResult> ForwardBackward(const float* x,
                                             absl::Span<const int32_t> labels);
  // Forward only (evaluation).
  absl::StatusOr<StepResult> Evaluate(const float* x,
                                      absl::Span<const int32_t> labels);

 private:
  Mlp(const MlpConfig& config, Backend* backend, int max_batch)
      : config_(config), backend_(backend), max_batch_(max_batch) {}
  absl::StatusOr<StepResult> Forward(const float* x,
                                     absl::Span<const int32_t> labels,
                                     bool backward);

  const MlpConfig config_;
  Backend* const backend_;
  const int max_batch_;
  std::vector<v1::TensorSpec> specs_;
  std::vector<DeviceBuffer> params_;  // w0, b0, w1, b1, ...
  std::vector<DeviceBuffer> grads_;
  std::vector<DeviceBuffer> acts_;    // per layer output [max_batch, out]
  std::vector<DeviceBuffer> deltas_;  // per layer dloss/dz [max_batch, out]
  DeviceBuffer onehot_;               // MSE targets
  std::vector<float> onehot_host_;
  int32_t* labels_ = nullptr;         // device copy of a batch's labels
};

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_MODEL_MLP_H_
