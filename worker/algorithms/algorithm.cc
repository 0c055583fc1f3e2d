// worker/algorithms/algorithm.cc: MakeAlgorithm, the one place an
// algorithm's name is read.
#include "worker/algorithms/algorithm.h"

#include "absl/strings/str_cat.h"
#include "worker/algorithms/downpour.h"
#include "worker/algorithms/easgd.h"
#include "worker/algorithms/local.h"

namespace pskit::worker {
namespace {

using Factory = absl::StatusOr<std::unique_ptr<Algorithm>> (*)(
    const AlgorithmOptions&, const AlgorithmContext&);

struct Known {
  const char* name;
  Factory make;
  bool needs_shards;
};

constexpr Known kKnown[] = {
    {"downpour", &MakeDownpour, true},
    {"easgd", &MakeEasgd, true},
    {"local", &MakeLocal, false},
};

const Known* Find(absl::string_view name) {
  for (const Known& k : kKnown) {
    if (name == k.name) return &k;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Algorithm>> MakeAlgorithm(
    const AlgorithmOptions& options, const AlgorithmContext& context) {
  const Known* known = Find(options.name);
  if (known == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "algorithm '", options.name,
        "' is not known; use downpour, easgd or local"));
  }
  if (known->needs_shards && context.job->shards.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--algorithm ", options.name, " needs --shards (or use local)"));
  }
  return known->make(options, context);
}

bool TrainsWithoutShards(absl::string_view name) {
  const Known* known = Find(name);
  return known != nullptr && !known->needs_shards;
}

}  // namespace pskit::worker
