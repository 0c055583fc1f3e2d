#include "worker/model/mlp.h"

#include <algorithm>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace pskit::worker {

absl::StatusOr<MlpConfig> ParseMlpConfig(absl::string_view layers,
                                         absl::string_view activation,
                                         absl::string_view loss) {
  MlpConfig config;
  for (absl::string_view part : absl::StrSplit(layers, ',')) {
    int width = 0;
    if (!absl::SimpleAtoi(part, &width) || width < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--layers '", layers, "': '", part,
          "' is not a positive width; write e.g. 784,512,256,10"));
    }
    config.layers.push_back(width);
  }
  if (config.layers.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--layers '", layers,
        "' needs at least an input and an output width, e.g. 784,10"));
  }
  PSKIT_ASSIGN_OR_RETURN(config.activation, ParseActivation(activation));
  if (loss == "xent" || loss == "softmax_cross_entropy") {
    config.loss = Loss::kSoftmaxCrossEntropy;
  } else if (loss == "mse") {
    config.loss = Loss::kMeanSquaredError;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("loss '", loss, "' is not known; use xent or mse"));
  }
  return config;
}

absl::StatusOr<std::unique_ptr<Mlp>> Mlp::Create(const MlpConfig& config,
                                                 Backend* backend,
                                                 int max_batch) {
  if (max_batch < 1) {
    return absl::InvalidArgumentError("the batch size must be at least 1");
  }
  auto mlp = std::unique_ptr<Mlp>(new Mlp(config, backend, max_batch));
  const int n_layers = static_cast<int>(config.layers.size()) - 1;
  for (int l = 0; l < n_layers; ++l) {
    const int in = config.layers[l], out = config.layers[l + 1];
    v1::TensorSpec w, b;
    w.set_name(absl::StrCat("fc", l, "/w"));
    w.add_shape(in);
    w.add_shape(out);
    // He init suits ReLU layers; Glorot suits tanh/sigmoid and the linear
    // output layer.
    const bool relu_follows =
        l + 1 < n_layers && config.activation == Activation::kRelu;
    w.mutable_init()->set_kind(relu_follows ? v1::INIT_HE_NORMAL
                                            : v1::INIT_GLOROT_UNIFORM);
    w.mutable_init()->set_seed(l + 1);
    b.set_name(absl::StrCat("fc", l, "/b"));
    b.add_shape(out);
    b.mutable_init()->set_kind(v1::INIT_ZEROS);
    for (const v1::TensorSpec& spec : {w, b}) {
      mlp->specs_.push_back(spec);
      const size_t n = spec.shape_size() == 2
                           ? static_cast<size_t>(spec.shape(0)) * spec.shape(1)
                           : static_cast<size_t>(spec.shape(0));
      PSKIT_ASSIGN_OR_RETURN(DeviceBuffer p, backend->Allocate(n));
      PSKIT_ASSIGN_OR_RETURN(DeviceBuffer g, backend->Allocate(n));
      mlp->params_.push_back(std::move(p));
      mlp->grads_.push_back(std::move(g));
    }
    PSKIT_ASSIGN_OR_RETURN(DeviceBuffer a,
                           backend->Allocate(static_cast<size_t>(max_batch) * out));
    PSKIT_ASSIGN_OR_RETURN(DeviceBuffer d,
                           backend->Allocate(static_cast<size_t>(max_batch) * out));
    mlp->acts_.push_back(std::move(a));
    mlp->deltas_.push_back(std::move(d));
  }
  PSKIT_ASSIGN_OR_RETURN(mlp->labels_, backend->AllocateInts(max_batch));
  if (config.loss == Loss::kMeanSquaredError) {
    const size_t n = static_cast<size_t>(max_batch) * config.layers.back();
    PSKIT_ASSIGN_OR_RETURN(mlp->onehot_, backend->Allocate(n));
    mlp->onehot_host_.resize(n);
  }
  return mlp;
}

Mlp::~Mlp() {
  if (labels_ != nullptr) backend_->FreeInts(labels_);
}

absl::StatusOr<StepResult> Mlp::ForwardBackward(
    const float* x, absl::Span<const int32_t> labels) {
  return Forward(x, labels, /*backward=*/true);
}

absl::StatusOr<StepResult> Mlp::Evaluate(const float* x,
                                         absl::Span<const int32_t> labels) {
  return Forward(x, labels, /*backward=*/false);
}

absl::StatusOr<StepResult> Mlp::Forward(const float* x,
                                        absl::Span<const int32_t> labels,
                                        bool backward) {
  const int batch = static_cast<int>(labels.size());
  if (batch < 1 || batch > max_batch_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch of ", batch, " rows; this model takes 1 to ", max_batch_));
  }
  Backend& be = *backend_;
  const int n_layers = static_cast<int>(config_.layers.size()) - 1;
  const float* input = x;
  for (int l = 0; l < n_layers; ++l) {
    const int in = config_.layers[l], out = config_.layers[l + 1];
    float* z = acts_[l].data();
    PSKIT_RETURN_IF_ERROR(be.Gemm(false, false, batch, out, in, 1.0f, input,
                                  params_[2 * l].data(), 0.0f, z));
    PSKIT_RETURN_IF_ERROR(be.AddBias(z, params_[2 * l + 1].data(), batch, out));
    if (l + 1 < n_layers) {
      PSKIT_RETURN_IF_ERROR(be.Activate(config_.activation, z, z,
                                        static_cast<size_t>(batch) * out));
    }
    input = z;
  }
  const int classes = config_.layers.back();
  for (int r = 0; r < batch; ++r) {
    if (labels[r] < 0 || labels[r] >= classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label ", labels[r], " of row ", r, " is outside [0, ", classes,
          "): the data has more classes than the model's output layer"));
    }
  }
  float* logits = acts_.back().data();
  float* dlogits = deltas_.back().data();
  StepResult result;
  if (config_.loss == Loss::kSoftmaxCrossEntropy) {
    PSKIT_RETURN_IF_ERROR(be.CopyIntsToDevice(labels.data(), labels_, batch));
    PSKIT_RETURN_IF_ERROR(be.SoftmaxCrossEntropy(
        logits, labels_, batch, classes, dlogits, &result.loss, &result.correct));
  } else {
    // MSE against one-hot targets; accuracy by argmax as for cross-entropy.
    std::vector<float> host_y(static_cast<size_t>(batch) * classes);
    PSKIT_RETURN_IF_ERROR(be.CopyToHost(logits, host_y.data(), host_y.size()));
    std::fill(onehot_host_.begin(), onehot_host_.end(), 0.0f);
    for (int r = 0; r < batch; ++r) {
      const int32_t label = labels[r];
      onehot_host_[static_cast<size_t>(r) * classes + label] = 1.0f;
      const float* y = host_y.data() + static_cast<size_t>(r) * classes;
      result.correct += std::max_element(y, y + classes) - y == label;
    }
    PSKIT_RETURN_IF_ERROR(be.CopyToDevice(onehot_host_.data(), onehot_.data(),
                                          static_cast<size_t>(batch) * classes));
    PSKIT_RETURN_IF_ERROR(be.MeanSquaredError(logits, onehot_.data(), batch,
                                              classes, dlogits, &result.loss));
  }
  if (!backward) return result;

  for (int l = n_layers - 1; l >= 0; --l) {
    const int in = config_.layers[l], out = config_.layers[l + 1];
    const float* prev = l == 0 ? x : acts_[l - 1].data();
    float* delta = deltas_[l].data();
    PSKIT_RETURN_IF_ERROR(be.Gemm(true, false, in, out, batch, 1.0f, prev,
                                  delta, 0.0f, grads_[2 * l].data()));
    PSKIT_RETURN_IF_ERROR(
        be.ColumnSums(delta, batch, out, grads_[2 * l + 1].data()));
    if (l > 0) {
      float* prev_delta = deltas_[l - 1].data();
      PSKIT_RETURN_IF_ERROR(be.Gemm(false, true, batch, in, out, 1.0f, delta,
                                    params_[2 * l].data(), 0.0f, prev_delta));
      PSKIT_RETURN_IF_ERROR(be.ActivateBackward(
          config_.activation, acts_[l - 1].data(), prev_delta, prev_delta,
          static_cast<size_t>(batch) * in));
    }
  }
  return result;
}

}  // namespace pskit::worker
