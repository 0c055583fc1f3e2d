// worker/job.cc: the checks and declarations shared by Train and Evaluate.
#include "worker/job.h"

#include "absl/strings/str_cat.h"

namespace pskit::worker {

absl::Status CheckFits(const Dataset& data, const MlpConfig& model) {
  if (data.size() == 0) {
    return absl::InvalidArgumentError("the dataset is empty");
  }
  if (data.feature_dim != model.layers.front()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the data has ", data.feature_dim, " features per sample but the "
        "model's input layer takes ", model.layers.front(),
        "; make --layers start with ", data.feature_dim));
  }
  if (data.num_classes > model.layers.back()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the data has ", data.num_classes, " classes but the model's output "
        "layer has ", model.layers.back(), "; make --layers end with ",
        data.num_classes));
  }
  return absl::OkStatus();
}

std::vector<TensorDecl> ModelDecls(const Mlp& mlp) {
  std::vector<TensorDecl> out;
  for (const v1::TensorSpec& spec : mlp.specs()) {
    TensorDecl d;
    d.spec = spec;
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace pskit::worker
