// worker/data/dataset.h
//
// Dataset: samples in memory (features as float rows, integer labels), and
// the readers that fill it: IDX files (MNIST, Fashion-MNIST; plain or gzip,
// detected by content) and a synthetic teacher-network set. Each worker
// trains on its own slice (SliceOf); k-fold cross-validation cuts a set
// into training and validation parts (SplitFold).
//
// Thread safety: a Dataset is immutable once built; readers are pure.
#ifndef PSKIT_WORKER_DATA_DATASET_H_
#define PSKIT_WORKER_DATA_DATASET_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pskit::worker {

struct Dataset {
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  const float* row(int64_t i) const {
    return features.data() + static_cast<size_t>(i) * feature_dim;
  }

  int feature_dim = 0;
  int num_classes = 0;          // max label + 1
  std::vector<float> features;  // size() rows of feature_dim
  std::vector<int32_t> labels;
};

// Reads an IDX image file (ubyte, [n, rows, cols] or [n, dim]; values scaled
// to [0, 1]) and its label file (ubyte, [n]). Either may be gzip-compressed.
// NOT_FOUND when a file is missing; INVALID_ARGUMENT, naming the file, when
// it is not IDX, is truncated, or the counts differ.
absl::StatusOr<Dataset> ReadIdx(const std::string& images_path,
                                const std::string& labels_path);

// The standard file names in `dir`: train-images-idx3-ubyte and
// train-labels-idx1-ubyte (or t10k-... for the test set), each as is or
// with .gz.
absl::StatusOr<Dataset> ReadIdxDir(const std::string& dir, bool train);

// Reads a CSV file: one sample per line, comma-separated numbers, the label
// (an integer >= 0) in column `label_column`: a 0-based index, a header
// name, or "last". A first line holding any non-number is a header. Blank
// lines are skipped. NOT_FOUND for a missing file; INVALID_ARGUMENT naming
// the line and column for anything malformed (a field not a number, a row
// with another column count, a negative or fractional label).
absl::StatusOr<Dataset> ReadCsv(const std::string& path,
                                const std::string& label_column);

// Reads an HDF5 file laid out as HEP files usually are: a features dataset
// of shape [n, ...] (any numeric type; converted to float) and a labels
// dataset of shape [n] (integers >= 0), both named. NOT_FOUND for a missing
// file or dataset; INVALID_ARGUMENT naming the dataset for a bad shape,
// mismatched counts or negative labels.
absl::StatusOr<Dataset> ReadHdf5(const std::string& path,
                                 const std::string& features,
                                 const std::string& labels);

// A teacher network's data: features uniform in [-1, 1), labels the argmax
// of a fixed random 2-layer tanh network (hidden width 32), all from `seed`.
// The same (seed, n, dim, classes) always gives the same set; train and test
// sets come from different seeds with the same teacher_seed.
Dataset MakeTeacherDataset(uint64_t teacher_seed, uint64_t sample_seed,
                           int64_t n, int dim, int classes);

// [begin, end) of rank's share of n samples among `world` ranks: the ranks'
// shares are disjoint, cover all n, and differ in size by at most one.
std::pair<int64_t, int64_t> SliceOf(int64_t n, int rank, int world);

// k-fold cross-validation: with `folds` folds, sample j (0-based, in the
// set's order) belongs to fold j mod folds, so the folds are disjoint, cover
// the set, differ in size by at most one, and each takes every folds-th
// sample (a set sorted by class gives class-balanced folds).
struct FoldSplit {
  Dataset train;       // every sample not in the fold, in order
  Dataset validation;  // the fold's samples, in order
};

// OK when `folds` is 0 (no cross-validation) and `fold` is -1 (not given),
// or folds >= 2 and 0 <= fold < folds; otherwise INVALID_ARGUMENT naming
// --folds/--fold and what to give instead.
absl::Status CheckFolds(int folds, int fold);

// The number of samples of fold `fold` among `n` (folds >= 1).
int64_t FoldSize(int64_t n, int folds, int fold);

// Splits `data` into fold `fold` of `folds` and the rest; both keep the
// set's feature_dim and num_classes (a fold may miss a class; the model is
// the whole set's). INVALID_ARGUMENT for bad folds/fold (CheckFolds; folds 0
// is refused here) or a set with fewer than `folds` samples (a fold would be
// empty).
absl::StatusOr<FoldSplit> SplitFold(const Dataset& data, int folds, int fold);

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_DATA_DATASET_H_
