// worker/data/data_source.cc: from data flags to data sets.
#include "worker/data/data_source.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace pskit::worker {
namespace {

absl::StatusOr<JobData> LoadIdx(const DataSourceOptions& o, bool worker,
                                bool local_test) {
  if (o.data_path.empty()) {
    return absl::InvalidArgumentError("--dataset idx needs --data_path DIR");
  }
  JobData out;
  PSKIT_ASSIGN_OR_RETURN(Dataset d, ReadIdxDir(o.data_path, worker));
  (worker ? out.train : out.test) = std::move(d);
  if (worker && local_test) {
    PSKIT_ASSIGN_OR_RETURN(out.test, ReadIdxDir(o.data_path, false));
  }
  return out;
}

absl::StatusOr<JobData> LoadFiles(const DataSourceOptions& o, bool worker,
                                  bool local_test) {
  const bool csv = o.dataset == "csv";
  auto read = [&](const std::string& path) {
    return csv ? ReadCsv(path, o.label_column)
               : ReadHdf5(path, o.features, o.labels);
  };
  JobData out;
  if (worker) {
    if (o.data_path.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--dataset ", o.dataset, " needs --data_path FILE"));
    }
    PSKIT_ASSIGN_OR_RETURN(out.train, read(o.data_path));
  }
  if (!worker || (local_test && !o.test_path.empty())) {
    if (o.test_path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the evaluator with --dataset ", o.dataset, " needs --test_path FILE"));
    }
    PSKIT_ASSIGN_OR_RETURN(out.test, read(o.test_path));
  }
  return out;
}

absl::StatusOr<JobData> LoadSynthetic(const DataSourceOptions& o, bool worker,
                                      bool local_test) {
  const int64_t n = worker ? o.synthetic_train : o.synthetic_test;
  if (n < 1 || o.synthetic_dim < 1 || o.synthetic_classes < 2) {
    return absl::InvalidArgumentError(
        "synthetic data needs samples >= 1, dim >= 1, classes >= 2");
  }
  // Same teacher for training and test, different samples.
  JobData out;
  (worker ? out.train : out.test) = MakeTeacherDataset(
      o.seed, o.seed + (worker ? 1000 : 2000), n, o.synthetic_dim,
      o.synthetic_classes);
  if (worker && local_test) {
    out.test = MakeTeacherDataset(o.seed, o.seed + 2000, o.synthetic_test,
                                  o.synthetic_dim, o.synthetic_classes);
  }
  return out;
}

}  // namespace

absl::StatusOr<JobData> LoadJobData(const DataSourceOptions& options,
                                    bool worker, bool local_test) {
  DataSourceOptions o = options;
  if (o.dataset.empty()) o.dataset = o.data_path.empty() ? "synthetic" : "idx";
  PSKIT_RETURN_IF_ERROR(CheckFolds(o.folds, o.fold));
  const bool folds = o.folds > 0;
  // With folds every role reads the training set, and nothing else.
  const bool read_train = worker || folds;
  const bool read_test = !folds && (!worker || local_test);
  absl::StatusOr<JobData> out;
  if (o.dataset == "idx") {
    out = LoadIdx(o, read_train, read_train && read_test);
  } else if (o.dataset == "csv" || o.dataset == "hdf5") {
    out = LoadFiles(o, read_train, read_train && read_test);
  } else if (o.dataset == "synthetic") {
    out = LoadSynthetic(o, read_train, read_train && read_test);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dataset must be idx, csv, hdf5 or synthetic, got '", o.dataset, "'"));
  }
  if (!out.ok()) return out;
  out->dataset = o.dataset;
  if (!folds) return out;
  PSKIT_ASSIGN_OR_RETURN(FoldSplit split, SplitFold(out->train, o.folds, o.fold));
  out->train = worker ? std::move(split.train) : Dataset();
  out->test = !worker || local_test ? std::move(split.validation) : Dataset();
  out->test_name = absl::StrCat("validation fold ", o.fold, " of ", o.folds);
  return out;
}

}  // namespace pskit::worker
