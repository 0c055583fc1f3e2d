// worker/data/data_source.h
//
// LoadJobData: ps-worker's choice of data set (IDX directory, CSV or HDF5
// files, or the synthetic teacher set) and the reading of what a role needs:
// a training worker its training set (and, for the local baseline, the test
// set), the evaluator the test set. With k-fold cross-validation (folds > 0)
// every role reads the training set: the worker keeps the samples outside
// the validation fold, the evaluator (and the local baseline) the fold.
//
// Example:
//   DataSourceOptions d;
//   d.data_path = "/usr/share/datasets/fashion-mnist";  // idx, by default
//   PSKIT_ASSIGN_OR_RETURN(JobData data, LoadJobData(d, /*worker=*/true,
//                                                    /*local_test=*/false));
//
// Thread safety: pure function of its options and the files.
#ifndef PSKIT_WORKER_DATA_DATA_SOURCE_H_
#define PSKIT_WORKER_DATA_DATA_SOURCE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "worker/data/dataset.h"

namespace pskit::worker {

struct DataSourceOptions {
  // idx, csv, hdf5 or synthetic. Default "": idx when data_path is given,
  // else synthetic.
  std::string dataset;
  // idx: the directory with the four standard files. csv/hdf5: the training
  // file.
  std::string data_path;
  // csv/hdf5: the test-set file (the evaluator's data).
  std::string test_path;
  // hdf5: the names of the features ([n, ...]) and labels ([n]) datasets.
  std::string features = "features";
  std::string labels = "labels";
  // csv: the label's column: a 0-based index, a header name, or "last".
  std::string label_column = "last";
  // synthetic: sizes of the training and test sets, features, classes.
  int64_t synthetic_train = 60000;
  int64_t synthetic_test = 10000;
  int synthetic_dim = 32;
  int synthetic_classes = 10;
  // synthetic: the teacher's seed (training and test samples are drawn
  // from seed + 1000 and seed + 2000).
  uint64_t seed = 1;
  // k-fold cross-validation (SplitFold in dataset.h): 0 = off; K >= 2 with
  // `fold` in [0, K). Default: off (folds 0, fold -1).
  int folds = 0;
  int fold = -1;
};

struct JobData {
  std::string dataset;  // the kind chosen: idx, csv, hdf5 or synthetic
  Dataset train;        // a worker's; empty for the evaluator
  Dataset test;         // the evaluator's, or the local baseline's
  // What `test` is, for log lines: "test set", or "validation fold i of K"
  // with folds.
  std::string test_name = "test set";
};

// Reads what a training worker (`worker`) or the evaluator (!`worker`)
// needs; with `local_test` a worker also reads the test set (idx and
// synthetic always, csv/hdf5 when test_path is given). With folds, `train`
// is the training set without the fold and `test` the fold (for the
// evaluator, and for a worker with `local_test`); test_path is not read.
// INVALID_ARGUMENT for an unknown kind, a missing path, unusable synthetic
// sizes or folds (CheckFolds, or fewer samples than folds), naming the
// flag; the readers' errors as they are.
absl::StatusOr<JobData> LoadJobData(const DataSourceOptions& options,
                                    bool worker, bool local_test);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_DATA_DATA_SOURCE_H_
